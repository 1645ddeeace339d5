//! The release state machine: Version → Build → Push → Launch → Verify → Shift → Retire →
//! Record, over any [`Platform`].
//!
//! The order is what makes releases safe. Nothing touches the live slot before Shift, so any
//! failure (or Ctrl-C) up to Verify only has to remove the candidate. Shift follows the
//! target's [`ShiftStrategy`]: all at once is one atomic platform call; a canary or linear
//! shift first sends growing shares of new clients to the candidate, baking each share, and
//! a failed or interrupted bake puts all traffic back on the live slot before the candidate
//! is removed. The final switch to 100 % is atomic and not interruptible. Retire only runs
//! once the new slot is live, and a failure there leaves the new release serving.
//!
//! `release --no-promote` stops after Verify with the candidate staged for preview (outcome
//! `staged`); [`promote`] later takes that same record through Verify (again), Shift and
//! Retire. A release or rollback that starts while a candidate is staged replaces it, and
//! marks its record `superseded`.
//!
//! Every attempt is written to the history as it goes, so a crashed run leaves a record of
//! how far it got. The next run finishes it by what is true: `succeeded` when its release
//! is live (it died after its switch; the slot it replaced is then retired, see
//! [`DeadRuns`]), `interrupted` otherwise. The record is saved right after the switch, and
//! the platform makes the candidate ready to be live (restart policy) before it. The lock
//! is held from the first record to the last and released at the end, failed runs
//! included. [`crate::fault`] names the points where the crash tests kill a run.
//!
//! The Version phase starts before the record: under the lock, the version step applies the
//! new module versions (writes, commits and tags them; see [`crate::version::prepare_release`])
//! and reads the app version from the commit that makes; then the recorded Version phase
//! brings the target to a known state (`converge`).

mod rollback;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::Slot;
use crate::config::{Config, Hooks, Service};
use crate::event::{Event, Phase, Reporter};
use crate::fault::{self, FaultPoint};
use crate::git::Revision;
use crate::history::{HistoryError, Kind, Outcome, ReleaseRecord, ShiftStepRecord, new_release_id};
use crate::lock::{Holder, LockError, hostname, username};
use crate::platform::{BuildInput, Candidate, Live, Platform, PlatformError};
use crate::shift::{ShiftStep, ShiftStrategy};
use crate::version::{self, VersionError};

mod dead_runs;
mod verify;
pub use self::rollback::{RollbackMark, rollback, rollback_marks};
use dead_runs::DeadRuns;
use verify::Checks;

/// How often a bake in progress is reported.
pub const BAKE_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What `shipit release` is asked for, besides the service and target the platform stands for.
#[derive(Debug, Clone, Default)]
pub struct ReleaseOptions {
    /// Take the module versions from their files as they are: no plan, no commit, no tags
    /// (`release --no-version`).
    pub no_version: bool,
    /// Stop after Verify with the candidate staged for preview (`release --no-promote`).
    pub no_promote: bool,
    /// Fires on Ctrl-C: the release stops at the next safe point.
    pub cancel: CancellationToken,
}

/// What a run is made of, besides the service and target the platform stands for.
#[derive(Debug, Clone, Default)]
struct ReleaseInput {
    /// The app version: the git revision of the context (`1a2b3c4` or `1a2b3c4-dirty`).
    version: String,
    revision: Option<Revision>,
    /// Library module versions that go into the image.
    modules: BTreeMap<String, String>,
    /// Fires on Ctrl-C: the run stops at the next safe point.
    cancel: CancellationToken,
    /// Stop after Verify with the candidate staged for preview (`release --no-promote`).
    no_promote: bool,
    /// The service's hooks, and the folder the runner hooks run in (the config's).
    hooks: Hooks,
    /// The service's warm-up traffic, if any.
    warmup: Option<crate::config::Warmup>,
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The version step could not plan or apply the module versions.
    #[error(transparent)]
    Version(#[from] VersionError),
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
    /// What the release needs is missing (an ecs target's account); nothing was changed.
    #[error("{0}")]
    Preflight(PlatformError),
    #[error("nothing to roll back to: {reason}")]
    NoRollback { reason: String },
    /// `rollback --to` named a release whose image the target no longer has.
    #[error("cannot roll back to release {release}: its image {image} is no longer on {target}")]
    ImageGone {
        release: String,
        image: String,
        target: String,
        /// The commit it was built from, to release it again.
        revision: Option<String>,
    },
    #[error("nothing to promote: {reason}")]
    NothingStaged { reason: String },
}

impl ReleaseError {
    /// A line on what to do next, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ReleaseError::Lock(e) => e.hint(),
            ReleaseError::History(e) => e.hint(),
            ReleaseError::Version(e) => e.hint(),
            ReleaseError::Phase { source, .. } | ReleaseError::Preflight(source) => source.hint(),
            ReleaseError::Interrupted { .. } => Some(
                "the live slot was left serving; run `shipit status` to see it, and release again when ready"
                    .into(),
            ),
            ReleaseError::NoRollback { .. } => {
                Some("run `shipit history` to see the releases on this target".into())
            }
            ReleaseError::ImageGone { revision, .. } => Some(format!(
                "`shipit history` marks the releases that can still be rolled back to; to run this one again, check out {} and `shipit release`",
                revision
                    .as_deref()
                    .map_or("its commit".to_string(), |r| format!("commit {r}"))
            )),
            ReleaseError::NothingStaged { .. } => Some(
                "stage a release with `shipit release --no-promote`; `shipit history` lists the releases on this target"
                    .into(),
            ),
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

/// Runs one release of `service` (the platform's) from `config`: takes the lock, runs the
/// version step, reads the app version from the commit it makes, then runs the phases.
/// Returns the finished record of a successful (or staged) release. The lock is released
/// when the release ends, however it ends.
pub async fn release<P: Platform>(
    platform: &P,
    config: &Config,
    service: &Service,
    options: &ReleaseOptions,
    reporter: &Reporter,
) -> Result<ReleaseRecord, ReleaseError> {
    // The lock comes first: the version step commits and tags, and two releases must not.
    under_lock(
        platform,
        "release".into(),
        &options.cancel,
        reporter,
        async {
            // Before anything is versioned, built or changed.
            platform
                .preflight(reporter)
                .await
                .map_err(ReleaseError::Preflight)?;
            // Before the revision is read: applying versions makes the commit the app is built
            // from.
            let modules = version_step(config, options.no_version, reporter)?;
            let (version, revision) = crate::git::app_version(&service.context);
            reporter.note(format!(
                "releasing {} {version} to {}",
                service.name,
                platform.describe()
            ));
            let input = ReleaseInput {
                version,
                revision,
                modules,
                cancel: options.cancel.clone(),
                no_promote: options.no_promote,
                hooks: service.hooks.clone(),
                warmup: service.warmup.clone(),
                dir: config.dir.clone(),
            };
            let id = new_release_id();
            let run = Run::start(platform, reporter, &id, Kind::Release, &input).await?;
            let result = Box::pin(run.release(&input)).await;
            after_hooks(platform, &input, &result, reporter).await;
            result
        },
    )
    .await
}

/// `post_release` once a release is live, `on_failure` once one failed or was interrupted
/// (the live slot serving again). Their own failure is a warning: the release's outcome
/// stands.
async fn after_hooks<P: Platform>(
    platform: &P,
    input: &ReleaseInput,
    result: &Result<ReleaseRecord, ReleaseError>,
    reporter: &Reporter,
) {
    let (name, hook, record, live) = match result {
        Ok(record) if record.outcome == Outcome::Succeeded => (
            "post_release",
            &input.hooks.post_release,
            record,
            Some(record.serves.as_str()),
        ),
        Err(ReleaseError::Phase { record, .. } | ReleaseError::Interrupted { record, .. }) => (
            "on_failure",
            &input.hooks.on_failure,
            &**record,
            record.previous.as_deref(),
        ),
        _ => return,
    };
    let Some(hook) = hook else {
        return;
    };
    let env = crate::hook::environment(platform, &record.id, record.slot, None, live);
    if let Err(e) =
        crate::hook::run_hook(name, hook, &input.dir, &env, Phase::Record, reporter).await
    {
        reporter.warn(format!(
            "{}; release {} {} all the same",
            e.message,
            record.id,
            record.outcome.label()
        ));
    }
}

/// The version step: the module versions that go into the image, applied first (written,
/// committed and tagged) unless `no_version`. A dirty work tree skips the apply with a
/// warning rather than failing the release; the image then records the versions the files
/// hold.
fn version_step(
    config: &Config,
    no_version: bool,
    reporter: &Reporter,
) -> Result<BTreeMap<String, String>, VersionError> {
    if config.modules.is_empty() {
        return Ok(BTreeMap::new());
    }
    if no_version {
        reporter.note("--no-version: module versions are taken from their files as they are");
        return version::current(config);
    }
    let step = version::prepare_release(config)?;
    if let Some(applied) = &step.applied {
        let commit = applied
            .commit
            .as_deref()
            .map_or(String::new(), |c| format!(" in {}", &c[..c.len().min(12)]));
        reporter.note(format!(
            "versioned the modules{commit}: tagged {}",
            applied.tags.join(", ")
        ));
    }
    if let Some(why) = &step.skipped {
        reporter.warn(why.clone());
    }
    let listed: Vec<String> = step
        .modules
        .iter()
        .map(|(name, v)| format!("{name} {v}"))
        .collect();
    reporter.note(format!("modules: {}", listed.join(", ")));
    Ok(step.modules)
}

/// Makes the newest staged release (`release --no-promote`) live: checks that its candidate
/// still runs, verifies it again, then shifts traffic to it by the target's strategy and
/// retires the old slot. The staged record is the one finished.
pub async fn promote<P: Platform>(
    platform: &P,
    cancel: CancellationToken,
    reporter: &Reporter,
) -> Result<ReleaseRecord, ReleaseError> {
    reporter.note(format!(
        "promoting the staged release of {} on {}",
        platform.service(),
        platform.describe()
    ));
    let input = ReleaseInput {
        cancel,
        ..ReleaseInput::default()
    };
    let cancel = input.cancel.clone();
    under_lock(platform, "promote".into(), &cancel, reporter, async {
        // What a dead run left running is retired by the next release or rollback.
        DeadRuns::finish(platform, reporter).await?;
        let Some(record) = staged_record(platform).await? else {
            return Err(ReleaseError::NothingStaged {
                reason: format!(
                    "no release of {} is staged on {}",
                    platform.service(),
                    platform.describe()
                ),
            });
        };
        let run = Run {
            platform,
            reporter,
            record,
            dead: DeadRuns::default(),
            waited_at: Vec::new(),
        };
        Box::pin(run.promote(&input)).await
    })
    .await
}

/// The newest record still staged for promotion, if any.
pub async fn staged_record<P: Platform>(
    platform: &P,
) -> Result<Option<ReleaseRecord>, HistoryError> {
    Ok(platform
        .history()
        .list()
        .await?
        .into_iter()
        .find(|r| matches!(r.outcome, Outcome::Staged { .. })))
}

/// Takes the platform's release lock for `what` and runs `work` under it: says first when the
/// lock was recovered from a run that died, and frees the lock when `work` ends, however it
/// ends. The run's outcome stands whatever happens to the lock.
async fn under_lock<T>(
    platform: &impl Platform,
    what: String,
    cancel: &CancellationToken,
    reporter: &Reporter,
    work: impl Future<Output = Result<T, ReleaseError>>,
) -> Result<T, ReleaseError> {
    let lock = platform.locks().acquire(&Holder::current(what)).await?;
    if let Some(dead) = lock.recovered() {
        reporter.warn(format!(
            "recovered the lock left by a run that died: {dead}"
        ));
    }
    // A run whose lock is no longer its own (its lease was taken over while it could not
    // renew it, or the lock was broken) stops as if interrupted: the live slot keeps serving.
    let lost = lock.lost();
    let stop = async {
        lost.cancelled().await;
        reporter.warn(
            "this run's release lock is no longer its own (taken over or broken): stopping as if interrupted",
        );
        cancel.cancel();
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        biased;
        result = work => result,
        () = stop => unreachable!("the stop never ends"),
    };
    if let Err(e) = lock.release().await {
        reporter.warn(format!("releasing the lock failed: {e}"));
    }
    result
}

/// How a run that did not fail ended.
enum Done {
    /// The candidate is live.
    Live,
    /// The candidate is staged for preview; how to reach it.
    Staged(Option<String>),
}

/// One attempt, recorded from start to finish.
struct Run<'a, P: Platform> {
    platform: &'a P,
    reporter: &'a Reporter,
    record: ReleaseRecord,
    /// What runs that died before this one left behind.
    dead: DeadRuns,
    /// The time waited on the platform when each open phase began ([`crate::waited`]).
    waited_at: Vec<(Phase, std::time::Duration)>,
}

impl<'a, P: Platform> Run<'a, P> {
    async fn start(
        platform: &'a P,
        reporter: &'a Reporter,
        id: &str,
        kind: Kind,
        input: &ReleaseInput,
    ) -> Result<Self, ReleaseError> {
        let dead = DeadRuns::finish(platform, reporter).await?;
        let record = ReleaseRecord {
            id: id.to_string(),
            kind,
            service: platform.service().to_string(),
            target: platform.target().to_string(),
            serves: id.to_string(),
            slot: None,
            image: None,
            image_id: None,
            handle: None,
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
            shift_steps: Vec::new(),
            warmup: None,
            outcome: Outcome::InProgress,
        };
        Ok(Run {
            platform,
            reporter,
            record,
            dead,
            waited_at: Vec::new(),
        })
    }

    async fn save(&self) -> Result<(), ReleaseError> {
        Ok(self.platform.history().save(&self.record).await?)
    }

    fn begin(&mut self, phase: Phase) {
        self.waited_at.push((phase, crate::waited::total()));
        self.record.begin_phase(phase);
        self.reporter.emit(Event::PhaseStarted { phase });
    }

    fn end(&mut self, phase: Phase, started: std::time::Instant, ok: bool) {
        let since = match self.waited_at.iter().rposition(|(p, _)| *p == phase) {
            Some(i) => self.waited_at.remove(i).1,
            None => crate::waited::total(),
        };
        self.record
            .end_phase_waited(phase, ok, crate::waited::total().saturating_sub(since));
        self.reporter.emit(Event::PhaseFinished {
            phase,
            elapsed: started.elapsed(),
            ok,
        });
    }

    /// Runs `work` as `phase`: recorded, reported, and stopped by `cancel` when given.
    async fn phase<T>(
        &mut self,
        phase: Phase,
        cancel: Option<&CancellationToken>,
        work: impl Future<Output = Result<T, PlatformError>>,
    ) -> Result<T, Step> {
        let started = std::time::Instant::now();
        self.begin(phase);
        self.save().await.map_err(Step::Fatal)?;
        let result = match cancel {
            Some(cancel) => tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Step::Interrupted(phase)),
                r = work => r.map_err(|e| Step::Failed(phase, e)),
            },
            None => work.await.map_err(|e| Step::Failed(phase, e)),
        };
        self.record.end_phase(phase, result.is_ok());
        self.save().await.map_err(Step::Fatal)?;
        self.reporter.emit(Event::PhaseFinished {
            phase,
            elapsed: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }

    /// A staged candidate stands in the idle slot this run replaces: its record says so.
    async fn supersede_staged(&mut self) -> Result<(), Step> {
        let history = self.platform.history();
        let records = history.list().await.map_err(|e| Step::Fatal(e.into()))?;
        for mut staged in records {
            if matches!(staged.outcome, Outcome::Staged { .. }) && staged.id != self.record.id {
                staged.outcome = Outcome::Superseded {
                    by: self.record.id.clone(),
                };
                history
                    .save(&staged)
                    .await
                    .map_err(|e| Step::Fatal(e.into()))?;
                self.reporter.warn(format!(
                    "release {} was staged and never promoted; this {} replaces it",
                    staged.id,
                    match self.record.kind {
                        Kind::Release => "release",
                        Kind::Rollback => "rollback",
                    }
                ));
            }
        }
        Ok(())
    }

    async fn release(mut self, input: &ReleaseInput) -> Result<ReleaseRecord, ReleaseError> {
        let cancel = &input.cancel;
        let platform = self.platform;
        let reporter = self.reporter;
        let outcome = async {
            let dead = std::mem::take(&mut self.dead);
            let live = self
                .phase(Phase::Version, Some(cancel), async {
                    let live = converge(platform, reporter).await?;
                    dead.retire(platform, reporter).await;
                    Ok(live)
                })
                .await?;
            self.supersede_staged().await?;
            // A foreign live slot is no release of ours to go back to.
            self.record.previous = live
                .as_ref()
                .filter(|l| l.foreign.is_none())
                .map(|l| l.release.clone());
            let slot = live
                .as_ref()
                .map_or_else(|| platform.first_slot(), |l| l.slot.other());
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
            self.record.handle = Some(candidate.handle.clone());
            fault::point(FaultPoint::AfterLaunch);
            let pre_switch = input.hooks.pre_switch.as_ref().map(|hook| {
                let env = crate::hook::environment(
                    platform,
                    &id,
                    Some(slot),
                    platform.candidate_url(&candidate),
                    self.record.previous.as_deref(),
                );
                (hook, input.dir.as_path(), env)
            });
            let checks = Checks {
                migrate: input.hooks.migrate.as_ref(),
                warmup: input.warmup.as_ref(),
                pre_switch,
            };
            self.verify(&candidate, checks, cancel).await?;
            if input.no_promote {
                let how = self
                    .phase(
                        Phase::Stage,
                        Some(cancel),
                        platform.stage(&candidate, reporter),
                    )
                    .await
                    .map_err(|e| e.with_candidate(slot))?;
                return Ok(Done::Staged(how));
            }
            self.go_live(&candidate, live.as_ref(), cancel).await?;
            Ok(Done::Live)
        }
        .await;
        self.finish(outcome).await
    }

    /// Takes a staged record live: the candidate must still run, and passes Verify again.
    async fn promote(mut self, input: &ReleaseInput) -> Result<ReleaseRecord, ReleaseError> {
        let cancel = &input.cancel;
        let platform = self.platform;
        let reporter = self.reporter;
        let id = self.record.id.clone();
        let Some(slot) = self.record.slot else {
            return Err(ReleaseError::NothingStaged {
                reason: format!("the record of staged release {id} names no slot"),
            });
        };
        let live = match platform.live().await {
            Ok(live) => live,
            Err(source) => return Err(self.failed(Phase::Version, source)),
        };
        if live.as_ref().is_some_and(|l| l.slot == slot) {
            return Err(ReleaseError::NothingStaged {
                reason: format!(
                    "release {id} was staged in the {slot} slot, which is live now (release {})",
                    live.as_ref().map_or("", |l| l.release.as_str())
                ),
            });
        }
        let candidate = match platform.staged(slot, &id).await {
            Ok(Some(candidate)) => candidate,
            Ok(None) => {
                return Err(ReleaseError::NothingStaged {
                    reason: format!(
                        "release {id} was staged in the {slot} slot, but its candidate no longer runs there on {}",
                        platform.describe()
                    ),
                });
            }
            Err(source) => return Err(self.failed(Phase::Verify, source)),
        };
        reporter.progress(
            Phase::Verify,
            format!("promoting release {id}, staged in the {slot} slot"),
        );
        self.record.previous = live.as_ref().map(|l| l.release.clone());
        self.record.outcome = Outcome::InProgress;
        self.record.finished_at = None;
        self.save().await?;
        let outcome = async {
            // Its migration and warm-up ran when it was staged.
            self.verify(&candidate, Checks::default(), cancel).await?;
            self.go_live(&candidate, live.as_ref(), cancel).await?;
            Ok(Done::Live)
        }
        .await;
        self.finish(outcome).await
    }

    /// The failure of `phase` before the run changed anything, with the record as it is.
    fn failed(self, phase: Phase, source: PlatformError) -> ReleaseError {
        ReleaseError::Phase {
            phase,
            source,
            record: Box::new(self.record),
        }
    }

    /// Shift, then Retire. The weighted steps of the shift can be stopped (Ctrl-C, or a
    /// failed bake): traffic then goes back to the live slot. The final switch is one atomic
    /// call, and once it is done the new slot is live whatever happens next.
    async fn go_live(
        &mut self,
        candidate: &Candidate,
        live: Option<&Live>,
        cancel: &CancellationToken,
    ) -> Result<(), StepWithCandidate> {
        let platform = self.platform;
        let reporter = self.reporter;
        let started = std::time::Instant::now();
        self.begin(Phase::Shift);
        self.save()
            .await
            .map_err(|e| Step::Fatal(e).with_candidate(candidate.slot))?;
        let strategy = *platform.shift_strategy();
        match live {
            Some(live) if strategy.is_weighted() => {
                if let Err(step) = self
                    .weighted_steps(&strategy, candidate, live, cancel)
                    .await
                {
                    self.end(Phase::Shift, started, false);
                    self.save()
                        .await
                        .map_err(|e| Step::Fatal(e).with_candidate(candidate.slot))?;
                    return Err(step.with_candidate(candidate.slot));
                }
            }
            None if strategy.is_weighted() => reporter.progress(
                Phase::Shift,
                format!("nothing is live yet: {strategy} has nothing to split; switching at once"),
            ),
            _ => {}
        }
        let switched = platform.shift(candidate, reporter).await;
        if switched.is_ok() {
            fault::point(FaultPoint::AfterSwitch);
        }
        // Saved at once: from the switch on, the record must say the candidate is live.
        self.end(Phase::Shift, started, switched.is_ok());
        let saved = self.save().await;
        let replaced =
            switched.map_err(|e| Step::Failed(Phase::Shift, e).with_candidate(candidate.slot))?;
        // Live now: whatever fails from here on, the candidate is not removed.
        saved.map_err(Step::Fatal)?;
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

    /// The weighted steps before the switch: split, then bake, for each. On a failed bake,
    /// a failed split or Ctrl-C, all traffic goes back to `live` before this returns.
    async fn weighted_steps(
        &mut self,
        strategy: &ShiftStrategy,
        candidate: &Candidate,
        live: &Live,
        cancel: &CancellationToken,
    ) -> Result<(), Step> {
        let platform = self.platform;
        let reporter = self.reporter;
        for step in strategy.steps() {
            self.record.shift_steps.push(ShiftStepRecord {
                percent: step.percent,
                bake_ms: u64::try_from(step.bake.as_millis()).unwrap_or(u64::MAX),
                started_at: Timestamp::now(),
                finished_at: None,
                ok: None,
            });
            self.save().await.map_err(Step::Fatal)?;
            reporter.emit(Event::ShiftStep {
                index: step.index,
                total: step.total,
                percent: step.percent,
                bake: step.bake,
            });
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Step::Interrupted(Phase::Shift)),
                r = async {
                    platform
                        .split(candidate, live, step.percent, reporter)
                        .await?;
                    fault::point(FaultPoint::MidBake);
                    bake_reported(platform, candidate, &step, reporter, cancel).await
                } => r.map_err(|e| Step::Failed(Phase::Shift, e)),
            };
            // A bake stops early, with Ok, when Ctrl-C fires.
            let result = match result {
                Ok(()) if cancel.is_cancelled() => Err(Step::Interrupted(Phase::Shift)),
                other => other,
            };
            let ok = result.is_ok();
            if let Some(record) = self.record.shift_steps.last_mut() {
                record.finished_at = Some(Timestamp::now());
                record.ok = Some(ok);
            }
            // A history that cannot be written stops the release too, split undone.
            let result = match (result, self.save().await) {
                (Err(step), _) => Err(step),
                (Ok(()), Err(e)) => Err(Step::Fatal(e)),
                (Ok(()), Ok(())) => Ok(()),
            };
            if let Err(step) = result {
                if let Err(e) = platform.unsplit(live, candidate, reporter).await {
                    reporter.warn(format!(
                        "putting all traffic back on the {} slot failed: {e}; run `shipit status` and check the routing",
                        live.slot
                    ));
                }
                return Err(step);
            }
        }
        Ok(())
    }

    /// Cleans up after a failed attempt and writes the final record.
    async fn finish(
        mut self,
        outcome: Result<Done, StepWithCandidate>,
    ) -> Result<ReleaseRecord, ReleaseError> {
        let reporter = self.reporter;
        let result = match outcome {
            Ok(Done::Live) => {
                self.record.finish(Outcome::Succeeded);
                Ok(())
            }
            Ok(Done::Staged(preview)) => {
                self.record.finish(Outcome::Staged { preview });
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
                            hint: source.hint(),
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
        self.save().await?;
        // What older releases left is removed once this one is live and recorded; the
        // release stands whatever happens to it.
        if self.record.outcome == Outcome::Succeeded
            && let Err(e) = self.platform.prune(reporter).await
        {
            reporter.warn(format!("removing older images failed: {e}"));
        }
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

/// The platform's converge, and what it found live, said once for every kind.
async fn converge<P: Platform>(
    platform: &P,
    reporter: &Reporter,
) -> Result<Option<Live>, PlatformError> {
    let live = platform.converge(reporter).await?;
    match &live {
        Some(l) => reporter.progress(
            Phase::Version,
            format!("live: {} slot, release {}", l.slot, l.release),
        ),
        None => reporter.progress(Phase::Version, "nothing live yet: first release"),
    }
    Ok(live)
}

/// Runs the platform's bake for one step, reporting the time passed about once a second.
async fn bake_reported<P: Platform>(
    platform: &P,
    candidate: &Candidate,
    step: &ShiftStep,
    reporter: &Reporter,
    cancel: &CancellationToken,
) -> Result<(), PlatformError> {
    let started = tokio::time::Instant::now();
    let report = |elapsed: Duration| {
        reporter.emit(Event::Bake {
            index: step.index,
            total: step.total,
            percent: step.percent,
            elapsed: elapsed.min(step.bake),
            period: step.bake,
        });
    };
    let bake = platform.bake(candidate, step.bake, reporter, cancel);
    tokio::pin!(bake);
    let mut ticks = tokio::time::interval(BAKE_REPORT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = &mut bake => break r,
            _ = ticks.tick() => report(started.elapsed()),
        }
    };
    if result.is_ok() && !cancel.is_cancelled() {
        report(step.bake);
    }
    result
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
