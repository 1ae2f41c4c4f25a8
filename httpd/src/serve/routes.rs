//! URL routing and method rules. Pure functions of the request head.

use super::http::Method;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Metrics,
    /// `/function/<name>[/...]` (OpenFaaS) or `/<name>`.
    Function(&'a str),
    NotFound,
}

/// Routes a request path (query already removed). The built-in routes win over a function
/// of the same name; `discover` warns about such bundles.
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/function/") {
        let name = rest.split('/').next().unwrap_or("");
        return if valid_name(name) { Route::Function(name) } else { Route::NotFound };
    }
    match path.strip_prefix('/') {
        Some(name) if valid_name(name) => Route::Function(name),
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
        (Route::Health | Route::Metrics, Method::Get | Method::Head) => None,
        (Route::Health | Route::Metrics, Method::Post | Method::Other(_)) => Some("GET, HEAD"),
        (Route::Function(_), Method::Get | Method::Post) => None,
        (Route::Function(_), Method::Head | Method::Other(_)) => Some("GET, POST"),
        (Route::NotFound, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/function/echo-c"), Route::Function("echo-c"));
        assert_eq!(route("/function/echo-c/sub/path"), Route::Function("echo-c"));
        assert_eq!(route("/echo-c"), Route::Function("echo-c"));
        assert_eq!(route("/echo-c/x"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/function/"), Route::NotFound);
        assert_eq!(route("/function/.."), Route::NotFound);
        assert_eq!(route("/%2e%2e"), Route::NotFound);
    }

    #[test]
    fn methods() {
        assert_eq!(disallowed(Route::Function("f"), &Method::Post), None);
        assert_eq!(disallowed(Route::Function("f"), &Method::Other("PUT".into())), Some("GET, POST"));
        assert_eq!(disallowed(Route::Metrics, &Method::Post), Some("GET, HEAD"));
    }
}
