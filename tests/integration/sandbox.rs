//! `shipit sandbox`: `up` starts the moto server and an image registry on 127.0.0.1, creates
//! an ecs target's resources through the SDK and writes `[targets.sandbox]` into the config,
//! which then plans with no AWS variable set; `down` stops it all and gives the config back;
//! `status` tells a dead emulator; a busy port and a hand-written target stop `up` before
//! anything starts.
//!
//! The tests run the suite's `.venv/bin/moto_server` (`--moto-server`) on ports of their own;
//! one test lets `up` install moto into the sandbox's own venv from PyPI.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;

use shipit_pipeline::aws::{Clients, sdk_config_for};

use crate::harness::*;
use crate::load::{Load, release_of};

/// A project with a sandbox that is taken down when the test ends, passed or not.
struct SandboxProject {
    project: Project,
    emulator_port: u16,
    registry_port: u16,
    production_port: u16,
    test_port: u16,
}

impl SandboxProject {
    fn new(name: &str) -> SandboxProject {
        SandboxProject {
            project: Project::new(name),
            emulator_port: free_port(),
            registry_port: free_port(),
            production_port: free_port(),
            test_port: free_port(),
        }
    }

    /// `sandbox up` on the test's ports, running the suite's moto server.
    fn up(&self, extra: &[&str]) -> Output {
        let moto = moto_server();
        let mut args = vec!["--moto-server", moto.to_str().unwrap()];
        args.extend(extra);
        self.up_own_venv(&args)
    }

    /// `sandbox up` on the test's ports, with the sandbox's own venv.
    fn up_own_venv(&self, extra: &[&str]) -> Output {
        let ports = [
            self.emulator_port,
            self.registry_port,
            self.production_port,
            self.test_port,
        ]
        .map(|p| p.to_string());
        let mut args = vec![
            "sandbox",
            "up",
            "--emulator-port",
            &ports[0],
            "--registry-port",
            &ports[1],
            "--production-port",
            &ports[2],
            "--test-port",
            &ports[3],
        ];
        args.extend(extra);
        self.project.run(&args)
    }

    fn status(&self) -> (Output, serde_json::Value) {
        let out = self.project.run(&["sandbox", "status", "--json"]);
        let value = json(&out);
        (out, value)
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.project.config).unwrap()
    }
}

impl Drop for SandboxProject {
    fn drop(&mut self) {
        let _ = self.project.run(&["sandbox", "down"]);
    }
}

fn moto_server() -> PathBuf {
    let server = repo_root().join(".venv/bin/moto_server");
    assert!(
        server.exists(),
        "no {}: run `bash tests/run` once to install moto into .venv",
        server.display()
    );
    server
}

fn pid_runs(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// DescribeTasks of `arns` in the sandbox's cluster.
async fn described_tasks(
    aws: &Clients,
    arns: &[String],
) -> aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput {
    aws.ecs
        .describe_tasks()
        .cluster("sandbox")
        .set_tasks(Some(arns.to_vec()))
        .send()
        .await
        .unwrap()
}

/// The running count `describe-services` gives for `service` of the cluster `sandbox`.
async fn running_count(aws: &Clients, service: &str) -> i32 {
    let described = aws
        .ecs
        .describe_services()
        .cluster("sandbox")
        .services(service)
        .send()
        .await
        .unwrap();
    described.services()[0].running_count()
}

async fn clients(endpoint: &str) -> Clients {
    Clients::new(&sdk_config_for("us-east-1", Some(endpoint)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn up_makes_a_target_that_plans_with_no_aws_setup_and_down_removes_it_all() {
    let sandbox = SandboxProject::new("sandbox");
    let project = &sandbox.project;
    let before = sandbox.config_text();

    let out = sandbox.up(&["--json"]);
    assert_success(&out, "shipit sandbox up");
    let up = json(&out);
    assert_eq!(up["outcome"], "started", "{up}");
    let endpoint = format!("http://127.0.0.1:{}", sandbox.emulator_port);
    assert_eq!(up["status"]["endpoint"], endpoint.as_str());
    assert_eq!(up["status"]["running"], true);
    let emulator_pid = up["status"]["record"]["emulator"]["pid"].as_u64().unwrap();
    let registry_pid = up["status"]["record"]["registry"]["pid"].as_u64().unwrap();
    let agent_pid = up["status"]["record"]["agent"]["pid"].as_u64().unwrap();
    assert_eq!(
        up["status"]["production_url"],
        format!("http://127.0.0.1:{}/", sandbox.production_port).as_str()
    );
    assert_eq!(
        up["status"]["test_url"],
        format!("http://127.0.0.1:{}", sandbox.test_port).as_str()
    );

    // The block is in the config, after what was there, and loads.
    let text = sandbox.config_text();
    assert!(text.starts_with(&before), "{text}");
    let config: toml::Table = text.parse().unwrap();
    let target = &config["targets"]["sandbox"];
    assert_eq!(target["kind"].as_str(), Some("ecs"));
    assert_eq!(target["endpoint"].as_str(), Some(endpoint.as_str()));
    assert_eq!(
        target["repository"].as_str().unwrap(),
        format!("127.0.0.1:{}/{}", sandbox.registry_port, project.service)
    );
    assert_success(&project.run(&["config", "check"]), "shipit config check");

    // What the block names exists at the emulator: the production listener forwards to
    // green and the test listener to blue, the groups take ip targets, the cluster is active.
    let aws = clients(&endpoint).await;
    let group = |slot: &str| target["target_groups"][slot].as_str().unwrap().to_string();
    for (key, slot) in [("listener_arn", "green"), ("test_listener_arn", "blue")] {
        let arn = target[key].as_str().unwrap();
        let listeners = aws
            .elb
            .describe_listeners()
            .listener_arns(arn)
            .send()
            .await
            .unwrap();
        let action = &listeners.listeners()[0].default_actions()[0];
        assert_eq!(
            action.target_group_arn(),
            Some(group(slot).as_str()),
            "{key}"
        );
    }
    let groups = aws
        .elb
        .describe_target_groups()
        .target_group_arns(group("blue"))
        .target_group_arns(group("green"))
        .send()
        .await
        .unwrap();
    assert_eq!(groups.target_groups().len(), 2);
    for g in groups.target_groups() {
        assert_eq!(g.target_type().map(|t| t.as_str()), Some("ip"));
        assert_eq!(g.health_check_path(), Some("/healthz"));
    }
    let clusters = aws
        .ecs
        .describe_clusters()
        .clusters("sandbox")
        .send()
        .await
        .unwrap();
    assert_eq!(clusters.clusters()[0].status(), Some("ACTIVE"));
    // The registry answers the registry API.
    let registry = format!("127.0.0.1:{}", sandbox.registry_port)
        .parse()
        .unwrap();
    let (code, _) = get(registry, "/v2/").await.unwrap();
    assert_eq!(code, 200);

    // A dry run of the ecs path against it: no AWS variable, a dead AWS_ENDPOINT_URL and a
    // profile that does not exist change nothing, since the target's endpoint wins and a
    // loopback endpoint is signed with placeholder credentials.
    let out = project
        .command(&["release", "--dry-run", "--json", "--target", "sandbox"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_PROFILE", "no-such-profile-anywhere")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_success(&out, "shipit release --dry-run --target sandbox");
    let plan = json(&out);
    assert_eq!(plan["slot"], "blue", "{plan}");
    assert!(
        !plan["aws_operations"].as_array().unwrap().is_empty(),
        "{plan}"
    );

    // status says it runs; a second up finds it and changes nothing.
    let (out, status) = sandbox.status();
    assert_success(&out, "shipit sandbox status");
    assert_eq!(status["state"], "running");
    assert_eq!(status["endpoint"], endpoint.as_str());
    let again = sandbox.up(&["--json"]);
    assert_success(&again, "a second shipit sandbox up");
    let again = json(&again);
    assert_eq!(again["outcome"], "found", "{again}");
    assert_eq!(again["status"]["record"]["emulator"]["pid"], emulator_pid);
    assert_eq!(sandbox.config_text(), text, "the same block, once");

    // down stops both servers, frees their ports and gives the config back as it was.
    let out = project.run(&["sandbox", "down", "--json"]);
    assert_success(&out, "shipit sandbox down");
    assert_eq!(json(&out)["outcome"], "stopped");
    assert!(!pid_runs(emulator_pid) && !pid_runs(registry_pid) && !pid_runs(agent_pid));
    for port in [
        sandbox.emulator_port,
        sandbox.registry_port,
        sandbox.production_port,
        sandbox.test_port,
    ] {
        assert!(port_free(port), "port {port} is free again");
    }
    assert_eq!(sandbox.config_text(), before);
    let (out, status) = sandbox.status();
    assert_eq!(out.status.code(), Some(6), "status of no sandbox");
    assert_eq!(status["state"], "absent");
    let out = project.run(&["sandbox", "down", "--json"]);
    assert_success(&out, "a second shipit sandbox down");
    assert_eq!(json(&out)["outcome"], "absent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_port_is_named_and_nothing_starts() {
    let sandbox = SandboxProject::new("sbport");
    let before = sandbox.config_text();
    let all = [
        sandbox.emulator_port,
        sandbox.registry_port,
        sandbox.production_port,
        sandbox.test_port,
    ];
    for (port, flag) in [
        (sandbox.emulator_port, "--emulator-port"),
        (sandbox.registry_port, "--registry-port"),
        (sandbox.production_port, "--production-port"),
        (sandbox.test_port, "--test-port"),
    ] {
        let held = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let out = sandbox.up(&[]);
        assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("127.0.0.1:{port} is in use")),
            "{err}"
        );
        assert!(err.contains(flag), "{err}");
        drop(held);
        assert_eq!(sandbox.config_text(), before);
        let (_, status) = sandbox.status();
        assert_eq!(status["state"], "absent", "{status}");
        for other in all.iter().filter(|p| **p != port) {
            assert!(port_free(*other), "nothing was started on port {other}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_emulator_is_told_by_status_and_up_starts_a_new_sandbox() {
    let sandbox = SandboxProject::new("sbdead");
    let out = sandbox.up(&["--json"]);
    assert_success(&out, "shipit sandbox up");
    let first = json(&out);
    let emulator = first["status"]["record"]["emulator"]["pid"]
        .as_u64()
        .unwrap();
    let registry = first["status"]["record"]["registry"]["pid"]
        .as_u64()
        .unwrap();
    let listener = first["status"]["record"]["infra"]["listener_arn"].clone();

    let killed = std::process::Command::new("kill")
        .args(["-9", &emulator.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until(
        "the killed emulator to be gone",
        std::time::Duration::from_secs(10),
        || !pid_runs(emulator),
    );
    // The agent and its load balancer notice and stop, freeing their ports.
    let agent = first["status"]["record"]["agent"]["pid"].as_u64().unwrap();
    wait_until(
        "the agent to stop once its emulator is gone",
        std::time::Duration::from_secs(15),
        || !pid_runs(agent),
    );
    for port in [
        sandbox.emulator_port,
        sandbox.production_port,
        sandbox.test_port,
    ] {
        assert!(
            port_free(port),
            "port {port} is free once the agent stopped"
        );
    }
    let (out, status) = sandbox.status();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(status["state"], "broken", "{status}");
    assert_eq!(status["running"], false);
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("AWS emulator") && problems.contains(&emulator.to_string()),
        "{problems}"
    );
    assert!(problems.contains("agent"), "{problems}");
    let text = sandbox.project.run(&["sandbox", "status"]);
    assert!(stderr(&text).contains("not running"), "{}", stderr(&text));

    // up starts afresh: the old registry is stopped, a new emulator gets new resources, and
    // the block in the config names them.
    let out = sandbox.up(&["--json"]);
    assert_success(&out, "shipit sandbox up after the emulator died");
    let second = json(&out);
    assert_eq!(second["outcome"], "started");
    assert!(!pid_runs(registry), "the old registry was stopped");
    let new_listener = &second["status"]["record"]["infra"]["listener_arn"];
    assert_ne!(new_listener, &listener);
    let config: toml::Table = sandbox.config_text().parse().unwrap();
    assert_eq!(
        config["targets"]["sandbox"]["listener_arn"].as_str(),
        new_listener.as_str()
    );
    assert_eq!(
        sandbox.config_text().matches("[targets.sandbox]").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_written_sandbox_target_is_left_alone_and_print_writes_nothing() {
    let sandbox = SandboxProject::new("sbmine");
    let mut text = sandbox.config_text();
    text.push_str("\n[targets.sandbox]\nkind = \"local\"\nlisten = \"127.0.0.1:9\"\n");
    std::fs::write(&sandbox.project.config, &text).unwrap();

    let out = sandbox.up(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("shipit.toml") && err.contains("[targets.sandbox]"),
        "{err}"
    );
    assert!(err.contains("--print"), "{err}");
    assert_eq!(sandbox.config_text(), text);
    let (_, status) = sandbox.status();
    assert_eq!(status["state"], "absent", "nothing stays running: {status}");
    assert!(port_free(sandbox.emulator_port) && port_free(sandbox.registry_port));

    // --print prints the block and leaves the config alone.
    let out = sandbox.up(&["--print"]);
    assert_success(&out, "shipit sandbox up --print");
    let printed = String::from_utf8(out.stdout).unwrap();
    let block: toml::Table = printed.parse().unwrap();
    assert_eq!(block["targets"]["sandbox"]["kind"].as_str(), Some("ecs"));
    assert_eq!(sandbox.config_text(), text);
    let out = sandbox.project.run(&["sandbox", "down"]);
    assert_success(&out, "shipit sandbox down");
    assert_eq!(
        sandbox.config_text(),
        text,
        "down leaves a block it did not write"
    );
}

/// Without `--moto-server`, `up` installs moto into the sandbox's venv (from PyPI) and runs
/// it from there; a second sandbox of the same state directory reuses that venv.
#[tokio::test(flavor = "multi_thread")]
async fn up_installs_moto_into_its_own_venv_once() {
    let sandbox = SandboxProject::new("sbvenv");
    let out = sandbox.up_own_venv(&[]);
    assert_success(&out, "shipit sandbox up (installing moto)");
    let venv = sandbox.project.state_dir().join("sandbox/venv");
    assert!(
        stderr(&out).contains("installing moto[server]"),
        "{}",
        stderr(&out)
    );
    let (_, status) = sandbox.status();
    assert_eq!(
        status["record"]["emulator"]["program"].as_str().unwrap(),
        venv.join("bin/moto_server").to_str().unwrap()
    );
    assert_success(
        &sandbox.project.run(&["sandbox", "down"]),
        "shipit sandbox down",
    );
    assert!(
        venv.join("bin/moto_server").is_file(),
        "down keeps the venv"
    );
    let out = sandbox.up_own_venv(&[]);
    assert_success(&out, "shipit sandbox up (venv there)");
    assert!(!stderr(&out).contains("installing"), "{}", stderr(&out));
}

/// The ECS path against the sandbox, for real: the service's task runs as a container of the
/// pushed image, the migrate hook as a one-off container (RunTask), the task is registered
/// in its target group once healthy, and ECS's reads tell what runs. A task that crashes
/// stops with its exit code, and the release fails fast on it with the live slot untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_on_the_sandbox_runs_its_tasks_and_a_crashing_one_fails_fast() {
    let sandbox = SandboxProject::new("sbrun");
    let project = &sandbox.project;
    project.add_env(&[
        ("HELLO_MIGRATE", "${HELLO_MIGRATE:-ok}"),
        ("HELLO_EXIT", "${HELLO_EXIT:-}"),
    ]);
    let mut text = sandbox.config_text();
    text.push_str(&format!(
        "\n[services.{}.hooks]\nmigrate = {{ command = [\"migrate\"], timeout = \"1m\" }}\n",
        project.service
    ));
    std::fs::write(&project.config, text).unwrap();
    let out = sandbox.up(&["--json"]);
    assert_success(&out, "shipit sandbox up");
    let up = json(&out);
    let id = up["status"]["record"]["id"].as_str().unwrap().to_string();
    let endpoint = up["status"]["endpoint"].as_str().unwrap().to_string();
    let group = |slot: &str| {
        up["status"]["record"]["infra"]["target_groups"][slot]
            .as_str()
            .unwrap()
            .to_string()
    };
    let containers = || {
        docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=shipit.sandbox={id}"),
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };

    let out = project.run(&["release", "--target", "sandbox", "--json"]);
    assert_success(&out, "shipit release --target sandbox");
    let record = json(&out);
    let release = record["serves"].as_str().unwrap().to_string();
    assert_eq!(record["slot"], "blue");
    let progress = stderr(&out);
    assert!(
        progress.contains("migrate hook: running `migrate` in task"),
        "{progress}"
    );
    assert!(progress.contains("2 of 2 targets healthy"), "{progress}");

    // Two containers run (the migration's is gone), they serve the release, and they are
    // the targets of the blue group.
    let running = containers();
    assert_eq!(running.len(), 2, "{running:?}");
    let mut ips = Vec::new();
    let mut hosts = std::collections::BTreeSet::new();
    for container in &running {
        let inspect = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{.Config.Image}} {{.Config.Hostname}}",
            container,
        ]);
        let fields: Vec<&str> = inspect.split_whitespace().collect();
        let [ip, image, host] = fields[..] else {
            panic!("{inspect}")
        };
        assert!(
            image.starts_with(&format!("127.0.0.1:{}/", sandbox.registry_port)),
            "{image}"
        );
        ips.push(ip.to_string());
        hosts.insert(format!("host={host}"));
    }
    let addr = format!("{}:8080", ips[0]).parse().unwrap();
    let (code, body) = get(addr, "/version").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(&release), "{body}");
    // The load balancer's production listener serves it on this machine, from both tasks
    // in turn.
    let production = format!("127.0.0.1:{}", sandbox.production_port)
        .parse()
        .unwrap();
    let (code, body) = get(production, "/version").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(&release), "{body}");
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (code, body) = get(production, "/host").await.unwrap();
        assert_eq!(code, 200, "{body}");
        answered.insert(body.trim().to_string());
    }
    assert_eq!(answered, hosts);
    let status = project.run(&["status", "--target", "sandbox", "--json"]);
    assert_eq!(
        json(&status)["url"],
        format!("http://127.0.0.1:{}/", sandbox.production_port).as_str()
    );
    let aws = clients(&endpoint).await;
    let health = aws
        .elb
        .describe_target_health()
        .target_group_arn(group("blue"))
        .send()
        .await
        .unwrap();
    let targets: Vec<String> = health
        .target_health_descriptions()
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d.target().unwrap().id().unwrap(),
                d.target().unwrap().port().unwrap()
            )
        })
        .collect();
    let mut expected: Vec<String> = ips.iter().map(|ip| format!("{ip}:8080")).collect();
    let mut targets = targets;
    expected.sort();
    targets.sort();
    assert_eq!(targets, expected);
    let service = format!("{}-blue", project.service);
    assert_eq!(running_count(&aws, &service).await, 2);
    let listed = aws
        .ecs
        .list_tasks()
        .cluster("sandbox")
        .service_name(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.task_arns().len(), 2);
    let tasks = described_tasks(&aws, listed.task_arns()).await;
    for task in tasks.tasks() {
        assert_eq!(task.last_status(), Some("RUNNING"));
    }
    // The migration ran as a one-off task that exited 0.
    let migrations = aws
        .ecs
        .list_tasks()
        .cluster("sandbox")
        .started_by("shipit-migrate")
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    assert_eq!(migrations.task_arns().len(), 1);
    let migration = described_tasks(&aws, migrations.task_arns()).await;
    assert_eq!(migration.tasks()[0].containers()[0].exit_code(), Some(0));

    // A staged release runs green's tasks beside blue's. A split of the production listener
    // between the two groups is sticky when its stickiness is on, as on an ALB, and weighs
    // every request on its own when it is off.
    let out = project.run(&["release", "--target", "sandbox", "--no-promote", "--json"]);
    assert_success(&out, "shipit release --target sandbox --no-promote");
    let staged = json(&out)["id"].as_str().unwrap().to_string();
    assert_ne!(staged, release);
    let listener = up["status"]["record"]["infra"]["listener_arn"]
        .as_str()
        .unwrap()
        .to_string();
    let before = aws
        .elb
        .describe_listeners()
        .listener_arns(&listener)
        .send()
        .await
        .unwrap()
        .listeners()[0]
        .default_actions()
        .to_vec();
    let split = |sticky: bool| {
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, ForwardActionConfig, TargetGroupStickinessConfig,
            TargetGroupTuple,
        };
        let tuple = |slot: &str| {
            TargetGroupTuple::builder()
                .target_group_arn(group(slot))
                .weight(1)
                .build()
        };
        aws.elb
            .modify_listener()
            .listener_arn(&listener)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .forward_config(
                        ForwardActionConfig::builder()
                            .target_groups(tuple("blue"))
                            .target_groups(tuple("green"))
                            .target_group_stickiness_config(
                                TargetGroupStickinessConfig::builder()
                                    .enabled(sticky)
                                    .duration_seconds(3600)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .send()
    };
    split(true).await.unwrap();
    let mut sides = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let first = crate::canary::request(production, "/", &[]).await.unwrap();
        let cookie = first.cookie.expect("a sticky split sets its cookie");
        let side = first.release.unwrap();
        for _ in 0..10 {
            let again = crate::canary::request(production, "/", &[("cookie", &cookie)])
                .await
                .unwrap();
            assert_eq!(again.release.as_deref(), Some(side.as_str()), "{cookie}");
            assert_eq!(again.cookie, None);
        }
        sides.insert(side, cookie);
    }
    assert_eq!(
        sides.keys().cloned().collect::<Vec<_>>(),
        {
            let mut both = vec![release.clone(), staged.clone()];
            both.sort();
            both
        },
        "a 50/50 split put four new clients on one side"
    );
    split(false).await.unwrap();
    // The cookie that kept a client on the staged release is not read any more.
    let cookie = sides[&staged].clone();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let answer = crate::canary::request(production, "/", &[("cookie", &cookie)])
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.cookie, None,
            "a split without stickiness sets no cookie"
        );
        seen.insert(answer.release.unwrap());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The listener as the release left it: blue's alone.
    aws.elb
        .modify_listener()
        .listener_arn(&listener)
        .set_default_actions(Some(before))
        .send()
        .await
        .unwrap();
    for _ in 0..6 {
        let (code, body) = get(production, "/").await.unwrap();
        assert_eq!((code, release_of(&body)), (200, Some(release.clone())));
    }

    // A candidate whose process exits 3 at once: its tasks stop with that exit code, and the
    // release fails on them before its deadline; blue keeps serving.
    let out = project
        .command(&["release", "--target", "sandbox", "--json"])
        .env("HELLO_EXIT", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let cause = json(&out)["error"].to_string();
    assert!(
        cause.contains("EssentialContainerExited") && cause.contains("exit code 3"),
        "{cause}"
    );
    let (code, body) = get(addr, "/version").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(&release), "{body}");
    let status = project.run(&["status", "--target", "sandbox", "--json"]);
    assert_eq!(json(&status)["live"]["release"], release.as_str());
    let stopped = aws
        .ecs
        .list_tasks()
        .cluster("sandbox")
        .service_name(format!("{}-green", project.service))
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    assert!(!stopped.task_arns().is_empty());
    // The staged release's tasks were stopped by the scheduler when the crashing one took
    // green; every other stopped task is one that crashed.
    let stopped = described_tasks(&aws, stopped.task_arns()).await;
    let crashed: Vec<_> = stopped
        .tasks()
        .iter()
        .filter(|t| t.stop_code().map(|c| c.as_str()) != Some("ServiceSchedulerInitiated"))
        .collect();
    assert!(!crashed.is_empty());
    for task in crashed {
        assert_eq!(
            task.stop_code().map(|c| c.as_str()),
            Some("EssentialContainerExited")
        );
        assert_eq!(task.containers()[0].exit_code(), Some(3));
    }

    // A task that stops answering (its container paused behind the agent's back) fails the
    // load balancer's health checks: it leaves the route and is stopped, and the service
    // starts another in its place.
    let paused = &running[0];
    docker(&["pause", paused]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let unhealthy = loop {
        let stopped = aws
            .ecs
            .list_tasks()
            .cluster("sandbox")
            .service_name(&service)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
            .send()
            .await
            .unwrap();
        let described = described_tasks(&aws, stopped.task_arns()).await;
        let found = described
            .tasks()
            .iter()
            .find(|t| {
                t.stopped_reason()
                    .is_some_and(|r| r.contains("failed ELB health checks"))
            })
            .cloned();
        if let Some(task) = found {
            break task;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the paused task was never taken out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        unhealthy.stop_code().map(|c| c.as_str()),
        Some("ServiceSchedulerInitiated")
    );
    // Then every request is answered by the release, from the tasks that answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the production listener still sends requests to the paused task"
        );
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(2), get(production, "/")).await;
        match answer {
            Ok(Ok((200, body))) if release_of(&body).as_deref() == Some(release.as_str()) => {
                in_a_row += 1;
            }
            _ => in_a_row = 0,
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let running = running_count(&aws, &service).await;
        let gone = !containers().contains(paused);
        if running == 2 && gone {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no task replaced the unhealthy one (running {}), or its container is left",
            running
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // down removes the task containers with the rest.
    assert_success(&project.run(&["sandbox", "down"]), "shipit sandbox down");
    assert!(containers().is_empty());
}

/// The ECS path with real traffic: ten release attempts (a canary and a crashing candidate
/// among them) and a rollback, under load through the sandbox's production listener, fail
/// no request; each release is served once it is live, and the canary's bake is served by
/// both releases.
#[tokio::test(flavor = "multi_thread")]
async fn releases_a_canary_a_crash_and_a_rollback_under_load_fail_no_request() {
    let sandbox = SandboxProject::new("sbload");
    let project = &sandbox.project;
    project.add_env(&[("HELLO_EXIT", "${HELLO_EXIT:-}")]);
    assert_success(&sandbox.up(&[]), "shipit sandbox up");
    let production: std::net::SocketAddr = format!("127.0.0.1:{}", sandbox.production_port)
        .parse()
        .unwrap();
    let release = |env: &[(&str, &str)]| {
        let mut cmd = project.command(&["release", "--target", "sandbox", "--json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let serves = |out: &Output| {
        assert_success(out, "shipit release --target sandbox");
        json(out)["serves"].as_str().unwrap().to_string()
    };
    let first = serves(&release(&[]));
    // Paced: unpaced clients on two tasks per slot reach their request bound before the
    // test's end, and then the load has stopped.
    let load = Load::start_paced(production, 4, std::time::Duration::from_millis(2));
    assert!(
        load.answered_after_now(std::time::Duration::from_secs(10))
            .await
    );

    let mut live = first.clone();
    for _ in 0..7 {
        live = serves(&release(&[]));
        let (code, body) = get(production, "/").await.unwrap();
        assert_eq!(
            (code, release_of(&body)),
            (200, Some(live.clone())),
            "{body}"
        );
    }

    // A canary: half the new clients go to the new release for 3 s, then all of them.
    let text = sandbox.config_text();
    std::fs::write(
        &project.config,
        text.replace(
            "desired_count = 2\n",
            "desired_count = 2\nshift = \"canary:50:3s\"\n",
        ),
    )
    .unwrap();
    let before_canary = live.clone();
    let canary_started = std::time::Instant::now();
    live = serves(&release(&[]));
    let canary_ended = std::time::Instant::now();

    // A candidate that crashes: refused, the live release keeps serving.
    let out = release(&[("HELLO_EXIT", "3")]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let (code, body) = get(production, "/").await.unwrap();
    assert_eq!(
        (code, release_of(&body)),
        (200, Some(live.clone())),
        "{body}"
    );

    // A rollback puts the release before the canary back.
    let out = project.run(&["rollback", "--target", "sandbox", "--json"]);
    assert_success(&out, "shipit rollback --target sandbox");
    let (code, body) = get(production, "/").await.unwrap();
    assert_eq!(
        (code, release_of(&body)),
        (200, Some(before_canary.clone())),
        "{body}"
    );
    assert!(
        load.answered_after_now(std::time::Duration::from_secs(10))
            .await
    );

    let report = load.stop().await;
    report.assert_no_failures();
    let in_canary: std::collections::BTreeSet<String> = report
        .samples
        .iter()
        .filter(|s| s.started >= canary_started && s.finished <= canary_ended)
        .filter_map(|s| s.release.clone())
        .collect();
    assert!(
        in_canary.contains(&before_canary) && in_canary.contains(&live),
        "the canary's bake was served by {in_canary:?}"
    );
    eprintln!(
        "sandbox under load: {} requests, 0 failed, {} releases seen",
        report.ok(),
        report
            .samples
            .iter()
            .filter_map(|s| s.release.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}

/// One raw HTTP/1.1 request to `port` of 127.0.0.1 with `headers`; the status code.
fn raw_status(port: u16, headers: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\n{headers}X-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A web page in a browser on this machine can reach 127.0.0.1: the endpoint refuses what
/// carries an Origin, names another Host (DNS rebinding) or is a CORS preflight, and answers
/// a program that names it as 127.0.0.1 or localhost.
#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_refuses_web_pages_and_other_host_names() {
    let sandbox = SandboxProject::new("sbweb");
    assert_success(&sandbox.up(&[]), "shipit sandbox up");
    let port = sandbox.emulator_port;
    let own = format!("Host: 127.0.0.1:{port}\r\n");
    assert_eq!(raw_status(port, &own), 200, "a program on this machine");
    assert_eq!(
        raw_status(port, &format!("Host: localhost:{port}\r\n")),
        200
    );
    assert_eq!(
        raw_status(port, &format!("{own}Origin: http://evil.example\r\n")),
        403,
        "a web page's request"
    );
    assert_eq!(
        raw_status(port, &format!("Host: evil.example:{port}\r\n")),
        403,
        "another name for this address"
    );
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(format!("OPTIONS / HTTP/1.1\r\n{own}Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "a CORS preflight: {answer}"
    );
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{answer}"
    );
}

/// A Ctrl-C while `up` starts its processes stops them again: nothing is left listening,
/// and the config is as it was.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_up_leaves_nothing_running() {
    use std::io::BufRead;
    let sandbox = SandboxProject::new("sbint");
    let before = sandbox.config_text();
    let moto = moto_server();
    let ports = [
        sandbox.emulator_port,
        sandbox.registry_port,
        sandbox.production_port,
        sandbox.test_port,
    ]
    .map(|p| p.to_string());
    let mut child = sandbox
        .project
        .command(&[
            "sandbox",
            "up",
            "--moto-server",
            moto.to_str().unwrap(),
            "--emulator-port",
            &ports[0],
            "--registry-port",
            &ports[1],
            "--production-port",
            &ports[2],
            "--test-port",
            &ports[3],
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("starting the image registry") {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("starting the image registry")),
        "{seen:#?}"
    );
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:#?}");
    for port in [
        sandbox.emulator_port,
        sandbox.registry_port,
        sandbox.production_port,
        sandbox.test_port,
    ] {
        wait_until(
            &format!("port {port} to be free"),
            std::time::Duration::from_secs(15),
            || port_free(port),
        );
    }
    assert_eq!(sandbox.config_text(), before);
    let (_, status) = sandbox.status();
    assert_eq!(status["state"], "absent", "{status}");
}

/// Two sandboxes on one emulator (the second given it with --endpoint) keep apart: their
/// resources and clusters have their own names, and the second one's `down` deletes only
/// its own. Two equal ports are refused before anything starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_on_another_ones_emulator_keeps_to_its_own_resources() {
    let first = SandboxProject::new("sbown");
    let out = first.up(&["--json"]);
    assert_success(&out, "shipit sandbox up");
    let up = json(&out);
    let upstream = up["status"]["record"]["upstream"]
        .as_str()
        .unwrap()
        .to_string();
    let first_listener = up["status"]["record"]["infra"]["listener_arn"]
        .as_str()
        .unwrap()
        .to_string();

    let second = SandboxProject::new("sbguest");
    let port = second.production_port.to_string();
    let out = second.project.run(&[
        "sandbox",
        "up",
        "--endpoint",
        "http://127.0.0.1:1",
        "--production-port",
        &port,
        "--test-port",
        &port,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--production-port and --test-port are both"),
        "{}",
        stderr(&out)
    );

    let out = second.up_own_venv(&["--endpoint", &format!("http://{upstream}"), "--json"]);
    assert_success(&out, "shipit sandbox up --endpoint");
    let guest = json(&out);
    let cluster = guest["status"]["record"]["infra"]["cluster"]
        .as_str()
        .unwrap();
    assert_ne!(cluster, "sandbox", "{guest}");
    assert_ne!(
        guest["status"]["record"]["infra"]["listener_arn"]
            .as_str()
            .unwrap(),
        first_listener
    );
    assert!(guest["status"]["record"]["emulator"].is_null());
    assert_success(
        &second.project.run(&["sandbox", "down"]),
        "the guest's sandbox down",
    );

    // The first sandbox's load balancer and cluster are untouched.
    let aws = clients(up["status"]["endpoint"].as_str().unwrap()).await;
    let listeners = aws
        .elb
        .describe_listeners()
        .listener_arns(&first_listener)
        .send()
        .await
        .unwrap();
    assert_eq!(listeners.listeners().len(), 1);
    let clusters = aws
        .ecs
        .describe_clusters()
        .clusters("sandbox")
        .send()
        .await
        .unwrap();
    assert_eq!(clusters.clusters()[0].status(), Some("ACTIVE"));
    let (out, status) = first.status();
    assert_success(&out, "the first sandbox's status");
    assert_eq!(status["state"], "running");
}
