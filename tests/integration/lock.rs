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

/// The holder record a run in another PID namespace, or one that reused a dead pid, shows:
/// this host, and a pid no process here has.
fn record_of_a_pid_not_running_here() -> String {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    format!(
        r#"{{"pid": 999999, "host": "{host}", "user": "ci", "since": "2026-11-22T10:00:00Z",
            "purpose": "release 20261122-100000-aaaa"}}"#
    )
}

#[test]
fn a_held_lock_is_never_broken_without_force_whatever_pid_it_records() {
    let project = Project::new("lockheld");
    let lock = project
        .state_dir()
        .join(format!("targets/local/{}/lock", project.service));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, record_of_a_pid_not_running_here()).unwrap();
    // Another process holds the flock, as a live release would.
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock(1) runs");
    let held = || {
        let out = project.run(&["lock", "status", "--json"]);
        out.status.success() && !crate::harness::json(&out)["holder"].is_null()
    };
    wait_until("the child to hold the lock", Duration::from_secs(10), held);

    let out = project.run(&["lock", "release"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    for needle in ["pid 999999", "since 2026-11-22T10:00:00Z", "--force"] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    assert!(held(), "the refused release left the lock held");
    // A release is refused too, naming the same holder.
    let out = project.run(&["release"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("pid 999999"), "{}", stderr(&out));

    let out = project.run(&["lock", "release", "--force", "--json"]);
    assert_success(&out, "shipit lock release --force");
    let report = crate::harness::json(&out);
    assert_eq!(report["released"], true);
    assert_eq!(report["holder"]["pid"], 999999);
    assert!(!held(), "a forced release frees the lock");
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_stale_lock_record_is_cleared_without_force() {
    let project = Project::new("lockstale");
    let lock = project
        .state_dir()
        .join(format!("targets/local/{}/lock", project.service));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // A run that died: its record stays, its flock went with it.
    std::fs::write(&lock, record_of_a_pid_not_running_here()).unwrap();
    let out = project.run(&["lock", "status", "--json"]);
    assert_success(&out, "shipit lock status");
    assert!(
        crate::harness::json(&out)["holder"].is_null(),
        "no flock: free"
    );

    let out = project.run(&["lock", "release"]);
    assert_success(&out, "shipit lock release on a stale lock");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cleared the record left by a run that died"),
        "{text}"
    );
    assert!(text.contains("pid 999999"), "{text}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let project = Project::new("umask");
    let release = project.command(&["release"]);
    // The same command, under umask 000.
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "umask 000 && exec \"$@\"", "sh"])
        .arg(release.get_program())
        .args(release.get_args());
    for (key, value) in release.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().await.unwrap();
    assert_success(&out, "shipit release under umask 000");

    let service_dir = project
        .state_dir()
        .join(format!("targets/local/{}", project.service));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut checked = Vec::new();
    let mut pending = vec![project.state_dir().join("targets")];
    while let Some(dir) = pending.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                checked.push(path);
            }
        }
    }
    assert!(checked.contains(&service_dir.join("lock")), "{checked:?}");
    assert!(
        checked
            .iter()
            .any(|p| p.starts_with(service_dir.join("releases"))),
        "{checked:?}"
    );
}
