//! What `shipit status` reports beyond which release is live: how the live slot is doing,
//! probed now, and which candidate takes traffic beside it. Each kind fills in what it can
//! see; a kind that cannot probe leaves it empty.

use jiff::Timestamp;
use serde::Serialize;

use crate::Slot;

/// The target as observed now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    /// How the live slot is doing; null when nothing is live or the kind does not probe.
    pub health: Option<SlotHealth>,
    /// The candidate the routing layer holds beside the live slot (a split or a preview).
    pub candidate: Option<RoutedCandidate>,
    /// A pause or a maintenance in front of the service; null when traffic flows.
    pub gate: Option<crate::platform::gate::Gate>,
}

/// The live slot's health, probed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotHealth {
    /// Its health path answered 2xx just now.
    pub healthy: bool,
    /// What the probe saw, e.g. `200 OK` or `connection refused`.
    pub probe: String,
    /// The container's state as the engine reports it (`running`, `restarting`, `exited`),
    /// or `missing` when there is no container.
    pub state: String,
    /// How many times the engine restarted the container.
    pub restarts: Option<i64>,
    /// When its current process started.
    pub started_at: Option<Timestamp>,
    /// Since when it has failed, as far as anyone saw: the edge's first failed request
    /// since the slot last answered, else when its process stopped. Null while healthy.
    pub unhealthy_since: Option<Timestamp>,
    /// Requests the edge could not get an answer to from this slot, since the edge started.
    pub failed_requests: Option<u64>,
}

/// A candidate that takes traffic beside the live slot without being live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutedCandidate {
    pub slot: Slot,
    pub release: String,
    /// The percent of new clients a weighted split sends to it; 0 for a preview only.
    pub percent: u8,
    /// The host names that reach it as a preview.
    pub preview_hosts: Vec<String>,
    /// Requests in flight on it now.
    pub in_flight: usize,
}
