//! Verify reads the stopped tasks at every poll: the rollout fails at the poll that sees the
//! `max_task_failures`-th failed task of the new task definition, naming its reason and exit
//! code. Scripted: moto's tasks carry no stop code nor container exit codes.

use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::types::{Container, Task, TaskStopCode};
use aws_smithy_types::DateTime;
use jiff::Timestamp;

use super::*;
use crate::platform::ecs::wait::stopped::{self, failed};

/// When the rollout began, in seconds.
const SINCE: i64 = 1_800_000_000;

fn any_client(rules: &[&Rule]) -> aws_sdk_ecs::Client {
    ecs_client_in(RuleMode::MatchAny, rules)
}

fn arn(id: &str) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task/prod/{id}")
}

fn task(id: &str, td: &str, created: i64, code: TaskStopCode, reason: &str, exit: i32) -> Task {
    Task::builder()
        .task_arn(arn(id))
        .task_definition_arn(td)
        .created_at(DateTime::from_secs(created))
        .stopped_at(DateTime::from_secs(created + 5))
        .stop_code(code)
        .stopped_reason(reason)
        .containers(
            Container::builder()
                .name("app")
                .exit_code(exit)
                .reason("OutOfMemoryError: Container killed due to memory usage")
                .build(),
        )
        .build()
}

/// A task that crashed: its essential container exited.
fn crashed(id: &str, at: i64) -> Task {
    task(
        id,
        NEW_TD,
        at,
        TaskStopCode::EssentialContainerExited,
        "Essential container in task exited",
        137,
    )
}

/// What does not count: a scale-down of the new definition, a crash of the old one, and a
/// crash from before the rollout.
fn noise() -> Vec<Task> {
    vec![
        task(
            "scaled",
            NEW_TD,
            SINCE + 1,
            TaskStopCode::ServiceSchedulerInitiated,
            "Scaling activity initiated by (deployment ecs-svc/1)",
            0,
        ),
        task(
            "old",
            OLD_TD,
            SINCE + 1,
            TaskStopCode::EssentialContainerExited,
            "Essential container in task exited",
            1,
        ),
        crashed("before", SINCE - 600),
    ]
}

fn listed(tasks: &[Task]) -> ListTasksOutput {
    ListTasksOutput::builder()
        .set_task_arns(Some(
            tasks
                .iter()
                .map(|t| t.task_arn().unwrap().to_string())
                .collect(),
        ))
        .build()
}

fn described(tasks: Vec<Task>) -> DescribeTasksOutput {
    DescribeTasksOutput::builder()
        .set_tasks(Some(tasks))
        .build()
}

#[tokio::test(start_paused = true)]
async fn the_third_failed_task_fails_the_rollout_at_the_poll_that_sees_it() {
    // The deployment never gets a task running: each poll sees one more crash.
    let pending = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        service(
            NEW_TD,
            0,
            vec![deployment("PRIMARY", NEW_TD, 0, 2, "IN_PROGRESS")],
        )
    });
    let mut seen: Vec<Vec<Task>> = vec![noise()];
    for n in 1..=3 {
        let mut tasks = noise();
        tasks.extend((1..=n).map(|i| crashed(&format!("crash-{i}"), SINCE + 10 * i)));
        seen.push(tasks);
    }
    let lists = seen.clone();
    let list = mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|r| {
            r.cluster() == Some(CLUSTER)
                && r.service_name() == Some(SERVICE)
                && r.desired_status() == Some(&aws_sdk_ecs::types::DesiredStatus::Stopped)
        })
        .sequence()
        .output(move || listed(&lists[0]))
        .output({
            let l = seen.clone();
            move || listed(&l[1])
        })
        .output({
            let l = seen.clone();
            move || listed(&l[2])
        })
        .output({
            let l = seen.clone();
            move || listed(&l[3])
        })
        .build();
    let describe = mock!(aws_sdk_ecs::Client::describe_tasks)
        .sequence()
        .output({
            let l = seen.clone();
            move || described(l[0].clone())
        })
        .output({
            let l = seen.clone();
            move || described(l[1].clone())
        })
        .output({
            let l = seen.clone();
            move || described(l[2].clone())
        })
        .output({
            let l = seen.clone();
            move || described(l[3].clone())
        })
        .build();
    let ecs = any_client(&[&pending, &list, &describe]);
    let since = Timestamp::from_second(SINCE).unwrap();
    let result = until(
        "the rollout",
        Duration::from_secs(600),
        &CancellationToken::new(),
        |_: &Rollout| {},
        || async {
            let poll = rollout(&ecs, CLUSTER, SERVICE, NEW_TD, 2).await?;
            or_failed(
                poll,
                stopped::failures(&ecs, CLUSTER, SERVICE, NEW_TD, since),
                3,
            )
            .await
        },
    )
    .await;
    let Err(WaitError::Failed { reason, .. }) = result else {
        panic!("expected the rollout to fail, got {result:?}");
    };
    assert_eq!(
        pending.num_calls(),
        4,
        "it failed at the poll that saw the third crash"
    );
    assert!(
        reason.starts_with("3 tasks of the new task definition stopped (max_task_failures = 3)"),
        "{reason}"
    );
    assert!(
        reason.contains("the last: task crash-3 EssentialContainerExited: Essential container in task exited; container app exit code 137 (OutOfMemoryError"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollout_that_completes_is_not_failed_by_earlier_crashes() {
    let done = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        service(
            NEW_TD,
            2,
            vec![deployment("PRIMARY", NEW_TD, 2, 2, "COMPLETED")],
        )
    });
    let list = mock!(aws_sdk_ecs::Client::list_tasks).then_output(|| listed(&[]));
    let ecs = any_client(&[&done, &list]);
    let since = Timestamp::from_second(SINCE).unwrap();
    let poll = rollout(&ecs, CLUSTER, SERVICE, NEW_TD, 2).await.unwrap();
    let poll = or_failed(
        poll,
        stopped::failures(&ecs, CLUSTER, SERVICE, NEW_TD, since),
        1,
    )
    .await
    .unwrap();
    assert!(matches!(poll, Poll::Done(_)));
    assert_eq!(list.num_calls(), 0, "a done rollout reads no stopped task");
}

#[test]
fn only_failures_of_the_task_count() {
    let code = |c: TaskStopCode, reason: &str| task("t", NEW_TD, SINCE, c, reason, 1);
    assert!(failed(&code(
        TaskStopCode::TaskFailedToStart,
        "CannotPullContainerError"
    )));
    assert!(failed(&code(
        TaskStopCode::EssentialContainerExited,
        "Essential container in task exited"
    )));
    assert!(failed(&code(
        TaskStopCode::ServiceSchedulerInitiated,
        "Task failed ELB health checks in (target-group arn:…)"
    )));
    assert!(failed(&code(
        TaskStopCode::ServiceSchedulerInitiated,
        "Task failed container health checks"
    )));
    assert!(!failed(&code(
        TaskStopCode::ServiceSchedulerInitiated,
        "Scaling activity initiated by (deployment ecs-svc/1)"
    )));
    assert!(!failed(&code(
        TaskStopCode::UserInitiated,
        "Task stopped by user"
    )));
    assert!(!failed(&code(
        TaskStopCode::SpotInterruption,
        "Spot interruption"
    )));
}
