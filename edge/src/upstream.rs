//! An HTTP/2 stream's request to the slot, over the relay's pooled connections.
//!
//! The general path ([`crate::proxy`]) sends what the relay does not take through hyper's
//! pooled client. For an HTTP/2 stream that costs more than the stream itself: the request
//! goes through a channel to the pooled connection's own task, the answer comes back through
//! another, and its body through a third. This module sends the common request of an HTTP/2
//! client, one without a body, the way the relay sends an HTTP/1.1 one, on the stream's own
//! task:
//!
//! - the upstream head is written in one piece (the proxy rewrites the headers first, as for
//!   every upstream request) to a connection from the slot's pool ([`crate::pool`]), the
//!   same one the relay uses;
//! - the answer's head is read and checked by the relay's own codec
//!   ([`wire::parse_answer`]): the same limits, the same framing rules, the same headers
//!   left out; interim answers are counted and dropped, as hyper's client drops them;
//! - the body is read from the connection as the client's stream takes it, without its
//!   HTTP/1.1 framing (a chunked body is taken apart); when it is already in the buffer, as
//!   it is for most small answers, the connection goes back to the pool before the answer
//!   is even returned.
//!
//! A connection that showed a framing surprise, or that asked to close, is never pooled.
//! A pooled connection found closed before any byte of an answer came is replaced once for
//! an idempotent request, as on the relay. Requests with a body, and upgrades, stay on
//! hyper's client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::answer::Failure;
use crate::backend::ActiveBackend;
use crate::framing::MAX_INTERIM_ANSWERS;
use crate::proxy::Proxy;
use crate::relay::wire::{self, AnswerSink, ChunkedScanner, Extra, Framing, Parsed1};

/// How much is read from the slot at a time.
const READ_SIZE: usize = 16 * 1024;

/// An HTTP/2 answer's status and headers, as [`wire::parse_answer`] chooses them.
#[derive(Debug, Default)]
struct Parts {
    status: StatusCode,
    headers: HeaderMap,
}

impl AnswerSink for Parts {
    const PASSES_TRANSFER_ENCODING: bool = false;

    fn begin(&mut self, code: StatusCode, _reason: &str, _size_hint: usize) {
        self.status = code;
        self.headers.clear();
    }

    fn header(&mut self, name: &str, value: &[u8]) -> Result<(), Failure> {
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_bytes(value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(Failure::Broken(
                "its answer has a header that HTTP/2 cannot carry".into(),
            ));
        };
        self.headers.append(name, value);
        Ok(())
    }

    fn end(&mut self, _extra: &Extra, _close: bool) {}
}

/// Why no answer came.
enum Failed {
    /// The pooled connection was closed before an answer began: another may work.
    Stale(io::Error),
    Failure(Failure),
}

/// Sends `head` (a whole HTTP/1.1 request head, no body) to the next address of `active`
/// and returns the answer, whose body streams from the slot's connection.
pub(crate) async fn send(
    proxy: &Proxy,
    active: &Arc<ActiveBackend>,
    head: &[u8],
    idempotent: bool,
    head_method: bool,
) -> Result<Response<SlotBody>, Failure> {
    let member = active.pick_index();
    let pool = active.member(member).pool();
    let mut upstream = pool.take(proxy.pool_idle_timeout);
    let mut reused = upstream.is_some();
    loop {
        let mut stream = match upstream.take() {
            Some(stream) => stream,
            None => proxy.connect(active.member(member), idempotent).await?,
        };
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let exchanged = tokio::time::timeout(
            proxy.response_timeout,
            exchange(&mut stream, head, &mut buf, head_method),
        )
        .await
        .unwrap_or(Err(Failed::Failure(Failure::NoAnswer)));
        match exchanged {
            Ok((parts, framing, reusable)) => {
                let body = SlotBody::new(
                    stream,
                    buf,
                    framing,
                    reusable,
                    Arc::clone(active),
                    member,
                    proxy.pool_idle_timeout,
                );
                let mut response = Response::new(body);
                *response.status_mut() = parts.status;
                *response.headers_mut() = parts.headers;
                return Ok(response);
            }
            Err(Failed::Stale(e)) if reused && idempotent => {
                tracing::debug!(addr = %active.member(member).authority(), "a pooled connection was closed ({e}); trying a new one");
                reused = false;
            }
            Err(Failed::Stale(e)) => return Err(Failure::Broken(e.to_string())),
            Err(Failed::Failure(failure)) => return Err(failure),
        }
    }
}

/// Writes `head` and reads the answer's head into `buf`, which keeps what came after it.
async fn exchange(
    stream: &mut TcpStream,
    head: &[u8],
    buf: &mut BytesMut,
    head_method: bool,
) -> Result<(Parts, Framing, bool), Failed> {
    stream.write_all(head).await.map_err(Failed::Stale)?;
    let extra = Extra {
        set_cookie: None,
        pinned: None,
        close: false,
        head_method,
    };
    let mut parts = Parts::default();
    let mut any = false;
    let mut interims = 0;
    loop {
        buf.reserve(READ_SIZE);
        match stream.read_buf(buf).await {
            Ok(0) if !any => return Err(Failed::Stale(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) => {
                return Err(Failed::Failure(Failure::Broken(
                    "the connection closed in the middle of the answer's head".into(),
                )));
            }
            Ok(_) => any = true,
            Err(e) if !any => return Err(Failed::Stale(e)),
            Err(e) => return Err(Failed::Failure(Failure::Broken(e.to_string()))),
        }
        loop {
            match wire::parse_answer(buf, &mut parts, &extra, false) {
                Ok(Some(Parsed1::Interim(len))) => {
                    interims += 1;
                    if interims > MAX_INTERIM_ANSWERS {
                        return Err(Failed::Failure(Failure::Broken(format!(
                            "it sent more than {MAX_INTERIM_ANSWERS} interim answers"
                        ))));
                    }
                    let _ = buf.split_to(len);
                }
                Ok(Some(Parsed1::Final(answer))) => {
                    let _ = buf.split_to(answer.head_len);
                    return Ok((parts, answer.framing, answer.reusable));
                }
                Ok(None) => break,
                Err(failure) => return Err(Failed::Failure(failure)),
            }
        }
    }
}

/// The slot broke off an answer's body, or framed it wrongly.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SlotBodyError(&'static str);

/// An answer's body as it comes from the slot's connection, without its HTTP/1.1 framing.
/// Once it is read whole, a connection fit for another request goes back to the pool.
#[derive(Debug)]
pub struct SlotBody {
    /// `None` once the body is read whole (or broke).
    stream: Option<TcpStream>,
    /// What was read from the slot and not yet handed out.
    buf: BytesMut,
    /// The whole body, when it came with the head: handed out first.
    first: Option<Bytes>,
    left: Left,
    reusable: bool,
    active: Arc<ActiveBackend>,
    member: usize,
    idle_timeout: Duration,
}

#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
    Done,
}

impl SlotBody {
    fn new(
        stream: TcpStream,
        buf: BytesMut,
        framing: Framing,
        reusable: bool,
        active: Arc<ActiveBackend>,
        member: usize,
        idle_timeout: Duration,
    ) -> Self {
        let left = match framing {
            Framing::Empty | Framing::Length(0) => Left::Done,
            Framing::Length(length) => Left::Length(length),
            Framing::Chunked => Left::Chunked(ChunkedScanner::default()),
            Framing::UntilClose => Left::UntilClose,
        };
        let mut body = SlotBody {
            stream: Some(stream),
            buf,
            first: None,
            left,
            reusable,
            active,
            member,
            idle_timeout,
        };
        match body.left {
            Left::Done => body.finish(),
            // The whole body came with the head: the connection is free now.
            Left::Length(length) if body.buf.len() as u64 >= length => {
                body.first = body.take().ok().flatten();
            }
            _ => {}
        }
        body
    }

    /// The body is read whole: its connection goes back to the pool if nothing came after
    /// it and it may carry another request.
    fn finish(&mut self) {
        self.left = Left::Done;
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.reusable && self.buf.is_empty() {
            self.active
                .member(self.member)
                .pool()
                .put(stream, self.idle_timeout);
        }
    }

    /// The next piece of the body from what `buf` holds, if any.
    fn take(&mut self) -> Result<Option<Bytes>, SlotBodyError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.left {
            Left::Done => Ok(None),
            Left::UntilClose => Ok(Some(self.buf.split().freeze())),
            Left::Length(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                *left -= take as u64;
                let data = self.buf.split_to(take).freeze();
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            Left::Chunked(scanner) => {
                let mut data = BytesMut::new();
                let end = scanner
                    .feed_data(&self.buf, |run| data.extend_from_slice(run))
                    .map_err(|()| SlotBodyError("the slot's chunked body is malformed"))?;
                match end {
                    Some(end) => {
                        let _ = self.buf.split_to(end);
                        self.finish();
                    }
                    None => self.buf.clear(),
                }
                Ok(Some(data.freeze()))
            }
        }
    }

    fn break_off(&mut self, why: &'static str) -> SlotBodyError {
        self.reusable = false;
        self.stream = None;
        self.left = Left::Done;
        SlotBodyError(why)
    }
}

impl Body for SlotBody {
    type Data = Bytes;
    type Error = SlotBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SlotBodyError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            match this.take() {
                Ok(Some(data)) if data.is_empty() => {}
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => {
                    let e = this.break_off(e.0);
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if matches!(this.left, Left::Done) {
                return Poll::Ready(None);
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            if ready!(stream.poll_read_ready(cx)).is_err() {
                let e =
                    this.break_off("the slot's connection broke in the middle of an answer's body");
                return Poll::Ready(Some(Err(e)));
            }
            this.buf.reserve(READ_SIZE);
            let read = match stream.try_read_buf(&mut this.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => read,
            };
            match read {
                Ok(0) if matches!(this.left, Left::UntilClose) => {
                    this.stream = None;
                    this.left = Left::Done;
                    return Poll::Ready(None);
                }
                Ok(0) | Err(_) => {
                    let e = this.break_off(
                        "the slot closed its connection in the middle of an answer's body",
                    );
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(_) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done) && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Done => SizeHint::with_exact(self.first.as_ref().map_or(0, |f| f.len() as u64)),
            Left::Length(left) => SizeHint::with_exact(left),
            Left::Chunked(_) | Left::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
