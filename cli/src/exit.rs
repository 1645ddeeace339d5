//! Exit codes, and the mapping from every error kind to one. The README documents the table.

use std::process::ExitCode;

use shipit_pipeline::config::ConfigError;
use shipit_pipeline::platform::ErrorKind;
use shipit_pipeline::release::ReleaseError;

pub const OK: u8 = 0;
pub const UNEXPECTED: u8 = 1;
pub const CONFIG: u8 = 2;
pub const LOCKED: u8 = 3;
pub const BUILD: u8 = 4;
pub const VERIFY: u8 = 5;
pub const PLATFORM: u8 = 6;
pub const NO_ROLLBACK: u8 = 7;
pub const VERSION: u8 = 8;
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

/// Splits a message that carries its own `hint:` line into cause and hint.
fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once("\nhint: ") {
        Some((cause, hint)) => (cause.to_string(), Some(hint.to_string())),
        None => (text.to_string(), None),
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        let hint = e.hint.clone();
        let mut text = e.to_string();
        if let Some(h) = &hint {
            text = text.replace(&format!("\nhint: {h}"), "");
        }
        Failure {
            code: CONFIG,
            cause: text,
            hint,
        }
    }
}

impl From<ReleaseError> for Failure {
    fn from(e: ReleaseError) -> Failure {
        let code = match &e {
            ReleaseError::Lock(_) => LOCKED,
            ReleaseError::History(_) => UNEXPECTED,
            ReleaseError::Phase { source, .. } => match source.kind {
                ErrorKind::Build => BUILD,
                ErrorKind::Verify => VERIFY,
                ErrorKind::Platform => PLATFORM,
            },
            ReleaseError::Interrupted { .. } => INTERRUPTED,
            // Nothing to act on: no release to roll back to, or none staged to promote.
            ReleaseError::NoRollback { .. } | ReleaseError::NothingStaged { .. } => NO_ROLLBACK,
        };
        let hint = e.hint();
        let (cause, own_hint) = split_hint(&e.to_string());
        Failure {
            code,
            cause,
            hint: hint.or(own_hint),
        }
    }
}

impl From<shipit_pipeline::platform::PlatformError> for Failure {
    fn from(e: shipit_pipeline::platform::PlatformError) -> Failure {
        let code = match e.kind {
            ErrorKind::Build => BUILD,
            ErrorKind::Verify => VERIFY,
            ErrorKind::Platform => PLATFORM,
        };
        Failure {
            code,
            cause: e.message,
            hint: e.hint,
        }
    }
}

impl From<shipit_pipeline::history::HistoryError> for Failure {
    fn from(e: shipit_pipeline::history::HistoryError) -> Failure {
        let (cause, hint) = split_hint(&e.to_string());
        Failure {
            code: UNEXPECTED,
            cause,
            hint,
        }
    }
}

impl From<shipit_pipeline::version::VersionError> for Failure {
    fn from(e: shipit_pipeline::version::VersionError) -> Failure {
        let (cause, hint) = split_hint(&e.to_string());
        Failure {
            code: VERSION,
            cause,
            hint,
        }
    }
}

impl From<shipit_edge::EdgeError> for Failure {
    fn from(e: shipit_edge::EdgeError) -> Failure {
        let (cause, hint) = split_hint(&e.to_string());
        Failure {
            code: PLATFORM,
            cause,
            hint,
        }
    }
}
