//! Waiting on AWS: a deadline, adaptive polling, backoff on throttling, and a timeout message
//! that names what was awaited and the last state seen.
//!
//! [`until`] is the loop; it knows nothing of AWS. It polls at [`FIRST_POLL`] while the state
//! changes and slows down (×1.5, up to [`MAX_POLL`]) while it does not, so a quick rollout is
//! seen at once and a slow one costs few calls. Throttled or unreachable calls back off
//! exponentially (up to [`MAX_BACKOFF`]) and count against the same deadline; any other
//! error ends the wait. A fetch always runs at the deadline itself, so a condition met just
//! in time is not reported as a timeout.
//!
//! The fetchers below read one state from one API call: an ECS service's rollout, a target
//! group's target health (with the watched alarms during a bake), a CloudFront
//! distribution's status. They are tested with scripted
//! SDK responses (aws-smithy-mocks) on tokio's paused clock.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alarm::{self, AlarmWatch, Alarms};
use super::aws::{FetchError, short_arn};
use crate::platform::{ErrorKind, PlatformError};

/// The first pause between two polls, and the pause after a state change.
pub const FIRST_POLL: Duration = Duration::from_millis(250);
/// The longest pause between two polls of an unchanged state.
pub const MAX_POLL: Duration = Duration::from_secs(5);
/// The longest pause after a throttled or failed call.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// One reading of the awaited state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<S> {
    /// The condition holds.
    Done(S),
    /// Not yet.
    Pending(S),
    /// It never will (a failed rollout): stop waiting, with why.
    Failed(S, String),
}

/// Why a wait ended without its condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error(
        "timed out after {} waiting for {what}; last seen: {}",
        humantime::format_duration(*waited),
        last.as_deref().unwrap_or("nothing (no call succeeded)")
    )]
    TimedOut {
        what: String,
        waited: Duration,
        last: Option<String>,
    },
    #[error("{what} failed: {reason}; last seen: {last}")]
    Failed {
        what: String,
        reason: String,
        last: String,
    },
    #[error("reading the state while waiting for {what} failed: {message}")]
    Fetch { what: String, message: String },
    #[error("stopped waiting for {what}: cancelled")]
    Cancelled { what: String },
}

/// Polls `fetch` until it reports [`Poll::Done`], the deadline `limit` passes, or `cancel`
/// fires. `seen` is called with every pending state (for progress lines).
pub async fn until<S, F, Fut>(
    what: &str,
    limit: Duration,
    cancel: &CancellationToken,
    mut seen: impl FnMut(&S),
    mut fetch: F,
) -> Result<S, WaitError>
where
    S: fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<S>, FetchError>>,
{
    let started = Instant::now();
    let mut interval = FIRST_POLL;
    let mut backoff = FIRST_POLL;
    let mut last: Option<String> = None;
    loop {
        let pause = match fetch().await {
            Ok(Poll::Done(state)) => return Ok(state),
            Ok(Poll::Failed(state, reason)) => {
                return Err(WaitError::Failed {
                    what: what.to_string(),
                    reason,
                    last: state.to_string(),
                });
            }
            Ok(Poll::Pending(state)) => {
                seen(&state);
                let text = state.to_string();
                if last.as_deref() != Some(&text) {
                    interval = FIRST_POLL;
                }
                last = Some(text);
                backoff = FIRST_POLL;
                let pause = interval;
                interval = (interval * 3 / 2).min(MAX_POLL);
                pause
            }
            Err(FetchError::Fatal(message)) => {
                return Err(WaitError::Fetch {
                    what: what.to_string(),
                    message,
                });
            }
            Err(FetchError::Throttled(message) | FetchError::Transient(message)) => {
                // The last state stays what it was; the error says why nothing newer was seen.
                if last.is_none() {
                    last = Some(format!("no answer yet ({message})"));
                }
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        let waited = started.elapsed();
        if waited >= limit {
            return Err(WaitError::TimedOut {
                what: what.to_string(),
                waited,
                last,
            });
        }
        let pause = pause.min(limit - waited);
        let paused_at = Instant::now();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                crate::waited::add(paused_at.elapsed());
                return Err(WaitError::Cancelled { what: what.to_string() });
            }
            _ = tokio::time::sleep(pause) => crate::waited::add(paused_at.elapsed()),
        }
    }
}

// ---- ECS: a service's rollout ---------------------------------------------------------------

/// How far a service has rolled out a task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub service: String,
    /// Tasks running the awaited task definition.
    pub running: i32,
    pub desired: i32,
    pub pending: i32,
    /// Tasks of other deployments still running (an old task definition draining).
    pub others_running: i32,
    /// The task definition of the PRIMARY deployment.
    pub primary: Option<String>,
    /// ECS's rollout state of the PRIMARY deployment (`IN_PROGRESS`, `COMPLETED`, `FAILED`).
    pub rollout_state: Option<String>,
    /// True when the service lists no deployment of the awaited task definition and its own
    /// counters were read instead (emulators that do not track deployments).
    pub from_service_counts: bool,
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {}: {} of {} tasks running, {} pending",
            self.service, self.running, self.desired, self.pending
        )?;
        if self.others_running > 0 {
            write!(
                f,
                ", {} tasks of an older deployment still running",
                self.others_running
            )?;
        }
        if let Some(primary) = &self.primary {
            write!(f, ", PRIMARY deployment on {}", short_arn(primary))?;
        }
        if let Some(state) = &self.rollout_state {
            write!(f, " ({state})")?;
        }
        if self.from_service_counts {
            f.write_str(" (service counts: the endpoint lists no deployment for it)")?;
        }
        Ok(())
    }
}

/// Reads whether `service` runs `desired` tasks of `task_definition` and nothing else.
pub async fn rollout(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
    task_definition: &str,
    desired: i32,
) -> Result<Poll<Rollout>, FetchError> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| FetchError::from_sdk(&e))?;
    let Some(found) = out
        .services()
        .iter()
        .find(|s| s.service_name() == Some(service))
    else {
        let reason = out
            .failures()
            .first()
            .and_then(|f| f.reason())
            .unwrap_or("not listed");
        return Err(FetchError::Fatal(format!(
            "ECS service {service} in cluster {cluster}: {reason}"
        )));
    };
    if let Some(status) = found.status()
        && status != "ACTIVE"
    {
        return Err(FetchError::Fatal(format!(
            "ECS service {service} in cluster {cluster} is {status}"
        )));
    }
    let deployments = found.deployments();
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    let mut state = Rollout {
        service: service.to_string(),
        running: 0,
        desired,
        pending: 0,
        others_running: deployments
            .iter()
            .filter(|d| d.task_definition() != Some(task_definition))
            .map(|d| d.running_count())
            .sum(),
        primary: primary
            .and_then(|d| d.task_definition())
            .map(str::to_string),
        rollout_state: primary
            .and_then(|d| d.rollout_state())
            .map(|s| s.as_str().to_string()),
        from_service_counts: false,
    };
    match primary {
        Some(p) if p.task_definition() == Some(task_definition) => {
            state.running = p.running_count();
            state.pending = p.pending_count();
            if state.rollout_state.as_deref() == Some("FAILED") {
                let reason = p
                    .rollout_state_reason()
                    .unwrap_or("ECS reports the rollout FAILED")
                    .to_string();
                return Ok(Poll::Failed(state, reason));
            }
            if state.running >= desired && state.others_running == 0 {
                return Ok(Poll::Done(state));
            }
        }
        _ if !deployments
            .iter()
            .any(|d| d.task_definition() == Some(task_definition))
            && found.task_definition() == Some(task_definition) =>
        {
            state.from_service_counts = true;
            state.running = found.running_count();
            state.pending = found.pending_count();
            state.others_running = 0;
            if state.running >= desired {
                return Ok(Poll::Done(state));
            }
        }
        _ => {}
    }
    Ok(Poll::Pending(state))
}

// ---- ELBv2: a target group's health ---------------------------------------------------------

/// The health of a target group's targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub target_group: String,
    pub healthy: usize,
    pub total: usize,
    /// `<id>:<port> <state> (<reason>: <description>)` of every target that is not healthy.
    pub not_healthy: Vec<String>,
    /// How many targets are in state `unhealthy` (not `initial`, `draining`, …).
    pub unhealthy: usize,
    /// `<id>:<port>` of every target counted in `total`, in the order ELBv2 lists them.
    pub registered: Vec<String>,
    /// How many targets are leaving the group (`draining`); not counted in `total`.
    pub draining: usize,
}

impl fmt::Display for TargetHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target group {}: {} of {} targets healthy",
            short_arn(&self.target_group),
            self.healthy,
            self.total
        )?;
        if self.total == 0 {
            f.write_str(" (no targets registered)")?;
        }
        if !self.not_healthy.is_empty() {
            write!(f, "; {}", self.not_healthy.join("; "))?;
        }
        Ok(())
    }
}

/// Reads the target health of `target_group`; done when at least `at_least` are healthy.
pub async fn targets(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    target_group: &str,
    at_least: usize,
) -> Result<Poll<TargetHealth>, FetchError> {
    let out = elb
        .describe_target_health()
        .target_group_arn(target_group)
        .send()
        .await
        .map_err(|e| FetchError::from_sdk(&e))?;
    let mut state = TargetHealth {
        target_group: target_group.to_string(),
        healthy: 0,
        total: 0,
        not_healthy: Vec::new(),
        unhealthy: 0,
        registered: Vec::new(),
        draining: 0,
    };
    for description in out.target_health_descriptions() {
        let health = description.target_health();
        let target_state = health.and_then(|h| h.state());
        // Targets leaving the group do not count either way.
        if target_state == Some(&TargetHealthStateEnum::Draining) {
            state.draining += 1;
            continue;
        }
        if target_state == Some(&TargetHealthStateEnum::Unused) {
            continue;
        }
        let target = description.target();
        let id = target.and_then(|t| t.id()).unwrap_or("?");
        let port = target
            .and_then(|t| t.port())
            .map_or(String::new(), |p| format!(":{p}"));
        state.registered.push(format!("{id}{port}"));
        state.total += 1;
        if target_state == Some(&TargetHealthStateEnum::Healthy) {
            state.healthy += 1;
            continue;
        }
        if target_state == Some(&TargetHealthStateEnum::Unhealthy) {
            state.unhealthy += 1;
        }
        let shown = target_state.map_or("unknown", |s| s.as_str());
        let reason = health
            .and_then(|h| h.reason())
            .map(|r| r.as_str().to_string());
        let detail = match (reason, health.and_then(|h| h.description())) {
            (Some(r), Some(d)) => format!(" ({r}: {d})"),
            (Some(r), None) => format!(" ({r})"),
            (None, Some(d)) => format!(" ({d})"),
            (None, None) => String::new(),
        };
        state
            .not_healthy
            .push(format!("{id}{port} {shown}{detail}"));
    }
    if state.healthy >= at_least {
        Ok(Poll::Done(state))
    } else {
        Ok(Poll::Pending(state))
    }
}

/// One reading during a bake: the new target group's health, and the watched alarms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeState {
    pub health: TargetHealth,
    pub alarms: Option<Alarms>,
}

impl fmt::Display for BakeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.health)?;
        if let Some(alarms) = &self.alarms {
            write!(f, "; {alarms}")?;
        }
        Ok(())
    }
}

/// Watches `target_group`, and the alarms of `alarms`, for `period` (a bake): fails as soon as
/// a target is unhealthy or an alarm is in `ALARM`. Each poll reads both. An alarm that no
/// longer exists ends the bake too (a [`WaitError::Fetch`]).
pub async fn stays_healthy(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    target_group: &str,
    alarms: Option<AlarmWatch<'_>>,
    period: Duration,
    cancel: &CancellationToken,
    mut seen: impl FnMut(&BakeState, Duration),
) -> Result<(), WaitError> {
    let what = format!("the bake of {}", short_arn(target_group));
    let started = Instant::now();
    let result = until(
        &what,
        period,
        cancel,
        |state: &BakeState| seen(state, period.saturating_sub(started.elapsed())),
        || async move {
            let read_alarms = async {
                match alarms {
                    Some(watch) => alarm::read(watch.cloudwatch, watch.names).await.map(Some),
                    None => Ok(None),
                }
            };
            let (health, alarms_read) =
                tokio::join!(targets(elb, target_group, usize::MAX), read_alarms);
            let health = match health? {
                Poll::Done(s) | Poll::Pending(s) | Poll::Failed(s, _) => s,
            };
            let state = BakeState {
                health,
                alarms: alarms_read?,
            };
            if let Some(missing) = state.alarms.as_ref().map(|a| &a.missing)
                && !missing.is_empty()
            {
                return Err(FetchError::Fatal(format!(
                    "CloudWatch {} {} no longer {}",
                    if missing.len() == 1 {
                        "alarm"
                    } else {
                        "alarms"
                    },
                    missing.join(", "),
                    if missing.len() == 1 {
                        "exists"
                    } else {
                        "exist"
                    }
                )));
            }
            if state.health.unhealthy > 0 {
                let reason = format!(
                    "{} unhealthy",
                    count(state.health.unhealthy, "target is", "targets are")
                );
                return Ok(Poll::Failed(state, reason));
            }
            if alarms.is_some_and(|w| w.stops_bake)
                && let Some(reason) = state.alarms.as_ref().and_then(Alarms::firing_reason)
            {
                return Ok(Poll::Failed(state, reason));
            }
            // Pending until the period is over: `until` ends it at the deadline.
            Ok(Poll::Pending(state))
        },
    )
    .await;
    match result {
        Err(WaitError::TimedOut { .. }) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

// ---- CloudFront: a distribution's deployment ------------------------------------------------

/// The status of a distribution (`InProgress`, `Deployed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionStatus {
    pub id: String,
    pub status: String,
}

impl fmt::Display for DistributionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "distribution {} is {}", self.id, self.status)
    }
}

/// Reads whether distribution `id` is deployed. The status is compared without case or
/// separators, so an emulator's `DEPLOYED` or `deployed` counts too.
pub async fn distribution(
    cloudfront: &aws_sdk_cloudfront::Client,
    id: &str,
) -> Result<Poll<DistributionStatus>, FetchError> {
    let out = cloudfront
        .get_distribution()
        .id(id)
        .send()
        .await
        .map_err(|e| FetchError::from_sdk(&e))?;
    let status = out
        .distribution()
        .map(|d| d.status().to_string())
        .unwrap_or_default();
    let state = DistributionStatus {
        id: id.to_string(),
        status: status.clone(),
    };
    let normal: String = status
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    if normal == "deployed" {
        Ok(Poll::Done(state))
    } else {
        Ok(Poll::Pending(state))
    }
}

/// A wait that ended without its condition, as a platform error.
pub fn wait_error(error: &WaitError, hint: &str) -> PlatformError {
    let kind = match error {
        WaitError::Fetch { .. } => ErrorKind::Platform,
        _ => ErrorKind::Verify,
    };
    PlatformError::new(kind, error.to_string()).with_hint(hint)
}

pub mod stopped;

/// `poll`, or a failure when the rollout's failed tasks reached `max` while it is pending.
pub async fn or_failed<S>(
    poll: Poll<S>,
    failures: impl Future<Output = Result<stopped::Failures, FetchError>>,
    max: usize,
) -> Result<Poll<S>, FetchError> {
    match poll {
        Poll::Pending(state) => Ok(match failures.await?.verdict(max) {
            Some(reason) => Poll::Failed(state, reason),
            None => Poll::Pending(state),
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests;
