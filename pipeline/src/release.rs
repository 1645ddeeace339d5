//! The release state machine: Version → Build → Push → Launch → Verify → Shift → Retire →
//! Record, over any [`Platform`].
//!
//! The order is what makes releases safe. Nothing touches the live slot before Shift, so any
//! failure (or Ctrl-C) up to Verify only has to remove the candidate. Shift is one atomic
//! platform call. Retire only runs once the new slot is live, and a failure there leaves the
//! new release serving. Every attempt is written to the history as it goes, so a crashed run
//! leaves a record of how far it got, and the next run marks it interrupted.

use std::collections::BTreeMap;
use std::future::Future;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::Slot;
use crate::event::{Event, Phase, Reporter};
use crate::git::Revision;
use crate::history::{HistoryError, Kind, Outcome, ReleaseRecord, new_release_id};
use crate::lock::{Holder, Lock, LockError, hostname, username};
use crate::platform::{BuildInput, Live, Platform, PlatformError};

/// What a release is made of, besides the service and target the platform stands for.
#[derive(Debug, Clone, Default)]
pub struct ReleaseInput {
    /// The app version: the git revision of the context (`1a2b3c4` or `1a2b3c4-dirty`).
    pub version: String,
    pub revision: Option<Revision>,
    /// Library module versions that go into the image.
    pub modules: BTreeMap<String, String>,
    /// Fires on Ctrl-C: the release stops at the next safe point.
    pub cancel: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{phase} failed: {source}")]
    Phase {
        phase: Phase,
        #[source]
        source: PlatformError,
        /// The attempt's record, as written to the history.
        record: Box<ReleaseRecord>,
    },
    #[error("interrupted during {phase}: {detail}")]
    Interrupted {
        phase: Phase,
        detail: String,
        record: Box<ReleaseRecord>,
    },
    #[error("nothing to roll back to: {reason}")]
    NoRollback { reason: String },
}

impl ReleaseError {
    /// A line on what to do next, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ReleaseError::Phase { source, .. } => source.hint.clone(),
            ReleaseError::Interrupted { .. } => Some(
                "the live slot was left serving; run `shipit status` to see it, and release again when ready"
                    .into(),
            ),
            ReleaseError::NoRollback { .. } => {
                Some("run `shipit history` to see the releases on this target".into())
            }
            _ => None,
        }
    }

    pub fn record(&self) -> Option<&ReleaseRecord> {
        match self {
            ReleaseError::Phase { record, .. } | ReleaseError::Interrupted { record, .. } => {
                Some(record)
            }
            _ => None,
        }
    }
}

/// Runs one release. Returns the finished record of a successful release.
pub async fn release<P: Platform>(
    platform: &P,
    input: &ReleaseInput,
    reporter: &Reporter,
) -> Result<ReleaseRecord, ReleaseError> {
    let lock = platform.lock(&Holder::current("release"))?;
    release_locked(platform, lock, input, reporter).await
}

/// Runs one release under a lock the caller already took (for work that must happen under
/// the same lock before the release, such as versioning the modules).
pub async fn release_locked<P: Platform>(
    platform: &P,
    lock: Lock,
    input: &ReleaseInput,
    reporter: &Reporter,
) -> Result<ReleaseRecord, ReleaseError> {
    let id = new_release_id();
    let run = Run::start(platform, reporter, lock, &id, Kind::Release, input)?;
    run.release(input).await
}

/// Makes the release that was live before the current one live again.
pub async fn rollback<P: Platform>(
    platform: &P,
    input: &ReleaseInput,
    reporter: &Reporter,
) -> Result<ReleaseRecord, ReleaseError> {
    let id = new_release_id();
    let lock = platform.lock(&Holder::current(format!("rollback {id}")))?;
    let run = Run::start(platform, reporter, lock, &id, Kind::Rollback, input)?;
    run.rollback(input).await
}

/// One attempt, holding the lock from start to record.
struct Run<'a, P: Platform> {
    platform: &'a P,
    reporter: &'a Reporter,
    record: ReleaseRecord,
    _lock: Lock,
}

impl<'a, P: Platform> Run<'a, P> {
    fn start(
        platform: &'a P,
        reporter: &'a Reporter,
        lock: Lock,
        id: &str,
        kind: Kind,
        input: &ReleaseInput,
    ) -> Result<Self, ReleaseError> {
        if let Some(dead) = lock.recovered() {
            reporter.warn(format!(
                "recovered the lock left by a run that died: {dead}"
            ));
        }
        // We hold the lock, so no record can really be in progress: those are from runs that
        // died. Say so in the history.
        for mut stale in platform.history().list()? {
            if stale.outcome == Outcome::InProgress {
                stale.finish(Outcome::Interrupted {
                    cause: "the process running it died; a later run took over".into(),
                });
                platform.history().save(&stale)?;
            }
        }
        let record = ReleaseRecord {
            id: id.to_string(),
            kind,
            service: platform.service().to_string(),
            target: platform.target().to_string(),
            serves: id.to_string(),
            slot: None,
            image: None,
            image_id: None,
            version: input.version.clone(),
            revision: input.revision.as_ref().map(|r| r.sha.clone()),
            modules: input.modules.clone(),
            image_reused: false,
            previous: None,
            user: username(),
            host: hostname(),
            started_at: Timestamp::now(),
            finished_at: None,
            phases: Vec::new(),
            outcome: Outcome::InProgress,
        };
        Ok(Run {
            platform,
            reporter,
            record,
            _lock: lock,
        })
    }

    fn save(&self) -> Result<(), ReleaseError> {
        Ok(self.platform.history().save(&self.record)?)
    }

    /// Runs `work` as `phase`: recorded, reported, and stopped by `cancel` when given.
    async fn phase<T>(
        &mut self,
        phase: Phase,
        cancel: Option<&CancellationToken>,
        work: impl Future<Output = Result<T, PlatformError>>,
    ) -> Result<T, Step> {
        self.record.begin_phase(phase);
        self.save().map_err(Step::Fatal)?;
        self.reporter.emit(Event::PhaseStarted { phase });
        let started = std::time::Instant::now();
        let result = match cancel {
            Some(cancel) => tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Step::Interrupted(phase)),
                r = work => r.map_err(|e| Step::Failed(phase, e)),
            },
            None => work.await.map_err(|e| Step::Failed(phase, e)),
        };
        self.record.end_phase(phase, result.is_ok());
        self.save().map_err(Step::Fatal)?;
        self.reporter.emit(Event::PhaseFinished {
            phase,
            elapsed: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }

    async fn release(mut self, input: &ReleaseInput) -> Result<ReleaseRecord, ReleaseError> {
        let cancel = &input.cancel;
        let platform = self.platform;
        let reporter = self.reporter;
        let outcome = async {
            let live = self
                .phase(Phase::Version, Some(cancel), platform.converge(reporter))
                .await?;
            self.record.previous = live.as_ref().map(|l| l.release.clone());
            let slot = live.as_ref().map_or(Slot::Blue, |l| l.slot.other());
            self.record.slot = Some(slot);
            let build_input = BuildInput {
                release: self.record.id.clone(),
                version: input.version.clone(),
                revision: input.revision.clone(),
                created: Timestamp::now(),
                modules: input.modules.clone(),
            };
            let image = self
                .phase(
                    Phase::Build,
                    Some(cancel),
                    platform.build(&build_input, reporter),
                )
                .await?;
            self.record.image_reused = image.reused;
            let image = self
                .phase(Phase::Push, Some(cancel), platform.push(&image, reporter))
                .await?;
            self.record.image = Some(image.reference.clone());
            self.record.image_id = Some(image.id.clone());
            let id = self.record.id.clone();
            let candidate = self
                .phase(
                    Phase::Launch,
                    Some(cancel),
                    platform.launch(slot, &id, &input.version, &image, reporter),
                )
                .await
                .map_err(|e| e.with_candidate(slot))?;
            self.phase(
                Phase::Verify,
                Some(cancel),
                platform.verify(&candidate, reporter, cancel),
            )
            .await
            .map_err(|e| e.with_candidate(slot))?;
            self.go_live(&candidate, cancel).await
        }
        .await;
        self.finish(outcome).await
    }

    async fn rollback(mut self, input: &ReleaseInput) -> Result<ReleaseRecord, ReleaseError> {
        let cancel = &input.cancel;
        let platform = self.platform;
        let reporter = self.reporter;
        let live = match platform.converge(reporter).await {
            Ok(Some(live)) => live,
            Ok(None) => {
                return Err(ReleaseError::NoRollback {
                    reason: format!("nothing is live on {}", platform.describe()),
                });
            }
            Err(source) => {
                return Err(ReleaseError::Phase {
                    phase: Phase::Version,
                    source,
                    record: Box::new(self.record),
                });
            }
        };
        let history = platform.history();
        let current = history.get(&live.release)?;
        let Some(previous_id) = current.as_ref().and_then(|r| r.previous.clone()) else {
            return Err(ReleaseError::NoRollback {
                reason: format!(
                    "release {} is live and no release was live before it",
                    live.release
                ),
            });
        };
        let Some(previous) = history.get(&previous_id)? else {
            return Err(ReleaseError::NoRollback {
                reason: format!("the record of release {previous_id} is missing"),
            });
        };
        let slot = live.slot.other();
        self.record.serves = previous.serves.clone();
        self.record.previous = Some(live.release.clone());
        self.record.slot = Some(slot);
        self.record.image = previous.image.clone();
        self.record.image_id = previous.image_id.clone();
        self.record.version = previous.version.clone();
        self.record.revision = previous.revision.clone();
        self.record.modules = previous.modules.clone();
        self.record.image_reused = true;
        self.save()?;
        let outcome = async {
            let candidate = self
                .phase(
                    Phase::Launch,
                    Some(cancel),
                    platform.revive(&previous, slot, reporter),
                )
                .await
                .map_err(|e| e.with_candidate(slot))?;
            self.phase(
                Phase::Verify,
                Some(cancel),
                platform.verify(&candidate, reporter, cancel),
            )
            .await
            .map_err(|e| e.with_candidate(slot))?;
            self.go_live(&candidate, cancel).await
        }
        .await;
        self.finish(outcome).await
    }

    /// Shift, then Retire. Neither is cancellable midway: the switch is one atomic call,
    /// and once it is done the new slot is live whatever happens next.
    async fn go_live(
        &mut self,
        candidate: &crate::platform::Candidate,
        cancel: &CancellationToken,
    ) -> Result<(), StepWithCandidate> {
        let platform = self.platform;
        let reporter = self.reporter;
        let replaced = self
            .phase(Phase::Shift, None, platform.shift(candidate, reporter))
            .await
            .map_err(|e| e.with_candidate(candidate.slot))?;
        if let Some(old) = replaced {
            match self
                .phase(Phase::Retire, Some(cancel), platform.retire(&old, reporter))
                .await
            {
                Ok(()) => {}
                Err(Step::Fatal(e)) => return Err(Step::Fatal(e).into()),
                // The new slot is live. A failed retire leaves the old slot running but
                // routed nowhere; the next release replaces it.
                Err(Step::Failed(_, e)) => reporter.warn(format!(
                    "release {} is live, but retiring the {} slot failed: {e}",
                    candidate.release, old.slot
                )),
                Err(Step::Interrupted(_)) => reporter.warn(format!(
                    "release {} is live; retiring the {} slot was interrupted and it is left running, routed nowhere",
                    candidate.release, old.slot
                )),
            }
        }
        Ok(())
    }

    /// Cleans up after a failed attempt and writes the final record.
    async fn finish(
        mut self,
        outcome: Result<(), StepWithCandidate>,
    ) -> Result<ReleaseRecord, ReleaseError> {
        let reporter = self.reporter;
        let result = match outcome {
            Ok(()) => {
                self.record.finish(Outcome::Succeeded);
                Ok(())
            }
            Err(StepWithCandidate { step, candidate }) => {
                if let Some(slot) = candidate
                    && let Err(e) = self.platform.discard(slot, reporter).await
                {
                    reporter.warn(format!(
                        "removing the candidate in the {slot} slot failed: {e}; the next release removes it"
                    ));
                }
                match step {
                    Step::Fatal(e) => return Err(e),
                    Step::Failed(phase, source) => {
                        self.record.finish(Outcome::Failed {
                            cause: format!("{phase} failed: {source}"),
                            hint: source.hint.clone(),
                        });
                        Err((phase, Some(source)))
                    }
                    Step::Interrupted(phase) => {
                        self.record.finish(Outcome::Interrupted {
                            cause: format!("interrupted during {phase}"),
                        });
                        Err((phase, None))
                    }
                }
            }
        };
        self.record.begin_phase(Phase::Record);
        self.record.end_phase(Phase::Record, true);
        self.save()?;
        match result {
            Ok(()) => Ok(self.record),
            Err((phase, Some(source))) => Err(ReleaseError::Phase {
                phase,
                source,
                record: Box::new(self.record),
            }),
            Err((phase, None)) => Err(ReleaseError::Interrupted {
                phase,
                detail: format!(
                    "the candidate was removed and {} still serves",
                    self.record
                        .previous
                        .clone()
                        .unwrap_or_else(|| "nothing".into())
                ),
                record: Box::new(self.record),
            }),
        }
    }
}

/// How a phase ended when it did not succeed.
#[derive(Debug)]
enum Step {
    Failed(Phase, PlatformError),
    Interrupted(Phase),
    /// The history could not be written: stop without further effects.
    Fatal(ReleaseError),
}

/// A failed step, and the slot of a candidate to remove, if one may exist.
#[derive(Debug)]
struct StepWithCandidate {
    step: Step,
    candidate: Option<Slot>,
}

impl From<Step> for StepWithCandidate {
    fn from(step: Step) -> Self {
        StepWithCandidate {
            step,
            candidate: None,
        }
    }
}

impl Step {
    fn with_candidate(self, slot: Slot) -> StepWithCandidate {
        StepWithCandidate {
            step: self,
            candidate: Some(slot),
        }
    }
}

/// Which slot is live now, as the platform sees it.
pub async fn live<P: Platform>(platform: &P) -> Result<Option<Live>, PlatformError> {
    platform.live().await
}
