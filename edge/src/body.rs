//! The bodies the proxy streams: the client's request body on its way to the slot, and the
//! answer on its way back. Neither is buffered.
//!
//! [`RequestBody`] enforces the request body limit on bodies whose length was not declared
//! (a declared `Content-Length` over the limit is refused before the slot is contacted),
//! and tells the response-header timeout whether the upload is still going.
//! [`ProxyBody`] carries the request's in-flight guard until the last byte of the answer,
//! so a streaming response counts for drains until it ends or the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use hyper_util::client::legacy::connect::CaptureConnection;

use crate::backend::InFlightGuard;
use crate::connection::ConnGuard;
use crate::upstream::SlotBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body went over the limit while it streamed.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the edge's limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// No byte of a request body arrived within the body idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body arrived within {0:?}")]
pub struct BodyStalled(pub Duration);

/// How a client's request body failed on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientBodyError {
    /// Malformed (chunked framing), or cut off before its end.
    Broken,
    /// No byte within the body idle timeout.
    Stalled,
}

/// How far an upload got, for the response-header timeout (it starts counting once the
/// body is sent, not while a large upload is still on its way), and whether the client
/// broke it.
#[derive(Debug)]
pub(crate) struct Upload {
    moved: AtomicBool,
    done: AtomicBool,
    started: Instant,
    /// When the last byte came, as milliseconds since `started`.
    last_byte_ms: AtomicU64,
    /// 0: no error; else a [`ClientBodyError`] (1: broken, 2: stalled).
    client_error: AtomicU8,
}

impl Default for Upload {
    fn default() -> Self {
        Upload {
            moved: AtomicBool::new(false),
            done: AtomicBool::new(false),
            started: Instant::now(),
            last_byte_ms: AtomicU64::new(0),
            client_error: AtomicU8::new(0),
        }
    }
}

impl Upload {
    /// How long since the client sent a byte of its body (or since the body began).
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_byte_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether the upload is still going, or moved since the last call.
    pub(crate) fn busy(&self) -> bool {
        let moved = self.moved.swap(false, Ordering::Relaxed);
        moved || !self.done.load(Ordering::Relaxed)
    }

    /// Whether the whole body went to the slot.
    pub(crate) fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// How the client broke its body, if it did.
    pub(crate) fn client_error(&self) -> Option<ClientBodyError> {
        match self.client_error.load(Ordering::Relaxed) {
            1 => Some(ClientBodyError::Broken),
            2 => Some(ClientBodyError::Stalled),
            _ => None,
        }
    }

    fn fail(&self, error: ClientBodyError) {
        let code = match error {
            ClientBodyError::Broken => 1,
            ClientBodyError::Stalled => 2,
        };
        self.client_error.store(code, Ordering::Relaxed);
    }
}

/// The client's request body, as sent to the slot.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    /// Bytes still allowed, when the length was not declared (a declared length is
    /// checked up front, and hyper holds the body to it).
    remaining: Option<u64>,
    limit: u64,
    upload: Option<Arc<Upload>>,
    /// How long the body may go without a byte.
    idle: Duration,
    /// Started at the first poll that finds nothing, and moved on by each frame.
    stall: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        remaining: Option<u64>,
        upload: Option<Arc<Upload>>,
        idle: Duration,
    ) -> Self {
        RequestBody {
            inner,
            limit: remaining.unwrap_or(u64::MAX),
            remaining,
            upload,
            idle,
            stall: None,
        }
    }

    fn client_failed(&self, error: ClientBodyError) {
        if let Some(upload) = &self.upload {
            upload.fail(error);
        }
    }

    fn finished(&self) {
        if let Some(upload) = &self.upload {
            upload.done.store(true, Ordering::Relaxed);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if let Some(remaining) = &mut this.remaining {
                        if len > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                limit: this.limit,
                            }))));
                        }
                        *remaining -= len;
                    }
                    if let Some(upload) = &this.upload {
                        upload.moved.store(true, Ordering::Relaxed);
                        let since = upload.started.elapsed().as_millis();
                        upload
                            .last_byte_ms
                            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finished();
                }
                if let Some(stall) = &mut this.stall {
                    stall.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The client's side of the body broke (malformed, cut off, reset).
                this.client_failed(ClientBodyError::Broken);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let idle = this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if stall.as_mut().poll(cx).is_ready() {
                    this.client_failed(ClientBodyError::Stalled);
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of an answer: either the upstream's, streamed, with the request's in-flight
/// guard, or a message from the edge. It also holds the client connection's request count,
/// which the idle timeout reads.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    connection: Option<ConnGuard>,
    /// The slot connection to cut once this answer is over (it showed a framing surprise).
    cut_after: Option<CaptureConnection>,
    /// Handed out data and not polled since (counted by the client connection, whose
    /// write-timeout check reads it).
    waiting: bool,
}

#[derive(Debug)]
enum Kind {
    Upstream {
        body: Upstream,
        guard: Option<InFlightGuard>,
    },
    Message(Option<Bytes>),
}

/// Where a slot's answer is read from.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// hyper's client.
    Client(Incoming),
    /// The slot's pooled connection, straight ([`crate::upstream`]).
    Pool(SlotBody),
}

impl From<Incoming> for Upstream {
    fn from(body: Incoming) -> Self {
        Upstream::Client(body)
    }
}

impl From<SlotBody> for Upstream {
    fn from(body: SlotBody) -> Self {
        Upstream::Pool(body)
    }
}

impl Upstream {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Upstream::Client(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Upstream::Pool(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Upstream::Client(body) => body.is_end_stream(),
            Upstream::Pool(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstream::Client(body) => body.size_hint(),
            Upstream::Pool(body) => body.size_hint(),
        }
    }
}

impl ProxyBody {
    fn of(kind: Kind) -> Self {
        ProxyBody {
            kind,
            connection: None,
            cut_after: None,
            waiting: false,
        }
    }

    /// A slot's answer, from hyper's client or straight from the slot's pool.
    pub(crate) fn upstream(body: impl Into<Upstream>, guard: InFlightGuard) -> Self {
        let body = body.into();
        // An empty answer is over now; dropping the guard here records it.
        let guard = (!body.is_end_stream()).then_some(guard);
        ProxyBody::of(Kind::Upstream { body, guard })
    }

    pub(crate) fn message(text: String) -> Self {
        ProxyBody::of(Kind::Message(Some(Bytes::from(text))))
    }

    /// A body of the edge's own, already made (a page shared by many answers).
    pub(crate) fn bytes(bytes: Bytes) -> Self {
        ProxyBody::of(Kind::Message(Some(bytes)))
    }

    pub(crate) fn empty() -> Self {
        ProxyBody::of(Kind::Message(None))
    }

    /// Takes the body of an answer of the edge's own out (an answer to a HEAD has none);
    /// its length, when there was one.
    pub(crate) fn take_message(&mut self) -> Option<usize> {
        match &mut self.kind {
            Kind::Message(text) => text.take().map(|t| t.len()),
            Kind::Upstream { .. } => None,
        }
    }

    /// Cuts the slot connection this answer came on once the answer is over (or the
    /// client went away), so that it carries no other request.
    pub(crate) fn cut_after(&mut self, connection: CaptureConnection) {
        self.cut_after = Some(connection);
    }

    /// Keeps the client connection's request counted until this body is done.
    pub(crate) fn hold(&mut self, connection: ConnGuard) {
        self.connection = Some(connection);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(connection) = &this.connection {
            connection.conn().answer_polled(this.waiting);
            this.waiting = false;
        }
        let (polled, end, guard) = match &mut this.kind {
            Kind::Upstream { body, guard } => {
                let polled = body.poll_frame(cx);
                (polled, body.is_end_stream(), guard)
            }
            Kind::Message(text) => {
                return Poll::Ready(text.take().map(|t| Ok(Frame::data(t))));
            }
        };
        if let (Poll::Ready(Some(Ok(_))), Some(connection)) = (&polled, &this.connection) {
            connection.conn().answer_waits();
            this.waiting = true;
        }
        let finished = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => end,
            Poll::Pending => false,
        };
        if finished {
            // The last byte is out of the upstream: the request is over for drain.
            guard.take();
            if let Some(connection) = this.cut_after.take() {
                crate::connector::cut(&connection);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Message(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Message(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.waiting
            && let Some(connection) = &self.connection
        {
            connection.conn().answer_polled(true);
        }
        // The client went away before the answer's end: the connection is cut all the same.
        if let Some(connection) = self.cut_after.take() {
            crate::connector::cut(&connection);
        }
    }
}
