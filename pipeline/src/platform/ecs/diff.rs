//! `shipit diff` on an ecs target: the task definition and the service settings a release
//! would launch, against what the live slot runs, as a unified diff.
//!
//! Both sides are normalised first, so that the diff shows configuration only: what changes
//! with every release (the image, `SHIPIT_RELEASE`, `SHIPIT_VERSION`, `SHIPIT_SLOT`, the
//! slot's target group) reads `<per release>` on both sides; the environment is sorted by
//! name; fields ECS fills in with their defaults when the template leaves them out
//! (`essential: true`, a `hostPort` equal to the container port) are dropped from the live
//! side. The deployment settings shipit sets on every service itself (the circuit breaker)
//! are not configuration, and not shown. Env values that printouts hide are `<redacted>` on both sides, and
//! `<redacted, changed>` on the new side when the value differs.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use similar::TextDiff;

use super::EcsPlatform;
use super::aws::{aws_error, short_arn};
use super::state::EcsState;
use crate::platform::PlatformError;
use crate::secret::REDACTED;
use crate::task_definition::{
    ContainerDefinition, LogConfiguration, NameValue, NumberText, PortMapping, RuntimePlatform,
    SecretRef, TaskDefinition,
};

/// What stands for a value that changes with every release.
pub const PER_RELEASE: &str = "<per release>";
/// A hidden env value that differs from the live one.
pub const REDACTED_CHANGED: &str = "<redacted, changed>";

/// The env names shipit sets per release and slot.
const PER_RELEASE_ENV: [&str; 3] = ["SHIPIT_RELEASE", "SHIPIT_VERSION", "SHIPIT_SLOT"];

/// A diff against the live slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EcsDiff {
    /// What the new side is compared with: the live service and its task definition, or
    /// `None` when nothing shipit released is live.
    pub live: Option<String>,
    /// The unified diff; empty when nothing differs.
    pub diff: String,
}

impl EcsDiff {
    pub fn changed(&self) -> bool {
        !self.diff.is_empty()
    }
}

impl EcsPlatform {
    /// The diff of what a release would launch now against the live slot, with the env
    /// values named in `hidden` redacted.
    pub async fn diff(&self, hidden: &BTreeSet<String>) -> Result<EcsDiff, PlatformError> {
        let state = self.state().await?;
        self.diff_from(&state, hidden).await
    }

    pub(super) async fn diff_from(
        &self,
        state: &EcsState,
        hidden: &BTreeSet<String>,
    ) -> Result<EcsDiff, PlatformError> {
        let live = state
            .live
            .as_ref()
            .filter(|l| l.foreign.is_none())
            .and_then(|l| state.service(l.slot));
        let slot = state.live.as_ref().map_or_else(
            || crate::platform::Platform::first_slot(self),
            |l| l.slot.other(),
        );
        let rendered = self.render(slot, PER_RELEASE, PER_RELEASE, PER_RELEASE)?;
        let new_service = self.planned_service_json();
        let (old, label) = match live.and_then(|s| s.task_definition.clone().map(|td| (s, td))) {
            Some((service, td)) => {
                let definition = self.described_task_definition(&td).await?;
                let settings = self.live_service_json(&service.name).await?;
                let label = format!("service {}, {}", service.name, short_arn(&td));
                (Some((definition, settings)), Some(label))
            }
            None => (None, None),
        };
        let headers = (
            format!("live: {}", label.as_deref().unwrap_or("nothing")),
            format!("[targets.{}]: the next release", self.target_name),
        );
        let diff = diff_text(old, &rendered, new_service, hidden, &headers);
        Ok(EcsDiff { live: label, diff })
    }

    /// The live task definition, in the shape a template renders.
    async fn described_task_definition(&self, td: &str) -> Result<TaskDefinition, PlatformError> {
        let out = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(td)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTaskDefinition", td, &e))?;
        let Some(t) = out.task_definition() else {
            return Err(aws_error_text(td));
        };
        Ok(from_sdk(t))
    }

    /// The settings a launch gives a new service, as JSON.
    fn planned_service_json(&self) -> Value {
        let subnets = if self.target.subnets.is_empty() {
            self.site.subnets.clone()
        } else {
            self.target.subnets.clone()
        };
        let security_groups = if self.target.security_groups.is_empty() {
            self.site.security_groups.clone()
        } else {
            self.target.security_groups.clone()
        };
        service_json(
            i32::try_from(self.target.desired_count).unwrap_or(i32::MAX),
            Some("FARGATE"),
            &crate::task_definition::container_name(&self.service),
            i32::from(self.service.port),
            subnets,
            security_groups,
        )
    }

    /// The live service's settings, as JSON.
    async fn live_service_json(&self, name: &str) -> Result<Value, PlatformError> {
        let out = self
            .clients
            .ecs
            .describe_services()
            .cluster(&self.target.cluster)
            .services(name)
            .send()
            .await
            .map_err(|e| aws_error("DescribeServices", name, &e))?;
        let Some(s) = out
            .services()
            .iter()
            .find(|s| s.service_name() == Some(name))
        else {
            return Err(aws_error_text(name));
        };
        let lb = s.load_balancers().first();
        let vpc = s
            .network_configuration()
            .and_then(|n| n.awsvpc_configuration());
        Ok(service_json(
            s.desired_count(),
            s.launch_type().map(|l| l.as_str()),
            lb.and_then(|l| l.container_name()).unwrap_or_default(),
            lb.and_then(|l| l.container_port()).unwrap_or_default(),
            vpc.map(|v| v.subnets().to_vec()).unwrap_or_default(),
            vpc.map(|v| v.security_groups().to_vec())
                .unwrap_or_default(),
        ))
    }
}

/// The unified diff of the live side (`old`: its task definition and service settings) and
/// the new one, normalised and redacted; empty when they are the same.
pub fn diff_text(
    old: Option<(TaskDefinition, Value)>,
    rendered: &TaskDefinition,
    new_service: Value,
    hidden: &BTreeSet<String>,
    headers: &(String, String),
) -> String {
    let new_td = normalise(rendered);
    let old_td = old.as_ref().map(|(td, _)| normalise_live(td, rendered));
    let (old_td, new_td) = redact(old_td, new_td, hidden);
    let new_text = pretty(&json!({ "taskDefinition": new_td, "service": new_service }));
    let old_text = match (&old_td, &old) {
        (Some(td), Some((_, settings))) => {
            pretty(&json!({ "taskDefinition": td, "service": settings }))
        }
        _ => String::new(),
    };
    if old_text == new_text {
        return String::new();
    }
    TextDiff::from_lines(&old_text, &new_text)
        .unified_diff()
        .context_radius(3)
        .header(&headers.0, &headers.1)
        .to_string()
}

fn aws_error_text(what: &str) -> PlatformError {
    PlatformError::new(
        crate::platform::ErrorKind::Platform,
        format!("ecs: {what} was not found"),
    )
}

fn service_json(
    desired: i32,
    launch_type: Option<&str>,
    container: &str,
    port: i32,
    mut subnets: Vec<String>,
    mut security_groups: Vec<String>,
) -> Value {
    subnets.sort();
    security_groups.sort();
    json!({
        "desiredCount": desired,
        "launchType": launch_type,
        "loadBalancer": { "targetGroup": PER_RELEASE, "containerName": container, "containerPort": port },
        "subnets": subnets,
        "securityGroups": security_groups,
    })
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A rendered task definition with its per-release values replaced and its env sorted.
fn normalise(definition: &TaskDefinition) -> TaskDefinition {
    let mut d = definition.clone();
    d.cpu = d.cpu.map(|c| NumberText::Text(c.text()));
    d.memory = d.memory.map(|m| NumberText::Text(m.text()));
    for c in &mut d.container_definitions {
        c.image = PER_RELEASE.to_string();
        for v in &mut c.environment {
            if PER_RELEASE_ENV.contains(&v.name.as_str()) {
                v.value = PER_RELEASE.to_string();
            }
        }
        c.environment.sort_by(|a, b| a.name.cmp(&b.name));
        c.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    }
    d
}

/// The live definition normalised as [`normalise`], without the defaults ECS filled in where
/// `rendered` says nothing.
fn normalise_live(live: &TaskDefinition, rendered: &TaskDefinition) -> TaskDefinition {
    let mut d = normalise(live);
    for c in &mut d.container_definitions {
        let template = rendered.container(&c.name);
        if c.essential == Some(true) && template.is_some_and(|t| t.essential.is_none()) {
            c.essential = None;
        }
        for p in &mut c.port_mappings {
            let said = template.and_then(|t| {
                t.port_mappings
                    .iter()
                    .find(|m| m.container_port == p.container_port)
            });
            if p.host_port == Some(p.container_port) && said.is_some_and(|m| m.host_port.is_none())
            {
                p.host_port = None;
            }
            if p.protocol.as_deref() == Some("tcp") && said.is_some_and(|m| m.protocol.is_none()) {
                p.protocol = None;
            }
        }
    }
    d
}

/// Both sides with the hidden env values redacted; a changed one marked on the new side.
fn redact(
    old: Option<TaskDefinition>,
    mut new: TaskDefinition,
    hidden: &BTreeSet<String>,
) -> (Option<TaskDefinition>, TaskDefinition) {
    let value_in = |d: &TaskDefinition, container: &str, name: &str| -> Option<String> {
        d.container(container)?
            .environment
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.clone())
    };
    for c in &mut new.container_definitions {
        for v in &mut c.environment {
            if !hidden.contains(&v.name) {
                continue;
            }
            let before = old.as_ref().and_then(|o| value_in(o, &c.name, &v.name));
            v.value = match before {
                Some(b) if b != v.value => REDACTED_CHANGED.to_string(),
                _ => REDACTED.to_string(),
            };
        }
    }
    let old = old.map(|mut o| {
        crate::task_definition::redact_env(&mut o, hidden);
        o
    });
    (old, new)
}

/// The SDK's task definition in the shape a template renders (the fields shipit supports).
pub fn from_sdk(t: &aws_sdk_ecs::types::TaskDefinition) -> TaskDefinition {
    TaskDefinition {
        family: t.family().unwrap_or_default().to_string(),
        task_role_arn: t.task_role_arn().map(str::to_string),
        execution_role_arn: t.execution_role_arn().map(str::to_string),
        network_mode: t.network_mode().map(|m| m.as_str().to_string()),
        requires_compatibilities: t
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        cpu: t.cpu().map(|c| NumberText::Text(c.to_string())),
        memory: t.memory().map(|m| NumberText::Text(m.to_string())),
        runtime_platform: t.runtime_platform().map(|r| RuntimePlatform {
            cpu_architecture: r.cpu_architecture().map(|a| a.as_str().to_string()),
            operating_system_family: r.operating_system_family().map(|o| o.as_str().to_string()),
        }),
        container_definitions: t
            .container_definitions()
            .iter()
            .map(|c| ContainerDefinition {
                name: c.name().unwrap_or_default().to_string(),
                image: c.image().unwrap_or_default().to_string(),
                essential: c.essential(),
                cpu: (c.cpu() != 0).then_some(c.cpu()),
                memory: c.memory(),
                memory_reservation: c.memory_reservation(),
                port_mappings: c
                    .port_mappings()
                    .iter()
                    .map(|p| PortMapping {
                        container_port: p.container_port().unwrap_or_default(),
                        host_port: p.host_port(),
                        protocol: p.protocol().map(|x| x.as_str().to_string()),
                        name: p.name().map(str::to_string),
                    })
                    .collect(),
                environment: c
                    .environment()
                    .iter()
                    .map(|e| NameValue {
                        name: e.name().unwrap_or_default().to_string(),
                        value: e.value().unwrap_or_default().to_string(),
                    })
                    .collect(),
                secrets: c
                    .secrets()
                    .iter()
                    .map(|s| SecretRef {
                        name: s.name().to_string(),
                        value_from: s.value_from().to_string(),
                    })
                    .collect(),
                command: (!c.command().is_empty()).then(|| c.command().to_vec()),
                entry_point: (!c.entry_point().is_empty()).then(|| c.entry_point().to_vec()),
                working_directory: c.working_directory().map(str::to_string),
                user: c.user().map(str::to_string),
                stop_timeout: c.stop_timeout(),
                log_configuration: c.log_configuration().map(|l| LogConfiguration {
                    log_driver: l.log_driver().as_str().to_string(),
                    options: l
                        .options()
                        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
