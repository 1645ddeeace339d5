//! The edge process: the traffic listener, the admin socket and the saved routes, together.
//!
//! [`run`] is what `shipit edge run` calls: it starts the edge and waits for SIGTERM,
//! SIGINT or `POST /shutdown`. [`start`] runs the same edge inside the caller's runtime and
//! hands back an [`EdgeHandle`] (tests use it). On stop, the edge stops accepting, lets
//! the requests in flight finish for a bounded grace period, then removes its socket.
//! [`take_over`] and [`run_taking_over`] start an edge on the sockets of the one running in
//! the same directory instead of binding its own (see [`crate::handover`]); the old one
//! then stops accepting and finishes its connections, leaving the socket files and the
//! lock to the new one. Logs go through `tracing`; nothing is written to stdout.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::api::{CandidateStatus, DrainingStatus, RouteStatus, Status};
use crate::connection::{self, ClientConn, Stop, stopped};
use crate::connector::Connector;
use crate::handover::{Offer, Passed, Predecessor};
use crate::proxy::Proxy;
use crate::route::RouteTable;
use crate::settings::{Settings, Tuning};
use crate::state::{self, SavedRoutes};
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

/// How [`take_over`] starts: from the edge running in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOver {
    /// The edge directory; an edge must be running there.
    pub dir: PathBuf,
    /// The traffic address the new edge must serve: the running edge's must match it
    /// (port 0: any port on that address). `None` keeps the running edge's.
    pub listen: Option<SocketAddr>,
    /// The settings to run with (TLS certificates are read again in any case). `None`
    /// keeps the running edge's.
    pub settings: Option<Settings>,
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
    let signals = Signals::new(&opts.dir)?;
    let handle = start_settings(opts, settings).await?;
    signals.serve(handle).await
}

/// Takes over from the edge running in `spec.dir` (see [`take_over`]), then runs like
/// [`run`]. Fails, leaving the running edge serving, when it cannot take over.
pub async fn run_taking_over(spec: TakeOver) -> Result<(), EdgeError> {
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
    let (edge, parts) = Edge::new(
        table,
        dir,
        Sockets {
            traffic: listener,
            secure,
            admin: admin_listener,
        },
        settings,
        Some(lock),
        None,
    )?;
    edge.persist().await?;
    edge.write_pid()?;
    Ok(edge.serve(parts))
}

/// Starts an edge on the sockets of the one running in `spec.dir`, which then stops
/// accepting and finishes its connections. No connection is refused meanwhile: the
/// listening sockets stay open throughout, and the old edge accepts until the new one is
/// ready. On `Err`, the running edge was left serving.
pub async fn take_over(spec: TakeOver) -> Result<EdgeHandle, EdgeError> {
    let dir = spec.dir.clone();
    let refused = |reason: String| EdgeError::Handover {
        dir: dir.clone(),
        reason,
    };
    // Fails early, before bothering the running edge, when the files are bad.
    let early = spec
        .settings
        .as_ref()
        .and_then(|s| s.tls.as_ref())
        .map(TlsState::new)
        .transpose()?;
    let mut taken = crate::handover::take(&dir).await?;
    let offer = taken.offer.clone();
    if let Some(wanted) = spec.listen {
        let running = offer.listen;
        if running.ip() != wanted.ip() || (wanted.port() != 0 && wanted.port() != running.port()) {
            return Err(refused(format!(
                "the running edge (pid {}) listens on {running}, not on {wanted}; an upgrade \
                 keeps the address: stop the edge and start it again to move it",
                offer.pid
            )));
        }
    }
    let settings = spec.settings.unwrap_or_else(|| offer.settings.clone());
    let tls = match early {
        Some(state) => Some(state),
        None => settings.tls.as_ref().map(TlsState::new).transpose()?,
    };

    let traffic = tokio_listener(taken.traffic.try_clone(), &offer.listen, &refused)?;
    let secure = match (&settings.tls, tls) {
        (Some(options), Some(state)) => {
            let wanted = options.listen;
            let inherited = offer.tls_listen.filter(|running| {
                running.ip() == wanted.ip()
                    && (wanted.port() == 0 || wanted.port() == running.port())
            });
            let listener = match (inherited, taken.tls.as_ref()) {
                (Some(running), Some(socket)) => {
                    tokio_listener(socket.try_clone(), &running, &refused)?
                }
                _ => TcpListener::bind(wanted)
                    .await
                    .map_err(|source| EdgeError::Bind {
                        addr: wanted,
                        source,
                    })?,
            };
            Some((listener, Arc::new(state)))
        }
        _ => {
            if let Some(running) = offer.tls_listen {
                tracing::warn!(%running, "the new edge has no TLS: TLS on {running} ends with the old edge");
            }
            None
        }
    };
    let admin = taken
        .admin
        .try_clone()
        .and_then(|admin| {
            admin.set_nonblocking(true)?;
            UnixListener::from_std(admin)
        })
        .map_err(|e| refused(format!("cannot use the admin socket: {e}")))?;
    let table = load_routes(&dir)?;

    // The point of no return: after the `A`, the old edge no longer accepts.
    taken.commit().await?;
    let lock = match Flock::lock(
        taken
            .lock
            .try_clone()
            .map_err(|e| EdgeError::io("take over", dir.join(LOCK_FILE), e))?,
        FlockArg::LockSharedNonblock,
    ) {
        Ok(lock) => {
            if let Err(errno) = lock.relock(FlockArg::LockExclusiveNonblock) {
                tracing::warn!("cannot convert the inherited lock back to exclusive: {errno}");
            }
            Some(lock)
        }
        Err((_, errno)) => {
            tracing::warn!("cannot convert the inherited lock to this process: {errno}");
            None
        }
    };
    tracing::info!(
        previous = offer.pid, listen = %offer.listen,
        "took over the sockets of the previous edge"
    );
    let predecessor = taken.predecessor();
    let (edge, parts) = Edge::new(
        table,
        dir,
        Sockets {
            traffic,
            secure,
            admin,
        },
        settings,
        lock,
        Some(predecessor),
    )?;
    // Nothing after the `A` may stop this edge from serving: it is the only one accepting.
    if let Err(e) = edge.persist().await {
        tracing::error!("cannot save the routes after taking over: {e}");
    }
    if let Err(e) = edge.write_pid() {
        tracing::error!("cannot write the pid file after taking over: {e}");
    }
    Ok(edge.serve(parts))
}

fn tokio_listener(
    socket: std::io::Result<std::net::TcpListener>,
    addr: &SocketAddr,
    refused: &impl Fn(String) -> EdgeError,
) -> Result<TcpListener, EdgeError> {
    socket
        .and_then(|socket| {
            socket.set_nonblocking(true)?;
            TcpListener::from_std(socket)
        })
        .map_err(|e| refused(format!("cannot use the listener on {addr}: {e}")))
}

/// The route table as `routes.json` in `dir` holds it (or its last good copy, see
/// [`state::restore`]).
fn load_routes(dir: &Path) -> Result<Arc<RouteTable>, EdgeError> {
    let table = Arc::new(RouteTable::new());
    match state::restore(dir)? {
        Some(restored) => {
            for route in restored.routes.routes {
                tracing::info!(
                    service = %route.service, slot = %route.live.slot,
                    release = %route.live.release, addr = %route.live.addr,
                    candidate = ?route.candidate.as_ref().map(|c| &c.backend.release),
                    "restored route from {}", restored.from.display()
                );
                table.restore(&route);
            }
        }
        None => tracing::info!(dir = %dir.display(), "no saved routes; starting with none"),
    }
    Ok(table)
}

/// The listeners an edge serves on.
struct Sockets {
    traffic: TcpListener,
    secure: Option<(TcpListener, Arc<TlsState>)>,
    admin: UnixListener,
}

/// Copies of the listening sockets, kept to hand them over; dropped once the edge stops,
/// so that a stopped edge's port refuses connections.
#[derive(Debug)]
struct Passable {
    traffic: OwnedFd,
    tls: Option<OwnedFd>,
    admin: OwnedFd,
}

/// A running edge.
#[derive(Debug)]
pub struct EdgeHandle {
    edge: Arc<Edge>,
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
        if !self.handed_over() {
            drop(guard(&self.edge.lock).take());
        }
    }
}

fn guard<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state the admin API works on.
#[derive(Debug)]
pub(crate) struct Edge {
    table: Arc<RouteTable>,
    dir: PathBuf,
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    started_at: Timestamp,
    settings: Settings,
    tls: Option<Arc<TlsState>>,
    /// Serializes change + save, so the file always ends with the latest table. A
    /// hand-over holds it from the offer on, so no change is made that the successor
    /// would not see.
    persist: tokio::sync::Mutex<()>,
    stop: watch::Sender<Stop>,
    /// The listening sockets, to hand over; `None` once stopping.
    passable: Mutex<Option<Passable>>,
    /// The exclusive lock on `edge.lock`; `None` once released or handed over.
    lock: Mutex<Option<Flock<File>>>,
    handing_over: AtomicBool,
    handed_over: AtomicBool,
    /// The successor's end of the hand-over, closed when this process is done.
    successor: Mutex<Option<UnixStream>>,
    /// The edge this one took over from, while it finishes.
    predecessor: Option<Predecessor>,
}

/// What [`Edge::serve`] moves into the serving tasks.
struct ServeParts {
    traffic: TcpListener,
    secure: Option<(TcpListener, TlsAcceptor)>,
    admin: UnixListener,
}

impl Edge {
    fn new(
        table: Arc<RouteTable>,
        dir: PathBuf,
        sockets: Sockets,
        settings: Settings,
        lock: Option<Flock<File>>,
        predecessor: Option<Predecessor>,
    ) -> Result<(Arc<Edge>, ServeParts), EdgeError> {
        let bound = |addr: std::io::Result<SocketAddr>| {
            addr.map_err(|e| EdgeError::io("read the address of a listener in", &dir, e))
        };
        let listen = bound(sockets.traffic.local_addr())?;
        let tls_listen = match &sockets.secure {
            Some((listener, _)) => Some(bound(listener.local_addr())?),
            None => None,
        };
        let copy = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| EdgeError::io("duplicate a listening socket in", &dir, e))
        };
        let passable = Passable {
            traffic: copy(sockets.traffic.as_fd())?,
            tls: match &sockets.secure {
                Some((listener, _)) => Some(copy(listener.as_fd())?),
                None => None,
            },
            admin: copy(sockets.admin.as_fd())?,
        };
        // The settings report the addresses actually bound (port 0 resolved), so a
        // successor that keeps them asks for these.
        let mut settings = settings;
        if let (Some(tls), Some(addr)) = (settings.tls.as_mut(), tls_listen) {
            tls.listen = addr;
        }
        let tls = sockets.secure.as_ref().map(|(_, state)| Arc::clone(state));
        let (stop, _) = watch::channel(Stop::Running);
        let parts = ServeParts {
            traffic: sockets.traffic,
            secure: sockets
                .secure
                .map(|(listener, state)| (listener, state.acceptor())),
            admin: sockets.admin,
        };
        let edge = Arc::new(Edge {
            table,
            dir,
            listen,
            tls_listen,
            started_at: Timestamp::now(),
            settings,
            tls,
            persist: tokio::sync::Mutex::new(()),
            stop,
            passable: Mutex::new(Some(passable)),
            lock: Mutex::new(lock),
            handing_over: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            successor: Mutex::new(None),
            predecessor,
        });
        Ok((edge, parts))
    }

    /// Starts the serving tasks.
    fn serve(self: &Arc<Edge>, parts: ServeParts) -> EdgeHandle {
        let tuning = self.settings.tuning;
        let proxy = Arc::new(Proxy::new(Arc::clone(&self.table), &tuning));
        let mut tasks = JoinSet::new();
        let stop = self.stop.clone();
        let traffic = async move {
            let plain = serve_traffic(
                parts.traffic,
                Arc::clone(&proxy),
                stop.subscribe(),
                tuning,
                None,
            );
            let secure = async {
                match parts.secure {
                    Some((listener, acceptor)) => {
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
        };
        tasks.spawn(traffic);
        tasks.spawn(serve_admin(
            parts.admin,
            Arc::clone(self),
            self.stop.subscribe(),
            tuning.shutdown_grace,
        ));
        let admin_socket = self.dir.join(ADMIN_SOCKET);
        tracing::info!(
            listen = %self.listen, tls = ?self.tls_listen, admin = %admin_socket.display(),
            previous = ?self.predecessor.as_ref().map(|p| p.pid),
            "edge started"
        );
        EdgeHandle {
            edge: Arc::clone(self),
            admin_socket,
            tasks,
        }
    }

    fn write_pid(&self) -> Result<(), EdgeError> {
        state::write_atomic(
            &self.dir.join(PID_FILE),
            format!("{}\n", std::process::id()).as_bytes(),
        )
    }

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
            previous_pid: self
                .predecessor
                .as_ref()
                .filter(|p| !p.is_gone())
                .map(|p| p.pid),
        }
    }

    /// Makes one route change the way every change is made: under the save lock, so the
    /// saved file ends with the latest table and a hand-over that holds the lock sees every
    /// change; refused once the edge handed over, as it would change a table that no longer
    /// serves new connections; then saved. The change takes effect before the save: the
    /// outer error is a change that was not made, the inner one a save that failed after it.
    pub(crate) async fn change<T, E: From<EdgeError>>(
        &self,
        change: impl FnOnce(&RouteTable) -> Result<T, E>,
    ) -> Result<Result<T, EdgeError>, E> {
        let _saving = self.persist.lock().await;
        if self.handed_over.load(Ordering::SeqCst) {
            return Err(EdgeError::HandedOver {
                dir: self.dir.clone(),
            }
            .into());
        }
        let changed = change(&self.table)?;
        Ok(self.save().await.map(|()| changed))
    }

    /// Has a connection ready to each backend `service` now sends requests to.
    pub(crate) fn warm(&self, service: &str) {
        let tuning = &self.settings.tuning;
        let connector = Connector::new(tuning.connect_timeout, Arc::clone(self.table.metrics()));
        crate::pool::warm(
            self.table.serving(service),
            &connector,
            tuning.pool_idle_timeout,
        );
    }

    /// Reads the TLS certificates again (`certificates`, or the current files), and serves
    /// them from the next handshake on. Returns the files now served.
    pub(crate) fn reload_tls(
        &self,
        certificates: Option<Vec<crate::tls::CertificateFiles>>,
    ) -> Result<Vec<crate::tls::CertificateFiles>, EdgeError> {
        let Some(tls) = &self.tls else {
            return Err(EdgeError::NoTls {
                dir: self.dir.clone(),
            });
        };
        let files = tls.reload(certificates)?;
        tracing::info!(certificates = files.len(), "TLS certificates reloaded");
        Ok(files)
    }

    /// The predecessor's part of a drain: waits, until `deadline`, for the edge this one
    /// took over from to finish, when it may still send requests to `release`. True when
    /// it has nothing (more) to do with it.
    pub(crate) async fn predecessor_drained(
        &self,
        service: &str,
        release: &str,
        deadline: Instant,
    ) -> bool {
        match &self.predecessor {
            Some(previous) if previous.may_serve(service, release) => {
                tracing::info!(
                    %service, %release, pid = previous.pid,
                    "waiting for the previous edge process, which may still serve this release"
                );
                previous.wait_gone(deadline).await
            }
            _ => true,
        }
    }

    /// Stops the edge (no-op when it is already stopping).
    pub(crate) fn request_stop(&self) {
        self.stop.send_if_modified(|stop| {
            if *stop == Stop::Running {
                *stop = Stop::Now;
                true
            } else {
                false
            }
        });
        drop(guard(&self.passable).take());
    }

    /// Marks the start of a hand-over; refused while one runs or the edge stops.
    pub(crate) fn begin_handover(&self) -> Result<(), String> {
        if self.is_stopping() {
            return Err("this edge is stopping".to_string());
        }
        if self.handing_over.swap(true, Ordering::SeqCst) {
            return Err("a hand-over to another new edge is under way".to_string());
        }
        Ok(())
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    pub(crate) fn abandon_handover(&self) {
        self.handing_over.store(false, Ordering::SeqCst);
    }

    /// Holds route changes back until the guard is dropped.
    pub(crate) async fn freeze_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.persist.lock().await
    }

    /// What to hand over: the offer and copies of the descriptors it describes.
    pub(crate) fn offer(&self) -> Result<(Offer, Vec<OwnedFd>), String> {
        let copy = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| format!("cannot duplicate a socket: {e}"))
        };
        let mut passed = Vec::new();
        let mut fds = Vec::new();
        {
            let sockets = guard(&self.passable);
            let sockets = sockets.as_ref().ok_or("this edge is stopping")?;
            passed.push(Passed::Traffic);
            fds.push(copy(sockets.traffic.as_fd())?);
            if let Some(tls) = &sockets.tls {
                passed.push(Passed::Tls);
                fds.push(copy(tls.as_fd())?);
            }
            passed.push(Passed::Admin);
            fds.push(copy(sockets.admin.as_fd())?);
        }
        {
            let held = guard(&self.lock);
            let held = held
                .as_ref()
                .ok_or("this edge holds no lock on its directory")?;
            passed.push(Passed::Lock);
            fds.push(copy(held.as_fd())?);
        }
        let mut serving = Vec::new();
        for route in self.table.view() {
            let releases = route
                .live
                .iter()
                .chain(route.candidate.as_ref().map(|c| &c.backend))
                .chain(route.draining.iter().map(|(b, _)| b));
            for backend in releases {
                serving.push((route.service.clone(), backend.release.clone()));
            }
        }
        let mut settings = self.settings.clone();
        if let (Some(tls), Some(state)) = (settings.tls.as_mut(), &self.tls) {
            // What a reload last put in place, not what the edge started with.
            tls.certificates = state.files();
        }
        Ok((
            Offer {
                pid: std::process::id(),
                listen: self.listen,
                tls_listen: self.tls_listen,
                passed,
                settings,
                serving,
            },
            fds,
        ))
    }

    /// The successor is serving: stop accepting and finish, leaving the lock, the admin
    /// socket and the pid file to it. Called with route changes frozen.
    pub(crate) fn complete_handover(&self, successor: UnixStream) {
        self.handed_over.store(true, Ordering::SeqCst);
        *guard(&self.successor) = Some(successor);
        // Both processes share the lock's open file description: unlocking it here would
        // unlock it for the successor too. The descriptor stays open until this process
        // exits; the successor owns the lock from now on.
        if let Some(held) = guard(&self.lock).take() {
            std::mem::forget(held);
        }
        self.stop.send_replace(Stop::HandOver);
        drop(guard(&self.passable).take());
        tracing::info!("handed over to the new edge; no longer accepting");
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
    mut stop: watch::Receiver<Stop>,
    tuning: Tuning,
    tls: Option<TlsAcceptor>,
) -> Instant {
    let builder = Arc::new(connection::builder(&tuning));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Some(admitted) = proxy.admission.admit(remote.ip()) else {
                        proxy.table.metrics().count_connection_refused();
                        if tls.is_none() {
                            proxy.admission.refuse(stream);
                        }
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%remote, "cannot set TCP_NODELAY: {e}");
                    }
                    let conn = ClientConn::new(Arc::clone(&proxy), remote, tls.is_some());
                    let builder = Arc::clone(&builder);
                    let stop = stop.clone();
                    let idle = tuning.idle_timeout;
                    match &tls {
                        None => {
                            connections.spawn(async move {
                                connection::serve_tcp(builder, stream, conn, stop, idle).await;
                                drop(admitted);
                            });
                        }
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            let deadline = tuning.header_read_timeout;
                            connections.spawn(async move {
                                let _admitted = admitted;
                                match tokio::time::timeout(deadline, handshake).await {
                                    Ok(Ok(tls)) => connection::serve(builder, tls, Bytes::new(), conn, stop, idle).await,
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
    mut stop: watch::Receiver<Stop>,
    grace: Duration,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(crate::admin::ADMIN_HEADER_READ_TIMEOUT);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
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
                    // Upgrades: `POST /handover` turns the connection into the hand-over's.
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let mut stop = stop.clone();
                    connections.spawn(async move {
                        tokio::pin!(connection);
                        let ended = tokio::select! {
                            ended = connection.as_mut() => ended,
                            _ = stopped(&mut stop) => {
                                // Calls in flight (a drain) finish; idle connections close.
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(e) = ended {
                            tracing::debug!("admin connection ended: {e}");
                        }
                    });
                }
                Err(e) => accept_failed("admin", &e).await,
            },
        }
    }
    drop(listener);
    finish_connections(connections, grace, "admin").await;
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

fn create_dir(dir: &Path) -> Result<(), EdgeError> {
    crate::directory::create(dir)
}

/// One edge per directory: the lock is held for the edge's lifetime.
fn lock_dir(dir: &Path) -> Result<Flock<File>, EdgeError> {
    let path = dir.join(LOCK_FILE);
    let file = crate::directory::open(
        &path,
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
    )
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

    use crate::test_backend::{Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, get};
    use crate::{Backend, Slot};

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
