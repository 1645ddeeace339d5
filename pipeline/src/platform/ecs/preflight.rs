//! Preflight: what a release of the service needs from the AWS account, checked before
//! anything is built, pushed or launched (`shipit verify`, and the start of every ecs
//! release).
//!
//! What is checked comes from the task definition the release would register (rendered from
//! the target's template, so a custom template's roles and log groups are checked too), the
//! service's secrets, and the target: the execution and task roles (IAM `GetRole`), each
//! `awslogs` log group (created when `create_log_group = true`), the image (ECR
//! `DescribeImages`, or the registry through the Docker engine), every secret's ARN
//! (Secrets Manager `DescribeSecret`, SSM `DescribeParameters`: neither reads a value), the
//! configured subnets and security groups (EC2), and both target groups (ELBv2: target type
//! `ip`, protocol HTTP or HTTPS, the service's port).
//!
//! Each check names the config key its subject comes from. A check the run's credentials may
//! not make (access denied) is reported as unchecked, not failed: a CI role without
//! `iam:GetRole` still releases, and the release itself finds what is truly missing.

use std::collections::BTreeMap;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Serialize;

use super::EcsPlatform;
use super::aws::aws_error;
use crate::Slot;
use crate::aws::describe_error;
use crate::platform::kind::PLANNED_RELEASE;
use crate::platform::{ErrorKind, PlatformError};
use crate::secret::{SecretArn, SecretStore};
use crate::task_definition::TaskDefinition;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It exists as the release needs it.
    Ok,
    /// It was missing and preflight created it (a log group, with `create_log_group`).
    Created,
    /// It does not exist yet, and the release makes it: the image it builds and pushes, or a
    /// log group a read-only run would create.
    Pending,
    /// Not checked: the credentials may not read it, or nothing can (no Docker engine).
    Unchecked,
    /// It works, but differs from what was meant (a target group's port).
    Warning,
    /// Missing or wrong: the release would fail on it.
    Failed,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Created => "created",
            Status::Pending => "pending",
            Status::Unchecked => "unchecked",
            Status::Warning => "warning",
            Status::Failed => "FAILED",
        }
    }
}

/// One thing the release needs, and what preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `execution role`, `task role`, `log group`, `image`, `secret`, `subnet`,
    /// `security group` or `target group`.
    pub what: &'static str,
    /// Its name, id or ARN.
    pub subject: String,
    /// The config key it comes from.
    pub key: String,
    pub status: Status,
    /// What was found, or what is wrong.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Every check of one preflight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Preflight {
    pub checks: Vec<Check>,
}

impl Preflight {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Failed)
    }

    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The error a release stops with: every failure with its key, and their hints.
    pub fn error(&self, target: &str) -> Option<PlatformError> {
        let failures: Vec<&Check> = self.failures().collect();
        if failures.is_empty() {
            return None;
        }
        let lines: Vec<String> = failures
            .iter()
            .map(|c| format!("{} {} ({}): {}", c.what, c.subject, c.key, c.detail))
            .collect();
        let mut hints: Vec<String> = failures.iter().filter_map(|c| c.hint.clone()).collect();
        hints.dedup();
        hints.push(format!(
            "nothing was built or changed; `shipit verify -t {target}` checks again"
        ));
        Some(
            PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "preflight found {} problem{} in the account: {}",
                    failures.len(),
                    if failures.len() == 1 { "" } else { "s" },
                    lines.join("; ")
                ),
            )
            .with_hint(hints.join("; ")),
        )
    }
}

/// What a failed lookup means for a check.
enum Lookup {
    /// The service says it does not exist.
    Missing(String),
    /// The credentials may not look.
    Denied(String),
}

/// The most pages of DescribeParameters read to find one parameter.
const MAX_PAGES: usize = 50;

/// Error codes that mean "the credentials may not make this call".
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
];

/// Sorts a failed lookup: a code of `missing` is a missing subject, a denied code an
/// unchecked one; anything else (throttling, an endpoint that cannot be reached) stops the
/// preflight with the call's error.
fn classify<E, R>(
    operation: &str,
    subject: &str,
    error: &SdkError<E, R>,
    missing: &[&str],
) -> Result<Lookup, PlatformError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = match error {
        SdkError::ServiceError(context) => context.err().code(),
        _ => None,
    };
    let message = describe_error(error);
    match code {
        Some(c) if missing.contains(&c) => Ok(Lookup::Missing(message)),
        Some(c) if DENIED_CODES.contains(&c) => Ok(Lookup::Denied(message)),
        _ => Err(aws_error(operation, subject, error)),
    }
}

/// The part of an IAM role ARN `GetRole` takes: the name after the last `/`.
pub fn role_name(arn: &str) -> Option<&str> {
    let resource = arn.split(':').nth(5)?;
    let path = resource.strip_prefix("role/")?;
    path.rsplit('/').next().filter(|name| !name.is_empty())
}

impl EcsPlatform {
    /// `shipit verify`: the checks of a release now, and whether the image of the version it
    /// would release is pushed already.
    pub async fn verify_account(&self) -> Result<Preflight, PlatformError> {
        let (version, _) = crate::git::app_version(&self.service.context);
        let image = format!("{}:{version}", self.target.repository);
        self.check_account(Some(&image)).await
    }

    /// Checks what a release needs. `image`: the reference the release would run, when it
    /// should already be pushed; a missing one is pending (the release pushes it). A missing
    /// log group is created when the target sets `create_log_group` and this run may change
    /// things.
    pub async fn check_account(&self, image: Option<&str>) -> Result<Preflight, PlatformError> {
        let definition = self.render(
            Slot::Blue,
            PLANNED_RELEASE,
            "0.0.0-preflight",
            image.unwrap_or("preflight.invalid/image:preflight"),
        )?;
        let mut checks = Vec::new();
        self.check_roles(&definition, &mut checks).await?;
        self.check_log_groups(&definition, &mut checks).await?;
        if let Some(image) = image {
            checks.push(self.check_image(image).await?);
        }
        self.check_secrets(&mut checks).await?;
        self.check_network(&mut checks).await?;
        for slot in [Slot::Blue, Slot::Green] {
            checks.push(self.check_target_group(slot).await?);
        }
        Ok(Preflight { checks })
    }

    /// The key of what the task definition template decides: `key` with the built-in
    /// template, the template itself with one of the user's.
    fn template_key(&self, key: &str) -> String {
        if self.target.task_definition.is_some() {
            self.key("task_definition")
        } else {
            self.key(key)
        }
    }

    fn key(&self, key: &str) -> String {
        format!("targets.{}.{key}", self.target_name)
    }

    async fn check_roles(
        &self,
        definition: &TaskDefinition,
        checks: &mut Vec<Check>,
    ) -> Result<(), PlatformError> {
        let roles = [
            (
                "execution role",
                definition.execution_role_arn.as_deref(),
                self.template_key("execution_role_arn"),
            ),
            (
                "task role",
                definition.task_role_arn.as_deref(),
                self.key("task_definition"),
            ),
        ];
        for (what, arn, key) in roles {
            let Some(arn) = arn.filter(|a| !a.is_empty()) else {
                continue;
            };
            let check = |status, detail: String, hint: Option<String>| Check {
                what,
                subject: arn.to_string(),
                key: key.clone(),
                status,
                detail,
                hint,
            };
            // ECS takes a role's short name as well as its ARN.
            let short = !arn.starts_with("arn:");
            let Some(name) = (if short { Some(arn) } else { role_name(arn) }) else {
                checks.push(check(
                    Status::Failed,
                    "not an IAM role ARN".into(),
                    Some("expected arn:aws:iam::<account>:role/<name>".into()),
                ));
                continue;
            };
            let found = self.clients.iam.get_role().role_name(name).send().await;
            checks.push(match found {
                Ok(out) => {
                    let got = out.role().map(|r| r.arn()).unwrap_or_default();
                    if short || got == arn {
                        check(Status::Ok, "exists".into(), None)
                    } else {
                        check(
                            Status::Failed,
                            format!("the account's role {name} is {got}"),
                            Some(format!("set {key} to the role's ARN")),
                        )
                    }
                }
                Err(e) => match classify("iam:GetRole", name, &e, &["NoSuchEntity"])? {
                    Lookup::Missing(_) => check(
                        Status::Failed,
                        "the role does not exist".into(),
                        Some(format!(
                            "create the role, or fix {key}; an execution role needs the \
                             AmazonECSTaskExecutionRolePolicy and a trust policy for \
                             ecs-tasks.amazonaws.com"
                        )),
                    ),
                    Lookup::Denied(message) => check(
                        Status::Unchecked,
                        format!("may not read it: {message}"),
                        Some("allow iam:GetRole to check it".into()),
                    ),
                },
            });
        }
        Ok(())
    }

    async fn check_log_groups(
        &self,
        definition: &TaskDefinition,
        checks: &mut Vec<Check>,
    ) -> Result<(), PlatformError> {
        let key = self.template_key("log_group");
        let mut groups: BTreeMap<(String, String), bool> = BTreeMap::new();
        for container in &definition.container_definitions {
            let Some(logs) = &container.log_configuration else {
                continue;
            };
            if logs.log_driver != "awslogs" {
                continue;
            }
            let Some(group) = logs.options.get("awslogs-group") else {
                continue;
            };
            let region = logs
                .options
                .get("awslogs-region")
                .cloned()
                .unwrap_or_else(|| self.target.region.clone());
            let ecs_creates = logs
                .options
                .get("awslogs-create-group")
                .is_some_and(|v| v == "true");
            groups.insert((group.clone(), region), ecs_creates);
        }
        for ((group, region), ecs_creates) in groups {
            let client = if region == self.target.region {
                self.clients.logs.clone()
            } else {
                aws_sdk_cloudwatchlogs::Client::new(
                    &crate::aws::sdk_config_for(&region, self.target.endpoint.as_deref()).await,
                )
            };
            let check = |status, detail: String, hint: Option<String>| Check {
                what: "log group",
                subject: group.clone(),
                key: key.clone(),
                status,
                detail,
                hint,
            };
            let found = client
                .describe_log_groups()
                .log_group_name_prefix(&group)
                .send()
                .await;
            let exists = match found {
                Ok(out) => out
                    .log_groups()
                    .iter()
                    .any(|g| g.log_group_name() == Some(group.as_str())),
                Err(e) => match classify("logs:DescribeLogGroups", &group, &e, &[])? {
                    Lookup::Missing(message) | Lookup::Denied(message) => {
                        checks.push(check(
                            Status::Unchecked,
                            format!("may not read it: {message}"),
                            Some("allow logs:DescribeLogGroups to check it".into()),
                        ));
                        continue;
                    }
                },
            };
            checks.push(if exists {
                check(Status::Ok, format!("exists in {region}"), None)
            } else if ecs_creates {
                check(
                    Status::Pending,
                    "ECS creates it when a task starts (awslogs-create-group)".into(),
                    None,
                )
            } else if self.target.create_log_group && self.read_only.is_some() {
                check(
                    Status::Pending,
                    format!("missing in {region}; a release creates it (create_log_group)"),
                    None,
                )
            } else if self.target.create_log_group {
                match client
                    .create_log_group()
                    .log_group_name(&group)
                    .send()
                    .await
                {
                    Ok(_) => check(Status::Created, format!("created in {region}"), None),
                    // Another run (a service sharing the group) made it meanwhile.
                    Err(e)
                        if e.as_service_error().and_then(ProvideErrorMetadata::code)
                            == Some("ResourceAlreadyExistsException") =>
                    {
                        check(Status::Ok, format!("exists in {region}"), None)
                    }
                    Err(e) => match classify("logs:CreateLogGroup", &group, &e, &[])? {
                        Lookup::Missing(message) | Lookup::Denied(message) => check(
                            Status::Failed,
                            format!("missing in {region}, and may not create it: {message}"),
                            Some("allow logs:CreateLogGroup, or create the group".into()),
                        ),
                    },
                }
            } else {
                check(
                    Status::Failed,
                    format!("missing in {region}: tasks would fail to start"),
                    Some(format!(
                        "create it (`aws logs create-log-group --log-group-name {group} \
                         --region {region}`), or set create_log_group = true on target {}",
                        self.target_name
                    )),
                )
            });
        }
        Ok(())
    }

    async fn check_image(&self, image: &str) -> Result<Check, PlatformError> {
        let check = |status, detail: String, hint: Option<String>| Check {
            what: "image",
            subject: image.to_string(),
            key: self.key("repository"),
            status,
            detail,
            hint,
        };
        let host = self.target.registry_host();
        let (name, reference) = split_reference(image);
        if crate::registry::is_ecr_host(host) {
            let repository = name.split_once('/').map_or(name, |(_, rest)| rest);
            let id = if reference.starts_with("sha256:") {
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_digest(reference)
                    .build()
            } else {
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_tag(reference)
                    .build()
            };
            let found = self
                .clients
                .ecr
                .describe_images()
                // The registry's account is the host's first label.
                .registry_id(host.split('.').next().unwrap_or_default())
                .repository_name(repository)
                .image_ids(id)
                .send()
                .await;
            return Ok(match found {
                Ok(_) => check(Status::Ok, "pushed".into(), None),
                Err(e) => match classify(
                    "ecr:DescribeImages",
                    image,
                    &e,
                    &["ImageNotFoundException", "RepositoryNotFoundException"],
                )? {
                    Lookup::Missing(message) if message.contains("Repository") => check(
                        Status::Failed,
                        format!("the repository {repository} does not exist"),
                        Some(format!(
                            "create it (`aws ecr create-repository --repository-name \
                             {repository}`), or fix {}",
                            self.key("repository")
                        )),
                    ),
                    Lookup::Missing(_) => check(
                        Status::Pending,
                        "not pushed yet: `shipit release` builds and pushes it".into(),
                        None,
                    ),
                    Lookup::Denied(message) => check(
                        Status::Unchecked,
                        format!("may not read it: {message}"),
                        Some("allow ecr:DescribeImages to check it".into()),
                    ),
                },
            });
        }
        let Ok(docker) = self.docker().await else {
            return Ok(check(
                Status::Unchecked,
                format!("no Docker engine answers to ask {host}"),
                None,
            ));
        };
        let lookup = crate::registry::lookup(host);
        let credentials = lookup
            .credentials
            .map(|c| bollard::auth::DockerCredentials {
                username: Some(c.username),
                password: Some(c.password),
                serveraddress: Some(c.server),
                ..Default::default()
            });
        Ok(
            match docker.inspect_registry_image(image, credentials).await {
                Ok(_) => check(Status::Ok, "pushed".into(), None),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => check(
                    Status::Pending,
                    "not pushed yet: `shipit release` builds and pushes it".into(),
                    None,
                ),
                Err(e) => check(
                    Status::Unchecked,
                    format!("the registry did not say: {e}"),
                    Some(format!("check the credentials for {host}")),
                ),
            },
        )
    }

    async fn check_secrets(&self, checks: &mut Vec<Check>) -> Result<(), PlatformError> {
        for (name, arn) in &self.service.secrets {
            let key = format!("services.{}.secrets.{name}", self.service.name);
            let found = self.secret_exists(arn).await?;
            checks.push(match found {
                Ok(()) => Check {
                    what: "secret",
                    subject: arn.arn.clone(),
                    key,
                    status: Status::Ok,
                    detail: "exists".into(),
                    hint: None,
                },
                Err(Lookup::Missing(_)) => Check {
                    what: "secret",
                    subject: arn.arn.clone(),
                    key: key.clone(),
                    status: Status::Failed,
                    detail: "does not exist: tasks would fail to start".into(),
                    hint: Some(format!("create it, or fix {key}")),
                },
                Err(Lookup::Denied(message)) => Check {
                    what: "secret",
                    subject: arn.arn.clone(),
                    key,
                    status: Status::Unchecked,
                    detail: format!("may not read it: {message}"),
                    hint: Some(
                        "allow secretsmanager:DescribeSecret or ssm:DescribeParameters to \
                         check it"
                            .into(),
                    ),
                },
            });
        }
        Ok(())
    }

    async fn secret_exists(&self, arn: &SecretArn) -> Result<Result<(), Lookup>, PlatformError> {
        let config = if arn.region == self.target.region {
            None
        } else {
            Some(crate::aws::sdk_config_for(&arn.region, self.target.endpoint.as_deref()).await)
        };
        match arn.store {
            SecretStore::SecretsManager => {
                let client = config.as_ref().map_or_else(
                    || self.clients.secrets.clone(),
                    aws_sdk_secretsmanager::Client::new,
                );
                match client.describe_secret().secret_id(&arn.id).send().await {
                    Ok(_) => Ok(Ok(())),
                    Err(e) => classify(
                        "secretsmanager:DescribeSecret",
                        &arn.arn,
                        &e,
                        &["ResourceNotFoundException"],
                    )
                    .map(Err),
                }
            }
            SecretStore::Ssm => {
                let client = config
                    .as_ref()
                    .map_or_else(|| self.clients.ssm.clone(), aws_sdk_ssm::Client::new);
                // A parameter shared from another account is not listed here.
                let account = arn.arn.split(':').nth(4).unwrap_or_default();
                if !self.target.listener_arn.contains(&format!(":{account}:")) {
                    return Ok(Err(Lookup::Denied(format!(
                        "it is in account {account}, another than the load balancer's"
                    ))));
                }
                let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .option("Equals")
                    .values(&arn.id)
                    .build()
                    .map_err(|e| super::aws::internal(&e))?;
                // With filters, a page may come back empty with a token for the next one.
                let mut token: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let out = client
                        .describe_parameters()
                        .parameter_filters(filter.clone())
                        .set_next_token(token.take())
                        .send()
                        .await;
                    match out {
                        Ok(out) if !out.parameters().is_empty() => return Ok(Ok(())),
                        Ok(out) => match out.next_token() {
                            Some(next) => token = Some(next.to_string()),
                            None => break,
                        },
                        Err(e) => {
                            return classify("ssm:DescribeParameters", &arn.arn, &e, &[]).map(Err);
                        }
                    }
                }
                Ok(Err(Lookup::Missing("no such parameter".into())))
            }
        }
    }

    /// The configured subnets and security groups; those the load balancer has exist.
    async fn check_network(&self, checks: &mut Vec<Check>) -> Result<(), PlatformError> {
        if self.target.subnets.is_empty() {
            checks.push(self.load_balancers("subnet", "subnets", &self.site.subnets));
        }
        for subnet in &self.target.subnets {
            let found = self
                .clients
                .ec2
                .describe_subnets()
                .subnet_ids(subnet)
                .send()
                .await;
            let lookup = match found {
                Ok(out) if !out.subnets().is_empty() => None,
                Ok(_) => Some(Lookup::Missing(String::new())),
                Err(e) => Some(classify(
                    "ec2:DescribeSubnets",
                    subnet,
                    &e,
                    &["InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"],
                )?),
            };
            checks.push(self.network_check("subnet", subnet, "subnets", lookup));
        }
        if self.target.security_groups.is_empty() {
            checks.push(self.load_balancers(
                "security group",
                "security_groups",
                &self.site.security_groups,
            ));
        }
        for group in &self.target.security_groups {
            let found = self
                .clients
                .ec2
                .describe_security_groups()
                .group_ids(group)
                .send()
                .await;
            let lookup = match found {
                Ok(out) if !out.security_groups().is_empty() => None,
                Ok(_) => Some(Lookup::Missing(String::new())),
                Err(e) => Some(classify(
                    "ec2:DescribeSecurityGroups",
                    group,
                    &e,
                    &["InvalidGroup.NotFound", "InvalidGroupId.Malformed"],
                )?),
            };
            checks.push(self.network_check("security group", group, "security_groups", lookup));
        }
        Ok(())
    }

    /// Subnets or security groups left to the load balancer's: they exist, since it uses
    /// them.
    fn load_balancers(&self, what: &'static str, key: &str, ids: &[String]) -> Check {
        Check {
            what,
            subject: ids.join(", "),
            key: self.key(key),
            status: Status::Ok,
            detail: "the load balancer's".into(),
            hint: None,
        }
    }

    fn network_check(
        &self,
        what: &'static str,
        id: &str,
        key: &str,
        lookup: Option<Lookup>,
    ) -> Check {
        let key = self.key(key);
        let (status, detail, hint) = match lookup {
            None => (Status::Ok, "exists".to_string(), None),
            Some(Lookup::Missing(_)) => (
                Status::Failed,
                format!("does not exist in {}", self.target.region),
                Some(format!(
                    "fix {key}, or leave it out to use the load balancer's"
                )),
            ),
            Some(Lookup::Denied(message)) => (
                Status::Unchecked,
                format!("may not read it: {message}"),
                Some("allow ec2:DescribeSubnets and ec2:DescribeSecurityGroups to check it".into()),
            ),
        };
        Check {
            what,
            subject: id.to_string(),
            key,
            status,
            detail,
            hint,
        }
    }

    /// A slot's target group: it exists, ECS can register Fargate tasks in it (target type
    /// `ip`), and it speaks HTTP on the service's port.
    async fn check_target_group(&self, slot: Slot) -> Result<Check, PlatformError> {
        let arn = self.group(slot);
        let key = self.key(&format!("target_groups.{slot}"));
        let check = |status, detail: String, hint: Option<String>| Check {
            what: "target group",
            subject: arn.to_string(),
            key: key.clone(),
            status,
            detail,
            hint,
        };
        let found = self
            .clients
            .elb
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await;
        let group = match found {
            Ok(out) => out.target_groups().first().cloned(),
            Err(e) => match classify(
                "elasticloadbalancing:DescribeTargetGroups",
                arn,
                &e,
                &["TargetGroupNotFound"],
            )? {
                Lookup::Missing(_) => None,
                Lookup::Denied(message) => {
                    return Ok(check(
                        Status::Unchecked,
                        format!("may not read it: {message}"),
                        None,
                    ));
                }
            },
        };
        let Some(group) = group else {
            return Ok(check(
                Status::Failed,
                "does not exist".into(),
                Some(format!("fix {key}")),
            ));
        };
        let mut wrong = Vec::new();
        let target_type = group
            .target_type()
            .map(|t| t.as_str())
            .unwrap_or("instance");
        if target_type != "ip" {
            wrong.push(format!(
                "its target type is {target_type}, and Fargate tasks (awsvpc) register by IP: \
                 it needs type ip"
            ));
        }
        let protocol = group.protocol().map(|p| p.as_str()).unwrap_or("none");
        if protocol != "HTTP" && protocol != "HTTPS" {
            wrong.push(format!("its protocol is {protocol}, not HTTP or HTTPS"));
        }
        let port = self.service.port;
        // ECS registers each task on the container port whatever the group's port, so a
        // different one works; it is still worth knowing.
        let port_differs = (group.port() != Some(i32::from(port))).then(|| {
            format!(
                "its port is {}, and the service's port is {port} (ECS registers the tasks on \
                 {port}, so traffic still reaches them)",
                group.port().map_or("none".to_string(), |p| p.to_string())
            )
        });
        Ok(if wrong.is_empty() {
            match port_differs {
                Some(detail) => check(Status::Warning, detail, None),
                None => check(
                    Status::Ok,
                    format!("{protocol} on port {port}, target type ip"),
                    None,
                ),
            }
        } else {
            wrong.extend(port_differs);
            check(
                Status::Failed,
                wrong.join("; "),
                Some(format!(
                    "a target group's type and protocol cannot change: create one with target \
                     type ip, protocol HTTP and port {port}, and set {key} to it"
                )),
            )
        })
    }
}

/// `host/name:tag` or `host/name@sha256:…` as name and tag (or digest).
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_come_from_the_arn_after_its_path() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/ecsTaskExecutionRole"),
            Some("ecsTaskExecutionRole")
        );
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/service/team/app-exec"),
            Some("app-exec")
        );
        assert_eq!(role_name("arn:aws:iam::123456789012:user/me"), None);
        assert_eq!(role_name("arn:aws:iam::123456789012:role/"), None);
        assert_eq!(role_name("not-an-arn"), None);
    }

    #[test]
    fn references_split_into_name_and_tag_or_digest() {
        assert_eq!(
            split_reference("127.0.0.1:5000/app:1.2.3"),
            ("127.0.0.1:5000/app", "1.2.3")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app@sha256:abc"),
            ("127.0.0.1:5000/app", "sha256:abc")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
    }

    fn check(status: Status, hint: Option<&str>) -> Check {
        Check {
            what: "subnet",
            subject: "subnet-0dead".into(),
            key: "targets.aws.subnets".into(),
            status,
            detail: "does not exist in us-east-1".into(),
            hint: hint.map(str::to_string),
        }
    }

    #[test]
    fn only_failures_stop_a_release_and_the_error_names_each_key() {
        let passed = Preflight {
            checks: vec![check(Status::Ok, None), check(Status::Unchecked, None)],
        };
        assert!(passed.passed());
        assert!(passed.error("aws").is_none());
        let failed = Preflight {
            checks: vec![
                check(Status::Ok, None),
                check(Status::Failed, Some("fix targets.aws.subnets")),
                Check {
                    what: "secret",
                    key: "services.web.secrets.DB".into(),
                    ..check(Status::Failed, Some("create it"))
                },
            ],
        };
        assert!(!failed.passed());
        let error = failed.error("aws").unwrap();
        assert!(error.message.contains("2 problems"), "{}", error.message);
        assert!(error.message.contains("(targets.aws.subnets)"));
        assert!(error.message.contains("(services.web.secrets.DB)"));
        let hint = error.hint().unwrap();
        assert!(hint.contains("fix targets.aws.subnets"), "{hint}");
        assert!(hint.contains("shipit verify -t aws"), "{hint}");
    }
}
