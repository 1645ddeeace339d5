//! The `ecs` target: a service's two slots as two ECS services behind an ALB listener,
//! optionally behind CloudFront.
//!
//! Each slot is its own ECS service (`<service>-blue`, `<service>-green` unless the target
//! names them), registered in its own target group. A release registers a task definition,
//! creates or updates the idle slot's service, waits for its rollout and its healthy targets,
//! then moves the listener's forward (or a rule's, or the CloudFront origin) to the idle
//! slot's group, and scales the old service down.
//!
//! What is live is read from AWS every time, never from a local file, so any machine can
//! release: the slot is the one whose target group the listener forwards to (the larger
//! weight; see [`forward`]), or whose origin the distribution targets in CDN mode; the
//! release is the `shipit.release` tag of the task definition that slot's service runs. The
//! lock and the history live in SSM Parameter Store ([`records`]).
//!
//! Retire and `keep_previous` ([`drain`]): by default (`"10m"`) retire leaves the old slot
//! running for an instant rollback and tags the service with the time it may be scaled down
//! (`shipit.retire-after`); the next release or rollback that finds it idle past that time
//! scales it down then. With `keep_previous = "0s"` retire scales it to zero at once and
//! waits until its targets have left the group (ECS deregisters them and the ALB drains
//! them), at most the group's deregistration delay.
//!
//! Every change to AWS is a [`change::Change`] value, so `release --dry-run` prints exactly
//! the calls a release makes ([`plan`]).
//!
//! A weighted shift's bakes watch the new target group's health and the target's CloudWatch
//! `alarms` ([`alarm`]); the alarms are read once more before the final shift, and a name
//! that matches no alarm fails `converge`, before anything is built or launched.
//!
//! This file holds the platform and its [`Platform`] methods; the rest is one noun a file:
//! [`state`] (everything read from AWS), [`change`] (every change, and the functions that
//! decide them), [`forward`], [`distribution`] (the CDN origin, read and swapped),
//! [`alarm`], [`preflight`] (what a release needs from the account, checked before it
//! builds), [`wait`], [`records`] (lock and history in SSM), [`aws`] (a failed AWS call or
//! wait as a platform error) and [`plan`].

pub mod alarm;
pub mod aws;
pub mod change;
pub mod diff;
pub mod distribution;
mod drain;
pub mod forward;
mod guard;
pub mod migrate;
pub mod plan;
pub mod preflight;
mod preview;
pub mod records;
#[cfg(test)]
pub(crate) mod scripted;
pub mod state;
pub mod wait;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use bollard::Docker;
use jiff::Timestamp;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use self::aws::short_arn;
use self::change::{Change, Sent, TaskDefinitionRef};
use self::forward::Forward;
use self::plan::EcsPlan;
use self::records::{SsmHistory, SsmLockStore};
pub use self::state::{EcsState, SlotService};
use self::state::{Site, read_site};
use self::wait::wait_error;
use crate::Slot;
use crate::aws::{Clients, ReadOnly};
use crate::config::{Config, DEFAULT_TASK_DEFINITION, EcsTarget, PerSlot, Service};
use crate::event::{Phase, Reporter};
use crate::history::{HistoryStore, ReleaseRecord};
use crate::lock::LockStore;
use crate::platform::kind::{Kind, Opening, PlanError};
use crate::platform::{BuildInput, Candidate, ErrorKind, Image, Live, Platform, PlatformError};
use crate::shift::ShiftStrategy;
use crate::state_dir::StatePaths;

/// The service tag that says when a kept old slot may be scaled down (RFC 3339).
pub const TAG_RETIRE_AFTER: &str = "shipit.retire-after";
/// How long a CloudFront update gets to deploy. CloudFront takes minutes.
pub const CDN_DEPLOY_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the version check through the test listener may take.
pub const VERSION_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct EcsPlatform {
    service: Service,
    target_name: String,
    target: EcsTarget,
    config_dir: PathBuf,
    cache_dir: PathBuf,
    /// The config's project id, which the local image tag carries.
    project: String,
    clients: Clients,
    names: PerSlot<String>,
    template_name: String,
    template: String,
    site: Site,
    locks: SsmLockStore,
    history: SsmHistory,
    docker: OnceCell<Docker>,
    /// The percent of the last weighted step sent, to name the step a bake watches.
    split_percent: AtomicU8,
    /// Set by `revive`: this run is a rollback, whose bakes show the alarms but do not stop
    /// for them (they likely fire because of the release it takes back).
    rolling_back: AtomicBool,
    /// When this run last launched or revived a slot: a verify counts the tasks that failed
    /// since then.
    launched: std::sync::Mutex<Option<Timestamp>>,
    /// Set by every state read: traffic is routed to the blue slot. With nothing live, a
    /// first release then takes green, so its candidate gets no traffic before verify.
    pub(super) first_is_green: AtomicBool,
    /// Opened for a plan: the clients refuse every call but reads, and this records them.
    read_only: Option<ReadOnly>,
}

impl EcsPlatform {
    /// Reads the template and the listener's load balancer (for the URL and the default
    /// subnets and security groups).
    pub async fn new(
        config: &Config,
        service: &Service,
        target_name: &str,
        target: &EcsTarget,
        clients: Clients,
    ) -> Result<EcsPlatform, PlatformError> {
        let (template_name, template) = match &target.task_definition {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    PlatformError::new(
                        ErrorKind::Platform,
                        format!(
                            "cannot read the task definition template {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                (path.display().to_string(), text)
            }
            None => (
                format!("built-in {DEFAULT_TASK_DEFINITION}"),
                crate::config::DEFAULT_TASK_DEFINITION_TEXT.to_string(),
            ),
        };
        let site = read_site(&clients, target).await?;
        let cache_dir = StatePaths::new(&config.state_dir, target_name, &service.name)
            .build_cache_dir()
            .to_path_buf();
        Ok(EcsPlatform {
            names: target.service_names(&service.name),
            locks: SsmLockStore::new(clients.ssm.clone(), &target.cluster, &service.name)
                .for_target(target_name)
                .with_lease(target.lock_lease),
            history: SsmHistory::new(clients.ssm.clone(), &target.cluster, &service.name),
            service: service.clone(),
            target_name: target_name.to_string(),
            target: target.clone(),
            config_dir: config.dir.clone(),
            cache_dir,
            project: config.project.clone(),
            clients,
            template_name,
            template,
            site,
            docker: OnceCell::new(),
            split_percent: AtomicU8::new(0),
            rolling_back: AtomicBool::new(false),
            first_is_green: AtomicBool::new(false),
            launched: std::sync::Mutex::new(None),
            read_only: None,
        })
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    pub fn ecs_target(&self) -> &EcsTarget {
        &self.target
    }

    /// The ECS service of each slot.
    pub fn service_names(&self) -> &PerSlot<String> {
        &self.names
    }

    pub fn lock_store(&self) -> &SsmLockStore {
        &self.locks
    }

    pub fn history_store(&self) -> &SsmHistory {
        &self.history
    }

    fn cdn(&self) -> bool {
        self.target.cdn.is_some()
    }

    fn group(&self, slot: Slot) -> &str {
        self.target.target_groups.get(slot)
    }

    async fn docker(&self) -> Result<&Docker, PlatformError> {
        self.docker
            .get_or_try_init(|| async {
                crate::docker::connect().await.map_err(PlatformError::from)
            })
            .await
    }

    async fn send(&self, change: &Change, registered: Option<&str>) -> Result<Sent, PlatformError> {
        change
            .send(&self.clients, registered, CDN_DEPLOY_TIMEOUT)
            .await
    }

    /// Registers the definition and creates or updates the slot's service.
    async fn apply_launch(
        &self,
        changes: &[Change],
        reporter: &Reporter,
    ) -> Result<String, PlatformError> {
        let mut registered: Option<String> = None;
        for change in changes {
            let sent = self.send(change, registered.as_deref()).await?;
            match (change, sent) {
                (Change::RegisterTaskDefinition { .. }, Sent::TaskDefinition { arn }) => {
                    reporter.progress(Phase::Launch, format!("registered {}", short_arn(&arn)));
                    registered = Some(arn);
                }
                (
                    Change::CreateService {
                        service,
                        desired_count,
                        ..
                    },
                    _,
                ) => reporter.progress(
                    Phase::Launch,
                    format!("created service {service} with {desired_count} tasks"),
                ),
                (
                    Change::UpdateService {
                        service,
                        desired_count,
                        ..
                    },
                    _,
                ) => reporter.progress(
                    Phase::Launch,
                    format!("updated service {service} to {desired_count} tasks"),
                ),
                _ => {}
            }
        }
        let known = changes.iter().find_map(|c| match c {
            Change::UpdateService {
                task_definition: Some(TaskDefinitionRef::Arn(arn)),
                ..
            }
            | Change::CreateService {
                task_definition: TaskDefinitionRef::Arn(arn),
                ..
            } => Some(arn.clone()),
            _ => None,
        });
        registered.or(known).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Platform,
                "internal: no task definition was registered",
            )
        })
    }

    /// Waits until `slot`'s service runs `task_definition` on the desired count and its
    /// target group has as many healthy targets, within `verify_timeout`.
    async fn wait_ready(
        &self,
        slot: Slot,
        task_definition: &str,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        let limit = self.target.verify_timeout;
        let started = tokio::time::Instant::now();
        let service = self.names.get(slot);
        let desired = i32::try_from(self.target.desired_count).unwrap_or(i32::MAX);
        let hint = format!(
            "the live slot was not touched, and the {slot} service is scaled back to zero; see \
             why with `aws ecs describe-services --cluster {} --services {service}` (its events) \
             and the target group's health checks",
            self.target.cluster
        );
        let progress = |text: String| reporter.progress(Phase::Verify, text);
        let tasks = if desired == 1 { "task" } else { "tasks" };
        let what = format!(
            "service {service} to run {desired} {tasks} of {}",
            short_arn(task_definition)
        );
        // Tasks of this rollout that stopped on their own: enough of them fail it at once.
        let since = self.launched_at();
        let max = self.target.max_task_failures;
        let failures = || {
            wait::stopped::failures(
                &self.clients.ecs,
                &self.target.cluster,
                service,
                task_definition,
                since,
            )
        };
        let rollout = wait::until(
            &what,
            limit,
            cancel,
            |state: &wait::Rollout| progress(state.to_string()),
            || async {
                let poll = wait::rollout(
                    &self.clients.ecs,
                    &self.target.cluster,
                    service,
                    task_definition,
                    desired,
                )
                .await?;
                wait::or_failed(poll, failures(), max).await
            },
        )
        .await;
        match rollout {
            Ok(state) => progress(format!("rollout done: {state}")),
            Err(wait::WaitError::Cancelled { .. }) => return Ok(()),
            Err(e) => return Err(self.not_ready(slot, &e, &hint)),
        }
        let group = self.group(slot);
        let targets = if desired == 1 { "target" } else { "targets" };
        let what = format!(
            "{desired} healthy {targets} in the {slot} target group {}",
            short_arn(group)
        );
        let left = limit.saturating_sub(started.elapsed());
        let healthy = wait::until(
            &what,
            left,
            cancel,
            |state: &wait::TargetHealth| progress(state.to_string()),
            || async {
                let poll = wait::targets(
                    &self.clients.elb,
                    group,
                    usize::try_from(desired).unwrap_or(0),
                )
                .await?;
                wait::or_failed(poll, failures(), max).await
            },
        )
        .await;
        match healthy {
            Ok(state) => {
                progress(state.to_string());
                Ok(())
            }
            Err(wait::WaitError::Cancelled { .. }) => Ok(()),
            Err(e) => Err(self.not_ready(slot, &e, &hint)),
        }
    }

    /// Notes that a rollout starts now (see `launched`).
    fn mark_launched(&self) {
        *self.launched.lock().unwrap_or_else(|e| e.into_inner()) = Some(Timestamp::now());
    }

    /// When the rollout being verified began: the last launch or revive of this run, else a
    /// verify timeout ago.
    fn launched_at(&self) -> Timestamp {
        let marked = *self.launched.lock().unwrap_or_else(|e| e.into_inner());
        marked.unwrap_or_else(|| {
            jiff::SignedDuration::try_from(self.target.verify_timeout)
                .ok()
                .and_then(|d| Timestamp::now().checked_sub(d).ok())
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
    }

    fn not_ready(&self, slot: Slot, error: &wait::WaitError, hint: &str) -> PlatformError {
        let mut e = wait_error(error, hint);
        e.message = format!("the {slot} slot did not become ready: {}", e.message);
        e
    }

    fn refuse_live(&self, state: &EcsState, slot: Slot, action: &str) -> Result<(), PlatformError> {
        match &state.live {
            Some(live) if live.slot == slot => Err(PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "refusing to {action} the {slot} slot of {} on {}: it is live (release {})",
                    self.service.name,
                    self.describe(),
                    live.release
                ),
            )
            .with_hint("this is a bug in shipit or a concurrent change to the listener; run `shipit status`")),
            _ => Ok(()),
        }
    }

    fn candidate(&self, slot: Slot, release: &str, task_definition: &str) -> Candidate {
        Candidate {
            slot,
            release: release.to_string(),
            address: self.group(slot).to_string(),
            handle: task_definition.to_string(),
        }
    }
}

impl Kind for EcsPlatform {
    type Target = EcsTarget;
    type Plan = EcsPlan;

    async fn open(opening: &Opening<'_>, target: &EcsTarget) -> Result<Self, PlatformError> {
        let sdk = crate::aws::sdk_config_for(&target.region, target.endpoint.as_deref()).await;
        let read_only = opening.read_only.then(ReadOnly::new);
        let clients = match &read_only {
            Some(guard) => Clients::read_only(&sdk, guard),
            None => Clients::new(&sdk),
        };
        let mut platform = Box::pin(EcsPlatform::new(
            opening.config,
            opening.service,
            &opening.target.name,
            target,
            clients,
        ))
        .await?;
        platform.read_only = read_only;
        Ok(platform)
    }

    async fn plan(&self, _config: &Config) -> Result<EcsPlan, PlanError> {
        self.plan_now().await
    }

    fn runs_a_process(&self) -> bool {
        false
    }
}

impl Platform for EcsPlatform {
    fn describe(&self) -> String {
        format!(
            "ecs target \"{}\" (cluster {})",
            self.target_name, self.target.cluster
        )
    }

    fn service(&self) -> &str {
        &self.service.name
    }

    fn target(&self) -> &str {
        &self.target_name
    }

    fn url(&self) -> String {
        self.site.url.clone()
    }

    fn locks(&self) -> &dyn LockStore {
        &self.locks
    }

    fn history(&self) -> &dyn HistoryStore {
        &self.history
    }

    fn shift_strategy(&self) -> &ShiftStrategy {
        &self.target.shift
    }

    fn candidate_url(&self, _candidate: &Candidate) -> Option<String> {
        // The test listener forwards to the candidate's slot from the end of its health wait
        // (verify points it there) until the shift.
        self.site.test_url.clone()
    }

    fn first_slot(&self) -> Slot {
        if self.first_is_green.load(Ordering::Relaxed) {
            Slot::Green
        } else {
            Slot::Blue
        }
    }

    async fn live(&self) -> Result<Option<Live>, PlatformError> {
        Ok(self.state().await?.live)
    }

    async fn preflight(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        let preflight = self.check_account(None).await?;
        if let Some(error) = preflight.error(&self.target_name) {
            return Err(error);
        }
        for check in &preflight.checks {
            let line = format!(
                "preflight: {} {} {}: {}",
                check.what,
                check.subject,
                check.status.word(),
                check.detail
            );
            match check.status {
                preflight::Status::Unchecked | preflight::Status::Warning => reporter.warn(line),
                preflight::Status::Created | preflight::Status::Pending => {
                    reporter.progress(Phase::Version, line);
                }
                preflight::Status::Ok | preflight::Status::Failed => {}
            }
        }
        reporter.progress(
            Phase::Version,
            format!("preflight: {} checks passed", preflight.checks.len()),
        );
        Ok(())
    }

    async fn converge(&self, reporter: &Reporter) -> Result<Option<Live>, PlatformError> {
        // A misspelled alarm fails here, before anything is built, launched or changed.
        if let Some(alarms) = self.alarms().await? {
            self.refuse_missing_alarms(&alarms)?;
            reporter.progress(Phase::Version, format!("watching CloudWatch {alarms}"));
        }
        let state = self.state().await?;
        if let Some(live) = &state.live
            && let Some(what) = &live.foreign
        {
            reporter.progress(
                Phase::Version,
                format!(
                    "the {} slot is live, {what}: this release goes to the {} slot, and traffic moves only once it is verified",
                    live.slot,
                    live.slot.other()
                ),
            );
        }
        for (change, why) in self.converge_changes(&state, Timestamp::now()) {
            reporter.progress(Phase::Version, why);
            self.send(&change, None).await?;
        }
        for slot in [Slot::Blue, Slot::Green] {
            if let Some(s) = state.service(slot)
                && let Some(after) = s.retire_after
                && after > Timestamp::now()
                && state.live.as_ref().is_some_and(|l| l.slot != slot)
                && s.desired > 0
            {
                reporter.progress(
                    Phase::Version,
                    format!(
                        "the {slot} slot (release {}) is kept for rollback until {}",
                        s.release.as_deref().unwrap_or("unknown"),
                        after.round(jiff::Unit::Second).unwrap_or(after)
                    ),
                );
            }
        }
        Ok(state.live)
    }

    async fn build(&self, input: &BuildInput, reporter: &Reporter) -> Result<Image, PlatformError> {
        let docker = self.docker().await?;
        let request = super::build_request(&self.service, &self.project, input, &self.cache_dir);
        super::build_service(docker, &self.service, &self.config_dir, &request, reporter).await
    }

    async fn push(&self, image: &Image, reporter: &Reporter) -> Result<Image, PlatformError> {
        let repository = &self.target.repository;
        let host = self.target.registry_host();
        let credentials = if crate::registry::is_ecr_host(host) {
            reporter.progress(Phase::Push, format!("ECR authorization for {host}"));
            Some(crate::registry::ecr_credentials(&self.clients.ecr).await?)
        } else {
            let lookup = crate::registry::lookup(host);
            for note in &lookup.notes {
                reporter.warn(note.clone());
            }
            lookup.credentials
        };
        // The local tag is `<service>-<project>:<version>`; the pushed one is the same version.
        let tag = image
            .reference
            .rsplit_once(':')
            .map_or("latest", |(_, tag)| tag);
        let docker = self.docker().await?;
        let pushed = crate::registry::push(
            docker,
            image,
            repository,
            tag,
            credentials.as_ref(),
            reporter,
        )
        .await?;
        reporter.progress(Phase::Push, format!("pushed {}", pushed.reference));
        Ok(Image {
            reused: image.reused,
            ..pushed
        })
    }

    async fn launch(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &Image,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        let state = self.state().await?;
        self.refuse_live(&state, slot, "replace")?;
        self.refuse_strangers(&state, slot).await?;
        let definition = self.render(slot, release, version, &image.reference)?;
        let changes = self.launch_changes(slot, release, version, definition, state.service(slot));
        self.mark_launched();
        let arn = self.apply_launch(&changes, reporter).await?;
        Ok(self.candidate(slot, release, &arn))
    }

    async fn revive(
        &self,
        record: &ReleaseRecord,
        slot: Slot,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        self.rolling_back.store(true, Ordering::Relaxed);
        let state = self.state().await?;
        self.refuse_live(&state, slot, "replace")?;
        self.refuse_strangers(&state, slot).await?;
        self.mark_launched();
        let desired = i32::try_from(self.target.desired_count).unwrap_or(i32::MAX);
        if let Some(service) = state.service(slot)
            && service.release.as_deref() == Some(record.serves.as_str())
            && let Some(td) = &service.task_definition
        {
            if service.desired >= desired {
                reporter.progress(
                    Phase::Launch,
                    format!(
                        "{} still runs release {}: no scale-up needed",
                        service.name, record.serves
                    ),
                );
            } else {
                self.send(&self.scale_change(slot, desired), None).await?;
                reporter.progress(
                    Phase::Launch,
                    format!(
                        "scaled {} back up to {desired} tasks of release {}",
                        service.name, record.serves
                    ),
                );
            }
            if service.retire_after.is_some() {
                let untag = Change::UntagService {
                    service_arn: service.arn.clone(),
                    keys: vec![TAG_RETIRE_AFTER.to_string()],
                };
                self.send(&untag, None).await?;
            }
            return Ok(self.candidate(slot, &record.serves, td));
        }
        if let Some(td) = record
            .handle
            .as_deref()
            .filter(|h| h.contains(":task-definition/"))
        {
            if self.task_definition_active(td).await? {
                reporter.progress(
                    Phase::Launch,
                    format!(
                        "running release {} again from its recorded task definition {}",
                        record.serves,
                        short_arn(td)
                    ),
                );
                let changes = self.service_changes(
                    slot,
                    &record.serves,
                    &record.version,
                    TaskDefinitionRef::Arn(td.to_string()),
                    state.service(slot),
                );
                self.apply_launch(&changes, reporter).await?;
                return Ok(self.candidate(slot, &record.serves, td));
            }
            reporter.progress(
                Phase::Launch,
                format!(
                    "the recorded task definition {} is no longer active",
                    short_arn(td)
                ),
            );
        }
        let image = record.image.as_deref().ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("release {} has no recorded image", record.serves),
            )
            .with_hint("release again instead")
        })?;
        reporter.progress(
            Phase::Launch,
            format!("registering release {} again from {image}", record.serves),
        );
        let definition = self.render(slot, &record.serves, &record.version, image)?;
        let changes = self.launch_changes(
            slot,
            &record.serves,
            &record.version,
            definition,
            state.service(slot),
        );
        let arn = self.apply_launch(&changes, reporter).await?;
        Ok(self.candidate(slot, &record.serves, &arn))
    }

    async fn migrate(
        &self,
        candidate: &Candidate,
        migrate: &crate::config::Migrate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let task = migrate::MigrateTask {
            cluster: &self.target.cluster,
            service: self.names.get(candidate.slot),
            container: &self.service.name,
            task_definition: &candidate.handle,
        };
        let result = migrate::run(
            &self.clients.ecs,
            &self.clients.logs,
            &task,
            migrate,
            reporter,
        )
        .await;
        // Its log lines may echo the service's env; the error goes into the record.
        result.map_err(|e| e.scrubbed(&crate::secret::Secrets::of_service(&self.service)))
    }

    async fn verify(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        self.wait_ready(candidate.slot, &candidate.handle, reporter, cancel)
            .await?;
        if cancel.is_cancelled() {
            return Ok(());
        }
        // The test listener goes to the candidate whether or not there is a version to check:
        // the warm-up and the pre_switch hook reach the candidate through it
        // (`candidate_url`), and must never reach the live slot instead.
        if self
            .preview(candidate.slot, Phase::Verify, reporter)
            .await?
            .is_some()
        {
            self.check_version(candidate, reporter).await?;
        }
        Ok(())
    }

    async fn shift(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<Live>, PlatformError> {
        let before = self.state().await?;
        self.alarms_before_shift(candidate, &before, reporter)
            .await?;
        self.refuse_empty(candidate.slot, "shift traffic").await?;
        let change = self.shift_change(candidate.slot);
        let sent = self.send(&change, None).await?;
        let how = match (&change, sent) {
            (Change::UpdateDistribution { domain, .. }, Sent::Unchanged) => {
                format!("the distribution already targets {domain}")
            }
            (Change::UpdateDistribution { domain, .. }, _) => {
                format!("the distribution's origin is now {domain} (deployed)")
            }
            _ => format!(
                "the {} forwards 100% to the {} target group",
                if self.target.rule_arn.is_some() {
                    "rule"
                } else {
                    "listener"
                },
                candidate.slot
            ),
        };
        reporter.progress(Phase::Shift, how);
        Ok(before
            .live
            .filter(|l| l.slot != candidate.slot && l.release != candidate.release))
    }

    async fn split(
        &self,
        candidate: &Candidate,
        live: &Live,
        percent: u8,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        self.refuse_empty(candidate.slot, &format!("send {percent}% of traffic"))
            .await?;
        let forward = Forward::split(self.group(live.slot), self.group(candidate.slot), percent);
        let shown = forward.describe(&self.target.target_groups);
        self.split_percent.store(percent, Ordering::Relaxed);
        self.send(&self.forward_change(forward), None).await?;
        reporter.progress(Phase::Shift, format!("weights: {shown}"));
        Ok(())
    }

    async fn bake(
        &self,
        candidate: &Candidate,
        period: Duration,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        let mut last: Option<String> = None;
        let watch = self.alarm_watch();
        let mut firing_shown = false;
        let hint = match &watch {
            Some(_) => format!(
                "traffic goes back to the live slot; check the new task's logs, the target \
                 group's health checks, and why an alarm fired (`aws cloudwatch \
                 describe-alarm-history --alarm-name <name>`); alarms watched: {}",
                self.target.alarms.join(", ")
            ),
            None => "traffic goes back to the live slot; check the new task's logs and the target group's health checks".to_string(),
        };
        wait::stays_healthy(
            &self.clients.elb,
            self.group(candidate.slot),
            watch,
            period,
            cancel,
            |state, left| {
                let text = state.to_string();
                if last.as_deref() != Some(&text) {
                    reporter.progress(
                        Phase::Shift,
                        format!("{text} ({}s of the bake left)", left.as_secs()),
                    );
                    last = Some(text);
                }
                // Only a rollback goes on past an alarm in ALARM: say so once.
                if !firing_shown
                    && let Some(reason) = state
                        .alarms
                        .as_ref()
                        .and_then(alarm::Alarms::firing_reason)
                {
                    reporter.warn(format!(
                        "{reason}; a rollback does not stop for alarms (they likely fire because of the release it takes back)"
                    ));
                    firing_shown = true;
                }
            },
        )
        .await
        .map_err(|e| {
            let mut error = wait_error(&e, &hint);
            error.kind = ErrorKind::Verify;
            error.message = format!("{}: {}", self.step_name(candidate.slot), error.message);
            error
        })
    }

    async fn unsplit(
        &self,
        live: &Live,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let forward = Forward::all_to(self.group(live.slot), self.group(candidate.slot));
        self.send(&self.forward_change(forward), None).await?;
        reporter.progress(
            Phase::Shift,
            format!("all traffic back on the {} slot", live.slot),
        );
        Ok(())
    }

    async fn stage(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<String>, PlatformError> {
        let url = self.preview(candidate.slot, Phase::Shift, reporter).await?;
        if url.is_none() {
            reporter.warn(format!(
                "no test_listener_arn on {}: the staged {} slot takes no traffic until `shipit promote`",
                self.describe(),
                candidate.slot
            ));
        }
        Ok(url)
    }

    async fn staged(&self, slot: Slot, release: &str) -> Result<Option<Candidate>, PlatformError> {
        let Some(service) = self.slot_service(slot).await? else {
            return Ok(None);
        };
        Ok(match (&service.task_definition, &service.release) {
            (Some(td), Some(r)) if r == release && service.desired > 0 => {
                Some(self.candidate(slot, release, td))
            }
            _ => None,
        })
    }

    async fn retire(&self, old: &Live, reporter: &Reporter) -> Result<(), PlatformError> {
        self.retire_slot(old, reporter).await
    }

    async fn discard(&self, slot: Slot, reporter: &Reporter) -> Result<(), PlatformError> {
        let state = self.state().await?;
        self.refuse_live(&state, slot, "scale down")?;
        if let Some(service) = state.service(slot)
            && service.desired > 0
        {
            self.send(&self.scale_change(slot, 0), None).await?;
            reporter.progress(
                Phase::Record,
                format!("scaled the candidate's service {} to 0", service.name),
            );
        }
        Ok(())
    }

    async fn down(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        let mut scaled = Vec::new();
        for slot in [Slot::Blue, Slot::Green] {
            if let Some(service) = self.slot_service(slot).await?
                && service.desired > 0
            {
                self.send(&self.scale_change(slot, 0), None).await?;
                reporter.progress(Phase::Retire, format!("scaled {} to 0", service.name));
                scaled.push(slot);
            }
        }
        // Until their targets have left the groups, the old tasks still answer, and a
        // `status` would see healthy targets that no running shipit service owns.
        for slot in scaled {
            self.wait_drained(slot, reporter).await?;
        }
        reporter.progress(
            Phase::Retire,
            "the services, target groups and listener are kept (scaled to zero, not deleted)",
        );
        Ok(())
    }
}
