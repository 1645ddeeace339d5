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

pub mod alarm;
pub mod change;
pub mod distribution;
pub mod forward;
pub mod plan;
pub mod records;
pub mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use bollard::Docker;
use jiff::Timestamp;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use self::change::{Change, Sent, TaskDefinitionRef, aws_error, wait_error};
use self::forward::{Forward, Routing};
use self::records::{SsmHistory, SsmLockStore};
use self::wait::short_arn;
use crate::Slot;
use crate::aws::Clients;
use crate::build::BuildRequest;
use crate::config::{Config, DEFAULT_TASK_DEFINITION, EcsTarget, PerSlot, Service};
use crate::event::{Phase, Reporter};
use crate::history::{HistoryStore, ReleaseRecord};
use crate::lock::LockStore;
use crate::platform::local::LocalPaths;
use crate::platform::{BuildInput, Candidate, ErrorKind, Image, Live, Platform, PlatformError};
use crate::shift::ShiftStrategy;
use crate::task_definition::{self, Render, TAG_RELEASE, TaskDefinition};

/// The service tag that says when a kept old slot may be scaled down (RFC 3339).
pub const TAG_RETIRE_AFTER: &str = "shipit.retire-after";
/// How long a CloudFront update gets to deploy. CloudFront takes minutes.
pub const CDN_DEPLOY_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the version check through the test listener may take.
pub const VERSION_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What an ECS service of a slot looks like now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotService {
    pub name: String,
    pub arn: String,
    pub desired: i32,
    pub running: i32,
    pub task_definition: Option<String>,
    /// The release its task definition carries (the `shipit.release` tag, or the
    /// `SHIPIT_RELEASE` variable of a task definition shipit did not tag).
    pub release: Option<String>,
    pub retire_after: Option<Timestamp>,
}

/// Everything a release reads before it changes anything.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EcsState {
    /// The production forward (the listener's, or the rule's).
    pub forward: Forward,
    /// The slot traffic goes to, read from the forward (or the distribution in CDN mode).
    pub routed: Option<Slot>,
    /// The share of a weighted step in progress, in percent (0: none).
    pub split_percent: u8,
    /// The distribution's target origin domain, in CDN mode.
    pub cdn_origin: Option<String>,
    pub blue: Option<SlotService>,
    pub green: Option<SlotService>,
    pub live: Option<Live>,
}

impl EcsState {
    pub fn service(&self, slot: Slot) -> Option<&SlotService> {
        match slot {
            Slot::Blue => self.blue.as_ref(),
            Slot::Green => self.green.as_ref(),
        }
    }
}

/// Where the service answers, read once from the listener's load balancer.
#[derive(Debug, Clone)]
struct Site {
    url: String,
    /// `http://<dns>:<port>` of the test listener.
    test_url: Option<String>,
    subnets: Vec<String>,
    security_groups: Vec<String>,
}

pub struct EcsPlatform {
    service: Service,
    target_name: String,
    target: EcsTarget,
    config_dir: PathBuf,
    cache_dir: PathBuf,
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
        let cache_dir = LocalPaths::new(&config.state_dir, target_name, &service.name).service_dir;
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
            clients,
            template_name,
            template,
            site,
            docker: OnceCell::new(),
            split_percent: AtomicU8::new(0),
            rolling_back: AtomicBool::new(false),
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
                crate::docker::connect().await.map_err(|e| {
                    PlatformError::new(ErrorKind::Platform, e.to_string())
                        .with_hint("start the Docker engine, or point DOCKER_HOST at one that runs")
                })
            })
            .await
    }

    /// The production forward: the rule's actions with `rule_arn`, else the listener's.
    pub async fn forward(&self) -> Result<Forward, PlatformError> {
        let (what, actions) = match &self.target.rule_arn {
            Some(rule) => (
                format!("rule {rule}"),
                change::rule_actions(&self.clients.elb, rule).await?,
            ),
            None => {
                let listener = &self.target.listener_arn;
                (
                    format!("listener {listener}"),
                    change::listener_actions(&self.clients.elb, listener).await?,
                )
            }
        };
        let actions = actions.ok_or_else(|| {
            PlatformError::new(ErrorKind::Platform, format!("elbv2: {what} was not found"))
                .with_hint("check the ARN in the target's config")
        })?;
        Forward::from_actions(&actions).map_err(|e| {
            PlatformError::new(ErrorKind::Platform, format!("elbv2: {what}: {e}"))
                .with_hint("shipit moves traffic by changing a forward action's target groups; give it a listener or rule that forwards")
        })
    }

    fn routing(&self, forward: &Forward) -> Result<Option<Routing>, PlatformError> {
        forward.routing(&self.target.target_groups).map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "elbv2: {}: {e}",
                    self.target
                        .rule_arn
                        .as_deref()
                        .unwrap_or(&self.target.listener_arn)
                ),
            )
            .with_hint(
                "point it at the blue or green target group of the config, or fix target_groups",
            )
        })
    }

    /// The domain the distribution's target origin has now.
    async fn cdn_origin(&self) -> Result<Option<String>, PlatformError> {
        let Some(cdn) = &self.target.cdn else {
            return Ok(None);
        };
        let id = &cdn.distribution_id;
        let out = self
            .clients
            .cloudfront
            .get_distribution_config()
            .id(id)
            .send()
            .await
            .map_err(|e| aws_error("GetDistributionConfig", id, &e))?;
        let config = out.distribution_config().ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("cloudfront: distribution {id} has no config"),
            )
        })?;
        let (_, domain) = distribution::target_origin(config).map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("cloudfront: distribution {id}: {e}"),
            )
        })?;
        Ok(Some(domain))
    }

    /// The ECS service of `slot`, if it exists and is not deleted.
    pub async fn slot_service(&self, slot: Slot) -> Result<Option<SlotService>, PlatformError> {
        let name = self.names.get(slot);
        let out = self
            .clients
            .ecs
            .describe_services()
            .cluster(&self.target.cluster)
            .services(name)
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .map_err(|e| aws_error("DescribeServices", name, &e))?;
        let Some(found) = out
            .services()
            .iter()
            .find(|s| s.service_name() == Some(name.as_str()) && s.status() == Some("ACTIVE"))
        else {
            return Ok(None);
        };
        let tags: BTreeMap<&str, &str> = found
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?, t.value()?)))
            .collect();
        let task_definition = found.task_definition().map(str::to_string);
        let release = match &task_definition {
            Some(td) => self.release_of(td).await?,
            None => None,
        };
        Ok(Some(SlotService {
            name: name.clone(),
            arn: found.service_arn().unwrap_or_default().to_string(),
            desired: found.desired_count(),
            running: found.running_count(),
            task_definition,
            release,
            retire_after: tags
                .get(TAG_RETIRE_AFTER)
                .and_then(|t| t.parse::<Timestamp>().ok()),
        }))
    }

    /// The release a task definition runs: its `shipit.release` tag, else the container's
    /// `SHIPIT_RELEASE`.
    async fn release_of(&self, task_definition: &str) -> Result<Option<String>, PlatformError> {
        let out = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTaskDefinition", task_definition, &e))?;
        if let Some(tag) = out
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_RELEASE))
            .and_then(|t| t.value())
        {
            return Ok(Some(tag.to_string()));
        }
        Ok(out
            .task_definition()
            .into_iter()
            .flat_map(|t| t.container_definitions())
            .flat_map(|c| c.environment())
            .find(|e| e.name() == Some("SHIPIT_RELEASE"))
            .and_then(|e| e.value())
            .map(str::to_string))
    }

    /// Reads the forward, the distribution and both services: what is live and what is not.
    pub async fn state(&self) -> Result<EcsState, PlatformError> {
        let forward = self.forward().await?;
        let routing = self.routing(&forward)?;
        let cdn_origin = self.cdn_origin().await?;
        let (routed, split_percent) = match (&self.target.cdn, &cdn_origin) {
            (Some(cdn), Some(domain)) => (distribution::slot_of(domain, &cdn.origins), 0),
            _ => (
                routing.map(|r| r.live),
                routing.map_or(0, |r| r.split_percent),
            ),
        };
        let blue = self.slot_service(Slot::Blue).await?;
        let green = self.slot_service(Slot::Green).await?;
        // During a weighted step the larger weight may be the candidate's (80 % of a linear
        // shift). The candidate is the slot whose task definition was registered last: the
        // other one is live.
        let routed = match (routed, &blue, &green) {
            (Some(heavier), Some(b), Some(g)) if split_percent > 0 => {
                match (
                    revision(b.task_definition.as_deref()),
                    revision(g.task_definition.as_deref()),
                ) {
                    (Some(rb), Some(rg)) if rb != rg => {
                        Some(if rb < rg { Slot::Blue } else { Slot::Green })
                    }
                    _ => Some(heavier),
                }
            }
            _ => routed,
        };
        let split_percent = match routed {
            Some(live) if split_percent > 0 => {
                let other = forward.weight_of(self.group(live.other())).max(0);
                let total = (other + forward.weight_of(self.group(live)).max(0)).max(1);
                u8::try_from(other * 100 / total).unwrap_or(0)
            }
            _ => split_percent,
        };
        let mut state = EcsState {
            forward,
            routed,
            split_percent,
            cdn_origin,
            blue,
            green,
            live: None,
        };
        state.live = routed.and_then(|slot| {
            let service = state.service(slot)?;
            if service.desired <= 0 {
                return None;
            }
            let release = service.release.clone().unwrap_or_else(|| {
                service
                    .task_definition
                    .as_deref()
                    .map_or_else(|| "unknown".to_string(), |td| short_arn(td).to_string())
            });
            Some(Live {
                slot,
                release,
                since: None,
            })
        });
        Ok(state)
    }

    /// The change that makes the production forward `forward`.
    pub fn forward_change(&self, forward: Forward) -> Change {
        match &self.target.rule_arn {
            Some(rule) => Change::ModifyRule {
                rule_arn: rule.clone(),
                forward,
            },
            None => Change::ModifyListener {
                listener_arn: self.target.listener_arn.clone(),
                forward,
            },
        }
    }

    /// The change that sends all traffic to `slot`: the listener's forward, or the CDN origin.
    pub fn shift_change(&self, slot: Slot) -> Change {
        match &self.target.cdn {
            Some(cdn) => Change::UpdateDistribution {
                distribution_id: cdn.distribution_id.clone(),
                domain: cdn.origins.get(slot).clone(),
            },
            None => {
                self.forward_change(Forward::all_to(self.group(slot), self.group(slot.other())))
            }
        }
    }

    /// Scales `slot`'s service to `count` tasks, its task definition unchanged.
    pub fn scale_change(&self, slot: Slot, count: i32) -> Change {
        Change::UpdateService {
            cluster: self.target.cluster.clone(),
            service: self.names.get(slot).clone(),
            task_definition: None,
            desired_count: count,
        }
    }

    /// Renders the task definition of `release` in `slot`.
    pub fn render(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &str,
    ) -> Result<TaskDefinition, PlatformError> {
        task_definition::render(
            &self.template_name,
            &self.template,
            &self.render_input(slot, release, version, image),
        )
        .map_err(|e| {
            let hint = e.hint.clone();
            let error = PlatformError::new(ErrorKind::Platform, e.to_string());
            match hint {
                Some(h) => error.with_hint(h),
                None => error,
            }
        })
    }

    fn render_input<'a>(
        &'a self,
        slot: Slot,
        release: &'a str,
        version: &'a str,
        image: &'a str,
    ) -> Render<'a> {
        Render {
            target_name: &self.target_name,
            target: &self.target,
            service: &self.service,
            slot,
            release,
            version,
            image,
        }
    }

    /// Register `definition`, then create or update `slot`'s service to run it.
    pub fn launch_changes(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        definition: TaskDefinition,
        existing: Option<&SlotService>,
    ) -> Vec<Change> {
        let render = self.render_input(slot, release, version, "");
        let tags = task_definition::tags(&render);
        let service = self.names.get(slot).clone();
        let desired = i32::try_from(self.target.desired_count).unwrap_or(i32::MAX);
        let mut changes = vec![Change::RegisterTaskDefinition {
            definition: Box::new(definition),
            tags: tags.clone(),
        }];
        match existing {
            Some(existing) => {
                changes.push(Change::UpdateService {
                    cluster: self.target.cluster.clone(),
                    service,
                    task_definition: Some(TaskDefinitionRef::Registered),
                    desired_count: desired,
                });
                if existing.retire_after.is_some() {
                    changes.push(Change::UntagService {
                        service_arn: existing.arn.clone(),
                        keys: vec![TAG_RETIRE_AFTER.to_string()],
                    });
                }
            }
            None => changes.push(Change::CreateService {
                cluster: self.target.cluster.clone(),
                service,
                task_definition: TaskDefinitionRef::Registered,
                desired_count: desired,
                target_group: self.group(slot).to_string(),
                container: task_definition::container_name(&self.service),
                port: self.service.port,
                subnets: if self.target.subnets.is_empty() {
                    self.site.subnets.clone()
                } else {
                    self.target.subnets.clone()
                },
                security_groups: if self.target.security_groups.is_empty() {
                    self.site.security_groups.clone()
                } else {
                    self.target.security_groups.clone()
                },
                tags,
            }),
        }
        changes
    }

    /// What a converge would change, from `state`: a weighted step left in place goes back
    /// to the live slot; with nothing live, the production forward leaves the slot the first
    /// release starts in; an idle service left scaled up is scaled down, unless it is an old
    /// slot kept for rollback whose time is not up.
    pub fn converge_changes(&self, state: &EcsState, now: Timestamp) -> Vec<(Change, String)> {
        let mut changes = Vec::new();
        if !self.cdn()
            && let Some(routed) = state.routed
        {
            if state.split_percent > 0 {
                changes.push((
                    self.forward_change(Forward::all_to(self.group(routed), self.group(routed.other()))),
                    format!(
                        "a weighted step was left in place ({}): all traffic back on the {routed} slot",
                        state.forward.describe(&self.target.target_groups)
                    ),
                ));
            } else if state.live.is_none() && routed == Slot::Blue {
                changes.push((
                    self.forward_change(Forward::all_to(self.group(Slot::Green), self.group(Slot::Blue))),
                    "nothing is live: the listener forwards to the empty green target group, so the \
                     first release's blue candidate gets no traffic before it is verified"
                        .to_string(),
                ));
            }
        }
        let idle: Vec<Slot> = match &state.live {
            Some(live) => vec![live.slot.other()],
            None => vec![Slot::Blue, Slot::Green],
        };
        for slot in idle {
            let Some(service) = state.service(slot) else {
                continue;
            };
            if service.desired <= 0 {
                continue;
            }
            match service.retire_after {
                Some(after) if after > now && state.live.is_some() => {}
                Some(after) => changes.push((
                    self.scale_change(slot, 0),
                    format!(
                        "the old {slot} slot was kept for rollback until {}: scaling {} to 0",
                        after.round(jiff::Unit::Second).unwrap_or(after),
                        service.name
                    ),
                )),
                None => changes.push((
                    self.scale_change(slot, 0),
                    format!(
                        "the idle {slot} slot runs {} tasks left by an earlier run: scaling {} to 0",
                        service.desired, service.name
                    ),
                )),
            }
        }
        changes
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

    /// The alarms a bake watches; `None` without `alarms`.
    fn alarm_watch(&self) -> Option<wait::AlarmWatch<'_>> {
        (!self.target.alarms.is_empty()).then(|| wait::AlarmWatch {
            cloudwatch: &self.clients.cloudwatch,
            names: &self.target.alarms,
            stops_bake: !self.rolling_back.load(Ordering::Relaxed),
        })
    }

    /// The watched alarms' states now; `None` without `alarms`.
    pub async fn alarms(&self) -> Result<Option<alarm::Alarms>, PlatformError> {
        if self.target.alarms.is_empty() {
            return Ok(None);
        }
        alarm::read(&self.clients.cloudwatch, &self.target.alarms)
            .await
            .map(Some)
            .map_err(|e| alarm::read_error(&e, &self.target.alarms))
    }

    /// An error naming the watched alarms that do not exist.
    fn refuse_missing_alarms(&self, alarms: &alarm::Alarms) -> Result<(), PlatformError> {
        if alarms.missing.is_empty() {
            return Ok(());
        }
        Err(alarm::missing_error(
            &alarms.missing,
            &self.target_name,
            &self.target.region,
        ))
    }

    /// The weighted step being baked, for messages: `step 1/2 (40% to the green slot)`.
    fn step_name(&self, slot: Slot) -> String {
        let percent = self.split_percent.load(Ordering::Relaxed);
        match self
            .target
            .shift
            .steps()
            .iter()
            .find(|s| s.percent == percent)
        {
            Some(step) => format!(
                "step {}/{} ({percent}% to the {slot} slot)",
                step.index, step.total
            ),
            None => format!("the {percent}% step to the {slot} slot"),
        }
    }

    /// Reads the alarms once more before the final shift. One in `ALARM` stops it (not in a
    /// rollback), and a weighted step still in place goes back to the live slot first: the
    /// state machine only undoes the steps whose bake failed.
    async fn alarms_before_shift(
        &self,
        candidate: &Candidate,
        state: &EcsState,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let verdict = match self.alarms().await {
            Ok(None) => return Ok(()),
            Ok(Some(alarms)) => self.refuse_missing_alarms(&alarms).and_then(|()| {
                match alarms.firing_reason() {
                    None => {
                        reporter.progress(
                            Phase::Shift,
                            format!("before the shift to 100%: {alarms}"),
                        );
                        Ok(())
                    }
                    Some(reason) if self.rolling_back.load(Ordering::Relaxed) => {
                        reporter.warn(format!(
                            "{reason}; a rollback shifts anyway (the alarm likely fires because of the release it takes back)"
                        ));
                        Ok(())
                    }
                    Some(reason) => Err(PlatformError::new(
                        ErrorKind::Verify,
                        format!(
                            "before the shift to 100% to the {} slot: {reason}",
                            candidate.slot
                        ),
                    )
                    .with_hint(alarm_hint(&alarms))),
                }
            }),
            Err(e) => Err(e),
        };
        if verdict.is_err()
            && state.split_percent > 0
            && let Some(live) = &state.live
            && live.slot != candidate.slot
        {
            let back = Forward::all_to(self.group(live.slot), self.group(candidate.slot));
            match self.send(&self.forward_change(back), None).await {
                Ok(_) => reporter.progress(
                    Phase::Shift,
                    format!("all traffic back on the {} slot", live.slot),
                ),
                Err(e) => reporter.warn(format!(
                    "putting all traffic back on the {} slot failed: {e}; the next release does",
                    live.slot
                )),
            }
        }
        verdict
    }
}

/// What to do about alarms that stopped a shift.
fn alarm_hint(alarms: &alarm::Alarms) -> String {
    let name = alarms.firing().next().map_or("<name>", |a| a.name.as_str());
    format!(
        "the live slot keeps all traffic; see why the alarm fired with `aws cloudwatch \
         describe-alarm-history --alarm-name {name}`, and release again once it is OK"
    )
}

/// The revision of a task definition ARN (`…:task-definition/prod-hello:7` → 7).
fn revision(arn: Option<&str>) -> Option<u64> {
    arn?.rsplit(':').next()?.parse().ok()
}

/// The production URL (the distribution's domain in CDN mode, else the load balancer's
/// name and the listener's port), the test listener's, and the load balancer's subnets and
/// security groups.
async fn read_site(clients: &Clients, target: &EcsTarget) -> Result<Site, PlatformError> {
    let mut arns = vec![target.listener_arn.clone()];
    if let Some(test) = &target.test_listener_arn {
        arns.push(test.clone());
    }
    let out = clients
        .elb
        .describe_listeners()
        .set_listener_arns(Some(arns))
        .send()
        .await
        .map_err(|e| aws_error("DescribeListeners", &target.listener_arn, &e))?;
    let listener = |arn: &str| {
        out.listeners()
            .iter()
            .find(|l| l.listener_arn() == Some(arn))
    };
    let production = listener(&target.listener_arn).ok_or_else(|| {
        PlatformError::new(
            ErrorKind::Platform,
            format!("elbv2: listener {} was not found", target.listener_arn),
        )
        .with_hint("check listener_arn and the target's region")
    })?;
    let lb_arn = production
        .load_balancer_arn()
        .unwrap_or_default()
        .to_string();
    let lbs = clients
        .elb
        .describe_load_balancers()
        .load_balancer_arns(&lb_arn)
        .send()
        .await
        .map_err(|e| aws_error("DescribeLoadBalancers", &lb_arn, &e))?;
    let lb = lbs.load_balancers().first();
    let dns = lb
        .and_then(|l| l.dns_name())
        .unwrap_or("unknown")
        .to_string();
    let url_of = |l: &aws_sdk_elasticloadbalancingv2::types::Listener| {
        let scheme = match l.protocol().map(|p| p.as_str()) {
            Some("HTTPS") => "https",
            _ => "http",
        };
        match (scheme, l.port()) {
            ("http", Some(80)) | ("https", Some(443)) | (_, None) => format!("{scheme}://{dns}"),
            (_, Some(port)) => format!("{scheme}://{dns}:{port}"),
        }
    };
    let mut url = format!("{}/", url_of(production));
    if let Some(cdn) = &target.cdn {
        let id = &cdn.distribution_id;
        let d = clients
            .cloudfront
            .get_distribution()
            .id(id)
            .send()
            .await
            .map_err(|e| aws_error("GetDistribution", id, &e))?;
        if let Some(d) = d.distribution() {
            url = format!("https://{}/", d.domain_name());
        }
    }
    let test_url = target
        .test_listener_arn
        .as_deref()
        .and_then(listener)
        .map(url_of);
    Ok(Site {
        url,
        test_url,
        subnets: lb
            .map(|l| {
                l.availability_zones()
                    .iter()
                    .filter_map(|z| z.subnet_id().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        security_groups: lb.map(|l| l.security_groups().to_vec()).unwrap_or_default(),
    })
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
        match &state.live {
            Some(l) => reporter.progress(
                Phase::Version,
                format!("live: {} slot, release {}", l.slot, l.release),
            ),
            None => reporter.progress(Phase::Version, "nothing live yet: first release"),
        }
        Ok(state.live)
    }

    async fn build(&self, input: &BuildInput, reporter: &Reporter) -> Result<Image, PlatformError> {
        if let Some(command) = &self.service.pre_build {
            reporter.progress(Phase::Build, format!("pre-build: {}", command.trim()));
            crate::pre_build::run(command, &self.config_dir, |line| {
                reporter.progress(Phase::Build, line.to_string())
            })
            .await
            .map_err(|e| {
                PlatformError::new(ErrorKind::Build, e.to_string()).with_hint(
                    "fix the pre_build command of the service, or run it by hand to see why it fails",
                )
            })?;
        }
        let docker = self.docker().await?;
        let mut labels =
            crate::build::oci_labels(input.revision.as_ref(), input.created, &input.release);
        labels.extend(crate::version::labels(&input.modules));
        let request = BuildRequest {
            service: self.service.name.clone(),
            context: self.service.context.clone(),
            dockerfile: self.service.dockerfile.clone(),
            tag: format!("{}:{}", self.service.name, input.version),
            labels,
            cache_dir: Some(self.cache_dir.clone()),
        };
        super::build_image(docker, &request, reporter).await
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
        // The local tag is `<service>:<version>`; the pushed one is the same version.
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
