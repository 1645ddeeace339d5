//! A failed AWS call, as the platform error a release reports (what failed, about what, the
//! service's own code and message, and what to check) or as the [`FetchError`] a wait
//! backs off on; and ARNs as messages name them.

use std::fmt;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::{describe_error, is_throttling};
use crate::platform::{ErrorKind, PlatformError};

/// A failed AWS call as a platform error: the operation, what it was about, the service's
/// code and message.
pub fn aws_error<E>(operation: &str, subject: &str, error: &E) -> PlatformError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    PlatformError::new(
        ErrorKind::Platform,
        format!("aws: {operation} ({subject}): {}", describe_error(error)),
    )
    .with_hint(
        "check the credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID), the target's region and \
         ARNs, and AWS_ENDPOINT_URL when an emulator is meant",
    )
}

pub(super) fn internal(error: &dyn std::fmt::Display) -> PlatformError {
    PlatformError::new(ErrorKind::Platform, format!("internal: {error}"))
}

/// A call that failed while reading the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Throttled: back off and try again.
    Throttled(String),
    /// The endpoint could not be reached or failed on its side: back off and try again.
    Transient(String),
    /// Anything else (not found, access denied): stop.
    Fatal(String),
}

impl FetchError {
    /// Classifies a failed SDK call.
    pub fn from_sdk<E, R>(error: &SdkError<E, R>) -> FetchError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let message = describe_error(error);
        match error {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => FetchError::Transient(message),
            SdkError::ServiceError(context) => {
                let code = context.err().code();
                if is_throttling(code) {
                    FetchError::Throttled(message)
                } else if code.is_some_and(|c| {
                    c.contains("ServerException")
                        || c == "InternalFailure"
                        || c == "ServiceUnavailable"
                }) {
                    FetchError::Transient(message)
                } else {
                    FetchError::Fatal(message)
                }
            }
            _ => FetchError::Fatal(message),
        }
    }
}

/// The end of an ARN, for messages: `task-definition/web-hello:7`.
pub fn short_arn(arn: &str) -> &str {
    arn.splitn(6, ':')
        .nth(5)
        .map_or(arn, |rest| if rest.contains('/') { rest } else { arn })
}
