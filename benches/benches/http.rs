//! The HTTP layer's own cost, with the server's parser (`httpd::http`): parsing a request
//! head like the seed's curl call, decoding a chunked body, and writing a response with a
//! Server-Timing header. End-to-end HTTP cost (loopback, syscalls) is in the latency study.

use criterion::{criterion_group, criterion_main, Criterion};
use httpd::http::{parse_head, ChunkedDecoder, Response};
use std::hint::black_box;

const SEED_CURL: &[u8] = b"POST /kubeless/hellowithdata HTTP/1.1\r\nHost: hellowithdata.192.168.49.2.nip.io\r\n\
User-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Type:application/json\r\nContent-Length: 19\r\n\r\n{\"Another\": \"Echo\"}";

fn http(c: &mut Criterion) {
    c.bench_function("parse the seed's curl request head", |b| {
        b.iter(|| parse_head(black_box(SEED_CURL), 16 << 10, 16 << 20).unwrap().unwrap())
    });
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'x'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    c.bench_function("decode a 64 KiB chunked body (64 chunks)", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::with_capacity(64 << 10);
            let (used, done) = d.decode(black_box(&chunked), &mut out, 16 << 20).unwrap();
            assert!(done && used == chunked.len());
            out
        })
    });
    c.bench_function("write a 200 response with Server-Timing", |b| {
        let mut resp = Response::new(200, "application/json", br#"{"Another": "Echo"}"#.to_vec());
        resp.server_timing = "queue;dur=0.001, vm;dur=0.002, restore;dur=0.009, run;dur=0.310, total;dur=0.330".into();
        b.iter(|| {
            let mut out = Vec::with_capacity(512);
            black_box(&resp).write_to(&mut out, false, httpd::http::Persistence::KeepAlive);
            out
        })
    });
}

criterion_group!(benches, http);
criterion_main!(benches);
