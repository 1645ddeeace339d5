use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::Slot;
use crate::settings::Tuning;
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

// --- Limits against hostile clients ------------------------------------------------------

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything the edge sends on `stream` until it closes it (or `SIGNAL_TIMEOUT` passes).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(SIGNAL_TIMEOUT, stream.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

/// A connection from another loopback address, as another client would come.
async fn connect_from(local: &str, edge: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(edge).await.unwrap()
}

#[tokio::test]
async fn connections_over_the_per_client_limit_get_503_and_others_are_served() {
    let tuning = Tuning {
        max_connections_per_ip: 2,
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    // Two idle connections from one client use its share.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = Connection::open(edge.addr()).await;
        assert_eq!(connection.get("/").await.unwrap().status, StatusCode::OK);
        held.push(connection);
    }
    let mut third = TcpStream::connect(edge.addr()).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let refused = read_to_close(&mut third).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && refused.contains("connection: close\r\n"),
        "{refused}"
    );
    // Another client is served meanwhile.
    let mut other = connect_from("127.0.0.2", edge.addr()).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let served = read_to_close(&mut other).await;
    assert!(served.starts_with("HTTP/1.1 200 OK\r\n"), "{served}");
    assert_eq!(
        edge.metric("shipit_edge_refused_connections_total", &[])
            .await,
        1.0
    );
    // A freed share is taken again.
    drop(held.pop());
    let again = async {
        loop {
            let mut connection = Connection::open(edge.addr()).await;
            if let Ok(answer) = connection.get("/").await {
                break answer.status;
            }
        }
    };
    assert_eq!(
        tokio::time::timeout(SIGNAL_TIMEOUT, again).await.unwrap(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn connections_over_the_total_limit_get_503_and_the_edge_keeps_accepting() {
    let tuning = Tuning {
        max_connections: 3,
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut held = Vec::new();
    for local in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        held.push(connect_from(local, edge.addr()).await);
    }
    // Many more, all answered at once: the accept loop does not stall on them.
    for _ in 0..50 {
        let mut refused = connect_from("127.0.0.6", edge.addr()).await;
        let text = read_to_close(&mut refused).await;
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    }
    held.clear();
    let served = async {
        loop {
            let mut stream = connect_from("127.0.0.7", edge.addr()).await;
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let text = read_to_close(&mut stream).await;
            if text.starts_with("HTTP/1.1 200") {
                break;
            }
        }
    };
    tokio::time::timeout(SIGNAL_TIMEOUT, served)
        .await
        .expect("the edge did not take connections again once some closed");
}

/// A client that asks for a large answer and never reads it: the edge gives up on it after
/// the write timeout, so the request ends and a drain of its slot finishes.
async fn stalled_reader_is_cut_off(relay: bool) {
    let tuning = Tuning {
        write_timeout: Duration::from_millis(300),
        relay,
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut stalled = TcpStream::connect(edge.addr()).await.unwrap();
    stalled
        .write_all(b"GET /big/268435456 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // The request is in flight once the backend counted it.
    let started = async {
        while blue.served() == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(SIGNAL_TIMEOUT, started).await.unwrap();
    edge.switch(&green.backend(Slot::Green, "r2")).await;
    let began = tokio::time::Instant::now();
    let drained = edge
        .client()
        .drain("web", "r1", SIGNAL_TIMEOUT)
        .await
        .unwrap();
    assert!(drained.drained, "relay {relay}: {drained:?}");
    assert!(
        began.elapsed() < SIGNAL_TIMEOUT,
        "relay {relay}: the drain waited for its deadline"
    );
    // The edge still serves everyone else.
    assert_eq!(
        crate::test_backend::get(edge.addr(), "/")
            .await
            .backend
            .as_deref(),
        Some("green")
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_by_the_write_timeout_on_the_relay() {
    stalled_reader_is_cut_off(true).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_by_the_write_timeout_on_the_general_path() {
    stalled_reader_is_cut_off(false).await;
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_a_partial_head_too() {
    let tuning = Tuning {
        body_idle_timeout: Duration::from_millis(200),
        header_read_timeout: Duration::from_millis(400),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let cases: [&[u8]; 3] = [
        // Chunked: the general path, whose body stops after one chunk.
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        // Larger than the relay buffers: the general path too.
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\nabc",
        // A small body the relay reads whole, within the header-read timeout.
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nabc",
    ];
    for request in cases {
        let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
        stream.write_all(request).await.unwrap();
        let text = read_to_close(&mut stream).await;
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{}: {text}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(
        edge.metric(
            "shipit_edge_requests_total",
            &[("service", "web"), ("slot", "blue"), ("class", "5xx")]
        )
        .await,
        0.0
    );
    // Everyone else is served meanwhile.
    assert_eq!(
        crate::test_backend::get(edge.addr(), "/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_broken_or_aborted_upload_is_the_clients_error_never_the_slots_5xx() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let broken: [&[u8]; 4] = [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\n",
        b"3;\nabc\r\n0\r\n\r\n",
    ];
    for body in broken {
        let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
        stream
            .write_all(
                b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        stream.write_all(body).await.unwrap();
        let text = read_to_close(&mut stream).await;
        // hyper may close before the answer is written; if one comes, it is a 400.
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{}: {text}",
            String::from_utf8_lossy(body)
        );
    }
    // Aborted: the client goes away halfway through a declared body.
    for _ in 0..3 {
        let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
        stream
            .write_all(
                b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 200000\r\n\r\nabc",
            )
            .await
            .unwrap();
        drop(stream);
    }
    // A good request after them: counted once the answer is out.
    assert_eq!(
        crate::test_backend::get(edge.addr(), "/").await.status,
        StatusCode::OK
    );
    let wait_for_counts = async {
        loop {
            let page = edge.client().metrics().await.unwrap();
            let class = |c| {
                crate::metrics::sample(
                    &page,
                    "shipit_edge_requests_total",
                    &[("service", "web"), ("slot", "blue"), ("class", c)],
                )
                .unwrap_or(0.0)
            };
            if class("2xx") >= 1.0 {
                break (class("5xx"), class("4xx"));
            }
            tokio::task::yield_now().await;
        }
    };
    let (server_errors, client_errors) = tokio::time::timeout(SIGNAL_TIMEOUT, wait_for_counts)
        .await
        .unwrap();
    assert_eq!(
        server_errors, 0.0,
        "a client's broken upload counted as the slot's 5xx"
    );
    assert!(client_errors <= 7.0);
}

#[tokio::test]
async fn an_http2_client_that_resets_streams_too_fast_gets_goaway_and_others_are_served() {
    let tuning = Tuning {
        h2_max_resets_per_second: 10,
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let stream = TcpStream::connect(edge.addr()).await.unwrap();
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut refused = false;
    for _ in 0..200 {
        let request = http::Request::builder()
            .uri("http://app.test/hold")
            .body(())
            .unwrap();
        let Ok(ready) = client.clone().ready().await else {
            refused = true;
            break;
        };
        client = ready;
        let Ok((response, _)) = client.send_request(request, true) else {
            refused = true;
            break;
        };
        // Let the request reach the edge's service, then reset it.
        tokio::task::yield_now().await;
        drop(response);
    }
    let ended = tokio::time::timeout(SIGNAL_TIMEOUT, connection).await;
    assert!(
        refused || ended.is_ok(),
        "the connection was not ended after 200 resets"
    );
    // Counted on the connection's thread, as it ends.
    edge.until_metric("shipit_edge_h2_reset_floods_total", &[], 1.0)
        .await;
    // Everyone else is still served.
    let (mut sender, _closed) = h2(edge.addr()).await;
    let response = sender
        .send_request(h2_request("GET", "/", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn http2_streams_and_header_lists_are_bounded() {
    let tuning = Tuning {
        h2_max_concurrent_streams: 4,
        h2_max_header_list_size: 4096,
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut client = crate::test_backend::raw_h2(edge.addr()).await;
    // The server's settings are in once a first answer came.
    let first = http::Request::builder()
        .uri("http://app.test/")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(first, true).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.current_max_send_streams(), 4);
    // A header list over the limit is refused; the connection's next request is served.
    let big = http::Request::builder()
        .uri("http://app.test/")
        .header("x-big", "b".repeat(8192))
        .body(())
        .unwrap();
    let refused = match client.send_request(big, true) {
        Ok((response, _)) => response.await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    assert!(
        !matches!(refused, Ok(StatusCode::OK)),
        "an oversized header list was served: {refused:?}"
    );
    let (mut sender, _closed) = h2(edge.addr()).await;
    let response = sender
        .send_request(h2_request("GET", "/", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// The size of the future `f` returns, without calling it.
fn future_size<A, B, C, D, F: std::future::Future>(_: &impl Fn(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}

fn future_size5<A, B, C, D, E, F: std::future::Future>(_: &impl Fn(A, B, C, D, E) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// Every idle client connection is a task of its serving future's size: hyper's side and
/// the TLS handshake's state are not in it (they were 4.8 and 1.2 KiB, and made an idle
/// TLS connection's task 8.8 KiB).
#[test]
fn an_idle_client_connection_holds_a_small_task() {
    use tokio::net::TcpStream;
    use tokio_rustls::server::TlsStream;
    let plain = future_size5(&super::serve_client::<TcpStream>);
    let tls = future_size(&crate::listener::serve_tls);
    let stream = std::mem::size_of::<TlsStream<TcpStream>>();
    assert!(plain <= 2048, "a plain connection's task is {plain} bytes");
    // The TLS stream itself (rustls's connection) is in it, once.
    assert!(
        tls <= stream + 2048,
        "a TLS connection's task is {tls} bytes, its stream {stream}"
    );
}
