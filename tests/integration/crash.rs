//! Crashes at every point of a release, under load: the `shipit` binary of the tests is built
//! with the `fault-injection` feature, and `SHIPIT_FAULT=<point>` makes it SIGKILL itself
//! there. Whatever the point, exactly one release answers and no request fails, the next
//! release converges (no orphan container, true records, the live container restarts on
//! its own), and `status` tells what is live. A split whose release died is withdrawn by the
//! edge itself when its lease lapses.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use shipit_edge::DEFAULT_CANDIDATE_LEASE;
use shipit_pipeline::fault::{FAULT_ENV, FaultPoint};

use crate::canary::{candidate, configure_target, release_baking, request};
use crate::harness::{Project, assert_success, json, stderr};
use crate::load::{Load, Report, assert_served_by};

/// How long after its lease a dead release's split may still take requests: the edge
/// withdraws it at the lease's end; this covers a busy machine.
const LEASE_SLACK: Duration = Duration::from_secs(1);

/// The restart policy of the container that runs `release`.
fn restart_policy(project: &Project, release: &str) -> String {
    let ids = crate::harness::docker(&[
        "ps".to_string(),
        "-aq".into(),
        "--filter".into(),
        format!("label=shipit.service={}", project.service),
        "--filter".into(),
        format!("label=shipit.release={release}"),
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(
        ids.len(),
        1,
        "one container runs release {release}: {ids:?}"
    );
    crate::harness::docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}}",
        ids[0],
    ])
    .trim()
    .to_string()
}

/// Sends `count` fresh requests and checks that each was answered 200 by `release`.
async fn all_answered_by(project: &Project, release: &str, count: usize) {
    for _ in 0..count {
        let answer = request(project.listen, "/", &[]).await.expect("answered");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.release.as_deref(), Some(release), "{answer:?}");
    }
}

/// How many of the load's requests started in `[from, until)`.
fn started_between(report: &Report, from: Instant, until: Instant) -> usize {
    report
        .samples
        .iter()
        .filter(|s| s.started >= from && s.started < until)
        .count()
}

/// Whether a run killed at `point` had already made its release live.
fn went_live(point: FaultPoint) -> bool {
    matches!(
        point,
        FaultPoint::AfterSwitch | FaultPoint::MidDrain | FaultPoint::MidRetire
    )
}

/// Releases once, then releases again under load with `SHIPIT_FAULT=<point>`, and checks
/// what the crash left and what the next release makes of it.
async fn crash_converges(point: FaultPoint) {
    let project = Project::new(&format!("crash-{point}"));
    if point == FaultPoint::MidBake {
        configure_target(&project, "shift = \"canary:25:60s\"\n");
    }
    let first = project.release_async().await;
    let load = Load::start(project.listen, 8);

    let out = project
        .run_async(&["release", "--json"], &[(FAULT_ENV, point.name())])
        .await;
    let killed_at = Instant::now();
    assert_eq!(
        out.status.signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32),
        "{point}: shipit did not kill itself at the point ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let crashed = project.history()[0].clone();
    assert_eq!(crashed["outcome"]["status"], "in_progress", "{crashed:#}");
    let killed = crashed["id"].as_str().unwrap().to_string();
    assert_ne!(killed, first);
    let live = if went_live(point) { &killed } else { &first };

    // From the crash on, one release answers: the live one. A split a dead release left
    // lapses with its lease.
    let settled = if point == FaultPoint::MidBake {
        let limit = killed_at + DEFAULT_CANDIDATE_LEASE + LEASE_SLACK;
        while candidate(&project).await.is_some() {
            assert!(
                Instant::now() < limit,
                "the split of the dead release outlived its lease by more than {LEASE_SLACK:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Instant::now()
    } else {
        assert_eq!(candidate(&project).await, None, "{point}");
        killed_at
    };
    all_answered_by(&project, live, 50).await;
    assert_eq!(
        project.status()["live"]["release"],
        live.as_str(),
        "{point}"
    );
    // A live slot restarts on its own, even when its run died right after the switch.
    assert_eq!(restart_policy(&project, live), "unless-stopped", "{point}");

    let next_started = Instant::now();
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, &format!("the release after a crash {point}"));
    let next = json(&out)["serves"].as_str().unwrap().to_string();
    let report = load.stop().await;

    report.assert_no_failures();
    assert!(
        started_between(&report, settled, next_started) > 0,
        "{point}: no request of the load was measured between the crash and the next release"
    );
    assert_served_by(&report, settled, next_started, live);

    // Converged: the new release live and restarting on its own, the one it replaced
    // stopped for rollback, nothing else.
    assert_eq!(project.running_releases(), std::slice::from_ref(&next));
    assert_eq!(
        project.containers().len(),
        2,
        "{point}: an orphan container is left: {:?}",
        project.containers()
    );
    assert_eq!(restart_policy(&project, &next), "unless-stopped");
    assert_eq!(candidate(&project).await, None);
    let status = project.status();
    assert_eq!(status["live"]["release"], next.as_str(), "{status}");
    assert!(status["staged"].is_null(), "{status}");
    all_answered_by(&project, &next, 20).await;

    // The records are true: the dead run's release went live, or it was interrupted.
    let history = project.history();
    let record = history.iter().find(|r| r["id"] == killed.as_str()).unwrap();
    let want = if went_live(point) {
        "succeeded"
    } else {
        "interrupted"
    };
    assert_eq!(record["outcome"]["status"], want, "{point}: {record:#}");
    let statuses: Vec<&str> = history
        .iter()
        .map(|r| r["outcome"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", want, "succeeded"], "{point}");
    if went_live(point) {
        assert!(
            stderr(&out).contains(&format!(
                "the run of release {killed} died after its switch"
            )),
            "{}",
            stderr(&out)
        );
    }
    eprintln!(
        "crash {point}: {} requests under load, all answered",
        report.samples.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_after_launch_converges() {
    crash_converges(FaultPoint::AfterLaunch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_mid_verify_converges() {
    crash_converges(FaultPoint::MidVerify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_mid_bake_converges() {
    crash_converges(FaultPoint::MidBake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_after_switch_converges() {
    crash_converges(FaultPoint::AfterSwitch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_mid_drain_converges() {
    crash_converges(FaultPoint::MidDrain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_mid_retire_converges() {
    crash_converges(FaultPoint::MidRetire).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_of_a_killed_release_is_withdrawn_when_its_lease_lapses() {
    let project = Project::new("leasekill");
    configure_target(&project, "shift = \"canary:25:60s\"\n");
    let first = project.release_async().await;
    let load = Load::start(project.listen, 8);
    let (child, pid, canary) = release_baking(&project).await;
    // The split is real: fresh clients reach the canary.
    let mut reached = false;
    for _ in 0..200 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        if answer.release.as_deref() == Some(canary.as_str()) {
            reached = true;
            break;
        }
    }
    assert!(
        reached,
        "no fresh client reached the canary during the split"
    );
    // The lease is in routes.json, so a restarted edge would keep it.
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.edge_dir().join("routes.json")).unwrap())
            .unwrap();
    let saved = &routes["routes"][0]["candidate"];
    assert_eq!(saved["backend"]["release"], canary.as_str(), "{routes:#}");
    assert_eq!(
        saved["lease"]["lease_ms"],
        u64::try_from(DEFAULT_CANDIDATE_LEASE.as_millis()).unwrap(),
        "{routes:#}"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait_with_output().await.unwrap();
    let killed_at = Instant::now();
    let limit = killed_at + DEFAULT_CANDIDATE_LEASE + LEASE_SLACK;
    while candidate(&project).await.is_some() {
        assert!(
            Instant::now() < limit,
            "the split outlived its lease by more than {LEASE_SLACK:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let withdrawn = Instant::now();
    eprintln!(
        "the edge withdrew the dead release's split {:?} after the kill (lease {DEFAULT_CANDIDATE_LEASE:?})",
        withdrawn - killed_at
    );
    // Past the lease and its slack, fresh clients keep landing on the live release only.
    let mut probes = 0;
    while Instant::now() < limit + Duration::from_millis(500) && probes < 10_000 {
        all_answered_by(&project, &first, 1).await;
        probes += 1;
    }
    let until = Instant::now();
    let report = load.stop().await;

    report.assert_no_failures();
    assert!(
        report
            .samples
            .iter()
            .any(|s| s.started < killed_at && s.release.as_deref() == Some(canary.as_str())),
        "the load never reached the canary before the kill"
    );
    assert!(
        started_between(&report, limit, until) > 0,
        "no load after the lease"
    );
    assert_served_by(&report, withdrawn, until, &first);
    let routes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.edge_dir().join("routes.json")).unwrap())
            .unwrap();
    assert!(
        routes["routes"][0].get("candidate").is_none(),
        "the withdrawal is saved: {routes:#}"
    );
    assert_eq!(project.status()["live"]["release"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn candidate_that_crashes_on_boot_fails_verify_with_its_logs() {
    let project = Project::new("bootcrash");
    let config = std::fs::read_to_string(&project.config).unwrap();
    let knob = "HELLO_STARTUP_MS = \"${HELLO_STARTUP_MS:-0}\"\n";
    assert!(config.contains(knob), "{config}");
    let config = config.replace(knob, &format!("{knob}HELLO_EXIT = \"${{HELLO_EXIT:-}}\"\n"));
    std::fs::write(&project.config, config).unwrap();
    let first = project.release_async().await;
    // The crash races the launch's look at the container: several tries meet both orders.
    for _ in 0..3 {
        let out = project
            .run_async(&["release", "--json"], &[("HELLO_EXIT", "3")])
            .await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains("exited with code 3"), "{err}");
        assert!(
            err.contains("hello: HELLO_EXIT=<redacted>, exiting before listening"),
            "the container's last logs are shown: {err}"
        );
        assert_eq!(json(&out)["error"]["exit_code"], 5);
    }
    assert_eq!(project.running_releases(), std::slice::from_ref(&first));
    assert_eq!(project.containers().len(), 1, "the candidates were removed");
}
