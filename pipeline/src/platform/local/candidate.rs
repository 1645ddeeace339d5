//! The candidate the edge holds for a service (a split or a preview): finding it, renewing
//! its lease while a bake runs, and withdrawing it once nothing should reach it.

use shipit_edge::Backend;

use super::{CANDIDATE_LEASE, LocalPlatform, edge_error};
use crate::event::{Phase, Reporter};
use crate::platform::{Candidate, ErrorKind, PlatformError};

impl LocalPlatform {
    /// The candidate the edge holds for this service (preview or split), if any.
    pub(super) async fn registered_candidate(&self) -> Result<Option<Backend>, PlatformError> {
        Ok(self
            .route()
            .await?
            .and_then(|r| r.candidate)
            .map(|c| c.backend))
    }

    /// Renews the lease of the candidate's split. The edge refuses when the lease already
    /// lapsed (this process stalled for longer than it) and withdrew the candidate: the
    /// bake then fails, as nothing judged the candidate meanwhile.
    pub(super) async fn renew_lease(&self, candidate: &Candidate) -> Result<(), PlatformError> {
        match self
            .admin()
            .renew_lease(&self.service.name, &candidate.release, CANDIDATE_LEASE)
            .await
        {
            Ok(_) => Ok(()),
            Err(shipit_edge::EdgeError::AdminRejected { status: 409, message, .. }) => {
                Err(PlatformError::new(
                    ErrorKind::Platform,
                    format!(
                        "the edge withdrew the candidate {} in the {} slot during the bake: {message}",
                        candidate.release, candidate.slot
                    ),
                )
                .with_hint(format!(
                    "its lease ({}) lapsed before this release renewed it, so this process stalled or another run changed the route; release again",
                    humantime::format_duration(CANDIDATE_LEASE)
                )))
            }
            Err(e) => Err(edge_error("renewing the candidate's lease", e)),
        }
    }

    /// Takes the candidate off the edge (split and preview), then waits until the requests
    /// it was serving have finished, so removing its container afterwards breaks none.
    pub(super) async fn withdraw_candidate(
        &self,
        candidate: &Backend,
        reporter: &Reporter,
        phase: Phase,
    ) -> Result<(), PlatformError> {
        let admin = self.admin();
        admin
            .clear_preview(&self.service.name)
            .await
            .map_err(|e| edge_error("withdrawing the candidate", e))?;
        let drained = admin
            .drain(
                &self.service.name,
                &candidate.release,
                self.target.drain_timeout,
            )
            .await
            .map_err(|e| edge_error("draining the candidate", e))?;
        if drained.drained {
            if !drained.waited.is_zero() {
                reporter.progress(
                    phase,
                    format!(
                        "drained the candidate in the {} slot in {} ms",
                        candidate.slot,
                        drained.waited.as_millis()
                    ),
                );
            }
        } else {
            reporter.warn(format!(
                "{} requests were still in flight on the candidate in the {} slot at the drain deadline ({})",
                drained.in_flight,
                candidate.slot,
                humantime::format_duration(self.target.drain_timeout)
            ));
        }
        Ok(())
    }
}
