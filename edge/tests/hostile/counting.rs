//! Whose error a request is, as the metrics tell it. A request the edge refuses itself (a
//! body over the limit, a broken chunked body, a body that stalls) never reached the slot's
//! code: it is counted in `shipit_edge_refused_requests_total`, never in the slot's
//! `shipit_edge_requests_total` (where it would dilute or inflate a canary's error rate).
//! And an upload so slow that the slot gives up on it is the client's error (408 or a
//! close), never a 502 counted as the slot's 5xx.

use std::sync::Arc;
use std::time::Duration;

use shipit_edge::{Backend, Slot, Tuning};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::case::{HOST, seen};
use crate::harness::{Edge, Path, SERVICE, check, each_on_every_path};
use crate::upstream::{Reply, Upstream};
use crate::wire::{self, escape};

/// The release of the candidate.
const CANDIDATE: &str = "rel-candidate";
/// How long a request body may stall before the edge answers 408.
const BODY_IDLE: Duration = Duration::from_millis(300);
/// How long the counters may take to show a refusal after its answer.
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which slot the refused requests are sent to.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The live slot, without a pin.
    Live,
    /// A candidate registered for preview, pinned with `X-Shipit-Slot`.
    PreviewPinned,
    /// A candidate with a share of the traffic (weights), pinned with `X-Shipit-Slot`.
    WeightedPinned,
}

impl Target {
    /// The header lines that send a request there.
    fn pin(self) -> &'static str {
        match self {
            Target::Live => "",
            Target::PreviewPinned | Target::WeightedPinned => "X-Shipit-Slot: green\r\n",
        }
    }
}

/// A request the edge refuses itself: its name, bytes, and the statuses it may get (none
/// at all: the connection may close instead).
fn refused(pin: &str) -> Vec<(&'static str, String, &'static [u16], bool)> {
    vec![
        (
            "content_length_over_the_body_limit",
            format!(
                "POST /over HTTP/1.1\r\nHost: {HOST}\r\n{pin}Content-Length: 999999999999\r\n\r\n"
            ),
            &[413],
            false,
        ),
        (
            "broken_chunked_body",
            format!(
                "POST /broken HTTP/1.1\r\nHost: {HOST}\r\n{pin}Transfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n"
            ),
            &[400],
            true,
        ),
        (
            "stalled_content_length_body",
            format!(
                "POST /stalled HTTP/1.1\r\nHost: {HOST}\r\n{pin}Content-Length: 100000\r\n\r\nabc"
            ),
            &[408],
            false,
        ),
        (
            "stalled_chunked_body",
            format!(
                "POST /stalled-chunked HTTP/1.1\r\nHost: {HOST}\r\n{pin}Transfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n"
            ),
            &[408],
            false,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_edge_refuses_count_as_refused_never_as_the_slots() {
    each_on_every_path(
        "refused requests in the slot's counts",
        vec![Target::Live, Target::PreviewPinned, Target::WeightedPinned],
        |t| format!("refused_requests_to_{t:?}"),
        async |target, path: Path| {
            let live = Upstream::start().await;
            let candidate = Upstream::start().await;
            let tuning = Tuning {
                body_idle_timeout: BODY_IDLE,
                ..Tuning::default()
            };
            let edge = Edge::start_with(path, tuning).await;
            edge.route(live.addr, "rel-1").await;
            let backend = Backend {
                slot: Slot::Green,
                release: CANDIDATE.into(),
                addr: candidate.addr,
                more_addrs: Vec::new(),
            };
            match target {
                Target::Live => {}
                Target::PreviewPinned => {
                    edge.admin().preview(SERVICE, &backend, None).await.unwrap();
                }
                Target::WeightedPinned => {
                    edge.admin().weights(SERVICE, &backend, 50).await.unwrap();
                }
            }
            let requests = refused(target.pin());
            let mut problems = Vec::new();
            for (name, bytes, statuses, or_close) in &requests {
                let got = edge
                    .client()
                    .await
                    .exchange(bytes.as_bytes(), false, 1)
                    .await;
                let finals = got.finals();
                let ok = match finals.as_slice() {
                    [] => *or_close && got.closed,
                    [answer] => statuses.contains(&answer.status),
                    _ => false,
                };
                if !ok {
                    problems.push(format!(
                        "{name}: expected {statuses:?}, got {}",
                        got.describe()
                    ));
                }
            }
            // Every request has ended before the counters are read.
            if !matches!(target, Target::Live) {
                edge.admin().clear_preview(SERVICE).await.unwrap();
                let drained = edge
                    .admin()
                    .drain(SERVICE, CANDIDATE, Duration::from_secs(3))
                    .await
                    .unwrap();
                if !drained.drained {
                    problems.push("requests stayed in flight on the candidate".into());
                }
            }
            if !edge.settle().await {
                problems.push("requests stayed in flight on the live slot".into());
            }
            let want = requests.len() as f64;
            let deadline = Instant::now() + COUNT_TIMEOUT;
            let mut refused = edge.refused_requests().await;
            while refused < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                refused = edge.refused_requests().await;
            }
            if refused != want {
                problems.push(format!(
                    "shipit_edge_refused_requests_total is {refused} after {want} requests the \
                     edge refused"
                ));
            }
            for slot in [Slot::Blue, Slot::Green] {
                let counts = edge.slot_counts(slot).await;
                if !counts.is_empty() {
                    problems.push(format!(
                        "the {slot} slot's shipit_edge_requests_total counted the edge's own \
                         refusals: {counts:?}"
                    ));
                }
            }
            check(problems.is_empty(), || problems.join("; "))
        },
    )
    .await;
}

/// A slow upload: the head, then one byte at a time.
struct SlowUpload {
    name: &'static str,
    head: String,
    piece: &'static [u8],
}

fn slow_uploads() -> Vec<SlowUpload> {
    vec![
        SlowUpload {
            name: "slow_chunked_upload",
            head: format!(
                "POST /slow-upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            piece: b"1\r\nx\r\n",
        },
        SlowUpload {
            name: "slow_100_kib_upload",
            head: format!(
                "POST /slow-upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
                100 * 1024
            ),
            piece: b"x",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_so_slow_that_the_slot_gives_up_is_the_clients_error() {
    /// How long the slot waits for a whole request once its head came.
    const SLOT_DEADLINE: Duration = Duration::from_secs(1);
    /// How often the client sends a byte.
    const EVERY: Duration = Duration::from_millis(1500);
    /// How long the client goes on.
    const UPLOAD_FOR: Duration = Duration::from_secs(7);
    each_on_every_path(
        "uploads slower than the slot's read deadline",
        slow_uploads(),
        |u| u.name.to_string(),
        async |upload, path: Path| {
            let upstream =
                Upstream::scripted(Arc::new(|_| Reply::CloseUnlessWhole(SLOT_DEADLINE))).await;
            let edge = Edge::routed(path, upstream.addr).await;
            let (mut reader, mut writer) = tokio::io::split(edge.connect().await?);
            let head = upload.head.clone();
            let piece = upload.piece;
            let writing = tokio::spawn(async move {
                if writer.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    if writer.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(EVERY).await;
                }
            });
            // The answer, or the close.
            let deadline = Instant::now() + UPLOAD_FOR;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut closed = false;
            let answer = loop {
                match wire::response(&buf, closed, false) {
                    Ok(Some((answer, _))) => break Some(answer),
                    Ok(None) if closed => break None,
                    Ok(None) => {}
                    Err(e) => {
                        writing.abort();
                        return Err(format!("an unparsable answer ({e}): {}", escape(&buf)));
                    }
                }
                match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
                    Ok(Ok(0) | Err(_)) => closed = true,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => break None,
                }
            };
            writing.abort();
            let gave_up = upstream.connections().iter().any(|c| c.gave_up);
            check(gave_up, || {
                format!(
                    "the slot never gave up on the upload (it parsed {})",
                    seen(&upstream)
                )
            })?;
            match &answer {
                Some(answer) => check(answer.status == 408, || {
                    format!(
                        "the client got {} {:?} when the slot gave up on its slow upload: \
                         expected 408 or a close",
                        answer.status,
                        answer.text()
                    )
                })?,
                None => check(closed, || {
                    format!(
                        "the edge neither answered nor closed within {UPLOAD_FOR:?}: {}",
                        escape(&buf)
                    )
                })?,
            }
            let settled = edge.settle().await;
            let errors = edge.requests_total(Slot::Blue, "5xx").await;
            check(settled && errors == 0.0, || {
                format!(
                    "the slot's 5xx counter is {errors} (settled: {settled}): a client's slow \
                     upload counted against the slot"
                )
            })
        },
    )
    .await;
}
