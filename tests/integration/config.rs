//! Config errors through the CLI: the file, line:column, key path and a hint.

use crate::harness::{SHIPIT, stderr};

fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shipit.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(SHIPIT)
        .arg("-c")
        .arg(&path)
        .args(["config", "check"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        stderr(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn malformed_config_names_file_line_column_and_key() {
    let (code, err, _) = check("[services.web]\nport = \"eighty\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("shipit.toml:2:8"), "{err}");
    assert!(err.contains("services.web.port"), "{err}");
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let (code, err, _) = check("[services.web]\nport = 80\n\n[services.web.helth]\npath = \"/\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("shipit.toml:4:"), "{err}");
    assert!(err.contains("services.web.helth"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn reference_config_checks_clean() {
    let template = crate::harness::repo_root().join("templates/shipit.toml");
    let out = std::process::Command::new(SHIPIT)
        .arg("-c")
        .arg(&template)
        .args(["config", "check", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        config["services"]
            .as_object()
            .is_some_and(|s| !s.is_empty())
    );
}

/// The quickstart's config: `hello migrate` is its migrate hook, and `HELLO_MIGRATE` reaches
/// the service's env (and so the migration's) from the environment.
#[test]
fn the_example_config_checks_clean_with_its_migrate_hook() {
    let example = crate::harness::repo_root().join("examples/hello/shipit.toml");
    let out = std::process::Command::new(SHIPIT)
        .arg("-c")
        .arg(&example)
        .args(["--show-secrets", "config", "check", "--json"])
        .env("HELLO_MIGRATE", "fail")
        .env_remove("SHIPIT_STATE_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hello = &config["services"]["hello"];
    assert_eq!(
        hello["hooks"]["migrate"]["command"],
        serde_json::json!(["migrate"]),
        "{hello}"
    );
    assert_eq!(hello["env"]["HELLO_MIGRATE"], "fail", "{hello}");
}
