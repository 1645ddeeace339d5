//! The platform of a config's target, whatever its kind: how a command opens it, and the one
//! type it hands to the release state machine (which is generic over [`Platform`]).
//!
//! Every kind implements [`Kind`] (in `kind.rs`) beside [`Platform`]. The kinds are listed
//! once, in the `target_kinds!` invocation below: that list makes [`TargetPlatform`] and
//! [`Plan`] (an arm per kind), opens the arm the target's [`TargetKind`] names, and forwards
//! every call to it. So the CLI names no concrete platform and never matches on a kind, and
//! a new kind is one line here (see ARCHITECTURE.md, "Adding a target kind").

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::ecs::EcsPlatform;
use super::local::LocalPlatform;
use super::observed::Observed;
use super::{BuildInput, Candidate, Image, Live, Platform, PlatformError};
use crate::Slot;
use crate::config::{Config, TargetKind};
use crate::event::Reporter;
use crate::history::{HistoryStore, ReleaseRecord};
use crate::lock::LockStore;
use crate::shift::ShiftStrategy;

pub use super::kind::{Kind, KindPlan, Opening, PLANNED_RELEASE, PlanError, PlanHead, plan_line};

/// Defines [`TargetPlatform`] and [`Plan`] with an arm per kind, opens the arm a target's
/// kind names, and forwards every [`Platform`] call to the arm. Each kind is
/// `<TargetKind variant>(<its platform>)`; the platform implements [`Kind`].
macro_rules! target_kinds {
    ($($(#[$doc:meta])* $kind:ident($platform:ty),)+) => {
        /// The platform of one target, whatever its kind.
        pub enum TargetPlatform {
            $($(#[$doc])* $kind(Box<$platform>),)+
        }

        /// The plan of one target, whatever its kind.
        #[derive(Debug, Serialize)]
        #[serde(untagged)]
        pub enum Plan {
            $($kind(<$platform as Kind>::Plan),)+
        }

        impl Plan {
            /// The plan as a person reads it, a line each.
            pub fn lines(&self) -> Vec<String> {
                match self {
                    $(Plan::$kind(plan) => plan.lines(),)+
                }
            }

            /// Hides the values of the env variables named in `hidden` ([`KindPlan::redact_env`]).
            pub fn redact_env(&mut self, hidden: &std::collections::BTreeSet<String>) {
                match self {
                    $(Plan::$kind(plan) => plan.redact_env(hidden),)+
                }
            }
        }

        impl TargetPlatform {
            /// Opens the platform of `opening.target`, by its kind.
            pub async fn open(opening: &Opening<'_>) -> Result<TargetPlatform, PlatformError> {
                Ok(match &opening.target.kind {
                    $(TargetKind::$kind(target) => TargetPlatform::$kind(Box::new(
                        Box::pin(<$platform as Kind>::open(opening, target)).await?,
                    )),)+
                })
            }

            /// What a release would do now, read without changing anything.
            pub async fn plan(&self, config: &Config) -> Result<Plan, PlanError> {
                Ok(match self {
                    $(TargetPlatform::$kind(p) => Plan::$kind(Box::pin(p.plan(config)).await?),)+
                })
            }

            /// Whether a process of the target's own (the local edge) still runs here.
            pub fn runs_a_process(&self) -> bool {
                match self {
                    $(TargetPlatform::$kind(p) => p.runs_a_process(),)+
                }
            }

            /// How `live` is doing now, and the candidate beside it (`shipit status`).
            pub async fn observe(&self, live: Option<&Live>) -> Result<Observed, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.observe(live)).await,)+
                }
            }
        }

        impl Platform for TargetPlatform {
            fn describe(&self) -> String {
                match self { $(TargetPlatform::$kind(p) => p.describe(),)+ }
            }

            fn service(&self) -> &str {
                match self { $(TargetPlatform::$kind(p) => p.service(),)+ }
            }

            fn target(&self) -> &str {
                match self { $(TargetPlatform::$kind(p) => p.target(),)+ }
            }

            fn url(&self) -> String {
                match self { $(TargetPlatform::$kind(p) => p.url(),)+ }
            }

            fn locks(&self) -> &dyn LockStore {
                match self { $(TargetPlatform::$kind(p) => p.locks(),)+ }
            }

            fn history(&self) -> &dyn HistoryStore {
                match self { $(TargetPlatform::$kind(p) => p.history(),)+ }
            }

            fn shift_strategy(&self) -> &ShiftStrategy {
                match self { $(TargetPlatform::$kind(p) => p.shift_strategy(),)+ }
            }

            fn first_slot(&self) -> Slot {
                match self { $(TargetPlatform::$kind(p) => p.first_slot(),)+ }
            }

            fn candidate_url(&self, candidate: &Candidate) -> Option<String> {
                match self { $(TargetPlatform::$kind(p) => p.candidate_url(candidate),)+ }
            }

            async fn live(&self) -> Result<Option<Live>, PlatformError> {
                match self { $(TargetPlatform::$kind(p) => Box::pin(p.live()).await,)+ }
            }

            async fn preflight(&self, reporter: &Reporter) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.preflight(reporter)).await,)+
                }
            }

            async fn converge(&self, reporter: &Reporter) -> Result<Option<Live>, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.converge(reporter)).await,)+
                }
            }

            async fn build(
                &self,
                input: &BuildInput,
                reporter: &Reporter,
            ) -> Result<Image, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.build(input, reporter)).await,)+
                }
            }

            async fn push(&self, image: &Image, reporter: &Reporter) -> Result<Image, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.push(image, reporter)).await,)+
                }
            }

            async fn launch(
                &self,
                slot: Slot,
                release: &str,
                version: &str,
                image: &Image,
                reporter: &Reporter,
            ) -> Result<Candidate, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => {
                        Box::pin(p.launch(slot, release, version, image, reporter)).await
                    })+
                }
            }

            async fn revivable(
                &self,
                records: &[ReleaseRecord],
            ) -> Result<std::collections::BTreeSet<String>, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.revivable(records)).await,)+
                }
            }

            async fn prune(&self, reporter: &Reporter) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.prune(reporter)).await,)+
                }
            }

            async fn revive(
                &self,
                record: &ReleaseRecord,
                slot: Slot,
                reporter: &Reporter,
            ) -> Result<Candidate, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.revive(record, slot, reporter)).await,)+
                }
            }

            async fn gate(
                &self,
                change: &crate::platform::gate::GateChange,
            ) -> Result<crate::platform::gate::Gate, PlatformError> {
                match self { $(TargetPlatform::$kind(p) => Box::pin(p.gate(change)).await,)+ }
            }

            async fn migrate(
                &self,
                candidate: &Candidate,
                migrate: &crate::config::Migrate,
                reporter: &Reporter,
            ) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => {
                        Box::pin(p.migrate(candidate, migrate, reporter)).await
                    })+
                }
            }

            async fn verify(
                &self,
                candidate: &Candidate,
                reporter: &Reporter,
                cancel: &CancellationToken,
            ) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => {
                        Box::pin(p.verify(candidate, reporter, cancel)).await
                    })+
                }
            }

            async fn shift(
                &self,
                candidate: &Candidate,
                reporter: &Reporter,
            ) -> Result<Option<Live>, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.shift(candidate, reporter)).await,)+
                }
            }

            async fn split(
                &self,
                candidate: &Candidate,
                live: &Live,
                percent: u8,
                reporter: &Reporter,
            ) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => {
                        Box::pin(p.split(candidate, live, percent, reporter)).await
                    })+
                }
            }

            async fn bake(
                &self,
                candidate: &Candidate,
                period: Duration,
                reporter: &Reporter,
                cancel: &CancellationToken,
            ) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => {
                        Box::pin(p.bake(candidate, period, reporter, cancel)).await
                    })+
                }
            }

            async fn unsplit(
                &self,
                live: &Live,
                candidate: &Candidate,
                reporter: &Reporter,
            ) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => {
                        Box::pin(p.unsplit(live, candidate, reporter)).await
                    })+
                }
            }

            async fn stage(
                &self,
                candidate: &Candidate,
                reporter: &Reporter,
            ) -> Result<Option<String>, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.stage(candidate, reporter)).await,)+
                }
            }

            async fn staged(
                &self,
                slot: Slot,
                release: &str,
            ) -> Result<Option<Candidate>, PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.staged(slot, release)).await,)+
                }
            }

            async fn retire(&self, old: &Live, reporter: &Reporter) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.retire(old, reporter)).await,)+
                }
            }

            async fn discard(&self, slot: Slot, reporter: &Reporter) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.discard(slot, reporter)).await,)+
                }
            }

            async fn down(&self, reporter: &Reporter) -> Result<(), PlatformError> {
                match self {
                    $(TargetPlatform::$kind(p) => Box::pin(p.down(reporter)).await,)+
                }
            }
        }
    };
}

target_kinds! {
    /// One Docker host, with shipit's edge in front of the two slots (`kind = "local"`).
    Local(LocalPlatform),
    /// Two ECS services behind an ALB listener, optionally behind CloudFront
    /// (`kind = "ecs"`).
    Ecs(EcsPlatform),
}
