//! The connection to the Docker Engine.
//!
//! [`connect`] finds the engine the way the `docker` CLI does (`DOCKER_HOST`, else the local
//! socket), negotiates the API version down to what the engine speaks, so that older engines
//! (API 1.41 on Docker 20.10) work with a newer bollard, and pings it. Every later call can
//! then assume a reachable engine; a failure here names the host and says what to check.

use std::error::Error as _;
use std::io;

use bollard::Docker;

/// Where the engine is looked for when `DOCKER_HOST` is not set (the same as the docker CLI).
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The environment variable that points at another engine.
pub const DOCKER_HOST_ENV: &str = "DOCKER_HOST";

/// Why the engine could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no Docker Engine socket at {path} (from {host})")]
    SocketMissing { host: String, path: String },

    #[error("permission denied connecting to the Docker Engine at {host}: {source}")]
    PermissionDenied {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("the Docker Engine at {host} did not answer: {source}")]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("DOCKER_HOST={host} cannot be used: {source}")]
    UnsupportedHost {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
}

impl DockerError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            DockerError::SocketMissing { .. } => {
                "is the Docker daemon running? If the engine listens elsewhere, set DOCKER_HOST \
                 (for example unix:///run/user/1000/docker.sock or tcp://127.0.0.1:2375)"
            }
            DockerError::PermissionDenied { .. } => {
                "this user needs access to the socket: add it to the `docker` group \
                 (`sudo usermod -aG docker $USER`, then log in again) or run with sufficient rights"
            }
            DockerError::Unreachable { .. } => {
                "is the Docker daemon running (`systemctl status docker`)? Is DOCKER_HOST right? \
                 Does this user have access to /var/run/docker.sock?"
            }
            DockerError::UnsupportedHost { .. } => {
                "shipit supports unix:// and tcp:// (without TLS) hosts"
            }
        };
        Some(hint.to_string())
    }
}

/// Connects to the engine named by `DOCKER_HOST` (or the default socket), negotiates the API
/// version and checks that it answers.
pub async fn connect() -> Result<Docker, DockerError> {
    let host = std::env::var(DOCKER_HOST_ENV).unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_string());
    connect_to(&host).await
}

/// Like [`connect`], with the host given (`unix:///path/docker.sock`, `tcp://host:port`).
pub async fn connect_to(host: &str) -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_host(host).map_err(|source| match source {
        bollard::errors::Error::SocketNotFoundError(path) => DockerError::SocketMissing {
            host: host.to_string(),
            path,
        },
        source => DockerError::UnsupportedHost {
            host: host.to_string(),
            source,
        },
    })?;
    // Negotiation asks the engine for its highest API version and lowers the client's to it;
    // without it a bollard that speaks 1.5x would send requests a 1.41 engine refuses.
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|source| unreachable(host, source))?;
    docker
        .ping()
        .await
        .map_err(|source| unreachable(host, source))?;
    tracing::debug!(host, api_version = %docker.client_version(), "connected to the Docker Engine");
    Ok(docker)
}

fn unreachable(host: &str, source: bollard::errors::Error) -> DockerError {
    let host = host.to_string();
    if is_permission_denied(&source) {
        DockerError::PermissionDenied { host, source }
    } else {
        DockerError::Unreachable { host, source }
    }
}

fn is_permission_denied(err: &bollard::errors::Error) -> bool {
    // `IOError` is a transparent wrapper: its `source()` skips the io::Error itself.
    if let bollard::errors::Error::IOError { err } = err {
        return err.kind() == io::ErrorKind::PermissionDenied;
    }
    let mut cause = err.source();
    while let Some(e) = cause {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_negotiates_down_to_the_engine_api_version() {
        let docker = connect().await.expect("the local engine answers");
        let version = docker.version().await.unwrap();
        let engine = version
            .api_version
            .expect("the engine reports its API version");
        let (major, minor) = engine.split_once('.').unwrap();
        let engine = (
            major.parse::<usize>().unwrap(),
            minor.parse::<usize>().unwrap(),
        );
        let client = docker.client_version();
        assert!(
            (client.major_version, client.minor_version) <= engine,
            "client speaks {client} but the engine only {engine:?}"
        );
    }

    #[tokio::test]
    async fn missing_socket_is_an_error_naming_the_path_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let host = format!("unix://{}", path.display());

        let err = connect_to(&host).await.unwrap_err();
        assert!(matches!(err, DockerError::SocketMissing { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            err.hint()
                .is_some_and(|h| h.starts_with("is the Docker daemon running?")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn socket_nobody_listens_on_is_unreachable_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        // Bind then close: the socket file stays, but connecting to it is refused.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let host = format!("unix://{}", path.display());

        let err = connect_to(&host).await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&host), "{text}");
        assert!(
            err.hint()
                .is_some_and(|h| h.contains("Is DOCKER_HOST right?")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unsupported_scheme_names_the_host() {
        let err = connect_to("ftp://example.invalid").await.unwrap_err();
        assert!(
            matches!(err, DockerError::UnsupportedHost { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("ftp://example.invalid"));
    }
}
