//! `shipit down` on the local target: the service's route and containers go; its history and
//! images stay.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptions;

use super::container::docker_error;
use super::{LocalPlatform, edge_error};
use crate::container_spec::{LABEL_PROJECT, LABEL_SERVICE, LABEL_TARGET};
use crate::event::{Phase, Reporter};
use crate::platform::PlatformError;

impl LocalPlatform {
    /// `shipit down`: the route (and the edge, once it has none left), then every container
    /// of the service on the target, the migrate container included.
    pub(super) async fn remove_all(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_some() {
            let admin = self.admin();
            admin
                .remove(&self.service.name)
                .await
                .map_err(|e| edge_error("removing the route", e))?;
            let status = admin
                .status()
                .await
                .map_err(|e| edge_error("reading the edge status", e))?;
            if status.routes.is_empty() {
                shipit_edge::daemon::stop(&self.paths.edge_dir, shipit_edge::DEFAULT_STOP_TIMEOUT)
                    .await
                    .map_err(|e| edge_error("stopping the edge", e))?;
                reporter.progress(Phase::Retire, "stopped the edge: it has no routes left");
            }
        } else {
            // The edge is down: drop the route from what it would restore.
            let dir = &self.paths.edge_dir;
            if let Some(mut saved) = shipit_edge::state::load(dir)
                .map_err(|e| edge_error("reading the edge's saved routes", e))?
            {
                saved.routes.retain(|r| r.service != self.service.name);
                shipit_edge::state::save(dir, &saved)
                    .map_err(|e| edge_error("saving the edge's routes", e))?;
            }
        }
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_PROJECT}={}", self.project),
                format!("{LABEL_SERVICE}={}", self.service.name),
                format!("{LABEL_TARGET}={}", self.target_name),
            ],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("listing the service's containers", e))?;
        for c in containers {
            let id = c.id.unwrap_or_default();
            if self.remove_container(&id).await? {
                reporter.progress(Phase::Retire, format!("removed container {id:.12}"));
            }
        }
        Ok(())
    }
}
