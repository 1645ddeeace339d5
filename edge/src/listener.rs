//! The edge's listening sockets, and the loop that accepts client connections on them.
//!
//! An edge listens on the traffic address, on the TLS one when it terminates TLS, and on
//! its admin socket ([`Listeners`]). It keeps copies of the three ([`Passable`]) for as long
//! as it accepts, so that a hand-over can pass them to a new process while this one still
//! accepts on them: no connection is refused in between. [`serve_clients`] accepts client
//! connections until the edge stops, each one within the connection limits, then lets them
//! finish for the grace period. The admin socket's loop ([`crate::admin::serve`]) accepts
//! the same way, through [`accept_until_stopped`].

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::connection::{self, ClientConn, Stop, stopped};
use crate::proxy::Proxy;
use crate::settings::Tuning;
use crate::tls::TlsState;
use crate::workers::Workers;

/// The listeners an edge serves on.
pub(crate) struct Listeners {
    pub(crate) traffic: TcpListener,
    pub(crate) secure: Option<(TcpListener, Arc<TlsState>)>,
    pub(crate) admin: UnixListener,
}

impl Listeners {
    /// The addresses bound (port 0 resolved): traffic, and TLS when on.
    pub(crate) fn addrs(&self) -> std::io::Result<(SocketAddr, Option<SocketAddr>)> {
        let traffic = self.traffic.local_addr()?;
        let tls = match &self.secure {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        };
        Ok((traffic, tls))
    }

    /// Copies of the listening sockets, to hand over.
    pub(crate) fn passable(&self) -> std::io::Result<Passable> {
        let copy = |fd: BorrowedFd<'_>| fd.try_clone_to_owned();
        Ok(Passable {
            traffic: copy(self.traffic.as_fd())?,
            tls: match &self.secure {
                Some((listener, _)) => Some(copy(listener.as_fd())?),
                None => None,
            },
            admin: copy(self.admin.as_fd())?,
        })
    }
}

/// Copies of the listening sockets, kept to hand them over; dropped once the edge stops,
/// so that a stopped edge's port refuses connections.
#[derive(Debug)]
pub(crate) struct Passable {
    pub(crate) traffic: OwnedFd,
    pub(crate) tls: Option<OwnedFd>,
    pub(crate) admin: OwnedFd,
}

/// Serves client connections on the traffic listener, and on the TLS one when there is
/// one, until a stop is requested; then lets them finish, and gives upgraded connections
/// what is left of the grace period.
pub(crate) async fn serve_clients(
    traffic: TcpListener,
    secure: Option<(TcpListener, TlsAcceptor)>,
    proxy: Arc<Proxy>,
    stop: watch::Sender<Stop>,
    (tuning, workers): (Tuning, Arc<Workers>),
) {
    let serving = (tuning, Arc::clone(&workers));
    let plain = serve_traffic(traffic, Arc::clone(&proxy), stop.subscribe(), serving, None);
    let secure = async {
        match secure {
            Some((listener, acceptor)) => {
                let proxy = Arc::clone(&proxy);
                let serving = (tuning, workers);
                serve_traffic(listener, proxy, stop.subscribe(), serving, Some(acceptor)).await
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

/// What [`connection::serve_client`] takes besides the stream.
pub(crate) type Serving = (
    Arc<connection::Builder>,
    Arc<ClientConn>,
    watch::Receiver<Stop>,
    Duration,
);

/// The TLS handshake (within `deadline`), then the connection. The handshake is made
/// inside the task, so that the task holds the handshake's state only while it runs: every
/// idle TLS connection is a task of this future's size.
pub(crate) async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
    (builder, conn, stop, idle): Serving,
) {
    let remote = conn.remote;
    let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(%remote, "TLS handshake failed: {e}"),
        Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
    };
    connection::serve_client(builder, tls, conn, stop, idle).await;
}

/// Accepts client connections until a stop is requested, each served on the next serving
/// thread ([`Workers`]), then lets them finish (bounded by the grace period). Returns when it
/// stopped accepting.
async fn serve_traffic(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    stop: watch::Receiver<Stop>,
    (tuning, workers): (Tuning, Arc<Workers>),
    tls: Option<TlsAcceptor>,
) -> Instant {
    let builder = Arc::new(connection::builder(&tuning));
    let connections = accept_until_stopped(
        "traffic",
        || listener.accept(),
        stop,
        |(stream, remote), stop, connections| {
            let Some(admitted) = proxy.admission.admit(remote.ip()) else {
                proxy.table.metrics().count_connection_refused();
                if tls.is_none() {
                    proxy.admission.refuse(stream);
                }
                return;
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%remote, "cannot set TCP_NODELAY: {e}");
            }
            // The connection holds its place under the limits for as long as it lives,
            // an upgraded connection's tunnel included.
            let conn = ClientConn::new(Arc::clone(&proxy), remote, tls.is_some(), Some(admitted));
            let builder = Arc::clone(&builder);
            let idle = tuning.idle_timeout;
            match &tls {
                None => workers.spawn(connections, stream, move |stream| {
                    connection::serve_client(builder, stream, conn, stop, idle)
                }),
                Some(acceptor) => {
                    let (acceptor, deadline) = (acceptor.clone(), tuning.header_read_timeout);
                    workers.spawn(connections, stream, move |stream| {
                        serve_tls(acceptor, stream, deadline, (builder, conn, stop, idle))
                    });
                }
            }
        },
    )
    .await;
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

/// Accepts connections until a stop is requested, and returns the tasks of those still
/// open. Each connection goes to `serve`, with its own view of `stop`, and `serve` spawns
/// its task in the set it is handed; tasks that ended are reaped meanwhile, so a listener
/// that runs for months does not keep them. `kind` names the listener in the log.
pub(crate) async fn accept_until_stopped<S, A>(
    kind: &str,
    mut accept: impl FnMut() -> A,
    mut stop: watch::Receiver<Stop>,
    mut serve: impl FnMut(S, watch::Receiver<Stop>, &mut JoinSet<()>),
) -> JoinSet<()>
where
    A: Future<Output = std::io::Result<S>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = accept() => match accepted {
                Ok(accepted) => serve(accepted, stop.clone(), &mut connections),
                Err(e) => accept_failed(kind, &e).await,
            },
        }
    }
    connections
}

/// Accept errors are mostly "too many open files": log, and give connections a moment to
/// close before trying again instead of spinning.
async fn accept_failed(listener: &str, e: &std::io::Error) {
    // Out of file descriptors, this fails for every queued connection: the log line is
    // rate-limited, and the loop waits a little before it tries again.
    if let Some(suppressed) = crate::answer::ACCEPT_ERRORS.admit() {
        tracing::warn!(suppressed, "accepting a {listener} connection failed: {e}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Waits for client connections, which shut down gracefully on their own once `stop` is
/// set, for at most `grace`; then cuts the rest.
pub(crate) async fn finish_connections(mut connections: JoinSet<()>, grace: Duration, kind: &str) {
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
