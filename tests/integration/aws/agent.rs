//! The "ECS agent" moto lacks: it registers a service's targets as ECS would.

use super::*;

/// Plays the ECS agent that moto lacks: while it runs, every ECS service of one app (its blue
/// and green services) has as many targets registered in its slot's target group as its
/// desired count, and none when that is 0. The group is the one in the service's
/// `loadBalancers`, else the infrastructure's group of the slot. Targets are
/// `10.N.<1|2>.<10+i>:8080`; moto reports them healthy at once.
///
/// A slot can be broken: its targets are never registered (moto has no unhealthy state), so
/// a health wait on it times out. The agent polls every 100 ms on its own thread, for at most
/// [`EcsAgent::MAX_LIFETIME`], and stops when dropped.
pub struct EcsAgent {
    stop: Arc<AtomicBool>,
    broken: Arc<Mutex<BTreeSet<Slot>>>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EcsAgent {
    pub const POLL: Duration = Duration::from_millis(100);
    pub const MAX_LIFETIME: Duration = Duration::from_secs(600);

    /// Starts the agent for `service`'s ECS services `<service>-blue` and `<service>-green`.
    pub fn start(infra: &Infra, service: &str) -> EcsAgent {
        EcsAgent::start_for(
            infra,
            SlotPair {
                blue: Infra::service_name(service, Slot::Blue),
                green: Infra::service_name(service, Slot::Green),
            },
        )
    }

    /// Starts the agent for ECS services with other names.
    pub fn start_for(infra: &Infra, services: SlotPair<String>) -> EcsAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(Mutex::new(BTreeSet::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let world = AgentWorld {
            ecs: infra.clients.ecs.clone(),
            elb: infra.clients.elb.clone(),
            cluster: infra.cluster.clone(),
            services,
            groups: infra.target_groups.clone(),
            net: infra.net,
        };
        let thread = {
            let (stop, broken, log) = (stop.clone(), broken.clone(), log.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < Self::MAX_LIFETIME {
                        let broken_now = broken.lock().unwrap().clone();
                        if let Err(e) = world.step(&broken_now, &log).await {
                            let mut log = log.lock().unwrap();
                            if log.last() != Some(&e) {
                                log.push(e);
                            }
                        }
                        tokio::time::sleep(Self::POLL).await;
                    }
                });
            })
        };
        EcsAgent {
            stop,
            broken,
            log,
            thread: Some(thread),
        }
    }

    /// From now on, never registers targets for `slot` (a deployment whose tasks never pass
    /// their health check). Targets already registered stay.
    pub fn break_slot(&self, slot: Slot) {
        self.broken.lock().unwrap().insert(slot);
    }

    /// Undoes [`EcsAgent::break_slot`].
    pub fn repair_slot(&self, slot: Slot) {
        self.broken.lock().unwrap().remove(&slot);
    }

    /// What the agent did (and the errors it met), in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for EcsAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct AgentWorld {
    ecs: aws_sdk_ecs::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    cluster: String,
    services: SlotPair<String>,
    groups: SlotPair<String>,
    net: u8,
}

impl AgentWorld {
    async fn step(&self, broken: &BTreeSet<Slot>, log: &Mutex<Vec<String>>) -> Result<(), String> {
        let out = self
            .ecs
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.services.blue)
            .services(&self.services.green)
            .send()
            .await
            .map_err(|e| format!("DescribeServices: {e:?}"))?;
        for slot in [Slot::Blue, Slot::Green] {
            let name = self.services.get(slot);
            let Some(service) = out
                .services()
                .iter()
                .find(|s| s.service_name() == Some(name.as_str()))
            else {
                continue;
            };
            let desired = if service.status() == Some("ACTIVE") {
                service.desired_count().max(0) as usize
            } else {
                0
            };
            let group = service
                .load_balancers()
                .iter()
                .find_map(|lb| lb.target_group_arn())
                .unwrap_or(self.groups.get(slot))
                .to_string();
            let octet = match slot {
                Slot::Blue => 1,
                Slot::Green => 2,
            };
            let wanted: BTreeSet<String> = if broken.contains(&slot) {
                BTreeSet::new()
            } else {
                (0..desired)
                    .map(|i| format!("10.{}.{octet}.{}", self.net, 10 + i))
                    .collect()
            };
            let health = self
                .elb
                .describe_target_health()
                .target_group_arn(&group)
                .send()
                .await
                .map_err(|e| format!("DescribeTargetHealth {group}: {e:?}"))?;
            let present: BTreeSet<String> = health
                .target_health_descriptions()
                .iter()
                .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
                .collect();
            let target = |id: &String| {
                TargetDescription::builder()
                    .id(id)
                    .port(TARGET_PORT)
                    .build()
            };
            let missing: Vec<_> = wanted.difference(&present).collect();
            // A broken slot keeps what it had: it only stops registering.
            let extra: Vec<_> = if broken.contains(&slot) {
                Vec::new()
            } else {
                present.difference(&wanted).collect()
            };
            if !missing.is_empty() {
                self.elb
                    .register_targets()
                    .target_group_arn(&group)
                    .set_targets(Some(missing.iter().map(|id| target(id)).collect()))
                    .send()
                    .await
                    .map_err(|e| format!("RegisterTargets {group}: {e:?}"))?;
                log.lock()
                    .unwrap()
                    .push(format!("{slot}: registered {missing:?}"));
            }
            if !extra.is_empty() {
                self.elb
                    .deregister_targets()
                    .target_group_arn(&group)
                    .set_targets(Some(extra.iter().map(|id| target(id)).collect()))
                    .send()
                    .await
                    .map_err(|e| format!("DeregisterTargets {group}: {e:?}"))?;
                log.lock()
                    .unwrap()
                    .push(format!("{slot}: deregistered {extra:?}"));
            }
        }
        Ok(())
    }
}
