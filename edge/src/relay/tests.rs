use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::Slot;
use crate::test_backend::{SIGNAL_TIMEOUT, TestBackend, TestEdge};

// --- The chunked framing -----------------------------------------------------------

const CHUNKED: &[u8] =
    b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 31\r\n\r\n";

#[test]
fn chunked_scanner_finds_the_end_wherever_the_body_is_split() {
    let mut body = CHUNKED.to_vec();
    body.extend_from_slice(b"HTTP/1.1 200 OK\r\n"); // the next answer's first bytes
    for split in 0..=body.len() {
        let mut scanner = ChunkedScanner::default();
        let first = scanner.feed(&body[..split]).unwrap();
        let end = match first {
            Some(end) => end,
            None => split + scanner.feed(&body[split..]).unwrap().expect("no end found"),
        };
        assert_eq!(end, CHUNKED.len(), "split at {split}");
    }
}

#[test]
fn chunked_scanner_finds_the_end_fed_byte_by_byte() {
    let mut scanner = ChunkedScanner::default();
    let mut ends = Vec::new();
    for (i, byte) in CHUNKED.iter().enumerate() {
        if let Some(end) = scanner.feed(std::slice::from_ref(byte)).unwrap() {
            ends.push((i, end));
        }
    }
    assert_eq!(ends, vec![(CHUNKED.len() - 1, 1)]);
}

#[test]
fn chunked_scanner_refuses_broken_framing() {
    for broken in [
        &b"zz\r\n"[..],
        b"5\r\nhelloX\r\n",
        b"5\nhello",
        b"\r\n",
        b"ffffffffffffffffff\r\n",
        b"0\r\n\rX",
    ] {
        let mut scanner = ChunkedScanner::default();
        assert!(
            scanner.feed(broken).is_err(),
            "{:?}",
            String::from_utf8_lossy(broken)
        );
    }
}

// --- Parsing and rewriting heads ------------------------------------------------------

fn client() -> Client<'static> {
    Client {
        https: false,
        ip: b"192.0.2.7",
        max_body: Some(1000),
    }
}

fn ready(request: &[u8]) -> (Head, String) {
    let mut out = Vec::new();
    match parse_request(request, &mut out, &client()) {
        Parsed::Ready(head) => (head, String::from_utf8(out).unwrap()),
        Parsed::Incomplete => panic!("incomplete: {}", String::from_utf8_lossy(request)),
        Parsed::Fallback => panic!("fallback: {}", String::from_utf8_lossy(request)),
    }
}

#[test]
fn request_head_is_rewritten_for_the_slot() {
    let request = b"POST /cart/add?id=3 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Trace\r\n\
X-Trace: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9v\r\nTE: trailers\r\n\
X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
Cookie: a=1\r\nContent-Length: 5\r\n\r\nhelloGET /next";
    let (head, out) = ready(request);
    assert_eq!(
        out,
        "POST /cart/add?id=3 HTTP/1.1\r\nHost: shop.example\r\nCookie: a=1\r\nContent-Length: 5\r\n\
x-forwarded-host: shop.example\r\nx-forwarded-proto: http\r\n\
x-forwarded-for: 203.0.113.9, 192.0.2.7\r\n\r\nhello"
    );
    assert_eq!(head.len, request.len() - b"GET /next".len());
    assert_eq!(&request[head.host], b"shop.example");
    assert_eq!(&request[head.path], b"/cart/add");
    assert_eq!(head.split.get(header::COOKIE).unwrap(), "a=1");
    assert!(!head.idempotent && !head.head_method && !head.close);
}

#[test]
fn request_flags_follow_the_method_and_connection() {
    let (head, _) =
        ready(b"HEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\nx-shipit-slot: green\r\n\r\n");
    assert!(head.idempotent && head.head_method && head.close);
    assert_eq!(head.split.get(&SLOT_HEADER).unwrap(), "green");
}

#[test]
fn a_request_waits_for_its_whole_head_and_body() {
    let request = b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd";
    for cut in 1..request.len() {
        let mut out = Vec::new();
        assert!(
            matches!(
                parse_request(&request[..cut], &mut out, &client()),
                Parsed::Incomplete
            ),
            "cut at {cut}"
        );
    }
    ready(request);
}

#[test]
fn requests_the_relay_does_not_take_go_to_the_general_path() {
    for request in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        // Over the edge's body limit (1000 here): the general path answers 413.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
    ] {
        let mut out = Vec::new();
        assert!(
            matches!(
                parse_request(request, &mut out, &client()),
                Parsed::Fallback
            ),
            "{}",
            String::from_utf8_lossy(request)
        );
    }
}

fn extra() -> Extra {
    Extra {
        set_cookie: None,
        pinned: None,
        close: false,
        head_method: false,
    }
}

fn final_answer(bytes: &[u8], extra: &Extra, closing: bool) -> (Answer, String) {
    let mut out = Vec::new();
    match parse_answer(bytes, &mut out, extra, closing) {
        Ok(Some(Parsed1::Final(answer))) => (answer, String::from_utf8(out).unwrap()),
        Ok(Some(Parsed1::Interim(_))) => panic!("interim"),
        Ok(None) => panic!("incomplete"),
        Err(failure) => panic!("{failure:?}"),
    }
}

#[test]
fn answer_head_is_rewritten_for_the_client() {
    let extra = Extra {
        set_cookie: Some(HeaderValue::from_static("shipit_slot=green.r2; Path=/")),
        pinned: Some("green"),
        ..extra()
    };
    let (answer, out) = final_answer(
        b"HTTP/1.1 201 Made It\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: 5\r\n\
Content-Length: 2\r\nX-App: a\r\n\r\nok",
        &extra,
        false,
    );
    assert_eq!(
        out,
        "HTTP/1.1 201 Made It\r\nContent-Length: 2\r\nX-App: a\r\n\
set-cookie: shipit_slot=green.r2; Path=/\r\nx-shipit-slot: green\r\n\r\n"
    );
    assert_eq!(answer.status, 201);
    assert_eq!(answer.framing, Framing::Length(2));
    assert!(answer.upstream_close && !answer.close);
}

#[test]
fn answer_framing_follows_rfc_9112() {
    let cases: [(&[u8], bool, Framing); 7] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
            false,
            Framing::Length(7),
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 7\r\n\r\n",
            false,
            Framing::Chunked,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            false,
            Framing::UntilClose,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false, Framing::Empty),
        (
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            false,
            Framing::Empty,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            true,
            Framing::Empty,
        ),
    ];
    for (bytes, head_method, framing) in cases {
        let extra = Extra {
            head_method,
            ..extra()
        };
        let (answer, out) = final_answer(bytes, &extra, false);
        assert_eq!(
            answer.framing,
            framing,
            "{}",
            String::from_utf8_lossy(bytes)
        );
        // A body that ends with the connection closes the client's too, and says so.
        assert_eq!(answer.close, framing == Framing::UntilClose);
        assert_eq!(out.contains("connection: close"), answer.close, "{out}");
        if framing == Framing::Chunked {
            assert!(out.contains("transfer-encoding: gzip, chunked"), "{out}");
            assert!(!out.contains("content-length"), "{out}");
        }
    }
}

#[test]
fn interim_upgrade_and_invalid_answers() {
    let mut out = Vec::new();
    assert!(matches!(
        parse_answer(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1", &mut out, &extra(), false),
        Ok(Some(Parsed1::Interim(n))) if n == 40
    ));
    assert!(matches!(
        parse_answer(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            &mut out,
            &extra(),
            false
        ),
        Err(Failure::UnaskedUpgrade)
    ));
    assert!(matches!(
        parse_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            &mut out,
            &extra(),
            false
        ),
        Err(Failure::Broken(_))
    ));
    assert!(matches!(
        parse_answer(b"HTTP/1.1 200 OK\r\ncontent-le", &mut out, &extra(), false),
        Ok(None)
    ));
    let (answer, out) = final_answer(
        b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
        &extra(),
        true,
    );
    assert!(
        answer.upstream_close,
        "an HTTP/1.0 slot connection is not reused"
    );
    assert!(
        answer.close && out.ends_with("connection: close\r\n\r\n"),
        "{out}"
    );
}

// --- Through a running edge -----------------------------------------------------------

/// A slot that answers each request with bytes the test scripts, and counts the
/// connections it accepted and the requests it read.
struct ScriptedSlot {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    accepts: tokio::sync::watch::Receiver<usize>,
    requests: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

/// What a scripted slot does with a request: the bytes to answer, and whether to close
/// the connection afterwards (without saying so).
type Script = fn(usize, &str) -> (Vec<u8>, bool);

impl ScriptedSlot {
    async fn start(script: Script) -> ScriptedSlot {
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

    fn backend(&self) -> crate::Backend {
        crate::Backend {
            slot: Slot::Blue,
            release: "r1".into(),
            addr: self.addr,
        }
    }

    /// Waits until the slot accepted `n` connections.
    async fn accepted(&mut self, n: usize) {
        tokio::time::timeout(SIGNAL_TIMEOUT, self.accepts.wait_for(|&count| count >= n))
            .await
            .expect("the edge did not connect to the slot")
            .unwrap();
    }

    async fn request(&mut self) -> String {
        tokio::time::timeout(SIGNAL_TIMEOUT, self.requests.recv())
            .await
            .expect("no request reached the slot")
            .unwrap()
    }
}

/// An edge (started by the caller) routing `web` to a slot running `script`, once the
/// switch's connection to the slot is open, and a client connected to the edge.
async fn through_edge(edge: TestEdge, script: Script) -> (TestEdge, ScriptedSlot, RawClient) {
    let mut slot = ScriptedSlot::start(script).await;
    edge.switch(&slot.backend()).await;
    // The switch opened a connection to the slot before any request.
    slot.accepted(1).await;
    let client = RawClient::open(edge.addr()).await;
    (edge, slot, client)
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A client on one raw connection to the edge.
struct RawClient {
    stream: TcpStream,
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
    async fn open(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
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

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_over_one_slot_connection() {
    let (_edge, mut slot, mut client) = through_edge(TestEdge::start().await, |n, _| {
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

#[tokio::test]
async fn chunked_and_interim_answers_pass_through_and_the_connection_is_reused() {
    let (_edge, slot, mut client) = through_edge(TestEdge::start().await, |n, _| {
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

#[tokio::test]
async fn an_answer_that_ends_with_its_connection_closes_the_client_connection_too() {
    let (_edge, _slot, mut client) = through_edge(TestEdge::start().await, |_, _| {
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

#[tokio::test]
async fn a_pooled_connection_the_slot_closed_is_replaced() {
    let edge = TestEdge::start().await;
    // The slot closes every connection after one answer, without saying so.
    let mut slot = ScriptedSlot::start(|n, _| (ok(&format!("answer {n}")), true)).await;
    edge.switch(&slot.backend()).await;
    slot.accepted(1).await;
    let mut client = RawClient::open(edge.addr()).await;
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

#[tokio::test]
async fn a_malformed_answer_is_a_502_that_names_the_slot() {
    let (_edge, _slot, mut client) = through_edge(TestEdge::start().await, |_, _| {
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
    assert!(
        body.contains("the blue slot of service web (release r1)")
            && body.contains("Content-Length"),
        "{body}"
    );
    // The client's connection is still good.
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert!(client.answer().await.head.starts_with("HTTP/1.1 502"));
}

#[tokio::test]
async fn a_connection_moves_to_the_general_path_at_its_first_request_the_relay_does_not_take() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut client = RawClient::open(edge.addr()).await;
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

#[tokio::test]
async fn a_client_that_asks_to_close_is_answered_then_closed() {
    let (_edge, _slot, mut client) =
        through_edge(TestEdge::start().await, |_, _| (ok("bye"), false)).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await;
    let read = client.answer().await;
    assert!(read.head.contains("connection: close\r\n"), "{}", read.head);
    assert_eq!(read.body, b"bye");
    assert!(client.closed().await);
}

#[tokio::test]
async fn unrouted_requests_are_answered_by_the_edge_and_the_connection_stays() {
    let edge = TestEdge::start().await;
    let mut client = RawClient::open(edge.addr()).await;
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
        assert!(read.body.starts_with(b"shipit edge: no live slot"));
    }
}

#[tokio::test]
async fn a_keep_alive_connection_idle_past_the_idle_timeout_is_closed() {
    // The idle timeout is the shorter one here: it, not the header-read timeout, closes.
    let tuning = crate::server::Tuning {
        idle_timeout: std::time::Duration::from_millis(100),
        ..crate::server::Tuning::default()
    };
    let (_edge, _slot, mut client) =
        through_edge(TestEdge::start_with(tuning).await, |_, _| (ok("hi"), false)).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(client.answer().await.body, b"hi");
    // `closed` reads until the edge closes, bounded by SIGNAL_TIMEOUT (10 s, against 30 s
    // for the header-read timeout).
    assert!(client.closed().await, "the idle connection was not closed");
}
