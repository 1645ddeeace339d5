//! The CloudWatch alarms an ecs target watches (`alarms = ["…"]`).
//!
//! A weighted shift bakes each step while it watches the new target group's health and these
//! alarms: one in `ALARM` ends the bake, and the release puts all traffic back on the old
//! slot. They are checked once more just before the final shift to 100 %. Alarms are read by
//! name with DescribeAlarms (metric and composite alarms alike), a read, so a dry run may make
//! it too. A name that matches no alarm stops a release before anything is launched: a typo
//! must not be found only once the canary takes traffic.
//!
//! The platform's use of them is here as well: the watch a bake runs, the check before the
//! final shift (which puts a weighted step still in place back on the live slot when an
//! alarm fires), and the refusal of names that match no alarm.

use std::fmt;
use std::sync::atomic::Ordering;

use aws_sdk_cloudwatch::types::AlarmType;

use super::EcsPlatform;
use super::aws::FetchError;
use super::forward::Forward;
use super::state::EcsState;
use crate::Slot;
use crate::event::{Phase, Reporter};
use crate::platform::{Candidate, ErrorKind, PlatformError};

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

/// CloudWatch alarms a bake watches besides the target group.
#[derive(Debug, Clone, Copy)]
pub struct AlarmWatch<'a> {
    pub cloudwatch: &'a aws_sdk_cloudwatch::Client,
    pub names: &'a [String],
    /// False: alarms in `ALARM` are read and shown but do not end the bake (a rollback, whose
    /// alarms likely fire because of the release it takes back).
    pub stops_bake: bool,
}

impl EcsPlatform {
    /// The alarms a bake watches; `None` without `alarms`.
    pub(super) fn alarm_watch(&self) -> Option<AlarmWatch<'_>> {
        (!self.target.alarms.is_empty()).then(|| AlarmWatch {
            cloudwatch: &self.clients.cloudwatch,
            names: &self.target.alarms,
            stops_bake: !self.rolling_back.load(Ordering::Relaxed),
        })
    }

    /// The watched alarms' states now; `None` without `alarms`.
    pub async fn alarms(&self) -> Result<Option<Alarms>, PlatformError> {
        if self.target.alarms.is_empty() {
            return Ok(None);
        }
        read(&self.clients.cloudwatch, &self.target.alarms)
            .await
            .map(Some)
            .map_err(|e| read_error(&e, &self.target.alarms))
    }

    /// An error naming the watched alarms that do not exist.
    pub(super) fn refuse_missing_alarms(&self, alarms: &Alarms) -> Result<(), PlatformError> {
        if alarms.missing.is_empty() {
            return Ok(());
        }
        Err(missing_error(
            &alarms.missing,
            &self.target_name,
            &self.target.region,
        ))
    }

    /// The weighted step being baked, for messages: `step 1/2 (40% to the green slot)`.
    pub(super) fn step_name(&self, slot: Slot) -> String {
        let percent = self.split_percent.load(Ordering::Relaxed);
        match self
            .target
            .shift
            .steps()
            .iter()
            .find(|s| s.percent == percent)
        {
            Some(step) => format!(
                "step {}/{} ({percent}% to the {slot} slot)",
                step.index, step.total
            ),
            None => format!("the {percent}% step to the {slot} slot"),
        }
    }

    /// Reads the alarms once more before the final shift. One in `ALARM` stops it (not in a
    /// rollback), and a weighted step still in place goes back to the live slot first: the
    /// state machine only undoes the steps whose bake failed.
    pub(super) async fn alarms_before_shift(
        &self,
        candidate: &Candidate,
        state: &EcsState,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let verdict = match self.alarms().await {
            Ok(None) => return Ok(()),
            Ok(Some(alarms)) => self.refuse_missing_alarms(&alarms).and_then(|()| {
                match alarms.firing_reason() {
                    None => {
                        reporter.progress(
                            Phase::Shift,
                            format!("before the shift to 100%: {alarms}"),
                        );
                        Ok(())
                    }
                    Some(reason) if self.rolling_back.load(Ordering::Relaxed) => {
                        reporter.warn(format!(
                            "{reason}; a rollback shifts anyway (the alarm likely fires because of the release it takes back)"
                        ));
                        Ok(())
                    }
                    Some(reason) => Err(PlatformError::new(
                        ErrorKind::Verify,
                        format!(
                            "before the shift to 100% to the {} slot: {reason}",
                            candidate.slot
                        ),
                    )
                    .with_hint(alarm_hint(&alarms))),
                }
            }),
            Err(e) => Err(e),
        };
        if verdict.is_err()
            && state.split_percent > 0
            && let Some(live) = &state.live
            && live.slot != candidate.slot
        {
            let back = Forward::all_to(self.group(live.slot), self.group(candidate.slot));
            match self.send(&self.forward_change(back), None).await {
                Ok(_) => reporter.progress(
                    Phase::Shift,
                    format!("all traffic back on the {} slot", live.slot),
                ),
                Err(e) => reporter.warn(format!(
                    "putting all traffic back on the {} slot failed: {e}; the next release does",
                    live.slot
                )),
            }
        }
        verdict
    }
}

/// What to do about alarms that stopped a shift.
fn alarm_hint(alarms: &Alarms) -> String {
    let name = alarms.firing().next().map_or("<name>", |a| a.name.as_str());
    format!(
        "the live slot keeps all traffic; see why the alarm fired with `aws cloudwatch \
         describe-alarm-history --alarm-name {name}`, and release again once it is OK"
    )
}

#[cfg(test)]
mod tests;
