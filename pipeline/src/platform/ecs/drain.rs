//! Retiring the old slot after a shift, observed. With `keep_previous`, the old service keeps
//! running for an instant rollback, tagged with the time after which a later run scales it
//! down. Without, it is scaled to zero and the release waits until its targets have left the
//! old target group (ECS deregisters them; the ALB drains each for the group's
//! `deregistration_delay.timeout_seconds`), or until that delay has passed: only then is the
//! old slot reported retired, so `release` does not return while the old version may still
//! answer requests in flight.

use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::aws::{aws_error, short_arn};
use super::change::Change;
use super::{EcsPlatform, TAG_RETIRE_AFTER, wait};
use crate::event::{Phase, Reporter};
use crate::platform::{Live, PlatformError, Slot};

/// The attribute holding how long the ALB drains a deregistered target.
pub const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";
/// ELBv2's default for it, used when the attribute cannot be read.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(300);
/// Added to the delay: ECS deregisters a task's target a moment after the scale-down.
const DRAIN_MARGIN: Duration = Duration::from_secs(10);

impl EcsPlatform {
    /// Retires the old slot after a shift (see the module's text).
    pub(super) async fn retire_slot(
        &self,
        old: &Live,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        if let Some(what) = &old.foreign {
            self.retire_foreign(old, what, reporter);
            return Ok(());
        }
        let state = self.state().await?;
        self.refuse_live(&state, old.slot, "retire")?;
        let Some(service) = state.service(old.slot) else {
            reporter.warn(format!(
                "the service of the {} slot is already gone",
                old.slot
            ));
            return Ok(());
        };
        let keep = self.target.keep_previous;
        if keep.is_zero() {
            self.send(&self.scale_change(old.slot, 0), None).await?;
            reporter.progress(
                Phase::Retire,
                format!(
                    "scaled {} to 0; `shipit rollback` scales it up again",
                    service.name
                ),
            );
            self.wait_drained(old.slot, reporter).await?;
            return Ok(());
        }
        let after = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        let tag = Change::TagService {
            service_arn: service.arn.clone(),
            tags: vec![(
                TAG_RETIRE_AFTER.to_string(),
                after.round(jiff::Unit::Second).unwrap_or(after).to_string(),
            )],
        };
        self.send(&tag, None).await?;
        reporter.progress(
            Phase::Retire,
            format!(
                "kept {} running for rollback (keep_previous = {}); the first release or rollback after {} scales it down",
                service.name,
                humantime::format_duration(keep),
                after.round(jiff::Unit::Second).unwrap_or(after)
            ),
        );
        Ok(())
    }

    /// How long the ALB drains a target deregistered from `group`.
    async fn deregistration_delay(&self, group: &str) -> Result<Duration, PlatformError> {
        let out = self
            .clients
            .elb
            .describe_target_group_attributes()
            .target_group_arn(group)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTargetGroupAttributes", group, &e))?;
        Ok(out
            .attributes()
            .iter()
            .find(|a| a.key() == Some(DEREGISTRATION_DELAY))
            .and_then(|a| a.value())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_DEREGISTRATION_DELAY, Duration::from_secs))
    }

    /// Waits until `slot`'s targets have left its group, at most the group's
    /// deregistration delay (and a margin), showing each change as progress. Past that
    /// bound the slot is reported retired with a warning: the ALB has closed whatever it
    /// still drained. Used after a shift and by `down`.
    pub(super) async fn wait_drained(
        &self,
        slot: Slot,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let group = self.group(slot);
        let delay = self.deregistration_delay(group).await?;
        let limit = delay + DRAIN_MARGIN;
        reporter.progress(
            Phase::Retire,
            format!(
                "waiting for the {} target group {} to drain ({DEREGISTRATION_DELAY} = {}s)",
                slot,
                short_arn(group),
                delay.as_secs()
            ),
        );
        let started = tokio::time::Instant::now();
        let drained = wait::until(
            &format!("the {} target group {} to drain", slot, short_arn(group)),
            limit,
            &CancellationToken::new(),
            |state: &Draining| reporter.progress(Phase::Retire, state.to_string()),
            || async {
                let health = wait::targets(&self.clients.elb, group, usize::MAX).await?;
                let health = match health {
                    wait::Poll::Done(h) | wait::Poll::Pending(h) | wait::Poll::Failed(h, _) => h,
                };
                let state = Draining(health);
                Ok(if state.0.total == 0 && state.0.draining == 0 {
                    wait::Poll::Done(state)
                } else {
                    wait::Poll::Pending(state)
                })
            },
        )
        .await;
        match drained {
            Ok(_) => reporter.progress(
                Phase::Retire,
                format!(
                    "the {} slot is retired: its targets left the group after {}s",
                    slot,
                    started.elapsed().as_secs()
                ),
            ),
            Err(wait::WaitError::TimedOut { last, .. }) => reporter.warn(format!(
                "the {} slot is retired: the deregistration delay ({}s) has passed, the ALB no longer sends it requests; last seen: {}",
                slot,
                delay.as_secs(),
                last.unwrap_or_else(|| "nothing".to_string())
            )),
            Err(e) => reporter.warn(format!(
                "the {} slot is scaled to 0, but its drain was not observed: {e}",
                slot
            )),
        }
        Ok(())
    }
}

/// The old group while it drains.
struct Draining(wait::TargetHealth);

impl std::fmt::Display for Draining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "target group {}: {} targets draining, {} still registered",
            short_arn(&self.0.target_group),
            self.0.draining,
            self.0.total
        )
    }
}
