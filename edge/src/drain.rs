//! Waiting for replaced backends to finish their requests.
//!
//! Because the route table counts a request before a switch can return, a replaced
//! backend's count only goes down. The drain waits on the counter's `Notify` (a signal,
//! not a sleep loop) until it reads zero, or until the deadline passes. At the deadline the
//! backends' upgraded connections (WebSockets) are closed: they count in flight like a
//! request, so a drain waits for them, but they may never end on their own. The drain
//! answers once they have ended (bounded by [`TUNNEL_CLOSE_LIMIT`]), not only once they were
//! told to.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::ActiveBackend;

/// How long a drain that closed upgraded connections waits for them to end, at most: each
/// ends at its next turn, on the thread its client connection runs on.
pub(crate) const TUNNEL_CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Longer waits are cut to this, so that any `timeout_ms` makes a valid deadline.
pub const LONGEST_DRAIN: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// No request is in flight to the drained backends any more.
    pub drained: bool,
    /// Requests still in flight when the drain returned (zero when `drained`), upgraded
    /// connections included.
    pub in_flight: usize,
    pub waited: Duration,
    /// Upgraded connections closed because the deadline passed.
    pub closed: usize,
}

/// Waits until none of `backends` has a request in flight, or `timeout` passes.
pub async fn drain(backends: &[Arc<ActiveBackend>], timeout: Duration) -> DrainOutcome {
    let started = Instant::now();
    let deadline = started + timeout.min(LONGEST_DRAIN);
    for backend in backends {
        let in_flight = backend.in_flight();
        loop {
            let idle = in_flight.idle().notified();
            tokio::pin!(idle);
            // Registered before reading the count, so a drop to zero in between wakes us.
            idle.as_mut().enable();
            if in_flight.count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
    }
    let in_flight = backends.iter().map(|b| b.in_flight().count()).sum();
    let mut closed = 0;
    if in_flight > 0 {
        for backend in backends {
            closed += backend.close_tunnels();
        }
        // Each tunnel closes on its own connection's thread: the drain answers once they
        // have, so that nothing more passes through one it reports closed.
        let closing = Instant::now() + TUNNEL_CLOSE_LIMIT;
        for backend in backends {
            if !backend.tunnels_ended(closing).await {
                tracing::warn!(
                    service = %backend.service(), release = %backend.backend().release,
                    "{} upgraded connection(s) still open {} after they were closed",
                    backend.tunnels(),
                    humantime::format_duration(TUNNEL_CLOSE_LIMIT)
                );
            }
        }
    }
    DrainOutcome {
        drained: in_flight == 0,
        in_flight,
        waited: started.elapsed(),
        closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, Slot};

    fn active(release: &str) -> Arc<ActiveBackend> {
        ActiveBackend::new(
            "web",
            Backend {
                slot: Slot::Blue,
                release: release.into(),
                addr: "127.0.0.1:9001".parse().unwrap(),
                more_addrs: Vec::new(),
            },
        )
    }

    #[tokio::test]
    async fn drain_of_idle_backend_returns_at_once() {
        let outcome = drain(&[active("r1")], Duration::ZERO).await;
        assert!(outcome.drained);
        assert_eq!(outcome.in_flight, 0);
    }

    #[tokio::test]
    async fn drain_returns_when_last_request_ends() {
        let old = active("r1");
        let first = old.claim();
        let second = old.claim();
        let backends = [Arc::clone(&old)];
        let waiting = drain(&backends, Duration::from_secs(30));
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(first);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(second);
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the drain must be woken by the last request ending");
        assert!(outcome.drained);
        assert_eq!(outcome.in_flight, 0);
    }

    #[tokio::test]
    async fn drain_gives_up_at_deadline_with_requests_in_flight() {
        let old = active("r1");
        let _held = old.claim();
        let outcome = drain(&[old], Duration::from_millis(250)).await;
        assert!(!outcome.drained);
        assert_eq!(outcome.in_flight, 1);
        assert!(outcome.waited >= Duration::from_millis(250), "{outcome:?}");
    }

    #[tokio::test]
    async fn drain_waits_for_every_backend_of_the_release() {
        let a = active("r1");
        let b = active("r1");
        let held_a = a.claim();
        let held_b = b.claim();
        let backends = [a, b];
        let waiting = drain(&backends, Duration::from_secs(30));
        tokio::pin!(waiting);
        drop(held_a);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(held_b);
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap();
        assert!(outcome.drained);
    }
}
