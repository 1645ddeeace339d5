//! The HTTP/1.1 relay: how the edge forwards the common request without hyper.
//!
//! Most traffic through an edge is plain HTTP/1.1 keep-alive: a request head, perhaps a
//! small body, and an answer. For those the relay parses the head once (httparse), writes
//! the upstream head straight from the client's bytes with the hop-by-hop headers left out
//! and the `X-Forwarded-*` headers added, and sends the answer back as it arrives, on the
//! client connection's own task: no task, channel or timer per request, and one system
//! call each way when the bytes fit.
//!
//! Anything else goes to the general path ([`crate::connection`], built on hyper) for the
//! rest of the connection, with the bytes already read handed over unconsumed: HTTP/2
//! (the preface does not parse as HTTP/1.1), HTTP/1.0, `Upgrade` (WebSocket),
//! `Expect`, a chunked request body or one larger than [`BUFFERED_BODY`], an
//! absolute-form or `*` target, a head without exactly one `Host`, or a head hyper would
//! refuse. TLS connections always take the general path.
//!
//! The relay keeps every promise of the general path:
//! - routing, the split and its cookie, the preview pin, in-flight counting for drains,
//!   and metrics, through the same [`crate::route::RouteTable::claim`];
//! - the same 404/503/413/502/504 answers, word for word;
//! - the header-read timeout (it also closes a keep-alive connection that waits too long
//!   for its next request, as does the idle timeout), the connect timeout, and the
//!   response-header timeout, counted from the end of the request;
//! - one retry, on a fresh connection, of an idempotent request whose connect failed or
//!   whose pooled connection turned out closed before any byte of an answer came back;
//! - answers stream back as they arrive: a `Content-Length` body, a chunked body (passed
//!   through unchanged, its framing followed to find its end) or a body that ends when the
//!   slot closes (the client connection then closes too);
//! - on stop, a request in flight finishes and its answer says `Connection: close`; an
//!   idle connection closes at once. After a hand-over, the next answer says
//!   `Connection: close`, and a connection on which nothing arrives within
//!   [`HANDOVER_IDLE_GRACE`] is closed.
//!
//! Upstream connections come from the slot's own pool ([`crate::pool`]).
//!
//! An idle relay connection holds no buffer: they are taken when bytes arrive and given
//! back when the connection goes idle again.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::backend::{ActiveBackend, InFlightGuard};
use crate::connection::{ClientConn, Stop, stopped};
use crate::connector;
use crate::handover::HANDOVER_IDLE_GRACE;
use crate::proxy::{Failure, Proxy};
use crate::route::{Claim, RequestInfo};
use crate::split::SLOT_HEADER;

/// Request bodies up to this size are read whole before the request is sent; a larger one
/// streams through the general path.
pub(crate) const BUFFERED_BODY: u64 = 64 * 1024;
/// The largest request or answer head the relay reads (a larger request goes to the
/// general path, which refuses it; a larger answer is a 502).
const MAX_HEAD: usize = 64 * 1024;
/// Headers per head.
const MAX_HEADERS: usize = 100;
/// How much is read at a time.
const READ_SIZE: usize = 8 * 1024;
/// How long a closing connection waits for the client's side to close, reading and
/// discarding, so that bytes the client sent last do not turn the close into a reset that
/// could cut the answer it has not read yet.
const LINGER: Duration = Duration::from_secs(1);

/// How a relayed connection ended.
pub(crate) enum Ended {
    /// Done: the connection is closed or to be closed.
    Closed,
    /// The rest is for the general path, starting with these bytes.
    Fallback(BytesMut),
}

/// Relays requests on `stream` until it closes or meets a request for the general path.
pub(crate) async fn run(
    stream: &mut TcpStream,
    conn: &ClientConn,
    stop: watch::Receiver<Stop>,
    idle: Duration,
) -> Ended {
    let proxy = &*conn.proxy;
    let wait = proxy.header_read_timeout.min(idle);
    let mut stop = stop;
    let mut relay = Relay {
        stream,
        conn,
        proxy,
        buf: BytesMut::new(),
        rbuf: BytesMut::new(),
        out: Vec::new(),
        timer: Box::pin(tokio::time::sleep(wait)),
        stop: Box::pin(async move { stopped(&mut stop).await }),
        stopping: None,
    };
    let ended = relay.serve(wait).await;
    relay.give_back();
    if let Ended::Closed = ended {
        relay.linger().await;
    }
    ended
}

/// Buffers of connections that went idle, kept for the next busy connection on the same
/// thread: an idle connection holds none, and a busy one rarely asks the allocator.
mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::READ_SIZE;

    /// Spares kept per thread, of each kind.
    const KEPT: usize = 64;
    /// A buffer that grew past this is not kept.
    const LARGEST: usize = 8 * READ_SIZE;

    #[derive(Default)]
    struct Spares {
        bytes: Vec<BytesMut>,
        heads: Vec<Vec<u8>>,
    }

    thread_local! {
        static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
    }

    pub(super) fn bytes() -> BytesMut {
        SPARES
            .with_borrow_mut(|s| s.bytes.pop())
            .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
    }

    pub(super) fn head() -> Vec<u8> {
        SPARES
            .with_borrow_mut(|s| s.heads.pop())
            .unwrap_or_else(|| Vec::with_capacity(1024))
    }

    pub(super) fn give_bytes(mut buf: BytesMut) {
        if buf.capacity() == 0 || buf.capacity() > LARGEST {
            return;
        }
        buf.clear();
        SPARES.with_borrow_mut(|s| {
            if s.bytes.len() < KEPT {
                s.bytes.push(buf);
            }
        });
    }

    pub(super) fn give_head(mut out: Vec<u8>) {
        if out.capacity() == 0 || out.capacity() > LARGEST {
            return;
        }
        out.clear();
        SPARES.with_borrow_mut(|s| {
            if s.heads.len() < KEPT {
                s.heads.push(out);
            }
        });
    }
}

struct Relay<'a> {
    stream: &'a mut TcpStream,
    conn: &'a ClientConn,
    proxy: &'a Proxy,
    /// The client's bytes not yet relayed.
    buf: BytesMut,
    /// The slot's bytes.
    rbuf: BytesMut,
    /// A head being written.
    out: Vec<u8>,
    /// One timer for the connection, moved only when a deadline comes earlier than the
    /// one it is set to; later deadlines are checked when it fires.
    timer: Pin<Box<Sleep>>,
    stop: Pin<Box<dyn Future<Output = Stop> + Send + 'a>>,
    /// Set once a stop was seen.
    stopping: Option<Stop>,
}

/// The request the relay is about to forward: where its parts are in the client's bytes.
struct Head {
    /// Head and body.
    len: usize,
    host: Range<usize>,
    path: Range<usize>,
    /// `Cookie` and `X-Shipit-Slot`, the headers the split looks at, when present.
    split: HeaderMap,
    idempotent: bool,
    head_method: bool,
    /// The client asked to close after this request.
    close: bool,
}

enum Parsed {
    Incomplete,
    Fallback,
    Ready(Head),
}

/// How the slot's answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The answer's head, already rewritten into `out`.
struct Answer {
    status: u16,
    head_len: usize,
    framing: Framing,
    /// The slot asked to close its connection.
    upstream_close: bool,
    /// The client connection closes after this answer.
    close: bool,
}

/// Why no answer came.
enum Failed {
    /// The pooled connection was closed before an answer began: another may work.
    Stale(std::io::Error),
    Failure(Failure),
    /// The client went away first.
    Gone,
}

/// The client went away, or broke protocol mid-answer: close.
struct Gone;

impl Relay<'_> {
    async fn serve(&mut self, wait: Duration) -> Ended {
        loop {
            let head = match self.read_head(wait).await {
                Ok(head) => head,
                Err(ended) => return ended,
            };
            let ok = self.relay(head).await;
            if ok.is_err() {
                return Ended::Closed;
            }
            if self.buf.is_empty() {
                // Idle until the next request: hold no buffer.
                self.give_back();
            }
        }
    }

    /// Waits for a whole request (head, and body when it is small) and parses it.
    async fn read_head(&mut self, wait: Duration) -> Result<Head, Ended> {
        let header_deadline = Instant::now() + wait;
        self.arm(header_deadline);
        // Earlier than `header_deadline` while a hand-over's grace runs on an empty buffer.
        let mut deadline = header_deadline;
        match self.stopping {
            Some(Stop::Now) if self.buf.is_empty() => return Err(Ended::Closed),
            Some(Stop::HandOver) if self.buf.is_empty() => {
                deadline = deadline.min(Instant::now() + HANDOVER_IDLE_GRACE);
                self.arm(deadline);
            }
            _ => {}
        }
        loop {
            if !self.buf.is_empty() {
                if self.out.capacity() == 0 {
                    self.out = spare::head();
                }
                let client = Client {
                    https: self.conn.https,
                    ip: self.conn.client_ip.as_bytes(),
                    max_body: self.proxy.max_body,
                };
                match parse_request(&self.buf, &mut self.out, &client) {
                    Parsed::Ready(head) => return Ok(head),
                    Parsed::Fallback => return Err(Ended::Fallback(std::mem::take(&mut self.buf))),
                    Parsed::Incomplete if self.buf.len() > MAX_HEAD + BUFFERED_BODY as usize => {
                        return Err(Ended::Fallback(std::mem::take(&mut self.buf)));
                    }
                    Parsed::Incomplete => {}
                }
            }
            let stopping = self.stopping.is_some();
            tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    if ready.is_err() {
                        return Err(Ended::Closed);
                    }
                    if self.client_read().is_err() {
                        return Err(Ended::Closed);
                    }
                }
                () = self.timer.as_mut() => {
                    let now = Instant::now();
                    if now >= deadline && deadline < header_deadline && !self.buf.is_empty() {
                        // Bytes came within the hand-over's grace: the request may finish.
                        deadline = header_deadline;
                    } else if now >= deadline {
                        tracing::debug!(remote = %self.conn.remote, "closing a client connection: no whole request within the header-read timeout");
                        return Err(Ended::Closed);
                    }
                    self.timer.as_mut().reset(deadline);
                }
                how = self.stop.as_mut(), if !stopping => {
                    self.stopping = Some(how);
                    if self.buf.is_empty() {
                        if how == Stop::Now {
                            return Err(Ended::Closed);
                        }
                        // After a hand-over: a short grace for a request already on its way.
                        let grace = Instant::now() + HANDOVER_IDLE_GRACE;
                        if grace < deadline {
                            deadline = grace;
                            self.arm(deadline);
                        }
                    }
                }
            }
        }
    }

    /// Hands the buffers to the thread's spares.
    fn give_back(&mut self) {
        spare::give_bytes(std::mem::take(&mut self.buf));
        spare::give_bytes(std::mem::take(&mut self.rbuf));
        spare::give_head(std::mem::take(&mut self.out));
    }

    /// Sets the timer to `deadline` if that is earlier than the one it is set to.
    fn arm(&mut self, deadline: Instant) {
        if deadline < self.timer.deadline() || self.timer.is_elapsed() {
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Forwards one request and its answer. `Err` when the connection must close.
    async fn relay(&mut self, head: Head) -> Result<(), Gone> {
        let host = std::str::from_utf8(&self.buf[head.host.clone()]).ok();
        let path = std::str::from_utf8(&self.buf[head.path.clone()]).unwrap_or("/");
        let claimed = self.proxy.table.claim(&RequestInfo {
            host,
            path,
            headers: &head.split,
        });
        let Claim {
            guard,
            set_cookie,
            pinned,
        } = match claimed {
            Ok(claim) => claim,
            Err(unrouted) => {
                self.buf.advance(head.len);
                self.proxy.table.metrics().count_unrouted();
                let status = unrouted.status();
                return self
                    .message(status, &unrouted.to_string(), head.close)
                    .await;
            }
        };
        self.buf.advance(head.len);
        let active = std::sync::Arc::clone(guard.active());
        let extra = Extra {
            set_cookie,
            pinned: pinned.then_some(active.backend().slot.as_str()),
            close: head.close,
            head_method: head.head_method,
        };
        match self.exchange(&active, head.idempotent, &extra).await {
            Ok((upstream, answer)) => self.answer(upstream, answer, guard, &active).await,
            Err(Failed::Gone) => Err(Gone),
            Err(Failed::Stale(e)) => {
                self.failed(&active, guard, &Failure::Broken(e.to_string()), head.close)
                    .await
            }
            Err(Failed::Failure(failure)) => {
                self.failed(&active, guard, &failure, head.close).await
            }
        }
    }

    async fn failed(
        &mut self,
        active: &ActiveBackend,
        guard: InFlightGuard,
        failure: &Failure,
        close: bool,
    ) -> Result<(), Gone> {
        let (status, text) = self.proxy.failure(active, failure);
        active.metrics().count_status(status);
        drop(guard);
        self.message(status, &text, close).await
    }

    /// Sends the request in `out` and reads the answer's head, retrying once on a fresh
    /// connection when that is safe.
    async fn exchange(
        &mut self,
        active: &ActiveBackend,
        idempotent: bool,
        extra: &Extra,
    ) -> Result<(TcpStream, Answer), Failed> {
        let mut upstream = active.pool().take(self.proxy.pool_idle_timeout);
        let mut reused = upstream.is_some();
        loop {
            let mut stream = match upstream.take() {
                Some(stream) => stream,
                None => self
                    .proxy
                    .connect(active, idempotent)
                    .await
                    .map_err(Failed::Failure)?,
            };
            match self.send(&mut stream, extra).await {
                Ok(answer) => return Ok((stream, answer)),
                Err(Failed::Stale(e)) if reused && idempotent => {
                    tracing::debug!(addr = %active.backend().addr, "a pooled connection was closed ({e}); trying a new one");
                    reused = false;
                }
                Err(failed) => return Err(failed),
            }
        }
    }

    /// Reads what the client sent while its answer is on its way (a next request, kept
    /// for later). `Err` when the client closed or broke its connection.
    ///
    /// Called once the socket is readable. The read goes through `poll_read`, not
    /// `try_read`: a read that does not fill the buffer then tells the runtime that the
    /// socket is drained, which saves a read that would only find nothing on the next
    /// wait.
    fn client_read(&mut self) -> Result<(), Gone> {
        if self.buf.capacity() == 0 {
            self.buf = spare::bytes();
        }
        self.buf.reserve(READ_SIZE);
        match self.stream.read_buf(&mut self.buf).now_or_never() {
            Some(Ok(0)) => Err(Gone),
            Some(Ok(_)) | None => Ok(()),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Some(Err(_)) => Err(Gone),
        }
    }

    /// Writes `out` to the slot and reads the head of its answer.
    async fn send(&mut self, upstream: &mut TcpStream, extra: &Extra) -> Result<Answer, Failed> {
        let request = std::mem::take(&mut self.out);
        let written = upstream.write_all(&request).await;
        self.out = request;
        written.map_err(Failed::Stale)?;
        let deadline = Instant::now() + self.proxy.response_timeout;
        self.arm(deadline);
        if self.rbuf.capacity() == 0 {
            self.rbuf = spare::bytes();
        }
        self.rbuf.clear();
        let mut any = false;
        loop {
            let stopping = self.stopping.is_some();
            self.rbuf.reserve(READ_SIZE);
            tokio::select! {
                biased;
                read = upstream.read_buf(&mut self.rbuf) => match read {
                    Ok(0) if !any => return Err(Failed::Stale(std::io::ErrorKind::UnexpectedEof.into())),
                    Ok(0) => return Err(Failed::Failure(Failure::Broken("the connection closed in the middle of the answer's head".into()))),
                    Ok(_) => any = true,
                    Err(e) if !any => return Err(Failed::Stale(e)),
                    Err(e) => return Err(Failed::Failure(Failure::Broken(e.to_string()))),
                },
                () = self.timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return Err(Failed::Failure(Failure::NoAnswer));
                    }
                    self.timer.as_mut().reset(deadline);
                    continue;
                }
                how = self.stop.as_mut(), if !stopping => {
                    self.stopping = Some(how);
                    continue;
                }
                ready = self.stream.readable(), if self.buf.len() < MAX_HEAD => {
                    if ready.is_err() || self.client_read().is_err() {
                        return Err(Failed::Gone);
                    }
                    continue;
                }
            }
            // Interim answers (103 Early Hints) go to the client as they are.
            loop {
                let closing = extra.close || self.stopping.is_some();
                match parse_answer(&self.rbuf, &mut self.out, extra, closing) {
                    Ok(Some(Parsed1::Interim(len))) => {
                        let interim = self.rbuf.split_to(len);
                        if self.stream.write_all(&interim).await.is_err() {
                            return Err(Failed::Gone);
                        }
                    }
                    Ok(Some(Parsed1::Final(answer))) => return Ok(answer),
                    Ok(None) if self.rbuf.len() > MAX_HEAD => {
                        return Err(Failed::Failure(Failure::Broken(format!(
                            "its answer's head is larger than {MAX_HEAD} bytes"
                        ))));
                    }
                    Ok(None) => break,
                    Err(failure) => return Err(Failed::Failure(failure)),
                }
            }
        }
    }

    /// Sends the answer whose head is in `out` and its body, then keeps the upstream
    /// connection if it can carry another request.
    async fn answer(
        &mut self,
        mut upstream: TcpStream,
        answer: Answer,
        guard: InFlightGuard,
        active: &ActiveBackend,
    ) -> Result<(), Gone> {
        let after_head = &self.rbuf[answer.head_len..];
        let mut reusable = !answer.upstream_close;
        let mut remaining = None;
        let mut chunked = ChunkedScanner::default();
        let mut done = false;
        match answer.framing {
            Framing::Empty => {
                reusable &= after_head.is_empty();
                done = true;
            }
            Framing::Length(length) => {
                let take = usize::try_from(length)
                    .unwrap_or(usize::MAX)
                    .min(after_head.len());
                self.out.extend_from_slice(&after_head[..take]);
                reusable &= take == after_head.len();
                let left = length - take as u64;
                done = left == 0;
                remaining = Some(left);
            }
            Framing::Chunked => match chunked.feed(after_head) {
                Ok(Some(end)) => {
                    self.out.extend_from_slice(&after_head[..end]);
                    reusable &= end == after_head.len();
                    done = true;
                }
                Ok(None) => self.out.extend_from_slice(after_head),
                Err(()) => {
                    // The head is not sent yet: answer 502 instead.
                    let failure = Failure::Broken("its chunked body is malformed".into());
                    return self.failed(active, guard, &failure, answer.close).await;
                }
            },
            Framing::UntilClose => {
                self.out.extend_from_slice(after_head);
                reusable = false;
            }
        }
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        active.metrics().count_status(status);
        if self.stream.write_all(&self.out).await.is_err() {
            return Err(Gone);
        }
        while !done {
            self.rbuf.clear();
            let want = remaining.map_or(READ_SIZE * 4, |r| {
                usize::try_from(r)
                    .unwrap_or(usize::MAX)
                    .clamp(1, READ_SIZE * 4)
            });
            self.rbuf.reserve(want);
            let read = tokio::select! {
                biased;
                read = upstream.read_buf(&mut self.rbuf) => read,
                ready = self.stream.readable(), if self.buf.len() < MAX_HEAD => {
                    if ready.is_err() || self.client_read().is_err() {
                        tracing::debug!(remote = %self.conn.remote, "the client went away in the middle of an answer");
                        return Err(Gone);
                    }
                    continue;
                }
            };
            match read {
                Ok(0) if answer.framing == Framing::UntilClose => break,
                Ok(0) | Err(_) => {
                    tracing::debug!(addr = %active.backend().addr, "the slot closed its connection in the middle of an answer's body");
                    return Err(Gone);
                }
                Ok(_) => {}
            }
            let chunk: &[u8] = match answer.framing {
                Framing::Length(_) => {
                    let left = remaining.unwrap_or(0);
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.rbuf.len());
                    reusable &= take == self.rbuf.len();
                    remaining = Some(left - take as u64);
                    done = left == take as u64;
                    &self.rbuf[..take]
                }
                Framing::Chunked => match chunked.feed(&self.rbuf) {
                    Ok(Some(end)) => {
                        reusable &= end == self.rbuf.len();
                        done = true;
                        &self.rbuf[..end]
                    }
                    Ok(None) => &self.rbuf[..],
                    Err(()) => {
                        tracing::debug!(addr = %active.backend().addr, "the slot's chunked body is malformed");
                        return Err(Gone);
                    }
                },
                Framing::UntilClose | Framing::Empty => &self.rbuf[..],
            };
            if self.stream.write_all(chunk).await.is_err() {
                return Err(Gone);
            }
        }
        // The last byte is out: the request is over for drain and metrics.
        drop(guard);
        if reusable {
            active.pool().put(upstream, self.proxy.pool_idle_timeout);
        }
        if answer.close || answer.framing == Framing::UntilClose {
            Err(Gone)
        } else {
            Ok(())
        }
    }

    /// An answer from the edge itself.
    async fn message(&mut self, status: StatusCode, text: &str, close: bool) -> Result<(), Gone> {
        let close = close || self.stopping.is_some();
        self.out.clear();
        write_message(&mut self.out, status, text, close);
        if self.stream.write_all(&self.out).await.is_err() || close {
            return Err(Gone);
        }
        Ok(())
    }

    /// Closes the client connection without resetting it: the write side first, then what
    /// the client still sends is read and dropped until it closes too (at most [`LINGER`]).
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut sink = [0u8; 1024];
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// What the answer's head gets besides the slot's headers.
struct Extra {
    set_cookie: Option<HeaderValue>,
    pinned: Option<&'static str>,
    close: bool,
    head_method: bool,
}

/// Writes an answer from the edge: plain text, with its length.
pub(crate) fn write_message(out: &mut Vec<u8>, status: StatusCode, text: &str, close: bool) {
    let reason = status.canonical_reason().unwrap_or("");
    let body_len = text.len() + 1;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body_len.to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// Whether a header describes one hop only (RFC 9110 §7.6.1), or is a `Proxy-*` one.
fn hop_by_hop(name: &str) -> bool {
    let listed = match name.len() {
        2 => name.eq_ignore_ascii_case("te"),
        7 => name.eq_ignore_ascii_case("trailer") || name.eq_ignore_ascii_case("upgrade"),
        10 => name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive"),
        17 => name.eq_ignore_ascii_case("transfer-encoding"),
        _ => false,
    };
    listed || (name.len() > 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"proxy-"))
}

/// Whether the `Connection` header values list `name` (a header name, or `close`).
fn named_in(connection: &[&[u8]], name: &str) -> bool {
    connection.iter().any(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// What the upstream head says about the client, and the body limit.
struct Client<'a> {
    https: bool,
    /// The client's address, as `X-Forwarded-For` gets it.
    ip: &'a [u8],
    max_body: Option<u64>,
}

/// Parses the request at the start of `buf` and, when the relay takes it, writes its
/// upstream head and body into `out`.
fn parse_request(buf: &[u8], out: &mut Vec<u8>, client: &Client<'_>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Fallback;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Parsed::Fallback;
    }
    let mut host = None;
    let mut length: Option<u64> = None;
    let mut connection: [&[u8]; 4] = [&[]; 4];
    let mut connections = 0;
    let mut split = HeaderMap::new();
    for h in req.headers.iter() {
        let name = h.name;
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if host.is_some() {
                    return Parsed::Fallback;
                }
                host = Some(h.value);
            }
            6 if name.eq_ignore_ascii_case("expect") => return Parsed::Fallback,
            6 if name.eq_ignore_ascii_case("cookie") => {
                if let Ok(value) = HeaderValue::from_bytes(h.value) {
                    split.append(header::COOKIE, value);
                }
            }
            7 if name.eq_ignore_ascii_case("upgrade") => return Parsed::Fallback,
            10 if name.eq_ignore_ascii_case("connection") => {
                if connections == connection.len() {
                    return Parsed::Fallback;
                }
                connection[connections] = h.value;
                connections += 1;
            }
            13 if name.eq_ignore_ascii_case("x-shipit-slot") => {
                if let Ok(value) = HeaderValue::from_bytes(h.value) {
                    split.insert(SLOT_HEADER, value);
                }
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let Some(value) = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                else {
                    return Parsed::Fallback;
                };
                if length.is_some_and(|l| l != value) {
                    return Parsed::Fallback;
                }
                length = Some(value);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => return Parsed::Fallback,
            _ => {}
        }
    }
    let connection = &connection[..connections];
    let Some(host) = host.filter(|h| std::str::from_utf8(h).is_ok()) else {
        return Parsed::Fallback;
    };
    let length = length.unwrap_or(0);
    if length > BUFFERED_BODY || client.max_body.is_some_and(|max| length > max) {
        // Streamed, or refused with 413, by the general path.
        return Parsed::Fallback;
    }
    let len = head_len + length as usize;
    if buf.len() < len {
        return Parsed::Incomplete;
    }

    out.clear();
    out.reserve(len + 160);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut prior_for: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if hop_by_hop(name) || (!connection.is_empty() && named_in(connection, name)) {
            continue;
        }
        match name.len() {
            15 if name.eq_ignore_ascii_case("x-forwarded-for") => {
                prior_for.push(h.value);
                continue;
            }
            16 if name.eq_ignore_ascii_case("x-forwarded-host") => continue,
            17 if name.eq_ignore_ascii_case("x-forwarded-proto") => continue,
            _ => {}
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-host: ");
    out.extend_from_slice(host);
    out.extend_from_slice(if client.https {
        b"\r\nx-forwarded-proto: https\r\nx-forwarded-for: "
    } else {
        b"\r\nx-forwarded-proto: http\r\nx-forwarded-for: "
    });
    for prior in &prior_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.ip);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&buf[head_len..len]);

    let close = named_in(connection, "close");
    Parsed::Ready(Head {
        len,
        host: offset(buf, host),
        path: offset(buf, target.split('?').next().unwrap_or(target).as_bytes()),
        split,
        idempotent: Method::from_bytes(method.as_bytes())
            .is_ok_and(|m| connector::is_idempotent(&m)),
        head_method: method == "HEAD",
        close,
    })
}

enum Parsed1 {
    /// A 1xx answer (not 101) of this many bytes, to pass on as it is.
    Interim(usize),
    Final(Answer),
}

/// Parses the answer's head at the start of `buf` and writes the client's head into `out`.
fn parse_answer(
    buf: &[u8],
    out: &mut Vec<u8>,
    extra: &Extra,
    closing: bool,
) -> Result<Option<Parsed1>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Failure::Broken(format!(
                "its answer is not valid HTTP/1.1 ({e})"
            )));
        }
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err(Failure::Broken("its answer has no status".into()));
    };
    if status == 101 {
        return Err(Failure::UnaskedUpgrade);
    }
    if (100..200).contains(&status) {
        return Ok(Some(Parsed1::Interim(head_len)));
    }
    let mut connection: [&[u8]; 4] = [&[]; 4];
    let mut connections = 0;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in res.headers.iter() {
        let name = h.name;
        match name.len() {
            10 if name.eq_ignore_ascii_case("connection") => {
                if connections == connection.len() {
                    return Err(Failure::Broken(
                        "its answer has too many Connection headers".into(),
                    ));
                }
                connection[connections] = h.value;
                connections += 1;
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let value = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok());
                match (value, length) {
                    (Some(value), None) => length = Some(value),
                    (Some(value), Some(seen)) if value == seen => {}
                    _ => {
                        return Err(Failure::Broken(
                            "its answer has an invalid Content-Length".into(),
                        ));
                    }
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            _ => {}
        }
    }
    let connection = &connection[..connections];
    let framing = if extra.head_method || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    let upstream_close = version == 0 || named_in(connection, "close");
    let close = closing || framing == Framing::UntilClose;

    out.clear();
    out.reserve(buf.len().max(head_len + 128));
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = StatusCode::from_u16(status)
        .map_err(|_| Failure::Broken(format!("its answer's status {status} is not valid")))?;
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    let reason = res
        .reason
        .filter(|r| !r.is_empty())
        .or_else(|| code.canonical_reason());
    out.extend_from_slice(reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name;
        let keep_framing =
            framing == Framing::Chunked && name.eq_ignore_ascii_case("transfer-encoding");
        if !keep_framing
            && (hop_by_hop(name) || (!connection.is_empty() && named_in(connection, name)))
        {
            continue;
        }
        if framing == Framing::Chunked && name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(cookie) = &extra.set_cookie {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(cookie.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(slot) = extra.pinned {
        out.extend_from_slice(b"x-shipit-slot: ");
        out.extend_from_slice(slot.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Parsed1::Final(Answer {
        status,
        head_len,
        framing,
        upstream_close,
        close,
    })))
}

/// Follows the framing of a chunked body passed through unchanged, to find where it ends.
#[derive(Debug, Default)]
struct ChunkedScanner {
    state: Chunk,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk size: its value and how many digits so far.
    #[default]
    SizeStart,
    Size(u64),
    Extension(u64),
    SizeEnd(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedScanner {
    /// Feeds the next bytes of the body. `Ok(Some(n))`: the body ends after the first `n`
    /// of them. `Err`: the framing is broken.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                Chunk::SizeStart => Chunk::Size(hex(b).ok_or(())?),
                Chunk::Size(size) => match b {
                    b'\r' => Chunk::SizeEnd(size),
                    b';' | b' ' | b'\t' => Chunk::Extension(size),
                    _ => {
                        let digit = hex(b).ok_or(())?;
                        Chunk::Size(
                            size.checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .ok_or(())?,
                        )
                    }
                },
                Chunk::Extension(size) => match b {
                    b'\r' => Chunk::SizeEnd(size),
                    b'\n' => return Err(()),
                    _ => Chunk::Extension(size),
                },
                Chunk::SizeEnd(size) => match (b, size) {
                    (b'\n', 0) => Chunk::TrailerStart,
                    (b'\n', size) => Chunk::Data(size),
                    _ => return Err(()),
                },
                Chunk::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::SizeStart,
                Chunk::DataCr | Chunk::DataLf => return Err(()),
                Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
                Chunk::TrailerStart | Chunk::Trailer if b != b'\r' => Chunk::Trailer,
                Chunk::TrailerStart | Chunk::Trailer => Chunk::TrailerLf,
                Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => Chunk::Done,
                Chunk::TrailerLf | Chunk::EndLf => return Err(()),
                Chunk::Done => return Ok(Some(i)),
            };
            i += 1;
            if self.state == Chunk::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests;
