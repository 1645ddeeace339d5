//! HTTP/2 streams sent to the slot over the relay's pooled connections, held to what hyper's
//! client did with the same answers.
//!
//! The differential test runs every scripted answer through two edges, one that sends an
//! HTTP/2 stream's request this way (the default) and one that leaves every request to
//! hyper's client (the relay off), and compares what the client gets and what the slot
//! sees. The others check what hyper's client cannot show: which slot connections are
//! kept.

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};

use crate::settings::Tuning;
use crate::test_backend::{
    Client, Protocol, Reply, SIGNAL_TIMEOUT, ScriptedSlot, TestEdge, raw_h2,
};

/// A body larger than any one read from the slot.
const BIG: usize = 300_000;

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The slot's answer to each case, by the path asked for, and whether it then closes the
/// connection without saying so.
fn script(_: usize, request: &str) -> (Vec<u8>, bool) {
    let path = request.split(' ').nth(1).unwrap_or("/");
    let (answer, close): (&[u8], bool) = match path {
        "/length" => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-case: length\r\n\r\nhello", false),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nx-trailer: t\r\n\r\n",
            false,
        ),
        "/until-close" => (b"HTTP/1.1 200 OK\r\nx-case: until-close\r\n\r\nuntil the end", true),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\nx-case: none\r\n\r\n", false),
        "/not-modified" => (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n", false),
        "/early-hints" => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        "/close" => (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye", true),
        "/silent-close" => (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbye", true),
        "/hop" => (
            b"HTTP/1.1 200 OK\r\nconnection: x-private\r\nx-private: 1\r\nkeep-alive: timeout=5\r\nx-public: 2\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        "/framed-twice" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        "/head" => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
        "/garbage" => (b"garbage\r\n\r\n", true),
        "/bad-length" => (b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello", true),
        "/unasked-upgrade" => (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            true,
        ),
        "/cut-short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", true),
        "/bad-chunk" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", true),
        "/nothing" => (b"", true),
        "/big" => {
            let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n").into_bytes();
            answer.extend_from_slice(&big_body());
            return (answer, false);
        }
        "/interims" => {
            let mut answer = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(crate::framing::MAX_INTERIM_ANSWERS + 1);
            answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            return (answer, false);
        }
        _ => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", false),
    };
    (answer.to_vec(), close)
}

/// What a client got: the answer (its `date` left out), or that the stream failed.
#[derive(Debug, PartialEq)]
enum Got {
    Answer {
        status: StatusCode,
        headers: Vec<(String, String)>,
        /// Left out for the edge's own answers, whose request ids differ.
        body: Option<Vec<u8>>,
    },
    Failed,
}

fn got(reply: Result<Reply, hyper::Error>) -> Got {
    let Ok(reply) = reply else {
        return Got::Failed;
    };
    let edges_own = reply.status == StatusCode::BAD_GATEWAY;
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| *name != http::header::DATE)
        .map(|(name, value)| {
            let value = if edges_own && name == http::header::CONTENT_LENGTH {
                "(length of the edge's text)".to_string()
            } else {
                value.to_str().unwrap().to_string()
            };
            (name.to_string(), value)
        })
        .collect();
    headers.sort();
    Got::Answer {
        status: reply.status,
        headers,
        body: (!edges_own).then(|| reply.body.to_vec()),
    }
}

/// An h2c edge routing to `slot`: sending HTTP/2 streams over the slot's pool
/// (`direct`), or through hyper's client.
async fn edge(slot: &ScriptedSlot, direct: bool) -> TestEdge {
    // One serving thread: the switch opens one connection to the slot, and the tests count
    // the slot's connections.
    let edge = TestEdge::start_with(Tuning {
        relay: direct,
        threads: 1,
        ..Tuning::default()
    })
    .await;
    edge.switch(&slot.backend()).await;
    edge
}

async fn ask(edge: &TestEdge, method: Method, path: &str) -> Result<Reply, hyper::Error> {
    let mut client = Client::open(edge.addr(), Protocol::H2c).await;
    tokio::time::timeout(SIGNAL_TIMEOUT, client.send(method, path))
        .await
        .expect("the edge did not answer in time")
}

#[tokio::test]
async fn every_answer_reaches_an_http2_client_as_through_hypers_client() {
    let cases: &[(Method, &str)] = &[
        (Method::GET, "/length"),
        (Method::GET, "/chunked"),
        (Method::GET, "/until-close"),
        (Method::GET, "/no-content"),
        (Method::GET, "/not-modified"),
        (Method::GET, "/early-hints"),
        (Method::GET, "/close"),
        (Method::GET, "/hop"),
        (Method::GET, "/framed-twice"),
        (Method::HEAD, "/head"),
        (Method::GET, "/big"),
        (Method::DELETE, "/length"),
        (Method::POST, "/length"),
        (Method::GET, "/garbage"),
        (Method::GET, "/bad-length"),
        (Method::GET, "/unasked-upgrade"),
        (Method::GET, "/interims"),
        (Method::GET, "/cut-short"),
        (Method::GET, "/bad-chunk"),
        (Method::GET, "/nothing"),
    ];
    for (method, path) in cases {
        // A slot and two edges for each case: a request retried on a new connection (the
        // slot closed one it was pooled on) reaches the slot twice.
        let mut slot = ScriptedSlot::start(script).await;
        let direct = edge(&slot, true).await;
        let through_pool = got(ask(&direct, method.clone(), path).await);
        let pool_request = slot.request().await;
        let mut slot = ScriptedSlot::start(script).await;
        let hyper = edge(&slot, false).await;
        let through_hyper = got(ask(&hyper, method.clone(), path).await);
        let hyper_request = slot.request().await;
        assert_eq!(
            through_pool, through_hyper,
            "{method} {path}: the client got a different answer"
        );
        assert_eq!(
            pool_request, hyper_request,
            "{method} {path}: the slot saw a different request"
        );
        if let Got::Answer {
            body: Some(body), ..
        } = &through_pool
            && *path == "/big"
        {
            assert_eq!(*body, big_body(), "the large body was not passed on whole");
        }
    }
}

/// Sends `path` `n` times over one HTTP/2 connection to a direct edge; the number of
/// connections the slot accepted after.
async fn connections_after(path: &str, n: usize) -> usize {
    let mut slot = ScriptedSlot::start(script).await;
    let edge = edge(&slot, true).await;
    // The switch opened one connection to the slot ahead of the first request.
    slot.accepted(1).await;
    let mut client = Client::open(edge.addr(), Protocol::H2c).await;
    for i in 0..n {
        let reply = tokio::time::timeout(SIGNAL_TIMEOUT, client.get(path))
            .await
            .expect("the edge did not answer in time")
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i} to {path}");
    }
    slot.accepted.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_slot_connection_is_reused_after_a_whole_answer_of_any_framing() {
    assert_eq!(connections_after("/length", 4).await, 1);
    assert_eq!(connections_after("/chunked", 4).await, 1);
    assert_eq!(connections_after("/big", 3).await, 1);
}

#[tokio::test]
async fn a_slot_connection_that_closes_or_framed_an_answer_twice_is_never_reused() {
    // Each answer needs a connection of its own: the first request takes the one opened
    // ahead, each later one a new one.
    assert_eq!(connections_after("/framed-twice", 3).await, 3);
    assert_eq!(connections_after("/close", 3).await, 3);
    assert_eq!(connections_after("/until-close", 3).await, 3);
    // The slot closed without saying so: the pooled connection is found closed, and the
    // request goes over a new one.
    assert_eq!(connections_after("/silent-close", 3).await, 3);
}

/// Sends `GET path` with `lengths` as its `Content-Length` headers and no body (END_STREAM
/// on the headers), with the h2 crate, which sends what it is given; the status, or the
/// stream's error.
async fn get_with_lengths(
    edge: &TestEdge,
    path: &str,
    lengths: &[&str],
) -> Result<StatusCode, h2::Error> {
    let mut client = raw_h2(edge.addr()).await;
    let mut request = http::Request::builder()
        .uri(format!("http://app.test{path}"))
        .body(())
        .unwrap();
    for length in lengths {
        request
            .headers_mut()
            .append(http::header::CONTENT_LENGTH, length.parse().unwrap());
    }
    let (answer, _) = client.send_request(request, true)?;
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, answer)
        .await
        .expect("the edge did not answer in time")?;
    Ok(answer.status())
}

#[tokio::test]
async fn an_http2_request_never_reaches_the_slot_with_two_lengths() {
    for direct in [true, false] {
        let mut slot = ScriptedSlot::start(script).await;
        let edge = edge(&slot, direct).await;
        // Two different lengths, or one that is not plain digits: refused, by h2 (a reset)
        // or by the edge (400), and never passed on.
        for lengths in [&["0", "5"][..], &["+0"]] {
            let status = get_with_lengths(&edge, "/length", lengths).await;
            assert!(
                status.as_ref().is_err() || status.as_ref().ok() == Some(&StatusCode::BAD_REQUEST),
                "direct: {direct}: {lengths:?}: {status:?}"
            );
        }
        // Copies of one length reach the slot as one.
        let status = get_with_lengths(&edge, "/length", &["0", "0"]).await;
        assert_eq!(status.ok(), Some(StatusCode::OK), "direct: {direct}");
        let request = slot.request().await;
        let lengths = request
            .lines()
            .filter(|line| line.to_ascii_lowercase().starts_with("content-length:"))
            .count();
        assert_eq!(lengths, 1, "direct: {direct}; the slot read {request:?}");
        assert!(
            slot.requests.try_recv().is_err(),
            "a refused request reached the slot"
        );
    }
}

#[tokio::test]
async fn an_answer_the_client_gave_up_on_never_returns_its_connection_to_the_pool() {
    let mut slot = ScriptedSlot::start(script).await;
    let edge = edge(&slot, true).await;
    slot.accepted(1).await;
    let mut client = raw_h2(edge.addr()).await;
    let request = http::Request::builder()
        .uri("http://app.test/big")
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(request, true).unwrap();
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, answer)
        .await
        .expect("the edge did not answer in time")
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // The client resets the stream with most of the body still at the slot or in flight.
    drop(answer);
    // The next request gets its own answer whole: the half-read connection was not pooled,
    // or its leftover bytes would be read as this answer.
    let mut client = Client::open(edge.addr(), Protocol::H2c).await;
    for _ in 0..3 {
        let reply = tokio::time::timeout(SIGNAL_TIMEOUT, client.get("/length"))
            .await
            .expect("the edge did not answer in time")
            .unwrap();
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "hello"));
    }
    assert_eq!(slot.accepted.load(Ordering::SeqCst), 2);
}
