//! Real HTTP backends and clients for the edge's tests, on 127.0.0.1 only.
//!
//! A [`TestBackend`] answers every request with its name (body and `x-backend` header).
//! `/hold` and `/stream` let a test keep a request in flight for as long as it wants: the
//! backend reports each arrival and waits for the test to release it, so tests wait on
//! signals, never on sleeps. `/ws` is a WebSocket that echoes each text message as
//! `<name>: <message>`, `/status/<code>` answers with that status, `/big/<n>` with `n` bytes.
//!
//! A [`TestEdge`] may also listen for TLS ([`TestEdge::start_in`]), so that a test can speak
//! the same bytes to it over either [`Transport`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::{Backend, Slot};

/// How long a test waits for any one signal before failing.
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestBackend {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
    arrivals: mpsc::UnboundedReceiver<&'static str>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    pub async fn start(name: &'static str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let state = Arc::new(Handler {
            name,
            served: Arc::clone(&served),
            release: Arc::clone(&release),
            arrived,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestBackend {
            addr,
            served,
            release,
            arrivals,
            task,
        }
    }

    pub fn backend(&self, slot: Slot, release: &str) -> Backend {
        Backend {
            slot,
            release: release.to_string(),
            addr: self.addr,
            more_addrs: Vec::new(),
        }
    }

    /// Requests answered (or started, for `/stream`) so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits until a `/hold` request arrived, or a `/stream` sent its first chunk.
    pub async fn arrival(&mut self) -> &'static str {
        tokio::time::timeout(SIGNAL_TIMEOUT, self.arrivals.recv())
            .await
            .expect("no held request arrived at the backend")
            .unwrap()
    }

    /// Lets one held request (or stream) finish.
    pub fn release_one(&self) {
        self.release.add_permits(1);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Handler {
    name: &'static str,
    served: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
    arrived: mpsc::UnboundedSender<&'static str>,
}

impl Handler {
    async fn answer(&self, mut req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        self.served.fetch_add(1, Ordering::SeqCst);
        let mut status = StatusCode::OK;
        if req.uri().path() == "/ws" {
            return self.websocket(&mut req);
        }
        if let Some(code) = req.uri().path().strip_prefix("/status/") {
            status = code.parse().unwrap();
        }
        let body = match req.uri().path() {
            "/hold" => {
                let _ = self.arrived.send("hold");
                self.release.acquire().await.unwrap().forget();
                Full::new(Bytes::from(self.name)).boxed()
            }
            "/stream" => {
                let (tx, rx) = mpsc::channel::<Bytes>(1);
                let release = Arc::clone(&self.release);
                let arrived = self.arrived.clone();
                tokio::spawn(async move {
                    if tx.send(Bytes::from_static(b"first;")).await.is_err() {
                        return;
                    }
                    let _ = arrived.send("stream");
                    release.acquire().await.unwrap().forget();
                    let _ = tx.send(Bytes::from_static(b"rest")).await;
                });
                let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                    let chunk = rx.recv().await?;
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
                });
                StreamBody::new(chunks).boxed()
            }
            path if path.starts_with("/big/") => {
                // That many bytes, in 64 KiB chunks made as they are sent.
                let mut left: usize = path["/big/".len()..].parse().unwrap();
                let chunks = futures_util::stream::poll_fn(move |_| {
                    if left == 0 {
                        return std::task::Poll::Ready(None);
                    }
                    let n = left.min(64 * 1024);
                    left -= n;
                    std::task::Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(Bytes::from(
                        vec![b'x'; n],
                    )))))
                });
                StreamBody::new(chunks).boxed()
            }
            "/headers" => {
                let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in req.headers() {
                    seen.entry(name.to_string())
                        .or_default()
                        .push(value.to_str().unwrap_or("<binary>").to_string());
                }
                Full::new(Bytes::from(serde_json::to_vec(&seen).unwrap())).boxed()
            }
            "/echo" => {
                // A body the edge gave up on (the client broke it) ends in an error here.
                let bytes = match req.into_body().collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                Full::new(bytes).boxed()
            }
            _ => Full::new(Bytes::from(self.name)).boxed(),
        };
        Response::builder()
            .status(status)
            .header("x-backend", self.name)
            .body(body)
            .unwrap()
    }

    fn websocket(&self, req: &mut Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let key = req
            .headers()
            .get("sec-websocket-key")
            .expect("a WebSocket handshake has a key")
            .as_bytes()
            .to_vec();
        let upgrade = hyper::upgrade::on(req);
        let name = self.name;
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    let echo = format!("{name}: {}", text.as_str());
                    if ws.send(Message::text(echo)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header(
                "sec-websocket-accept",
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
            )
            .header("x-backend", name)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    }
}

/// One keep-alive HTTP/1.1 connection to the edge.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    closed: tokio::task::JoinHandle<()>,
}

/// An answer as a test looks at it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub backend: Option<String>,
    pub body: String,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let closed = tokio::spawn(async move {
            let _ = connection.await;
        });
        Connection { sender, closed }
    }

    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, hyper::Error> {
        let response = self.send(request(path)).await?;
        answer(response).await
    }

    /// Whether the edge closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed() || self.closed.is_finished()
    }
}

pub fn request(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "app.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub async fn answer(response: Response<Incoming>) -> Result<Answer, hyper::Error> {
    let status = response.status();
    let backend = response
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        backend,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut connection = Connection::open(addr).await;
    tokio::time::timeout(SIGNAL_TIMEOUT, connection.get(path))
        .await
        .expect("the edge did not answer in time")
        .unwrap()
}

/// An edge running in this process, in its own temporary directory.
pub struct TestEdge {
    pub dir: tempfile::TempDir,
    pub handle: crate::EdgeHandle,
}

/// A WebSocket client connected through the edge.
pub type WsClient = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to `/ws` through the edge at `addr`.
pub async fn websocket(addr: SocketAddr) -> WsClient {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio::time::timeout(
        SIGNAL_TIMEOUT,
        tokio_tungstenite::client_async("ws://app.test/ws", stream),
    )
    .await
    .expect("the WebSocket handshake did not finish in time")
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Sends `text` and returns the echo, or `None` when the connection is closed.
pub async fn echo(ws: &mut WsClient, text: &str) -> Option<String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.ok()?;
    let next = tokio::time::timeout(SIGNAL_TIMEOUT, ws.next())
        .await
        .expect("no WebSocket answer in time");
    match next {
        Some(Ok(Message::Text(answer))) => Some(answer.as_str().to_string()),
        _ => None,
    }
}

/// Sends `req` on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let mut connection = Connection::open(addr).await;
    let response = tokio::time::timeout(SIGNAL_TIMEOUT, connection.send(req))
        .await
        .expect("the edge did not answer in time")
        .unwrap();
    answer(response).await.unwrap()
}

/// How a test client speaks to the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, served by the relay.
    Relay,
    /// HTTP/1.1, served by hyper (the relay off).
    General,
    /// HTTP/2 without TLS (h2c, prior knowledge), served by hyper.
    H2c,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Relay, Protocol::General, Protocol::H2c];

    /// The edge's settings for this protocol.
    pub fn tuning(self) -> crate::settings::Tuning {
        crate::settings::Tuning {
            relay: self != Protocol::General,
            ..crate::settings::Tuning::default()
        }
    }
}

/// One client connection to the edge, in any [`Protocol`].
pub enum Client {
    Http1(Connection),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Client {
        if protocol != Protocol::H2c {
            return Client::Http1(Connection::open(addr).await);
        }
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Client::Http2(sender)
    }

    /// Sends `method path` (Host `app.test`) and reads the whole answer.
    pub async fn send(&mut self, method: http::Method, path: &str) -> Result<Reply, hyper::Error> {
        let builder = Request::builder().method(method).header("host", "app.test");
        let response = match self {
            Client::Http1(connection) => {
                let req = builder.uri(path).body(Full::new(Bytes::new())).unwrap();
                connection.send(req).await?
            }
            Client::Http2(sender) => {
                let req = builder
                    .uri(format!("http://app.test{path}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.ready().await?;
                sender.send_request(req).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, hyper::Error> {
        self.send(http::Method::GET, path).await
    }
}

/// A whole answer, headers included.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// An HTTP/2 client of the h2 crate, ready, on a new h2c connection to `addr`: it sends what
/// it is given (headers a client library would fix, a stream it resets).
pub async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

/// `GET path` on a fresh connection in `protocol`.
pub async fn get_in(addr: SocketAddr, protocol: Protocol, path: &str) -> Reply {
    let mut client = Client::open(addr, protocol).await;
    tokio::time::timeout(SIGNAL_TIMEOUT, client.get(path))
        .await
        .expect("the edge did not answer in time")
        .unwrap()
}

/// How a test client reaches the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP, on the traffic listener.
    Plain,
    /// TLS on the TLS listener, offering ALPN `http/1.1` only.
    Tls,
}

/// A client's connection to a [`TestEdge`], in either [`Transport`].
pub type ClientStream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// The certificate every TLS [`TestEdge`] of this test process serves (for `app.test`,
/// signed by a test CA), and a client that trusts that CA and offers `http/1.1` only.
struct EdgeCertificate {
    cert: Vec<u8>,
    key: Vec<u8>,
    connector: TlsConnector,
}

fn edge_certificate() -> &'static EdgeCertificate {
    static CERTIFICATE: OnceLock<EdgeCertificate> = OnceLock::new();
    CERTIFICATE.get_or_init(|| {
        let pki = crate::tls::tests::TestPki::new();
        let files = pki.certificate("edge", &["app.test"], &[]);
        EdgeCertificate {
            cert: std::fs::read(&files.cert).unwrap(),
            key: std::fs::read(&files.key).unwrap(),
            connector: pki.connector(&[b"http/1.1"]),
        }
    })
}

impl TestEdge {
    pub async fn start() -> TestEdge {
        TestEdge::start_with(crate::settings::Tuning::default()).await
    }

    pub async fn start_with(tuning: crate::settings::Tuning) -> TestEdge {
        let dir = tempfile::tempdir().unwrap();
        let handle = crate::server::start_with(
            crate::EdgeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                dir: dir.path().to_path_buf(),
            },
            tuning,
        )
        .await
        .unwrap();
        TestEdge { dir, handle }
    }

    /// An edge for clients in `transport`: with [`Transport::Tls`], it also listens for TLS,
    /// with this process's certificate written to its directory.
    pub async fn start_in(transport: Transport, tuning: crate::settings::Tuning) -> TestEdge {
        if transport == Transport::Plain {
            return TestEdge::start_with(tuning).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let certificate = edge_certificate();
        let files = crate::CertificateFiles {
            hosts: Vec::new(),
            cert: dir.path().join("edge.crt"),
            key: dir.path().join("edge.key"),
        };
        std::fs::write(&files.cert, &certificate.cert).unwrap();
        std::fs::write(&files.key, &certificate.key).unwrap();
        TestEdge::start_tls_in(dir, tuning, vec![files]).await
    }

    /// An edge that also listens for TLS, serving `certificates`.
    pub async fn start_tls(certificates: Vec<crate::CertificateFiles>) -> TestEdge {
        let dir = tempfile::tempdir().unwrap();
        TestEdge::start_tls_in(dir, crate::settings::Tuning::default(), certificates).await
    }

    async fn start_tls_in(
        dir: tempfile::TempDir,
        tuning: crate::settings::Tuning,
        certificates: Vec<crate::CertificateFiles>,
    ) -> TestEdge {
        let handle = crate::server::start_with_tls(
            crate::EdgeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                dir: dir.path().to_path_buf(),
            },
            tuning,
            crate::TlsOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                certificates,
            },
        )
        .await
        .unwrap();
        TestEdge { dir, handle }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// A new client connection in `transport`: for [`Transport::Tls`], to the TLS listener,
    /// handshake done (SNI `app.test`) and ALPN settled as `http/1.1`.
    pub async fn connect(&self, transport: Transport) -> ClientStream {
        let addr = match transport {
            Transport::Plain => self.addr(),
            Transport::Tls => self
                .handle
                .tls_addr()
                .expect("the edge was started for TLS clients (TestEdge::start_in)"),
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        if transport == Transport::Plain {
            return Either::Left(tcp);
        }
        let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
        let handshake = edge_certificate().connector.connect(name, tcp);
        let tls = tokio::time::timeout(SIGNAL_TIMEOUT, handshake)
            .await
            .expect("the TLS handshake did not finish in time")
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        Either::Right(tls)
    }

    pub fn client(&self) -> crate::AdminClient {
        self.handle.client()
    }

    pub async fn switch(&self, backend: &Backend) -> Option<Backend> {
        self.client().switch("web", backend).await.unwrap().previous
    }

    /// Waits until service `web` holds `held` requests (its pause in `status`), looking
    /// every few milliseconds until [`SIGNAL_TIMEOUT`].
    pub async fn until_held(&self, held: usize) {
        self.until_web(&format!("held {held} requests"), |r| {
            r.paused.as_ref().map_or(0, |p| p.held) == held
        })
        .await;
    }

    /// Waits until service `web` has `in_flight` requests in flight (its `status`), looking
    /// every few milliseconds until [`SIGNAL_TIMEOUT`].
    pub async fn until_in_flight(&self, in_flight: usize) {
        self.until_web(&format!("had {in_flight} requests in flight"), |r| {
            r.in_flight == in_flight
        })
        .await;
    }

    /// Waits until service `web`'s route in `status` passes `check`, looking every few
    /// milliseconds until [`SIGNAL_TIMEOUT`]; `what` names it in the failure.
    async fn until_web(&self, what: &str, check: impl Fn(&crate::api::RouteStatus) -> bool) {
        let client = self.client();
        let reached = async {
            loop {
                let status = client.status().await.unwrap();
                if status.routes.iter().any(|r| r.service == "web" && check(r)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(SIGNAL_TIMEOUT, reached)
            .await
            .unwrap_or_else(|_| panic!("service web never {what}"));
    }

    /// One value of the edge's `/metrics` page (0 when the series is absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let page = self.client().metrics().await.unwrap();
        crate::metrics::sample(&page, name, labels).unwrap_or(0.0)
    }

    /// Waits until the metric reaches `at_least`, looking every few milliseconds until
    /// [`SIGNAL_TIMEOUT`]: a client connection counts on its serving thread, which may
    /// come to it after the client saw the connection's answer or its end.
    pub async fn until_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let reached = async {
            loop {
                let value = self.metric(name, labels).await;
                if value >= at_least {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(SIGNAL_TIMEOUT, reached)
            .await
            .unwrap_or_else(|_| panic!("{name} {labels:?} never reached {at_least}"))
    }
}

/// Waits until `condition` holds, looking every millisecond until [`SIGNAL_TIMEOUT`], then
/// fails naming `what`. For what a serving thread does after the client has its answer (a
/// slot connection going back to its pool).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let holds = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(SIGNAL_TIMEOUT, holds)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {SIGNAL_TIMEOUT:?}"));
}

/// The log lines of every edge in this test process: one subscriber for the whole process
/// (a per-thread one races with the others' level filters), so a test finds its own lines
/// by what only they hold, such as a request id.
pub struct Logs {
    lines: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Logs {
    pub fn capture() -> Logs {
        static LINES: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> =
            std::sync::OnceLock::new();
        let lines = LINES.get_or_init(|| {
            let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(move || LogWriter(Arc::clone(&sink)))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the edge's tests");
            lines
        });
        Logs {
            lines: Arc::clone(lines),
        }
    }

    /// Every line written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }

    /// The line that names `request_id`.
    pub fn line_of(&self, request_id: &str) -> String {
        let text = self.text();
        text.lines()
            .find(|line| line.contains(request_id))
            .unwrap_or_else(|| panic!("no log line names request {request_id}"))
            .to_string()
    }
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The request id in a generic answer of the edge, after checking that the body is just
/// the status line and the id (nothing an internet client should not see).
pub fn generic_answer(body: &str, status: StatusCode) -> String {
    let mut lines = body.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{} {}", status.as_str(), status.canonical_reason().unwrap()).as_str()),
        "{body}"
    );
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("request id: "))
        .unwrap_or_else(|| panic!("no request id in {body:?}"));
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{body}"
    );
    assert_eq!(lines.next(), None, "{body}");
    id.to_string()
}

/// A slot that answers each request with bytes the test scripts, and counts the
/// connections it accepted and the requests it read.
pub struct ScriptedSlot {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub accepts: tokio::sync::watch::Receiver<usize>,
    pub requests: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

/// What a scripted slot does with a request: the bytes to answer, and whether to close
/// the connection afterwards (without saying so).
pub type Script = fn(usize, &str) -> (Vec<u8>, bool);

impl ScriptedSlot {
    pub async fn start(script: Script) -> ScriptedSlot {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (seen, requests) = mpsc::unbounded_channel();
        let counter = Arc::clone(&accepted);
        let (accepted_tx, accepts) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
                accepted_tx.send_replace(count);
                let seen = seen.clone();
                let served = Arc::clone(&served);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut stream, &mut buf).await else {
                            return;
                        };
                        let n = served.fetch_add(1, Ordering::SeqCst);
                        let (answer, close) = script(n, &request);
                        let _ = seen.send(request);
                        if stream.write_all(&answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedSlot {
            addr,
            accepted,
            accepts,
            requests,
            task,
        }
    }

    pub fn backend(&self) -> crate::Backend {
        crate::Backend {
            slot: Slot::Blue,
            release: "r1".into(),
            addr: self.addr,
            more_addrs: Vec::new(),
        }
    }

    /// Waits until the slot accepted `n` connections.
    pub async fn accepted(&mut self, n: usize) {
        tokio::time::timeout(SIGNAL_TIMEOUT, self.accepts.wait_for(|&count| count >= n))
            .await
            .expect("the edge did not connect to the slot")
            .unwrap();
    }

    pub async fn request(&mut self) -> String {
        tokio::time::timeout(SIGNAL_TIMEOUT, self.requests.recv())
            .await
            .expect("no request reached the slot")
            .unwrap()
    }
}

impl Drop for ScriptedSlot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and `Content-Length` body) from `stream`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let request = String::from_utf8_lossy(&buf[..end + 4 + length]).to_string();
                buf.drain(..end + 4 + length);
                return Some(request);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
