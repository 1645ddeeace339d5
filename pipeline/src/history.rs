//! The release history: one record per attempt, failed ones included.
//!
//! A record is written when a release starts and rewritten at every phase boundary, so a run
//! that crashes still leaves a record saying how far it got. Where the records live is the
//! platform's choice, behind [`HistoryStore`]: the local target keeps them in files
//! ([`FileHistory`]: each record its own JSON file, `<dir>/<id>.json`, written to a temporary
//! file, synced, renamed over the old one and the folder synced, so neither a crash nor a
//! power loss leaves a half record); a cloud target keeps them where every machine that
//! releases can read them. A record file that does not parse all the same (a disk that lied,
//! a hand edit) is moved to `<dir>/corrupt/` with a warning: one bad file never blocks the
//! history, a release or a rollback.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Slot;
use crate::event::Phase;
use crate::state_dir::{PRIVATE_FILE_MODE, create_private_dir};

/// The folder, inside the records' folder, that records which do not parse are moved to.
pub const CORRUPT_DIR: &str = "corrupt";

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A new build made live.
    Release,
    /// A previous release made live again.
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Still running, or the process died: `shipit status` and the next release tell which.
    InProgress,
    Succeeded,
    Failed {
        cause: String,
        hint: Option<String>,
    },
    /// Stopped by Ctrl-C or a signal.
    Interrupted {
        cause: String,
    },
    /// Verified and reachable for preview (`release --no-promote`), not live: waiting for
    /// `shipit promote`. `preview` says how to reach it.
    Staged {
        preview: Option<String>,
    },
    /// Was staged, and a later release or rollback replaced the candidate before promotion.
    Superseded {
        by: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::InProgress => "in progress",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::Staged { .. } => "staged",
            Outcome::Superseded { .. } => "superseded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// `None` while running; `Some(true)` when it completed.
    pub ok: Option<bool>,
    /// How long the phase waited on the platform's conditions (pauses between polls of AWS),
    /// in milliseconds; absent when it waited on none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

/// One weighted step of a shift: a share of traffic on the candidate, watched for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftStepRecord {
    /// The share of new clients sent to the candidate, 1 to 99.
    pub percent: u8,
    /// How long the step was to be watched, in milliseconds.
    pub bake_ms: u64,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// `None` while running; `Some(false)` when the bake failed or was interrupted.
    pub ok: Option<bool>,
}

impl PhaseRecord {
    pub fn duration(&self) -> Option<Duration> {
        let end = self.finished_at?;
        end.duration_since(self.started_at).try_into().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// This attempt's id.
    pub id: String,
    pub kind: Kind,
    pub service: String,
    pub target: String,
    /// The release whose container serves once this attempt succeeds: this id for a
    /// release, the restored release's id for a rollback.
    pub serves: String,
    pub slot: Option<Slot>,
    /// The image tag (e.g. `hello:1a2b3c4`) and its engine id or digest.
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// The platform's handle of what ran: the local container's id, or on an ecs target the
    /// task definition ARN, which a rollback to this release runs again while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The app version (git revision) it runs.
    pub version: String,
    pub revision: Option<String>,
    /// Library module versions that went into the image.
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
    /// Whether the image was reused rather than built.
    #[serde(default)]
    pub image_reused: bool,
    /// The release that was live when this attempt started.
    pub previous: Option<String>,
    pub user: String,
    pub host: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub phases: Vec<PhaseRecord>,
    /// The weighted steps of the shift, in order (empty for an all-at-once shift).
    #[serde(default)]
    pub shift_steps: Vec<ShiftStepRecord>,
    /// What the candidate's warm-up traffic measured, when it had some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<crate::warmup::Measured>,
    pub outcome: Outcome,
}

impl ReleaseRecord {
    pub fn begin_phase(&mut self, phase: Phase) {
        self.phases.push(PhaseRecord {
            phase,
            started_at: Timestamp::now(),
            finished_at: None,
            ok: None,
            waited_ms: None,
        });
    }

    /// Closes the most recent open record of `phase`.
    pub fn end_phase(&mut self, phase: Phase, ok: bool) {
        self.end_phase_waited(phase, ok, std::time::Duration::ZERO);
    }

    /// Closes the most recent open record of `phase`, which waited `waited` on its platform.
    pub fn end_phase_waited(&mut self, phase: Phase, ok: bool, waited: std::time::Duration) {
        if let Some(p) = self
            .phases
            .iter_mut()
            .rev()
            .find(|p| p.phase == phase && p.finished_at.is_none())
        {
            p.finished_at = Some(Timestamp::now());
            p.ok = Some(ok);
            p.waited_ms =
                (!waited.is_zero()).then(|| u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
        }
    }

    pub fn finish(&mut self, outcome: Outcome) {
        let now = Timestamp::now();
        let ok = matches!(outcome, Outcome::Succeeded | Outcome::Staged { .. });
        for p in self.phases.iter_mut().filter(|p| p.finished_at.is_none()) {
            p.finished_at = Some(now);
            p.ok = Some(ok);
        }
        for s in self
            .shift_steps
            .iter_mut()
            .filter(|s| s.finished_at.is_none())
        {
            s.finished_at = Some(now);
            s.ok = Some(ok);
        }
        self.finished_at = Some(now);
        self.outcome = outcome;
    }

    pub fn duration(&self) -> Option<Duration> {
        let end = self.finished_at?;
        end.duration_since(self.started_at).try_into().ok()
    }

    /// Whether this is a release (not a rollback) that went live: one `rollback --to` may
    /// bring back.
    pub fn went_live(&self) -> bool {
        self.kind == Kind::Release && self.outcome == Outcome::Succeeded
    }
}

/// A boxed future, so the store traits can be used as `dyn` objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where one service's release records live on one target.
pub trait HistoryStore: Send + Sync {
    /// For messages: "/path/to/releases" or "SSM /shipit/<cluster>/<service>/releases".
    fn describe(&self) -> String;
    /// Writes (or replaces) a record.
    fn save<'a>(&'a self, record: &'a ReleaseRecord) -> BoxFuture<'a, Result<(), HistoryError>>;
    /// The record of attempt `id`, if there is one.
    fn get<'a>(&'a self, id: &'a str)
    -> BoxFuture<'a, Result<Option<ReleaseRecord>, HistoryError>>;
    /// All records, newest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ReleaseRecord>, HistoryError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot write the release record {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the release history in {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the release record {} is not valid: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A store kept by a service (a cloud parameter store) failed or refused.
    #[error("release history in {store}: {message}")]
    Remote {
        store: String,
        message: String,
        hint: Option<String>,
    },
}

impl HistoryError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            HistoryError::Write { .. } => Some("check that the state directory is writable".into()),
            HistoryError::Read { .. } => None,
            HistoryError::Corrupt { .. } => {
                Some("move the file aside; the other records are intact".into())
            }
            HistoryError::Remote { hint, .. } => hint.clone(),
        }
    }
}

/// The records of one service on one target, one JSON file each in a folder.
#[derive(Debug, Clone)]
pub struct FileHistory {
    dir: PathBuf,
}

impl HistoryStore for FileHistory {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn save<'a>(&'a self, record: &'a ReleaseRecord) -> BoxFuture<'a, Result<(), HistoryError>> {
        // Small local files: the blocking calls take microseconds.
        Box::pin(std::future::ready(self.save_now(record)))
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ReleaseRecord>, HistoryError>> {
        Box::pin(std::future::ready(self.get_now(id)))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ReleaseRecord>, HistoryError>> {
        Box::pin(std::future::ready(self.list_now()))
    }
}

impl FileHistory {
    pub fn new(dir: impl Into<PathBuf>) -> FileHistory {
        FileHistory { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or replaces) a record atomically and durably: a temporary file, synced, renamed
    /// over the record, then the folder synced so the rename survives a power loss.
    pub fn save_now(&self, record: &ReleaseRecord) -> Result<(), HistoryError> {
        let path = self.path_of(&record.id);
        let err = |source| HistoryError::Write {
            path: path.clone(),
            source,
        };
        create_private_dir(&self.dir).map_err(err)?;
        let text = serde_json::to_vec_pretty(record).expect("a record serializes");
        let tmp = self.dir.join(format!(".{}.json.tmp", record.id));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(&text).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(err)?;
        sync_dir(&self.dir).map_err(err)
    }

    pub fn get_now(&self, id: &str) -> Result<Option<ReleaseRecord>, HistoryError> {
        let path = self.path_of(id);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(self.parse_or_quarantine(&path, &bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HistoryError::Read { path, source }),
        }
    }

    /// All records, newest first; a file that does not parse is moved aside and left out.
    pub fn list_now(&self) -> Result<Vec<ReleaseRecord>, HistoryError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(HistoryError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| HistoryError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Moved aside (or replaced) by another run between the listing and the read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(HistoryError::Read { path, source }),
            };
            records.extend(self.parse_or_quarantine(&path, &bytes));
        }
        records.sort_by_key(|r: &ReleaseRecord| std::cmp::Reverse(r.started_at));
        Ok(records)
    }

    /// The folder records that do not parse are moved to.
    pub fn corrupt_dir(&self) -> PathBuf {
        self.dir.join(CORRUPT_DIR)
    }

    /// The record in `bytes`, read from `path`; a record that does not parse is moved to
    /// [`CORRUPT_DIR`] with a warning, and is `None`.
    fn parse_or_quarantine(&self, path: &Path, bytes: &[u8]) -> Option<ReleaseRecord> {
        let error = match serde_json::from_slice(bytes) {
            Ok(record) => return Some(record),
            Err(error) => error,
        };
        match self.quarantine(path) {
            Ok(moved) => tracing::warn!(
                "the release record {} is not valid ({error}); moved it to {}, the other \
                 records are intact",
                path.display(),
                moved.display()
            ),
            Err(move_error) => tracing::warn!(
                "the release record {} is not valid ({error}) and could not be moved aside \
                 ({move_error}); leaving it out",
                path.display()
            ),
        }
        None
    }

    /// Moves `path` into [`CORRUPT_DIR`], under a name no earlier move took.
    fn quarantine(&self, path: &Path) -> std::io::Result<PathBuf> {
        let corrupt = self.corrupt_dir();
        create_private_dir(&corrupt)?;
        let name = path.file_name().map_or_else(
            || "record.json".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut dest = corrupt.join(&name);
        let mut n = 1;
        while dest.exists() {
            dest = corrupt.join(format!("{name}.{n}"));
            n += 1;
        }
        std::fs::rename(path, &dest)?;
        sync_dir(&corrupt)?;
        sync_dir(&self.dir)?;
        Ok(dest)
    }
}

/// Makes the entries of `dir` (a rename into or out of it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new release id: UTC time to the second plus a random suffix, so ids sort by time and
/// two releases in the same second still differ.
pub fn new_release_id() -> String {
    let now = Timestamp::now();
    let mut suffix = [0u8; 2];
    getrandom::fill(&mut suffix).expect("the OS random source works");
    format!("{}-{}", now.strftime("%Y%m%d-%H%M%S"), hex::encode(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, started: &str) -> ReleaseRecord {
        ReleaseRecord {
            id: id.into(),
            kind: Kind::Release,
            service: "hello".into(),
            target: "local".into(),
            serves: id.into(),
            slot: Some(Slot::Blue),
            image: Some("hello:abc".into()),
            image_id: None,
            handle: None,
            version: "abc".into(),
            revision: None,
            modules: BTreeMap::new(),
            image_reused: false,
            previous: None,
            user: "me".into(),
            host: "box".into(),
            started_at: started.parse().unwrap(),
            finished_at: None,
            phases: vec![],
            shift_steps: vec![],
            warmup: None,
            outcome: Outcome::InProgress,
        }
    }

    #[test]
    fn records_round_trip_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let history = FileHistory::new(dir.path().join("releases"));
        history
            .save_now(&record("a", "2026-11-22T10:00:00Z"))
            .unwrap();
        let mut b = record("b", "2026-11-22T11:00:00Z");
        b.finish(Outcome::Failed {
            cause: "unhealthy".into(),
            hint: None,
        });
        history.save_now(&b).unwrap();
        let list = history.list_now().unwrap();
        assert_eq!(
            list.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(history.get_now("b").unwrap().unwrap(), b);
        assert_eq!(history.get_now("nope").unwrap(), None);
    }

    #[test]
    fn records_that_do_not_parse_are_moved_aside_and_the_rest_listed() {
        let dir = tempfile::tempdir().unwrap();
        let history = FileHistory::new(dir.path().join("releases"));
        history
            .save_now(&record("a", "2026-11-22T10:00:00Z"))
            .unwrap();
        history
            .save_now(&record("b", "2026-11-22T11:00:00Z"))
            .unwrap();
        let whole = std::fs::read(history.path_of("b")).unwrap();
        // What a power loss can leave: an empty file, and a record cut short.
        std::fs::write(history.path_of("empty"), "").unwrap();
        std::fs::write(history.path_of("cut"), &whole[..whole.len() / 2]).unwrap();

        let list = history.list_now().unwrap();
        assert_eq!(
            list.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        for id in ["empty", "cut"] {
            assert!(!history.path_of(id).exists(), "{id} is moved away");
            assert!(
                history.corrupt_dir().join(format!("{id}.json")).exists(),
                "{id} is kept in corrupt/"
            );
        }
        // Listing again finds nothing more to move, and the next save works.
        assert_eq!(history.list_now().unwrap().len(), 2);
        history
            .save_now(&record("c", "2026-11-22T12:00:00Z"))
            .unwrap();
        assert_eq!(history.list_now().unwrap().len(), 3);
    }

    #[test]
    fn getting_a_record_that_does_not_parse_moves_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let history = FileHistory::new(dir.path());
        std::fs::write(history.path_of("x"), "{").unwrap();
        assert_eq!(history.get_now("x").unwrap(), None);
        assert!(history.corrupt_dir().join("x.json").exists());
        // A second bad file of the same name keeps the first one's copy.
        std::fs::write(history.path_of("x"), "").unwrap();
        assert_eq!(history.get_now("x").unwrap(), None);
        assert!(history.corrupt_dir().join("x.json.1").exists());
    }

    #[test]
    fn records_are_private_files_in_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let history = FileHistory::new(dir.path().join("releases"));
        history
            .save_now(&record("a", "2026-11-22T10:00:00Z"))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&history.path_of("a")), 0o600);
        assert_eq!(mode(history.dir()), 0o700);
        let names: Vec<_> = std::fs::read_dir(history.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"], "no temporary file is left behind");
    }

    #[test]
    fn remote_error_names_the_store_and_carries_its_hint() {
        let err = HistoryError::Remote {
            store: "SSM /shipit/prod/hello/releases".into(),
            message: "AccessDenied".into(),
            hint: Some("allow ssm:PutParameter".into()),
        };
        assert_eq!(
            err.to_string(),
            "release history in SSM /shipit/prod/hello/releases: AccessDenied"
        );
        assert_eq!(err.hint().as_deref(), Some("allow ssm:PutParameter"));
        let err = HistoryError::Remote {
            store: "s".into(),
            message: "m".into(),
            hint: None,
        };
        assert_eq!(err.to_string(), "release history in s: m");
        assert_eq!(err.hint(), None);
    }

    #[test]
    fn staged_records_finish_their_phases_as_done() {
        let mut r = record("s", "2026-11-22T10:00:00Z");
        r.begin_phase(Phase::Stage);
        r.finish(Outcome::Staged { preview: None });
        assert_eq!(r.phases[0].ok, Some(true));
        assert_eq!(r.outcome.label(), "staged");
        // Records written before `shift_steps` existed still load.
        let mut old = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("shift_steps");
        let back: ReleaseRecord = serde_json::from_value(old).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn release_ids_differ_and_sort_by_time() {
        let a = new_release_id();
        let b = new_release_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261122-101500-a1b2".len(), "{a}");
    }
}
