//! Reading the watched alarms, fed scripted DescribeAlarms answers (aws-smithy-mocks).

use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_cloudwatch::types::{AlarmType, CompositeAlarm, MetricAlarm, StateValue};
use aws_smithy_mocks::{Rule, RuleMode, mock};

use super::*;
use crate::platform::ecs::scripted::scripted_client;

fn cloudwatch_client(rules: &[&Rule]) -> aws_sdk_cloudwatch::Client {
    scripted_client!(aws_sdk_cloudwatch, RuleMode::Sequential, rules)
}

fn metric(name: &str, state: StateValue, reason: &str) -> MetricAlarm {
    MetricAlarm::builder()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .build()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn alarms_in_ok_are_not_firing() {
    let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|input| {
            input.alarm_names() == ["hello-5xx", "hello-p99"]
                && input.alarm_types().contains(&AlarmType::MetricAlarm)
                && input.alarm_types().contains(&AlarmType::CompositeAlarm)
        })
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(metric("hello-p99", StateValue::InsufficientData, "no data"))
                .metric_alarms(metric("hello-5xx", StateValue::Ok, "Threshold not crossed"))
                .build()
        });
    let cloudwatch = cloudwatch_client(&[&rule]);
    let alarms = read(&cloudwatch, &names(&["hello-5xx", "hello-p99"]))
        .await
        .expect("read");
    assert_eq!(rule.num_calls(), 1);
    assert!(alarms.missing.is_empty());
    assert_eq!(alarms.firing_reason(), None);
    // The config's order, not the answer's.
    assert_eq!(
        alarms.to_string(),
        "alarms: hello-5xx OK, hello-p99 INSUFFICIENT_DATA"
    );
}

#[tokio::test]
async fn an_alarm_in_alarm_is_named_with_its_reason() {
    let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(|| {
        DescribeAlarmsOutput::builder()
            .metric_alarms(metric(
                "hello-5xx",
                StateValue::Alarm,
                "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0).",
            ))
            .composite_alarms(
                CompositeAlarm::builder()
                    .alarm_name("hello-health")
                    .state_value(StateValue::Ok)
                    .build(),
            )
            .build()
    });
    let cloudwatch = cloudwatch_client(&[&rule]);
    let alarms = read(&cloudwatch, &names(&["hello-5xx", "hello-health"]))
        .await
        .expect("read");
    assert_eq!(
        alarms.firing_reason().as_deref(),
        Some(
            "alarm hello-5xx is in ALARM: Threshold Crossed: 1 datapoint [12.0] was greater \
             than the threshold (5.0)"
        )
    );
    assert_eq!(
        alarms.to_string(),
        "alarms: hello-5xx ALARM, hello-health OK"
    );
}

#[tokio::test]
async fn a_name_that_matches_no_alarm_is_missing() {
    let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(|| {
        DescribeAlarmsOutput::builder()
            .metric_alarms(metric("hello-5xx", StateValue::Ok, "fine"))
            .build()
    });
    let cloudwatch = cloudwatch_client(&[&rule]);
    let alarms = read(&cloudwatch, &names(&["hello-5xx", "helo-p99"]))
        .await
        .expect("read");
    assert_eq!(alarms.missing, ["helo-p99"]);
    assert_eq!(alarms.to_string(), "alarms: hello-5xx OK, helo-p99 missing");
    let error = missing_error(&alarms.missing, "aws", "us-east-1");
    assert_eq!(error.kind, ErrorKind::Platform);
    assert_eq!(
        error.message,
        "CloudWatch alarm \"helo-p99\" named in `alarms` of target \"aws\" does not exist in us-east-1"
    );
    let hint = error.hint().unwrap_or_default();
    assert!(hint.starts_with("nothing was launched"), "{hint}");
}

#[tokio::test]
async fn pages_and_batches_of_names_are_all_read() {
    let many: Vec<String> = (0..NAMES_PER_CALL + 1).map(|i| format!("a{i}")).collect();
    let first = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|input| {
            input.alarm_names().len() == NAMES_PER_CALL && input.next_token().is_none()
        })
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(metric("a0", StateValue::Ok, "fine"))
                .next_token("page-2")
                .build()
        });
    let second = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|input| input.next_token() == Some("page-2"))
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(metric("a99", StateValue::Alarm, "high"))
                .build()
        });
    let last = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .match_requests(|input| input.alarm_names() == ["a100"])
        .then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(metric("a100", StateValue::Ok, "fine"))
                .build()
        });
    let cloudwatch = cloudwatch_client(&[&first, &second, &last]);
    let alarms = read(&cloudwatch, &many).await.expect("read");
    assert_eq!(
        (first.num_calls(), second.num_calls(), last.num_calls()),
        (1, 1, 1)
    );
    let found: Vec<&str> = alarms.states.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(found, ["a0", "a99", "a100"]);
    assert_eq!(alarms.missing.len(), NAMES_PER_CALL + 1 - 3);
    assert_eq!(
        alarms.firing_reason().as_deref(),
        Some("alarm a99 is in ALARM: high")
    );
}

#[tokio::test]
async fn a_refused_read_is_a_fatal_fetch_error_naming_the_alarms() {
    let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(403).expect("status"),
            aws_smithy_types::body::SdkBody::from(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                 <Message>not allowed</Message></Error></ErrorResponse>",
            ),
        )
    });
    let cloudwatch = cloudwatch_client(&[&rule]);
    let error = read(&cloudwatch, &names(&["hello-5xx"]))
        .await
        .expect_err("refused");
    assert_eq!(
        error,
        FetchError::Fatal("AccessDenied: not allowed".to_string())
    );
    let error = read_error(&error, &names(&["hello-5xx"]));
    assert_eq!(
        error.message,
        "aws: DescribeAlarms (hello-5xx): AccessDenied: not allowed"
    );
}
