//! The admin API's serving side: HTTP/1.1 + JSON on the unix socket `admin.sock` in the edge
//! directory. The calls and their bodies are in [`crate::api`].
//!
//! Each call is checked (service name, body) before it reaches the running edge, and a
//! failed one answers an [`ErrorAnswer`] with a 4xx/5xx status. A route change that reached
//! an edge which has just handed over to a new process answers 503 with the header
//! [`RETRY_HEADER`]: nothing was changed, and the same call on a new connection reaches the
//! new process ([`crate::AdminClient`] retries it). The socket is mode 0600 from the moment
//! it is at its path ([`bind`]): whoever can switch routes controls the traffic. A
//! connection that does not send a whole request head within [`ADMIN_HEADER_READ_TIMEOUT`]
//! is closed.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::api::{
    CandidateAnswer, DrainAnswer, DrainRequest, ErrorAnswer, LeaseAnswer, LeaseRequest,
    MaintenanceAnswer, MaintenanceRequest, NextAnswer, NextRequest, PauseAnswer, PauseRequest,
    PreviewRequest, RETRY_HEADER, RemoveAnswer, ResumeAnswer, ShutdownAnswer, SplitEndAnswer,
    SwitchAnswer, SwitchRequest, TlsReloadAnswer, TlsReloadRequest, WeightsRequest,
};
use crate::connection::{Stop, stopped};
use crate::edge::{Edge, SWITCH_SAVE_DELAY};
use crate::lease::{Lease, checked_lease_ms};
use crate::listener::{accept_until_stopped, finish_connections};
use crate::maintenance::checked_maintenance;
use crate::metrics::DrainEnd;
use crate::pause::checked_pause_ms;
use crate::route::{
    CandidateRefused, Drainable, GateRefused, LeaseRefused, Routing, normalize_paths,
    validate_service,
};
use crate::{Backend, EdgeError, Slot, directory};

/// The most an admin request body may hold.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// How long an admin connection may take to send a whole request head; then it is closed.
/// Admin clients are local and send at once: one that does not would hold a connection and
/// its task for ever.
pub const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;
/// The most addresses one backend may have (`addr` and `more_addrs`).
const MAX_ADDRS: usize = 64;

/// The directory, in the edge directory, where the admin socket is bound before it is moved
/// into place. With [`BIND_NAME`], its path is shorter than `admin.sock`'s, so it fits
/// `sockaddr_un` whenever that one does.
const BIND_DIR: &str = ".bind";
/// The admin socket's name in [`BIND_DIR`].
const BIND_NAME: &str = "s";

/// Binds the admin socket at `path`, replacing a stale socket file, with mode 0600 from
/// the moment anything is at `path`.
///
/// `bind` creates the socket file with mode 0777 minus the umask, and a chmod after it would
/// leave a window in which anyone could connect. Setting a restrictive umask around the
/// `bind` would close that window, but the umask belongs to the whole process: a directory
/// that another thread creates meanwhile would lose its search bit, and the edge also runs
/// inside other programs' runtimes ([`crate::server::start`], the tests). So the socket is
/// bound inside a directory only this user can enter, set to 0600 there, and renamed into
/// place: a rename keeps the socket bound, and clients find it by its path.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, EdgeError> {
    Staged::bind(path)?.publish()
}

/// An admin socket bound in the private directory ([`BIND_DIR`]), not yet at its path.
#[derive(Debug)]
pub(crate) struct Staged {
    listener: UnixListener,
    /// The private directory, 0700.
    private: PathBuf,
    /// Where the socket is bound, in `private`.
    bound: PathBuf,
    /// Where it goes.
    path: PathBuf,
}

impl Staged {
    pub(crate) fn bind(path: &Path) -> Result<Staged, EdgeError> {
        let fits = |path: &Path| {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(EdgeError::SocketPathTooLong {
                    path: path.to_path_buf(),
                    len,
                });
            }
            Ok(())
        };
        fits(path)?;
        let private = path.parent().unwrap_or(Path::new(".")).join(BIND_DIR);
        let bound = private.join(BIND_NAME);
        fits(&bound)?;
        // Only the edge holding the directory's lock binds, so a directory here was left by
        // one that stopped while binding.
        clear(&private)?;
        std::fs::DirBuilder::new()
            .mode(directory::DIR_MODE)
            .create(&private)
            .and_then(|()| directory::set_mode(&private, directory::DIR_MODE))
            .map_err(|e| EdgeError::io("create the private directory to bind in", &private, e))?;
        let listener = UnixListener::bind(&bound)
            .map_err(|e| EdgeError::io("bind the admin socket", &bound, e))?;
        directory::set_mode(&bound, directory::FILE_MODE)
            .map_err(|e| EdgeError::io("set mode 0600 on the admin socket", &bound, e))?;
        Ok(Staged {
            listener,
            private,
            bound,
            path: path.to_path_buf(),
        })
    }

    /// Moves the socket to its path, replacing a stale socket there.
    pub(crate) fn publish(self) -> Result<UnixListener, EdgeError> {
        let published = self.check().and_then(|()| {
            if std::fs::symlink_metadata(&self.path).is_ok() {
                // The server holds the directory's lock: this socket's edge is gone.
                tracing::info!(path = %self.path.display(), "replacing a stale admin socket");
            }
            std::fs::rename(&self.bound, &self.path)
                .map_err(|e| EdgeError::io("move the admin socket into place at", &self.path, e))
        });
        let cleared = clear(&self.private);
        published?;
        cleared?;
        Ok(self.listener)
    }

    /// What appears at the socket's path must be 0600: checked here, on the socket itself,
    /// rather than trusted.
    fn check(&self) -> Result<(), EdgeError> {
        let mode = std::fs::symlink_metadata(&self.bound)
            .map_err(|e| EdgeError::io("look at the admin socket", &self.bound, e))?
            .mode()
            & 0o777;
        if mode != directory::FILE_MODE {
            return Err(EdgeError::io(
                "keep the admin socket private",
                &self.bound,
                std::io::Error::other(format!("its mode is {mode:04o}, not 0600")),
            ));
        }
        Ok(())
    }
}

/// Removes the private bind directory and the socket in it, if there.
fn clear(private: &Path) -> Result<(), EdgeError> {
    let gone = |result: std::io::Result<()>, path: &Path| match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EdgeError::io("remove", path, e)),
        _ => Ok(()),
    };
    let bound = private.join(BIND_NAME);
    gone(std::fs::remove_file(&bound), &bound)?;
    gone(std::fs::remove_dir(private), private)
}

/// A failed admin call: its status and message.
struct Refusal(StatusCode, String);

/// A route change the edge did not make: refused because it handed over (a 503 to send
/// again), or failed.
impl From<EdgeError> for Refusal {
    fn from(error: EdgeError) -> Self {
        let status = match error {
            EdgeError::HandedOver { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(status, error.to_string())
    }
}

/// A lease for a candidate that is not there (any more): a conflict with the edge's state.
impl From<LeaseRefused> for Refusal {
    fn from(refused: LeaseRefused) -> Self {
        Refusal(StatusCode::CONFLICT, refused.to_string())
    }
}

/// A pause or maintenance for a service the edge does not route.
impl From<GateRefused> for Refusal {
    fn from(refused: GateRefused) -> Self {
        Refusal(StatusCode::NOT_FOUND, refused.to_string())
    }
}

/// A candidate the route table did not take: a bad percent is the caller's mistake, the
/// slots' state a conflict.
impl From<CandidateRefused> for Refusal {
    fn from(refused: CandidateRefused) -> Self {
        let status = match refused {
            CandidateRefused::Percent { .. } => StatusCode::BAD_REQUEST,
            CandidateRefused::NoLiveSlot { .. } | CandidateRefused::LiveSlot { .. } => {
                StatusCode::CONFLICT
            }
        };
        Refusal(status, refused.to_string())
    }
}

type Answer = Result<Response<Full<Bytes>>, Refusal>;

/// Accepts admin connections until a stop is requested, then lets the calls in flight
/// finish (bounded by `grace`).
pub(crate) async fn serve(
    listener: UnixListener,
    edge: Arc<Edge>,
    stop: watch::Receiver<Stop>,
    grace: Duration,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT);
    let connections = accept_until_stopped(
        "admin",
        || listener.accept(),
        stop,
        |(stream, _), mut stop, connections| {
            let edge = Arc::clone(&edge);
            let service = hyper::service::service_fn(move |req| {
                let edge = Arc::clone(&edge);
                async move { Ok::<_, std::convert::Infallible>(handle(edge, req).await) }
            });
            // Upgrades: `POST /handover` turns the connection into the hand-over's.
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
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
        },
    )
    .await;
    drop(listener);
    finish_connections(connections, grace, "admin").await;
}

/// Serves one admin request.
pub(crate) async fn handle(edge: Arc<Edge>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (&method, segments.as_slice()) {
        (&Method::GET, ["status"]) => Ok(json(StatusCode::OK, &edge.status())),
        (&Method::GET, ["metrics"]) => Ok(metrics(&edge)),
        (&Method::PUT, ["routes", service, "switch"]) => switch(&edge, service, req).await,
        (&Method::PUT, ["routes", service, "next"]) => next(&edge, service, req).await,
        (&Method::PUT, ["routes", service, "preview"]) => preview(&edge, service, req).await,
        (&Method::DELETE, ["routes", service, "preview"]) => remove_candidate(&edge, service).await,
        (&Method::PUT, ["routes", service, "weights"]) => weights(&edge, service, req).await,
        (&Method::DELETE, ["routes", service, "weights"]) => clear_split(&edge, service).await,
        (&Method::PUT, ["routes", service, "lease"]) => renew_lease(&edge, service, req).await,
        (&Method::PUT, ["routes", service, "pause"]) => pause(&edge, service, req).await,
        (&Method::DELETE, ["routes", service, "pause"]) => resume(&edge, service).await,
        (&Method::PUT, ["routes", service, "maintenance"]) => {
            maintenance(&edge, service, req).await
        }
        (&Method::DELETE, ["routes", service, "maintenance"]) => {
            end_maintenance(&edge, service).await
        }
        (&Method::POST, ["routes", service, "drain"]) => drain(&edge, service, req).await,
        (&Method::DELETE, ["routes", service]) => remove(&edge, service).await,
        (&Method::POST, ["tls", "reload"]) => reload_tls(&edge, req).await,
        (&Method::POST, ["shutdown"]) => {
            tracing::info!("stop requested over the admin API");
            edge.request_stop();
            Ok(json(StatusCode::OK, &ShutdownAnswer { stopping: true }))
        }
        (&Method::POST, ["handover"]) => {
            crate::handover::offer(&edge, req).map_err(|(status, message)| Refusal(status, message))
        }
        (
            _,
            ["status" | "metrics" | "shutdown" | "handover"]
            | ["tls", "reload"]
            | [
                "routes",
                _,
                "switch" | "next" | "drain" | "preview" | "weights" | "lease" | "pause"
                | "maintenance",
            ]
            | ["routes", _],
        ) => Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!(
                "no admin call {method} {path}; the calls are GET /status, GET /metrics, \
                 PUT /routes/{{service}}/switch, PUT /routes/{{service}}/next, \
                 POST /routes/{{service}}/drain, \
                 PUT|DELETE /routes/{{service}}/preview, PUT|DELETE /routes/{{service}}/weights, \
                 PUT /routes/{{service}}/lease, PUT|DELETE /routes/{{service}}/pause, \
                 PUT|DELETE /routes/{{service}}/maintenance, DELETE /routes/{{service}}, \
                 POST /tls/reload, POST /shutdown and POST /handover"
            ),
        )),
    };
    answer.unwrap_or_else(|Refusal(status, error)| {
        let retry = status == StatusCode::SERVICE_UNAVAILABLE;
        if retry {
            tracing::info!(%method, %path, "{error}");
        } else if status.is_server_error() {
            tracing::error!(%method, %path, "{error}");
        } else {
            tracing::warn!(%method, %path, "{error}");
        }
        let mut response = json(status, &ErrorAnswer { error });
        if retry {
            response.headers_mut().insert(
                RETRY_HEADER,
                header::HeaderValue::from_static("handed-over"),
            );
        }
        response
    })
}

async fn switch(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: SwitchRequest = read_json(
        req,
        r#"{"slot": "blue", "release": "...", "addr": "127.0.0.1:8081"}"#,
    )
    .await?;
    if body.release.is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "the switch body has an empty `release`".into(),
        ));
    }
    let paths = body
        .paths
        .as_deref()
        .map(normalize_paths)
        .transpose()
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let backend = checked_backend(body.slot, body.release, body.addr, body.more_addrs)?;
    let routing = Routing {
        hosts: body.hosts,
        paths,
    };
    // Connected before the switch: the first request after it finds the connection ready.
    let ahead = edge.connect_ahead(service, &backend).await;
    let switched = edge
        .change_then_save_after(SWITCH_SAVE_DELAY, |table| {
            let switched = table.switch(service, backend.clone(), routing);
            edge.warm_with(service, ahead);
            tracing::info!(
                %service, slot = %backend.slot, release = %backend.release, addr = %backend.addr,
                previous = ?switched.previous.as_ref().map(|p| &p.release),
                "switched"
            );
            Ok::<_, Refusal>(switched)
        })
        .await?
        .map_err(|e| {
            Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "service {service} now routes to {backend}, but the routes were not saved and \
                     will not survive a restart: {e}"
                ),
            )
        })?;
    Ok(json(
        StatusCode::OK,
        &SwitchAnswer {
            previous: switched.previous,
            switched_at: switched.switched_at,
        },
    ))
}

/// Opens a connection to the backend the next switch of `service` names, and holds it for
/// that switch ([`crate::ahead`]). Nothing is routed to it, and nothing is saved.
async fn next(edge: &Arc<Edge>, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: NextRequest = read_json(
        req,
        r#"{"slot": "green", "release": "...", "addr": "127.0.0.1:8082"}"#,
    )
    .await?;
    let backend = checked_backend(body.slot, body.release, body.addr, body.more_addrs)?;
    // A process that handed over makes no more switches: it would hold the connection for
    // nothing.
    edge.refuse_if_handed_over()?;
    let held = edge.connect_next(service, backend.clone()).await;
    tracing::info!(
        %service, slot = %backend.slot, release = %backend.release, addr = %backend.addr, held,
        "connection ahead of the next switch"
    );
    Ok(json(StatusCode::OK, &NextAnswer { held }))
}

async fn drain(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: DrainRequest = read_json(req, r#"{"release": "...", "timeout_ms": 30000}"#).await?;
    let backends = match edge.table().drainable(service, &body.release) {
        Drainable::Replaced(backends) => backends,
        Drainable::Gone => Vec::new(),
        Drainable::Live(live) => {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!(
                    "release {} is live on service {service} (the {} slot at {}); switch to \
                     another backend before draining it",
                    body.release, live.slot, live.addr
                ),
            ));
        }
        Drainable::Candidate(candidate) => {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!(
                    "release {} is the registered candidate of service {service} (the {} slot \
                     at {}); remove it with DELETE /routes/{service}/preview before draining it",
                    body.release, candidate.slot, candidate.addr
                ),
            ));
        }
    };
    let timeout = Duration::from_millis(body.timeout_ms).min(crate::drain::LONGEST_DRAIN);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outcome = crate::drain::drain(&backends, timeout).await;
    // After an upgrade, the previous edge process may still send requests to it.
    if !edge
        .predecessor_drained(service, &body.release, deadline)
        .await
    {
        outcome.drained = false;
    }
    let metrics = edge.table().metrics();
    let end = if outcome.drained {
        DrainEnd::Drained
    } else {
        DrainEnd::Deadline
    };
    metrics.count_drain(service, end);
    metrics.count_tunnels_closed(outcome.closed);
    tracing::info!(
        %service, release = %body.release, drained = outcome.drained,
        in_flight = outcome.in_flight, waited_ms = outcome.waited.as_millis() as u64,
        closed = outcome.closed, "drain finished"
    );
    Ok(json(
        StatusCode::OK,
        &DrainAnswer {
            drained: outcome.drained,
            in_flight: outcome.in_flight,
            waited_ms: u64::try_from(outcome.waited.as_millis()).unwrap_or(u64::MAX),
            closed: outcome.closed,
        },
    ))
}

fn metrics(edge: &Edge) -> Response<Full<Bytes>> {
    let table = edge.table();
    let page = table.metrics().render(&table.in_flight_by_slot());
    let mut response = Response::new(Full::new(Bytes::from(page)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn preview(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: PreviewRequest = read_json(
        req,
        r#"{"slot": "green", "release": "...", "addr": "127.0.0.1:8082"}"#,
    )
    .await?;
    let backend = checked_backend(body.slot, body.release, body.addr, body.more_addrs)?;
    let lease = body.lease_ms.map(lease_from_now).transpose()?;
    register_candidate(edge, service, backend, None, body.hosts, lease, None).await
}

/// A lease of `lease_ms` (checked) that starts now.
fn lease_from_now(lease_ms: u64) -> Result<Lease, Refusal> {
    let duration = checked_lease_ms(lease_ms).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    Ok(Lease::starting(Timestamp::now(), duration))
}

async fn weights(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: WeightsRequest = read_json(
        req,
        r#"{"candidate": {"slot": "green", "release": "...", "addr": "127.0.0.1:8082"}, "percent": 10}"#,
    )
    .await?;
    let backend = checked_backend(
        body.candidate.slot,
        body.candidate.release,
        body.candidate.addr,
        body.candidate.more_addrs,
    )?;
    // A split always has a lease: a share of plain traffic must not outlive whoever watches it.
    let lease_ms = body.lease_ms.unwrap_or_else(|| {
        u64::try_from(crate::DEFAULT_CANDIDATE_LEASE.as_millis()).unwrap_or(u64::MAX)
    });
    let lease = lease_from_now(lease_ms)?;
    register_candidate(
        edge,
        service,
        backend,
        Some(body.percent),
        None,
        Some(lease),
        body.sticky,
    )
    .await
}

async fn renew_lease(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: LeaseRequest = read_json(req, r#"{"release": "...", "lease_ms": 10000}"#).await?;
    let lease = lease_from_now(body.lease_ms)?;
    let renewed = edge
        .change(|table| {
            let renewed = table.renew_lease(service, &body.release, lease)?;
            tracing::debug!(
                %service, release = %body.release, expires_at = %lease.expires_at,
                "candidate lease renewed"
            );
            Ok::<_, Refusal>(renewed)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(
        StatusCode::OK,
        &LeaseAnswer {
            candidate: renewed.backend,
            percent: renewed.percent,
            lease,
        },
    ))
}

async fn register_candidate(
    edge: &Edge,
    service: &str,
    backend: Backend,
    percent: Option<u8>,
    preview_hosts: Option<Vec<String>>,
    lease: Option<Lease>,
    sticky: Option<bool>,
) -> Answer {
    let replaced = edge
        .change(|table| {
            let replaced = table.set_candidate_leased(
                service,
                backend.clone(),
                percent,
                preview_hosts,
                lease,
                sticky,
            )?;
            edge.warm(service);
            tracing::info!(
                %service, slot = %backend.slot, release = %backend.release, addr = %backend.addr,
                ?percent, lease_ms = ?lease.map(|l| l.lease_ms),
                replaced = ?replaced.as_ref().map(|r| &r.release),
                "candidate registered"
            );
            Ok::<_, Refusal>(replaced)
        })
        .await?
        .map_err(|e| {
            Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "{backend} is the candidate of service {service}, but the routes were not \
                     saved and it will be gone after a restart: {e}"
                ),
            )
        })?;
    let percent = edge
        .status()
        .routes
        .into_iter()
        .find(|r| r.service == service)
        .and_then(|r| r.candidate)
        .map_or(0, |c| c.percent);
    Ok(json(
        StatusCode::OK,
        &CandidateAnswer {
            candidate: backend,
            percent,
            replaced,
        },
    ))
}

async fn clear_split(edge: &Edge, service: &str) -> Answer {
    let service = checked_service(service)?;
    let candidate = edge
        .change(|table| {
            let candidate = table.clear_split(service);
            tracing::info!(
                %service, candidate = ?candidate.as_ref().map(|b| &b.release), "split ended"
            );
            Ok::<_, Refusal>(candidate)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(StatusCode::OK, &SplitEndAnswer { candidate }))
}

async fn remove_candidate(edge: &Edge, service: &str) -> Answer {
    let service = checked_service(service)?;
    let removed = edge
        .change(|table| {
            let removed = table.remove_candidate(service);
            tracing::info!(
                %service, removed = ?removed.as_ref().map(|b| &b.release), "candidate removed"
            );
            Ok::<_, Refusal>(removed)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(StatusCode::OK, &RemoveAnswer { removed }))
}

async fn pause(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: PauseRequest = read_json(req, r#"{"timeout_ms": 60000}"#).await?;
    let timeout =
        checked_pause_ms(body.timeout_ms).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let paused = edge
        .change(|table| {
            let paused = table.pause(service, timeout)?;
            tracing::info!(
                %service, timeout_ms = body.timeout_ms, deadline = %paused.deadline,
                held = paused.held, "paused: new requests are held"
            );
            Ok::<_, Refusal>(paused)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(
        StatusCode::OK,
        &PauseAnswer {
            paused: paused.into(),
        },
    ))
}

async fn resume(edge: &Edge, service: &str) -> Answer {
    let service = checked_service(service)?;
    let resumed = edge
        .change(|table| {
            let resumed = table.resume(service)?;
            tracing::info!(
                %service, released = ?resumed.map(|r| r.released),
                expired = ?resumed.map(|r| r.expired), "resumed"
            );
            Ok::<_, Refusal>(resumed)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(
        StatusCode::OK,
        &ResumeAnswer {
            resumed: resumed.is_some(),
            released: resumed.map_or(0, |r| r.released),
            expired: resumed.is_some_and(|r| r.expired),
        },
    ))
}

async fn maintenance(edge: &Edge, service: &str, req: Request<Incoming>) -> Answer {
    let service = checked_service(service)?;
    let body: MaintenanceRequest = read_json(
        req,
        r#"{"message": "Back at 10:00 UTC.", "retry_after_s": 300} (both optional)"#,
    )
    .await?;
    let retry_after_s = checked_maintenance(body.message.as_deref(), body.retry_after_s)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let (now, previous) = edge
        .change(|table| {
            let set = table.set_maintenance(service, body.message.clone(), retry_after_s)?;
            tracing::info!(
                %service, message = ?body.message, retry_after_s,
                "maintenance on: every request is answered 503"
            );
            Ok::<_, Refusal>(set)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(
        StatusCode::OK,
        &MaintenanceAnswer {
            maintenance: Some(now.into()),
            previous: previous.map(Into::into),
        },
    ))
}

async fn end_maintenance(edge: &Edge, service: &str) -> Answer {
    let service = checked_service(service)?;
    let ended = edge
        .change(|table| {
            let ended = table.clear_maintenance(service)?;
            tracing::info!(%service, was_on = ended.is_some(), "maintenance off");
            Ok::<_, Refusal>(ended)
        })
        .await?
        .map_err(unsaved(service))?;
    Ok(json(
        StatusCode::OK,
        &MaintenanceAnswer {
            maintenance: None,
            previous: ended.map(Into::into),
        },
    ))
}

fn unsaved(service: &str) -> impl Fn(EdgeError) -> Refusal + '_ {
    move |e| {
        Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the route of service {service} changed, but the routes were not saved and the \
                 change will be undone by a restart: {e}"
            ),
        )
    }
}

fn checked_backend(
    slot: Slot,
    release: String,
    addr: SocketAddr,
    more_addrs: Vec<SocketAddr>,
) -> Result<Backend, Refusal> {
    if release.is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "the backend has an empty `release`".into(),
        ));
    }
    if more_addrs.len() + 1 > MAX_ADDRS {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "the backend has {} addresses; at most {MAX_ADDRS} are taken",
                more_addrs.len() + 1
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::from([addr]);
    if let Some(twice) = more_addrs.iter().find(|a| !seen.insert(**a)) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("the backend names the address {twice} twice"),
        ));
    }
    Ok(Backend {
        slot,
        release,
        addr,
        more_addrs,
    })
}

async fn remove(edge: &Edge, service: &str) -> Answer {
    let service = checked_service(service)?;
    let removed = edge
        .change(|table| {
            let removed = table.remove(service);
            tracing::info!(
                %service, removed = ?removed.as_ref().map(|b| &b.release), "route removed"
            );
            Ok::<_, Refusal>(removed)
        })
        .await?
        .map_err(|e| {
            Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the route of service {service} is removed, but the routes were not saved \
                     and it will come back after a restart: {e}"
                ),
            )
        })?;
    Ok(json(StatusCode::OK, &RemoveAnswer { removed }))
}

async fn reload_tls(edge: &Edge, req: Request<Incoming>) -> Answer {
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body (at most {MAX_ADMIN_BODY} bytes): {e}"),
            )
        })?
        .to_bytes();
    let body: TlsReloadRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        TlsReloadRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid JSON body: {e}; expected {{}} or {{\"certificates\": [{{\"hosts\": \
                     [\"example.com\"], \"cert\": \"/path/cert.pem\", \"key\": \"/path/key.pem\"}}]}}"
                ),
            )
        })?
    };
    let certificates = edge.reload_tls(body.certificates).map_err(|e| match e {
        EdgeError::NoTls { .. } => Refusal(StatusCode::CONFLICT, e.to_string()),
        // A file that cannot be read or does not fit: the old set stays.
        e => Refusal(
            StatusCode::BAD_REQUEST,
            format!("{e}\nthe certificates served before the reload are still served"),
        ),
    })?;
    Ok(json(
        StatusCode::OK,
        &TlsReloadAnswer {
            certificates,
            reloaded_at: Timestamp::now(),
        },
    ))
}

fn checked_service(service: &str) -> Result<&str, Refusal> {
    validate_service(service)
        .map(|()| service)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
    example: &str,
) -> Result<T, Refusal> {
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body (at most {MAX_ADMIN_BODY} bytes): {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}; expected {example}"),
        )
    })
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("admin answers serialize to JSON");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests;
