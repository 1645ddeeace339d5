//! What the edge counts, and its Prometheus text page (`GET /metrics` on the admin socket).
//!
//! The hot path only touches atomics: each [`ActiveBackend`](crate::backend::ActiveBackend)
//! holds the [`SlotMetrics`] of its service and slot, found once when a switch installs it,
//! so counting a request takes no lock and no map lookup. Requests in flight are not counted
//! twice: the page sums the in-flight counters the route table already keeps. The maps below
//! are locked only when a backend is installed, a drain ends, or the page is rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;

use crate::Slot;

/// The upper bounds of the latency histogram's buckets, in seconds (`le`).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, so an observation is placed with integer compares.
const BUCKET_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The status classes counted, in this order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a slot gave no answer, as `shipit_edge_slot_failures_total{reason}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotFailure {
    /// The connect was refused or failed (nothing listens at the slot's address).
    Connect = 0,
    /// The connect did not finish within the connect timeout.
    ConnectTimeout = 1,
    /// The connection closed or broke before an answer (as a published port answers while
    /// the app behind it is not listening), or the answer was not HTTP.
    Broken = 2,
    /// No answer's head within the response-header timeout.
    NoAnswer = 3,
}

/// The `reason` label of each [`SlotFailure`], in its order.
pub const SLOT_FAILURE_REASONS: [&str; 4] = ["connect", "connect_timeout", "broken", "no_answer"];

/// The counters of one slot of one service. They outlive switches: a slot's numbers keep
/// adding up across releases, as Prometheus counters should.
#[derive(Debug, Default)]
pub struct SlotMetrics {
    /// Responses by status class, [`STATUS_CLASSES`] order.
    responses: [AtomicU64; 5],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKET_NANOS.len() + 1],
    sum_nanos: AtomicU64,
    /// Requests the slot gave no answer to, by [`SlotFailure`].
    failures: [AtomicU64; 4],
    /// When (Unix milliseconds) the slot first failed since it last answered; 0 while it
    /// answers.
    failing_since_ms: AtomicU64,
}

impl SlotMetrics {
    /// Counts one response with this status.
    pub(crate) fn count_status(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        // An answer below 5xx shows the slot is up again. A load is all a healthy slot pays.
        if class < 4 && self.failing_since_ms.load(Ordering::Relaxed) != 0 {
            self.failing_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a request the slot gave no answer to, and notes when it started failing.
    pub(crate) fn count_failure(&self, failure: SlotFailure) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
        if self.failing_since_ms.load(Ordering::Relaxed) == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
                });
            let _ = self.failing_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Requests the slot gave no answer to, by reason ([`SLOT_FAILURE_REASONS`] order).
    pub fn failures(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.failures[i].load(Ordering::Relaxed))
    }

    /// When the slot started failing (Unix milliseconds), if it has not answered since.
    pub fn failing_since_ms(&self) -> Option<u64> {
        Some(self.failing_since_ms.load(Ordering::Relaxed)).filter(|&ms| ms != 0)
    }

    /// Records how long one request took, from its arrival to its last response byte.
    pub(crate) fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Responses counted so far, by class ([`STATUS_CLASSES`] order).
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    /// Requests whose duration was recorded.
    pub fn observed(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// Why the edge answered a request 503 itself because an operator closed its route, as
/// `shipit_edge_closed_route_answers_total{reason}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedAnswer {
    /// The route is under maintenance.
    Maintenance = 0,
    /// The route's pause passed its deadline, or the edge stopped while holding the request.
    Paused = 1,
}

/// The `reason` label of each [`ClosedAnswer`], in its order.
pub const CLOSED_ANSWER_REASONS: [&str; 2] = ["maintenance", "paused"];

/// How a drain ended, for `shipit_edge_drains_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every request finished before the deadline.
    Drained,
    /// The deadline passed with requests (or upgraded connections) still open.
    Deadline,
}

/// Everything the edge counts.
#[derive(Debug, Default)]
pub struct Metrics {
    slots: Mutex<BTreeMap<(String, Slot), Arc<SlotMetrics>>>,
    /// Per service: drains that ended drained, and at the deadline.
    drains: Mutex<BTreeMap<String, [u64; 2]>>,
    unrouted: AtomicU64,
    refused: AtomicU64,
    connections_refused: AtomicU64,
    h2_goaways: AtomicU64,
    connect_retries: AtomicU64,
    tunnels_closed: AtomicU64,
    /// Answers of closed routes, by [`ClosedAnswer`].
    closed: [AtomicU64; 2],
}

impl Metrics {
    /// The counters of `slot` of `service`, created on first use.
    pub(crate) fn slot(&self, service: &str, slot: Slot) -> Arc<SlotMetrics> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry((service.to_string(), slot)).or_default())
    }

    pub(crate) fn count_drain(&self, service: &str, end: DrainEnd) {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = drains.entry(service.to_string()).or_default();
        counts[end as usize] += 1;
    }

    /// A request that matched no service (answered 404 or 503 by the edge itself).
    pub(crate) fn count_unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// A request of a closed route, answered 503 by the edge (never the slot's).
    pub(crate) fn count_closed(&self, reason: ClosedAnswer) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused as the client's error before it was routed (400, 408, 431, 505).
    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection over the connection limits, answered 503 and closed.
    pub(crate) fn count_connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP/2 connection ended for resetting streams too fast.
    pub(crate) fn count_h2_reset_flood(&self) {
        self.h2_goaways.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed upstream connect that was tried again.
    pub(crate) fn count_connect_retry(&self) {
        self.connect_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Upgraded connections closed because their backend's drain deadline passed.
    pub(crate) fn count_tunnels_closed(&self, closed: usize) {
        self.tunnels_closed
            .fetch_add(closed as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4). `in_flight` holds, per service and
    /// slot, the requests in flight right now (the route table's counters).
    pub fn render(&self, in_flight: &BTreeMap<(String, Slot), usize>) -> String {
        let slots: Vec<((String, Slot), Arc<SlotMetrics>)> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, metrics)| (key.clone(), Arc::clone(metrics)))
            .collect();
        let drains = self
            .drains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = String::with_capacity(4096 + slots.len() * 2048);

        header(
            &mut out,
            "shipit_edge_requests_total",
            "counter",
            "Responses sent for requests routed to a service, by slot and status class.",
        );
        for ((service, slot), metrics) in &slots {
            for (class, count) in STATUS_CLASSES.iter().zip(metrics.responses()) {
                let _ = writeln!(
                    out,
                    "shipit_edge_requests_total{{service=\"{service}\",slot=\"{slot}\",class=\"{class}\"}} {count}"
                );
            }
        }

        header(
            &mut out,
            "shipit_edge_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its last response byte (to the 101 for upgrades).",
        );
        for ((service, slot), metrics) in &slots {
            let mut cumulative = 0u64;
            for (i, bucket) in metrics.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = DURATION_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "shipit_edge_request_duration_seconds_bucket{{service=\"{service}\",slot=\"{slot}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = metrics.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "shipit_edge_request_duration_seconds_sum{{service=\"{service}\",slot=\"{slot}\"}} {sum}\n\
                 shipit_edge_request_duration_seconds_count{{service=\"{service}\",slot=\"{slot}\"}} {cumulative}"
            );
        }

        header(
            &mut out,
            "shipit_edge_in_flight",
            "gauge",
            "Requests in flight, upgraded connections included, by service and slot.",
        );
        let mut gauges: BTreeMap<(&str, Slot), usize> = slots
            .iter()
            .map(|((service, slot), _)| ((service.as_str(), *slot), 0))
            .collect();
        for ((service, slot), count) in in_flight {
            *gauges.entry((service.as_str(), *slot)).or_default() += count;
        }
        for ((service, slot), count) in gauges {
            let _ = writeln!(
                out,
                "shipit_edge_in_flight{{service=\"{service}\",slot=\"{slot}\"}} {count}"
            );
        }

        header(
            &mut out,
            "shipit_edge_slot_failures_total",
            "counter",
            "Requests a slot gave no answer to (the edge answered 502 or 504), by reason: \
             connect (refused), connect_timeout, broken (closed before an answer), no_answer.",
        );
        for ((service, slot), metrics) in &slots {
            for (reason, count) in SLOT_FAILURE_REASONS.iter().zip(metrics.failures()) {
                let _ = writeln!(
                    out,
                    "shipit_edge_slot_failures_total{{service=\"{service}\",slot=\"{slot}\",reason=\"{reason}\"}} {count}"
                );
            }
        }

        header(
            &mut out,
            "shipit_edge_slot_failing_since_seconds",
            "gauge",
            "When (Unix time) a slot that has not answered since first failed; absent while it answers.",
        );
        for ((service, slot), metrics) in &slots {
            if let Some(ms) = metrics.failing_since_ms() {
                let _ = writeln!(
                    out,
                    "shipit_edge_slot_failing_since_seconds{{service=\"{service}\",slot=\"{slot}\"}} {}",
                    ms as f64 / 1e3
                );
            }
        }

        header(
            &mut out,
            "shipit_edge_drains_total",
            "counter",
            "Drain calls, by how they ended: drained (nothing left in flight), or deadline.",
        );
        for (service, [drained, deadline]) in &drains {
            let _ = writeln!(
                out,
                "shipit_edge_drains_total{{service=\"{service}\",outcome=\"drained\"}} {drained}\n\
                 shipit_edge_drains_total{{service=\"{service}\",outcome=\"deadline\"}} {deadline}"
            );
        }

        header(
            &mut out,
            "shipit_edge_closed_route_answers_total",
            "counter",
            "Requests the edge answered 503 itself because an operator closed their route, by \
             reason: maintenance, or paused (past the pause's deadline, or held by an edge that \
             stopped).",
        );
        for (reason, count) in CLOSED_ANSWER_REASONS.iter().zip(&self.closed) {
            let _ = writeln!(
                out,
                "shipit_edge_closed_route_answers_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }

        for (name, help, value) in [
            (
                "shipit_edge_unrouted_requests_total",
                "Requests that matched no service with a live slot (answered 404 or 503).",
                &self.unrouted,
            ),
            (
                "shipit_edge_refused_requests_total",
                "Requests refused as the client's error before routing (400, 408, 431, 505).",
                &self.refused,
            ),
            (
                "shipit_edge_refused_connections_total",
                "Client connections over the connection limits (answered 503 and closed).",
                &self.connections_refused,
            ),
            (
                "shipit_edge_h2_reset_floods_total",
                "HTTP/2 connections ended with GOAWAY for resetting streams too fast.",
                &self.h2_goaways,
            ),
            (
                "shipit_edge_upstream_connect_retries_total",
                "Upstream connects that failed before any byte was sent and were tried again.",
                &self.connect_retries,
            ),
            (
                "shipit_edge_upgraded_closed_total",
                "Upgraded connections (WebSocket) closed at their backend's drain deadline.",
                &self.tunnels_closed,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Reads one sample's value from a Prometheus text page: the line whose name is `name` and
/// whose labels are exactly `labels` (in any order). `None` when there is no such line.
///
/// The pipeline's canary bake uses it to read the candidate's counters.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let mut found: Vec<(&str, &str)> = rest
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k, v.strip_prefix('"')?.strip_suffix('"')?))
                })
                .collect::<Option<_>>()?;
            let mut wanted = labels.to_vec();
            found.sort_unstable();
            wanted.sort_unstable();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let metrics = SlotMetrics::default();
        metrics.observe(Duration::from_micros(500)); // le 0.0005 exactly
        metrics.observe(Duration::from_micros(501)); // le 0.001
        metrics.observe(Duration::from_secs(11)); // +Inf
        let counts: Vec<u64> = metrics
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[BUCKET_NANOS.len()], 1);
        assert_eq!(metrics.observed(), 3);
    }

    #[test]
    fn statuses_are_counted_by_class() {
        let metrics = SlotMetrics::default();
        for status in [101, 200, 204, 302, 404, 413, 502, 504, 503] {
            metrics.count_status(StatusCode::from_u16(status).unwrap());
        }
        assert_eq!(metrics.responses(), [1, 2, 1, 2, 3]);
    }

    #[test]
    fn slot_failures_are_counted_by_reason_and_failing_since_clears_on_an_answer() {
        let metrics = Metrics::default();
        let web = metrics.slot("web", Slot::Green);
        web.count_status(StatusCode::OK);
        assert_eq!(web.failing_since_ms(), None);
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        web.count_failure(SlotFailure::Connect);
        web.count_failure(SlotFailure::Connect);
        web.count_failure(SlotFailure::Broken);
        let since = web.failing_since_ms().expect("failing");
        assert!(since >= before, "{since} < {before}");
        web.count_failure(SlotFailure::NoAnswer);
        assert_eq!(
            web.failing_since_ms(),
            Some(since),
            "the first failure is kept"
        );
        assert_eq!(web.failures(), [2, 0, 1, 1]);

        let page = metrics.render(&BTreeMap::new());
        let green = [("service", "web"), ("slot", "green")];
        let failures = |reason| {
            sample(
                &page,
                "shipit_edge_slot_failures_total",
                &[green[0], green[1], ("reason", reason)],
            )
        };
        assert_eq!(failures("connect"), Some(2.0));
        assert_eq!(failures("connect_timeout"), Some(0.0));
        assert_eq!(failures("broken"), Some(1.0));
        let shown = sample(&page, "shipit_edge_slot_failing_since_seconds", &green).unwrap();
        assert!((shown - since as f64 / 1e3).abs() < 1e-3, "{shown}");

        // A slot's own 5xx is not an answer that shows it is up; a 2xx is.
        web.count_status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(web.failing_since_ms(), Some(since));
        web.count_status(StatusCode::NOT_FOUND);
        assert_eq!(web.failing_since_ms(), None);
        let page = metrics.render(&BTreeMap::new());
        assert_eq!(
            sample(&page, "shipit_edge_slot_failing_since_seconds", &green),
            None
        );
    }

    #[test]
    fn page_renders_cumulative_buckets_and_reads_back() {
        let metrics = Metrics::default();
        let web = metrics.slot("web", Slot::Blue);
        web.count_status(StatusCode::OK);
        web.count_status(StatusCode::BAD_GATEWAY);
        web.observe(Duration::from_millis(3));
        web.observe(Duration::from_millis(30));
        metrics.count_drain("web", DrainEnd::Deadline);
        let in_flight = BTreeMap::from([(("web".to_string(), Slot::Blue), 2)]);
        let page = metrics.render(&in_flight);
        let get = |name: &str, labels: &[(&str, &str)]| sample(&page, name, labels);
        let blue = [("service", "web"), ("slot", "blue")];
        assert_eq!(
            get(
                "shipit_edge_requests_total",
                &[("class", "5xx"), blue[0], blue[1]]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "shipit_edge_request_duration_seconds_bucket",
                &[blue[0], blue[1], ("le", "0.005")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "shipit_edge_request_duration_seconds_bucket",
                &[blue[0], blue[1], ("le", "+Inf")]
            ),
            Some(2.0)
        );
        assert_eq!(
            get("shipit_edge_request_duration_seconds_count", &blue),
            Some(2.0)
        );
        let sum = get("shipit_edge_request_duration_seconds_sum", &blue).unwrap();
        assert!((sum - 0.033).abs() < 1e-9, "{sum}");
        assert_eq!(get("shipit_edge_in_flight", &blue), Some(2.0));
        assert_eq!(
            get(
                "shipit_edge_drains_total",
                &[("service", "web"), ("outcome", "deadline")]
            ),
            Some(1.0)
        );
        assert_eq!(get("shipit_edge_unrouted_requests_total", &[]), Some(0.0));
        assert_eq!(get("shipit_edge_in_flight", &[("service", "api")]), None);
        for line in page.lines().filter(|l| l.starts_with("# TYPE")) {
            assert_eq!(line.split(' ').count(), 4, "{line}");
        }
    }

    use crate::test_backend::{Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, get};

    #[tokio::test]
    async fn metrics_count_exactly_the_requests_sent() {
        let edge = TestEdge::start().await;
        let mut blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut connection = Connection::open(edge.addr()).await;
        for path in std::iter::repeat_n("/", 7)
            .chain(std::iter::repeat_n("/status/503", 3))
            .chain(std::iter::repeat_n("/status/404", 2))
        {
            connection.get(path).await.unwrap();
        }
        let held = tokio::spawn(async move { connection.get("/hold").await.unwrap() });
        blue.arrival().await;

        let page = edge.client().metrics().await.unwrap();
        let blue_labels = [("service", "web"), ("slot", "blue")];
        let requests = |class: &'static str| {
            let page = page.clone();
            move || {
                sample(
                    &page,
                    "shipit_edge_requests_total",
                    &[("service", "web"), ("slot", "blue"), ("class", class)],
                )
            }
        };
        assert_eq!(requests("2xx")(), Some(7.0));
        assert_eq!(requests("4xx")(), Some(2.0));
        assert_eq!(requests("5xx")(), Some(3.0));
        assert_eq!(requests("3xx")(), Some(0.0));
        assert_eq!(
            sample(
                &page,
                "shipit_edge_request_duration_seconds_count",
                &blue_labels
            ),
            Some(12.0)
        );
        assert_eq!(
            sample(
                &page,
                "shipit_edge_request_duration_seconds_bucket",
                &[blue_labels[0], blue_labels[1], ("le", "+Inf")]
            ),
            Some(12.0)
        );
        assert_eq!(
            sample(&page, "shipit_edge_in_flight", &blue_labels),
            Some(1.0)
        );

        edge.switch(&green.backend(Slot::Green, "r2")).await;
        let drain = {
            let client = edge.client();
            tokio::spawn(async move { client.drain("web", "r1", SIGNAL_TIMEOUT).await.unwrap() })
        };
        blue.release_one();
        assert_eq!(held.await.unwrap().backend.as_deref(), Some("blue"));
        assert!(drain.await.unwrap().drained);
        get(edge.addr(), "/").await;

        let page = edge.client().metrics().await.unwrap();
        let green_labels = [("service", "web"), ("slot", "green")];
        assert_eq!(
            sample(
                &page,
                "shipit_edge_requests_total",
                &[blue_labels[0], blue_labels[1], ("class", "2xx")]
            ),
            Some(8.0)
        );
        assert_eq!(
            sample(
                &page,
                "shipit_edge_requests_total",
                &[green_labels[0], green_labels[1], ("class", "2xx")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&page, "shipit_edge_in_flight", &blue_labels),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &page,
                "shipit_edge_drains_total",
                &[("service", "web"), ("outcome", "drained")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &page,
                "shipit_edge_drains_total",
                &[("service", "web"), ("outcome", "deadline")]
            ),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn requests_for_no_service_are_counted_apart() {
        let edge = TestEdge::start().await;
        get(edge.addr(), "/").await;
        get(edge.addr(), "/").await;
        assert_eq!(
            edge.metric("shipit_edge_unrouted_requests_total", &[])
                .await,
            2.0
        );
        assert!(
            !edge
                .client()
                .metrics()
                .await
                .unwrap()
                .contains("shipit_edge_requests_total{")
        );
    }
}
