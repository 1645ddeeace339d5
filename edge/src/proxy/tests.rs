use super::*;
use std::net::SocketAddr;

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

use crate::Slot;
use crate::settings::Tuning;
use crate::test_backend::{
    Connection, Logs, SIGNAL_TIMEOUT, TestBackend, TestEdge, answer, generic_answer, get, request,
};
use bytes::Bytes;
use http_body_util::BodyExt;

#[tokio::test]
async fn no_live_slot_answers_503() {
    let edge = TestEdge::start().await;
    let answer = get(edge.addr(), "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    generic_answer(&answer.body, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn removed_service_answers_503_while_it_drains() {
    let logs = Logs::capture();
    let edge = TestEdge::start().await;
    let mut blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut held = Connection::open(edge.addr()).await;
    let pending = tokio::spawn(async move { held.get("/hold").await.unwrap() });
    blue.arrival().await;
    assert!(edge.client().remove("web").await.unwrap().is_some());
    let answer = get(edge.addr(), "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let id = generic_answer(&answer.body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(logs.line_of(&id).contains("no live slot for service web"));
    blue.release_one();
    assert_eq!(pending.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn dead_upstream_answers_a_generic_502_and_logs_the_detail() {
    let logs = Logs::capture();
    let edge = TestEdge::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let backend = crate::Backend {
        slot: Slot::Green,
        release: "r9".into(),
        addr,
        more_addrs: Vec::new(),
    };
    edge.switch(&backend).await;
    let answer = get(edge.addr(), "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let id = generic_answer(&answer.body, StatusCode::BAD_GATEWAY);
    let line = logs.line_of(&id);
    for part in [
        "slot=green",
        "release=r9",
        &addr.to_string(),
        "service=web",
        "refused",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
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
    let logs = Logs::capture();
    let edge = TestEdge::start_with(tuning).await;
    edge.switch(&crate::Backend {
        slot: Slot::Blue,
        release: "r1".into(),
        addr,
        more_addrs: Vec::new(),
    })
    .await;
    let answer = get(edge.addr(), "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    let id = generic_answer(&answer.body, StatusCode::GATEWAY_TIMEOUT);
    let line = logs.line_of(&id);
    assert!(
        line.contains("timed out after 300ms connecting to the slot") && line.contains("slot=blue"),
        "{line}"
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

/// A request body fed by the test, chunk by chunk.
fn channel_body() -> (
    tokio::sync::mpsc::Sender<Bytes>,
    http_body_util::StreamBody<
        impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>,
    >,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(chunks))
}

/// One HTTP/1.1 connection whose requests can have any body type.
async fn open_streaming<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

#[tokio::test]
async fn slot_that_does_not_answer_in_time_gets_504() {
    let tuning = Tuning {
        response_header_timeout: Duration::from_millis(200),
        ..Tuning::default()
    };
    let logs = Logs::capture();
    let edge = TestEdge::start_with(tuning).await;
    let mut blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let pending = tokio::spawn(get_owned(edge.addr(), "/hold"));
    blue.arrival().await;
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    let id = generic_answer(&answer.body, StatusCode::GATEWAY_TIMEOUT);
    let line = logs.line_of(&id);
    assert!(
        line.contains("slot=blue")
            && line.contains("release=r1")
            && line.contains("did not answer within 200ms"),
        "{line}"
    );
    blue.release_one();
}

async fn get_owned(addr: SocketAddr, path: &'static str) -> crate::test_backend::Answer {
    get(addr, path).await
}

#[tokio::test]
async fn upload_longer_than_the_response_timeout_is_not_cut() {
    let tuning = Tuning {
        response_header_timeout: Duration::from_millis(150),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let (tx, body) = channel_body();
    let mut sender = open_streaming(edge.addr()).await;
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let response = tokio::spawn(sender.send_request(req));
    // The upload takes several response timeouts; the timer waits for its end.
    for _ in 0..5 {
        tx.send(Bytes::from_static(b"chunk;")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    let answer = answer(response.await.unwrap().unwrap()).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "chunk;".repeat(5));
}

#[tokio::test]
async fn declared_body_over_the_limit_is_refused_before_the_slot_sees_it() {
    let logs = Logs::capture();
    let tuning = Tuning {
        max_request_body: Some(1000),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    // Like `curl` with `Expect: 100-continue`: the head declares the length and the
    // body is held back until the edge answers.
    let (_tx, body) = channel_body();
    let mut sender = open_streaming(edge.addr()).await;
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "app.test")
        .header("content-length", "2000")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(SIGNAL_TIMEOUT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let answer = answer(response).await.unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let id = generic_answer(&answer.body, StatusCode::PAYLOAD_TOO_LARGE);
    let line = logs.line_of(&id);
    assert!(
        line.contains("declared=2000")
            && line.contains("limit=1000")
            && line.contains("service=web"),
        "{line}"
    );
    assert_eq!(blue.served(), 0);
    // The edge's own refusal is not the slot's answer: it counts as refused.
    assert_eq!(
        edge.metric(
            "shipit_edge_requests_total",
            &[("service", "web"), ("slot", "blue"), ("class", "4xx")]
        )
        .await,
        0.0
    );
    assert_eq!(
        edge.metric("shipit_edge_refused_requests_total", &[]).await,
        1.0
    );
}

#[tokio::test]
async fn streamed_body_growing_over_the_limit_gets_413() {
    let logs = Logs::capture();
    let tuning = Tuning {
        max_request_body: Some(1000),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let (tx, body) = channel_body();
    let mut sender = open_streaming(edge.addr()).await;
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let response = tokio::spawn(sender.send_request(req));
    tx.send(Bytes::from(vec![b'a'; 600])).await.unwrap();
    tx.send(Bytes::from(vec![b'b'; 600])).await.unwrap();
    let response = tokio::time::timeout(SIGNAL_TIMEOUT, response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let answer = answer(response).await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    let id = generic_answer(&answer.body, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(logs.line_of(&id).contains("limit=1000"));
    drop(tx);
}

#[tokio::test]
async fn body_within_the_limit_streams_through() {
    let tuning = Tuning {
        max_request_body: Some(1000),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let (tx, body) = channel_body();
    let mut sender = open_streaming(edge.addr()).await;
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let response = tokio::spawn(sender.send_request(req));
    tx.send(Bytes::from(vec![b'a'; 500])).await.unwrap();
    tx.send(Bytes::from(vec![b'b'; 500])).await.unwrap();
    drop(tx);
    let answer = answer(response.await.unwrap().unwrap()).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), 1000);
}

#[tokio::test]
async fn failed_connect_is_tried_once_more_for_idempotent_requests_only() {
    let edge = TestEdge::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    edge.switch(&crate::Backend {
        slot: Slot::Green,
        release: "r9".into(),
        addr,
        more_addrs: Vec::new(),
    })
    .await;
    let retries = || edge.metric("shipit_edge_upstream_connect_retries_total", &[]);
    assert_eq!(retries().await, 0.0);
    for (method, tried_again) in [
        ("GET", true),
        ("POST", false),
        ("PUT", true),
        ("PATCH", false),
    ] {
        let before = retries().await;
        let req = Request::builder()
            .method(method)
            .uri("/")
            .header("host", "app.test")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let answer = crate::test_backend::send(edge.addr(), req).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{method}");
        assert_eq!(
            retries().await - before,
            if tried_again { 1.0 } else { 0.0 },
            "{method}"
        );
    }
}
