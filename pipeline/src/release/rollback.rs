//! `shipit rollback`: an earlier release made live again from what is left of it (a stopped
//! container, or its image), without a build, through the same Verify, Shift and Retire as a
//! release.
//!
//! Without `--to` it is the release that was live before the live one. With `--to <release>`
//! it is any release that went live and whose image the target still has; a local target
//! prunes images past `keep_images`, so [`rollback_marks`] tells `shipit history` which
//! releases those are, and a rollback to one whose image is gone stops before anything
//! changes, saying so.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Done, ReleaseError, ReleaseInput, Run, converge, under_lock};
use crate::event::{Phase, Reporter};
use crate::history::{Kind, ReleaseRecord, new_release_id};
use crate::platform::{Live, Platform, PlatformError};

/// Makes an earlier release live again: `to` (a release id, or a rollback's, which stands for
/// the release it restored), or else the release that was live before the live one.
pub async fn rollback<P: Platform>(
    platform: &P,
    to: Option<&str>,
    cancel: CancellationToken,
    reporter: &Reporter,
) -> Result<ReleaseRecord, ReleaseError> {
    reporter.note(format!(
        "rolling back {} on {}{}",
        platform.service(),
        platform.describe(),
        to.map_or(String::new(), |to| format!(" to release {to}"))
    ));
    let input = ReleaseInput {
        cancel,
        ..ReleaseInput::default()
    };
    let id = new_release_id();
    let cancel = input.cancel.clone();
    under_lock(
        platform,
        format!("rollback {id}"),
        &cancel,
        reporter,
        async {
            let run = Run::start(platform, reporter, &id, Kind::Rollback, &input).await?;
            Box::pin(run.rollback(to, &input)).await
        },
    )
    .await
}

/// Whether a release in the history can be made live again by `shipit rollback --to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackMark {
    /// It is live now.
    Live,
    /// Its image is still there: `rollback --to` can make it live.
    Available,
    /// It went live once, but its image is gone (pruned past `keep_images`, or removed).
    ImageGone,
}

impl RollbackMark {
    /// Whether `rollback --to` can make it live.
    pub fn available(self) -> bool {
        self == RollbackMark::Available
    }
}

/// For each of `records`: `None` for a record that is not a release that went live (a failed
/// or staged release, a rollback), else whether it is live, or can be rolled back to.
pub async fn rollback_marks<P: Platform>(
    platform: &P,
    records: &[ReleaseRecord],
) -> Result<Vec<Option<RollbackMark>>, PlatformError> {
    let live = platform.live().await?;
    let revivable = platform.revivable(records).await?;
    Ok(records
        .iter()
        .map(|r| {
            if !r.went_live() {
                None
            } else if live.as_ref().is_some_and(|l| l.release == r.id) {
                Some(RollbackMark::Live)
            } else if revivable.contains(&r.id) {
                Some(RollbackMark::Available)
            } else {
                Some(RollbackMark::ImageGone)
            }
        })
        .collect())
}

impl<P: Platform> Run<'_, P> {
    pub(super) async fn rollback(
        mut self,
        to: Option<&str>,
        input: &ReleaseInput,
    ) -> Result<ReleaseRecord, ReleaseError> {
        let cancel = &input.cancel;
        let platform = self.platform;
        let reporter = self.reporter;
        let live = match converge(platform, reporter).await {
            Ok(Some(live)) => {
                std::mem::take(&mut self.dead)
                    .retire(platform, reporter)
                    .await;
                live
            }
            Ok(None) => {
                return Err(ReleaseError::NoRollback {
                    reason: format!("nothing is live on {}", platform.describe()),
                });
            }
            Err(source) => return Err(self.failed(Phase::Version, source)),
        };
        let previous = match to {
            // After rollbacks walked back past `keep_images`, the release before the live
            // one may have lost its image: refused as `--to` refuses it (exit 7).
            None => {
                let previous = before(platform, &live).await?;
                match still_revivable(platform, &previous).await {
                    Ok(()) => previous,
                    Err(Refusal::Release(e)) => return Err(e),
                    Err(Refusal::Platform(source)) => {
                        return Err(self.failed(Phase::Version, source));
                    }
                }
            }
            Some(to) => match chosen(platform, to, &live).await {
                Ok(record) => record,
                Err(Refusal::Release(e)) => return Err(e),
                Err(Refusal::Platform(source)) => return Err(self.failed(Phase::Version, source)),
            },
        };
        let slot = live.slot.other();
        self.record.serves = previous.serves.clone();
        self.record.previous = Some(live.release.clone());
        self.record.slot = Some(slot);
        self.record.image = previous.image.clone();
        self.record.image_id = previous.image_id.clone();
        self.record.version = previous.version.clone();
        self.record.revision = previous.revision.clone();
        self.record.modules = previous.modules.clone();
        self.record.image_reused = true;
        self.save().await?;
        let outcome = async {
            self.supersede_staged().await?;
            let candidate = self
                .phase(
                    Phase::Launch,
                    Some(cancel),
                    platform.revive(&previous, slot, reporter),
                )
                .await
                .map_err(|e| e.with_candidate(slot))?;
            self.record.handle = Some(candidate.handle.clone());
            self.verify(&candidate, super::Checks::default(), cancel)
                .await?;
            self.go_live(&candidate, Some(&live), cancel).await?;
            Ok(Done::Live)
        }
        .await;
        self.finish(outcome).await
    }
}

/// The release that was live before `live`: what a plain `shipit rollback` brings back.
async fn before<P: Platform>(platform: &P, live: &Live) -> Result<ReleaseRecord, ReleaseError> {
    let history = platform.history();
    let current = history.get(&live.release).await?;
    let Some(previous_id) = current.as_ref().and_then(|r| r.previous.clone()) else {
        return Err(ReleaseError::NoRollback {
            reason: format!(
                "release {} is live and no release was live before it",
                live.release
            ),
        });
    };
    history
        .get(&previous_id)
        .await?
        .ok_or_else(|| ReleaseError::NoRollback {
            reason: format!("the record of release {previous_id} is missing"),
        })
}

/// Why `rollback --to` cannot go ahead.
enum Refusal {
    Release(ReleaseError),
    /// The platform could not say whether the release's image is there.
    Platform(PlatformError),
}

impl From<crate::history::HistoryError> for Refusal {
    fn from(e: crate::history::HistoryError) -> Self {
        Refusal::Release(e.into())
    }
}

/// The release `rollback --to <to>` makes live: one that went live, is not live now, and
/// whose image the target still has.
async fn chosen<P: Platform>(
    platform: &P,
    to: &str,
    live: &Live,
) -> Result<ReleaseRecord, Refusal> {
    let history = platform.history();
    let refuse = |reason: String| Refusal::Release(ReleaseError::NoRollback { reason });
    let Some(mut record) = history.get(to).await? else {
        return Err(refuse(format!(
            "no release {to} in the history of {} on {}",
            platform.service(),
            platform.describe()
        )));
    };
    // A rollback's record stands for the release it restored.
    if record.kind == Kind::Rollback {
        let serves = record.serves.clone();
        record = history.get(&serves).await?.ok_or_else(|| {
            refuse(format!(
                "rollback {to} restored release {serves}, whose record is missing"
            ))
        })?;
    }
    if !record.went_live() {
        return Err(refuse(format!(
            "release {} never went live (outcome: {}): only a release that succeeded can be rolled back to",
            record.id,
            record.outcome.label()
        )));
    }
    if record.id == live.release {
        return Err(refuse(format!("release {} is already live", record.id)));
    }
    still_revivable(platform, &record).await?;
    Ok(record)
}

/// Refuses a release whose image is gone (pruned past `keep_images`, or removed): nothing
/// can make it live again, and nothing is changed.
async fn still_revivable<P: Platform>(platform: &P, record: &ReleaseRecord) -> Result<(), Refusal> {
    let revivable = platform
        .revivable(std::slice::from_ref(record))
        .await
        .map_err(Refusal::Platform)?;
    if revivable.contains(&record.id) {
        return Ok(());
    }
    Err(Refusal::Release(ReleaseError::ImageGone {
        release: record.id.clone(),
        image: record
            .image_id
            .clone()
            .or_else(|| record.image.clone())
            .unwrap_or_else(|| "(none recorded)".into()),
        target: platform.describe(),
        revision: record.revision.clone(),
    }))
}
