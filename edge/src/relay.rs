//! The HTTP/1.1 relay: how the edge forwards the common request without hyper.
//!
//! Most traffic through an edge is plain HTTP/1.1 keep-alive: a request head, perhaps a
//! small body, and an answer. For those the relay parses the head once (httparse, in the
//! pure codec [`wire`]), writes the upstream head straight from the client's bytes with the
//! hop-by-hop headers left out and the `X-Forwarded-*` headers added, and sends the answer
//! back as it arrives, on the client connection's own task: no task, channel or timer per
//! request, and one system call each way when the bytes fit.
//!
//! Every head is first held to [`crate::framing`]'s rules, the same ones the general path
//! applies; what they refuse is answered (400, 408, 431) and the connection closed. Anything
//! else the relay does not take goes to the general path ([`crate::connection`], built on
//! hyper) for the rest of the connection, with the bytes already read handed over
//! unconsumed: HTTP/2 (the preface), HTTP/1.0, `Upgrade` (WebSocket), `Expect`, a chunked
//! request body or one larger than [`wire::BUFFERED_BODY`], an absolute-form or `*` target.
//! A TLS connection is relayed the same way, through the same code ([`stream`]), once ALPN
//! chose `http/1.1` or the client offered no ALPN; one that chose `h2` goes to the general
//! path from its start.
//!
//! The relay keeps every promise of the general path:
//! - routing, the split and its cookie, the preview pin, in-flight counting for drains,
//!   and metrics, through the same [`crate::route::RouteTable::claim`];
//! - the same answers of the edge's own, generic ([`crate::answer`]);
//! - the header-read timeout (it also closes a keep-alive connection that waits too long
//!   for its next request, as does the idle timeout; a request that came in part gets 408),
//!   the connect timeout, the response-header timeout counted from the end of the request,
//!   and the write timeout (a client that takes in nothing is cut off);
//! - one retry, on a fresh connection, of an idempotent request whose connect failed or
//!   whose pooled connection turned out closed before any byte of an answer came back;
//! - answers stream back as they arrive: a `Content-Length` body, a chunked body (passed
//!   through unchanged, its framing followed to find its end) or a body that ends when the
//!   slot closes (the client connection then closes too);
//! - at most [`MAX_INTERIM_ANSWERS`] interim answers passed on, and a slot connection that
//!   showed any framing surprise is closed, never pooled;
//! - on stop, a request in flight finishes and its answer says `Connection: close`; an
//!   idle connection closes at once. After a hand-over, the next answer says
//!   `Connection: close`, and a connection on which nothing arrives within
//!   [`HANDOVER_IDLE_GRACE`] is closed.
//!
//! A request of a paused route is held on the connection's task ([`crate::pause`]), which
//! meanwhile watches the client's socket: a client that goes away ends the hold. One of a
//! route under maintenance, or paused past its deadline, gets the edge's 503.
//!
//! Upstream connections come from the slot's own pool ([`crate::pool`]).
//!
//! An idle relay connection holds no buffer: they are taken when bytes arrive and given
//! back when the connection goes idle again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::answer::{self, Failure, RequestId, Unavailable};
use crate::backend::{ActiveBackend, InFlightGuard, Member};
use crate::connection::{ClientConn, HANDOVER_IDLE_GRACE, Stop, stopped};
use crate::framing::{MAX_INTERIM_ANSWERS, Refusal};
use crate::pause::{Held, Hold, MAX_HOLDS};
use crate::proxy::Proxy;
use crate::route::{Claim, Closed, RequestInfo, Unclaimed};

pub(crate) mod stream;
pub(crate) mod wire;

pub(crate) use stream::ClientStream;

use wire::{
    Answer, ChunkedScanner, Client, Extra, Framing, Head, Parsed, Parsed1, parse_answer,
    parse_request, write_message, write_unavailable,
};

/// How much of the client's next requests is read ahead while an answer is on its way.
const READ_AHEAD: usize = 64 * 1024;
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
pub(crate) async fn run<S: ClientStream>(
    stream: &mut S,
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

struct Relay<'a, S> {
    stream: &'a mut S,
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

impl<S: ClientStream> Relay<'_, S> {
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
                    limits: self.proxy.head_limits,
                };
                match parse_request(&self.buf, &mut self.out, &client) {
                    Parsed::Ready(head) => return Ok(head),
                    Parsed::Fallback => return Err(Ended::Fallback(std::mem::take(&mut self.buf))),
                    Parsed::Refuse(refusal) => {
                        self.refuse(refusal).await;
                        return Err(Ended::Closed);
                    }
                    Parsed::Incomplete => {}
                }
            }
            let stopping = self.stopping.is_some();
            tokio::select! {
                biased;
                ready = self.stream.ready() => {
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
                        if self.buf.is_empty() {
                            tracing::debug!(remote = %self.conn.remote, "closing an idle client connection");
                        } else {
                            // Part of a request came, not all of it (a small body is read
                            // whole within the header-read timeout too).
                            self.refuse(Refusal::Timeout).await;
                        }
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
        let claimed = self.claim_when_open(&head).await?;
        let Claim {
            guard,
            set_cookie,
            pinned,
        } = match claimed {
            Ok(claim) => claim,
            Err(Unclaimed::Unrouted(unrouted)) => {
                self.buf.advance(head.len);
                let (status, id) = self.proxy.unrouted(&unrouted, &self.conn.remote);
                return self.message(status, id, head.head_method, head.close).await;
            }
            Err(Unclaimed::Closed(closed)) => {
                self.buf.advance(head.len);
                let metrics = self.proxy.table.metrics();
                let unavailable = answer::unavailable(&closed, metrics, &self.conn.remote);
                return self
                    .unavailable(&unavailable, head.head_method, head.close)
                    .await;
            }
            Err(Unclaimed::Held(_)) => unreachable!("claim_when_open waits out every hold"),
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
            Ok((upstream, answer, member)) => {
                self.answer(upstream, answer, guard, &active, member).await
            }
            Err(Failed::Gone) => Err(Gone),
            Err(Failed::Stale(e)) => {
                let failure = Failure::Broken(e.to_string());
                self.failed(&active, guard, &failure, head.head_method, head.close)
                    .await
            }
            Err(Failed::Failure(failure)) => {
                self.failed(&active, guard, &failure, head.head_method, head.close)
                    .await
            }
        }
    }

    /// Claims a backend for the request; while its route is paused, waits for the resume
    /// (then claims again), the pause's deadline, or the edge's stop. `Err` when the client
    /// went away meanwhile. Never `Unclaimed::Held`.
    async fn claim_when_open(&mut self, head: &Head) -> Result<Result<Claim, Unclaimed>, Gone> {
        let mut holds = 0;
        loop {
            let host = std::str::from_utf8(&self.buf[head.host.clone()]).ok();
            let path = std::str::from_utf8(&self.buf[head.path.clone()]).unwrap_or("/");
            let claimed = self.proxy.table.claim(&RequestInfo {
                host,
                path,
                headers: &head.split,
            });
            let hold = match claimed {
                Err(Unclaimed::Held(hold)) => hold,
                claimed => return Ok(claimed),
            };
            holds += 1;
            if holds > MAX_HOLDS {
                return Ok(Err(Unclaimed::Closed(hold.gave_up())));
            }
            // Resumed or past the deadline, the route says what comes next.
            if self.hold(&hold).await? == Held::Stopping {
                return Ok(Err(Unclaimed::Closed(Closed::Stopping)));
            }
        }
    }

    /// Waits out one hold while watching the client: `Err` when it closed its connection.
    /// The client's next requests are read ahead meanwhile (up to [`READ_AHEAD`]).
    async fn hold(&mut self, hold: &Hold) -> Result<Held, Gone> {
        let wait = hold.wait(std::future::pending());
        tokio::pin!(wait);
        // Each turn reads bytes the client sent, or sees the stop; the hold ends the loop.
        loop {
            if self.stopping.is_some() {
                return Ok(Held::Stopping);
            }
            tokio::select! {
                biased;
                held = &mut wait => return Ok(held),
                ready = self.stream.ready(), if self.buf.len() < READ_AHEAD => {
                    if ready.is_err() || self.client_read().is_err() {
                        tracing::debug!(remote = %self.conn.remote, "the client of a held request went away");
                        return Err(Gone);
                    }
                }
                how = self.stop.as_mut() => self.stopping = Some(how),
            }
        }
    }

    /// The edge's 503 for a request of a closed route.
    async fn unavailable(
        &mut self,
        unavailable: &Unavailable,
        head_method: bool,
        close: bool,
    ) -> Result<(), Gone> {
        let close = close || self.stopping.is_some();
        self.out.clear();
        write_unavailable(&mut self.out, unavailable, head_method, close);
        self.send_answer(close).await
    }

    async fn failed(
        &mut self,
        active: &ActiveBackend,
        guard: InFlightGuard,
        failure: &Failure,
        head_method: bool,
        close: bool,
    ) -> Result<(), Gone> {
        let (status, id) = self.proxy.failure(active, failure);
        if !failure.is_the_edges() {
            active.metrics().count_status(status);
        }
        drop(guard);
        self.message(status, id, head_method, close).await
    }

    /// Sends the request in `out` and reads the answer's head, retrying once on a fresh
    /// connection when that is safe.
    async fn exchange<'a>(
        &mut self,
        active: &'a ActiveBackend,
        idempotent: bool,
        extra: &Extra,
    ) -> Result<(TcpStream, Answer, &'a Member), Failed> {
        // The slot's next address, with its own pool: each request goes to the next one.
        let member = active.pick();
        let mut upstream = member.pool().take(self.proxy.pool_idle_timeout);
        let mut reused = upstream.is_some();
        loop {
            let mut stream = match upstream.take() {
                Some(stream) => stream,
                None => self
                    .proxy
                    .connect(member, idempotent)
                    .await
                    .map_err(Failed::Failure)?,
            };
            match self.send(&mut stream, extra).await {
                Ok(answer) => return Ok((stream, answer, member)),
                Err(Failed::Stale(e)) if reused && idempotent => {
                    tracing::debug!(addr = %member.authority(), "a pooled connection was closed ({e}); trying a new one");
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
        let mut interims = 0;
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
                ready = self.stream.ready(), if self.buf.len() < READ_AHEAD => {
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
                        interims += 1;
                        if interims > MAX_INTERIM_ANSWERS {
                            return Err(Failed::Failure(Failure::Broken(format!(
                                "it sent more than {MAX_INTERIM_ANSWERS} interim answers"
                            ))));
                        }
                        let interim = self.rbuf.split_to(len);
                        if self.write_client(&interim).await.is_err() {
                            return Err(Failed::Gone);
                        }
                    }
                    Ok(Some(Parsed1::Final(answer))) => return Ok(answer),
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
        member: &Member,
    ) -> Result<(), Gone> {
        let after_head = &self.rbuf[answer.head_len..];
        let mut reusable = answer.reusable;
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
                    // A chunked answer is never one to a HEAD request.
                    return self
                        .failed(active, guard, &failure, false, answer.close)
                        .await;
                }
            },
            Framing::UntilClose => {
                self.out.extend_from_slice(after_head);
                reusable = false;
            }
        }
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        active.metrics().count_status(status);
        if write_within(self.stream, &self.out, self.proxy.write_timeout)
            .await
            .is_err()
        {
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
                ready = self.stream.ready(), if self.buf.len() < READ_AHEAD => {
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
                    tracing::debug!(addr = %member.authority(), "the slot closed its connection in the middle of an answer's body");
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
                        tracing::debug!(addr = %member.authority(), "the slot's chunked body is malformed");
                        return Err(Gone);
                    }
                },
                Framing::UntilClose | Framing::Empty => &self.rbuf[..],
            };
            if write_within(self.stream, chunk, self.proxy.write_timeout)
                .await
                .is_err()
            {
                return Err(Gone);
            }
        }
        // The last byte is out: the request is over for drain and metrics.
        drop(guard);
        if reusable {
            member.pool().put(upstream, self.proxy.pool_idle_timeout);
        }
        if answer.close || answer.framing == Framing::UntilClose {
            Err(Gone)
        } else {
            Ok(())
        }
    }

    /// An answer from the edge itself; to a HEAD request, without its body.
    async fn message(
        &mut self,
        status: StatusCode,
        id: RequestId,
        head_method: bool,
        close: bool,
    ) -> Result<(), Gone> {
        let close = close || self.stopping.is_some();
        self.out.clear();
        write_message(&mut self.out, status, id, head_method, close);
        self.send_answer(close).await
    }

    /// Sends the edge's own answer written into `out`; `Gone` when the write fails or the
    /// answer closes the connection.
    async fn send_answer(&mut self, close: bool) -> Result<(), Gone> {
        if write_within(self.stream, &self.out, self.proxy.write_timeout)
            .await
            .is_err()
            || close
        {
            return Err(Gone);
        }
        Ok(())
    }

    /// Answers a request the client got wrong, which closes the connection: where such a
    /// request ends is not known, so nothing after it is read.
    async fn refuse(&mut self, refusal: Refusal) {
        let id = RequestId::new();
        let status = refusal.status();
        answer::log_refusal(id, status, &self.conn.remote, refusal.reason());
        self.proxy.table.metrics().count_refused();
        self.buf.clear();
        // The connection closes after it: nothing is read as a next answer.
        let _ = self.message(status, id, false, true).await;
    }

    /// Writes to the client, giving up when it takes in nothing for the write timeout.
    async fn write_client(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        write_within(self.stream, bytes, self.proxy.write_timeout).await
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

/// Writes `bytes` to the client, or fails when the client takes in nothing for `timeout`
/// (it stopped reading): the request then ends, so that a drain does not wait for it.
///
/// Behind TLS a write only hands the bytes to rustls, so they are flushed too: on plain TCP
/// the flush does nothing.
async fn write_within<S: ClientStream>(
    stream: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), Gone> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match tokio::time::timeout(timeout, stream.write(rest)).await {
            Ok(Ok(0) | Err(_)) => return Err(Gone),
            Ok(Ok(n)) => rest = &rest[n..],
            Err(_) => return Err(write_timed_out()),
        }
    }
    match tokio::time::timeout(timeout, stream.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Gone),
        Err(_) => Err(write_timed_out()),
    }
}

fn write_timed_out() -> Gone {
    tracing::debug!("closing a client connection: it took in nothing for the write timeout");
    Gone
}

#[cfg(test)]
mod tests;
