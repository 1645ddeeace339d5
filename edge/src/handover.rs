//! Handing a running edge's sockets to a new edge process (`shipit edge upgrade`).
//!
//! The new process (`shipit edge run --take-over`) asks the running one for its sockets on
//! the admin socket: `POST /handover` with `Upgrade: shipit-edge-handover`. After the `101`,
//! the admin connection is a plain unix stream, and the two speak a few bytes:
//!
//! 1. new → old `G`: the new process has the stream (so the descriptors that follow cannot
//!    land in hyper's read buffer, where they would be lost).
//! 2. old → new: one `sendmsg` carrying the listening sockets (traffic, TLS if any, admin)
//!    and the descriptor of `edge.lock` as `SCM_RIGHTS`, with the length of a JSON
//!    [`Offer`], then the offer: the old pid, its addresses and settings, and the
//!    (service, release) pairs it may still send requests to. From the `G` on, the old
//!    process takes no route change (admin calls that would make one wait, then answer
//!    503 with `x-shipit-edge-retry` if the hand-over went through; [`crate::AdminClient`]
//!    then retries on the new process), so `routes.json` is final.
//! 3. The new process loads `routes.json`, builds its listeners from the descriptors (TLS
//!    certificates are read before step 1), and sends `R` (ready).
//! 4. The old process stops accepting and answers `A`. Connections waiting in the kernel's
//!    accept queue stay there: the listening socket is still open, in the new process,
//!    which starts accepting right after the `A`.
//! 5. The old process finishes its connections (see [`crate::connection`]) and exits. It
//!    keeps the stream open until then, so the new process sees it close exactly when the
//!    old one is gone; until then a drain of a release the old one served waits for it.
//!
//! Whatever fails before the `A` leaves the old process serving as if nothing happened: it
//! never stopped accepting. The old process gives up waiting for `R` after
//! [`DEFAULT_HANDOVER_TIMEOUT`].
//!
//! The lock: `flock` locks belong to the open file description, which both processes now
//! share. The old one never unlocks it (that would unlock it for the new one too); the new
//! one converts it exclusive → shared → exclusive, so that `/proc/locks` names the new pid.
//! Neither conversion lets anybody else in: nobody asks for a shared lock on `edge.lock`.
//!
//! Both halves are here. The running edge's starts at [`offer`] (the admin call's answer)
//! and works on the running [`Edge`]; the new process's is [`receive`], from which
//! [`crate::server::take_over`] builds and starts the new edge. What the new edge keeps of
//! its predecessor afterwards is a [`Predecessor`].

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;

use crate::connection::Stop;
use crate::edge::{Edge, Predecessor, guard, load_routes};
use crate::listener::Listeners;
use crate::route::RouteTable;
use crate::settings::Settings;
use crate::tls::TlsState;
use crate::{ADMIN_SOCKET, EdgeError, LOCK_FILE};

/// The admin call that starts a hand-over.
pub const HANDOVER_PATH: &str = "/handover";
/// The `Upgrade` protocol of that call.
pub const UPGRADE_PROTOCOL: &str = "shipit-edge-handover";
/// How long a running edge waits for its successor to be ready before it carries on alone.
pub const DEFAULT_HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

const GO: u8 = b'G';
const READY: u8 = b'R';
const ACCEPTED: u8 = b'A';
/// The most descriptors one offer carries: traffic, TLS, admin, lock.
const MAX_PASSED: usize = 4;
/// The largest offer read; a route table of thousands of services fits.
const MAX_OFFER: u32 = 16 * 1024 * 1024;

/// How [`crate::server::take_over`] starts: from the edge running in `dir`.
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

/// What the running edge hands over, besides the descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Offer {
    pid: u32,
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    /// What each passed descriptor is, in the order they were passed.
    passed: Vec<Passed>,
    /// The settings it runs with: a successor given none keeps them.
    settings: Settings,
    /// Every (service, release) it may still send requests to: live, candidate, draining.
    serving: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Passed {
    Traffic,
    Tls,
    Admin,
    Lock,
}

/// Answers `POST /handover`: the `101`, then the hand-over runs on its own task.
pub(crate) fn offer(
    edge: &Arc<Edge>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !asked {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "POST {HANDOVER_PATH} needs `Upgrade: {UPGRADE_PROTOCOL}`; `shipit edge upgrade` sends it"
            ),
        ));
    }
    begin(edge).map_err(|reason| (StatusCode::CONFLICT, reason))?;
    let upgrade = hyper::upgrade::on(req);
    let edge = Arc::clone(edge);
    tokio::spawn(async move { give(&edge, upgrade).await });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static(UPGRADE_PROTOCOL),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    Ok(response)
}

/// The running edge's side, from the `101` to the `A`; on any failure it carries on.
async fn give(edge: &Arc<Edge>, upgrade: hyper::upgrade::OnUpgrade) {
    // From here on no route changes: the successor reads routes.json after the offer.
    let changes = edge.freeze_changes().await;
    let outcome = tokio::time::timeout(DEFAULT_HANDOVER_TIMEOUT, exchange(edge, upgrade)).await;
    let reason = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(reason)) => reason,
        Err(_) => format!(
            "the new edge was not ready within {}",
            humantime::format_duration(DEFAULT_HANDOVER_TIMEOUT)
        ),
    };
    tracing::warn!("hand-over abandoned, this edge keeps serving: {reason}");
    // Before the changes held back go through, so that a new hand-over may follow them.
    edge.handing_over.store(false, Ordering::SeqCst);
    drop(changes);
}

async fn exchange(edge: &Arc<Edge>, upgrade: hyper::upgrade::OnUpgrade) -> Result<(), String> {
    let upgraded = upgrade
        .await
        .map_err(|e| format!("the upgrade of the admin connection failed: {e}"))?;
    let parts = upgraded
        .downcast::<TokioIo<UnixStream>>()
        .map_err(|_| "the admin connection is not a unix stream".to_string())?;
    let mut stream = parts.io.into_inner();
    let mut early = parts.read_buf;

    expect(&mut stream, &mut early, GO, "G (go)").await?;
    let (offer, fds) = Offer::of(edge)?;
    let json = serde_json::to_vec(&offer).expect("an offer serializes");
    let length = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= MAX_OFFER)
        .ok_or_else(|| {
            format!(
                "the route table is too large to hand over ({} bytes)",
                json.len()
            )
        })?
        .to_be_bytes();
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = send_with_fds(&stream, &length, &raw)
        .await
        .map_err(|e| format!("cannot pass the sockets: {e}"))?;
    drop(fds);
    let offered = async {
        stream.write_all(&length[sent..]).await?;
        stream.write_all(&json).await
    };
    offered
        .await
        .map_err(|e| format!("cannot send the offer: {e}"))?;
    tracing::info!(
        sockets = ?offer.passed,
        "passed the sockets to the new edge; waiting for it to be ready"
    );
    expect(&mut stream, &mut early, READY, "R (ready)").await?;
    if edge.is_stopping() {
        // A stop asked for meanwhile wins: the new edge must not carry on serving.
        return Err("this edge was asked to stop during the hand-over".to_string());
    }
    stream
        .write_all(&[ACCEPTED])
        .await
        .map_err(|e| format!("the new edge went away when it was ready: {e}"))?;
    complete(edge, stream);
    Ok(())
}

/// Reads one byte (from what hyper had buffered first) and checks it.
async fn expect(
    stream: &mut UnixStream,
    early: &mut Bytes,
    want: u8,
    what: &str,
) -> Result<(), String> {
    let got = if early.is_empty() {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => byte[0],
            Ok(_) => {
                return Err(format!(
                    "the new edge closed the connection before sending {what}"
                ));
            }
            Err(e) => return Err(format!("reading {what} from the new edge failed: {e}")),
        }
    } else {
        let byte = early[0];
        *early = early.slice(1..);
        byte
    };
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "the new edge sent {:?} where {what} was expected",
            char::from(got)
        ))
    }
}

/// Marks the start of a hand-over; refused while one runs or the edge stops.
fn begin(edge: &Edge) -> Result<(), String> {
    if edge.is_stopping() {
        return Err("this edge is stopping".to_string());
    }
    if edge.handing_over.swap(true, Ordering::SeqCst) {
        return Err("a hand-over to another new edge is under way".to_string());
    }
    Ok(())
}

impl Offer {
    /// What `edge` hands over: the offer and copies of the descriptors it describes.
    fn of(edge: &Edge) -> Result<(Offer, Vec<OwnedFd>), String> {
        let copy = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| format!("cannot duplicate a socket: {e}"))
        };
        let mut passed = Vec::new();
        let mut fds = Vec::new();
        {
            let sockets = guard(&edge.passable);
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
            let held = guard(&edge.lock);
            let held = held
                .as_ref()
                .ok_or("this edge holds no lock on its directory")?;
            passed.push(Passed::Lock);
            fds.push(copy(held.as_fd())?);
        }
        let mut serving = Vec::new();
        for route in edge.table.view() {
            let releases = route
                .live
                .iter()
                .chain(route.candidate.as_ref().map(|c| &c.backend))
                .chain(route.draining.iter().map(|(b, _)| b));
            for backend in releases {
                serving.push((route.service.clone(), backend.release.clone()));
            }
        }
        let mut settings = edge.settings.clone();
        if let (Some(tls), Some(state)) = (settings.tls.as_mut(), &edge.tls) {
            // What a reload last put in place, not what the edge started with.
            tls.certificates = state.files();
        }
        Ok((
            Offer {
                pid: std::process::id(),
                listen: edge.listen,
                tls_listen: edge.tls_listen,
                passed,
                settings,
                serving,
            },
            fds,
        ))
    }
}

/// The successor is serving: `edge` stops accepting and finishes, leaving the lock, the
/// admin socket and the pid file to it. Called with route changes frozen.
fn complete(edge: &Edge, successor: UnixStream) {
    edge.handed_over.store(true, Ordering::SeqCst);
    *guard(&edge.successor) = Some(successor);
    // Both processes share the lock's open file description: unlocking it here would
    // unlock it for the successor too. The descriptor stays open until this process
    // exits; the successor owns the lock from now on.
    if let Some(held) = guard(&edge.lock).take() {
        std::mem::forget(held);
    }
    edge.stop.send_replace(Stop::HandOver);
    drop(guard(&edge.passable).take());
    tracing::info!("handed over to the new edge; no longer accepting");
}

async fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    stream
        .async_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &[ControlMessage::ScmRights(fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        })
        .await
}

/// Reads into `buf`, taking ownership of the descriptors that came with the bytes.
async fn receive_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    stream
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut space = nix::cmsg_space!([RawFd; MAX_PASSED]);
            let message = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let mut fds = Vec::new();
            for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    fds.extend(raw.into_iter().map(owned));
                }
            }
            Ok((message.bytes, fds))
        })
        .await
}

/// Takes ownership of a descriptor `recvmsg` installed in this process.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just installed in this process's descriptor table by the kernel, as
    // the SCM_RIGHTS payload of the message `recvmsg` returned. Nothing else in the process
    // knows the number yet, it is open, and it is wrapped exactly once, here, so the
    // `OwnedFd` is its only owner and closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// What a new edge got from the running one, which no longer accepts: everything it needs
/// to serve in its place.
pub(crate) struct Received {
    pub(crate) listeners: Listeners,
    pub(crate) settings: Settings,
    pub(crate) table: Arc<RouteTable>,
    /// The directory lock, converted to this process; `None` when that failed (the lock
    /// is still held, through the open file description both processes share).
    pub(crate) lock: Option<Flock<File>>,
    pub(crate) predecessor: Predecessor,
}

/// The new process's side, whole: takes the sockets of the edge running in `spec.dir`,
/// checks them against `spec`, loads the routes, and commits. After `Ok` the old edge no
/// longer accepts and the caller must serve on what it received; on `Err`, the running
/// edge was left serving.
pub(crate) async fn receive(spec: TakeOver) -> Result<Received, EdgeError> {
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
    let mut taken = take(&dir).await?;
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
    Ok(Received {
        listeners: Listeners {
            traffic,
            secure,
            admin,
        },
        settings,
        table,
        lock,
        predecessor,
    })
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

/// What the new process got from the running one, before it commits.
#[derive(Debug)]
struct Taken {
    offer: Offer,
    traffic: std::net::TcpListener,
    tls: Option<std::net::TcpListener>,
    admin: std::os::unix::net::UnixListener,
    lock: File,
    stream: UnixStream,
    dir: PathBuf,
}

/// The new process's side, up to (not including) the `R`: connects to the edge of `dir`
/// and receives its sockets and offer.
async fn take(dir: &Path) -> Result<Taken, EdgeError> {
    let socket = dir.join(ADMIN_SOCKET);
    let failed = |reason: String| EdgeError::Handover {
        dir: dir.to_path_buf(),
        reason,
    };
    let connection =
        UnixStream::connect(&socket)
            .await
            .map_err(|source| EdgeError::NothingToTakeOver {
                dir: dir.to_path_buf(),
                socket: socket.clone(),
                source,
            })?;
    let mut stream = tokio::time::timeout(DEFAULT_HANDOVER_TIMEOUT, ask(connection))
        .await
        .map_err(|_| {
            failed(format!(
                "the running edge did not answer `POST {HANDOVER_PATH}` within {}",
                humantime::format_duration(DEFAULT_HANDOVER_TIMEOUT)
            ))
        })?
        .map_err(failed)?;
    let received = async {
        stream
            .write_all(&[GO])
            .await
            .map_err(|e| format!("cannot write to the running edge: {e}"))?;
        let mut length = [0u8; 4];
        let (n, fds) = receive_with_fds(&stream, &mut length)
            .await
            .map_err(|e| format!("cannot receive the sockets: {e}"))?;
        if n == 0 {
            return Err(
                "the running edge closed the connection instead of passing its sockets".to_string(),
            );
        }
        stream
            .read_exact(&mut length[n..])
            .await
            .map_err(|e| format!("cannot read the offer: {e}"))?;
        let length = u32::from_be_bytes(length);
        if length > MAX_OFFER {
            return Err(format!(
                "the offer is {length} bytes long, more than {MAX_OFFER}"
            ));
        }
        let mut json = vec![0u8; length as usize];
        stream
            .read_exact(&mut json)
            .await
            .map_err(|e| format!("cannot read the offer: {e}"))?;
        let offer: Offer =
            serde_json::from_slice(&json).map_err(|e| format!("the offer is not valid: {e}"))?;
        Ok((offer, fds))
    };
    let (offer, fds) = tokio::time::timeout(DEFAULT_HANDOVER_TIMEOUT, received)
        .await
        .map_err(|_| failed("the running edge did not pass its sockets in time".to_string()))?
        .map_err(failed)?;
    if fds.len() != offer.passed.len() {
        return Err(failed(format!(
            "the running edge passed {} descriptors but described {}",
            fds.len(),
            offer.passed.len()
        )));
    }
    let (mut traffic, mut tls, mut admin, mut lock) = (None, None, None, None);
    for (kind, fd) in offer.passed.iter().zip(fds) {
        match kind {
            Passed::Traffic => traffic = Some(std::net::TcpListener::from(fd)),
            Passed::Tls => tls = Some(std::net::TcpListener::from(fd)),
            Passed::Admin => admin = Some(std::os::unix::net::UnixListener::from(fd)),
            Passed::Lock => lock = Some(File::from(fd)),
        }
    }
    let missing = |what: &str| failed(format!("the running edge did not pass its {what}"));
    Ok(Taken {
        traffic: traffic.ok_or_else(|| missing("traffic listener"))?,
        tls,
        admin: admin.ok_or_else(|| missing("admin socket"))?,
        lock: lock.ok_or_else(|| missing("lock file"))?,
        offer,
        stream,
        dir: dir.to_path_buf(),
    })
}

/// `POST /handover` with the upgrade; the admin connection as a plain stream after it.
async fn ask(connection: UnixStream) -> Result<UnixStream, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(connection))
        .await
        .map_err(|e| format!("cannot speak HTTP on the admin socket: {e}"))?;
    let conn = tokio::spawn(conn.with_upgrades());
    let request = Request::post(HANDOVER_PATH)
        .header(header::HOST, "edge")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        // No body: bytes left unread would reach the stream after the upgrade.
        .body(Full::new(Bytes::new()))
        .expect("a hand-over request is well formed");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("`POST {HANDOVER_PATH}` failed: {e}"))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<crate::api::ErrorAnswer>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(format!(
            "the running edge refused the hand-over (HTTP {status}): {message}"
        ));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| format!("the upgrade of the admin connection failed: {e}"))?;
    drop(conn);
    let parts = upgraded
        .downcast::<TokioIo<UnixStream>>()
        .map_err(|_| "the admin connection is not a unix stream".to_string())?;
    if !parts.read_buf.is_empty() {
        return Err("the running edge sent data before it was asked to".to_string());
    }
    Ok(parts.io.into_inner())
}

impl Taken {
    /// Sends `R` and waits for `A`. After `Ok`, the old process no longer accepts and this
    /// one must; after `Err`, the old one carries on and this one must not serve.
    async fn commit(&mut self) -> Result<(), EdgeError> {
        let exchange = async {
            self.stream
                .write_all(&[READY])
                .await
                .map_err(|e| format!("cannot tell the running edge it is ready: {e}"))?;
            let mut answer = [0u8; 1];
            match self.stream.read(&mut answer).await {
                Ok(1) if answer[0] == ACCEPTED => Ok(()),
                Ok(1) => Err(format!(
                    "the running edge answered {:?} instead of A",
                    char::from(answer[0])
                )),
                Ok(_) => {
                    Err("the running edge gave up on the hand-over (it keeps serving)".to_string())
                }
                Err(e) => Err(format!("reading the running edge's answer failed: {e}")),
            }
        };
        tokio::time::timeout(DEFAULT_HANDOVER_TIMEOUT, exchange)
            .await
            .map_err(|_| "the running edge did not accept in time".to_string())
            .and_then(|r| r)
            .map_err(|reason| EdgeError::Handover {
                dir: self.dir.clone(),
                reason,
            })
    }

    /// The predecessor, watched: its stream closes when it exits.
    fn predecessor(self) -> Predecessor {
        let (gone_tx, gone) = watch::channel(false);
        let mut stream = self.stream;
        let pid = self.offer.pid;
        tokio::spawn(async move {
            let mut sink = [0u8; 64];
            // Nothing more is sent; the read ends at the close.
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            tracing::info!(pid, "the previous edge process has finished");
            gone_tx.send_replace(true);
        });
        Predecessor::new(pid, self.offer.serving, gone)
    }
}

#[cfg(test)]
mod tests;
