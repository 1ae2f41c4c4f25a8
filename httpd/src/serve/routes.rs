//! URL routing and method rules. Pure functions of the request head.
//!
//! A function is reached at `/function/NAME[/sub/path]` (OpenFaaS's gateway shape) or at
//! `/NAME`. OpenFaaS also names a function `NAME.NAMESPACE`; snapcall serves one namespace,
//! OpenFaaS's default [`NAMESPACE`], so `/function/NAME.openfaas-fn/...` is `NAME`. Any other
//! dotted name is taken whole (bundle names may hold dots). Functions take every method;
//! the sub-path, query and headers go to the function in its request head.

use super::http::Method;

/// The one namespace snapcall serves: OpenFaaS's default for functions.
pub const NAMESPACE: &str = "openfaas-fn";

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Metrics,
    /// `/system` and below but `/system/logs`: the OpenFaaS provider API (`provider/`).
    System,
    /// `/system/logs`: function logs in OpenFaaS's shape (system_logs.rs), served with or
    /// without `--provider`.
    SystemLogs,
    /// `/system/snapcall/functions[/NAME]`: what `snapcall list` and `describe` show
    /// (functions_api.rs), served with or without `--provider`.
    SnapcallFunctions,
    /// A function: its name (namespace removed) and the path after it (`/` if none).
    Function {
        name: &'a str,
        path: &'a str,
    },
    NotFound,
}

/// Routes a request path (query already removed). The built-in routes win over a function
/// of the same name; `discover` warns about such bundles.
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/metrics" => return Route::Metrics,
        "/system" => return Route::System,
        "/system/logs" => return Route::SystemLogs,
        _ => {}
    }
    if path == "/system/snapcall/functions" || path.starts_with("/system/snapcall/functions/") {
        return Route::SnapcallFunctions;
    }
    if path.starts_with("/system/") {
        return Route::System;
    }
    if let Some(rest) = path.strip_prefix("/function/") {
        let (segment, sub) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let name = segment.strip_suffix(NAMESPACE).and_then(|n| n.strip_suffix('.')).unwrap_or(segment);
        return if valid_name(name) { Route::Function { name, path: sub } } else { Route::NotFound };
    }
    match path.strip_prefix('/') {
        Some(name) if valid_name(name) => Route::Function { name, path: "/" },
        _ => Route::NotFound,
    }
}

/// Function names are directory names made of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The methods a route takes, for the `Allow` header of a 405; `None` if `method` is allowed.
pub fn disallowed(route: Route<'_>, method: &Method) -> Option<&'static str> {
    match (route, method) {
        (Route::Health | Route::Metrics | Route::SystemLogs | Route::SnapcallFunctions, Method::Get | Method::Head) => {
            None
        }
        (
            Route::Health | Route::Metrics | Route::SystemLogs | Route::SnapcallFunctions,
            Method::Post | Method::Other(_),
        ) => Some("GET, HEAD"),
        // The function decides what a method means (it sees it in its request head).
        (Route::Function { .. }, _) => None,
        // The API answers its own 405s, per resource.
        (Route::System, _) => None,
        (Route::NotFound, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function<'a>(name: &'a str, path: &'a str) -> Route<'a> {
        Route::Function { name, path }
    }

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/function/echo-c"), function("echo-c", "/"));
        assert_eq!(route("/function/echo-c/"), function("echo-c", "/"));
        assert_eq!(route("/function/echo-c/sub/path"), function("echo-c", "/sub/path"));
        assert_eq!(route("/echo-c"), function("echo-c", "/"));
        assert_eq!(route("/echo-c/x"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/function/"), Route::NotFound);
        assert_eq!(route("/function/.."), Route::NotFound);
        assert_eq!(route("/%2e%2e"), Route::NotFound);
        assert_eq!(route("/system/functions"), Route::System);
        assert_eq!(route("/system/function/echo-c"), Route::System);
        assert_eq!(route("/system"), Route::System);
        assert_eq!(route("/system/logs"), Route::SystemLogs);
        assert_eq!(route("/system/snapcall/functions"), Route::SnapcallFunctions);
        assert_eq!(route("/system/snapcall/functions/echo-c"), Route::SnapcallFunctions);
        assert_eq!(route("/system/snapcall/other"), Route::System);
        assert_eq!(route("/systemd"), function("systemd", "/"));
    }

    #[test]
    fn namespaces() {
        assert_eq!(route("/function/echo-c.openfaas-fn"), function("echo-c", "/"));
        assert_eq!(route("/function/echo-c.openfaas-fn/a?b"), function("echo-c", "/a?b"));
        // Another namespace is not served: the dotted name is looked up whole (and not found).
        assert_eq!(route("/function/echo-c.other"), function("echo-c.other", "/"));
        assert_eq!(route("/function/hello.py"), function("hello.py", "/"));
        assert_eq!(route("/function/.openfaas-fn"), Route::NotFound);
        assert_eq!(route("/function/openfaas-fn"), function("openfaas-fn", "/"));
    }

    #[test]
    fn methods() {
        for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"] {
            let method = match m {
                "GET" => Method::Get,
                "HEAD" => Method::Head,
                "POST" => Method::Post,
                other => Method::Other(other.into()),
            };
            assert_eq!(disallowed(function("f", "/"), &method), None, "{m}");
        }
        assert_eq!(disallowed(Route::Metrics, &Method::Post), Some("GET, HEAD"));
        assert_eq!(disallowed(Route::Health, &Method::Other("PUT".into())), Some("GET, HEAD"));
    }
}
