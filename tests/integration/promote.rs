//! `release --no-promote` and `promote`: a verified release staged beside the live one,
//! reachable for preview only, then made live; and what becomes of a staged release that a
//! later release replaces.

use crate::canary::{configure_target, request};
use crate::harness::{Project, assert_success, json, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_promote_stages_candidate_for_preview_then_promote_makes_it_live() {
    let project = Project::new("promote");
    let preview_host = format!("preview.{}.test", project.service);
    configure_target(&project, &format!("preview_host = \"{preview_host}\"\n"));
    let first = project.release_async().await;

    let out = project
        .run_async(&["release", "--no-promote", "--json"], &[])
        .await;
    assert_success(&out, "shipit release --no-promote");
    let staged = json(&out);
    let id = staged["id"].as_str().unwrap().to_string();
    let slot = staged["slot"].as_str().unwrap().to_string();
    assert_eq!(staged["outcome"]["status"], "staged", "{staged}");
    let preview = staged["outcome"]["preview"].as_str().unwrap();
    assert!(
        preview.contains(&format!("X-Shipit-Slot: {slot}")),
        "{preview}"
    );
    assert!(preview.contains(&preview_host), "{preview}");

    // Normal traffic stays on the live release; the pin and the preview host reach the
    // staged one.
    for _ in 0..20 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        assert_eq!(answer.release.as_deref(), Some(first.as_str()));
        assert_eq!(answer.cookie, None, "no split, so no sticky cookie");
        let pinned = request(project.listen, "/", &[("x-shipit-slot", slot.as_str())])
            .await
            .unwrap();
        assert_eq!(pinned.release.as_deref(), Some(id.as_str()));
        let host = request(project.listen, "/", &[("host", preview_host.as_str())])
            .await
            .unwrap();
        assert_eq!(host.release.as_deref(), Some(id.as_str()));
    }
    let status = project.status();
    assert_eq!(status["live"]["release"], first.as_str());
    assert_eq!(status["staged"]["release"], id.as_str(), "{status}");
    assert_eq!(status["staged"]["slot"], slot.as_str());

    let out = project.run_async(&["promote", "--json"], &[]).await;
    assert_success(&out, "shipit promote");
    let promoted = json(&out);
    assert_eq!(promoted["id"], id.as_str());
    assert_eq!(promoted["outcome"]["status"], "succeeded");
    assert_eq!(promoted["previous"], first.as_str());
    for _ in 0..20 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        assert_eq!(answer.release.as_deref(), Some(id.as_str()));
    }
    let status = project.status();
    assert_eq!(status["live"]["release"], id.as_str());
    assert!(status["staged"].is_null(), "{status}");
    assert_eq!(project.running_releases(), std::slice::from_ref(&id));

    // The history holds one record for it: staged, then promoted, with both runs' phases.
    let record = project
        .history()
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(record["outcome"]["status"], "succeeded");
    let phases: Vec<&str> = record["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    for phase in ["build", "verify", "stage", "shift", "retire"] {
        assert!(phases.contains(&phase), "{phases:?}");
    }
    assert_eq!(
        phases.iter().filter(|p| **p == "verify").count(),
        2,
        "verified when staged and again when promoted: {phases:?}"
    );

    // Nothing is staged any more, and a rollback after a promotion restores the first.
    let out = project.run_async(&["promote"], &[]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to promote"),
        "{}",
        stderr(&out)
    );
    let out = project.run_async(&["rollback", "--json"], &[]).await;
    assert_success(&out, "shipit rollback");
    assert_eq!(json(&out)["serves"], first.as_str());
    let answer = request(project.listen, "/", &[]).await.unwrap();
    assert_eq!(answer.release.as_deref(), Some(first.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_replaces_a_staged_candidate_and_marks_it_superseded() {
    let project = Project::new("supersede");
    let first = project.release_async().await;
    let out = project
        .run_async(&["release", "--no-promote", "--json"], &[])
        .await;
    assert_success(&out, "shipit release --no-promote");
    let staged = json(&out)["id"].as_str().unwrap().to_string();

    let next = project.release_async().await;
    assert_ne!(next, staged);
    let answer = request(project.listen, "/", &[]).await.unwrap();
    assert_eq!(answer.release.as_deref(), Some(next.as_str()));
    let record = project
        .history()
        .into_iter()
        .find(|r| r["id"] == staged.as_str())
        .unwrap();
    assert_eq!(record["outcome"]["status"], "superseded", "{record}");
    assert_eq!(record["outcome"]["by"], next.as_str());
    assert_eq!(project.running_releases(), std::slice::from_ref(&next));

    let out = project.run_async(&["promote"], &[]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shipit release --no-promote"),
        "{}",
        stderr(&out)
    );
    assert_ne!(first, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_promote_without_a_live_release_fails_and_leaves_nothing() {
    let project = Project::new("nolive");
    let out = project.run_async(&["release", "--no-promote"], &[]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing is live yet"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("without --no-promote"),
        "{}",
        stderr(&out)
    );
    assert!(project.running_releases().is_empty());
    assert_eq!(project.history()[0]["outcome"]["status"], "failed");
}
