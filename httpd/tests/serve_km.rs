//! The km fallback through the server: a bundle that needs km is served by a STAND-IN for
//! Kontain's km (a shell script this test writes), with the native statuses and
//! Server-Timing; without km, its calls fail clearly while the other functions keep working.
//! No test here runs real KM.

mod serve_support;

use std::path::{Path, PathBuf};

use serve_support::{functions_dir, Server};

fn add_km_bundle(functions: &Path, name: &str, mode: &str) {
    let dir = functions.join(name);
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    std::fs::write(dir.join("rootfs/bin/fn"), b"placeholder: the stand-in never runs it").unwrap();
    let config = format!(
        r#"{{"process":{{"args":["/bin/fn"],"env":["STANDIN_MODE={mode}"]}},
            "annotations":{{"snapcall.runner":"km","snapcall.timeout_ms":"500","snapcall.content_type":"text/plain"}}}}"#
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
}

fn stand_in_km(dir: &Path) -> PathBuf {
    let path = dir.join("km-stand-in");
    std::fs::write(
        &path,
        "#!/bin/sh\n# STAND-IN for Kontain's km: snapcall's server tests only.\n\
         case \"$STANDIN_MODE\" in echo) printf 'km-stand-in:'; cat ;; hang) cat >/dev/null; sleep 30 ;; esac\n",
    )
    .unwrap();
    std::process::Command::new("chmod").arg("755").arg(&path).status().unwrap();
    path
}

#[test]
fn a_km_function_is_served_through_km_with_the_native_statuses() {
    let functions = functions_dir(&["echo-c"]);
    add_km_bundle(&functions, "via-km", "echo");
    add_km_bundle(&functions, "km-hang", "hang");
    let km = stand_in_km(&functions);
    let srv = Server::start(&functions, &["--km", km.to_str().unwrap()]);
    let mut c = srv.connect();

    let r = srv.call(&mut c, "POST", "/via-km", b"hello km");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"km-stand-in:hello km"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("server-timing").is_some_and(|t| t.contains("run;dur=")), "{:?}", r.headers);

    let r = srv.call(&mut c, "POST", "/km-hang", b"x");
    assert_eq!(r.status, 504, "{}", r.text());

    let r = srv.call(&mut c, "POST", "/echo-c", b"native still");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"native still"[..]));
}

#[test]
fn without_km_its_functions_fail_clearly_and_the_others_are_served() {
    let functions = functions_dir(&["echo-c"]);
    add_km_bundle(&functions, "via-km", "echo");
    let missing = functions.join("no-such-km");
    let srv = Server::start(&functions, &["--km", missing.to_str().unwrap()]);
    let mut c = srv.connect();
    let r = srv.call(&mut c, "POST", "/via-km", b"x");
    assert_eq!(r.status, 500);
    let text = r.text();
    assert!(
        text.contains("km_missing") && text.contains("needs Kontain's km") && text.contains("no-such-km"),
        "{text}"
    );
    let r = srv.call(&mut c, "POST", "/echo-c", b"ok");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
}
