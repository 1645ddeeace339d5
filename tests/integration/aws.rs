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

/// A process that lives as long as this test process: it runs under `sh`, which kills it when
/// this process's end of its stdin pipe closes (at exit, however the process ends), then
/// removes its folder (`dir`, which holds its log and whatever it stores).
struct Daemon {
    _child: Child,
    _stdin: ChildStdin,
    log: PathBuf,
}

impl Daemon {
    fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], dir: PathBuf) -> Self {
        let log = dir.join("daemon.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(
                r#"dir=$1; shift; "$@" >"$dir/daemon.log" 2>&1 & pid=$!
                cat >/dev/null; kill "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir""#,
            )
            .arg("daemon")
            .arg(&dir)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdin = child.stdin.take().unwrap();
        Daemon {
            _child: child,
            _stdin: stdin,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for `find` to pull something out of the log.
    fn wait_for_log<T>(&self, what: &str, mut find: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if let Some(found) = find(&text) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 30s waiting for {what}; log so far:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The moto server the tests share.
pub struct Moto;

impl Moto {
    /// The endpoint: `SHIPIT_TEST_AWS_ENDPOINT` (tests/run), or a `.venv/bin/moto_server`
    /// started once for this test process on a free port and stopped when it exits.
    pub fn endpoint() -> String {
        static ENDPOINT: OnceLock<(String, Option<Daemon>)> = OnceLock::new();
        ENDPOINT
            .get_or_init(|| {
                if let Ok(url) = std::env::var(ENDPOINT_ENV)
                    && !url.is_empty()
                {
                    return (url.trim_end_matches('/').to_string(), None);
                }
                let server = repo_root().join(".venv/bin/moto_server");
                assert!(
                    server.exists(),
                    "no moto server: {} does not exist and {ENDPOINT_ENV} is not set\nhint: {HINT_MOTO}",
                    server.display()
                );
                let dir = tempfile::Builder::new()
                    .prefix("shipit-moto-")
                    .tempdir()
                    .unwrap()
                    .keep();
                let daemon = Daemon::spawn(
                    &server,
                    &["-H", "127.0.0.1", "-p", "0"],
                    &[("MOTO_ECS_SERVICE_RUNNING", "1")],
                    dir,
                );
                let port: u16 = daemon.wait_for_log("moto to listen", |log| {
                    let rest = &log[log.find("Running on http://127.0.0.1:")? + 28..];
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                });
                let url = format!("http://127.0.0.1:{port}");
                wait_http_ok(&format!("{url}/moto-api/data.json"), "moto to answer");
                (url, Some(daemon))
            })
            .0
            .clone()
    }

    /// An SDK config for moto: fixed test credentials, [`REGION`].
    pub async fn sdk_config() -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(Moto::endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "shipit-tests",
            ))
            .load()
            .await
    }

    /// The environment a child `shipit` needs to talk to moto (and nothing else).
    pub fn env() -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", Moto::endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Points `cmd` at moto: sets [`Moto::env`] and removes what could send it elsewhere.
    pub fn apply_env(cmd: &mut Command) -> &mut Command {
        for var in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(Moto::env())
    }
}

/// Runs `request` to completion on a thread of its own, so that the sync setup code above can
/// be called from inside a test's async runtime.
fn blocking_http(method: &str, url: &str) -> Result<HttpAnswer, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(http(method, url, &[], Bytes::new()))
            })
            .join()
            .unwrap()
    })
}

/// A GET that must answer 2xx within 30 s (polled).
fn wait_http_ok(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match blocking_http("GET", url) {
            Ok(r) if (200..300).contains(&r.status) => return,
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after 30s waiting for {what} ({url}); last: {last}");
}

/// An HTTP answer.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// One plain-HTTP request to a loopback server (moto, the registry).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpAnswer, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| format!("{method} {url}: no answer in 30s"))?
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An EC2 Query API call to moto. The tests need only a VPC, subnets and a security group,
/// which do not justify the EC2 SDK crate's build time.
async fn ec2(action: &str, params: &[(&str, &str)]) -> String {
    let mut form = format!("Action={action}&Version=2016-11-15");
    for (k, v) in params {
        form.push_str(&format!("&{k}={}", form_encode(v)));
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ec2/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let answer = http(
        "POST",
        &format!("{}/", Moto::endpoint()),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &auth),
        ],
        Bytes::from(form),
    )
    .await
    .unwrap_or_else(|e| panic!("EC2 {action}: {e}"));
    assert_eq!(answer.status, 200, "EC2 {action} failed: {}", answer.body);
    answer.body
}

fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>…</tag>` in an XML answer.
fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find("</").unwrap() + start;
    xml[start..end].to_string()
}

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

/// One test's AWS infrastructure on moto, all named after a unique prefix so tests run in
/// parallel against one server: a VPC (10.N.0.0/16) with a subnet per slot, a security group,
/// an ALB, a target group per slot (target type ip, port 8080), a production listener (port
/// 80) forwarding to blue, a test listener (port 8080) forwarding to green, an ECS cluster and
/// an ECR repository. A listener needs a default action, so the production one starts on blue,
/// as `localstack/bootstrap.sh` does; no service exists yet, so nothing is live until the
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
        let listener_arn = listener(80, target_groups.blue.clone())
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

/// A real `docker-registry` (Debian's package of the CNCF distribution registry) on a free
/// port of 127.0.0.1, storing in a temp dir, shared by the tests of this process. The Docker
/// Engine pushes to 127.0.0.0/8 over plain HTTP without configuration.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The user and password, for the registry started with [`Registry::start_with_auth`].
    pub credentials: Option<(String, String)>,
    _daemon: Daemon,
}

impl Registry {
    /// The open registry (no authentication).
    pub fn start() -> &'static Registry {
        static OPEN: OnceLock<Registry> = OnceLock::new();
        OPEN.get_or_init(|| Registry::launch(false))
    }

    /// A registry that wants basic authentication. The registry provisions its own htpasswd
    /// file with a user `docker` and a random password when the file is missing, and logs
    /// them; that is where they are read from.
    pub fn start_with_auth() -> &'static Registry {
        static AUTH: OnceLock<Registry> = OnceLock::new();
        AUTH.get_or_init(|| Registry::launch(true))
    }

    fn binary() -> PathBuf {
        if let Ok(path) = std::env::var(REGISTRY_BIN_ENV)
            && !path.is_empty()
        {
            return PathBuf::from(path);
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("docker-registry"))
                .find(|p| p.is_file())
        });
        on_path.unwrap_or_else(|| {
            panic!("docker-registry is not installed (not on PATH, {REGISTRY_BIN_ENV} not set)\nhint: {HINT_REGISTRY}")
        })
    }

    fn launch(auth: bool) -> Registry {
        let binary = Registry::binary();
        let dir = tempfile::Builder::new()
            .prefix("shipit-registry-")
            .tempdir()
            .unwrap()
            .keep();
        let auth_section = if auth {
            format!(
                "auth:\n  htpasswd:\n    realm: shipit-tests\n    path: {}\n",
                dir.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n  secret: shipit-tests\n{auth_section}",
            dir.join("data").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::File::create(&config_path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .unwrap();
        let config_arg = config_path.to_string_lossy().into_owned();
        let daemon = Daemon::spawn(&binary, &["serve", &config_arg], &[], dir);
        let host = daemon.wait_for_log("the registry to listen", |log| {
            let rest = &log[log.find("listening on 127.0.0.1:")? + "listening on ".len()..];
            let addr: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            addr.rsplit(':').next()?.parse::<u16>().ok()?;
            Some(addr)
        });
        let credentials = auth.then(|| {
            daemon.wait_for_log("the registry's provisioned password", |log| {
                let line = log
                    .lines()
                    .find(|l| l.contains("provisioning with default user"))?;
                let field = |name: &str| {
                    let start = line.find(&format!(" {name}="))? + name.len() + 2;
                    line[start..].split_whitespace().next().map(str::to_string)
                };
                Some((field("user")?, field("password")?))
            })
        });
        // /v2/ answers 200 (open) or 401 (auth): either way it serves.
        let url = format!("http://{host}/v2/");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match blocking_http("GET", &url) {
                Ok(r) if r.status == 200 || r.status == 401 => break,
                other => assert!(
                    Instant::now() < deadline,
                    "the registry at {host} does not answer: {:?}\nlog:\n{}",
                    other.map(|r| r.status),
                    daemon.log_text()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            host,
            credentials,
            _daemon: daemon,
        }
    }

    /// A repository name on this registry: `127.0.0.1:<port>/<name>`.
    pub fn repository(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }

    fn authorization(&self) -> Option<String> {
        use base64::Engine as _;
        self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// The tags of a repository (its name without the host), through the v2 API.
    pub async fn tags(&self, name: &str) -> Vec<String> {
        let auth = self.authorization();
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let answer = http(
            "GET",
            &format!("http://{}/v2/{name}/tags/list", self.host),
            &headers,
            Bytes::new(),
        )
        .await
        .unwrap();
        if answer.status == 404 {
            return Vec::new();
        }
        assert_eq!(answer.status, 200, "tags/list: {}", answer.body);
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        json["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The digest the registry serves for `name:reference` (`Docker-Content-Digest`), or
    /// `None` when it has no such manifest.
    pub async fn manifest_digest(&self, name: &str, reference: &str) -> Option<String> {
        let auth = self.authorization();
        let mut headers = vec![(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.manifest.v1+json",
        )];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        let answer = http(
            "HEAD",
            &format!("http://{}/v2/{name}/manifests/{reference}", self.host),
            &headers,
            Bytes::new(),
        )
        .await
        .unwrap();
        if answer.status == 404 {
            return None;
        }
        assert_eq!(answer.status, 200, "manifest {name}:{reference}");
        answer
            .headers
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string())
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
        Some(Slot::Blue)
    );
    assert_eq!(
        infra.listener_slot(&infra.test_listener_arn).await,
        Some(Slot::Green)
    );
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
