//! One test's AWS infrastructure on moto, created through the SDK and the EC2 Query API,
//! and read back for the assertions.

use super::*;

/// One test's AWS infrastructure on moto, all named after a unique prefix so tests run in
/// parallel against one server: a VPC (10.N.0.0/16) with a subnet per slot, a security group,
/// an ALB, a target group per slot (target type ip, port 8080), a production listener (port
/// 80) and a test listener (port 8080), both forwarding to green, an ECS cluster and an ECR
/// repository. A listener needs a default action; the production one starts on green (where
/// `localstack/bootstrap.sh` starts it on blue) so that a first release, which takes the slot
/// traffic is not routed to, takes blue. No service exists yet, so nothing is live until the
/// first release moves it.
pub struct Infra {
    pub prefix: String,
    pub clients: Clients,
    pub vpc_id: String,
    /// The VPC's second octet: slot targets are 10.N.1.x (blue) and 10.N.2.x (green).
    pub net: u8,
    pub subnets: SlotPair<String>,
    pub security_group: String,
    pub load_balancer_arn: String,
    pub load_balancer_dns: String,
    pub target_groups: SlotPair<String>,
    pub listener_arn: String,
    pub test_listener_arn: String,
    pub cluster: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The ECR repository's URI (`<acct>.dkr.ecr.<region>.amazonaws.com/<prefix>`); moto has
    /// no registry behind it, so configs push to [`Registry`] instead.
    pub ecr_repository: String,
}

impl Infra {
    pub async fn create(prefix: &str) -> Infra {
        let prefix = unique(prefix);
        assert!(
            prefix.len() <= 20,
            "prefix {prefix} is too long for ALB names"
        );
        let clients = Clients::new().await;
        static NET: AtomicU32 = AtomicU32::new(0);
        let net = (NET.fetch_add(1, Ordering::Relaxed) % 250 + 1) as u8;

        let vpc_id = xml_value(
            &ec2("CreateVpc", &[("CidrBlock", &format!("10.{net}.0.0/16"))]).await,
            "vpcId",
        );
        let mut subnet = Vec::new();
        for (i, zone) in [(1, "us-east-1a"), (2, "us-east-1b")] {
            subnet.push(xml_value(
                &ec2(
                    "CreateSubnet",
                    &[
                        ("VpcId", &vpc_id),
                        ("CidrBlock", &format!("10.{net}.{i}.0/24")),
                        ("AvailabilityZone", zone),
                    ],
                )
                .await,
                "subnetId",
            ));
        }
        let subnets = SlotPair {
            blue: subnet[0].clone(),
            green: subnet[1].clone(),
        };
        let security_group = xml_value(
            &ec2(
                "CreateSecurityGroup",
                &[
                    ("GroupName", &format!("{prefix}-tasks")),
                    ("GroupDescription", "shipit test tasks"),
                    ("VpcId", &vpc_id),
                ],
            )
            .await,
            "groupId",
        );

        let elb = &clients.elb;
        let lb = elb
            .create_load_balancer()
            .name(format!("{prefix}-alb"))
            .r#type(LoadBalancerTypeEnum::Application)
            .subnets(&subnets.blue)
            .subnets(&subnets.green)
            .security_groups(&security_group)
            .send()
            .await
            .expect("CreateLoadBalancer");
        let lb = &lb.load_balancers()[0];
        let load_balancer_arn = lb.load_balancer_arn().unwrap().to_string();
        let load_balancer_dns = lb.dns_name().unwrap_or_default().to_string();
        let mut tg = Vec::new();
        for slot in ["blue", "green"] {
            let out = elb
                .create_target_group()
                .name(format!("{prefix}-{slot}"))
                .protocol(ProtocolEnum::Http)
                .port(TARGET_PORT)
                .vpc_id(&vpc_id)
                .target_type(TargetTypeEnum::Ip)
                .health_check_path("/healthz")
                .send()
                .await
                .expect("CreateTargetGroup");
            tg.push(
                out.target_groups()[0]
                    .target_group_arn()
                    .unwrap()
                    .to_string(),
            );
        }
        let target_groups = SlotPair {
            blue: tg[0].clone(),
            green: tg[1].clone(),
        };
        let listener = |port: i32, group: String| {
            elb.create_listener()
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
        };
        let listener_arn = listener(80, target_groups.green.clone())
            .await
            .expect("CreateListener (production)")
            .listeners()[0]
            .listener_arn()
            .unwrap()
            .to_string();
        let test_listener_arn = listener(8080, target_groups.green.clone())
            .await
            .expect("CreateListener (test)")
            .listeners()[0]
            .listener_arn()
            .unwrap()
            .to_string();

        let cluster = clients
            .ecs
            .create_cluster()
            .cluster_name(&prefix)
            .send()
            .await
            .expect("CreateCluster");
        let cluster_arn = cluster
            .cluster()
            .and_then(|c| c.cluster_arn())
            .unwrap()
            .to_string();
        let repo = clients
            .ecr
            .create_repository()
            .repository_name(&prefix)
            .send()
            .await
            .expect("CreateRepository");
        let ecr_repository = repo
            .repository()
            .and_then(|r| r.repository_uri())
            .unwrap()
            .to_string();

        Infra {
            cluster: prefix.clone(),
            prefix,
            clients,
            vpc_id,
            net,
            subnets,
            security_group,
            load_balancer_arn,
            load_balancer_dns,
            target_groups,
            listener_arn,
            test_listener_arn,
            cluster_arn,
            ecr_repository,
        }
    }

    /// The default ECS service name of `service` in `slot` (`<service>-blue`).
    pub fn service_name(service: &str, slot: Slot) -> String {
        format!("{service}-{slot}")
    }

    /// The `[targets.aws]` block of an ecs target on this infrastructure, releasing `service`
    /// and pushing to the shared local [`Registry`]; `extra` lines (e.g. `shift = "…"`) go
    /// inside the table.
    pub fn config_toml(&self, service: &str, extra: &str) -> String {
        let repository = Registry::start().repository(&format!("{}/{service}", self.prefix));
        format!(
            r#"
[targets.{TARGET}]
kind = "ecs"
region = "{REGION}"
cluster = "{cluster}"
listener_arn = "{listener}"
test_listener_arn = "{test_listener}"
target_groups = {{ blue = "{blue}", green = "{green}" }}
subnets = ["{subnet_blue}", "{subnet_green}"]
security_groups = ["{sg}"]
repository = "{repository}"
{extra}
"#,
            cluster = self.cluster,
            listener = self.listener_arn,
            test_listener = self.test_listener_arn,
            blue = self.target_groups.blue,
            green = self.target_groups.green,
            subnet_blue = self.subnets.blue,
            subnet_green = self.subnets.green,
            sg = self.security_group,
        )
    }

    /// The slot a target group ARN belongs to.
    pub fn slot_of(&self, target_group: &str) -> Option<Slot> {
        if target_group == self.target_groups.blue {
            Some(Slot::Blue)
        } else if target_group == self.target_groups.green {
            Some(Slot::Green)
        } else {
            None
        }
    }

    /// Where a listener forwards: `(target group ARN, weight)` per group, in the order stored.
    /// A plain forward (`TargetGroupArn`) has the weight `None`.
    pub async fn listener_forward(&self, listener_arn: &str) -> Vec<(String, Option<i32>)> {
        let out = self
            .clients
            .elb
            .describe_listeners()
            .listener_arns(listener_arn)
            .send()
            .await
            .expect("DescribeListeners");
        let action = out.listeners()[0]
            .default_actions()
            .iter()
            .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
            .cloned()
            .unwrap_or_else(|| panic!("listener {listener_arn} has no forward action"));
        forward_of(&action)
    }

    /// Where a listener rule forwards, as [`Infra::listener_forward`].
    pub async fn rule_forward(&self, rule_arn: &str) -> Vec<(String, Option<i32>)> {
        let out = self
            .clients
            .elb
            .describe_rules()
            .rule_arns(rule_arn)
            .send()
            .await
            .expect("DescribeRules");
        let action = out.rules()[0]
            .actions()
            .iter()
            .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
            .cloned()
            .unwrap_or_else(|| panic!("rule {rule_arn} has no forward action"));
        forward_of(&action)
    }

    /// The slot that gets all of a listener's traffic (a plain forward, or weight 100/0), or
    /// `None` while it is split.
    pub async fn listener_slot(&self, listener_arn: &str) -> Option<Slot> {
        let forward = self.listener_forward(listener_arn).await;
        let live: Vec<_> = forward
            .iter()
            .filter(|(_, w)| w.is_none_or(|w| w > 0))
            .collect();
        match live.as_slice() {
            [(group, _)] => self.slot_of(group),
            _ => None,
        }
    }

    /// A service of this cluster as stored in moto, or `None` if it does not exist (or was
    /// deleted).
    pub async fn service(&self, name: &str) -> Option<aws_sdk_ecs::types::Service> {
        let out = self
            .clients
            .ecs
            .describe_services()
            .cluster(&self.cluster)
            .services(name)
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .expect("DescribeServices");
        out.services()
            .iter()
            .find(|s| s.status() != Some("INACTIVE"))
            .cloned()
    }

    /// The image of the first container of a task definition.
    pub async fn task_definition_image(&self, task_definition: &str) -> String {
        let out = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .expect("DescribeTaskDefinition");
        out.task_definition().unwrap().container_definitions()[0]
            .image()
            .unwrap_or_default()
            .to_string()
    }

    /// The targets registered in a target group, with their health state.
    pub async fn targets(&self, target_group: &str) -> Vec<(String, String)> {
        let out = self
            .clients
            .elb
            .describe_target_health()
            .target_group_arn(target_group)
            .send()
            .await
            .expect("DescribeTargetHealth");
        out.target_health_descriptions()
            .iter()
            .map(|d| {
                (
                    d.target()
                        .and_then(|t| t.id())
                        .unwrap_or_default()
                        .to_string(),
                    d.target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// An SSM parameter's value, or `None` when it does not exist.
    pub async fn parameter(&self, name: &str) -> Option<String> {
        match self.clients.ssm.get_parameter().name(name).send().await {
            Ok(out) => out.parameter().and_then(|p| p.value()).map(str::to_string),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                None
            }
            Err(e) => panic!("GetParameter {name}: {e:?}"),
        }
    }

    /// The tags of an ECS resource.
    pub async fn service_tags(&self, arn: &str) -> std::collections::BTreeMap<String, String> {
        let out = self
            .clients
            .ecs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .expect("ListTagsForResource");
        out.tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect()
    }

    /// Sets one tag on an ECS resource, as an operator (or another tool) would.
    pub async fn tag_service(&self, arn: &str, key: &str, value: &str) {
        self.clients
            .ecs
            .tag_resource()
            .resource_arn(arn)
            .tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build(),
            )
            .send()
            .await
            .expect("TagResource");
    }

    /// The names of the SSM parameters that start with `prefix` (read by path from its
    /// folder, not recursively).
    pub async fn parameters_under(&self, prefix: &str) -> Vec<String> {
        let folder = prefix.rsplit_once('/').map_or("/", |(folder, _)| folder);
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .clients
                .ssm
                .get_parameters_by_path()
                .path(folder)
                .set_next_token(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetParametersByPath {folder}: {e:?}"));
            names.extend(
                out.parameters()
                    .iter()
                    .filter_map(|p| p.name())
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return names;
            }
        }
    }

    /// Creates a CloudFront distribution with one origin (id `shipit`) whose domain is
    /// `origin`, the default behaviour sending to it. Returns its id.
    pub async fn create_distribution(&self, origin: &str) -> String {
        use aws_sdk_cloudfront::types::{
            CustomOriginConfig, DefaultCacheBehavior, DistributionConfig, Origin,
            OriginProtocolPolicy, Origins, ViewerProtocolPolicy,
        };
        let config = DistributionConfig::builder()
            .caller_reference(unique(&self.prefix))
            .comment(format!("shipit test {}", self.prefix))
            .enabled(true)
            .origins(
                Origins::builder()
                    .quantity(1)
                    .items(
                        Origin::builder()
                            .id("shipit")
                            .domain_name(origin)
                            .custom_origin_config(
                                CustomOriginConfig::builder()
                                    .http_port(80)
                                    .https_port(443)
                                    .origin_protocol_policy(OriginProtocolPolicy::HttpOnly)
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .default_cache_behavior(
                DefaultCacheBehavior::builder()
                    .target_origin_id("shipit")
                    .viewer_protocol_policy(ViewerProtocolPolicy::AllowAll)
                    // AWS's managed CachingDisabled policy.
                    .cache_policy_id("4135ea2d-6df8-44a3-9df3-4b5a84be39ad")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let out = self
            .clients
            .cloudfront
            .create_distribution()
            .distribution_config(config)
            .send()
            .await
            .expect("CreateDistribution");
        out.distribution().unwrap().id().to_string()
    }

    /// The domain names of a distribution's origins, by origin id.
    pub async fn distribution_origins(&self, id: &str) -> Vec<(String, String)> {
        let out = self
            .clients
            .cloudfront
            .get_distribution_config()
            .id(id)
            .send()
            .await
            .expect("GetDistributionConfig");
        out.distribution_config()
            .and_then(|c| c.origins())
            .map(|o| {
                o.items()
                    .iter()
                    .map(|o| (o.id().to_string(), o.domain_name().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The network configuration ECS services of this infrastructure need (awsvpc: moto wants
    /// subnets and security groups).
    pub fn network_configuration(&self) -> NetworkConfiguration {
        NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .subnets(&self.subnets.blue)
                    .subnets(&self.subnets.green)
                    .security_groups(&self.security_group)
                    .build()
                    .unwrap(),
            )
            .build()
    }
}

fn forward_of(action: &Action) -> Vec<(String, Option<i32>)> {
    if let Some(config) = action.forward_config()
        && !config.target_groups().is_empty()
    {
        return config
            .target_groups()
            .iter()
            .map(|t| {
                (
                    t.target_group_arn().unwrap_or_default().to_string(),
                    t.weight(),
                )
            })
            .collect();
    }
    vec![(
        action.target_group_arn().unwrap_or_default().to_string(),
        None,
    )]
}
