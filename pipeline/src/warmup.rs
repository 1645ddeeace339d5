//! Warm-up traffic, `[services.<s>.warmup]`: once a candidate passed its health and version
//! checks, and before the `pre_switch` hook and the switch, it gets `requests` GETs spread
//! over `paths` in turn, `concurrency` at a time, at the address the platform gives for it
//! (the container's loopback port on a local target, the test listener on ecs). A cold JIT,
//! empty caches or lazy connection pools are then paid for by the warm-up, not by the first
//! clients after the switch.
//!
//! Each request must answer within `timeout` with a status below 500; a connection error, a
//! timeout or a 5xx fails the release, as a failing candidate should. The release reports
//! the latencies (p50, p99, max) in the Verify phase and in its record; with `max_p99`, a
//! slower p99 fails it. The live slot is untouched either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::Warmup;
use crate::event::{Phase, Reporter};
use crate::platform::{ErrorKind, PlatformError};

/// What a warm-up measured, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub requests: u32,
    /// Latencies in microseconds, from sending the request to the end of its body.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// How long the whole warm-up took, in milliseconds.
    pub took_ms: u64,
}

impl Measured {
    /// `latencies` of every request, in any order.
    fn of(mut latencies: Vec<Duration>, took: Duration) -> Measured {
        latencies.sort_unstable();
        let at = |q: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            latencies[rank - 1].as_micros() as u64
        };
        Measured {
            requests: latencies.len() as u32,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: latencies.last().map_or(0, |d| d.as_micros() as u64),
            took_ms: took.as_millis() as u64,
        }
    }

    pub fn p99(&self) -> Duration {
        Duration::from_micros(self.p99_us)
    }
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "{} requests in {:.2} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.requests,
            self.took_ms as f64 / 1000.0,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

/// Sends the warm-up traffic to `base` (`http://host:port`, or https) and measures it.
pub async fn run(
    base: &str,
    warmup: &Warmup,
    reporter: &Reporter,
) -> Result<Measured, PlatformError> {
    let base = base.trim_end_matches('/');
    let uris = warmup
        .paths
        .iter()
        .map(|p| {
            format!("{base}{p}").parse::<hyper::Uri>().map_err(|e| {
                PlatformError::new(
                    ErrorKind::Platform,
                    format!("warm-up: {base}{p} is not a URL: {e}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("warm-up: no root certificates: {e}"),
            )
        })?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    reporter.progress(
        Phase::Verify,
        format!(
            "warm-up: {} requests on {} at {base}, {} at a time",
            warmup.requests,
            warmup.paths.join(", "),
            warmup.concurrency
        ),
    );
    let next = Arc::new(AtomicU32::new(0));
    // Set by the first failure: the other workers stop sending.
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let workers = (0..warmup.concurrency).map(|_| {
        let (client, uris, next, failed) =
            (client.clone(), uris.clone(), next.clone(), failed.clone());
        let (total, timeout) = (warmup.requests, warmup.timeout);
        async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || failed.load(Ordering::Relaxed) {
                    return Ok(latencies);
                }
                let uri = &uris[n as usize % uris.len()];
                let sent = Instant::now();
                let exchange = async {
                    let request = hyper::Request::get(uri.clone())
                        .header(hyper::header::USER_AGENT, "shipit-warmup")
                        .body(Empty::<Bytes>::new())
                        .map_err(|e| e.to_string())?;
                    let response = client.request(request).await.map_err(|e| {
                        let mut text = e.to_string();
                        if let Some(source) = std::error::Error::source(&e) {
                            text = format!("{text}: {source}");
                        }
                        text
                    })?;
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| format!("reading the body: {e}"))?;
                    if status.is_server_error() {
                        return Err(format!("answered {status}"));
                    }
                    Ok(())
                };
                let result = tokio::time::timeout(timeout, exchange).await;
                if !matches!(result, Ok(Ok(()))) {
                    failed.store(true, Ordering::Relaxed);
                }
                match result {
                    Ok(Ok(())) => latencies.push(sent.elapsed()),
                    Ok(Err(why)) => return Err(format!("GET {uri} {why}")),
                    Err(_) => {
                        return Err(format!(
                            "GET {uri} did not answer within {}",
                            humantime::format_duration(timeout)
                        ));
                    }
                }
            }
        }
    });
    let results = futures_util::future::join_all(workers).await;
    let took = started.elapsed();
    let mut latencies = Vec::with_capacity(warmup.requests as usize);
    for result in results {
        match result {
            Ok(mut some) => latencies.append(&mut some),
            Err(why) => {
                return Err(PlatformError::new(
                    ErrorKind::Verify,
                    format!("warm-up: the candidate failed a request: {why}"),
                )
                .with_hint(
                    "the live slot was not touched; warm-up requests must answer below 500 \
                     within services.<s>.warmup.timeout",
                ));
            }
        }
    }
    let measured = Measured::of(latencies, took);
    reporter.progress(Phase::Verify, format!("warm-up: {measured}"));
    if let Some(max) = warmup.max_p99
        && measured.p99() > max
    {
        return Err(PlatformError::new(
            ErrorKind::Verify,
            format!(
                "warm-up: p99 {:.1} ms is over max_p99 {} ({measured})",
                measured.p99_us as f64 / 1000.0,
                humantime::format_duration(max)
            ),
        )
        .with_hint(
            "the live slot was not touched; send more warm-up requests, or raise \
             services.<s>.warmup.max_p99",
        ));
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let latencies: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let measured = Measured::of(latencies, Duration::from_secs(1));
        assert_eq!(measured.requests, 200);
        assert_eq!(measured.p50_us, 100_000);
        assert_eq!(measured.p99_us, 198_000);
        assert_eq!(measured.max_us, 200_000);
        let one = Measured::of(vec![Duration::from_millis(7)], Duration::ZERO);
        assert_eq!((one.p50_us, one.p99_us), (7_000, 7_000));
    }
}
