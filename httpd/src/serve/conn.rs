//! One connection's protocol state: bytes in, complete requests (or rejections) out.
//!
//! No sockets and no clocks here; `event_loop.rs` owns those. The state machine is
//!
//! ```text
//!   Head --head parsed, body--> Body --body complete--> (Request) --response queued--> Head
//!     \-- head parsed, no body --------------------------^
//!   any state --protocol error--> Reject (the loop answers and closes)
//! ```

use super::http::{self, ChunkedDecoder, Framing, Head, Reject};

/// Limits applied while reading a request.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_head: usize,
    pub max_body: u64,
}

/// A complete request.
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

/// What the connection needs next.
#[derive(Debug)]
pub enum Event {
    /// Nothing complete yet: read more bytes.
    NeedMore,
    /// The client waits for `100 Continue` before sending the body: send it, then read.
    SendContinue,
    /// A complete request.
    Request(Request),
    /// The head was refused by the caller's check (404, 405, 413 ...) before its body was
    /// read: answer with that response and close, since the body may still be coming.
    Refused(Head),
    /// A protocol error: answer with its status and close.
    Reject(Reject),
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        head: Head,
        body: Vec<u8>,
        rest: BodyRest,
    },
    /// A request was handed out or a rejection made; nothing is parsed until `reset`.
    Busy,
}

#[derive(Debug)]
enum BodyRest {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Bytes received and not yet parsed, plus where in a request we are.
#[derive(Debug)]
pub struct Conn {
    rbuf: Vec<u8>,
    state: State,
    continue_owed: bool,
}

impl Default for Conn {
    fn default() -> Self {
        Conn { rbuf: Vec::with_capacity(4096), state: State::Head, continue_owed: false }
    }
}

impl Conn {
    /// Appends received bytes.
    pub fn received(&mut self, data: &[u8]) {
        self.rbuf.extend_from_slice(data);
    }

    /// True if part of a request (head or body) has arrived but not all of it.
    pub fn mid_request(&self) -> bool {
        match self.state {
            State::Head => !self.rbuf.is_empty(),
            State::Body { .. } => true,
            State::Busy => false,
        }
    }

    /// True while the head is complete and its body is being read.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// True while a request handed out by `next_event` has not been answered.
    pub fn busy(&self) -> bool {
        matches!(self.state, State::Busy)
    }

    /// After the response to the last request was queued: parse the next one.
    pub fn reset(&mut self) {
        self.state = State::Head;
    }

    /// Advances the parser. `check` sees each head before its body is read and may refuse it
    /// (returning false), so a client using `Expect: 100-continue` never sends a body we
    /// will not use.
    pub fn next_event(&mut self, limits: ReadLimits, check: &mut dyn FnMut(&Head) -> bool) -> Event {
        loop {
            match &mut self.state {
                State::Busy => return Event::NeedMore,
                State::Head => {
                    match http::parse_head(&self.rbuf, limits.max_head, limits.max_body) {
                        Ok(None) => return Event::NeedMore,
                        Err(reject) => {
                            self.state = State::Busy;
                            return Event::Reject(reject);
                        }
                        Ok(Some((head, used))) => {
                            self.rbuf.drain(..used);
                            // A refused head is answered before its body only if the client
                            // waits for 100-continue; otherwise the body is already on its way,
                            // so it is read (within the limit) and the handler answers the
                            // whole request, keeping the connection usable.
                            if head.expect_continue && head.framing != Framing::None && !check(&head) {
                                self.state = State::Busy;
                                return Event::Refused(head);
                            }
                            let rest = match head.framing {
                                Framing::None => {
                                    self.state = State::Busy;
                                    return Event::Request(Request { head, body: Vec::new() });
                                }
                                Framing::Length(n) => BodyRest::Length(n),
                                Framing::Chunked => BodyRest::Chunked(ChunkedDecoder::default()),
                            };
                            self.continue_owed = head.expect_continue && self.rbuf.is_empty();
                            let cap = match rest {
                                BodyRest::Length(n) => usize::try_from(n).unwrap_or(0).min(1 << 20),
                                BodyRest::Chunked(_) => 0,
                            };
                            self.state = State::Body { head, body: Vec::with_capacity(cap), rest };
                        }
                    }
                }
                State::Body { body, rest, .. } => {
                    let done = match rest {
                        BodyRest::Length(left) => {
                            let take = self.rbuf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                            body.extend_from_slice(&self.rbuf[..take]);
                            self.rbuf.drain(..take);
                            *left -= take as u64;
                            *left == 0
                        }
                        BodyRest::Chunked(dec) => match dec.decode(&self.rbuf, body, limits.max_body) {
                            Ok((used, done)) => {
                                self.rbuf.drain(..used);
                                done
                            }
                            Err(reject) => {
                                self.state = State::Busy;
                                return Event::Reject(reject);
                            }
                        },
                    };
                    if done {
                        self.continue_owed = false;
                        let State::Body { head, body, .. } = std::mem::replace(&mut self.state, State::Busy) else {
                            unreachable!("matched Body above")
                        };
                        return Event::Request(Request { head, body });
                    }
                    if self.continue_owed && self.rbuf.is_empty() {
                        self.continue_owed = false;
                        return Event::SendContinue;
                    }
                    self.continue_owed = false;
                    return Event::NeedMore;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReadLimits = ReadLimits { max_head: 8192, max_body: 100 };

    fn accept_all(_: &Head) -> bool {
        true
    }

    fn expect_request(c: &mut Conn) -> Request {
        match c.next_event(LIMITS, &mut accept_all) {
            Event::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut c = Conn::default();
        c.received(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\n");
        let r = expect_request(&mut c);
        assert_eq!((r.head.path.as_str(), r.body.as_slice()), ("/a", &b"abc"[..]));
        // Busy until the response is queued.
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::NeedMore));
        c.reset();
        assert_eq!(expect_request(&mut c).head.path, "/b");
        c.reset();
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::NeedMore));
        assert!(c.mid_request());
        c.received(b"Transfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n");
        let r = expect_request(&mut c);
        assert_eq!((r.head.path.as_str(), r.body.as_slice()), ("/c", &b"xy"[..]));
        c.reset();
        assert!(!c.mid_request());
    }

    /// Feeds `wire` in pieces of the given sizes (cycled); returns (path, body) of each request.
    fn feed(wire: &[u8], sizes: &[usize]) -> Vec<(String, Vec<u8>)> {
        let mut c = Conn::default();
        let mut out = Vec::new();
        let (mut at, mut k) = (0, 0);
        loop {
            match c.next_event(LIMITS, &mut accept_all) {
                Event::Request(r) => {
                    out.push((r.head.path, r.body));
                    c.reset();
                }
                Event::NeedMore | Event::SendContinue if at < wire.len() => {
                    let n = sizes[k % sizes.len()].clamp(1, wire.len() - at);
                    c.received(&wire[at..at + n]);
                    at += n;
                    k += 1;
                }
                Event::NeedMore | Event::SendContinue => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn any_split_of_the_wire_gives_the_same_requests() {
        let wire: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n\
            GET /c?q=1 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n\
            POST /d HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nxy";
        let expected = feed(wire, &[wire.len()]);
        assert_eq!(
            expected,
            vec![
                ("/a".to_owned(), b"hello".to_vec()),
                ("/b".to_owned(), b"abcde".to_vec()),
                ("/c".to_owned(), Vec::new()),
                ("/d".to_owned(), b"xy".to_vec()),
            ]
        );
        for split in 1..wire.len() {
            assert_eq!(feed(wire, &[split, wire.len()]), expected, "split at {split}");
        }
        for sizes in [&[1][..], &[2, 3], &[7, 1, 13], &[64]] {
            assert_eq!(feed(wire, sizes), expected, "pieces {sizes:?}");
        }
    }

    #[test]
    fn body_split_across_reads() {
        let mut c = Conn::default();
        for piece in [&b"POST /a HTTP/1.1\r\nContent-"[..], b"Length: 6\r\n\r\nab", b"cd", b"ef"] {
            if let Event::Request(r) = c.next_event(LIMITS, &mut accept_all) {
                panic!("early request {r:?}");
            }
            c.received(piece);
        }
        assert_eq!(expect_request(&mut c).body, b"abcdef");
    }

    #[test]
    fn expect_continue_is_answered_once_and_only_if_body_not_sent() {
        let mut c = Conn::default();
        c.received(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::SendContinue));
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::NeedMore));
        c.received(b"hi");
        assert_eq!(expect_request(&mut c).body, b"hi");

        let mut c = Conn::default();
        c.received(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nh");
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::NeedMore));
    }

    #[test]
    fn refused_head_with_body_is_not_read() {
        let mut c = Conn::default();
        c.received(b"POST /nope HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(c.next_event(LIMITS, &mut |_| false), Event::Refused(_)));
        // Without 100-continue the body is read and the request handed out whole.
        let mut c = Conn::default();
        c.received(b"POST /nope HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
        assert!(matches!(c.next_event(LIMITS, &mut |_| false), Event::Request(r) if r.body == b"ab"));
    }

    #[test]
    fn oversized_bodies_are_rejected() {
        let mut c = Conn::default();
        c.received(b"POST /a HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::Reject(Reject::BodyTooLarge)));
        let mut c = Conn::default();
        c.received(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n60\r\n");
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::NeedMore));
        c.received(&[b'x'; 0x60]);
        c.received(b"\r\n10\r\n");
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::Reject(Reject::BodyTooLarge)));
    }

    #[test]
    fn garbage_is_rejected() {
        let mut c = Conn::default();
        c.received(b"HELLO\r\n\r\n");
        assert!(matches!(c.next_event(LIMITS, &mut accept_all), Event::Reject(Reject::Malformed(_))));
    }
}
