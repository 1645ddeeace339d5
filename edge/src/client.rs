//! The typed client of the admin API, used by the pipeline and the CLI.
//!
//! Each call opens its own connection to the unix socket (they are cheap), speaks
//! HTTP/1.1 through hyper, and is bounded by a deadline. Errors name the socket path and
//! the call, so "the edge is not running" and "the edge refused" read differently. A route
//! change that reached an edge process just as it handed over to a new one (`shipit edge
//! upgrade`) was not made; the client sends it again, on a new connection that reaches the
//! new process, until the call's deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::api::{
    CandidateAnswer, DrainAnswer, DrainRequest, ErrorAnswer, LeaseAnswer, LeaseRequest,
    MaintenanceAnswer, MaintenanceRequest, NextAnswer, NextRequest, PauseAnswer, PauseRequest,
    PauseStatus, PreviewRequest, RETRY_HEADER, RemoveAnswer, ResumeAnswer, ShutdownAnswer,
    SplitEndAnswer, Status, SwitchAnswer, SwitchRequest, TlsReloadAnswer, TlsReloadRequest,
    WeightsRequest,
};
use crate::drain::DrainOutcome;
use crate::route::{Routing, validate_service};
use crate::tls::CertificateFiles;
use crate::{Backend, DEFAULT_ADMIN_TIMEOUT, EdgeError};

/// A duration as the admin API's milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How soon a call refused by an edge that handed over is sent again.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// Talks to one edge through its admin socket.
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AdminClient {
    /// A client of the edge whose admin socket is `socket_path`; calls time out after
    /// [`DEFAULT_ADMIN_TIMEOUT`] (a drain after its own timeout plus that).
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        AdminClient {
            socket: socket_path.into(),
            timeout: DEFAULT_ADMIN_TIMEOUT,
        }
    }

    /// Sets the deadline of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Status, EdgeError> {
        self.call(Method::GET, "/status".into(), None, self.timeout)
            .await
    }

    /// `PUT /routes/{service}/switch`: makes `backend` live and returns what it replaced.
    pub async fn switch(
        &self,
        service: &str,
        backend: &Backend,
    ) -> Result<SwitchAnswer, EdgeError> {
        self.switch_with(service, backend, &Routing::default())
            .await
    }

    /// `PUT /routes/{service}/switch` that also sets the route's hosts and path prefixes
    /// (each `None` keeps the route's).
    pub async fn switch_with(
        &self,
        service: &str,
        backend: &Backend,
        routing: &Routing,
    ) -> Result<SwitchAnswer, EdgeError> {
        validate_service(service)?;
        let body = SwitchRequest {
            slot: backend.slot,
            release: backend.release.clone(),
            addr: backend.addr,
            more_addrs: backend.more_addrs.clone(),
            hosts: routing.hosts.clone(),
            paths: routing.paths.clone(),
        };
        self.call(
            Method::PUT,
            format!("/routes/{service}/switch"),
            Some(serde_json::to_vec(&body).expect("a switch body serializes")),
            self.timeout,
        )
        .await
    }

    /// `PUT /routes/{service}/next`: the edge opens a connection to `backend` now and holds
    /// it for the next switch of `service` to it, so that switch does not wait for a connect.
    /// Call it once `backend` passed verification, right before the switch. Says whether a
    /// connection is held (false when none is needed, or the connect failed: the switch then
    /// connects as usual).
    pub async fn connect_next(&self, service: &str, backend: &Backend) -> Result<bool, EdgeError> {
        validate_service(service)?;
        let body = NextRequest {
            slot: backend.slot,
            release: backend.release.clone(),
            addr: backend.addr,
            more_addrs: backend.more_addrs.clone(),
        };
        let answer: NextAnswer = self
            .call(
                Method::PUT,
                format!("/routes/{service}/next"),
                Some(serde_json::to_vec(&body).expect("a next body serializes")),
                self.timeout,
            )
            .await?;
        Ok(answer.held)
    }

    /// `POST /routes/{service}/drain`: waits until the replaced backend of `release` has no
    /// request in flight, or `timeout` passes.
    pub async fn drain(
        &self,
        service: &str,
        release: &str,
        timeout: Duration,
    ) -> Result<DrainOutcome, EdgeError> {
        validate_service(service)?;
        let body = DrainRequest {
            release: release.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let answer: DrainAnswer = self
            .call(
                Method::POST,
                format!("/routes/{service}/drain"),
                Some(serde_json::to_vec(&body).expect("a drain body serializes")),
                timeout.saturating_add(self.timeout),
            )
            .await?;
        Ok(DrainOutcome {
            drained: answer.drained,
            in_flight: answer.in_flight,
            waited: Duration::from_millis(answer.waited_ms),
            closed: answer.closed,
        })
    }

    /// `PUT /routes/{service}/preview`: registers `backend` (the idle slot's, verified) as
    /// the candidate, reachable only by `X-Shipit-Slot` and by `hosts` (when given, they
    /// replace the route's preview host names).
    pub async fn preview(
        &self,
        service: &str,
        backend: &Backend,
        hosts: Option<&[String]>,
    ) -> Result<CandidateAnswer, EdgeError> {
        validate_service(service)?;
        let body = PreviewRequest {
            slot: backend.slot,
            release: backend.release.clone(),
            addr: backend.addr,
            more_addrs: backend.more_addrs.clone(),
            hosts: hosts.map(<[String]>::to_vec),
            lease_ms: None,
        };
        self.call(
            Method::PUT,
            format!("/routes/{service}/preview"),
            Some(serde_json::to_vec(&body).expect("a preview body serializes")),
            self.timeout,
        )
        .await
    }

    /// `DELETE /routes/{service}/preview`: unregisters the candidate (its split too), which
    /// then drains. Returns it.
    pub async fn clear_preview(&self, service: &str) -> Result<Option<Backend>, EdgeError> {
        validate_service(service)?;
        let answer: RemoveAnswer = self
            .call(
                Method::DELETE,
                format!("/routes/{service}/preview"),
                None,
                self.timeout,
            )
            .await?;
        Ok(answer.removed)
    }

    /// `PUT /routes/{service}/weights`: sends `percent` of new clients (sticky by cookie)
    /// to `candidate`, registering it if needed, with the edge's default lease
    /// ([`crate::DEFAULT_CANDIDATE_LEASE`]).
    pub async fn weights(
        &self,
        service: &str,
        candidate: &Backend,
        percent: u8,
    ) -> Result<CandidateAnswer, EdgeError> {
        self.weights_leased(service, candidate, percent, None).await
    }

    /// [`AdminClient::weights_leased`] that also says whether the split is sticky.
    pub async fn weights_split(
        &self,
        service: &str,
        candidate: &Backend,
        percent: u8,
        lease: Option<Duration>,
        sticky: bool,
    ) -> Result<CandidateAnswer, EdgeError> {
        self.send_weights(service, candidate, percent, lease, Some(sticky))
            .await
    }

    /// [`AdminClient::weights`] with a lease of `lease` from now (`None`: the edge's
    /// default); renew it with [`AdminClient::renew_lease`], or the edge withdraws the
    /// candidate when it lapses.
    pub async fn weights_leased(
        &self,
        service: &str,
        candidate: &Backend,
        percent: u8,
        lease: Option<Duration>,
    ) -> Result<CandidateAnswer, EdgeError> {
        self.send_weights(service, candidate, percent, lease, None)
            .await
    }

    async fn send_weights(
        &self,
        service: &str,
        candidate: &Backend,
        percent: u8,
        lease: Option<Duration>,
        sticky: Option<bool>,
    ) -> Result<CandidateAnswer, EdgeError> {
        validate_service(service)?;
        let body = WeightsRequest {
            candidate: candidate.clone(),
            percent,
            lease_ms: lease.map(millis),
            sticky,
        };
        self.call(
            Method::PUT,
            format!("/routes/{service}/weights"),
            Some(serde_json::to_vec(&body).expect("a weights body serializes")),
            self.timeout,
        )
        .await
    }

    /// `DELETE /routes/{service}/weights`: new clients all go to the live slot again; the
    /// candidate stays registered for preview. Returns it.
    pub async fn clear_weights(&self, service: &str) -> Result<Option<Backend>, EdgeError> {
        validate_service(service)?;
        let answer: SplitEndAnswer = self
            .call(
                Method::DELETE,
                format!("/routes/{service}/weights"),
                None,
                self.timeout,
            )
            .await?;
        Ok(answer.candidate)
    }

    /// `PUT /routes/{service}/lease`: keeps the candidate of `release` for `lease` from now.
    /// Refused (409) when the edge no longer holds it: its lease lapsed, or another
    /// candidate replaced it.
    pub async fn renew_lease(
        &self,
        service: &str,
        release: &str,
        lease: Duration,
    ) -> Result<LeaseAnswer, EdgeError> {
        validate_service(service)?;
        let body = LeaseRequest {
            release: release.to_string(),
            lease_ms: millis(lease),
        };
        self.call(
            Method::PUT,
            format!("/routes/{service}/lease"),
            Some(serde_json::to_vec(&body).expect("a lease body serializes")),
            self.timeout,
        )
        .await
    }

    /// `PUT /routes/{service}/pause`: holds the service's new requests (requests in flight
    /// finish) until [`AdminClient::resume`], or until `timeout` (at most
    /// [`crate::pause::MAX_PAUSE`]) passes; from then on they are answered 503 with
    /// `Retry-After` until the resume. Pausing a paused service sets its new deadline.
    /// Refused (404) for a service the edge does not route.
    pub async fn pause(&self, service: &str, timeout: Duration) -> Result<PauseStatus, EdgeError> {
        validate_service(service)?;
        let body = PauseRequest {
            timeout_ms: millis(timeout),
        };
        let answer: PauseAnswer = self
            .call(
                Method::PUT,
                format!("/routes/{service}/pause"),
                Some(serde_json::to_vec(&body).expect("a pause body serializes")),
                self.timeout,
            )
            .await?;
        Ok(answer.paused)
    }

    /// `DELETE /routes/{service}/pause`: the held requests go on to the slot live now, and
    /// new ones are routed as usual. Says how many were let go (`resumed` is false when the
    /// service was not paused).
    pub async fn resume(&self, service: &str) -> Result<ResumeAnswer, EdgeError> {
        validate_service(service)?;
        self.call(
            Method::DELETE,
            format!("/routes/{service}/pause"),
            None,
            self.timeout,
        )
        .await
    }

    /// `PUT /routes/{service}/maintenance`: every request of the service is answered 503
    /// with a page saying `message` (`None`: the default one) and the default
    /// `Retry-After`. Lasts across edge restarts until [`AdminClient::maintenance_off`].
    pub async fn maintenance(
        &self,
        service: &str,
        message: Option<&str>,
    ) -> Result<MaintenanceAnswer, EdgeError> {
        self.maintenance_with(service, message, None).await
    }

    /// [`AdminClient::maintenance`] with the answers' `Retry-After` (whole seconds, rounded
    /// up; `None`: [`crate::maintenance::DEFAULT_MAINTENANCE_RETRY_AFTER`]).
    pub async fn maintenance_with(
        &self,
        service: &str,
        message: Option<&str>,
        retry_after: Option<Duration>,
    ) -> Result<MaintenanceAnswer, EdgeError> {
        validate_service(service)?;
        let body = MaintenanceRequest {
            message: message.map(str::to_string),
            retry_after_s: retry_after.map(|d| {
                let seconds = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                u32::try_from(seconds).unwrap_or(u32::MAX)
            }),
        };
        self.call(
            Method::PUT,
            format!("/routes/{service}/maintenance"),
            Some(serde_json::to_vec(&body).expect("a maintenance body serializes")),
            self.timeout,
        )
        .await
    }

    /// `DELETE /routes/{service}/maintenance`: the service is served again. The answer's
    /// `previous` is the maintenance that ended (`None`: there was none).
    pub async fn maintenance_off(&self, service: &str) -> Result<MaintenanceAnswer, EdgeError> {
        validate_service(service)?;
        self.call(
            Method::DELETE,
            format!("/routes/{service}/maintenance"),
            None,
            self.timeout,
        )
        .await
    }

    /// `GET /metrics`: the Prometheus text page. Read values with
    /// [`crate::metrics::sample`].
    pub async fn metrics(&self) -> Result<String, EdgeError> {
        let request = "GET /metrics";
        let bytes = self
            .call_raw(Method::GET, "/metrics".into(), None, self.timeout)
            .await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| EdgeError::AdminAnswer {
            socket: self.socket.clone(),
            request: request.to_string(),
            detail: format!("the metrics page is not UTF-8: {e}"),
        })
    }

    /// `DELETE /routes/{service}`: returns the backend that was live, if any.
    pub async fn remove(&self, service: &str) -> Result<Option<Backend>, EdgeError> {
        validate_service(service)?;
        let answer: RemoveAnswer = self
            .call(
                Method::DELETE,
                format!("/routes/{service}"),
                None,
                self.timeout,
            )
            .await?;
        Ok(answer.removed)
    }

    /// `POST /tls/reload`: serves `certificates` (or, with `None`, the files it serves,
    /// read again) from the next TLS handshake on. A file that does not load changes
    /// nothing.
    pub async fn reload_tls(
        &self,
        certificates: Option<Vec<CertificateFiles>>,
    ) -> Result<TlsReloadAnswer, EdgeError> {
        let body = TlsReloadRequest { certificates };
        self.call(
            Method::POST,
            "/tls/reload".into(),
            Some(serde_json::to_vec(&body).expect("a reload body serializes")),
            self.timeout,
        )
        .await
    }

    /// `POST /shutdown`: the edge answers, then stops.
    pub async fn shutdown(&self) -> Result<(), EdgeError> {
        let _: ShutdownAnswer = self
            .call(Method::POST, "/shutdown".into(), None, self.timeout)
            .await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<T, EdgeError> {
        let request = format!("{method} {path}");
        let bytes = self.call_raw(method, path, body, deadline).await?;
        serde_json::from_slice(&bytes).map_err(|e| EdgeError::AdminAnswer {
            socket: self.socket.clone(),
            request,
            detail: format!("{e} in {}", String::from_utf8_lossy(&bytes)),
        })
    }

    /// One call; the answer's body when its status is a success.
    async fn call_raw(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<Bytes, EdgeError> {
        let request = format!("{method} {path}");
        let exchange = async {
            loop {
                match self
                    .exchange(method.clone(), &path, body.clone(), &request)
                    .await
                {
                    Err(EdgeError::HandedOver { .. }) => {
                        tracing::debug!(%request, "the edge handed over; sending the call again");
                        tokio::time::sleep(RETRY_INTERVAL).await;
                    }
                    answer => return answer,
                }
            }
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(EdgeError::AdminTimeout {
                socket: self.socket.clone(),
                request,
                after: deadline,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        request: &str,
    ) -> Result<Bytes, EdgeError> {
        let protocol = |source| EdgeError::AdminProtocol {
            socket: self.socket.clone(),
            request: request.to_string(),
            source,
        };
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            EdgeError::AdminUnreachable {
                socket: self.socket.clone(),
                source,
            }
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        // The connection ends once the answer is read and `sender` is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("admin connection ended: {e}");
            }
        });

        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "edge");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("an admin request is well formed");
        let response = sender.send_request(req).await.map_err(protocol)?;
        let status = response.status();
        let response_retry = response.headers().contains_key(RETRY_HEADER);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        if status == http::StatusCode::SERVICE_UNAVAILABLE && response_retry {
            return Err(EdgeError::HandedOver {
                dir: self
                    .socket
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            });
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorAnswer>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(EdgeError::AdminRejected {
                socket: self.socket.clone(),
                request: request.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let err = AdminClient::new(&socket).status().await.unwrap_err();
        assert!(matches!(err, EdgeError::AdminUnreachable { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&socket.display().to_string()), "{msg}");
        assert!(
            err.hint()
                .is_some_and(|h| h.starts_with("is the edge running?")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn silent_socket_times_out_with_the_call_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        // Accepts connections (the kernel does) but never answers.
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let err = AdminClient::new(&socket)
            .with_timeout(Duration::from_millis(200))
            .status()
            .await
            .unwrap_err();
        assert!(matches!(err, EdgeError::AdminTimeout { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("GET /status"), "{msg}");
        assert!(msg.contains("200ms"), "{msg}");
    }

    #[tokio::test]
    async fn invalid_service_is_refused_before_sending() {
        let client = AdminClient::new("/nonexistent/admin.sock");
        let err = client.remove("a/b").await.unwrap_err();
        assert!(matches!(err, EdgeError::InvalidService { .. }), "{err:?}");
    }
}
