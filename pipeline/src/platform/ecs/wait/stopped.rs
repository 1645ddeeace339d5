//! The tasks of a rollout that stopped on their own: ECS's `stoppedReason`, and each
//! container's exit code and reason. Read at every poll of a verify, so a task definition
//! whose tasks crash fails the release after `max_task_failures` of them, not after
//! `verify_timeout`.
//!
//! A task counts when it runs the awaited task definition, was created since the rollout
//! began, and stopped for a failure: it failed to start, an essential container exited, or
//! the scheduler stopped it for failing its health checks. Tasks stopped by a scale-down or
//! by a user do not count.

use std::fmt;

use aws_sdk_ecs::types::{DesiredStatus, Task, TaskStopCode};
use jiff::Timestamp;

use super::super::aws::FetchError;

/// One failed task: why ECS stopped it, and how its containers ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedTask {
    pub task: String,
    pub stop_code: Option<String>,
    pub reason: Option<String>,
    /// `(container, exit code, reason)`, of containers that exited or have a reason.
    pub containers: Vec<(String, Option<i32>, Option<String>)>,
    pub stopped_at: Option<Timestamp>,
}

impl fmt::Display for StoppedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.task.rsplit('/').next().unwrap_or(&self.task);
        write!(f, "task {id}")?;
        match (&self.stop_code, &self.reason) {
            (Some(code), Some(reason)) => write!(f, " {code}: {reason}")?,
            (None, Some(reason)) => write!(f, ": {reason}")?,
            (Some(code), None) => write!(f, " {code}")?,
            (None, None) => {}
        }
        for (name, code, reason) in &self.containers {
            write!(f, "; container {name}")?;
            if let Some(code) = code {
                write!(f, " exit code {code}")?;
            }
            if let Some(reason) = reason {
                write!(f, " ({reason})")?;
            }
        }
        Ok(())
    }
}

/// The failed tasks of a rollout, the newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    pub tasks: Vec<StoppedTask>,
}

impl Failures {
    /// Why the rollout failed, once `max` tasks failed: the count, the last one's reason
    /// and its containers' exit codes.
    pub fn verdict(&self, max: usize) -> Option<String> {
        if max == 0 || self.tasks.len() < max {
            return None;
        }
        let last = self.tasks.last()?;
        Some(format!(
            "{} tasks of the new task definition stopped (max_task_failures = {max}); the last: {last}",
            self.tasks.len()
        ))
    }
}

/// Whether a stopped task stopped for a failure of its own.
pub fn failed(task: &Task) -> bool {
    match task.stop_code() {
        Some(TaskStopCode::TaskFailedToStart | TaskStopCode::EssentialContainerExited) => true,
        Some(TaskStopCode::ServiceSchedulerInitiated) => task
            .stopped_reason()
            .is_some_and(|r| r.to_ascii_lowercase().contains("health check")),
        _ => false,
    }
}

fn stopped_task(task: &Task) -> StoppedTask {
    StoppedTask {
        task: task.task_arn().unwrap_or("?").to_string(),
        stop_code: task.stop_code().map(|c| c.as_str().to_string()),
        reason: task.stopped_reason().map(str::to_string),
        containers: task
            .containers()
            .iter()
            .filter(|c| c.exit_code().is_some() || c.reason().is_some())
            .map(|c| {
                (
                    c.name().unwrap_or("?").to_string(),
                    c.exit_code(),
                    c.reason().map(str::to_string),
                )
            })
            .collect(),
        stopped_at: task
            .stopped_at()
            .and_then(|t| Timestamp::from_second(t.secs()).ok()),
    }
}

/// The failed tasks of `service` running `task_definition`, created at or after `since`.
/// ECS keeps stopped tasks for about an hour; one page of ListTasks (100) is read.
pub async fn failures(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
    task_definition: &str,
    since: Timestamp,
) -> Result<Failures, FetchError> {
    let listed = ecs
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .desired_status(DesiredStatus::Stopped)
        .send()
        .await
        .map_err(|e| FetchError::from_sdk(&e))?;
    let arns = listed.task_arns();
    if arns.is_empty() {
        return Ok(Failures::default());
    }
    let described = ecs
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(arns.to_vec()))
        .send()
        .await
        .map_err(|e| FetchError::from_sdk(&e))?;
    let since = since.as_second();
    let mut tasks: Vec<&Task> = described
        .tasks()
        .iter()
        .filter(|t| t.task_definition_arn() == Some(task_definition))
        .filter(|t| t.created_at().is_none_or(|c| c.secs() >= since))
        .filter(|t| failed(t))
        .collect();
    tasks.sort_by_key(|t| t.stopped_at().map(|s| s.secs()));
    Ok(Failures {
        tasks: tasks.into_iter().map(stopped_task).collect(),
    })
}
