//! `shipit init` on each kind of project, in temp folders: what it detects, what it writes,
//! that the written config passes `shipit config check`, and that it never overwrites
//! without `--force`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{SHIPIT, assert_success, json, stderr};

fn shipit(args: &[&str], dir: &Path) -> Output {
    Command::new(SHIPIT)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("SHIPIT_CONFIG")
        .env_remove("SHIPIT_STATE_DIR")
        .output()
        .expect("shipit runs")
}

fn init(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["init", "--json"];
    args.extend_from_slice(extra);
    let out = shipit(&args, dir);
    assert_success(&out, "shipit init");
    json(&out)
}

fn config_check(dir: &Path) -> Value {
    let out = Command::new(SHIPIT)
        .arg("-c")
        .arg(dir.join("shipit.toml"))
        .args(["config", "check", "--json"])
        .env_remove("SHIPIT_STATE_DIR")
        .output()
        .unwrap();
    assert_success(&out, "shipit config check on the written config");
    json(&out)
}

fn actions(report: &Value) -> Vec<(String, String)> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Sets up one kind of project, runs `init`, checks the config, and returns the folder.
fn initialised(
    kind: &str,
    files: &[(&str, &str)],
    service: &str,
    dockerfile_has: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        std::fs::write(dir.path().join(path), text).unwrap();
    }
    let report = init(dir.path(), &[]);
    assert_eq!(report["kind"], kind, "{report}");
    assert_eq!(report["service"], service, "{report}");
    assert_eq!(report["port"], 8080);
    let written = actions(&report);
    assert!(
        written.contains(&("shipit.toml".into(), "created".into())),
        "{written:?}"
    );
    assert!(
        written.contains(&(
            ".github/workflows/shipit-release.yml".into(),
            "created".into()
        )),
        "{written:?}"
    );

    let config = config_check(dir.path());
    let resolved = &config["services"][service];
    assert_eq!(resolved["port"], 8080, "{config}");
    assert_eq!(resolved["health"]["path"], "/healthz");
    assert_eq!(config["targets"]["local"]["kind"], "local");

    let dockerfile = read(dir.path(), "Dockerfile");
    assert!(
        dockerfile.contains(dockerfile_has),
        "the {kind} Dockerfile lacks {dockerfile_has:?}:\n{dockerfile}"
    );
    let toml = read(dir.path(), "shipit.toml");
    assert!(toml.ends_with("\n"), "no newline at the end: {toml:?}");
    assert!(
        toml.lines().filter(|l| l.starts_with('#')).count() > 10,
        "{toml}"
    );
    let workflow = read(dir.path(), ".github/workflows/shipit-release.yml");
    // GitHub's own ${{ }} expressions survive handlebars.
    assert!(
        workflow.contains("${{ steps.shipit.outputs.release-id }}"),
        "{workflow}"
    );
    assert!(workflow.contains("config: shipit.toml"), "{workflow}");
    assert!(workflow.ends_with("\n"));
    assert!(workflow.contains(&format!("shipit-release-{service}")));
    dir
}

#[test]
fn init_writes_a_checked_config_for_a_cargo_project() {
    let dir = initialised(
        "cargo",
        &[(
            "Cargo.toml",
            "[package]\nname = \"Demo_App\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
        )],
        "demo-app",
        "cargo build --release --locked --bin Demo_App",
    );
    assert!(
        read(dir.path(), ".dockerignore")
            .lines()
            .any(|l| l == "target")
    );
}

#[test]
fn init_writes_a_checked_config_for_a_leiningen_project() {
    let dir = initialised(
        "lein",
        &[(
            "project.clj",
            "(defproject acme/orders \"2.0.1\"\n  :dependencies [[org.clojure/clojure \"1.12.0\"]])\n",
        )],
        "orders",
        "lein uberjar",
    );
    // A JVM starts slowly: its health deadline is longer.
    assert_eq!(
        config_check(dir.path())["services"]["orders"]["health"]["timeout"],
        "1m"
    );
}

#[test]
fn init_writes_a_checked_config_for_a_deps_edn_project() {
    let dir = tempfile::Builder::new()
        .prefix("Billing Service ")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("deps.edn"), "{:paths [\"src\"]}\n").unwrap();
    let report = init(dir.path(), &[]);
    assert_eq!(report["kind"], "deps");
    // No name in deps.edn: the folder's, made valid.
    let service = report["service"].as_str().unwrap();
    assert!(service.starts_with("billing-service-"), "{report}");
    assert!(config_check(dir.path())["services"][service].is_object());
    assert!(read(dir.path(), "Dockerfile").contains("clojure -T:build uber"));
}

#[test]
fn init_writes_a_checked_config_for_a_node_project() {
    let dir = initialised(
        "node",
        &[(
            "package.json",
            "{ \"name\": \"@acme/web-shop\", \"version\": \"1.0.0\" }\n",
        )],
        "web-shop",
        "npm ci --omit=dev",
    );
    assert!(read(dir.path(), ".dockerignore").contains("node_modules"));
}

#[test]
fn init_keeps_an_existing_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let report = init(dir.path(), &["--name", "edge-app", "--port", "9000"]);
    assert_eq!(report["kind"], "dockerfile", "{report}");
    assert!(actions(&report).contains(&("Dockerfile".into(), "kept".into())));
    assert_eq!(read(dir.path(), "Dockerfile"), "FROM scratch\n");
    assert_eq!(
        config_check(dir.path())["services"]["edge-app"]["port"],
        9000
    );
}

#[test]
fn init_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("package.json"),
        "{ \"name\": \"shop\", \"version\": \"1.0.0\" }\n",
    )
    .unwrap();
    init(dir.path(), &[]);
    std::fs::write(dir.path().join("shipit.toml"), "# mine\n").unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch # mine\n").unwrap();

    let out = shipit(&["init", "--no-workflow"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shipit.toml already exists"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(read(dir.path(), "shipit.toml"), "# mine\n");

    let report = init(dir.path(), &["--force"]);
    let written = actions(&report);
    assert!(written.contains(&("shipit.toml".into(), "overwritten".into())));
    assert!(written.contains(&(
        ".github/workflows/shipit-release.yml".into(),
        "overwritten".into()
    )));
    assert!(written.contains(&("Dockerfile".into(), "kept".into())));
    assert_eq!(read(dir.path(), "Dockerfile"), "FROM scratch # mine\n");
    assert!(config_check(dir.path())["services"]["shop"].is_object());
}

#[test]
fn init_without_a_project_says_what_it_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = shipit(&["init"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no project found") && err.contains("--kind"),
        "{err}"
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    let report = init(dir.path(), &["--kind", "node", "--no-workflow"]);
    assert_eq!(report["kind"], "node");
    assert!(!dir.path().join(".github").exists());
    config_check(dir.path());
}
