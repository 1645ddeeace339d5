//! The sandbox's ECS agent: it runs each ECS service's tasks as containers on the local
//! Docker engine, registers them in the service's target group once they are healthy, and
//! keeps the tasks' truth ([`Tasks`]) that the sandbox's endpoint answers ECS's task reads
//! from (see `sandbox::api`).
//!
//! Every [`POLL`] it reads the cluster's services from the emulator and, for each one:
//! - notices tasks whose container exited: the task stops with `EssentialContainerExited`,
//!   the container's exit code, and leaves its target group;
//! - registers a running task once it is healthy: the task definition's health check command
//!   (run by Docker) if it has one, else a GET of the target group's health check path;
//! - checks a registered task's health again every [`HEALTH_INTERVAL`], as a load balancer
//!   does: after [`UNHEALTHY_THRESHOLD`] failures in a row it is deregistered and stopped,
//!   and the service starts another, as ECS does with a task that fails its load balancer's
//!   health checks;
//! - starts a task when fewer than the desired count run the service's task definition (at
//!   most one per service per [`START_SPACING`], so a crash loop is paced as ECS paces it);
//! - stops tasks beyond the desired count, and the tasks of an older task definition once
//!   the new ones are healthy: each is deregistered first and its container stopped after
//!   the target group's deregistration delay.
//!
//! Containers are named `shipit-sandbox-<id>-<task>` and labelled with the sandbox's id, so
//! two sandboxes on one engine never touch each other's, and `down` removes its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{ContainerDefinition, TaskDefinition};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerState, HealthConfig, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use serde::Serialize;

use crate::aws::{Clients, describe_error};
use crate::health::Prober;

/// How often the agent looks at the services.
pub const POLL: Duration = Duration::from_millis(200);
/// The least time between two task starts of one service.
const START_SPACING: Duration = Duration::from_secs(1);
/// The longest an image pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// How many stopped tasks are remembered (ECS forgets them after about an hour).
const STOPPED_KEPT: usize = 500;
/// How long a stopped container gets to exit before it is killed.
const STOP_GRACE: i32 = 10;
/// The label that marks the sandbox's containers, with the sandbox's id.
pub const LABEL: &str = "shipit.sandbox";
const TASK_LABEL: &str = "shipit.sandbox.task";
/// The account of the emulator's ARNs.
const ACCOUNT: &str = "123456789012";

/// One task, as the agent knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub arn: String,
    pub cluster_arn: String,
    /// The service it belongs to; empty for a one-off task (RunTask).
    pub service: String,
    /// RunTask's `startedBy`, for a one-off task.
    pub started_by: Option<String>,
    pub task_definition: String,
    pub container_name: String,
    #[serde(skip)]
    pub container_id: String,
    /// The container's address on the engine's network and the task's port.
    pub address: Option<SocketAddr>,
    pub group: Option<String>,
    pub registered: bool,
    /// `PENDING` (not started yet), `RUNNING` (its container runs; `registered` once it is
    /// healthy), `DEACTIVATING` (deregistered, waiting out the delay) or `STOPPED`.
    pub last_status: &'static str,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: &'static str,
    /// Seconds since the epoch.
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub stop_code: Option<&'static str>,
    pub stopped_reason: Option<String>,
    pub exit_code: Option<i64>,
    #[serde(skip)]
    stop_after: Option<Instant>,
    /// When a registered task's health is next checked, and its failed checks in a row.
    #[serde(skip)]
    next_check: Option<Instant>,
    #[serde(skip)]
    failed_checks: u32,
}

/// Every task the agent ran, shared with the endpoint that answers for them.
#[derive(Debug, Clone, Default)]
pub struct Tasks(Arc<Mutex<BTreeMap<String, Task>>>);

/// The task addresses the sandbox's load balancer routes new requests to, as its edges were
/// last told: a deregistered task's container is not stopped while it is still one of them.
#[derive(Debug, Clone, Default)]
pub struct Routed(Arc<Mutex<std::collections::BTreeSet<SocketAddr>>>);

impl Routed {
    pub fn set(&self, addrs: std::collections::BTreeSet<SocketAddr>) {
        *self.0.lock().unwrap() = addrs;
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.0.lock().unwrap().contains(&addr)
    }
}

/// How long past its deregistration delay a task waits for the load balancer to stop
/// routing to it, at most: a load balancer that cannot follow must not keep tasks for ever.
const ROUTED_WAIT: Duration = Duration::from_secs(30);

/// How often a registered task's health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Failed checks in a row that take a registered task out.
const UNHEALTHY_THRESHOLD: u32 = 3;
/// How long a check of a registered task may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a deregistered task whose delay ends `after` is stopped `now`: once the delay
/// passed and the load balancer routes no new request to it, or [`ROUTED_WAIT`] later.
fn stop_due(now: Instant, after: Instant, routed: bool) -> bool {
    now >= after && (!routed || now >= after + ROUTED_WAIT)
}

#[cfg(test)]
impl Task {
    /// A running task of `task_definition`, registered in `group` at `addr`.
    pub(super) fn registered_for_test(
        arn: &str,
        task_definition: &str,
        group: &str,
        addr: SocketAddr,
        created_at: f64,
    ) -> Task {
        let mut task = Task::pending(
            arn.to_string(),
            String::new(),
            "web".to_string(),
            None,
            task_definition.to_string(),
            "web".to_string(),
            Some(group.to_string()),
        );
        task.address = Some(addr);
        task.registered = true;
        task.last_status = "RUNNING";
        task.created_at = created_at;
        task.started_at = Some(created_at);
        task
    }
}

impl Task {
    /// A task about to start: nothing run, registered or stopped yet.
    fn pending(
        arn: String,
        cluster_arn: String,
        service: String,
        started_by: Option<String>,
        task_definition: String,
        container_name: String,
        group: Option<String>,
    ) -> Task {
        Task {
            arn,
            cluster_arn,
            service,
            started_by,
            task_definition,
            container_name,
            container_id: String::new(),
            address: None,
            group,
            registered: false,
            last_status: "PENDING",
            desired_status: "RUNNING",
            created_at: now_secs(),
            started_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            exit_code: None,
            stop_after: None,
            next_check: None,
            failed_checks: 0,
        }
    }
}

impl Tasks {
    pub fn snapshot(&self) -> Vec<Task> {
        self.0.lock().unwrap().values().cloned().collect()
    }

    fn update(&self, arn: &str, change: impl FnOnce(&mut Task)) {
        if let Some(task) = self.0.lock().unwrap().get_mut(arn) {
            change(task);
        }
    }

    fn insert(&self, task: Task) {
        let mut tasks = self.0.lock().unwrap();
        tasks.insert(task.arn.clone(), task);
        let stopped = tasks
            .values()
            .filter(|t| t.last_status == "STOPPED")
            .count();
        if stopped > STOPPED_KEPT {
            let mut oldest: Vec<(f64, String)> = tasks
                .values()
                .filter(|t| t.last_status == "STOPPED")
                .map(|t| (t.stopped_at.unwrap_or(0.0), t.arn.clone()))
                .collect();
            oldest.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, arn) in oldest.iter().take(stopped - STOPPED_KEPT) {
                tasks.remove(arn);
            }
        }
    }
}

/// A task's address as an `ip` target group's target.
fn target(addr: SocketAddr) -> TargetDescription {
    TargetDescription::builder()
        .id(addr.ip().to_string())
        .port(i32::from(addr.port()))
        .build()
}

fn now_secs() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// What the endpoint asks the agent to do (RunTask, StopTask), with where to answer.
#[derive(Debug)]
pub enum Request {
    Run {
        task_definition: String,
        cluster_arn: String,
        /// The container whose command is overridden, and the command.
        command: Option<(String, Vec<String>)>,
        started_by: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<Task, String>>,
    },
    Stop {
        arn: String,
        reason: String,
        reply: tokio::sync::oneshot::Sender<Result<Task, String>>,
    },
}

/// One service, as read from the emulator.
#[derive(Debug, Clone)]
struct ServiceView {
    name: String,
    cluster_arn: String,
    desired: usize,
    task_definition: String,
    group: Option<String>,
    container: Option<String>,
}

/// The agent of one sandbox.
pub struct Runner {
    pub tasks: Tasks,
    pub routed: Routed,
    clients: Clients,
    docker: Docker,
    cluster: String,
    /// The sandbox's id: in container names and labels.
    id: String,
    definitions: BTreeMap<String, TaskDefinition>,
    /// A target group's health check path and deregistration delay.
    groups: BTreeMap<String, (String, Duration)>,
    last_start: BTreeMap<String, Instant>,
    /// The last error of each step, so a failing call is logged once, not every poll.
    last_error: Option<String>,
}

impl Runner {
    pub fn new(clients: Clients, docker: Docker, cluster: &str, id: &str) -> Runner {
        Runner {
            tasks: Tasks::default(),
            routed: Routed::default(),
            clients,
            docker,
            cluster: cluster.to_string(),
            id: id.to_string(),
            definitions: BTreeMap::new(),
            groups: BTreeMap::new(),
            last_start: BTreeMap::new(),
            last_error: None,
        }
    }

    /// Runs until `stop` is cancelled, then leaves the containers as they are (`down`
    /// removes them).
    pub async fn run(
        mut self,
        stop: tokio_util::sync::CancellationToken,
        mut requests: tokio::sync::mpsc::Receiver<Request>,
    ) {
        while !stop.is_cancelled() {
            while let Ok(request) = requests.try_recv() {
                self.handle(request).await;
            }
            match self.step().await {
                Ok(()) => self.last_error = None,
                Err(e) => {
                    if self.last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "sandbox agent");
                        self.last_error = Some(e);
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(POLL) => {}
                Some(request) = requests.recv() => self.handle(request).await,
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Run {
                task_definition,
                cluster_arn,
                command,
                started_by,
                reply,
            } => {
                if cluster_arn.rsplit('/').next() != Some(self.cluster.as_str()) {
                    let _ = reply.send(Err(format!(
                        "ClusterNotFoundException: the sandbox runs tasks in cluster {} only",
                        self.cluster
                    )));
                    return;
                }
                let view = ServiceView {
                    name: String::new(),
                    cluster_arn,
                    desired: 0,
                    task_definition,
                    group: None,
                    container: command.as_ref().map(|(name, _)| name.clone()),
                };
                let result = self
                    .start_task(&view, command.map(|(_, c)| c), started_by)
                    .await;
                let _ = reply.send(result);
            }
            Request::Stop { arn, reason, reply } => {
                let found = self.tasks.snapshot().into_iter().find(|t| t.arn == arn);
                let result = match found {
                    None => Err(format!("The referenced task was not found: {arn}")),
                    Some(task) => {
                        if task.last_status != "STOPPED" {
                            let code = self.stop_container(&task.container_id).await;
                            self.stopped(&task, "UserInitiated", &reason, code).await;
                            self.tasks.update(&arn, |t| {
                                t.stop_code = Some("UserInitiated");
                                t.stopped_reason = Some(reason.clone());
                            });
                        }
                        Ok(self
                            .tasks
                            .snapshot()
                            .into_iter()
                            .find(|t| t.arn == arn)
                            .unwrap_or(task))
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Stops a container (SIGTERM, SIGKILL after the grace) and reads its exit code.
    async fn stop_container(&self, id: &str) -> Option<i64> {
        if id.is_empty() {
            return None;
        }
        let _ = self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(STOP_GRACE),
                    ..Default::default()
                }),
            )
            .await;
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.exit_code)
    }

    /// One look at every service.
    pub async fn step(&mut self) -> Result<(), String> {
        let services = self.services().await?;
        self.observe().await;
        for service in &services {
            self.reconcile(service).await?;
        }
        // A service that was deleted takes its tasks along.
        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        for task in self.tasks.snapshot() {
            if task.started_by.is_none()
                && task.desired_status == "RUNNING"
                && !known.contains(&task.service.as_str())
            {
                self.begin_stop(&task, "Service deleted").await?;
            }
        }
        self.finish_stops().await;
        Ok(())
    }

    async fn services(&self) -> Result<Vec<ServiceView>, String> {
        let ecs = &self.clients.ecs;
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = ecs
                .list_services()
                .cluster(&self.cluster)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| format!("ListServices: {}", describe_error(&e)))?;
            arns.extend(out.service_arns().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut views = Vec::new();
        for chunk in arns.chunks(10) {
            let out = ecs
                .describe_services()
                .cluster(&self.cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| format!("DescribeServices: {}", describe_error(&e)))?;
            for s in out.services() {
                let lb = s.load_balancers().first();
                views.push(ServiceView {
                    name: s.service_name().unwrap_or_default().to_string(),
                    cluster_arn: s.cluster_arn().unwrap_or_default().to_string(),
                    desired: if s.status() == Some("ACTIVE") {
                        usize::try_from(s.desired_count()).unwrap_or(0)
                    } else {
                        0
                    },
                    task_definition: s.task_definition().unwrap_or_default().to_string(),
                    group: lb.and_then(|l| l.target_group_arn()).map(str::to_string),
                    container: lb.and_then(|l| l.container_name()).map(str::to_string),
                });
            }
        }
        Ok(views)
    }

    /// Notices exited containers, and registers healthy running tasks.
    async fn observe(&mut self) {
        for task in self.tasks.snapshot() {
            if task.last_status == "STOPPED" || task.container_id.is_empty() {
                continue;
            }
            let inspected = self
                .docker
                .inspect_container(&task.container_id, None::<InspectContainerOptions>)
                .await;
            let state = match inspected {
                Ok(c) => c.state.unwrap_or_default(),
                Err(_) => {
                    // Removed behind the agent's back: the task is gone.
                    self.stopped(
                        &task,
                        "EssentialContainerExited",
                        "Essential container in task exited: its container was removed from the engine",
                        None,
                    )
                    .await;
                    continue;
                }
            };
            if state.running != Some(true) {
                let code = state.exit_code;
                let reason = if task.desired_status == "STOPPED" {
                    (
                        "ServiceSchedulerInitiated",
                        "Scaling activity initiated by the service",
                    )
                } else {
                    (
                        "EssentialContainerExited",
                        "Essential container in task exited",
                    )
                };
                self.stopped(&task, reason.0, reason.1, code).await;
                continue;
            }
            if task.desired_status != "RUNNING" {
                continue;
            }
            if task.registered {
                self.check_registered(&task, &state).await;
                continue;
            }
            if !self.healthy(&task, &state, Duration::from_secs(2)).await {
                continue;
            }
            if let (Some(addr), Some(group)) = (task.address, &task.group)
                && let Err(e) = self
                    .clients
                    .elb
                    .register_targets()
                    .target_group_arn(group)
                    .targets(target(addr))
                    .send()
                    .await
            {
                tracing::warn!(error = %describe_error(&e), "RegisterTargets");
                continue;
            }
            self.tasks.update(&task.arn, |t| t.registered = true);
        }
    }

    /// Whether `task` is healthy: its container's health check when it has one, else a GET
    /// of its target group's health check path within `timeout`.
    async fn healthy(&self, task: &Task, state: &ContainerState, timeout: Duration) -> bool {
        match state.health.as_ref().and_then(|h| h.status) {
            Some(status) => status.to_string() == "healthy",
            None => match (task.address, &task.group) {
                (Some(addr), Some(group)) => {
                    let path = self
                        .groups
                        .get(group)
                        .map_or("/".to_string(), |(p, _)| p.clone());
                    Prober::new(addr).probe(&path, timeout).await.is_success()
                }
                (Some(_), None) => true,
                (None, _) => false,
            },
        }
    }

    /// A load balancer's health check of a registered task, when one is due; the task is
    /// taken out after [`UNHEALTHY_THRESHOLD`] failed checks in a row.
    async fn check_registered(&mut self, task: &Task, state: &ContainerState) {
        let now = Instant::now();
        if task.next_check.is_some_and(|at| now < at) {
            return;
        }
        let failures = if self.healthy(task, state, CHECK_TIMEOUT).await {
            0
        } else {
            task.failed_checks + 1
        };
        self.tasks.update(&task.arn, |t| {
            t.next_check = Some(Instant::now() + HEALTH_INTERVAL);
            t.failed_checks = failures;
        });
        if failures < UNHEALTHY_THRESHOLD {
            return;
        }
        let group = task.group.clone().unwrap_or_default();
        tracing::warn!(
            task = %task.arn,
            "a registered task failed {failures} health checks in a row; it is stopped"
        );
        let reason = format!("Task failed ELB health checks in (target-group {group})");
        if let Err(e) = self.begin_stop(task, &reason).await {
            tracing::warn!(task = %task.arn, error = %e, "stopping an unhealthy task");
        }
    }

    async fn reconcile(&mut self, service: &ServiceView) -> Result<(), String> {
        let mine: Vec<Task> = self
            .tasks
            .snapshot()
            .into_iter()
            .filter(|t| t.service == service.name && t.desired_status == "RUNNING")
            .collect();
        let (current, old): (Vec<Task>, Vec<Task>) = mine
            .into_iter()
            .partition(|t| t.task_definition == service.task_definition);
        if current.len() < service.desired {
            let due = self
                .last_start
                .get(&service.name)
                .is_none_or(|at| at.elapsed() >= START_SPACING);
            if due {
                self.last_start.insert(service.name.clone(), Instant::now());
                self.start_task(service, None, None).await?;
            }
        }
        if current.len() > service.desired {
            let mut extra = current.clone();
            extra.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
            for task in extra.iter().take(current.len() - service.desired) {
                self.begin_stop(task, "Scaling activity initiated by the service")
                    .await?;
            }
        }
        let ready = current.iter().filter(|t| t.registered).count();
        if !old.is_empty() && (ready >= service.desired || service.desired == 0) {
            for task in &old {
                self.begin_stop(task, "Replaced by a deployment of a newer task definition")
                    .await?;
            }
        }
        Ok(())
    }

    async fn definition(&mut self, arn: &str) -> Result<TaskDefinition, String> {
        if let Some(found) = self.definitions.get(arn) {
            return Ok(found.clone());
        }
        let out = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| format!("DescribeTaskDefinition {arn}: {}", describe_error(&e)))?;
        let found = out
            .task_definition()
            .cloned()
            .ok_or_else(|| format!("DescribeTaskDefinition {arn}: no task definition"))?;
        self.definitions.insert(arn.to_string(), found.clone());
        Ok(found)
    }

    async fn group(&mut self, arn: &str) -> Result<(String, Duration), String> {
        if let Some(found) = self.groups.get(arn) {
            return Ok(found.clone());
        }
        let elb = &self.clients.elb;
        let out = elb
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await
            .map_err(|e| format!("DescribeTargetGroups {arn}: {}", describe_error(&e)))?;
        let path = out
            .target_groups()
            .first()
            .and_then(|g| g.health_check_path())
            .unwrap_or("/")
            .to_string();
        let attributes = elb
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeTargetGroupAttributes {arn}: {}",
                    describe_error(&e)
                )
            })?;
        let delay = attributes
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(300), Duration::from_secs);
        self.groups.insert(arn.to_string(), (path.clone(), delay));
        Ok((path, delay))
    }

    /// The values of a container's secrets, read from the emulator.
    async fn secrets(&self, container: &ContainerDefinition) -> Result<Vec<String>, String> {
        let mut env = Vec::new();
        for secret in container.secrets() {
            let from = secret.value_from();
            let value = if from.contains(":secretsmanager:") {
                self.clients
                    .secrets
                    .get_secret_value()
                    .secret_id(from)
                    .send()
                    .await
                    .map_err(|e| format!("GetSecretValue {from}: {}", describe_error(&e)))?
                    .secret_string()
                    .unwrap_or_default()
                    .to_string()
            } else {
                let name = from.split_once(":parameter").map_or(from, |(_, name)| name);
                self.clients
                    .ssm
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| format!("GetParameter {from}: {}", describe_error(&e)))?
                    .parameter()
                    .and_then(|p| p.value())
                    .unwrap_or_default()
                    .to_string()
            };
            env.push(format!("{}={value}", secret.name()));
        }
        Ok(env)
    }

    /// Starts one task of `service` (a container of its task definition), or a one-off task
    /// (RunTask: `command` overrides the container's, `started_by` is kept). A task that
    /// cannot start is recorded stopped with ECS's reason, not returned as an error.
    async fn start_task(
        &mut self,
        service: &ServiceView,
        command: Option<Vec<String>>,
        started_by: Option<String>,
    ) -> Result<Task, String> {
        let definition = self.definition(&service.task_definition).await?;
        let container = definition
            .container_definitions()
            .iter()
            .find(|c| Some(c.name().unwrap_or_default()) == service.container.as_deref())
            .or_else(|| {
                definition
                    .container_definitions()
                    .iter()
                    .find(|c| c.essential() != Some(false))
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "task definition {} has no container",
                    service.task_definition
                )
            })?;
        let group = match &service.group {
            Some(arn) => {
                self.group(arn).await?;
                Some(arn.clone())
            }
            None => None,
        };
        let task_id = {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
            hex::encode(bytes)
        };
        let cluster_name = self.cluster.clone();
        let arn = format!(
            "arn:aws:ecs:{}:{ACCOUNT}:task/{cluster_name}/{task_id}",
            super::REGION
        );
        let port = container
            .port_mappings()
            .first()
            .and_then(|p| p.container_port())
            .and_then(|p| u16::try_from(p).ok());
        let mut task = Task::pending(
            arn.clone(),
            service.cluster_arn.clone(),
            service.name.clone(),
            started_by,
            service.task_definition.clone(),
            container.name().unwrap_or_default().to_string(),
            group,
        );
        let image = container.image().unwrap_or_default().to_string();
        let mut env: Vec<String> = container
            .environment()
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.name().unwrap_or_default(),
                    kv.value().unwrap_or_default()
                )
            })
            .collect();
        match self.secrets(&container).await {
            Ok(values) => env.extend(values),
            Err(e) => {
                return Ok(self.failed_to_start(task, format!("ResourceInitializationError: {e}")));
            }
        }
        let healthcheck = container.health_check().map(|h| HealthConfig {
            test: Some(h.command().to_vec()),
            interval: h.interval().map(|s| i64::from(s) * 1_000_000_000),
            timeout: h.timeout().map(|s| i64::from(s) * 1_000_000_000),
            retries: h.retries().map(i64::from),
            start_period: h.start_period().map(|s| i64::from(s) * 1_000_000_000),
            ..Default::default()
        });
        let name = format!("shipit-sandbox-{}-{}", self.id, &task_id[..12]);
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(env),
            labels: Some(
                [
                    (LABEL.to_string(), self.id.clone()),
                    (TASK_LABEL.to_string(), arn.clone()),
                ]
                .into(),
            ),
            healthcheck,
            // A RunTask override wins over the task definition's command, as on ECS.
            cmd: command.or_else(|| Some(container.command().to_vec()).filter(|c| !c.is_empty())),
            entrypoint: Some(container.entry_point().to_vec()).filter(|e| !e.is_empty()),
            host_config: Some(HostConfig::default()),
            ..Default::default()
        };
        let options = || {
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            })
        };
        let created = match self.docker.create_container(options(), body.clone()).await {
            Ok(created) => Ok(created),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => match self.pull(&image).await {
                Ok(()) => self.docker.create_container(options(), body).await,
                Err(e) => {
                    return Ok(self
                        .failed_to_start(task, format!("CannotPullContainerError: {image}: {e}")));
                }
            },
            Err(e) => Err(e),
        };
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                return Ok(self.failed_to_start(task, format!("CannotCreateContainerError: {e}")));
            }
        };
        task.container_id = created.id.clone();
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Ok(self.failed_to_start(task, format!("CannotStartContainerError: {e}")));
        }
        let inspected = self
            .docker
            .inspect_container(&created.id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("inspecting {name}: {e}"))?;
        let ip = inspected
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| {
                n.into_values()
                    .find_map(|e| e.ip_address.filter(|ip| !ip.is_empty()))
            });
        task.address = match (ip.and_then(|ip| ip.parse().ok()), port) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            _ => None,
        };
        task.started_at = Some(now_secs());
        task.last_status = "RUNNING";
        tracing::info!(task = %arn, service = %service.name, container = %name, "started a task");
        self.tasks.insert(task.clone());
        Ok(task)
    }

    /// Records `task` as stopped before it ran, for `reason` (ECS's error names).
    fn failed_to_start(&self, mut task: Task, reason: String) -> Task {
        task.last_status = "STOPPED";
        task.desired_status = "STOPPED";
        task.stop_code = Some("TaskFailedToStart");
        task.stopped_reason = Some(reason);
        task.stopped_at = Some(now_secs());
        task.container_id.clear();
        tracing::warn!(task = %task.arn, reason = ?task.stopped_reason, "a task failed to start");
        self.tasks.insert(task.clone());
        task
    }

    async fn pull(&self, image: &str) -> Result<(), String> {
        let (from, tag) = match image.rsplit_once('@') {
            Some((repo, digest)) => (repo.to_string(), digest.to_string()),
            None => match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((repo, tag)) => (repo.to_string(), tag.to_string()),
                None => (image.to_string(), "latest".to_string()),
            },
        };
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(from),
                tag: Some(tag),
                ..Default::default()
            }),
            None,
            None,
        );
        let pulled = async {
            while let Some(item) = stream.next().await {
                item.map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        // The agent runs one thing at a time: a registry that never answers must not hold
        // every other task for long.
        tokio::time::timeout(PULL_TIMEOUT, pulled)
            .await
            .unwrap_or_else(|_| Err(format!("no image within {}s", PULL_TIMEOUT.as_secs())))
    }

    /// Deregisters `task` and marks it to stop once the deregistration delay has passed.
    async fn begin_stop(&mut self, task: &Task, reason: &str) -> Result<(), String> {
        let mut delay = Duration::ZERO;
        if task.registered
            && let (Some(addr), Some(group)) = (task.address, &task.group)
        {
            delay = self.group(group).await?.1;
            self.deregister(group, addr).await;
        }
        let reason = reason.to_string();
        self.tasks.update(&task.arn, |t| {
            t.desired_status = "STOPPED";
            t.last_status = "DEACTIVATING";
            t.registered = false;
            t.stop_code = Some("ServiceSchedulerInitiated");
            t.stopped_reason = Some(reason);
            t.stop_after = Some(Instant::now() + delay);
        });
        Ok(())
    }

    async fn deregister(&self, group: &str, addr: SocketAddr) {
        if let Err(e) = self
            .clients
            .elb
            .deregister_targets()
            .target_group_arn(group)
            .targets(target(addr))
            .send()
            .await
        {
            tracing::warn!(error = %describe_error(&e), "DeregisterTargets");
        }
    }

    /// Stops the containers of tasks whose deregistration delay has passed, once the load
    /// balancer no longer routes to them.
    async fn finish_stops(&mut self) {
        let now = Instant::now();
        for task in self.tasks.snapshot() {
            let Some(after) = task
                .stop_after
                .filter(|_| task.last_status == "DEACTIVATING")
            else {
                continue;
            };
            let routed = task.address.is_some_and(|a| self.routed.contains(a));
            if !stop_due(now, after, routed) {
                continue;
            }
            if routed {
                tracing::warn!(
                    task = %task.arn,
                    "the load balancer still routes to a deregistered task; stopping it anyway"
                );
            }
            let code = self.stop_container(&task.container_id).await;
            let _ = self.remove(&task.container_id).await;
            self.tasks.update(&task.arn, |t| {
                t.last_status = "STOPPED";
                t.stopped_at = Some(now_secs());
                t.exit_code = code;
                t.container_id.clear();
            });
        }
    }

    /// Marks `task` stopped for `code`/`reason`, takes it out of its group, and removes its
    /// container.
    async fn stopped(&mut self, task: &Task, code: &'static str, reason: &str, exit: Option<i64>) {
        if task.registered
            && let (Some(addr), Some(group)) = (task.address, &task.group)
        {
            self.deregister(group, addr).await;
        }
        let _ = self.remove(&task.container_id).await;
        let keep_reason = task.desired_status == "STOPPED";
        let reason = reason.to_string();
        self.tasks.update(&task.arn, |t| {
            t.last_status = "STOPPED";
            t.desired_status = "STOPPED";
            t.registered = false;
            t.stopped_at = Some(now_secs());
            t.exit_code = exit;
            t.container_id.clear();
            if !keep_reason || t.stopped_reason.is_none() {
                t.stop_code = Some(code);
                t.stopped_reason = Some(reason);
            }
        });
    }

    async fn remove(&self, id: &str) -> Result<(), bollard::errors::Error> {
        if id.is_empty() {
            return Ok(());
        }
        self.docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
    }
}

/// Removes every container of the sandbox `id` from the engine; how many it removed.
pub async fn remove_containers(docker: &Docker, id: &str) -> Result<usize, String> {
    let filters = [("label".to_string(), vec![format!("{LABEL}={id}")])].into();
    let found = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("listing the sandbox's containers: {e}"))?;
    let mut removed = 0;
    for container in found {
        if let Some(id) = container.id {
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| format!("removing container {id}: {e}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deregistered_task_stops_after_its_delay_once_no_longer_routed() {
        let after = Instant::now();
        let before = after.checked_sub(Duration::from_millis(1)).unwrap();
        // Within its delay it runs, routed or not.
        assert!(!stop_due(before, after, false));
        assert!(!stop_due(before, after, true));
        // After it: stopped once the load balancer no longer routes to it.
        assert!(stop_due(after, after, false));
        assert!(!stop_due(after + Duration::from_secs(29), after, true));
        // A load balancer that does not follow keeps it no longer than ROUTED_WAIT.
        assert!(stop_due(after + ROUTED_WAIT, after, true));
    }
}
