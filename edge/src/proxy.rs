//! The hyper service that forwards a client's request to the live slot of its service.
//!
//! The request claims its backend from the route table (which counts it in flight), is
//! rewritten for the upstream (hop-by-hop headers out, `X-Forwarded-*` in) and sent over a
//! pooled keep-alive client. The in-flight guard then moves into the response body, so a
//! streaming response counts until its last byte, or until the client goes away and hyper
//! drops the body. Bodies stream both ways; nothing is buffered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::backend::{ActiveBackend, InFlightGuard};
use crate::route::{RouteTable, Unrouted};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), besides those named
/// in `Connection` and any `Proxy-*`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Forwards requests to the live backends of a [`RouteTable`].
#[derive(Debug, Clone)]
pub struct Proxy {
    table: Arc<RouteTable>,
    client: Client<HttpConnector, Incoming>,
    connect_timeout: Duration,
}

impl Proxy {
    pub fn new(
        table: Arc<RouteTable>,
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Proxy {
            table,
            client,
            connect_timeout,
        }
    }

    /// Serves one request from the client at `remote`. Never fails: problems become 502,
    /// 503 or 504 answers that say what went wrong.
    pub async fn handle(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<ProxyBody> {
        let host = request_host(&req);
        let guard = match self
            .table
            .claim(host.as_ref().and_then(|h| h.to_str().ok()))
        {
            Ok(guard) => guard,
            Err(unrouted) => {
                let status = match unrouted {
                    Unrouted::NoHost { .. } => StatusCode::NOT_FOUND,
                    Unrouted::NoRoutes | Unrouted::NoLiveSlot { .. } => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                return message(status, unrouted.to_string());
            }
        };
        let active = Arc::clone(guard.active());
        let upstream = upstream_request(req, &active, host, remote);
        match self.client.request(upstream).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, ProxyBody::upstream(body, guard))
            }
            Err(err) => {
                drop(guard);
                self.upstream_failure(&active, &err)
            }
        }
    }

    fn upstream_failure(
        &self,
        active: &ActiveBackend,
        err: &hyper_util::client::legacy::Error,
    ) -> Response<ProxyBody> {
        let backend = active.backend();
        let service = active.service();
        let target = format!(
            "the {} slot of service {service} (release {}) at {}",
            backend.slot, backend.release, backend.addr
        );
        let (status, text) = if err.is_connect() && is_timeout(err) {
            (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "shipit edge: timed out after {} connecting to {target}",
                    humantime::format_duration(self.connect_timeout)
                ),
            )
        } else if err.is_connect() {
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "shipit edge: cannot connect to {target}: {}",
                    error_chain(err)
                ),
            )
        } else {
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "shipit edge: {target} failed before answering: {}",
                    error_chain(err)
                ),
            )
        };
        tracing::warn!(%service, slot = %backend.slot, release = %backend.release, addr = %backend.addr, "{text}");
        message(status, text)
    }
}

/// Wraps [`Proxy::handle`] as a hyper service for one client connection.
pub fn service(
    proxy: Arc<Proxy>,
    remote: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req| {
        let proxy = Arc::clone(&proxy);
        async move { Ok(proxy.handle(req, remote).await) }
    })
}

/// The host the client asked for: the `Host` header, or the authority of an absolute or
/// HTTP/2 URI.
fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

fn upstream_request(
    req: Request<Incoming>,
    active: &ActiveBackend,
    host: Option<HeaderValue>,
    remote: SocketAddr,
) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(active.authority().clone());
    uri.path_and_query = Some(path);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
    // The upstream pool speaks HTTP/1.1 keep-alive whatever the client spoke.
    parts.version = Version::HTTP_11;

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Some(host) = host {
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    let client_ip = remote.ip().to_string();
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if prior.is_empty() {
        client_ip
    } else {
        format!("{}, {client_ip}", prior.join(", "))
    };
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    Request::from_parts(parts, body)
}

/// Removes the headers that only concern one connection.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy_headers: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy_headers {
            headers.remove(name);
        }
    }
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// `tcp connect error: Connection refused (os error 111)`, without hyper's outer layer.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// A plain-text answer from the edge itself.
fn message(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The body of an answer: either the upstream's, streamed, with the request's in-flight
/// guard, or a message from the edge.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
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
    fn upstream(body: Incoming, guard: InFlightGuard) -> Self {
        let guard = (!body.is_end_stream()).then_some(guard);
        ProxyBody {
            kind: Kind::Upstream { body, guard },
        }
    }

    fn message(text: String) -> Self {
        ProxyBody {
            kind: Kind::Message(Some(Bytes::from(text))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, X-Trace".parse().unwrap());
        headers.insert("x-trace", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("proxy-authorization", "Basic abc".parse().unwrap());
        headers.insert("proxy-connection", "keep-alive".parse().unwrap());
        headers.insert(header::TE, "trailers".parse().unwrap());
        headers.insert(header::TRAILER, "x-sum".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-type", "x-kept"]);
    }

    #[test]
    fn timeout_is_found_in_the_error_chain() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "elapsed");
        assert!(is_timeout(&timed_out));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_timeout(&refused));
    }

    use crate::Slot;
    use crate::server::Tuning;
    use crate::test_backend::{
        Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, answer, get, request,
    };
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn no_live_slot_answers_503() {
        let edge = TestEdge::start().await;
        let answer = get(edge.addr(), "/").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            answer.body.starts_with("shipit edge: no live slot"),
            "{}",
            answer.body
        );
    }

    #[tokio::test]
    async fn removed_service_answers_503_naming_it_while_it_drains() {
        let edge = TestEdge::start().await;
        let mut blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut held = Connection::open(edge.addr()).await;
        let pending = tokio::spawn(async move { held.get("/hold").await.unwrap() });
        blue.arrival().await;
        assert!(edge.client().remove("web").await.unwrap().is_some());
        let answer = get(edge.addr(), "/").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body, "shipit edge: no live slot for service web\n");
        blue.release_one();
        assert_eq!(pending.await.unwrap().status, StatusCode::OK);
    }

    #[tokio::test]
    async fn dead_upstream_answers_502() {
        let edge = TestEdge::start().await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let backend = crate::Backend {
            slot: Slot::Green,
            release: "r9".into(),
            addr,
        };
        edge.switch(&backend).await;
        let answer = get(edge.addr(), "/").await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        for part in [
            "green slot",
            "release r9",
            &addr.to_string(),
            "service web",
            "refused",
        ] {
            assert!(
                answer.body.contains(part),
                "{part} missing in {}",
                answer.body
            );
        }
    }

    #[tokio::test]
    async fn upstream_connect_timeout_answers_504() {
        // A listener whose accept queue is full: the kernel drops further SYNs, so a
        // connect hangs until it times out.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        let mut full = false;
        for _ in 0..16 {
            match tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(stream) => queued.push(stream.unwrap()),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "the accept queue of {addr} never filled up");

        let tuning = Tuning {
            connect_timeout: Duration::from_millis(300),
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        edge.switch(&crate::Backend {
            slot: Slot::Blue,
            release: "r1".into(),
            addr,
        })
        .await;
        let answer = get(edge.addr(), "/").await;
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            answer
                .body
                .contains("timed out after 300ms connecting to the blue slot"),
            "{}",
            answer.body
        );
        drop(listener);
    }

    #[tokio::test]
    async fn forwarding_strips_hop_by_hop_and_adds_forwarded_headers() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut connection = Connection::open(edge.addr()).await;
        let req = Request::builder()
            .uri("/headers?x=1")
            .header("host", "shop.example:8080")
            .header("connection", "x-secret")
            .header("x-secret", "hop")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9v")
            .header("te", "trailers")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-app", "kept")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = connection.send(req).await.unwrap();
        let seen: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(&answer(response).await.unwrap().body).unwrap();
        let one = |name: &str| seen.get(name).map(|v| v.join(", "));
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-authorization",
            "te",
        ] {
            assert_eq!(one(gone), None, "{gone} reached the backend: {seen:?}");
        }
        assert_eq!(one("host").as_deref(), Some("shop.example:8080"));
        assert_eq!(
            one("x-forwarded-host").as_deref(),
            Some("shop.example:8080")
        );
        assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            one("x-forwarded-for").as_deref(),
            Some("203.0.113.9, 127.0.0.1")
        );
        assert_eq!(one("x-app").as_deref(), Some("kept"));
    }

    #[tokio::test]
    async fn request_body_reaches_backend_and_answer_streams_back() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let payload = "x".repeat(256 * 1024);
        let mut connection = Connection::open(edge.addr()).await;
        let req = Request::builder()
            .method("POST")
            .uri("/echo")
            .header("host", "app.test")
            .body(http_body_util::Full::new(Bytes::from(payload.clone())))
            .unwrap();
        let answer = answer(connection.send(req).await.unwrap()).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body.len(), payload.len());
        assert!(answer.body == payload);
    }

    #[tokio::test]
    async fn keepalive_connection_follows_switch() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut connection = Connection::open(edge.addr()).await;
        let before = connection.get("/").await.unwrap();
        assert_eq!(before.backend.as_deref(), Some("blue"));
        edge.switch(&green.backend(Slot::Green, "r2")).await;
        assert!(
            !connection.is_closed(),
            "the switch must not close client connections"
        );
        let after = connection.get("/").await.unwrap();
        assert_eq!(after.status, StatusCode::OK);
        assert_eq!(after.backend.as_deref(), Some("green"));
        assert!(!connection.is_closed());
    }

    #[tokio::test]
    async fn drain_waits_for_streaming_body() {
        let edge = TestEdge::start().await;
        let mut blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut connection = Connection::open(edge.addr()).await;
        let response = connection.send(request("/stream")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let first = tokio::time::timeout(SIGNAL_TIMEOUT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first;");
        blue.arrival().await;

        // The headers are out, the body is not: the request still counts on blue.
        edge.switch(&green.backend(Slot::Green, "r2")).await;
        let client = edge.client();
        let early = client
            .drain("web", "r1", Duration::from_millis(100))
            .await
            .unwrap();
        assert!(!early.drained);
        assert_eq!(early.in_flight, 1);

        let drain =
            tokio::spawn(async move { client.drain("web", "r1", SIGNAL_TIMEOUT).await.unwrap() });
        blue.release_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "rest");
        let outcome = drain.await.unwrap();
        assert!(outcome.drained, "{outcome:?}");
        assert_eq!(outcome.in_flight, 0);
    }

    #[tokio::test]
    async fn drain_ends_when_client_drops_streaming_body() {
        let edge = TestEdge::start().await;
        let mut blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut connection = Connection::open(edge.addr()).await;
        let response = connection.send(request("/stream")).await.unwrap();
        let mut body = response.into_body();
        tokio::time::timeout(SIGNAL_TIMEOUT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        blue.arrival().await;
        edge.switch(&green.backend(Slot::Green, "r2")).await;

        drop(body);
        drop(connection);
        let outcome = edge
            .client()
            .drain("web", "r1", SIGNAL_TIMEOUT)
            .await
            .unwrap();
        assert!(outcome.drained, "{outcome:?}");
    }
}
