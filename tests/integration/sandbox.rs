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

/// A project with a sandbox that is taken down when the test ends, passed or not.
struct SandboxProject {
    project: Project,
    emulator_port: u16,
    registry_port: u16,
}

impl SandboxProject {
    fn new(name: &str) -> SandboxProject {
        SandboxProject {
            project: Project::new(name),
            emulator_port: free_port(),
            registry_port: free_port(),
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
        let (e, r) = (
            self.emulator_port.to_string(),
            self.registry_port.to_string(),
        );
        let mut args = vec![
            "sandbox",
            "up",
            "--emulator-port",
            &e,
            "--registry-port",
            &r,
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
    assert!(!pid_runs(emulator_pid) && !pid_runs(registry_pid));
    assert!(port_free(sandbox.emulator_port) && port_free(sandbox.registry_port));
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
    for (port, flag) in [
        (sandbox.emulator_port, "--emulator-port"),
        (sandbox.registry_port, "--registry-port"),
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
        let other = if flag == "--emulator-port" {
            sandbox.registry_port
        } else {
            sandbox.emulator_port
        };
        assert!(port_free(other), "nothing was started on the other port");
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
    let (out, status) = sandbox.status();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(status["state"], "broken", "{status}");
    assert_eq!(status["running"], false);
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("AWS emulator") && problems.contains(&emulator.to_string()),
        "{problems}"
    );
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
