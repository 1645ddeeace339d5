//! The edge's own answers: what a client sees when the edge answers instead of a slot, and
//! what the log gets instead.
//!
//! A client of the edge is anyone on the internet, so its answer is short and generic: the
//! status line and a request id ([`body`]). The detail (the service, slot, release, address
//! and error chain) is for operators: it goes to the log under the same id. Lines that a
//! client can cause at will pass through a [`LogBudget`], so a flood of bad requests cannot
//! flood the log; the first line after a quiet spell says how many were left out.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::StatusCode;

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

/// Lines of the slots' failures (502, 504).
pub(crate) static SLOT_FAILURES: LogBudget = LogBudget::new();
/// Lines of requests the edge answered itself as the client's error or for no route
/// (400, 404, 405, 408, 413, 431, 503 without a live slot).
pub(crate) static CLIENT_ERRORS: LogBudget = LogBudget::new();
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
