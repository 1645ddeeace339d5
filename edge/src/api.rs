//! The admin API's wire types: the JSON bodies of its calls, shared by the edge's side
//! ([`crate::admin`]) and the client ([`crate::AdminClient`]), so the two cannot drift.
//!
//! | call | body | answer |
//! |---|---|---|
//! | `GET /status` | | [`Status`] |
//! | `PUT /routes/{service}/switch` | [`SwitchRequest`] (a `Backend`) | [`SwitchAnswer`] |
//! | `POST /routes/{service}/drain` | [`DrainRequest`] | [`DrainAnswer`] |
//! | `DELETE /routes/{service}` | | [`RemoveAnswer`] |
//! | `PUT /routes/{service}/preview` | [`PreviewRequest`] (a `Backend`) | [`CandidateAnswer`] |
//! | `DELETE /routes/{service}/preview` | | [`RemoveAnswer`] |
//! | `PUT /routes/{service}/weights` | [`WeightsRequest`] | [`CandidateAnswer`] |
//! | `DELETE /routes/{service}/weights` | | [`SplitEndAnswer`] |
//! | `PUT /routes/{service}/lease` | [`LeaseRequest`] | [`LeaseAnswer`] |
//! | `PUT /routes/{service}/pause` | [`PauseRequest`] | [`PauseAnswer`] |
//! | `DELETE /routes/{service}/pause` | | [`ResumeAnswer`] |
//! | `PUT /routes/{service}/maintenance` | [`MaintenanceRequest`] | [`MaintenanceAnswer`] |
//! | `DELETE /routes/{service}/maintenance` | | [`MaintenanceAnswer`] |
//! | `GET /metrics` | | Prometheus text (`text/plain; version=0.0.4`) |
//! | `POST /tls/reload` | [`TlsReloadRequest`] | [`TlsReloadAnswer`] |
//! | `POST /shutdown` | | [`ShutdownAnswer`], then the edge stops |
//! | `POST /handover` | (`Upgrade: shipit-edge-handover`) | `101`, then [`crate::handover`] |
//!
//! Errors are [`ErrorAnswer`] (`{"error": "..."}`) with a 4xx/5xx status; a 503 with
//! [`RETRY_HEADER`] changed nothing and may be sent again. Pause and maintenance calls for
//! a service the edge has no live route for answer 404.

use std::net::SocketAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::lease::Lease;
use crate::maintenance::MaintenanceView;
use crate::pause::PauseView;
use crate::tls::CertificateFiles;
use crate::{Backend, Slot};

/// Marks a 503 whose call changed nothing and can be sent again: the edge handed over.
pub const RETRY_HEADER: &str = "x-shipit-edge-retry";

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// The address the edge actually listens on (the bound port when asked for port 0).
    pub listen: SocketAddr,
    /// The TLS address, when the edge terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<SocketAddr>,
    pub started_at: Timestamp,
    pub routes: Vec<RouteStatus>,
    /// The edge process this one took over from (`shipit edge upgrade`), while it still
    /// finishes its connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub service: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes the route answers for; empty means any path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Host names whose requests go to the candidate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_hosts: Vec<String>,
    pub live: Option<Backend>,
    /// Requests in flight on the live backend.
    #[serde(default)]
    pub in_flight: usize,
    /// The idle slot's registered backend (preview, and the split's other side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateStatus>,
    pub since: Timestamp,
    pub draining: Vec<DrainingStatus>,
    /// Set while the route is paused (its new requests are held, see [`crate::pause`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseStatus>,
    /// Set while the route is under maintenance (every request answered 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
}

/// A route's pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseStatus {
    /// When it ends without a resume.
    pub deadline: Timestamp,
    /// Requests held right now.
    pub held: usize,
    /// The deadline passed: requests are answered 503 until `DELETE .../pause`.
    pub expired: bool,
}

/// A route's maintenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceStatus {
    /// The operator's message on the page; absent: the default one
    /// ([`crate::maintenance::DEFAULT_MAINTENANCE_MESSAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The answers' `Retry-After`, in seconds.
    pub retry_after_s: u32,
    /// When it was turned on.
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateStatus {
    pub backend: Backend,
    /// The share of new clients it gets; 0 when it is only previewed.
    pub percent: u8,
    pub in_flight: usize,
    /// Its lease: it is withdrawn at `expires_at` unless renewed. None: held until changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Whether its split keeps each client on its side by the sticky cookie.
    #[serde(default = "sticky_by_default")]
    pub sticky: bool,
}

/// A split is sticky unless told otherwise.
pub(crate) fn sticky_by_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainingStatus {
    pub backend: Backend,
    pub in_flight: usize,
}

/// `PUT /routes/{service}/switch`: a [`Backend`], optionally with the host names the route
/// answers for (omitted: keep the route's hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    pub slot: Slot,
    pub release: String,
    pub addr: SocketAddr,
    /// Further addresses of the slot (see [`Backend::more_addrs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_addrs: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Path prefixes the route answers for (omitted: keep the route's; `[]`: any path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchAnswer {
    /// What was live before; equal to the requested backend when it already was live.
    pub previous: Option<Backend>,
    pub switched_at: Timestamp,
}

/// `PUT /routes/{service}/next`: the [`Backend`] the next switch of the service will name, to
/// open a connection to before that switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextRequest {
    pub slot: Slot,
    pub release: String,
    pub addr: SocketAddr,
    /// Further addresses of the slot (see [`Backend::more_addrs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAnswer {
    /// Whether a connection is held for the switch. False when the backend is live already,
    /// when a replaced instance of it still holds an open connection (the switch takes that),
    /// or when the connect failed or timed out; the switch then connects as before.
    pub held: bool,
}

/// `POST /routes/{service}/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub release: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainAnswer {
    pub drained: bool,
    pub in_flight: usize,
    pub waited_ms: u64,
    /// Upgraded connections closed because the deadline passed.
    #[serde(default)]
    pub closed: usize,
}

/// `PUT /routes/{service}/preview`: the idle slot's verified backend, registered without
/// making it live, optionally with host names that reach it (omitted: keep the route's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub slot: Slot,
    pub release: String,
    pub addr: SocketAddr,
    /// Further addresses of the slot (see [`Backend::more_addrs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_addrs: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// A lease for the candidate, in milliseconds (omitted: the same backend keeps its
    /// lease, another one has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// `PUT /routes/{service}/weights`: send `percent` of new clients to `candidate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRequest {
    pub candidate: Backend,
    pub percent: u8,
    /// The split's lease, in milliseconds, from now (omitted:
    /// [`crate::DEFAULT_CANDIDATE_LEASE`]). A split always has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Whether a client stays on the side it was put on, by the sticky cookie (omitted: the
    /// same candidate keeps its setting, another one is sticky). `false`: every request is
    /// weighted on its own, and no cookie is set or read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<bool>,
}

/// `PUT /routes/{service}/lease`: the candidate of `release` is kept `lease_ms` from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub release: String,
    pub lease_ms: u64,
}

/// `PUT /routes/{service}/pause`: hold the service's new requests for at most `timeout_ms`
/// (1 ms to [`crate::pause::MAX_PAUSE`]); pausing a paused service sets its new deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub timeout_ms: u64,
}

/// The answer to `PUT .../pause`: the pause as it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseAnswer {
    pub paused: PauseStatus,
}

/// The answer to `DELETE .../pause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeAnswer {
    /// The service was paused (false: nothing to resume).
    pub resumed: bool,
    /// Held requests let go (they now go to the live slot).
    pub released: usize,
    /// The pause's deadline had passed: its requests were being answered 503.
    #[serde(default)]
    pub expired: bool,
}

/// `PUT /routes/{service}/maintenance`: answer every request 503 with a page that says
/// `message` (HTML-escaped; at most [`crate::maintenance::MAX_MAINTENANCE_MESSAGE`] bytes;
/// absent: a default one) and `Retry-After: retry_after_s` (1 to a day; absent:
/// [`crate::maintenance::DEFAULT_MAINTENANCE_RETRY_AFTER`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u32>,
}

/// The answer to `PUT` and `DELETE .../maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceAnswer {
    /// The maintenance now in force (`None` after `DELETE`).
    pub maintenance: Option<MaintenanceStatus>,
    /// The one it replaced or ended, if any.
    pub previous: Option<MaintenanceStatus>,
}

/// The answer to `PUT .../lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub candidate: Backend,
    pub percent: u8,
    pub lease: Lease,
}

/// The answer to `PUT .../preview` and `PUT .../weights`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateAnswer {
    /// The candidate as it now is.
    pub candidate: Backend,
    pub percent: u8,
    /// Another candidate it replaced, which now drains.
    pub replaced: Option<Backend>,
}

/// `DELETE /routes/{service}/weights`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitEndAnswer {
    /// The candidate, still registered for preview.
    pub candidate: Option<Backend>,
}

/// `DELETE /routes/{service}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveAnswer {
    pub removed: Option<Backend>,
}

/// `POST /tls/reload`: the certificates to serve from now on; without them (`{}`), the
/// files the edge serves are read again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsReloadRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<CertificateFiles>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReloadAnswer {
    /// The certificates now served.
    pub certificates: Vec<CertificateFiles>,
    pub reloaded_at: Timestamp,
}

/// `POST /shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAnswer {
    pub stopping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

impl From<PauseView> for PauseStatus {
    fn from(view: PauseView) -> Self {
        PauseStatus {
            deadline: view.deadline,
            held: view.held,
            expired: view.expired,
        }
    }
}

impl From<MaintenanceView> for MaintenanceStatus {
    fn from(view: MaintenanceView) -> Self {
        MaintenanceStatus {
            message: view.message,
            retry_after_s: view.retry_after_s,
            since: view.since,
        }
    }
}
