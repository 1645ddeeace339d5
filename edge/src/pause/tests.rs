use super::*;

use http::{Method, StatusCode};

use crate::Slot;
use crate::test_backend::{
    Client, Connection, Protocol, Reply, SIGNAL_TIMEOUT, TestBackend, TestEdge, generic_answer,
    get_in,
};

#[test]
fn pause_length_is_bounded() {
    assert!(checked_pause_ms(0).is_err());
    assert!(checked_pause_ms(u64::MAX).is_err());
    let too_long = u64::try_from(MAX_PAUSE.as_millis()).unwrap() + 1;
    let error = checked_pause_ms(too_long).unwrap_err();
    assert!(error.contains("timeout_ms"), "{error}");
    assert_eq!(checked_pause_ms(1_000), Ok(Duration::from_secs(1)));
    assert_eq!(
        checked_pause_ms(u64::try_from(MAX_PAUSE.as_millis()).unwrap()),
        Ok(MAX_PAUSE)
    );
}

#[tokio::test]
async fn a_resume_releases_every_hold_and_counts_them() {
    let pause = Pause::starting("web", MAX_PAUSE);
    let holds = [pause.hold(), pause.hold()];
    assert_eq!(pause.view().held, 2);
    {
        let waits = futures_util::future::join_all(
            holds
                .iter()
                .map(|hold| hold.wait(std::future::pending::<()>())),
        );
        tokio::pin!(waits);
        // Nothing ends a hold before the resume.
        assert!(futures_util::poll!(waits.as_mut()).is_pending());
        assert_eq!(pause.resume(), 2);
        assert_eq!(waits.await, [Held::Resumed, Held::Resumed]);
    }
    drop(holds);
    assert_eq!(pause.view().held, 0);
}

#[tokio::test]
async fn a_new_deadline_moves_the_end_of_the_holds_and_a_passed_one_ends_them() {
    let pause = Pause::starting("web", MAX_PAUSE);
    let hold = pause.hold();
    {
        let wait = hold.wait(std::future::pending::<()>());
        tokio::pin!(wait);
        assert!(futures_util::poll!(wait.as_mut()).is_pending());
        assert!(!pause.expired());
        // The held request sees the new deadline, and it passes.
        pause.extend(Duration::from_millis(1));
        let ended = tokio::time::timeout(SIGNAL_TIMEOUT, wait).await;
        assert_eq!(
            ended.expect("the hold outlived its deadline"),
            Held::Expired
        );
    }
    assert!(pause.expired());
    assert!(pause.view().expired);
    assert_eq!(pause.view().held, 1);
    drop(hold);
    assert_eq!(pause.view().held, 0);
}

#[tokio::test]
async fn a_stopping_edge_ends_the_hold() {
    let pause = Pause::starting("web", MAX_PAUSE);
    let hold = pause.hold();
    assert_eq!(hold.wait(std::future::ready(())).await, Held::Stopping);
    assert!(!pause.expired());
}

#[test]
fn a_saved_deadline_that_passed_is_expired_and_a_far_one_is_capped() {
    let long_ago: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
    let passed = Pause::until_deadline("web", long_ago);
    assert!(passed.expired());
    assert_eq!(passed.view().deadline, long_ago);
    let far = Pause::until_deadline("web", "2999-01-01T00:00:00Z".parse().unwrap());
    assert!(!far.expired());
    let cap = Timestamp::now() + SignedDuration::try_from(MAX_PAUSE).unwrap();
    assert!(far.view().deadline <= cap);
}

/// A pause as long as any test: only a resume or a new deadline ends it.
const LONG: Duration = Duration::from_secs(600);

/// The closed-route answers the edge counted for `reason`.
async fn closed_answers(edge: &TestEdge, reason: &str) -> f64 {
    edge.metric(
        "shipit_edge_closed_route_answers_total",
        &[("reason", reason)],
    )
    .await
}

/// A GET on its own connection, sent now and answered whenever the edge answers it.
fn spawn_get(
    edge: &TestEdge,
    protocol: Protocol,
    path: &'static str,
) -> tokio::task::JoinHandle<Reply> {
    let addr = edge.addr();
    tokio::spawn(async move {
        let mut client = Client::open(addr, protocol).await;
        client.get(path).await.unwrap()
    })
}

async fn held_until_resume_then_sent_to_the_slot_live_then(protocol: Protocol) {
    let edge = TestEdge::start_with(protocol.tuning()).await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let client = edge.client();
    let paused = client.pause("web", LONG).await.unwrap();
    assert_eq!((paused.held, paused.expired), (0, false));

    let held = spawn_get(&edge, protocol, "/");
    edge.until_held(1).await;
    // Neither answered nor forwarded.
    assert!(!held.is_finished(), "{protocol:?}");
    assert_eq!(blue.served() + green.served(), 0, "{protocol:?}");
    // A switch made meanwhile: the held request goes where traffic goes after the resume.
    edge.switch(&green.backend(Slot::Green, "r2")).await;
    let resumed = client.resume("web").await.unwrap();
    assert_eq!(
        (resumed.resumed, resumed.released, resumed.expired),
        (true, 1, false),
        "{protocol:?}"
    );
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .expect("the released request was not answered")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{protocol:?}");
    assert_eq!(answer.header("x-backend"), Some("green"), "{protocol:?}");
    assert_eq!(blue.served(), 0, "{protocol:?}");
    let status = client.status().await.unwrap();
    assert_eq!(status.routes[0].paused, None, "{protocol:?}");
    assert_eq!(closed_answers(&edge, "paused").await, 0.0);
}

#[tokio::test]
async fn a_paused_route_holds_requests_until_resumed_then_sends_them_to_the_slot_live_then() {
    for protocol in Protocol::ALL {
        held_until_resume_then_sent_to_the_slot_live_then(protocol).await;
    }
}

#[tokio::test]
async fn a_request_in_flight_when_the_pause_begins_finishes_during_it() {
    let edge = TestEdge::start().await;
    let mut blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut slow = Connection::open(edge.addr()).await;
    let in_flight = tokio::spawn(async move { slow.get("/hold").await.unwrap() });
    blue.arrival().await;

    let client = edge.client();
    client.pause("web", LONG).await.unwrap();
    let held = spawn_get(&edge, Protocol::Relay, "/");
    edge.until_held(1).await;
    let route = &client.status().await.unwrap().routes[0];
    assert_eq!(route.in_flight, 1);
    blue.release_one();
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, in_flight)
        .await
        .expect("the request in flight did not finish while paused")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.backend.as_deref(), Some("blue"));
    // Still paused, still holding the other one.
    let route = &client.status().await.unwrap().routes[0];
    assert_eq!(
        (route.in_flight, route.paused.as_ref().map(|p| p.held)),
        (0, Some(1))
    );
    assert!(!held.is_finished());
    assert_eq!(blue.served(), 1);

    assert_eq!(client.resume("web").await.unwrap().released, 1);
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(blue.served(), 2);
}

async fn past_its_deadline(protocol: Protocol) {
    let edge = TestEdge::start_with(protocol.tuning()).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let client = edge.client();
    client.pause("web", LONG).await.unwrap();
    let held = spawn_get(&edge, protocol, "/");
    edge.until_held(1).await;
    // A new deadline, which passes at once: the held request is answered.
    let paused = client.pause("web", Duration::from_millis(1)).await.unwrap();
    assert_eq!(paused.held, 1, "{protocol:?}");

    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .unwrap()
        .unwrap();
    let new = get_in(edge.addr(), protocol, "/").await;
    for answer in [&answer, &new] {
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{protocol:?}"
        );
        assert_eq!(answer.header("retry-after"), Some("5"), "{protocol:?}");
        assert_eq!(
            answer.header("cache-control"),
            Some("no-store"),
            "{protocol:?}"
        );
        generic_answer(answer.text(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(blue.served(), 0, "{protocol:?}");
    let pause = client.status().await.unwrap().routes[0]
        .paused
        .clone()
        .unwrap();
    assert_eq!((pause.held, pause.expired), (0, true), "{protocol:?}");
    assert_eq!(closed_answers(&edge, "paused").await, 2.0, "{protocol:?}");
    // Not the slot's 5xx: a canary's error rate knows nothing of it.
    let slot_5xx = edge
        .metric(
            "shipit_edge_requests_total",
            &[("service", "web"), ("slot", "blue"), ("class", "5xx")],
        )
        .await;
    assert_eq!(slot_5xx, 0.0, "{protocol:?}");

    let resumed = client.resume("web").await.unwrap();
    assert_eq!(
        (resumed.released, resumed.expired),
        (0, true),
        "{protocol:?}"
    );
    let served = get_in(edge.addr(), protocol, "/").await;
    assert_eq!(served.status, StatusCode::OK, "{protocol:?}");
}

#[tokio::test]
async fn a_pause_past_its_deadline_answers_held_and_new_requests_503_with_retry_after() {
    for protocol in Protocol::ALL {
        past_its_deadline(protocol).await;
    }
}

#[tokio::test]
async fn a_pause_ends_at_its_deadline_without_a_resume() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    edge.client()
        .pause("web", Duration::from_millis(300))
        .await
        .unwrap();
    let held = spawn_get(&edge, Protocol::Relay, "/");
    // Held, or already past the deadline on a slow machine: answered 503 either way.
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(blue.served(), 0);
    let pause = edge.client().status().await.unwrap().routes[0]
        .paused
        .clone()
        .unwrap();
    assert!(pause.expired);
}

async fn held_by_a_stopping_edge(protocol: Protocol) {
    let edge = TestEdge::start_with(protocol.tuning()).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    edge.client().pause("web", LONG).await.unwrap();
    let held = spawn_get(&edge, protocol, "/");
    edge.until_held(1).await;
    let TestEdge { dir: _dir, handle } = edge;
    tokio::time::timeout(SIGNAL_TIMEOUT, handle.shutdown())
        .await
        .expect("the edge did not stop while it held a request")
        .unwrap();
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{protocol:?}"
    );
    assert_eq!(answer.header("retry-after"), Some("5"), "{protocol:?}");
    assert_eq!(blue.served(), 0, "{protocol:?}");
}

#[tokio::test]
async fn a_stopping_edge_answers_its_held_requests_503() {
    for protocol in Protocol::ALL {
        held_by_a_stopping_edge(protocol).await;
    }
}

#[tokio::test]
async fn a_pause_survives_a_take_over_and_the_old_edges_held_requests_are_answered() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let paused = edge.client().pause("web", LONG).await.unwrap();
    let held = spawn_get(&edge, Protocol::Relay, "/");
    edge.until_held(1).await;

    let new = tokio::time::timeout(
        SIGNAL_TIMEOUT,
        crate::server::take_over(crate::TakeOver {
            dir: edge.dir.path().to_path_buf(),
            listen: None,
            settings: None,
        }),
    )
    .await
    .expect("the take-over did not finish in time")
    .unwrap();
    // The old edge cannot pass a request on to the new one: its client is told to retry.
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(answer.header("connection"), Some("close"));
    // The new edge is paused until the same deadline, and holds the retry.
    let pause = new.client().status().await.unwrap().routes[0]
        .paused
        .clone()
        .expect("the pause was lost in the take-over");
    assert_eq!((pause.deadline, pause.expired), (paused.deadline, false));
    let addr = new.local_addr();
    let retried = tokio::spawn(async move { get_in(addr, Protocol::Relay, "/").await });
    let client = new.client();
    let holding = async {
        while client.status().await.unwrap().routes[0]
            .paused
            .as_ref()
            .is_none_or(|p| p.held == 0)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(SIGNAL_TIMEOUT, holding)
        .await
        .expect("the new edge did not hold the retried request");
    assert_eq!(client.resume("web").await.unwrap().released, 1);
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, retried)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(blue.served(), 1);

    let TestEdge {
        dir: _dir,
        handle: old,
    } = edge;
    tokio::time::timeout(SIGNAL_TIMEOUT, old.shutdown())
        .await
        .expect("the old edge did not finish")
        .unwrap();
    new.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_head_request_past_the_deadline_gets_no_body_on_a_kept_connection() {
    for protocol in Protocol::ALL {
        let edge = TestEdge::start_with(protocol.tuning()).await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        edge.client()
            .pause("web", Duration::from_millis(1))
            .await
            .unwrap();
        let mut client = Client::open(edge.addr(), protocol).await;
        let head = client.send(Method::HEAD, "/").await.unwrap();
        assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE, "{protocol:?}");
        assert!(head.body.is_empty(), "{protocol:?}");
        // The next answer on the same connection is whole: no stray body came before it.
        let next = client.get("/").await.unwrap();
        assert_eq!(next.status, StatusCode::SERVICE_UNAVAILABLE, "{protocol:?}");
        generic_answer(next.text(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
