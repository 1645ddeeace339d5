//! The `kind = "ecs"` target: two ECS services (one per slot), each registered in its own ALB
//! target group, behind a production listener (or one of its rules), optionally behind
//! CloudFront.
//!
//! `RawTarget` is one flat struct for every kind, so this file also decides which keys belong
//! to which kind: a key of the other kind is an error that names the key and its kind, rather
//! than a setting silently ignored. ARNs are checked for their service, resource type and
//! region here, so a listener ARN pasted into `target_groups` fails at load time, not halfway
//! through a release.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::error::Problem;
use super::locate::KeyPath;
use super::path::normalize;
use super::raw::{ECS_KEYS, LOCAL_KEYS, RawCdn, RawSlotPair, RawTarget};
use crate::Slot;
use crate::shift::{DEFAULT_SHIFT, ShiftStrategy};

/// How many tasks each slot's service runs when `desired_count` is not set: two, so one task
/// failing its health check does not take the service down.
pub const DEFAULT_ECS_DESIRED_COUNT: u32 = 2;
/// Fargate CPU units per task (256 = a quarter vCPU).
pub const DEFAULT_ECS_CPU: u32 = 256;
/// Memory per task, in MiB.
pub const DEFAULT_ECS_MEMORY: u32 = 512;
/// The task definition template when `task_definition` is not set. The file ships in the
/// repository and its text is built into the binary, so the default works anywhere.
pub const DEFAULT_TASK_DEFINITION: &str = "templates/ecs-task-definition.json.hbs";
/// The built-in text of [`DEFAULT_TASK_DEFINITION`].
pub const DEFAULT_TASK_DEFINITION_TEXT: &str =
    include_str!("../../../templates/ecs-task-definition.json.hbs");
/// The log group when `log_group` is not set; `<service>` is the service's name.
pub const DEFAULT_ECS_LOG_GROUP: &str = "/ecs/<service>";
/// How long a launched slot gets to roll out and have healthy targets. Fargate tasks take a
/// minute or two to pull, start and pass the ALB's health checks.
pub const DEFAULT_ECS_VERIFY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the old slot stays scaled up after a shift: a warm-rollback window (a rollback
/// within it only moves traffic back). Zero: it is scaled down at once, the release waits for
/// its targets to drain, and a rollback scales it up again.
pub const DEFAULT_KEEP_PREVIOUS: Duration = Duration::from_secs(600);
/// How long the release lock's lease runs: the running release renews it every third of
/// that; a lock not renewed for that long (its run died) is taken over by the next run.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(600);
/// How many tasks of a new task definition may stop on their own before verify fails.
pub const DEFAULT_MAX_TASK_FAILURES: u32 = 3;
/// The shortest `lock_lease`.
pub const MIN_LOCK_LEASE: Duration = Duration::from_secs(1);
/// The longest CloudWatch alarm name.
pub const MAX_ALARM_NAME: usize = 255;

/// One value for each slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PerSlot<T> {
    pub blue: T,
    pub green: T,
}

impl<T> PerSlot<T> {
    pub fn get(&self, slot: Slot) -> &T {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    /// The slot whose value `is` picks, if any.
    pub fn slot_of(&self, is: impl Fn(&T) -> bool) -> Option<Slot> {
        [Slot::Blue, Slot::Green]
            .into_iter()
            .find(|slot| is(self.get(*slot)))
    }
}

/// An ECS cluster behind an ALB listener.
#[derive(Debug, Clone, Serialize)]
pub struct EcsTarget {
    pub region: String,
    /// Where every AWS call goes instead of AWS's own endpoints: an emulator such as
    /// `shipit sandbox`'s (`http://127.0.0.1:4566`). `None`: the SDK's standard chain
    /// (`AWS_ENDPOINT_URL`, or AWS itself). See [`crate::aws::sdk_config_for`].
    pub endpoint: Option<String>,
    /// Where the production listener is reached from here, instead of the load balancer's
    /// DNS name (a domain in front of it, or the sandbox's local port); `status` and the
    /// release report it.
    pub url: Option<String>,
    /// Where the test listener is reached from here: the version check, the warm-up and
    /// `SHIPIT_CANDIDATE_URL` go there instead of `http://<dns>:<port>`.
    pub test_url: Option<String>,
    pub cluster: String,
    /// The production listener. Its default action forwards to the live slot's target group,
    /// unless `rule_arn` names one of its rules to do that instead.
    pub listener_arn: String,
    pub rule_arn: Option<String>,
    /// A second listener that forwards to the idle slot, for previewing a candidate.
    pub test_listener_arn: Option<String>,
    /// The target group of each slot's service (ARNs).
    pub target_groups: PerSlot<String>,
    /// The ECS service of each slot; `None`: `<service>-blue` and `<service>-green`.
    pub services: Option<PerSlot<String>>,
    pub desired_count: u32,
    /// Where images are pushed: `<registry host>/<name>`, without a tag.
    pub repository: String,
    /// The task definition template; `None`: the built-in [`DEFAULT_TASK_DEFINITION`].
    pub task_definition: Option<PathBuf>,
    pub cpu: u32,
    pub memory: u32,
    /// `None`: [`DEFAULT_ECS_LOG_GROUP`] for the service.
    pub log_group: Option<String>,
    /// Preflight creates the log group when it is missing; `false`: a missing one fails it.
    pub create_log_group: bool,
    pub execution_role_arn: Option<String>,
    /// The tasks' subnets and security groups; empty: those of the listener's load balancer.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    #[serde(with = "super::duration_text")]
    pub verify_timeout: Duration,
    #[serde(with = "super::duration_text")]
    pub keep_previous: Duration,
    /// After this many tasks of the new task definition stopped on their own, verify fails.
    pub max_task_failures: usize,
    /// The release lock's lease (see [`DEFAULT_LOCK_LEASE`]).
    #[serde(with = "super::duration_text")]
    pub lock_lease: Duration,
    pub shift: ShiftStrategy,
    pub cdn: Option<Cdn>,
    /// CloudWatch alarms (names, in `region`) watched during each bake and before the final
    /// shift: one in `ALARM` puts all traffic back on the old slot and fails the release.
    pub alarms: Vec<String>,
}

/// A CloudFront distribution in front of the two slots: the swap changes the domain of the
/// origin its default cache behaviour targets.
#[derive(Debug, Clone, Serialize)]
pub struct Cdn {
    pub distribution_id: String,
    /// The origin domain that reaches each slot.
    pub origins: PerSlot<String>,
}

impl EcsTarget {
    /// The ECS service names of `service`'s two slots.
    pub fn service_names(&self, service: &str) -> PerSlot<String> {
        self.services.clone().unwrap_or_else(|| PerSlot {
            blue: format!("{service}-blue"),
            green: format!("{service}-green"),
        })
    }

    pub fn log_group_for(&self, service: &str) -> String {
        self.log_group
            .clone()
            .unwrap_or_else(|| DEFAULT_ECS_LOG_GROUP.replace("<service>", service))
    }

    /// The registry host of `repository` (`<account>.dkr.ecr.<region>.amazonaws.com`,
    /// `127.0.0.1:5000`).
    pub fn registry_host(&self) -> &str {
        self.repository
            .split_once('/')
            .map_or(self.repository.as_str(), |(host, _)| host)
    }
}

/// The error for a key that belongs to the other kind of target.
fn other_kind(path: &KeyPath, key: &str, belongs: &str, is: &str) -> Problem {
    Problem::key(
        path.key(key),
        format!("`{key}` is a key of {belongs} targets, and this target is kind = \"{is}\""),
    )
    .with_hint(format!(
        "remove `{key}`, or set kind = \"{belongs}\" if this target is meant to be one"
    ))
}

/// Which target keys `raw` sets, by name.
fn keys_set(raw: &RawTarget) -> Vec<&'static str> {
    keys_of(raw)
        .into_iter()
        .filter_map(|(key, is_set)| is_set.then_some(key))
        .collect()
}

/// Every kind-specific target key, and whether `raw` sets it. A key added to `RawTarget`
/// goes here and in `LOCAL_KEYS` or `ECS_KEYS` (a test checks the lists agree).
fn keys_of(raw: &RawTarget) -> Vec<(&'static str, bool)> {
    vec![
        ("listen", raw.listen.is_some()),
        ("drain_timeout", raw.drain_timeout.is_some()),
        ("stop_timeout", raw.stop_timeout.is_some()),
        ("max_error_rate", raw.max_error_rate.is_some()),
        ("preview_host", raw.preview_host.is_some()),
        ("keep_images", raw.keep_images.is_some()),
        ("edge", raw.edge.is_some()),
        ("region", raw.region.is_some()),
        ("endpoint", raw.endpoint.is_some()),
        ("url", raw.url.is_some()),
        ("test_url", raw.test_url.is_some()),
        ("cluster", raw.cluster.is_some()),
        ("listener_arn", raw.listener_arn.is_some()),
        ("rule_arn", raw.rule_arn.is_some()),
        ("test_listener_arn", raw.test_listener_arn.is_some()),
        ("target_groups", raw.target_groups.is_some()),
        ("services", raw.services.is_some()),
        ("desired_count", raw.desired_count.is_some()),
        ("repository", raw.repository.is_some()),
        ("task_definition", raw.task_definition.is_some()),
        ("cpu", raw.cpu.is_some()),
        ("memory", raw.memory.is_some()),
        ("log_group", raw.log_group.is_some()),
        ("create_log_group", raw.create_log_group.is_some()),
        ("execution_role_arn", raw.execution_role_arn.is_some()),
        ("subnets", raw.subnets.is_some()),
        ("security_groups", raw.security_groups.is_some()),
        ("verify_timeout", raw.verify_timeout.is_some()),
        ("keep_previous", raw.keep_previous.is_some()),
        ("lock_lease", raw.lock_lease.is_some()),
        ("max_task_failures", raw.max_task_failures.is_some()),
        ("cdn", raw.cdn.is_some()),
        ("alarms", raw.alarms.is_some()),
    ]
}

/// A local target must not set ecs keys.
pub(crate) fn refuse_ecs_keys(raw: &RawTarget, path: &KeyPath) -> Result<(), Problem> {
    match keys_set(raw).into_iter().find(|key| ECS_KEYS.contains(key)) {
        Some(key) => Err(other_kind(path, key, "ecs", "local")),
        None => Ok(()),
    }
}

/// Resolves an ecs target: required keys, ARNs, defaults, the template path.
pub(crate) fn target(raw: RawTarget, dir: &Path, path: &KeyPath) -> Result<EcsTarget, Problem> {
    if let Some(key) = keys_set(&raw)
        .into_iter()
        .find(|key| LOCAL_KEYS.contains(key))
    {
        return Err(other_kind(path, key, "local", "ecs"));
    }
    let required = |value: Option<String>, key: &str, example: &str| {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Problem::key(
                    path.key(key),
                    format!("missing required key `{key}` of an ecs target"),
                )
                .with_hint(format!("add `{key} = {example}`"))
            })
    };

    let region = required(raw.region, "region", "\"us-east-1\"")?;
    check_region(&region, &path.key("region"))?;
    let endpoint = optional(raw.endpoint)
        .map(|url| check_endpoint(&url, &path.key("endpoint")).map(|()| url))
        .transpose()?;
    let cluster = required(raw.cluster, "cluster", "\"<the ECS cluster's name>\"")?;
    check_ecs_name(&cluster, "cluster", &path.key("cluster"))?;

    let listener_arn = required(
        raw.listener_arn,
        "listener_arn",
        "\"arn:aws:elasticloadbalancing:<region>:<account>:listener/app/…\"",
    )?;
    let elb = Arn {
        service: "elasticloadbalancing",
        region: &region,
    };
    elb.check(
        &listener_arn,
        "listener/",
        "a listener",
        &path.key("listener_arn"),
    )?;
    let rule_arn = optional(raw.rule_arn);
    if let Some(rule) = &rule_arn {
        elb.check(
            rule,
            "listener-rule/",
            "a listener rule",
            &path.key("rule_arn"),
        )?;
    }
    let test_listener_arn = optional(raw.test_listener_arn);
    if let Some(test) = &test_listener_arn {
        let key = path.key("test_listener_arn");
        elb.check(test, "listener/", "a listener", &key)?;
        if *test == listener_arn {
            return Err(Problem::value(
                key,
                "test_listener_arn is the production listener: a preview would move live traffic",
            )
            .with_hint("give the ARN of a second listener (another port) of the load balancer"));
        }
    }

    let target_groups = raw.target_groups.ok_or_else(|| {
        Problem::key(
            path.key("target_groups"),
            "missing required key `target_groups` of an ecs target",
        )
        .with_hint("add `target_groups = { blue = \"<target group ARN>\", green = \"<target group ARN>\" }`")
    })?;
    let target_groups = pair(target_groups, &path.key("target_groups"), |value, key| {
        elb.check(value, "targetgroup/", "a target group", key)
    })?;
    let services = match raw.services {
        Some(services) => Some(pair(services, &path.key("services"), |value, key| {
            check_ecs_name(value, "service", key)
        })?),
        None => None,
    };

    let repository = required(
        raw.repository,
        "repository",
        "\"<account>.dkr.ecr.<region>.amazonaws.com/<name>\"",
    )?;
    check_repository(&repository, &path.key("repository"))?;

    let task_definition = match optional(raw.task_definition) {
        Some(written) => {
            let file = normalize(&dir.join(&written));
            if !file.is_file() {
                return Err(Problem::value(
                    path.key("task_definition"),
                    format!("task definition template {} does not exist", file.display()),
                )
                .with_hint(format!(
                    "task_definition is relative to the config file's folder ({}); leave it \
                     out to use the built-in {DEFAULT_TASK_DEFINITION}",
                    dir.display()
                )));
            }
            Some(file)
        }
        None => None,
    };

    let log_group = optional(raw.log_group);
    if let Some(group) = &log_group {
        let valid = group.len() <= 512
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c));
        if !valid {
            return Err(Problem::value(
                path.key("log_group"),
                format!(
                    "invalid log group {group:?}: expected letters, digits and _ - / . #, at \
                     most 512 characters"
                ),
            ));
        }
    }
    let execution_role_arn = optional(raw.execution_role_arn);
    if let Some(role) = &execution_role_arn {
        let iam = Arn {
            service: "iam",
            region: "",
        };
        iam.check(
            role,
            "role/",
            "an IAM role",
            &path.key("execution_role_arn"),
        )?;
    }
    let subnets = ids(raw.subnets, "subnet-", "subnet", &path.key("subnets"))?;
    let security_groups = ids(
        raw.security_groups,
        "sg-",
        "security group",
        &path.key("security_groups"),
    )?;

    let verify_timeout = raw
        .verify_timeout
        .map_or(DEFAULT_ECS_VERIFY_TIMEOUT, |d| d.0);
    if verify_timeout.is_zero() {
        return Err(Problem::value(
            path.key("verify_timeout"),
            "invalid duration 0: expected more than zero",
        ));
    }
    let keep_previous = raw.keep_previous.map_or(DEFAULT_KEEP_PREVIOUS, |d| d.0);
    let lock_lease = raw.lock_lease.map_or(DEFAULT_LOCK_LEASE, |d| d.0);
    // A count is at least 1 (Count refuses 0 with the key).
    let max_task_failures = raw
        .max_task_failures
        .map_or(DEFAULT_MAX_TASK_FAILURES, |n| n.0);
    let max_task_failures = usize::try_from(max_task_failures).unwrap_or(usize::MAX);
    if lock_lease < MIN_LOCK_LEASE {
        return Err(Problem::value(
            path.key("lock_lease"),
            format!(
                "invalid lease {}: expected at least {}",
                humantime::format_duration(lock_lease),
                humantime::format_duration(MIN_LOCK_LEASE)
            ),
        ));
    }
    let shift = raw.shift.map_or(DEFAULT_SHIFT, |s| s.0);

    let cdn = match raw.cdn {
        Some(cdn) => Some(self::cdn(cdn, &path.key("cdn"))?),
        None => None,
    };
    if cdn.is_some() && shift.is_weighted() {
        return Err(Problem::value(
            path.key("shift"),
            format!(
                "shift {shift} needs weighted forwarding, but with `cdn` the swap is one \
                 change of the distribution's origin"
            ),
        )
        .with_hint(
            "use shift = \"all-at-once\" with cdn, or remove cdn to shift at the listener",
        ));
    }

    let alarms = alarms(raw.alarms, &path.key("alarms"))?;

    let url = optional(raw.url)
        .map(|url| check_endpoint(&url, &path.key("url")).map(|()| url))
        .transpose()?;
    let test_url = optional(raw.test_url)
        .map(|url| {
            check_endpoint(&url, &path.key("test_url"))
                .map(|()| url.trim_end_matches('/').to_string())
        })
        .transpose()?;
    if test_url.is_some() && test_listener_arn.is_none() {
        return Err(Problem::key(
            path.key("test_url"),
            "test_url is where the test listener is reached, and the target has no test_listener_arn",
        )
        .with_hint("add test_listener_arn, or remove test_url"));
    }
    Ok(EcsTarget {
        region,
        endpoint,
        url,
        test_url,
        cluster,
        listener_arn,
        rule_arn,
        test_listener_arn,
        target_groups,
        services,
        desired_count: raw.desired_count.map_or(DEFAULT_ECS_DESIRED_COUNT, |n| n.0),
        repository,
        task_definition,
        cpu: raw.cpu.map_or(DEFAULT_ECS_CPU, |n| n.0),
        memory: raw.memory.map_or(DEFAULT_ECS_MEMORY, |n| n.0),
        log_group,
        create_log_group: raw.create_log_group.unwrap_or(false),
        execution_role_arn,
        subnets,
        security_groups,
        verify_timeout,
        keep_previous,
        lock_lease,
        max_task_failures,
        shift,
        cdn,
        alarms,
    })
}

fn optional(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A `{ blue, green }` table whose two values are checked by `check` and must differ.
fn pair(
    raw: RawSlotPair,
    path: &KeyPath,
    check: impl Fn(&str, &KeyPath) -> Result<(), Problem>,
) -> Result<PerSlot<String>, Problem> {
    let blue = raw.blue.trim().to_string();
    let green = raw.green.trim().to_string();
    check(&blue, &path.key("blue"))?;
    check(&green, &path.key("green"))?;
    if blue == green {
        return Err(Problem::value(
            path.key("green"),
            format!("blue and green are both {blue:?}: each slot needs its own"),
        )
        .with_hint("the two slots run side by side during a release; give green its own value"));
    }
    Ok(PerSlot { blue, green })
}

fn cdn(raw: RawCdn, path: &KeyPath) -> Result<Cdn, Problem> {
    let id = raw.distribution_id.trim().to_string();
    let valid = !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !valid {
        return Err(Problem::value(
            path.key("distribution_id"),
            format!(
                "invalid distribution id {id:?}: expected a CloudFront distribution id like \
                 \"E2QWRUHAPOMQZL\" (capital letters and digits)"
            ),
        ));
    }
    let origins = pair(raw.origins, &path.key("origins"), |value, key| {
        let valid = !value.is_empty()
            && !value.contains("://")
            && !value.contains('/')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if valid {
            Ok(())
        } else {
            Err(Problem::value(
                key.clone(),
                format!(
                    "invalid origin domain {value:?}: expected a domain name like \
                     \"blue.example.com\", without a scheme or a path"
                ),
            ))
        }
    })?;
    Ok(Cdn {
        distribution_id: id,
        origins,
    })
}

/// The parts of an ARN a key's value must have.
struct Arn<'a> {
    service: &'a str,
    /// Empty for global services (IAM).
    region: &'a str,
}

impl Arn<'_> {
    /// `arn:<partition>:<service>:<region>:<account>:<resource>`, with `resource` starting
    /// with `prefix` and the region the target's.
    fn check(&self, value: &str, prefix: &str, what: &str, path: &KeyPath) -> Result<(), Problem> {
        let example = format!(
            "arn:aws:{}:{}:<account>:{prefix}…",
            self.service, self.region
        );
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let shaped = parts.len() == 6
            && parts[0] == "arn"
            && !parts[1].is_empty()
            && parts[4].chars().all(|c| c.is_ascii_digit())
            && !parts[4].is_empty();
        if !shaped {
            return Err(Problem::value(
                path.clone(),
                format!("invalid ARN {value:?}: expected the ARN of {what}, like \"{example}\""),
            ));
        }
        if parts[2] != self.service || !parts[5].starts_with(prefix) {
            let found = parts[5].split('/').next().unwrap_or_default();
            return Err(Problem::value(
                path.clone(),
                format!(
                    "{value:?} is the ARN of a {} {found}, not of {what}: expected \"{example}\"",
                    parts[2]
                ),
            )
            .with_hint(
                "copy the ARN from the console or `aws elbv2 describe-…` output for this key",
            ));
        }
        if parts[3] != self.region {
            return Err(Problem::value(
                path.clone(),
                format!(
                    "{value:?} is in region {:?}, but the target's region is {:?}",
                    parts[3], self.region
                ),
            )
            .with_hint("every resource of an ecs target is in the target's `region`"));
        }
        Ok(())
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`.
fn check_region(region: &str, path: &KeyPath) -> Result<(), Problem> {
    let parts: Vec<&str> = region.split('-').collect();
    let valid = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if valid {
        return Ok(());
    }
    Err(Problem::value(
        path.clone(),
        format!("invalid region {region:?}: expected an AWS region like \"us-east-1\""),
    ))
}

/// ECS cluster and service names: letters, digits, `-` and `_`, at most 255.
fn check_ecs_name(name: &str, noun: &str, path: &KeyPath) -> Result<(), Problem> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        return Ok(());
    }
    Err(Problem::value(
        path.clone(),
        format!(
            "invalid ECS {noun} name {name:?}: expected letters, digits, - and _, at most 255 \
             characters (a name, not an ARN)"
        ),
    ))
}

/// `http://<host>[:<port>]` or `https://…`: an endpoint's scheme and authority, nothing after
/// them (the SDK adds each service's path).
fn check_endpoint(url: &str, path: &KeyPath) -> Result<(), Problem> {
    let authority = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest));
    let ok = authority.is_some_and(|a| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    });
    if ok {
        return Ok(());
    }
    Err(Problem::value(
        path.clone(),
        format!("invalid endpoint {url:?}: expected http://<host>[:<port>] or https://…"),
    )
    .with_hint(
        "for example endpoint = \"http://127.0.0.1:4566\"; leave it out to reach AWS itself",
    ))
}

/// `<registry host>/<name>`: the host has a dot or a port, or is `localhost`, as Docker tells
/// a registry from a Docker Hub user; no tag or digest (the release adds the tag).
fn check_repository(repository: &str, path: &KeyPath) -> Result<(), Problem> {
    let example = "\"123456789012.dkr.ecr.us-east-1.amazonaws.com/hello\"";
    let Some((host, name)) = repository.split_once('/') else {
        return Err(Problem::value(
            path.clone(),
            format!(
                "invalid repository {repository:?}: expected <registry host>/<name>, like {example}"
            ),
        ));
    };
    let host_ok = host.contains('.') || host.contains(':') || host == "localhost";
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    if !host_ok || !name_ok {
        let hint = if name.contains(':') || name.contains('@') {
            "leave the tag out: each release pushes its own tag"
        } else {
            "the host is a registry (with a dot or a port); the name is lowercase, / between parts"
        };
        return Err(Problem::value(
            path.clone(),
            format!(
                "invalid repository {repository:?}: expected <registry host>/<name>, like {example}"
            ),
        )
        .with_hint(hint));
    }
    Ok(())
}

/// CloudWatch alarm names: each one set, at most [`MAX_ALARM_NAME`] characters, a name rather
/// than an ARN (DescribeAlarms takes names), and none twice.
fn alarms(raw: Option<Vec<String>>, path: &KeyPath) -> Result<Vec<String>, Problem> {
    let list: Vec<String> = raw
        .unwrap_or_default()
        .into_iter()
        .map(|name| name.trim().to_string())
        .collect();
    for (index, name) in list.iter().enumerate() {
        if name.is_empty() {
            return Err(Problem::value(
                path.index(index),
                "empty alarm name: expected the name of a CloudWatch alarm",
            )
            .with_hint("remove the empty entry, or write the alarm's name"));
        }
        if name.starts_with("arn:") {
            return Err(Problem::value(
                path.index(index),
                format!("{name:?} is an ARN: expected the alarm's name"),
            )
            .with_hint("write the part after `alarm:`; the alarm must be in the target's region"));
        }
        if name.chars().count() > MAX_ALARM_NAME {
            return Err(Problem::value(
                path.index(index),
                format!(
                    "alarm name {name:?} is longer than CloudWatch's {MAX_ALARM_NAME} characters"
                ),
            ));
        }
        if let Some(first) = list[..index].iter().position(|n| n == name) {
            return Err(Problem::value(
                path.index(index),
                format!("alarm {name:?} is listed twice (also at index {first})"),
            )
            .with_hint("list each alarm once"));
        }
    }
    Ok(list)
}

/// A list of AWS resource ids, each starting with `prefix`.
fn ids(
    raw: Option<Vec<String>>,
    prefix: &str,
    noun: &str,
    path: &KeyPath,
) -> Result<Vec<String>, Problem> {
    let list: Vec<String> = raw
        .unwrap_or_default()
        .into_iter()
        .map(|id| id.trim().to_string())
        .collect();
    for (index, id) in list.iter().enumerate() {
        let rest = id.strip_prefix(prefix).unwrap_or_default();
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Problem::value(
                path.index(index),
                format!("invalid {noun} id {id:?}: expected an id like \"{prefix}0123abcd\""),
            ));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_kind_specific_key_is_checked() {
        let checked: BTreeSet<&str> = keys_of(&RawTarget::default())
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let listed: BTreeSet<&str> = LOCAL_KEYS.iter().chain(ECS_KEYS).copied().collect();
        assert_eq!(checked, listed);
    }
}
