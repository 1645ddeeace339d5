use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::{repository, retention};
use crate::history::{Kind, Outcome, ReleaseRecord};

/// A record of `id` that ran image `sha256:<image>`, live after `previous`.
fn record(id: &str, image: &str, previous: Option<&str>, outcome: Outcome) -> ReleaseRecord {
    ReleaseRecord {
        id: id.into(),
        kind: Kind::Release,
        service: "hello".into(),
        target: "local".into(),
        serves: id.into(),
        slot: None,
        image: Some("hello:untracked".into()),
        image_id: Some(format!("sha256:{image}")),
        handle: None,
        version: "untracked".into(),
        revision: None,
        modules: BTreeMap::new(),
        image_reused: false,
        previous: previous.map(str::to_string),
        user: "ana".into(),
        host: "build-1".into(),
        started_at: Timestamp::UNIX_EPOCH,
        finished_at: None,
        phases: Vec::new(),
        shift_steps: Vec::new(),
        warmup: None,
        outcome,
    }
}

/// Ten succeeded releases r1..r10 of images i1..i10, newest first, each live after the one
/// before.
fn ten_releases() -> Vec<ReleaseRecord> {
    (1..=10)
        .rev()
        .map(|n| {
            let previous = (n > 1).then(|| format!("r{}", n - 1));
            record(
                &format!("r{n}"),
                &format!("i{n}"),
                previous.as_deref(),
                Outcome::Succeeded,
            )
        })
        .collect()
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("sha256:{n}")).collect()
}

#[test]
fn keeps_the_newest_images_and_prunes_the_rest() {
    let retention = retention(&ten_releases(), Some("r10"), 5, &BTreeSet::new());
    assert_eq!(retention.keep, ids(&["i10", "i9", "i8", "i7", "i6"]));
    let pruned: BTreeSet<String> = retention.prune.keys().cloned().collect();
    assert_eq!(pruned, ids(&["i1", "i2", "i3", "i4", "i5"]));
    assert_eq!(retention.prune["sha256:i3"], "r3");
}

#[test]
fn live_and_rollback_images_are_kept_beyond_the_count() {
    // r3 was rolled back to: it is live, and r2 is what `shipit rollback` brings back.
    let mut records = ten_releases();
    let mut rollback = record("b1", "i3", Some("r10"), Outcome::Succeeded);
    rollback.kind = Kind::Rollback;
    rollback.serves = "r3".into();
    records.insert(0, rollback);
    let retention = retention(&records, Some("r3"), 2, &BTreeSet::new());
    assert_eq!(retention.keep, ids(&["i3", "i10", "i2"]));
    assert!(!retention.prune.contains_key("sha256:i3"));
    assert!(retention.prune.contains_key("sha256:i9"));
}

#[test]
fn failed_releases_do_not_count_and_their_images_are_pruned() {
    let mut records = ten_releases();
    let failed = Outcome::Failed {
        cause: "verify failed".into(),
        hint: None,
    };
    records.insert(0, record("f2", "bad2", Some("r10"), failed.clone()));
    records.insert(0, record("f1", "bad1", Some("r10"), failed));
    let retention = retention(&records, Some("r10"), 3, &BTreeSet::new());
    assert_eq!(retention.keep, ids(&["i10", "i9", "i8"]));
    assert_eq!(retention.prune["sha256:bad1"], "f1");
    assert!(retention.prune.contains_key("sha256:bad2"));
}

#[test]
fn a_reused_image_counts_once_and_images_in_use_stay() {
    // Two releases of one image (reused), and an old image a container still runs.
    let mut records = ten_releases();
    records.insert(0, record("r11", "i10", Some("r10"), Outcome::Succeeded));
    let retention = retention(&records, Some("r11"), 2, &ids(&["i1"]));
    assert_eq!(retention.keep, ids(&["i10", "i9", "i1"]));
    assert!(!retention.prune.contains_key("sha256:i10"));
    assert!(retention.prune.contains_key("sha256:i8"));
}

#[test]
fn without_a_live_release_only_the_count_keeps() {
    let retention = retention(&ten_releases(), None, 2, &BTreeSet::new());
    assert_eq!(retention.keep, ids(&["i10", "i9"]));
    assert_eq!(retention.prune.len(), 8);
}

#[test]
fn repository_is_the_reference_without_its_tag() {
    assert_eq!(repository("hello:1a2b3c4"), "hello");
    assert_eq!(repository("hello"), "hello");
    assert_eq!(
        repository("127.0.0.1:5000/x/hello:abc"),
        "127.0.0.1:5000/x/hello"
    );
    assert_eq!(
        repository("127.0.0.1:5000/x/hello"),
        "127.0.0.1:5000/x/hello"
    );
}
