//! The load as a whole: its six kinds of request, what every worker shares (the target, the
//! stop signal, the request budget, the tallies) and the seeded randomness.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::tally::Tally;

/// The kinds of request the load mixes, each run by its own workers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /` on a kept-alive HTTP/1.1 connection.
    KeepAlive,
    /// `GET /` on a new TCP connection each time.
    NewConnection,
    /// `POST /echo` with a large body; the answer must name its length and hash.
    Post,
    /// `GET /slow?ms=N`: requests still in flight when a release switches and drains.
    Slow,
    /// A WebSocket session on `/ws`: the handshake, echoed messages, and the close.
    WebSocket,
    /// `GET /` as HTTP/2 streams on h2c connections (prior knowledge).
    H2,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::KeepAlive,
        Kind::NewConnection,
        Kind::Post,
        Kind::Slow,
        Kind::WebSocket,
        Kind::H2,
    ];

    /// The key in the JSON report.
    pub fn key(self) -> &'static str {
        match self {
            Kind::KeepAlive => "keepalive",
            Kind::NewConnection => "newconn",
            Kind::Post => "post",
            Kind::Slow => "slow",
            Kind::WebSocket => "ws",
            Kind::H2 => "h2",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why the load stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM: the soak script is done with its operations.
    Signal,
    /// The hard deadline (`--duration`) passed.
    Deadline,
    /// The request budget (`--max-requests`) is spent.
    Budget,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Signal => "signal",
            StopReason::Deadline => "deadline",
            StopReason::Budget => "request budget",
        }
    }
}

/// What every worker of every kind shares.
pub struct Shared {
    pub addr: SocketAddr,
    /// `host:port`, for `Host`, `:authority` and the WebSocket URL.
    pub authority: String,
    pub seed: u64,
    /// The longest a request may take (a slow request: its delay plus this).
    pub timeout: Duration,
    pub epoch: Instant,
    pub stop: CancellationToken,
    stop_reason: Mutex<Option<StopReason>>,
    started: AtomicU64,
    max_requests: u64,
    /// Requests per second all kinds together may start at most; `None`: as fast as answered.
    max_rate: Option<f64>,
    tallies: [Tally; 6],
}

impl Shared {
    /// A load that starts at most `max_rate` requests a second (all kinds together; `None`:
    /// as fast as they are answered).
    pub fn with_rate(
        addr: SocketAddr,
        seed: u64,
        timeout: Duration,
        max_requests: u64,
        max_rate: Option<f64>,
    ) -> Shared {
        Shared {
            addr,
            authority: addr.to_string(),
            seed,
            timeout,
            epoch: Instant::now(),
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            started: AtomicU64::new(0),
            max_requests,
            max_rate: max_rate.filter(|r| *r > 0.0),
            tallies: Default::default(),
        }
    }

    pub fn tally(&self, kind: Kind) -> &Tally {
        &self.tallies[kind.index()]
    }

    /// Claims one request of the budget: `false` once the load is stopping or the budget is
    /// spent (which stops it). With a rate cap, the n-th request waits until n / rate
    /// seconds after the start; a load slower than the cap never waits.
    pub async fn take(&self) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        if n >= self.max_requests {
            self.halt(StopReason::Budget);
            return false;
        }
        if let Some(rate) = self.max_rate {
            let due = self.epoch + Duration::from_secs_f64(n as f64 / rate);
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep_until(due.into()) => {}
            }
        }
        true
    }

    /// Stops the load; the first reason given is the one reported.
    pub fn halt(&self, reason: StopReason) {
        self.stop_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.stop.cancel();
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop_reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `wait`, or less when the load stops meanwhile; `false` if it stopped.
    pub async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.stop.cancelled() => false,
        }
    }

    /// A worker's own random stream: the same seed, kind and worker give the same stream.
    pub fn rng(&self, kind: Kind, worker: usize) -> Rng {
        Rng::new(self.seed ^ ((kind.index() as u64) << 56) ^ (worker as u64).wrapping_mul(0x9e37))
    }
}

/// After a connection error, how long a worker waits before it connects again, so a down
/// edge is counted, not hammered.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// SplitMix64: small, seedable, and good enough to pick bodies and stagger starts.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), near enough for these uses.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The release id an answer's body names (`... release=<id> slot=...`).
pub fn release_of(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("release=")? + "release=".len();
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// FNV-1a, 64 bits, as examples/hello's `/echo` computes it.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_is_read_from_hello_answers() {
        assert_eq!(
            release_of(b"hello from release=r-1a2b slot=blue version=dev\n"),
            Some("r-1a2b")
        );
        assert_eq!(
            release_of(b"received 3 bytes fnv1a64=00 release=x slot=green version=v\n"),
            Some("x")
        );
        assert_eq!(release_of(b"not found\n"), None);
    }

    #[test]
    fn fnv1a64_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[tokio::test]
    async fn the_budget_stops_the_load() {
        let shared = Shared::with_rate(
            "127.0.0.1:1".parse().unwrap(),
            1,
            Duration::from_secs(1),
            2,
            None,
        );
        assert!(shared.take().await);
        assert!(shared.take().await);
        assert!(!shared.take().await);
        assert_eq!(shared.stop_reason(), Some(StopReason::Budget));
        assert!(shared.stop.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_cap_spaces_the_starts() {
        let shared = Shared::with_rate(
            "127.0.0.1:1".parse().unwrap(),
            1,
            Duration::from_secs(1),
            100,
            Some(10.0),
        );
        let start = tokio::time::Instant::now();
        for _ in 0..21 {
            assert!(shared.take().await);
        }
        // The 21st request (n = 20) starts 2 s after the first, not before.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1990) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
    }
}
