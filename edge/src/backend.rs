//! What a route points at, and the requests in flight to it.
//!
//! A [`Backend`] is the wire value: a slot of one release, reachable at an address. Each
//! switch wraps it in a fresh [`ActiveBackend`] with its own in-flight counter, so a slot
//! reused by a later release drains on its own. A request holds an [`InFlightGuard`] from
//! the moment it claims the backend until its response body is done or dropped, or, for an
//! upgraded connection (WebSocket), until that connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Slot;
use crate::connector::Connector;
use crate::metrics::SlotMetrics;
use crate::pool::Pool;

/// One slot of one release, reachable at `addr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub slot: Slot,
    pub release: String,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} slot (release {}) at {}",
            self.slot, self.release, self.addr
        )
    }
}

/// Counts the requests in flight to one [`ActiveBackend`] and signals when it reaches zero.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Signalled whenever the count drops to zero. Enable the `Notified` future before
    /// reading [`InFlight::count`] so a drop to zero in between is not missed.
    pub(crate) fn idle(&self) -> &Notify {
        &self.idle
    }
}

/// A backend as installed for a service by one switch. The live one takes new requests;
/// replaced ones only finish the requests they already have.
#[derive(Debug)]
pub struct ActiveBackend {
    service: String,
    backend: Backend,
    authority: Authority,
    in_flight: InFlight,
    metrics: Arc<SlotMetrics>,
    /// Cancelled when a drain of this backend reaches its deadline: its upgraded
    /// connections close then.
    tunnels_closed: CancellationToken,
    /// Upgraded connections open to this backend.
    tunnels: AtomicUsize,
    /// Idle keep-alive connections to the slot, for the relay.
    pool: Pool,
}

impl ActiveBackend {
    /// A backend whose counters are its own (not reported on `/metrics`).
    pub fn new(service: impl Into<String>, backend: Backend) -> Arc<Self> {
        ActiveBackend::with_metrics(service, backend, Arc::default())
    }

    /// A backend that counts its requests in `metrics` (its service's and slot's).
    pub(crate) fn with_metrics(
        service: impl Into<String>,
        backend: Backend,
        metrics: Arc<SlotMetrics>,
    ) -> Arc<Self> {
        let authority = authority(backend.addr);
        Arc::new(ActiveBackend {
            service: service.into(),
            backend,
            authority,
            in_flight: InFlight::default(),
            metrics,
            tunnels_closed: CancellationToken::new(),
            tunnels: AtomicUsize::new(0),
            pool: Pool::default(),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `host:port` of the backend, ready for the upstream URI.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    pub fn metrics(&self) -> &SlotMetrics {
        &self.metrics
    }

    /// Idle connections to the slot.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the upgraded connections to this backend (its drain deadline passed) and
    /// says how many were open.
    pub(crate) fn close_tunnels(&self) -> usize {
        self.tunnels_closed.cancel();
        self.tunnels.load(Ordering::Acquire)
    }

    /// Upgraded connections open to this backend.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Acquire)
    }

    /// Counts an upgraded connection until the returned guard drops.
    pub(crate) fn open_tunnel(self: &Arc<Self>) -> TunnelCount {
        self.tunnels.fetch_add(1, Ordering::AcqRel);
        TunnelCount(Arc::clone(self))
    }

    /// Cancelled once [`ActiveBackend::close_tunnels`] was called.
    pub(crate) fn tunnels_closed(&self) -> &CancellationToken {
        &self.tunnels_closed
    }

    /// Counts one more request. The route table calls this under its read lock, so that a
    /// switch returning means every request to the replaced backend is already counted.
    pub(crate) fn claim(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard {
            active: Arc::clone(self),
            started: Some(Instant::now()),
        }
    }
}

/// One upgraded connection open to an [`ActiveBackend`].
#[derive(Debug)]
pub(crate) struct TunnelCount(Arc<ActiveBackend>);

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request in flight to an [`ActiveBackend`]; dropping it ends the request and records
/// its duration.
#[derive(Debug)]
pub struct InFlightGuard {
    active: Arc<ActiveBackend>,
    /// When the request was claimed; taken once its duration is recorded.
    started: Option<Instant>,
}

impl InFlightGuard {
    pub fn active(&self) -> &Arc<ActiveBackend> {
        &self.active
    }

    /// Records the request's duration now. An upgraded connection calls this at the 101,
    /// then stays in flight (for drains) until it closes.
    pub(crate) fn finish_timing(&mut self) {
        if let Some(started) = self.started.take() {
            self.active.metrics.observe(started.elapsed());
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.finish_timing();
        let in_flight = &self.active.in_flight;
        if in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            in_flight.idle.notify_waiters();
        }
    }
}

/// The URI authority of a slot's address, as connectors take it.
pub(crate) fn authority(addr: std::net::SocketAddr) -> Authority {
    Authority::try_from(addr.to_string()).expect("a socket address is a valid URI authority")
}

/// Opens one connection to each of `backends` whose pool is empty, so that the first
/// request after a switch (or to a new candidate) finds one ready. Failures are left to
/// that request, which tries again and answers for them.
pub(crate) fn warm(
    backends: Vec<Arc<ActiveBackend>>,
    connector: &Connector,
    idle_timeout: Duration,
) {
    for active in backends {
        if !active.pool().is_empty() {
            continue;
        }
        let connector = connector.clone();
        tokio::spawn(async move {
            if let Ok(stream) = connector.connect(active.authority()).await {
                active.pool().put(stream, idle_timeout);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(release: &str) -> Backend {
        Backend {
            slot: Slot::Green,
            release: release.to_string(),
            addr: "127.0.0.1:8081".parse().unwrap(),
        }
    }

    #[test]
    fn backend_json_shape() {
        let json = serde_json::to_value(backend("r42")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"slot": "green", "release": "r42", "addr": "127.0.0.1:8081"})
        );
        let back: Backend = serde_json::from_value(json).unwrap();
        assert_eq!(back, backend("r42"));
    }

    #[test]
    fn guards_count_requests_until_dropped() {
        let active = ActiveBackend::new("web", backend("r1"));
        let first = active.claim();
        let second = active.claim();
        assert_eq!(active.in_flight().count(), 2);
        drop(first);
        assert_eq!(active.in_flight().count(), 1);
        drop(second);
        assert_eq!(active.in_flight().count(), 0);
    }

    #[test]
    fn each_activation_counts_on_its_own() {
        let old = ActiveBackend::new("web", backend("r1"));
        let reused = ActiveBackend::new("web", backend("r1"));
        let _guard = old.claim();
        assert_eq!(old.in_flight().count(), 1);
        assert_eq!(reused.in_flight().count(), 0);
    }
}
