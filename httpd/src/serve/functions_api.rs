//! `GET /system/snapcall/functions[/NAME]`: what `snapcall list` and `snapcall describe` show,
//! as JSON: every served function (or one), with its routes, limits, snapshot, pool and call
//! counters. Served with or without `--provider` (whose `/system/functions` speaks
//! OpenFaaS's `FunctionStatus`, which has no place for snapshots or pool counters); under
//! `--basic-auth` it takes the same credentials as the rest of `/system`.
//!
//! ```json
//! {"name":"echo-c","routes":["/function/echo-c","/function/echo-c.openfaas-fn","/echo-c"],
//!  "runner":"native","bundle":"/srv/functions/echo-c","program":"/bin/echo-c",
//!  "limits":{"memory_mib":64,"timeout_ms":10000,"max_output_bytes":16777216},
//!  "content_type":"application/octet-stream","response":"body",
//!  "snapshot":{"present":true,"verified":true,"bytes":123456},
//!  "pool":{"ready":4,"target":4,"hits":10,"misses":1,"waited":2,"idle":false},
//!  "calls":{"total":11,"in_flight":0,"errors":{"exit":0,...}}}
//! ```
//!
//! `snapshot.present`: the bundle has a `snapshot.kmsnap`; `verified`: calls restore it (it
//! was checked against its bundle when loaded). `pool` is null when there is none (`--pool-size
//! 0`, or a function run by km).

use serde_json::{json, Value};

use vmm::{BundleConfig, ResponseFormat, Runtime};

use super::http::Response;
use super::registry::{Entry, LoadedFunction, Registry};
use super::routes::NAMESPACE;

/// The path prefix of this API.
pub const PATH: &str = "/system/snapcall/functions";

/// The answer to `GET PATH` (`name` None) or `GET PATH/NAME`.
pub fn answer(registry: &Registry, runtime: &Runtime, name: Option<&str>) -> Response {
    let body = match name {
        None => {
            let all: Vec<Value> = registry.entries().iter().map(|(n, e)| describe(registry, runtime, n, e)).collect();
            Value::Array(all)
        }
        Some(n) => match registry.get(n) {
            Some(entry) => describe(registry, runtime, n, &entry),
            None => return Response::json_error(404, "not_found", &format!("no function {n} is served here")),
        },
    };
    let mut text = body.to_string();
    text.push('\n');
    Response::new(200, "application/json", text.into_bytes())
}

fn config(entry: &Entry) -> &BundleConfig {
    match &entry.runner {
        LoadedFunction::Native(f) => f.config(),
        LoadedFunction::Km(f) => f.config(),
    }
}

/// One function's description.
fn describe(registry: &Registry, runtime: &Runtime, name: &str, entry: &Entry) -> Value {
    let config = config(entry);
    let snapshot_file = config.dir.join(vmm::snapshot::SNAPSHOT_FILE);
    let snapshot_bytes = std::fs::metadata(&snapshot_file).ok().filter(|m| m.is_file()).map(|m| m.len());
    let (runner, verified, pool) = match &entry.runner {
        LoadedFunction::Native(f) => {
            let pool = runtime.function_stats(f).map(
                |s| json!({"ready": s.ready, "target": s.target, "hits": s.hits, "misses": s.misses, "waited": s.waited, "idle": s.idle}),
            );
            ("native", f.has_snapshot(), pool.unwrap_or(Value::Null))
        }
        // km restores its own snapshot per call, checked by km.
        LoadedFunction::Km(_) => ("km", false, Value::Null),
    };
    let errors: serde_json::Map<String, Value> =
        entry.metrics.errors().into_iter().map(|(kind, n)| (kind.to_owned(), json!(n))).collect();
    json!({
        "name": name,
        "routes": [format!("/function/{name}"), format!("/function/{name}.{NAMESPACE}"), format!("/{name}")],
        "runner": runner,
        "bundle": config.dir.display().to_string(),
        "functions_dir": registry.dir().display().to_string(),
        "program": config.args.first().cloned().unwrap_or_default(),
        "limits": {
            "memory_mib": config.limits.memory_bytes >> 20,
            "timeout_ms": config.limits.timeout.as_millis() as u64,
            "max_output_bytes": config.limits.max_output_bytes,
        },
        "content_type": config.content_type,
        "response": match config.response {
            ResponseFormat::Body => "body",
            ResponseFormat::Cgi => "cgi",
        },
        "snapshot": {"present": snapshot_bytes.is_some(), "verified": verified, "bytes": snapshot_bytes},
        "pool": pool,
        "calls": {"total": entry.metrics.calls(), "in_flight": entry.metrics.in_flight(), "errors": errors},
    })
}

/// The function name of a path under [`PATH`]: `Ok(None)` for the list, `Err(())` for
/// anything else.
pub fn parse(path: &str) -> Result<Option<&str>, ()> {
    match path.strip_prefix(PATH) {
        Some("") | Some("/") => Ok(None),
        Some(rest) => match rest.strip_prefix('/') {
            Some(name) if super::routes::valid_name(name) => Ok(Some(name)),
            _ => Err(()),
        },
        None => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn paths() {
        assert_eq!(parse("/system/snapcall/functions"), Ok(None));
        assert_eq!(parse("/system/snapcall/functions/"), Ok(None));
        assert_eq!(parse("/system/snapcall/functions/echo-c"), Ok(Some("echo-c")));
        assert_eq!(parse("/system/snapcall/functions/a/b"), Err(()));
        assert_eq!(parse("/system/snapcall/functions/.."), Err(()));
        assert_eq!(parse("/system/snapcall/functionsx"), Err(()));
    }
}
