//! What the edge itself tells an internet client when the slot fails it: a short, generic
//! 502 or 504 (a status line and a request id), never the slot's address, the release id or
//! an error chain; those go to the log. And what it tells the operator of a request it
//! refused: a line under the same id, at the level shipit logs at by default.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shipit_edge::Tuning;

use crate::case::{HOST, get};
use crate::harness::{Edge, Path, check, each_on_every_path, on_every_path};
use crate::upstream::{Reply, Upstream};

/// A release id that must not reach a client.
const RELEASE: &str = "rel-secret-42";
/// The longest body that still counts as short.
const SHORT: usize = 200;
/// Words of the error chains a failure carries today; none belongs in a client's answer.
const CHAIN_WORDS: [&str; 6] = [
    "os error",
    "refused",
    "not valid",
    "invalid",
    "closed",
    "did not answer",
];

/// Whether `text` holds `number` as a whole number (not inside a longer one).
fn holds_number(text: &str, number: u16) -> bool {
    let number = number.to_string();
    text.split(|c: char| !c.is_ascii_digit())
        .any(|n| n == number)
}

/// The edge's answer to one GET, which must be `status` with a generic body.
async fn generic_answer(edge: &Edge, slot: SocketAddr, status: u16) -> Result<(), String> {
    let got = edge
        .client()
        .await
        .exchange(get("/a", "").as_bytes(), false, 1)
        .await;
    let finals = got.finals();
    let [answer] = finals.as_slice() else {
        return Err(format!(
            "expected one {status}, the client got {}",
            got.describe()
        ));
    };
    check(answer.status == status, || {
        format!("expected {status}, the client got {}", got.describe())
    })?;
    let body = answer.text();
    let lower = body.to_lowercase();
    let leaks: Vec<String> = [
        body.contains(RELEASE)
            .then(|| format!("the release id {RELEASE}")),
        body.contains(&slot.ip().to_string())
            .then(|| format!("the slot's address {}", slot.ip())),
        holds_number(&body, slot.port()).then(|| format!("the slot's port {}", slot.port())),
        CHAIN_WORDS
            .iter()
            .find(|w| lower.contains(*w))
            .map(|w| format!("an error chain ({w:?})")),
        (body.len() > SHORT).then(|| format!("{} bytes (over {SHORT})", body.len())),
    ]
    .into_iter()
    .flatten()
    .collect();
    check(leaks.is_empty(), || {
        format!("the {status} body holds {}: {body:?}", leaks.join(", "))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_for_an_unreachable_slot_is_generic() {
    on_every_path("502_body_for_an_unreachable_slot", async |path: Path| {
        // An address nobody listens on: bound, then let go.
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let edge = Edge::start(path).await;
        edge.route(nobody, RELEASE).await;
        generic_answer(&edge, nobody, 502).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_for_a_broken_answer_is_generic() {
    on_every_path("502_body_for_a_broken_answer", async |path: Path| {
        let upstream = Upstream::scripted(Arc::new(|_| {
            Reply::RawThenClose(b"NOT HTTP\r\n\r\n".to_vec())
        }))
        .await;
        let edge = Edge::start(path).await;
        edge.route(upstream.addr, RELEASE).await;
        generic_answer(&edge, upstream.addr, 502).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_504_for_a_silent_slot_is_generic() {
    on_every_path("504_body_for_a_silent_slot", async |path: Path| {
        let upstream = Upstream::scripted(Arc::new(|_| Reply::Silent)).await;
        let tuning = Tuning {
            response_header_timeout: Duration::from_millis(300),
            ..Tuning::default()
        };
        let edge = Edge::start_with(path, tuning).await;
        edge.route(upstream.addr, RELEASE).await;
        generic_answer(&edge, upstream.addr, 504).await
    })
    .await;
}

/// Every line the edges of this process log at shipit's default level: `warn` (what
/// `shipit edge run` writes without `-v` or `RUST_LOG`). One subscriber for the whole
/// process; a test finds its own lines by a request id.
fn default_level_log() -> Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the hostile tests");
        lines
    }))
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The request id of a generic answer of the edge.
fn request_id(body: &str) -> Option<&str> {
    body.lines()
        .find_map(|line| line.strip_prefix("request id: "))
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A request the edge refuses, and the status it gets.
struct Refused {
    name: &'static str,
    bytes: String,
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_logged_at_the_default_level() {
    /// How long a test may retry: refusal lines are limited to 10 a second for the whole
    /// process, which the other tests of this binary share.
    const RETRY_FOR: Duration = Duration::from_secs(8);
    let log = default_level_log();
    let refused = vec![
        Refused {
            name: "400_two_hosts",
            bytes: format!("GET /a HTTP/1.1\r\nHost: {HOST}\r\nHost: other.test\r\n\r\n"),
            status: 400,
        },
        Refused {
            name: "408_stalled_body",
            bytes: format!("POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\nabc"),
            status: 408,
        },
        Refused {
            name: "413_declared_body_over_the_limit",
            bytes: format!("POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 500000\r\n\r\n"),
            status: 413,
        },
    ];
    each_on_every_path(
        "refused requests in the default-level log",
        refused,
        |r| r.name.to_string(),
        async |refused, path: Path| {
            let upstream = Upstream::start().await;
            let tuning = Tuning {
                body_idle_timeout: Duration::from_millis(300),
                max_request_body: Some(200_000),
                ..Tuning::default()
            };
            let edge = Edge::start_with(path, tuning).await;
            edge.route(upstream.addr, "rel-1").await;
            let deadline = tokio::time::Instant::now() + RETRY_FOR;
            let mut ids = Vec::new();
            loop {
                let got = edge
                    .client()
                    .await
                    .exchange(refused.bytes.as_bytes(), false, 1)
                    .await;
                let finals = got.finals();
                let id = match finals.as_slice() {
                    [answer] if answer.status == refused.status => {
                        request_id(&answer.text()).map(str::to_string)
                    }
                    _ => None,
                };
                let Some(id) = id else {
                    return Err(format!(
                        "expected {} with a request id, the client got {}",
                        refused.status,
                        got.describe()
                    ));
                };
                ids.push(id);
                let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
                if ids.iter().any(|id| text.contains(id.as_str())) {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "none of {} refused requests (ids {:?}) has a line in the log at \
                         shipit's default level (warn)",
                        ids.len(),
                        &ids[..ids.len().min(3)]
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;
}
