//! What a target kind implements beside [`Platform`]: how it opens from its part of the
//! config ([`Opening`]), its plan (what a release would do now, without doing it), and
//! whether it leaves a process of its own running; and what every kind's plan shares. The
//! list of kinds that implement it is `target.rs`.

use std::future::Future;
use std::path::Path;

use serde::Serialize;

use super::observed::Observed;
use super::{Live, Platform, PlatformError};
use crate::Slot;
use crate::build::BuildError;
use crate::config::{Config, Service, Target};
use crate::lock::{Holder, LockError};
use crate::version::VersionError;

/// The release id a plan shows where a real run would have a new one.
pub const PLANNED_RELEASE: &str = "<release id>";

/// What a platform is opened for, and with what.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    pub config: &'a Config,
    pub service: &'a Service,
    pub target: &'a Target,
    /// The shipit executable, which a kind may start again as a process of its own (the
    /// local edge runs as `shipit edge run`).
    pub exe: &'a Path,
    /// For a plan (`shipit plan`, `release --dry-run`): a kind whose calls can be checked
    /// refuses every one that would change the target, so a plan cannot change anything even
    /// through a bug.
    pub read_only: bool,
}

/// What a target kind adds to [`Platform`]. Implemented by each kind's platform.
pub trait Kind: Platform + Sized {
    /// The kind's part of the config (`[targets.<name>]` with its `kind`).
    type Target;
    /// What `shipit plan` reports for a target of this kind.
    type Plan: KindPlan;

    /// Opens the platform of `target` for the service and config of `opening`.
    fn open(
        opening: &Opening<'_>,
        target: &Self::Target,
    ) -> impl Future<Output = Result<Self, PlatformError>>;

    /// What a release would do now, read without changing anything.
    fn plan(&self, config: &Config) -> impl Future<Output = Result<Self::Plan, PlanError>>;

    /// Whether a process of the target's own (the local edge) still runs on this machine.
    fn runs_a_process(&self) -> bool;

    /// How `live` is doing now, and the candidate beside it, for `shipit status`. A kind
    /// that cannot probe reports nothing.
    fn observe(
        &self,
        live: Option<&Live>,
    ) -> impl Future<Output = Result<Observed, PlatformError>> {
        let _ = live;
        async { Ok(Observed::default()) }
    }
}

/// A kind's plan: serialized as it is for `--json`, shown as lines of text otherwise.
pub trait KindPlan: Serialize + std::fmt::Debug {
    /// The plan as a person reads it, a line each; it starts with [`PlanHead::lines`].
    fn lines(&self) -> Vec<String>;

    /// Replaces the values of the env variables named in `hidden` with
    /// [`crate::config::REDACTED`] wherever the plan shows the service's environment. The
    /// plan is built with the real values (a pure builder's output); they are hidden when it
    /// is printed. A plan that shows no environment has nothing to do.
    fn redact_env(&mut self, hidden: &std::collections::BTreeSet<String>) {
        let _ = hidden;
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The module versions could not be planned.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The release lock could not be read.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The build context could not be hashed, or the engine asked about its images.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A kind opened read-only saw a call that is not a read, and refused it.
    #[error("the plan tried to call {operation}, which is not a read; it was refused")]
    Refused { operation: String },
}

impl PlanError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            PlanError::Platform(e) => e.hint(),
            PlanError::Version(e) => e.hint(),
            PlanError::Lock(e) => e
                .hint()
                .or_else(|| Some("check that the state directory is readable".into())),
            PlanError::Build(e) => e.hint(),
            PlanError::Refused { .. } => {
                Some("this is a bug in shipit; nothing was changed".into())
            }
        }
    }
}

/// What every kind's plan starts with: what would be released where, who holds the lock,
/// and what is live. Flattened into each plan's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct PlanHead {
    pub service: String,
    pub target: String,
    pub url: String,
    /// The app version the release would carry (its git revision), before any version commit.
    pub version: String,
    /// Who holds the release lock now; null when it is free.
    pub lock: Option<Holder>,
    /// What serves now; null before the first release.
    pub live: Option<Live>,
    /// The slot the new release would start in.
    pub slot: Slot,
    /// How the target is named in the text, e.g. `local target "local"`.
    #[serde(skip)]
    pub described: String,
}

impl PlanHead {
    /// The head of `platform`'s plan of a release of `version`, with the lock's holder and
    /// what is live as read.
    pub fn new(
        platform: &impl Platform,
        version: &str,
        lock: Option<Holder>,
        live: Option<Live>,
    ) -> PlanHead {
        PlanHead {
            service: platform.service().to_string(),
            target: platform.target().to_string(),
            url: platform.url(),
            version: version.to_string(),
            lock,
            slot: live
                .as_ref()
                .map_or_else(|| platform.first_slot(), |l| l.slot.other()),
            live,
            described: platform.describe(),
        }
    }

    /// The first lines of the plan's text.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "shipit release would release {} {} to {} (nothing was changed):",
            self.service, self.version, self.described
        )];
        lines.push(plan_line(
            "lock",
            &match &self.lock {
                Some(holder) => format!("held by {holder}: the release would be refused (exit 3)"),
                None => "free".to_string(),
            },
        ));
        lines.push(plan_line(
            "live",
            &match &self.live {
                Some(live) => format!("{} slot, release {}", live.slot, live.release),
                None => "nothing: this would be the first release".to_string(),
            },
        ));
        lines
    }
}

/// One labelled line of a plan: `  <label>  <text>`, the labels in a column.
pub fn plan_line(label: &str, text: &str) -> String {
    format!("  {label:<9}  {text}")
}
