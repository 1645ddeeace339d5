//! A real edge in this process, driven through its public API, on one of its three paths.

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use shipit_edge::server::{EdgeHandle, start_with, start_with_tls};
use shipit_edge::{AdminClient, Backend, CertificateFiles, EdgeOptions, Slot, TlsOptions, Tuning};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::case::HOST;
use crate::client::{RawClient, connect_from};
use crate::tls_client;

/// The one service every case routes.
pub const SERVICE: &str = "web";
/// How long a case may take before it counts as failed.
const CASE_DEADLINE: Duration = Duration::from_secs(20);
/// How many runs go at once.
const CONCURRENT_RUNS: usize = 12;
/// How long [`Edge::settle`] waits for requests in flight to end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client's TLS handshake with the edge may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The path an HTTP/1.1 request takes through the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The hand-written relay (`relay.rs`) on plain TCP, which may hand a connection to
    /// hyper.
    Relay,
    /// The relay behind the edge's TLS listener, ALPN `http/1.1`: the client's bytes are
    /// the same, only the transport differs.
    RelayTls,
    /// hyper from the first byte (`Tuning::relay = false`), on plain TCP.
    General,
}

impl Path {
    /// Every path: where a case runs unless it needs a plain TCP client.
    pub const ALL: [Path; 3] = [Path::Relay, Path::RelayTls, Path::General];
    /// The plaintext paths, for cases that need a plain TCP client (h2c with prior
    /// knowledge); each such case says why.
    pub const PLAIN: [Path; 2] = [Path::Relay, Path::General];

    pub fn tls(self) -> bool {
        self == Path::RelayTls
    }

    /// The scheme the edge forwards as `X-Forwarded-Proto` for a request on this path.
    pub fn scheme(self) -> &'static str {
        if self.tls() { "https" } else { "http" }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Relay => "relay",
            Path::RelayTls => "relay-tls",
            Path::General => "general",
        })
    }
}

/// A client's connection to the edge: plain TCP, or TLS on [`Path::RelayTls`].
pub type ClientIo = Either<TcpStream, TlsStream<TcpStream>>;

/// The certificate every TLS edge of this test process serves (self-signed, for [`HOST`]),
/// and a client that trusts only it.
struct Identity {
    cert: String,
    key: String,
    connector: TlsConnector,
}

fn identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let certified = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
        Identity {
            cert: certified.cert.pem(),
            key: certified.signing_key.serialize_pem(),
            // HTTP/1.1 only: the relay serves what ALPN settles as HTTP/1.1.
            connector: tls_client::connector(certified.cert.der().clone(), &[b"http/1.1"]),
        }
    })
}

/// An edge in its own temporary directory.
pub struct Edge {
    path: Path,
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

    /// On [`Path::RelayTls`], the edge also listens for TLS, with the process's certificate
    /// written to its directory.
    pub async fn start_with(path: Path, tuning: Tuning) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let tuning = Tuning {
            relay: path != Path::General,
            ..tuning
        };
        let options = EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.path().to_path_buf(),
        };
        let handle = if path.tls() {
            let files = CertificateFiles {
                hosts: Vec::new(),
                cert: dir.path().join("edge.crt"),
                key: dir.path().join("edge.key"),
            };
            std::fs::write(&files.cert, &identity().cert).unwrap();
            std::fs::write(&files.key, &identity().key).unwrap();
            let tls = TlsOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                certificates: vec![files],
            };
            start_with_tls(options, tuning, tls).await.unwrap()
        } else {
            start_with(options, tuning).await.unwrap()
        };
        Edge {
            path,
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

    /// Where the case's clients connect: the TLS listener on [`Path::RelayTls`] (a
    /// plaintext client gets no HTTP answer there), else the plain one.
    pub fn addr(&self) -> SocketAddr {
        if self.path.tls() {
            self.handle
                .tls_addr()
                .expect("an edge on relay-tls listens for TLS")
        } else {
            self.handle.local_addr()
        }
    }

    /// The plain listener, whatever the path: for the h2c part of a case (HTTP/2 over TLS
    /// is hyper's, not the relay's, whatever the path).
    pub fn plain_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// A connection to [`Edge::addr`], in the path's transport; `Err` when the connect or
    /// the TLS handshake fails (the edge refuses a TLS client over its limits that way).
    pub async fn connect(&self) -> Result<ClientIo, String> {
        let tcp = TcpStream::connect(self.addr())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).unwrap();
        self.secure(tcp).await
    }

    /// [`Edge::connect`] from another loopback address (`127.0.0.2`…), as another client.
    pub async fn connect_from(&self, local: &str) -> Result<ClientIo, String> {
        self.secure(connect_from(local, self.addr()).await).await
    }

    /// A raw client on a new connection to the edge, in the path's transport.
    pub async fn client(&self) -> RawClient<ClientIo> {
        RawClient::new(self.connect().await.unwrap_or_else(|e| {
            panic!(
                "[{}] a client could not connect to the edge: {e}",
                self.path
            )
        }))
    }

    /// [`Edge::client`] from another loopback address.
    pub async fn client_from(&self, local: &str) -> RawClient<ClientIo> {
        RawClient::new(self.connect_from(local).await.unwrap_or_else(|e| {
            panic!(
                "[{}] a client from {local} could not connect to the edge: {e}",
                self.path
            )
        }))
    }

    /// `tcp` as the path's transport: the TLS handshake on [`Path::RelayTls`].
    async fn secure(&self, tcp: TcpStream) -> Result<ClientIo, String> {
        if !self.path.tls() {
            return Ok(Either::Left(tcp));
        }
        let name = ServerName::try_from(HOST).unwrap();
        let handshake = identity().connector.connect(name, tcp);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"))?
            .map_err(|e| format!("the TLS handshake failed: {e}"))?;
        let alpn = tls.get_ref().1.alpn_protocol();
        if alpn != Some(b"http/1.1") {
            return Err(format!(
                "ALPN chose {:?}, not http/1.1",
                alpn.map(String::from_utf8_lossy)
            ));
        }
        Ok(Either::Right(tls))
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
            more_addrs: Vec::new(),
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

/// Runs `run` for every item through every path ([`Path::ALL`]), concurrently, and fails
/// with the name, path and reason of every run that failed (not only the first).
pub async fn each_on_every_path<T, F>(what: &str, items: Vec<T>, name: fn(&T) -> String, run: F)
where
    F: AsyncFn(&T, Path) -> Result<(), String>,
{
    each_on_paths(what, &Path::ALL, items, name, run).await;
}

/// [`each_on_every_path`], on the plaintext paths only ([`Path::PLAIN`]).
pub async fn each_on_plain_paths<T, F>(what: &str, items: Vec<T>, name: fn(&T) -> String, run: F)
where
    F: AsyncFn(&T, Path) -> Result<(), String>,
{
    each_on_paths(what, &Path::PLAIN, items, name, run).await;
}

async fn each_on_paths<T, F>(
    what: &str,
    paths: &[Path],
    items: Vec<T>,
    name: fn(&T) -> String,
    run: F,
) where
    F: AsyncFn(&T, Path) -> Result<(), String>,
{
    let runs: Vec<(&T, Path)> = items
        .iter()
        .flat_map(|item| paths.iter().map(move |&path| (item, path)))
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
pub async fn on_every_path<F>(name: &'static str, run: F)
where
    F: AsyncFn(Path) -> Result<(), String>,
{
    on_paths(name, &Path::ALL, run).await;
}

/// [`on_every_path`], on the plaintext paths only ([`Path::PLAIN`]).
pub async fn on_plain_paths<F>(name: &'static str, run: F)
where
    F: AsyncFn(Path) -> Result<(), String>,
{
    on_paths(name, &Path::PLAIN, run).await;
}

async fn on_paths<F>(name: &'static str, paths: &[Path], run: F)
where
    F: AsyncFn(Path) -> Result<(), String>,
{
    each_on_paths(
        name,
        paths,
        vec![name],
        |n| n.to_string(),
        async |_, path| run(path).await,
    )
    .await;
}

/// A case on relay-tls cannot pass over plaintext: the address it is given speaks TLS
/// only, and its clients' connections are TLS.
#[tokio::test]
async fn the_tls_path_answers_no_plaintext_request() {
    let edge = Edge::start(Path::RelayTls).await;
    let tcp = TcpStream::connect(edge.addr()).await.unwrap();
    let got = RawClient::new(tcp)
        .exchange(
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            false,
            1,
        )
        .await;
    assert!(
        got.answers.is_empty(),
        "a plaintext request to the edge on relay-tls got {}",
        got.describe()
    );
    assert!(matches!(edge.connect().await, Ok(Either::Right(_))));
    let got = edge
        .client()
        .await
        .exchange(
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            false,
            1,
        )
        .await;
    let finals = got.finals();
    assert!(
        finals.len() == 1 && finals[0].status == 503,
        "a TLS client of an edge with no route got {}",
        got.describe()
    );
}
