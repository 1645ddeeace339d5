//! The migrate hook on the local target: a one-off container of the candidate's image with the
//! candidate's environment (its env, secrets and `SHIPIT_*` variables, read back from the
//! candidate container, so it is exactly what the new release runs with) and the hook's
//! command as its `CMD`. It publishes no port and has no restart policy. A candidate that
//! exited while the migration ran (an app that refuses to boot on the old schema) is started
//! again once it succeeded.
//!
//! One per service and target, under a fixed name and this project's labels (`shipit.role =
//! migrate`, the service and target, no slot). What a killed run left under that name:
//! - if it has exited, it is removed (by `converge`, before the next migration, by `down`);
//! - if it still runs, a migration is still under way: the next migration refuses to start
//!   beside it (two migrations on one database), and `converge` only warns, so a rollback is
//!   never blocked by it;
//! - if it is not this service's, it is never touched: the next migration refuses, `converge`
//!   warns.
//!
//! A run stopped meanwhile (Ctrl-C) stops the container (SIGTERM, then SIGKILL after 10 s)
//! and removes it on the way out.

use std::collections::HashMap;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, StartContainerOptions};
use futures_util::StreamExt;

use super::LocalPlatform;
use super::container::docker_error;
use crate::config::Migrate;
use crate::container_spec::{LABEL_PROJECT, LABEL_SERVICE, LABEL_SLOT, LABEL_TARGET};
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

    /// What a killed run left under the migrate name, if anything.
    async fn migrate_leftover(&self) -> Result<Leftover, PlatformError> {
        let name = self.migrate_name();
        let info = match self.docker.inspect_container(&name, None).await {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(Leftover::None),
            Err(e) => return Err(docker_error(&format!("inspecting {name}"), e)),
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let ours = [
            (LABEL_PROJECT, self.project.as_str()),
            (LABEL_SERVICE, self.service.name.as_str()),
            (LABEL_TARGET, self.target_name.as_str()),
            (LABEL_ROLE, "migrate"),
        ]
        .iter()
        .all(|(key, value)| labels.get(*key).map(String::as_str) == Some(*value));
        if !ours {
            let project = labels.get(LABEL_PROJECT).map(String::as_str);
            return Ok(Leftover::NotOurs(self.not_ours(&name, project)));
        }
        let running = info.state.and_then(|s| s.running).unwrap_or(false);
        Ok(if running {
            Leftover::Running(name)
        } else {
            Leftover::Exited(name)
        })
    }

    /// Before a release: removes a migrate container a killed run left once it has exited;
    /// one still running, or not ours, only gets a warning (a rollback must not wait on it).
    pub(super) async fn tidy_migrate_leftover(
        &self,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        match self.migrate_leftover().await? {
            Leftover::None => {}
            Leftover::Exited(name) => {
                if self.remove_container(&name).await? {
                    reporter.progress(
                        crate::event::Phase::Version,
                        format!("removed {name}, left by an interrupted run"),
                    );
                }
            }
            Leftover::Running(name) => reporter.warn(format!(
                "{name}, the migration of an interrupted run, is still running; a release with \
                 a migrate hook waits until it has ended"
            )),
            Leftover::NotOurs(e) => reporter.warn(e.to_string()),
        }
        Ok(())
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
        match self.migrate_leftover().await? {
            Leftover::None => {}
            Leftover::Exited(name) => {
                self.remove_container(&name).await?;
                reporter.progress(
                    crate::event::Phase::Verify,
                    format!("removed {name}, left by an earlier run"),
                );
            }
            Leftover::Running(name) => {
                return Err(PlatformError::new(
                    ErrorKind::Verify,
                    format!(
                        "the migrate hook did not start: {name}, the migration of an interrupted \
                         run, is still running, and two migrations must not run at once"
                    ),
                )
                .with_hint(format!(
                    "wait for it to end (`docker wait {name}`) and release again; if it hangs, \
                     stop it (`docker stop {name}`) and check the database"
                )));
            }
            Leftover::NotOurs(e) => return Err(e),
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
        let id = created.id.as_str();
        let run = async {
            let mut logs = std::pin::pin!(async {
                let mut stream = self.docker.logs(
                    id,
                    Some(LogsOptions {
                        follow: true,
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    }),
                );
                while let Some(Ok(chunk)) = stream.next().await {
                    let stream = usize::from(matches!(chunk, LogOutput::StdErr { .. }));
                    output.chunk(stream, &String::from_utf8_lossy(&chunk.into_bytes()));
                }
            });
            // The wait decides; the logs get a moment to drain once it has ended.
            let mut logs_done = false;
            let ended = tokio::select! {
                ended = self.migrate_exit(id) => ended,
                () = &mut logs => {
                    logs_done = true;
                    self.migrate_exit(id).await
                }
            };
            if !logs_done {
                let _ = tokio::time::timeout(LOG_GRACE, &mut logs).await;
            }
            ended
        };
        let ended = match tokio::time::timeout(migrate.timeout, run).await {
            Ok(ended) => ended,
            Err(_) => Some(Ended::TimedOut(migrate.timeout)),
        };
        let tail = output.finish();
        self.remove_container(&created.id).await?;
        removal.id.clear();
        if let Some(ended) = ended {
            return Err(crate::migrate::failed(migrate, &where_, &ended, &tail));
        }
        reporter.progress(crate::event::Phase::Verify, "migrate hook: done");
        // An app that checks its schema at boot may have exited while the migration ran:
        // it starts again now, on the same address.
        let state = self
            .docker
            .inspect_container(&candidate.handle, None)
            .await
            .map_err(|e| docker_error(&format!("inspecting {}", self.name(candidate.slot)), e))?
            .state;
        if state.and_then(|s| s.running) == Some(false) {
            self.docker
                .start_container(&candidate.handle, None::<StartContainerOptions>)
                .await
                .map_err(|e| docker_error(&format!("starting {}", self.name(candidate.slot)), e))?;
            reporter.progress(
                crate::event::Phase::Verify,
                format!(
                    "started {} again: it exited while the migration ran",
                    self.name(candidate.slot)
                ),
            );
        }
        Ok(())
    }

    /// How the migrate container `id` ended: `None` for exit code 0.
    async fn migrate_exit(&self, id: &str) -> Option<Ended> {
        let mut wait = self.docker.wait_container(
            id,
            Some(bollard::query_parameters::WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        match wait.next().await {
            Some(Ok(r)) if r.status_code == 0 => None,
            Some(Ok(r)) => Some(Ended::Exited(r.status_code)),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))
                if code != 0 =>
            {
                Some(Ended::Exited(code))
            }
            Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => None,
            Some(Err(e)) => Some(Ended::Stopped(format!("the engine's wait failed: {e}"))),
            None => Some(Ended::Stopped(
                "the engine's wait ended without a status".into(),
            )),
        }
    }
}

/// What a killed run left under the migrate name.
enum Leftover {
    None,
    Exited(String),
    Running(String),
    NotOurs(PlatformError),
}

/// How long the logs may take to drain once the migration has exited.
const LOG_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Stops (SIGTERM, SIGKILL after 10 s) and removes the migrate container when dropped, unless
/// it was removed already (`id` cleared): a run cancelled mid-migration leaves none behind.
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
                // SIGTERM first: a migration may stop cleanly between steps.
                let stop = bollard::query_parameters::StopContainerOptions {
                    t: Some(10),
                    ..Default::default()
                };
                let _ = docker.stop_container(&id, Some(stop)).await;
                let options = bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(&id, Some(options)).await;
            });
        }
    }
}
