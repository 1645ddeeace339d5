//! The route table: for each service, its live backend, its candidate, and the replaced
//! backends still draining.
//!
//! A request claims its backend under the read lock and increments that backend's
//! in-flight count before the lock is released; it is sent outside the lock. A switch
//! swaps the live backend under the write lock and gets the replaced one back. So once a
//! switch returns, every request that will ever reach the old backend is already counted,
//! and a drain that then sees zero in flight is final.
//!
//! Matching: a route answers for its `hosts` (none: any host) and its path prefixes (none:
//! any path). A route that names the request's host beats a catch-all one, then the longest
//! matching prefix wins, then a route with a live slot. A prefix matches whole segments:
//! `/api` matches `/api` and `/api/x`, not `/apix`. The path is forwarded unchanged. A lone
//! route without prefixes answers every request, whatever its hosts.
//!
//! The candidate is the idle slot's verified backend, registered by the pipeline without
//! making it live. It takes requests only through a preview host name, an `X-Shipit-Slot`
//! pin, or a weighted split (see [`crate::split`]). A switch ends it: switching to the
//! candidate makes it live with its in-flight count; switching elsewhere sends it to drain.
//! A candidate with a lease (every split has one, see [`crate::lease`]) is withdrawn when
//! the lease lapses ([`RouteTable::expire_leases`]).
//!
//! An operator can close a route for a while: under maintenance ([`crate::maintenance`])
//! every request it matches (preview and pinned ones included) is answered 503 by the edge;
//! paused ([`crate::pause`]), its new requests are held until it is resumed, and answered
//! 503 once the pause's deadline passed. Maintenance wins over a pause. A claim on a closed
//! route gets no backend and counts nothing in flight ([`Unclaimed`]).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use jiff::Timestamp;

use crate::backend::{ActiveBackend, Backend, InFlightGuard};
use crate::lease::Lease;
use crate::maintenance::{Maintenance, MaintenanceView};
use crate::metrics::Metrics;
use crate::pause::{Hold, Pause, PauseView};
use crate::split::{self, SplitCounter};
use crate::state::{
    FORMAT_VERSION, SavedCandidate, SavedMaintenance, SavedPause, SavedRoute, SavedRoutes,
};
use crate::{EdgeError, Slot};

/// One service's routing state.
#[derive(Debug)]
pub struct Route {
    pub service: String,
    /// Host names this route answers for; empty means any host.
    pub hosts: Vec<String>,
    /// Path prefixes this route answers for (normalized, see [`normalize_paths`]); empty
    /// means any path.
    pub paths: Vec<String>,
    /// Host names whose requests go to the candidate (a preview of the next release).
    pub preview_hosts: Vec<String>,
    /// `None` only after the route was removed while requests were still draining.
    pub live: Option<Arc<ActiveBackend>>,
    /// The idle slot's registered backend, and its share of new clients.
    pub candidate: Option<Candidate>,
    /// When `live` last changed.
    pub since: Timestamp,
    /// Replaced backends that may still have requests in flight.
    pub draining: Vec<Arc<ActiveBackend>>,
    split: SplitCounter,
    /// New requests are held (see [`crate::pause`]).
    pause: Option<Arc<Pause>>,
    /// Every request is answered 503 by the edge (see [`crate::maintenance`]).
    maintenance: Option<Arc<Maintenance>>,
}

/// The idle slot's verified backend, reachable without being live.
#[derive(Debug)]
pub struct Candidate {
    pub active: Arc<ActiveBackend>,
    /// The share of new clients sent to it, 0 to 100. Zero: reachable only by preview.
    pub percent: u8,
    /// When it is withdrawn unless its lease is renewed; `None`: held until changed.
    pub lease: Option<Lease>,
    /// Whether a client stays on the side of the split it was put on (by the sticky
    /// cookie). Not sticky: each request is weighted on its own.
    pub sticky: bool,
}

impl Route {
    fn new(service: &str, since: Timestamp) -> Route {
        Route {
            service: service.to_string(),
            hosts: Vec::new(),
            paths: Vec::new(),
            preview_hosts: Vec::new(),
            live: None,
            candidate: None,
            since,
            draining: Vec::new(),
            split: SplitCounter::default(),
            pause: None,
            maintenance: None,
        }
    }

    fn prune(&mut self) {
        self.draining.retain(|b| b.in_flight().count() > 0);
    }

    /// The latest replaced instance of `backend` that still drains, if any.
    fn replaced(&self, backend: &Backend) -> Option<&Arc<ActiveBackend>> {
        self.draining.iter().rev().find(|d| d.backend() == backend)
    }

    /// Sends the candidate, if any, to drain.
    fn retire_candidate(&mut self) -> Option<Backend> {
        let candidate = self.candidate.take()?;
        let backend = candidate.active.backend().clone();
        self.draining.push(candidate.active);
        Some(backend)
    }
}

/// A copy of one route, for status answers and for persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub service: String,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub preview_hosts: Vec<String>,
    pub live: Option<Backend>,
    /// Requests in flight on the live backend.
    pub in_flight: usize,
    pub candidate: Option<CandidateView>,
    pub since: Timestamp,
    /// Replaced backends with requests still in flight, and how many.
    pub draining: Vec<(Backend, usize)>,
    /// Its pause, when it is paused.
    pub pause: Option<PauseView>,
    /// Its maintenance, when it is under maintenance.
    pub maintenance: Option<MaintenanceView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateView {
    pub backend: Backend,
    pub percent: u8,
    pub in_flight: usize,
    pub lease: Option<Lease>,
    pub sticky: bool,
}

/// How a switch may change what a route matches. `None` keeps the route's current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub hosts: Option<Vec<String>>,
    /// Path prefixes, already normalized by [`normalize_paths`].
    pub paths: Option<Vec<String>>,
}

/// What a switch replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The backend live before the switch. Equal to the new one when the switch was a no-op.
    pub previous: Option<Backend>,
    pub switched_at: Timestamp,
}

/// What a request was given.
#[derive(Debug)]
pub struct Claim {
    pub guard: InFlightGuard,
    /// A `Set-Cookie` value for the answer, when the split just chose the client's side.
    pub set_cookie: Option<HeaderValue>,
    /// The request's `X-Shipit-Slot` was honoured.
    pub pinned: bool,
}

impl Claim {
    fn plain(guard: InFlightGuard) -> Claim {
        Claim {
            guard,
            set_cookie: None,
            pinned: false,
        }
    }
}

/// What the table needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The `Host` header or the URI's authority.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Why a request found no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// No service has been switched in yet.
    NoRoutes,
    /// The matching service has no live slot (it was removed and is draining).
    NoLiveSlot { service: String },
    /// Several services, none answering for this host and path.
    NoMatch { host: Option<String>, path: String },
    /// The request came for a preview host name, but no candidate is registered.
    NoPreview { service: String },
}

impl Unrouted {
    /// The edge's answer to a request that found no backend: 404 when no service answers
    /// for its host and path, 503 when one does but has nothing to send it to.
    pub fn status(&self) -> StatusCode {
        match self {
            Unrouted::NoMatch { .. } => StatusCode::NOT_FOUND,
            Unrouted::NoRoutes | Unrouted::NoLiveSlot { .. } | Unrouted::NoPreview { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl std::fmt::Display for Unrouted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unrouted::NoRoutes => f.write_str(
                "shipit edge: no live slot: no service has been switched in yet (run `shipit release`)",
            ),
            Unrouted::NoLiveSlot { service } => {
                write!(f, "shipit edge: no live slot for service {service}")
            }
            Unrouted::NoMatch {
                host: Some(host),
                path,
            } => {
                write!(f, "shipit edge: no service is routed for host {host} and path {path}")
            }
            Unrouted::NoMatch { host: None, path } => write!(
                f,
                "shipit edge: the request for path {path} has no Host header and no service \
                 is routed for any host"
            ),
            Unrouted::NoPreview { service } => write!(
                f,
                "shipit edge: no candidate of service {service} is registered for preview \
                 (run `shipit release --no-promote`)"
            ),
        }
    }
}

/// Why a request claimed no backend.
#[derive(Debug)]
pub enum Unclaimed {
    /// No route takes it.
    Unrouted(Unrouted),
    /// Its route is paused: wait on the hold ([`crate::pause`]), then claim again.
    Held(Hold),
    /// Its route answers it with a 503 of the edge's own.
    Closed(Closed),
}

impl From<Unrouted> for Unclaimed {
    fn from(unrouted: Unrouted) -> Self {
        Unclaimed::Unrouted(unrouted)
    }
}

/// Why the edge answers a request of a route itself, with a 503.
#[derive(Debug, Clone)]
pub enum Closed {
    /// The route is under maintenance: the page.
    Maintenance(Arc<Maintenance>),
    /// The route's pause passed its deadline, and it has not been resumed.
    PauseExpired { service: String },
    /// The edge stops (or hands over) while the request is held (never from the table).
    Stopping,
}

/// Why a pause or maintenance cannot be set or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefused {
    #[error(
        "service {service} has no live route on this edge; pause and maintenance apply to a \
         routed service (check the name with `shipit status`)"
    )]
    NoRoute { service: String },
}

/// What a resume let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Held requests released to claim again.
    pub released: usize,
    /// The pause's deadline had passed (its requests were being answered 503).
    pub expired: bool,
}

/// What a drain of one release should wait for.
#[derive(Debug)]
pub enum Drainable {
    /// The replaced backends of that release (possibly several, one per switch).
    Replaced(Vec<Arc<ActiveBackend>>),
    /// That release is the live one: there is nothing to drain, and stopping it would cut
    /// the service off.
    Live(Backend),
    /// That release is the registered candidate: remove it from the route first.
    Candidate(Backend),
    /// Unknown or already drained.
    Gone,
}

/// Why a candidate cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateRefused {
    #[error(
        "service {service} has no live slot; a candidate can only be registered beside a live \
         one (switch one in first)"
    )]
    NoLiveSlot { service: String },
    #[error(
        "the candidate is in the {slot} slot, which is live on service {service} ({live}); \
         register the idle slot's backend"
    )]
    LiveSlot {
        service: String,
        slot: Slot,
        live: Backend,
    },
    #[error("the split percent must be 0 to 100, not {percent}")]
    Percent { percent: u8 },
}

/// Why a lease cannot be renewed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRefused {
    #[error(
        "service {service} holds no candidate of release {release}: its lease lapsed and the \
         edge withdrew it, or another run replaced it"
    )]
    NoCandidate { service: String, release: String },
}

/// The longest service name the edge accepts.
pub const MAX_SERVICE_NAME: usize = 128;

/// Checks that `name` can be a route key and a URL path segment as is: letters, digits,
/// `.`, `_` and `-`, as in container names.
pub fn validate_service(name: &str) -> Result<(), EdgeError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if valid {
        Ok(())
    } else {
        Err(EdgeError::InvalidService {
            name: name.to_string(),
        })
    }
}

/// Checks path prefixes and puts them in the form matching uses: each starts with `/` and
/// has no trailing `/`; duplicates go; a list holding `/` (every path) becomes the empty
/// list, which is every path too.
pub fn normalize_paths(paths: &[String]) -> Result<Vec<String>, String> {
    let mut normalized = Vec::with_capacity(paths.len());
    for path in paths {
        let valid = path.starts_with('/')
            && path.bytes().all(|b| {
                b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b';' | b',' | b'"' | b'\\')
            });
        if !valid {
            return Err(format!(
                "invalid path prefix `{path}`: it must start with `/` and hold no spaces, \
                 `?`, `#`, `;`, `,`, quotes or backslashes"
            ));
        }
        let trimmed = path.trim_end_matches('/');
        if !normalized.iter().any(|p| p == trimmed) {
            normalized.push(trimmed.to_string());
        }
    }
    // `/` is every path: beside it, no other prefix narrows anything.
    if normalized.iter().any(String::is_empty) {
        normalized.clear();
    }
    Ok(normalized)
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: RwLock<BTreeMap<String, Route>>,
    metrics: Arc<Metrics>,
}

impl RouteTable {
    pub fn new() -> Self {
        RouteTable::default()
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Route>> {
        // The critical sections below do not panic; a poisoned lock still holds a
        // consistent map.
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Route>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh activation of `backend` for `service`, counted in its slot's metrics.
    fn activate(&self, service: &str, backend: Backend) -> Arc<ActiveBackend> {
        let metrics = self.metrics.slot(service, backend.slot);
        ActiveBackend::with_metrics(service, backend, metrics)
    }

    /// Puts back a route read from disk, with fresh in-flight counters. A candidate whose
    /// lease lapsed (while the edge was down) is left out, and returned.
    pub fn restore(&self, saved: &SavedRoute) -> Option<Backend> {
        let mut route = Route::new(&saved.service, saved.since);
        route.hosts = saved.hosts.clone();
        route.paths = saved.paths.clone();
        route.preview_hosts = saved.preview_hosts.clone();
        route.live = Some(self.activate(&saved.service, saved.live.clone()));
        let now = Timestamp::now();
        let (kept, lapsed) = match &saved.candidate {
            Some(c) if c.lease.is_some_and(|l| l.lapsed(now)) => (None, Some(c.backend.clone())),
            other => (other.as_ref(), None),
        };
        route.candidate = kept.map(|c| Candidate {
            active: self.activate(&saved.service, c.backend.clone()),
            percent: c.percent.min(100),
            lease: c.lease,
            sticky: c.sticky,
        });
        route.pause = saved
            .pause
            .map(|p| Pause::until_deadline(&saved.service, p.deadline));
        route.maintenance = saved.maintenance.as_ref().map(|m| {
            Arc::new(Maintenance::new(
                m.message.clone(),
                m.retry_after_s,
                m.since,
            ))
        });
        self.write().insert(saved.service.clone(), route);
        lapsed
    }

    /// Picks the backend for a request and counts the request, all under the read lock. On
    /// a closed route, no backend: a hold to wait on, or the edge's answer.
    pub fn claim(&self, req: &RequestInfo<'_>) -> Result<Claim, Unclaimed> {
        let routes = self.read();
        let found = find(&routes, req.host, req.path)?;
        let route = found.route;
        if let Some(maintenance) = &route.maintenance {
            return Err(Unclaimed::Closed(Closed::Maintenance(Arc::clone(
                maintenance,
            ))));
        }
        if let Some(pause) = &route.pause {
            return Err(if pause.expired() {
                Unclaimed::Closed(Closed::PauseExpired {
                    service: route.service.clone(),
                })
            } else {
                Unclaimed::Held(pause.hold())
            });
        }
        if found.preview {
            return match &route.candidate {
                Some(candidate) => Ok(Claim::plain(candidate.active.claim())),
                None => Err(Unrouted::NoPreview {
                    service: route.service.clone(),
                }
                .into()),
            };
        }
        let Some(live) = &route.live else {
            return Err(Unrouted::NoLiveSlot {
                service: route.service.clone(),
            }
            .into());
        };
        // The common case: nothing but a live slot, and no header is looked at.
        let Some(candidate) = &route.candidate else {
            return Ok(Claim::plain(live.claim()));
        };
        if let Some(slot) = split::pinned_slot(req.headers) {
            let pinned = [&candidate.active, live]
                .into_iter()
                .find(|b| b.backend().slot == slot);
            if let Some(pinned) = pinned {
                return Ok(Claim {
                    guard: pinned.claim(),
                    set_cookie: None,
                    pinned: true,
                });
            }
        }
        if candidate.percent == 0 {
            return Ok(Claim::plain(live.claim()));
        }
        let sides = [
            (live.backend(), live),
            (candidate.active.backend(), &candidate.active),
        ];
        if candidate.sticky
            && let Some(kept) = split::sticky(req.headers, sides)
        {
            return Ok(Claim::plain(kept.claim()));
        }
        let chosen = if route.split.to_candidate(candidate.percent) {
            &candidate.active
        } else {
            live
        };
        Ok(Claim {
            guard: chosen.claim(),
            set_cookie: candidate
                .sticky
                .then(|| split::set_cookie(chosen.backend(), found.prefix))
                .flatten(),
            pinned: false,
        })
    }

    /// Makes `backend` the live backend of `service` (creating the route if needed) and
    /// hands back the one it replaced. `routing` may change the hosts and paths. A switch
    /// ends the candidate: switching to it makes it live with its in-flight count, any
    /// other switch sends it to drain. One exception: the live slot's own release at other
    /// addresses (a task added or gone, a container restarted) only moves new requests to
    /// them; the old addresses drain, and the candidate and its split stay.
    pub fn switch(&self, service: &str, backend: Backend, routing: Routing) -> Switched {
        let switched_at = Timestamp::now();
        let mut routes = self.write();
        let route = routes
            .entry(service.to_string())
            .or_insert_with(|| Route::new(service, switched_at));
        if let Some(hosts) = routing.hosts {
            route.hosts = hosts;
        }
        if let Some(paths) = routing.paths {
            route.paths = paths;
        }
        // A switch back to a backend that was replaced and still drains (a rollback soon
        // after the release) takes its idle connections: the first requests find them open.
        let earlier = route.replaced(&backend).cloned();
        route.prune();
        if let Some(live) = &route.live
            && *live.backend() == backend
        {
            // Switching to what is already live keeps its counter: nothing to drain.
            route.retire_candidate();
            return Switched {
                previous: Some(backend),
                switched_at,
            };
        }
        if let Some(live) = &route.live
            && live.backend().slot == backend.slot
            && live.backend().release == backend.release
        {
            let fresh = self.activate(service, backend);
            let old = route.live.replace(fresh).map(|old| {
                let previous = old.backend().clone();
                route.draining.push(old);
                previous
            });
            return Switched {
                previous: old,
                switched_at,
            };
        }
        let promoted = match route.candidate.take() {
            Some(candidate) if *candidate.active.backend() == backend => candidate.active,
            other => {
                route.candidate = other;
                route.retire_candidate();
                let fresh = self.activate(service, backend);
                if let Some(earlier) = earlier {
                    fresh.adopt_idle(&earlier);
                }
                fresh
            }
        };
        let replaced = route.live.replace(promoted);
        route.since = switched_at;
        let previous = replaced.map(|old| {
            let previous = old.backend().clone();
            route.draining.push(old);
            previous
        });
        Switched {
            previous,
            switched_at,
        }
    }

    /// Whether a replaced instance of `backend` that still drains on `service` holds an
    /// open idle connection to its first address, which a switch back to it will take.
    pub(crate) fn has_open_idle(
        &self,
        service: &str,
        backend: &Backend,
        idle_timeout: Duration,
    ) -> bool {
        let routes = self.read();
        routes
            .get(service)
            .and_then(|route| route.replaced(backend))
            .is_some_and(|d| d.members()[0].pool().has_open(idle_timeout))
    }

    /// The backends `service` sends new requests to: its live one and its candidate.
    pub(crate) fn serving(&self, service: &str) -> Vec<Arc<ActiveBackend>> {
        let routes = self.read();
        let Some(route) = routes.get(service) else {
            return Vec::new();
        };
        route
            .live
            .iter()
            .chain(route.candidate.as_ref().map(|c| &c.active))
            .cloned()
            .collect()
    }

    /// Registers `backend` as the candidate of `service`, reachable by preview and, with
    /// `percent`, by the split. The same backend keeps its counter (and its percent when
    /// `percent` is `None`); another one replaces it, and the replaced one drains.
    /// `preview_hosts`, when given, replaces the route's preview host names.
    pub fn set_candidate(
        &self,
        service: &str,
        backend: Backend,
        percent: Option<u8>,
        preview_hosts: Option<Vec<String>>,
    ) -> Result<Option<Backend>, CandidateRefused> {
        self.set_candidate_leased(service, backend, percent, preview_hosts, None, None)
    }

    /// [`RouteTable::set_candidate`] with a lease: `Some` starts a new one (the candidate is
    /// withdrawn when it lapses, see [`RouteTable::expire_leases`]); `None` keeps the lease
    /// of the same backend, and gives another backend none. `sticky` likewise: `None` keeps
    /// the same backend's, and makes another backend's split sticky.
    pub fn set_candidate_leased(
        &self,
        service: &str,
        backend: Backend,
        percent: Option<u8>,
        preview_hosts: Option<Vec<String>>,
        lease: Option<Lease>,
        sticky: Option<bool>,
    ) -> Result<Option<Backend>, CandidateRefused> {
        if let Some(percent) = percent
            && percent > 100
        {
            return Err(CandidateRefused::Percent { percent });
        }
        let mut routes = self.write();
        let no_live = || CandidateRefused::NoLiveSlot {
            service: service.to_string(),
        };
        let route = routes.get_mut(service).ok_or_else(no_live)?;
        let live = route.live.as_ref().ok_or_else(no_live)?;
        if live.backend().slot == backend.slot {
            return Err(CandidateRefused::LiveSlot {
                service: service.to_string(),
                slot: backend.slot,
                live: live.backend().clone(),
            });
        }
        route.prune();
        if let Some(hosts) = preview_hosts {
            route.preview_hosts = hosts;
        }
        if let Some(candidate) = &mut route.candidate
            && *candidate.active.backend() == backend
        {
            if let Some(percent) = percent {
                candidate.percent = percent;
            }
            if lease.is_some() {
                candidate.lease = lease;
            }
            if let Some(sticky) = sticky {
                candidate.sticky = sticky;
            }
            return Ok(None);
        }
        let replaced = route.retire_candidate();
        route.candidate = Some(Candidate {
            active: self.activate(service, backend),
            percent: percent.unwrap_or(0),
            lease,
            sticky: sticky.unwrap_or(true),
        });
        Ok(replaced)
    }

    /// Renews the lease of the candidate of `release` on `service` to `lease`. Refused when
    /// that candidate is not registered (any more): a lapsed lease is not brought back.
    pub fn renew_lease(
        &self,
        service: &str,
        release: &str,
        lease: Lease,
    ) -> Result<CandidateView, LeaseRefused> {
        let mut routes = self.write();
        let candidate = routes
            .get_mut(service)
            .and_then(|r| r.candidate.as_mut())
            .filter(|c| c.active.backend().release == release)
            .ok_or_else(|| LeaseRefused::NoCandidate {
                service: service.to_string(),
                release: release.to_string(),
            })?;
        candidate.lease = Some(lease);
        Ok(CandidateView {
            backend: candidate.active.backend().clone(),
            percent: candidate.percent,
            in_flight: candidate.active.in_flight().count(),
            lease: candidate.lease,
            sticky: candidate.sticky,
        })
    }

    /// When the first lease of any candidate ends, if one has a lease.
    pub fn next_lease_end(&self) -> Option<Timestamp> {
        self.read()
            .values()
            .filter_map(|r| r.candidate.as_ref()?.lease)
            .map(|l| l.expires_at)
            .min()
    }

    /// Withdraws every candidate whose lease lapsed at `now` (split and preview): it drains
    /// like a removed candidate. Returns them, with their services.
    pub fn expire_leases(&self, now: Timestamp) -> Vec<(String, Backend)> {
        let mut routes = self.write();
        let mut withdrawn = Vec::new();
        for route in routes.values_mut() {
            let lapsed = route
                .candidate
                .as_ref()
                .and_then(|c| c.lease)
                .is_some_and(|l| l.lapsed(now));
            if lapsed {
                route.prune();
                if let Some(backend) = route.retire_candidate() {
                    withdrawn.push((route.service.clone(), backend));
                }
            }
        }
        withdrawn
    }

    /// Ends the split of `service`: new clients all go to the live slot again. The
    /// candidate stays reachable by preview. Returns it.
    pub fn clear_split(&self, service: &str) -> Option<Backend> {
        let mut routes = self.write();
        let candidate = routes.get_mut(service)?.candidate.as_mut()?;
        candidate.percent = 0;
        Some(candidate.active.backend().clone())
    }

    /// Unregisters the candidate of `service` (split and preview); its requests in flight
    /// keep draining. Returns it.
    pub fn remove_candidate(&self, service: &str) -> Option<Backend> {
        let mut routes = self.write();
        let route = routes.get_mut(service)?;
        route.prune();
        route.retire_candidate()
    }

    /// Pauses `service` for `timeout` from now: its new requests are held. A paused one gets
    /// the new deadline, and keeps its held requests. Returns the pause.
    pub fn pause(&self, service: &str, timeout: Duration) -> Result<PauseView, GateRefused> {
        let mut routes = self.write();
        let route = routed(&mut routes, service)?;
        match &route.pause {
            Some(pause) => Ok(pause.extend(timeout)),
            None => {
                let pause = Pause::starting(service, timeout);
                let view = pause.view();
                route.pause = Some(pause);
                Ok(view)
            }
        }
    }

    /// Ends the pause of `service`: its held requests claim again, and new ones are routed
    /// as usual. `None` when it was not paused.
    pub fn resume(&self, service: &str) -> Result<Option<Resumed>, GateRefused> {
        let mut routes = self.write();
        let route = routed(&mut routes, service)?;
        Ok(route.pause.take().map(|pause| {
            let expired = pause.expired();
            Resumed {
                released: pause.resume(),
                expired,
            }
        }))
    }

    /// Puts `service` under maintenance, or changes its page; returns the maintenance now
    /// in force and the one it replaced.
    pub fn set_maintenance(
        &self,
        service: &str,
        message: Option<String>,
        retry_after_s: u32,
    ) -> Result<(MaintenanceView, Option<MaintenanceView>), GateRefused> {
        let mut routes = self.write();
        let route = routed(&mut routes, service)?;
        let maintenance = Arc::new(Maintenance::new(message, retry_after_s, Timestamp::now()));
        let view = maintenance.view();
        let previous = route.maintenance.replace(maintenance).map(|m| m.view());
        Ok((view, previous))
    }

    /// Ends the maintenance of `service`; returns it (`None` when there was none).
    pub fn clear_maintenance(&self, service: &str) -> Result<Option<MaintenanceView>, GateRefused> {
        let mut routes = self.write();
        let route = routed(&mut routes, service)?;
        Ok(route.maintenance.take().map(|m| m.view()))
    }

    /// Removes the route of `service`. Its requests in flight keep draining; the removed
    /// live backend is returned.
    pub fn remove(&self, service: &str) -> Option<Backend> {
        let mut routes = self.write();
        let route = routes.get_mut(service)?;
        let removed = route.live.take();
        route.since = Timestamp::now();
        // Its held requests claim again and find it gone; a route switched in later under
        // the same name starts open.
        if let Some(pause) = route.pause.take() {
            pause.resume();
        }
        route.maintenance = None;
        if let Some(old) = &removed {
            route.draining.push(Arc::clone(old));
        }
        route.retire_candidate();
        route.prune();
        if route.draining.is_empty() {
            routes.remove(service);
        }
        removed.map(|old| old.backend().clone())
    }

    /// The replaced backends of `release` on `service` that a drain should wait for.
    pub fn drainable(&self, service: &str, release: &str) -> Drainable {
        let mut routes = self.write();
        let Some(route) = routes.get_mut(service) else {
            return Drainable::Gone;
        };
        route.prune();
        if let Some(live) = &route.live
            && live.backend().release == release
        {
            return Drainable::Live(live.backend().clone());
        }
        if let Some(candidate) = &route.candidate
            && candidate.active.backend().release == release
        {
            return Drainable::Candidate(candidate.active.backend().clone());
        }
        let replaced: Vec<_> = route
            .draining
            .iter()
            .filter(|b| b.backend().release == release)
            .cloned()
            .collect();
        if replaced.is_empty() {
            Drainable::Gone
        } else {
            Drainable::Replaced(replaced)
        }
    }

    /// A copy of every route, sorted by service. Drained backends are left out.
    pub fn view(&self) -> Vec<RouteView> {
        self.read()
            .values()
            .map(|route| RouteView {
                service: route.service.clone(),
                hosts: route.hosts.clone(),
                paths: route.paths.clone(),
                preview_hosts: route.preview_hosts.clone(),
                live: route.live.as_ref().map(|b| b.backend().clone()),
                in_flight: route.live.as_ref().map_or(0, |b| b.in_flight().count()),
                candidate: route.candidate.as_ref().map(|c| CandidateView {
                    backend: c.active.backend().clone(),
                    percent: c.percent,
                    in_flight: c.active.in_flight().count(),
                    lease: c.lease,
                    sticky: c.sticky,
                }),
                since: route.since,
                draining: route
                    .draining
                    .iter()
                    .map(|b| (b.backend().clone(), b.in_flight().count()))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                pause: route.pause.as_ref().map(|p| p.view()),
                maintenance: route.maintenance.as_ref().map(|m| m.view()),
            })
            .collect()
    }

    /// Requests in flight per service and slot: live, candidate and draining backends.
    pub fn in_flight_by_slot(&self) -> BTreeMap<(String, Slot), usize> {
        let mut counts = BTreeMap::new();
        for route in self.read().values() {
            let backends = route
                .live
                .iter()
                .chain(route.candidate.as_ref().map(|c| &c.active))
                .chain(&route.draining);
            for backend in backends {
                *counts
                    .entry((route.service.clone(), backend.backend().slot))
                    .or_default() += backend.in_flight().count();
            }
        }
        counts
    }
}

impl RouteView {
    /// The route as `routes.json` keeps it; `None` without a live backend.
    pub fn saved(&self) -> Option<SavedRoute> {
        Some(SavedRoute {
            service: self.service.clone(),
            hosts: self.hosts.clone(),
            paths: self.paths.clone(),
            preview_hosts: self.preview_hosts.clone(),
            live: self.live.clone()?,
            candidate: self.candidate.as_ref().map(|c| SavedCandidate {
                backend: c.backend.clone(),
                percent: c.percent,
                lease: c.lease,
                sticky: c.sticky,
            }),
            since: self.since,
            pause: self.pause.map(|p| SavedPause {
                deadline: p.deadline,
            }),
            maintenance: self.maintenance.as_ref().map(|m| SavedMaintenance {
                message: m.message.clone(),
                retry_after_s: m.retry_after_s,
                since: m.since,
            }),
        })
    }
}

/// The route of `service` with a live backend, the one pause and maintenance apply to.
fn routed<'a>(
    routes: &'a mut BTreeMap<String, Route>,
    service: &str,
) -> Result<&'a mut Route, GateRefused> {
    routes
        .get_mut(service)
        .filter(|route| route.live.is_some())
        .ok_or_else(|| GateRefused::NoRoute {
            service: service.to_string(),
        })
}

/// The route a request matched, and how.
struct Found<'a> {
    route: &'a Route,
    /// Matched by one of the route's preview host names.
    preview: bool,
    /// The path prefix that matched ("" when the route has none).
    prefix: &'a str,
}

fn find<'a>(
    routes: &'a BTreeMap<String, Route>,
    host: Option<&str>,
    path: &str,
) -> Result<Found<'a>, Unrouted> {
    if routes.is_empty() {
        return Err(Unrouted::NoRoutes);
    }
    let hostname = host.map(strip_port);
    let names = |list: &[String]| {
        hostname.is_some_and(|name| list.iter().any(|h| h.eq_ignore_ascii_case(name)))
    };
    // (named host beats catch-all, longer prefix, has a live slot)
    let mut best: Option<(Found<'a>, (bool, usize, bool))> = None;
    for route in routes.values() {
        let (named, preview) = if names(&route.hosts) {
            (true, false)
        } else if names(&route.preview_hosts) {
            (true, true)
        } else if route.hosts.is_empty() {
            (false, false)
        } else {
            continue;
        };
        let Some(prefix) = matching_prefix(&route.paths, path) else {
            continue;
        };
        let rank = (named, prefix.len(), preview || route.live.is_some());
        if best.as_ref().is_none_or(|(_, r)| rank > *r) {
            best = Some((
                Found {
                    route,
                    preview,
                    prefix,
                },
                rank,
            ));
        }
    }
    if let Some((found, _)) = best {
        return Ok(found);
    }
    let mut all = routes.values();
    if let (Some(only), None) = (all.next(), all.next())
        && only.paths.is_empty()
    {
        return Ok(Found {
            route: only,
            preview: false,
            prefix: "",
        });
    }
    Err(Unrouted::NoMatch {
        host: host.map(str::to_string),
        path: path.to_string(),
    })
}

/// The longest of `prefixes` that `path` is under ("" when there are none to match).
fn matching_prefix<'a>(prefixes: &'a [String], path: &str) -> Option<&'a str> {
    if prefixes.is_empty() {
        return Some("");
    }
    prefixes
        .iter()
        .filter(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|prefix| prefix.len())
        .map(String::as_str)
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The routes worth saving, as the routes file holds them: those with a live backend. (The
/// file's types know nothing of the table; the table knows how it is saved.)
pub(crate) fn saved_routes(listen: std::net::SocketAddr, view: &[RouteView]) -> SavedRoutes {
    SavedRoutes {
        version: FORMAT_VERSION,
        listen,
        routes: view.iter().filter_map(RouteView::saved).collect(),
    }
}

#[cfg(test)]
mod tests;
