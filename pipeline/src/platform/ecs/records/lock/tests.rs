//! The lease on tokio's paused clock, against parameters in memory: time moves only when a
//! test says so, and the clock the lock reads moves with it.

use super::*;
use crate::platform::ecs::records::params::MemoryParams;

/// Wall time that moves with tokio's clock: a fixed start plus tokio's elapsed time.
#[derive(Debug)]
struct TokioClock {
    start: Timestamp,
    at: tokio::time::Instant,
}

impl TokioClock {
    fn new() -> Arc<TokioClock> {
        Arc::new(TokioClock {
            start: "2026-12-01T10:00:00Z".parse().unwrap(),
            at: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        after(self.start, self.at.elapsed())
    }
}

const LEASE: Duration = Duration::from_secs(600);

fn holder(pid: u32) -> Holder {
    Holder {
        pid,
        host: format!("runner-{pid}"),
        user: "ci".into(),
        since: "2026-12-01T10:00:00Z".parse().unwrap(),
        purpose: "release".into(),
    }
}

/// Two runners' stores on one parameter, on one clock.
fn stores() -> (Arc<MemoryParams>, SsmLockStore, SsmLockStore) {
    let (params, _, first, second) = stores_and_clock();
    (params, first, second)
}

fn stores_and_clock() -> (
    Arc<MemoryParams>,
    Arc<TokioClock>,
    SsmLockStore,
    SsmLockStore,
) {
    let params = Arc::new(MemoryParams::default());
    let clock = TokioClock::new();
    let store = |params: &Arc<MemoryParams>| {
        SsmLockStore::with_params(params.clone(), "prod", "hello")
            .for_target("aws")
            .with_lease(LEASE)
            .with_clock(clock.clone())
    };
    (
        params.clone(),
        clock.clone(),
        store(&params),
        store(&params),
    )
}

fn stored(params: &MemoryParams, name: &str) -> LockRecord {
    serde_json::from_str(&params.value(name).expect("the lock exists")).unwrap()
}

/// Lets the renewal task run what is due at the current paused time.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_running_release_keeps_its_lock_past_the_lease_by_renewing_it() {
    let (params, clock, first, second) = stores_and_clock();
    let lock = first.acquire(&holder(1)).await.unwrap();
    let taken = stored(&params, first.name());
    assert_eq!(
        taken.expires,
        Some("2026-12-01T10:10:00Z".parse().unwrap()),
        "the lease runs 10 minutes from now"
    );
    // Three leases long, the holder renewing all along: every other run is refused.
    for minute in 1..=30 {
        tokio::time::advance(Duration::from_secs(60)).await;
        settle().await;
        match second.acquire(&holder(2)).await {
            Err(LockError::HeldRemote { holder, until, .. }) => {
                assert_eq!(holder.pid, 1, "minute {minute}");
                let until = until.expect("a leased lock says until when");
                assert!(until > clock.now(), "minute {minute}: {until}");
            }
            other => panic!("minute {minute}: expected the lock held, got {other:?}"),
        }
    }
    assert!(!lock.lost().is_cancelled(), "a renewed lock is not lost");
    let renewed = stored(&params, first.name());
    assert_eq!(renewed.token, taken.token);
    assert!(
        renewed.expires > Some("2026-12-01T10:36:00Z".parse().unwrap()),
        "renewed every 200 s: {:?}",
        renewed.expires
    );
    lock.release().await.unwrap();
    assert_eq!(params.names(), Vec::<String>::new(), "nothing is left");
    second.acquire(&holder(2)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lock_whose_holder_stopped_renewing_is_taken_over_after_the_lease() {
    let (params, first, second) = stores();
    // The holder dies: its guard is dropped without release, the renewal stops.
    drop(first.acquire(&holder(1)).await.unwrap());
    tokio::time::advance(LEASE - Duration::from_secs(1)).await;
    settle().await;
    assert!(
        matches!(
            second.acquire(&holder(2)).await,
            Err(LockError::HeldRemote { .. })
        ),
        "a second before the lease runs out, the lock is still held"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let lock = second.acquire(&holder(2)).await.unwrap();
    assert_eq!(
        lock.recovered().map(|h| h.pid),
        Some(1),
        "the takeover names the old holder"
    );
    assert_eq!(stored(&params, first.name()).holder.pid, 2);

    // The new holder renews in its turn, over two leases.
    for _ in 0..20 {
        settle().await;
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    settle().await;
    assert!(matches!(
        first.acquire(&holder(3)).await,
        Err(LockError::HeldRemote { .. })
    ));
    lock.release().await.unwrap();
    assert_eq!(
        params.names(),
        Vec::<String>::new(),
        "the lock and its takeover marker are gone"
    );
}

#[tokio::test(start_paused = true)]
async fn only_one_of_two_runs_takes_over_a_stale_lease() {
    let (params, first, second) = stores();
    drop(first.acquire(&holder(1)).await.unwrap());
    tokio::time::advance(LEASE + Duration::from_secs(1)).await;
    // Both read the stale record; the one that creates the takeover marker wins.
    let (two, three) = (holder(2), holder(3));
    let (a, b) = tokio::join!(first.acquire(&two), second.acquire(&three));
    let won: Vec<u32> = [&a, &b]
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|_| stored(&params, first.name()).holder.pid)
        .collect();
    assert_eq!(won.len(), 1, "exactly one run took it over: {a:?} {b:?}");
    let lost = if a.is_ok() { &b } else { &a };
    assert!(
        matches!(lost, Err(LockError::HeldRemote { .. })),
        "{lost:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_stalled_past_its_lease_does_not_free_the_new_holders_lock() {
    let (params, first, second) = stores();
    let stalled = first.acquire(&holder(1)).await.unwrap();
    // Its renewal cannot run (the whole process is stopped): simulate by letting the record
    // run out without renewal ticks in between.
    let mut record = stored(&params, first.name());
    record.expires = Some("2026-12-01T09:00:00Z".parse().unwrap());
    params
        .overwrite(first.name(), &serde_json::to_string(&record).unwrap())
        .await
        .unwrap();
    let next = second.acquire(&holder(2)).await.unwrap();
    assert_eq!(next.recovered().map(|h| h.pid), Some(1));
    // The stalled run wakes up: its next renewal sees another token, stops, and tells the
    // run (which then stops as if interrupted); its release leaves the new lock alone.
    assert!(!stalled.lost().is_cancelled());
    tokio::time::advance(LEASE).await;
    settle().await;
    assert!(
        stalled.lost().is_cancelled(),
        "the run learns its lock is lost"
    );
    assert_eq!(stored(&params, first.name()).holder.pid, 2);
    let err = stalled.release().await.unwrap_err().to_string();
    assert!(err.contains("taken over when its lease ran out"), "{err}");
    assert_eq!(stored(&params, first.name()).holder.pid, 2);
}

#[tokio::test(start_paused = true)]
async fn a_lock_without_a_lease_never_runs_out() {
    let (params, first, _) = stores();
    let old = serde_json::json!({
        "pid": 7, "host": "old", "user": "ci", "since": "2026-11-01T10:00:00Z",
        "purpose": "release", "token": "t"
    });
    params
        .overwrite(first.name(), &old.to_string())
        .await
        .unwrap();
    tokio::time::advance(LEASE * 100).await;
    match first.acquire(&holder(2)).await {
        Err(LockError::HeldRemote { holder, until, .. }) => {
            assert_eq!(holder.pid, 7);
            assert_eq!(until, None);
        }
        other => panic!("expected held, got {other:?}"),
    }
}

#[test]
fn lock_record_keeps_the_holder_fields_at_the_top() {
    let text = serde_json::to_string(&LockRecord {
        holder: holder(42),
        token: "t".into(),
        expires: Some("2026-12-01T10:10:00Z".parse().unwrap()),
    })
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["pid"], 42);
    assert_eq!(json["token"], "t");
    assert_eq!(json["expires"], "2026-12-01T10:10:00Z");
    let back: LockRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back.holder, holder(42));
}
