//! A slot's container, through the Docker Engine: found by name (one per slot), created from
//! the container spec, started, inspected for its published port, waited on, read for its
//! last log lines, and removed.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    LogsOptions, RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::LocalPlatform;
use crate::Slot;
use crate::container_spec::{Launch, container_name, container_spec, port_key};
use crate::platform::{Candidate, ErrorKind, PlatformError};

/// How many log lines of a failed candidate are shown.
pub const LOG_TAIL_LINES: usize = 20;

impl LocalPlatform {
    pub(super) fn name(&self, slot: Slot) -> String {
        container_name(&self.service.name, &self.target_name, slot)
    }

    pub(super) async fn inspect(
        &self,
        slot: Slot,
    ) -> Result<Option<ContainerInspectResponse>, PlatformError> {
        match self.docker.inspect_container(&self.name(slot), None).await {
            Ok(c) => Ok(Some(c)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(docker_error(&format!("inspecting {}", self.name(slot)), e)),
        }
    }

    pub(super) async fn remove_slot(&self, slot: Slot) -> Result<bool, PlatformError> {
        self.remove_container(&self.name(slot)).await
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
        let spec = container_spec(&Launch {
            service: &self.service,
            target: &self.target_name,
            slot,
            release,
            image,
            version,
            stop_timeout: self.target.stop_timeout,
        });
        let created = self
            .docker
            .create_container(
                Some(bollard::query_parameters::CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                spec.body,
            )
            .await
            .map_err(|e| docker_error(&format!("creating {}", spec.name), e))?;
        self.start(slot, release, &created.id).await
    }

    pub(super) async fn start(
        &self,
        slot: Slot,
        release: &str,
        id: &str,
    ) -> Result<Candidate, PlatformError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| docker_error(&format!("starting {}", self.name(slot)), e))?;
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| docker_error(&format!("inspecting {}", self.name(slot)), e))?;
        let Some(port) = published_port(&info, self.service.port) else {
            return Err(self.without_port(slot, id, &info).await);
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
