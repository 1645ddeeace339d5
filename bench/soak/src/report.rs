//! The load's result: per kind, the requests, failures with their first causes, the rate
//! and the latency; as JSON for bench/soak.sh, and as a table for a reader.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::{Kind, Shared};
use crate::tally::Failure;

#[derive(Serialize)]
pub struct Report {
    pub addr: String,
    pub seed: u64,
    /// From the start to the stop: what the rates are over.
    pub load_s: f64,
    /// From the start until the last request in flight at the stop had ended.
    pub elapsed_s: f64,
    pub stop_reason: Option<&'static str>,
    /// Workers that had not finished their last request within the grace after the stop,
    /// and were aborted (their request is neither ok nor failed).
    pub abandoned_workers: usize,
    pub settings: BTreeMap<&'static str, serde_json::Value>,
    pub total: Row,
    pub kinds: Vec<Row>,
    /// How many answers each release gave (from the bodies that name it).
    pub releases_seen: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
pub struct Row {
    pub kind: &'static str,
    /// Concurrency: connections, workers or sessions at once.
    pub concurrency: usize,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Connections the edge closed before a request went out on them (not failures).
    pub reconnects: u64,
    pub rate_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub causes: BTreeMap<String, u64>,
    pub first_failures: Vec<Failure>,
}

impl Report {
    pub fn build(
        shared: &Shared,
        loaded: Duration,
        elapsed: Duration,
        abandoned_workers: usize,
        concurrency: &HashMap<&'static str, usize>,
        settings: BTreeMap<&'static str, serde_json::Value>,
    ) -> Report {
        let seconds = loaded.as_secs_f64().max(1e-9);
        let mut releases_seen = BTreeMap::new();
        let mut total = Row {
            kind: "total",
            ..Row::default()
        };
        let mut kinds = Vec::new();
        for kind in Kind::ALL {
            let tally = shared.tally(kind);
            let merged = tally.take_merged();
            for (release, n) in &merged.releases {
                *releases_seen.entry(release.clone()).or_default() += n;
            }
            let (causes, first_failures) = tally.failures();
            let ok = tally.ok_count();
            let failed = tally.failed_count();
            let row = Row {
                kind: kind.key(),
                concurrency: concurrency.get(kind.key()).copied().unwrap_or(0),
                requests: ok + failed,
                ok,
                failed,
                reconnects: tally.reconnect_count(),
                rate_per_s: round1((ok + failed) as f64 / seconds),
                p50_ms: merged.latency.quantile_ms(0.50).map(round2),
                p99_ms: merged.latency.quantile_ms(0.99).map(round2),
                max_ms: merged.latency.max_ms().map(round2),
                causes,
                first_failures,
            };
            total.concurrency += row.concurrency;
            total.requests += row.requests;
            total.ok += row.ok;
            total.failed += row.failed;
            total.reconnects += row.reconnects;
            for (cause, n) in &row.causes {
                *total
                    .causes
                    .entry(format!("{}: {cause}", row.kind))
                    .or_default() += n;
            }
            kinds.push(row);
        }
        total.rate_per_s = round1(total.requests as f64 / seconds);
        Report {
            addr: shared.authority.clone(),
            seed: shared.seed,
            load_s: round1(loaded.as_secs_f64()),
            elapsed_s: round1(elapsed.as_secs_f64()),
            stop_reason: shared.stop_reason().map(|r| r.as_str()),
            abandoned_workers,
            settings,
            total,
            kinds,
            releases_seen,
        }
    }

    /// A Markdown table, then the first causes of any failures.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| kind | concurrency | requests | failed | reconnects | req/s | p50 ms | p99 ms | max ms |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in self.kinds.iter().chain([&self.total]) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                row.kind,
                row.concurrency,
                row.requests,
                row.failed,
                row.reconnects,
                row.rate_per_s,
                ms(row.p50_ms),
                ms(row.p99_ms),
                ms(row.max_ms),
            );
        }
        for row in &self.kinds {
            for failure in row.first_failures.iter().take(5) {
                let _ = writeln!(
                    out,
                    "- {} failed at {:.1} s: {}: {}",
                    row.kind,
                    failure.after_ms as f64 / 1000.0,
                    failure.cause,
                    failure.detail
                );
            }
        }
        out
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
