//! What the local bake judges: while a weighted step sends part of the traffic to the
//! candidate, the edge's `/metrics` are sampled every [`BAKE_SAMPLE_INTERVAL`] (the loop is
//! `LocalPlatform::bake`), and the step fails as soon as the candidate's 5xx [`Answers`]
//! exceed `max_error_rate` of what it answered (judged over at least [`BAKE_MIN_REQUESTS`]).

use std::time::Duration;

use super::{LocalPlatform, edge_error};
use crate::Slot;
use crate::platform::PlatformError;

/// How often a bake reads the edge's counters: often enough to stop a bad candidate within a
/// fraction of a second, rarely enough to cost the edge nothing.
pub const BAKE_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// How often a bake in progress reports its counts, when no new 5xx makes it say so at once.
pub const BAKE_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// The smallest number of requests a bake judges a 5xx rate over. Until the candidate has
/// answered this many, its errors are divided by this number instead, so one early 5xx on a
/// handful of requests does not fail a bake whose bound allows 1 in 100, while a candidate
/// that fails everything is still stopped after a few requests.
pub const BAKE_MIN_REQUESTS: u64 = 100;

impl LocalPlatform {
    /// What the edge has counted for `slot` of this service so far.
    pub(super) async fn slot_answers(&self, slot: Slot) -> Result<Answers, PlatformError> {
        let page = self
            .admin()
            .metrics()
            .await
            .map_err(|e| edge_error("reading the edge metrics", e))?;
        Ok(Answers::read(&page, &self.service.name, slot))
    }
}

pub(super) fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Responses the edge counted for one slot: all of them, and those with a 5xx status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Answers {
    pub(super) total: u64,
    pub(super) errors: u64,
}

impl Answers {
    /// Reads the slot's `shipit_edge_requests_total` series from a metrics page; a series not
    /// there yet counts zero.
    fn read(page: &str, service: &str, slot: Slot) -> Answers {
        let slot = slot.to_string();
        let count = |class: &str| {
            shipit_edge::metrics::sample(
                page,
                "shipit_edge_requests_total",
                &[("service", service), ("slot", &slot), ("class", class)],
            )
            .map_or(0, |v| v as u64)
        };
        Answers {
            total: shipit_edge::metrics::STATUS_CLASSES
                .iter()
                .map(|c| count(c))
                .sum(),
            errors: count("5xx"),
        }
    }

    /// What was counted after `baseline`.
    pub(super) fn since(&self, baseline: &Answers) -> Answers {
        Answers {
            total: self.total.saturating_sub(baseline.total),
            errors: self.errors.saturating_sub(baseline.errors),
        }
    }

    pub(super) fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }

    /// Whether the 5xx rate is over `bound`, judged over at least [`BAKE_MIN_REQUESTS`].
    pub(super) fn breaks(&self, bound: f64) -> bool {
        self.errors as f64 > bound * self.total.max(BAKE_MIN_REQUESTS) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_early_error_does_not_fail_a_bake_but_a_failing_candidate_does() {
        let one_early = Answers {
            total: 1,
            errors: 1,
        };
        assert!(!one_early.breaks(0.01));
        assert!(
            Answers {
                total: 2,
                errors: 2
            }
            .breaks(0.01)
        );
        // Past the minimum sample, the plain rate decides.
        assert!(
            !Answers {
                total: 1000,
                errors: 10
            }
            .breaks(0.01)
        );
        assert!(
            Answers {
                total: 1000,
                errors: 11
            }
            .breaks(0.01)
        );
        // A zero bound fails on the first 5xx; a bound of 1 never fails.
        assert!(
            Answers {
                total: 500,
                errors: 1
            }
            .breaks(0.0)
        );
        assert!(
            !Answers {
                total: 5,
                errors: 5
            }
            .breaks(1.0)
        );
        assert!(!Answers::default().breaks(0.0));
    }

    #[test]
    fn answers_are_read_per_slot_and_counted_from_a_baseline() {
        let page = "\
# TYPE shipit_edge_requests_total counter
shipit_edge_requests_total{service=\"web\",slot=\"green\",class=\"2xx\"} 40
shipit_edge_requests_total{service=\"web\",slot=\"green\",class=\"5xx\"} 3
shipit_edge_requests_total{service=\"web\",slot=\"blue\",class=\"5xx\"} 7
shipit_edge_requests_total{service=\"api\",slot=\"green\",class=\"5xx\"} 9
";
        let green = Answers::read(page, "web", Slot::Green);
        assert_eq!(
            green,
            Answers {
                total: 43,
                errors: 3
            }
        );
        assert_eq!(Answers::read(page, "web", Slot::Blue).total, 7);
        assert_eq!(Answers::read("", "web", Slot::Green), Answers::default());
        let later = Answers {
            total: 50,
            errors: 4,
        };
        assert_eq!(
            later.since(&green),
            Answers {
                total: 7,
                errors: 1
            }
        );
        assert!((later.since(&green).rate() - 1.0 / 7.0).abs() < 1e-9);
    }
}
