//! shipit's edge: the reverse proxy in front of a local target's slots.
//!
//! It routes each service's traffic to its live slot (by host and path prefix), switches
//! slots atomically, drains the replaced slot, can split new clients between the live slot
//! and a candidate or pin a request to the candidate for preview, passes WebSockets
//! through, can hold a service's requests while it is paused or answer them with a
//! maintenance page, counts what it does for Prometheus, and is driven through an admin
//! API on a unix socket. The route table survives restarts (`routes.json`), [`daemon`] starts it
//! detached, upgrades it and stops it, and [`handover`] moves its sockets to a new process
//! without refusing or dropping a connection.

pub mod admin;
pub(crate) mod admission;
pub(crate) mod ahead;
pub(crate) mod answer;
pub mod api;
pub mod backend;
pub mod body;
pub mod client;
pub(crate) mod connection;
pub mod connector;
pub mod daemon;
pub mod directory;
pub mod drain;
pub(crate) mod edge;
pub mod error;
mod expiry;
pub mod framing;
pub mod handover;
pub mod lease;
pub(crate) mod listener;
pub mod log_file;
pub mod maintenance;
pub mod metrics;
pub mod pause;
pub(crate) mod pool;
pub mod proxy;
pub(crate) mod relay;
pub mod route;
pub mod server;
pub mod settings;
pub mod slot;
pub mod split;
pub mod state;
pub mod tls;
pub mod tunnel;
pub(crate) mod upstream;
pub mod workers;

#[cfg(test)]
mod test_backend;

use std::time::Duration;

pub use backend::Backend;
pub use client::AdminClient;
pub use connection::HANDOVER_IDLE_GRACE;
pub use daemon::{DaemonSpec, StopOutcome, Upgraded};
pub use drain::DrainOutcome;
pub use error::EdgeError;
pub use framing::{DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, MAX_HEADERS_LIMIT};
pub use handover::TakeOver;
pub use route::Routing;
pub use server::{EdgeHandle, EdgeOptions};
pub use settings::{Settings, Tuning};
pub use slot::Slot;
pub use tls::{CertificateFiles, TlsOptions};

/// The admin socket, in the edge directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// The saved route table, in the edge directory.
pub const ROUTES_FILE: &str = "routes.json";
/// The pid of the running edge, in the edge directory.
pub const PID_FILE: &str = "edge.pid";
/// The detached edge's stdout and stderr, in the edge directory; rotated by size
/// ([`log_file`]).
pub const LOG_FILE: &str = "edge.log";
/// Locked by the running edge for its whole life: one edge per directory.
pub const LOCK_FILE: &str = "edge.lock";

/// How long the edge waits for a slot to accept a connection before answering 504.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection to a slot is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping edge lets requests in flight finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a client may take to send its request headers (HTTP/1.1 also waits this long
/// for the next request on a keep-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client connection may have no request before the edge closes it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a slot may take to start its answer once it has the whole request (then 504).
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest request body the edge forwards (then 413): 100 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 100 * 1024 * 1024;
/// How long a request body may go without a byte before the edge gives up on it (408).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take in nothing of an answer before the edge closes its
/// connection (the request then ends, so a drain does not wait for it).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Client connections the edge holds open at once; more are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Client connections from one IP address at once; more are answered 503 and closed.
/// Behind a load balancer or CDN, every client shares its few addresses: raise it there.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_024;
/// HTTP/2 streams a client may have open at once on one connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// The largest HTTP/2 header list (decoded) a client may send.
pub const DEFAULT_H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// HTTP/2 streams a client may reset per second on one connection before the edge ends the
/// connection with GOAWAY (the "rapid reset" attack, CVE-2023-44487).
pub const DEFAULT_H2_MAX_RESETS_PER_SECOND: u32 = 100;
/// The most threads an edge serves client connections on ([`settings::Tuning::threads`]).
pub const MAX_THREADS: usize = 256;
/// The deadline of one admin call (a drain gets its own timeout on top).
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`daemon::ensure_running`] usually waits for a new edge to answer.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The lease a split is given when the call sets none, and the one shipit's releases ask
/// for: a candidate whose release stops renewing it (the process died) is withdrawn this
/// long after the last renewal. Releases renew it every third of it
/// (`shipit_pipeline::platform::local::CANDIDATE_LEASE_RENEWAL`), so two renewals can be
/// late before it lapses. See [`lease`].
pub const DEFAULT_CANDIDATE_LEASE: Duration = Duration::from_secs(10);
/// How long [`daemon::stop`] usually waits before it kills the edge.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(35);
