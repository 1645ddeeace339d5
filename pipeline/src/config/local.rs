//! The `kind = "local"` target: one Docker host, with shipit's edge in front of the two slots.
//! Its `[targets.<name>.edge]` table is `edge.rs`'s.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::edge::is_host_name;
use super::error::Problem;
use super::locate::KeyPath;
use super::raw::RawTarget;
use super::raw::present;
use super::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN, DEFAULT_STOP_TIMEOUT, EdgeSettings, duration_text,
};
use crate::shift::{DEFAULT_MAX_ERROR_RATE, DEFAULT_SHIFT, ShiftStrategy};

/// How many images of each service a local target keeps when `keep_images` is not set.
pub const DEFAULT_KEEP_IMAGES: u32 = 5;
/// The fewest images `keep_images` may keep: the live release's and the one `shipit rollback`
/// brings back.
pub const MIN_KEEP_IMAGES: u32 = 2;

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
    /// How traffic moves to a verified candidate.
    pub shift: ShiftStrategy,
    /// The largest share of 5xx answers the candidate may give during a bake, 0 to 1.
    pub max_error_rate: f64,
    /// A host name whose requests reach a staged candidate (`release --no-promote`).
    pub preview_host: Option<String>,
    /// How many images of each service stay on the engine after a successful release: the
    /// newest ones used, and always the live release's and the rollback's.
    pub keep_images: u32,
    /// The edge's TLS, timeouts and limits (`[targets.<name>.edge]`); boxed, as the
    /// largest part of a target.
    pub edge: Box<EdgeSettings>,
}

/// The local target at `path`, from its raw keys (the ecs keys were refused before).
pub(crate) fn target(raw: RawTarget, dir: &Path, path: &KeyPath) -> Result<LocalTarget, Problem> {
    Ok(LocalTarget {
        listen: raw.listen.map_or_else(default_listen, |l| l.0),
        drain_timeout: raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
        stop_timeout: raw.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0),
        shift: raw.shift.map_or(DEFAULT_SHIFT, |s| s.0),
        max_error_rate: raw.max_error_rate.map_or(DEFAULT_MAX_ERROR_RATE, |f| f.0),
        preview_host: preview_host(raw.preview_host, &path.key("preview_host"))?,
        keep_images: keep_images(raw.keep_images.map(|c| c.0), &path.key("keep_images"))?,
        edge: Box::new(super::edge::settings(
            raw.edge,
            raw.listen.map_or_else(default_listen, |l| l.0),
            dir,
            &path.key("edge"),
        )?),
    })
}

/// Where the edge listens when the target does not say: [`DEFAULT_LISTEN`].
pub(crate) fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .expect("DEFAULT_LISTEN is a valid socket address")
}

/// A host name the edge answers a staged candidate on: letters, digits, `-` and `.`, without
/// a scheme, port or path (the edge ignores the port of a Host header).
fn preview_host(value: Option<String>, path: &KeyPath) -> Result<Option<String>, Problem> {
    let Some(host) = present(value) else {
        return Ok(None);
    };
    let host = host.trim().to_ascii_lowercase();
    if is_host_name(&host) {
        return Ok(Some(host));
    }
    Err(Problem::value(
        path.clone(),
        format!("invalid preview host {host:?}: expected a host name like \"preview.example.com\""),
    )
    .with_hint("write the host name alone, without http://, a port or a path"))
}

/// `keep_images`: at least [`MIN_KEEP_IMAGES`], so the live release and the one a rollback
/// brings back both keep their images.
fn keep_images(value: Option<u32>, path: &KeyPath) -> Result<u32, Problem> {
    match value {
        None => Ok(DEFAULT_KEEP_IMAGES),
        Some(n) if n >= MIN_KEEP_IMAGES => Ok(n),
        Some(n) => Err(Problem::value(
            path.clone(),
            format!(
                "keep_images = {n} is too few: expected a whole number of at least {MIN_KEEP_IMAGES} (the live release's image and the rollback's)"
            ),
        )
        .with_hint(format!(
            "leave it out to keep {DEFAULT_KEEP_IMAGES}, or set {MIN_KEEP_IMAGES} or more"
        ))),
    }
}
