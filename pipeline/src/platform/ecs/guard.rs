//! The checks that keep traffic on healthy targets when the account holds what shipit did
//! not make: a live slot whose targets another tool registered (a foreign release), targets
//! left in the idle slot's group, and a shift or a weighted step towards a group with no
//! healthy target.

use super::EcsPlatform;
use super::aws::short_arn;
use super::state::EcsState;
use crate::Slot;
use crate::event::{Phase, Reporter};
use crate::platform::{ErrorKind, Live, PlatformError};

/// How long targets in the group of a slot whose service shipit made may take to leave
/// before they count as strangers.
const STRANGERS_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);
const STRANGERS_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl EcsPlatform {
    /// Refuses to launch into `slot` while its target group holds targets that no task of
    /// its service registered: they would serve beside the new release once it is live.
    /// Targets leaving the group (`draining`) do not count.
    pub(super) async fn refuse_strangers(
        &self,
        state: &EcsState,
        slot: Slot,
    ) -> Result<(), PlatformError> {
        if state
            .service(slot)
            .is_some_and(|s| s.desired > 0 || s.running > 0)
        {
            return Ok(());
        }
        let group = self.group(slot);
        let mut health = self.target_health(group).await?;
        // The slot's own tasks may still be leaving: ECS reports a scaled-down service's
        // counts before it deregisters their targets. Only targets still there after
        // [`STRANGERS_SETTLE`] are refused; a clean group costs one call.
        let settle_until = tokio::time::Instant::now() + STRANGERS_SETTLE;
        while health.total > 0
            && state.service(slot).is_some()
            && tokio::time::Instant::now() < settle_until
        {
            tokio::time::sleep(STRANGERS_POLL).await;
            health = self.target_health(group).await?;
        }
        if health.total == 0 {
            return Ok(());
        }
        let mut targets = health.registered.clone();
        let more = targets.len().saturating_sub(3);
        targets.truncate(3);
        let shown = if more > 0 {
            format!("{} and {more} more", targets.join(", "))
        } else {
            targets.join(", ")
        };
        Err(PlatformError::new(
            ErrorKind::Platform,
            format!(
                "the {slot} target group {} holds {} target(s) that no shipit service registered ({shown}); \
                 a release into the {slot} slot would serve beside them",
                short_arn(group),
                health.total,
            ),
        )
        .with_hint(format!(
            "stop what registers them (an older service or tool), then `aws elbv2 deregister-targets --target-group-arn {group} --targets Id=<id>,Port=<port>`; \
             the live slot was not touched"
        )))
    }

    /// Refuses to send traffic to `slot` while its target group has no healthy target.
    pub(super) async fn refuse_empty(&self, slot: Slot, action: &str) -> Result<(), PlatformError> {
        let group = self.group(slot);
        let health = self.target_health(group).await?;
        if health.healthy > 0 {
            return Ok(());
        }
        Err(PlatformError::new(
            ErrorKind::Verify,
            format!("refusing to {action}: {health}"),
        )
        .with_hint("traffic stays where it is; the candidate's targets left the group after it was verified (see its service's events)"))
    }

    /// Retires a foreign live slot: nothing shipit may scale or stop. Its targets stay
    /// registered, routed nowhere; the next release into that slot refuses until they go.
    pub(super) fn retire_foreign(&self, old: &Live, what: &str, reporter: &Reporter) {
        reporter.progress(
            Phase::Retire,
            format!(
                "the {} slot was {what}; shipit leaves them registered and routed nowhere: stop what \
                 registers them before a release uses the {} slot again",
                old.slot, old.slot
            ),
        );
    }
}
