use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::watch;

use crate::test_backend::{Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, eventually, get};
use crate::{Backend, Slot};

fn options(dir: &Path) -> EdgeOptions {
    EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.to_path_buf(),
    }
}

#[tokio::test]
async fn routes_restored_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let green = TestBackend::start("green").await;
    let edge = start(options(dir.path())).await.unwrap();
    edge.client()
        .switch("web", &green.backend(Slot::Green, "r2"))
        .await
        .unwrap();
    edge.shutdown().await.unwrap();

    let saved = state::load(dir.path()).unwrap().unwrap();
    assert_eq!(saved.routes[0].live, green.backend(Slot::Green, "r2"));

    let edge = start(options(dir.path())).await.unwrap();
    let answer = get(edge.local_addr(), "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.backend.as_deref(), Some("green"));
    let status = edge.client().status().await.unwrap();
    assert_eq!(
        status.routes[0].live,
        Some(green.backend(Slot::Green, "r2"))
    );
    assert_eq!(status.routes[0].since, saved.routes[0].since);
    edge.shutdown().await.unwrap();
}

#[tokio::test]
async fn routes_file_records_listen_and_follows_every_change() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let saved = state::load(edge.dir.path()).unwrap().unwrap();
    assert_eq!(saved.listen, edge.addr());
    assert!(saved.routes.is_empty());
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let saved = state::load(edge.dir.path()).unwrap().unwrap();
    assert_eq!(saved.routes[0].live, blue.backend(Slot::Blue, "r1"));
    edge.client().remove("web").await.unwrap();
    assert!(
        state::load(edge.dir.path())
            .unwrap()
            .unwrap()
            .routes
            .is_empty()
    );
}

#[tokio::test]
async fn second_edge_in_the_same_directory_is_refused() {
    let edge = TestEdge::start().await;
    let err = start(options(edge.dir.path())).await.unwrap_err();
    assert!(
        matches!(err, EdgeError::AlreadyRunning { pid: Some(_), .. }),
        "{err:?}"
    );
    // The refused start touched nothing: the first edge still answers.
    edge.client().status().await.unwrap();
}

#[tokio::test]
async fn taken_port_is_reported_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listen = taken.local_addr().unwrap();
    let err = start(EdgeOptions {
        listen,
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap_err();
    assert!(matches!(err, EdgeError::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains(&listen.to_string()), "{err}");
}

#[tokio::test]
async fn shutdown_lets_inflight_request_finish() {
    let edge = TestEdge::start().await;
    let mut blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let addr = edge.addr();
    let mut slow = Connection::open(addr).await;
    let slow = tokio::spawn(async move { slow.get("/hold").await });
    blue.arrival().await;

    let stopping = tokio::spawn(edge.handle.shutdown());
    // New connections are refused once the listener is closed.
    let refused = async {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    };
    assert!(tokio::time::timeout(SIGNAL_TIMEOUT, refused).await.unwrap());
    assert!(!stopping.is_finished());
    blue.release_one();
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.backend.as_deref(), Some("blue"));
    tokio::time::timeout(SIGNAL_TIMEOUT, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_grace_is_bounded() {
    let tuning = Tuning {
        shutdown_grace: Duration::from_millis(200),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let mut blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut slow = Connection::open(edge.addr()).await;
    let slow = tokio::spawn(async move { slow.get("/hold").await });
    blue.arrival().await;
    tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.shutdown())
        .await
        .expect("the grace period must bound the shutdown")
        .unwrap();
    // The held request was cut off, not answered.
    assert!(slow.await.unwrap().is_err());
}

#[tokio::test]
async fn shutdown_closes_open_websockets_after_the_grace_period() {
    let tuning = Tuning {
        shutdown_grace: Duration::from_millis(200),
        ..Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut ws = crate::test_backend::websocket(edge.addr()).await;
    assert_eq!(
        crate::test_backend::echo(&mut ws, "hi").await.as_deref(),
        Some("blue: hi")
    );
    tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.shutdown())
        .await
        .expect("the grace period must bound the shutdown")
        .unwrap();
    assert_eq!(crate::test_backend::echo(&mut ws, "again").await, None);
}

#[tokio::test]
async fn restart_restores_paths_and_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let edge = start(options(dir.path())).await.unwrap();
    let routing = crate::Routing {
        hosts: None,
        paths: Some(vec!["/api".into()]),
    };
    let client = edge.client();
    client
        .switch_with("api", &blue.backend(Slot::Blue, "r1"), &routing)
        .await
        .unwrap();
    client
        .weights("api", &green.backend(Slot::Green, "r2"), 100)
        .await
        .unwrap();
    let before = client.status().await.unwrap();
    edge.shutdown().await.unwrap();

    let edge = start(options(dir.path())).await.unwrap();
    let after = edge.client().status().await.unwrap();
    assert_eq!(after.routes, before.routes);
    assert_eq!(after.routes[0].paths, vec!["/api".to_string()]);
    assert_eq!(after.routes[0].candidate.as_ref().unwrap().percent, 100);
    // The split's lease survived the restart, with the same end: still leased, not for ever.
    let lease = after.routes[0].candidate.as_ref().unwrap().lease;
    assert_eq!(
        lease.map(|l| l.duration()),
        Some(crate::DEFAULT_CANDIDATE_LEASE)
    );
    // At 100 %, a new client goes to the candidate, and only under /api.
    let answer = get(edge.local_addr(), "/api/x").await;
    assert_eq!(answer.backend.as_deref(), Some("green"));
    assert_eq!(
        get(edge.local_addr(), "/x").await.status,
        StatusCode::NOT_FOUND
    );
    edge.shutdown().await.unwrap();
}

/// 32 keep-alive clients send requests while 20 switches alternate between two
/// backends. Every request must succeed, and a request sent after a switch returned
/// (with no later switch begun before its answer) must be answered by the new backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switches_under_load_lose_no_request() {
    const CLIENTS: usize = 32;
    const REQUESTS_PER_CLIENT: usize = 150;
    const SWITCHES: usize = 20;
    const REQUESTS_BETWEEN_SWITCHES: usize = 100;

    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let target = |switch: usize| -> (&'static str, Backend) {
        let release = format!("r{switch}");
        if switch.is_multiple_of(2) {
            ("blue", blue.backend(Slot::Blue, &release))
        } else {
            ("green", green.backend(Slot::Green, &release))
        }
    };
    edge.switch(&target(0).1).await;

    // `begun` moves before a switch is made, `done` after it returned.
    let begun = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (answered, progress) = watch::channel(0usize);
    let answered = Arc::new(answered);

    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        let (begun, done, failures, answered) = (
            Arc::clone(&begun),
            Arc::clone(&done),
            Arc::clone(&failures),
            Arc::clone(&answered),
        );
        let addr = edge.addr();
        clients.spawn(async move {
            let mut connection = Connection::open(addr).await;
            for request in 0..REQUESTS_PER_CLIENT {
                let switched = done.load(Ordering::SeqCst);
                let result = connection.get("/").await;
                let later = begun.load(Ordering::SeqCst);
                let failure = match result {
                    Err(e) => Some(format!("client {client} request {request}: {e}")),
                    Ok(a) if !a.status.is_success() => Some(format!(
                        "client {client} request {request}: {} {}",
                        a.status, a.body
                    )),
                    Ok(a) => {
                        let want = if switched.is_multiple_of(2) {
                            "blue"
                        } else {
                            "green"
                        };
                        (later == switched && a.backend.as_deref() != Some(want)).then(|| {
                            format!(
                                "client {client} request {request}: sent after switch {switched}, \
                                 answered by {:?}, not {want}",
                                a.backend
                            )
                        })
                    }
                };
                if let Some(failure) = failure {
                    failures.lock().unwrap().push(failure);
                }
                answered.send_modify(|n| *n += 1);
            }
            assert!(
                !connection.is_closed(),
                "client {client}: the edge closed the connection"
            );
        });
    }

    let admin = edge.client();
    let switcher = async {
        let mut progress = progress;
        for switch in 1..=SWITCHES {
            let wanted = switch * REQUESTS_BETWEEN_SWITCHES;
            progress.wait_for(|n| *n >= wanted).await.unwrap();
            let (_, backend) = target(switch);
            begun.store(switch, Ordering::SeqCst);
            let previous = admin
                .switch("web", &backend)
                .await
                .unwrap()
                .previous
                .unwrap();
            done.store(switch, Ordering::SeqCst);
            assert_eq!(previous, target(switch - 1).1);
            let drained = admin
                .drain("web", &previous.release, SIGNAL_TIMEOUT)
                .await
                .unwrap();
            assert!(drained.drained, "switch {switch}: {drained:?}");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), switcher)
        .await
        .expect("the switches did not finish in time");
    let all = async {
        while let Some(joined) = clients.join_next().await {
            joined.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("the clients did not finish in time");

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(*answered.borrow(), CLIENTS * REQUESTS_PER_CLIENT);
    assert_eq!(
        blue.served() + green.served(),
        CLIENTS * REQUESTS_PER_CLIENT
    );
    assert_eq!(done.load(Ordering::SeqCst), SWITCHES);
}

/// Client connections go to the serving threads in turn, and two requests at once on two
/// threads leave each thread a slot connection of its own; with `threads = 0` they run on
/// the edge's own runtime.
#[tokio::test]
async fn client_connections_are_served_on_the_serving_threads_in_turn() {
    for threads in [2, 0] {
        let tuning = Tuning {
            threads,
            ..Tuning::default()
        };
        let edge = TestEdge::start_with(tuning).await;
        let mut blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let (mut first, mut second) = (
            Connection::open(edge.addr()).await,
            Connection::open(edge.addr()).await,
        );
        let held = [
            tokio::spawn(async move { first.get("/hold").await }),
            tokio::spawn(async move { second.get("/hold").await }),
        ];
        blue.arrival().await;
        blue.arrival().await;
        blue.release_one();
        blue.release_one();
        for answer in held {
            let answer = answer.await.unwrap().unwrap();
            assert_eq!(answer.status, StatusCode::OK, "threads = {threads}");
            assert_eq!(answer.backend.as_deref(), Some("blue"));
        }
        for _ in 0..2 {
            let answer = Connection::open(edge.addr()).await.get("/").await.unwrap();
            assert_eq!(answer.status, StatusCode::OK, "threads = {threads}");
        }
        let inner = edge.handle.edge();
        let dealt: Vec<usize> = inner
            .workers
            .dealt
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        let pool = || inner.table().serving("web")[0].members()[0].pool().homes();
        // A slot connection goes back to its pool once the answer's last byte is written.
        if threads == 0 {
            assert_eq!(dealt, Vec::<usize>::new());
            eventually("a connection of the edge's own runtime", || {
                pool() == [None]
            })
            .await;
        } else {
            assert_eq!(dealt, [2, 2]);
            eventually("a connection of each serving thread", || {
                pool() == [Some(0), Some(1)]
            })
            .await;
        }
    }
}
