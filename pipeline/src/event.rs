//! Progress events from the release state machine and the platforms.
//!
//! The pipeline never prints. It emits [`Event`]s to a [`Reporter`], and the CLI's printer
//! decides how they look (plain lines, a TTY spinner, CI groups, or nothing with `--json`).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// The phases of a release, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Version,
    Build,
    Push,
    Launch,
    Verify,
    /// `release --no-promote`: the verified candidate is made reachable for preview only.
    Stage,
    Shift,
    Retire,
    Record,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Version => "version",
            Phase::Build => "build",
            Phase::Push => "push",
            Phase::Launch => "launch",
            Phase::Verify => "verify",
            Phase::Stage => "stage",
            Phase::Shift => "shift",
            Phase::Retire => "retire",
            Phase::Record => "record",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PhaseStarted {
        phase: Phase,
    },
    /// A phase ended; `ok` is false when it failed or was interrupted.
    PhaseFinished {
        phase: Phase,
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
        ok: bool,
    },
    /// A line of progress within a phase (a build step, a probe, a drain count).
    Progress {
        phase: Phase,
        message: String,
    },
    /// `done` of `total` items of a phase are through (layers pushed, build steps run). A
    /// terminal shows it as a bar; the `Progress` lines beside it carry the words.
    Count {
        phase: Phase,
        done: u64,
        total: u64,
    },
    /// A weighted step of the shift begins: `percent` of new clients go to the candidate,
    /// which is then watched for `bake`. Step `index` of `total`; the switch to 100 % follows
    /// the last one.
    ShiftStep {
        index: usize,
        total: usize,
        percent: u8,
        #[serde(rename = "bake_ms", serialize_with = "millis")]
        bake: Duration,
    },
    /// Time passing in the bake of step `index`: `elapsed` of `period`. Sent about once a
    /// second, and once more with `elapsed == period` when the step passed.
    Bake {
        index: usize,
        total: usize,
        percent: u8,
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
        #[serde(rename = "period_ms", serialize_with = "millis")]
        period: Duration,
    },
    /// Something the user should know that does not stop the release.
    Warning {
        message: String,
    },
    /// A line about the run as a whole, outside any phase: what is released where, the
    /// module versions the version step settled on.
    Note {
        message: String,
    },
}

/// A duration as whole milliseconds, the way events carry them (`SHIPIT_EVENTS=json`).
fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where events go. Cheap to clone; the default drops everything.
#[derive(Clone, Default)]
pub struct Reporter {
    sink: Option<Arc<dyn Fn(Event) + Send + Sync>>,
}

impl Reporter {
    pub fn new(sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Reporter {
            sink: Some(Arc::new(sink)),
        }
    }

    pub fn emit(&self, event: Event) {
        if let Some(sink) = &self.sink {
            sink(event);
        }
    }

    pub fn progress(&self, phase: Phase, message: impl Into<String>) {
        self.emit(Event::Progress {
            phase,
            message: message.into(),
        });
    }

    pub fn note(&self, message: impl Into<String>) {
        self.emit(Event::Note {
            message: message.into(),
        });
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}
