//! The ecs target's lock and history in SSM Parameter Store, against moto.

use std::collections::BTreeMap;

use shipit_pipeline::Slot;
use shipit_pipeline::history::{HistoryStore, Kind, Outcome, ReleaseRecord};
use shipit_pipeline::lock::{Holder, LockError, LockStore};
use shipit_pipeline::platform::ecs::records::{SsmHistory, SsmLockStore};

use crate::aws::{Clients, unique};

fn holder(pid: u32, host: &str) -> Holder {
    Holder {
        pid,
        host: host.into(),
        user: "ci".into(),
        since: "2026-11-22T10:00:00Z".parse().unwrap(),
        purpose: format!("release from {host}"),
    }
}

fn record(id: &str, started: &str) -> ReleaseRecord {
    ReleaseRecord {
        id: id.into(),
        kind: Kind::Release,
        service: "web".into(),
        target: "aws".into(),
        serves: id.into(),
        slot: Some(Slot::Blue),
        image: Some("127.0.0.1:5000/web@sha256:ab".into()),
        image_id: Some("sha256:ab".into()),
        handle: None,
        version: "abc1234".into(),
        revision: None,
        modules: BTreeMap::new(),
        image_reused: false,
        previous: None,
        user: "ci".into(),
        host: "runner-1".into(),
        started_at: started.parse().unwrap(),
        finished_at: None,
        phases: vec![],
        shift_steps: vec![],
        warmup: None,
        outcome: Outcome::InProgress,
    }
}

#[tokio::test]
async fn second_lock_is_refused_naming_the_first_holder_until_it_is_released() {
    let clients = Clients::new().await;
    let cluster = unique("lock");
    let store = SsmLockStore::new(clients.ssm.clone(), &cluster, "web");
    assert_eq!(store.name(), format!("/shipit/{cluster}/web/lock"));
    // Another runner: its own client, the same parameter.
    let other = SsmLockStore::new(Clients::new().await.ssm, &cluster, "web");

    let first = holder(111, "runner-1");
    let lock = store.acquire(&first).await.unwrap();
    let refused = other.acquire(&holder(222, "runner-2")).await.unwrap_err();
    match &refused {
        LockError::HeldRemote {
            holder,
            store: where_,
            ..
        } => {
            assert_eq!(holder, &first);
            assert!(where_.contains(store.name()), "{where_}");
        }
        other => panic!("expected HeldRemote, got {other}"),
    }
    let message = refused.to_string();
    for needle in ["pid 111", "runner-1", "since"] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
    let hint = refused.hint().unwrap_or_default();
    assert!(hint.contains("shipit lock release --force"), "{hint}");
    assert_eq!(other.holder().await.unwrap(), Some(first.clone()));

    // The stored value is the holder and a token, as compact JSON.
    let stored = clients
        .ssm
        .get_parameter()
        .name(store.name())
        .send()
        .await
        .unwrap();
    let value: serde_json::Value =
        serde_json::from_str(stored.parameter().unwrap().value().unwrap()).unwrap();
    assert_eq!(value["pid"], 111);
    assert_eq!(value["host"], "runner-1");
    assert!(
        value["token"].as_str().is_some_and(|t| t.len() == 32),
        "{value}"
    );

    lock.release().await.unwrap();
    assert_eq!(store.holder().await.unwrap(), None);
    let second = other.acquire(&holder(222, "runner-2")).await.unwrap();
    assert_eq!(
        store.holder().await.unwrap().map(|h| h.pid),
        Some(222),
        "the second runner holds it now"
    );
    second.release().await.unwrap();
}

#[tokio::test]
async fn force_release_breaks_a_lock_left_by_a_dead_run() {
    let clients = Clients::new().await;
    let cluster = unique("force");
    let store = SsmLockStore::new(clients.ssm.clone(), &cluster, "web");
    let dead = holder(333, "runner-dead");
    // A run that crashed: its lock is dropped without release, and stays.
    drop(store.acquire(&dead).await.unwrap());
    assert_eq!(store.holder().await.unwrap(), Some(dead.clone()));
    assert!(matches!(
        store.acquire(&holder(444, "runner-4")).await,
        Err(LockError::HeldRemote { .. })
    ));

    assert_eq!(store.force_release().await.unwrap(), Some(dead));
    assert_eq!(store.holder().await.unwrap(), None);
    assert_eq!(store.force_release().await.unwrap(), None, "already free");
    store
        .acquire(&holder(444, "runner-4"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_broken_lock_taken_by_another_run_is_not_released_by_the_first() {
    let clients = Clients::new().await;
    let cluster = unique("steal");
    let store = SsmLockStore::new(clients.ssm.clone(), &cluster, "web");
    let slow = store.acquire(&holder(555, "runner-slow")).await.unwrap();
    store.force_release().await.unwrap();
    let next = store.acquire(&holder(666, "runner-next")).await.unwrap();

    let err = slow.release().await.unwrap_err().to_string();
    assert!(err.contains("held by another run"), "{err}");
    assert_eq!(
        store.holder().await.unwrap().map(|h| h.pid),
        Some(666),
        "the slow run left the new holder's lock alone"
    );
    next.release().await.unwrap();
    let gone = store.acquire(&holder(777, "r")).await.unwrap();
    store.force_release().await.unwrap();
    let err = gone.release().await.unwrap_err().to_string();
    assert!(err.contains("already gone"), "{err}");
}

#[tokio::test]
async fn history_saves_gets_and_lists_newest_first_across_pages() {
    let clients = Clients::new().await;
    let cluster = unique("hist");
    let history = SsmHistory::new(clients.ssm.clone(), &cluster, "web");
    assert_eq!(history.path(), format!("/shipit/{cluster}/web/releases"));
    assert!(history.list().await.unwrap().is_empty());

    // 12 records: more than one page of GetParametersByPath (moto pages by 10).
    for i in 0..12 {
        let started = format!("2026-11-22T10:{i:02}:00Z");
        history
            .save(&record(&format!("20261122-10{i:02}00-aaaa"), &started))
            .await
            .unwrap();
    }
    // Rewriting a record (a phase boundary) replaces it.
    let mut last = record("20261122-101100-aaaa", "2026-11-22T10:11:00Z");
    last.finish(Outcome::Failed {
        cause: "the idle target group had 0 of 1 healthy targets".into(),
        hint: Some("look at the service's events".into()),
    });
    history.save(&last).await.unwrap();

    let list = history.list().await.unwrap();
    assert_eq!(list.len(), 12);
    let ids: Vec<_> = list.iter().map(|r| r.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    assert_eq!(list[0], last);
    assert_eq!(
        history.get("20261122-101100-aaaa").await.unwrap(),
        Some(last)
    );
    assert_eq!(history.get("20261122-235959-none").await.unwrap(), None);

    // The stored value is compact JSON under the release id.
    let stored = clients
        .ssm
        .get_parameter()
        .name(history.name_of("20261122-100000-aaaa"))
        .send()
        .await
        .unwrap();
    let value = stored.parameter().unwrap().value().unwrap();
    assert!(!value.contains('\n'), "{value}");
}

#[tokio::test]
async fn history_keeps_the_newest_records_and_deletes_the_oldest_on_save() {
    let clients = Clients::new().await;
    let cluster = unique("prune");
    let history = SsmHistory::new(clients.ssm.clone(), &cluster, "web").with_max_records(3);
    for i in 0..5 {
        history
            .save(&record(
                &format!("20261122-1{i}0000-bbbb"),
                &format!("2026-11-22T1{i}:00:00Z"),
            ))
            .await
            .unwrap();
    }
    let ids: Vec<_> = history
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        [
            "20261122-140000-bbbb",
            "20261122-130000-bbbb",
            "20261122-120000-bbbb"
        ]
    );
    assert_eq!(history.get("20261122-100000-bbbb").await.unwrap(), None);
}

#[tokio::test]
async fn a_record_too_big_for_a_parameter_is_refused_clearly() {
    let clients = Clients::new().await;
    let history = SsmHistory::new(clients.ssm.clone(), &unique("big"), "web");
    let mut big = record("20261122-100000-cccc", "2026-11-22T10:00:00Z");
    for i in 0..300 {
        big.modules.insert(
            format!("a-module-with-a-rather-long-name-{i}"),
            "1.2.3".into(),
        );
    }
    let err = history.save(&big).await.unwrap_err();
    let hint = err.hint();
    let err = err.to_string();
    assert!(err.contains("4096"), "{err}");
    assert!(err.contains("20261122-100000-cccc"), "{err}");
    assert!(hint.is_some(), "{err}");
    assert_eq!(history.get("20261122-100000-cccc").await.unwrap(), None);
}

#[tokio::test]
async fn a_lock_parameter_that_is_not_a_lock_is_refused_and_can_be_broken() {
    let clients = Clients::new().await;
    let store = SsmLockStore::new(clients.ssm.clone(), &unique("junk"), "web");
    clients
        .ssm
        .put_parameter()
        .name(store.name())
        .value("someone wrote this by hand")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let err = store.acquire(&holder(1, "runner-1")).await.unwrap_err();
    let hint = err.hint().unwrap_or_default();
    assert!(err.to_string().contains("not a shipit lock"), "{err}");
    assert!(hint.contains("shipit lock release --force"), "{hint}");
    assert_eq!(store.force_release().await.unwrap(), None);
    store
        .acquire(&holder(1, "runner-1"))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}
