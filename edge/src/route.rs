//! The route table: for each service, its live backend and the replaced ones still draining.
//!
//! A request claims its backend under the read lock and increments that backend's
//! in-flight count before the lock is released; it is sent outside the lock. A switch
//! swaps the live backend under the write lock and gets the replaced one back. So once a
//! switch returns, every request that will ever reach the old backend is already counted,
//! and a drain that then sees zero in flight is final.
//!
//! Matching is deliberately simple for now: with one route, every request goes to it; with
//! several, the `Host` header picks the route that lists it, else a route without hosts.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;

use crate::backend::{ActiveBackend, Backend, InFlightGuard};

/// One service's routing state.
#[derive(Debug)]
pub struct Route {
    pub service: String,
    /// Host names this route answers for; empty means any host.
    pub hosts: Vec<String>,
    /// `None` only after the route was removed while requests were still draining.
    pub live: Option<Arc<ActiveBackend>>,
    /// When `live` last changed.
    pub since: Timestamp,
    /// Replaced backends that may still have requests in flight.
    pub draining: Vec<Arc<ActiveBackend>>,
}

impl Route {
    fn prune(&mut self) {
        self.draining.retain(|b| b.in_flight().count() > 0);
    }
}

/// A copy of one route, for status answers and for persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub service: String,
    pub hosts: Vec<String>,
    pub live: Option<Backend>,
    /// Requests in flight on the live backend.
    pub in_flight: usize,
    pub since: Timestamp,
    /// Replaced backends with requests still in flight, and how many.
    pub draining: Vec<(Backend, usize)>,
}

/// What a switch replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The backend live before the switch. Equal to the new one when the switch was a no-op.
    pub previous: Option<Backend>,
    pub switched_at: Timestamp,
}

/// Why a request found no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// No service has been switched in yet.
    NoRoutes,
    /// The matching service has no live slot (it was removed and is draining).
    NoLiveSlot { service: String },
    /// Several services, none answering for this host.
    NoHost { host: Option<String> },
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
            Unrouted::NoHost { host: Some(host) } => {
                write!(f, "shipit edge: no service is routed for host {host}")
            }
            Unrouted::NoHost { host: None } => f.write_str(
                "shipit edge: the request has no Host header and several services are routed",
            ),
        }
    }
}

/// What a drain of one release should wait for.
#[derive(Debug)]
pub enum Drainable {
    /// The replaced backends of that release (possibly several, one per switch).
    Replaced(Vec<Arc<ActiveBackend>>),
    /// That release is the live one: there is nothing to drain, and stopping it would cut
    /// the service off.
    Live(Backend),
    /// Unknown or already drained.
    Gone,
}

/// The longest service name the edge accepts.
pub const MAX_SERVICE_NAME: usize = 128;

/// Checks that `name` can be a route key and a URL path segment as is: letters, digits,
/// `.`, `_` and `-`, as in container names.
pub fn validate_service(name: &str) -> Result<(), crate::EdgeError> {
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
        Err(crate::EdgeError::InvalidService {
            name: name.to_string(),
        })
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: RwLock<BTreeMap<String, Route>>,
}

impl RouteTable {
    pub fn new() -> Self {
        RouteTable::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Route>> {
        // The critical sections below do not panic; a poisoned lock still holds a
        // consistent map.
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Route>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts back a route read from disk, with a fresh in-flight counter.
    pub fn restore(&self, service: &str, hosts: Vec<String>, live: Backend, since: Timestamp) {
        let route = Route {
            service: service.to_string(),
            hosts,
            live: Some(ActiveBackend::new(service, live)),
            since,
            draining: Vec::new(),
        };
        self.write().insert(service.to_string(), route);
    }

    /// Picks the live backend for a request with this `Host` and counts the request, all
    /// under the read lock.
    pub fn claim(&self, host: Option<&str>) -> Result<InFlightGuard, Unrouted> {
        let routes = self.read();
        let route = find(&routes, host)?;
        match &route.live {
            Some(live) => Ok(live.claim()),
            None => Err(Unrouted::NoLiveSlot {
                service: route.service.clone(),
            }),
        }
    }

    /// Makes `backend` the live backend of `service` (creating the route if needed) and
    /// hands back the one it replaced. `hosts`, when given, replaces the route's hosts.
    pub fn switch(&self, service: &str, backend: Backend, hosts: Option<Vec<String>>) -> Switched {
        let switched_at = Timestamp::now();
        let mut routes = self.write();
        let route = routes.entry(service.to_string()).or_insert_with(|| Route {
            service: service.to_string(),
            hosts: Vec::new(),
            live: None,
            since: switched_at,
            draining: Vec::new(),
        });
        if let Some(hosts) = hosts {
            route.hosts = hosts;
        }
        route.prune();
        if let Some(live) = &route.live
            && *live.backend() == backend
        {
            // Switching to what is already live keeps its counter: nothing to drain.
            return Switched {
                previous: Some(backend),
                switched_at,
            };
        }
        let replaced = route.live.replace(ActiveBackend::new(service, backend));
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

    /// Removes the route of `service`. Its requests in flight keep draining; the removed
    /// backend is returned.
    pub fn remove(&self, service: &str) -> Option<Backend> {
        let mut routes = self.write();
        let route = routes.get_mut(service)?;
        let removed = route.live.take();
        route.since = Timestamp::now();
        if let Some(old) = &removed {
            route.draining.push(Arc::clone(old));
        }
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
        let replaced: Vec<_> = route
            .draining
            .iter()
            .filter(|b| b.backend().release == release)
            .cloned()
            .collect();
        if !replaced.is_empty() {
            return Drainable::Replaced(replaced);
        }
        match &route.live {
            Some(live) if live.backend().release == release => {
                Drainable::Live(live.backend().clone())
            }
            _ => Drainable::Gone,
        }
    }

    /// A copy of every route, sorted by service. Drained backends are left out.
    pub fn view(&self) -> Vec<RouteView> {
        self.read()
            .values()
            .map(|route| RouteView {
                service: route.service.clone(),
                hosts: route.hosts.clone(),
                live: route.live.as_ref().map(|b| b.backend().clone()),
                in_flight: route.live.as_ref().map_or(0, |b| b.in_flight().count()),
                since: route.since,
                draining: route
                    .draining
                    .iter()
                    .map(|b| (b.backend().clone(), b.in_flight().count()))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            })
            .collect()
    }
}

fn find<'a>(
    routes: &'a BTreeMap<String, Route>,
    host: Option<&str>,
) -> Result<&'a Route, Unrouted> {
    let mut all = routes.values();
    match (all.next(), all.next()) {
        (None, _) => return Err(Unrouted::NoRoutes),
        (Some(only), None) => return Ok(only),
        _ => {}
    }
    let hostname = host.map(strip_port);
    if let Some(hostname) = hostname
        && let Some(route) = routes
            .values()
            .find(|r| r.hosts.iter().any(|h| h.eq_ignore_ascii_case(hostname)))
    {
        return Ok(route);
    }
    let mut catch_all = routes.values().filter(|r| r.hosts.is_empty());
    let first = catch_all.next();
    first
        .filter(|r| r.live.is_some())
        .or_else(|| catch_all.find(|r| r.live.is_some()))
        .or(first)
        .ok_or_else(|| Unrouted::NoHost {
            host: host.map(str::to_string),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Slot;

    fn backend(slot: Slot, release: &str, port: u16) -> Backend {
        Backend {
            slot,
            release: release.to_string(),
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    fn claimed_release(table: &RouteTable, host: Option<&str>) -> String {
        table
            .claim(host)
            .unwrap()
            .active()
            .backend()
            .release
            .clone()
    }

    #[test]
    fn empty_table_has_no_live_slot() {
        let table = RouteTable::new();
        assert_eq!(table.claim(None).unwrap_err(), Unrouted::NoRoutes);
        assert!(Unrouted::NoRoutes.to_string().contains("no live slot"));
    }

    #[test]
    fn switch_returns_replaced_backend_and_routes_new_claims() {
        let table = RouteTable::new();
        let blue = backend(Slot::Blue, "r1", 9001);
        let green = backend(Slot::Green, "r2", 9002);
        assert_eq!(table.switch("web", blue.clone(), None).previous, None);
        assert_eq!(claimed_release(&table, None), "r1");
        assert_eq!(table.switch("web", green, None).previous, Some(blue));
        assert_eq!(claimed_release(&table, None), "r2");
    }

    #[test]
    fn claims_before_switch_stay_counted_on_replaced_backend() {
        let table = RouteTable::new();
        table.switch("web", backend(Slot::Blue, "r1", 9001), None);
        let held = table.claim(None).unwrap();
        table.switch("web", backend(Slot::Green, "r2", 9002), None);
        let Drainable::Replaced(old) = table.drainable("web", "r1") else {
            panic!("r1 should be draining");
        };
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].in_flight().count(), 1);
        let view = table.view();
        assert_eq!(view[0].draining, vec![(backend(Slot::Blue, "r1", 9001), 1)]);
        drop(held);
        assert_eq!(old[0].in_flight().count(), 0);
        assert!(matches!(table.drainable("web", "r1"), Drainable::Gone));
        assert!(table.view()[0].draining.is_empty());
    }

    #[test]
    fn switch_to_live_backend_is_a_no_op() {
        let table = RouteTable::new();
        let blue = backend(Slot::Blue, "r1", 9001);
        table.switch("web", blue.clone(), None);
        let _held = table.claim(None).unwrap();
        let again = table.switch("web", blue.clone(), None);
        assert_eq!(again.previous, Some(blue));
        // Still live and still counted on the same backend: nothing started draining.
        assert!(matches!(table.drainable("web", "r1"), Drainable::Live(_)));
        assert!(table.view()[0].draining.is_empty());
    }

    #[test]
    fn drain_of_live_release_is_refused_and_unknown_release_is_gone() {
        let table = RouteTable::new();
        table.switch("web", backend(Slot::Blue, "r1", 9001), None);
        assert!(matches!(table.drainable("web", "r1"), Drainable::Live(_)));
        assert!(matches!(table.drainable("web", "nope"), Drainable::Gone));
        assert!(matches!(table.drainable("api", "r1"), Drainable::Gone));
    }

    #[test]
    fn removed_route_answers_no_live_slot_while_draining() {
        let table = RouteTable::new();
        let blue = backend(Slot::Blue, "r1", 9001);
        table.switch("web", blue.clone(), None);
        let held = table.claim(None).unwrap();
        assert_eq!(table.remove("web"), Some(blue));
        assert_eq!(
            table.claim(None).unwrap_err(),
            Unrouted::NoLiveSlot {
                service: "web".into()
            }
        );
        drop(held);
        assert_eq!(table.remove("web"), None);
        assert!(table.view().is_empty());
    }

    #[test]
    fn several_routes_match_by_host_then_catch_all() {
        let table = RouteTable::new();
        table.switch(
            "api",
            backend(Slot::Blue, "api1", 9001),
            Some(vec!["api.example.com".into()]),
        );
        table.switch("web", backend(Slot::Blue, "web1", 9002), None);
        assert_eq!(
            claimed_release(&table, Some("API.example.com:8080")),
            "api1"
        );
        assert_eq!(claimed_release(&table, Some("www.example.com")), "web1");
        assert_eq!(claimed_release(&table, None), "web1");
    }

    #[test]
    fn several_routes_without_catch_all_reject_unknown_host() {
        let table = RouteTable::new();
        table.switch(
            "a",
            backend(Slot::Blue, "a1", 9001),
            Some(vec!["a.test".into()]),
        );
        table.switch(
            "b",
            backend(Slot::Blue, "b1", 9002),
            Some(vec!["b.test".into()]),
        );
        assert_eq!(claimed_release(&table, Some("b.test")), "b1");
        assert_eq!(
            table.claim(Some("c.test")).unwrap_err(),
            Unrouted::NoHost {
                host: Some("c.test".into())
            }
        );
    }

    #[test]
    fn service_names_are_path_safe() {
        for ok in ["web", "api-v2", "my_app.prod", "A1"] {
            assert!(validate_service(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(validate_service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strip_port_handles_names_and_ipv6() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
