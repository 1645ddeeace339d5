//! The edge's own answers: what a client sees when the edge answers instead of a slot, and
//! what the log gets instead.
//!
//! A client of the edge is anyone on the internet, so its answer is short and generic: the
//! status line and a request id ([`body`]). The detail (the service, slot, release, address
//! and error chain) is for operators: it goes to the log under the same id. Lines that a
//! client can cause at will pass through a [`LogBudget`], so a flood of bad requests cannot
//! flood the log; the first line after a quiet spell says how many were left out.
//!
//! A route an operator closed is answered here too ([`unavailable`]): its maintenance page,
//! or the generic 503 of a pause past its deadline, both with `Retry-After`.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::metrics::{ClosedAnswer, Metrics};
use crate::pause::PAUSE_RETRY_AFTER;
use crate::route::Closed;

/// Identifies one answer of the edge in the log: 16 hex digits, unpredictable from the
/// ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestId(u64);

impl RequestId {
    pub(crate) fn new() -> Self {
        static SEED: LazyLock<RandomState> = LazyLock::new(RandomState::new);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        RequestId(SEED.hash_one(NEXT.fetch_add(1, Ordering::Relaxed)))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why no answer came from the slot, as both paths report it: the edge answers instead
/// (502 or 504).
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// The connect failed (the cause).
    Connect(String),
    /// The connection broke, or the answer was not HTTP, before an answer (the cause).
    Broken(String),
    /// No answer's head within the response-header timeout.
    NoAnswer,
    /// A 101 to a request that did not ask to upgrade.
    UnaskedUpgrade,
    /// The edge could not open a connection for a reason of its own (out of file
    /// descriptors): a 503 that is not the slot's.
    Overloaded(String),
}

impl Failure {
    /// Whether the edge, not the slot, failed: such an answer is not counted for the slot.
    pub(crate) fn is_the_edges(&self) -> bool {
        matches!(self, Failure::Overloaded(_))
    }
}

/// The body of an answer from the edge: its status and the request id, nothing else.
pub(crate) fn body(status: StatusCode, id: RequestId) -> String {
    format!(
        "{} {}\nrequest id: {id}\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
}

/// A 503 of the edge's own for a request of a closed route, as both paths send it: with
/// `Retry-After`, `Cache-Control: no-store` and a `Content-Length` (a HEAD answer names
/// the body's length and sends none of it).
#[derive(Debug)]
pub(crate) struct Unavailable {
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    pub(crate) retry_after: HeaderValue,
}

/// The content type of the maintenance page.
const TEXT_HTML: &str = "text/html; charset=utf-8";
/// The content type of the edge's generic answers.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The answer to a request of a closed route, counted (never as the slot's); a pause's
/// 503 is logged under its request id, within [`CLOSED_ROUTES`].
pub(crate) fn unavailable(
    closed: &Closed,
    metrics: &Metrics,
    remote: &std::net::SocketAddr,
) -> Unavailable {
    let why = match closed {
        Closed::Maintenance(maintenance) => {
            metrics.count_closed(ClosedAnswer::Maintenance);
            return Unavailable {
                content_type: TEXT_HTML,
                body: maintenance.page().clone(),
                retry_after: maintenance.retry_after().clone(),
            };
        }
        Closed::PauseExpired { service } => format!(
            "service {service} is paused and its pause passed its deadline; requests are \
             answered 503 until it is resumed (`shipit resume`)"
        ),
        Closed::Stopping => {
            "the edge stopped while it held this request of a paused service".to_string()
        }
    };
    metrics.count_closed(ClosedAnswer::Paused);
    let id = RequestId::new();
    if let Some(suppressed) = CLOSED_ROUTES.admit() {
        tracing::info!(request_id = %id, %remote, suppressed, "answered 503: {why}");
    }
    Unavailable {
        content_type: TEXT_PLAIN,
        body: Bytes::from(body(StatusCode::SERVICE_UNAVAILABLE, id)),
        retry_after: HeaderValue::from(PAUSE_RETRY_AFTER.as_secs()),
    }
}

/// Lines of one kind allowed per second before the rest are counted instead of written.
pub(crate) const LOG_LINES_PER_SECOND: u64 = 10;

/// A rate limit on log lines of one kind: at most [`LOG_LINES_PER_SECOND`] a second.
#[derive(Debug)]
pub(crate) struct LogBudget {
    /// The second (since the process started) the count below belongs to.
    second: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

// The slots' failures (502, 504) have a budget per edge (`Proxy::slot_failures`), not per
// process: a process runs one edge, but the edges a test process runs side by side must not
// use up each other's lines.
/// Lines of requests the edge answered itself as the client's error or for no route
/// (400, 404, 405, 408, 413, 431, 503 without a live slot).
pub(crate) static CLIENT_ERRORS: LogBudget = LogBudget::new();
/// Lines of requests of a route an operator closed (503 past a pause's deadline): a long
/// pause must not crowd the clients' errors out of the log, nor they its lines.
pub(crate) static CLOSED_ROUTES: LogBudget = LogBudget::new();
/// Lines of failed accepts (out of file descriptors, for one).
pub(crate) static ACCEPT_ERRORS: LogBudget = LogBudget::new();

impl LogBudget {
    pub(crate) const fn new() -> Self {
        LogBudget {
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, with the number of lines left out since
    /// the last one written; `None` when this one is left out (and counted).
    pub(crate) fn admit(&self) -> Option<u64> {
        static START: LazyLock<Instant> = LazyLock::new(Instant::now);
        self.admit_at(START.elapsed().as_secs())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < LOG_LINES_PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Logs a request the edge refused as the client's error, within [`CLIENT_ERRORS`].
pub(crate) fn log_refusal(
    id: RequestId,
    status: StatusCode,
    remote: &std::net::SocketAddr,
    reason: &str,
) {
    if let Some(suppressed) = CLIENT_ERRORS.admit() {
        tracing::warn!(
            request_id = %id,
            %remote,
            status = status.as_u16(),
            suppressed,
            "refused a client's request: {reason}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_differ_and_are_sixteen_hex_digits() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| RequestId::new().to_string()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn the_body_names_only_the_status_and_the_request_id() {
        let id = RequestId(0xabc);
        assert_eq!(
            body(StatusCode::BAD_GATEWAY, id),
            "502 Bad Gateway\nrequest id: 0000000000000abc\n"
        );
    }

    #[test]
    fn a_budget_admits_its_lines_per_second_and_counts_the_rest() {
        let budget = LogBudget::new();
        let admitted: Vec<Option<u64>> = (0..LOG_LINES_PER_SECOND + 5)
            .map(|_| budget.admit_at(7))
            .collect();
        assert!(
            admitted[..LOG_LINES_PER_SECOND as usize]
                .iter()
                .all(|a| *a == Some(0))
        );
        assert!(
            admitted[LOG_LINES_PER_SECOND as usize..]
                .iter()
                .all(Option::is_none)
        );
        // The next second's first line says how many were left out.
        assert_eq!(budget.admit_at(8), Some(5));
        assert_eq!(budget.admit_at(8), Some(0));
    }
}
