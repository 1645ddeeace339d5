//! Every command's `--json` against a real local project: stdout parses as JSON and holds the
//! fields the README documents. Progress stays on stderr, so stdout is nothing but the value.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use std::time::Duration;

use crate::harness::{Project, SHIPIT, assert_success, json, wait_until};

/// Runs `shipit <args>` in the project, asserts success and parses stdout.
fn data(project: &Project, args: &[&str]) -> Value {
    let out = project.run(args);
    assert_success(&out, &format!("shipit {}", args.join(" ")));
    json(&out)
}

#[test]
fn every_command_prints_its_documented_json() {
    let project = Project::new("json");
    let service = project.service.as_str();
    let url = format!("http://{}/", project.listen);

    let config = data(&project, &["config", "check", "--json"]);
    assert_eq!(config["services"][service]["port"], 8080, "{config}");
    assert_eq!(config["targets"]["local"]["kind"], "local", "{config}");
    assert_eq!(
        config["targets"]["local"]["listen"],
        project.listen.to_string()
    );
    assert_eq!(config["services"][service]["health"]["interval"], "50ms");

    let plan = data(&project, &["plan", "--json"]);
    assert!(plan["live"].is_null(), "{plan}");
    assert_eq!(plan["slot"], "blue");
    assert!(plan["lock"].is_null());
    assert!(plan["retire"].is_null());
    assert!(matches!(
        plan["build"]["action"].as_str(),
        Some("reuse" | "build")
    ));

    let status = data(&project, &["status", "--json"]);
    assert_eq!(status["service"], service);
    assert_eq!(status["target"], "local");
    assert_eq!(status["url"], url.as_str());
    assert!(status["live"].is_null(), "{status}");

    assert_eq!(data(&project, &["history", "--json"]), Value::Array(vec![]));

    let first = data(&project, &["release", "--json"]);
    assert_eq!(first["outcome"]["status"], "succeeded", "{first}");
    assert_eq!(first["kind"], "release");
    assert_eq!(first["url"], url.as_str());
    assert_eq!(first["service"], service);
    assert_eq!(first["serves"], first["id"]);
    assert!(matches!(first["slot"].as_str(), Some("blue" | "green")));
    assert!(first["image"].as_str().unwrap().starts_with(service));
    assert!(first["image_id"].as_str().unwrap().starts_with("sha256:"));
    let phases: Vec<&str> = first["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    // Nothing was live, so there is nothing to retire.
    for phase in [
        "version", "build", "push", "launch", "verify", "shift", "record",
    ] {
        assert!(phases.contains(&phase), "no {phase} phase in {phases:?}");
    }
    let first_id = first["id"].as_str().unwrap();

    let status = data(&project, &["status", "--json"]);
    assert_eq!(status["live"]["release"], first_id, "{status}");
    assert_eq!(status["live"]["slot"], first["slot"]);
    assert_eq!(status["live"]["image"], first["image"]);

    let plan = data(&project, &["plan", "--json"]);
    assert_eq!(plan["live"]["release"], first_id, "{plan}");
    assert_ne!(plan["slot"], first["slot"]);
    assert_eq!(plan["retire"]["release"], first_id);
    assert_eq!(plan["retire"]["drain_timeout"], "10s");
    assert_eq!(plan["build"]["action"], "reuse", "{plan}");
    assert_eq!(plan["build"]["image_id"], first["image_id"]);
    assert_eq!(plan["shift"]["steps"][0]["weight"], 100);

    let edge = data(&project, &["edge", "status", "--json"]);
    let route = edge["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service)
        .unwrap_or_else(|| panic!("no route for {service}: {edge}"));
    assert_eq!(route["live"]["release"], first_id);
    assert_eq!(edge["listen"], project.listen.to_string());
    let edge_pid = edge["pid"].as_u64().unwrap();

    let second = data(&project, &["release", "--json"]);
    assert_eq!(second["outcome"]["status"], "succeeded", "{second}");
    assert_eq!(second["previous"], first_id);
    assert_eq!(second["image_reused"], true, "{second}");
    assert_ne!(second["slot"], first["slot"]);
    let retire = second["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "retire")
        .unwrap_or_else(|| panic!("the second release retired nothing: {second}"));
    assert_eq!(retire["ok"], true);
    assert!(retire["finished_at"].is_string());

    let rollback = data(&project, &["rollback", "--json"]);
    assert_eq!(rollback["kind"], "rollback", "{rollback}");
    assert_eq!(rollback["serves"], first_id);
    assert_eq!(rollback["outcome"]["status"], "succeeded");
    assert_eq!(rollback["url"], url.as_str());

    let history = data(&project, &["history", "--json"]);
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rollback", "release", "release"], "{history}");
    assert_eq!(history[0]["id"], rollback["id"]);
    assert_eq!(
        data(&project, &["history", "--json", "-n", "1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let stopped = data(&project, &["edge", "stop", "--json"]);
    assert_eq!(stopped["pid"].as_u64(), Some(edge_pid), "{stopped}");
    assert_ne!(stopped["how"], "not_running");
    assert_eq!(
        Path::new(stopped["dir"].as_str().unwrap()),
        project.edge_dir()
    );
    let again = data(&project, &["edge", "stop", "--json"]);
    assert_eq!(again["how"], "not_running", "{again}");
    assert!(again["pid"].is_null());

    let down = data(&project, &["down", "--json"]);
    assert_eq!(down["service"], service);
    assert_eq!(down["target"], "local");
    assert_eq!(down["was_live"]["release"], first_id, "{down}");
    assert_eq!(down["edge_running"], false);
    assert_eq!(down["history_kept"], true);
    assert!(project.containers().is_empty());
    assert_eq!(
        data(&project, &["history", "--json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_failed_json_command_prints_its_error_as_json() {
    let project = Project::new("json-err");
    let out = project.run(&["rollback", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        crate::harness::stderr(&out)
    );
    let error = json(&out);
    assert_eq!(error["error"]["exit_code"], 7, "{error}");
    assert!(
        error["error"]["cause"]
            .as_str()
            .unwrap()
            .contains("roll back"),
        "{error}"
    );

    let out = Command::new(SHIPIT)
        .args(["-c", "/nonexistent/shipit.toml", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error = json(&out);
    assert!(error["error"]["hint"].is_string(), "{error}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, &format!("git {}", args.join(" ")));
}

fn shipit_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(SHIPIT)
        .arg("-c")
        .arg(dir.join("shipit.toml"))
        .args(args)
        .env_remove("SHIPIT_STATE_DIR")
        .output()
        .unwrap()
}

#[test]
fn version_commands_print_their_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    git(root, &["config", "user.name", "shipit test"]);
    git(root, &["config", "user.email", "test@shipit.invalid"]);
    git(root, &["config", "commit.gpgsign", "false"]);
    git(root, &["config", "tag.gpgsign", "false"]);
    std::fs::write(
        root.join("shipit.toml"),
        "[modules.core]\npath = \"core\"\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("core")).unwrap();
    std::fs::write(root.join("core/VERSION"), "0.3.0\n").unwrap();
    std::fs::write(root.join(".gitignore"), ".shipit/\n").unwrap();
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "-m", "feat: core"]);

    let out = shipit_in(root, &["version", "plan", "--json"]);
    assert_success(&out, "shipit version plan --json");
    let plan = json(&out);
    let module = &plan["modules"][0];
    assert_eq!(module["name"], "core", "{plan}");
    assert_eq!(module["current"], "0.3.0");
    assert_eq!(module["next"], "0.3.0");
    assert_eq!(module["action"], "first-tag");
    assert_eq!(module["next_tag"], "core-v0.3.0");

    let out = shipit_in(root, &["version", "apply", "--dry-run", "--json"]);
    assert_success(&out, "shipit version apply --dry-run --json");
    let applied = json(&out);
    assert_eq!(applied["dry_run"], true, "{applied}");
    assert_eq!(applied["versions"]["core"], "0.3.0");
    assert_eq!(applied["tags"][0], "core-v0.3.0");
    assert!(applied["commit"].is_null());
}

#[test]
fn plan_sees_module_bumps_and_the_lock_and_changes_nothing() {
    let project = Project::new("plan");
    let root = project.dir.path();
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str("\n[modules.core]\npath = \"core\"\n");
    std::fs::write(&project.config, config).unwrap();
    std::fs::create_dir(root.join("core")).unwrap();
    std::fs::write(root.join("core/VERSION"), "1.2.0\n").unwrap();
    std::fs::write(root.join(".gitignore"), ".shipit/\n").unwrap();
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    for (key, value) in [
        ("user.name", "shipit test"),
        ("user.email", "test@shipit.invalid"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ] {
        git(root, &["config", key, value]);
    }
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "-m", "feat: core"]);
    git(root, &["tag", "core-v1.2.0"]);
    std::fs::write(root.join("core/lib.txt"), "fixed\n").unwrap();
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "-m", "fix(core): the bug"]);

    let plan = data(&project, &["plan", "--json"]);
    let modules = &plan["modules"];
    assert_eq!(modules["apply"], true, "{plan}");
    assert_eq!(modules["tags"], serde_json::json!(["core-v1.2.1"]));
    assert_eq!(modules["versions"]["core"], "1.2.1");
    assert_eq!(modules["bumps"][0]["action"], "bump");
    assert_eq!(modules["bumps"][0]["current"], "1.2.0");
    // The module version is part of what an image is: none has 1.2.1 yet.
    assert_eq!(plan["build"]["action"], "build", "{plan}");
    assert!(plan["build"]["image_id"].is_null());
    let text = project.run(&["plan"]);
    assert_success(&text, "shipit plan");
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("core 1.2.0 → 1.2.1"), "{text}");
    assert!(text.contains("would build"), "{text}");

    // Nothing was applied, started or recorded.
    let tags = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["tag", "--list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tags.stdout).trim(), "core-v1.2.0");
    assert_eq!(
        std::fs::read_to_string(root.join("core/VERSION")).unwrap(),
        "1.2.0\n"
    );
    assert!(project.containers().is_empty());
    assert!(project.history().is_empty());

    // A dirty work tree: the release would not apply the versions.
    std::fs::write(root.join("core/lib.txt"), "changed\n").unwrap();
    let plan = data(&project, &["plan", "--json"]);
    assert_eq!(plan["modules"]["apply"], false, "{plan}");
    assert!(
        plan["modules"]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("core/lib.txt")),
        "{plan}"
    );
    assert_eq!(plan["modules"]["versions"]["core"], "1.2.0");
    git(root, &["checkout", "--", "core/lib.txt"]);

    // A release that holds the lock (its candidate takes 3 s to start) shows in the plan.
    let mut release = project.command(&["release", "--no-version"]);
    release.env("HELLO_STARTUP_MS", "3000");
    let mut running = release
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut holder = serde_json::Value::Null;
    wait_until(
        "the release to hold the lock",
        Duration::from_secs(20),
        || {
            holder = data(&project, &["plan", "--json"])["lock"].clone();
            !holder.is_null()
        },
    );
    assert_eq!(
        holder["pid"].as_u64(),
        Some(u64::from(running.id())),
        "{holder}"
    );
    assert!(
        holder["purpose"].as_str().unwrap().contains("release"),
        "{holder}"
    );
    let text = project.run(&["plan"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("the release would be refused"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    assert!(running.wait().unwrap().success());
    assert!(data(&project, &["plan", "--json"])["lock"].is_null());
}
