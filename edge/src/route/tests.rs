use super::*;
use crate::Slot;

fn backend(slot: Slot, release: &str, port: u16) -> Backend {
    Backend {
        slot,
        release: release.to_string(),
        addr: ([127, 0, 0, 1], port).into(),
        more_addrs: Vec::new(),
    }
}

fn claim_at(table: &RouteTable, host: Option<&str>, path: &str) -> Result<Claim, Unrouted> {
    claim_open(table, host, path).map_err(|unclaimed| match unclaimed {
        Unclaimed::Unrouted(unrouted) => unrouted,
        other => panic!("the route is closed: {other:?}"),
    })
}

fn claim_open(table: &RouteTable, host: Option<&str>, path: &str) -> Result<Claim, Unclaimed> {
    let headers = HeaderMap::new();
    table.claim(&RequestInfo {
        host,
        path,
        headers: &headers,
    })
}

/// A claim on `/` of any host, with `headers`.
fn claim_with(table: &RouteTable, headers: &HeaderMap) -> Claim {
    table
        .claim(&RequestInfo {
            host: None,
            path: "/",
            headers,
        })
        .unwrap()
}

fn claim(table: &RouteTable, host: Option<&str>) -> Result<InFlightGuard, Unrouted> {
    claim_at(table, host, "/").map(|c| c.guard)
}

fn claimed_release(table: &RouteTable, host: Option<&str>) -> String {
    claimed_release_at(table, host, "/")
}

fn claimed_release_at(table: &RouteTable, host: Option<&str>, path: &str) -> String {
    claim_at(table, host, path)
        .unwrap()
        .guard
        .active()
        .backend()
        .release
        .clone()
}

fn hosts(list: &[&str]) -> Routing {
    Routing {
        hosts: Some(list.iter().map(|h| h.to_string()).collect()),
        paths: None,
    }
}

fn paths(list: &[&str]) -> Routing {
    let list: Vec<String> = list.iter().map(|p| p.to_string()).collect();
    Routing {
        hosts: None,
        paths: Some(normalize_paths(&list).unwrap()),
    }
}

#[test]
fn empty_table_has_no_live_slot() {
    let table = RouteTable::new();
    assert_eq!(claim(&table, None).unwrap_err(), Unrouted::NoRoutes);
    assert!(Unrouted::NoRoutes.to_string().contains("no live slot"));
}

#[test]
fn switch_returns_replaced_backend_and_routes_new_claims() {
    let table = RouteTable::new();
    let blue = backend(Slot::Blue, "r1", 9001);
    let green = backend(Slot::Green, "r2", 9002);
    assert_eq!(
        table
            .switch("web", blue.clone(), Routing::default())
            .previous,
        None
    );
    assert_eq!(claimed_release(&table, None), "r1");
    assert_eq!(
        table.switch("web", green, Routing::default()).previous,
        Some(blue)
    );
    assert_eq!(claimed_release(&table, None), "r2");
}

#[test]
fn claims_before_switch_stay_counted_on_replaced_backend() {
    let table = RouteTable::new();
    table.switch("web", backend(Slot::Blue, "r1", 9001), Routing::default());
    let held = claim(&table, None).unwrap();
    table.switch("web", backend(Slot::Green, "r2", 9002), Routing::default());
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
    table.switch("web", blue.clone(), Routing::default());
    let _held = claim(&table, None).unwrap();
    let again = table.switch("web", blue.clone(), Routing::default());
    assert_eq!(again.previous, Some(blue));
    // Still live and still counted on the same backend: nothing started draining.
    assert!(matches!(table.drainable("web", "r1"), Drainable::Live(_)));
    assert!(table.view()[0].draining.is_empty());
}

#[test]
fn drain_of_live_release_is_refused_and_unknown_release_is_gone() {
    let table = RouteTable::new();
    table.switch("web", backend(Slot::Blue, "r1", 9001), Routing::default());
    assert!(matches!(table.drainable("web", "r1"), Drainable::Live(_)));
    assert!(matches!(table.drainable("web", "nope"), Drainable::Gone));
    assert!(matches!(table.drainable("api", "r1"), Drainable::Gone));
}

#[test]
fn removed_route_answers_no_live_slot_while_draining() {
    let table = RouteTable::new();
    let blue = backend(Slot::Blue, "r1", 9001);
    table.switch("web", blue.clone(), Routing::default());
    let held = claim(&table, None).unwrap();
    assert_eq!(table.remove("web"), Some(blue));
    assert_eq!(
        claim(&table, None).unwrap_err(),
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
        hosts(&["api.example.com"]),
    );
    table.switch("web", backend(Slot::Blue, "web1", 9002), Routing::default());
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
    table.switch("a", backend(Slot::Blue, "a1", 9001), hosts(&["a.test"]));
    table.switch("b", backend(Slot::Blue, "b1", 9002), hosts(&["b.test"]));
    assert_eq!(claimed_release(&table, Some("b.test")), "b1");
    assert_eq!(
        claim(&table, Some("c.test")).unwrap_err(),
        Unrouted::NoMatch {
            host: Some("c.test".into()),
            path: "/".into()
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

#[test]
fn path_prefixes_route_by_longest_whole_segment_match() {
    let table = RouteTable::new();
    table.switch("api", backend(Slot::Blue, "api1", 9001), paths(&["/api/"]));
    table.switch(
        "admin",
        backend(Slot::Blue, "adm1", 9002),
        paths(&["/api/admin"]),
    );
    table.switch("web", backend(Slot::Blue, "web1", 9003), Routing::default());
    assert_eq!(claimed_release_at(&table, None, "/api"), "api1");
    assert_eq!(claimed_release_at(&table, None, "/api/users"), "api1");
    assert_eq!(claimed_release_at(&table, None, "/api/admin/x"), "adm1");
    assert_eq!(
        claimed_release_at(&table, None, "/api/administrator"),
        "api1"
    );
    assert_eq!(claimed_release_at(&table, None, "/apix"), "web1");
    assert_eq!(claimed_release_at(&table, None, "/"), "web1");
}

#[test]
fn named_host_beats_a_longer_prefix_on_a_catch_all_route() {
    let table = RouteTable::new();
    table.switch(
        "shop",
        backend(Slot::Blue, "shop1", 9001),
        hosts(&["shop.test"]),
    );
    table.switch("api", backend(Slot::Blue, "api1", 9002), paths(&["/api"]));
    assert_eq!(
        claimed_release_at(&table, Some("shop.test"), "/api/x"),
        "shop1"
    );
    assert_eq!(
        claimed_release_at(&table, Some("other.test"), "/api/x"),
        "api1"
    );
    assert_eq!(
        claim_at(&table, Some("other.test"), "/home").unwrap_err(),
        Unrouted::NoMatch {
            host: Some("other.test".into()),
            path: "/home".into()
        }
    );
}

#[test]
fn lone_route_with_a_prefix_does_not_answer_other_paths() {
    let table = RouteTable::new();
    table.switch("api", backend(Slot::Blue, "api1", 9001), paths(&["/api"]));
    assert_eq!(claimed_release_at(&table, None, "/api/v1"), "api1");
    assert!(matches!(
        claim_at(&table, None, "/"),
        Err(Unrouted::NoMatch { .. })
    ));
}

#[test]
fn path_prefixes_are_checked_and_normalized() {
    let list = |l: &[&str]| normalize_paths(&l.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    assert_eq!(
        list(&["/api/", "/api", "/b//"]).unwrap(),
        vec!["/api", "/b"]
    );
    // `/` is every path, so beside it the others narrow nothing.
    assert!(list(&["/api/", "/", "/api"]).unwrap().is_empty());
    for bad in ["api", "/a b", "/a?x", "/a;b", ""] {
        assert!(list(&[bad]).is_err(), "{bad}");
    }
}

fn split_table() -> (RouteTable, Backend, Backend) {
    let table = RouteTable::new();
    let live = backend(Slot::Blue, "r1", 9001);
    let candidate = backend(Slot::Green, "r2", 9002);
    table.switch("web", live.clone(), Routing::default());
    (table, live, candidate)
}

#[test]
fn candidate_takes_no_traffic_until_pinned_or_split() {
    let (table, _, candidate) = split_table();
    assert_eq!(table.set_candidate("web", candidate, None, None), Ok(None));
    for _ in 0..50 {
        assert_eq!(claimed_release(&table, None), "r1");
    }
    let mut headers = HeaderMap::new();
    headers.insert(&split::SLOT_HEADER, "green".parse().unwrap());
    let pinned = claim_with(&table, &headers);
    assert!(pinned.pinned);
    assert_eq!(pinned.guard.active().backend().release, "r2");
    assert_eq!(pinned.set_cookie, None);
}

#[test]
fn split_sends_the_percent_of_new_clients_and_sets_their_cookie() {
    let (table, _, candidate) = split_table();
    table
        .set_candidate("web", candidate, Some(25), None)
        .unwrap();
    let mut to_candidate = 0;
    for _ in 0..400 {
        let claim = claim_at(&table, None, "/").unwrap();
        let cookie = claim.set_cookie.unwrap();
        let release = &claim.guard.active().backend().release;
        assert!(cookie.to_str().unwrap().contains(&format!(".{release};")));
        to_candidate += usize::from(release == "r2");
    }
    assert_eq!(to_candidate, 100);
}

#[test]
fn a_split_that_is_not_sticky_weights_every_request_and_uses_no_cookie() {
    let (table, _, candidate) = split_table();
    table
        .set_candidate_leased("web", candidate.clone(), Some(25), None, None, Some(false))
        .unwrap();
    // A cookie naming the candidate, as a sticky split would have set it, is not read.
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        "shipit_slot=green.r2".parse().unwrap(),
    );
    let mut to_candidate = 0;
    for _ in 0..400 {
        let claim = claim_with(&table, &headers);
        assert_eq!(claim.set_cookie, None);
        to_candidate += usize::from(claim.guard.active().backend().release == "r2");
    }
    assert_eq!(to_candidate, 100);
    assert!(!table.view()[0].candidate.as_ref().unwrap().sticky);
    // Weighted again without saying: it stays as it was; saying so makes it sticky.
    table
        .set_candidate_leased("web", candidate.clone(), Some(50), None, None, None)
        .unwrap();
    assert!(!table.view()[0].candidate.as_ref().unwrap().sticky);
    table
        .set_candidate_leased("web", candidate, Some(50), None, None, Some(true))
        .unwrap();
    let claim = claim_at(&table, None, "/").unwrap();
    assert!(claim.set_cookie.is_some());
}

#[test]
fn the_live_release_at_other_addresses_keeps_the_split_and_drains_the_old_ones() {
    let (table, live, candidate) = split_table();
    table
        .set_candidate("web", candidate.clone(), Some(50), None)
        .unwrap();
    let mut pin = HeaderMap::new();
    pin.insert(crate::split::SLOT_HEADER, "blue".parse().unwrap());
    let held = claim_with(&table, &pin);
    assert_eq!(*held.guard.active().backend(), live);

    // A task was added to the live slot and the first one went: r1 at two other addresses.
    let mut moved = backend(Slot::Blue, "r1", 9003);
    moved.more_addrs = vec![([127, 0, 0, 1], 9004).into()];
    let switched = table.switch("web", moved.clone(), Routing::default());
    assert_eq!(switched.previous, Some(live.clone()));
    let view = &table.view()[0];
    assert_eq!(view.live, Some(moved.clone()));
    let kept = view.candidate.as_ref().unwrap();
    assert_eq!((&kept.backend, kept.percent), (&candidate, 50));
    // The request on the old addresses finishes there, counted as draining.
    assert_eq!(view.draining, vec![(live, 1)]);
    drop(held);
    let releases: Vec<Backend> = (0..4)
        .map(|_| claim(&table, None).unwrap().active().backend().clone())
        .collect();
    assert!(releases.contains(&moved) && releases.contains(&candidate));
    assert!(table.view()[0].draining.is_empty());
}

#[test]
fn sticky_cookie_keeps_the_client_on_its_side() {
    let (table, _, candidate) = split_table();
    table
        .set_candidate("web", candidate, Some(1), None)
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        "shipit_slot=green.r2".parse().unwrap(),
    );
    for _ in 0..20 {
        let claim = claim_with(&table, &headers);
        assert_eq!(claim.guard.active().backend().release, "r2");
        assert_eq!(claim.set_cookie, None);
    }
    // Once the split is over, the cookie means nothing.
    table.clear_split("web");
    let claim = claim_with(&table, &headers);
    assert_eq!(claim.guard.active().backend().release, "r1");
}

#[test]
fn candidate_in_the_live_slot_or_without_live_is_refused() {
    let (table, live, _) = split_table();
    let same_slot = backend(Slot::Blue, "r2", 9003);
    assert!(matches!(
        table.set_candidate("web", same_slot, Some(10), None),
        Err(CandidateRefused::LiveSlot { .. })
    ));
    assert!(matches!(
        table.set_candidate("api", live.clone(), None, None),
        Err(CandidateRefused::NoLiveSlot { .. })
    ));
    assert!(matches!(
        table.set_candidate("web", backend(Slot::Green, "r2", 9002), Some(101), None),
        Err(CandidateRefused::Percent { percent: 101 })
    ));
}

#[test]
fn switch_to_the_candidate_keeps_its_requests_counted_as_live() {
    let (table, live, candidate) = split_table();
    table
        .set_candidate("web", candidate.clone(), Some(100), None)
        .unwrap();
    let held = claim(&table, None).unwrap();
    assert_eq!(held.active().backend(), &candidate);
    let switched = table.switch("web", candidate.clone(), Routing::default());
    assert_eq!(switched.previous, Some(live));
    let view = &table.view()[0];
    assert_eq!(view.candidate, None);
    assert_eq!(view.in_flight, 1);
    assert!(matches!(table.drainable("web", "r2"), Drainable::Live(_)));
    drop(held);
}

#[test]
fn other_switch_or_removal_sends_the_candidate_to_drain() {
    let (table, live, candidate) = split_table();
    table
        .set_candidate("web", candidate, Some(100), None)
        .unwrap();
    let held = claim(&table, None).unwrap();
    assert!(matches!(
        table.drainable("web", "r2"),
        Drainable::Candidate(_)
    ));
    // A no-op switch to the live backend ends the split.
    table.switch("web", live, Routing::default());
    assert_eq!(table.view()[0].candidate, None);
    let Drainable::Replaced(old) = table.drainable("web", "r2") else {
        panic!("the candidate should drain");
    };
    assert_eq!(old[0].in_flight().count(), 1);
    drop(held);
    assert!(matches!(table.drainable("web", "r2"), Drainable::Gone));
    assert_eq!(table.remove_candidate("web"), None);
}

#[test]
fn preview_host_reaches_the_candidate_only() {
    let (table, _, candidate) = split_table();
    table.switch("web", backend(Slot::Blue, "r1", 9001), hosts(&["app.test"]));
    table.switch("api", backend(Slot::Blue, "a1", 9005), hosts(&["api.test"]));
    assert_eq!(
        claim(&table, Some("preview.app.test")).unwrap_err(),
        Unrouted::NoMatch {
            host: Some("preview.app.test".into()),
            path: "/".into()
        }
    );
    table
        .set_candidate(
            "web",
            candidate,
            None,
            Some(vec!["preview.app.test".into()]),
        )
        .unwrap();
    assert_eq!(claimed_release(&table, Some("preview.app.test:8080")), "r2");
    assert_eq!(claimed_release(&table, Some("app.test")), "r1");
    table.remove_candidate("web");
    assert_eq!(
        claim(&table, Some("preview.app.test")).unwrap_err(),
        Unrouted::NoPreview {
            service: "web".into()
        }
    );
}

#[test]
fn in_flight_is_summed_per_service_and_slot() {
    let (table, _, candidate) = split_table();
    let a = claim(&table, None).unwrap();
    table.switch("web", candidate, Routing::default());
    let b = claim(&table, None).unwrap();
    let c = claim(&table, None).unwrap();
    let counts = table.in_flight_by_slot();
    assert_eq!(counts[&("web".to_string(), Slot::Blue)], 1);
    assert_eq!(counts[&("web".to_string(), Slot::Green)], 2);
    drop((a, b, c));
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

#[test]
fn lapsed_lease_withdraws_the_candidate_and_all_traffic_goes_live() {
    let (table, _, candidate) = split_table();
    let start = at("2026-12-05T00:00:00Z");
    let lease = Lease::starting(start, std::time::Duration::from_secs(10));
    table
        .set_candidate_leased("web", candidate.clone(), Some(50), None, Some(lease), None)
        .unwrap();
    assert_eq!(table.next_lease_end(), Some(lease.expires_at));
    // Before its end nothing is withdrawn, and half the new clients meet the candidate.
    assert!(table.expire_leases(at("2026-12-05T00:00:09Z")).is_empty());
    let releases: Vec<String> = (0..10).map(|_| claimed_release(&table, None)).collect();
    assert!(releases.iter().any(|r| r == "r2"), "{releases:?}");
    // A request on the candidate when the lease lapses.
    let mut pin = HeaderMap::new();
    pin.insert(crate::split::SLOT_HEADER, "green".parse().unwrap());
    let held = claim_with(&table, &pin);
    assert_eq!(held.guard.active().backend().release, "r2");

    let withdrawn = table.expire_leases(at("2026-12-05T00:00:10Z"));
    assert_eq!(withdrawn, vec![("web".to_string(), candidate.clone())]);
    assert_eq!(table.next_lease_end(), None);
    for _ in 0..100 {
        assert_eq!(claimed_release(&table, None), "r1");
    }
    // A lapsed lease stays lapsed: its release cannot renew it.
    let renewal = Lease::starting(
        at("2026-12-05T00:00:11Z"),
        std::time::Duration::from_secs(10),
    );
    assert_eq!(
        table.renew_lease("web", "r2", renewal),
        Err(LeaseRefused::NoCandidate {
            service: "web".into(),
            release: "r2".into()
        })
    );
    // Withdrawn, it drains like a removed candidate: the request it held still counts.
    assert_eq!(table.view()[0].draining, vec![(candidate, 1)]);
    drop(held);
}

#[test]
fn renewing_moves_the_end_of_the_lease_and_keeps_the_split() {
    let (table, _, candidate) = split_table();
    let start = at("2026-12-05T00:00:00Z");
    let ten = std::time::Duration::from_secs(10);
    table
        .set_candidate_leased(
            "web",
            candidate,
            Some(25),
            None,
            Some(Lease::starting(start, ten)),
            None,
        )
        .unwrap();
    let renewed = Lease::starting(at("2026-12-05T00:00:08Z"), ten);
    let view = table.renew_lease("web", "r2", renewed).unwrap();
    assert_eq!(view.percent, 25);
    assert_eq!(view.lease, Some(renewed));
    assert!(table.expire_leases(at("2026-12-05T00:00:12Z")).is_empty());
    assert_eq!(
        table.view()[0].candidate.as_ref().unwrap().lease,
        Some(renewed)
    );
    // Registering the same backend again without a lease keeps the lease it has.
    table
        .set_candidate_leased(
            "web",
            backend(Slot::Green, "r2", 9002),
            Some(50),
            None,
            None,
            None,
        )
        .unwrap();
    assert_eq!(
        table.view()[0].candidate.as_ref().unwrap().lease,
        Some(renewed)
    );
    assert_eq!(table.expire_leases(at("2026-12-05T00:00:18Z")).len(), 1);
}

#[test]
fn a_preview_without_a_lease_never_lapses() {
    let (table, _, candidate) = split_table();
    table.set_candidate("web", candidate, None, None).unwrap();
    assert_eq!(table.next_lease_end(), None);
    assert!(table.expire_leases(Timestamp::MAX).is_empty());
    assert!(table.view()[0].candidate.is_some());
}

#[test]
fn restore_leaves_out_a_candidate_whose_lease_lapsed() {
    let live = backend(Slot::Blue, "r1", 9001);
    let candidate = backend(Slot::Green, "r2", 9002);
    let saved = |lease| SavedRoute {
        service: "web".into(),
        hosts: vec![],
        paths: vec![],
        preview_hosts: vec![],
        live: live.clone(),
        candidate: Some(SavedCandidate {
            backend: candidate.clone(),
            percent: 10,
            lease: Some(lease),
            sticky: true,
        }),
        since: at("2026-12-05T00:00:00Z"),
        pause: None,
        maintenance: None,
    };
    let ten = std::time::Duration::from_secs(10);
    let table = RouteTable::new();
    let lapsed = Lease::starting(at("2026-12-05T00:00:00Z"), ten);
    assert_eq!(table.restore(&saved(lapsed)), Some(candidate.clone()));
    assert_eq!(table.view()[0].candidate, None);
    assert_eq!(table.view()[0].live.as_ref(), Some(&live));

    let table = RouteTable::new();
    let running = Lease::starting(Timestamp::now(), ten);
    assert_eq!(table.restore(&saved(running)), None);
    assert_eq!(
        table.view()[0]
            .candidate
            .as_ref()
            .map(|c| (c.percent, c.lease)),
        Some((10, Some(running)))
    );
}

#[test]
fn a_closed_route_claims_no_backend_and_maintenance_wins_over_a_pause() {
    let table = RouteTable::new();
    table.switch("web", backend(Slot::Blue, "r1", 9001), Routing::default());
    let paused = table
        .pause("web", std::time::Duration::from_secs(600))
        .unwrap();
    assert_eq!((paused.held, paused.expired), (0, false));
    let held = match claim_open(&table, None, "/") {
        Err(Unclaimed::Held(hold)) => hold,
        other => panic!("not held: {other:?}"),
    };
    let view = &table.view()[0];
    assert_eq!((view.in_flight, view.pause.unwrap().held), (0, 1));

    table
        .set_maintenance("web", Some("upgrading".into()), 30)
        .unwrap();
    match claim_open(&table, None, "/") {
        Err(Unclaimed::Closed(Closed::Maintenance(m))) => {
            assert_eq!(m.view().message.as_deref(), Some("upgrading"));
        }
        other => panic!("not under maintenance: {other:?}"),
    }
    let ended = table.clear_maintenance("web").unwrap().unwrap();
    assert_eq!(
        (ended.message.as_deref(), ended.retry_after_s),
        (Some("upgrading"), 30)
    );
    assert!(matches!(
        claim_open(&table, None, "/"),
        Err(Unclaimed::Held(_))
    ));
    assert_eq!(table.view()[0].pause.unwrap().held, 1);

    assert_eq!(
        table.resume("web"),
        Ok(Some(Resumed {
            released: 1,
            expired: false
        }))
    );
    drop(held);
    assert_eq!(claimed_release(&table, None), "r1");
    assert_eq!(table.resume("web"), Ok(None));
    assert_eq!(table.clear_maintenance("web"), Ok(None));
    let unknown = GateRefused::NoRoute {
        service: "api".into(),
    };
    assert_eq!(
        table.pause("api", std::time::Duration::from_secs(1)),
        Err(unknown.clone())
    );
    assert_eq!(
        table.set_maintenance("api", None, 30).map(|_| ()),
        Err(unknown)
    );
}

#[test]
fn restore_brings_back_maintenance_and_a_pause_past_its_deadline() {
    let table = RouteTable::new();
    let deadline = at("2026-12-05T00:10:00Z");
    let saved = SavedRoute {
        service: "web".into(),
        hosts: vec![],
        paths: vec![],
        preview_hosts: vec![],
        live: backend(Slot::Blue, "r1", 9001),
        candidate: None,
        since: at("2026-12-05T00:00:00Z"),
        pause: Some(SavedPause { deadline }),
        maintenance: Some(SavedMaintenance {
            message: Some("back soon".into()),
            retry_after_s: 90,
            since: at("2026-12-05T00:05:00Z"),
        }),
    };
    assert_eq!(table.restore(&saved), None);
    let view = table.view().remove(0);
    assert_eq!(view.saved().as_ref(), Some(&saved));
    assert_eq!(
        view.pause,
        Some(PauseView {
            deadline,
            held: 0,
            expired: true
        })
    );
    assert!(matches!(
        claim_open(&table, None, "/"),
        Err(Unclaimed::Closed(Closed::Maintenance(_)))
    ));
    table.clear_maintenance("web").unwrap();
    match claim_open(&table, None, "/") {
        Err(Unclaimed::Closed(Closed::PauseExpired { service })) => assert_eq!(service, "web"),
        other => panic!("not past its pause: {other:?}"),
    }
    // Paused again: a new deadline, and requests are held again.
    table
        .pause("web", std::time::Duration::from_secs(600))
        .unwrap();
    assert!(matches!(
        claim_open(&table, None, "/"),
        Err(Unclaimed::Held(_))
    ));
}

#[test]
fn removing_a_route_lets_its_held_requests_go_and_ends_its_maintenance() {
    let table = RouteTable::new();
    table.switch("web", backend(Slot::Blue, "r1", 9001), Routing::default());
    table
        .pause("web", std::time::Duration::from_secs(600))
        .unwrap();
    table.set_maintenance("web", None, 30).unwrap();
    table.clear_maintenance("web").unwrap();
    let Err(Unclaimed::Held(hold)) = claim_open(&table, None, "/") else {
        panic!("not held");
    };
    assert!(table.remove("web").is_some());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let held = runtime.block_on(hold.wait(std::future::pending()));
    assert_eq!(held, crate::pause::Held::Resumed);
    // Claimed again, it finds no route; one switched in later under the name starts open.
    assert_eq!(claim(&table, None).unwrap_err(), Unrouted::NoRoutes);
    table.switch("web", backend(Slot::Blue, "r2", 9001), Routing::default());
    assert_eq!(claimed_release(&table, None), "r2");
    let view = &table.view()[0];
    assert_eq!((view.pause, &view.maintenance), (None, &None));
}
