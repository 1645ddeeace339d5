//! The edge's settings: what a config's `[targets.<name>.edge]` table sets
//! (`pipeline/src/config/edge.rs` builds them).
//!
//! [`Tuning`] holds the timeouts and limits, [`Settings`] adds TLS. Defaults are the
//! `DEFAULT_*` constants in the crate root, so the config, the CLI and the docs read the same
//! values. The settings also travel in the hand-over's offer ([`crate::handover`]): a new
//! edge started without a config keeps those of the edge it takes over from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tls::TlsOptions;
use crate::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_H2_MAX_HEADER_LIST_SIZE, DEFAULT_H2_MAX_RESETS_PER_SECOND, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS, DEFAULT_MAX_REQUEST_BODY, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_RESPONSE_HEADER_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT,
    HEADER_READ_TIMEOUT,
};

/// The edge's timeouts and limits. [`Tuning::default`] holds the `DEFAULT_*` constants;
/// build one with `Tuning { field: value, ..Tuning::default() }`. A field missing from a
/// saved copy (an older edge's hand-over offer) takes its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tuning {
    /// How long a slot may take to accept a connection (then 504).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to a slot is kept.
    pub pool_idle_timeout: Duration,
    /// How long a stopping edge lets requests and upgraded connections finish.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request head (HTTP/1.1; it also bounds how
    /// long a keep-alive connection may wait for its next request).
    pub header_read_timeout: Duration,
    /// How long a client connection may go without a request before it is closed.
    pub idle_timeout: Duration,
    /// How long a slot may take to start answering once it has the whole request
    /// (then 504).
    pub response_header_timeout: Duration,
    /// The largest request body forwarded (larger: 413); `None` for no limit.
    pub max_request_body: Option<u64>,
    /// How long a request body may go without a byte (then 408).
    pub body_idle_timeout: Duration,
    /// How long a client may take in nothing of an answer before its connection closes.
    pub write_timeout: Duration,
    /// The largest request head, in bytes (larger: 431).
    pub max_header_bytes: usize,
    /// The most header lines in a request head (more: 431); at most
    /// [`crate::MAX_HEADERS_LIMIT`].
    pub max_headers: usize,
    /// Client connections open at once (more: 503 and closed).
    pub max_connections: usize,
    /// Client connections open at once from one IP address (more: 503 and closed).
    pub max_connections_per_ip: usize,
    /// HTTP/2 streams open at once per connection.
    pub h2_max_concurrent_streams: u32,
    /// The largest decoded HTTP/2 header list.
    pub h2_max_header_list_size: u32,
    /// HTTP/2 stream resets per second a connection may cause before it gets GOAWAY.
    pub h2_max_resets_per_second: u32,
    /// Whether HTTP/1.1 (plain, or TLS that chose it) starts in the relay
    /// ([`crate::relay`]), and an HTTP/2 request without a body goes to the slot over the
    /// relay's pooled connections ([`crate::upstream`]); `false` sends every request
    /// through the general path (hyper, server and client), as an escape hatch.
    pub relay: bool,
    /// Threads that serve client connections, each with an event loop of its own
    /// ([`crate::workers`]); [`crate::workers::per_core`] by default, at most
    /// [`crate::MAX_THREADS`]. 0 runs them on the edge's own runtime instead, as tasks of
    /// their own.
    pub threads: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            response_header_timeout: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            max_request_body: Some(DEFAULT_MAX_REQUEST_BODY),
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_header_list_size: DEFAULT_H2_MAX_HEADER_LIST_SIZE,
            h2_max_resets_per_second: DEFAULT_H2_MAX_RESETS_PER_SECOND,
            relay: true,
            threads: crate::workers::per_core(),
        }
    }
}

/// Everything an edge runs with besides its address and directory: what the config's
/// `[targets.<name>.edge]` table sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub tuning: Tuning,
    /// TLS termination, when on.
    pub tls: Option<TlsOptions>,
}
