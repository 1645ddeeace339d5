//! A real edge in this process, driven through its public API, on one of its two paths.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use shipit_edge::server::{EdgeHandle, start_with};
use shipit_edge::{AdminClient, Backend, EdgeOptions, Slot, Tuning};

/// The one service every case routes.
pub const SERVICE: &str = "web";
/// How long a case may take before it counts as failed.
const CASE_DEADLINE: Duration = Duration::from_secs(20);
/// How many runs go at once.
const CONCURRENT_RUNS: usize = 12;
/// How long [`Edge::settle`] waits for requests in flight to end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// The path a plaintext HTTP/1.1 request takes through the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The hand-written relay (`relay.rs`), which may hand a connection to hyper.
    Relay,
    /// hyper from the first byte (`Tuning::relay = false`).
    General,
}

impl Path {
    pub const BOTH: [Path; 2] = [Path::Relay, Path::General];
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Relay => "relay",
            Path::General => "general",
        })
    }
}

/// An edge in its own temporary directory.
pub struct Edge {
    handle: EdgeHandle,
    _dir: tempfile::TempDir,
    /// The live release, changed by [`Edge::settle`].
    release: std::sync::Mutex<(String, SocketAddr)>,
    settled: AtomicUsize,
}

impl Edge {
    pub async fn start(path: Path) -> Edge {
        Edge::start_with(path, Tuning::default()).await
    }

    pub async fn start_with(path: Path, tuning: Tuning) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            relay: path == Path::Relay,
            ..tuning
        };
        let handle = start_with(
            EdgeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                dir: dir.path().to_path_buf(),
            },
            tuning,
        )
        .await
        .unwrap();
        Edge {
            handle,
            _dir: dir,
            release: std::sync::Mutex::new((String::new(), "127.0.0.1:9".parse().unwrap())),
            settled: AtomicUsize::new(0),
        }
    }

    /// Starts an edge whose service `web` (any host, any path) is live on `upstream`.
    pub async fn routed(path: Path, upstream: SocketAddr) -> Edge {
        let edge = Edge::start(path).await;
        edge.route(upstream, "rel-1").await;
        edge
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn admin(&self) -> AdminClient {
        self.handle.client()
    }

    /// Makes `release` at `addr` the live blue slot of `web`.
    pub async fn route(&self, addr: SocketAddr, release: &str) {
        let backend = Backend {
            slot: Slot::Blue,
            release: release.to_string(),
            addr,
        };
        self.admin().switch(SERVICE, &backend).await.unwrap();
        *self.release.lock().unwrap() = (release.to_string(), addr);
    }

    /// Waits until the requests in flight on the live backend have ended, so that what the
    /// edge counts for them is final: switches to a new release on the same slot and
    /// address, then drains the old one (a signal from the edge, not a poll). Whether they
    /// ended within [`SETTLE_TIMEOUT`].
    pub async fn settle(&self) -> bool {
        let (old, addr) = self.release.lock().unwrap().clone();
        let n = self.settled.fetch_add(1, Ordering::SeqCst);
        self.route(addr, &format!("settled-{n}")).await;
        self.admin()
            .drain(SERVICE, &old, SETTLE_TIMEOUT)
            .await
            .unwrap()
            .drained
    }

    /// One sample of the metrics page (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let page = self.admin().metrics().await.unwrap();
        shipit_edge::metrics::sample(&page, name, labels).unwrap_or(0.0)
    }

    /// `shipit_edge_refused_requests_total`.
    pub async fn refused_requests(&self) -> f64 {
        self.metric("shipit_edge_refused_requests_total", &[]).await
    }

    /// The classes of `shipit_edge_requests_total{service="web",slot}` that are not 0,
    /// with their counts.
    pub async fn slot_counts(&self, slot: Slot) -> Vec<(&'static str, f64)> {
        let page = self.admin().metrics().await.unwrap();
        shipit_edge::metrics::STATUS_CLASSES
            .iter()
            .filter_map(|class| {
                let count = shipit_edge::metrics::sample(
                    &page,
                    "shipit_edge_requests_total",
                    &[
                        ("service", SERVICE),
                        ("slot", slot.as_str()),
                        ("class", class),
                    ],
                )
                .unwrap_or(0.0);
                (count != 0.0).then_some((*class, count))
            })
            .collect()
    }

    /// `shipit_edge_requests_total{service="web",slot,class}` (0 when absent).
    pub async fn requests_total(&self, slot: Slot, class: &str) -> f64 {
        let page = self.admin().metrics().await.unwrap();
        shipit_edge::metrics::sample(
            &page,
            "shipit_edge_requests_total",
            &[
                ("service", SERVICE),
                ("slot", slot.as_str()),
                ("class", class),
            ],
        )
        .unwrap_or(0.0)
    }
}

/// Runs `run` for every item through both paths, concurrently, and fails with the name,
/// path and reason of every run that failed (not only the first).
pub async fn each_on_both_paths<T, F>(what: &str, items: Vec<T>, name: fn(&T) -> String, run: F)
where
    F: AsyncFn(&T, Path) -> Result<(), String>,
{
    let runs: Vec<(&T, Path)> = items
        .iter()
        .flat_map(|item| Path::BOTH.map(|path| (item, path)))
        .collect();
    let total = runs.len();
    let mut failures: Vec<String> = futures_util::stream::iter(runs)
        .map(|(item, path)| {
            let run = &run;
            async move {
                let outcome = tokio::time::timeout(CASE_DEADLINE, run(item, path))
                    .await
                    .unwrap_or_else(|_| Err(format!("did not finish within {CASE_DEADLINE:?}")));
                outcome
                    .err()
                    .map(|why| format!("[{path}] {}: {why}", name(item)))
            }
        })
        .buffer_unordered(CONCURRENT_RUNS)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    failures.sort();
    assert!(
        failures.is_empty(),
        "{what}: {} of {total} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A failure message unless `ok`.
pub fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// Runs `run` once through each path; fails naming every path on which it failed.
pub async fn on_both_paths<F>(name: &'static str, run: F)
where
    F: AsyncFn(Path) -> Result<(), String>,
{
    each_on_both_paths(
        name,
        vec![name],
        |n| n.to_string(),
        async |_, path| run(path).await,
    )
    .await;
}
