//! The migrate task, fed scripted SDK responses (aws-smithy-mocks) on tokio's paused clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsOutput;
use aws_sdk_cloudwatchlogs::types::OutputLogEvent;
use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::operation::run_task::RunTaskOutput;
use aws_sdk_ecs::operation::stop_task::StopTaskOutput;
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Container, ContainerDefinition, Failure, LogConfiguration,
    NetworkConfiguration, Service, Tag, Task, TaskDefinition,
};
use aws_smithy_mocks::{Rule, RuleMode, mock};

use super::*;
use crate::event::Event;
use crate::platform::ecs::scripted::scripted_client;

const CLUSTER: &str = "prod";
const SERVICE: &str = "web-green";
const TD: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/prod-web:8";
const TASK: &str = "arn:aws:ecs:us-east-1:123456789012:task/prod/0a1b2c3d";

fn ecs_client(rules: &[&Rule]) -> aws_sdk_ecs::Client {
    scripted_client!(aws_sdk_ecs, RuleMode::MatchAny, rules)
}

fn logs_client(rules: &[&Rule]) -> aws_sdk_cloudwatchlogs::Client {
    scripted_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, rules)
}

fn task() -> MigrateTask<'static> {
    MigrateTask {
        cluster: CLUSTER,
        service: SERVICE,
        container: "web",
        task_definition: TD,
    }
}

fn migrate(seconds: u64) -> Migrate {
    Migrate {
        command: vec!["migrate".into(), "--all".into()],
        timeout: Duration::from_secs(seconds),
    }
}

fn described_service() -> Rule {
    mock!(aws_sdk_ecs::Client::describe_services)
        .match_requests(|r| r.cluster() == Some(CLUSTER) && r.services() == [SERVICE])
        .then_output(|| {
            DescribeServicesOutput::builder()
                .services(
                    Service::builder()
                        .service_name(SERVICE)
                        .launch_type(LaunchType::Fargate)
                        .network_configuration(
                            NetworkConfiguration::builder()
                                .awsvpc_configuration(
                                    AwsVpcConfiguration::builder()
                                        .subnets("subnet-1")
                                        .security_groups("sg-1")
                                        .build()
                                        .unwrap(),
                                )
                                .build(),
                        )
                        .tags(Tag::builder().key("shipit:project").value("shop").build())
                        .build(),
                )
                .build()
        })
}

fn task_definition(logged: bool) -> Rule {
    mock!(aws_sdk_ecs::Client::describe_task_definition)
        .match_requests(|r| r.task_definition() == Some(TD))
        .then_output(move || {
            let mut container = ContainerDefinition::builder().name("web");
            if logged {
                container = container.log_configuration(
                    LogConfiguration::builder()
                        .log_driver(LogDriver::Awslogs)
                        .set_options(Some(HashMap::from([
                            ("awslogs-group".to_string(), "/ecs/web".to_string()),
                            ("awslogs-stream-prefix".to_string(), "ecs".to_string()),
                        ])))
                        .build()
                        .unwrap(),
                );
            }
            DescribeTaskDefinitionOutput::builder()
                .task_definition(
                    TaskDefinition::builder()
                        .family("prod-web")
                        .container_definitions(container.build())
                        .build(),
                )
                .build()
        })
}

/// ListTasks of the family's running migrations: `running` of them.
fn listed(running: usize) -> Rule {
    mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|r| r.family() == Some("prod-web") && r.started_by() == Some(STARTED_BY))
        .then_output(move || {
            let mut out = ListTasksOutput::builder();
            for n in 0..running {
                out = out.task_arns(format!("{TASK}{n}"));
            }
            out.build()
        })
}

/// RunTask, checked: the command override on the service's container, the service's
/// network settings, launch type and tags.
fn run_task() -> Rule {
    mock!(aws_sdk_ecs::Client::run_task)
        .match_requests(|r| {
            let command = r
                .overrides()
                .map(|o| o.container_overrides())
                .and_then(|c| c.first())
                .filter(|c| c.name() == Some("web"))
                .map(|c| c.command().to_vec());
            r.cluster() == Some(CLUSTER)
                && r.task_definition() == Some(TD)
                && r.count() == Some(1)
                && r.started_by() == Some(STARTED_BY)
                && command == Some(vec!["migrate".to_string(), "--all".to_string()])
                && r.launch_type() == Some(&LaunchType::Fargate)
                && r.network_configuration()
                    .and_then(|n| n.awsvpc_configuration())
                    .is_some_and(|v| v.subnets() == ["subnet-1"])
                && r.tags().iter().any(|t| t.key() == Some("shipit:project"))
        })
        .then_output(|| {
            RunTaskOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn(TASK)
                        .last_status("PROVISIONING")
                        .build(),
                )
                .build()
        })
}

fn running() -> DescribeTasksOutput {
    DescribeTasksOutput::builder()
        .tasks(
            Task::builder()
                .task_arn(TASK)
                .last_status("RUNNING")
                .build(),
        )
        .build()
}

fn stopped_with(code: i32) -> DescribeTasksOutput {
    DescribeTasksOutput::builder()
        .tasks(
            Task::builder()
                .task_arn(TASK)
                .last_status("STOPPED")
                .stopped_reason("Essential container in task exited")
                .containers(Container::builder().name("web").exit_code(code).build())
                .build(),
        )
        .build()
}

fn log_page(lines: &[&str], token: &str) -> GetLogEventsOutput {
    let mut page = GetLogEventsOutput::builder().next_forward_token(token);
    for line in lines {
        page = page.events(OutputLogEvent::builder().message(*line).build());
    }
    page.build()
}

/// The task's log stream: two lines, then nothing new.
fn log_events() -> Rule {
    mock!(aws_sdk_cloudwatchlogs::Client::get_log_events)
        .match_requests(|r| {
            r.log_group_name() == Some("/ecs/web")
                && r.log_stream_name() == Some("ecs/web/0a1b2c3d")
        })
        .sequence()
        .output(|| log_page(&["migrating", "migrated to r-1"], "f/1"))
        .output(|| log_page(&[], "f/1"))
        .repeatedly()
        .build()
}

/// A reporter that keeps each progress line.
fn recording() -> (Reporter, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let reporter = Reporter::new(move |event| {
        if let Event::Progress { message, .. } = event {
            kept.lock().unwrap().push(message);
        }
    });
    (reporter, lines)
}

#[tokio::test(start_paused = true)]
async fn a_task_that_exits_0_passes_and_its_logs_stream_as_progress() {
    let describe = described_service();
    let definition = task_definition(true);
    let run = run_task();
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|r| r.tasks() == [TASK])
        .sequence()
        .output(running)
        .output(running)
        .output(|| stopped_with(0))
        .build();
    let none = listed(0);
    let ecs = ecs_client(&[&describe, &definition, &none, &run, &tasks]);
    let log_rule = log_events();
    let logs = logs_client(&[&log_rule]);
    let (reporter, lines) = recording();
    let started = Instant::now();
    run_migrate(&ecs, &logs, &reporter, 60).await.unwrap();
    // Two polls saw it running.
    assert_eq!(started.elapsed(), POLL * 2);
    assert_eq!(tasks.num_calls(), 3);
    let lines = lines.lock().unwrap().clone();
    let migrate_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("migrate: "))
        .collect();
    assert_eq!(
        migrate_lines,
        ["migrate: migrating", "migrate: migrated to r-1"],
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("task 0a1b2c3d")),
        "{lines:?}"
    );
}

async fn run_migrate(
    ecs: &aws_sdk_ecs::Client,
    logs: &aws_sdk_cloudwatchlogs::Client,
    reporter: &Reporter,
    timeout: u64,
) -> Result<(), PlatformError> {
    run(ecs, logs, &task(), &migrate(timeout), reporter).await
}

#[tokio::test(start_paused = true)]
async fn a_task_that_exits_non_zero_fails_naming_its_exit_code_and_last_lines() {
    let describe = described_service();
    let definition = task_definition(true);
    let run = run_task();
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(|| stopped_with(3));
    let none = listed(0);
    let ecs = ecs_client(&[&describe, &definition, &none, &run, &tasks]);
    let log_rule = log_events();
    let logs = logs_client(&[&log_rule]);
    let error = run_migrate(&ecs, &logs, &Reporter::default(), 60)
        .await
        .expect_err("exit code 3");
    let text = error.to_string();
    assert!(
        text.contains("the migrate hook failed (exit code 3)"),
        "{text}"
    );
    assert!(text.contains("task 0a1b2c3d"), "{text}");
    assert!(text.contains("migrated to r-1"), "{text}");
    assert_eq!(error.kind, ErrorKind::Verify);
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_timeout_is_stopped_and_fails_the_release() {
    let describe = described_service();
    let definition = task_definition(false);
    let run = run_task();
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks)
        .sequence()
        .output(running)
        .repeatedly()
        .build();
    let stop = mock!(aws_sdk_ecs::Client::stop_task)
        .match_requests(|r| r.task() == Some(TASK) && r.cluster() == Some(CLUSTER))
        .then_output(|| StopTaskOutput::builder().build());
    let none = listed(0);
    let ecs = ecs_client(&[&describe, &definition, &none, &run, &tasks, &stop]);
    // No awslogs configuration: the logs are never read.
    let logs = logs_client(&[]);
    let started = Instant::now();
    let error = run_migrate(&ecs, &logs, &Reporter::default(), 5)
        .await
        .expect_err("past its timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(stop.num_calls(), 1);
    let text = error.to_string();
    assert!(
        text.contains("did not finish within its timeout of 5s"),
        "{text}"
    );
    assert!(text.contains("wrote no output"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_task_that_cannot_start_fails_with_the_reason() {
    let describe = described_service();
    let definition = task_definition(false);
    let run = mock!(aws_sdk_ecs::Client::run_task).then_output(|| {
        RunTaskOutput::builder()
            .failures(Failure::builder().reason("RESOURCE:ENI").arn(TD).build())
            .build()
    });
    let none = listed(0);
    let ecs = ecs_client(&[&describe, &definition, &none, &run]);
    let logs = logs_client(&[]);
    let error = run_migrate(&ecs, &logs, &Reporter::default(), 60)
        .await
        .expect_err("no task started");
    let text = error.to_string();
    assert!(text.contains("started no task: RESOURCE:ENI"), "{text}");

    // A task that stops without an exit code (its image could not be pulled) fails with why.
    // (Each scripted answer is used once: the rules are made again.)
    let describe = described_service();
    let definition = task_definition(false);
    let run = run_task();
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(|| {
        DescribeTasksOutput::builder()
            .tasks(
                Task::builder()
                    .task_arn(TASK)
                    .last_status("STOPPED")
                    .stopped_reason("CannotPullContainerError: not found")
                    .containers(Container::builder().name("web").build())
                    .build(),
            )
            .build()
    });
    let none = listed(0);
    let ecs = ecs_client(&[&describe, &definition, &none, &run, &tasks]);
    let text = run_migrate(&ecs, &logs, &Reporter::default(), 60)
        .await
        .expect_err("stopped without an exit code")
        .to_string();
    assert!(
        text.contains("stopped without an exit code: CannotPullContainerError"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_migration_still_running_keeps_a_second_one_from_starting() {
    let describe = described_service();
    let definition = task_definition(false);
    let one = listed(1);
    let run = run_task();
    let ecs = ecs_client(&[&describe, &definition, &one, &run]);
    let error = run_migrate(&ecs, &logs_client(&[]), &Reporter::default(), 60)
        .await
        .expect_err("one is running");
    assert!(error.to_string().contains("is still running"), "{error}");
    assert_eq!(run.num_calls(), 0, "RunTask was called");
}
