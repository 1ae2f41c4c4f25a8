//! The faas-provider contract's JSON (github.com/openfaas/faas-provider `types`, `logs`),
//! field for field: names, `omitempty` (skipped when empty) and Go's encodings (`[]byte` is
//! base64, `time.Time` is RFC 3339).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `types.FunctionDeployment`: a request to create or update a function: its name and
/// its [`FunctionSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDeployment {
    pub service: String,
    #[serde(flatten)]
    pub spec: FunctionSpec,
}

/// The fields `types.FunctionDeployment` and `types.FunctionStatus` share, which a provider
/// stores from the one and gives back unchanged in the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub env_process: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<FunctionResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<FunctionResources>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only_root_filesystem: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `types.FunctionResources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionResources {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
}

/// `types.FunctionStatus`: a deployment as stored, plus its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    pub name: String,
    #[serde(flatten)]
    pub spec: FunctionSpec,
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub invocation_count: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub available_replicas: u64,
    /// RFC 3339 (Go's `time.Time`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl FunctionStatus {
    /// The stored deployment's fields, unchanged.
    pub fn of(d: &FunctionDeployment) -> FunctionStatus {
        FunctionStatus { name: d.service.clone(), spec: d.spec.clone(), ..FunctionStatus::default() }
    }
}

/// `types.Secret`. `rawValue` is Go's `[]byte`: base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub raw_value: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// `types.ScaleServiceRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleServiceRequest {
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub namespace: String,
    pub replicas: u64,
}

/// `types.DeleteFunctionRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFunctionRequest {
    pub function_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// `types.VersionInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit_message: String,
    pub sha: String,
    pub release: String,
}

/// `types.ProviderInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub provider: String,
    pub version: VersionInfo,
    pub orchestration: String,
}

/// The gateway's `/system/info` (`GatewayInfo`), which clients such as faas-cli and the
/// certifier read from the URL they are given: the provider's own info inside, and the
/// "gateway" version is snapcall's, since snapcall answers both roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub provider: ProviderInfo,
    pub version: VersionInfo,
    pub arch: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_as_faas_cli_sends_it_round_trips_field_for_field() {
        let sent = r#"{"service":"env-test","image":"docker.io/functions/alpine:latest","namespace":"openfaas-fn",
            "envProcess":"env","envVars":{"custom_env":"custom_env_value"},"constraints":["node.platform.os == linux"],
            "secrets":["s1"],"labels":{"canary_build":"true"},"annotations":{"some-json":"{\"a\":1}"},
            "limits":{"memory":"5Mi","cpu":"100m"},"requests":{"memory":"1Mi"},"readOnlyRootFilesystem":true}"#;
        let d: FunctionDeployment = serde_json::from_str(sent).unwrap();
        assert_eq!(d.spec.env_vars.as_ref().unwrap()["custom_env"], "custom_env_value");
        assert_eq!(d.spec.limits.as_ref().unwrap().memory, "5Mi");
        let status = FunctionStatus::of(&d);
        let back: serde_json::Value = serde_json::to_value(&status).unwrap();
        let sent: serde_json::Value = serde_json::from_str(sent).unwrap();
        for (k, v) in sent.as_object().unwrap() {
            let k = if k == "service" { "name" } else { k };
            assert_eq!(&back[k], v, "{k}");
        }
        // Empty fields are left out as Go's omitempty does; labels given empty stay {}.
        let d: FunctionDeployment =
            serde_json::from_str(r#"{"service":"f","image":"i","labels":{},"annotations":{}}"#).unwrap();
        let text = serde_json::to_string(&FunctionStatus::of(&d)).unwrap();
        assert_eq!(text, r#"{"name":"f","image":"i","labels":{},"annotations":{}}"#);
    }

    #[test]
    fn raw_secret_values_are_base64_as_go_encodes_bytes() {
        let s: Secret = serde_json::from_str(r#"{"name":"b","rawValue":"aGVsbG8="}"#).unwrap();
        assert_eq!(s.raw_value, b"hello");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"name":"b","rawValue":"aGVsbG8="}"#);
        assert!(serde_json::from_str::<Secret>(r#"{"name":"b","rawValue":"not base64!"}"#).is_err());
        let s: Secret = serde_json::from_str(r#"{"name":"v","value":"x","rawValue":null}"#).unwrap();
        assert_eq!((s.value.as_str(), s.raw_value.len()), ("x", 0));
    }
}
