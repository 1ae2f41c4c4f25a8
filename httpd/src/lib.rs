//! The HTTP/1.1 wire format `snapcall serve` speaks: request heads (httparse, with snapcall's
//! own limits and smuggling checks), chunked bodies, and responses. A library target so the
//! benches (and other front ends) use exactly the server's parser; the server itself is the
//! `snapcall` binary in this package.

#[path = "serve/http.rs"]
pub mod http;

#[path = "serve/date.rs"]
pub mod date;

#[path = "serve/cgi.rs"]
pub mod cgi;
