//! The `[targets.<name>.edge]` table of a local target: the edge's TLS, timeouts and limits.
//!
//! Every default is the edge's own constant (`shipit_edge::DEFAULT_*`), so a config without
//! the table runs the edge exactly as `shipit edge run` without a config does. Certificate
//! and key paths are resolved against the config file's folder and must name files; whether
//! they hold a valid certificate and key is the edge's check, when it starts or reloads.
//! `max_request_body` is a size with a binary unit ("512KiB", "10MiB", "1GiB", or "100B";
//! `size.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::error::Problem;
use super::locate::KeyPath;
use super::path::normalize;
use super::raw::{RawCertificate, RawEdgeSettings};
use super::{Config, ConfigError, TargetKind, duration_text};

pub use shipit_edge::{
    DEFAULT_BODY_IDLE_TIMEOUT as DEFAULT_EDGE_BODY_IDLE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT as DEFAULT_EDGE_CONNECT_TIMEOUT,
    DEFAULT_H2_MAX_CONCURRENT_STREAMS as DEFAULT_EDGE_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_H2_MAX_HEADER_LIST_SIZE as DEFAULT_EDGE_H2_MAX_HEADER_LIST_SIZE,
    DEFAULT_H2_MAX_RESETS_PER_SECOND as DEFAULT_EDGE_H2_MAX_RESETS_PER_SECOND,
    DEFAULT_IDLE_TIMEOUT as DEFAULT_EDGE_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS as DEFAULT_EDGE_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP as DEFAULT_EDGE_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_HEADER_BYTES as DEFAULT_EDGE_MAX_HEADER_SIZE,
    DEFAULT_MAX_HEADERS as DEFAULT_EDGE_MAX_HEADERS,
    DEFAULT_MAX_REQUEST_BODY as DEFAULT_EDGE_MAX_REQUEST_BODY,
    DEFAULT_RESPONSE_HEADER_TIMEOUT as DEFAULT_EDGE_RESPONSE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT as DEFAULT_EDGE_WRITE_TIMEOUT,
    HEADER_READ_TIMEOUT as DEFAULT_EDGE_HEADER_READ_TIMEOUT,
    MAX_HEADERS_LIMIT as EDGE_MAX_HEADERS_LIMIT, MAX_THREADS as EDGE_MAX_THREADS,
};

/// The largest `max_header_size` the edge takes: a head is read whole before it is sent.
pub const EDGE_MAX_HEADER_SIZE_LIMIT: u64 = 1 << 20;
/// The smallest `max_header_size`: smaller would refuse ordinary browser requests.
pub const EDGE_MIN_HEADER_SIZE: u64 = 1 << 10;

/// A target's edge, as the config sets it: where it keeps its state and how it runs.
#[derive(Debug, Clone)]
pub struct TargetEdge {
    /// The target's name.
    pub target: String,
    /// The edge's folder under the state directory.
    pub dir: PathBuf,
    /// Where it listens for the service's traffic.
    pub listen: SocketAddr,
    /// The target's `drain_timeout`, the edge's shutdown grace.
    pub drain_timeout: Duration,
    pub settings: EdgeSettings,
}

impl Config {
    /// The edge of target `name` (the default target with `None`). Only a kind whose traffic
    /// goes through shipit's edge has one.
    pub fn edge(&self, name: Option<&str>) -> Result<TargetEdge, ConfigError> {
        let target = self.target(name)?;
        match &target.kind {
            TargetKind::Local(local) => Ok(TargetEdge {
                target: target.name.clone(),
                dir: crate::state_dir::edge_dir(&self.state_dir, &target.name),
                listen: local.listen,
                drain_timeout: local.drain_timeout,
                settings: (*local.edge).clone(),
            }),
            other => Err(ConfigError::new(
                &self.path,
                format!(
                    "target `{}` is an {} target: it has no edge",
                    target.name,
                    other.name()
                ),
            )
            .with_key(format!("targets.{}", target.name))
            .with_hint("the edge runs for local targets; pass --target with a local one")),
        }
    }
}

/// The edge of a local target, as the config sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeSettings {
    /// Where the edge terminates TLS; `None`: no TLS.
    pub tls_listen: Option<SocketAddr>,
    /// The certificates TLS serves, chosen by the client's SNI name.
    pub certificates: Vec<Certificate>,
    /// How long a client may take to send a request head (also how long a keep-alive
    /// connection may wait for its next request).
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// How long a client connection may go without a request before it is closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// How long a slot may take to accept a connection (then 504).
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// How long a slot may take to start its answer once it has the request (then 504).
    #[serde(with = "duration_text")]
    pub response_timeout: Duration,
    /// The largest request body forwarded, in bytes (larger: 413).
    pub max_request_body: u64,
    /// How long a request body may go without a byte (then 408).
    #[serde(with = "duration_text")]
    pub body_idle_timeout: Duration,
    /// How long a client may take in nothing of an answer before its connection closes.
    #[serde(with = "duration_text")]
    pub write_timeout: Duration,
    /// The largest request head, in bytes (larger: 431).
    pub max_header_size: u64,
    /// The most header lines a request may have (more: 431).
    pub max_headers: u32,
    /// Client connections open at once (more: 503 and closed).
    pub max_connections: u32,
    /// Client connections open at once from one IP address (IPv6: one /64).
    pub max_connections_per_ip: u32,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// The largest decoded HTTP/2 header list, in bytes.
    pub h2_max_header_list_size: u64,
    /// HTTP/2 stream resets per second a connection may cause before it gets GOAWAY.
    pub h2_max_resets_per_second: u32,
    /// Threads that serve client connections, each with an event loop of its own;
    /// `None`: one per core of the machine the edge runs on.
    pub threads: Option<u32>,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            tls_listen: None,
            certificates: Vec::new(),
            header_read_timeout: DEFAULT_EDGE_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_EDGE_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_EDGE_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_EDGE_RESPONSE_TIMEOUT,
            max_request_body: DEFAULT_EDGE_MAX_REQUEST_BODY,
            body_idle_timeout: DEFAULT_EDGE_BODY_IDLE_TIMEOUT,
            write_timeout: DEFAULT_EDGE_WRITE_TIMEOUT,
            max_header_size: DEFAULT_EDGE_MAX_HEADER_SIZE as u64,
            max_headers: DEFAULT_EDGE_MAX_HEADERS as u32,
            max_connections: DEFAULT_EDGE_MAX_CONNECTIONS as u32,
            max_connections_per_ip: DEFAULT_EDGE_MAX_CONNECTIONS_PER_IP as u32,
            h2_max_concurrent_streams: DEFAULT_EDGE_H2_MAX_CONCURRENT_STREAMS,
            h2_max_header_list_size: u64::from(DEFAULT_EDGE_H2_MAX_HEADER_LIST_SIZE),
            h2_max_resets_per_second: DEFAULT_EDGE_H2_MAX_RESETS_PER_SECOND,
            threads: None,
        }
    }
}

/// One certificate chain and its key, for one host name or as the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Certificate {
    /// The host name it serves (`*.example.com`: one label of wildcard); `None`: the
    /// default, for clients whose name matches no other certificate.
    pub host: Option<String>,
    /// Absolute path of the PEM chain, leaf first.
    pub cert: PathBuf,
    /// Absolute path of the PEM private key.
    pub key: PathBuf,
}

impl EdgeSettings {
    /// The edge's settings: these timeouts and limits, `drain_timeout` (the target's) as
    /// the grace a stopping or upgraded edge gives its connections, and TLS when on.
    pub fn edge(&self, drain_timeout: Duration) -> shipit_edge::Settings {
        shipit_edge::Settings {
            tuning: shipit_edge::Tuning {
                connect_timeout: self.connect_timeout,
                shutdown_grace: drain_timeout,
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                response_header_timeout: self.response_timeout,
                max_request_body: Some(self.max_request_body),
                body_idle_timeout: self.body_idle_timeout,
                write_timeout: self.write_timeout,
                max_header_bytes: self.max_header_size as usize,
                max_headers: self.max_headers as usize,
                max_connections: self.max_connections as usize,
                max_connections_per_ip: self.max_connections_per_ip as usize,
                h2_max_concurrent_streams: self.h2_max_concurrent_streams,
                h2_max_header_list_size: u32::try_from(self.h2_max_header_list_size)
                    .unwrap_or(u32::MAX),
                h2_max_resets_per_second: self.h2_max_resets_per_second,
                threads: self
                    .threads
                    .map_or_else(shipit_edge::workers::per_core, |n| n as usize),
                ..shipit_edge::Tuning::default()
            },
            tls: self.tls_listen.map(|listen| shipit_edge::TlsOptions {
                listen,
                certificates: self.certificate_files(),
            }),
        }
    }

    /// The certificates as the edge reads them.
    pub fn certificate_files(&self) -> Vec<shipit_edge::CertificateFiles> {
        self.certificates
            .iter()
            .map(|c| shipit_edge::CertificateFiles {
                hosts: c.host.iter().cloned().collect(),
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect()
    }
}

/// Resolves the `edge` table of a local target listening on `listen`.
pub(crate) fn settings(
    raw: Option<RawEdgeSettings>,
    listen: SocketAddr,
    dir: &Path,
    path: &KeyPath,
) -> Result<EdgeSettings, Problem> {
    let Some(raw) = raw else {
        return Ok(EdgeSettings::default());
    };
    let defaults = EdgeSettings::default();
    let duration = |value: Option<super::raw::DurationValue>, default: Duration, key: &str| {
        let duration = value.map_or(default, |d| d.0);
        if duration.is_zero() {
            return Err(Problem::value(
                path.key(key),
                "invalid duration 0: expected more than zero",
            )
            .with_hint(format!(
                "leave `{key}` out for the default, {}",
                humantime::format_duration(default)
            )));
        }
        Ok(duration)
    };
    let header_read_timeout = duration(
        raw.header_read_timeout,
        defaults.header_read_timeout,
        "header_read_timeout",
    )?;
    let idle_timeout = duration(raw.idle_timeout, defaults.idle_timeout, "idle_timeout")?;
    let connect_timeout = duration(
        raw.connect_timeout,
        defaults.connect_timeout,
        "connect_timeout",
    )?;
    let response_timeout = duration(
        raw.response_timeout,
        defaults.response_timeout,
        "response_timeout",
    )?;
    let body_idle_timeout = duration(
        raw.body_idle_timeout,
        defaults.body_idle_timeout,
        "body_idle_timeout",
    )?;
    let write_timeout = duration(raw.write_timeout, defaults.write_timeout, "write_timeout")?;
    let max_header_size = raw
        .max_header_size
        .map_or(defaults.max_header_size, |size| size.0);
    if !(EDGE_MIN_HEADER_SIZE..=EDGE_MAX_HEADER_SIZE_LIMIT).contains(&max_header_size) {
        return Err(Problem::value(
            path.key("max_header_size"),
            format!("invalid max_header_size {max_header_size} bytes: expected from 1KiB to 1MiB"),
        )
        .with_hint("leave `max_header_size` out for the default, 64KiB"));
    }
    let threads = raw.threads.map(|n| n.0);
    if let Some(threads) = threads
        && threads as usize > EDGE_MAX_THREADS
    {
        return Err(Problem::value(
            path.key("threads"),
            format!("invalid threads {threads}: expected at most {EDGE_MAX_THREADS}"),
        )
        .with_hint("leave `threads` out for one per core"));
    }
    let max_headers = raw.max_headers.map_or(defaults.max_headers, |n| n.0);
    if max_headers as usize > EDGE_MAX_HEADERS_LIMIT {
        return Err(Problem::value(
            path.key("max_headers"),
            format!("invalid max_headers {max_headers}: expected at most {EDGE_MAX_HEADERS_LIMIT}"),
        )
        .with_hint(format!(
            "leave `max_headers` out for the default, {}",
            defaults.max_headers
        )));
    }
    let h2_max_header_list_size = raw
        .h2_max_header_list_size
        .map_or(defaults.h2_max_header_list_size, |size| size.0);
    if h2_max_header_list_size > u64::from(u32::MAX) {
        return Err(Problem::value(
            path.key("h2_max_header_list_size"),
            "invalid h2_max_header_list_size: expected less than 4GiB",
        ));
    }

    let tls_listen = raw.tls_listen.map(|l| l.0);
    if tls_listen == Some(listen) {
        return Err(Problem::value(
            path.key("tls_listen"),
            format!("tls_listen {listen} is the target's `listen` address too"),
        )
        .with_hint("TLS needs its own port, like \"0.0.0.0:443\" beside \"0.0.0.0:80\""));
    }
    let certificates_key = path.key("certificates");
    let mut certificates: Vec<Certificate> = Vec::new();
    for (index, raw_certificate) in raw.certificates.into_iter().enumerate() {
        let certificate = certificate(raw_certificate, dir, &certificates_key.index(index))?;
        let clash = certificates.iter().find(|c| c.host == certificate.host);
        if clash.is_some() {
            let message = match &certificate.host {
                Some(host) => format!("host {host} has two certificates"),
                None => "two certificates without `host`; only one may be the default".to_string(),
            };
            return Err(Problem::value(certificates_key.index(index), message)
                .with_hint("give each certificate its own `host`, or leave it out on one only"));
        }
        certificates.push(certificate);
    }
    match (tls_listen, certificates.is_empty()) {
        (Some(_), true) => {
            return Err(Problem::key(
                path.key("tls_listen"),
                "tls_listen is set but no certificate is",
            )
            .with_hint(
                "add `certificates = [{ host = \"example.com\", cert = \"cert.pem\", key = \"key.pem\" }]`",
            ));
        }
        (None, false) => {
            return Err(Problem::key(
                certificates_key,
                "certificates are set but tls_listen is not",
            )
            .with_hint("add `tls_listen = \"0.0.0.0:443\"`: the address the edge serves TLS on"));
        }
        _ => {}
    }

    let max_request_body = raw
        .max_request_body
        .map_or(defaults.max_request_body, |size| size.0);
    Ok(EdgeSettings {
        tls_listen,
        certificates,
        header_read_timeout,
        idle_timeout,
        connect_timeout,
        response_timeout,
        max_request_body,
        body_idle_timeout,
        write_timeout,
        max_header_size,
        max_headers,
        max_connections: raw
            .max_connections
            .map_or(defaults.max_connections, |n| n.0),
        max_connections_per_ip: raw
            .max_connections_per_ip
            .map_or(defaults.max_connections_per_ip, |n| n.0),
        h2_max_concurrent_streams: raw
            .h2_max_concurrent_streams
            .map_or(defaults.h2_max_concurrent_streams, |n| n.0),
        h2_max_header_list_size,
        h2_max_resets_per_second: raw
            .h2_max_resets_per_second
            .map_or(defaults.h2_max_resets_per_second, |n| n.0),
        threads,
    })
}

fn certificate(raw: RawCertificate, dir: &Path, path: &KeyPath) -> Result<Certificate, Problem> {
    let host = match raw.host.map(|h| h.trim().to_ascii_lowercase()) {
        Some(host) if host.is_empty() => None,
        Some(host) => {
            let name = host.strip_prefix("*.").unwrap_or(&host);
            if !is_host_name(name) {
                return Err(Problem::value(
                    path.key("host"),
                    format!(
                        "invalid host {host:?}: expected a host name like \"example.com\" or \
                         \"*.example.com\""
                    ),
                )
                .with_hint("write the host name alone, without https://, a port or a path"));
            }
            Some(host)
        }
        None => None,
    };
    let file = |written: &str, key: &str, what: &str| {
        let key_path = path.key(key);
        if written.trim().is_empty() {
            return Err(Problem::value(
                key_path,
                format!(
                    "empty path: expected the {what} file, relative to the config file's folder"
                ),
            ));
        }
        let resolved = normalize(&dir.join(written));
        match std::fs::metadata(&resolved) {
            Ok(meta) if meta.is_file() => Ok(resolved),
            Ok(_) => Err(Problem::value(
                key_path,
                format!("{what} {} is not a file", resolved.display()),
            )),
            Err(error) => Err(Problem::value(
                key_path,
                format!("{what} {} cannot be read: {error}", resolved.display()),
            )
            .with_hint(format!(
                "the path is relative to the config file's folder ({})",
                dir.display()
            ))),
        }
    };
    Ok(Certificate {
        cert: file(&raw.cert, "cert", "certificate")?,
        key: file(&raw.key, "key", "private key")?,
        host,
    })
}

/// Letters, digits and `-` in dot-separated labels of 1 to 63 characters.
pub(crate) fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_the_edge_defaults() {
        let settings = EdgeSettings::default().edge(shipit_edge::DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(settings.tuning, shipit_edge::Tuning::default());
        assert_eq!(settings.tls, None);
    }
}
