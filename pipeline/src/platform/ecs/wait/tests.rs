//! The waits, fed scripted SDK responses (aws-smithy-mocks) on tokio's paused clock: every
//! pause is virtual, so the tests are fast and the timings they assert are exact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudfront::operation::get_distribution::GetDistributionOutput;
use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, Failure, Service};
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetHealth as SdkTargetHealth, TargetHealthDescription,
    TargetHealthReasonEnum, TargetHealthStateEnum,
};
use aws_smithy_mocks::{Rule, RuleMode, mock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::platform::ecs::scripted::scripted_client;

const CLUSTER: &str = "prod";
const SERVICE: &str = "hello-green";
const NEW_TD: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/prod-hello:8";
const OLD_TD: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/prod-hello:7";
const TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-green/fedcba9876543210";

fn ecs_client(rules: &[&Rule]) -> aws_sdk_ecs::Client {
    ecs_client_in(RuleMode::Sequential, rules)
}

fn ecs_client_in(mode: RuleMode, rules: &[&Rule]) -> aws_sdk_ecs::Client {
    scripted_client!(aws_sdk_ecs, mode, rules)
}

fn elb_client(rules: &[&Rule]) -> aws_sdk_elasticloadbalancingv2::Client {
    scripted_client!(aws_sdk_elasticloadbalancingv2, RuleMode::Sequential, rules)
}

fn cloudfront_client(rules: &[&Rule]) -> aws_sdk_cloudfront::Client {
    scripted_client!(aws_sdk_cloudfront, RuleMode::Sequential, rules)
}

fn deployment(status: &str, td: &str, running: i32, desired: i32, rollout: &str) -> Deployment {
    Deployment::builder()
        .status(status)
        .task_definition(td)
        .running_count(running)
        .desired_count(desired)
        .pending_count(desired - running)
        .rollout_state(DeploymentRolloutState::from(rollout))
        .build()
}

fn service(td: &str, running: i32, deployments: Vec<Deployment>) -> DescribeServicesOutput {
    let mut service = Service::builder()
        .service_name(SERVICE)
        .status("ACTIVE")
        .task_definition(td)
        .desired_count(2)
        .running_count(running);
    for d in deployments {
        service = service.deployments(d);
    }
    DescribeServicesOutput::builder()
        .services(service.build())
        .build()
}

fn throttled() -> Option<String> {
    Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string())
}

async fn wait_rollout(
    ecs: &aws_sdk_ecs::Client,
    limit: Duration,
) -> (Result<Rollout, WaitError>, Vec<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let result = until(
        "the rollout",
        limit,
        &CancellationToken::new(),
        move |s: &Rollout| record.lock().unwrap().push(s.to_string()),
        || rollout(ecs, CLUSTER, SERVICE, NEW_TD, 2),
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

#[tokio::test(start_paused = true)]
async fn rollout_in_progress_then_done() {
    let rule = mock!(aws_sdk_ecs::Client::describe_services)
        .match_requests(|r| r.cluster() == Some(CLUSTER) && r.services() == [SERVICE])
        .sequence()
        .output(|| {
            service(
                NEW_TD,
                2,
                vec![
                    deployment("PRIMARY", NEW_TD, 0, 2, "IN_PROGRESS"),
                    deployment("ACTIVE", OLD_TD, 2, 2, "COMPLETED"),
                ],
            )
        })
        .output(|| {
            service(
                NEW_TD,
                3,
                vec![
                    deployment("PRIMARY", NEW_TD, 2, 2, "IN_PROGRESS"),
                    deployment("ACTIVE", OLD_TD, 1, 0, "COMPLETED"),
                ],
            )
        })
        .output(|| {
            service(
                NEW_TD,
                2,
                vec![deployment("PRIMARY", NEW_TD, 2, 2, "COMPLETED")],
            )
        })
        .build();
    let ecs = ecs_client(&[&rule]);
    let started = Instant::now();
    let (result, seen) = wait_rollout(&ecs, Duration::from_secs(60)).await;
    let done = result.expect("the rollout completes");
    assert_eq!((done.running, done.desired, done.others_running), (2, 2, 0));
    assert_eq!(rule.num_calls(), 3);
    // Both pending states were new, so both pauses were the first, short one.
    assert_eq!(started.elapsed(), FIRST_POLL * 2);
    assert_eq!(
        seen,
        [
            "service hello-green: 0 of 2 tasks running, 2 pending, 2 tasks of an older deployment still running, PRIMARY deployment on task-definition/prod-hello:8 (IN_PROGRESS)",
            "service hello-green: 2 of 2 tasks running, 0 pending, 1 tasks of an older deployment still running, PRIMARY deployment on task-definition/prod-hello:8 (IN_PROGRESS)",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_back_off_exponentially_then_succeed() {
    let rule = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .http_status(400, throttled())
        .times(3)
        .output(|| {
            service(
                NEW_TD,
                2,
                vec![deployment("PRIMARY", NEW_TD, 2, 2, "COMPLETED")],
            )
        })
        .build();
    let ecs = ecs_client(&[&rule]);
    let started = Instant::now();
    let (result, _) = wait_rollout(&ecs, Duration::from_secs(60)).await;
    result.expect("succeeds after the throttling");
    assert_eq!(rule.num_calls(), 4);
    // 250 ms, then 500 ms, then 1 s.
    assert_eq!(started.elapsed(), Duration::from_millis(1750));
}

#[tokio::test(start_paused = true)]
async fn rollout_never_done_times_out_naming_the_last_state() {
    let rule = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .output(|| {
            service(
                NEW_TD,
                1,
                vec![deployment("PRIMARY", NEW_TD, 1, 2, "IN_PROGRESS")],
            )
        })
        .repeatedly()
        .build();
    let ecs = ecs_client(&[&rule]);
    let started = Instant::now();
    let (result, _) = wait_rollout(&ecs, Duration::from_secs(30)).await;
    let error = result.expect_err("never completes");
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(
        error.to_string(),
        "timed out after 30s waiting for the rollout; last seen: service hello-green: 1 of 2 \
         tasks running, 1 pending, PRIMARY deployment on task-definition/prod-hello:8 (IN_PROGRESS)"
    );
    // Polling slowed down while nothing changed: far fewer calls than 30 s / 250 ms.
    let calls = rule.num_calls();
    assert!((8..=20).contains(&calls), "{calls} calls");
}

#[tokio::test(start_paused = true)]
async fn failed_rollout_stops_the_wait_with_the_reason() {
    let rule = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        let mut failed = deployment("PRIMARY", NEW_TD, 0, 2, "FAILED");
        failed.rollout_state_reason = Some("tasks failed to start".into());
        service(NEW_TD, 0, vec![failed])
    });
    let ecs = ecs_client(&[&rule]);
    let (result, _) = wait_rollout(&ecs, Duration::from_secs(60)).await;
    let error = result.expect_err("failed rollout");
    assert!(
        matches!(&error, WaitError::Failed { reason, .. } if reason == "tasks failed to start"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn missing_service_is_not_retried() {
    let rule = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        DescribeServicesOutput::builder()
            .failures(Failure::builder().arn("arn:x").reason("MISSING").build())
            .build()
    });
    let ecs = ecs_client(&[&rule]);
    let (result, _) = wait_rollout(&ecs, Duration::from_secs(60)).await;
    let error = result.expect_err("no such service");
    assert!(
        error
            .to_string()
            .contains("ECS service hello-green in cluster prod: MISSING"),
        "{error}"
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn service_counts_decide_when_no_deployment_lists_the_task_definition() {
    // What an emulator answers after UpdateService: the service names the new task
    // definition, its only deployment still the old one.
    let rule = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        service(
            NEW_TD,
            2,
            vec![deployment("PRIMARY", OLD_TD, 0, 0, "COMPLETED")],
        )
    });
    let ecs = ecs_client(&[&rule]);
    let (result, _) = wait_rollout(&ecs, Duration::from_secs(60)).await;
    let done = result.expect("judged by the service's counts");
    assert!(done.from_service_counts);
    assert_eq!(done.running, 2);
}

#[tokio::test(start_paused = true)]
async fn primary_on_another_task_definition_is_not_done() {
    let rule = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .output(|| {
            service(
                NEW_TD,
                2,
                vec![
                    deployment("PRIMARY", OLD_TD, 2, 2, "COMPLETED"),
                    deployment("ACTIVE", NEW_TD, 0, 2, "IN_PROGRESS"),
                ],
            )
        })
        .repeatedly()
        .build();
    let ecs = ecs_client(&[&rule]);
    let (result, _) = wait_rollout(&ecs, Duration::from_secs(5)).await;
    assert!(
        matches!(result, Err(WaitError::TimedOut { .. })),
        "{result:?}"
    );
}

fn health(targets: &[(&str, TargetHealthStateEnum)]) -> DescribeTargetHealthOutput {
    let mut out = DescribeTargetHealthOutput::builder();
    for (id, state) in targets {
        let mut h = SdkTargetHealth::builder().state(state.clone());
        if *state == TargetHealthStateEnum::Unhealthy {
            h = h
                .reason(TargetHealthReasonEnum::FailedHealthChecks)
                .description("Health checks failed with these codes: [500]");
        }
        out = out.target_health_descriptions(
            TargetHealthDescription::builder()
                .target(TargetDescription::builder().id(*id).port(8080).build())
                .target_health(h.build())
                .build(),
        );
    }
    out.build()
}

#[tokio::test(start_paused = true)]
async fn targets_unhealthy_then_healthy() {
    use TargetHealthStateEnum::{Healthy, Initial, Unhealthy};
    let rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some(TG))
        .sequence()
        .output(|| health(&[]))
        .output(|| health(&[("10.0.1.5", Initial), ("10.0.2.7", Initial)]))
        .output(|| health(&[("10.0.1.5", Unhealthy), ("10.0.2.7", Healthy)]))
        .output(|| health(&[("10.0.1.5", Healthy), ("10.0.2.7", Healthy)]))
        .build();
    let elb = elb_client(&[&rule]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let done = until(
        "healthy targets",
        Duration::from_secs(60),
        &CancellationToken::new(),
        move |s: &TargetHealth| record.lock().unwrap().push(s.to_string()),
        || targets(&elb, TG, 2),
    )
    .await
    .expect("both become healthy");
    assert_eq!((done.healthy, done.total), (2, 2));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "target group targetgroup/web-green/fedcba9876543210: 0 of 0 targets healthy (no targets registered)",
            "target group targetgroup/web-green/fedcba9876543210: 0 of 2 targets healthy; 10.0.1.5:8080 initial; 10.0.2.7:8080 initial",
            "target group targetgroup/web-green/fedcba9876543210: 1 of 2 targets healthy; 10.0.1.5:8080 unhealthy (Target.FailedHealthChecks: Health checks failed with these codes: [500])",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn targets_never_registered_time_out_saying_so() {
    let rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(|| health(&[]))
        .repeatedly()
        .build();
    let elb = elb_client(&[&rule]);
    let error = until(
        "2 healthy targets in the green target group",
        Duration::from_secs(10),
        &CancellationToken::new(),
        |_| {},
        || targets(&elb, TG, 2),
    )
    .await
    .expect_err("nothing registers");
    assert_eq!(
        error.to_string(),
        "timed out after 10s waiting for 2 healthy targets in the green target group; last \
         seen: target group targetgroup/web-green/fedcba9876543210: 0 of 0 targets healthy (no \
         targets registered)"
    );
}

#[tokio::test(start_paused = true)]
async fn bake_passes_when_targets_stay_healthy_for_the_period() {
    use TargetHealthStateEnum::Healthy;
    let rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(|| health(&[("10.0.1.5", Healthy)]))
        .repeatedly()
        .build();
    let elb = elb_client(&[&rule]);
    let started = Instant::now();
    stays_healthy(
        &elb,
        TG,
        None,
        Duration::from_secs(20),
        &CancellationToken::new(),
        |_, _| {},
    )
    .await
    .expect("healthy throughout");
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    assert!(rule.num_calls() >= 5, "{} calls", rule.num_calls());
}

#[tokio::test(start_paused = true)]
async fn bake_fails_as_soon_as_a_target_is_unhealthy() {
    use TargetHealthStateEnum::{Healthy, Unhealthy};
    let rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(|| health(&[("10.0.1.5", Healthy)]))
        .times(3)
        .output(|| health(&[("10.0.1.5", Unhealthy)]))
        .repeatedly()
        .build();
    let elb = elb_client(&[&rule]);
    let started = Instant::now();
    let error = stays_healthy(
        &elb,
        TG,
        None,
        Duration::from_secs(300),
        &CancellationToken::new(),
        |_, _| {},
    )
    .await
    .expect_err("a target went unhealthy");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(text.contains("1 target is unhealthy"), "{text}");
    assert!(
        text.contains("10.0.1.5:8080 unhealthy (Target.FailedHealthChecks"),
        "{text}"
    );
}

// ---- bakes that watch CloudWatch alarms ---------------------------------------------------

fn cloudwatch_client(rules: &[&Rule]) -> aws_sdk_cloudwatch::Client {
    scripted_client!(aws_sdk_cloudwatch, RuleMode::Sequential, rules)
}

fn alarm(state: aws_sdk_cloudwatch::types::StateValue, reason: &str) -> DescribeAlarmsOutput {
    DescribeAlarmsOutput::builder()
        .metric_alarms(
            aws_sdk_cloudwatch::types::MetricAlarm::builder()
                .alarm_name("hello-5xx")
                .state_value(state)
                .state_reason(reason)
                .build(),
        )
        .build()
}

/// CloudWatch's Query protocol error for throttling.
fn cloudwatch_throttled() -> Option<String> {
    Some(
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate \
         exceeded</Message></Error></ErrorResponse>"
            .to_string(),
    )
}

fn healthy_targets() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(|| health(&[("10.0.1.5", TargetHealthStateEnum::Healthy)]))
        .repeatedly()
        .build()
}

async fn bake_watching(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    cloudwatch: &aws_sdk_cloudwatch::Client,
    stops_bake: bool,
    period: Duration,
) -> (Result<(), WaitError>, Vec<String>) {
    let names = ["hello-5xx".to_string()];
    let watch = AlarmWatch {
        cloudwatch,
        names: &names,
        stops_bake,
    };
    let mut seen = Vec::new();
    let result = stays_healthy(
        elb,
        TG,
        Some(watch),
        period,
        &CancellationToken::new(),
        |state, _| seen.push(state.to_string()),
    )
    .await;
    (result, seen)
}

#[tokio::test(start_paused = true)]
async fn bake_passes_while_the_alarm_stays_ok() {
    use aws_sdk_cloudwatch::types::StateValue;
    let targets = healthy_targets();
    let alarms = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .sequence()
        .output(|| alarm(StateValue::Ok, "Threshold not crossed"))
        .repeatedly()
        .build();
    let (elb, cloudwatch) = (elb_client(&[&targets]), cloudwatch_client(&[&alarms]));
    let started = Instant::now();
    let (result, seen) = bake_watching(&elb, &cloudwatch, true, Duration::from_secs(20)).await;
    result.expect("the alarm stayed OK");
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    // Every poll reads both.
    assert_eq!(alarms.num_calls(), targets.num_calls());
    assert!(alarms.num_calls() >= 5, "{} calls", alarms.num_calls());
    assert_eq!(
        seen[0],
        "target group targetgroup/web-green/fedcba9876543210: 1 of 1 targets healthy; alarms: \
         hello-5xx OK"
    );
}

#[tokio::test(start_paused = true)]
async fn bake_fails_as_soon_as_an_alarm_fires_naming_it_and_its_reason() {
    use aws_sdk_cloudwatch::types::StateValue;
    let targets = healthy_targets();
    let alarms = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .sequence()
        .output(|| alarm(StateValue::Ok, "Threshold not crossed"))
        .times(3)
        .output(|| {
            alarm(
                StateValue::Alarm,
                "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0).",
            )
        })
        .repeatedly()
        .build();
    let (elb, cloudwatch) = (elb_client(&[&targets]), cloudwatch_client(&[&alarms]));
    let started = Instant::now();
    let (result, _) = bake_watching(&elb, &cloudwatch, true, Duration::from_secs(300)).await;
    let error = result.expect_err("the alarm fired");
    // The fourth poll, after pauses of 250, 375 and 562 ms, reads ALARM: the 300 s bake
    // ends there.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(alarms.num_calls(), 4);
    assert_eq!(
        error.to_string(),
        "the bake of targetgroup/web-green/fedcba9876543210 failed: alarm hello-5xx is in \
         ALARM: Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0); \
         last seen: target group targetgroup/web-green/fedcba9876543210: 1 of 1 targets \
         healthy; alarms: hello-5xx ALARM"
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_alarm_reads_back_off_and_the_bake_goes_on() {
    use aws_sdk_cloudwatch::types::StateValue;
    let targets = healthy_targets();
    let alarms = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .sequence()
        .http_status(400, cloudwatch_throttled())
        .times(2)
        .output(|| alarm(StateValue::Ok, "Threshold not crossed"))
        .repeatedly()
        .build();
    let (elb, cloudwatch) = (elb_client(&[&targets]), cloudwatch_client(&[&alarms]));
    let (result, seen) = bake_watching(&elb, &cloudwatch, true, Duration::from_secs(10)).await;
    result.expect("throttling does not fail the bake");
    assert!(alarms.num_calls() > 3, "{} calls", alarms.num_calls());
    // The first state shown is after the throttled reads: 250 ms, then 500 ms of backoff.
    assert!(seen[0].ends_with("alarms: hello-5xx OK"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn an_alarm_deleted_during_the_bake_ends_it() {
    use aws_sdk_cloudwatch::types::StateValue;
    let targets = healthy_targets();
    let alarms = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .sequence()
        .output(|| alarm(StateValue::Ok, "Threshold not crossed"))
        .output(|| DescribeAlarmsOutput::builder().build())
        .repeatedly()
        .build();
    let (elb, cloudwatch) = (elb_client(&[&targets]), cloudwatch_client(&[&alarms]));
    let (result, _) = bake_watching(&elb, &cloudwatch, true, Duration::from_secs(60)).await;
    let error = result.expect_err("the alarm is gone");
    assert!(matches!(error, WaitError::Fetch { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("CloudWatch alarm hello-5xx no longer exists"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_bake_shows_a_firing_alarm_without_stopping() {
    use aws_sdk_cloudwatch::types::StateValue;
    let targets = healthy_targets();
    let alarms = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .sequence()
        .output(|| alarm(StateValue::Alarm, "Threshold Crossed"))
        .repeatedly()
        .build();
    let (elb, cloudwatch) = (elb_client(&[&targets]), cloudwatch_client(&[&alarms]));
    let started = Instant::now();
    let (result, seen) = bake_watching(&elb, &cloudwatch, false, Duration::from_secs(10)).await;
    result.expect("a rollback bake goes on");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(seen[0].ends_with("alarms: hello-5xx ALARM"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_target_is_reported_before_a_firing_alarm() {
    use aws_sdk_cloudwatch::types::StateValue;
    let targets = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(|| health(&[("10.0.1.5", TargetHealthStateEnum::Unhealthy)]))
        .repeatedly()
        .build();
    let alarms = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .sequence()
        .output(|| alarm(StateValue::Alarm, "Threshold Crossed"))
        .repeatedly()
        .build();
    let (elb, cloudwatch) = (elb_client(&[&targets]), cloudwatch_client(&[&alarms]));
    let (result, _) = bake_watching(&elb, &cloudwatch, true, Duration::from_secs(10)).await;
    let text = result.expect_err("unhealthy").to_string();
    assert!(text.contains("failed: 1 target is unhealthy;"), "{text}");
    assert!(text.ends_with("alarms: hello-5xx ALARM"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_a_wait() {
    let rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .sequence()
        .output(|| health(&[]))
        .repeatedly()
        .build();
    let elb = elb_client(&[&rule]);
    let cancel = CancellationToken::new();
    let fire = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        fire.cancel();
    });
    let started = Instant::now();
    let error = until(
        "targets",
        Duration::from_secs(600),
        &cancel,
        |_| {},
        || targets(&elb, TG, 1),
    )
    .await
    .expect_err("cancelled");
    assert!(matches!(error, WaitError::Cancelled { .. }), "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

fn distribution_status(status: &str) -> GetDistributionOutput {
    use aws_sdk_cloudfront::types::{
        ActiveTrustedSigners, DefaultCacheBehavior, Distribution, DistributionConfig, Origins,
    };
    let config = DistributionConfig::builder()
        .caller_reference("r")
        .comment("")
        .enabled(true)
        .origins(
            Origins::builder()
                .quantity(0)
                .set_items(Some(Vec::new()))
                .build()
                .expect("origins"),
        )
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id("blue")
                .viewer_protocol_policy(aws_sdk_cloudfront::types::ViewerProtocolPolicy::AllowAll)
                .build()
                .expect("behaviour"),
        )
        .build()
        .expect("config");
    GetDistributionOutput::builder()
        .distribution(
            Distribution::builder()
                .id("E2QWRUHAPOMQZL")
                .arn("arn:aws:cloudfront::123456789012:distribution/E2QWRUHAPOMQZL")
                .status(status)
                .last_modified_time(aws_smithy_types::DateTime::from_secs(0))
                .in_progress_invalidation_batches(0)
                .domain_name("d111111abcdef8.cloudfront.net")
                .active_trusted_signers(
                    ActiveTrustedSigners::builder()
                        .enabled(false)
                        .quantity(0)
                        .build()
                        .expect("signers"),
                )
                .distribution_config(config)
                .build()
                .expect("distribution"),
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn distribution_in_progress_then_deployed() {
    let rule = mock!(aws_sdk_cloudfront::Client::get_distribution)
        .match_requests(|r| r.id() == Some("E2QWRUHAPOMQZL"))
        .sequence()
        .output(|| distribution_status("InProgress"))
        .times(2)
        .output(|| distribution_status("Deployed"))
        .build();
    let cloudfront = cloudfront_client(&[&rule]);
    let started = Instant::now();
    let done = until(
        "the distribution",
        Duration::from_secs(60),
        &CancellationToken::new(),
        |_| {},
        || distribution(&cloudfront, "E2QWRUHAPOMQZL"),
    )
    .await
    .expect("deploys");
    assert_eq!(done.status, "Deployed");
    assert_eq!(rule.num_calls(), 3);
    // The state did not change between the two InProgress answers: the pause grew.
    assert_eq!(started.elapsed(), FIRST_POLL + FIRST_POLL * 3 / 2);
}

#[tokio::test(start_paused = true)]
async fn distribution_status_spelling_is_forgiven() {
    for spelling in ["DEPLOYED", "deployed"] {
        let rule = mock!(aws_sdk_cloudfront::Client::get_distribution)
            .then_output(move || distribution_status(spelling));
        let cloudfront = cloudfront_client(&[&rule]);
        let poll = distribution(&cloudfront, "E2QWRUHAPOMQZL")
            .await
            .expect("reads");
        assert!(matches!(poll, Poll::Done(_)), "{spelling}: {poll:?}");
    }
}

#[test]
fn short_arn_keeps_the_resource() {
    assert_eq!(short_arn(NEW_TD), "task-definition/prod-hello:8");
    assert_eq!(short_arn(TG), "targetgroup/web-green/fedcba9876543210");
    assert_eq!(short_arn("not-an-arn"), "not-an-arn");
}
mod stopped;
