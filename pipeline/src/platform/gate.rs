//! The gate in front of a service: paused (new requests held at the edge until a resume or
//! a deadline, then answered 503 with `Retry-After`) or under maintenance (every request
//! answered 503 with a small page and `Retry-After`). `shipit pause`, `resume` and
//! `maintenance on|off` change it; `status` shows it. Only a target whose traffic passes
//! through shipit's own edge (local) has one.

use std::time::Duration;

use serde::Serialize;
pub use shipit_edge::api::{MaintenanceStatus, PauseStatus};

/// What to do to the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateChange {
    /// Hold new requests for at most `timeout`.
    Pause {
        timeout: Duration,
    },
    /// Let the held requests go and route as usual.
    Resume,
    /// Answer 503 with a page saying `message` (None: the edge's default).
    MaintenanceOn {
        message: Option<String>,
        retry_after: Option<Duration>,
    },
    MaintenanceOff,
}

/// The gate as a change left it, or as `status` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Gate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
    /// After a resume: how many held requests went on to the live slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<usize>,
}

impl Gate {
    /// Open: neither paused nor under maintenance.
    pub fn is_open(&self) -> bool {
        self.paused.is_none() && self.maintenance.is_none()
    }
}
