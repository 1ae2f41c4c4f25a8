//! The faas-provider API against the real server and real VMs: deploy OCI images (built by
//! `guest-functions/images/build.sh`), read them back field for field, invoke, update,
//! replace under a call in flight, scale, delete, secrets, basic auth, the 4xx answers, the
//! watchdog's limits and its log lines.

mod serve_support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::{root, Client, Resp, Server};

/// `target/images`, built once.
fn images() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = root().join("target/images");
            let status = std::process::Command::new("bash")
                .arg(root().join("guest-functions/images/build.sh"))
                .arg("--out")
                .arg(&out)
                .status()
                .expect("run guest-functions/images/build.sh");
            assert!(status.success(), "guest-functions/images/build.sh failed");
            out
        })
        .clone()
}

fn empty_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("snapcall-provider-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn provider(tag: &str, extra: &[&str]) -> Server {
    let images = images();
    let mut args = vec!["--provider", "--images", images.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&empty_dir(tag), &args)
}

fn api(c: &mut Client, method: &str, path: &str, body: &Value) -> Resp {
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
    c.request(method, path, &[("Content-Type", "application/json")], &bytes)
}

fn json_of(r: &Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn deploy(c: &mut Client, method: &str, d: &Value) -> Resp {
    api(c, method, "/system/functions", d)
}

#[test]
fn a_deployment_round_trips_and_its_function_runs_updates_and_goes() {
    let srv = provider("roundtrip", &[]);
    let mut c = srv.connect();
    let d = json!({
        "service": "env-test", "image": "docker.io/functions/alpine:latest", "namespace": "openfaas-fn",
        "envProcess": "env", "envVars": {"custom_env": "custom_env_value"},
        "constraints": ["node.platform.os == linux"], "labels": {"canary_build": "true"},
        "annotations": {"important-date": "Fri Aug 10 08:21:00 BST 2018", "some-json": "{\"a\": [1, 2]}"},
        "limits": {"memory": "64Mi", "cpu": "100m"}, "requests": {"memory": "32Mi"},
        "readOnlyRootFilesystem": true
    });
    // An update of a function that does not exist is a 404 (faas-cli then POSTs).
    assert_eq!(deploy(&mut c, "PUT", &d).status, 404);
    let r = deploy(&mut c, "POST", &d);
    assert_eq!(r.status, 202, "{}", r.text());

    let st = json_of(&api(&mut c, "GET", "/system/function/env-test?namespace=openfaas-fn", &Value::Null));
    for (k, v) in d.as_object().unwrap() {
        let k = if k == "service" { "name" } else { k.as_str() };
        if k == "labels" {
            assert_eq!(st[k]["canary_build"], "true");
            assert_eq!(st[k]["faas_function"], "env-test", "OpenFaaS providers label every function");
        } else {
            assert_eq!(&st[k], v, "{k}");
        }
    }
    assert!(st["replicas"].as_u64().unwrap() > 0, "{st}");
    assert!(st["createdAt"].as_str().unwrap().ends_with('Z'), "{st}");
    let list = json_of(&api(&mut c, "GET", "/system/functions", &Value::Null));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "env-test");

    // The function: the image's env, the deployment's, and the memory cap from limits.memory.
    let r = c.request("GET", "/function/env-test.openfaas-fn", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.text();
    assert!(out.contains("custom_env=custom_env_value") && out.contains("PATH=/usr/local/sbin"), "{out}");
    let config: Value = serde_json::from_slice(&std::fs::read(srv.dir.join("env-test/config.json")).unwrap()).unwrap();
    assert_eq!(config["annotations"]["snapcall.memory_mib"], "64");
    assert_eq!(config["process"]["args"][0], "/bin/env");
    let count = json_of(&api(&mut c, "GET", "/system/function/env-test", &Value::Null))["invocationCount"].as_f64();
    assert_eq!(count, Some(1.0));

    // of-watchdog behaviours: the request in Http_* variables (the function starts cold),
    // X-Call-Id echoed (or made), X-Start-Time.
    let r = c.request(
        "PATCH",
        "/function/env-test.openfaas-fn/sub?testing=1",
        &[("X-Call-Id", "call-42"), ("X-Custom", "v")],
        b"",
    );
    let out = r.text();
    for want in
        ["Http_Method=PATCH", "Http_Path=/sub", "Http_Query=testing=1", "Http_X_Custom=v", "Http_X_Call_Id=call-42"]
    {
        assert!(out.contains(want), "{want} in {out}");
    }
    assert_eq!(r.header("X-Call-Id"), Some("call-42"));
    assert!(r.header("X-Start-Time").is_some_and(|t| t.parse::<u128>().is_ok()));
    let made = c.request("GET", "/function/env-test", &[], b"");
    let id = made.header("X-Call-Id").expect("a call id is made when the request has none");
    assert_eq!((id.len(), &id[14..15]), (36, "4"), "a v4 UUID: {id}");
    assert_ne!(c.request("GET", "/function/env-test", &[], b"").header("X-Call-Id"), Some(id));

    // An update replaces it.
    let mut d2 = d.clone();
    d2["envVars"] = json!({"custom_env": "second"});
    assert_eq!(deploy(&mut c, "PUT", &d2).status, 202);
    let out = c.request("POST", "/function/env-test", &[], b"").text();
    assert!(out.contains("custom_env=second") && !out.contains("custom_env_value"), "{out}");
    assert_eq!(json_of(&api(&mut c, "GET", "/system/function/env-test", &Value::Null))["envVars"], d2["envVars"]);

    // Delete: gone from the API, the routes and the directory.
    let del = json!({"functionName": "env-test"});
    assert_eq!(api(&mut c, "DELETE", "/system/functions", &del).status, 202);
    assert_eq!(api(&mut c, "DELETE", "/system/functions", &del).status, 404);
    assert_eq!(api(&mut c, "GET", "/system/function/env-test", &Value::Null).status, 404);
    assert_eq!(c.request("GET", "/function/env-test", &[], b"").status, 404);
    assert!(!srv.dir.join("env-test").exists());
    assert_eq!(json_of(&api(&mut c, "GET", "/system/functions", &Value::Null)), json!([]));

    // Info and namespaces.
    let info = json_of(&api(&mut c, "GET", "/system/info", &Value::Null));
    assert_eq!(info["provider"]["provider"], "snapcall");
    let sha = info["provider"]["version"]["sha"].as_str().unwrap();
    assert!(sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "a real git sha: {sha}");
    assert!(!info["version"]["release"].as_str().unwrap().is_empty());
    assert_eq!(json_of(&api(&mut c, "GET", "/system/namespaces", &Value::Null)), json!(["openfaas-fn"]));
    assert_eq!(api(&mut c, "GET", "/system/functions?namespace=other", &Value::Null).status, 400);
}

#[test]
fn a_replace_lets_the_call_in_flight_finish_on_the_old_version() {
    let srv = provider("replace", &[]);
    let mut c = srv.connect();
    let v = |version: &str, delay: &str| json!({"service": "ver", "image": "snapcall/version", "envVars": {"version": version, "delay_ms": delay}});
    assert_eq!(deploy(&mut c, "POST", &v("v1", "3000")).status, 202);
    let addr = srv.addr;
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.request("POST", "/function/ver", &[], b"").text()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(deploy(&mut c, "POST", &v("v2", "0")).status, 202);
    assert!(!slow.is_finished(), "the deploy did not wait for the call in flight");
    assert_eq!(slow.join().unwrap(), "v1\n", "the call in flight ran the version it started on");
    assert_eq!(c.request("POST", "/function/ver", &[], b"").text(), "v2\n");
    // The old version's directory goes once its last call is done.
    let retired = srv.dir.join(".snapcall/retired");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&retired).unwrap().count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_dir(&retired).unwrap().count(), 0);
}

#[test]
fn a_deployed_functions_log_reads_as_the_watchdogs_lines() {
    // As the certifier's Test_FunctionLogs: `cat` echoes the namespace, and the log has
    // "Forking fprocess" and "Wrote 11 Bytes".
    let srv = provider("logs", &[]);
    let mut c = srv.connect();
    let d = json!({"service": "test-logger", "image": "functions/alpine:latest", "envProcess": "cat"});
    assert_eq!(deploy(&mut c, "POST", &d).status, 202);
    let r = c.request("POST", "/function/test-logger", &[("X-Call-Id", "log-call")], b"openfaas-fn");
    assert_eq!((r.status, r.text()), (200, "openfaas-fn".to_string()));
    let r = c.request("GET", "/system/logs?name=test-logger&namespace=openfaas-fn&follow=false", &[], b"");
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("application/x-ndjson")));
    let msgs: Vec<Value> = r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts.first(), Some(&"Forking fprocess."), "{texts:?}");
    assert!(texts.last().unwrap().starts_with("Wrote 11 Bytes - Duration: "), "{texts:?}");
    assert!(texts.last().unwrap().ends_with(" seconds - Status: 200"), "{texts:?}");
    assert!(msgs.iter().all(|m| m["name"] == "test-logger" && m["instance"] == "log-call"), "{msgs:?}");
    // snapcall's own view of the same call: one JSON line.
    let r = c.request("GET", "/system/logs?name=test-logger&format=json", &[], b"");
    let m: Value = serde_json::from_str(r.text().trim()).unwrap();
    let call: Value = serde_json::from_str(m["text"].as_str().unwrap()).unwrap();
    assert_eq!((call["call_id"].as_str(), call["bytes"].as_u64()), (Some("log-call"), Some(11)));
}

#[test]
fn max_inflight_is_the_functions_own_concurrency_limit() {
    let srv = provider("inflight", &[]);
    let mut c = srv.connect();
    let d = json!({"service": "one", "image": "snapcall/version",
                   "envVars": {"version": "v", "delay_ms": "2000", "max_inflight": "1"}});
    assert_eq!(deploy(&mut c, "POST", &d).status, 202);
    let config: Value = serde_json::from_slice(&std::fs::read(srv.dir.join("one/config.json")).unwrap()).unwrap();
    assert_eq!(config["annotations"]["snapcall.max_concurrency"], "1");
    let addr = srv.addr;
    let slow = std::thread::spawn(move || Client::connect(addr).request("POST", "/function/one", &[], b"").status);
    std::thread::sleep(Duration::from_millis(500));
    let r = c.request("POST", "/function/one", &[], b"");
    assert_eq!((r.status, r.header("Retry-After")), (429, Some("1")), "{}", r.text());
    assert!(r.text().contains("its own limit"), "{}", r.text());
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(c.request("POST", "/function/one", &[], b"").status, 200, "free again once the call is done");
}

#[test]
fn scaling_maps_onto_the_pool_and_zero_still_serves() {
    let srv = provider("scale", &["--pool-size", "2"]);
    let mut c = srv.connect();
    let d = json!({"service": "hash", "image": "functions/alpine", "envProcess": "sha512sum",
                   "labels": {"com.openfaas.scale.min": "3"}});
    assert_eq!(deploy(&mut c, "POST", &d).status, 202);
    let status = |c: &mut Client| json_of(&api(c, "GET", "/system/function/hash", &Value::Null));
    let wait = |c: &mut Client, want: (u64, u64)| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = status(c);
            let got = (st["replicas"].as_u64().unwrap_or(0), st["availableReplicas"].as_u64().unwrap_or(0));
            if got == want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Served cold at once, from its snapshot once the snapshot thread has taken it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !srv.log.lock().unwrap().contains("hash: now served from its snapshot") {
        assert!(Instant::now() < deadline, "no snapshot: {}", srv.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(srv.dir.join("hash/snapshot.kmsnap").is_file());
    assert_eq!(wait(&mut c, (3, 3)), (3, 3), "the min-scale label sets the ready VMs");
    let r = api(&mut c, "POST", "/system/scale-function/hash", &json!({"serviceName": "hash", "replicas": 0}));
    assert_eq!(r.status, 202);
    assert_eq!(wait(&mut c, (0, 0)), (0, 0));
    let r = c.request("POST", "/function/hash", &[], b"hello");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("9b71d224bd62f378"), "{}", r.text());
    let r = api(&mut c, "POST", "/system/scale-function/hash", &json!({"replicas": 1}));
    assert_eq!(r.status, 202);
    assert_eq!(wait(&mut c, (1, 1)), (1, 1));
    assert_eq!(api(&mut c, "POST", "/system/scale-function/nope", &json!({"replicas": 1})).status, 404);
}

#[test]
fn secrets_are_kept_listed_without_values_and_mounted_read_only() {
    let srv = provider("secrets", &[]);
    let mut c = srv.connect();
    let s = json!({"name": "api-key", "value": "first-value", "namespace": "openfaas-fn"});
    assert_eq!(api(&mut c, "POST", "/system/secrets", &s).status, 202);
    assert_eq!(api(&mut c, "POST", "/system/secrets", &s).status, 409);
    let raw = json!({"name": "raw", "rawValue": "AAEC/w=="});
    assert_eq!(api(&mut c, "POST", "/system/secrets", &raw).status, 202);
    let list = json_of(&api(&mut c, "GET", "/system/secrets", &Value::Null));
    assert_eq!(
        list,
        json!([{"name": "api-key", "namespace": "openfaas-fn"}, {"name": "raw", "namespace": "openfaas-fn"}])
    );

    let d = json!({"service": "show", "image": "functions/alpine", "envProcess": "cat /var/openfaas/secrets/api-key",
                   "secrets": ["api-key", "raw"]});
    assert_eq!(deploy(&mut c, "POST", &d).status, 202);
    assert_eq!(c.request("POST", "/function/show", &[], b"").text(), "first-value");
    let raw_file = srv.dir.join("show/rootfs/var/openfaas/secrets/raw");
    assert_eq!(std::fs::read(&raw_file).unwrap(), [0, 1, 2, 255]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&raw_file).unwrap().permissions().mode() & 0o777, 0o444);

    let s2 = json!({"name": "api-key", "value": "second-value"});
    assert_eq!(api(&mut c, "PUT", "/system/secrets", &s2).status, 202);
    assert_eq!(api(&mut c, "PUT", "/system/secrets", &json!({"name": "nope", "value": "x"})).status, 404);
    assert_eq!(deploy(&mut c, "PUT", &d).status, 202);
    assert_eq!(c.request("POST", "/function/show", &[], b"").text(), "second-value");

    assert_eq!(api(&mut c, "DELETE", "/system/secrets", &json!({"name": "raw"})).status, 202);
    assert_eq!(api(&mut c, "DELETE", "/system/secrets", &json!({"name": "raw"})).status, 404);
    // A deployment naming a secret that does not exist is refused.
    let r = deploy(&mut c, "PUT", &d);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("raw"), "{}", r.text());
    assert_eq!(api(&mut c, "POST", "/system/secrets", &json!({"name": "../x", "value": "v"})).status, 400);
}

#[test]
fn bad_deployments_get_clear_4xx_answers() {
    let srv = provider("bad", &["--max-memory-mib", "512"]);
    let mut c = srv.connect();
    let base = json!({"service": "f", "image": "functions/alpine", "envProcess": "env"});
    let with = |k: &str, v: Value| {
        let mut d = base.clone();
        d[k] = v;
        d
    };
    for (d, status, says) in [
        (with("image", json!("functions/missing:latest")), 404, "not found"),
        (with("image", json!("../../etc")), 400, "reference"),
        (json!({"service": "f", "image": "snapcall/dynamic"}), 422, "dynamically linked"),
        (with("limits", json!({"memory": "2Gi"})), 413, "max-memory-mib"),
        (with("limits", json!({"memory": "lots"})), 400, "quantity"),
        (with("envProcess", json!("no-such-program")), 422, "not found"),
        (with("service", json!("Bad_Name")), 400, "DNS label"),
        (with("namespace", json!("elsewhere")), 400, "namespace"),
        (with("envVars", json!({"exec_timeout": "soon"})), 400, "exec_timeout"),
        (with("envVars", json!({"max_inflight": "-1"})), 400, "max_inflight"),
    ] {
        let r = deploy(&mut c, "POST", &d);
        assert_eq!(r.status, status, "{d}: {}", r.text());
        assert!(r.text().contains(says), "{d}: {}", r.text());
    }
    let r = c.request("POST", "/system/functions", &[], b"{not json");
    assert_eq!(r.status, 400);
    assert_eq!(json_of(&api(&mut c, "GET", "/system/functions", &Value::Null)), json!([]), "nothing half-deployed");
    assert_eq!(std::fs::read_dir(srv.dir.join(".snapcall/staging")).unwrap().count(), 0, "staging cleaned up");
    // An image from an OCI archive deploys like a layout.
    let r = deploy(&mut c, "POST", &with("image", json!("snapcall/alpine")));
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(c.request("GET", "/function/f", &[], b"").text().contains("fprocess=env"));
    // exec_timeout is the function's deadline.
    let d = json!({"service": "slow", "image": "snapcall/version", "envVars": {"delay_ms": "3000", "exec_timeout": "500ms"}});
    assert_eq!(deploy(&mut c, "POST", &d).status, 202);
    let r = c.request("GET", "/function/slow", &[], b"");
    assert_eq!((r.status, r.header("X-Snapcall-Timeout-Ms")), (504, Some("500")), "{}", r.text());
    let r = c.request("PATCH", "/system/functions", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, POST, PUT, DELETE")));

    // An image that unpacks to more than --max-image-mib: 413, and nothing left behind.
    let small = provider("too-big", &["--max-image-mib", "1"]);
    let mut c = small.connect();
    let r = deploy(&mut c, "POST", &base);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("max-image-mib"), "{}", r.text());
    assert_eq!(json_of(&api(&mut c, "GET", "/system/functions", &Value::Null)), json!([]));
    assert_eq!(std::fs::read_dir(small.dir.join(".snapcall/staging")).unwrap().count(), 0);
}

#[test]
fn hostile_layers_write_nothing_outside_the_rootfs() {
    let srv = provider("hostile", &[]);
    let mut c = srv.connect();
    // A write through a symlink climbing out with `..` resolves inside the rootfs, as the
    // guest would see it; the host's /tmp (which exists, so an escape would have written
    // the file there) is untouched.
    let host = PathBuf::from("/tmp/snapcall-hostile-climb");
    let _ = std::fs::remove_file(&host);
    let r = deploy(
        &mut c,
        "POST",
        &json!({"service": "climb", "image": "snapcall/hostile-climb", "envVars": {"version": "ok"}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(!host.exists(), "the layer wrote {} on the host", host.display());
    assert_eq!(std::fs::read(srv.dir.join("climb/rootfs/tmp/snapcall-hostile-climb")).unwrap(), b"planted\n");
    assert_eq!(c.request("GET", "/function/climb", &[], b"").text(), "ok\n");
    // A `../` member: refused, and nothing of it left anywhere.
    let r = deploy(&mut c, "POST", &json!({"service": "dotdot", "image": "snapcall/hostile-dotdot"}));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("..") && r.text().contains("snapcall-hostile-dotdot"), "{}", r.text());
    assert_eq!(std::fs::read_dir(srv.dir.join(".snapcall/staging")).unwrap().count(), 0);
    assert!(!srv.dir.join("dotdot").exists() && !srv.dir.join("snapcall-hostile-dotdot").exists());
    assert_eq!(api(&mut c, "GET", "/system/function/dotdot", &Value::Null).status, 404);
}

#[test]
fn basic_auth_guards_the_api_and_leaves_functions_open() {
    let mount = empty_dir("auth-mount");
    std::fs::write(mount.join("basic-auth-user"), "admin\n").unwrap();
    std::fs::write(mount.join("basic-auth-password"), "pa55word").unwrap();
    let srv = provider("auth", &["--basic-auth", "--secret-mount-path", mount.to_str().unwrap()]);
    let mut c = srv.connect();
    let r = c.request("GET", "/system/info", &[], b"");
    assert_eq!((r.status, r.header("WWW-Authenticate")), (401, Some("Basic realm=\"Restricted\"")));
    // admin:wrong, then admin:pa55word.
    let r = c.request("GET", "/system/functions", &[("Authorization", "Basic YWRtaW46d3Jvbmc=")], b"");
    assert_eq!(r.status, 401);
    let good = [("Authorization", "Basic YWRtaW46cGE1NXdvcmQ=")];
    assert_eq!(c.request("GET", "/system/info", &good, b"").status, 200);
    let d = serde_json::to_vec(&json!({"service": "e", "image": "functions/alpine", "envProcess": "env"})).unwrap();
    assert_eq!(c.request("POST", "/system/functions", &[], &d).status, 401, "no deploy without auth");
    assert_eq!(c.request("POST", "/system/functions", &good, &d).status, 202);
    assert_eq!(c.request("GET", "/function/e", &[], b"").status, 200, "functions stay open");
    let r = c.request("GET", "/system/logs?name=e", &[], b"");
    assert_eq!((r.status, r.header("WWW-Authenticate")), (401, Some("Basic realm=\"Restricted\"")), "logs too");
    assert_eq!(c.request("GET", "/system/logs?name=e", &good, b"").status, 200);
    assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn the_operators_bundles_are_listed_but_not_replaced_or_deleted() {
    let dir = serve_support::functions_dir(&["echo-c"]);
    let images = images();
    let srv = Server::start(&dir, &["--provider", "--images", images.to_str().unwrap()]);
    let mut c = srv.connect();
    let list = json_of(&api(&mut c, "GET", "/system/functions", &Value::Null));
    assert_eq!(list[0]["name"], "echo-c");
    assert_eq!(list[0]["envProcess"], "/bin/echo-c");
    let d = json!({"service": "echo-c", "image": "functions/alpine", "envProcess": "env"});
    assert_eq!(deploy(&mut c, "POST", &d).status, 409);
    assert_eq!(api(&mut c, "DELETE", "/system/functions", &json!({"functionName": "echo-c"})).status, 409);
    assert_eq!(c.request("POST", "/function/echo-c", &[], b"still here").text(), "still here");
}

#[test]
fn without_provider_the_api_is_not_there() {
    let srv = Server::start(&empty_dir("off"), &[]);
    let mut c = srv.connect();
    assert_eq!(c.request("GET", "/system/info", &[], b"").status, 404);
    assert_eq!(c.request("POST", "/system/functions", &[], b"{}").status, 404);
}
