//! The sandbox's load balancer: two edges of shipit's own (the production and the test
//! listener, each on a port of 127.0.0.1), whose routes follow the listeners' forward actions
//! as the emulator stores them.
//!
//! Every [`POLL`] it reads the load balancer's two listeners (port 80 is production, 8080
//! the test one) and, for each target group a listener forwards to with a weight above zero,
//! the tasks the agent registered in it: one backend of the edge at each of their addresses
//! (requests go to each in turn), named by the newest task's task definition. The
//! heavier group is the route's live backend and the other one the candidate with its share
//! as a percent (ALB weights are relative), so a canary's 10 % reach the new tasks and the
//! rest the old. A listener whose groups have no registered task has no route: the edge
//! answers 503. The edge keeps each request on the task it started on across a change: a
//! task deregistered from the live group gets no new request and finishes the ones it has.
//!
//! Stickiness is the forward action's `TargetGroupStickinessConfig`, as on an ALB: on, the
//! edge's cookie keeps a client on the group it was put on for the rest of the split; off
//! (an ALB's default), every request is weighted on its own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shipit_edge::server::{EdgeHandle, EdgeOptions, start_settings};
use shipit_edge::settings::Settings;
use shipit_edge::{AdminClient, Backend, Slot};
use tokio_util::sync::CancellationToken;

use super::SandboxError;
use super::runner::{Routed, Task, Tasks};
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
    candidate: Option<Weighted>,
}

/// The candidate of a split: its percent of requests (or new clients), and whether a
/// client stays on the group it was put on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Weighted {
    backend: Backend,
    percent: u8,
    sticky: bool,
}

/// The most addresses the edge takes for one backend.
const MAX_TARGETS: usize = 64;

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
/// listeners with the agent's `tasks` until `stop`, keeping `routed` to the task addresses
/// the edges route to.
pub async fn run(
    dir: &Path,
    ports: (u16, u16),
    load_balancer: &str,
    clients: Clients,
    (tasks, routed): (Tasks, Routed),
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
    let mut seen = None;
    while !stop.is_cancelled() {
        match step(&clients, load_balancer, &tasks, &mut listeners, &mut seen).await {
            Ok(()) => last_error = None,
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "sandbox load balancer");
                    last_error = Some(e);
                }
            }
        }
        routed.set(
            listeners
                .iter()
                .filter_map(|l| l.applied.as_ref())
                .flat_map(|w| {
                    let candidate = w.candidate.as_ref().map(|c| &c.backend);
                    w.live
                        .addrs()
                        .chain(candidate.into_iter().flat_map(Backend::addrs))
                        .collect::<Vec<_>>()
                })
                .collect(),
        );
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

/// Reads the listeners and tells the edges their routes. When the emulator does not answer,
/// the listeners last read (`seen`) are routed with the tasks registered now, so that a
/// deregistered task leaves the route even then.
async fn step(
    clients: &Clients,
    load_balancer: &str,
    tasks: &Tasks,
    listeners: &mut [Listener; 2],
    seen: &mut Option<Vec<aws_sdk_elasticloadbalancingv2::types::Listener>>,
) -> Result<(), String> {
    match read_listeners(clients, load_balancer).await {
        Ok(found) => {
            *seen = found;
            route(seen.as_deref(), tasks, listeners).await
        }
        Err(e) => {
            if seen.is_some() {
                route(seen.as_deref(), tasks, listeners).await?;
            }
            Err(e)
        }
    }
}

/// The load balancer's listeners; `None` when it is gone (or not made yet).
async fn read_listeners(
    clients: &Clients,
    load_balancer: &str,
) -> Result<Option<Vec<aws_sdk_elasticloadbalancingv2::types::Listener>>, String> {
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
        return Ok(None);
    };
    let found = elb
        .describe_listeners()
        .load_balancer_arn(&lb)
        .send()
        .await
        .map_err(|e| format!("DescribeListeners: {}", describe_error(&e)))?;
    Ok(Some(found.listeners().to_vec()))
}

/// Tells each edge the route its listener asks for with the tasks registered now; no route
/// without a load balancer.
async fn route(
    found: Option<&[aws_sdk_elasticloadbalancingv2::types::Listener]>,
    tasks: &Tasks,
    listeners: &mut [Listener; 2],
) -> Result<(), String> {
    let Some(found) = found else {
        // Deleted (or not made yet): nothing to route to.
        for listener in listeners.iter_mut() {
            apply(listener, None).await?;
        }
        return Ok(());
    };
    let running = tasks.snapshot();
    for listener in listeners.iter_mut() {
        let Some(seen) = found.iter().find(|l| l.port() == Some(listener.port)) else {
            continue;
        };
        let wanted = wanted_route(seen, &running);
        apply(listener, wanted).await?;
    }
    Ok(())
}

/// The route a listener's forward action asks for, with the tasks registered now.
fn wanted_route(
    listener: &aws_sdk_elasticloadbalancingv2::types::Listener,
    running: &[Task],
) -> Option<Wanted> {
    // (group, weight) of the forward action; a plain target group is weight 1.
    let mut groups: Vec<(String, i32)> = Vec::new();
    let mut sticky = false;
    if let Some(action) = listener.default_actions().first() {
        match action.forward_config() {
            Some(forward) if !forward.target_groups().is_empty() => {
                for g in forward.target_groups() {
                    if let Some(arn) = g.target_group_arn() {
                        groups.push((arn.to_string(), g.weight().unwrap_or(1)));
                    }
                }
                sticky = forward
                    .target_group_stickiness_config()
                    .and_then(|c| c.enabled())
                    .unwrap_or(false);
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
        .filter_map(|(group, weight)| Some((group_backend(group, running)?, *weight)))
        .collect();
    // Two groups of one slot (names that do not say blue and green) cannot split.
    if backends.len() == 2 && backends[0].0.slot == backends[1].0.slot {
        backends[1].0.slot = backends[0].0.slot.other();
    }
    backends.sort_by_key(|b| std::cmp::Reverse(b.1));
    match backends.as_slice() {
        [] => None,
        [(live, _)] => Some(Wanted {
            live: live.clone(),
            candidate: None,
        }),
        [(live, lw), (candidate, cw), ..] => {
            let percent = (i64::from(*cw) * 100 / i64::from(lw + cw)).clamp(1, 99);
            Some(Wanted {
                live: live.clone(),
                candidate: Some(Weighted {
                    backend: candidate.clone(),
                    percent: u8::try_from(percent).unwrap_or(50),
                    sticky,
                }),
            })
        }
    }
}

/// The edge's backend for a target group: every task registered in it, oldest first, named
/// by the newest one's task definition (`family:revision`). `None` without a task.
fn group_backend(group: &str, running: &[Task]) -> Option<Backend> {
    let mut tasks: Vec<&Task> = running
        .iter()
        .filter(|t| t.registered && t.group.as_deref() == Some(group) && t.address.is_some())
        .collect();
    tasks.sort_by(|a, b| {
        a.created_at
            .total_cmp(&b.created_at)
            .then(a.arn.cmp(&b.arn))
    });
    let newest = tasks.last()?;
    let release = newest
        .task_definition
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(&newest.arn)
        .to_string();
    let mut addrs = tasks.iter().filter_map(|t| t.address);
    let addr = addrs.next()?;
    Some(Backend {
        slot: slot_of(group),
        release,
        addr,
        more_addrs: addrs.take(MAX_TARGETS - 1).collect(),
    })
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
            let applied = listener.applied.as_ref();
            let live_changed = applied.map(|a| &a.live) != Some(&w.live);
            // Another group, or the same one's tasks of a new task definition; not only
            // tasks added or gone, which the edge takes without ending the split.
            let release_changed = applied
                .is_none_or(|a| a.live.slot != w.live.slot || a.live.release != w.live.release);
            let had_split = applied.is_some_and(|a| a.candidate.is_some());
            if live_changed {
                if release_changed && had_split {
                    let _ = client.clear_weights(ROUTE).await;
                }
                client
                    .switch(ROUTE, &w.live)
                    .await
                    .map_err(|e| failed("switch", e))?;
            }
            match &w.candidate {
                Some(split) => {
                    client
                        .weights_split(
                            ROUTE,
                            &split.backend,
                            split.percent,
                            Some(SPLIT_LEASE),
                            split.sticky,
                        )
                        .await
                        .map_err(|e| failed("weights", e))?;
                    listener.split_sent = Some(Instant::now());
                }
                None => {
                    if had_split && !release_changed {
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

#[cfg(test)]
mod tests {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, ForwardActionConfig, Listener as Seen, TargetGroupStickinessConfig,
        TargetGroupTuple,
    };

    use super::*;

    const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/sandbox-blue/1";
    const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/sandbox-green/2";

    fn forward(weights: &[(&str, i32)], sticky: Option<bool>) -> Seen {
        let mut config = ForwardActionConfig::builder();
        for (group, weight) in weights {
            config = config.target_groups(
                TargetGroupTuple::builder()
                    .target_group_arn(*group)
                    .weight(*weight)
                    .build(),
            );
        }
        if let Some(enabled) = sticky {
            config = config.target_group_stickiness_config(
                TargetGroupStickinessConfig::builder()
                    .enabled(enabled)
                    .duration_seconds(3600)
                    .build(),
            );
        }
        Seen::builder()
            .port(80)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .forward_config(config.build())
                    .build(),
            )
            .build()
    }

    fn task(n: u16, group: &str, revision: u32, created_at: f64) -> Task {
        Task::registered_for_test(
            &format!("arn:aws:ecs:us-east-1:1:task/sandbox/t{n}"),
            &format!("arn:aws:ecs:us-east-1:1:task-definition/web:{revision}"),
            group,
            SocketAddr::from(([172, 17, 0, 10 + (n as u8)], 8080)),
            created_at,
        )
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([172, 17, 0, 10 + n], 8080))
    }

    #[test]
    fn every_task_of_a_group_is_an_address_of_its_backend_and_weights_make_the_split() {
        // Blue's two tasks (the newer one listed first), green's one, and tasks the route
        // must leave out: one not registered (yet, or any more) and one of another group.
        let mut unregistered = task(4, BLUE, 3, 40.0);
        unregistered.registered = false;
        let running = vec![
            task(2, BLUE, 3, 20.0),
            task(1, BLUE, 3, 10.0),
            task(3, GREEN, 4, 30.0),
            unregistered,
            task(5, "arn:other/group", 3, 50.0),
        ];
        let wanted = wanted_route(&forward(&[(BLUE, 90), (GREEN, 10)], None), &running).unwrap();
        assert_eq!(
            wanted.live,
            Backend {
                slot: Slot::Blue,
                release: "web:3".into(),
                addr: addr(1),
                more_addrs: vec![addr(2)],
            }
        );
        assert_eq!(
            wanted.candidate,
            Some(Weighted {
                backend: Backend::new(Slot::Green, "web:4", addr(3)),
                percent: 10,
                sticky: false,
            })
        );
        // The forward's stickiness is the split's.
        let sticky = wanted_route(&forward(&[(BLUE, 90), (GREEN, 10)], Some(true)), &running);
        assert!(sticky.unwrap().candidate.unwrap().sticky);
        let off = wanted_route(&forward(&[(BLUE, 90), (GREEN, 10)], Some(false)), &running);
        assert!(!off.unwrap().candidate.unwrap().sticky);
        // The heavier group is live; a group at weight 0 takes nothing.
        let flipped = wanted_route(&forward(&[(BLUE, 1), (GREEN, 3)], None), &running).unwrap();
        assert_eq!(flipped.live.slot, Slot::Green);
        assert_eq!(flipped.candidate.unwrap().percent, 25);
        let alone = wanted_route(&forward(&[(BLUE, 0), (GREEN, 1)], None), &running).unwrap();
        assert_eq!(alone.live.slot, Slot::Green);
        assert_eq!(alone.candidate, None);
        // A group without a registered task has no backend: no route at all here.
        assert_eq!(
            wanted_route(&forward(&[(GREEN, 1)], None), &running[..2]),
            None
        );
    }

    #[test]
    fn a_task_gone_from_the_live_group_changes_its_addresses_not_its_release() {
        let before = vec![task(1, BLUE, 3, 10.0), task(2, BLUE, 3, 20.0)];
        let after = vec![task(2, BLUE, 3, 20.0)];
        let listener = forward(&[(BLUE, 1)], None);
        let (a, b) = (
            wanted_route(&listener, &before).unwrap().live,
            wanted_route(&listener, &after).unwrap().live,
        );
        assert_eq!((&a.slot, &a.release), (&b.slot, &b.release));
        assert_eq!(b.addrs().collect::<Vec<_>>(), vec![addr(2)]);
        assert_ne!(a, b);
    }
}
