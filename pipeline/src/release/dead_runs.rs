//! What runs that died left behind, found and finished once the next run holds the lock:
//! their records are finished by what is true, and the slots they replaced but did not
//! retire are retired.

use crate::event::{Phase, Reporter};
use crate::history::{HistoryError, Outcome, ReleaseRecord};
use crate::platform::{Live, Platform};

/// What runs that died left behind, found once the lock is held.
#[derive(Debug, Default)]
pub(super) struct DeadRuns {
    /// Slots that a dead run replaced with its switch and did not finish retiring.
    unretired: Vec<Live>,
}

impl DeadRuns {
    /// We hold the lock, so no record can really be in progress: those are from runs that
    /// died. Each is finished by what is true: a run whose release is live died after its
    /// switch, and succeeded (the slot it replaced is left to retire); any other was
    /// interrupted.
    pub(super) async fn finish<P: Platform>(
        platform: &P,
        reporter: &Reporter,
    ) -> Result<DeadRuns, HistoryError> {
        let mut dead = DeadRuns::default();
        let stale: Vec<ReleaseRecord> = platform
            .history()
            .list()
            .await?
            .into_iter()
            .filter(|r| r.outcome == Outcome::InProgress)
            .collect();
        if stale.is_empty() {
            return Ok(dead);
        }
        let live = match platform.live().await {
            Ok(live) => live,
            Err(e) => {
                reporter.warn(format!(
                    "cannot tell whether the runs that died made their release live ({e}); recording them as interrupted"
                ));
                None
            }
        };
        for mut record in stale {
            let went_live = live.as_ref().is_some_and(|l| {
                l.release == record.serves && record.slot.is_none_or(|s| s == l.slot)
            });
            if !went_live {
                record.finish(Outcome::Interrupted {
                    cause: "the process running it died; a later run took over".into(),
                });
                platform.history().save(&record).await?;
                continue;
            }
            let retired = record
                .phases
                .iter()
                .any(|p| p.phase == Phase::Retire && p.ok == Some(true));
            if let (false, Some(previous), Some(slot)) =
                (retired, record.previous.clone(), record.slot)
            {
                dead.unretired.push(Live {
                    slot: slot.other(),
                    release: previous,
                    since: None,
                    foreign: None,
                });
            }
            record.finish(Outcome::Succeeded);
            platform.history().save(&record).await?;
            reporter.warn(format!(
                "the run of release {} died after its switch; it is live, and recorded as succeeded",
                record.id
            ));
        }
        Ok(dead)
    }

    /// Drains and stops the slots dead runs replaced and left running, so nothing stays up
    /// routed nowhere. A failure is a warning: the next launch in that slot replaces it.
    pub(super) async fn retire<P: Platform>(&self, platform: &P, reporter: &Reporter) {
        for old in &self.unretired {
            reporter.progress(
                Phase::Version,
                format!(
                    "retiring the {} slot (release {}), which a run that died after its switch left running",
                    old.slot, old.release
                ),
            );
            if let Err(e) = platform.retire(old, reporter).await {
                reporter.warn(format!(
                    "retiring the {} slot left by a dead run failed: {e}; the next launch in that slot replaces it",
                    old.slot
                ));
            }
        }
    }
}
