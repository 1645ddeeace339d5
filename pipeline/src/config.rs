//! The `shipit.toml` config: file lookup, `${VAR}` interpolation, parsing and validation.
//!
//! Loading is two-stage. The text is parsed into raw serde structs that reject unknown keys,
//! then validated into the typed values below: durations are `Duration`, ports `u16`, paths
//! absolute (resolved against the config file's folder). Every error names the file, the
//! line:column, the key path, what was expected and a hint.
//!
//! The stages, each in its own file under `config/`:
//!
//! 1. read the file and parse it into a `toml::Table` (syntax errors),
//! 2. `interpolate`: `${VAR}` in every string value,
//! 3. `raw`: deserialize the table into serde structs (types, unknown keys),
//! 4. `resolve`: turn the raw structs into the typed [`Config`] (defaults, names, paths).
//!
//! Stages 2 to 4 report a key path; `locate` finds its line:column in the original text.
//! Each target kind's keys have their own file: `local.rs` (with `edge.rs`, the local edge's
//! table) and `ecs.rs`.

// `ConfigError` is a flat record of six public fields (128 bytes) that the CLI reads and
// serializes; it is built once per failed load, so its size on the error path costs nothing.
#![allow(clippy::result_large_err)]

mod ecs;
mod edge;
mod env_file;
mod error;
mod interpolate;
mod local;
mod locate;
mod path;
mod project;
mod raw;
mod resolve;
mod size;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use crate::secret::REDACTED;
pub use ecs::{
    Cdn, DEFAULT_ECS_CPU, DEFAULT_ECS_DESIRED_COUNT, DEFAULT_ECS_LOG_GROUP, DEFAULT_ECS_MEMORY,
    DEFAULT_ECS_VERIFY_TIMEOUT, DEFAULT_KEEP_PREVIOUS, DEFAULT_LOCK_LEASE, DEFAULT_TASK_DEFINITION,
    DEFAULT_TASK_DEFINITION_TEXT, EcsTarget, PerSlot,
};
pub use edge::{
    Certificate, DEFAULT_EDGE_CONNECT_TIMEOUT, DEFAULT_EDGE_HEADER_READ_TIMEOUT,
    DEFAULT_EDGE_IDLE_TIMEOUT, DEFAULT_EDGE_MAX_REQUEST_BODY, DEFAULT_EDGE_RESPONSE_TIMEOUT,
    EdgeSettings, TargetEdge,
};
pub use env_file::EnvFile;
pub use error::ConfigError;
pub use local::{DEFAULT_KEEP_IMAGES, LocalTarget, MIN_KEEP_IMAGES};
use locate::KeyPath;
pub use project::{MAX_PROJECT_LEN, PROJECT_ID_HEX_LEN, derived_project};

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
/// A module's tag when `tag` is not set: `<name>` is the module's name and `<version>` its
/// semantic version, so `sources` at 1.2.0 is tagged `sources-v1.2.0`.
pub const DEFAULT_MODULE_TAG: &str = "<name>-v<version>";
/// The version files looked for, in this order, in a module's folder without `version_file`.
pub const VERSION_FILES: [&str; 5] = [
    "Cargo.toml",
    "package.json",
    "project.clj",
    "pom.xml",
    "VERSION",
];

/// A validated config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Absolute path of the config file.
    pub path: PathBuf,
    /// The folder of the config file; relative paths in it are resolved against this.
    pub dir: PathBuf,
    /// Where locks, history and edge state live. `SHIPIT_STATE_DIR` wins over the file.
    pub state_dir: PathBuf,
    /// The project id every container, image tag and label of this config carries: the
    /// `project` key, or a short hash of `state_dir` and `path` ([`derived_project`]).
    pub project: String,
    pub default_target: Option<String>,
    pub services: BTreeMap<String, Service>,
    pub targets: BTreeMap<String, Target>,
    /// Separately versioned library parts of the codebase. A config may hold only modules.
    pub modules: BTreeMap<String, Module>,
    /// `[versioning]`: what happens to the version commit and tags once made.
    pub versioning: Versioning,
    /// `[notify]`: where the end of every release, rollback and promotion is posted; `None`
    /// without a webhook (an empty one included: `"${SLACK_WEBHOOK:-}"` unset).
    pub notify: Option<Notify>,
    /// What loading found worth a warning, such as an env file others can read.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The remote the version commit and tags go to when no `remote` is set.
pub const DEFAULT_VERSION_REMOTE: &str = "origin";

/// `[versioning]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Versioning {
    /// Push the version commit and its tags to `remote` once made (`version apply`, and the
    /// version step of `release`).
    pub push: bool,
    /// The git remote they are pushed to.
    pub remote: String,
}

impl Default for Versioning {
    fn default() -> Self {
        Versioning {
            push: false,
            remote: DEFAULT_VERSION_REMOTE.to_string(),
        }
    }
}

/// How long a notification may take before it is given up, when `timeout` is not set.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// `[notify]`: a webhook (Slack-compatible) told how each release ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notify {
    /// The URL: a secret (a Slack webhook's path is its key), so it never reaches output.
    #[serde(serialize_with = "redacted")]
    pub webhook: String,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

fn redacted<S: serde::Serializer>(_: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("<redacted>")
}

/// A library module released on its own semantic version (see [`crate::version`]).
#[derive(Debug, Clone, Serialize)]
pub struct Module {
    pub name: String,
    /// Absolute path of the module's folder. No other module's folder overlaps it.
    pub path: PathBuf,
    /// Absolute path of the file holding its version, inside `path`.
    pub version_file: PathBuf,
    /// The modules it depends on; they exist, and the graph has no cycle.
    pub depends_on: Vec<String>,
    /// The tag format, with `<version>` (and optionally `<name>`) in it.
    pub tag: String,
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
    /// Extra environment for the container: the `env` table, already interpolated, and the
    /// variables of `env_file`. Values are secrets: see [`Service::redacted`].
    pub env: BTreeMap<String, String>,
    /// The dotenv file whose variables are in `env`, and their names.
    pub env_file: Option<EnvFile>,
    /// Environment kept in AWS, by name: an SSM parameter or a Secrets Manager secret. An
    /// ecs task definition gets them as `secrets` (ECS reads them at task start); a local
    /// launch reads them through the SDK. Their values are never printed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::secret::SecretArn>,
    /// A shell command run (with `sh -c`, in the config's folder) before the build.
    pub pre_build: Option<String>,
    pub health: HealthCheck,
    pub verify: Verify,
    /// `[services.<s>.hooks]`: commands run on this machine around the switch.
    pub hooks: Hooks,
    /// `[services.<s>.route]`: the requests of a local target's edge that are this
    /// service's.
    #[serde(skip_serializing_if = "Route::is_any")]
    pub route: Route,
    /// `[services.<s>.warmup]`: traffic a verified candidate gets before the switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

/// Which requests reaching a local target's edge are a service's: those for one of its
/// `hosts` (none: any host) under one of its path prefixes (none: any path). With several
/// services on one edge, a request goes to the service that names its host before one that
/// names none, then to the longest matching prefix; two services that could tie are a
/// config error. The path is forwarded unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Host names, lowercase, without a port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes, without a trailing `/` (`/` itself is left out: it is any path).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

impl Route {
    /// Whether it answers every request (no hosts, no paths).
    pub fn is_any(&self) -> bool {
        self.hosts.is_empty() && self.paths.is_empty()
    }

    /// A host and path prefix that both `self` and `other` answer for with the same rank on
    /// the edge, so that neither would win: `None` when they cannot tie. `"*"` stands for
    /// any host, `"/"` for any path.
    pub fn tie(&self, other: &Route) -> Option<(String, String)> {
        let any_host = vec!["*".to_string()];
        let any_path = vec![String::new()];
        let hosts = |r: &Route| {
            if r.hosts.is_empty() {
                any_host.clone()
            } else {
                r.hosts.clone()
            }
        };
        let paths = |r: &Route| {
            if r.paths.is_empty() {
                any_path.clone()
            } else {
                r.paths.clone()
            }
        };
        let (other_hosts, other_paths) = (hosts(other), paths(other));
        let host = hosts(self).into_iter().find(|h| other_hosts.contains(h))?;
        let path = paths(self).into_iter().find(|p| other_paths.contains(p))?;
        Some((
            host,
            if path.is_empty() {
                "/".to_string()
            } else {
                path
            },
        ))
    }
}

/// How many warm-up requests a release sends when `requests` is not set.
pub const DEFAULT_WARMUP_REQUESTS: u32 = 100;
/// How many warm-up requests run at once when `concurrency` is not set.
pub const DEFAULT_WARMUP_CONCURRENCY: u32 = 4;
/// How long one warm-up request may take when `timeout` is not set.
pub const DEFAULT_WARMUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The most warm-up requests a release sends.
pub const MAX_WARMUP_REQUESTS: u32 = 100_000;
/// The most warm-up requests at once.
pub const MAX_WARMUP_CONCURRENCY: u32 = 256;

/// Warm-up traffic (see [`crate::warmup`]): `requests` GETs spread over `paths` in turn,
/// `concurrency` at a time, each within `timeout`; with `max_p99`, a slower p99 fails the
/// release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warmup {
    pub paths: Vec<String>,
    pub requests: u32,
    pub concurrency: u32,
    #[serde(
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_p99: Option<Duration>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

/// How long a hook may run when its `timeout` is not set.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a migrate command may run when its `timeout` is not set.
pub const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

/// A service's hooks: the one-off migrate command (see [`crate::migrate`]) and the runner
/// hooks (see [`crate::hook`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hooks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate: Option<Migrate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_switch: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_release: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Hook>,
}

impl Hooks {
    /// Each set runner hook with its key's name, in the order a release runs them.
    pub fn listed(&self) -> Vec<(&'static str, &Hook)> {
        [
            ("pre_switch", &self.pre_switch),
            ("post_release", &self.post_release),
            ("on_failure", &self.on_failure),
        ]
        .into_iter()
        .filter_map(|(name, hook)| hook.as_ref().map(|h| (name, h)))
        .collect()
    }
}

/// The migrate hook: a command run once per release in a one-off container (a task on ECS)
/// of the new image, with the service's env and secrets, before traffic moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migrate {
    /// The container's command (its `CMD`, run through the image's entrypoint, as ECS's
    /// command override is), not a shell line.
    pub command: Vec<String>,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

/// One hook: a shell command (`sh -c`, in the config's folder) and how long it may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub command: String,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
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
    /// ECS services behind an ALB listener, optionally behind CloudFront.
    Ecs(Box<EcsTarget>),
}

impl TargetKind {
    /// The kind's name, as the config's `kind` key spells it.
    pub fn name(&self) -> &'static str {
        match self {
            TargetKind::Local(_) => "local",
            TargetKind::Ecs(_) => "ecs",
        }
    }
}

impl Service {
    /// Whether `name` came from the service's `env_file`: its value is never printed.
    fn is_from_env_file(&self, name: &str) -> bool {
        self.env_file
            .as_ref()
            .is_some_and(|file| file.keys.iter().any(|k| k == name))
    }

    /// The env names whose values a printout hides: every one the service sets (shipit's own
    /// variables are not secret), or with `show_secrets` only those of the `env_file`.
    pub fn hidden_env_names(&self, show_secrets: bool) -> BTreeSet<String> {
        self.env
            .keys()
            .filter(|name| !crate::container_spec::is_reserved_env(name))
            .filter(|name| !show_secrets || self.is_from_env_file(name))
            .cloned()
            .collect()
    }

    /// The service as printed: env values replaced by [`REDACTED`], all of them, or with
    /// `show_secrets` only those of the `env_file`.
    pub fn redacted(&self, show_secrets: bool) -> Service {
        let mut shown = self.clone();
        for (name, value) in &mut shown.env {
            if !show_secrets || self.is_from_env_file(name) {
                *value = REDACTED.to_string();
            }
        }
        shown
    }
}

impl Config {
    /// The config as printed: every service [`Service::redacted`].
    pub fn redacted(&self, show_secrets: bool) -> Config {
        let mut shown = self.clone();
        for service in shown.services.values_mut() {
            *service = service.redacted(show_secrets);
        }
        shown
    }
}

/// Serializes a `Duration` as humantime text ("100ms", "30s"), the way configs spell them.
pub mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// The same for an optional duration (left out of the output when `None`).
    pub mod option {
        use std::time::Duration;

        pub fn serialize<S: serde::Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Where `${VAR}` and `SHIPIT_STATE_DIR` are looked up. Tests pass a map instead of touching
/// the process environment.
pub trait Env {
    /// The variable's value, or `None` when it is unset (or not valid Unicode).
    fn var(&self, name: &str) -> Option<String>;
}

/// The environment of this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Whether the config path was given (`-c`) or is the default `./shipit.toml`; only the hint
/// for a missing file differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Given,
    Default,
}

impl Config {
    /// Loads `path`, or `./shipit.toml` when it is `None`, with the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let shown = path.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
        let cwd = std::env::current_dir().map_err(|error| {
            ConfigError::new(shown, format!("cannot read the current folder: {error}"))
        })?;
        let lookup = if path.is_some() {
            Lookup::Given
        } else {
            Lookup::Default
        };
        load_file(shown, &ProcessEnv, &cwd, lookup)
    }

    /// Loads the config file at `path` (relative to `cwd`), looking variables up in `env`.
    pub fn load_with(path: &Path, env: &dyn Env, cwd: &Path) -> Result<Config, ConfigError> {
        load_file(path, env, cwd, Lookup::Given)
    }

    /// Parses config `text` as if read from `path`: errors name `path`, and relative paths in
    /// the text resolve against its folder (`path` itself is relative to `cwd`).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Env,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|error| syntax_error(path, text, &error))?;
        interpolate::table(&mut table, env, &KeyPath::root())
            .map_err(|problem| problem.into_error(path, text))?;
        let raw = raw::deserialize(table).map_err(|problem| problem.into_error(path, text))?;
        let absolute = path::normalize(&cwd.join(path));
        let origin = resolve::Origin {
            path: &absolute,
            env,
            cwd,
        };
        resolve::config(raw, &origin).map_err(|problem| problem.into_error(path, text))
    }

    /// The service called `name`; with `None`, the only service there is.
    pub fn service(&self, name: Option<&str>) -> Result<&Service, ConfigError> {
        let names = resolve::list(self.services.keys());
        let error = |message: String, hint: &str| {
            ConfigError::new(&self.path, message)
                .with_key("services")
                .with_hint(hint)
        };
        match name {
            Some(name) => self.services.get(name).ok_or_else(|| {
                if self.services.is_empty() {
                    error(
                        format!("no service named `{name}`: the config has no services"),
                        "add a [services.<name>] table",
                    )
                } else {
                    error(
                        format!("no service named `{name}`; expected one of: {names}"),
                        "pass one of these names with --service",
                    )
                }
            }),
            None => {
                let mut services = self.services.values();
                match (services.next(), services.next()) {
                    (Some(only), None) => Ok(only),
                    (None, _) => Err(error(
                        "no services are configured".to_string(),
                        "add a [services.<name>] table (`shipit init` writes an example)",
                    )),
                    (Some(_), Some(_)) => Err(error(
                        format!("several services are configured: {names}"),
                        "choose one with --service <name>",
                    )),
                }
            }
        }
    }

    /// The target called `name`; with `None`, `default_target`, or else the only target.
    pub fn target(&self, name: Option<&str>) -> Result<&Target, ConfigError> {
        let names = resolve::list(self.targets.keys());
        let error = |message: String, hint: &str| {
            ConfigError::new(&self.path, message)
                .with_key("targets")
                .with_hint(hint)
        };
        match name.or(self.default_target.as_deref()) {
            Some(name) => self.targets.get(name).ok_or_else(|| {
                error(
                    format!("no target named `{name}`; expected one of: {names}"),
                    "pass one of these names with --target",
                )
            }),
            None => {
                let mut targets = self.targets.values();
                match (targets.next(), targets.next()) {
                    (Some(only), None) => Ok(only),
                    _ => Err(error(
                        format!("several targets are configured and no default_target: {names}"),
                        "choose one with --target <name>, or set default_target in the config",
                    )),
                }
            }
        }
    }
}

fn load_file(
    path: &Path,
    env: &dyn Env,
    cwd: &Path,
    lookup: Lookup,
) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(cwd.join(path)).map_err(|error| match (error.kind(), lookup) {
            (std::io::ErrorKind::NotFound, Lookup::Default) => ConfigError::new(
                path,
                format!("no {DEFAULT_CONFIG_FILE} in {}", cwd.display()),
            )
            .with_hint("run `shipit init` to write one, or pass a config file with -c"),
            (std::io::ErrorKind::NotFound, Lookup::Given) => {
                ConfigError::new(path, "config file not found")
                    .with_hint("check the path given with -c")
            }
            _ => ConfigError::new(path, format!("cannot read config file: {error}")),
        })?;
    Config::parse(&text, path, env, cwd)
}

fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let config_error = ConfigError::new(path, format!("invalid TOML: {message}"));
    match error.span() {
        Some(span) => config_error.at_offset(text, span.start),
        None => config_error,
    }
}
