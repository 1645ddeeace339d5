//! Every change the ecs platform makes to AWS, as a value.
//!
//! The platform never calls a mutating API directly: it builds a [`Change`], and
//! [`Change::send`] makes the call. A dry run builds the same values from the same
//! functions and prints them with [`Change::call`] instead, so what `release --dry-run`
//! shows is what a release sends. The printed input uses the API's own field names.
//!
//! The functions that decide the changes from the target and the state read
//! ([`EcsPlatform::converge_changes`], [`EcsPlatform::launch_changes`],
//! [`EcsPlatform::shift_change`], [`EcsPlatform::scale_change`], …) live here too, pure: a
//! release sends what they return and a plan lists it.

use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition as SdkContainer,
    CpuArchitecture, DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair, LaunchType,
    LoadBalancer, LogConfiguration as SdkLog, LogDriver, NetworkConfiguration, NetworkMode,
    OsFamily, PortMapping as SdkPort, RuntimePlatform as SdkRuntime, Secret, Tag,
    TransportProtocol,
};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::aws::{aws_error, internal};
use super::forward::Forward;
use super::state::{EcsState, SlotService, listener_actions, rule_actions};
use super::wait;
use super::wait::wait_error;
use super::{EcsPlatform, TAG_RETIRE_AFTER, distribution};
use crate::Slot;
use crate::aws::Clients;
use crate::platform::{ErrorKind, PlatformError};
use crate::task_definition::{self, Render, TaskDefinition};

/// What a planned call is printed as: `{service, operation, input}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub service: &'static str,
    pub operation: &'static str,
    pub input: serde_json::Value,
}

/// The task definition an ECS service change refers to: one registered earlier in the same
/// run (its ARN is known once it is registered), or an existing ARN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TaskDefinitionRef {
    Arn(String),
    /// The one the preceding RegisterTaskDefinition returns.
    Registered,
}

impl TaskDefinitionRef {
    fn shown(&self) -> String {
        match self {
            TaskDefinitionRef::Arn(arn) => arn.clone(),
            TaskDefinitionRef::Registered => "<the ARN RegisterTaskDefinition returns>".into(),
        }
    }
}

/// A mutating call to AWS.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RegisterTaskDefinition {
        definition: Box<TaskDefinition>,
        tags: Vec<(String, String)>,
    },
    CreateService {
        cluster: String,
        service: String,
        task_definition: TaskDefinitionRef,
        desired_count: i32,
        target_group: String,
        container: String,
        port: u16,
        subnets: Vec<String>,
        security_groups: Vec<String>,
        tags: Vec<(String, String)>,
    },
    UpdateService {
        cluster: String,
        service: String,
        /// `None` leaves the task definition as it is (a scale).
        task_definition: Option<TaskDefinitionRef>,
        desired_count: i32,
    },
    TagService {
        service_arn: String,
        tags: Vec<(String, String)>,
    },
    UntagService {
        service_arn: String,
        keys: Vec<String>,
    },
    /// The listener's default actions, with their forward replaced.
    ModifyListener {
        listener_arn: String,
        forward: Forward,
    },
    /// The rule's actions, with their forward replaced.
    ModifyRule { rule_arn: String, forward: Forward },
    /// The target origin of the distribution's default cache behaviour, pointed at `domain`.
    UpdateDistribution {
        distribution_id: String,
        domain: String,
    },
}

/// What a sent change returned that later changes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Nothing,
    TaskDefinition {
        arn: String,
    },
    /// The distribution did not need the change.
    Unchanged,
}

fn tags_json(tags: &[(String, String)]) -> serde_json::Value {
    tags.iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

fn forward_json(forward: &Forward) -> serde_json::Value {
    json!([{ "Type": "forward", "ForwardConfig": forward }])
}

impl Change {
    /// The call as a dry run prints it.
    pub fn call(&self) -> Call {
        match self {
            Change::RegisterTaskDefinition { definition, tags } => {
                let mut input = serde_json::to_value(definition).unwrap_or_default();
                if let Some(map) = input.as_object_mut() {
                    map.insert("tags".into(), tags_json(tags));
                }
                Call {
                    service: "ecs",
                    operation: "RegisterTaskDefinition",
                    input,
                }
            }
            Change::CreateService {
                cluster,
                service,
                task_definition,
                desired_count,
                target_group,
                container,
                port,
                subnets,
                security_groups,
                tags,
            } => Call {
                service: "ecs",
                operation: "CreateService",
                input: json!({
                    "cluster": cluster,
                    "serviceName": service,
                    "taskDefinition": task_definition.shown(),
                    "desiredCount": desired_count,
                    "launchType": "FARGATE",
                    "deploymentConfiguration": circuit_breaker_json(),
                    "loadBalancers": [{
                        "targetGroupArn": target_group,
                        "containerName": container,
                        "containerPort": port,
                    }],
                    "networkConfiguration": { "awsvpcConfiguration": {
                        "subnets": subnets,
                        "securityGroups": security_groups,
                        "assignPublicIp": "DISABLED",
                    }},
                    "tags": tags_json(tags),
                }),
            },
            Change::UpdateService {
                cluster,
                service,
                task_definition,
                desired_count,
            } => {
                let mut input = json!({
                    "cluster": cluster,
                    "service": service,
                    "desiredCount": desired_count,
                    "deploymentConfiguration": circuit_breaker_json(),
                });
                if let (Some(td), Some(map)) = (task_definition, input.as_object_mut()) {
                    map.insert("taskDefinition".into(), json!(td.shown()));
                }
                Call {
                    service: "ecs",
                    operation: "UpdateService",
                    input,
                }
            }
            Change::TagService { service_arn, tags } => Call {
                service: "ecs",
                operation: "TagResource",
                input: json!({ "resourceArn": service_arn, "tags": tags_json(tags) }),
            },
            Change::UntagService { service_arn, keys } => Call {
                service: "ecs",
                operation: "UntagResource",
                input: json!({ "resourceArn": service_arn, "tagKeys": keys }),
            },
            Change::ModifyListener {
                listener_arn,
                forward,
            } => Call {
                service: "elasticloadbalancingv2",
                operation: "ModifyListener",
                input: json!({
                    "ListenerArn": listener_arn,
                    "DefaultActions": forward_json(forward),
                }),
            },
            Change::ModifyRule { rule_arn, forward } => Call {
                service: "elasticloadbalancingv2",
                operation: "ModifyRule",
                input: json!({ "RuleArn": rule_arn, "Actions": forward_json(forward) }),
            },
            Change::UpdateDistribution {
                distribution_id,
                domain,
            } => Call {
                service: "cloudfront",
                operation: "UpdateDistribution",
                input: json!({
                    "Id": distribution_id,
                    "IfMatch": "<the ETag GetDistributionConfig returns>",
                    "DistributionConfig": {
                        "Origins": { "Items": [{
                            "Id": "<the default cache behaviour's TargetOriginId>",
                            "DomainName": domain,
                        }]},
                        "(everything else)": "as GetDistributionConfig returns it",
                    },
                }),
            },
        }
    }

    /// Sends the change. `registered` is the ARN of the task definition registered earlier in
    /// this run, for [`TaskDefinitionRef::Registered`]. A distribution update waits (up to
    /// `deploy_timeout`) until CloudFront reports it deployed.
    pub async fn send(
        &self,
        clients: &Clients,
        registered: Option<&str>,
        deploy_timeout: Duration,
    ) -> Result<Sent, PlatformError> {
        let td = |r: &TaskDefinitionRef| -> Result<String, PlatformError> {
            match r {
                TaskDefinitionRef::Arn(arn) => Ok(arn.clone()),
                TaskDefinitionRef::Registered => registered.map(str::to_string).ok_or_else(|| {
                    PlatformError::new(
                        ErrorKind::Platform,
                        "internal: a service change refers to a task definition not registered yet",
                    )
                }),
            }
        };
        match self {
            Change::RegisterTaskDefinition { definition, tags } => {
                let out = register_request(clients, definition, tags)
                    .send()
                    .await
                    .map_err(|e| aws_error("RegisterTaskDefinition", &definition.family, &e))?;
                let arn = out
                    .task_definition()
                    .and_then(|t| t.task_definition_arn())
                    .unwrap_or_default()
                    .to_string();
                Ok(Sent::TaskDefinition { arn })
            }
            Change::CreateService {
                cluster,
                service,
                task_definition,
                desired_count,
                target_group,
                container,
                port,
                subnets,
                security_groups,
                tags,
            } => {
                let vpc = AwsVpcConfiguration::builder()
                    .set_subnets(Some(subnets.clone()))
                    .set_security_groups(Some(security_groups.clone()))
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()
                    .map_err(|e| internal(&e))?;
                let mut request = clients
                    .ecs
                    .create_service()
                    .cluster(cluster)
                    .service_name(service)
                    .task_definition(td(task_definition)?)
                    .desired_count(*desired_count)
                    .launch_type(LaunchType::Fargate)
                    .deployment_configuration(circuit_breaker())
                    .load_balancers(
                        LoadBalancer::builder()
                            .target_group_arn(target_group)
                            .container_name(container)
                            .container_port(i32::from(*port))
                            .build(),
                    )
                    .network_configuration(
                        NetworkConfiguration::builder()
                            .awsvpc_configuration(vpc)
                            .build(),
                    );
                for (k, v) in tags {
                    request = request.tags(Tag::builder().key(k).value(v).build());
                }
                request
                    .send()
                    .await
                    .map_err(|e| aws_error("CreateService", service, &e))?;
                Ok(Sent::Nothing)
            }
            Change::UpdateService {
                cluster,
                service,
                task_definition,
                desired_count,
            } => {
                let mut request = clients
                    .ecs
                    .update_service()
                    .cluster(cluster)
                    .service(service)
                    .desired_count(*desired_count)
                    .deployment_configuration(circuit_breaker());
                if let Some(r) = task_definition {
                    request = request.task_definition(td(r)?);
                }
                request
                    .send()
                    .await
                    .map_err(|e| aws_error("UpdateService", service, &e))?;
                Ok(Sent::Nothing)
            }
            Change::TagService { service_arn, tags } => {
                let mut request = clients.ecs.tag_resource().resource_arn(service_arn);
                for (k, v) in tags {
                    request = request.tags(Tag::builder().key(k).value(v).build());
                }
                request
                    .send()
                    .await
                    .map_err(|e| aws_error("TagResource", service_arn, &e))?;
                Ok(Sent::Nothing)
            }
            Change::UntagService { service_arn, keys } => {
                clients
                    .ecs
                    .untag_resource()
                    .resource_arn(service_arn)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .map_err(|e| aws_error("UntagResource", service_arn, &e))?;
                Ok(Sent::Nothing)
            }
            Change::ModifyListener {
                listener_arn,
                forward,
            } => {
                let actions = listener_actions(&clients.elb, listener_arn)
                    .await?
                    .unwrap_or_default();
                clients
                    .elb
                    .modify_listener()
                    .listener_arn(listener_arn)
                    .set_default_actions(Some(forward.apply_to(&actions)))
                    .send()
                    .await
                    .map_err(|e| aws_error("ModifyListener", listener_arn, &e))?;
                Ok(Sent::Nothing)
            }
            Change::ModifyRule { rule_arn, forward } => {
                let actions = rule_actions(&clients.elb, rule_arn)
                    .await?
                    .unwrap_or_default();
                clients
                    .elb
                    .modify_rule()
                    .rule_arn(rule_arn)
                    .set_actions(Some(forward.apply_to(&actions)))
                    .send()
                    .await
                    .map_err(|e| aws_error("ModifyRule", rule_arn, &e))?;
                Ok(Sent::Nothing)
            }
            Change::UpdateDistribution {
                distribution_id,
                domain,
            } => update_distribution(clients, distribution_id, domain, deploy_timeout).await,
        }
    }
}

/// Read, modify, write with `IfMatch`; again on a precondition failure; then wait for the
/// deployment.
async fn update_distribution(
    clients: &Clients,
    id: &str,
    domain: &str,
    deploy_timeout: Duration,
) -> Result<Sent, PlatformError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut config, etag) = distribution::read_config(&clients.cloudfront, id).await?;
        let changed = distribution::point_at(&mut config, domain).map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("cloudfront: distribution {id}: {e}"),
            )
            .with_hint("the default cache behaviour must target the origin that cdn.origins names")
        })?;
        if !changed {
            return Ok(Sent::Unchanged);
        }
        match clients
            .cloudfront
            .update_distribution()
            .id(id)
            .if_match(&etag)
            .distribution_config(config)
            .send()
            .await
        {
            Ok(_) => break,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_precondition_failed())
                    && attempt < distribution::MAX_UPDATE_ATTEMPTS => {}
            Err(e) => return Err(aws_error("UpdateDistribution", id, &e)),
        }
    }
    let what = format!("CloudFront distribution {id} to deploy the new origin");
    wait::until(
        &what,
        deploy_timeout,
        &CancellationToken::new(),
        |_| {},
        || wait::distribution(&clients.cloudfront, id),
    )
    .await
    .map_err(|e| {
        wait_error(
            &e,
            "the distribution's origin was changed; CloudFront may still finish deploying it",
        )
    })?;
    Ok(Sent::Nothing)
}

fn register_request(
    clients: &Clients,
    definition: &TaskDefinition,
    tags: &[(String, String)],
) -> aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder
{
    let mut request = clients
        .ecs
        .register_task_definition()
        .family(&definition.family)
        .set_task_role_arn(definition.task_role_arn.clone())
        .set_execution_role_arn(definition.execution_role_arn.clone())
        .set_network_mode(definition.network_mode.as_deref().map(NetworkMode::from))
        .set_cpu(definition.cpu.as_ref().map(|c| c.text()))
        .set_memory(definition.memory.as_ref().map(|m| m.text()));
    for compatibility in &definition.requires_compatibilities {
        request = request.requires_compatibilities(Compatibility::from(compatibility.as_str()));
    }
    if let Some(platform) = &definition.runtime_platform {
        request = request.runtime_platform(
            SdkRuntime::builder()
                .set_cpu_architecture(
                    platform
                        .cpu_architecture
                        .as_deref()
                        .map(CpuArchitecture::from),
                )
                .set_operating_system_family(
                    platform
                        .operating_system_family
                        .as_deref()
                        .map(OsFamily::from),
                )
                .build(),
        );
    }
    for c in &definition.container_definitions {
        let mut container = SdkContainer::builder()
            .name(&c.name)
            .image(&c.image)
            .set_essential(c.essential)
            .set_cpu(c.cpu)
            .set_memory(c.memory)
            .set_memory_reservation(c.memory_reservation)
            .set_command(c.command.clone())
            .set_entry_point(c.entry_point.clone())
            .set_working_directory(c.working_directory.clone())
            .set_user(c.user.clone())
            .set_stop_timeout(c.stop_timeout);
        for p in &c.port_mappings {
            container = container.port_mappings(
                SdkPort::builder()
                    .container_port(p.container_port)
                    .set_host_port(p.host_port)
                    .set_protocol(p.protocol.as_deref().map(TransportProtocol::from))
                    .set_name(p.name.clone())
                    .build(),
            );
        }
        for e in &c.environment {
            container = container.environment(
                KeyValuePair::builder()
                    .name(&e.name)
                    .value(&e.value)
                    .build(),
            );
        }
        for s in &c.secrets {
            if let Ok(secret) = Secret::builder()
                .name(&s.name)
                .value_from(&s.value_from)
                .build()
            {
                container = container.secrets(secret);
            }
        }
        if let Some(log) = &c.log_configuration
            && let Ok(log) = SdkLog::builder()
                .log_driver(LogDriver::from(log.log_driver.as_str()))
                .set_options(Some(log.options.clone().into_iter().collect()))
                .build()
        {
            container = container.log_configuration(log);
        }
        request = request.container_definitions(container.build());
    }
    for (k, v) in tags {
        request = request.tags(Tag::builder().key(k).value(v).build());
    }
    request
}

impl EcsPlatform {
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
        .map_err(|e| PlatformError::new(ErrorKind::Platform, e.to_string()).with_hint_of(e.hint()))
    }

    pub(super) fn render_input<'a>(
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
        let mut changes = vec![Change::RegisterTaskDefinition {
            definition: Box::new(definition),
            tags: task_definition::tags(&render),
        }];
        changes.extend(self.service_changes(
            slot,
            release,
            version,
            TaskDefinitionRef::Registered,
            existing,
        ));
        changes
    }

    /// Creates `slot`'s service, or updates it, to run `desired_count` tasks of `td`.
    pub fn service_changes(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        td: TaskDefinitionRef,
        existing: Option<&SlotService>,
    ) -> Vec<Change> {
        let render = self.render_input(slot, release, version, "");
        let tags = task_definition::tags(&render);
        let service = self.names.get(slot).clone();
        let desired = i32::try_from(self.target.desired_count).unwrap_or(i32::MAX);
        let mut changes = Vec::new();
        match existing {
            Some(existing) => {
                changes.push(Change::UpdateService {
                    cluster: self.target.cluster.clone(),
                    service,
                    task_definition: Some(td),
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
                task_definition: td,
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
    /// to the live slot; an idle service left scaled up is scaled down, unless it is an old
    /// slot kept for rollback whose time is not up.
    pub fn converge_changes(&self, state: &EcsState, now: Timestamp) -> Vec<(Change, String)> {
        let mut changes = Vec::new();
        if !self.cdn()
            && let Some(routed) = state.routed
            && state.split_percent > 0
        {
            changes.push((
                self.forward_change(Forward::all_to(
                    self.group(routed),
                    self.group(routed.other()),
                )),
                format!(
                    "a weighted step was left in place ({}): all traffic back on the {routed} slot",
                    state.forward.describe(&self.target.target_groups)
                ),
            ));
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
}

/// Every service shipit creates or updates has ECS's deployment circuit breaker on, so a
/// deployment whose tasks keep failing is marked FAILED (which verify reads) instead of
/// retrying for ever. Its own rollback is off: the candidate's slot is idle, and shipit
/// scales it to zero itself.
fn circuit_breaker() -> DeploymentConfiguration {
    let breaker = DeploymentCircuitBreaker::builder()
        .enable(true)
        .rollback(false)
        .build();
    DeploymentConfiguration::builder()
        .deployment_circuit_breaker(breaker)
        .build()
}

/// [`circuit_breaker`] as the API's JSON, for the plan.
fn circuit_breaker_json() -> serde_json::Value {
    json!({ "deploymentCircuitBreaker": { "enable": true, "rollback": false } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_print_the_api_field_names() {
        let update = Change::UpdateService {
            cluster: "prod".into(),
            service: "hello-green".into(),
            task_definition: Some(TaskDefinitionRef::Registered),
            desired_count: 2,
        };
        assert_eq!(
            serde_json::to_value(update.call()).expect("serializes"),
            json!({
                "service": "ecs",
                "operation": "UpdateService",
                "input": {
                    "cluster": "prod",
                    "service": "hello-green",
                    "desiredCount": 2,
                    "deploymentConfiguration": {
                        "deploymentCircuitBreaker": { "enable": true, "rollback": false }
                    },
                    "taskDefinition": "<the ARN RegisterTaskDefinition returns>",
                },
            })
        );
        let shift = Change::ModifyListener {
            listener_arn: "arn:l".into(),
            forward: Forward::all_to("arn:green", "arn:blue"),
        };
        assert_eq!(
            shift.call().input,
            json!({
                "ListenerArn": "arn:l",
                "DefaultActions": [{ "Type": "forward", "ForwardConfig": { "TargetGroups": [
                    { "TargetGroupArn": "arn:green", "Weight": 100 },
                    { "TargetGroupArn": "arn:blue", "Weight": 0 },
                ]}}],
            })
        );
    }
}
