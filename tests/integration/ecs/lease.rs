//! The SSM lock's lease, with the real binary: a run that dies stops renewing it, and the
//! next release takes the lock over once the lease has run out, naming the dead holder.

use std::os::unix::process::ExitStatusExt;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_whose_run_died_is_taken_over_once_its_lease_runs_out() {
    let project = EcsProject::new("lease", "lock_lease = \"8s\"\n").await;
    // The release dies once its candidate runs: no cleanup, its lock stays, not renewed.
    let out = project
        .command(&["release"])
        .env("SHIPIT_FAULT", "after-launch")
        .output()
        .await
        .expect("shipit runs");
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    let left = project
        .infra
        .parameter(&project.lock_name())
        .await
        .expect("the dead run's lock is left");
    let left: serde_json::Value = serde_json::from_str(&left).unwrap();
    let pid = left["pid"].as_u64().expect("the holder's pid");
    let expires: jiff::Timestamp = left["expires"]
        .as_str()
        .expect("a leased lock says until when")
        .parse()
        .unwrap();

    // Before the lease runs out, a release is refused and told when it will.
    let out = project.run(&["release"]).await;
    assert!(
        jiff::Timestamp::now() < expires,
        "the refused run took longer than the lease"
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains(&format!("pid {pid}")) && log.contains("which runs out at"),
        "{log}"
    );

    // Once it has run out, the next release takes the lock over with a warning naming the
    // dead run, and finishes.
    crate::aws::wait_async(
        "the dead run's lease to run out",
        Duration::from_secs(30),
        || async { jiff::Timestamp::now() > expires },
    )
    .await;
    let out = project.run(&["release", "--json"]).await;
    ok(&out, "the release after the lease ran out");
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "recovered the lock left by a run that died: pid {pid}"
        )),
        "{log}"
    );
    let record = json(&out);
    assert_finished(&project, record["serves"].as_str().unwrap(), "succeeded").await;
    let names = project
        .infra
        .parameters_under(&format!("{}-takeover-", project.lock_name()))
        .await;
    assert!(names.is_empty(), "the takeover marker is gone: {names:?}");
}
