//! `shipit status` on a local target: the live slot probed where the edge sends its traffic,
//! its container as the engine sees it, the edge's count of requests it failed, and the
//! candidate the edge holds beside it.

use std::time::Duration;

use jiff::Timestamp;
use shipit_edge::api::RouteStatus;

use super::{LocalPlatform, edge_error};
use crate::Slot;
use crate::health::{Probe, Prober};
use crate::platform::observed::{Observed, RoutedCandidate, SlotHealth};
use crate::platform::{Live, PlatformError};

/// How long `status` waits for the live slot's health path to answer.
pub const STATUS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl LocalPlatform {
    pub(super) async fn observe_now(&self, live: Option<&Live>) -> Result<Observed, PlatformError> {
        let route = self.route().await?;
        let candidate = route.as_ref().and_then(|r| {
            let c = r.candidate.as_ref()?;
            Some(RoutedCandidate {
                slot: c.backend.slot,
                release: c.backend.release.clone(),
                percent: c.percent,
                preview_hosts: r.preview_hosts.clone(),
                in_flight: c.in_flight,
            })
        });
        let gate = route.as_ref().map(|r| crate::platform::gate::Gate {
            paused: r.paused.clone(),
            maintenance: r.maintenance.clone(),
            released: None,
        });
        let gate = gate.filter(|g| !g.is_open());
        let Some(live) = live else {
            return Ok(Observed {
                health: None,
                candidate,
                gate,
            });
        };
        // The address the edge routes to, not the container's: a slot whose container moved
        // to another port is unreachable for the edge, and status must say so.
        let addr = match route.as_ref().and_then(|r| r.live.as_ref()) {
            Some(backend) => Some(backend.addr),
            None => self.saved_live_addr()?,
        };
        let probe = match addr {
            Some(addr) => {
                Prober::new(addr)
                    .probe(&self.service.health.path, STATUS_PROBE_TIMEOUT)
                    .await
            }
            None => Probe::Failed {
                error: "the edge holds no address for it".into(),
            },
        };
        let healthy = probe.is_success();
        let container = self.container_state(live.slot).await;
        let (failed_requests, failing_since) = self.edge_failures(live.slot).await;
        let unhealthy_since = if healthy {
            None
        } else {
            failing_since.or(container.finished_at)
        };
        Ok(Observed {
            health: Some(SlotHealth {
                healthy,
                probe: shown(&probe),
                state: container.state,
                restarts: container.restarts,
                started_at: container.started_at,
                unhealthy_since,
                failed_requests,
            }),
            candidate,
            gate,
        })
    }

    /// The service's route as the running edge holds it; None when the edge is down.
    pub(super) async fn route(&self) -> Result<Option<RouteStatus>, PlatformError> {
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_none() {
            return Ok(None);
        }
        let status = self
            .admin()
            .status()
            .await
            .map_err(|e| edge_error("reading the edge status", e))?;
        Ok(status
            .routes
            .into_iter()
            .find(|r| r.service == self.service.name))
    }

    /// The live address the edge restores when it starts (it is down).
    fn saved_live_addr(&self) -> Result<Option<std::net::SocketAddr>, PlatformError> {
        let saved = shipit_edge::state::load(&self.paths.edge_dir)
            .map_err(|e| edge_error("reading the edge's saved routes", e))?;
        Ok(saved
            .into_iter()
            .flat_map(|s| s.routes)
            .find(|r| r.service == self.service.name)
            .map(|r| r.live.addr))
    }

    /// The container of `slot` as the engine reports it. Never fails: what cannot be read
    /// is said in `state`.
    async fn container_state(&self, slot: Slot) -> ContainerState {
        let info = match self.inspect(slot).await {
            Ok(Some(info)) => info,
            Ok(None) => return ContainerState::named("missing"),
            Err(e) => return ContainerState::named(&format!("unknown ({e})")),
        };
        let state = info.state.unwrap_or_default();
        let time = |t: Option<String>| {
            t.and_then(|t| t.parse::<Timestamp>().ok())
                // The engine's zero time means "never".
                .filter(|t| t.as_second() > 0)
        };
        let running = state.running.unwrap_or(false);
        ContainerState {
            state: state
                .status
                .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            restarts: info.restart_count,
            started_at: time(state.started_at),
            finished_at: if running {
                None
            } else {
                time(state.finished_at)
            },
        }
    }

    /// The edge's count of requests `slot` gave no answer to, and since when it has failed
    /// without answering. Nothing when the edge is down.
    async fn edge_failures(&self, slot: Slot) -> (Option<u64>, Option<Timestamp>) {
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_none() {
            return (None, None);
        }
        let Ok(page) = self.admin().metrics().await else {
            return (None, None);
        };
        let slot = slot.to_string();
        let labels = [("service", self.service.name.as_str()), ("slot", &slot)];
        let failed = shipit_edge::metrics::SLOT_FAILURE_REASONS
            .iter()
            .map(|reason| {
                let mut with_reason = labels.to_vec();
                with_reason.push(("reason", reason));
                shipit_edge::metrics::sample(&page, "shipit_edge_slot_failures_total", &with_reason)
                    .unwrap_or(0.0) as u64
            })
            .sum();
        let since =
            shipit_edge::metrics::sample(&page, "shipit_edge_slot_failing_since_seconds", &labels)
                .and_then(|s| Timestamp::from_millisecond((s * 1e3) as i64).ok());
        (Some(failed), since)
    }
}

/// The most of a probe's text `status` shows: a health body can be long.
pub const PROBE_TEXT_MAX_CHARS: usize = 200;

fn shown(probe: &Probe) -> String {
    let text = probe.to_string();
    match text.char_indices().nth(PROBE_TEXT_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// What `status` reads of a slot's container.
struct ContainerState {
    state: String,
    restarts: Option<i64>,
    started_at: Option<Timestamp>,
    /// When its process stopped, while it is not running.
    finished_at: Option<Timestamp>,
}

impl ContainerState {
    fn named(state: &str) -> ContainerState {
        ContainerState {
            state: state.to_string(),
            restarts: None,
            started_at: None,
            finished_at: None,
        }
    }
}
