//! A slot's container, through the Docker Engine: found by name (one per slot) and owned by
//! this project (its `shipit.project` label), created from the container spec on a loopback
//! port chosen here, started, inspected for its published port, waited on, read for its last
//! log lines, and removed.
//!
//! The host port is chosen by shipit, not left to the engine: the engine gives a container
//! that it restarts (restart policy) a new port when it picked the old one itself, and the
//! edge would keep routing to the old one. A fixed binding survives restarts, and a stopped
//! container started again for a rollback keeps it too.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    LogsOptions, RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::LocalPlatform;
use crate::Slot;
use crate::container_spec::{
    LABEL_PROJECT, Launch, PUBLISH_HOST_IP, container_name, container_spec, port_key,
};
use crate::platform::{Candidate, ErrorKind, PlatformError};

/// How many log lines of a failed candidate are shown.
pub const LOG_TAIL_LINES: usize = 20;
/// How many loopback ports a launch tries when the one it chose was taken before the engine
/// bound it.
pub const PORT_ATTEMPTS: usize = 5;

impl LocalPlatform {
    pub(super) fn name(&self, slot: Slot) -> String {
        container_name(&self.project, &self.service.name, &self.target_name, slot)
    }

    /// The container of `slot`, if there is one. A container under our name that does not
    /// carry our project id is not ours: that is an error, and it is left alone.
    pub(super) async fn inspect(
        &self,
        slot: Slot,
    ) -> Result<Option<ContainerInspectResponse>, PlatformError> {
        self.inspect_ours(&self.name(slot)).await
    }

    /// The container named `name`, if there is one; one that is not this project's is an
    /// error, and left alone.
    pub(super) async fn inspect_ours(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, PlatformError> {
        let info = match self.docker.inspect_container(name, None).await {
            Ok(c) => c,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(docker_error(&format!("inspecting {name}"), e)),
        };
        let project = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_PROJECT));
        if project != Some(&self.project) {
            return Err(self.not_ours(name, project.map(String::as_str)));
        }
        Ok(Some(info))
    }

    /// The error for a container named like one of ours that another project (or no shipit)
    /// made.
    pub(super) fn not_ours(&self, name: &str, project: Option<&str>) -> PlatformError {
        let whose = match project {
            Some(other) => format!("project {other:?}"),
            None => "no project (it has no shipit.project label)".to_string(),
        };
        PlatformError::new(
            ErrorKind::Platform,
            format!(
                "the container {name} belongs to {whose}, not to this project ({:?}); shipit does not touch it",
                self.project
            ),
        )
        .with_hint(format!(
            "remove it yourself if it is not needed (`docker rm -f {name}`), or give this config another `project`"
        ))
    }

    /// Removes the container of `slot` (ours only); false when there was none.
    pub(super) async fn remove_slot(&self, slot: Slot) -> Result<bool, PlatformError> {
        match self.inspect(slot).await? {
            Some(info) => {
                let id = info.id.unwrap_or_else(|| self.name(slot));
                self.remove_container(&id).await
            }
            None => Ok(false),
        }
    }

    /// Removes the container `id` (or name), running or not; false when it was not there.
    pub(super) async fn remove_container(&self, id: &str) -> Result<bool, PlatformError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(docker_error(&format!("removing {id}"), e)),
        }
    }

    pub(super) async fn create_and_start(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &str,
    ) -> Result<Candidate, PlatformError> {
        let service = self.launch_service().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let spec = container_spec(&Launch {
                project: &self.project,
                service: &service,
                target: &self.target_name,
                slot,
                release,
                image,
                version,
                stop_timeout: self.target.stop_timeout,
                host_port: free_loopback_port()?,
            });
            let created = match self
                .docker
                .create_container(
                    Some(bollard::query_parameters::CreateContainerOptions {
                        name: Some(spec.name.clone()),
                        ..Default::default()
                    }),
                    spec.body,
                )
                .await
            {
                Ok(created) => created,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {
                    // The name is taken: by a container of ours a concurrent change made, or
                    // by one that is not ours. Either way it is not replaced here.
                    return Err(match self.inspect(slot).await {
                        Err(not_ours) => not_ours,
                        Ok(_) => PlatformError::new(
                            ErrorKind::Platform,
                            format!("creating {}: a container of that name already exists", spec.name),
                        )
                        .with_hint("another shipit run may be launching the same slot; run `shipit status`"),
                    });
                }
                Err(e) => return Err(docker_error(&format!("creating {}", spec.name), e)),
            };
            match self.start(slot, release, &created.id).await {
                Err(e) if e.port_taken && attempt < PORT_ATTEMPTS => {
                    // Another process took the port between our check and the engine's bind.
                    self.remove_container(&created.id).await?;
                }
                result => return result.map_err(|e| e.error),
            }
        }
    }

    /// Starts the container `id` of `slot`. `port_taken` on the error says that its host
    /// port was taken by another process, so a new container on another port may start.
    pub(super) async fn start(
        &self,
        slot: Slot,
        release: &str,
        id: &str,
    ) -> Result<Candidate, StartError> {
        if let Err(e) = self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            return Err(StartError {
                port_taken: is_port_taken(&e),
                error: docker_error(&format!("starting {}", self.name(slot)), e),
            });
        }
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| docker_error(&format!("inspecting {}", self.name(slot)), e))?;
        let Some(port) = published_port(&info, self.service.port) else {
            return Err(self.without_port(slot, id, &info).await.into());
        };
        Ok(Candidate {
            slot,
            release: release.to_string(),
            address: format!("127.0.0.1:{port}"),
            handle: id.to_string(),
        })
    }

    /// Why a container just started has no published port. One that already exited
    /// (crashed on boot; the engine drops the ports of a stopped container) failed as a
    /// candidate that exits during Verify does: a verify failure, with its last logs.
    async fn without_port(
        &self,
        slot: Slot,
        id: &str,
        info: &ContainerInspectResponse,
    ) -> PlatformError {
        let state = info.state.as_ref();
        if state.and_then(|s| s.running) == Some(false) {
            let code = state
                .and_then(|s| s.exit_code)
                .map_or("unknown".into(), |c| c.to_string());
            let message = format!(
                "{} exited with code {code} before it became healthy",
                self.name(slot)
            );
            let logs = self.last_logs(id).await;
            return PlatformError::new(ErrorKind::Verify, self.with_logs(message, &logs))
                .with_hint(format!(
                    "the live slot was not touched; check the service's {} endpoint and its logs",
                    self.service.health.path
                ));
        }
        PlatformError::new(
            ErrorKind::Platform,
            format!(
                "{} has no published port for {}",
                self.name(slot),
                port_key(self.service.port)
            ),
        )
        .with_hint("see `docker inspect` of the container and the engine's log")
    }

    pub(super) async fn last_logs(&self, id: &str) -> Vec<String> {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: LOG_TAIL_LINES.to_string(),
                ..Default::default()
            }),
        );
        let mut lines = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let text = chunk.to_string();
            lines.extend(text.lines().map(str::to_string));
        }
        let keep = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines.split_off(keep)
    }

    /// Waits until the container is no longer running; returns its exit code.
    pub(super) async fn exited(&self, id: &str) -> Option<i64> {
        let mut stream = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        match stream.next().await {
            Some(Ok(r)) => Some(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            // The wait itself failed: we cannot tell, so never resolve and let the health
            // deadline decide.
            _ => std::future::pending().await,
        }
    }

    pub(super) fn with_logs(&self, message: String, logs: &[String]) -> String {
        if logs.is_empty() {
            format!("{message}\n(the container wrote no log lines)")
        } else {
            format!(
                "{message}\nlast {} log lines of the container:\n  {}",
                logs.len(),
                logs.join("\n  ")
            )
        }
    }
}

/// A container that did not start, and whether it was because its host port was taken.
pub(super) struct StartError {
    pub(super) error: PlatformError,
    pub(super) port_taken: bool,
}

impl From<PlatformError> for StartError {
    fn from(error: PlatformError) -> StartError {
        StartError {
            error,
            port_taken: false,
        }
    }
}

/// Whether the engine refused to start a container because its host port is in use.
fn is_port_taken(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            message.contains("port is already allocated")
                || message.contains("address already in use")
        }
        _ => false,
    }
}

/// A loopback port free right now, for a container's fixed binding. The kernel picks it (as
/// the engine would have); it is released before the engine binds it, so a launch that finds
/// it taken meanwhile tries another ([`PORT_ATTEMPTS`]).
fn free_loopback_port() -> Result<u16, PlatformError> {
    let taken = std::net::TcpListener::bind((PUBLISH_HOST_IP, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("cannot find a free port on {PUBLISH_HOST_IP} for the container: {e}"),
            )
        })?;
    Ok(taken.port())
}

pub(super) fn published_port(info: &ContainerInspectResponse, port: u16) -> Option<u16> {
    info.network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&port_key(port))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// A failed Docker call, naming what it was doing.
pub(super) fn docker_error(action: &str, e: bollard::errors::Error) -> PlatformError {
    PlatformError::new(ErrorKind::Platform, format!("docker: {action}: {e}"))
        .with_hint("check that the Docker engine is running and answers `docker info`")
}
