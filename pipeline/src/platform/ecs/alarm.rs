//! The CloudWatch alarms an ecs target watches (`alarms = ["…"]`).
//!
//! A weighted shift bakes each step while it watches the new target group's health and these
//! alarms: one in `ALARM` ends the bake, and the release puts all traffic back on the old
//! slot. They are checked once more just before the final shift to 100 %. Alarms are read by
//! name with DescribeAlarms (metric and composite alarms alike), a read, so a dry run may make
//! it too. A name that matches no alarm stops a release before anything is launched: a typo
//! must not be found only once the canary takes traffic.

use std::fmt;

use aws_sdk_cloudwatch::types::AlarmType;

use super::wait::FetchError;
use crate::platform::{ErrorKind, PlatformError};

/// The state of an alarm whose condition is met.
pub const STATE_ALARM: &str = "ALARM";
/// How many names one DescribeAlarms call takes.
pub const NAMES_PER_CALL: usize = 100;

/// One alarm's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlarmState {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// CloudWatch's explanation of the state (`Threshold Crossed: …`).
    pub reason: Option<String>,
}

impl AlarmState {
    pub fn is_firing(&self) -> bool {
        self.state == STATE_ALARM
    }
}

/// The states of the watched alarms, in the config's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Alarms {
    pub states: Vec<AlarmState>,
    /// Names that match no alarm.
    pub missing: Vec<String>,
}

impl Alarms {
    /// The alarms in `ALARM`.
    pub fn firing(&self) -> impl Iterator<Item = &AlarmState> {
        self.states.iter().filter(|a| a.is_firing())
    }

    /// Why the bake must stop: every alarm in `ALARM`, with CloudWatch's reason.
    pub fn firing_reason(&self) -> Option<String> {
        let firing: Vec<String> = self
            .firing()
            .map(|a| match &a.reason {
                // CloudWatch's reasons end with a full stop; the message goes on after it.
                Some(reason) => format!(
                    "alarm {} is in {STATE_ALARM}: {}",
                    a.name,
                    reason.trim_end_matches('.')
                ),
                None => format!("alarm {} is in {STATE_ALARM}", a.name),
            })
            .collect();
        (!firing.is_empty()).then(|| firing.join("; "))
    }
}

impl fmt::Display for Alarms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .states
            .iter()
            .map(|a| format!("{} {}", a.name, a.state))
            .chain(self.missing.iter().map(|name| format!("{name} missing")))
            .collect();
        write!(f, "alarms: {}", shown.join(", "))
    }
}

/// Reads the state of every alarm in `names` (metric or composite).
pub async fn read(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    names: &[String],
) -> Result<Alarms, FetchError> {
    let mut found: Vec<AlarmState> = Vec::new();
    for chunk in names.chunks(NAMES_PER_CALL) {
        let mut token: Option<String> = None;
        loop {
            let out = cloudwatch
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| FetchError::from_sdk(&e))?;
            let metric = out.metric_alarms().iter().map(|a| {
                (
                    a.alarm_name(),
                    a.state_value().map(|s| s.as_str()),
                    a.state_reason(),
                )
            });
            let composite = out.composite_alarms().iter().map(|a| {
                (
                    a.alarm_name(),
                    a.state_value().map(|s| s.as_str()),
                    a.state_reason(),
                )
            });
            for (name, state, reason) in metric.chain(composite) {
                let Some(name) = name else { continue };
                found.push(AlarmState {
                    name: name.to_string(),
                    state: state.unwrap_or("unknown").to_string(),
                    reason: reason.map(str::to_string),
                });
            }
            match out.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => break,
            }
        }
    }
    let mut alarms = Alarms::default();
    for name in names {
        match found.iter().find(|a| &a.name == name) {
            Some(state) => alarms.states.push(state.clone()),
            None => alarms.missing.push(name.clone()),
        }
    }
    Ok(alarms)
}

/// The error for alarm names that match no alarm.
pub fn missing_error(missing: &[String], target: &str, region: &str) -> PlatformError {
    let names: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
    let (noun, verb) = if missing.len() == 1 {
        ("alarm", "does")
    } else {
        ("alarms", "do")
    };
    PlatformError::new(
        ErrorKind::Platform,
        format!(
            "CloudWatch {noun} {} named in `alarms` of target \"{target}\" {verb} not exist in {region}",
            names.join(", ")
        ),
    )
    .with_hint(format!(
        "nothing was launched; alarms are matched by their exact name in the target's region \
         (see `aws cloudwatch describe-alarms --region {region} --alarm-names <name>`): fix the \
         name, create the alarm, or remove it from `alarms`"
    ))
}

/// The error for a failed read outside a wait.
pub fn read_error(error: &FetchError, names: &[String]) -> PlatformError {
    let message = match error {
        FetchError::Throttled(m) | FetchError::Transient(m) | FetchError::Fatal(m) => m,
    };
    PlatformError::new(
        ErrorKind::Platform,
        format!("aws: DescribeAlarms ({}): {message}", names.join(", ")),
    )
    .with_hint(
        "check the credentials (they need cloudwatch:DescribeAlarms), the target's region, and \
         AWS_ENDPOINT_URL when an emulator is meant",
    )
}

#[cfg(test)]
mod tests;
