//! What the edge itself tells an internet client when the slot fails it: a short, generic
//! 502 or 504 (a status line and a request id), never the slot's address, the release id or
//! an error chain; those go to the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shipit_edge::Tuning;

use crate::case::get;
use crate::client::RawClient;
use crate::harness::{Edge, Path, check, on_both_paths};
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
    let got = RawClient::connect(edge.addr())
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
    on_both_paths("502_body_for_an_unreachable_slot", async |path: Path| {
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
    on_both_paths("502_body_for_a_broken_answer", async |path: Path| {
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
    on_both_paths("504_body_for_a_silent_slot", async |path: Path| {
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
