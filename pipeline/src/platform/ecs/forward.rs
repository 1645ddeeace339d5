//! Where a listener (or listener rule) forwards: which target groups, with which weights.
//!
//! This is the ecs target's routing table, and the source of truth for the live slot: the
//! slot whose target group has the largest weight is live. shipit always writes one forward
//! action with a forward config that lists **both** slots' target groups — 100/0 when all
//! traffic is on one slot, `100 − p`/`p` during a weighted step — rather than a forward to a
//! single group. Both groups then stay associated with the load balancer, which ECS requires
//! before it will register the idle service's tasks in its group, and every shift, weighted
//! or not, is the same one `ModifyListener`/`ModifyRule` call. Targets are never
//! re-registered to move traffic. Actions other than the forward (an authentication step
//! before it) are kept as they are, and so is the forward's group stickiness.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
};
use serde::Serialize;

use crate::Slot;
use crate::config::PerSlot;

/// One target group of a forward, with its weight (0 to 999, as ELB takes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedGroup {
    #[serde(rename = "TargetGroupArn")]
    pub target_group: String,
    #[serde(rename = "Weight")]
    pub weight: i32,
}

/// A forward action, as shipit reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    #[serde(rename = "TargetGroups")]
    pub groups: Vec<WeightedGroup>,
}

/// Which slot a forward sends traffic to, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    /// The slot with the larger weight.
    pub live: Slot,
    /// The other slot's share, in percent: 0 unless a weighted step is in progress.
    pub split_percent: u8,
}

impl Forward {
    /// All traffic to `to`, none to `other` (both listed; see the module doc).
    pub fn all_to(to: &str, other: &str) -> Forward {
        Forward {
            groups: vec![
                WeightedGroup {
                    target_group: to.to_string(),
                    weight: 100,
                },
                WeightedGroup {
                    target_group: other.to_string(),
                    weight: 0,
                },
            ],
        }
    }

    /// `percent` of traffic to `candidate`, the rest to `live`.
    pub fn split(live: &str, candidate: &str, percent: u8) -> Forward {
        let percent = i32::from(percent.min(100));
        Forward {
            groups: vec![
                WeightedGroup {
                    target_group: live.to_string(),
                    weight: 100 - percent,
                },
                WeightedGroup {
                    target_group: candidate.to_string(),
                    weight: percent,
                },
            ],
        }
    }

    /// The forward of a list of actions (a listener's default actions, or a rule's).
    pub fn from_actions(actions: &[Action]) -> Result<Forward, String> {
        let forward = actions
            .iter()
            .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
            .ok_or_else(|| {
                let kinds: Vec<&str> = actions
                    .iter()
                    .filter_map(|a| a.r#type().map(|t| t.as_str()))
                    .collect();
                format!(
                    "it has no forward action (its actions: {})",
                    if kinds.is_empty() {
                        "none".to_string()
                    } else {
                        kinds.join(", ")
                    }
                )
            })?;
        let listed: Vec<WeightedGroup> = forward
            .forward_config()
            .map(|c| c.target_groups())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                Some(WeightedGroup {
                    target_group: t.target_group_arn()?.to_string(),
                    // ELB's default weight is 1.
                    weight: t.weight().unwrap_or(1),
                })
            })
            .collect();
        if !listed.is_empty() {
            return Ok(Forward { groups: listed });
        }
        match forward.target_group_arn() {
            Some(arn) => Ok(Forward {
                groups: vec![WeightedGroup {
                    target_group: arn.to_string(),
                    weight: 100,
                }],
            }),
            None => Err("its forward action names no target group".to_string()),
        }
    }

    /// The weight of `target_group` (0 when it is not listed).
    pub fn weight_of(&self, target_group: &str) -> i32 {
        self.groups
            .iter()
            .filter(|g| g.target_group == target_group)
            .map(|g| g.weight)
            .sum()
    }

    /// Which slot this forward makes live. Traffic to a group that is neither slot's is an
    /// error naming it: shipit will not guess what it is.
    pub fn routing(&self, groups: &PerSlot<String>) -> Result<Option<Routing>, String> {
        if let Some(stranger) = self
            .groups
            .iter()
            .find(|g| g.weight > 0 && groups.slot_of(|arn| *arn == g.target_group).is_none())
        {
            return Err(format!(
                "it forwards to target group {}, which is neither the blue nor the green one",
                stranger.target_group
            ));
        }
        let blue = self.weight_of(&groups.blue);
        let green = self.weight_of(&groups.green);
        let total = blue + green;
        if total <= 0 {
            return Ok(None);
        }
        // A tie (a 50 % step) keeps blue as the live slot: it cannot be told apart.
        let (live, other) = if green > blue {
            (Slot::Green, blue)
        } else {
            (Slot::Blue, green)
        };
        let split_percent = u8::try_from(other * 100 / total).unwrap_or(0);
        Ok(Some(Routing {
            live,
            split_percent,
        }))
    }

    /// `actions` with their forward action replaced by this forward (its stickiness kept);
    /// the other actions stay as they are. With no forward action, this one is added.
    pub fn apply_to(&self, actions: &[Action]) -> Vec<Action> {
        let tuples: Vec<TargetGroupTuple> = self
            .groups
            .iter()
            .map(|g| {
                TargetGroupTuple::builder()
                    .target_group_arn(&g.target_group)
                    .weight(g.weight)
                    .build()
            })
            .collect();
        let build = |old: Option<&Action>| {
            let stickiness = old
                .and_then(|a| a.forward_config())
                .and_then(|c| c.target_group_stickiness_config())
                .cloned();
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .set_order(old.and_then(|a| a.order()))
                .forward_config(
                    ForwardActionConfig::builder()
                        .set_target_groups(Some(tuples.clone()))
                        .set_target_group_stickiness_config(stickiness)
                        .build(),
                )
                .build()
        };
        let mut replaced = false;
        let mut out: Vec<Action> = actions
            .iter()
            .map(|a| {
                if !replaced && a.r#type() == Some(&ActionTypeEnum::Forward) {
                    replaced = true;
                    build(Some(a))
                } else {
                    a.clone()
                }
            })
            .collect();
        if !replaced {
            out.push(build(None));
        }
        out
    }

    /// `blue 100%, green 0%`, for messages.
    pub fn describe(&self, groups: &PerSlot<String>) -> String {
        self.groups
            .iter()
            .map(|g| {
                let name = groups
                    .slot_of(|arn| *arn == g.target_group)
                    .map_or_else(|| g.target_group.clone(), |s| s.to_string());
                format!("{name} {}", g.weight)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_elasticloadbalancingv2::types::TargetGroupStickinessConfig;

    use super::*;

    const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/1";
    const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/green/2";

    fn groups() -> PerSlot<String> {
        PerSlot {
            blue: BLUE.into(),
            green: GREEN.into(),
        }
    }

    fn single(arn: &str) -> Action {
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(arn)
            .build()
    }

    #[test]
    fn single_target_group_forward_is_all_to_it() {
        let forward = Forward::from_actions(&[single(GREEN)]).expect("a forward");
        assert_eq!(
            forward.routing(&groups()).expect("known groups"),
            Some(Routing {
                live: Slot::Green,
                split_percent: 0
            })
        );
    }

    #[test]
    fn weighted_forward_is_read_back_as_written() {
        let actions = Forward::split(BLUE, GREEN, 25).apply_to(&[single(BLUE)]);
        let forward = Forward::from_actions(&actions).expect("a forward");
        assert_eq!(forward, Forward::split(BLUE, GREEN, 25));
        assert_eq!(
            forward.routing(&groups()).expect("known groups"),
            Some(Routing {
                live: Slot::Blue,
                split_percent: 25
            })
        );
        assert_eq!(forward.describe(&groups()), "blue 75, green 25");
    }

    #[test]
    fn all_to_keeps_the_other_group_listed_at_zero() {
        let forward = Forward::all_to(GREEN, BLUE);
        assert_eq!(forward.weight_of(GREEN), 100);
        assert_eq!(forward.weight_of(BLUE), 0);
        assert_eq!(forward.groups.len(), 2);
        assert_eq!(
            forward.routing(&groups()).expect("known").map(|r| r.live),
            Some(Slot::Green)
        );
    }

    #[test]
    fn unknown_target_group_is_refused() {
        let forward = Forward::from_actions(&[single("arn:other")]).expect("a forward");
        let error = forward.routing(&groups()).expect_err("a stranger");
        assert!(error.contains("arn:other"), "{error}");
    }

    #[test]
    fn listener_without_forward_says_what_it_has() {
        let redirect = Action::builder().r#type(ActionTypeEnum::Redirect).build();
        let error = Forward::from_actions(&[redirect]).expect_err("no forward");
        assert_eq!(error, "it has no forward action (its actions: redirect)");
    }

    #[test]
    fn apply_keeps_other_actions_order_and_stickiness() {
        let auth = Action::builder()
            .r#type(ActionTypeEnum::AuthenticateOidc)
            .order(1)
            .build();
        let sticky = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .order(2)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(TargetGroupTuple::builder().target_group_arn(BLUE).build())
                    .target_group_stickiness_config(
                        TargetGroupStickinessConfig::builder()
                            .enabled(true)
                            .duration_seconds(300)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let out = Forward::all_to(GREEN, BLUE).apply_to(&[auth.clone(), sticky]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], auth);
        assert_eq!(out[1].order(), Some(2));
        let config = out[1].forward_config().expect("forward config");
        assert_eq!(
            config
                .target_group_stickiness_config()
                .and_then(|s| s.duration_seconds()),
            Some(300)
        );
        assert_eq!(
            Forward::from_actions(&out).expect("forward"),
            Forward::all_to(GREEN, BLUE)
        );
    }

    #[test]
    fn no_weight_means_nothing_is_live() {
        let forward = Forward {
            groups: vec![WeightedGroup {
                target_group: BLUE.into(),
                weight: 0,
            }],
        };
        assert_eq!(forward.routing(&groups()).expect("known"), None);
    }
}
