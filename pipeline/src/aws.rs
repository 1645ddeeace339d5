//! The AWS SDK's configuration and clients, shared by everything that talks to AWS.
//!
//! Credentials and the endpoint come from the SDK's standard chain (environment, profile,
//! SSO, instance metadata), so `AWS_ENDPOINT_URL` points every client at an emulator (the
//! tests use the moto server). Only the region comes from the target, so one config can
//! release to several regions.
//!
//! [`ReadOnly`] is an interceptor that refuses every operation that is not a read
//! (`Describe*`, `Get*`, `List*`) and records every operation it saw: `release --dry-run`
//! builds its clients with it, so a dry run cannot change anything even through a bug.

use std::sync::{Arc, Mutex};

use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::SdkConfig;
use aws_types::region::Region;

/// Error codes AWS services use for throttling; a wait backs off and tries again on them.
pub const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// The SDK configuration for `region`, everything else from the standard chain.
pub async fn sdk_config(region: &str) -> SdkConfig {
    sdk_config_for(region, None).await
}

/// The SDK configuration for `region` and an ecs target's `endpoint`.
///
/// With an endpoint, every call goes there. An endpoint on a loopback address is an emulator
/// on this machine (`shipit sandbox`, moto, LocalStack): it checks no signature, so the calls
/// are signed with fixed placeholder credentials and the credential chain (a profile, SSO,
/// instance metadata) is never asked. Real credentials never leave for a local emulator.
pub async fn sdk_config_for(region: &str, endpoint: Option<&str>) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string()));
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
        if is_loopback_url(url) {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                "shipit-emulator",
                "shipit-emulator",
                None,
                None,
                "shipit-loopback-endpoint",
            ));
        }
    }
    loader.load().await
}

/// Whether `url`'s host is `localhost` or a loopback address.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One client per AWS service shipit uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub cloudfront: aws_sdk_cloudfront::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Clients {
        Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            ecr: aws_sdk_ecr::Client::new(config),
            cloudfront: aws_sdk_cloudfront::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
        }
    }

    /// Clients that refuse every operation but reads, and record each operation's name.
    pub fn read_only(config: &SdkConfig, guard: &ReadOnly) -> Clients {
        Clients {
            ecs: aws_sdk_ecs::Client::from_conf(
                aws_sdk_ecs::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            ecr: aws_sdk_ecr::Client::from_conf(
                aws_sdk_ecr::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            cloudfront: aws_sdk_cloudfront::Client::from_conf(
                aws_sdk_cloudfront::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            ssm: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(
                aws_sdk_cloudwatchlogs::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(config)
                    .interceptor(guard.clone())
                    .build(),
            ),
        }
    }
}

/// Refuses operations that could change anything, before they are sent, and records the
/// name of every operation attempted (`ECS.DescribeServices`).
#[derive(Debug, Clone, Default)]
pub struct ReadOnly {
    seen: Arc<Mutex<Vec<String>>>,
}

impl ReadOnly {
    pub fn new() -> ReadOnly {
        ReadOnly::default()
    }

    /// Every operation attempted so far, as `<service>.<operation>`, refused ones included.
    pub fn operations(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an operation only reads.
    pub fn is_read(operation: &str) -> bool {
        ["Describe", "Get", "List"]
            .iter()
            .any(|prefix| operation.starts_with(prefix))
    }
}

impl Intercept for ReadOnly {
    fn name(&self) -> &'static str {
        "shipit::aws::ReadOnly"
    }

    // Not `read_before_execution`: a client's interceptors see that hook before the
    // operation's configuration (and its name) is in the bag.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map_or(("?", "?"), |m| (m.service(), m.name()));
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{service}.{operation}"));
        if Self::is_read(operation) {
            Ok(())
        } else {
            Err(format!("refused {service}.{operation}: this run may only read (dry run)").into())
        }
    }
}

/// The error code of a failed call, if the service sent one.
pub fn error_code<E: ProvideErrorMetadata>(error: &E) -> Option<&str> {
    error.code()
}

/// Whether a failed call was throttled.
pub fn is_throttling(code: Option<&str>) -> bool {
    code.is_some_and(|c| THROTTLING_CODES.contains(&c))
}

/// A failed call in one line: the service's code and message, or the whole cause chain
/// (connection refused, timeout, credentials) when the service never answered.
pub fn describe_error<E>(error: &E) -> String
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_host_counts_as_a_local_emulator() {
        for local in [
            "http://127.0.0.1:4566",
            "http://localhost:5000/",
            "https://LOCALHOST",
            "http://[::1]:4566",
            "http://127.0.0.2",
        ] {
            assert!(is_loopback_url(local), "{local}");
        }
        for remote in [
            "https://ecs.us-east-1.amazonaws.com",
            "http://10.0.0.1:4566",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "127.0.0.1:4566",
            "http://[::2]:4566",
        ] {
            assert!(!is_loopback_url(remote), "{remote}");
        }
    }

    #[test]
    fn reads_are_told_from_writes_by_their_name() {
        for read in [
            "DescribeServices",
            "DescribeListeners",
            "GetDistributionConfig",
            "ListTagsForResource",
            "GetParameter",
            "DescribeAlarms",
        ] {
            assert!(ReadOnly::is_read(read), "{read}");
        }
        for write in [
            "UpdateService",
            "CreateService",
            "RegisterTaskDefinition",
            "ModifyListener",
            "ModifyRule",
            "UpdateDistribution",
            "PutParameter",
            "DeleteParameter",
            "TagResource",
            "SetAlarmState",
            "PutMetricAlarm",
        ] {
            assert!(!ReadOnly::is_read(write), "{write}");
        }
    }

    #[tokio::test]
    async fn read_only_clients_refuse_writes_before_sending_them() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("test", "test", None, None, "test"),
                ),
            )
            // Nothing listens here: a request that got past the guard would fail to connect.
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .build();
        let guard = ReadOnly::new();
        let clients = Clients::read_only(&config, &guard);
        let error = clients
            .ecs
            .update_service()
            .cluster("prod")
            .service("hello-green")
            .desired_count(0)
            .send()
            .await
            .expect_err("refused");
        let text = DisplayErrorContext(&error).to_string();
        assert!(text.contains("refused ECS.UpdateService"), "{text}");
        let read = clients
            .ecs
            .describe_services()
            .cluster("prod")
            .send()
            .await
            .expect_err("nothing listens");
        let text = DisplayErrorContext(&read).to_string();
        assert!(
            !text.contains("may only read"),
            "reads pass the guard: {text}"
        );
        // The alarms a bake watches are read through the same guard.
        let alarms = clients
            .cloudwatch
            .describe_alarms()
            .alarm_names("hello-5xx")
            .send()
            .await
            .expect_err("nothing listens");
        let text = DisplayErrorContext(&alarms).to_string();
        assert!(!text.contains("may only read"), "{text}");
        let set = clients
            .cloudwatch
            .set_alarm_state()
            .alarm_name("hello-5xx")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
            .state_reason("test")
            .send()
            .await
            .expect_err("refused");
        let text = DisplayErrorContext(&set).to_string();
        assert!(text.contains("refused CloudWatch.SetAlarmState"), "{text}");
        assert_eq!(
            guard.operations(),
            [
                "ECS.UpdateService",
                "ECS.DescribeServices",
                "CloudWatch.DescribeAlarms",
                "CloudWatch.SetAlarmState"
            ]
        );
    }

    #[test]
    fn throttling_codes_are_recognised() {
        assert!(is_throttling(Some("ThrottlingException")));
        assert!(is_throttling(Some("Throttling")));
        assert!(!is_throttling(Some("AccessDeniedException")));
        assert!(!is_throttling(None));
    }
}
