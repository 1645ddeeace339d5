//! The time this process has spent waiting on a platform's conditions: the pauses between
//! two polls of an ECS rollout, a target group's health, a drain or a CloudFront deployment.
//! A release records it per phase (`waited_ms`), so that shipit's own time in a phase is
//! its duration less what it waited on AWS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static WAITED_NANOS: AtomicU64 = AtomicU64::new(0);

/// Adds `pause` to the time waited.
pub fn add(pause: Duration) {
    let nanos = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
    WAITED_NANOS.fetch_add(nanos, Ordering::Relaxed);
}

/// All the time waited so far by this process.
pub fn total() -> Duration {
    Duration::from_nanos(WAITED_NANOS.load(Ordering::Relaxed))
}
