//! `shipit release --dry-run` (and `shipit plan`) on an ecs target: what a release would do
//! now, read from AWS without changing it.
//!
//! The plan reads the same state a release reads first (the forward, the distribution, both
//! services, the lock, the watched alarms), renders the task definition the idle slot would
//! get, and lists every mutating call in order, built by the same functions the release uses
//! ([`EcsPlatform::converge_changes`], [`EcsPlatform::launch_changes`],
//! [`EcsPlatform::shift_change`], …). The lock and history writes, which live in
//! [`super::records`], and the image push are listed by what they write.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

use super::alarm::Alarms;
use super::change::{Call, Change};
use super::forward::Forward;
use super::{EcsPlatform, EcsState, TAG_RETIRE_AFTER};
use crate::aws::ReadOnly;
use crate::config::REDACTED;
use crate::lock::LockStore;
use crate::platform::PlatformError;
use crate::platform::kind::{KindPlan, PLANNED_RELEASE, PlanError, PlanHead, plan_line};
use crate::shift::ShiftStep;
use crate::task_definition::TaskDefinition;

/// One planned call, and the release phase that makes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedCall {
    pub phase: &'static str,
    #[serde(flatten)]
    pub call: Call,
}

/// What `release --dry-run` prints for an ecs target.
#[derive(Debug, Clone, Serialize)]
pub struct EcsPlan {
    #[serde(flatten)]
    pub head: PlanHead,
    /// The production forward now, e.g. `blue 100, green 0`.
    pub forward: String,
    /// The CloudFront target origin's domain now (CDN mode).
    pub cdn_origin: Option<String>,
    /// Where the image would be pushed (its digest is known after the push).
    pub image: String,
    /// The task definition the idle slot would get.
    pub task_definition: TaskDefinition,
    /// `all-at-once`, `canary:<percent>:<bake>` or `linear:<percent>:<interval>`.
    pub strategy: String,
    /// The weighted steps before the final shift to 100 %.
    pub steps: Vec<ShiftStep>,
    /// The CloudWatch alarms each bake and the final shift watch, as they are now; null
    /// without `alarms`.
    pub alarms: Option<Alarms>,
    /// Every mutating call, in order.
    pub calls: Vec<PlannedCall>,
    /// What the release would do that is not a call, and what it would find.
    pub notes: Vec<String>,
    /// Every AWS operation the plan called, as `<service>.<operation>`: reads only.
    pub aws_operations: Vec<String>,
    /// The task definition and service settings against the live slot's (`shipit diff`),
    /// every env value redacted.
    pub diff: super::diff::EcsDiff,
    /// The ECS service of the slot the release would launch in, as the text names it.
    #[serde(skip)]
    slot_service: String,
}

impl EcsPlatform {
    /// The plan of a release now, with the AWS operations reading it took; refused if one of
    /// them was not a read.
    pub(super) async fn plan_now(&self) -> Result<EcsPlan, PlanError> {
        let (version, _) = crate::git::app_version(&self.service.context);
        let mut plan = self.plan_version(&version).await?;
        let operations = self
            .read_only
            .as_ref()
            .map(ReadOnly::operations)
            .unwrap_or_default();
        if let Some(write) = operations
            .iter()
            .find(|o| !ReadOnly::is_read(o.rsplit('.').next().unwrap_or(o)))
        {
            return Err(PlanError::Refused {
                operation: write.clone(),
            });
        }
        plan.aws_operations = operations;
        Ok(plan)
    }

    /// The plan of a release of `version` now.
    pub async fn plan_version(&self, version: &str) -> Result<EcsPlan, PlatformError> {
        let state: EcsState = self.state().await?;
        let lock = self.lock_store().holder().await.map_err(|e| {
            PlatformError::new(crate::platform::ErrorKind::Platform, e.to_string())
                .with_hint_of(e.hint())
        })?;
        let alarms = self.alarms().await?;
        let head = PlanHead::new(self, version, lock, state.live.clone());
        let diff = self
            .diff_from(&state, &self.service.hidden_env_names(false))
            .await?;
        let slot = head.slot;
        let target = self.ecs_target();
        let image = format!("{}:{version}", target.repository);
        let definition = self.render(slot, PLANNED_RELEASE, version, &image)?;
        let mut calls = Vec::new();
        let mut notes = Vec::new();
        let mut add = |phase: &'static str, change: &Change| {
            calls.push(PlannedCall {
                phase,
                call: change.call(),
            });
        };

        for (change, why) in self.converge_changes(&state, Timestamp::now()) {
            notes.push(why);
            add("version", &change);
        }
        let lock_name = self.lock_store().name().to_string();
        let records = self.history_store().name_of(PLANNED_RELEASE);
        let extra = |phase: &'static str, service: &'static str, operation: &'static str, input| {
            PlannedCall {
                phase,
                call: Call {
                    service,
                    operation,
                    input,
                },
            }
        };
        let lock_call = extra(
            "version",
            "ssm",
            "PutParameter",
            json!({ "Name": lock_name, "Overwrite": false, "Value": "<this run's holder record>" }),
        );
        let record_call = extra(
            "version",
            "ssm",
            "PutParameter",
            json!({ "Name": records, "Overwrite": true, "Value": "<the release record, rewritten at every phase>" }),
        );
        let push_call = extra(
            "push",
            "registry",
            "push",
            json!({ "repository": target.repository, "tag": version }),
        );
        let unlock_call = extra(
            "record",
            "ssm",
            "DeleteParameter",
            json!({ "Name": lock_name }),
        );
        calls.insert(0, lock_call);
        calls.push(record_call);
        if crate::registry::is_ecr_host(target.registry_host()) {
            notes.push("push: ECR credentials from GetAuthorizationToken".to_string());
        }
        calls.push(push_call);

        let mut add = |phase: &'static str, change: &Change| {
            calls.push(PlannedCall {
                phase,
                call: change.call(),
            });
        };
        for change in self.launch_changes(
            slot,
            PLANNED_RELEASE,
            version,
            definition.clone(),
            state.service(slot),
        ) {
            add("launch", &change);
        }
        let names = self.service_names();
        notes.push(format!(
            "verify: wait up to {} for {} to run {} tasks of the new task definition and for \
             the {slot} target group to have as many healthy targets",
            humantime::format_duration(target.verify_timeout),
            names.get(slot),
            target.desired_count
        ));
        if let Some(test) = &target.test_listener_arn
            && self.service_verify_path().is_some()
        {
            add(
                "verify",
                &Change::ModifyListener {
                    listener_arn: test.clone(),
                    forward: Forward::all_to(
                        target.target_groups.get(slot),
                        target.target_groups.get(slot.other()),
                    ),
                },
            );
        }
        let steps = target.shift.steps();
        let watched = match &alarms {
            Some(alarms) => format!(
                "its targets and {} watched",
                if alarms.states.len() + alarms.missing.len() == 1 {
                    "1 alarm".to_string()
                } else {
                    format!("{} alarms", alarms.states.len() + alarms.missing.len())
                }
            ),
            None => "its targets watched".to_string(),
        };
        if let Some(alarms) = &alarms {
            notes.push(format!(
                "CloudWatch {alarms}: watched during each bake and once before the shift to \
                 100%; one in ALARM puts all traffic back on the live slot and fails the release"
            ));
            if !alarms.missing.is_empty() {
                notes.push(format!(
                    "{} not exist: the release would stop before launching anything",
                    if alarms.missing.len() == 1 {
                        format!("alarm {:?} does", alarms.missing[0])
                    } else {
                        format!("alarms {} do", alarms.missing.join(", "))
                    }
                ));
            } else if let Some(reason) = alarms.firing_reason() {
                notes.push(format!(
                    "{reason}: a release now would stop at its first bake, or before the shift to 100%"
                ));
            }
        }
        if let Some(live) = &state.live {
            for step in &steps {
                add(
                    "shift",
                    &self.forward_change(Forward::split(
                        target.target_groups.get(live.slot),
                        target.target_groups.get(slot),
                        step.percent,
                    )),
                );
                notes.push(format!(
                    "shift step {}/{}: {}% to the {slot} slot, {watched} for {}",
                    step.index,
                    step.total,
                    step.percent,
                    humantime::format_duration(step.bake)
                ));
            }
        } else if !steps.is_empty() {
            notes.push("shift: nothing is live, so the weighted steps are skipped".to_string());
        }
        add("shift", &self.shift_change(slot));
        match &state.live {
            Some(live) if live.foreign.is_some() => notes.push(format!(
                "retire: the {} slot is {}; they are left alone",
                live.slot,
                live.foreign.as_deref().unwrap_or_default()
            )),
            Some(live) => match state.service(live.slot) {
                Some(old) if target.keep_previous.is_zero() => {
                    add("retire", &self.scale_change(live.slot, 0));
                    notes.push(format!("retire: scale {} to 0", old.name));
                }
                Some(old) => {
                    add(
                        "retire",
                        &Change::TagService {
                            service_arn: old.arn.clone(),
                            tags: vec![(
                                TAG_RETIRE_AFTER.to_string(),
                                format!(
                                    "<now + {}>",
                                    humantime::format_duration(target.keep_previous)
                                ),
                            )],
                        },
                    );
                    notes.push(format!(
                        "retire: keep {} running for {}; a later release scales it down",
                        old.name,
                        humantime::format_duration(target.keep_previous)
                    ));
                }
                None => {}
            },
            None => notes.push("retire: nothing is live, nothing to retire".to_string()),
        }
        calls.push(unlock_call);

        Ok(EcsPlan {
            head,
            forward: state.forward.describe(&target.target_groups),
            cdn_origin: state.cdn_origin.clone(),
            image,
            task_definition: definition,
            strategy: target.shift.to_string(),
            steps,
            alarms,
            calls,
            notes,
            aws_operations: Vec::new(),
            diff,
            slot_service: names.get(slot).clone(),
        })
    }

    fn service_verify_path(&self) -> Option<&str> {
        self.service.verify.version_path.as_deref()
    }
}

impl KindPlan for EcsPlan {
    /// The environment is in the task definition and in its RegisterTaskDefinition call.
    fn redact_env(&mut self, hidden: &BTreeSet<String>) {
        crate::task_definition::redact_env(&mut self.task_definition, hidden);
        for planned in &mut self.calls {
            if planned.call.operation != "RegisterTaskDefinition" {
                continue;
            }
            let containers = planned
                .call
                .input
                .get_mut("containerDefinitions")
                .and_then(serde_json::Value::as_array_mut);
            for container in containers.into_iter().flatten() {
                let environment = container
                    .get_mut("environment")
                    .and_then(serde_json::Value::as_array_mut);
                for variable in environment.into_iter().flatten() {
                    let secret = variable
                        .get("name")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|name| hidden.contains(name));
                    if secret {
                        variable["value"] = REDACTED.into();
                    }
                }
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = self.head.lines();
        let mut line = |label: &str, text: &str| lines.push(plan_line(label, text));
        line("forward", &self.forward);
        if let Some(origin) = &self.cdn_origin {
            line("cdn", &format!("the distribution's origin is {origin}"));
        }
        line("push", &self.image);
        line(
            "launch",
            &format!(
                "the {} slot (service {})",
                self.head.slot, self.slot_service
            ),
        );
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{}% for {}", s.percent, humantime::format_duration(s.bake)))
            .chain(std::iter::once("100%".to_string()))
            .collect();
        line(
            "shift",
            &format!("{}: {}", self.strategy, steps.join(", then ")),
        );
        for note in &self.notes {
            line("", note);
        }
        lines.push(format!("  calls ({}), in order:", self.calls.len()));
        for (i, call) in self.calls.iter().enumerate() {
            lines.push(format!(
                "    {:>2}. [{}] {} {} {}",
                i + 1,
                call.phase,
                call.call.service,
                call.call.operation,
                call.call.input
            ));
        }
        if self.diff.changed() {
            lines.push(format!(
                "  diff against the live slot ({}):",
                self.diff.live.as_deref().unwrap_or("nothing is live")
            ));
            for text in self.diff.diff.lines() {
                lines.push(format!("    {text}"));
            }
        } else {
            lines.push("  diff against the live slot: no difference".to_string());
        }
        lines.push("  task definition:".to_string());
        let rendered = serde_json::to_string_pretty(&self.task_definition).unwrap_or_default();
        for text in rendered.lines() {
            lines.push(format!("    {text}"));
        }
        lines.push(format!(
            "  read with {} AWS calls, all reads: {}",
            self.aws_operations.len(),
            self.aws_operations.join(", ")
        ));
        lines
    }
}
