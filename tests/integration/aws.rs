#![allow(dead_code)] // the harness serves the ecs scenarios too; not every test uses all of it
//! The AWS side of the integration tests: the moto server, per-test infrastructure on it, an
//! "ECS agent" that registers targets the way ECS would, and a real local registry.
//!
//! moto emulates the APIs and stores their state; it runs no task and routes no request. What
//! it does (moto 5.2.5, checked against these tests):
//! - ECS: CreateService reports `runningCount` = `MOTO_ECS_SERVICE_RUNNING` (1 here), and one
//!   PRIMARY deployment on the created task definition (rolloutState COMPLETED when running >=
//!   desired). UpdateService with a desiredCount sets `runningCount` to it at once, and sets
//!   the service's `taskDefinition`, but leaves `deployments` as CreateService made them (stale
//!   task definition and counts). awsvpc services need `securityGroups` (moto fails with a 500
//!   without them). A service's `loadBalancers` are kept as given.
//! - ELBv2: a registered target is `healthy` at once; nothing registers targets, so
//!   [`EcsAgent`] does. Listener actions and forward weights are stored and described back as
//!   set (a single target group comes back as `TargetGroupArn`, weights as `ForwardConfig`).
//! - CloudFront: a new distribution is `InProgress` until it is first read, then `Deployed`;
//!   an update keeps it `Deployed`; the ETag never changes and IfMatch is not checked.
//! - SSM: PutParameter without overwrite on an existing name fails with
//!   `ParameterAlreadyExists`; Get/Delete of a missing one with `ParameterNotFound`; values
//!   over the 4 KB standard-tier limit are accepted (no check); GetParametersByPath pages by 10.
//! - ECR: GetAuthorizationToken answers base64 `AWS:<acct>-auth-token` for
//!   `https://123456789012.dkr.ecr.<region>.amazonaws.com`; there is no registry endpoint, so
//!   pushes go to [`Registry`].
//!
//! The harness is one noun a file under `aws/`: the `moto` server, a test's `infra`, the
//! `agent`, the `registry` and the `daemon` process they run as; they share the imports
//! below through `use super::*`. The harness's own tests are here.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{AwsVpcConfiguration, NetworkConfiguration};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum, TargetDescription, TargetTypeEnum,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use shipit_pipeline::Slot;

use crate::harness::repo_root;

mod agent;
mod daemon;
mod infra;
mod moto;
mod registry;

pub use self::agent::EcsAgent;
use self::daemon::Daemon;
pub use self::infra::Infra;
use self::moto::*;
pub use self::moto::{Moto, http};
pub use self::registry::Registry;

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// The name of the ecs target that [`Infra::config_toml`] writes.
pub const TARGET: &str = "aws";
/// The container port the target groups send to.
pub const TARGET_PORT: i32 = 8080;
/// Set by `tests/run`: the moto server it started.
pub const ENDPOINT_ENV: &str = "SHIPIT_TEST_AWS_ENDPOINT";
/// Set by `tests/run`: the `docker-registry` binary.
pub const REGISTRY_BIN_ENV: &str = "SHIPIT_TEST_REGISTRY_BIN";

const HINT_MOTO: &str = "run `bash tests/run` once to install moto into .venv \
     (or set SHIPIT_TEST_AWS_ENDPOINT to a running moto server)";
const HINT_REGISTRY: &str =
    "run `bash tests/run` once to install docker-registry (Debian package docker-registry)";

/// A unique name for this test run: `<prefix>-<6 hex>`, short enough for ALB names.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mixed = (nanos ^ std::process::id().rotate_left(12))
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n.wrapping_mul(40_503));
    format!("{prefix}-{:06x}", mixed & 0xff_ffff)
}

/// SDK clients for moto.
#[derive(Clone)]
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub cloudfront: aws_sdk_cloudfront::Client,
}

impl Clients {
    pub async fn new() -> Clients {
        let config = Moto::sdk_config().await;
        Clients {
            ecs: aws_sdk_ecs::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            ecr: aws_sdk_ecr::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            cloudfront: aws_sdk_cloudfront::Client::new(&config),
        }
    }
}

/// One value per slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPair<T> {
    pub blue: T,
    pub green: T,
}

impl<T> SlotPair<T> {
    pub fn get(&self, slot: Slot) -> &T {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_targets_for_desired_tasks_and_never_for_a_broken_slot() {
    let infra = Infra::create("agent").await;
    let agent = EcsAgent::start(&infra, "web");
    agent.break_slot(Slot::Green);
    let ecs = &infra.clients.ecs;
    let task_definition = ecs
        .register_task_definition()
        .family(format!("{}-web", infra.prefix))
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("web")
                .image("127.0.0.1:5000/web:1")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string();
    for slot in [Slot::Blue, Slot::Green] {
        ecs.create_service()
            .cluster(&infra.cluster)
            .service_name(Infra::service_name("web", slot))
            .task_definition(&task_definition)
            .desired_count(2)
            .load_balancers(
                aws_sdk_ecs::types::LoadBalancer::builder()
                    .target_group_arn(infra.target_groups.get(slot))
                    .container_name("web")
                    .container_port(TARGET_PORT)
                    .build(),
            )
            .network_configuration(infra.network_configuration())
            .send()
            .await
            .expect("CreateService");
    }
    let blue = &infra.target_groups.blue;
    wait_async(
        "two healthy blue targets",
        Duration::from_secs(20),
        || async {
            let targets = infra.targets(blue).await;
            targets.len() == 2 && targets.iter().all(|(_, state)| state == "healthy")
        },
    )
    .await;
    // moto's view of the services, as the ecs platform will see it.
    let service = infra.service("web-blue").await.unwrap();
    assert_eq!(service.desired_count(), 2);
    assert_eq!(service.running_count(), 1, "MOTO_ECS_SERVICE_RUNNING=1");
    assert_eq!(
        service.deployments()[0].task_definition(),
        Some(task_definition.as_str())
    );

    ecs.update_service()
        .cluster(&infra.cluster)
        .service("web-blue")
        .desired_count(0)
        .send()
        .await
        .expect("UpdateService");
    wait_async(
        "blue targets to be deregistered",
        Duration::from_secs(20),
        || async { infra.targets(blue).await.is_empty() },
    )
    .await;
    // The broken slot had time for several rounds and never got a target.
    assert!(infra.targets(&infra.target_groups.green).await.is_empty());
    assert!(
        !agent.log().iter().any(|l| l.contains("green")),
        "{:?}",
        agent.log()
    );

    // Where the listeners forward, as created.
    assert_eq!(
        infra.listener_slot(&infra.listener_arn).await,
        Some(Slot::Green)
    );
    assert_eq!(
        infra.listener_slot(&infra.test_listener_arn).await,
        Some(Slot::Green)
    );
}

/// `aws <args> --output json` against moto, with the venv's AWS CLI: its answer.
pub async fn aws_cli(args: &[&str]) -> serde_json::Value {
    let aws = crate::harness::repo_root().join(".venv/bin/aws");
    assert!(aws.exists(), "no aws CLI at {}", aws.display());
    let mut cmd = std::process::Command::new(aws);
    cmd.args(args)
        .args(["--output", "json"])
        .stdin(std::process::Stdio::null());
    Moto::apply_env(&mut cmd);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("aws runs"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "aws {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("aws prints JSON")
}

/// Waits for an async condition, polling every 50 ms, and panics with `what` after `deadline`.
pub async fn wait_async<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_script_prints_a_target_that_exists() {
    let prefix = unique("boot");
    let venv_bin = repo_root().join(".venv/bin");
    assert!(
        venv_bin.join("aws").exists(),
        "no aws CLI in {}\nhint: {HINT_MOTO}",
        venv_bin.display()
    );
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("localstack/bootstrap.sh"))
        .arg(&prefix)
        .env("PATH", path)
        .stdin(Stdio::null());
    Moto::apply_env(&mut cmd);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bootstrap.sh failed:\n{stderr}");

    let doc: toml::Table = toml::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the printed block is not TOML ({e}):\n{stdout}"));
    let target = doc["targets"][prefix.as_str()].as_table().unwrap();
    let s = |key: &str| target[key].as_str().unwrap().to_string();
    assert_eq!(s("kind"), "ecs");
    assert_eq!(s("region"), REGION);
    assert_eq!(s("cluster"), prefix);

    let clients = Clients::new().await;
    let listeners = clients
        .elb
        .describe_listeners()
        .listener_arns(s("listener_arn"))
        .listener_arns(s("test_listener_arn"))
        .send()
        .await
        .expect("the printed listeners exist");
    let ports: Vec<_> = listeners.listeners().iter().map(|l| l.port()).collect();
    assert_eq!(ports, [Some(80), Some(8080)]);
    let groups = target["target_groups"].as_table().unwrap();
    let blue = groups["blue"].as_str().unwrap();
    let green = groups["green"].as_str().unwrap();
    let described = clients
        .elb
        .describe_target_groups()
        .target_group_arns(blue)
        .target_group_arns(green)
        .send()
        .await
        .expect("the printed target groups exist");
    for group in described.target_groups() {
        assert_eq!(group.target_type(), Some(&TargetTypeEnum::Ip));
        assert_eq!(group.port(), Some(TARGET_PORT));
    }
    // The production listener starts on blue, the test listener on green.
    let forward = |i: usize| {
        listeners.listeners()[i].default_actions()[0]
            .target_group_arn()
            .map(str::to_string)
    };
    assert_eq!(forward(0).as_deref(), Some(blue));
    assert_eq!(forward(1).as_deref(), Some(green));
    let clusters = clients
        .ecs
        .describe_clusters()
        .clusters(s("cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(clusters.clusters()[0].status(), Some("ACTIVE"));
    let repository = s("repository");
    let repos = clients
        .ecr
        .describe_repositories()
        .repository_names(format!("{prefix}/hello"))
        .send()
        .await
        .expect("the printed repository exists");
    assert_eq!(
        repos.repositories()[0].repository_uri(),
        Some(repository.as_str())
    );
    let subnets = target["subnets"].as_array().unwrap();
    assert_eq!(subnets.len(), 2);
    assert_eq!(target["security_groups"].as_array().unwrap().len(), 1);

    // The block is a valid ecs target for shipit itself.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shipit.toml");
    std::fs::write(
        &config,
        format!(
            "[services.hello]\ncontext = \"{}\"\nport = 8080\n{stdout}",
            repo_root().join("examples/hello").display()
        ),
    )
    .unwrap();
    let check = Command::new(crate::harness::SHIPIT)
        .arg("-c")
        .arg(&config)
        .args(["config", "check"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    crate::harness::assert_success(&check, "shipit config check on the bootstrap block");
}
