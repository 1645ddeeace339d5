//! shipit's release pipeline.
//!
//! `config` turns a `shipit.toml` into typed values; `build` turns a service's context into an
//! image; a [`platform::Platform`] launches, verifies, shifts and retires slots on a target; and
//! [`release`] drives those phases as one state machine, recording every attempt in
//! [`history`] under a [`lock`].

pub mod aws;
pub mod build;
pub mod config;
pub mod container_spec;
pub mod docker;
pub mod event;
pub mod fault;
pub mod git;
pub mod health;
pub mod history;
pub mod hook;
pub mod lock;
pub mod migrate;
pub mod notify;
pub mod platform;
pub mod pre_build;
pub mod registry;
pub mod release;
pub mod sandbox;
pub mod secret;
pub mod shift;
pub mod state_dir;
pub mod task_definition;
pub mod version;
pub mod waited;
pub mod warmup;

pub use shipit_edge::Slot;
