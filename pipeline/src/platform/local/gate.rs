//! Pause and maintenance on the local target: calls to the edge's admin API for the
//! service's route (see `shipit_edge::pause` and `shipit_edge::maintenance`). The edge keeps
//! both with its routes, across its restarts and upgrades; a pause ends at its deadline.

use super::{LocalPlatform, edge_error};
use crate::platform::gate::{Gate, GateChange};
use crate::platform::{ErrorKind, PlatformError};

impl LocalPlatform {
    pub(super) async fn change_gate(&self, change: &GateChange) -> Result<Gate, PlatformError> {
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_none() {
            return Err(PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "the edge of target {} is not running, so {} has no traffic to hold",
                    self.target_name, self.service.name
                ),
            )
            .with_hint("release the service first (`shipit release`), which starts the edge"));
        }
        let admin = self.admin();
        let service = &self.service.name;
        let mut gate = match change {
            GateChange::Pause { timeout } => Gate {
                paused: Some(
                    admin
                        .pause(service, *timeout)
                        .await
                        .map_err(|e| edge_error("pausing the route", e))?,
                ),
                ..Gate::default()
            },
            GateChange::Resume => {
                let answer = admin
                    .resume(service)
                    .await
                    .map_err(|e| edge_error("resuming the route", e))?;
                Gate {
                    // None: it was not paused.
                    released: answer.resumed.then_some(answer.released),
                    ..Gate::default()
                }
            }
            GateChange::MaintenanceOn {
                message,
                retry_after,
            } => Gate {
                maintenance: admin
                    .maintenance_with(service, message.as_deref(), *retry_after)
                    .await
                    .map_err(|e| edge_error("turning maintenance on", e))?
                    .maintenance,
                ..Gate::default()
            },
            GateChange::MaintenanceOff => {
                admin
                    .maintenance_off(service)
                    .await
                    .map_err(|e| edge_error("turning maintenance off", e))?;
                Gate::default()
            }
        };
        // The other half of the gate, as the edge has it now.
        if let Some(route) = self.route().await? {
            if gate.paused.is_none() && !matches!(change, GateChange::Resume) {
                gate.paused = route.paused;
            }
            if gate.maintenance.is_none() && !matches!(change, GateChange::MaintenanceOff) {
                gate.maintenance = route.maintenance;
            }
        }
        Ok(gate)
    }
}
