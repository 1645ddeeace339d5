#![allow(clippy::print_stderr)] // tests report what they measured on stderr
//! shipit's integration tests: the real `shipit` binary, the real Docker engine, the real
//! edge and real HTTP clients. Each test gets its own state directory, service name and edge
//! port, so they run in parallel without sharing anything but the engine and the image.

mod aws;
mod harness;
mod load;
/// The TLS client the edge's own tests use.
#[path = "../../edge/tests/support/tls_client.rs"]
mod tls_client;

mod action;
mod canary;
mod config;
mod crash;
mod ecs;
mod edge;
mod edge_tls;
mod edge_upgrade;
mod failure;
mod gate;
mod help;
mod history;
mod hooks;
mod images;
mod init;
mod json;
mod lock;
mod notify;
mod projects;
mod promote;
mod records;
mod registry;
mod release;
mod rollback;
mod sandbox;
mod secrets;
mod services;
mod slots;
mod version;
mod warmup;
