//! What one kind of request has counted: answers, failures with their causes, latencies, and
//! which releases answered.
//!
//! The counters are shared atomics, so the progress line can read them while the load runs.
//! Latencies and release ids are kept per worker in a [`Local`] (no lock on the hot path)
//! and merged into the tally when the worker ends. Failures are rare by design, so they go
//! straight into a locked log: a count per cause, and the first few in full.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many failures of a kind are kept in full (the rest are only counted by cause).
pub const FIRST_FAILURES_KEPT: usize = 20;
/// How many distinct causes a kind counts separately; later ones go under "other".
const MAX_CAUSES: usize = 50;

/// The counts of one kind of request.
#[derive(Default)]
pub struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
    failures: Mutex<FailureLog>,
    merged: Mutex<Local>,
}

/// One failed request, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Wall clock, so the soak script can tell which operation it fell in.
    pub at_unix_ms: u64,
    /// Since the load started.
    pub after_ms: u64,
    pub cause: String,
    pub detail: String,
}

#[derive(Default)]
struct FailureLog {
    by_cause: BTreeMap<String, u64>,
    first: Vec<Failure>,
}

/// What a worker keeps to itself until it ends.
#[derive(Default)]
pub struct Local {
    pub latency: Histogram,
    /// Answers per release id (the `release=` an answer's body names).
    pub releases: HashMap<String, u64>,
}

impl Local {
    pub fn merge(&mut self, other: Local) {
        self.latency.merge(&other.latency);
        for (release, n) in other.releases {
            *self.releases.entry(release).or_default() += n;
        }
    }
}

impl Tally {
    /// A request answered as it should be, after `latency`, by `release` when it said.
    pub fn ok(&self, local: &mut Local, latency: Duration, release: Option<&str>) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        local.latency.record(latency);
        if let Some(release) = release {
            match local.releases.get_mut(release) {
                Some(n) => *n += 1,
                None => {
                    local.releases.insert(release.to_string(), 1);
                }
            }
        }
    }

    /// A request that failed: `cause` is the short class it is counted under, `detail` the
    /// whole story (kept for the first few only).
    pub fn fail(&self, epoch: Instant, cause: &str, detail: impl Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut log = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let known = log.by_cause.contains_key(cause);
        let key = if known || log.by_cause.len() < MAX_CAUSES {
            cause.to_string()
        } else {
            "other".to_string()
        };
        *log.by_cause.entry(key).or_default() += 1;
        if log.first.len() < FIRST_FAILURES_KEPT {
            let at_unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            log.first.push(Failure {
                at_unix_ms,
                after_ms: epoch.elapsed().as_millis() as u64,
                cause: cause.to_string(),
                detail: detail.to_string(),
            });
        }
    }

    /// A connection the edge closed between two requests (or that was not ready for the
    /// next one): the request had not been sent, so it is sent again on a new connection and
    /// nothing failed. Counted so that the report shows how often it happened.
    pub fn reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn absorb(&self, local: Local) {
        self.merged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(local);
    }

    pub fn ok_count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn failed_count(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn reconnect_count(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The causes with their counts, and the first failures in full.
    pub fn failures(&self) -> (BTreeMap<String, u64>, Vec<Failure>) {
        let log = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        (log.by_cause.clone(), log.first.clone())
    }

    /// What the workers that ended handed in.
    pub fn take_merged(&self) -> Local {
        std::mem::take(&mut *self.merged.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Sub-buckets per power of two: a recorded value is off by at most 1/32 (3 %).
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// A log-linear latency histogram in microseconds: exact below 64 µs, then 32 buckets per
/// power of two. Small, mergeable, and exact enough for a p99.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            // Up to 2^40 µs (12 days): every Duration a request can take here.
            counts: vec![0; Self::index(1 << 40) + 1],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us < 2 * SUB_BUCKETS {
            return us as usize;
        }
        let msb = 63 - us.leading_zeros();
        let shift = msb - SUB_BUCKET_BITS;
        let top = us >> shift;
        (2 * SUB_BUCKETS + (u64::from(shift) - 1) * SUB_BUCKETS + (top - SUB_BUCKETS)) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn upper(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB_BUCKETS {
            return index;
        }
        let shift = (index - 2 * SUB_BUCKETS) / SUB_BUCKETS + 1;
        let top = (index - 2 * SUB_BUCKETS) % SUB_BUCKETS + SUB_BUCKETS;
        ((top + 1) << shift) - 1
    }

    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).min(1 << 40);
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The value at quantile `q` (nearest rank), in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(index).min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.total > 0).then(|| self.max_us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_hold_their_values() {
        let mut previous = None;
        for us in (0..5000).chain([1 << 20, (1 << 20) + 12345, 1 << 40]) {
            let index = Histogram::index(us);
            assert!(Histogram::upper(index) >= us, "{us} above its bucket");
            let width = Histogram::upper(index) - us;
            assert!(width <= us / 32 + 1, "{us}: bucket too wide ({width})");
            if let Some(p) = previous {
                assert!(index >= p);
            }
            previous = Some(index);
        }
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0..=51.6).contains(&p50), "{p50}");
        assert!((99.0..=100.0).contains(&p99), "{p99}");
        assert_eq!(h.max_ms(), Some(100.0));
    }
}
