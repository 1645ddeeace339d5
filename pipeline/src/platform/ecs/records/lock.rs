//! The release lock of an ecs target: the SSM parameter `/shipit/<cluster>/<service>/lock`,
//! held on a lease.
//!
//! Taking it is PutParameter without overwrite, an atomic create-if-absent: of two runners
//! racing, exactly one creates it. The value names the holder, a random token, and when its
//! lease runs out (`expires`). While the run works, a task renews the lease every third of
//! it; a run that dies stops renewing. A lock whose lease ran out is taken over by the next
//! run, with a warning naming the old holder. Only one run may take over one stale lease:
//! each first creates the parameter `<lock>-takeover-<stale token>`, and only the one that
//! creates it goes on. A holder that stalled past its lease (a suspended laptop) finds at its
//! next renewal that the lock is no longer its own, and says so. `shipit lock release
//! --force` deletes the lock whoever holds it.
//!
//! A lock record without `expires` (written by a shipit before leases) never runs out.
//! Machines must agree on the time to within the lease minus a renewal period.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::PARAMETER_ROOT;
use super::params::{ParamError, Params};
use crate::history::BoxFuture;
use crate::lock::{Holder, Lock, LockError, LockGuard, LockStore};

pub use crate::config::DEFAULT_LOCK_LEASE;

/// How often acquire starts over when the lock changed under it (freed between a create and
/// a read, or renewed during a takeover).
const ACQUIRE_ATTEMPTS: usize = 3;

/// Where "now" comes from: the system clock in a release, tokio's in a test of the lease.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The lock parameter's value: the holder, the token of the run that holds it, and when its
/// lease runs out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LockRecord {
    #[serde(flatten)]
    pub(super) holder: Holder,
    pub(super) token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires: Option<Timestamp>,
}

impl LockRecord {
    fn expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e < now)
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

fn after(now: Timestamp, lease: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(lease)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The release lock as the SSM parameter `/shipit/<cluster>/<service>/lock`.
#[derive(Debug, Clone)]
pub struct SsmLockStore {
    params: Arc<dyn Params>,
    clock: Arc<dyn Clock>,
    lease: Duration,
    name: String,
    /// The config's name for the target, for the command a refusal suggests.
    target: Option<String>,
}

impl SsmLockStore {
    pub fn new(ssm: aws_sdk_ssm::Client, cluster: &str, service: &str) -> SsmLockStore {
        SsmLockStore::with_params(Arc::new(ssm), cluster, service)
    }

    /// The lock in other parameters than SSM's (a map in memory, in tests).
    pub fn with_params(params: Arc<dyn Params>, cluster: &str, service: &str) -> SsmLockStore {
        SsmLockStore {
            params,
            clock: Arc::new(SystemClock),
            lease: DEFAULT_LOCK_LEASE,
            name: format!("{}/lock", super::service_path(cluster, service)),
            target: None,
        }
    }

    /// Names the target in refusals, so the suggested `shipit lock release` can be pasted.
    pub fn for_target(mut self, target: &str) -> SsmLockStore {
        self.target = Some(target.to_string());
        self
    }

    /// Leases of `lease` instead of [`DEFAULT_LOCK_LEASE`].
    pub fn with_lease(mut self, lease: Duration) -> SsmLockStore {
        self.lease = lease;
        self
    }

    /// Another clock than the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SsmLockStore {
        self.clock = clock;
        self
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease a run takes.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn remote(&self, message: String, hint: Option<&str>) -> LockError {
        LockError::Remote {
            store: self.describe(),
            message,
            hint: hint.map(str::to_string),
        }
    }

    fn failed(&self, e: ParamError, hint: &str) -> LockError {
        self.remote(e.to_string(), Some(hint))
    }

    /// The lock record, or `None` when the parameter does not exist.
    async fn read(&self) -> Result<Option<LockRecord>, LockError> {
        read_lock(self.params.as_ref(), &self.name)
            .await
            .map_err(|e| self.remote(e.to_string(), e.hint().as_deref()))
    }

    fn held(&self, current: LockRecord) -> LockError {
        LockError::HeldRemote {
            store: self.describe(),
            holder: current.holder,
            until: current.expires,
            breaker: format!(
                "shipit lock release --force --target {}",
                self.target.as_deref().unwrap_or("<target>")
            ),
        }
    }

    /// A lock taken: its guard renews the lease until released or dropped.
    fn taken(&self, record: LockRecord, marker: Option<String>, recovered: Option<Holder>) -> Lock {
        let lost = tokio_util::sync::CancellationToken::new();
        let renewal = tokio::spawn(renew(
            self.params.clone(),
            self.clock.clone(),
            self.name.clone(),
            record.clone(),
            self.lease,
            lost.clone(),
        ));
        Lock::new(
            Box::new(SsmLockGuard {
                params: self.params.clone(),
                name: self.name.clone(),
                store: self.describe(),
                token: record.token,
                marker,
                renewal: Some(renewal),
            }),
            recovered,
        )
        .with_lost(lost)
    }

    pub(super) async fn acquire_now(&self, holder: &Holder) -> Result<Lock, LockError> {
        let put_hint = format!(
            "check the AWS credentials and that they allow ssm:PutParameter, \
             ssm:GetParameter and ssm:DeleteParameter on {PARAMETER_ROOT}/*"
        );
        let token = new_token();
        for _ in 0..ACQUIRE_ATTEMPTS {
            let now = self.clock.now();
            let record = LockRecord {
                holder: holder.clone(),
                token: token.clone(),
                expires: Some(after(now, self.lease)),
            };
            let value = serde_json::to_string(&record).expect("a lock record serializes");
            let created = self
                .params
                .create(
                    &self.name,
                    &value,
                    "shipit release lock: delete it with `shipit lock release --force`",
                )
                .await
                .map_err(|e| self.failed(e, &put_hint))?;
            if created {
                return Ok(self.taken(record, None, None));
            }
            let Some(current) = self.read().await? else {
                // Released between our create and our read: try again.
                continue;
            };
            if !current.expired(now) {
                return Err(self.held(current));
            }
            // Its holder stopped renewing. One run takes over this lease: the one that
            // creates its takeover marker.
            let marker = format!("{}-takeover-{}", self.name, current.token);
            let won = self
                .params
                .create(
                    &marker,
                    &value,
                    "shipit: a run took over a lock whose lease ran out; deleted when it ends",
                )
                .await
                .map_err(|e| self.failed(e, &put_hint))?;
            if !won {
                return Err(self.held(current));
            }
            match self.read().await? {
                Some(again) if again.token == current.token && again.expired(now) => {}
                // Renewed, freed or broken meanwhile: start over.
                _ => {
                    let _ = self.params.delete(&marker).await;
                    continue;
                }
            }
            self.params
                .overwrite(&self.name, &value)
                .await
                .map_err(|e| self.failed(e, &put_hint))?;
            return Ok(self.taken(record, Some(marker), Some(current.holder)));
        }
        Err(self.remote(
            format!(
                "{} changed {ACQUIRE_ATTEMPTS} times while this run tried to take it",
                self.name
            ),
            Some("another run is releasing the same service; retry"),
        ))
    }

    pub(super) async fn force_release_now(&self) -> Result<Option<Holder>, LockError> {
        let current = match read_lock(self.params.as_ref(), &self.name).await {
            Ok(current) => current.map(|record| record.holder),
            // An unreadable record is still a lock to break.
            Err(ReadError::Unreadable { .. }) => None,
            Err(e) => return Err(self.remote(e.to_string(), e.hint().as_deref())),
        };
        match self.params.delete(&self.name).await {
            Ok(true) => Ok(current),
            Ok(false) => Ok(None),
            Err(e) => Err(self.failed(
                e,
                "check that the AWS credentials allow ssm:DeleteParameter on it",
            )),
        }
    }
}

impl LockStore for SsmLockStore {
    fn describe(&self) -> String {
        self.params.describe(&self.name)
    }

    fn acquire<'a>(&'a self, holder: &'a Holder) -> BoxFuture<'a, Result<Lock, LockError>> {
        Box::pin(self.acquire_now(holder))
    }

    fn holder(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>> {
        Box::pin(async move { Ok(self.read().await?.map(|record| record.holder)) })
    }

    fn force_release(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>> {
        Box::pin(self.force_release_now())
    }
}

/// Renews the lease of `record` every third of `lease` while the lock still holds its token;
/// when it no longer does, cancels `lost` and stops.
async fn renew(
    params: Arc<dyn Params>,
    clock: Arc<dyn Clock>,
    name: String,
    mut record: LockRecord,
    lease: Duration,
    lost: tokio_util::sync::CancellationToken,
) {
    let period = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match read_lock(params.as_ref(), &name).await {
            Ok(Some(current)) if current.token == record.token => {
                record.expires = Some(after(clock.now(), lease));
                let value = serde_json::to_string(&record).expect("a lock record serializes");
                if let Err(e) = params.overwrite(&name, &value).await {
                    tracing::warn!("renewing the lease of the lock {name} failed: {e}");
                }
            }
            Ok(Some(current)) => {
                tracing::warn!(
                    "the lock {name} is no longer this run's: its lease ran out and {} took it over",
                    current.holder
                );
                lost.cancel();
                return;
            }
            Ok(None) => {
                tracing::warn!(
                    "the lock {name} is gone: it was broken with `shipit lock release --force`"
                );
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!("renewing the lease of the lock {name} failed: {e}"),
        }
    }
}

/// A lock this run holds: releasing stops the renewal and deletes the parameter if it still
/// holds this run's token. SSM has no conditional delete, so a run whose lock was taken over
/// or broken in the moment between this read and this delete would free the other's lock.
struct SsmLockGuard {
    params: Arc<dyn Params>,
    name: String,
    store: String,
    token: String,
    /// The takeover marker this run created, deleted on release.
    marker: Option<String>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SsmLockGuard {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl LockGuard for SsmLockGuard {
    fn release(mut self: Box<Self>) -> BoxFuture<'static, Result<(), LockError>> {
        Box::pin(async move {
            if let Some(renewal) = self.renewal.take() {
                renewal.abort();
                let _ = renewal.await;
            }
            if let Some(marker) = self.marker.take() {
                let _ = self.params.delete(&marker).await;
            }
            let remote = |message: String, hint: Option<&str>| LockError::Remote {
                store: self.store.clone(),
                message,
                hint: hint.map(str::to_string),
            };
            let current = read_lock(self.params.as_ref(), &self.name)
                .await
                .map_err(|e| remote(e.to_string(), e.hint().as_deref()))?;
            match current {
                None => Err(remote(
                    format!(
                        "{} was already gone when this run released it: it was broken with \
                         `shipit lock release --force`",
                        self.name
                    ),
                    None,
                )),
                Some(record) if record.token != self.token => Err(remote(
                    format!(
                        "{} is now held by another run ({}): this run's lock was broken with \
                         `shipit lock release --force`, or taken over when its lease ran out; \
                         left as it is",
                        self.name, record.holder
                    ),
                    None,
                )),
                Some(_) => match self.params.delete(&self.name).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(remote(
                        e.to_string(),
                        Some("the lock stays held: break it with `shipit lock release --force`"),
                    )),
                },
            }
        })
    }
}

/// Why the lock parameter could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// It exists and holds something else than a lock record.
    #[error("{name} holds {value:?}, not a shipit lock ({problem})")]
    Unreadable {
        name: String,
        value: String,
        problem: String,
    },
    #[error("{0}")]
    Failed(ParamError),
}

impl ReadError {
    fn hint(&self) -> Option<String> {
        let hint = match self {
            ReadError::Unreadable { .. } => {
                "if no release runs, break it with `shipit lock release --force`"
            }
            ReadError::Failed(_) => {
                "check the AWS credentials and that they allow ssm:GetParameter"
            }
        };
        Some(hint.to_string())
    }
}

/// Reads and parses the lock parameter: `None` when it is absent.
async fn read_lock(params: &dyn Params, name: &str) -> Result<Option<LockRecord>, ReadError> {
    let Some(value) = params.get(name).await.map_err(ReadError::Failed)? else {
        return Ok(None);
    };
    let record = serde_json::from_str(&value).map_err(|e| ReadError::Unreadable {
        name: name.to_string(),
        value: value.clone(),
        problem: e.to_string(),
    })?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests;
