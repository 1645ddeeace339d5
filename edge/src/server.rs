//! The edge process: the traffic listener, the admin socket and the saved routes, together.
//!
//! [`run`] is what `shipit edge run` calls: it starts the edge and waits for SIGTERM,
//! SIGINT or `POST /shutdown`. [`start`] runs the same edge inside the caller's runtime and
//! hands back an [`EdgeHandle`] (tests use it). On stop, the edge stops accepting, lets
//! the requests in flight finish for a bounded grace period, then removes its socket.
//! Logs go through `tracing`; nothing is written to stdout.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use jiff::Timestamp;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::admin::{CandidateStatus, DrainingStatus, RouteStatus, Status};
use crate::connection::{self, ClientConn, stopped};
use crate::proxy::Proxy;
use crate::route::{CandidateRefused, RouteTable, Routing, Switched};
use crate::state::{self, SavedRoutes};
use crate::tls::TlsOptions;
use crate::{
    ADMIN_SOCKET, AdminClient, Backend, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_REQUEST_BODY, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_RESPONSE_HEADER_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE, EdgeError, HEADER_READ_TIMEOUT, LOCK_FILE, PID_FILE,
};

/// Where the edge listens and keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeOptions {
    /// The traffic address; port 0 picks a free port (reported by `/status`).
    pub listen: SocketAddr,
    /// The edge directory: `admin.sock`, `routes.json`, `edge.pid`, `edge.log`.
    pub dir: PathBuf,
}

/// The edge's timeouts and limits. [`Tuning::default`] holds the `DEFAULT_*` constants;
/// build one with `Tuning { field: value, ..Tuning::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// How long a slot may take to accept a connection (then 504).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to a slot is kept.
    pub pool_idle_timeout: Duration,
    /// How long a stopping edge lets requests and upgraded connections finish.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request head (HTTP/1.1; it also bounds how
    /// long a keep-alive connection may wait for its next request).
    pub header_read_timeout: Duration,
    /// How long a client connection may go without a request before it is closed.
    pub idle_timeout: Duration,
    /// How long a slot may take to start answering once it has the whole request
    /// (then 504).
    pub response_header_timeout: Duration,
    /// The largest request body forwarded (larger: 413); `None` for no limit.
    pub max_request_body: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            response_header_timeout: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            max_request_body: Some(DEFAULT_MAX_REQUEST_BODY),
        }
    }
}

/// Runs the edge until SIGTERM, SIGINT or `POST /shutdown`, then stops it gracefully.
pub async fn run(opts: EdgeOptions) -> Result<(), EdgeError> {
    run_with(opts, Tuning::default()).await
}

/// [`run`] with other timeouts and limits.
pub async fn run_with(opts: EdgeOptions, tuning: Tuning) -> Result<(), EdgeError> {
    run_inner(opts, tuning, None).await
}

/// [`run_with`], also terminating TLS.
pub async fn run_with_tls(
    opts: EdgeOptions,
    tuning: Tuning,
    tls: TlsOptions,
) -> Result<(), EdgeError> {
    run_inner(opts, tuning, Some(tls)).await
}

async fn run_inner(
    opts: EdgeOptions,
    tuning: Tuning,
    tls: Option<TlsOptions>,
) -> Result<(), EdgeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| EdgeError::io("listen for SIGTERM in", &opts.dir, e))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| EdgeError::io("listen for SIGINT in", &opts.dir, e))?;
    let handle = start_inner(opts, tuning, tls).await?;
    let mut stop = handle.stop.subscribe();
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT received, stopping"),
        () = stopped(&mut stop) => {}
    }
    handle.shutdown().await
}

/// Starts the edge in the current runtime.
pub async fn start(opts: EdgeOptions) -> Result<EdgeHandle, EdgeError> {
    start_with(opts, Tuning::default()).await
}

/// [`start`] with other timeouts and limits.
pub async fn start_with(opts: EdgeOptions, tuning: Tuning) -> Result<EdgeHandle, EdgeError> {
    start_inner(opts, tuning, None).await
}

/// [`start_with`], also terminating TLS.
pub async fn start_with_tls(
    opts: EdgeOptions,
    tuning: Tuning,
    tls: TlsOptions,
) -> Result<EdgeHandle, EdgeError> {
    start_inner(opts, tuning, Some(tls)).await
}

async fn start_inner(
    opts: EdgeOptions,
    tuning: Tuning,
    tls: Option<TlsOptions>,
) -> Result<EdgeHandle, EdgeError> {
    // Bad certificates fail the start before anything is bound or locked.
    let acceptor = tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let dir = opts.dir.clone();
    create_dir(&dir)?;
    let lock = lock_dir(&dir)?;

    let table = Arc::new(RouteTable::new());
    match state::load(&dir)? {
        Some(saved) => {
            for route in saved.routes {
                tracing::info!(
                    service = %route.service, slot = %route.live.slot,
                    release = %route.live.release, addr = %route.live.addr,
                    candidate = ?route.candidate.as_ref().map(|c| &c.backend.release),
                    "restored route from {}", state::routes_path(&dir).display()
                );
                table.restore(&route);
            }
        }
        None => tracing::info!(dir = %dir.display(), "no saved routes; starting with none"),
    }

    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| EdgeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| EdgeError::Bind {
        addr: opts.listen,
        source,
    })?;
    let secure = match (&tls, acceptor) {
        (Some(tls), Some(acceptor)) => {
            let bind_error = |source| EdgeError::Bind {
                addr: tls.listen,
                source,
            };
            let listener = TcpListener::bind(tls.listen).await.map_err(bind_error)?;
            let addr = listener.local_addr().map_err(bind_error)?;
            Some((listener, addr, acceptor))
        }
        _ => None,
    };
    let tls_addr = secure.as_ref().map(|(_, addr, _)| *addr);
    let admin_socket = dir.join(ADMIN_SOCKET);
    let admin_listener = crate::admin::bind(&admin_socket)?;

    let (stop, _) = watch::channel(false);
    let edge = Arc::new(Edge {
        table: Arc::clone(&table),
        dir: dir.clone(),
        listen: local_addr,
        tls_listen: tls_addr,
        started_at: Timestamp::now(),
        persist: tokio::sync::Mutex::new(()),
        stop: stop.clone(),
    });
    edge.persist().await?;
    state::write_atomic(
        &dir.join(PID_FILE),
        format!("{}\n", std::process::id()).as_bytes(),
    )?;

    let proxy = Arc::new(Proxy::new(table, &tuning));
    let mut tasks = JoinSet::new();
    let traffic = {
        let stop = stop.clone();
        async move {
            let plain = serve_traffic(listener, Arc::clone(&proxy), stop.subscribe(), tuning, None);
            let secure = async {
                match secure {
                    Some((listener, _, acceptor)) => {
                        let proxy = Arc::clone(&proxy);
                        serve_traffic(listener, proxy, stop.subscribe(), tuning, Some(acceptor))
                            .await
                    }
                    None => Instant::now(),
                }
            };
            let (plain_stopped, secure_stopped) = tokio::join!(plain, secure);
            // Upgraded connections get what is left of the grace period.
            let stopped = plain_stopped.min(secure_stopped);
            proxy
                .finish_tunnels(tuning.shutdown_grace.saturating_sub(stopped.elapsed()))
                .await;
        }
    };
    tasks.spawn(traffic);
    tasks.spawn(serve_admin(
        admin_listener,
        Arc::clone(&edge),
        stop.subscribe(),
        tuning.shutdown_grace,
    ));
    tracing::info!(listen = %local_addr, tls = ?tls_addr, admin = %admin_socket.display(), "edge started");
    Ok(EdgeHandle {
        local_addr,
        tls_addr,
        admin_socket,
        dir,
        stop,
        tasks,
        _lock: lock,
    })
}

/// A running edge.
#[derive(Debug)]
pub struct EdgeHandle {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    admin_socket: PathBuf,
    dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    _lock: Flock<File>,
}

impl EdgeHandle {
    /// The address the edge serves traffic on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the edge serves TLS on, when it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.admin_socket)
    }

    /// Resolves once a stop was requested (`POST /shutdown` or [`EdgeHandle::shutdown`]).
    pub async fn stop_requested(&self) {
        // The sender lives in `self`, so this only ends when a stop is requested.
        stopped(&mut self.stop.subscribe()).await;
    }

    /// Stops accepting, lets requests in flight finish (bounded by the grace period), and
    /// removes the admin socket and the pid file.
    pub async fn shutdown(mut self) -> Result<(), EdgeError> {
        self.stop.send_replace(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!("an edge task failed: {e}");
            }
        }
        remove_if_exists(&self.admin_socket, "remove the admin socket")?;
        let pid_file = self.dir.join(PID_FILE);
        let ours = std::fs::read_to_string(&pid_file)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            remove_if_exists(&pid_file, "remove the pid file")?;
        }
        tracing::info!("edge stopped");
        Ok(())
    }
}

impl Drop for EdgeHandle {
    /// A handle dropped without [`EdgeHandle::shutdown`] (a failing test) still stops the
    /// edge's tasks instead of leaving them serving without the directory lock.
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The state the admin API works on.
#[derive(Debug)]
pub(crate) struct Edge {
    table: Arc<RouteTable>,
    dir: PathBuf,
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    started_at: Timestamp,
    /// Serializes change + save, so the file always ends with the latest table.
    persist: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
}

impl Edge {
    pub(crate) fn table(&self) -> &RouteTable {
        &self.table
    }

    pub(crate) fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            listen: self.listen,
            tls_listen: self.tls_listen,
            started_at: self.started_at,
            routes: self
                .table
                .view()
                .into_iter()
                .map(|route| RouteStatus {
                    service: route.service,
                    hosts: route.hosts,
                    paths: route.paths,
                    preview_hosts: route.preview_hosts,
                    live: route.live,
                    in_flight: route.in_flight,
                    candidate: route.candidate.map(|c| CandidateStatus {
                        backend: c.backend,
                        percent: c.percent,
                        in_flight: c.in_flight,
                    }),
                    since: route.since,
                    draining: route
                        .draining
                        .into_iter()
                        .map(|(backend, in_flight)| DrainingStatus { backend, in_flight })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Switches, then saves. The switch takes effect before the save: when saving fails the
    /// error says the switch is live but not saved.
    pub(crate) async fn switch(
        &self,
        service: &str,
        backend: Backend,
        routing: Routing,
    ) -> Result<Switched, EdgeError> {
        let _saving = self.persist.lock().await;
        let switched = self.table.switch(service, backend.clone(), routing);
        tracing::info!(
            %service, slot = %backend.slot, release = %backend.release, addr = %backend.addr,
            previous = ?switched.previous.as_ref().map(|p| &p.release),
            "switched"
        );
        self.save().await?;
        Ok(switched)
    }

    /// Registers the candidate of `service`, then saves. The outer error is the refusal;
    /// the inner one a failed save of a change that took effect.
    pub(crate) async fn set_candidate(
        &self,
        service: &str,
        backend: Backend,
        percent: Option<u8>,
        preview_hosts: Option<Vec<String>>,
    ) -> Result<Result<Option<Backend>, EdgeError>, CandidateRefused> {
        let _saving = self.persist.lock().await;
        let replaced =
            self.table
                .set_candidate(service, backend.clone(), percent, preview_hosts)?;
        tracing::info!(
            %service, slot = %backend.slot, release = %backend.release, addr = %backend.addr,
            ?percent, replaced = ?replaced.as_ref().map(|r| &r.release),
            "candidate registered"
        );
        Ok(self.save().await.map(|()| replaced))
    }

    /// Ends the split of `service` (the candidate stays for preview), then saves.
    pub(crate) async fn clear_split(&self, service: &str) -> Result<Option<Backend>, EdgeError> {
        let _saving = self.persist.lock().await;
        let candidate = self.table.clear_split(service);
        tracing::info!(%service, candidate = ?candidate.as_ref().map(|b| &b.release), "split ended");
        self.save().await?;
        Ok(candidate)
    }

    /// Unregisters the candidate of `service`, then saves.
    pub(crate) async fn remove_candidate(
        &self,
        service: &str,
    ) -> Result<Option<Backend>, EdgeError> {
        let _saving = self.persist.lock().await;
        let removed = self.table.remove_candidate(service);
        tracing::info!(%service, removed = ?removed.as_ref().map(|b| &b.release), "candidate removed");
        self.save().await?;
        Ok(removed)
    }

    pub(crate) async fn remove(&self, service: &str) -> Result<Option<Backend>, EdgeError> {
        let _saving = self.persist.lock().await;
        let removed = self.table.remove(service);
        tracing::info!(%service, removed = ?removed.as_ref().map(|b| &b.release), "route removed");
        self.save().await?;
        Ok(removed)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    async fn persist(&self) -> Result<(), EdgeError> {
        let _saving = self.persist.lock().await;
        self.save().await
    }

    /// Saves the table; the caller holds `persist`.
    async fn save(&self) -> Result<(), EdgeError> {
        let saved = SavedRoutes::from_view(self.listen, &self.table.view());
        let dir = self.dir.clone();
        // fsync can take milliseconds; keep it off the runtime's workers.
        tokio::task::spawn_blocking(move || state::save(&dir, &saved))
            .await
            .unwrap_or_else(|e| {
                Err(EdgeError::io(
                    "save the routes in",
                    &self.dir,
                    std::io::Error::other(e.to_string()),
                ))
            })
    }
}

/// Accepts client connections until a stop is requested, then lets them finish (bounded
/// by the grace period). Returns when it stopped accepting.
async fn serve_traffic(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
    tuning: Tuning,
    tls: Option<TlsAcceptor>,
) -> Instant {
    let builder = Arc::new(connection::builder(&tuning));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%remote, "cannot set TCP_NODELAY: {e}");
                    }
                    let conn = ClientConn::new(Arc::clone(&proxy), remote, tls.is_some());
                    let builder = Arc::clone(&builder);
                    let stop = stop.clone();
                    let idle = tuning.idle_timeout;
                    match &tls {
                        None => {
                            connections.spawn(connection::serve(builder, stream, conn, stop, idle));
                        }
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            let deadline = tuning.header_read_timeout;
                            connections.spawn(async move {
                                match tokio::time::timeout(deadline, handshake).await {
                                    Ok(Ok(tls)) => connection::serve(builder, tls, conn, stop, idle).await,
                                    Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => accept_failed("traffic", &e).await,
            },
        }
    }
    let stopped_at = Instant::now();
    drop(listener);
    let kind = if tls.is_some() {
        "TLS client"
    } else {
        "client"
    };
    finish_connections(connections, tuning.shutdown_grace, kind).await;
    stopped_at
}

async fn serve_admin(
    listener: UnixListener,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let builder = hyper::server::conn::http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let edge = Arc::clone(&edge);
                    let service = hyper::service::service_fn(move |req| {
                        let edge = Arc::clone(&edge);
                        async move {
                            Ok::<_, std::convert::Infallible>(crate::admin::handle(edge, req).await)
                        }
                    });
                    let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("admin connection ended: {e}");
                        }
                    });
                }
                Err(e) => accept_failed("admin", &e).await,
            },
        }
    }
    drop(listener);
    finish(graceful, connections, grace, "admin").await;
}

/// Accept errors are mostly "too many open files": log, and give connections a moment to
/// close before trying again instead of spinning.
async fn accept_failed(listener: &str, e: &std::io::Error) {
    tracing::warn!("accepting a {listener} connection failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Waits for client connections, which shut down gracefully on their own once `stop` is
/// set, for at most `grace`; then cuts the rest.
async fn finish_connections(mut connections: JoinSet<()>, grace: Duration, kind: &str) {
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            "letting {open} {kind} connection(s) finish (grace {})",
            humantime::format_duration(grace)
        );
    }
    let all = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            "{} {kind} connection(s) still open after the grace period; closing them",
            connections.len()
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Lets open connections finish their requests, for at most `grace`.
async fn finish(
    graceful: GracefulShutdown,
    mut connections: JoinSet<()>,
    grace: Duration,
    kind: &str,
) {
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            "letting {open} {kind} connection(s) finish (grace {})",
            humantime::format_duration(grace)
        );
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} {kind} connection(s) still open after the grace period; closing them",
            connections.len()
        );
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

fn create_dir(dir: &Path) -> Result<(), EdgeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| EdgeError::io("create the edge directory", dir, e))
}

/// One edge per directory: the lock is held for the edge's lifetime.
fn lock_dir(dir: &Path) -> Result<Flock<File>, EdgeError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EdgeError::io("open the lock file", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            EdgeError::AlreadyRunning {
                dir: dir.to_path_buf(),
                pid: std::fs::read_to_string(dir.join(PID_FILE))
                    .ok()
                    .and_then(|text| text.trim().parse().ok()),
            }
        } else {
            EdgeError::io("lock", &path, std::io::Error::from(errno))
        }
    })
}

fn remove_if_exists(path: &Path, action: &'static str) -> Result<(), EdgeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EdgeError::io(action, path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;

    use crate::Slot;
    use crate::test_backend::{Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, get};

    fn options(dir: &Path) -> EdgeOptions {
        EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn routes_restored_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let green = TestBackend::start("green").await;
        let edge = start(options(dir.path())).await.unwrap();
        edge.client()
            .switch("web", &green.backend(Slot::Green, "r2"))
            .await
            .unwrap();
        edge.shutdown().await.unwrap();

        let saved = state::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved.routes[0].live, green.backend(Slot::Green, "r2"));

        let edge = start(options(dir.path())).await.unwrap();
        let answer = get(edge.local_addr(), "/").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.backend.as_deref(), Some("green"));
        let status = edge.client().status().await.unwrap();
        assert_eq!(
            status.routes[0].live,
            Some(green.backend(Slot::Green, "r2"))
        );
        assert_eq!(status.routes[0].since, saved.routes[0].since);
        edge.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn routes_file_records_listen_and_follows_every_change() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let saved = state::load(edge.dir.path()).unwrap().unwrap();
        assert_eq!(saved.listen, edge.addr());
        assert!(saved.routes.is_empty());
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let saved = state::load(edge.dir.path()).unwrap().unwrap();
        assert_eq!(saved.routes[0].live, blue.backend(Slot::Blue, "r1"));
        edge.client().remove("web").await.unwrap();
        assert!(
            state::load(edge.dir.path())
                .unwrap()
                .unwrap()
                .routes
                .is_empty()
        );
    }

    #[tokio::test]
    async fn second_edge_in_the_same_directory_is_refused() {
        let edge = TestEdge::start().await;
        let err = start(options(edge.dir.path())).await.unwrap_err();
        assert!(
            matches!(err, EdgeError::AlreadyRunning { pid: Some(_), .. }),
            "{err:?}"
        );
        // The refused start touched nothing: the first edge still answers.
        edge.client().status().await.unwrap();
    }

    #[tokio::test]
    async fn taken_port_is_reported_with_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listen = taken.local_addr().unwrap();
        let err = start(EdgeOptions {
            listen,
            dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, EdgeError::Bind { .. }), "{err:?}");
        assert!(err.to_string().contains(&listen.to_string()), "{err}");
    }

    #[tokio::test]
    async fn shutdown_lets_inflight_request_finish() {
        let edge = TestEdge::start().await;
        let mut blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let addr = edge.addr();
        let mut slow = Connection::open(addr).await;
        let slow = tokio::spawn(async move { slow.get("/hold").await });
        blue.arrival().await;

        let stopping = tokio::spawn(edge.handle.shutdown());
        // New connections are refused once the listener is closed.
        let refused = async {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    return true;
                }
                tokio::task::yield_now().await;
            }
            false
        };
        assert!(tokio::time::timeout(SIGNAL_TIMEOUT, refused).await.unwrap());
        assert!(!stopping.is_finished());
        blue.release_one();
        let answer = slow.await.unwrap().unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.backend.as_deref(), Some("blue"));
        tokio::time::timeout(SIGNAL_TIMEOUT, stopping)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_grace_is_bounded() {
        let tuning = Tuning {
            shutdown_grace: Duration::from_millis(200),
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        let mut blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut slow = Connection::open(edge.addr()).await;
        let slow = tokio::spawn(async move { slow.get("/hold").await });
        blue.arrival().await;
        tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.shutdown())
            .await
            .expect("the grace period must bound the shutdown")
            .unwrap();
        // The held request was cut off, not answered.
        assert!(slow.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn shutdown_closes_open_websockets_after_the_grace_period() {
        let tuning = Tuning {
            shutdown_grace: Duration::from_millis(200),
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut ws = crate::test_backend::websocket(edge.addr()).await;
        assert_eq!(
            crate::test_backend::echo(&mut ws, "hi").await.as_deref(),
            Some("blue: hi")
        );
        tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.shutdown())
            .await
            .expect("the grace period must bound the shutdown")
            .unwrap();
        assert_eq!(crate::test_backend::echo(&mut ws, "again").await, None);
    }

    #[tokio::test]
    async fn restart_restores_paths_and_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        let edge = start(options(dir.path())).await.unwrap();
        let routing = crate::Routing {
            hosts: None,
            paths: Some(vec!["/api".into()]),
        };
        let client = edge.client();
        client
            .switch_with("api", &blue.backend(Slot::Blue, "r1"), &routing)
            .await
            .unwrap();
        client
            .weights("api", &green.backend(Slot::Green, "r2"), 100)
            .await
            .unwrap();
        let before = client.status().await.unwrap();
        edge.shutdown().await.unwrap();

        let edge = start(options(dir.path())).await.unwrap();
        let after = edge.client().status().await.unwrap();
        assert_eq!(after.routes, before.routes);
        assert_eq!(after.routes[0].paths, vec!["/api".to_string()]);
        assert_eq!(after.routes[0].candidate.as_ref().unwrap().percent, 100);
        // At 100 %, a new client goes to the candidate, and only under /api.
        let answer = get(edge.local_addr(), "/api/x").await;
        assert_eq!(answer.backend.as_deref(), Some("green"));
        assert_eq!(
            get(edge.local_addr(), "/x").await.status,
            StatusCode::NOT_FOUND
        );
        edge.shutdown().await.unwrap();
    }

    /// 32 keep-alive clients send requests while 20 switches alternate between two
    /// backends. Every request must succeed, and a request sent after a switch returned
    /// (with no later switch begun before its answer) must be answered by the new backend.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn switches_under_load_lose_no_request() {
        const CLIENTS: usize = 32;
        const REQUESTS_PER_CLIENT: usize = 150;
        const SWITCHES: usize = 20;
        const REQUESTS_BETWEEN_SWITCHES: usize = 100;

        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        let target = |switch: usize| -> (&'static str, Backend) {
            let release = format!("r{switch}");
            if switch.is_multiple_of(2) {
                ("blue", blue.backend(Slot::Blue, &release))
            } else {
                ("green", green.backend(Slot::Green, &release))
            }
        };
        edge.switch(&target(0).1).await;

        // `begun` moves before a switch is made, `done` after it returned.
        let begun = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (answered, progress) = watch::channel(0usize);
        let answered = Arc::new(answered);

        let mut clients = JoinSet::new();
        for client in 0..CLIENTS {
            let (begun, done, failures, answered) = (
                Arc::clone(&begun),
                Arc::clone(&done),
                Arc::clone(&failures),
                Arc::clone(&answered),
            );
            let addr = edge.addr();
            clients.spawn(async move {
                let mut connection = Connection::open(addr).await;
                for request in 0..REQUESTS_PER_CLIENT {
                    let switched = done.load(Ordering::SeqCst);
                    let result = connection.get("/").await;
                    let later = begun.load(Ordering::SeqCst);
                    let failure = match result {
                        Err(e) => Some(format!("client {client} request {request}: {e}")),
                        Ok(a) if !a.status.is_success() => {
                            Some(format!("client {client} request {request}: {} {}", a.status, a.body))
                        }
                        Ok(a) => {
                            let want = if switched.is_multiple_of(2) { "blue" } else { "green" };
                            (later == switched && a.backend.as_deref() != Some(want)).then(|| {
                                format!(
                                    "client {client} request {request}: sent after switch {switched}, \
                                     answered by {:?}, not {want}",
                                    a.backend
                                )
                            })
                        }
                    };
                    if let Some(failure) = failure {
                        failures.lock().unwrap().push(failure);
                    }
                    answered.send_modify(|n| *n += 1);
                }
                assert!(!connection.is_closed(), "client {client}: the edge closed the connection");
            });
        }

        let admin = edge.client();
        let switcher = async {
            let mut progress = progress;
            for switch in 1..=SWITCHES {
                let wanted = switch * REQUESTS_BETWEEN_SWITCHES;
                progress.wait_for(|n| *n >= wanted).await.unwrap();
                let (_, backend) = target(switch);
                begun.store(switch, Ordering::SeqCst);
                let previous = admin
                    .switch("web", &backend)
                    .await
                    .unwrap()
                    .previous
                    .unwrap();
                done.store(switch, Ordering::SeqCst);
                assert_eq!(previous, target(switch - 1).1);
                let drained = admin
                    .drain("web", &previous.release, SIGNAL_TIMEOUT)
                    .await
                    .unwrap();
                assert!(drained.drained, "switch {switch}: {drained:?}");
            }
        };
        tokio::time::timeout(Duration::from_secs(120), switcher)
            .await
            .expect("the switches did not finish in time");
        let all = async {
            while let Some(joined) = clients.join_next().await {
                joined.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("the clients did not finish in time");

        let failures = failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failures, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert_eq!(*answered.borrow(), CLIENTS * REQUESTS_PER_CLIENT);
        assert_eq!(
            blue.served() + green.served(),
            CLIENTS * REQUESTS_PER_CLIENT
        );
        assert_eq!(done.load(Ordering::SeqCst), SWITCHES);
    }
}
