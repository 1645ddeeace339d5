//! Releases that must not go live: an unhealthy candidate, and Ctrl-C mid-release.

use std::time::{Duration, Instant};

use crate::harness::{Options, Project, stderr, wait_until};
use crate::load::{Load, assert_served_by};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_candidate_leaves_live_slot_serving() {
    let project = Project::with(
        "unhealthy",
        Options {
            health_timeout: "3s",
            ..Options::default()
        },
    );
    let first = project.release_async().await;
    let load = Load::start(project.listen, 32);
    let from = Instant::now();
    let out = project
        .run_async(&["release"], &[("HELLO_HEALTH", "fail")])
        .await;
    let report = load.stop().await;

    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 503: unhealthy: HELLO_HEALTH=<redacted>"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    report.assert_no_failures();
    assert_served_by(&report, from, Instant::now(), &first);
    assert_eq!(
        project.containers().len(),
        1,
        "the candidate was not removed"
    );
    assert_eq!(project.running_releases(), std::slice::from_ref(&first));
    let history = project.history();
    assert_eq!(
        history[0]["outcome"]["status"], "failed",
        "{:#}",
        history[0]
    );
    assert_eq!(history[1]["outcome"]["status"], "succeeded");
    // The app echoed its env value in its health answer: the record keeps the answer, with
    // the value hidden, as every output does.
    let cause = history[0]["outcome"]["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("HELLO_HEALTH=<redacted>") && !cause.contains("HELLO_HEALTH=fail"),
        "{cause}"
    );
}

/// Starts `shipit release` with a candidate that sleeps before it listens, and returns once
/// the candidate container exists: the release is then waiting in Verify.
fn release_stuck_in_verify(project: &Project) -> (tokio::process::Child, nix::unistd::Pid) {
    let mut cmd = tokio::process::Command::from(project.command(&["release"]));
    cmd.env("HELLO_STARTUP_MS", "60000");
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    wait_until("the candidate container", Duration::from_secs(60), || {
        project.containers().len() == 2
    });
    (child, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_during_release_removes_candidate() {
    let project = Project::new("ctrlc");
    let first = project.release_async().await;
    let (child, pid) = release_stuck_in_verify(&project);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().await.unwrap();

    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(
        project.containers().len(),
        1,
        "the candidate was left behind"
    );
    assert_eq!(project.status()["live"]["release"], first.as_str());
    let history = project.history();
    assert_eq!(
        history[0]["outcome"]["status"], "interrupted",
        "{:#}",
        history[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_killed_mid_verify_is_recovered_by_the_next() {
    let project = Project::new("crash");
    let first = project.release_async().await;
    let (child, pid) = release_stuck_in_verify(&project);
    // A crash: no cleanup runs. The candidate is left running, routed nowhere.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait_with_output().await.unwrap();
    assert_eq!(project.status()["live"]["release"], first.as_str());

    let out = project.run_async(&["release", "--json"], &[]).await;
    crate::harness::assert_success(&out, "the release after the crash");
    let err = stderr(&out);
    assert!(
        err.contains("recovered the lock left by a run that died"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    let second = crate::harness::json(&out)["serves"]
        .as_str()
        .unwrap()
        .to_string();

    // One live slot, the previous release stopped for rollback, and no orphan.
    assert_eq!(project.running_releases(), std::slice::from_ref(&second));
    assert_eq!(project.containers().len(), 2);
    let history = project.history();
    let statuses: Vec<&str> = history
        .iter()
        .map(|r| r["outcome"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["succeeded", "interrupted", "succeeded"],
        "{history:#?}"
    );
}
