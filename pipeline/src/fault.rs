//! Fault injection: named points where a release can be made to die, for the crash tests.
//!
//! Invariant 6 says a release that crashes at any point is converged by the next one. The
//! integration tests prove it by making the `shipit` process kill itself (SIGKILL, so no
//! cleanup runs) at each [`FaultPoint`], under load, and then checking what the next
//! release finds and leaves. A test names the point in [`FAULT_ENV`].
//!
//! The points only exist in a build with the cargo feature `fault-injection` (off by
//! default; the integration tests' build turns it on through a dev-dependency). In any
//! other build, [`point`] is an empty function and the environment is never read, so no
//! variable can make a release binary kill itself.

use std::fmt;

/// The environment variable naming the point at which the process kills itself, in a build
/// with the `fault-injection` feature: one of [`FaultPoint::name`].
pub const FAULT_ENV: &str = "SHIPIT_FAULT";

/// A place in a release where a crash leaves something to converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The candidate runs in the idle slot, routed nowhere.
    AfterLaunch,
    /// The candidate is being verified (the record says Verify is under way).
    MidVerify,
    /// A weighted step is in the edge (a share of new clients on the candidate), baking.
    MidBake,
    /// The switch is done, the record does not say so yet.
    AfterSwitch,
    /// The new slot is live and recorded; the old slot drains.
    MidDrain,
    /// The old slot is drained and not yet stopped.
    MidRetire,
}

impl FaultPoint {
    /// Every point, in the order a release passes them.
    pub const ALL: [FaultPoint; 6] = [
        FaultPoint::AfterLaunch,
        FaultPoint::MidVerify,
        FaultPoint::MidBake,
        FaultPoint::AfterSwitch,
        FaultPoint::MidDrain,
        FaultPoint::MidRetire,
    ];

    /// The point's name, as [`FAULT_ENV`] gives it.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::AfterLaunch => "after-launch",
            FaultPoint::MidVerify => "mid-verify",
            FaultPoint::MidBake => "mid-bake",
            FaultPoint::AfterSwitch => "after-switch",
            FaultPoint::MidDrain => "mid-drain",
            FaultPoint::MidRetire => "mid-retire",
        }
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kills this process with SIGKILL when [`FAULT_ENV`] names `point`. Compiled in only with
/// the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub fn point(point: FaultPoint) {
    if std::env::var(FAULT_ENV).is_ok_and(|named| named == point.name()) {
        tracing::warn!("{FAULT_ENV}={point}: killing this process");
        // SIGKILL: nothing runs after it, as in a real crash. Should the signal somehow
        // not be delivered, the process still must not go on.
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// Without the `fault-injection` feature there are no fault points.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_point: FaultPoint) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names_are_distinct_kebab_case() {
        let names: Vec<&str> = FaultPoint::ALL.iter().map(|p| p.name()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')),
            "{names:?}"
        );
    }
}
