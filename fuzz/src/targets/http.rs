//! `httpd::http`: request heads and the chunked decoder, the bytes every client controls.
//!
//! Invariants: a head that parses uses at most the bytes given and at most the head limit,
//! parses identically from exactly those bytes, and never from a strict prefix of them; a
//! `Content-Length` framing is positive and within the body limit; a refusal maps to one of
//! the statuses the server sends for malformed input. The chunked decoder gives the same
//! result (bytes used, data, done, or the same refusal) whether its input comes in one piece
//! or in arbitrary pieces, never decodes more than the body limit, and a body it decoded
//! re-encoded as one chunk decodes back to itself.

use httpd::http::{parse_head, ChunkedDecoder, Framing, Reject};

use crate::{signature, Mutator, Outcome, Rng, Target};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: u64 = 64 * 1024;

pub struct Http;

fn reject_sig(r: Reject) -> &'static [u8] {
    r.reason().as_bytes()
}

/// Chunked decoding of `body` in one piece and in pieces cut by `rng`; compares them.
/// Bytes used, body complete, decoded data; or the refusal.
type Decoded = Result<(usize, bool, Vec<u8>), Reject>;

fn chunked(body: &[u8], rng: &mut Rng) -> Result<Decoded, String> {
    let mut out = Vec::new();
    let whole = ChunkedDecoder::default().decode(body, &mut out, MAX_BODY).map(|(n, done)| (n, done, out));

    let mut dec = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut used = 0;
    let mut pieces = Ok((0, false));
    let mut at = 0;
    while at < body.len() {
        let cap = if rng.one_in(2) { 3 } else { 64 };
        let n = 1 + rng.below((body.len() - at).min(cap));
        match dec.decode(&body[at..at + n], &mut out, MAX_BODY) {
            Ok((u, done)) => {
                if u > n || (!done && u != n) {
                    return Err(format!("chunked decode used {u} of a {n}-byte piece (done {done})"));
                }
                used += u;
                pieces = Ok((used, done));
                if done {
                    break;
                }
            }
            Err(e) => {
                pieces = Err(e);
                break;
            }
        }
        at += n;
    }
    let pieces = pieces.map(|(n, done)| (n, done, out));
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) if a == b => {}
        (Err(a), Err(b)) if a == b => {}
        _ => {
            return Err(format!(
                "chunked decode differs in pieces: whole {:?}, pieces {:?}",
                whole.as_ref().map(|(n, d, o)| (n, d, o.len())),
                pieces.as_ref().map(|(n, d, o)| (n, d, o.len()))
            ))
        }
    }
    if let Ok((used, done, out)) = &whole {
        if *used > body.len() || out.len() as u64 > MAX_BODY {
            return Err(format!("chunked decode used {used} of {} bytes, {} out", body.len(), out.len()));
        }
        if *done {
            let mut again = format!("{:x}\r\n", out.len()).into_bytes();
            again.extend_from_slice(out);
            again.extend_from_slice(b"\r\n0\r\n\r\n");
            if out.is_empty() {
                again = b"0\r\n\r\n".to_vec();
            }
            let mut out2 = Vec::new();
            let r = ChunkedDecoder::default().decode(&again, &mut out2, MAX_BODY);
            if r != Ok((again.len(), true)) || &out2 != out {
                return Err(format!("re-encoded chunked body of {} bytes does not decode back: {r:?}", out.len()));
            }
        }
    }
    Ok(whole)
}

impl Target for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn mutator(&self) -> Mutator {
        let tokens: &[&str] = &[
            "\r\n",
            "\r\n\r\n",
            "\n",
            "\r",
            " ",
            "\t",
            ":",
            ",",
            ";",
            "GET ",
            "POST ",
            "HEAD ",
            " HTTP/1.1",
            " HTTP/1.0",
            " HTTP/2.0",
            "/function/echo-c",
            "?q=1",
            "#frag",
            "Content-Length: ",
            "content-length:",
            "Transfer-Encoding: ",
            "chunked",
            "gzip",
            "Connection: ",
            "close",
            "keep-alive",
            "Expect: 100-continue",
            "0\r\n\r\n",
            "ffffffffffffffff",
            "fffffffffffffff",
            "\u{80}",
            "\u{7f}",
            "\0",
        ];
        Mutator { dictionary: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(), max_len: 2 * MAX_HEAD + 4096 }
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let mut rng = Rng::new(crate::signature(&[input]));
        let head = parse_head(input, MAX_HEAD, MAX_BODY);
        let (head_sig, body): (Vec<u8>, &[u8]) = match &head {
            Ok(Some((h, used))) => {
                let used = *used;
                if used > input.len() || used > MAX_HEAD {
                    return Err(format!("head used {used} bytes of {} (limit {MAX_HEAD})", input.len()));
                }
                if !h.path.starts_with('/') || h.path.contains(['?', '#']) {
                    return Err(format!("bad path {:?}", h.path));
                }
                match h.framing {
                    Framing::Length(n) if n == 0 || n > MAX_BODY => return Err(format!("framing {:?}", h.framing)),
                    Framing::Chunked if !h.http11 => return Err("chunked HTTP/1.0 accepted".into()),
                    _ => {}
                }
                let again = parse_head(&input[..used], MAX_HEAD, MAX_BODY);
                if again != head {
                    return Err(format!("head parses differently from its own {used} bytes: {again:?} vs {head:?}"));
                }
                for cut in [used.saturating_sub(1), used / 2, rng.below(used.max(1))] {
                    if let Ok(Some(p)) = parse_head(&input[..cut], MAX_HEAD, MAX_BODY) {
                        return Err(format!("a {cut}-byte prefix of a {used}-byte head parsed: {p:?}"));
                    }
                }
                let sig = format!("{:?}/{}/{}/{}", h.framing, h.http11, h.keep_alive, h.expect_continue);
                (sig.into_bytes(), &input[used..])
            }
            Ok(None) => {
                if input.len() > MAX_HEAD {
                    return Err(format!("{} bytes without a head and no 431", input.len()));
                }
                (b"partial".to_vec(), input)
            }
            Err(r) => {
                if ![400, 413, 431, 501].contains(&r.status()) || r.code().is_empty() || r.reason().is_empty() {
                    return Err(format!("refusal {r:?} -> {} {}", r.status(), r.code()));
                }
                (reject_sig(*r).to_vec(), input)
            }
        };
        let body_sig = match chunked(body, &mut rng)? {
            Ok((_, done, out)) => format!("ok/{done}/{}", out.len().min(2)),
            Err(r) => r.reason().to_owned(),
        };
        Ok(signature(&[&head_sig, body_sig.as_bytes()]))
    }
}
