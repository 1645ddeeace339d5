//! The edge process: its listeners, its signals and the lock on its directory.
//!
//! [`run`] is what `shipit edge run` calls: it starts the edge and waits for SIGTERM,
//! SIGINT or `POST /shutdown`. [`start`] runs the same edge inside the caller's runtime and
//! hands back an [`EdgeHandle`] (tests use it). Starting binds the listeners, takes the
//! directory's lock (one edge per directory), loads the saved routes and writes the pid
//! file; then the serving tasks run: client connections ([`crate::listener`]) and the admin
//! API ([`crate::admin`]), both on the running [`Edge`]. On stop, the edge stops accepting,
//! lets the requests in flight finish for a bounded grace period, then removes its socket.
//! [`take_over`] and [`run_taking_over`] start an edge on the sockets of the one running in
//! the same directory instead of binding its own (see [`crate::handover`]); the old one
//! then stops accepting and finishes its connections, leaving the socket files and the
//! lock to the new one. Logs go through `tracing`; nothing is written to stdout.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::connection::{Stop, stopped};
use crate::edge::{Edge, guard, load_routes};
use crate::handover::TakeOver;
use crate::listener::Listeners;
use crate::proxy::Proxy;
use crate::settings::{Settings, Tuning};
use crate::state;
use crate::tls::{TlsOptions, TlsState};
use crate::{ADMIN_SOCKET, AdminClient, EdgeError, LOCK_FILE, PID_FILE};

/// Where the edge listens and keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeOptions {
    /// The traffic address; port 0 picks a free port (reported by `/status`).
    pub listen: SocketAddr,
    /// The edge directory: `admin.sock`, `routes.json`, `edge.pid`, `edge.log`.
    pub dir: PathBuf,
}

/// Runs the edge until SIGTERM, SIGINT or `POST /shutdown`, then stops it gracefully.
pub async fn run(opts: EdgeOptions) -> Result<(), EdgeError> {
    run_with(opts, Tuning::default()).await
}

/// [`run`] with other timeouts and limits.
pub async fn run_with(opts: EdgeOptions, tuning: Tuning) -> Result<(), EdgeError> {
    run_settings(opts, Settings { tuning, tls: None }).await
}

/// [`run_with`], also terminating TLS.
pub async fn run_with_tls(
    opts: EdgeOptions,
    tuning: Tuning,
    tls: TlsOptions,
) -> Result<(), EdgeError> {
    run_settings(
        opts,
        Settings {
            tuning,
            tls: Some(tls),
        },
    )
    .await
}

/// [`run`] with all its settings.
pub async fn run_settings(opts: EdgeOptions, settings: Settings) -> Result<(), EdgeError> {
    raise_open_file_limit();
    let signals = Signals::new(&opts.dir)?;
    let handle = start_settings(opts, settings).await?;
    signals.serve(handle).await
}

/// Lets the edge process open as many files as the system lets it (the soft limit up to
/// the hard one): every client and slot connection is a descriptor, and the usual soft
/// limit of 1024 runs out long before the connection limits do.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// Takes over from the edge running in `spec.dir` (see [`take_over`]), then runs like
/// [`run`]. Fails, leaving the running edge serving, when it cannot take over.
pub async fn run_taking_over(spec: TakeOver) -> Result<(), EdgeError> {
    raise_open_file_limit();
    let signals = Signals::new(&spec.dir)?;
    let handle = take_over(spec).await?;
    signals.serve(handle).await
}

/// SIGTERM and SIGINT, listened for before the edge starts.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new(dir: &Path) -> Result<Signals, EdgeError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())
                .map_err(|e| EdgeError::io("listen for SIGTERM in", dir, e))?,
            interrupt: signal(SignalKind::interrupt())
                .map_err(|e| EdgeError::io("listen for SIGINT in", dir, e))?,
        })
    }

    /// Waits for a signal or a stop request, then stops the edge gracefully. Meanwhile
    /// it rotates `edge.log` when the daemon started it; one that handed over leaves that
    /// to its successor, so two processes never rotate the same files.
    async fn serve(mut self, handle: EdgeHandle) -> Result<(), EdgeError> {
        let mut stop = handle.edge.stop.subscribe();
        let rotation = crate::log_file::keep_rotated(&handle.edge.dir);
        tokio::select! {
            never = rotation => match never {},
            _ = self.terminate.recv() => tracing::info!("SIGTERM received, stopping"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received, stopping"),
            stop = stopped(&mut stop) => if stop == Stop::HandOver {
                tracing::info!("handed over to the new edge; finishing the open connections");
            },
        }
        handle.shutdown().await
    }
}

/// Starts the edge in the current runtime.
pub async fn start(opts: EdgeOptions) -> Result<EdgeHandle, EdgeError> {
    start_with(opts, Tuning::default()).await
}

/// [`start`] with other timeouts and limits.
pub async fn start_with(opts: EdgeOptions, tuning: Tuning) -> Result<EdgeHandle, EdgeError> {
    start_settings(opts, Settings { tuning, tls: None }).await
}

/// [`start_with`], also terminating TLS.
pub async fn start_with_tls(
    opts: EdgeOptions,
    tuning: Tuning,
    tls: TlsOptions,
) -> Result<EdgeHandle, EdgeError> {
    start_settings(
        opts,
        Settings {
            tuning,
            tls: Some(tls),
        },
    )
    .await
}

/// [`start`] with all its settings.
pub async fn start_settings(
    opts: EdgeOptions,
    settings: Settings,
) -> Result<EdgeHandle, EdgeError> {
    // Bad certificates fail the start before anything is bound or locked.
    let tls = settings.tls.as_ref().map(TlsState::new).transpose()?;
    let dir = opts.dir.clone();
    create_dir(&dir)?;
    let lock = lock_dir(&dir)?;
    let table = load_routes(&dir)?;

    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| EdgeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let secure = match (&settings.tls, tls) {
        (Some(options), Some(state)) => {
            let listener =
                TcpListener::bind(options.listen)
                    .await
                    .map_err(|source| EdgeError::Bind {
                        addr: options.listen,
                        source,
                    })?;
            Some((listener, Arc::new(state)))
        }
        _ => None,
    };
    let admin_listener = crate::admin::bind(&dir.join(ADMIN_SOCKET))?;
    let listeners = Listeners {
        traffic: listener,
        secure,
        admin: admin_listener,
    };
    let edge = Edge::new(table, dir, &listeners, settings, Some(lock), None)?;
    edge.persist().await?;
    write_pid(&edge.dir)?;
    Ok(serve(&edge, listeners))
}

/// Starts an edge on the sockets of the one running in `spec.dir`, which then stops
/// accepting and finishes its connections. No connection is refused meanwhile: the
/// listening sockets stay open throughout, and the old edge accepts until the new one is
/// ready. On `Err`, the running edge was left serving.
pub async fn take_over(spec: TakeOver) -> Result<EdgeHandle, EdgeError> {
    let dir = spec.dir.clone();
    let received = crate::handover::receive(spec).await?;
    let edge = Edge::new(
        received.table,
        dir,
        &received.listeners,
        received.settings,
        received.lock,
        Some(received.predecessor),
    )?;
    // Nothing after the `A` may stop this edge from serving: it is the only one accepting.
    if let Err(e) = edge.persist().await {
        tracing::error!("cannot save the routes after taking over: {e}");
    }
    if let Err(e) = write_pid(&edge.dir) {
        tracing::error!("cannot write the pid file after taking over: {e}");
    }
    Ok(serve(&edge, received.listeners))
}

/// Starts the serving tasks: client connections on the traffic listeners, admin calls on
/// the admin socket.
fn serve(edge: &Arc<Edge>, listeners: Listeners) -> EdgeHandle {
    let tuning = edge.settings.tuning;
    let proxy = Arc::new(Proxy::new(
        Arc::clone(&edge.table),
        &tuning,
        edge.stop.subscribe(),
    ));
    let mut tasks = JoinSet::new();
    let secure = listeners
        .secure
        .map(|(listener, state)| (listener, state.acceptor()));
    tasks.spawn(crate::listener::serve_clients(
        listeners.traffic,
        secure,
        Arc::clone(&proxy),
        edge.stop.clone(),
        (tuning, Arc::clone(&edge.workers)),
    ));
    tasks.spawn(crate::admin::serve(
        listeners.admin,
        Arc::clone(edge),
        edge.stop.subscribe(),
        tuning.shutdown_grace,
    ));
    tasks.spawn(crate::expiry::expire_lapsed(
        Arc::clone(edge),
        edge.stop.subscribe(),
    ));
    let admin_socket = edge.dir.join(ADMIN_SOCKET);
    tracing::info!(
        listen = %edge.listen, tls = ?edge.tls_listen, admin = %admin_socket.display(),
        previous = ?edge.predecessor.as_ref().map(|p| p.pid),
        "edge started"
    );
    EdgeHandle {
        edge: Arc::clone(edge),
        proxy,
        admin_socket,
        tasks,
    }
}

fn write_pid(dir: &Path) -> Result<(), EdgeError> {
    state::write_atomic(
        &dir.join(PID_FILE),
        format!("{}\n", std::process::id()).as_bytes(),
    )
}

/// A running edge.
#[derive(Debug)]
pub struct EdgeHandle {
    edge: Arc<Edge>,
    /// The client side, whose tunnels a dropped handle closes.
    proxy: Arc<Proxy>,
    admin_socket: PathBuf,
    tasks: JoinSet<()>,
}

impl EdgeHandle {
    /// The address the edge serves traffic on.
    pub fn local_addr(&self) -> SocketAddr {
        self.edge.listen
    }

    /// The address the edge serves TLS on, when it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.edge.tls_listen
    }

    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    #[cfg(test)]
    pub(crate) fn edge(&self) -> &Edge {
        &self.edge
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.admin_socket)
    }

    /// Resolves once a stop was requested (`POST /shutdown`, [`EdgeHandle::shutdown`], or a
    /// hand-over to a new edge).
    pub async fn stop_requested(&self) {
        // The sender lives in `self`, so this only ends when a stop is requested.
        stopped(&mut self.edge.stop.subscribe()).await;
    }

    /// Whether this edge handed its sockets over to a new one.
    pub fn handed_over(&self) -> bool {
        self.edge.handed_over.load(Ordering::SeqCst)
    }

    /// Stops accepting, lets requests in flight finish (bounded by the grace period), and
    /// removes the admin socket and the pid file, unless they were handed over.
    pub async fn shutdown(mut self) -> Result<(), EdgeError> {
        self.edge.request_stop();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!("an edge task failed: {e}");
            }
        }
        if self.handed_over() {
            // The successor learns that this process is done when the stream closes.
            drop(guard(&self.edge.successor).take());
            tracing::info!("edge stopped after handing over");
            return Ok(());
        }
        remove_if_exists(&self.admin_socket, "remove the admin socket")?;
        let pid_file = self.edge.dir.join(PID_FILE);
        let ours = std::fs::read_to_string(&pid_file)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            remove_if_exists(&pid_file, "remove the pid file")?;
        }
        drop(guard(&self.edge.lock).take());
        tracing::info!("edge stopped");
        Ok(())
    }
}

impl Drop for EdgeHandle {
    /// A handle dropped without [`EdgeHandle::shutdown`] (a failing test) still stops the
    /// edge's tasks instead of leaving them serving without the directory lock.
    fn drop(&mut self) {
        self.edge.request_stop();
        // The tunnels run on the process's serving threads, which outlive this edge.
        self.proxy.cut_tunnels();
        if !self.handed_over() {
            drop(guard(&self.edge.lock).take());
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), EdgeError> {
    crate::directory::create(dir)
}

/// One edge per directory: the lock is held for the edge's lifetime.
fn lock_dir(dir: &Path) -> Result<Flock<File>, EdgeError> {
    let path = dir.join(LOCK_FILE);
    let file = crate::directory::open_lock(&path)?;
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
mod tests;
