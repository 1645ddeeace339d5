use super::*;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::server::{EdgeOptions, take_over};
use crate::settings::Tuning;
use crate::test_backend::{
    Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, answer, eventually, get, request,
};
use crate::{EdgeHandle, Slot};

fn successor(dir: &Path) -> TakeOver {
    TakeOver {
        dir: dir.to_path_buf(),
        listen: None,
        settings: None,
    }
}

async fn take(edge: &TestEdge) -> EdgeHandle {
    tokio::time::timeout(SIGNAL_TIMEOUT, take_over(successor(edge.dir.path())))
        .await
        .expect("the take-over did not finish in time")
        .unwrap()
}

async fn requests_served(handle: &EdgeHandle, slot: &str) -> f64 {
    let page = handle.client().metrics().await.unwrap();
    crate::metrics::sample(
        &page,
        "shipit_edge_requests_total",
        &[("service", "web"), ("slot", slot), ("class", "2xx")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn take_over_keeps_the_address_routes_and_lock() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    edge.client()
        .weights("web", &green.backend(Slot::Green, "r2"), 30)
        .await
        .unwrap();
    let before = edge.client().status().await.unwrap();

    let new = take(&edge).await;
    assert!(edge.handle.handed_over());
    tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.stop_requested())
        .await
        .expect("the old edge did not stop after handing over");
    assert_eq!(new.local_addr(), edge.addr());
    let after = new.client().status().await.unwrap();
    assert_eq!(after.routes, before.routes);
    assert_eq!(after.listen, before.listen);
    assert_eq!(after.previous_pid, Some(before.pid));
    assert_eq!(get(new.local_addr(), "/").await.status, StatusCode::OK);

    let TestEdge { dir, handle: old } = edge;
    tokio::time::timeout(SIGNAL_TIMEOUT, old.shutdown())
        .await
        .expect("the old edge did not finish")
        .unwrap();
    // The old edge left the admin socket to the new one, and the lock.
    assert!(dir.path().join(crate::ADMIN_SOCKET).exists());
    new.client().status().await.unwrap();
    let third = crate::server::start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap_err();
    assert!(
        matches!(third, EdgeError::AlreadyRunning { .. }),
        "{third:?}"
    );
    let client = new.client();
    let gone = async {
        while client.status().await.unwrap().previous_pid.is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(SIGNAL_TIMEOUT, gone)
        .await
        .expect("the new edge did not see the old one gone");
    new.shutdown().await.unwrap();
    assert_eq!(crate::daemon::find(dir.path()), None);
    assert!(!dir.path().join(crate::ADMIN_SOCKET).exists());
}

#[tokio::test]
async fn old_connections_are_told_to_close_or_closed_when_idle() {
    let edge = TestEdge::start().await;
    let mut blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    // Three connections served by the old edge: one that goes on sending, one with a
    // request in flight, one that stays idle.
    let mut busy = Connection::open(edge.addr()).await;
    assert_eq!(busy.get("/").await.unwrap().status, StatusCode::OK);
    let mut idle = Connection::open(edge.addr()).await;
    assert_eq!(idle.get("/").await.unwrap().status, StatusCode::OK);
    let mut held = Connection::open(edge.addr()).await;
    let held = tokio::spawn(async move { held.send(request("/hold")).await });
    blue.arrival().await;

    let new = take(&edge).await;
    let response = busy.send(request("/")).await.unwrap();
    assert_eq!(response.headers()[http::header::CONNECTION], "close");
    assert_eq!(answer(response).await.unwrap().status, StatusCode::OK);
    eventually("the busy connection did not close", || busy.is_closed()).await;

    blue.release_one();
    let response = held.await.unwrap().unwrap();
    assert_eq!(response.headers()[http::header::CONNECTION], "close");
    assert_eq!(
        answer(response).await.unwrap().backend.as_deref(),
        Some("blue")
    );

    eventually("the idle connection did not close", || idle.is_closed()).await;
    tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.shutdown())
        .await
        .expect("the old edge did not finish once its connections closed")
        .unwrap();

    // New connections are the new edge's: it counts them.
    assert_eq!(requests_served(&new, "blue").await, 0.0);
    let mut next = Connection::open(new.local_addr()).await;
    let response = next.send(request("/")).await.unwrap();
    assert!(
        response
            .headers()
            .get(http::header::CONNECTION)
            .is_none_or(|v| v != "close")
    );
    assert_eq!(answer(response).await.unwrap().status, StatusCode::OK);
    assert_eq!(requests_served(&new, "blue").await, 1.0);
    new.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_take_over_leaves_the_old_edge_serving() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut kept = Connection::open(edge.addr()).await;
    assert_eq!(kept.get("/").await.unwrap().status, StatusCode::OK);

    let elsewhere = TakeOver {
        listen: Some("127.0.0.2:1".parse().unwrap()),
        ..successor(edge.dir.path())
    };
    let err = take_over(elsewhere).await.unwrap_err();
    assert!(matches!(err, EdgeError::Handover { .. }), "{err:?}");
    assert!(err.to_string().contains("listens on"), "{err}");
    assert!(!edge.handle.handed_over());

    // It still takes route changes (once the abandoned hand-over let them through),
    // keeps its connections open, and accepts new ones.
    edge.switch(&green.backend(Slot::Green, "r2")).await;
    let response = kept.send(request("/")).await.unwrap();
    assert!(
        response
            .headers()
            .get(http::header::CONNECTION)
            .is_none_or(|v| v != "close")
    );
    assert_eq!(
        answer(response).await.unwrap().backend.as_deref(),
        Some("green")
    );
    assert_eq!(
        get(edge.addr(), "/").await.backend.as_deref(),
        Some("green")
    );

    // A later take-over goes through.
    let new = take(&edge).await;
    assert_eq!(
        get(new.local_addr(), "/").await.backend.as_deref(),
        Some("green")
    );
    edge.handle.shutdown().await.unwrap();
    new.shutdown().await.unwrap();
}

#[tokio::test]
async fn take_over_without_a_running_edge_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = take_over(successor(dir.path())).await.unwrap_err();
    assert!(
        matches!(err, EdgeError::NothingToTakeOver { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("shipit edge run"), "{err}");
}

/// A route change that reaches the old edge after it handed over is not made there;
/// it answers 503 with the retry header, and the same call reaches the new edge.
#[tokio::test]
async fn route_change_reaching_the_old_edge_is_refused_for_retry() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let body = serde_json::to_vec(&green.backend(Slot::Green, "r2")).unwrap();
    let mut admin = UnixStream::connect(edge.handle.admin_socket())
        .await
        .unwrap();
    admin
        .write_all(
            format!(
                "PUT /routes/web/switch HTTP/1.1\r\nhost: edge\r\ncontent-type: \
                 application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The old edge's handler is reading the body: the switch is under way there.
    let mut admin = BufReader::new(admin);
    let mut line = String::new();
    admin.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    admin.read_line(&mut line).await.unwrap();

    let new = take(&edge).await;
    admin.get_mut().write_all(&body).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SIGNAL_TIMEOUT, admin.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(crate::api::RETRY_HEADER), "{answer}");
    assert!(answer.contains("handed over"), "{answer}");
    // Nothing changed: the new edge still routes to blue, and the client's call works.
    assert_eq!(
        get(new.local_addr(), "/").await.backend.as_deref(),
        Some("blue")
    );
    let switched = edge
        .client()
        .switch("web", &green.backend(Slot::Green, "r2"))
        .await
        .unwrap();
    assert_eq!(switched.previous, Some(blue.backend(Slot::Blue, "r1")));
    assert_eq!(
        get(new.local_addr(), "/").await.backend.as_deref(),
        Some("green")
    );
    edge.handle.shutdown().await.unwrap();
    new.shutdown().await.unwrap();
}

/// After a take-over, the old edge may still send requests to the slot that was live;
/// a drain of that release on the new edge waits for the old edge to finish.
#[tokio::test]
async fn drain_on_the_new_edge_waits_for_the_old_edge() {
    let tuning = Tuning {
        shutdown_grace: Duration::from_secs(20),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let mut blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut held = Connection::open(edge.addr()).await;
    let held = tokio::spawn(async move { held.get("/hold").await });
    blue.arrival().await;

    let new = take(&edge).await;
    let TestEdge {
        dir: _dir,
        handle: old,
    } = edge;
    // What `edge run` does once it handed over.
    let old = tokio::spawn(old.shutdown());
    let client = new.client();
    let previous = client
        .switch("web", &green.backend(Slot::Green, "r2"))
        .await
        .unwrap()
        .previous;
    assert_eq!(previous, Some(blue.backend(Slot::Blue, "r1")));
    // The new edge has nothing in flight to blue, but the old one has.
    let early = client
        .drain("web", "r1", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(!early.drained, "{early:?}");
    assert!(!old.is_finished());

    let drain = tokio::spawn(async move { client.drain("web", "r1", SIGNAL_TIMEOUT).await });
    blue.release_one();
    assert_eq!(
        held.await.unwrap().unwrap().backend.as_deref(),
        Some("blue")
    );
    let drained = drain.await.unwrap().unwrap();
    assert!(drained.drained, "{drained:?}");
    old.await.unwrap().unwrap();
    new.shutdown().await.unwrap();
}

#[tokio::test]
async fn take_over_keeps_tls_and_reads_the_certificates_again() {
    let pki = crate::tls::tests::TestPki::new();
    let first = pki.certificate("first", &["app.test"], &["app.test"]);
    let dir = tempfile::tempdir().unwrap();
    let old = crate::server::start_with_tls(
        EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.path().to_path_buf(),
        },
        Tuning::default(),
        crate::TlsOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            certificates: vec![first.clone()],
        },
    )
    .await
    .unwrap();
    let blue = TestBackend::start("blue").await;
    old.client()
        .switch("web", &blue.backend(Slot::Blue, "r1"))
        .await
        .unwrap();
    let tls_addr = old.tls_addr().unwrap();
    assert!(
        crate::tls::tests::https_get(&pki, tls_addr, "app.test")
            .await
            .is_ok()
    );
    // Renewed files, now also for www.app.test: the new edge reads them.
    let renewed = pki.certificate("first", &["app.test", "www.app.test"], &["app.test"]);
    assert_eq!(renewed.cert, first.cert);
    let www = pki.certificate("www", &["www.app.test"], &["www.app.test"]);
    old.client()
        .reload_tls(Some(vec![renewed, www]))
        .await
        .unwrap();

    let new = tokio::time::timeout(SIGNAL_TIMEOUT, take_over(successor(dir.path())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.tls_addr(), Some(tls_addr));
    old.shutdown().await.unwrap();
    let status = new.client().status().await.unwrap();
    assert_eq!(status.tls_listen, Some(tls_addr));
    for host in ["app.test", "www.app.test"] {
        let backend = crate::tls::tests::https_get(&pki, tls_addr, host)
            .await
            .unwrap();
        assert_eq!(backend, "blue");
    }
    new.shutdown().await.unwrap();
}
