//! The bodies the proxy streams: the client's request body on its way to the slot, and the
//! answer on its way back. Neither is buffered.
//!
//! [`RequestBody`] enforces the request body limit on bodies whose length was not declared
//! (a declared `Content-Length` over the limit is refused before the slot is contacted),
//! and tells the response-header timeout whether the upload is still going.
//! [`ProxyBody`] carries the request's in-flight guard until the last byte of the answer,
//! so a streaming response counts for drains until it ends or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::backend::InFlightGuard;
use crate::connection::ConnGuard;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body went over the limit while it streamed.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the edge's limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// How far an upload got, for the response-header timeout: it starts counting once the
/// body is sent, not while a large upload is still on its way.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    moved: AtomicBool,
    done: AtomicBool,
}

impl Upload {
    /// Whether the upload is still going, or moved since the last call.
    pub(crate) fn busy(&self) -> bool {
        let moved = self.moved.swap(false, Ordering::Relaxed);
        moved || !self.done.load(Ordering::Relaxed)
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
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        remaining: Option<u64>,
        upload: Option<Arc<Upload>>,
    ) -> Self {
        RequestBody {
            inner,
            limit: remaining.unwrap_or(u64::MAX),
            remaining,
            upload,
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
                    }
                }
                if this.inner.is_end_stream() {
                    this.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => Poll::Pending,
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
    _connection: Option<ConnGuard>,
}

#[derive(Debug)]
enum Kind {
    Upstream {
        body: Incoming,
        guard: Option<InFlightGuard>,
    },
    Message(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn upstream(body: Incoming, guard: InFlightGuard) -> Self {
        // An empty answer is over now; dropping the guard here records it.
        let guard = (!body.is_end_stream()).then_some(guard);
        ProxyBody {
            kind: Kind::Upstream { body, guard },
            _connection: None,
        }
    }

    pub(crate) fn message(text: String) -> Self {
        ProxyBody {
            kind: Kind::Message(Some(Bytes::from(text))),
            _connection: None,
        }
    }

    pub(crate) fn empty() -> Self {
        ProxyBody {
            kind: Kind::Message(None),
            _connection: None,
        }
    }

    /// Keeps the client connection's request counted until this body is done.
    pub(crate) fn hold(&mut self, connection: ConnGuard) {
        self._connection = Some(connection);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Upstream { body, guard } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let finished = match &polled {
                    Poll::Ready(None | Some(Err(_))) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Pending => false,
                };
                if finished {
                    // The last byte is out of the upstream: the request is over for drain.
                    guard.take();
                }
                polled
            }
            Kind::Message(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
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
