//! The running edge: the state the admin API reads and changes, shared by the serving tasks.
//!
//! [`Edge`] holds the route table and the one way to change it ([`Edge::change`]: under the
//! save lock, refused once the edge handed over, then saved to `routes.json`), the settings
//! and TLS state it runs with, and how it stops. It also holds what a hand-over passes on
//! or leaves behind (copies of the listening sockets, the directory lock, the successor's
//! stream) and the [`Predecessor`] this edge took over from, while that one finishes. The
//! hand-over itself is [`crate::handover`]; the process around the edge (binding, signals,
//! the pid file) is [`crate::server`].

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use nix::fcntl::Flock;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ahead::Ahead;
use crate::api::{CandidateStatus, DrainingStatus, RouteStatus, Status};
use crate::connection::Stop;
use crate::connector::Connector;
use crate::listener::{Listeners, Passable};
use crate::route::RouteTable;
use crate::settings::Settings;
use crate::state;
use crate::tls::{CertificateFiles, TlsState};
use crate::workers::Workers;
use crate::{Backend, EdgeError};

/// How long a switch waits for its connection ahead ([`Edge::connect_ahead`]) at most.
pub(crate) const CONNECT_AHEAD_LIMIT: std::time::Duration = std::time::Duration::from_millis(200);

/// How long a switch waits, once it took effect, before it saves the table. The save writes
/// and fsyncs two files: about half a millisecond of CPU, mostly in the kernel, on one of
/// the box's cores. Started at once, it runs just when the first requests to the new slot
/// do, and on a small box it delays them (the switch's slowest cases in
/// `bench/RESULTS.md`). Waiting this long lets them through first. The switch's answer
/// still comes only once the table is saved, so a crash in between is a switch that was
/// not acknowledged, as a crash during the save already was.
pub(crate) const SWITCH_SAVE_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// The state the admin API works on.
#[derive(Debug)]
pub(crate) struct Edge {
    pub(crate) table: Arc<RouteTable>,
    pub(crate) dir: PathBuf,
    pub(crate) listen: SocketAddr,
    pub(crate) tls_listen: Option<SocketAddr>,
    started_at: Timestamp,
    pub(crate) settings: Settings,
    pub(crate) tls: Option<Arc<TlsState>>,
    /// Serializes change + save, so the file always ends with the latest table. A
    /// hand-over holds it from the offer on, so no change is made that the successor
    /// would not see.
    persist: Arc<tokio::sync::Mutex<()>>,
    pub(crate) stop: watch::Sender<Stop>,
    /// The listening sockets, to hand over; `None` once stopping.
    pub(crate) passable: Mutex<Option<Passable>>,
    /// The exclusive lock on `edge.lock`; `None` once released or handed over.
    pub(crate) lock: Mutex<Option<Flock<File>>>,
    pub(crate) handing_over: AtomicBool,
    pub(crate) handed_over: AtomicBool,
    /// The successor's end of the hand-over, closed when this process is done.
    pub(crate) successor: Mutex<Option<UnixStream>>,
    /// The edge this one took over from, while it finishes.
    pub(crate) predecessor: Option<Predecessor>,
    /// Notified after every route change, so the lease task sees a new or renewed lease.
    pub(crate) routes_changed: tokio::sync::Notify,
    /// Connections opened for each service's next switch ([`Edge::connect_next`]).
    pub(crate) ahead: Ahead,
    /// The threads client connections run on.
    pub(crate) workers: Arc<Workers>,
}

impl Edge {
    pub(crate) fn new(
        table: Arc<RouteTable>,
        dir: PathBuf,
        listeners: &Listeners,
        settings: Settings,
        lock: Option<Flock<File>>,
        predecessor: Option<Predecessor>,
    ) -> Result<Arc<Edge>, EdgeError> {
        let (listen, tls_listen) = listeners
            .addrs()
            .map_err(|e| EdgeError::io("read the address of a listener in", &dir, e))?;
        let passable = listeners
            .passable()
            .map_err(|e| EdgeError::io("duplicate a listening socket in", &dir, e))?;
        // The settings report the addresses actually bound (port 0 resolved), so a
        // successor that keeps them asks for these.
        let mut settings = settings;
        if let (Some(tls), Some(addr)) = (settings.tls.as_mut(), tls_listen) {
            tls.listen = addr;
        }
        let tls = listeners
            .secure
            .as_ref()
            .map(|(_, state)| Arc::clone(state));
        let threads = settings.tuning.threads;
        let workers = match Workers::start(threads) {
            Ok(workers) => workers,
            // A take-over is past the point where the old edge stopped accepting: it must
            // serve, even without its threads.
            Err(e) if predecessor.is_some() => {
                tracing::error!(
                    "cannot start {threads} serving threads ({e}); serving client connections \
                     on the edge's own runtime"
                );
                Workers::here()
            }
            Err(e) => return Err(EdgeError::io("start the serving threads for", &dir, e)),
        };
        let (stop, _) = watch::channel(Stop::Running);
        Ok(Arc::new(Edge {
            table,
            dir,
            listen,
            tls_listen,
            started_at: Timestamp::now(),
            settings,
            tls,
            persist: Arc::new(tokio::sync::Mutex::new(())),
            stop,
            passable: Mutex::new(Some(passable)),
            lock: Mutex::new(lock),
            handing_over: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            successor: Mutex::new(None),
            predecessor,
            routes_changed: tokio::sync::Notify::new(),
            ahead: Ahead::default(),
            workers: Arc::new(workers),
        }))
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
                        lease: c.lease,
                        sticky: c.sticky,
                    }),
                    since: route.since,
                    draining: route
                        .draining
                        .into_iter()
                        .map(|(backend, in_flight)| DrainingStatus { backend, in_flight })
                        .collect(),
                    paused: route.pause.map(Into::into),
                    maintenance: route.maintenance.map(Into::into),
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
        self.change_then_save_after(std::time::Duration::ZERO, change)
            .await
    }

    /// As [`Edge::change`], with the save started `delay` after the change took effect
    /// (see [`SWITCH_SAVE_DELAY`]). The save lock is held meanwhile, so changes stay in order.
    pub(crate) async fn change_then_save_after<T, E: From<EdgeError>>(
        &self,
        delay: std::time::Duration,
        change: impl FnOnce(&RouteTable) -> Result<T, E>,
    ) -> Result<Result<T, EdgeError>, E> {
        let saving = Arc::clone(&self.persist).lock_owned().await;
        self.refuse_if_handed_over()?;
        let changed = change(&self.table)?;
        self.routes_changed.notify_waiters();
        // The save runs on a task of its own, which holds the lock until the files are in
        // place: a caller that goes away (an admin client that hung up) leaves neither a
        // change in effect that is never saved nor a save still running outside the lock.
        let (table, listen, dir) = (Arc::clone(&self.table), self.listen, self.dir.clone());
        let saved = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let saved = save_routes(&table, listen, dir).await;
            drop(saving);
            saved
        });
        Ok(saved
            .await
            .unwrap_or_else(|e| Err(save_failed(&self.dir, e)))
            .map(|()| changed))
    }

    /// Refuses a route change, or what prepares one, once the edge handed over: the table no
    /// longer serves new connections.
    pub(crate) fn refuse_if_handed_over(&self) -> Result<(), EdgeError> {
        if self.handed_over.load(Ordering::SeqCst) {
            return Err(EdgeError::HandedOver {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Has a connection ready to each backend `service` now sends requests to.
    pub(crate) fn warm(&self, service: &str) {
        self.warm_with(service, None);
    }

    /// As [`Edge::warm`], giving `ahead` (a connection opened before the switch, by
    /// [`Edge::connect_ahead`]) to the pool of the backend it was opened to.
    pub(crate) fn warm_with(&self, service: &str, ahead: Option<(Backend, TcpStream)>) {
        let tuning = &self.settings.tuning;
        let serving = self.table.serving(service);
        if let Some((backend, stream)) = ahead
            && let Some(active) = serving.iter().find(|a| *a.backend() == backend)
            && active.members()[0].pool().is_empty()
        {
            // To the first serving thread, where the warm-up below opens its connections.
            match self.workers.give_first(stream) {
                Ok((stream, home)) => {
                    active.members()[0]
                        .pool()
                        .put_homed(stream, tuning.pool_idle_timeout, home);
                }
                Err(e) => tracing::debug!("cannot give the connection opened ahead: {e}"),
            }
        }
        crate::backend::warm(
            serving,
            &self.connector(),
            tuning.pool_idle_timeout,
            &self.workers,
        );
    }

    /// A connector to slots, with the edge's connect timeout and metrics.
    fn connector(&self) -> Connector {
        let timeout = self.settings.tuning.connect_timeout;
        Connector::new(timeout, Arc::clone(self.table.metrics()))
    }

    /// A connection to `backend`, opened before it is switched in so that the first request
    /// after the switch does not wait for a connect: the one [`Edge::connect_next`] holds for
    /// it when that one is still open, else a new one. `None` when it is live already, when a
    /// replaced instance of it that still drains holds an open one (the switch takes that), or
    /// when the connect fails or takes longer than [`CONNECT_AHEAD_LIMIT`] (the switch then
    /// goes on, and the first request connects as usual).
    pub(crate) async fn connect_ahead(
        &self,
        service: &str,
        backend: &Backend,
    ) -> Option<(Backend, TcpStream)> {
        let idle_timeout = self.settings.tuning.pool_idle_timeout;
        if let Some(stream) = self.ahead.take(service, backend, idle_timeout) {
            return Some((backend.clone(), stream));
        }
        let serving = self.table.serving(service);
        if serving.iter().any(|a| a.backend() == backend)
            || self
                .table
                .has_open_idle(service, backend, self.settings.tuning.pool_idle_timeout)
        {
            return None;
        }
        crate::connector::connect_at_once(backend.addr, CONNECT_AHEAD_LIMIT)
            .await
            .ok()
            .map(|stream| (backend.clone(), stream))
    }

    /// Opens the connection [`Edge::connect_ahead`] would, now, and holds it for the next
    /// switch of `service` to `backend` ([`crate::ahead`]): the pipeline calls this once the
    /// new slot passed verification, so the switch does not wait for the connect. Closed
    /// unused after the pool's idle timeout. Whether a connection is held.
    pub(crate) async fn connect_next(self: &Arc<Self>, service: &str, backend: Backend) -> bool {
        let Some((backend, stream)) = self.connect_ahead(service, &backend).await else {
            return false;
        };
        let idle_timeout = self.settings.tuning.pool_idle_timeout;
        let edge = Arc::downgrade(self);
        let owner = service.to_owned();
        self.ahead
            .hold(service, backend, stream, idle_timeout, move |held| {
                tokio::spawn(async move {
                    tokio::time::sleep(idle_timeout).await;
                    if let Some(edge) = edge.upgrade() {
                        edge.ahead.expire(&owner, &held);
                    }
                })
                .abort_handle()
            });
        true
    }

    /// Reads the TLS certificates again (`certificates`, or the current files), and serves
    /// them from the next handshake on. Returns the files now served.
    pub(crate) fn reload_tls(
        &self,
        certificates: Option<Vec<CertificateFiles>>,
    ) -> Result<Vec<CertificateFiles>, EdgeError> {
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

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    /// Holds route changes back until the guard is dropped.
    pub(crate) async fn freeze_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.persist.lock().await
    }

    /// Saves the table, after any change under way.
    pub(crate) async fn persist(&self) -> Result<(), EdgeError> {
        let _saving = self.persist.lock().await;
        save_routes(&self.table, self.listen, self.dir.clone()).await
    }
}

/// Saves `table` in `dir`; the caller holds the edge's `persist` lock.
async fn save_routes(
    table: &RouteTable,
    listen: SocketAddr,
    dir: PathBuf,
) -> Result<(), EdgeError> {
    let saved = crate::route::saved_routes(listen, &table.view());
    let into = dir.clone();
    // fsync can take milliseconds; keep it off the runtime's workers. Once started, it runs
    // to its end even if the caller goes away.
    tokio::task::spawn_blocking(move || state::save(&into, &saved))
        .await
        .unwrap_or_else(|e| Err(save_failed(&dir, e)))
}

/// A save whose task panicked or was cancelled.
fn save_failed(dir: &Path, e: tokio::task::JoinError) -> EdgeError {
    EdgeError::io(
        "save the routes in",
        dir,
        std::io::Error::other(e.to_string()),
    )
}

/// The route table as `routes.json` in `dir` holds it (or its last good copy, see
/// [`state::restore`]).
pub(crate) fn load_routes(dir: &Path) -> Result<Arc<RouteTable>, EdgeError> {
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
                if let Some(lapsed) = table.restore(&route) {
                    tracing::warn!(
                        service = %route.service, release = %lapsed.release, slot = %lapsed.slot,
                        "not restoring the candidate: its lease lapsed while the edge was down"
                    );
                }
            }
        }
        None => tracing::info!(dir = %dir.display(), "no saved routes; starting with none"),
    }
    Ok(table)
}

/// The edge process this one took over from, while it finishes its connections.
#[derive(Debug)]
pub(crate) struct Predecessor {
    pub(crate) pid: u32,
    /// Every (service, release) it may still send requests to.
    serving: Vec<(String, String)>,
    /// Turns true when it is gone.
    gone: watch::Receiver<bool>,
}

impl Predecessor {
    pub(crate) fn new(
        pid: u32,
        serving: Vec<(String, String)>,
        gone: watch::Receiver<bool>,
    ) -> Predecessor {
        Predecessor { pid, serving, gone }
    }

    /// Whether it may still send requests to `release` of `service`.
    pub(crate) fn may_serve(&self, service: &str, release: &str) -> bool {
        !*self.gone.borrow()
            && self
                .serving
                .iter()
                .any(|(s, r)| s == service && r == release)
    }

    pub(crate) fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }

    /// Waits until it is gone or `deadline` passes; true when it is gone.
    pub(crate) async fn wait_gone(&self, deadline: Instant) -> bool {
        let mut gone = self.gone.clone();
        tokio::time::timeout_at(deadline, gone.wait_for(|gone| *gone))
            .await
            .is_ok_and(|r| r.is_ok())
            || *self.gone.borrow()
    }
}

/// Locks `mutex`, also after a panic elsewhere held it: what it guards stays usable.
pub(crate) fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
