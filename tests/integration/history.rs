//! The history is durable, and a record file that does not parse blocks nothing: it is moved
//! to `releases/corrupt/` with a warning, and `history`, `release` and `rollback` go on.

use std::path::PathBuf;

use crate::harness::{Project, assert_success, json};

fn releases_dir(project: &Project) -> PathBuf {
    project
        .state_dir()
        .join(format!("targets/local/{}/releases", project.service))
}

/// What a power loss can leave beside the good records: an empty file and a cut one.
fn break_records(project: &Project, whole: &[u8]) {
    let dir = releases_dir(project);
    std::fs::write(dir.join("20990101-000000-empt.json"), "").unwrap();
    std::fs::write(
        dir.join("20990101-000000-cut0.json"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_parse_are_set_aside_and_block_nothing() {
    let project = Project::new("history");
    let first = project.release_async().await;
    let second = project.release_async().await;
    let dir = releases_dir(&project);
    let whole = std::fs::read(dir.join(format!("{second}.json"))).unwrap();
    break_records(&project, &whole);

    let out = project.run(&["history", "--json"]);
    assert_success(&out, "shipit history with two broken records");
    let listed: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [second.clone(), first.clone()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("20990101-000000-empt.json") && err.contains("corrupt"),
        "the move is reported: {err}"
    );
    for name in ["20990101-000000-empt.json", "20990101-000000-cut0.json"] {
        assert!(!dir.join(name).exists(), "{name} left the records");
        assert!(
            dir.join("corrupt").join(name).exists(),
            "{name} is kept aside"
        );
    }

    // Broken again before a release, then before a rollback: neither is blocked.
    break_records(&project, &whole);
    let third = project.release_async().await;
    break_records(&project, &whole);
    let out = project.run_async(&["rollback", "--json"], &[]).await;
    assert_success(&out, "shipit rollback with two broken records");
    assert_eq!(json(&out)["serves"], second.as_str());
    assert_eq!(project.status()["live"]["release"], second.as_str());
    let kinds: Vec<String> = project
        .history()
        .iter()
        .map(|r| format!("{} {}", r["kind"], r["outcome"]["status"]))
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(project.history().iter().any(|r| r["id"] == third.as_str()));
}
