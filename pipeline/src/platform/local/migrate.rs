//! The migrate hook on the local target: a one-off container of the candidate's image with the
//! candidate's environment (its env, secrets and `SHIPIT_*` variables, read back from the
//! candidate container, so it is exactly what the new release runs with) and the hook's
//! command as its `CMD`. It publishes no port and has no restart policy.
//!
//! One per service and target, under a fixed name and this project's labels (`shipit.role =
//! migrate`, no slot): a container a killed run left behind is found by that name and removed
//! before the next one starts, by `converge`, and by `shipit down`. A run stopped meanwhile
//! (Ctrl-C) removes it on the way out.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, StartContainerOptions};
use futures_util::StreamExt;

use super::LocalPlatform;
use super::container::docker_error;
use crate::config::Migrate;
use crate::container_spec::{LABEL_PROJECT, LABEL_SLOT};
use crate::event::Reporter;
use crate::migrate::{Ended, Output};
use crate::platform::{Candidate, ErrorKind, PlatformError};

/// The label that tells a migrate container from a slot's.
pub const LABEL_ROLE: &str = "shipit.role";

impl LocalPlatform {
    /// The name of the service's migrate container.
    pub(super) fn migrate_name(&self) -> String {
        format!(
            "shipit-{}-{}-{}-migrate",
            self.project, self.target_name, self.service.name
        )
    }

    /// Removes a migrate container a killed run left, if it is ours; false when there was
    /// none. One under that name that is not ours is an error, and left alone.
    pub(super) async fn remove_migrate_leftover(&self) -> Result<bool, PlatformError> {
        let name = self.migrate_name();
        let info = match self.docker.inspect_container(&name, None).await {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(false),
            Err(e) => return Err(docker_error(&format!("inspecting {name}"), e)),
        };
        let project = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_PROJECT));
        if project != Some(&self.project) {
            return Err(self.not_ours(&name, project.map(String::as_str)));
        }
        self.remove_container(&name).await
    }

    pub(super) async fn run_migrate(
        &self,
        candidate: &Candidate,
        migrate: &Migrate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let name = self.migrate_name();
        let info = self
            .docker
            .inspect_container(&candidate.handle, None)
            .await
            .map_err(|e| docker_error(&format!("inspecting {}", self.name(candidate.slot)), e))?;
        let config = info.config.unwrap_or_default();
        let image = info.image.or(config.image).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("{} names no image", self.name(candidate.slot)),
            )
        })?;
        let mut labels: HashMap<String, String> = config.labels.unwrap_or_default();
        labels.remove(LABEL_SLOT);
        labels.insert(LABEL_ROLE.to_string(), "migrate".to_string());
        if self.remove_migrate_leftover().await? {
            reporter.progress(
                crate::event::Phase::Verify,
                format!("removed {name}, left by an earlier run"),
            );
        }
        let where_ = format!("a container of release {}", candidate.release);
        crate::migrate::starting(reporter, migrate, &where_);
        let body = ContainerCreateBody {
            image: Some(image),
            env: config.env,
            cmd: Some(migrate.command.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig::default()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| docker_error(&format!("creating {name}"), e))?;
        // From here on the container goes, whichever way this ends (a Ctrl-C drops the run).
        let mut removal = Removal {
            docker: self.docker.clone(),
            id: created.id.clone(),
        };
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| docker_error(&format!("starting {name}"), e))?;
        let mut output = Output::new(reporter);
        let run = async {
            let mut logs = self.docker.logs(
                &created.id,
                Some(LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            );
            while let Some(Ok(chunk)) = logs.next().await {
                output.chunk(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
            self.exited(&created.id).await
        };
        let ended = match tokio::time::timeout(migrate.timeout, run).await {
            Ok(Some(0)) => None,
            Ok(Some(code)) => Some(Ended::Exited(code)),
            Ok(None) => Some(Ended::Stopped(
                "the engine did not say how it ended".to_string(),
            )),
            Err(_) => Some(Ended::TimedOut(migrate.timeout)),
        };
        let tail = output.finish();
        self.remove_container(&created.id).await?;
        removal.id.clear();
        match ended {
            None => {
                reporter.progress(crate::event::Phase::Verify, "migrate hook: done");
                Ok(())
            }
            Some(ended) => Err(crate::migrate::failed(migrate, &where_, &ended, &tail)),
        }
    }
}

/// Removes the migrate container when dropped, unless it was removed already (`id` cleared):
/// a run cancelled mid-migration leaves no container behind.
struct Removal {
    docker: Docker,
    id: String,
}

impl Drop for Removal {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        if id.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(&id, Some(options)).await;
            });
        }
    }
}
