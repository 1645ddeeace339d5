//! One client connection: HTTP/1.1 (keep-alive, upgrades) or HTTP/2 (prior knowledge, or
//! ALPN over TLS), chosen by what the client sends first.
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
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderValue, StatusCode, Version, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::handover::HANDOVER_IDLE_GRACE;
use crate::proxy::Proxy;
use crate::relay;
use crate::server::Tuning;

pub(crate) type Builder = auto::Builder<TokioExecutor>;

/// Whether the edge runs, and how it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Stop: close idle connections now, finish the requests in flight.
    Now,
    /// A new edge process accepts from now on: get the clients there (see the module).
    HandOver,
}

/// The protocol settings shared by every client connection.
pub(crate) fn builder(tuning: &Tuning) -> Builder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(tuning.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
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
}

impl ClientConn {
    pub(crate) fn new(proxy: Arc<Proxy>, remote: SocketAddr, https: bool) -> Arc<Self> {
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
        })
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
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's transport, counting the reads that bring bytes.
struct Watched<I> {
    io: I,
    /// Bytes the relay read before it handed the connection over: read first.
    read: Bytes,
    conn: Arc<ClientConn>,
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
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves one plaintext client connection: through the relay ([`crate::relay`]) while its
/// requests are plain HTTP/1.1, then, from the first one that is not, through hyper.
/// With the relay turned off ([`Tuning::relay`]), through hyper from the start.
pub(crate) async fn serve_tcp(
    builder: Arc<Builder>,
    mut stream: TcpStream,
    conn: Arc<ClientConn>,
    stop: watch::Receiver<Stop>,
    idle: Duration,
) {
    if !conn.proxy.relay {
        serve(builder, stream, Bytes::new(), conn, stop, idle).await;
        return;
    }
    match relay::run(&mut stream, &conn, stop.clone(), idle).await {
        relay::Ended::Closed => {}
        relay::Ended::Fallback(read) => {
            serve(builder, stream, read.freeze(), conn, stop, idle).await;
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
            async move {
                let mut response = guard.conn().proxy.handle(req, guard.conn()).await;
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
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let check = tokio::time::sleep(idle);
    tokio::pin!(check);
    let mut seen = conn.events.load(Ordering::Relaxed);
    // The idle period in force: `idle`, or the hand-over's grace.
    let mut period = idle;
    let mut handing_over = false;
    let mut stopping = false;
    let mut closing = false;
    loop {
        tokio::select! {
            // The connection first: bytes that arrived are read (and counted) before the
            // timer may decide that the connection is idle.
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(remote = %conn.remote, "client connection ended: {e}");
                }
                return;
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

/// Resolves once a stop is requested (or the edge is gone), with how to stop.
pub(crate) async fn stopped(stop: &mut watch::Receiver<Stop>) -> Stop {
    // The borrow `wait_for` returns is not `Send`; copy the value out here, inside.
    match stop.wait_for(|stop| *stop != Stop::Running).await {
        Ok(how) => *how,
        Err(_) => Stop::Now,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, StatusCode, Version};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpStream;

    use crate::Slot;
    use crate::server::Tuning;
    use crate::test_backend::{Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge};

    type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

    /// An HTTP/2 connection with prior knowledge (h2c), and a handle that ends when the
    /// edge closes it.
    async fn h2(addr: std::net::SocketAddr) -> (H2Sender, tokio::task::JoinHandle<()>) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let closed = tokio::spawn(async move {
            let _ = connection.await;
        });
        (sender, closed)
    }

    fn h2_request(method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("http://app.test{path}"))
            .version(Version::HTTP_2)
            .body(Full::new(body))
            .unwrap()
    }

    #[tokio::test]
    async fn http2_prior_knowledge_requests_are_multiplexed_to_the_live_slot() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let (sender, _closed) = h2(edge.addr()).await;
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let mut sender = sender.clone();
            requests.spawn(async move {
                let response = sender
                    .send_request(h2_request("GET", "/headers", Bytes::new()))
                    .await
                    .unwrap();
                assert_eq!(response.version(), Version::HTTP_2);
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(response.headers()["x-backend"], "blue");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let seen: std::collections::BTreeMap<String, Vec<String>> =
                    serde_json::from_slice(&body).unwrap();
                assert_eq!(seen["host"], vec!["app.test".to_string()]);
                assert_eq!(seen["x-forwarded-host"], vec!["app.test".to_string()]);
            });
        }
        while let Some(done) = requests.join_next().await {
            done.unwrap();
        }
        assert_eq!(blue.served(), 20);
    }

    #[tokio::test]
    async fn http2_streams_request_and_response_bodies() {
        let edge = TestEdge::start().await;
        let mut blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let (mut sender, _closed) = h2(edge.addr()).await;

        let payload = Bytes::from("y".repeat(300 * 1024));
        let echoed = sender
            .send_request(h2_request("POST", "/echo", payload.clone()))
            .await
            .unwrap();
        assert_eq!(echoed.status(), StatusCode::OK);
        assert_eq!(
            echoed.into_body().collect().await.unwrap().to_bytes(),
            payload
        );

        // The first chunk reaches the client while the backend still holds the rest.
        let response = sender
            .send_request(h2_request("GET", "/stream", Bytes::new()))
            .await
            .unwrap();
        let mut body = response.into_body();
        let first = tokio::time::timeout(SIGNAL_TIMEOUT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first;");
        blue.arrival().await;
        blue.release_one();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "rest");
    }

    #[tokio::test]
    async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
        let tuning = Tuning {
            idle_timeout: Duration::from_millis(100),
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let (mut sender, closed) = h2(edge.addr()).await;
        let response = sender
            .send_request(h2_request("GET", "/", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        drop(response);
        tokio::time::timeout(SIGNAL_TIMEOUT, closed)
            .await
            .expect("the idle connection was not closed")
            .unwrap();
    }

    #[tokio::test]
    async fn idle_http1_connection_is_closed_by_the_header_read_timeout() {
        let tuning = Tuning {
            header_read_timeout: Duration::from_millis(100),
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut connection = Connection::open(edge.addr()).await;
        assert_eq!(connection.get("/").await.unwrap().status, StatusCode::OK);
        let closed = async {
            while !connection.is_closed() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(SIGNAL_TIMEOUT, closed)
            .await
            .expect("the idle keep-alive connection was not closed");
    }

    #[tokio::test]
    async fn connection_with_a_request_in_flight_is_not_idle() {
        let tuning = Tuning {
            idle_timeout: Duration::from_millis(50),
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        let mut blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let (mut sender, closed) = h2(edge.addr()).await;
        let held = tokio::spawn(async move {
            let response = sender
                .send_request(h2_request("GET", "/hold", Bytes::new()))
                .await
                .unwrap();
            (sender, response.status())
        });
        blue.arrival().await;
        // A negative check needs time to pass: several idle periods with the request held.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!closed.is_finished(), "closed with a request in flight");
        blue.release_one();
        let (mut sender, status) = held.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        // Had the edge taken it for idle, it would have sent GOAWAY: no new request.
        let next = sender
            .send_request(h2_request("GET", "/", Bytes::new()))
            .await
            .expect("the connection was shut down while its request was in flight");
        assert_eq!(next.status(), StatusCode::OK);
    }
}
