//! The health probe and the version check that a candidate must pass before any traffic.
//!
//! A probe is one HTTP GET with its own short deadline. [`wait_healthy`] probes at the
//! configured interval until `healthy_threshold` consecutive probes answer 2xx, or the
//! deadline passes; its timeout error carries the last response (status and body) or the last
//! connection error, so the user sees why. Exits of the candidate process are watched by the
//! platform alongside this wait, not here.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::config::HealthCheck;

/// The longest a single probe may take; a slower answer counts as a failed probe.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A probe is not started with less time than this left: it could only time out, and its
/// timeout would hide the last real answer from the error.
const MIN_PROBE_BUDGET: Duration = Duration::from_millis(50);
/// How much of a response body is kept for error messages.
const BODY_EXCERPT: usize = 512;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Probe {
    Answered { status: u16, body: String },
    Failed { error: String },
}

impl Probe {
    pub fn is_success(&self) -> bool {
        matches!(self, Probe::Answered { status, .. } if (200..300).contains(status))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Answered { status, body } if body.trim().is_empty() => {
                write!(f, "HTTP {status} (empty body)")
            }
            Probe::Answered { status, body } => write!(f, "HTTP {status}: {}", body.trim()),
            Probe::Failed { error } => write!(f, "no answer: {error}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{url} did not become healthy within {}: last probe {last}", humantime::format_duration(*waited))]
    Timeout {
        url: String,
        waited: Duration,
        last: Probe,
    },
    #[error("{url} answered {probe}, which does not report release {expected}")]
    WrongVersion {
        url: String,
        expected: String,
        probe: Probe,
    },
}

/// An HTTP prober for one candidate.
#[derive(Clone)]
pub struct Prober {
    client: Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
}

impl Prober {
    pub fn new(addr: SocketAddr) -> Prober {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(DEFAULT_PROBE_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Prober { client, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// One GET of `path`, bounded by `timeout`.
    pub async fn probe(&self, path: &str, timeout: Duration) -> Probe {
        let url = self.url(path);
        let request = async {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
            let response = self.client.get(uri).await.map_err(|e| describe(&e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            let mut text = String::from_utf8_lossy(&body).into_owned();
            if text.len() > BODY_EXCERPT {
                let cut = text.floor_char_boundary(BODY_EXCERPT);
                text.truncate(cut);
                text.push('…');
            }
            Ok::<_, String>(Probe::Answered { status, body: text })
        };
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(probe)) => probe,
            Ok(Err(error)) => Probe::Failed { error },
            Err(_) => Probe::Failed {
                error: format!("no answer within {}", humantime::format_duration(timeout)),
            },
        }
    }

    /// Probes at `check.interval` until `check.healthy_threshold` consecutive successes, or
    /// fails when `check.timeout` has passed. `on_probe` sees each probe and the time left.
    pub async fn wait_healthy(
        &self,
        check: &HealthCheck,
        mut on_probe: impl FnMut(&Probe, Duration),
    ) -> Result<(), HealthError> {
        let start = Instant::now();
        let deadline = start + check.timeout;
        let mut ticker = tokio::time::interval(check.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streak = 0;
        let mut last = Probe::Failed {
            error: "not probed yet".into(),
        };
        loop {
            ticker.tick().await;
            let now = Instant::now();
            if now + MIN_PROBE_BUDGET >= deadline {
                let waited = now - start;
                return Err(HealthError::Timeout {
                    url: self.url(&check.path),
                    waited: Duration::from_millis(waited.as_millis() as u64),
                    last,
                });
            }
            let budget = (deadline - now).min(DEFAULT_PROBE_TIMEOUT);
            let probe = self.probe(&check.path, budget).await;
            on_probe(&probe, deadline.saturating_duration_since(Instant::now()));
            // A probe cut short by our own deadline says less than an earlier real answer.
            let cut_short =
                budget < DEFAULT_PROBE_TIMEOUT && !matches!(probe, Probe::Answered { .. });
            if probe.is_success() {
                streak += 1;
                if streak >= check.healthy_threshold {
                    return Ok(());
                }
            } else {
                streak = 0;
            }
            if !(cut_short && matches!(last, Probe::Answered { .. })) {
                last = probe;
            }
        }
    }

    /// Checks that `path` answers 2xx with a body that contains `release`.
    pub async fn check_version(&self, path: &str, release: &str) -> Result<(), HealthError> {
        let probe = self.probe(path, DEFAULT_PROBE_TIMEOUT).await;
        match &probe {
            Probe::Answered { body, .. } if probe.is_success() && body.contains(release) => Ok(()),
            _ => Err(HealthError::WrongVersion {
                url: self.url(path),
                expected: release.to_string(),
                probe,
            }),
        }
    }
}

/// A client error with its causes, which hyper keeps in the source chain.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A real HTTP server on loopback whose /healthz fails for the first `failures` requests.
    async fn server(failures: u32) -> (SocketAddr, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let (status, body) = match req.uri().path() {
                                "/healthz" if n < failures => (503, "warming up"),
                                "/healthz" => (200, "ok"),
                                "/version" => (200, "release=r-1 slot=blue"),
                                _ => (404, "no"),
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, hits)
    }

    fn check(timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(timeout_ms),
            healthy_threshold: 2,
        }
    }

    #[tokio::test]
    async fn healthy_after_consecutive_successes() {
        let (addr, hits) = server(3).await;
        let mut seen = Vec::new();
        Prober::new(addr)
            .wait_healthy(&check(5_000), |p, _| seen.push(p.is_success()))
            .await
            .unwrap();
        assert_eq!(seen, [false, false, false, true, true]);
        assert_eq!(hits.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn timeout_reports_last_status_and_body() {
        let (addr, _) = server(u32::MAX).await;
        let err = Prober::new(addr)
            .wait_healthy(&check(200), |_, _| {})
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("HTTP 503: warming up"), "{text}");
        assert!(text.contains("/healthz"), "{text}");
    }

    #[tokio::test]
    async fn refused_connection_is_reported() {
        // Bind then drop to get a port nobody listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = Prober::new(addr)
            .wait_healthy(&check(100), |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no answer"), "{err}");
    }

    #[tokio::test]
    async fn version_must_report_the_release() {
        let (addr, _) = server(0).await;
        let prober = Prober::new(addr);
        prober.check_version("/version", "r-1").await.unwrap();
        let err = prober.check_version("/version", "r-2").await.unwrap_err();
        assert!(err.to_string().contains("release=r-1"), "{err}");
    }
}
