//! Image hygiene on the local target: a service keeps its newest `keep_images` images after
//! each release, `history` marks the releases that can still be rolled back to, and
//! `rollback --to` brings any of them back (and refuses, clearly, one whose image is gone).

use std::collections::BTreeSet;

use serde_json::Value;
use shipit_pipeline::config::DEFAULT_KEEP_IMAGES;

use crate::harness::{Project, assert_success, json, stderr};

/// `shipit release --json` with `build.txt` set to `text`: (release id, image id).
fn release_build(project: &Project, context: &std::path::Path, text: &str) -> (String, String) {
    std::fs::write(context.join("build.txt"), text).unwrap();
    let out = project.run(&["release", "--json"]);
    assert_success(&out, &format!("shipit release of {text:?}"));
    let record = json(&out);
    assert_eq!(record["image_reused"], false, "{record}");
    (
        record["serves"].as_str().unwrap().to_string(),
        record["image_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_releases_keep_five_images_and_roll_back_to_the_third_newest() {
    let project = Project::new("images");
    let context = project.own_context();
    let keep = usize::try_from(DEFAULT_KEEP_IMAGES).unwrap();
    let mut releases = Vec::new();
    for n in 1..=10 {
        releases.push(release_build(&project, &context, &format!("build {n}\n")));
    }
    let built: BTreeSet<&str> = releases.iter().map(|(_, image)| image.as_str()).collect();
    assert_eq!(built.len(), 10, "ten distinct builds make ten images");

    // Exactly the newest five images of the service are left.
    let newest: BTreeSet<String> = releases[10 - keep..]
        .iter()
        .map(|(_, image)| image.clone())
        .collect();
    let left: BTreeSet<String> = project.images().into_iter().collect();
    assert_eq!(left, newest, "images left after ten releases");

    // history marks them: the newest is live, the next four can be rolled back to, the
    // older five cannot.
    let history = project.history();
    let marks: Vec<(&str, &str, bool)> = history
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["rollback"].as_str().unwrap_or("null"),
                r["can_roll_back_to"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for (i, (id, _)) in releases.iter().rev().enumerate() {
        expected.push(match i {
            0 => (id.as_str(), "live", false),
            i if i < keep => (id.as_str(), "available", true),
            _ => (id.as_str(), "image_gone", false),
        });
    }
    assert_eq!(marks, expected);
    let out = project.run(&["history"]);
    assert_success(&out, "shipit history");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let column = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for {id}:\n{text}"))
            .split_whitespace()
            .nth(7)
            .unwrap()
            .to_string()
    };
    assert!(text.lines().next().unwrap().contains("ROLLBACK"), "{text}");
    assert_eq!(column(&releases[9].0), "live", "{text}");
    assert_eq!(column(&releases[7].0), "yes", "{text}");
    assert_eq!(column(&releases[0].0), "gone", "{text}");

    // A release whose image was pruned: refused before anything changes, naming it.
    let oldest = &releases[0].0;
    let out = project.run(&["rollback", "--to", oldest, "--json"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let error = &json(&out)["error"];
    let cause = error["cause"].as_str().unwrap();
    assert!(
        cause.contains(oldest.as_str()) && cause.contains("no longer on"),
        "{error}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("shipit history"),
        "{error}"
    );
    assert_eq!(project.status()["live"]["release"], releases[9].0.as_str());

    // The third-newest is still there: it comes back, and answers.
    let third = &releases[7].0;
    let out = project.run(&["rollback", "--to", third, "--json"]);
    assert_success(&out, "shipit rollback --to the third-newest");
    let record = json(&out);
    assert_eq!(record["kind"], "rollback");
    assert_eq!(record["serves"], third.as_str());
    assert_eq!(record["image_id"], releases[7].1.as_str());
    let (status, body) = crate::harness::get(project.listen, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        crate::load::release_of(&body).as_deref(),
        Some(third.as_str()),
        "{body}"
    );
    assert_eq!(project.status()["live"]["release"], third.as_str());
    let history = project.history();
    let mark_of = |id: &str| -> Value {
        history
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["rollback"].clone())
            .unwrap()
    };
    assert_eq!(mark_of(third), "live");
    assert_eq!(mark_of(&releases[9].0), "available");
    // The rollback removed no image the history still marks available.
    assert_eq!(project.images().len(), keep);
}

#[test]
fn rollback_to_a_release_that_never_went_live_is_refused() {
    let project = Project::new("images-refuse");
    let out = project.run(&["release", "--json"]);
    assert_success(&out, "shipit release");
    let live = json(&out)["serves"].as_str().unwrap().to_string();
    for (to, says) in [
        (live.as_str(), "already live"),
        ("20000101-000000-0000", "no release 20000101-000000-0000"),
    ] {
        let out = project.run(&["rollback", "--to", to, "--json"]);
        assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
        let error = &json(&out)["error"];
        assert!(error["cause"].as_str().unwrap().contains(says), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_rollback_past_the_kept_images_is_refused_and_changes_nothing() {
    let project = Project::new("walkback");
    crate::canary::configure_target(&project, "keep_images = 2\n");
    let context = project.own_context();
    let mut releases = Vec::new();
    for n in 1..=4 {
        releases.push(release_build(&project, &context, &format!("build {n}\n")).0);
    }
    // The newest two images stay: the fourth (live) and the third (its rollback).
    let out = project.run(&["rollback", "--json"]);
    assert_success(&out, "the first rollback, to the third release");
    assert_eq!(json(&out)["serves"], releases[2].as_str());

    // The third release's own previous is the second, whose image was pruned: a second plain
    // rollback is refused as nothing to roll back to, and the third stays live.
    let out = project.run(&["rollback", "--json"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&releases[1]) && err.contains("shipit history"),
        "{err}"
    );
    let status = project.run(&["status", "--json"]);
    assert_success(&status, "shipit status");
    assert_eq!(json(&status)["live"]["release"], releases[2].as_str());
}
