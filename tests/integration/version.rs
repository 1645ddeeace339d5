//! `shipit version plan|apply` and the version step of `shipit release`, through the real
//! binary on real git repositories.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{Project, SHIPIT, assert_success, json, stderr};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes `dir` a git repository with a fixed identity and signing off.
fn init(dir: &Path) {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    for (key, value) in [
        ("user.name", "shipit test"),
        ("user.email", "test@shipit.invalid"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ] {
        git(dir, &["config", key, value]);
    }
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn commit(dir: &Path, message: &str) {
    git(dir, &["add", "--all"]);
    git(dir, &["commit", "--quiet", "-m", message]);
}

const MODULES: &str = r#"
[modules.sources]
path = "sources"

[modules.core]
path = "core"
depends_on = ["sources"]
"#;

/// A library-only repository: two modules, no service, no target.
fn library() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    write(dir.path(), "shipit.toml", MODULES);
    write(dir.path(), "sources/VERSION", "0.1.0\n");
    write(
        dir.path(),
        "core/package.json",
        "{\n  \"name\": \"core\",\n  \"version\": \"1.0.0\"\n}\n",
    );
    commit(dir.path(), "chore: start");
    dir
}

fn shipit(dir: &Path, args: &[&str]) -> Output {
    Command::new(SHIPIT)
        .arg("-c")
        .arg(dir.join("shipit.toml"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SHIPIT_STATE_DIR")
        .output()
        .expect("shipit runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_plan_and_apply_work_in_a_library_only_repository() {
    let dir = library();
    let root = dir.path();

    // First run: both modules are tagged at the versions in their files.
    let out = shipit(root, &["version", "apply"]);
    assert_success(&out, "first version apply");
    assert_eq!(git(root, &["tag", "--list"]), "core-v1.0.0\nsources-v0.1.0");

    write(root, "sources/query.txt", "select\n");
    commit(root, "feat(sources): add a query");

    let out = shipit(root, &["version", "plan"]);
    assert_success(&out, "version plan");
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("MODULE") && lines[0].ends_with("REASON"),
        "{table}"
    );
    let columns: Vec<&str> = lines[1].split_whitespace().take(3).collect();
    assert_eq!(columns, ["sources", "0.1.0", "0.1.1"], "{table}");
    assert!(
        lines[1].contains("below 1.0.0 a feature bumps patch"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("core") && lines[2].contains("dependency sources 0.1.0 → 0.1.1"),
        "{table}"
    );
    assert!(table.contains("feat(sources): add a query"), "{table}");

    let out = shipit(root, &["version", "plan", "--json"]);
    assert_success(&out, "version plan --json");
    let plan = json(&out);
    assert_eq!(plan["modules"][0]["name"], "sources");
    assert_eq!(plan["modules"][0]["next"], "0.1.1");
    assert_eq!(plan["modules"][0]["action"], "bump");
    assert_eq!(plan["modules"][1]["next"], "1.0.1");

    let out = shipit(root, &["version", "apply", "--dry-run"]);
    assert_success(&out, "version apply --dry-run");
    assert!(
        stdout(&out).contains("would tag sources-v0.1.1, core-v1.0.1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("sources/VERSION")).unwrap(),
        "0.1.0\n"
    );

    let out = shipit(root, &["version", "apply", "--json"]);
    assert_success(&out, "version apply");
    let applied = json(&out);
    assert_eq!(applied["versions"]["sources"], "0.1.1");
    assert_eq!(applied["tags"][1], "core-v1.0.1");
    assert_eq!(
        std::fs::read_to_string(root.join("sources/VERSION")).unwrap(),
        "0.1.1\n"
    );
    assert_eq!(git(root, &["status", "--porcelain"]), "");

    let out = shipit(root, &["version", "apply"]);
    assert_success(&out, "version apply with nothing to do");
    assert!(
        stdout(&out).contains("nothing to release"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn version_apply_refuses_a_dirty_tree_with_exit_code_8() {
    let dir = library();
    let root = dir.path();
    write(root, "sources/a.txt", "uncommitted\n");
    let out = shipit(root, &["version", "apply"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("uncommitted changes") && err.contains("sources/"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(git(root, &["tag", "--list"]), "");
}

#[test]
fn an_unparsable_version_file_exits_8_naming_the_file() {
    let dir = library();
    let root = dir.path();
    write(root, "sources/VERSION", "0.1\n");
    commit(root, "chore: break it");
    let out = shipit(root, &["version", "plan"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("sources/VERSION"), "{}", stderr(&out));
}

#[test]
fn version_commands_need_modules() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipit.toml", "[services.web]\nport = 80\n");
    let out = shipit(dir.path(), &["version", "plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no modules are configured"),
        "{}",
        stderr(&out)
    );
}

fn image_labels(image: &str) -> serde_json::Value {
    let labels = crate::harness::docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        image,
    ]);
    serde_json::from_str(&labels).unwrap_or_else(|e| panic!("{e}: {labels}"))
}

#[test]
fn release_versions_the_modules_first_and_labels_the_image() {
    let project = Project::new("version");
    let root = project.dir.path();
    init(root);
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(MODULES);
    std::fs::write(&project.config, config).unwrap();
    write(root, "sources/VERSION", "0.1.0\n");
    write(
        root,
        "core/package.json",
        "{\n  \"name\": \"core\",\n  \"version\": \"1.0.0\"\n}\n",
    );
    commit(root, "chore: start");

    // First release: the modules get their first tags, and the image their labels.
    let out = project.run(&["release", "--json"]);
    assert_success(&out, "first release");
    let record = json(&out);
    assert_eq!(record["modules"]["sources"], "0.1.0");
    assert_eq!(record["modules"]["core"], "1.0.0");
    assert_eq!(git(root, &["tag", "--list"]), "core-v1.0.0\nsources-v0.1.0");
    let labels = image_labels(record["image"].as_str().unwrap());
    assert_eq!(labels["shipit.module.sources"], "0.1.0");
    assert_eq!(labels["shipit.module.core"], "1.0.0");

    // A fix in sources: the release bumps, commits and tags before it builds.
    write(root, "sources/fix.txt", "fixed\n");
    commit(root, "fix(sources): a fix");
    let out = project.run(&["release", "--json"]);
    assert_success(&out, "second release");
    let record = json(&out);
    assert_eq!(record["modules"]["sources"], "0.1.1");
    assert_eq!(record["modules"]["core"], "1.0.1");
    assert!(git(root, &["tag", "--list"]).contains("sources-v0.1.1"));
    assert!(git(root, &["log", "-1", "--format=%s"]).starts_with("chore(release): sources 0.1.1"));
    let labels = image_labels(record["image"].as_str().unwrap());
    assert_eq!(labels["shipit.module.sources"], "0.1.1");
    assert_eq!(labels["shipit.module.core"], "1.0.1");

    let status = project.status();
    assert_eq!(status["live"]["modules"]["sources"], "0.1.1");
    let out = project.run(&["status"]);
    assert!(
        stdout(&out).contains("modules    core 1.0.1, sources 0.1.1"),
        "{}",
        stdout(&out)
    );
    let out = project.run(&["history"]);
    assert!(
        stdout(&out).contains("core@1.0.1,sources@0.1.1"),
        "{}",
        stdout(&out)
    );

    // A dirty tree does not fail the release: nothing is applied, with a warning.
    write(root, "sources/more.txt", "more\n");
    commit(root, "feat(sources): more");
    write(root, "scratch.txt", "uncommitted\n");
    let out = project.run(&["release", "--json"]);
    assert_success(&out, "release from a dirty tree");
    assert!(
        stderr(&out).contains("were not applied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&out)["modules"]["sources"], "0.1.1");
    assert!(!git(root, &["tag", "--list"]).contains("sources-v0.1.2"));

    // --no-version skips the step even on a clean tree.
    std::fs::remove_file(root.join("scratch.txt")).unwrap();
    let out = project.run(&["release", "--no-version", "--json"]);
    assert_success(&out, "release --no-version");
    assert_eq!(json(&out)["modules"]["sources"], "0.1.1");
    assert!(!git(root, &["tag", "--list"]).contains("sources-v0.1.2"));
}

/// A bare repository in a temp folder, added to `dir`'s repository as `origin`.
fn bare_origin(dir: &Path) -> tempfile::TempDir {
    let bare = tempfile::tempdir().unwrap();
    git(bare.path(), &["init", "--quiet", "--bare"]);
    git(
        dir,
        &["remote", "add", "origin", bare.path().to_str().unwrap()],
    );
    bare
}

/// The remote's refs, tags peeled: `<sha> <ref>` lines.
fn remote_refs(bare: &Path) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["show-ref", "--dereference"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes the remote refuse every push, as a protected branch or a missing permission does.
fn refuse_pushes(bare: &Path) {
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'protected: no pushes' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn version_apply_push_sends_the_commit_and_tags_and_a_refusal_exits_8() {
    let dir = library();
    let root = dir.path();
    let bare = bare_origin(root);
    git(root, &["tag", "sources-v0.1.0"]);
    git(root, &["tag", "core-v1.0.0"]);
    write(root, "sources/fix.txt", "fixed\n");
    commit(root, "fix(sources): a fix");

    let out = shipit(root, &["version", "apply", "--push", "--json"]);
    assert_success(&out, "version apply --push");
    let applied = json(&out);
    assert_eq!(applied["remote"], "origin", "{applied}");
    let head = git(root, &["rev-parse", "HEAD"]);
    let refs = remote_refs(bare.path());
    for name in [
        "refs/heads/main",
        "refs/tags/sources-v0.1.1^{}",
        "refs/tags/core-v1.0.1^{}",
    ] {
        assert!(refs.contains(&format!("{head} {name}")), "{name}: {refs}");
    }

    refuse_pushes(bare.path());
    write(root, "sources/more.txt", "more\n");
    commit(root, "fix(sources): more");
    let out = shipit(root, &["version", "apply", "--push"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the push to origin failed"), "{err}");
    assert!(err.contains("protected: no pushes"), "{err}");
    assert!(
        err.contains("git push --atomic origin HEAD:refs/heads/main"),
        "{err}"
    );
    // Made here, and nothing of it on the remote.
    assert!(git(root, &["tag", "--list"]).contains("sources-v0.1.2"));
    assert!(!remote_refs(bare.path()).contains("sources-v0.1.2"));
}

#[test]
fn release_pushes_the_version_commit_and_tags_when_configured() {
    let project = Project::new("vpush");
    let root = project.dir.path();
    init(root);
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(MODULES);
    config.push_str("\n[versioning]\npush = true\n");
    std::fs::write(&project.config, config).unwrap();
    write(root, "sources/VERSION", "0.1.0\n");
    write(
        root,
        "core/package.json",
        "{\n  \"name\": \"core\",\n  \"version\": \"1.0.0\"\n}\n",
    );
    write(root, ".gitignore", ".shipit/\n");
    commit(root, "chore: start");
    let bare = bare_origin(root);
    git(root, &["tag", "sources-v0.1.0"]);
    git(root, &["tag", "core-v1.0.0"]);

    write(root, "sources/fix.txt", "fixed\n");
    commit(root, "fix(sources): a fix");
    let out = project.run(&["release", "--json"]);
    assert_success(&out, "release with push = true");
    let live = json(&out)["serves"].clone();
    let head = git(root, &["rev-parse", "HEAD"]);
    let refs = remote_refs(bare.path());
    for name in [
        "refs/heads/main",
        "refs/tags/sources-v0.1.1^{}",
        "refs/tags/core-v1.0.1^{}",
    ] {
        assert!(refs.contains(&format!("{head} {name}")), "{name}: {refs}");
    }

    // A remote that refuses stops the release before it builds: the live release stays.
    refuse_pushes(bare.path());
    write(root, "sources/more.txt", "more\n");
    commit(root, "fix(sources): more");
    let out = project.run(&["release"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the push to origin failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(project.status()["live"]["release"], live);
    assert!(!remote_refs(bare.path()).contains("sources-v0.1.2"));
}
