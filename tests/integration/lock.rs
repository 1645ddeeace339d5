//! Two releases of the same service on the same target never run at once.

use std::time::Duration;

use crate::harness::{Project, assert_success, stderr, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_concurrent_release_is_refused_with_the_holder() {
    let project = Project::new("lock");
    project.release_async().await;
    // The first release's candidate takes 3 s to start listening: it holds the lock in Verify.
    let mut cmd = tokio::process::Command::from(project.command(&["release"]));
    cmd.env("HELLO_STARTUP_MS", "3000");
    let first = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first_pid = first.id().unwrap();
    let lock = project
        .state_dir()
        .join(format!("targets/local/{}/lock", project.service));
    wait_until(
        "the first release to take the lock",
        Duration::from_secs(30),
        || std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("\"pid\"")),
    );

    let second = project.run_async(&["release"], &[]).await;
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains(&format!("pid {first_pid}")), "{err}");
    assert!(err.contains("on host"), "{err}");
    assert!(err.contains("since"), "{err}");

    let first = first.wait_with_output().await.unwrap();
    assert_success(&first, "the first release");
    // The refused release wrote no record: only the two real releases are in the history.
    assert_eq!(project.history().len(), 2);
}
