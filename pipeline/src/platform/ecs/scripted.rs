//! Test only: AWS SDK clients that answer from scripted rules (aws-smithy-mocks), with the
//! SDK's own retries off so scripted errors reach shipit's own backoff. One macro for every
//! SDK crate, since each has its own `Client` and `Config` types.

use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode};

/// An interceptor answering from `rules` in `mode` (Sequential: in order, each rule until
/// it is used up; MatchAny: each call takes the first rule for its operation, so calls of
/// several operations interleave).
pub fn interceptor(mode: RuleMode, rules: &[&Rule]) -> MockResponseInterceptor {
    rules
        .iter()
        .fold(MockResponseInterceptor::new().rule_mode(mode), |i, r| {
            i.with_rule(r)
        })
}

/// `scripted_client!(aws_sdk_ecs, mode, rules)`: that crate's client, answering from
/// `rules` in `mode`, in us-east-1 with test credentials.
macro_rules! scripted_client {
    ($sdk:ident, $mode:expr, $rules:expr) => {
        $sdk::Client::from_conf(
            $sdk::Config::builder()
                .behavior_version($sdk::config::BehaviorVersion::latest())
                .region(aws_types::region::Region::new("us-east-1"))
                .credentials_provider(aws_credential_types::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor($crate::platform::ecs::scripted::interceptor($mode, $rules))
                .build(),
        )
    };
}
pub(crate) use scripted_client;
