//! The release lock: one release of a service on a target at a time.
//!
//! The lock is an advisory `flock` on a file that also records its holder (pid, host, start
//! time, what it is doing). The kernel drops the `flock` when its process dies, so a lock
//! left by a crashed run never blocks the next one; the holder record it left behind is then
//! reported as recovered. While a live process holds the lock, a second release is refused
//! with that record.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

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
    #[error(
        "another release holds the lock {}: {holder}\nhint: wait for it to finish; the lock is freed as soon as that process exits",
        path.display()
    )]
    Held { path: PathBuf, holder: Holder },
    #[error(
        "another process holds the lock {} and its holder record is unreadable\nhint: wait for it to finish",
        path.display()
    )]
    HeldUnknown { path: PathBuf },
    #[error("cannot use the lock file {}: {source}\nhint: check that the state directory is writable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock. Dropping it clears the holder record and releases the lock.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
    /// The record of a previous holder that died while holding the lock, if any.
    recovered: Option<Holder>,
}

impl Lock {
    /// Takes the lock at `path` for `holder`, without waiting.
    pub fn acquire(path: &Path, holder: &Holder) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(match read_holder(&mut file) {
                    Some(holder) => LockError::Held {
                        path: path.to_path_buf(),
                        holder,
                    },
                    None => LockError::HeldUnknown {
                        path: path.to_path_buf(),
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // We hold the lock. A record still in the file was left by a holder that died.
        let recovered = read_holder(&mut file);
        let text = serde_json::to_string_pretty(holder).expect("a holder serializes");
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Lock {
            file,
            path: path.to_path_buf(),
            recovered,
        })
    }

    /// The holder record a crashed run left behind, now taken over.
    pub fn recovered(&self) -> Option<&Holder> {
        self.recovered.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the holder of the lock at `path` without taking it: `None` when it is free.
    pub fn holder(path: &Path) -> Result<Option<Holder>, LockError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(read_holder(&mut file)),
            Err(TryLockError::Error(source)) => Err(LockError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Clear the record first: an empty file under a released lock means "free, cleanly".
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
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
        let path = dir.path().join("lock");
        let first = Holder::current("release one");
        let _lock = Lock::acquire(&path, &first).unwrap();
        let err = Lock::acquire(&path, &Holder::current("release two")).unwrap_err();
        match err {
            LockError::Held { holder, .. } => assert_eq!(holder, first),
            other => panic!("expected Held, got {other}"),
        }
        assert_eq!(Lock::holder(&path).unwrap(), Some(first));
    }

    #[test]
    fn dropped_lock_is_free_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        drop(Lock::acquire(&path, &Holder::current("one")).unwrap());
        assert_eq!(Lock::holder(&path).unwrap(), None);
        let again = Lock::acquire(&path, &Holder::current("two")).unwrap();
        assert!(again.recovered().is_none());
    }

    #[test]
    fn record_left_by_a_dead_holder_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let dead = Holder {
            pid: 999_999,
            host: "ci-7".into(),
            user: "ci".into(),
            since: "2026-11-22T10:00:00Z".parse().unwrap(),
            purpose: "release 20261122-100000-dead".into(),
        };
        // What a process killed mid-release leaves: a record, and no flock (the kernel
        // dropped it with the process).
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = Lock::acquire(&path, &Holder::current("next")).unwrap();
        assert_eq!(lock.recovered(), Some(&dead));
    }
}
