//! The Verify phase of a candidate: what runs between its launch and the switch.

use std::collections::BTreeMap;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Run, Step, StepWithCandidate};
use crate::config::{Hook, Migrate, Warmup};
use crate::event::Phase;
use crate::fault::{self, FaultPoint};
use crate::platform::{Candidate, ErrorKind, Platform, PlatformError};

/// What a release checks beyond the platform's health and version checks; none of it for a
/// promotion (the release that staged the candidate did it).
#[derive(Default)]
pub(super) struct Checks<'a> {
    pub(super) migrate: Option<&'a Migrate>,
    pub(super) warmup: Option<&'a Warmup>,
    /// The `pre_switch` hook, the folder it runs in and its environment.
    pub(super) pre_switch: Option<(&'a Hook, &'a Path, BTreeMap<String, String>)>,
}

impl<P: Platform> Run<'_, P> {
    /// The Verify phase of a launched (or staged) candidate: the migration first, so the
    /// candidate's health may depend on it; the platform's checks; the warm-up traffic; and
    /// the `pre_switch` hook last, once the candidate passed everything else.
    pub(super) async fn verify(
        &mut self,
        candidate: &Candidate,
        checks: Checks<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), StepWithCandidate> {
        let (platform, reporter) = (self.platform, self.reporter);
        let measured = self
            .phase(Phase::Verify, Some(cancel), async {
                fault::point(FaultPoint::MidVerify);
                if let Some(migrate) = checks.migrate {
                    platform.migrate(candidate, migrate, reporter).await?;
                }
                platform.verify(candidate, reporter, cancel).await?;
                let mut measured = None;
                if let Some(warmup) = checks.warmup {
                    let Some(url) = platform.candidate_url(candidate) else {
                        return Err(PlatformError::new(
                            ErrorKind::Platform,
                            format!(
                                "warm-up: {} gives no address to reach the candidate at",
                                platform.describe()
                            ),
                        )
                        .with_hint(
                            "an ecs target needs a test listener (test_listener_arn) for \
                             warm-up traffic; or remove services.<s>.warmup",
                        ));
                    };
                    measured = Some(crate::warmup::run(&url, warmup, reporter).await?);
                }
                if let Some((hook, dir, env)) = &checks.pre_switch
                    && !cancel.is_cancelled()
                {
                    crate::hook::run_hook("pre_switch", hook, dir, env, Phase::Verify, reporter)
                        .await?;
                }
                Ok(measured)
            })
            .await
            .map_err(|e| e.with_candidate(candidate.slot))?;
        if measured.is_some() {
            self.record.warmup = measured;
            self.save()
                .await
                .map_err(|e| Step::Fatal(e).with_candidate(candidate.slot))?;
        }
        Ok(())
    }
}
