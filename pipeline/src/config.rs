//! The `shipit.toml` config: file lookup, `${VAR}` interpolation, parsing and validation.
//!
//! Loading is two-stage. The text is parsed into raw serde structs that reject unknown keys,
//! then validated into the typed values below: durations are `Duration`, ports `u16`, paths
//! absolute (resolved against the config file's folder). Every error names the file, the
//! line:column, the key path, what was expected and a hint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// The file looked for in the current folder when `-c` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "shipit.toml";
/// Environment variable that overrides `state_dir`.
pub const STATE_DIR_ENV: &str = "SHIPIT_STATE_DIR";
/// `state_dir` when neither the config nor the environment sets it, relative to the config.
pub const DEFAULT_STATE_DIR: &str = ".shipit";
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The name of the implicit local target of a config that has no `[targets]`.
pub const DEFAULT_TARGET_NAME: &str = "local";

/// A validated config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Absolute path of the config file.
    pub path: PathBuf,
    /// The folder of the config file; relative paths in it are resolved against this.
    pub dir: PathBuf,
    /// Where locks, history and edge state live. `SHIPIT_STATE_DIR` wins over the file.
    pub state_dir: PathBuf,
    pub default_target: Option<String>,
    pub services: BTreeMap<String, Service>,
    pub targets: BTreeMap<String, Target>,
}

/// One deployable app.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context.
    pub dockerfile: PathBuf,
    /// The port the app listens on inside its container.
    pub port: u16,
    /// Extra environment for the container, already interpolated.
    pub env: BTreeMap<String, String>,
    /// A shell command run (with `sh -c`, in the config's folder) before the build.
    pub pre_build: Option<String>,
    pub health: HealthCheck,
    pub verify: Verify,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    pub path: String,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// The deadline for the candidate to become healthy.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive successful probes needed.
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verify {
    /// A path whose response body must contain the release id. `None` skips the check.
    pub version_path: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    #[serde(flatten)]
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    Local(LocalTarget),
}

/// One Docker host, with shipit's edge in front of the two slots.
#[derive(Debug, Clone, Serialize)]
pub struct LocalTarget {
    /// Where the edge listens for the service's traffic.
    pub listen: SocketAddr,
    /// How long in-flight requests on the old slot may take to finish after a switch.
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
    /// How long a stopping container gets between SIGTERM and SIGKILL.
    #[serde(with = "duration_text")]
    pub stop_timeout: Duration,
}

/// Serializes a `Duration` as humantime text ("100ms", "30s"), the way configs spell them.
pub mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
