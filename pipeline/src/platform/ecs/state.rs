//! The AWS read side of the ecs platform: everything a run reads before it changes
//! anything. The production forward (the listener's, or a rule's), the CloudFront origin in
//! CDN mode, both slots' services and the releases their task definitions carry, and where
//! the service answers (`Site`, read once from the listener's load balancer).
//!
//! Live is the slot with the larger forward weight (during a weighted step, the slot whose
//! task definition revision is older), if its service runs tasks. When no shipit service
//! runs there but the slot's target group has healthy targets (registered by another tool,
//! or by hand), the slot is live all the same, as a foreign release: see [`Live::foreign`].

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::aws::short_arn;
use super::aws::{FetchError, aws_error};
use super::forward::{Forward, Routing};
use super::{EcsPlatform, TAG_RETIRE_AFTER, distribution, wait};
use crate::Slot;
use crate::aws::Clients;
use crate::config::EcsTarget;
use crate::platform::{ErrorKind, Live, PlatformError};
use crate::task_definition::TAG_RELEASE;

/// What an ECS service of a slot looks like now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotService {
    pub name: String,
    pub arn: String,
    pub desired: i32,
    pub running: i32,
    pub task_definition: Option<String>,
    /// The release its task definition carries (the `shipit.release` tag, or the
    /// `SHIPIT_RELEASE` variable of a task definition shipit did not tag).
    pub release: Option<String>,
    pub retire_after: Option<Timestamp>,
}

/// Everything a release reads before it changes anything.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EcsState {
    /// The production forward (the listener's, or the rule's).
    pub forward: Forward,
    /// The slot traffic goes to, read from the forward (or the distribution in CDN mode).
    pub routed: Option<Slot>,
    /// The share of a weighted step in progress, in percent (0: none).
    pub split_percent: u8,
    /// The distribution's target origin domain, in CDN mode.
    pub cdn_origin: Option<String>,
    pub blue: Option<SlotService>,
    pub green: Option<SlotService>,
    pub live: Option<Live>,
}

impl EcsState {
    pub fn service(&self, slot: Slot) -> Option<&SlotService> {
        match slot {
            Slot::Blue => self.blue.as_ref(),
            Slot::Green => self.green.as_ref(),
        }
    }
}

/// Where the service answers, read once from the listener's load balancer.
#[derive(Debug, Clone)]
pub(super) struct Site {
    pub(super) url: String,
    /// `http://<dns>:<port>` of the test listener.
    pub(super) test_url: Option<String>,
    pub(super) subnets: Vec<String>,
    pub(super) security_groups: Vec<String>,
}

impl EcsPlatform {
    /// The production forward: the rule's actions with `rule_arn`, else the listener's.
    pub async fn forward(&self) -> Result<Forward, PlatformError> {
        let (what, actions) = match &self.target.rule_arn {
            Some(rule) => (
                format!("rule {rule}"),
                rule_actions(&self.clients.elb, rule).await?,
            ),
            None => {
                let listener = &self.target.listener_arn;
                (
                    format!("listener {listener}"),
                    listener_actions(&self.clients.elb, listener).await?,
                )
            }
        };
        let actions = actions.ok_or_else(|| {
            PlatformError::new(ErrorKind::Platform, format!("elbv2: {what} was not found"))
                .with_hint("check the ARN in the target's config")
        })?;
        Forward::from_actions(&actions).map_err(|e| {
            PlatformError::new(ErrorKind::Platform, format!("elbv2: {what}: {e}"))
                .with_hint("shipit moves traffic by changing a forward action's target groups; give it a listener or rule that forwards")
        })
    }

    pub(super) fn routing(&self, forward: &Forward) -> Result<Option<Routing>, PlatformError> {
        forward.routing(&self.target.target_groups).map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "elbv2: {}: {e}",
                    self.target
                        .rule_arn
                        .as_deref()
                        .unwrap_or(&self.target.listener_arn)
                ),
            )
            .with_hint(
                "point it at the blue or green target group of the config, or fix target_groups",
            )
        })
    }

    /// The ECS service of `slot`, if it exists and is not deleted.
    pub async fn slot_service(&self, slot: Slot) -> Result<Option<SlotService>, PlatformError> {
        let name = self.names.get(slot);
        let out = self
            .clients
            .ecs
            .describe_services()
            .cluster(&self.target.cluster)
            .services(name)
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .map_err(|e| aws_error("DescribeServices", name, &e))?;
        let Some(found) = out
            .services()
            .iter()
            .find(|s| s.service_name() == Some(name.as_str()) && s.status() == Some("ACTIVE"))
        else {
            return Ok(None);
        };
        let tags: BTreeMap<&str, &str> = found
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?, t.value()?)))
            .collect();
        let task_definition = found.task_definition().map(str::to_string);
        let release = match &task_definition {
            Some(td) => self.release_of(td).await?,
            None => None,
        };
        Ok(Some(SlotService {
            name: name.clone(),
            arn: found.service_arn().unwrap_or_default().to_string(),
            desired: found.desired_count(),
            running: found.running_count(),
            task_definition,
            release,
            retire_after: tags
                .get(TAG_RETIRE_AFTER)
                .and_then(|t| t.parse::<Timestamp>().ok()),
        }))
    }

    /// Whether a task definition can still run: it exists and is `ACTIVE` (not deregistered).
    pub(super) async fn task_definition_active(
        &self,
        task_definition: &str,
    ) -> Result<bool, PlatformError> {
        match self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
        {
            Ok(out) => Ok(out.task_definition().and_then(|t| t.status())
                == Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_client_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(aws_error("DescribeTaskDefinition", task_definition, &e)),
        }
    }

    /// The release a task definition runs: its `shipit.release` tag, else the container's
    /// `SHIPIT_RELEASE`.
    pub(super) async fn release_of(
        &self,
        task_definition: &str,
    ) -> Result<Option<String>, PlatformError> {
        let out = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTaskDefinition", task_definition, &e))?;
        if let Some(tag) = out
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_RELEASE))
            .and_then(|t| t.value())
        {
            return Ok(Some(tag.to_string()));
        }
        Ok(out
            .task_definition()
            .into_iter()
            .flat_map(|t| t.container_definitions())
            .flat_map(|c| c.environment())
            .find(|e| e.name() == Some("SHIPIT_RELEASE"))
            .and_then(|e| e.value())
            .map(str::to_string))
    }

    /// Reads the forward, the distribution and both services: what is live and what is not.
    pub async fn state(&self) -> Result<EcsState, PlatformError> {
        let forward = self.forward().await?;
        let routing = self.routing(&forward)?;
        let cdn_origin = self.cdn_origin().await?;
        let (routed, split_percent) = match (&self.target.cdn, &cdn_origin) {
            (Some(cdn), Some(domain)) => (distribution::slot_of(domain, &cdn.origins), 0),
            _ => (
                routing.map(|r| r.live),
                routing.map_or(0, |r| r.split_percent),
            ),
        };
        let blue = self.slot_service(Slot::Blue).await?;
        let green = self.slot_service(Slot::Green).await?;
        // During a weighted step the larger weight may be the candidate's (80 % of a linear
        // shift). The candidate is the slot whose task definition was registered last: the
        // other one is live.
        let routed = match (routed, &blue, &green) {
            (Some(heavier), Some(b), Some(g)) if split_percent > 0 => {
                match (
                    revision(b.task_definition.as_deref()),
                    revision(g.task_definition.as_deref()),
                ) {
                    (Some(rb), Some(rg)) if rb != rg => {
                        Some(if rb < rg { Slot::Blue } else { Slot::Green })
                    }
                    _ => Some(heavier),
                }
            }
            _ => routed,
        };
        self.first_is_green.store(
            routed == Some(Slot::Blue),
            std::sync::atomic::Ordering::Relaxed,
        );
        let split_percent = match routed {
            Some(live) if split_percent > 0 => {
                let other = forward.weight_of(self.group(live.other())).max(0);
                let total = (other + forward.weight_of(self.group(live)).max(0)).max(1);
                u8::try_from(other * 100 / total).unwrap_or(0)
            }
            _ => split_percent,
        };
        let mut state = EcsState {
            forward,
            routed,
            split_percent,
            cdn_origin,
            blue,
            green,
            live: None,
        };
        state.live = routed.and_then(|slot| {
            let service = state.service(slot)?;
            if service.desired <= 0 {
                return None;
            }
            let release = service.release.clone().unwrap_or_else(|| {
                service
                    .task_definition
                    .as_deref()
                    .map_or_else(|| "unknown".to_string(), |td| short_arn(td).to_string())
            });
            Some(Live {
                slot,
                release,
                since: None,
                foreign: None,
            })
        });
        // No shipit service runs in the routed slot, yet its target group may serve: targets
        // another tool (or a hand) registered. That is a foreign release, live as much as
        // shipit's own: a release goes to the other slot and shifts only once verified.
        if state.live.is_none()
            && let Some(slot) = routed
        {
            let health = self.target_health(self.group(slot)).await?;
            if health.healthy > 0 {
                state.live = Some(Live {
                    slot,
                    release: FOREIGN_RELEASE.to_string(),
                    since: None,
                    foreign: Some(foreign_description(slot, &health)),
                });
            }
        }
        Ok(state)
    }

    /// The targets of `group` and their health, now.
    pub(super) async fn target_health(
        &self,
        group: &str,
    ) -> Result<wait::TargetHealth, PlatformError> {
        match wait::targets(&self.clients.elb, group, 0).await {
            Ok(wait::Poll::Done(health) | wait::Poll::Pending(health)) => Ok(health),
            Ok(wait::Poll::Failed(health, _)) => Ok(health),
            Err(FetchError::Throttled(m) | FetchError::Transient(m) | FetchError::Fatal(m)) => {
                Err(PlatformError::new(
                    ErrorKind::Platform,
                    format!("elbv2: DescribeTargetHealth {group}: {m}"),
                ))
            }
        }
    }
}

/// The release id a foreign live slot reports: no shipit release has it.
pub const FOREIGN_RELEASE: &str = "foreign";

/// What serves in a foreign live slot, for `status` and the log.
fn foreign_description(slot: Slot, health: &wait::TargetHealth) -> String {
    let targets = if health.healthy == 1 {
        "target"
    } else {
        "targets"
    };
    format!(
        "not shipit's: {} healthy {targets} in the {slot} target group {} that no shipit service registered",
        health.healthy,
        short_arn(&health.target_group)
    )
}

/// The revision of a task definition ARN (`…:task-definition/prod-hello:7` → 7).
fn revision(arn: Option<&str>) -> Option<u64> {
    arn?.rsplit(':').next()?.parse().ok()
}

/// The production URL (the distribution's domain in CDN mode, else the load balancer's
/// name and the listener's port), the test listener's, and the load balancer's subnets and
/// security groups.
pub(super) async fn read_site(
    clients: &Clients,
    target: &EcsTarget,
) -> Result<Site, PlatformError> {
    let mut arns = vec![target.listener_arn.clone()];
    if let Some(test) = &target.test_listener_arn {
        arns.push(test.clone());
    }
    let out = clients
        .elb
        .describe_listeners()
        .set_listener_arns(Some(arns))
        .send()
        .await
        .map_err(|e| aws_error("DescribeListeners", &target.listener_arn, &e))?;
    let listener = |arn: &str| {
        out.listeners()
            .iter()
            .find(|l| l.listener_arn() == Some(arn))
    };
    let production = listener(&target.listener_arn).ok_or_else(|| {
        PlatformError::new(
            ErrorKind::Platform,
            format!("elbv2: listener {} was not found", target.listener_arn),
        )
        .with_hint("check listener_arn and the target's region")
    })?;
    let lb_arn = production
        .load_balancer_arn()
        .unwrap_or_default()
        .to_string();
    let lbs = clients
        .elb
        .describe_load_balancers()
        .load_balancer_arns(&lb_arn)
        .send()
        .await
        .map_err(|e| aws_error("DescribeLoadBalancers", &lb_arn, &e))?;
    let lb = lbs.load_balancers().first();
    let dns = lb
        .and_then(|l| l.dns_name())
        .unwrap_or("unknown")
        .to_string();
    let url_of = |l: &aws_sdk_elasticloadbalancingv2::types::Listener| {
        let scheme = match l.protocol().map(|p| p.as_str()) {
            Some("HTTPS") => "https",
            _ => "http",
        };
        match (scheme, l.port()) {
            ("http", Some(80)) | ("https", Some(443)) | (_, None) => format!("{scheme}://{dns}"),
            (_, Some(port)) => format!("{scheme}://{dns}:{port}"),
        }
    };
    let mut url = format!("{}/", url_of(production));
    if let Some(cdn) = &target.cdn {
        let id = &cdn.distribution_id;
        let d = clients
            .cloudfront
            .get_distribution()
            .id(id)
            .send()
            .await
            .map_err(|e| aws_error("GetDistribution", id, &e))?;
        if let Some(d) = d.distribution() {
            url = format!("https://{}/", d.domain_name());
        }
    }
    let test_url = target.test_url.clone().or_else(|| {
        target
            .test_listener_arn
            .as_deref()
            .and_then(listener)
            .map(url_of)
    });
    if let Some(given) = &target.url {
        url = if given.ends_with('/') {
            given.clone()
        } else {
            format!("{given}/")
        };
    }
    Ok(Site {
        url,
        test_url,
        subnets: lb
            .map(|l| {
                l.availability_zones()
                    .iter()
                    .filter_map(|z| z.subnet_id().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        security_groups: lb.map(|l| l.security_groups().to_vec()).unwrap_or_default(),
    })
}

/// The default actions of a listener, `None` when ELBv2 does not know it. Read before every
/// change so that actions other than the forward are kept.
pub async fn listener_actions(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    listener_arn: &str,
) -> Result<Option<Vec<aws_sdk_elasticloadbalancingv2::types::Action>>, PlatformError> {
    let out = elb
        .describe_listeners()
        .listener_arns(listener_arn)
        .send()
        .await
        .map_err(|e| aws_error("DescribeListeners", listener_arn, &e))?;
    Ok(out
        .listeners()
        .first()
        .map(|l| l.default_actions().to_vec()))
}

/// The actions of a listener rule, `None` when ELBv2 does not know it.
pub async fn rule_actions(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    rule_arn: &str,
) -> Result<Option<Vec<aws_sdk_elasticloadbalancingv2::types::Action>>, PlatformError> {
    let out = elb
        .describe_rules()
        .rule_arns(rule_arn)
        .send()
        .await
        .map_err(|e| aws_error("DescribeRules", rule_arn, &e))?;
    Ok(out.rules().first().map(|r| r.actions().to_vec()))
}
