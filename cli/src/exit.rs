//! Exit codes, and the mapping from every error kind to one. The README documents the table.

use std::process::ExitCode;

use shipit_pipeline::config::ConfigError;
use shipit_pipeline::history::HistoryError;
use shipit_pipeline::lock::LockError;
use shipit_pipeline::platform::target::PlanError;
use shipit_pipeline::platform::{ErrorKind, PlatformError};
use shipit_pipeline::release::ReleaseError;
use shipit_pipeline::version::VersionError;

pub const OK: u8 = 0;
pub const UNEXPECTED: u8 = 1;
pub const CONFIG: u8 = 2;
pub const LOCKED: u8 = 3;
pub const BUILD: u8 = 4;
pub const VERIFY: u8 = 5;
pub const PLATFORM: u8 = 6;
pub const NO_ROLLBACK: u8 = 7;
pub const VERSION: u8 = 8;
/// `shipit diff --exit-code` found differences (the number of a config error: the diff on
/// stdout, and no error on stderr, tell them apart).
pub const DIFFERENCES: u8 = 2;
pub const INTERRUPTED: u8 = 130;

/// A failed command: its exit code, a one-line cause and a hint.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub cause: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: u8, cause: impl Into<String>) -> Failure {
        Failure {
            code,
            cause: cause.into(),
            hint: None,
        }
    }

    /// An exit code that is no error: nothing is printed for it.
    pub fn silent(code: u8) -> Failure {
        Failure::new(code, "")
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }

    /// What a `--json` command prints on stdout when it fails:
    /// `{"error": {"exit_code", "cause", "hint"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": { "exit_code": self.code, "cause": self.cause, "hint": self.hint }
        })
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        caused(CONFIG, &e, e.hint())
    }
}

impl From<ReleaseError> for Failure {
    fn from(e: ReleaseError) -> Failure {
        let code = match &e {
            ReleaseError::Lock(_) => LOCKED,
            ReleaseError::History(_) => UNEXPECTED,
            ReleaseError::Version(_) => VERSION,
            ReleaseError::Phase { source, .. } | ReleaseError::Preflight(source) => {
                platform_code(source.kind)
            }
            ReleaseError::Interrupted { .. } => INTERRUPTED,
            // Nothing to act on: no release to roll back to, or none staged to promote.
            ReleaseError::NoRollback { .. }
            | ReleaseError::ImageGone { .. }
            | ReleaseError::NothingStaged { .. } => NO_ROLLBACK,
        };
        caused(code, &e, e.hint())
    }
}

impl From<PlatformError> for Failure {
    fn from(e: PlatformError) -> Failure {
        caused(platform_code(e.kind), &e, e.hint())
    }
}

impl From<HistoryError> for Failure {
    fn from(e: HistoryError) -> Failure {
        caused(UNEXPECTED, &e, e.hint())
    }
}

impl From<LockError> for Failure {
    fn from(e: LockError) -> Failure {
        let code = match e {
            LockError::Held { .. }
            | LockError::HeldUnknown { .. }
            | LockError::HeldRemote { .. } => LOCKED,
            LockError::Io { .. } | LockError::Remote { .. } => PLATFORM,
        };
        caused(code, &e, e.hint())
    }
}

impl From<VersionError> for Failure {
    fn from(e: VersionError) -> Failure {
        caused(VERSION, &e, e.hint())
    }
}

impl From<PlanError> for Failure {
    fn from(e: PlanError) -> Failure {
        let code = match &e {
            PlanError::Platform(e) => platform_code(e.kind),
            PlanError::Version(_) => VERSION,
            PlanError::Build(_) => BUILD,
            PlanError::Lock(_) | PlanError::Refused { .. } => UNEXPECTED,
        };
        caused(code, &e, e.hint())
    }
}

impl From<shipit_edge::EdgeError> for Failure {
    fn from(e: shipit_edge::EdgeError) -> Failure {
        caused(PLATFORM, &e, e.hint())
    }
}

/// A library error as a failure: its message is the cause, and its hint (data on the error,
/// never parsed out of the message) the hint.
fn caused(code: u8, error: &dyn std::error::Error, hint: Option<String>) -> Failure {
    Failure {
        code,
        cause: error.to_string(),
        hint,
    }
}

/// The exit code of a platform error's kind.
fn platform_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Build => BUILD,
        ErrorKind::Verify => VERIFY,
        ErrorKind::Platform => PLATFORM,
    }
}
