//! Releases to an ecs target on the moto server: the real `shipit` binary, a real image pushed
//! to a real local registry, and [`EcsAgent`] registering targets the way ECS would.
//!
//! moto starts no task and routes no request, so these tests assert what shipit stored in
//! AWS after each scenario: the listener's forward and weights, the task definitions' images,
//! the services' desired counts, the CloudFront origin, and the lock and history parameters.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use shipit_pipeline::Slot;
use shipit_pipeline::lock::{Holder, LockStore};
use shipit_pipeline::platform::ecs::records::SsmLockStore;

use crate::aws::{EcsAgent, Infra, Moto, Registry, unique};
use crate::harness::{SHIPIT, hello_context, json, stderr};

/// What every test's service name starts with; each test adds its own suffix, so the images
/// it builds are its own and go when it ends.
const SERVICE_PREFIX: &str = "hello";

/// One test's project: its infrastructure, its config, the agent playing ECS.
struct EcsProject {
    infra: Infra,
    /// The service's name, unique to the test.
    service: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    agent: EcsAgent,
}

impl EcsProject {
    /// `extra` lines go into the `[targets.aws]` table.
    async fn new(prefix: &str, extra: &str) -> EcsProject {
        let infra = Infra::create(prefix).await;
        let service = unique(SERVICE_PREFIX);
        let agent = EcsAgent::start(&infra, &service);
        let dir = tempfile::Builder::new()
            .prefix("shipit-ecs-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("shipit.toml");
        // Registry::start() is shared by the process; the config pushes there.
        let _ = Registry::start();
        let text = format!(
            r#"
[services.{service}]
context = "{context}"
port = 8080

[services.{service}.health]
path = "/healthz"
{target}"#,
            context = hello_context().display(),
            target = infra.config_toml(
                &service,
                &format!(
                    "desired_count = 1\n{}{}{extra}",
                    if extra.contains("verify_timeout") {
                        ""
                    } else {
                        "verify_timeout = \"20s\"\n"
                    },
                    // The tests see the old slot scaled down after each release, unless
                    // they test the warm-rollback window.
                    if extra.contains("keep_previous") {
                        ""
                    } else {
                        "keep_previous = \"0s\"\n"
                    }
                ),
            ),
        );
        std::fs::write(&config, text).unwrap();
        crate::harness::count_in_census(&service, None);
        EcsProject {
            infra,
            service,
            dir,
            config,
            agent,
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("shipit runs")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = std::process::Command::new(SHIPIT);
        cmd.arg("-c").arg(&self.config).args(args);
        cmd.env_remove("SHIPIT_STATE_DIR")
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1")
            .env("SHIPIT_STATE_DIR", self.dir.path().join(".shipit"))
            .stdin(std::process::Stdio::null());
        Moto::apply_env(&mut cmd);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        cmd
    }

    fn set_shift(&self, shift: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("shift = "))
            .collect();
        let text = kept.join("\n").replace(
            "desired_count = 1",
            &format!("desired_count = 1\nshift = \"{shift}\""),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// `shipit release --json`, which must succeed: the record.
    async fn release(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["release", "--json"];
        all.extend(args);
        let out = self.run(&all).await;
        ok(&out, "shipit release");
        json(&out)
    }

    fn group(&self, slot: Slot) -> String {
        self.infra.target_groups.get(slot).clone()
    }

    /// The production forward, as `(slot, weight)`.
    async fn forward(&self) -> Vec<(Slot, Option<i32>)> {
        self.infra
            .listener_forward(&self.infra.listener_arn)
            .await
            .into_iter()
            .map(|(group, weight)| {
                let slot = self
                    .infra
                    .slot_of(&group)
                    .unwrap_or_else(|| panic!("the listener forwards to a stranger: {group}"));
                (slot, weight)
            })
            .collect()
    }

    /// A slot's service: (desired count, image of its task definition, its task definition).
    async fn service(&self, slot: Slot) -> Option<(i32, String, String)> {
        let service = self
            .infra
            .service(&Infra::service_name(&self.service, slot))
            .await?;
        let td = service.task_definition().unwrap_or_default().to_string();
        let image = self.infra.task_definition_image(&td).await;
        Some((service.desired_count(), image, td))
    }

    fn lock_name(&self) -> String {
        format!("/shipit/{}/{}/lock", self.infra.cluster, self.service)
    }

    /// The stored record of a release.
    async fn record(&self, id: &str) -> serde_json::Value {
        let name = format!(
            "/shipit/{}/{}/releases/{id}",
            self.infra.cluster, self.service
        );
        let value = self
            .infra
            .parameter(&name)
            .await
            .unwrap_or_else(|| panic!("no history record {name}"));
        serde_json::from_str(&value).expect("a record is JSON")
    }

    async fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]).await;
        ok(&out, "shipit status");
        json(&out)
    }
}

/// The images the test built (and pushed) go with it, passed or failed; AWS state lives in
/// the moto server, which the run stops.
impl Drop for EcsProject {
    fn drop(&mut self) {
        crate::harness::remove_images_of(&self.service);
    }
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

fn all_to(slot: Slot) -> Vec<(Slot, Option<i32>)> {
    vec![(slot, Some(100)), (slot.other(), Some(0))]
}

/// After a finished run: the lock is free and the record says how it ended.
async fn assert_finished(project: &EcsProject, id: &str, outcome: &str) -> serde_json::Value {
    assert_eq!(
        project.infra.parameter(&project.lock_name()).await,
        None,
        "the lock is released"
    );
    let record = project.record(id).await;
    assert_eq!(
        record["outcome"]["status"].as_str(),
        Some(outcome),
        "{record:#}"
    );
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn first_and_second_releases_alternate_slots() {
    let project = EcsProject::new("alt", "").await;
    let repository =
        Registry::start().repository(&format!("{}/{}", project.infra.prefix, project.service));

    // Before anything: the listener forwards to blue, where no service runs.
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();
    assert_eq!(first["slot"], "blue");
    assert_eq!(project.forward().await, all_to(Slot::Blue));
    let (desired, image, _) = project.service(Slot::Blue).await.expect("blue service");
    assert_eq!(desired, 1);
    assert!(
        image.starts_with(&format!("{repository}@sha256:")),
        "the task definition runs the pushed digest: {image}"
    );
    assert_eq!(first["image"].as_str(), Some(image.as_str()));
    assert!(
        project.service(Slot::Green).await.is_none(),
        "green was never created"
    );
    assert_finished(&project, &first_id, "succeeded").await;
    let status = project.status().await;
    assert_eq!(status["live"]["slot"], "blue");
    assert_eq!(status["live"]["release"], first_id.as_str());

    let second = project.release(&[]).await;
    let second_id = second["serves"].as_str().unwrap().to_string();
    assert_eq!(second["slot"], "green");
    assert_eq!(second["previous"].as_str(), Some(first_id.as_str()));
    assert_eq!(project.forward().await, all_to(Slot::Green));
    let (green_desired, green_image, _) = project.service(Slot::Green).await.expect("green");
    assert_eq!(green_desired, 1);
    assert!(green_image.starts_with(&format!("{repository}@sha256:")));
    let (blue_desired, _, _) = project.service(Slot::Blue).await.expect("blue");
    assert_eq!(
        blue_desired, 0,
        "the old slot is retired (keep_previous = 0s)"
    );
    assert_finished(&project, &second_id, "succeeded").await;
    let status = project.status().await;
    assert_eq!(status["live"]["slot"], "green");
    assert_eq!(status["live"]["release"], second_id.as_str());

    let out = project.run(&["history", "--json"]).await;
    ok(&out, "shipit history");
    let ids: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [second_id.clone(), first_id], "newest first");

    // Down scales both services to zero and leaves the listener and the history alone.
    let out = project.run(&["down", "--json"]).await;
    ok(&out, "shipit down");
    assert_eq!(json(&out)["was_live"]["release"], second_id.as_str());
    assert_eq!(project.service(Slot::Green).await.map(|s| s.0), Some(0));
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert_eq!(project.forward().await, all_to(Slot::Green));
    assert_eq!(project.status().await["live"], serde_json::Value::Null);
    assert_finished(&project, &second_id, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_promote_stages_on_the_test_listener_then_promote_shifts() {
    let project = EcsProject::new("stage", "").await;
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();

    let staged = project.release(&["--no-promote"]).await;
    let staged_id = staged["serves"].as_str().unwrap().to_string();
    assert_eq!(staged["outcome"]["status"], "staged", "{staged:#}");
    let preview = staged["outcome"]["preview"].as_str().unwrap_or_default();
    assert!(
        preview.starts_with(&format!("http://{}:8080", project.infra.load_balancer_dns)),
        "the preview is the test listener: {preview}"
    );
    let test_forward = project
        .infra
        .listener_forward(&project.infra.test_listener_arn)
        .await;
    assert_eq!(
        test_forward,
        [
            (project.group(Slot::Green), Some(100)),
            (project.group(Slot::Blue), Some(0))
        ],
        "the test listener forwards to the staged slot"
    );
    assert_eq!(
        project.forward().await,
        all_to(Slot::Blue),
        "live traffic stays on blue"
    );
    assert_eq!(project.service(Slot::Green).await.map(|s| s.0), Some(1));
    assert_eq!(project.status().await["live"]["release"], first_id.as_str());

    let out = project.run(&["promote", "--json"]).await;
    ok(&out, "shipit promote");
    let promoted = json(&out);
    assert_eq!(promoted["id"].as_str(), Some(staged_id.as_str()));
    assert_eq!(project.forward().await, all_to(Slot::Green));
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert_finished(&project, &staged_id, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_steps_move_listener_weights_then_all_traffic() {
    let project = EcsProject::new("canary", "shift = \"linear:40:2s\"\n").await;
    project.release(&[]).await;
    assert_eq!(project.forward().await, all_to(Slot::Blue));

    // Watch the listener while the weighted release runs.
    let release = project.run(&["release", "--json"]);
    tokio::pin!(release);
    let mut seen: Vec<Vec<(Slot, Option<i32>)>> = Vec::new();
    let out = loop {
        tokio::select! {
            out = &mut release => break out,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let forward = project.forward().await;
                if seen.last() != Some(&forward) {
                    seen.push(forward);
                }
            }
        }
    };
    ok(&out, "the canary release");
    let record = json(&out);
    let forward = project.forward().await;
    if seen.last() != Some(&forward) {
        seen.push(forward);
    }
    assert_eq!(
        seen,
        [
            all_to(Slot::Blue),
            vec![(Slot::Blue, Some(60)), (Slot::Green, Some(40))],
            vec![(Slot::Blue, Some(20)), (Slot::Green, Some(80))],
            all_to(Slot::Green),
        ],
        "the listener's forward, in the order seen"
    );
    let steps: Vec<u64> = record["shift_steps"]
        .as_array()
        .expect("the record lists the shift steps")
        .iter()
        .map(|s| s["percent"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [40, 80]);
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert_eq!(project.service(Slot::Green).await.map(|s| s.0), Some(1));
    assert_finished(&project, record["serves"].as_str().unwrap(), "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_health_wait_leaves_the_listener_and_scales_the_candidate_to_zero() {
    let project = EcsProject::new("broken", "verify_timeout = \"3s\"\n").await;
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();

    // Green's tasks never pass their health check: no target is ever registered.
    project.agent.break_slot(Slot::Green);
    let out = project.run(&["release", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(5),
        "verification failed: {}",
        stderr(&out)
    );
    let error = json(&out);
    let cause = error["error"]["cause"].as_str().unwrap();
    assert!(
        cause.contains("the green slot did not become ready")
            && cause.contains("1 healthy target in the green target group")
            && cause.contains("0 of 0 targets healthy (no targets registered)"),
        "the cause names the condition and the last state: {cause}"
    );
    let hint = error["error"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("live slot was not touched"), "{hint}");

    assert_eq!(
        project.forward().await,
        all_to(Slot::Blue),
        "the listener is unchanged"
    );
    let (green, _, _) = project
        .service(Slot::Green)
        .await
        .expect("green was created");
    assert_eq!(green, 0, "the candidate is scaled to zero");
    let (blue, _, _) = project.service(Slot::Blue).await.expect("blue");
    assert_eq!(blue, 1, "the live slot still runs");
    assert_eq!(project.status().await["live"]["release"], first_id.as_str());

    let out = project.run(&["history", "--json"]).await;
    ok(&out, "shipit history");
    let failed = json(&out)[0].clone();
    assert_eq!(
        failed["outcome"]["status"].as_str(),
        Some("failed"),
        "{failed:#}"
    );
    assert_finished(&project, failed["id"].as_str().unwrap(), "failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_scales_the_previous_slot_up_and_shifts_back() {
    let project = EcsProject::new("rollback", "").await;
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();
    let (_, first_image, first_td) = project.service(Slot::Blue).await.unwrap();
    project.release(&[]).await;
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));

    let out = project.run(&["rollback", "--json"]).await;
    ok(&out, "shipit rollback");
    let record = json(&out);
    assert_eq!(record["kind"], "rollback");
    assert_eq!(record["serves"].as_str(), Some(first_id.as_str()));
    assert_eq!(record["slot"], "blue");

    assert_eq!(project.forward().await, all_to(Slot::Blue));
    let (blue, image, td) = project.service(Slot::Blue).await.unwrap();
    assert_eq!(blue, 1, "the retired slot was scaled back up");
    assert_eq!(
        td, first_td,
        "its task definition was kept, not registered again"
    );
    assert_eq!(image, first_image);
    assert_eq!(project.service(Slot::Green).await.map(|s| s.0), Some(0));
    let status = project.status().await;
    assert_eq!(status["live"]["release"], first_id.as_str());
    assert_finished(&project, record["id"].as_str().unwrap(), "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_left_by_a_dead_run_refuses_releases_until_broken() {
    let project = EcsProject::new("lock", "").await;
    let store = SsmLockStore::new(
        project.infra.clients.ssm.clone(),
        &project.infra.cluster,
        &project.service,
    );
    let dead = Holder {
        pid: 4242,
        host: "ci-runner-7".into(),
        user: "ci".into(),
        since: "2026-11-22T10:00:00Z".parse().unwrap(),
        purpose: "release 20261122-100000-dead".into(),
    };
    // The run dies holding the lock: nothing releases it.
    std::mem::forget(store.acquire(&dead).await.expect("the lock is free"));

    let out = project.run(&["release"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("pid 4242 on host ci-runner-7")
            && text.contains("release 20261122-100000-dead"),
        "the refusal says who holds the lock: {text}"
    );
    assert!(
        text.contains(&format!(
            "shipit lock release --force --target {}",
            crate::aws::TARGET
        )),
        "the refusal gives the command that breaks the lock: {text}"
    );
    assert!(
        project.service(Slot::Blue).await.is_none(),
        "nothing was launched"
    );

    let out = project.run(&["lock", "status", "--json"]).await;
    ok(&out, "shipit lock status");
    let status = json(&out);
    assert_eq!(status["holder"]["host"], "ci-runner-7");
    assert_eq!(
        status["store"]
            .as_str()
            .map(|s| s.contains(&project.lock_name())),
        Some(true),
        "{status}"
    );

    // Not without --force: the holder ran on another machine.
    let out = project.run(&["lock", "release"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        project
            .infra
            .parameter(&project.lock_name())
            .await
            .is_some()
    );

    let out = project.run(&["lock", "release", "--force", "--json"]).await;
    ok(&out, "shipit lock release --force");
    assert_eq!(json(&out)["holder"]["pid"], 4242);
    assert_eq!(project.infra.parameter(&project.lock_name()).await, None);

    let record = project.release(&[]).await;
    assert_eq!(record["slot"], "blue");
}

/// Everything a release could change, read back from moto.
async fn stored_state(project: &EcsProject) -> String {
    let infra = &project.infra;
    let mut state = format!(
        "forward {:?}\ntest {:?}\n",
        project.forward().await,
        infra.listener_forward(&infra.test_listener_arn).await
    );
    for slot in [Slot::Blue, Slot::Green] {
        state.push_str(&format!("{slot} {:?}\n", project.service(slot).await));
    }
    let definitions = infra
        .clients
        .ecs
        .list_task_definitions()
        .send()
        .await
        .expect("ListTaskDefinitions");
    // Only this project's: other tests register their own in the same moto server meanwhile.
    let own = format!(":task-definition/{}-", infra.prefix);
    let definitions: Vec<&String> = definitions
        .task_definition_arns()
        .iter()
        .filter(|arn| arn.contains(&own))
        .collect();
    state.push_str(&format!("task definitions {definitions:?}\n"));
    let parameters = infra
        .clients
        .ssm
        .get_parameters_by_path()
        .path(format!("/shipit/{}", infra.cluster))
        .recursive(true)
        .send()
        .await
        .expect("GetParametersByPath");
    let mut names: Vec<String> = parameters
        .parameters()
        .iter()
        .map(|p| format!("{}={}", p.name().unwrap_or_default(), p.version()))
        .collect();
    names.sort();
    state.push_str(&format!("parameters {names:?}\n"));
    state
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let project = EcsProject::new("dry", "shift = \"canary:25:1m\"\n").await;
    let first = project.release(&[]).await;
    let before = stored_state(&project).await;

    let out = project.run(&["release", "--dry-run", "--json"]).await;
    ok(&out, "shipit release --dry-run");
    let plan = json(&out);
    assert_eq!(
        stored_state(&project).await,
        before,
        "a dry run changes nothing"
    );

    assert_eq!(plan["slot"], "green");
    assert_eq!(plan["live"]["release"], first["serves"]);
    let operations: Vec<&str> = plan["aws_operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(!operations.is_empty());
    for operation in &operations {
        let name = operation.rsplit('.').next().unwrap();
        assert!(
            ["Describe", "Get", "List"]
                .iter()
                .any(|p| name.starts_with(p)),
            "the dry run called {operation}"
        );
    }
    let calls: Vec<(String, String)> = plan["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["phase"].as_str().unwrap().to_string(),
                c["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("version", "PutParameter"),
        ("version", "PutParameter"),
        ("push", "push"),
        ("launch", "RegisterTaskDefinition"),
        ("launch", "CreateService"),
        ("shift", "ModifyListener"),
        ("shift", "ModifyListener"),
        ("retire", "UpdateService"),
        ("record", "DeleteParameter"),
    ]
    .iter()
    .map(|(p, o)| (p.to_string(), o.to_string()))
    .collect();
    assert_eq!(calls, expected);
    let canary = &plan["calls"][5]["input"]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"];
    assert_eq!(
        canary[0]["TargetGroupArn"],
        project.group(Slot::Blue).as_str()
    );
    assert_eq!(canary[0]["Weight"], 75);
    assert_eq!(canary[1]["Weight"], 25);
    let create = &plan["calls"][4]["input"];
    assert_eq!(
        create["serviceName"],
        Infra::service_name(&project.service, Slot::Green)
    );
    assert_eq!(
        create["loadBalancers"][0]["targetGroupArn"],
        project.group(Slot::Green).as_str()
    );
    let retire = &plan["calls"][7]["input"];
    assert_eq!(
        (retire["service"].as_str(), retire["desiredCount"].as_i64()),
        (
            Some(Infra::service_name(&project.service, Slot::Blue).as_str()),
            Some(0)
        )
    );
    let container = &plan["task_definition"]["containerDefinitions"][0];
    assert_eq!(container["name"], project.service.as_str());
    let repository =
        Registry::start().repository(&format!("{}/{}", project.infra.prefix, project.service));
    assert!(
        container["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{repository}:"))
    );
    assert_eq!(plan["steps"][0]["percent"], 25);

    // The text form says the same, and changes nothing either.
    let out = project.run(&["release", "--dry-run"]).await;
    ok(&out, "shipit release --dry-run (text)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(text.contains("ecs RegisterTaskDefinition"), "{text}");
    assert!(
        text.contains("\"family\""),
        "the rendered task definition: {text}"
    );
    assert_eq!(stored_state(&project).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdn_swap_changes_the_distribution_origin_and_leaves_the_listener() {
    let blue = "blue.example.test";
    let green = "green.example.test";
    let project = EcsProject::new("cdn", "").await;
    // The origin starts on green's domain (where nothing runs): the first release takes blue.
    let id = project.infra.create_distribution(green).await;
    let cdn = format!(
        "cdn = {{ distribution_id = \"{id}\", origins = {{ blue = \"{blue}\", green = \"{green}\" }} }}"
    );
    let text = std::fs::read_to_string(&project.config).unwrap();
    let text = text.replace("desired_count = 1", &format!("desired_count = 1\n{cdn}"));
    std::fs::write(&project.config, text).unwrap();
    let listener_before = project
        .infra
        .listener_forward(&project.infra.listener_arn)
        .await;

    let first = project.release(&[]).await;
    assert_eq!(first["slot"], "blue");
    assert_eq!(
        project.infra.distribution_origins(&id).await,
        [("shipit".to_string(), blue.to_string())]
    );
    let second = project.release(&[]).await;
    assert_eq!(second["slot"], "green");
    assert_eq!(
        project.infra.distribution_origins(&id).await,
        [("shipit".to_string(), green.to_string())],
        "the swap moved the origin's domain"
    );
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert_eq!(
        project
            .infra
            .listener_forward(&project.infra.listener_arn)
            .await,
        listener_before,
        "in CDN mode the listener is left alone"
    );
    assert_eq!(project.status().await["live"]["slot"], "green");
    assert_finished(&project, second["serves"].as_str().unwrap(), "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn release_killed_during_a_canary_converges_on_the_next_run() {
    let project = EcsProject::new("crash", "").await;
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();

    // A canary whose bake outlasts the test: killed while half the traffic is on green.
    project.set_shift("canary:50:10m");
    let mut child = project
        .command(&["release"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("shipit starts");
    let split = vec![(Slot::Blue, Some(50)), (Slot::Green, Some(50))];
    let started = std::time::Instant::now();
    while project.forward().await != split {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the canary never split the traffic: {:?}",
            project.forward().await
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the canary release ended early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.expect("SIGKILL");
    assert_eq!(project.service(Slot::Green).await.map(|s| s.0), Some(1));

    // The dead run holds the lock, in AWS: the next run is refused until it is broken.
    project.set_shift("all-at-once");
    let out = project.run(&["release"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = project.run(&["lock", "release", "--force"]).await;
    ok(&out, "shipit lock release --force");

    // Status during the half-done canary still names the old release as live.
    assert_eq!(project.status().await["live"]["release"], first_id.as_str());

    let out = project.run(&["release", "--json"]).await;
    ok(&out, "the release after the crash");
    let log = stderr(&out);
    assert!(
        log.contains("a weighted step was left in place (blue 50, green 50): all traffic back on the blue slot"),
        "converge put the traffic back first: {log}"
    );
    assert!(
        log.contains("the idle green slot runs 1 tasks left by an earlier run"),
        "converge scaled the leftover down: {log}"
    );
    let record = json(&out);
    assert_eq!(record["slot"], "green");
    assert_eq!(project.forward().await, all_to(Slot::Green));
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert_finished(&project, record["serves"].as_str().unwrap(), "succeeded").await;

    let out = project.run(&["history", "--json"]).await;
    ok(&out, "shipit history");
    let statuses: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["succeeded", "interrupted", "succeeded"]);
}

// ---- Adopting what shipit did not make ------------------------------------------------

mod adopt;
mod diff;
mod drain;
mod lease;
mod rollback_to;
mod routes;
mod secrets;
mod verify;

// ---- CloudWatch alarms ----------------------------------------------------------------------

mod alarms;
