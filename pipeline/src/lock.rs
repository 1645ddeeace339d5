//! The release lock: one release of a service on a target at a time.
//!
//! Where the lock lives is the platform's choice, behind [`LockStore`]. The local target uses
//! [`FileLockStore`]: an advisory `flock` on a file that also records its holder (pid, host,
//! start time, what it is doing). Whether the lock is held is decided by the `flock` alone:
//! the record only says who holds it, and is never read to guess whether its process lives
//! (a pid says nothing across PID namespaces or hosts). The kernel drops the `flock` when its
//! process dies, so a lock left by a crashed run never blocks the next one; the record it left
//! behind is then reported as recovered. While a live process holds the lock, a second
//! release is refused with that record. The file is created 0600 in a 0700 folder, whatever
//! the umask. A remote store (a cloud parameter store) cannot see a process die, so a lock a
//! crashed run left there stays until `shipit lock release --force` breaks it; its refusal
//! says who holds it and since when.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::history::BoxFuture;
use crate::state_dir::{PRIVATE_FILE_MODE, create_private_dir};

/// How long taking a file lock retries a `flock` that another process holds for a moment: a
/// `shipit lock status` holds it shared for microseconds to see whether it is free.
const ACQUIRE_RETRY: Duration = Duration::from_millis(100);
/// The pause between two of those tries.
const ACQUIRE_RETRY_PAUSE: Duration = Duration::from_millis(5);
/// How long a held lock's unreadable record is read again: the moment between a run taking
/// the `flock` and writing its record, which a `plan` or `lock status` can fall into.
const RECORD_WAIT: Duration = Duration::from_secs(1);

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub since: Timestamp,
    /// What the holder is doing, e.g. `release 20261122-101500-a1b2`.
    pub purpose: String,
}

impl Holder {
    /// The current process, doing `purpose`.
    pub fn current(purpose: impl Into<String>) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            user: username(),
            since: Timestamp::now(),
            purpose: purpose.into(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = Timestamp::now().duration_since(self.since);
        let secs = age.as_secs().max(0);
        write!(
            f,
            "pid {} on host {} (user {}) since {} ({}s ago), doing: {}",
            self.pid,
            self.host,
            self.user,
            self.since.round(jiff::Unit::Second).unwrap_or(self.since),
            secs,
            self.purpose
        )
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| nix::unistd::getuid().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another release holds the lock {}: {holder}", path.display())]
    Held { path: PathBuf, holder: Holder },
    #[error(
        "another process holds the lock {} and its holder record is unreadable",
        path.display()
    )]
    HeldUnknown { path: PathBuf },
    #[error("cannot use the lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A remote lock is held. Nothing frees it when its holder dies.
    #[error("another release holds the lock in {store}: {holder}")]
    HeldRemote {
        store: String,
        holder: Holder,
        /// When the holder's lease runs out, unless it renews it; `None`: a lock that never
        /// runs out.
        until: Option<Timestamp>,
        /// The command that breaks it, with the target's name when the store knows it.
        breaker: String,
    },
    #[error("the lock in {store}: {message}")]
    Remote {
        store: String,
        message: String,
        hint: Option<String>,
    },
}

impl LockError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            LockError::Held { .. } => Some(
                "wait for it to finish; the lock is freed as soon as that process exits".into(),
            ),
            LockError::HeldUnknown { .. } => Some("wait for it to finish".into()),
            LockError::Io { .. } => Some("check that the state directory is writable".into()),
            LockError::HeldRemote {
                breaker,
                until: Some(until),
                ..
            } => Some(format!(
                "wait for it to finish; its run renews its lease, which runs out at {} if that                  run is dead (the next release then takes the lock over); or break it now with `{breaker}`",
                until.round(jiff::Unit::Second).unwrap_or(*until)
            )),
            LockError::HeldRemote { breaker, .. } => Some(format!(
                "wait for it to finish; if that run is dead, break the lock with `{breaker}`"
            )),
            LockError::Remote { hint, .. } => hint.clone(),
        }
    }
}

/// Where the release lock of one service on one target lives.
pub trait LockStore: Send + Sync {
    /// For messages: "/path/to/lock" or "SSM /shipit/<cluster>/<service>/lock".
    fn describe(&self) -> String;
    /// Takes the lock for `holder`, without waiting: refused with the holder when it is held.
    fn acquire<'a>(&'a self, holder: &'a Holder) -> BoxFuture<'a, Result<Lock, LockError>>;
    /// Who holds it now, if anyone.
    fn holder(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>>;
    /// Breaks the lock whoever holds it (`shipit lock release --force`); returns who held it.
    fn force_release(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>>;
    /// Clears what a run that died left in a lock nobody holds (`shipit lock release`):
    /// returns that run's record, `None` when there was none, and refuses with the holder
    /// when a live run holds the lock. A store that cannot tell a dead holder from a live
    /// one sees every record as held, so it has nothing to clear.
    fn clear_stale(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// What frees one held lock.
pub trait LockGuard: Send + Sync {
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), LockError>>;
}

/// A held lock. Dropping it without [`Lock::release`] is allowed (a crash); a file lock then
/// frees itself, a remote lock stays until broken with `shipit lock release --force`.
pub struct Lock {
    guard: Box<dyn LockGuard>,
    /// The record of a previous holder that died while holding the lock, if any.
    recovered: Option<Holder>,
    /// Cancelled when the lock stops being this run's (a leased lock taken over after this
    /// run failed to renew it); never, for a lock that cannot be lost.
    lost: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
    }
}

impl Lock {
    pub fn new(guard: Box<dyn LockGuard>, recovered: Option<Holder>) -> Lock {
        Lock {
            guard,
            recovered,
            lost: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// A lock that `lost` cancels when it stops being this run's.
    pub fn with_lost(mut self, lost: tokio_util::sync::CancellationToken) -> Lock {
        self.lost = lost;
        self
    }

    /// Cancelled when the lock is no longer this run's.
    pub fn lost(&self) -> tokio_util::sync::CancellationToken {
        self.lost.clone()
    }

    /// The holder record a crashed run left behind, now taken over.
    pub fn recovered(&self) -> Option<&Holder> {
        self.recovered.as_ref()
    }

    /// Frees the lock.
    pub async fn release(self) -> Result<(), LockError> {
        self.guard.release().await
    }
}

/// The release lock as a file under the state directory, held with `flock`.
#[derive(Debug, Clone)]
pub struct FileLockStore {
    path: PathBuf,
}

impl FileLockStore {
    pub fn new(path: impl Into<PathBuf>) -> FileLockStore {
        FileLockStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock for `holder`, without waiting (beyond [`ACQUIRE_RETRY`] for a prober).
    pub fn acquire_now(&self, holder: &Holder) -> Result<FileLock, LockError> {
        let path = &self.path;
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let started = std::time::Instant::now();
        let mut file = loop {
            let mut file = self.open_private().map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) if started.elapsed() < ACQUIRE_RETRY => {
                    std::thread::sleep(ACQUIRE_RETRY_PAUSE);
                    continue;
                }
                Err(TryLockError::WouldBlock) => match self.held(&mut file) {
                    Some(refusal) => return Err(refusal),
                    None => continue,
                },
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            // `lock release --force` unlinks a held lock file: a `flock` taken on the unlinked
            // file (opened just before) would not exclude the run that creates the next one.
            if self.is_current(&file).map_err(io)? {
                break file;
            }
        };
        // We hold the lock. A record still in the file was left by a holder that died.
        let recovered = read_holder(&mut file);
        let text = serde_json::to_string_pretty(holder).expect("a holder serializes");
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(FileLock {
            file,
            path: path.clone(),
            recovered,
        })
    }

    /// Opens (or creates) the lock file, 0600 in a 0700 folder from the moment they exist. A
    /// file or folder left more open by an older shipit is narrowed.
    fn open_private(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .open(&self.path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o777 != PRIVATE_FILE_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        }
        Ok(file)
    }

    /// Whether `file` is still the one at the lock's path.
    fn is_current(&self, file: &File) -> std::io::Result<bool> {
        let open = file.metadata()?;
        match std::fs::metadata(&self.path) {
            Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The refusal for a lock another process holds: its record, or that it has none. A run
    /// writes its record just after it takes the `flock`, so a record found empty or partial
    /// is read again for up to [`RECORD_WAIT`] before the lock counts as held by nobody known.
    /// `None`: the lock was freed meanwhile (a run that ends clears its record, then
    /// unlocks).
    fn held(&self, file: &mut File) -> Option<LockError> {
        let started = std::time::Instant::now();
        loop {
            if let Some(holder) = read_holder(file) {
                return Some(LockError::Held {
                    path: self.path.clone(),
                    holder,
                });
            }
            if file.try_lock_shared().is_ok() {
                let _ = file.unlock();
                return None;
            }
            if started.elapsed() >= RECORD_WAIT {
                return Some(LockError::HeldUnknown {
                    path: self.path.clone(),
                });
            }
            std::thread::sleep(ACQUIRE_RETRY_PAUSE);
        }
    }

    /// Reads the holder without taking the lock: `None` when it is free.
    pub fn holder_now(&self) -> Result<Option<Holder>, LockError> {
        let path = &self.path;
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    path: path.clone(),
                    source,
                });
            }
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            // Held: by whom is what the record says; held without a readable record (it is
            // being written, or was damaged) is still held.
            Err(TryLockError::WouldBlock) => match self.held(&mut file) {
                Some(LockError::Held { holder, .. }) => Ok(Some(holder)),
                Some(unknown) => Err(unknown),
                None => Ok(None),
            },
            Err(TryLockError::Error(source)) => Err(LockError::Io {
                path: path.clone(),
                source,
            }),
        }
    }

    /// Clears the record a dead holder left, if the `flock` is free; refused with the holder
    /// when a live process holds it.
    pub fn clear_stale_now(&self) -> Result<Option<Holder>, LockError> {
        let path = &self.path;
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io(source)),
        };
        match file.try_lock() {
            Ok(()) => {
                let stale = read_holder(&mut file);
                file.set_len(0).map_err(io)?;
                file.sync_data().map_err(io)?;
                let _ = file.unlock();
                Ok(stale)
            }
            Err(TryLockError::WouldBlock) => match self.held(&mut file) {
                Some(refusal) => Err(refusal),
                // Freed meanwhile: what it left is cleared as a free lock's.
                None => self.clear_stale_now(),
            },
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Breaks the lock. A free lock only loses the record a dead holder left. A lock a live
    /// process holds is unlinked: that process keeps its `flock` on a file nobody else opens
    /// any more, and the next run creates a fresh one. Returns who held it.
    pub fn force_release_now(&self) -> Result<Option<Holder>, LockError> {
        let path = &self.path;
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io(source)),
        };
        let held = read_holder(&mut file);
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io)?;
                let _ = file.unlock();
            }
            Err(TryLockError::WouldBlock) => std::fs::remove_file(path).map_err(io)?,
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(held)
    }
}

impl LockStore for FileLockStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn acquire<'a>(&'a self, holder: &'a Holder) -> BoxFuture<'a, Result<Lock, LockError>> {
        // `flock` without waiting, but a held lock's record may be waited for (up to
        // RECORD_WAIT): off the runtime's threads.
        let (store, holder) = (self.clone(), holder.clone());
        Box::pin(async move {
            let path = store.path.clone();
            let lock = blocking(path, move || store.acquire_now(&holder)).await?;
            let recovered = lock.recovered.clone();
            Ok(Lock::new(Box::new(lock), recovered))
        })
    }

    fn holder(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>> {
        let store = self.clone();
        Box::pin(blocking(self.path.clone(), move || store.holder_now()))
    }

    fn force_release(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>> {
        Box::pin(std::future::ready(self.force_release_now()))
    }

    fn clear_stale(&self) -> BoxFuture<'_, Result<Option<Holder>, LockError>> {
        Box::pin(std::future::ready(self.clear_stale_now()))
    }
}

/// A held file lock. Dropping it clears the holder record and releases the `flock`.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
    recovered: Option<Holder>,
}

impl FileLock {
    /// The holder record a crashed run left behind, now taken over.
    pub fn recovered(&self) -> Option<&Holder> {
        self.recovered.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl LockGuard for FileLock {
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), LockError>> {
        drop(self);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Clear the record first: an empty file under a released lock means "free, cleanly".
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Runs `work`, which may sleep, on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce() -> Result<T, LockError> + Send + 'static,
) -> Result<T, LockError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(LockError::Io {
            path,
            source: std::io::Error::other(e),
        })
    })
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLockStore::new(dir.path().join("lock"));
        let first = Holder::current("release one");
        let _lock = store.acquire_now(&first).unwrap();
        let err = store
            .acquire_now(&Holder::current("release two"))
            .unwrap_err();
        match err {
            LockError::Held { holder, .. } => assert_eq!(holder, first),
            other => panic!("expected Held, got {other}"),
        }
        assert_eq!(store.holder_now().unwrap(), Some(first));
    }

    #[tokio::test]
    async fn released_lock_is_free_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLockStore::new(dir.path().join("lock"));
        let lock = store.acquire(&Holder::current("one")).await.unwrap();
        assert!(store.holder().await.unwrap().is_some());
        lock.release().await.unwrap();
        assert_eq!(store.holder().await.unwrap(), None);
        let again = store.acquire(&Holder::current("two")).await.unwrap();
        assert!(again.recovered().is_none());
    }

    #[test]
    fn dropped_lock_is_free_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLockStore::new(dir.path().join("lock"));
        drop(store.acquire_now(&Holder::current("one")).unwrap());
        assert_eq!(store.holder_now().unwrap(), None);
        let again = store.acquire_now(&Holder::current("two")).unwrap();
        assert!(again.recovered().is_none());
    }

    fn dead_holder() -> Holder {
        Holder {
            pid: 999_999,
            host: "ci-7".into(),
            user: "ci".into(),
            since: "2026-11-22T10:00:00Z".parse().unwrap(),
            purpose: "release 20261122-100000-dead".into(),
        }
    }

    #[tokio::test]
    async fn record_left_by_a_dead_holder_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let dead = dead_holder();
        // What a process killed mid-release leaves: a record, and no flock (the kernel
        // dropped it with the process).
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = FileLockStore::new(&path)
            .acquire(&Holder::current("next"))
            .await
            .unwrap();
        assert_eq!(lock.recovered(), Some(&dead));
    }

    #[tokio::test]
    async fn force_release_breaks_a_held_lock_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLockStore::new(dir.path().join("lock"));
        let first = Holder::current("stuck release");
        let _held = store.acquire_now(&first).unwrap();
        assert_eq!(store.force_release().await.unwrap(), Some(first));
        let next = store.acquire(&Holder::current("next")).await.unwrap();
        assert!(next.recovered().is_none());
        assert_eq!(
            store.force_release().await.unwrap().unwrap().purpose,
            "next"
        );
    }

    #[tokio::test]
    async fn force_release_clears_a_dead_holders_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, serde_json::to_string(&dead_holder()).unwrap()).unwrap();
        let store = FileLockStore::new(&path);
        assert_eq!(store.force_release().await.unwrap(), Some(dead_holder()));
        assert_eq!(store.force_release().await.unwrap(), None);
        let lock = store.acquire(&Holder::current("next")).await.unwrap();
        assert!(lock.recovered().is_none());
    }

    #[test]
    fn lock_file_is_private_in_a_private_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets/local/hello/lock");
        let _lock = FileLockStore::new(&path)
            .acquire_now(&Holder::current("one"))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        for folder in ["targets", "targets/local", "targets/local/hello"] {
            assert_eq!(mode(&dir.path().join(folder)), 0o700, "{folder}");
        }
    }

    #[test]
    fn lock_file_left_open_by_an_older_version_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("hello");
        std::fs::create_dir(&folder).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = folder.join("lock");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _lock = FileLockStore::new(&path)
            .acquire_now(&Holder::current("one"))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&folder), 0o700);
    }

    /// A `flock` held through another open file, as another process holds it.
    fn hold_elsewhere(path: &Path) -> File {
        let file = OpenOptions::new().read(true).open(path).unwrap();
        file.try_lock().unwrap();
        file
    }

    #[test]
    fn live_holder_is_held_whatever_pid_it_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // A record naming this host and a pid that does not run here: a live holder in
        // another PID namespace looks exactly like this.
        let recorded = Holder {
            host: hostname(),
            ..dead_holder()
        };
        std::fs::write(&path, serde_json::to_string(&recorded).unwrap()).unwrap();
        let _held = hold_elsewhere(&path);
        let store = FileLockStore::new(&path);
        assert_eq!(store.holder_now().unwrap(), Some(recorded.clone()));
        match store.clear_stale_now() {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, recorded),
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(matches!(
            store.acquire_now(&Holder::current("next")),
            Err(LockError::Held { .. })
        ));
        assert!(path.exists(), "a refused clear leaves the lock in place");
    }

    #[test]
    fn held_lock_without_a_readable_record_is_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "{ not a holder").unwrap();
        let _held = hold_elsewhere(&path);
        let store = FileLockStore::new(&path);
        assert!(matches!(
            store.holder_now(),
            Err(LockError::HeldUnknown { .. })
        ));
        assert!(matches!(
            store.clear_stale_now(),
            Err(LockError::HeldUnknown { .. })
        ));
    }

    #[test]
    fn a_record_written_just_after_the_flock_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "").unwrap();
        let held = hold_elsewhere(&path);
        let recorded = Holder {
            host: hostname(),
            ..dead_holder()
        };
        // The holder writes its record a moment after taking the flock, as `acquire_now` does.
        let writer = {
            let path = path.clone();
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(&path, serde_json::to_string(&recorded).unwrap()).unwrap();
            })
        };
        let store = FileLockStore::new(&path);
        assert_eq!(store.holder_now().unwrap(), Some(recorded));
        writer.join().unwrap();
        drop(held);
    }

    #[test]
    fn a_lock_freed_while_its_record_is_awaited_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "").unwrap();
        let held = hold_elsewhere(&path);
        // A run that ends clears its record, then unlocks: a reader in between sees a held
        // lock with no record, and must then see it free, not unknown.
        let ender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        let store = FileLockStore::new(&path);
        assert_eq!(store.holder_now().unwrap(), None);
        ender.join().unwrap();
    }

    #[test]
    fn stale_record_without_a_holder_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, serde_json::to_string(&dead_holder()).unwrap()).unwrap();
        let store = FileLockStore::new(&path);
        assert_eq!(store.holder_now().unwrap(), None, "no flock: free");
        assert_eq!(store.clear_stale_now().unwrap(), Some(dead_holder()));
        assert_eq!(store.clear_stale_now().unwrap(), None);
        let lock = store.acquire_now(&Holder::current("next")).unwrap();
        assert!(lock.recovered().is_none());
    }

    #[test]
    fn remote_refusal_says_who_since_when_and_how_to_break_it() {
        let err = LockError::HeldRemote {
            store: "SSM /shipit/prod/hello/lock".into(),
            holder: dead_holder(),
            until: None,
            breaker: "shipit lock release --force --target prod".into(),
        };
        let hint = err.hint().unwrap_or_default();
        let err = err.to_string();
        assert!(err.contains("SSM /shipit/prod/hello/lock"), "{err}");
        assert!(err.contains("pid 999999 on host ci-7"), "{err}");
        assert!(err.contains("2026-11-22T10:00:00Z"), "{err}");
        assert!(
            hint.contains("shipit lock release --force --target prod"),
            "{hint}"
        );
    }
}
