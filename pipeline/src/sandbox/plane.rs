//! The sandbox's load balancer: two edges of shipit's own (the production and the test
//! listener, each on a port of 127.0.0.1), whose routes follow the listeners' forward actions
//! as the emulator stores them.
//!
//! Every [`POLL`] it reads the load balancer's two listeners (port 80 is production, 8080
//! the test one) and, for each target group a listener forwards to with a weight above zero,
//! the newest task the agent registered in it. The heavier group is the route's live backend
//! and the other one the candidate with its share as a percent (ALB weights are relative),
//! so a canary's 10 % reach the new task and the rest the old. A listener whose groups have
//! no registered task has no route: the edge answers 503. The edge keeps each request on the
//! backend it started on across a change, and holds a split's clients to their slot by its
//! cookie.
//!
//! Limits, said in the README: one target per group (the sandbox's target block sets
//! `desired_count = 1`); stickiness is the edge's own cookie, on for every split.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shipit_edge::server::{EdgeHandle, EdgeOptions, start_settings};
use shipit_edge::settings::Settings;
use shipit_edge::{AdminClient, Backend, Slot};
use tokio_util::sync::CancellationToken;

use super::SandboxError;
use super::runner::Tasks;
use crate::aws::{Clients, describe_error};

/// How often the listeners are read: a change reaches the edge within about this.
pub const POLL: Duration = Duration::from_millis(50);
/// The edge's route for a listener.
const ROUTE: &str = "listener";
/// The lease of a split; it is sent again well before it ends.
const SPLIT_LEASE: Duration = Duration::from_secs(3600);
const SPLIT_RENEW: Duration = Duration::from_secs(600);
/// The listener ports of the sandbox's load balancer (see `infra`).
const PRODUCTION_LISTENER_PORT: i32 = 80;
const TEST_LISTENER_PORT: i32 = 8080;

/// One listener's wanted route: a live backend and maybe a weighted candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    live: Backend,
    candidate: Option<(Backend, u8)>,
}

/// One edge and what it was last told.
struct Listener {
    port: i32,
    client: AdminClient,
    applied: Option<Wanted>,
    split_sent: Option<Instant>,
}

/// A request to read the listeners now, answered once the edges follow them: the endpoint
/// sends it after passing on a listener change, so that when ModifyListener returns, the
/// sandbox's load balancer already routes by it.
pub type Refresh = tokio::sync::oneshot::Sender<()>;

/// Starts the two edges, in `dir/edge-production` and `dir/edge-test`, and follows the
/// listeners until `stop`.
pub async fn run(
    dir: &Path,
    ports: (u16, u16),
    load_balancer: &str,
    clients: Clients,
    tasks: Tasks,
    mut refreshes: tokio::sync::mpsc::Receiver<Refresh>,
    stop: CancellationToken,
) -> Result<(), SandboxError> {
    let production = start_edge(dir, "edge-production", ports.0, "--production-port").await?;
    let test = start_edge(dir, "edge-test", ports.1, "--test-port").await?;
    let mut listeners = [
        Listener {
            port: PRODUCTION_LISTENER_PORT,
            client: production.client(),
            applied: None,
            split_sent: None,
        },
        Listener {
            port: TEST_LISTENER_PORT,
            client: test.client(),
            applied: None,
            split_sent: None,
        },
    ];
    let mut last_error = None;
    let mut waiting: Vec<Refresh> = Vec::new();
    while !stop.is_cancelled() {
        match step(&clients, load_balancer, &tasks, &mut listeners).await {
            Ok(()) => last_error = None,
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "sandbox load balancer");
                    last_error = Some(e);
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(POLL) => {}
            Some(refresh) = refreshes.recv() => waiting.push(refresh),
        }
    }
    for edge in [production, test] {
        if let Err(e) = edge.shutdown().await {
            tracing::warn!(error = %e, "stopping an edge of the sandbox's load balancer");
        }
    }
    Ok(())
}

async fn start_edge(
    dir: &Path,
    name: &str,
    port: u16,
    flag: &str,
) -> Result<EdgeHandle, SandboxError> {
    let dir = dir.join(name);
    // Routes of an earlier agent name tasks that no longer run.
    let _ = std::fs::remove_file(dir.join(shipit_edge::ROUTES_FILE));
    start_settings(
        EdgeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        },
        Settings::default(),
    )
    .await
    .map_err(|e| match e {
        shipit_edge::EdgeError::Bind { source, .. } => SandboxError::PortInUse {
            port,
            what: format!(
                "the load balancer's {} listener",
                name.trim_start_matches("edge-")
            ),
            flag: flag.to_string(),
            source,
        },
        other => SandboxError::LoadBalancer(format!(
            "the load balancer's {} listener cannot start: {other}",
            name.trim_start_matches("edge-")
        )),
    })
}

/// The slot a target group stands for: its name's last part (`…-green`), else blue.
fn slot_of(group: &str) -> Slot {
    let name = group.split('/').nth(1).unwrap_or(group);
    if name.ends_with("green") {
        Slot::Green
    } else {
        Slot::Blue
    }
}

async fn step(
    clients: &Clients,
    load_balancer: &str,
    tasks: &Tasks,
    listeners: &mut [Listener; 2],
) -> Result<(), String> {
    let elb = &clients.elb;
    let lb = match elb
        .describe_load_balancers()
        .names(load_balancer)
        .send()
        .await
    {
        Ok(out) => out
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .map(str::to_string),
        Err(e) if crate::aws::error_code(&e) == Some("LoadBalancerNotFound") => None,
        Err(e) => return Err(format!("DescribeLoadBalancers: {}", describe_error(&e))),
    };
    let Some(lb) = lb else {
        // Deleted (or not made yet): nothing to route to.
        for listener in listeners.iter_mut() {
            apply(listener, None).await?;
        }
        return Ok(());
    };
    let found = elb
        .describe_listeners()
        .load_balancer_arn(&lb)
        .send()
        .await
        .map_err(|e| format!("DescribeListeners: {}", describe_error(&e)))?;
    let running = tasks.snapshot();
    for listener in listeners.iter_mut() {
        let Some(seen) = found
            .listeners()
            .iter()
            .find(|l| l.port() == Some(listener.port))
        else {
            continue;
        };
        // (group, weight) of the forward action; a plain target group is weight 1.
        let mut groups: Vec<(String, i32)> = Vec::new();
        if let Some(action) = seen.default_actions().first() {
            match action.forward_config() {
                Some(forward) if !forward.target_groups().is_empty() => {
                    for g in forward.target_groups() {
                        if let Some(arn) = g.target_group_arn() {
                            groups.push((arn.to_string(), g.weight().unwrap_or(1)));
                        }
                    }
                }
                _ => {
                    if let Some(arn) = action.target_group_arn() {
                        groups.push((arn.to_string(), 1));
                    }
                }
            }
        }
        let mut backends: Vec<(Backend, i32)> = groups
            .iter()
            .filter(|(_, weight)| *weight > 0)
            .filter_map(|(group, weight)| {
                let task = running
                    .iter()
                    .filter(|t| t.registered && t.group.as_deref() == Some(group))
                    .max_by(|a, b| a.created_at.total_cmp(&b.created_at))?;
                let id = task.arn.rsplit('/').next().unwrap_or(&task.arn);
                Some((
                    Backend {
                        slot: slot_of(group),
                        release: id[..id.len().min(12)].to_string(),
                        addr: task.address?,
                    },
                    *weight,
                ))
            })
            .collect();
        // Two groups of one slot (names that do not say blue and green) cannot split.
        if backends.len() == 2 && backends[0].0.slot == backends[1].0.slot {
            backends[1].0.slot = backends[0].0.slot.other();
        }
        backends.sort_by_key(|b| std::cmp::Reverse(b.1));
        let wanted = match backends.as_slice() {
            [] => None,
            [(live, _)] => Some(Wanted {
                live: live.clone(),
                candidate: None,
            }),
            [(live, lw), (candidate, cw), ..] => {
                let percent = (i64::from(*cw) * 100 / i64::from(lw + cw)).clamp(1, 99);
                Some(Wanted {
                    live: live.clone(),
                    candidate: Some((candidate.clone(), u8::try_from(percent).unwrap_or(50))),
                })
            }
        };
        apply(listener, wanted).await?;
    }
    Ok(())
}

/// Tells the listener's edge the wanted route, when it changed (or a split's lease is due).
async fn apply(listener: &mut Listener, wanted: Option<Wanted>) -> Result<(), String> {
    let renew = listener
        .split_sent
        .is_some_and(|at| at.elapsed() >= SPLIT_RENEW);
    if wanted == listener.applied && !renew {
        return Ok(());
    }
    let client = &listener.client;
    let failed = |what: &str, e: shipit_edge::EdgeError| {
        format!("the edge on listener port {}: {what}: {e}", listener.port)
    };
    match &wanted {
        None => {
            client
                .remove(ROUTE)
                .await
                .map_err(|e| failed("remove", e))?;
        }
        Some(w) => {
            let live_changed = listener.applied.as_ref().map(|a| &a.live) != Some(&w.live);
            if live_changed {
                if listener
                    .applied
                    .as_ref()
                    .is_some_and(|a| a.candidate.is_some())
                {
                    let _ = client.clear_weights(ROUTE).await;
                }
                client
                    .switch(ROUTE, &w.live)
                    .await
                    .map_err(|e| failed("switch", e))?;
            }
            match &w.candidate {
                Some((backend, percent)) => {
                    client
                        .weights_leased(ROUTE, backend, *percent, Some(SPLIT_LEASE))
                        .await
                        .map_err(|e| failed("weights", e))?;
                    listener.split_sent = Some(Instant::now());
                }
                None => {
                    if listener
                        .applied
                        .as_ref()
                        .is_some_and(|a| a.candidate.is_some())
                        && !live_changed
                    {
                        let _ = client.clear_weights(ROUTE).await;
                    }
                    listener.split_sent = None;
                }
            }
        }
    }
    tracing::info!(port = listener.port, route = ?wanted, "the load balancer follows the listener");
    listener.applied = wanted;
    Ok(())
}
