//! What the event loops ask of the application: routing, admission and the call itself.

use std::time::Duration;

use super::conn::Request;
use super::http::{Head, Response};

/// The loop's question before it queues a complete request: does it run a function, and may it?
pub enum Admission<P> {
    /// Not a call (`/healthz`, `/metrics`, a 404): answered on the loop thread, at once.
    Local,
    /// A call, admitted: `P` holds its place in the function's concurrency limit until dropped.
    Call(P),
    /// A call refused before it runs (the function's concurrency limit): this answer instead.
    Refused(Response),
}

/// The application behind the loops.
pub trait Handler: Send + Sync + 'static {
    /// Kept until the response that produced it has been written to the socket, then handed
    /// to [`Handler::sent`] (the used VM: it is torn down only after the client has its bytes).
    type Done: Send;
    /// An admitted call's place in its function's limit, released when dropped.
    type Permit: Send;

    /// Decides from the head alone whether the body is worth reading (route and method known).
    fn accept_head(&self, head: &Head) -> bool;
    /// Whether a complete request is a call, and whether it is admitted.
    fn admit(&self, head: &Head) -> Admission<Self::Permit>;
    /// Serves one complete request: `permit` is `Some` for an admitted call (which runs on a
    /// worker thread), `None` for a local request. `queued` is how long it waited to start.
    fn handle(&self, req: Request, permit: Option<Self::Permit>, queued: Duration) -> (Response, Option<Self::Done>);
    /// The answer to a head refused by `accept_head` whose body was not read.
    fn refused(&self, head: &Head) -> Response;
    /// The answer to a call over the in-flight limit.
    fn overloaded(&self, head: &Head) -> Response;
    /// `resp` answers `head` (every response the loop queues, local or not, before it is
    /// sent): for the access log.
    fn answered(&self, _head: &Head, _resp: &Response) {}
    /// The response carrying `done` was sent (or its connection died).
    fn sent(&self, done: Self::Done);
}
