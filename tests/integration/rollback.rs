//! Rollback under load brings the previous release back without a failed request.

use std::time::Instant;

use crate::harness::{Project, assert_success, json};
use crate::load::{Load, assert_served_by};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_under_load_drops_no_request() {
    let project = Project::new("rollback");
    let first = project.release_async().await;
    let second = project.release_async().await;
    assert_eq!(project.status()["live"]["release"], second.as_str());

    let load = Load::start(project.listen, 32);
    let started = Instant::now();
    let out = project.run_async(&["rollback", "--json"], &[]).await;
    let took = started.elapsed();
    let returned = Instant::now();
    assert_success(&out, "shipit rollback");
    let record = json(&out);
    // Fresh connections after the rollback reach the restored release.
    for _ in 0..20 {
        let (status, body) = crate::harness::get(project.listen, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            crate::load::release_of(&body).as_deref(),
            Some(first.as_str())
        );
    }
    let report = load.stop().await;

    report.assert_no_failures();
    assert_eq!(record["kind"], "rollback");
    assert_eq!(record["serves"], first.as_str());
    assert_served_by(&report, returned, Instant::now(), &first);
    assert_eq!(project.status()["live"]["release"], first.as_str());
    eprintln!("rollback took {} ms", took.as_millis());

    // Rolling back again goes to the release before `first`: there is none.
    let out = project.run(&["rollback"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        crate::harness::stderr(&out)
    );
}
