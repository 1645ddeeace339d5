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
use crate::workers::Workers;

/// One slot of one release, reachable at `addr`, and at `more_addrs` when the slot runs as
/// several processes (the tasks of one ECS target group).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub slot: Slot,
    pub release: String,
    pub addr: SocketAddr,
    /// Further addresses of the same slot and release. Requests go to `addr` and these in
    /// turn, one each; a request in flight stays on the address it started on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_addrs: Vec<SocketAddr>,
}

impl Backend {
    /// A slot of one release at one address.
    pub fn new(slot: Slot, release: impl Into<String>, addr: SocketAddr) -> Backend {
        Backend {
            slot,
            release: release.into(),
            addr,
            more_addrs: Vec::new(),
        }
    }

    /// Every address of the slot: `addr` first.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.addr).chain(self.more_addrs.iter().copied())
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} slot (release {}) at {}",
            self.slot, self.release, self.addr
        )?;
        for addr in &self.more_addrs {
            write!(f, ", {addr}")?;
        }
        Ok(())
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
    /// One per address of the backend, `addr`'s first.
    members: Vec<Member>,
    /// The member the next request goes to, when there are several.
    turn: AtomicUsize,
    in_flight: InFlight,
    metrics: Arc<SlotMetrics>,
    /// Cancelled when a drain of this backend reaches its deadline: its upgraded
    /// connections close then.
    tunnels_closed: CancellationToken,
    /// Upgraded connections open to this backend.
    tunnels: AtomicUsize,
    /// Notified when the last open upgraded connection ends.
    tunnels_ended: Notify,
}

/// One address of a backend, and its idle keep-alive connections (for the relay).
#[derive(Debug)]
pub(crate) struct Member {
    authority: Authority,
    pool: Pool,
}

impl Member {
    /// `host:port` of the address, ready for the upstream URI.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Idle connections to the address.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
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
        let members = backend
            .addrs()
            .map(|addr| Member {
                authority: authority(addr),
                pool: Pool::default(),
            })
            .collect();
        Arc::new(ActiveBackend {
            service: service.into(),
            backend,
            members,
            turn: AtomicUsize::new(0),
            in_flight: InFlight::default(),
            metrics,
            tunnels_closed: CancellationToken::new(),
            tunnels: AtomicUsize::new(0),
            tunnels_ended: Notify::new(),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `host:port` of the address the next request goes to, ready for the upstream URI:
    /// for a backend of several addresses, each in turn.
    pub fn authority(&self) -> &Authority {
        self.pick().authority()
    }

    /// The index of the address the next request goes to (see [`pick`](Self::pick)), for
    /// an answer that outlives the borrow of its backend.
    pub(crate) fn pick_index(&self) -> usize {
        match self.members.len() {
            1 => 0,
            n => self.turn.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// The address at `index` (from [`pick_index`](Self::pick_index)).
    pub(crate) fn member(&self, index: usize) -> &Member {
        &self.members[index]
    }

    /// The address the next request goes to: each in turn, one request each.
    pub(crate) fn pick(&self) -> &Member {
        self.member(self.pick_index())
    }

    /// Every address, `addr`'s first.
    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Takes the idle connections of `earlier`, an instance of the same backend that was
    /// replaced: address by address, as its members are the same addresses in the same order.
    pub(crate) fn adopt_idle(&self, earlier: &ActiveBackend) {
        debug_assert_eq!(self.backend, earlier.backend);
        for (mine, theirs) in self.members.iter().zip(&earlier.members) {
            mine.pool.adopt(&theirs.pool);
        }
    }

    pub fn metrics(&self) -> &SlotMetrics {
        &self.metrics
    }

    /// Closes the upgraded connections to this backend (its drain deadline passed) and
    /// says how many were open. Counted before they are told: each ends on its own thread,
    /// and may be gone by the time the call returns.
    pub(crate) fn close_tunnels(&self) -> usize {
        let open = self.tunnels.load(Ordering::Acquire);
        self.tunnels_closed.cancel();
        open
    }

    /// Waits until no upgraded connection to this backend is open, or `deadline` passes.
    /// Whether none is.
    pub(crate) async fn tunnels_ended(&self, deadline: Instant) -> bool {
        loop {
            let ended = self.tunnels_ended.notified();
            tokio::pin!(ended);
            // Registered before reading the count, so an end in between wakes us.
            ended.as_mut().enable();
            if self.tunnels() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.tunnels() == 0;
            }
        }
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
        if self.0.tunnels.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.tunnels_ended.notify_waiters();
        }
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

/// Opens one connection to each address of `backends` whose pool is empty, on the first
/// serving thread (or the edge's own runtime, when it has none), so that the first request
/// after a switch (or to a new candidate) finds one ready; a request on another thread moves
/// it to its own. One, not one per thread: a slot that serves one connection at a time (a
/// single sync worker) would sit on an idle one while the request waits behind it. Failures
/// are left to that request, which tries again and answers for them.
pub(crate) fn warm(
    backends: Vec<Arc<ActiveBackend>>,
    connector: &Connector,
    idle_timeout: Duration,
    workers: &Workers,
) {
    for active in backends {
        for member in 0..active.members().len() {
            if !active.members()[member].pool().is_empty() {
                continue;
            }
            let connector = connector.clone();
            let active = Arc::clone(&active);
            let connect = async move {
                let member = &active.members()[member];
                if let Ok(stream) = connector.connect(member.authority()).await {
                    member.pool().put(stream, idle_timeout);
                }
            };
            match workers.handles().first() {
                Some(first) => drop(first.spawn(connect)),
                None => drop(tokio::spawn(connect)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(release: &str) -> Backend {
        Backend::new(Slot::Green, release, "127.0.0.1:8081".parse().unwrap())
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

        let mut several = backend("r43");
        several.more_addrs = vec!["127.0.0.1:8082".parse().unwrap()];
        let json = serde_json::to_value(&several).unwrap();
        assert_eq!(json["more_addrs"], serde_json::json!(["127.0.0.1:8082"]));
        assert_eq!(serde_json::from_value::<Backend>(json).unwrap(), several);
        assert_eq!(
            several.to_string(),
            "the green slot (release r43) at 127.0.0.1:8081, 127.0.0.1:8082"
        );
    }

    #[test]
    fn a_backend_of_several_addresses_gives_each_in_turn() {
        let mut several = backend("r1");
        several.more_addrs = vec![
            "127.0.0.1:8082".parse().unwrap(),
            "127.0.0.1:8083".parse().unwrap(),
        ];
        let active = ActiveBackend::new("web", several);
        let turns: Vec<String> = (0..6).map(|_| active.authority().to_string()).collect();
        assert_eq!(
            turns,
            [8081, 8082, 8083, 8081, 8082, 8083].map(|p| format!("127.0.0.1:{p}"))
        );
        let one = ActiveBackend::new("web", backend("r2"));
        assert_eq!(one.authority().as_str(), "127.0.0.1:8081");
        assert_eq!(one.authority().as_str(), "127.0.0.1:8081");
    }

    /// A slot of two addresses: one client's requests take them in turn, and concurrent ones
    /// reach both, by the relay and by hyper (HTTP/1.1 and h2c); after a switch to the same
    /// release at one address, the other gets no new request.
    #[tokio::test]
    async fn a_slot_of_two_addresses_serves_from_both_and_a_gone_one_gets_nothing() {
        use crate::test_backend::{Client, Protocol, TestBackend, TestEdge, get_in};
        for protocol in Protocol::ALL {
            let edge = TestEdge::start_with(protocol.tuning()).await;
            let mut first = TestBackend::start("first").await;
            let mut second = TestBackend::start("second").await;
            let mut both = first.backend(Slot::Blue, "r1");
            both.more_addrs = vec![second.addr];
            let status = edge.client().switch("web", &both).await.unwrap();
            assert_eq!(status.previous, None);
            assert_eq!(
                edge.client().status().await.unwrap().routes[0].live,
                Some(both.clone())
            );
            let mut client = Client::open(edge.addr(), protocol).await;
            let mut sequence = Vec::new();
            for _ in 0..6 {
                let reply = client.get("/").await.unwrap();
                sequence.push(reply.header("x-backend").unwrap().to_string());
            }
            assert_eq!(
                sequence.iter().filter(|b| *b == "first").count(),
                3,
                "{protocol:?}: {sequence:?}"
            );
            assert!(
                sequence.windows(2).all(|w| w[0] != w[1]),
                "{protocol:?}: {sequence:?}"
            );
            let held: Vec<_> = (0..4)
                .map(|_| {
                    let addr = edge.addr();
                    tokio::spawn(async move {
                        let mut client = Client::open(addr, protocol).await;
                        client.get("/hold").await.unwrap()
                    })
                })
                .collect();
            // Each address gets at least one of the four: otherwise this waits and fails.
            first.arrival().await;
            second.arrival().await;
            for _ in 0..4 {
                first.release_one();
                second.release_one();
            }
            let mut answered = Vec::new();
            for request in held {
                let reply = request.await.unwrap();
                assert_eq!(reply.status, http::StatusCode::OK, "{protocol:?}");
                answered.push(reply.header("x-backend").unwrap().to_string());
            }
            assert!(
                answered.iter().any(|b| b == "first") && answered.iter().any(|b| b == "second"),
                "{protocol:?}: {answered:?}"
            );

            // The first address is gone from the slot: new requests reach only the second.
            let served_first = first.served();
            let only_second = second.backend(Slot::Blue, "r1");
            edge.client().switch("web", &only_second).await.unwrap();
            for _ in 0..6 {
                let reply = get_in(edge.addr(), protocol, "/").await;
                assert_eq!(reply.header("x-backend"), Some("second"), "{protocol:?}");
            }
            assert_eq!(first.served(), served_first, "{protocol:?}");
        }
    }

    #[tokio::test]
    async fn the_admin_api_refuses_a_backend_that_names_an_address_twice() {
        use crate::test_backend::TestEdge;
        let edge = TestEdge::start().await;
        let mut twice = backend("r1");
        twice.more_addrs = vec!["127.0.0.1:8082".parse().unwrap(), twice.addr];
        let err = edge.client().switch("web", &twice).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("the backend names the address 127.0.0.1:8081 twice"),
            "{err}"
        );
        let mut many = backend("r1");
        many.more_addrs = (1..=64)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], 9000 + p)))
            .collect();
        let err = edge.client().switch("web", &many).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("the backend has 65 addresses; at most 64 are taken"),
            "{err}"
        );
        assert!(edge.client().status().await.unwrap().routes.is_empty());
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
