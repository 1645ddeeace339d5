use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::Slot;
use crate::settings::Tuning;
use crate::test_backend::{
    ClientStream, Logs, SIGNAL_TIMEOUT, Script, ScriptedSlot, TestBackend, TestEdge, Transport,
    find, generic_answer,
};

// --- Through a running edge -----------------------------------------------------------
//
// Every test below runs over each transport: plain TCP, and TLS whose ALPN chose
// `http/1.1`, which the relay serves alike. A test is an `async fn` taking the
// [`Transport`]; `over_each_transport!` makes it two tests, `<name>::plain` and
// `<name>::tls`, so a failure names its transport.

/// Defines the tests `$name::plain` and `$name::tls`, running `$name(transport)`.
macro_rules! over_each_transport {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn plain() {
                super::$name(super::Transport::Plain).await;
            }

            #[tokio::test]
            async fn tls() {
                super::$name(super::Transport::Tls).await;
            }
        }
    };
}

/// An edge with default settings for clients in `transport`.
/// One serving thread: the switch opens one connection to the slot, and the tests count the
/// slot's connections.
async fn edge_for(transport: Transport) -> TestEdge {
    let tuning = Tuning {
        threads: 1,
        ..Tuning::default()
    };
    TestEdge::start_in(transport, tuning).await
}

/// An edge (started by the caller) routing `web` to a slot running `script`, once the
/// switch's connection to the slot is open, and a client connected to the edge in
/// `transport`.
async fn through_edge(
    edge: TestEdge,
    transport: Transport,
    script: Script,
) -> (TestEdge, ScriptedSlot, RawClient) {
    let mut slot = ScriptedSlot::start(script).await;
    edge.switch(&slot.backend()).await;
    // The switch opened a connection to the slot before any request.
    slot.accepted(1).await;
    let client = RawClient::open(&edge, transport).await;
    (edge, slot, client)
}

/// A client on one raw connection to the edge, in either transport.
struct RawClient {
    stream: ClientStream,
    buf: Vec<u8>,
}

/// One answer as the client read it: the head, and the body with any chunked framing
/// removed.
#[derive(Debug)]
struct Read {
    head: String,
    body: Vec<u8>,
}

impl RawClient {
    async fn open(edge: &TestEdge, transport: Transport) -> RawClient {
        RawClient {
            stream: edge.connect(transport).await,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(SIGNAL_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("the edge did not answer in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one answer (`Content-Length`, chunked, or until the edge closes).
    async fn answer(&mut self) -> Read {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            assert!(self.fill().await, "closed before an answer");
        };
        let head = String::from_utf8(self.buf.drain(..end).collect()).unwrap();
        let lower = head.to_ascii_lowercase();
        let header = |name: &str| {
            lower.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                (n == name).then(|| v.trim().to_string())
            })
        };
        let mut body = Vec::new();
        if head.starts_with("HTTP/1.1 1") {
            // Interim: no body.
        } else if let Some(length) = header("content-length") {
            let length: usize = length.parse().unwrap();
            while self.buf.len() < length {
                assert!(self.fill().await, "closed in the middle of a body");
            }
            body = self.buf.drain(..length).collect();
        } else if header("transfer-encoding").is_some() {
            let mut scanner = ChunkedScanner::default();
            let mut raw = Vec::new();
            loop {
                let taken = std::mem::take(&mut self.buf);
                if let Some(end) = scanner.feed(&taken).unwrap() {
                    raw.extend_from_slice(&taken[..end]);
                    self.buf = taken[end..].to_vec();
                    break;
                }
                raw.extend_from_slice(&taken);
                assert!(self.fill().await, "closed in the middle of a chunked body");
            }
            body = dechunk(&raw);
        } else {
            while self.fill().await {}
            body = std::mem::take(&mut self.buf);
        }
        Read { head, body }
    }

    /// Whether the edge closed the connection (reading nothing more).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rest = raw;
    loop {
        let line_end = find(rest, b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 Fine\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

over_each_transport!(pipelined_requests_are_answered_in_order_over_one_slot_connection);
async fn pipelined_requests_are_answered_in_order_over_one_slot_connection(transport: Transport) {
    let (_edge, mut slot, mut client) =
        through_edge(edge_for(transport).await, transport, |n, _| {
            (ok(&format!("answer {n}")), false)
        })
        .await;
    client
        .send(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /b HTTP/1.1\r\nHost: app.test\r\n\r\nPOST /c HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nxyz")
        .await;
    for (n, path) in ["/a", "/b", "/c"].iter().enumerate() {
        let read = client.answer().await;
        // The slot's reason phrase comes through: the relay answered, not hyper.
        assert!(
            read.head.starts_with("HTTP/1.1 200 Fine\r\n"),
            "{}",
            read.head
        );
        assert_eq!(read.body, format!("answer {n}").as_bytes());
        let request = slot.request().await;
        assert!(
            request.starts_with(&format!(
                "{} {path} HTTP/1.1\r\n",
                if n == 2 { "POST" } else { "GET" }
            )),
            "{request}"
        );
        assert!(
            request.contains("x-forwarded-for: 127.0.0.1\r\n"),
            "{request}"
        );
        let proto = match transport {
            Transport::Plain => "http",
            Transport::Tls => "https",
        };
        assert!(
            request.contains(&format!("x-forwarded-proto: {proto}\r\n")),
            "{request}"
        );
        if n == 2 {
            assert!(request.ends_with("\r\n\r\nxyz"), "{request}");
        }
    }
    assert_eq!(
        slot.accepted.load(Ordering::SeqCst),
        1,
        "the connection opened at the switch was not the one used, or was not reused"
    );
}

over_each_transport!(chunked_and_interim_answers_pass_through_and_the_connection_is_reused);
async fn chunked_and_interim_answers_pass_through_and_the_connection_is_reused(
    transport: Transport,
) {
    let (_edge, slot, mut client) = through_edge(edge_for(transport).await, transport, |n, _| {
        let mut answer = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n".to_vec();
        answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        answer.extend_from_slice(format!("4\r\nn={n};\r\n").as_bytes());
        answer.extend_from_slice(b"5;x=y\r\nhello\r\n0\r\ntrailer: 1\r\n\r\n");
        (answer, false)
    })
    .await;
    for n in 0..2 {
        client
            .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        let hints = client.answer().await;
        assert!(
            hints
                .head
                .starts_with("HTTP/1.1 103 Early Hints\r\nlink: </style.css>"),
            "{}",
            hints.head
        );
        let read = client.answer().await;
        assert!(
            read.head.contains("transfer-encoding: chunked"),
            "{}",
            read.head
        );
        assert_eq!(read.body, format!("n={n};hello").as_bytes());
    }
    assert_eq!(slot.accepted.load(Ordering::SeqCst), 1);
}

over_each_transport!(an_answer_that_ends_with_its_connection_closes_the_client_connection_too);
async fn an_answer_that_ends_with_its_connection_closes_the_client_connection_too(
    transport: Transport,
) {
    let (_edge, _slot, mut client) = through_edge(edge_for(transport).await, transport, |_, _| {
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true)
    })
    .await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let read = client.answer().await;
    assert!(read.head.contains("connection: close\r\n"), "{}", read.head);
    assert_eq!(read.body, b"until the end");
}

over_each_transport!(a_pooled_connection_the_slot_closed_is_replaced);
async fn a_pooled_connection_the_slot_closed_is_replaced(transport: Transport) {
    let edge = edge_for(transport).await;
    // The slot closes every connection after one answer, without saying so.
    let mut slot = ScriptedSlot::start(|n, _| (ok(&format!("answer {n}")), true)).await;
    edge.switch(&slot.backend()).await;
    slot.accepted(1).await;
    let mut client = RawClient::open(&edge, transport).await;
    for n in 0..3 {
        client
            .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        let read = client.answer().await;
        assert!(
            read.head.starts_with("HTTP/1.1 200"),
            "request {n}: {}",
            read.head
        );
        assert_eq!(read.body, format!("answer {n}").as_bytes());
    }
    assert_eq!(slot.accepted.load(Ordering::SeqCst), 3);
}

over_each_transport!(a_malformed_answer_is_a_generic_502_whose_detail_goes_to_the_log);
async fn a_malformed_answer_is_a_generic_502_whose_detail_goes_to_the_log(transport: Transport) {
    let logs = Logs::capture();
    let (_edge, _slot, mut client) = through_edge(edge_for(transport).await, transport, |_, _| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".to_vec(),
            false,
        )
    })
    .await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let read = client.answer().await;
    assert!(
        read.head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{}",
        read.head
    );
    let body = String::from_utf8(read.body).unwrap();
    let id = generic_answer(&body, http::StatusCode::BAD_GATEWAY);
    let line = logs.line_of(&id);
    assert!(
        line.contains("service=web")
            && line.contains("slot=blue")
            && line.contains("release=r1")
            && line.contains("Content-Length"),
        "{line}"
    );
    // The client's connection is still good.
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert!(client.answer().await.head.starts_with("HTTP/1.1 502"));
}

over_each_transport!(
    a_connection_moves_to_the_general_path_at_its_first_request_the_relay_does_not_take
);
async fn a_connection_moves_to_the_general_path_at_its_first_request_the_relay_does_not_take(
    transport: Transport,
) {
    let edge = edge_for(transport).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut client = RawClient::open(&edge, transport).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let first = client.answer().await;
    assert_eq!(first.body, b"blue");
    // A chunked upload, sent together with the next request: the general path gets both.
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let echoed = client.answer().await;
    assert!(
        echoed.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        echoed.head
    );
    assert_eq!(echoed.body, b"abc");
    let after = client.answer().await;
    assert_eq!(after.body, b"blue");
    assert_eq!(blue.served(), 3);
}

over_each_transport!(a_client_that_asks_to_close_is_answered_then_closed);
async fn a_client_that_asks_to_close_is_answered_then_closed(transport: Transport) {
    let (_edge, _slot, mut client) = through_edge(edge_for(transport).await, transport, |_, _| {
        (ok("bye"), false)
    })
    .await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await;
    let read = client.answer().await;
    assert!(read.head.contains("connection: close\r\n"), "{}", read.head);
    assert_eq!(read.body, b"bye");
    assert!(client.closed().await);
}

over_each_transport!(unrouted_requests_are_answered_by_the_edge_and_the_connection_stays);
async fn unrouted_requests_are_answered_by_the_edge_and_the_connection_stays(transport: Transport) {
    let edge = edge_for(transport).await;
    let mut client = RawClient::open(&edge, transport).await;
    for _ in 0..2 {
        client
            .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        let read = client.answer().await;
        assert!(
            read.head
                .starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{}",
            read.head
        );
        generic_answer(
            std::str::from_utf8(&read.body).unwrap(),
            http::StatusCode::SERVICE_UNAVAILABLE,
        );
    }
}

over_each_transport!(a_keep_alive_connection_idle_past_the_idle_timeout_is_closed);
async fn a_keep_alive_connection_idle_past_the_idle_timeout_is_closed(transport: Transport) {
    // The idle timeout is the shorter one here: it, not the header-read timeout, closes.
    let tuning = Tuning {
        idle_timeout: std::time::Duration::from_millis(100),
        ..Tuning::default()
    };
    let (_edge, _slot, mut client) = through_edge(
        TestEdge::start_in(transport, tuning).await,
        transport,
        |_, _| (ok("hi"), false),
    )
    .await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(client.answer().await.body, b"hi");
    // `closed` reads until the edge closes, bounded by SIGNAL_TIMEOUT (10 s, against 30 s
    // for the header-read timeout).
    assert!(client.closed().await, "the idle connection was not closed");
}

over_each_transport!(
    a_request_whose_connection_header_names_its_length_is_refused_and_never_forwarded
);
async fn a_request_whose_connection_header_names_its_length_is_refused_and_never_forwarded(
    transport: Transport,
) {
    let (_edge, mut slot, mut client) =
        through_edge(edge_for(transport).await, transport, |_, _| {
            (ok("slot"), false)
        })
        .await;
    // The body holds a second request: forwarded without its Content-Length, the slot
    // would read it as one.
    client
        .send(b"POST / HTTP/1.1\r\nHost: app.test\r\nConnection: content-length\r\nContent-Length: 38\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let read = client.answer().await;
    assert!(
        read.head.starts_with("HTTP/1.1 400 Bad Request\r\n")
            && read.head.contains("connection: close"),
        "{}",
        read.head
    );
    generic_answer(
        std::str::from_utf8(&read.body).unwrap(),
        http::StatusCode::BAD_REQUEST,
    );
    assert!(
        client.closed().await,
        "the connection stays open after a refusal"
    );
    // The answer came before anything could have been forwarded: nothing was.
    assert!(
        slot.requests.try_recv().is_err(),
        "a request reached the slot"
    );
}

over_each_transport!(interim_answers_beyond_the_limit_are_a_502_and_the_slot_connection_is_dropped);
async fn interim_answers_beyond_the_limit_are_a_502_and_the_slot_connection_is_dropped(
    transport: Transport,
) {
    let (_edge, mut slot, mut client) =
        through_edge(edge_for(transport).await, transport, |n, _| {
            if n == 0 {
                (b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(50), false)
            } else {
                (ok("second"), false)
            }
        })
        .await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    for _ in 0..crate::framing::MAX_INTERIM_ANSWERS {
        let hint = client.answer().await;
        assert!(hint.head.starts_with("HTTP/1.1 103"), "{}", hint.head);
    }
    let failed = client.answer().await;
    assert!(failed.head.starts_with("HTTP/1.1 502"), "{}", failed.head);
    // The next request goes over a new slot connection: the one that sent too many
    // interim answers is not pooled, and the 40 it still held never reach anyone.
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let next = client.answer().await;
    assert_eq!(next.body, b"second", "{}", next.head);
    slot.accepted(2).await;
}

over_each_transport!(bytes_after_a_complete_answer_never_reach_the_next_client);
async fn bytes_after_a_complete_answer_never_reach_the_next_client(transport: Transport) {
    let (edge, mut slot, mut first) = through_edge(edge_for(transport).await, transport, |n, _| {
        if n == 0 {
            let mut answer = ok("first");
            answer.extend_from_slice(&ok("poison"));
            (answer, false)
        } else {
            (ok(&format!("answer {n}")), false)
        }
    })
    .await;
    first
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(first.answer().await.body, b"first");
    let mut second = RawClient::open(&edge, transport).await;
    second
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let read = second.answer().await;
    assert_eq!(read.body, b"answer 1");
    slot.accepted(2).await;
}
