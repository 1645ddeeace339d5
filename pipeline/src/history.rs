//! The release history: one record per attempt, failed ones included.
//!
//! A record is written when a release starts and rewritten at every phase boundary, so a run
//! that crashes still leaves a record saying how far it got. Each record is its own JSON file
//! (`<dir>/<id>.json`), replaced atomically, so a crash mid-write never corrupts the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Slot;
use crate::event::Phase;

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
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::InProgress => "in progress",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Interrupted { .. } => "interrupted",
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
    pub outcome: Outcome,
}

impl ReleaseRecord {
    pub fn begin_phase(&mut self, phase: Phase) {
        self.phases.push(PhaseRecord {
            phase,
            started_at: Timestamp::now(),
            finished_at: None,
            ok: None,
        });
    }

    /// Closes the most recent open record of `phase`.
    pub fn end_phase(&mut self, phase: Phase, ok: bool) {
        if let Some(p) = self
            .phases
            .iter_mut()
            .rev()
            .find(|p| p.phase == phase && p.finished_at.is_none())
        {
            p.finished_at = Some(Timestamp::now());
            p.ok = Some(ok);
        }
    }

    pub fn finish(&mut self, outcome: Outcome) {
        let now = Timestamp::now();
        for p in self.phases.iter_mut().filter(|p| p.finished_at.is_none()) {
            p.finished_at = Some(now);
            p.ok = Some(outcome == Outcome::Succeeded);
        }
        self.finished_at = Some(now);
        self.outcome = outcome;
    }

    pub fn duration(&self) -> Option<Duration> {
        let end = self.finished_at?;
        end.duration_since(self.started_at).try_into().ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot write the release record {}: {source}\nhint: check that the state directory is writable", path.display())]
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
    #[error("the release record {} is not valid: {source}\nhint: move the file aside; the other records are intact", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The records of one service on one target.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
}

impl History {
    pub fn new(dir: impl Into<PathBuf>) -> History {
        History { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or replaces) a record atomically.
    pub fn save(&self, record: &ReleaseRecord) -> Result<(), HistoryError> {
        let path = self.path_of(&record.id);
        let err = |source| HistoryError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let text = serde_json::to_vec_pretty(record).expect("a record serializes");
        let tmp = self.dir.join(format!(".{}.json.tmp", record.id));
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    pub fn get(&self, id: &str) -> Result<Option<ReleaseRecord>, HistoryError> {
        let path = self.path_of(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| HistoryError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HistoryError::Read { path, source }),
        }
    }

    /// All records, newest first.
    pub fn list(&self) -> Result<Vec<ReleaseRecord>, HistoryError> {
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
            let bytes = std::fs::read(&path).map_err(|source| HistoryError::Read {
                path: path.clone(),
                source,
            })?;
            let record = serde_json::from_slice(&bytes)
                .map_err(|source| HistoryError::Corrupt { path, source })?;
            records.push(record);
        }
        records.sort_by_key(|r: &ReleaseRecord| std::cmp::Reverse(r.started_at));
        Ok(records)
    }
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
            outcome: Outcome::InProgress,
        }
    }

    #[test]
    fn records_round_trip_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path().join("releases"));
        history.save(&record("a", "2026-11-22T10:00:00Z")).unwrap();
        let mut b = record("b", "2026-11-22T11:00:00Z");
        b.finish(Outcome::Failed {
            cause: "unhealthy".into(),
            hint: None,
        });
        history.save(&b).unwrap();
        let list = history.list().unwrap();
        assert_eq!(
            list.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(history.get("b").unwrap().unwrap(), b);
        assert_eq!(history.get("nope").unwrap(), None);
    }

    #[test]
    fn corrupt_record_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::new(dir.path());
        std::fs::write(dir.path().join("x.json"), "{").unwrap();
        let err = history.list().unwrap_err().to_string();
        assert!(err.contains("x.json"), "{err}");
    }

    #[test]
    fn release_ids_differ_and_sort_by_time() {
        let a = new_release_id();
        let b = new_release_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261122-101500-a1b2".len(), "{a}");
    }
}
