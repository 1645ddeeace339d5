//! One client connection: HTTP/1.1 (keep-alive, upgrades) or HTTP/2 (prior knowledge, or
//! ALPN over TLS), chosen by what the client sends first. An HTTP/2 connection's streams run
//! on the connection's own task, not on a task each ([`streams`]).
//!
//! Timeouts on the client side:
//! - header read: a client must send a whole request head within it. hyper also starts it
//!   while an HTTP/1.1 connection waits for its next request, so it closes idle
//!   keep-alive connections too.
//! - idle: a connection with no request in flight, on which no request started or ended
//!   for a whole idle period, is shut down gracefully (HTTP/2: GOAWAY). It is checked once
//!   per period, so it closes between one and two periods after its last request.
//!
//! On stop, each connection is shut down gracefully: requests in flight finish, idle
//! connections close at once.
//!
//! After a hand-over to a new edge process ([`Stop::HandOver`]) the new process accepts the
//! new connections, and this one must get its clients there without failing a request:
//! - HTTP/2: GOAWAY at once; the client finishes its streams and opens a new connection.
//! - HTTP/1.1: the next answer on each connection carries `Connection: close`, so the
//!   client sends its next request on a new connection. A connection on which nothing at
//!   all arrives (no request, not one byte) for [`HANDOVER_IDLE_GRACE`] is closed. Closing
//!   an idle keep-alive connection always races with a client that writes its next
//!   request at that instant (the request would be lost); to keep that window small, a
//!   byte read counts as activity (a request whose head is still arriving keeps its
//!   connection), and the connection is looked at before the timer on every wake-up. A
//!   client that sends requests back to back never goes idle: it gets the
//!   `Connection: close`. One idle for the whole grace would have to write within
//!   microseconds of the close to be caught.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderValue, StatusCode, Version, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admission::Admitted;
use crate::proxy::Proxy;
use crate::relay;
use crate::settings::Tuning;

pub(crate) type Builder = auto::Builder<streams::OnConnection>;

/// Whether the edge runs, and how it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Stop: close idle connections now, finish the requests in flight.
    Now,
    /// A new edge process accepts from now on: get the clients there (see the module).
    HandOver,
}

/// How long an edge that handed over keeps an HTTP/1.1 keep-alive connection on which
/// nothing arrives, before closing it. A request that does arrive is answered with
/// `Connection: close`, so the client's next one goes to the new process.
pub const HANDOVER_IDLE_GRACE: Duration = Duration::from_secs(1);

/// How long a connection with no request in flight may take to close once asked (GOAWAY
/// sent, or an idle HTTP/1.1 connection shut down) before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The protocol settings shared by every client connection.
pub(crate) fn builder(tuning: &Tuning) -> Builder {
    let mut builder = auto::Builder::new(streams::OnConnection);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(tuning.header_read_timeout)
        .max_headers(tuning.max_headers.min(crate::MAX_HEADERS_LIMIT))
        // A head that does not fit in the read buffer is answered 431; hyper's smallest
        // buffer is 8 KiB.
        .max_buf_size(tuning.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(tuning.h2_max_concurrent_streams)
        .max_header_list_size(tuning.h2_max_header_list_size)
        .max_pending_accept_reset_streams(tuning.h2_max_resets_per_second as usize)
        .max_local_error_reset_streams(tuning.h2_max_resets_per_second as usize);
    builder
}

/// What the proxy knows of the client connection a request came on.
#[derive(Debug)]
pub(crate) struct ClientConn {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) remote: SocketAddr,
    /// Whether the client came over TLS (for `X-Forwarded-Proto`).
    pub(crate) https: bool,
    /// The client's IP as a header value, made once per connection, not per request.
    pub(crate) client_ip: HeaderValue,
    in_flight: AtomicUsize,
    /// Requests started plus requests ended: unchanged over a period means no activity.
    events: AtomicU64,
    /// Reads that brought bytes: activity before a request head is complete.
    reads: AtomicU64,
    /// A request came over HTTP/2.
    http2: AtomicBool,
    /// HTTP/1.1 answers carry `Connection: close` (after a hand-over).
    closing: AtomicBool,
    /// Requests that ended before their answer (HTTP/2: reset by the client), in the
    /// current second of the connection's life ([`RESET_WINDOW`]).
    resets: AtomicU64,
    /// The window `resets` counts in, as seconds since `opened`.
    reset_window: AtomicU64,
    opened: Instant,
    /// Told when resets went over the limit: the connection is to end (GOAWAY).
    reset_flood: tokio::sync::Notify,
    /// Answer bodies polled (each poll of each body): unchanged for a write timeout while
    /// a body waits means the client takes in nothing, even when the transport does not
    /// block (an HTTP/2 client that opens no flow-control window).
    answer_polls: AtomicU64,
    /// Answer bodies that handed out data and were not polled since.
    answers_waiting: AtomicUsize,
    /// The connection's place under the connection limits, held for as long as anything
    /// of it lives: an upgraded connection's tunnel holds it too.
    _admitted: Option<Admitted>,
}

impl ClientConn {
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        remote: SocketAddr,
        https: bool,
        admitted: Option<Admitted>,
    ) -> Arc<Self> {
        let client_ip = HeaderValue::try_from(remote.ip().to_string())
            .expect("an IP address is a valid header value");
        Arc::new(ClientConn {
            proxy,
            remote,
            https,
            client_ip,
            in_flight: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            reset_window: AtomicU64::new(0),
            opened: Instant::now(),
            reset_flood: tokio::sync::Notify::new(),
            answer_polls: AtomicU64::new(0),
            answers_waiting: AtomicUsize::new(0),
            _admitted: admitted,
        })
    }

    /// An answer body was polled; `waiting`: it was waiting since it last handed out data.
    pub(crate) fn answer_polled(&self, waiting: bool) {
        self.answer_polls.fetch_add(1, Ordering::Relaxed);
        if waiting {
            self.answers_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// An answer body handed out data: it waits until it is polled again.
    pub(crate) fn answer_waits(&self) {
        self.answers_waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that ended before its answer; over the limit per second, the
    /// connection is told to end.
    fn count_reset(&self) {
        let now = self.opened.elapsed().as_secs();
        let window = self.reset_window.load(Ordering::Relaxed);
        if now != window
            && self
                .reset_window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.resets.store(0, Ordering::Relaxed);
        }
        let resets = self.resets.fetch_add(1, Ordering::Relaxed) + 1;
        if resets > u64::from(self.proxy.h2_max_resets_per_second) {
            self.reset_flood.notify_one();
        }
    }

    fn activity(&self) -> u64 {
        self.events
            .load(Ordering::Relaxed)
            .wrapping_add(self.reads.load(Ordering::Relaxed))
    }
}

/// One request on a client connection, from its head until its answer's last byte.
#[derive(Debug)]
pub(crate) struct ConnGuard(Arc<ClientConn>);

impl ConnGuard {
    fn start(conn: Arc<ClientConn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.events.fetch_add(1, Ordering::Relaxed);
        ConnGuard(conn)
    }

    pub(crate) fn conn(&self) -> &ClientConn {
        &self.0
    }

    /// The connection itself, for what outlives the request (an upgraded connection).
    pub(crate) fn shared(&self) -> &Arc<ClientConn> {
        &self.0
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request on its way to an answer: dropped before it got one, it counts as reset.
struct Answering {
    conn: Arc<ClientConn>,
    answered: bool,
}

impl Answering {
    fn finish(mut self) {
        self.answered = true;
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.answered {
            self.conn.count_reset();
        }
    }
}

/// The client's transport, counting the reads that bring bytes, and giving up on a client
/// that takes in nothing of what is written for the write timeout.
struct Watched<I> {
    io: I,
    /// Bytes the relay read before it handed the connection over: read first.
    read: Bytes,
    conn: Arc<ClientConn>,
    /// Runs while a write waits for the client to take in bytes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Watched<I> {
    /// What a write that could not proceed returns: still pending, or an error once the
    /// client has taken in nothing for the write timeout.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let timeout = self.conn.proxy.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took in nothing for the write timeout",
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves one client connection, plain or TLS (handshake done): through the relay
/// ([`crate::relay`]) while its requests are HTTP/1.1 the relay takes, then, from the first
/// one that is not, through hyper. A connection that settled on HTTP/2 by ALPN
/// ([`relay::ClientStream::chose_h2`]), or every one with the relay turned off
/// ([`Tuning::relay`]), goes through hyper from the start.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice, and this future is every connection's task"
)]
pub(crate) fn serve_client<S: relay::ClientStream + 'static>(
    builder: Arc<Builder>,
    mut stream: S,
    conn: Arc<ClientConn>,
    stop: watch::Receiver<Stop>,
    idle: Duration,
) -> impl Future<Output = ()> + Send {
    // Every idle client connection is a task of this future's size, so it is kept small:
    // hyper's side is boxed (its future is several KiB, 4.8 over TLS), and this is an async
    // block, not an async fn, whose arguments would be stored twice (once as arguments,
    // once as the locals they move into).
    async move {
        if !conn.proxy.relay || stream.chose_h2() {
            return Box::pin(serve(builder, stream, Bytes::new(), conn, stop, idle)).await;
        }
        match relay::run(&mut stream, &conn, stop.clone(), idle).await {
            relay::Ended::Closed => {}
            relay::Ended::Fallback(read) => {
                Box::pin(serve(builder, stream, read.freeze(), conn, stop, idle)).await;
            }
        }
    }
}

/// Serves one client connection until it closes, is idle for too long, or `stop` turns
/// (then gracefully, in the way the stop asks for).
///
/// `read`: bytes of the connection already read (by the relay), served to hyper first.
pub(crate) async fn serve<I>(
    builder: Arc<Builder>,
    io: I,
    read: Bytes,
    conn: Arc<ClientConn>,
    mut stop: watch::Receiver<Stop>,
    idle: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |req| {
            let guard = ConnGuard::start(Arc::clone(&conn));
            let http1 = req.version() != Version::HTTP_2;
            if !http1 {
                conn.http2.store(true, Ordering::Relaxed);
            }
            let answering = Answering {
                conn: Arc::clone(&conn),
                answered: false,
            };
            async move {
                let mut response = guard.conn().proxy.handle(req, guard.shared()).await;
                answering.finish();
                if http1
                    && guard.conn().closing.load(Ordering::Relaxed)
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response.body_mut().hold(guard);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = Watched {
        io,
        read,
        conn: Arc::clone(&conn),
        stalled: None,
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    // HTTP/2 streams run on this task, polled with the connection (see `streams`).
    let mut streams = streams::Streams::default();
    // The first look comes after the header-read timeout at the latest: an HTTP/2 client
    // that has not completed one request head by then is closed (HTTP/1.1 heads are
    // timed by hyper itself).
    let check = tokio::time::sleep(idle.min(conn.proxy.header_read_timeout));
    tokio::pin!(check);
    let mut seen = conn.events.load(Ordering::Relaxed);
    // The idle period in force: `idle`, or the hand-over's grace.
    let mut period = idle;
    let mut handing_over = false;
    let mut stopping = false;
    let mut closing = false;
    // Once a graceful close began: when the connection is dropped all the same (an
    // HTTP/2 client may never acknowledge the GOAWAY's PING, or never end its streams).
    let close_by = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_by);
    // Whether an answer waits on a client that takes in nothing: looked at every write
    // timeout.
    let write_timeout = conn.proxy.write_timeout;
    let stall_check = tokio::time::sleep(write_timeout);
    tokio::pin!(stall_check);
    let mut polls_seen = conn.answer_polls.load(Ordering::Relaxed);
    let mut close_armed = false;
    loop {
        if closing && !close_armed {
            let grace = if conn.in_flight.load(Ordering::Relaxed) == 0 {
                CLOSE_GRACE
            } else {
                conn.proxy.shutdown_grace
            };
            close_by.as_mut().reset(Instant::now() + grace);
            close_armed = true;
        }
        tokio::select! {
            // The connection first: bytes that arrived are read (and counted) before the
            // timer may decide that the connection is idle.
            biased;
            result = std::future::poll_fn(|cx| streams.poll_connection(connection.as_mut(), cx)) => {
                if let Err(e) = result {
                    if ended_for_resets(&*e) {
                        // hyper's HTTP/2 layer counts streams reset before they were
                        // taken up; this connection's own count the ones after.
                        conn.proxy.table.metrics().count_h2_reset_flood();
                    }
                    tracing::debug!(remote = %conn.remote, "client connection ended: {e}");
                }
                return;
            }
            () = &mut close_by, if closing => {
                tracing::debug!(remote = %conn.remote, "dropping a client connection that did not close when asked");
                return;
            }
            () = &mut stall_check => {
                let polls = conn.answer_polls.load(Ordering::Relaxed);
                if polls == polls_seen && conn.answers_waiting.load(Ordering::Relaxed) > 0 {
                    tracing::debug!(remote = %conn.remote, "closing a client connection: it took in nothing of its answers for the write timeout");
                    return;
                }
                polls_seen = polls;
                stall_check.as_mut().reset(Instant::now() + write_timeout);
            }
            () = conn.reset_flood.notified(), if !closing => {
                tracing::info!(remote = %conn.remote, "ending a connection that resets requests faster than {} a second", conn.proxy.h2_max_resets_per_second);
                conn.proxy.table.metrics().count_h2_reset_flood();
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            how = stopped(&mut stop), if !stopping && !closing => {
                stopping = true;
                if how == Stop::HandOver && !conn.http2.load(Ordering::Relaxed) {
                    conn.closing.store(true, Ordering::Relaxed);
                    handing_over = true;
                    period = HANDOVER_IDLE_GRACE.min(idle);
                    seen = conn.activity();
                    check.as_mut().reset(Instant::now() + period);
                } else {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = &mut check, if !closing => {
                // A connection that turned out to speak HTTP/2 gets its GOAWAY.
                if handing_over && conn.http2.load(Ordering::Relaxed) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    continue;
                }
                let now = if handing_over { conn.activity() } else { conn.events.load(Ordering::Relaxed) };
                if now == seen && conn.in_flight.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(remote = %conn.remote, handing_over, "closing an idle client connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    seen = now;
                    check.as_mut().reset(Instant::now() + period);
                }
            }
        }
    }
}

/// Whether an HTTP/2 connection ended with the GOAWAY for too many reset streams.
fn ended_for_resets(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = e.source();
    }
    false
}

/// Resolves once a stop is requested (or the edge is gone), with how to stop.
pub(crate) async fn stopped(stop: &mut watch::Receiver<Stop>) -> Stop {
    // The borrow `wait_for` returns is not `Send`; copy the value out here, inside.
    match stop.wait_for(|stop| *stop != Stop::Running).await {
        Ok(how) => *how,
        Err(_) => Stop::Now,
    }
}

mod streams;

#[cfg(test)]
mod tests;
