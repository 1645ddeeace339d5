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
//! Retire and `keep_previous`: a release does not wait to scale the old slot down. With
//! `keep_previous = "0s"` (the default) retire scales it to zero at once — ECS deregisters
//! its tasks and the ALB drains their connections before they stop. With a longer
//! `keep_previous`, retire leaves it running for an instant rollback and tags the service
//! with the time it may be scaled down (`shipit.retire-after`); the next release or rollback
//! that finds it idle past that time scales it down then. Waiting in the command would hold
//! a CI runner for nothing.
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
//! [`alarm`], [`wait`], [`records`] (lock and history in SSM), [`aws`] (a failed AWS call or
//! wait as a platform error) and [`plan`].

pub mod alarm;
pub mod aws;
pub mod change;
pub mod distribution;
pub mod forward;
pub mod plan;
pub mod records;
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
use self::change::{Change, Sent};
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
                .for_target(target_name),
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
        registered.ok_or_else(|| {
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
        let rollout = wait::until(
            &what,
            limit,
            cancel,
            |state: &wait::Rollout| progress(state.to_string()),
            || {
                wait::rollout(
                    &self.clients.ecs,
                    &self.target.cluster,
                    service,
                    task_definition,
                    desired,
                )
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
            || {
                wait::targets(
                    &self.clients.elb,
                    group,
                    usize::try_from(desired).unwrap_or(0),
                )
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

    fn not_ready(&self, slot: Slot, error: &wait::WaitError, hint: &str) -> PlatformError {
        let mut e = wait_error(error, hint);
        e.message = format!("the {slot} slot did not become ready: {}", e.message);
        e
    }

    /// Points the test listener at `slot`'s target group.
    async fn preview(
        &self,
        slot: Slot,
        phase: Phase,
        reporter: &Reporter,
    ) -> Result<Option<String>, PlatformError> {
        let Some(test) = &self.target.test_listener_arn else {
            return Ok(None);
        };
        let change = Change::ModifyListener {
            listener_arn: test.clone(),
            forward: Forward::all_to(self.group(slot), self.group(slot.other())),
        };
        self.send(&change, None).await?;
        reporter.progress(
            phase,
            format!("the test listener forwards to the {slot} slot"),
        );
        Ok(self.site.test_url.clone())
    }

    /// GETs the version path through the test listener, when the load balancer's name
    /// resolves from here. An emulator's does not: the check is skipped with a warning.
    async fn check_version(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let (Some(path), Some(url)) = (&self.service.verify.version_path, &self.site.test_url)
        else {
            return Ok(());
        };
        let authority = url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let addr = match tokio::net::lookup_host(authority)
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(addr)) => addr,
            _ => {
                reporter.warn(format!(
                    "skipped the version check: {authority} does not resolve from here (an emulated load balancer?)"
                ));
                return Ok(());
            }
        };
        let prober = crate::health::Prober::new(addr);
        tokio::time::timeout(VERSION_CHECK_TIMEOUT, prober.check_version(path, &candidate.release))
            .await
            .map_err(|_| {
                PlatformError::new(
                    ErrorKind::Verify,
                    format!("{url}{path} did not answer within {}", humantime::format_duration(VERSION_CHECK_TIMEOUT)),
                )
            })?
            .map_err(|e| {
                PlatformError::new(ErrorKind::Verify, format!("through the test listener: {e}")).with_hint(format!(
                    "the app must include $SHIPIT_RELEASE in the body of {path}; the live slot was not touched"
                ))
            })?;
        reporter.progress(
            Phase::Verify,
            format!("{url}{path} reports release {}", candidate.release),
        );
        Ok(())
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
        let sdk = crate::aws::sdk_config(&target.region).await;
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

    async fn live(&self) -> Result<Option<Live>, PlatformError> {
        Ok(self.state().await?.live)
    }

    async fn converge(&self, reporter: &Reporter) -> Result<Option<Live>, PlatformError> {
        // A misspelled alarm fails here, before anything is built, launched or changed.
        if let Some(alarms) = self.alarms().await? {
            self.refuse_missing_alarms(&alarms)?;
            reporter.progress(Phase::Version, format!("watching CloudWatch {alarms}"));
        }
        let state = self.state().await?;
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
        let definition = self.render(slot, release, version, &image.reference)?;
        let changes = self.launch_changes(slot, release, version, definition, state.service(slot));
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
        if self.service.verify.version_path.is_some()
            && self
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
        let state = self.state().await?;
        self.refuse_live(&state, old.slot, "retire")?;
        let Some(service) = state.service(old.slot) else {
            reporter.warn(format!(
                "the service of the {} slot is already gone",
                old.slot
            ));
            return Ok(());
        };
        let keep = self.target.keep_previous;
        if keep.is_zero() {
            self.send(&self.scale_change(old.slot, 0), None).await?;
            reporter.progress(
                Phase::Retire,
                format!(
                    "scaled {} to 0 (ECS drains its targets first); `shipit rollback` scales it up again",
                    service.name
                ),
            );
            return Ok(());
        }
        let after = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        let tag = Change::TagService {
            service_arn: service.arn.clone(),
            tags: vec![(
                TAG_RETIRE_AFTER.to_string(),
                after.round(jiff::Unit::Second).unwrap_or(after).to_string(),
            )],
        };
        self.send(&tag, None).await?;
        reporter.progress(
            Phase::Retire,
            format!(
                "kept {} running for rollback (keep_previous = {}); the next release after {} scales it down",
                service.name,
                humantime::format_duration(keep),
                after.round(jiff::Unit::Second).unwrap_or(after)
            ),
        );
        Ok(())
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
        for slot in [Slot::Blue, Slot::Green] {
            if let Some(service) = self.slot_service(slot).await?
                && service.desired > 0
            {
                self.send(&self.scale_change(slot, 0), None).await?;
                reporter.progress(Phase::Retire, format!("scaled {} to 0", service.name));
            }
        }
        reporter.progress(
            Phase::Retire,
            "the services, target groups and listener are kept (scaled to zero, not deleted)",
        );
        Ok(())
    }
}
