//! Pushing an image to a registry, and finding the credentials for it.
//!
//! The push itself knows nothing of AWS: it tags the local image as `<repository>:<tag>` and
//! has the Docker Engine push it with whatever [`Credentials`] it is given, so it works with any
//! registry (the tests push to a real local `docker-registry`). Credentials come from ECR's
//! GetAuthorizationToken when the repository is on an ECR host ([`is_ecr_host`],
//! [`ecr_credentials`]), and otherwise from the environment or the Docker config
//! ([`credentials_for`]), the way `docker push` finds them.
//!
//! The pushed image is named by its registry digest (`<repository>@sha256:…`), which the engine
//! reports at the end of the push: a task definition that runs it runs exactly these bytes,
//! whatever happens to the tag later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::event::{Event, Phase, Reporter};
use crate::platform::{ErrorKind, Image, PlatformError};

/// The user name for a registry that is not ECR; wins over the Docker config.
pub const REGISTRY_USERNAME_ENV: &str = "SHIPIT_REGISTRY_USERNAME";
/// The password (or token) that goes with [`REGISTRY_USERNAME_ENV`].
pub const REGISTRY_PASSWORD_ENV: &str = "SHIPIT_REGISTRY_PASSWORD";
/// The folder of the Docker config, as the docker CLI reads it (default `~/.docker`).
pub const DOCKER_CONFIG_ENV: &str = "DOCKER_CONFIG";

/// How long a push may go without a word from the engine before it is given up. A push of a
/// big layer over a slow link still reports progress every few seconds.
pub const DEFAULT_PUSH_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How often byte-level progress of a push is reported (layer events are reported at once).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Why credentials could not be had, or a push failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot get ECR credentials (GetAuthorizationToken): {detail}")]
    EcrAuthorization { detail: String },

    #[error("ECR answered GetAuthorizationToken without authorization data")]
    EcrNoData,

    #[error("the ECR authorization token for {endpoint} is not valid: {why}")]
    EcrToken { endpoint: String, why: String },

    #[error("cannot tag the image {image} as {target}: {message}")]
    Tag {
        image: String,
        target: String,
        message: String,
    },

    #[error(
        "the push of {target} to {registry} made no progress for {}s; last state: {last}",
        after.as_secs()
    )]
    Stalled {
        target: String,
        registry: String,
        after: Duration,
        last: String,
    },

    #[error("pushing {target} to the registry {registry} failed: {message}")]
    Push {
        target: String,
        registry: String,
        message: String,
        why: PushFailure,
    },

    #[error("the push of {target} to {registry} ended without a digest; last state: {last}")]
    NoDigest {
        target: String,
        registry: String,
        last: String,
    },
}

/// What a failed push's message says went wrong, which decides what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFailure {
    /// ECR refused its own token.
    EcrRefused,
    /// The registry refused the credentials given.
    CredentialsRefused,
    /// The registry wants credentials and none were found.
    NoCredentials,
    /// The engine could not reach the registry.
    Unreachable,
    Other,
}

impl RegistryError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RegistryError::EcrAuthorization { .. } => {
                "check the AWS credentials and region (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL) \
                 and that they allow ecr:GetAuthorizationToken"
                    .to_string()
            }
            RegistryError::EcrNoData => return None,
            RegistryError::EcrToken { .. } => {
                "this is ECR's answer, not shipit's: retry, and check the AWS endpoint".to_string()
            }
            RegistryError::Tag { .. } => {
                "check that the image exists on the engine (`docker image ls`)".to_string()
            }
            RegistryError::Stalled { registry, .. } => format!(
                "check that the Docker Engine reaches {registry} (network, proxy), then retry"
            ),
            RegistryError::Push {
                target,
                registry,
                why,
                ..
            } => match why {
                PushFailure::EcrRefused => {
                    "the ECR token was refused: check that the AWS credentials may push to this \
                     repository (ecr:InitiateLayerUpload, ecr:PutImage) and that the repository \
                     exists"
                        .to_string()
                }
                PushFailure::CredentialsRefused => format!(
                    "{registry} refused the credentials: check \
                     {REGISTRY_USERNAME_ENV}/{REGISTRY_PASSWORD_ENV} or the `auths` entry of \
                     {registry} in the Docker config (`docker login {registry}`), and that the \
                     user may push to this repository"
                ),
                PushFailure::NoCredentials => format!(
                    "{registry} wants credentials and none were found: set \
                     {REGISTRY_USERNAME_ENV} and {REGISTRY_PASSWORD_ENV}, or run `docker login \
                     {registry}`"
                ),
                PushFailure::Unreachable => format!(
                    "the Docker Engine could not reach {registry}: check the repository's host \
                     and port, and that the registry runs (a plain-HTTP registry must be on \
                     127.0.0.0/8 or in the engine's insecure-registries)"
                ),
                PushFailure::Other => {
                    format!("retry; `docker push {target}` shows the registry's full answer")
                }
            },
            RegistryError::NoDigest { .. } => {
                "retry; if it persists, push by hand with `docker push` to see the registry's \
                 answer"
                    .to_string()
            }
        })
    }
}

/// A registry's failure as the Push phase reports it.
impl From<RegistryError> for PlatformError {
    fn from(e: RegistryError) -> PlatformError {
        let error = PlatformError::new(ErrorKind::Platform, e.to_string());
        match e.hint() {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }
}

/// What the engine sends a registry to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The registry, as the credentials name it (`https://<acct>.dkr.ecr.<region>.amazonaws.com`,
    /// `registry.example.com`).
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Credentials for an ECR registry: GetAuthorizationToken, whose token is base64
/// `AWS:<password>`, with the answer's proxy endpoint as the server.
pub async fn ecr_credentials(ecr: &aws_sdk_ecr::Client) -> Result<Credentials, RegistryError> {
    let out = ecr.get_authorization_token().send().await.map_err(|e| {
        RegistryError::EcrAuthorization {
            detail: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
        }
    })?;
    let data = out
        .authorization_data()
        .first()
        .ok_or(RegistryError::EcrNoData)?;
    let token = data.authorization_token().unwrap_or_default();
    let endpoint = data.proxy_endpoint().unwrap_or_default();
    decode_ecr_token(token, endpoint)
}

/// Turns an ECR authorization token (base64 of `AWS:<password>`) into credentials for
/// `proxy_endpoint`.
pub fn decode_ecr_token(token: &str, proxy_endpoint: &str) -> Result<Credentials, RegistryError> {
    let bad = |why: &str| RegistryError::EcrToken {
        endpoint: proxy_endpoint.to_string(),
        why: why.to_string(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|e| bad(&format!("not base64 ({e})")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| bad("expected <user>:<password>"))?;
    if username.is_empty() || password.is_empty() {
        return Err(bad("the user or the password is empty"));
    }
    Ok(Credentials {
        server: proxy_endpoint.to_string(),
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Whether `host` is an ECR private registry: `<account>.dkr.ecr.<region>.amazonaws.com`
/// (also `dkr.ecr-fips` and the `.amazonaws.com.cn` partition).
pub fn is_ecr_host(host: &str) -> bool {
    let host = host.split(':').next().unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    let suffix_ok = matches!(
        labels.as_slice(),
        [_, _, _, _, "amazonaws", "com"] | [_, _, _, _, "amazonaws", "com", "cn"]
    );
    suffix_ok
        && labels[0].len() == 12
        && labels[0].bytes().all(|b| b.is_ascii_digit())
        && labels[1] == "dkr"
        && (labels[2] == "ecr" || labels[2] == "ecr-fips")
        && !labels[3].is_empty()
}

/// The registry host of a repository reference (`127.0.0.1:5000/app` → `127.0.0.1:5000`), or
/// `None` for a Docker Hub name (`library/app`, `app`), as the docker CLI tells them apart: the
/// first part is a host when it has a `.` or a `:`, or is `localhost`.
pub fn registry_host(repository: &str) -> Option<&str> {
    let (first, rest) = repository.split_once('/')?;
    (!rest.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then_some(first)
}

/// Where credentials for a registry were looked for, and what was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub credentials: Option<Credentials>,
    /// Things the user should know: a credential helper that was skipped, a config that could
    /// not be read.
    pub notes: Vec<String>,
}

/// Credentials for a registry that is not ECR: [`REGISTRY_USERNAME_ENV`] and
/// [`REGISTRY_PASSWORD_ENV`] when both are set, else the Docker config's `auths` entry for the
/// host (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`). Credential helpers are
/// not run; [`lookup`] says when one was skipped.
pub fn credentials_for(registry_host: &str) -> Option<Credentials> {
    lookup(registry_host).credentials
}

/// Like [`credentials_for`], with notes on what was skipped or unreadable.
pub fn lookup(registry_host: &str) -> Lookup {
    if let (Ok(username), Ok(password)) = (
        std::env::var(REGISTRY_USERNAME_ENV),
        std::env::var(REGISTRY_PASSWORD_ENV),
    ) && !username.is_empty()
    {
        return Lookup {
            credentials: Some(Credentials {
                server: registry_host.to_string(),
                username,
                password,
            }),
            notes: Vec::new(),
        };
    }
    let Some(path) = docker_config_path() else {
        return Lookup::default();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => from_docker_config(&text, &path, registry_host),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lookup::default(),
        Err(e) => Lookup {
            credentials: None,
            notes: vec![format!(
                "cannot read the Docker config {}: {e}; pushing without credentials",
                path.display()
            )],
        },
    }
}

fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os(DOCKER_CONFIG_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json")),
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Reads the credentials for `host` out of a Docker config's text (`path` is for messages).
fn from_docker_config(text: &str, path: &Path, host: &str) -> Lookup {
    let mut lookup = Lookup::default();
    let config: DockerConfig = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            lookup.notes.push(format!(
                "the Docker config {} is not valid JSON ({e}); pushing to {host} without credentials",
                path.display()
            ));
            return lookup;
        }
    };
    let wanted = normalize_registry(host);
    if let Some(helper) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_registry(k) == wanted)
        .map(|(_, v)| v)
    {
        lookup.notes.push(format!(
            "{} names the credential helper docker-credential-{helper} for {host}; shipit does not \
             run credential helpers: set {REGISTRY_USERNAME_ENV} and {REGISTRY_PASSWORD_ENV} instead",
            path.display()
        ));
    }
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| normalize_registry(k) == wanted)
        .map(|(_, v)| v);
    if let Some(entry) = entry {
        match decode_auth_entry(entry) {
            Ok(Some((username, password))) => {
                lookup.credentials = Some(Credentials {
                    server: host.to_string(),
                    username,
                    password,
                });
            }
            Ok(None) if entry.identity_token.is_some() => lookup.notes.push(format!(
                "{} holds an identity token for {host}; shipit does not use identity tokens: set \
                 {REGISTRY_USERNAME_ENV} and {REGISTRY_PASSWORD_ENV} instead",
                path.display()
            )),
            // An empty entry: `docker login` with a credential store writes these.
            Ok(None) => {}
            Err(why) => lookup.notes.push(format!(
                "the auth of {host} in {} is not valid ({why}); pushing without credentials",
                path.display()
            )),
        }
    }
    if lookup.credentials.is_none()
        && let Some(store) = &config.creds_store
    {
        lookup.notes.push(format!(
            "{} keeps credentials in the store docker-credential-{store}; shipit does not run \
             credential helpers: set {REGISTRY_USERNAME_ENV} and {REGISTRY_PASSWORD_ENV} for {host}",
            path.display()
        ));
    }
    lookup
}

/// `auth` (base64 `user:password`), or `username` and `password`; `None` when the entry has
/// neither.
fn decode_auth_entry(entry: &AuthEntry) -> Result<Option<(String, String)>, String> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8".to_string())?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| "auth is not <user>:<password>".to_string())?;
        return Ok(Some((user.to_string(), password.to_string())));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u.clone(), p.clone()))),
        _ => Ok(None),
    }
}

/// A registry key of the Docker config reduced to its host: `https://host/v1/` → `host`, and
/// Docker Hub's many names → `docker.io`.
fn normalize_registry(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Tags the local `image` as `<repository>:<tag>` and pushes it with `creds`, reporting
/// progress per layer. Returns the image named by its registry digest:
/// `<repository>@sha256:…`, with the digest as its id.
pub async fn push(
    docker: &Docker,
    image: &Image,
    repository: &str,
    tag: &str,
    creds: Option<&Credentials>,
    reporter: &Reporter,
) -> Result<Image, RegistryError> {
    let target = format!("{repository}:{tag}");
    let registry = registry_host(repository).unwrap_or("docker.io");
    let source = if image.id.starts_with("sha256:") {
        image.id.as_str()
    } else {
        image.reference.as_str()
    };
    docker
        .tag_image(
            source,
            Some(TagImageOptions {
                repo: Some(repository.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(|e| RegistryError::Tag {
            image: image.reference.clone(),
            target: target.clone(),
            message: engine_message(&e),
        })?;
    let layers = docker
        .inspect_image(source)
        .await
        .ok()
        .and_then(|i| i.root_fs)
        .and_then(|r| r.layers)
        .map(|l| l.len())
        .unwrap_or(0);
    reporter.progress(
        Phase::Push,
        format!(
            "pushing {target} ({layers} layer{}) {}",
            if layers == 1 { "" } else { "s" },
            match creds {
                Some(c) => format!("as {}", c.username),
                None => "without credentials".to_string(),
            }
        ),
    );
    let credentials = creds.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(c.server.clone()),
        ..Default::default()
    });
    let mut stream = docker.push_image(
        repository,
        Some(PushImageOptions {
            tag: Some(tag.to_string()),
            platform: None,
        }),
        credentials,
    );
    let mut progress = PushProgress::new(layers);
    loop {
        let next = tokio::time::timeout(DEFAULT_PUSH_STALL_TIMEOUT, stream.next()).await;
        let item = match next {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                return Err(RegistryError::Stalled {
                    target,
                    registry: registry.to_string(),
                    after: DEFAULT_PUSH_STALL_TIMEOUT,
                    last: progress.describe(),
                });
            }
        };
        let info = item.map_err(|e| push_error(&e, &target, registry, creds.is_some()))?;
        let status = info.status.unwrap_or_default();
        let detail = info.progress_detail.unwrap_or_default();
        if let Some(message) = progress.observe(
            &status,
            detail.current.unwrap_or(0),
            detail.total.unwrap_or(0),
        ) {
            reporter.progress(Phase::Push, format!("{target}: {message}"));
            if progress.layers > 0 {
                reporter.emit(Event::Count {
                    phase: Phase::Push,
                    done: progress.done as u64,
                    total: progress.layers as u64,
                });
            }
        }
    }
    let Some(digest) = progress.digest.clone() else {
        return Err(RegistryError::NoDigest {
            target,
            registry: registry.to_string(),
            last: progress.describe(),
        });
    };
    reporter.progress(Phase::Push, format!("pushed {repository}@{digest}"));
    Ok(Image {
        reference: format!("{repository}@{digest}"),
        id: digest,
        reused: image.reused,
    })
}

/// What the engine's push stream said so far.
#[derive(Debug)]
struct PushProgress {
    layers: usize,
    /// Layers sent or found already in the registry.
    done: usize,
    last_status: String,
    last_report: Option<Instant>,
    digest: Option<String>,
}

impl PushProgress {
    fn new(layers: usize) -> Self {
        PushProgress {
            layers,
            done: 0,
            last_status: "nothing received yet".to_string(),
            last_report: None,
            digest: None,
        }
    }

    /// Takes one message of the stream; returns a line worth reporting, if any.
    fn observe(&mut self, status: &str, current: i64, total: i64) -> Option<String> {
        if status.is_empty() {
            return None;
        }
        self.last_status = status.to_string();
        if let Some(digest) = parse_digest(status) {
            self.digest = Some(digest.to_string());
            return None;
        }
        let of = |done: usize, layers: usize| {
            if layers > 0 {
                format!("{done} of {layers}")
            } else {
                done.to_string()
            }
        };
        match status {
            "Pushed" => {
                self.done += 1;
                Some(format!("layer {} pushed", of(self.done, self.layers)))
            }
            "Layer already exists" => {
                self.done += 1;
                Some(format!(
                    "layer {} already in the registry",
                    of(self.done, self.layers)
                ))
            }
            s if s.starts_with("Mounted from") => {
                self.done += 1;
                Some(format!(
                    "layer {} mounted from another repository",
                    of(self.done, self.layers)
                ))
            }
            "Pushing" if total > 0 => {
                let due = self
                    .last_report
                    .is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
                if !due {
                    return None;
                }
                self.last_report = Some(Instant::now());
                Some(format!(
                    "layer {}: {} of {}",
                    of(self.done + 1, self.layers),
                    bytes(current),
                    bytes(total)
                ))
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} layer(s) done of {}, last status \"{}\"",
            self.done, self.layers, self.last_status
        )
    }
}

/// The digest in the push's final status, `<tag>: digest: sha256:<hex> size: <n>`.
fn parse_digest(status: &str) -> Option<&str> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A failed push, and what went wrong by the engine's message: an auth failure (what to
/// check depends on the registry and the credentials given), or a connection failure.
fn push_error(
    e: &bollard::errors::Error,
    target: &str,
    registry: &str,
    had_credentials: bool,
) -> RegistryError {
    let message = engine_message(e);
    let lower = message.to_ascii_lowercase();
    let auth = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "forbidden",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let unreachable = [
        "connection refused",
        "no such host",
        "i/o timeout",
        "server gave http response",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let why = if auth && is_ecr_host(registry) {
        PushFailure::EcrRefused
    } else if auth && had_credentials {
        PushFailure::CredentialsRefused
    } else if auth {
        PushFailure::NoCredentials
    } else if unreachable {
        PushFailure::Unreachable
    } else {
        PushFailure::Other
    };
    RegistryError::Push {
        target: target.to_string(),
        registry: registry.to_string(),
        message,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn ecr_token_decodes_to_aws_user_and_password_for_the_endpoint() {
        let creds = decode_ecr_token(
            &b64("AWS:s3cr3t:with:colons"),
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        )
        .unwrap();
        assert_eq!(creds.username, "AWS");
        assert_eq!(creds.password, "s3cr3t:with:colons");
        assert_eq!(
            creds.server,
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        );
        assert!(!format!("{creds:?}").contains("s3cr3t"), "{creds:?}");
    }

    #[test]
    fn broken_ecr_tokens_are_refused_naming_the_endpoint() {
        for token in ["%%%", &b64("no-colon"), &b64("AWS:")] {
            let err = decode_ecr_token(token, "https://1.dkr.ecr.x.amazonaws.com").unwrap_err();
            assert!(
                err.to_string().contains("1.dkr.ecr.x.amazonaws.com"),
                "{err}"
            );
        }
    }

    #[test]
    fn ecr_hosts_are_told_from_other_registries() {
        for host in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
        ] {
            assert!(is_ecr_host(host), "{host}");
        }
        for host in [
            "127.0.0.1:5000",
            "ghcr.io",
            "public.ecr.aws",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
            "123456789012.ecr.us-east-1.amazonaws.com",
        ] {
            assert!(!is_ecr_host(host), "{host}");
        }
    }

    #[test]
    fn registry_host_is_the_first_part_when_it_looks_like_a_host() {
        assert_eq!(registry_host("127.0.0.1:5000/app"), Some("127.0.0.1:5000"));
        assert_eq!(
            registry_host("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"),
            Some("123456789012.dkr.ecr.us-east-1.amazonaws.com")
        );
        assert_eq!(registry_host("localhost/app"), Some("localhost"));
        assert_eq!(registry_host("library/app"), None);
        assert_eq!(registry_host("app"), None);
    }

    fn parse(text: &str, host: &str) -> Lookup {
        from_docker_config(text, Path::new("/home/me/.docker/config.json"), host)
    }

    #[test]
    fn docker_config_auth_is_base64_user_colon_password_under_any_spelling_of_the_host() {
        let text = format!(
            r#"{{"auths": {{
                "https://registry.example.com/v1/": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"username": "ci", "password": "pw"}}
            }}}}"#,
            b64("deploy:p:w"),
            b64("hubuser:hubpw")
        );
        let found = parse(&text, "registry.example.com").credentials.unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("deploy", "p:w")
        );
        assert_eq!(found.server, "registry.example.com");
        let hub = parse(&text, "docker.io").credentials.unwrap();
        assert_eq!(hub.username, "hubuser");
        let plain = parse(&text, "127.0.0.1:5000").credentials.unwrap();
        assert_eq!(
            (plain.username.as_str(), plain.password.as_str()),
            ("ci", "pw")
        );
        assert_eq!(parse(&text, "ghcr.io"), Lookup::default());
    }

    #[test]
    fn credential_helpers_are_skipped_with_a_note() {
        let text = r#"{"auths": {"ghcr.io": {}}, "credsStore": "desktop",
                       "credHelpers": {"gcr.io": "gcloud"}}"#;
        let store = parse(text, "ghcr.io");
        assert_eq!(store.credentials, None);
        assert!(
            store
                .notes
                .iter()
                .any(|n| n.contains("docker-credential-desktop")
                    && n.contains(REGISTRY_USERNAME_ENV)),
            "{:?}",
            store.notes
        );
        let helper = parse(text, "gcr.io");
        assert!(
            helper
                .notes
                .iter()
                .any(|n| n.contains("docker-credential-gcloud")),
            "{:?}",
            helper.notes
        );
    }

    #[test]
    fn broken_docker_config_is_a_note_naming_the_file() {
        let lookup = parse("{not json", "ghcr.io");
        assert_eq!(lookup.credentials, None);
        assert!(
            lookup.notes[0].contains("/home/me/.docker/config.json"),
            "{:?}",
            lookup.notes
        );
        let bad_auth = parse(r#"{"auths": {"ghcr.io": {"auth": "%%"}}}"#, "ghcr.io");
        assert_eq!(bad_auth.credentials, None);
        assert!(
            bad_auth.notes[0].contains("not base64"),
            "{:?}",
            bad_auth.notes
        );
    }

    #[test]
    fn push_progress_counts_layers_and_finds_the_digest() {
        let mut p = PushProgress::new(2);
        assert_eq!(
            p.observe("The push refers to repository [127.0.0.1:5000/x]", 0, 0),
            None
        );
        assert_eq!(p.observe("Preparing", 0, 0), None);
        assert_eq!(
            p.observe("Pushing", 512, 2048).as_deref(),
            Some("layer 1 of 2: 512 B of 2.0 KiB")
        );
        // Byte progress is rate-limited; layer events are not.
        assert_eq!(p.observe("Pushing", 1024, 2048), None);
        assert_eq!(
            p.observe("Pushed", 0, 0).as_deref(),
            Some("layer 1 of 2 pushed")
        );
        assert_eq!(
            p.observe("Layer already exists", 0, 0).as_deref(),
            Some("layer 2 of 2 already in the registry")
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            p.observe(&format!("v1: digest: {digest} size: 528"), 0, 0),
            None
        );
        assert_eq!(p.digest.as_deref(), Some(digest.as_str()));
    }

    #[test]
    fn digest_must_be_a_full_sha256() {
        assert_eq!(parse_digest("v1: digest: sha256:abc size: 1"), None);
        assert_eq!(parse_digest("Pushed"), None);
    }

    #[test]
    fn auth_failures_hint_at_credentials() {
        let e = bollard::errors::Error::DockerStreamError {
            error: "unauthorized: authentication required".into(),
        };
        let without = push_error(&e, "127.0.0.1:5000/x:v1", "127.0.0.1:5000", false);
        assert!(
            without.to_string().contains("127.0.0.1:5000/x:v1"),
            "{without}"
        );
        let hint = without.hint().unwrap();
        assert!(hint.contains(REGISTRY_USERNAME_ENV), "{hint}");
        assert!(hint.contains("docker login 127.0.0.1:5000"), "{hint}");
        let with = push_error(&e, "r/x:v1", "127.0.0.1:5000", true);
        assert!(with.hint().unwrap().contains("refused the credentials"));
        let refused = bollard::errors::Error::DockerStreamError {
            error: "dial tcp 127.0.0.1:1: connect: connection refused".into(),
        };
        let unreachable = push_error(&refused, "r/x:v1", "127.0.0.1:1", false);
        assert!(
            unreachable
                .hint()
                .unwrap()
                .contains("could not reach 127.0.0.1:1")
        );
    }
}
