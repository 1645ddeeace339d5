//! The migrate hook on the ecs target: one task of the candidate's task definition (the new
//! image, env and secrets), run with RunTask beside the candidate's service, with the hook's
//! command as the service container's command override. It takes the network settings,
//! launch type and tags of the candidate's service, so it reaches what the service reaches and
//! is found as the project's.
//!
//! The task is polled with DescribeTasks until it stops; its exit code decides. When the
//! container logs to CloudWatch (`awslogs`), its stream is read as it runs and the lines
//! stream as progress. Past the hook's timeout the task is stopped (StopTask) and the release
//! fails. A run killed meanwhile leaves the task to finish on its own: ECS runs it once, and
//! it stops when its command ends; until then the next migration of the same task family
//! refuses to start beside it.

use std::time::Duration;

use aws_sdk_ecs::types::{ContainerOverride, LaunchType, LogDriver, ServiceField, TaskOverride};
use tokio::time::Instant;

use super::aws::{aws_error, short_arn};
use crate::config::Migrate;
use crate::event::{Phase, Reporter};
use crate::migrate::{Ended, Output};
use crate::platform::{ErrorKind, PlatformError};

/// How often the task is read while it runs.
pub const POLL: Duration = Duration::from_secs(2);
/// What the task's `startedBy` says, so `aws ecs list-tasks --started-by` finds them.
pub const STARTED_BY: &str = "shipit-migrate";

/// Which task to run where.
pub struct MigrateTask<'a> {
    pub cluster: &'a str,
    /// The candidate's ECS service: its network settings, launch type and tags are the task's.
    pub service: &'a str,
    /// The service's container, whose command is overridden.
    pub container: &'a str,
    pub task_definition: &'a str,
}

/// Where the container's output goes in CloudWatch Logs.
struct LogStream {
    group: String,
    /// `<prefix>/<container>/<task id>`, known once the task has an ARN.
    prefix: String,
    token: Option<String>,
}

/// Runs `migrate` as a task and waits for it to exit 0.
pub async fn run(
    ecs: &aws_sdk_ecs::Client,
    logs: &aws_sdk_cloudwatchlogs::Client,
    task: &MigrateTask<'_>,
    migrate: &Migrate,
    reporter: &Reporter,
) -> Result<(), PlatformError> {
    let described = ecs
        .describe_services()
        .cluster(task.cluster)
        .services(task.service)
        .include(ServiceField::Tags)
        .send()
        .await
        .map_err(|e| aws_error("DescribeServices", task.service, &e))?;
    let Some(service) = described.services().first() else {
        return Err(PlatformError::new(
            ErrorKind::Platform,
            format!(
                "the candidate's service {} is not in cluster {}",
                task.service, task.cluster
            ),
        ));
    };
    let definition = ecs
        .describe_task_definition()
        .task_definition(task.task_definition)
        .send()
        .await
        .map_err(|e| aws_error("DescribeTaskDefinition", task.task_definition, &e))?;
    let mut stream = definition
        .task_definition()
        .and_then(|d| {
            d.container_definitions()
                .iter()
                .find(|c| c.name() == Some(task.container))
        })
        .and_then(|c| c.log_configuration())
        .filter(|l| l.log_driver() == &LogDriver::Awslogs)
        .and_then(|l| {
            let options = l.options()?;
            Some(LogStream {
                group: options.get("awslogs-group")?.clone(),
                prefix: options.get("awslogs-stream-prefix")?.clone(),
                token: None,
            })
        });

    // A migration of an interrupted run may still be running: never a second one beside it.
    if let Some(family) = definition.task_definition().and_then(|d| d.family()) {
        let running = ecs
            .list_tasks()
            .cluster(task.cluster)
            .family(family)
            .started_by(STARTED_BY)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .map_err(|e| aws_error("ListTasks", family, &e))?;
        if let Some(arn) = running.task_arns().first() {
            return Err(PlatformError::new(
                ErrorKind::Verify,
                format!(
                    "the migrate hook did not start: task {}, a migration of an earlier run, is \
                     still running, and two migrations must not run at once",
                    short_arn(arn)
                ),
            )
            .with_hint(format!(
                "wait for it to stop (`aws ecs wait tasks-stopped --cluster {} --tasks {arn}`) \
                 and release again",
                task.cluster
            )));
        }
    }
    let mut request = ecs
        .run_task()
        .cluster(task.cluster)
        .task_definition(task.task_definition)
        .count(1)
        .started_by(STARTED_BY)
        .overrides(
            TaskOverride::builder()
                .container_overrides(
                    ContainerOverride::builder()
                        .name(task.container)
                        .set_command(Some(migrate.command.clone()))
                        .build(),
                )
                .build(),
        )
        .set_network_configuration(service.network_configuration().cloned())
        .set_platform_version(service.platform_version().map(str::to_string))
        .set_tags(Some(service.tags().to_vec()).filter(|t| !t.is_empty()));
    request = if service.capacity_provider_strategy().is_empty() {
        // shipit creates its services on Fargate; a service description without a launch
        // type (an emulator's) means that one too.
        let launch = service
            .launch_type()
            .cloned()
            .unwrap_or(LaunchType::Fargate);
        request.launch_type(launch)
    } else {
        request.set_capacity_provider_strategy(Some(service.capacity_provider_strategy().to_vec()))
    };
    let started = request
        .send()
        .await
        .map_err(|e| aws_error("RunTask", task.task_definition, &e))?;
    let Some(arn) = started.tasks().first().and_then(|t| t.task_arn()) else {
        let why: Vec<String> = started
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{} ({})",
                    f.reason().unwrap_or("no reason given"),
                    f.detail().or(f.arn()).unwrap_or("")
                )
            })
            .collect();
        return Err(PlatformError::new(
            ErrorKind::Verify,
            format!(
                "the migrate hook could not start: RunTask of {} started no task: {}",
                short_arn(task.task_definition),
                if why.is_empty() {
                    "no failure given".to_string()
                } else {
                    why.join("; ")
                }
            ),
        )
        .with_hint(
            "the live slot was not touched; check the cluster's capacity and the task definition",
        ));
    };
    let arn = arn.to_string();
    let task_id = arn.rsplit('/').next().unwrap_or(&arn).to_string();
    if let Some(stream) = &mut stream {
        stream.prefix = format!("{}/{}/{task_id}", stream.prefix, task.container);
    }
    let where_ = format!("task {task_id}");
    crate::migrate::starting(reporter, migrate, &where_);
    let mut output = Output::new(reporter);
    let deadline = Instant::now() + migrate.timeout;
    let ended = loop {
        let now = Instant::now();
        let stopped = stopped(ecs, task, &arn).await?;
        if let Some(stream) = &mut stream {
            read_logs(logs, stream, &mut output).await;
        }
        if let Some(ended) = stopped {
            break ended;
        }
        if now >= deadline {
            let _ = ecs
                .stop_task()
                .cluster(task.cluster)
                .task(&arn)
                .reason("shipit: the migrate hook ran past its timeout")
                .send()
                .await
                .map_err(|e| aws_error("StopTask", &task_id, &e))?;
            break Some(Ended::TimedOut(migrate.timeout));
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    };
    let tail = output.finish();
    match ended {
        None => {
            reporter.progress(Phase::Verify, "migrate hook: done");
            Ok(())
        }
        Some(ended) => Err(crate::migrate::failed(migrate, &where_, &ended, &tail)),
    }
}

/// `None` while the task runs; once it stopped, `Some(None)` when its container exited 0,
/// else how it ended.
async fn stopped(
    ecs: &aws_sdk_ecs::Client,
    task: &MigrateTask<'_>,
    arn: &str,
) -> Result<Option<Option<Ended>>, PlatformError> {
    let described = ecs
        .describe_tasks()
        .cluster(task.cluster)
        .tasks(arn)
        .send()
        .await
        .map_err(|e| aws_error("DescribeTasks", arn, &e))?;
    let Some(found) = described.tasks().first() else {
        return Ok(Some(Some(Ended::Stopped(format!(
            "ECS no longer knows task {}",
            short_arn(arn)
        )))));
    };
    if found.last_status() != Some("STOPPED") {
        return Ok(None);
    }
    let container = found
        .containers()
        .iter()
        .find(|c| c.name() == Some(task.container));
    Ok(Some(match container.and_then(|c| c.exit_code()) {
        Some(0) => None,
        Some(code) => Some(Ended::Exited(i64::from(code))),
        None => Some(Ended::Stopped(
            container
                .and_then(|c| c.reason())
                .or(found.stopped_reason())
                .unwrap_or("ECS gave no reason")
                .to_string(),
        )),
    }))
}

/// Reads the log lines written since the last read. A stream not created yet, or any other
/// error, only means no lines this time: the exit code decides the outcome.
async fn read_logs(
    logs: &aws_sdk_cloudwatchlogs::Client,
    stream: &mut LogStream,
    output: &mut Output<'_>,
) {
    // A bounded number of pages per poll: a chatty migration is read over several polls.
    for _ in 0..10 {
        let Ok(page) = logs
            .get_log_events()
            .log_group_name(&stream.group)
            .log_stream_name(&stream.prefix)
            .start_from_head(true)
            .set_next_token(stream.token.clone())
            .send()
            .await
        else {
            return;
        };
        for event in page.events() {
            output.line(event.message().unwrap_or_default());
        }
        let next = page.next_forward_token().map(str::to_string);
        let done = page.events().is_empty() || next.is_none() || next == stream.token;
        stream.token = next.or(stream.token.take());
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
