//! A live slot that the engine restarts behind shipit's back serves again on the same
//! address within seconds, and `shipit status` tells the truth meanwhile: health, container
//! state, restarts, and the candidate beside the live slot (a split or a preview).

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::canary::configure_target;
use crate::harness::{Project, assert_success, get, json};
use crate::load::Load;

/// How long the app takes to listen after each start in the status test: the window in
/// which the restarted container runs but does not answer, wide enough for `status` to be
/// asked within it even on a busy machine.
const STARTUP: Duration = Duration::from_secs(4);
/// The bound on how long after the engine restarted the container the edge answers 200
/// again.
const RESUME_BOUND: Duration = Duration::from_secs(2);

fn inspect(container: &str, format: &str) -> String {
    crate::harness::docker(&["inspect", "-f", format, container])
        .trim()
        .to_string()
}

async fn status(project: &Project) -> serde_json::Value {
    let out = project.run_async(&["status", "--json"], &[]).await;
    assert_success(&out, "shipit status");
    json(&out)
}

/// Kills the main process of the project's only container, as a crash would (the engine
/// restarts it by its policy), and waits until the engine has: when it saw the restart, and
/// the restarted process's start time by the engine's clock.
async fn kill_and_await_restart(container: &str) -> (Instant, Timestamp) {
    assert_eq!(inspect(container, "{{.RestartCount}}"), "0");
    let pid: i32 = inspect(container, "{{.State.Pid}}").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    while inspect(container, "{{.RestartCount}} {{.State.Running}}") != "1 true" {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the engine did not restart the killed container within 20 s: {}",
            inspect(container, "{{json .State}}")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = Instant::now();
    let started: Timestamp = inspect(container, "{{.State.StartedAt}}").parse().unwrap();
    eprintln!(
        "killed → restart seen after {:?}",
        seen.duration_since(killed)
    );
    (seen, started)
}

/// Releases `project` with the app taking `startup_ms` to listen after each start; the
/// release and the id of its one container.
async fn release_with_startup(project: &Project, startup_ms: u128) -> (String, String) {
    let startup = startup_ms.to_string();
    let out = project
        .run_async(&["release", "--json"], &[("HELLO_STARTUP_MS", &startup)])
        .await;
    assert_success(&out, "shipit release");
    let release = json(&out)["serves"].as_str().unwrap().to_string();
    let containers = project.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    (release, containers[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_live_app_serves_again_on_its_address_within_two_seconds_of_its_restart() {
    let project = Project::new("restart");
    let (release, container) = release_with_startup(&project, 0).await;
    let ports = "{{json .NetworkSettings.Ports}}";
    let published = inspect(&container, ports);

    let load = Load::start(project.listen, 4);
    let (_, restarted_at) = kill_and_await_restart(&container).await;
    // 200s come back on the address the edge already routes to.
    let resumed_at = loop {
        if let Ok((200, body)) = get(project.listen, "/").await {
            assert!(body.contains(&release), "{body}");
            break Timestamp::now();
        }
        let after = Timestamp::now().duration_since(restarted_at);
        assert!(
            after < jiff::SignedDuration::try_from(RESUME_BOUND).unwrap(),
            "no 200 within {RESUME_BOUND:?} of the engine's restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let resumed = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(project.listen, "/").await.map(|a| a.0), Ok(200));
    }
    // The load's own clients too, however slow the machine is.
    assert!(
        load.answered_after_now(Duration::from_secs(10)).await,
        "the load got no 2xx within 10 s after 200s resumed"
    );
    let report = load.stop().await;
    let took = resumed_at.duration_since(restarted_at);
    assert!(
        took < jiff::SignedDuration::try_from(RESUME_BOUND).unwrap(),
        "200s resumed {took:?} after the restart"
    );
    let late: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.started >= resumed && s.failure.is_some())
        .collect();
    assert!(
        late.is_empty(),
        "requests failed after 200s resumed: {late:#?}"
    );
    assert!(
        report
            .samples
            .iter()
            .any(|s| s.started >= resumed && s.failure.is_none()),
        "the load sent no request after 200s resumed"
    );
    assert_eq!(
        inspect(&container, ports),
        published,
        "the restarted container moved to another port"
    );

    let after = status(&project).await;
    let health = &after["health"];
    assert_eq!(health["healthy"], true, "{after}");
    assert_eq!(health["restarts"], 1, "{after}");
    assert!(health["unhealthy_since"].is_null(), "{after}");
    assert!(
        health["failed_requests"].as_u64().unwrap() > 0,
        "the edge counted no failed request while the slot was down: {after}"
    );
    eprintln!(
        "200s {took:?} after the engine's restart; {} requests, {} failed (all before)",
        report.samples.len(),
        report.failures().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_tells_the_truth_while_a_restarted_live_app_does_not_answer() {
    let project = Project::new("restartst");
    let (release, container) = release_with_startup(&project, STARTUP.as_millis()).await;
    let before = status(&project).await;
    assert_eq!(before["health"]["healthy"], true, "{before}");
    assert_eq!(before["health"]["restarts"], 0, "{before}");

    // Traffic meets the dead slot, so the edge knows since when it fails.
    let load = Load::start(project.listen, 2);
    let (restarted_seen, _) = kill_and_await_restart(&container).await;
    let (during, text) = tokio::join!(status(&project), project.run_async(&["status"], &[]));
    let asked_within = restarted_seen.elapsed();
    load.stop().await;
    assert!(
        asked_within < STARTUP,
        "status took {asked_within:?}, longer than the app's {STARTUP:?} start: it proves nothing"
    );
    let health = &during["health"];
    assert_eq!(health["healthy"], false, "{during}");
    assert_eq!(health["state"], "running", "{during}");
    assert_eq!(health["restarts"], 1, "{during}");
    let since: Timestamp = health["unhealthy_since"]
        .as_str()
        .unwrap_or_else(|| panic!("no unhealthy_since: {during}"))
        .parse()
        .unwrap();
    assert!(since <= Timestamp::now(), "{during}");
    assert!(health["failed_requests"].as_u64().unwrap() > 0, "{during}");
    assert_eq!(during["live"]["release"], release.as_str(), "{during}");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("health     UNHEALTHY since"), "{text}");
    assert!(
        text.contains("container  running, restarted once by the engine"),
        "{text}"
    );

    // Once the app listens again, status says it is healthy, without a stale "since".
    let started = Instant::now();
    loop {
        let seen = status(&project).await;
        if seen["health"]["healthy"] == true {
            assert!(seen["health"]["unhealthy_since"].is_null(), "{seen}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "status never saw the restarted app healthy: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_the_split_then_the_preview_candidate() {
    let project = Project::new("statuscand");
    configure_target(&project, "shift = \"canary:25:60s\"\n");
    let first = project.release_async().await;
    let quiet = status(&project).await;
    assert!(quiet["candidate"].is_null(), "{quiet}");

    let child = tokio::process::Command::from(project.command(&["release", "--json"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    let started = Instant::now();
    let during = loop {
        let seen = status(&project).await;
        if seen["candidate"]["percent"] == 25 {
            break seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "status showed no 25% split within 60 s; last: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let canary = during["candidate"]["release"].as_str().unwrap().to_string();
    assert_ne!(canary, first);
    assert_eq!(during["candidate"]["slot"], "green", "{during}");
    assert_eq!(during["live"]["release"], first.as_str(), "{during}");
    let text = project.run_async(&["status"], &[]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "candidate  release {canary} in the green slot, split: 25% of new clients"
        )),
        "{text}"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130));
    let after = status(&project).await;
    assert!(after["candidate"].is_null(), "{after}");

    let out = project
        .run_async(&["release", "--no-promote", "--json"], &[])
        .await;
    assert_success(&out, "shipit release --no-promote");
    let staged = json(&out)["id"].as_str().unwrap().to_string();
    let shown = status(&project).await;
    assert_eq!(shown["candidate"]["release"], staged.as_str(), "{shown}");
    assert_eq!(shown["candidate"]["percent"], 0, "{shown}");
    let text = project.run_async(&["status"], &[]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "candidate  release {staged} in the green slot, preview with the header `X-Shipit-Slot: green`"
        )),
        "{text}"
    );
}
