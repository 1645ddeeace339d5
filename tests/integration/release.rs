//! Releases under load: zero failed requests, and traffic follows each switch.

use std::time::{Duration, Instant};

use crate::harness::{Project, assert_success, get, json, stderr};
use crate::load::{Load, assert_served_by, release_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_releases_under_load_drop_no_request() {
    let project = Project::new("load");
    let mut id = project.release_async().await;
    let load = Load::start(project.listen, 32);
    // (release id, when its `shipit release` returned, when the next one started)
    let mut served: Vec<(String, Instant, Instant)> = Vec::new();
    let mut returned = Instant::now();
    for _ in 0..20 {
        let started = Instant::now();
        served.push((id.clone(), returned, started));
        let next = project.release_async().await;
        assert_ne!(next, id, "each release has a new id");
        id = next;
        returned = Instant::now();
    }
    let stopped = Instant::now();
    served.push((id.clone(), returned, stopped));
    let report = load.stop().await;

    report.assert_no_failures();
    // After each switch, every new request is answered by the release just made live.
    for (release, from, until) in &served {
        assert_served_by(&report, *from, *until, release);
    }
    assert_eq!(
        project.running_releases(),
        [id.clone()],
        "only the live slot runs"
    );
    assert_eq!(project.status()["live"]["release"], id.as_str());
    eprintln!(
        "{} requests, {} ok, {} connections, over 20 releases",
        report.samples.len(),
        report.ok(),
        report.reconnects
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_request_in_flight_at_switch_completes_on_old_slot() {
    let project = Project::new("slow");
    let first = project.release_async().await;
    let listen = project.listen;
    let slow = tokio::spawn(async move {
        let answer = get(listen, "/slow?ms=3000").await;
        (answer, Instant::now())
    });
    // The slow request must be on the old slot before the release starts.
    let edge = project.edge_dir();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = tokio::process::Command::new(crate::harness::SHIPIT)
            .args(["edge", "status", "--json", "--dir"])
            .arg(&edge)
            .output()
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let in_flight = status["routes"][0]["in_flight"].as_u64().unwrap_or(0);
        if in_flight >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the edge: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = project.run_async(&["release", "--json"], &[]).await;
    let release_returned = Instant::now();
    assert!(out.status.success(), "release failed: {}", stderr(&out));

    let (answer, answered_at) = slow.await.unwrap();
    let (status, body) = answer.expect("the slow request completes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(release_of(&body).as_deref(), Some(first.as_str()), "{body}");
    assert!(
        answered_at <= release_returned,
        "the release returned before the old slot drained"
    );
}

#[tokio::test]
async fn the_release_has_the_edge_connect_to_the_new_slot_before_it_switches() {
    let project = Project::new("ahead");
    // The edge the first release starts logs its admin calls (it inherits the variable).
    let logged = [("RUST_LOG", "warn,shipit_edge::admin=info")];
    // The release the second run made.
    let mut second = String::new();
    for _ in 0..2 {
        let out = project.run_async(&["release", "--json"], &logged).await;
        assert_success(&out, "shipit release");
        second = json(&out)["serves"].as_str().unwrap().to_string();
    }
    let log = std::fs::read_to_string(project.edge_dir().join("edge.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let of_release = |needle: &str| {
        lines
            .iter()
            .position(|line| line.contains(needle) && line.contains(&format!("release={second}")))
    };
    let held = of_release("connection ahead of the next switch")
        .unwrap_or_else(|| panic!("the release made no `next` call for {second}:\n{log}"));
    assert!(lines[held].contains("held=true"), "{}", lines[held]);
    let switched = of_release(" switched ").expect("the switch is logged");
    assert!(
        held < switched,
        "the connection came after the switch:\n{log}"
    );
    // For the backend the switch named: the same service, slot and address.
    for field in ["service=", "slot=", "addr="] {
        let value = |line: &str| {
            line.split_whitespace()
                .find(|word| word.starts_with(field))
                .map(str::to_owned)
        };
        let named = value(lines[switched]).expect("the switch line names its backend");
        assert_eq!(value(lines[held]), Some(named), "{}", lines[held]);
    }
}
