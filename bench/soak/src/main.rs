//! soak-load: the mixed load that `bench/soak.sh` keeps on the edge while it releases, rolls
//! back and fails candidates.
//!
//! Six kinds of request run at once, each with its own workers: keep-alive `GET /`, `GET /`
//! on a new connection each time, `POST /echo` with a 256 KiB body, 3-second `GET /slow`,
//! WebSocket echo sessions on `/ws`, and HTTP/2 (h2c) streams. Every request is counted; a
//! connection error, a reset, a timeout, a non-2xx or a wrong answer is a failure. The load
//! runs until SIGINT or SIGTERM (the soak script's "done"), its hard deadline
//! (`--duration`) or its request budget (`--max-requests`), whichever comes first; then each
//! worker finishes the request it has in flight, and the report is printed (a table on
//! stdout, progress on stderr) and written as JSON (`--json`).
//!
//! It sends traffic to a loopback address only.

// A benchmark's command-line tool: its table goes to stdout and its progress to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod h2c;
mod http1;
mod load;
mod report;
mod tally;
mod websocket;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::task::JoinSet;

use crate::load::{Kind, Shared, StopReason};
use crate::report::Report;

/// The size of a `POST /echo` body.
const DEFAULT_POST_BYTES: usize = 256 * 1024;
/// How long a `/slow` request waits in hello.
const DEFAULT_SLOW: &str = "3s";
/// The longest any other request may take before it counts as a timeout.
const DEFAULT_TIMEOUT: &str = "10s";
/// Distinct POST bodies, made once at start and picked at random.
const ECHO_BODIES: usize = 8;

#[derive(Debug, Parser)]
#[command(
    name = "soak-load",
    about = "The soak benchmark's mixed load through the edge; every request counted"
)]
struct Args {
    /// The edge's plain HTTP address (loopback only)
    #[arg(long)]
    addr: SocketAddr,
    /// Seeds the POST bodies, the WebSocket payloads and the workers' start times
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The hard deadline: the load stops then, whatever else happens
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
    /// The request budget: the load stops once this many requests were started
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
    /// At most this many requests a second, all kinds together (0: as fast as answered)
    #[arg(long, default_value_t = 0.0)]
    max_rate: f64,
    /// Keep-alive connections sending `GET /`
    #[arg(long, default_value_t = 16)]
    keepalive: usize,
    /// Workers sending `GET /` on a new connection each time
    #[arg(long, default_value_t = 2)]
    newconn: usize,
    /// Keep-alive connections sending `POST /echo`
    #[arg(long, default_value_t = 2)]
    post: usize,
    /// The size of a POST body, in bytes
    #[arg(long, default_value_t = DEFAULT_POST_BYTES)]
    post_bytes: usize,
    /// Keep-alive connections sending `GET /slow`
    #[arg(long, default_value_t = 16)]
    slow: usize,
    /// How long a slow request takes
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_SLOW)]
    slow_for: Duration,
    /// WebSocket sessions at once
    #[arg(long, default_value_t = 8)]
    ws: usize,
    /// The time between two messages of a WebSocket session
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    ws_interval: Duration,
    /// Messages per WebSocket session (then it closes and a new one starts)
    #[arg(long, default_value_t = 20)]
    ws_messages: u32,
    /// HTTP/2 (h2c) connections
    #[arg(long, default_value_t = 2)]
    h2_connections: usize,
    /// Streams in flight on each HTTP/2 connection
    #[arg(long, default_value_t = 8)]
    h2_streams: usize,
    /// The longest a request may take (a slow one: this beyond its wait)
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_TIMEOUT)]
    timeout: Duration,
    /// How often a progress line goes to stderr
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    progress: Duration,
    /// Runtime worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where to write the JSON report
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address: the soak load stays on this machine",
            args.addr
        )
        .into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    preflight(args.addr).await?;
    let shared = Arc::new(Shared::with_rate(
        args.addr,
        args.seed,
        args.timeout,
        args.max_requests,
        Some(args.max_rate),
    ));
    let started = Instant::now();

    // Stop on SIGINT or SIGTERM, at the deadline, or when the budget is spent.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    {
        let shared = Arc::clone(&shared);
        let deadline = args.duration;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => shared.halt(StopReason::Signal),
                _ = terminate.recv() => shared.halt(StopReason::Signal),
                () = tokio::time::sleep(deadline) => shared.halt(StopReason::Deadline),
                () = shared.stop.cancelled() => {}
            }
        });
    }

    let mut workers: JoinSet<(Kind, tally::Local)> = JoinSet::new();
    let bodies = http1::echo_bodies(args.seed, args.post_bytes, ECHO_BODIES);
    let h1_kinds = [
        (Kind::KeepAlive, args.keepalive, http1::Plan::Hello, false),
        (Kind::NewConnection, args.newconn, http1::Plan::Hello, true),
        (Kind::Post, args.post, http1::Plan::Echo(bodies), false),
        (
            Kind::Slow,
            args.slow,
            http1::Plan::Slow(args.slow_for),
            false,
        ),
    ];
    for (kind, count, plan, fresh) in h1_kinds {
        for index in 0..count {
            let shared = Arc::clone(&shared);
            let plan = plan.clone();
            workers.spawn(
                async move { (kind, http1::worker(shared, kind, index, plan, fresh).await) },
            );
        }
    }
    for index in 0..args.ws {
        let shared = Arc::clone(&shared);
        let (interval, messages) = (args.ws_interval, args.ws_messages);
        workers.spawn(async move {
            (
                Kind::WebSocket,
                websocket::worker(shared, index, interval, messages).await,
            )
        });
    }
    for index in 0..args.h2_connections {
        let shared = Arc::clone(&shared);
        let streams = args.h2_streams;
        workers.spawn(async move { (Kind::H2, h2c::connection(shared, index, streams).await) });
    }
    eprintln!(
        "soak-load: {} workers on {} (seed {}), until a signal, {} or {} requests",
        workers.len(),
        args.addr,
        args.seed,
        humantime::format_duration(args.duration),
        args.max_requests
    );

    // Progress until the stop.
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            () = tokio::time::sleep(args.progress) => {}
            () = shared.stop.cancelled() => break,
        }
        last = progress(&shared, started, last);
    }
    let loaded = started.elapsed();

    // Each worker finishes the request it has in flight; that is bounded by the longest
    // timeout, so whatever is still running after it is stuck and is aborted.
    let grace = args.timeout + args.slow_for + args.ws_interval + Duration::from_secs(2);
    eprintln!(
        "soak-load: stopping ({}); waiting at most {} for requests in flight",
        shared.stop_reason().map_or("?", StopReason::as_str),
        humantime::format_duration(grace)
    );
    let waited = tokio::time::timeout(grace, async {
        while let Some(joined) = workers.join_next().await {
            if let Ok((kind, local)) = joined {
                shared.tally(kind).absorb(local);
            }
        }
    })
    .await;
    let abandoned = if waited.is_err() { workers.len() } else { 0 };
    workers.abort_all();
    let elapsed = started.elapsed();

    let concurrency: HashMap<&'static str, usize> = HashMap::from([
        (Kind::KeepAlive.key(), args.keepalive),
        (Kind::NewConnection.key(), args.newconn),
        (Kind::Post.key(), args.post),
        (Kind::Slow.key(), args.slow),
        (Kind::WebSocket.key(), args.ws),
        (Kind::H2.key(), args.h2_connections * args.h2_streams),
    ]);
    let settings = BTreeMap::from([
        ("duration_s", json!(args.duration.as_secs_f64())),
        ("max_requests", json!(args.max_requests)),
        ("max_rate", json!(args.max_rate)),
        ("post_bytes", json!(args.post_bytes)),
        ("slow_ms", json!(args.slow_for.as_millis() as u64)),
        ("ws_interval_ms", json!(args.ws_interval.as_millis() as u64)),
        ("ws_messages", json!(args.ws_messages)),
        ("h2_connections", json!(args.h2_connections)),
        ("h2_streams", json!(args.h2_streams)),
        ("timeout_s", json!(args.timeout.as_secs_f64())),
        ("threads", json!(args.threads)),
    ]);
    let report = Report::build(&shared, loaded, elapsed, abandoned, &concurrency, settings);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    println!("{}", report.table());
    Ok(())
}

/// One `GET /version` before the load: a wrong address fails here, at once, with its cause,
/// rather than as millions of failed requests.
async fn preflight(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    use http_body_util::{BodyExt, Empty};
    let check = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/version")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(
                format!("GET /version answered {status}: {}", http1::excerpt(&body)).into(),
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the edge at {addr} does not serve: {e}").into()),
        Err(_) => Err(format!("the edge at {addr} did not answer GET /version within 5 s").into()),
    }
}

/// Prints a progress line; returns the instant and request count it was taken at.
fn progress(shared: &Shared, started: Instant, last: (Instant, u64)) -> (Instant, u64) {
    let now = Instant::now();
    let mut requests = 0;
    let mut failed = Vec::new();
    for kind in Kind::ALL {
        let tally = shared.tally(kind);
        requests += tally.ok_count() + tally.failed_count();
        if tally.failed_count() > 0 {
            failed.push(format!("{} {}", kind.key(), tally.failed_count()));
        }
    }
    let rate = (requests - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
    eprintln!(
        "soak-load: {:>5.0} s  {requests} requests  {rate:.0}/s  failed: {}",
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            "0".to_string()
        } else {
            failed.join(", ")
        }
    );
    (now, requests)
}
