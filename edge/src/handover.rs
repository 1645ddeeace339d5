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

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::server::Edge;
use crate::settings::Settings;
use crate::{ADMIN_SOCKET, EdgeError};

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

/// What the running edge hands over, besides the descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Offer {
    pub(crate) pid: u32,
    pub(crate) listen: SocketAddr,
    pub(crate) tls_listen: Option<SocketAddr>,
    /// What each passed descriptor is, in the order they were passed.
    pub(crate) passed: Vec<Passed>,
    /// The settings it runs with: a successor given none keeps them.
    pub(crate) settings: Settings,
    /// Every (service, release) it may still send requests to: live, candidate, draining.
    pub(crate) serving: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Passed {
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
    edge.begin_handover()
        .map_err(|reason| (StatusCode::CONFLICT, reason))?;
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
    edge.abandon_handover();
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
    let (offer, fds) = edge.offer()?;
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
    edge.complete_handover(stream);
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

/// What the new process got from the running one, before it commits.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) offer: Offer,
    pub(crate) traffic: std::net::TcpListener,
    pub(crate) tls: Option<std::net::TcpListener>,
    pub(crate) admin: std::os::unix::net::UnixListener,
    pub(crate) lock: File,
    stream: UnixStream,
    dir: PathBuf,
}

/// The new process's side, up to (not including) the `R`: connects to the edge of `dir`
/// and receives its sockets and offer.
pub(crate) async fn take(dir: &Path) -> Result<Taken, EdgeError> {
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
    pub(crate) async fn commit(&mut self) -> Result<(), EdgeError> {
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
    pub(crate) fn predecessor(self) -> Predecessor {
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
        Predecessor {
            pid,
            serving: self.offer.serving,
            gone,
        }
    }
}

/// The edge process this one took over from, while it finishes its connections.
#[derive(Debug)]
pub(crate) struct Predecessor {
    pub(crate) pid: u32,
    serving: Vec<(String, String)>,
    gone: watch::Receiver<bool>,
}

impl Predecessor {
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
    pub(crate) async fn wait_gone(&self, deadline: tokio::time::Instant) -> bool {
        let mut gone = self.gone.clone();
        tokio::time::timeout_at(deadline, gone.wait_for(|gone| *gone))
            .await
            .is_ok_and(|r| r.is_ok())
            || *self.gone.borrow()
    }
}

#[cfg(test)]
mod tests;
