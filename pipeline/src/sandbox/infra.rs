//! What an ecs target needs, created through the SDK on the sandbox's endpoint: a VPC with
//! two subnets in two zones, a security group, an application load balancer, a target group
//! per slot, a production listener (port 80) and a test listener (port 8080), and a cluster.
//!
//! Every resource is named after a prefix and found again by that name before it is
//! created, so `up` run twice (or against an endpoint that already holds them) creates
//! nothing twice. The production listener starts forwarding to green and the test listener
//! to blue: a first release takes the slot traffic is not on, blue.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum,
    TargetGroupAttribute, TargetTypeEnum,
};
use serde::{Deserialize, Serialize};

use super::SandboxError;
use crate::aws::{Clients, describe_error};

/// The port of the tasks' containers that the target groups are created with (ECS
/// registers each task on its container port whatever the group's).
const GROUP_PORT: i32 = 8080;
const PRODUCTION_PORT: i32 = 80;
/// How long a task leaving a target group keeps its in-flight requests.
pub const DEREGISTRATION_DELAY_SECONDS: &str = "5";
const TEST_PORT: i32 = 8080;

/// The resources of one sandbox, as created or found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Infra {
    pub region: String,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub security_group: String,
    pub load_balancer_arn: String,
    pub load_balancer_dns: String,
    pub target_groups: Groups,
    pub listener_arn: String,
    pub test_listener_arn: String,
    pub cluster: String,
}

/// The target group of each slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Groups {
    pub blue: String,
    pub green: String,
}

fn failed<E>(call: &str, error: &E) -> SandboxError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    SandboxError::Aws {
        call: call.to_string(),
        message: describe_error(error),
    }
}

fn name_tag(kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

fn tag_filter(name: &str) -> Filter {
    Filter::builder().name("tag:Name").values(name).build()
}

/// Finds or creates every resource of the sandbox `prefix` (at most 20 characters, so that
/// `<prefix>-green` fits a target group's name). `health_path` is the target groups' health
/// check path. `progress` is told what was created or found.
pub async fn ensure(
    clients: &Clients,
    region: &str,
    prefix: &str,
    health_path: &str,
    progress: &dyn Fn(&str),
) -> Result<Infra, SandboxError> {
    let ec2 = &clients.ec2;
    let said = |verb: &str, what: &str, id: &str| progress(&format!("{verb} {what} {id}"));

    let vpc_name = format!("{prefix}-vpc");
    let found = ec2
        .describe_vpcs()
        .filters(tag_filter(&vpc_name))
        .send()
        .await
        .map_err(|e| failed("DescribeVpcs", &e))?;
    let vpc_id = match found.vpcs().iter().find_map(|v| v.vpc_id()) {
        Some(id) => {
            said("found", "VPC", id);
            id.to_string()
        }
        None => {
            let out = ec2
                .create_vpc()
                .cidr_block("10.0.0.0/16")
                .tag_specifications(name_tag(ResourceType::Vpc, &vpc_name))
                .send()
                .await
                .map_err(|e| failed("CreateVpc", &e))?;
            let id = out.vpc().and_then(|v| v.vpc_id()).unwrap_or_default();
            said("created", "VPC", id);
            id.to_string()
        }
    };

    let zones = ec2
        .describe_availability_zones()
        .send()
        .await
        .map_err(|e| failed("DescribeAvailabilityZones", &e))?;
    let zones: Vec<String> = zones
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name().map(str::to_string))
        .take(2)
        .collect();
    if zones.len() < 2 {
        return Err(SandboxError::Aws {
            call: "DescribeAvailabilityZones".into(),
            message: format!(
                "region {region} lists {} availability zone(s); a load balancer needs two",
                zones.len()
            ),
        });
    }
    let mut subnets = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        let name = format!("{prefix}-subnet-{}", i + 1);
        let found = ec2
            .describe_subnets()
            .filters(tag_filter(&name))
            .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
            .send()
            .await
            .map_err(|e| failed("DescribeSubnets", &e))?;
        let id = match found.subnets().iter().find_map(|s| s.subnet_id()) {
            Some(id) => {
                said("found", "subnet", id);
                id.to_string()
            }
            None => {
                let out = ec2
                    .create_subnet()
                    .vpc_id(&vpc_id)
                    .cidr_block(format!("10.0.{}.0/24", i + 1))
                    .availability_zone(zone)
                    .tag_specifications(name_tag(ResourceType::Subnet, &name))
                    .send()
                    .await
                    .map_err(|e| failed("CreateSubnet", &e))?;
                let id = out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default();
                said("created", "subnet", id);
                id.to_string()
            }
        };
        subnets.push(id);
    }

    let group_name = format!("{prefix}-tasks");
    let found = ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values(&group_name)
                .build(),
        )
        .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .map_err(|e| failed("DescribeSecurityGroups", &e))?;
    let security_group = match found.security_groups().iter().find_map(|g| g.group_id()) {
        Some(id) => {
            said("found", "security group", id);
            id.to_string()
        }
        None => {
            let out = ec2
                .create_security_group()
                .group_name(&group_name)
                .description(format!("shipit sandbox {prefix}: the service's tasks"))
                .vpc_id(&vpc_id)
                .send()
                .await
                .map_err(|e| failed("CreateSecurityGroup", &e))?;
            let id = out.group_id().unwrap_or_default();
            said("created", "security group", id);
            id.to_string()
        }
    };

    let elb = &clients.elb;
    let lb_name = format!("{prefix}-alb");
    let found = elb
        .describe_load_balancers()
        .send()
        .await
        .map_err(|e| failed("DescribeLoadBalancers", &e))?;
    let existing = found
        .load_balancers()
        .iter()
        .find(|lb| lb.load_balancer_name() == Some(lb_name.as_str()))
        .cloned();
    let lb = match existing {
        Some(lb) => {
            said(
                "found",
                "load balancer",
                lb.load_balancer_arn().unwrap_or_default(),
            );
            lb
        }
        None => {
            let out = elb
                .create_load_balancer()
                .name(&lb_name)
                .r#type(LoadBalancerTypeEnum::Application)
                .scheme(LoadBalancerSchemeEnum::InternetFacing)
                .set_subnets(Some(subnets.clone()))
                .security_groups(&security_group)
                .send()
                .await
                .map_err(|e| failed("CreateLoadBalancer", &e))?;
            let lb = out
                .load_balancers()
                .first()
                .cloned()
                .ok_or_else(|| SandboxError::Aws {
                    call: "CreateLoadBalancer".into(),
                    message: "the answer holds no load balancer".into(),
                })?;
            said(
                "created",
                "load balancer",
                lb.load_balancer_arn().unwrap_or_default(),
            );
            lb
        }
    };
    let load_balancer_arn = lb.load_balancer_arn().unwrap_or_default().to_string();
    let load_balancer_dns = lb.dns_name().unwrap_or_default().to_string();

    let found = elb
        .describe_target_groups()
        .send()
        .await
        .map_err(|e| failed("DescribeTargetGroups", &e))?;
    let group = |slot: &str| -> Option<String> {
        let name = format!("{prefix}-{slot}");
        found
            .target_groups()
            .iter()
            .find(|g| g.target_group_name() == Some(name.as_str()))
            .and_then(|g| g.target_group_arn().map(str::to_string))
    };
    let (blue, green) = (group("blue"), group("green"));
    let mut groups = Vec::new();
    for (slot, existing) in [("blue", blue), ("green", green)] {
        let arn = match existing {
            Some(arn) => {
                said("found", "target group", &arn);
                arn
            }
            None => {
                let out = elb
                    .create_target_group()
                    .name(format!("{prefix}-{slot}"))
                    .protocol(ProtocolEnum::Http)
                    .port(GROUP_PORT)
                    .vpc_id(&vpc_id)
                    .target_type(TargetTypeEnum::Ip)
                    .health_check_path(health_path)
                    .send()
                    .await
                    .map_err(|e| failed("CreateTargetGroup", &e))?;
                let arn = out
                    .target_groups()
                    .first()
                    .and_then(|g| g.target_group_arn())
                    .unwrap_or_default()
                    .to_string();
                // AWS's default of 300 s would make every scale-in of the sandbox wait
                // five minutes.
                elb.modify_target_group_attributes()
                    .target_group_arn(&arn)
                    .attributes(
                        TargetGroupAttribute::builder()
                            .key("deregistration_delay.timeout_seconds")
                            .value(DEREGISTRATION_DELAY_SECONDS)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| failed("ModifyTargetGroupAttributes", &e))?;
                said("created", "target group", &arn);
                arn
            }
        };
        groups.push(arn);
    }
    let target_groups = Groups {
        blue: groups[0].clone(),
        green: groups[1].clone(),
    };

    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(&load_balancer_arn)
        .send()
        .await
        .map_err(|e| failed("DescribeListeners", &e))?;
    let mut arns = Vec::new();
    for (port, group, what) in [
        (PRODUCTION_PORT, &target_groups.green, "production listener"),
        (TEST_PORT, &target_groups.blue, "test listener"),
    ] {
        let existing = listeners
            .listeners()
            .iter()
            .find(|l| l.port() == Some(port))
            .and_then(|l| l.listener_arn());
        let arn = match existing {
            Some(arn) => {
                said("found", what, arn);
                arn.to_string()
            }
            None => {
                let out = elb
                    .create_listener()
                    .load_balancer_arn(&load_balancer_arn)
                    .protocol(ProtocolEnum::Http)
                    .port(port)
                    .default_actions(
                        Action::builder()
                            .r#type(ActionTypeEnum::Forward)
                            .target_group_arn(group)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| failed("CreateListener", &e))?;
                let arn = out
                    .listeners()
                    .first()
                    .and_then(|l| l.listener_arn())
                    .unwrap_or_default()
                    .to_string();
                said("created", what, &arn);
                arn
            }
        };
        arns.push(arn);
    }

    let ecs = &clients.ecs;
    let found = ecs
        .describe_clusters()
        .clusters(prefix)
        .send()
        .await
        .map_err(|e| failed("DescribeClusters", &e))?;
    let active = found
        .clusters()
        .iter()
        .any(|c| c.cluster_name() == Some(prefix) && c.status() == Some("ACTIVE"));
    if active {
        said("found", "ECS cluster", prefix);
    } else {
        ecs.create_cluster()
            .cluster_name(prefix)
            .send()
            .await
            .map_err(|e| failed("CreateCluster", &e))?;
        said("created", "ECS cluster", prefix);
    }

    Ok(Infra {
        region: region.to_string(),
        vpc_id,
        subnets,
        security_group,
        load_balancer_arn,
        load_balancer_dns,
        target_groups,
        listener_arn: arns[0].clone(),
        test_listener_arn: arns[1].clone(),
        cluster: prefix.to_string(),
    })
}

/// Deletes what [`ensure`] made, last made first; one already gone is skipped. For an
/// endpoint the sandbox did not start (`--endpoint`): a moto it started loses everything
/// when it stops.
pub async fn remove(clients: &Clients, infra: &Infra) -> Result<(), SandboxError> {
    let gone = |code: Option<&str>| {
        code.is_some_and(|c| {
            c.contains("NotFound")
                || c.starts_with("InvalidVpcID")
                || c.starts_with("InvalidSubnetID")
                || c.starts_with("InvalidGroup")
        })
    };
    macro_rules! best {
        ($call:expr, $name:literal) => {
            match $call.send().await {
                Ok(_) => {}
                Err(e) if gone(crate::aws::error_code(&e)) => {}
                Err(e) => return Err(failed($name, &e)),
            }
        };
    }
    let elb = &clients.elb;
    for arn in [&infra.listener_arn, &infra.test_listener_arn] {
        best!(elb.delete_listener().listener_arn(arn), "DeleteListener");
    }
    best!(
        elb.delete_load_balancer()
            .load_balancer_arn(&infra.load_balancer_arn),
        "DeleteLoadBalancer"
    );
    for arn in [&infra.target_groups.blue, &infra.target_groups.green] {
        best!(
            elb.delete_target_group().target_group_arn(arn),
            "DeleteTargetGroup"
        );
    }
    best!(
        clients.ecs.delete_cluster().cluster(&infra.cluster),
        "DeleteCluster"
    );
    let ec2 = &clients.ec2;
    best!(
        ec2.delete_security_group().group_id(&infra.security_group),
        "DeleteSecurityGroup"
    );
    for subnet in &infra.subnets {
        best!(ec2.delete_subnet().subnet_id(subnet), "DeleteSubnet");
    }
    best!(ec2.delete_vpc().vpc_id(&infra.vpc_id), "DeleteVpc");
    Ok(())
}
