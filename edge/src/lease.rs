//! Candidate leases: how long the edge keeps a candidate that nobody renews.
//!
//! A weighted split sends a share of plain traffic to a candidate that a running release
//! is baking. If that release dies (`kill -9`, a lost machine), nobody is left to judge the
//! candidate or to pull it, and the split would last until the next release. So a split
//! always carries a lease: the release renews it while it bakes (`PUT .../lease`), and when
//! the lease lapses the edge withdraws the candidate by itself (split and preview) and sends
//! it to drain; all traffic is then on the live slot. The lease is saved in `routes.json`
//! with the candidate, as the wall-clock time it ends, so an edge restart neither drops it
//! nor makes it last for ever; a candidate whose lease ended while the edge was down is not
//! restored.
//!
//! A preview registered without a lease (`PUT .../preview`) has none: it takes no plain
//! traffic (only the preview host names and the `X-Shipit-Slot` pin reach it), and a
//! release staged for a person to check (`release --no-promote`) must outlive the command
//! that staged it, until `promote` or the next release takes it away.
//!
//! [`expire_lapsed`] is the edge's task that withdraws candidates whose lease lapsed. It
//! sleeps until the earliest end of a lease, and wakes early when the routes change.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The longest lease a candidate may be given: past it, a lease is a mistake, not a lease.
pub const MAX_CANDIDATE_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the expiry task sleeps at most while a lease runs, so that a jump of the wall
/// clock delays a withdrawal by no more than this.
pub(crate) const LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A candidate's lease: how long each renewal lasts, and when the current one ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// How long the lease runs from its last renewal, in milliseconds.
    pub lease_ms: u64,
    /// When it lapses unless renewed first.
    pub expires_at: Timestamp,
}

impl Lease {
    /// A lease of `duration` that starts at `now`.
    pub fn starting(now: Timestamp, duration: Duration) -> Lease {
        let lease_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let length = SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
        Lease {
            lease_ms,
            expires_at: now.saturating_add(length).unwrap_or(Timestamp::MAX),
        }
    }

    /// How long each renewal lasts.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// Whether the lease has ended at `now`.
    pub fn lapsed(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// Checks a lease asked for over the admin API: more than zero, at most
/// [`MAX_CANDIDATE_LEASE`].
pub fn checked_lease_ms(lease_ms: u64) -> Result<Duration, String> {
    let lease = Duration::from_millis(lease_ms);
    if lease.is_zero() || lease > MAX_CANDIDATE_LEASE {
        return Err(format!(
            "`lease_ms` must be 1 to {} (24 hours), not {lease_ms}",
            MAX_CANDIDATE_LEASE.as_millis()
        ));
    }
    Ok(lease)
}

/// How long from `now` until `at`; zero when it has passed.
pub(crate) fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lapses_at_its_end_and_not_before() {
        let now: Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        let lease = Lease::starting(now, Duration::from_secs(10));
        assert_eq!(lease.lease_ms, 10_000);
        assert_eq!(lease.duration(), Duration::from_secs(10));
        assert!(!lease.lapsed(now));
        assert!(!lease.lapsed(now + SignedDuration::from_millis(9_999)));
        assert!(lease.lapsed(now + SignedDuration::from_secs(10)));
        assert_eq!(until(lease.expires_at, now), Duration::from_secs(10));
        assert_eq!(
            until(now, lease.expires_at),
            Duration::ZERO,
            "a passed end is now"
        );
    }

    #[test]
    fn lease_length_is_bounded() {
        assert!(checked_lease_ms(0).is_err());
        assert!(checked_lease_ms(u64::MAX).is_err());
        let too_long = u64::try_from(MAX_CANDIDATE_LEASE.as_millis()).unwrap() + 1;
        let error = checked_lease_ms(too_long).unwrap_err();
        assert!(error.contains("lease_ms"), "{error}");
        assert_eq!(checked_lease_ms(10_000), Ok(Duration::from_secs(10)));
    }
}
