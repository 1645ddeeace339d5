use super::*;
use crate::test_backend::{Connection, SIGNAL_TIMEOUT, TestBackend, TestEdge, eventually, get};
use hyper_util::rt::TokioIo;

/// Sends a raw admin request and returns the status and the JSON answer.
async fn raw(
    edge: &TestEdge,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let stream = tokio::net::UnixStream::connect(edge.handle.admin_socket())
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "edge")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

#[tokio::test]
async fn admin_socket_is_private() {
    let edge = TestEdge::start().await;
    let mode = mode(edge.handle.admin_socket());
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[tokio::test]
async fn admin_socket_is_private_before_anyone_can_reach_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::ADMIN_SOCKET);
    let staged = Staged::bind(&path).unwrap();
    // Bound, but not at its path yet: only inside a directory no one else can enter,
    // and already 0600 there (under this process's umask a plain bind gives 0755).
    assert!(std::fs::symlink_metadata(&path).is_err());
    assert_eq!(mode(&dir.path().join(BIND_DIR)), 0o700);
    assert_eq!(mode(&staged.bound), 0o600);
    let listener = staged.publish().unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(!dir.path().join(BIND_DIR).exists());
    // The moved socket is the bound one.
    let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
    tokio::time::timeout(SIGNAL_TIMEOUT, listener.accept())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn stale_socket_and_a_bind_left_halfway_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::ADMIN_SOCKET);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    // An edge that stopped between its bind and the move left its private directory.
    let left = Staged::bind(&path).unwrap();
    drop(left);
    let _listener = bind(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(!dir.path().join(BIND_DIR).exists());
    tokio::net::UnixStream::connect(&path).await.unwrap();
}

#[tokio::test]
async fn admin_client_that_sends_half_a_head_is_closed_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge = TestEdge::start().await;
    let mut slow = tokio::net::UnixStream::connect(edge.handle.admin_socket())
        .await
        .unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: ed")
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();
    // Meanwhile the admin API answers everyone else.
    for _ in 0..3 {
        let status = edge.client().status().await.unwrap();
        assert_eq!(status.pid, std::process::id());
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        ADMIN_HEADER_READ_TIMEOUT + SIGNAL_TIMEOUT,
        slow.read_to_end(&mut rest),
    )
    .await
    .expect("the edge kept a connection that never finished its head");
    // Closed (hyper may answer 408 first, or reset): never a served request.
    let text = String::from_utf8_lossy(&rest);
    assert!(read.is_err() || !text.contains("200 OK"), "{text}");
    let after = opened.elapsed();
    assert!(
        after + Duration::from_millis(500) >= ADMIN_HEADER_READ_TIMEOUT,
        "closed after {after:?}, before the timeout"
    );
}

#[tokio::test]
async fn too_long_socket_path_is_refused_with_a_hint() {
    let path = Path::new("/tmp").join("d".repeat(120)).join("admin.sock");
    let err = bind(&path).unwrap_err();
    assert!(err.to_string().contains("shorter state directory"), "{err}");
}

#[tokio::test]
async fn status_reports_pid_bound_listen_and_routes() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let status = edge.client().status().await.unwrap();
    assert_eq!(status.pid, std::process::id());
    assert_eq!(status.listen, edge.addr());
    assert_ne!(status.listen.port(), 0);
    assert!(status.routes.is_empty());

    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let (code, json) = raw(&edge, "GET", "/status", "").await;
    assert_eq!(code, StatusCode::OK);
    let route = &json["routes"][0];
    assert_eq!(route["service"], "web");
    assert_eq!(
        route["live"],
        serde_json::json!({"slot": "blue", "release": "r1", "addr": blue.addr.to_string()})
    );
    assert_eq!(route["draining"], serde_json::json!([]));
    assert!(route["since"].as_str().unwrap().ends_with('Z'));
    assert!(json["started_at"].is_string());
}

#[tokio::test]
async fn switch_routes_next_request_to_new_backend() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let client = edge.client();

    let first = client
        .switch("web", &blue.backend(Slot::Blue, "r1"))
        .await
        .unwrap();
    assert_eq!(first.previous, None);
    assert_eq!(get(edge.addr(), "/").await.backend.as_deref(), Some("blue"));

    let second = client
        .switch("web", &green.backend(Slot::Green, "r2"))
        .await
        .unwrap();
    assert_eq!(second.previous, Some(blue.backend(Slot::Blue, "r1")));
    assert!(second.switched_at >= first.switched_at);
    assert_eq!(
        get(edge.addr(), "/").await.backend.as_deref(),
        Some("green")
    );
}

#[tokio::test]
async fn switch_keeps_inflight_requests_on_old_slot() {
    let edge = TestEdge::start().await;
    let mut blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let client = edge.client();
    client
        .switch("web", &blue.backend(Slot::Blue, "r1"))
        .await
        .unwrap();

    let mut slow = Connection::open(edge.addr()).await;
    let slow = tokio::spawn(async move { slow.get("/hold").await.unwrap() });
    blue.arrival().await;
    client
        .switch("web", &green.backend(Slot::Green, "r2"))
        .await
        .unwrap();
    assert_eq!(
        get(edge.addr(), "/").await.backend.as_deref(),
        Some("green")
    );

    let status = client.status().await.unwrap();
    let draining = &status.routes[0].draining;
    assert_eq!(draining.len(), 1);
    assert_eq!(draining[0].backend, blue.backend(Slot::Blue, "r1"));
    assert_eq!(draining[0].in_flight, 1);

    let drain = {
        let client = client.clone();
        tokio::spawn(async move { client.drain("web", "r1", SIGNAL_TIMEOUT).await.unwrap() })
    };
    // The drain cannot end while the slow request is held; a status round trip later
    // it is still waiting.
    client.status().await.unwrap();
    assert!(!drain.is_finished());
    blue.release_one();
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.backend.as_deref(), Some("blue"));
    let outcome = drain.await.unwrap();
    assert!(outcome.drained);
    assert_eq!(outcome.in_flight, 0);
    assert!(client.status().await.unwrap().routes[0].draining.is_empty());
}

#[tokio::test]
async fn drain_gives_up_at_deadline() {
    let edge = TestEdge::start().await;
    let mut blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let mut slow = Connection::open(edge.addr()).await;
    let slow = tokio::spawn(async move { slow.get("/hold").await.unwrap() });
    blue.arrival().await;
    edge.switch(&green.backend(Slot::Green, "r2")).await;

    let (code, json) = raw(
        &edge,
        "POST",
        "/routes/web/drain",
        r#"{"release": "r1", "timeout_ms": 200}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json["drained"], false);
    assert_eq!(json["in_flight"], 1);
    assert!(json["waited_ms"].as_u64().unwrap() >= 200, "{json}");
    blue.release_one();
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn drain_of_unknown_release_is_immediately_done() {
    let edge = TestEdge::start().await;
    let outcome = edge
        .client()
        .drain("web", "never", SIGNAL_TIMEOUT)
        .await
        .unwrap();
    assert!(outcome.drained);
    assert_eq!(outcome.in_flight, 0);
}

#[tokio::test]
async fn drain_of_live_release_is_refused() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let err = edge
        .client()
        .drain("web", "r1", SIGNAL_TIMEOUT)
        .await
        .unwrap_err();
    let EdgeError::AdminRejected {
        status, message, ..
    } = &err
    else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(*status, 409);
    assert!(
        message.contains("release r1 is live on service web"),
        "{message}"
    );
}

#[tokio::test]
async fn remove_answers_removed_backend_then_null() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let (code, json) = raw(&edge, "DELETE", "/routes/web", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json["removed"]["release"], "r1");
    assert_eq!(edge.client().remove("web").await.unwrap(), None);
    assert!(edge.client().status().await.unwrap().routes.is_empty());
}

#[tokio::test]
async fn switch_body_may_set_hosts() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let api = format!(
        r#"{{"slot": "blue", "release": "a1", "addr": "{}", "hosts": ["api.test"]}}"#,
        blue.addr
    );
    assert_eq!(
        raw(&edge, "PUT", "/routes/api/switch", &api).await.0,
        StatusCode::OK
    );
    edge.switch(&green.backend(Slot::Green, "w1")).await;
    let status = edge.client().status().await.unwrap();
    assert_eq!(status.routes[0].hosts, vec!["api.test".to_string()]);
    // `get` sends `Host: app.test`: the catch-all route answers it.
    assert_eq!(
        get(edge.addr(), "/").await.backend.as_deref(),
        Some("green")
    );
}

#[tokio::test]
async fn bad_admin_calls_answer_json_errors() {
    let edge = TestEdge::start().await;
    let cases = [
        (
            "GET",
            "/nope",
            "",
            StatusCode::NOT_FOUND,
            "no admin call GET /nope",
        ),
        (
            "POST",
            "/status",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is not allowed",
        ),
        (
            "PUT",
            "/routes/web/switch",
            "{",
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (
            "PUT",
            "/routes/web/switch",
            r#"{"slot": "red", "release": "r1", "addr": "127.0.0.1:1"}"#,
            StatusCode::BAD_REQUEST,
            "unknown variant `red`",
        ),
        (
            "PUT",
            "/routes/web/switch",
            r#"{"slot": "blue", "release": "", "addr": "127.0.0.1:1"}"#,
            StatusCode::BAD_REQUEST,
            "empty `release`",
        ),
        (
            "PUT",
            "/routes/we%20b/switch",
            r#"{"slot": "blue", "release": "r1", "addr": "127.0.0.1:1"}"#,
            StatusCode::BAD_REQUEST,
            "invalid service name",
        ),
        (
            "POST",
            "/routes/web/drain",
            r#"{"release": "r1"}"#,
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
    ];
    for (method, path, body, want, text) in cases {
        let (code, json) = raw(&edge, method, path, body).await;
        assert_eq!(code, want, "{method} {path}: {json}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(text), "{method} {path}: {error}");
    }
    assert!(edge.client().status().await.unwrap().routes.is_empty());
}

#[tokio::test]
async fn shutdown_answers_then_stops_the_edge() {
    let edge = TestEdge::start().await;
    let socket = edge.handle.admin_socket().to_path_buf();
    edge.client().shutdown().await.unwrap();
    tokio::time::timeout(SIGNAL_TIMEOUT, edge.handle.stop_requested())
        .await
        .unwrap();
    edge.handle.shutdown().await.unwrap();
    assert!(!socket.exists());
}

#[tokio::test]
async fn candidate_calls_answer_their_json_shapes() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let green_json =
        serde_json::json!({"slot": "green", "release": "r2", "addr": green.addr.to_string()});

    let (code, json) = raw(
        &edge,
        "PUT",
        "/routes/web/preview",
        &format!(
            r#"{{"slot": "green", "release": "r2", "addr": "{}", "hosts": ["p.test"]}}"#,
            green.addr
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{json}");
    assert_eq!(
        json,
        serde_json::json!({"candidate": green_json, "percent": 0, "replaced": null})
    );

    let (code, json) = raw(
        &edge,
        "PUT",
        "/routes/web/weights",
        &format!(r#"{{"candidate": {green_json}, "percent": 10}}"#),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{json}");
    assert_eq!(json["percent"], 10);

    let (_, status) = raw(&edge, "GET", "/status", "").await;
    let route = &status["routes"][0];
    // A split always has a lease: the default one when the call names none.
    let lease = route["candidate"]["lease"].clone();
    assert_eq!(
        lease["lease_ms"],
        u64::try_from(crate::DEFAULT_CANDIDATE_LEASE.as_millis()).unwrap()
    );
    assert_eq!(
        route["candidate"],
        serde_json::json!({"backend": green_json, "percent": 10, "in_flight": 0, "lease": lease, "sticky": true})
    );
    // A split that weighs every request on its own.
    let (code, json) = raw(
        &edge,
        "PUT",
        "/routes/web/weights",
        &format!(r#"{{"candidate": {green_json}, "percent": 10, "sticky": false}}"#),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{json}");
    let (_, status) = raw(&edge, "GET", "/status", "").await;
    assert_eq!(status["routes"][0]["candidate"]["sticky"], false);
    assert_eq!(route["preview_hosts"], serde_json::json!(["p.test"]));

    // The candidate cannot be drained while it is registered.
    let (code, json) = raw(
        &edge,
        "POST",
        "/routes/web/drain",
        r#"{"release": "r2", "timeout_ms": 10}"#,
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("registered candidate"),
        "{json}"
    );

    let (code, json) = raw(&edge, "DELETE", "/routes/web/weights", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json, serde_json::json!({"candidate": green_json}));
    assert_eq!(
        edge.client().status().await.unwrap().routes[0]
            .candidate
            .as_ref()
            .unwrap()
            .percent,
        0
    );
    let (code, json) = raw(&edge, "DELETE", "/routes/web/preview", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json, serde_json::json!({"removed": green_json}));
    let (_, status) = raw(&edge, "GET", "/status", "").await;
    assert!(status["routes"][0].get("candidate").is_none(), "{status}");
    // Unregistered, it drains like any replaced backend.
    let outcome = edge
        .client()
        .drain("web", "r2", SIGNAL_TIMEOUT)
        .await
        .unwrap();
    assert!(outcome.drained);
}

#[tokio::test]
async fn bad_candidate_and_path_calls_are_refused() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green_body = r#"{"slot": "green", "release": "r2", "addr": "127.0.0.1:9"}"#;
    let (code, json) = raw(&edge, "PUT", "/routes/web/preview", green_body).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        json["error"].as_str().unwrap().contains("no live slot"),
        "{json}"
    );

    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let cases = [
        (
            "PUT",
            "/routes/web/preview",
            r#"{"slot": "blue", "release": "r2", "addr": "127.0.0.1:9"}"#.to_string(),
            StatusCode::CONFLICT,
            "which is live on service web",
        ),
        (
            "PUT",
            "/routes/web/weights",
            format!(r#"{{"candidate": {green_body}, "percent": 101}}"#),
            StatusCode::BAD_REQUEST,
            "0 to 100, not 101",
        ),
        (
            "PUT",
            "/routes/web/weights",
            format!(r#"{{"candidate": {green_body}}}"#),
            StatusCode::BAD_REQUEST,
            "percent",
        ),
        (
            "PUT",
            "/routes/web/switch",
            format!(
                r#"{{"slot": "blue", "release": "r1", "addr": "{}", "paths": ["api"]}}"#,
                blue.addr
            ),
            StatusCode::BAD_REQUEST,
            "invalid path prefix `api`",
        ),
        (
            "POST",
            "/routes/web/weights",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is not allowed",
        ),
    ];
    let lease_cases = [
        (
            "PUT",
            "/routes/web/weights",
            format!(r#"{{"candidate": {green_body}, "percent": 10, "lease_ms": 0}}"#),
            StatusCode::BAD_REQUEST,
            "`lease_ms` must be 1 to",
        ),
        (
            "PUT",
            "/routes/web/lease",
            r#"{"release": "r2", "lease_ms": 1000}"#.to_string(),
            StatusCode::CONFLICT,
            "holds no candidate of release r2",
        ),
        (
            "PUT",
            "/routes/web/lease",
            r#"{"release": "r2"}"#.to_string(),
            StatusCode::BAD_REQUEST,
            "lease_ms",
        ),
    ];
    for (method, path, body, want, text) in cases.into_iter().chain(lease_cases) {
        let (code, json) = raw(&edge, method, path, &body).await;
        assert_eq!(code, want, "{method} {path}: {json}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(text), "{method} {path}: {error}");
    }
    assert!(
        edge.client().status().await.unwrap().routes[0]
            .candidate
            .is_none()
    );
}

#[tokio::test]
async fn metrics_page_is_prometheus_text() {
    let edge = TestEdge::start().await;
    let stream = tokio::net::UnixStream::connect(edge.handle.admin_socket())
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let req = Request::builder()
        .uri("/metrics")
        .header("host", "edge")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let page = edge.client().metrics().await.unwrap();
    for family in [
        "shipit_edge_requests_total counter",
        "shipit_edge_request_duration_seconds histogram",
        "shipit_edge_in_flight gauge",
        "shipit_edge_drains_total counter",
    ] {
        assert!(
            page.contains(&format!("# TYPE {family}\n")),
            "{family}:\n{page}"
        );
    }
}

#[tokio::test]
async fn split_whose_lease_is_not_renewed_is_withdrawn_by_the_edge() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let client = edge.client();
    let lease = Duration::from_secs(2);
    client
        .weights_leased("web", &green.backend(Slot::Green, "r2"), 100, Some(lease))
        .await
        .unwrap();
    assert_eq!(
        get(edge.addr(), "/").await.backend.as_deref(),
        Some("green")
    );
    // Renewed, it outlives its first lease.
    tokio::time::sleep(lease / 2).await;
    let answer = client.renew_lease("web", "r2", lease).await.unwrap();
    let renewed_at = tokio::time::Instant::now();
    assert_eq!(answer.percent, 100);
    assert_eq!(answer.lease.lease_ms, 2000);
    tokio::time::sleep(lease / 2 + lease / 4).await;
    assert!(
        client.status().await.unwrap().routes[0].candidate.is_some(),
        "the renewed lease lapsed at its first end"
    );
    // Not renewed any more: the edge withdraws it on its own, and saves that.
    let deadline = renewed_at + lease + SIGNAL_TIMEOUT;
    while client.status().await.unwrap().routes[0].candidate.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the candidate outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(edge.addr(), "/").await.backend.as_deref(), Some("blue"));
    }
    // The withdrawal is saved right after the table changes: wait for the file, bounded.
    let deadline = tokio::time::Instant::now() + SIGNAL_TIMEOUT;
    loop {
        let saved = crate::state::load(edge.dir.path()).unwrap().unwrap();
        if saved.routes[0].candidate.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the withdrawal was never saved: {:?}",
            saved.routes[0].candidate
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = client.renew_lease("web", "r2", lease).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("holds no candidate of release r2"),
        "{refused}"
    );
}

#[tokio::test]
async fn pause_and_maintenance_calls_answer_their_json_shapes() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;

    let (code, json) = raw(
        &edge,
        "PUT",
        "/routes/web/pause",
        r#"{"timeout_ms": 60000}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{json}");
    let paused = &json["paused"];
    assert_eq!(
        (&paused["held"], &paused["expired"]),
        (&0.into(), &false.into())
    );
    assert!(
        paused["deadline"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    let (_, status) = raw(&edge, "GET", "/status", "").await;
    assert_eq!(status["routes"][0]["paused"], *paused);

    let (code, json) = raw(&edge, "DELETE", "/routes/web/pause", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        json,
        serde_json::json!({"resumed": true, "released": 0, "expired": false})
    );
    // Resuming what is not paused changes nothing, and says so.
    let (code, json) = raw(&edge, "DELETE", "/routes/web/pause", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json["resumed"], false);

    let (code, json) = raw(
        &edge,
        "PUT",
        "/routes/web/maintenance",
        r#"{"message": "<b>back soon</b>", "retry_after_s": 120}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{json}");
    assert_eq!(json["maintenance"]["message"], "<b>back soon</b>");
    assert_eq!(json["maintenance"]["retry_after_s"], 120);
    assert_eq!(json["previous"], serde_json::Value::Null);
    let (code, json) = raw(&edge, "PUT", "/routes/web/maintenance", "{}").await;
    assert_eq!(code, StatusCode::OK, "{json}");
    assert!(json["maintenance"].get("message").is_none(), "{json}");
    assert_eq!(json["maintenance"]["retry_after_s"], 60);
    assert_eq!(json["previous"]["message"], "<b>back soon</b>");
    let (_, status) = raw(&edge, "GET", "/status", "").await;
    assert_eq!(status["routes"][0]["maintenance"], json["maintenance"]);

    let (code, json) = raw(&edge, "DELETE", "/routes/web/maintenance", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json["maintenance"], serde_json::Value::Null);
    assert_eq!(json["previous"]["retry_after_s"], 60);
    let (_, status) = raw(&edge, "GET", "/status", "").await;
    assert!(status["routes"][0].get("maintenance").is_none(), "{status}");
    assert!(status["routes"][0].get("paused").is_none(), "{status}");
}

#[tokio::test]
async fn bad_pause_and_maintenance_calls_are_refused() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let too_long_message = serde_json::json!({ "message": "x".repeat(2049) }).to_string();
    let cases: [(&str, &str, &str, StatusCode, &str); 13] = [
        (
            "PUT",
            "/routes/web/pause",
            r#"{"timeout_ms": 0}"#,
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
        (
            "PUT",
            "/routes/web/pause",
            r#"{"timeout_ms": 3600001}"#,
            StatusCode::BAD_REQUEST,
            "1 hour",
        ),
        (
            "PUT",
            "/routes/web/pause",
            "{}",
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
        (
            "PUT",
            "/routes/web/pause",
            r#"{"timeout_ms": 5, "x": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            "PUT",
            "/routes/api/pause",
            r#"{"timeout_ms": 1000}"#,
            StatusCode::NOT_FOUND,
            "service api has no live route",
        ),
        (
            "DELETE",
            "/routes/api/pause",
            "",
            StatusCode::NOT_FOUND,
            "service api",
        ),
        (
            "PUT",
            "/routes/we%20b/pause",
            r#"{"timeout_ms": 1000}"#,
            StatusCode::BAD_REQUEST,
            "invalid service name",
        ),
        (
            "GET",
            "/routes/web/pause",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "not allowed",
        ),
        (
            "PUT",
            "/routes/web/maintenance",
            &too_long_message,
            StatusCode::BAD_REQUEST,
            "2049 bytes",
        ),
        (
            "PUT",
            "/routes/web/maintenance",
            r#"{"message": ""}"#,
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "PUT",
            "/routes/web/maintenance",
            r#"{"retry_after_s": 0}"#,
            StatusCode::BAD_REQUEST,
            "retry_after_s",
        ),
        (
            "PUT",
            "/routes/api/maintenance",
            "{}",
            StatusCode::NOT_FOUND,
            "service api",
        ),
        (
            "DELETE",
            "/routes/api/maintenance",
            "",
            StatusCode::NOT_FOUND,
            "service api",
        ),
    ];
    for (method, path, body, want, says) in cases {
        let (code, json) = raw(&edge, method, path, body).await;
        assert_eq!(code, want, "{method} {path} {body}: {json}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(says), "{method} {path}: {error}");
    }
    // Nothing of it reached the route.
    let route = &edge.client().status().await.unwrap().routes[0];
    assert_eq!((&route.paused, &route.maintenance), (&None, &None));
    assert_eq!(get(edge.addr(), "/").await.status, StatusCode::OK);
    // The client checks the name before sending, as for every call.
    let err = edge
        .client()
        .pause("a/b", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, EdgeError::InvalidService { .. }), "{err:?}");
    let err = edge.client().maintenance_off("api").await.unwrap_err();
    assert!(
        matches!(err, EdgeError::AdminRejected { status: 404, .. }),
        "{err:?}"
    );
}

/// An edge with one serving thread: a switch opens one connection to the new slot, for
/// that thread, and the tests of the connections opened ahead count them.
async fn one_thread_edge() -> TestEdge {
    TestEdge::start_with(crate::settings::Tuning {
        threads: 1,
        ..crate::settings::Tuning::default()
    })
    .await
}

#[tokio::test]
async fn a_switch_answers_once_a_connection_to_the_new_slot_waits_in_its_pool() {
    let edge = one_thread_edge().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    for backend in [
        blue.backend(Slot::Blue, "r1"),
        green.backend(Slot::Green, "r2"),
    ] {
        edge.switch(&backend).await;
        // Looked at the moment the switch answered: the first request after it finds a
        // connection ready, not one still being opened.
        let serving = edge.handle.edge().table().serving("web");
        assert_eq!(serving.len(), 1);
        assert_eq!(*serving[0].backend(), backend);
        assert_eq!(
            serving[0].members()[0].pool().len(),
            1,
            "no connection waits for {backend}"
        );
    }
    // A slot that refuses connections is switched to all the same.
    let gone = Backend {
        slot: Slot::Blue,
        release: "r3".into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        more_addrs: Vec::new(),
    };
    edge.switch(&gone).await;
    assert_eq!(
        edge.handle.edge().table().serving("web")[0].members()[0]
            .pool()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_switch_back_to_a_slot_that_still_drains_takes_its_idle_connection() {
    let edge = one_thread_edge().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let (first, second) = (
        blue.backend(Slot::Blue, "r1"),
        green.backend(Slot::Green, "r2"),
    );
    let live_ports = || {
        let serving = edge.handle.edge().table().serving("web");
        serving[0].members()[0].pool().local_ports()
    };
    edge.switch(&first).await;
    let ahead = live_ports();
    assert_eq!(ahead.len(), 1);
    edge.switch(&second).await;
    // Back to blue while its replaced backend drains: the connection it held is taken, and
    // none is opened.
    let inner = edge.handle.edge();
    assert!(inner.connect_ahead("web", &first).await.is_none());
    assert!(
        inner
            .connect_ahead("web", &green.backend(Slot::Green, "r9"))
            .await
            .is_some()
    );
    edge.switch(&first).await;
    assert_eq!(live_ports(), ahead);
    assert_eq!(get(edge.addr(), "/").await.backend.as_deref(), Some("blue"));
    // Back in the pool once the serving thread is done with it.
    eventually("the taken connection did not serve the request", || {
        live_ports() == ahead
    })
    .await;
    // Another release at blue's address is another backend: it gets its own connection.
    edge.switch(&second).await;
    edge.switch(&blue.backend(Slot::Blue, "r3")).await;
    let fresh = live_ports();
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh, ahead);
}

#[tokio::test(flavor = "current_thread")]
async fn the_connection_opened_ahead_is_in_the_pool_when_the_switch_is_made() {
    let edge = one_thread_edge().await;
    let blue = TestBackend::start("blue").await;
    let backend = blue.backend(Slot::Blue, "r1");
    let inner = edge.handle.edge();
    let ahead = inner.connect_ahead("web", &backend).await;
    assert!(ahead.is_some(), "no connection was opened ahead");
    inner
        .table()
        .switch("web", backend.clone(), crate::Routing::default());
    // No await between the switch and this look: a connection spawned after the switch
    // could not be there yet.
    inner.warm_with("web", ahead);
    let serving = inner.table().serving("web");
    assert_eq!(serving[0].members()[0].pool().len(), 1);
    // Ahead of a switch to what is live already, nothing is opened.
    assert!(inner.connect_ahead("web", &backend).await.is_none());
}

#[tokio::test]
async fn the_switch_takes_the_connection_that_next_opened_for_it() {
    let edge = one_thread_edge().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let (first, second) = (
        blue.backend(Slot::Blue, "r1"),
        green.backend(Slot::Green, "r2"),
    );
    edge.switch(&first).await;
    let client = edge.client();
    assert!(client.connect_next("web", &second).await.unwrap());
    let inner = edge.handle.edge();
    let (held, port) = inner
        .ahead
        .held_for("web")
        .expect("nothing is held for web");
    assert_eq!(held, second);
    edge.switch(&second).await;
    assert_eq!(
        inner.ahead.held_for("web"),
        None,
        "still held after the switch"
    );
    let pool = || {
        inner.table().serving("web")[0].members()[0]
            .pool()
            .local_ports()
    };
    assert_eq!(pool(), [port], "the switch opened its own connection");
    assert_eq!(
        get(edge.addr(), "/").await.backend.as_deref(),
        Some("green")
    );
    eventually("the held connection did not serve the request", || {
        pool() == [port]
    })
    .await;
}

#[tokio::test]
async fn next_holds_nothing_for_what_is_live_and_a_switch_elsewhere_lets_it_go() {
    let edge = one_thread_edge().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    let first = blue.backend(Slot::Blue, "r1");
    edge.switch(&first).await;
    let client = edge.client();
    let inner = edge.handle.edge();
    assert!(!client.connect_next("web", &first).await.unwrap());
    assert_eq!(inner.ahead.held_for("web"), None);
    // Held for r2; then the switch names r3 at the same address: r3 gets a connection of its
    // own, and the one held for r2 is closed.
    assert!(
        client
            .connect_next("web", &green.backend(Slot::Green, "r2"))
            .await
            .unwrap()
    );
    let (_, held_port) = inner.ahead.held_for("web").unwrap();
    edge.switch(&green.backend(Slot::Green, "r3")).await;
    assert_eq!(inner.ahead.held_for("web"), None);
    let ports = inner.table().serving("web")[0].members()[0]
        .pool()
        .local_ports();
    assert_eq!(ports.len(), 1);
    assert_ne!(ports, [held_port]);
    // A slot that refuses connections: nothing held, and no error.
    let gone = Backend::new(Slot::Blue, "r4", "127.0.0.1:9".parse().unwrap());
    assert!(!client.connect_next("web", &gone).await.unwrap());
}

#[tokio::test]
async fn a_connection_next_holds_is_closed_when_no_switch_takes_it() {
    let tuning = crate::settings::Tuning {
        pool_idle_timeout: Duration::from_millis(200),
        ..crate::settings::Tuning::default()
    };
    let edge = TestEdge::start_with(tuning).await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    assert!(
        edge.client()
            .connect_next("web", &green.backend(Slot::Green, "r2"))
            .await
            .unwrap()
    );
    let inner = edge.handle.edge();
    assert!(inner.ahead.held_for("web").is_some());
    let deadline = tokio::time::Instant::now() + SIGNAL_TIMEOUT;
    while inner.ahead.held_for("web").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held connection outlived the idle timeout by {SIGNAL_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn next_checks_its_body_and_service() {
    let edge = TestEdge::start().await;
    let (status, body) = raw(&edge, "PUT", "/routes/web/next", r#"{"slot": "green"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = raw(
        &edge,
        "PUT",
        "/routes/web/next",
        r#"{"slot": "green", "release": "", "addr": "127.0.0.1:8082"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("empty `release`"),
        "{body}"
    );
    let (status, body) = raw(
        &edge,
        "PUT",
        "/routes/we%20b/next",
        r#"{"slot": "green", "release": "r2", "addr": "127.0.0.1:8082"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = raw(&edge, "GET", "/routes/web/next", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_change_saved_after_a_delay_takes_effect_first_and_is_saved_after_it() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let saved = || std::fs::read_to_string(edge.dir.path().join("routes.json")).unwrap();
    assert!(saved().contains("\"r1\""));
    let inner = edge.handle.edge();
    let changed = inner.routes_changed.notified();
    tokio::pin!(changed);
    changed.as_mut().enable();
    let second = green.backend(Slot::Green, "r2");
    let delay = Duration::from_secs(2);
    let change = inner.change_then_save_after(delay, |table| {
        table.switch("web", second.clone(), crate::Routing::default());
        Ok::<_, EdgeError>(())
    });
    tokio::pin!(change);
    // Driven until the change took effect, then looked at: in effect, not saved yet.
    tokio::select! {
        _ = change.as_mut() => panic!("the change finished before the delay"),
        () = changed.as_mut() => {}
    }
    assert_eq!(*inner.table().serving("web")[0].backend(), second);
    // Half the delay on, still driven: not finished, and nothing saved.
    assert!(
        tokio::time::timeout(delay / 2, change.as_mut())
            .await
            .is_err(),
        "the change was saved before its delay"
    );
    assert!(
        saved().contains("\"r1\"") && !saved().contains("\"r2\""),
        "{}",
        saved()
    );
    change.await.unwrap().unwrap();
    assert!(saved().contains("\"r2\""), "{}", saved());
}

#[tokio::test]
async fn an_answer_a_slot_wrote_unasked_on_a_held_connection_reaches_no_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    // A slot that answers before it is asked on its first connection, and properly on the
    // next one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostile = Backend::new(Slot::Green, "r2", listener.local_addr().unwrap());
    assert!(edge.client().connect_next("web", &hostile).await.unwrap());
    let (mut first, _) = listener.accept().await.unwrap();
    first
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nunasked")
        .await
        .unwrap();
    let serve = tokio::spawn(async move {
        let (mut second, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = second.read(&mut buf).await.unwrap();
            assert!(n > 0, "the edge closed the connection before its request");
            head.extend_from_slice(&buf[..n]);
        }
        second
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nasked")
            .await
            .unwrap();
        (first, second)
    });
    edge.switch(&hostile).await;
    let answer = get(edge.addr(), "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "asked");
    tokio::time::timeout(SIGNAL_TIMEOUT, serve)
        .await
        .expect("the edge never asked on a connection of its own")
        .unwrap();
}

/// Reads from `stream` until the other side closes it, at most [`SIGNAL_TIMEOUT`].
async fn closed_by_the_edge(stream: &mut tokio::net::TcpStream, what: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(SIGNAL_TIMEOUT, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what} is still open"));
    assert!(matches!(read, Ok(0) | Err(_)), "{what} carried {read:?}");
}

#[tokio::test]
async fn a_held_connection_that_is_let_go_is_closed_at_once() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let client = edge.client();
    assert!(
        client
            .connect_next("web", &Backend::new(Slot::Green, "r2", at))
            .await
            .unwrap()
    );
    let (mut first, _) = listener.accept().await.unwrap();
    // Replaced by another call: the first connection closes, well before the idle timeout.
    assert!(
        client
            .connect_next("web", &Backend::new(Slot::Green, "r3", at))
            .await
            .unwrap()
    );
    let (mut second, _) = listener.accept().await.unwrap();
    closed_by_the_edge(&mut first, "the connection held for r2").await;
    // Passed over by a switch to another backend: the second one closes too.
    edge.switch(&blue.backend(Slot::Blue, "r4")).await;
    closed_by_the_edge(&mut second, "the connection held for r3").await;
    assert_eq!(edge.handle.edge().ahead.held_for("web"), None);
}

#[tokio::test]
async fn a_delayed_save_is_made_even_when_its_caller_goes_away() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let saved = || std::fs::read_to_string(edge.dir.path().join("routes.json")).unwrap();
    let inner = edge.handle.edge();
    let changed = inner.routes_changed.notified();
    tokio::pin!(changed);
    changed.as_mut().enable();
    let second = green.backend(Slot::Green, "r2");
    // Boxed, so that dropping it drops the call itself.
    let mut change = Box::pin(
        inner.change_then_save_after(Duration::from_millis(100), |table| {
            table.switch("web", second.clone(), crate::Routing::default());
            Ok::<_, EdgeError>(())
        }),
    );
    tokio::select! {
        _ = change.as_mut() => panic!("the change finished before the delay"),
        () = changed.as_mut() => {}
    }
    // The admin client hung up: its call is dropped while the save waits.
    drop(change);
    let deadline = tokio::time::Instant::now() + SIGNAL_TIMEOUT;
    while !saved().contains("\"r2\"") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the switch to r2 is in effect but was never saved: {}",
            saved()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the save lock was let go: the next change goes through.
    inner
        .change(|_| Ok::<_, EdgeError>(()))
        .await
        .unwrap()
        .unwrap();
}
