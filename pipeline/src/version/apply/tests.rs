//! Applying plans in real git repositories: files, changelogs, commits and tags.

use jiff::civil::Date;

use super::*;
use crate::version::fixture::Fixture;
use crate::version::plan;

const SOURCES_CARGO: &str = r#"# The data-access layer.
[package]
name = "layered-sources"   # dependents use this name
version = "0.2.0"  # bumped by shipit
edition = "2024"

[dependencies]
serde = { version = "1", features = ["derive"] }   # keep this comment
"#;

const PROTOCOLS_CARGO: &str = r#"[package]
name = "layered-protocols"
version = "1.4.0"

[dependencies]
# The sources layer, by path and version.
layered-sources = { path = "../sources", version = "0.2.0" }   # updated by shipit
"#;

const CORE_JSON: &str = "{\n  \"name\": \"core\",\n  \"version\": \"2.0.0\",\n  \"dependencies\": {\n    \"layered-protocols\": \"^1.4.0\"\n  }\n}\n";

const APP_CLJ: &str =
    ";; The app's library\n(defproject acme/api \"3.1.4\"\n  :dependencies [[core \"2.0.0\"]])\n";

const MODEL_POM: &str = "<?xml version=\"1.0\"?>\n<project>\n  <!-- keep me -->\n  <groupId>com.acme</groupId>\n  <artifactId>model</artifactId>\n  <version>0.0.7</version>\n</project>\n";

/// One module per format: sources (Cargo) ← protocols (Cargo) ← core (package.json) ←
/// api (project.clj); model (pom.xml) and docs (VERSION) on their own.
const CONFIG: &str = r#"
[modules.sources]
path = "sources"

[modules.protocols]
path = "protocols"
depends_on = ["sources"]

[modules.core]
path = "core"
depends_on = ["protocols"]

[modules.api]
path = "api"
depends_on = ["core"]

[modules.model]
path = "model"

[modules.docs]
path = "docs"
"#;

fn date() -> Date {
    Date::new(2026, 11, 22).unwrap()
}

fn options() -> ApplyOptions {
    ApplyOptions {
        date: Some(date()),
        ..ApplyOptions::default()
    }
}

/// Every format, committed and tagged at its version.
fn every_format() -> (Fixture, Config) {
    let repo = Fixture::new();
    repo.write("sources/Cargo.toml", SOURCES_CARGO);
    repo.write("protocols/Cargo.toml", PROTOCOLS_CARGO);
    repo.write("core/package.json", CORE_JSON);
    repo.write("api/project.clj", APP_CLJ);
    repo.write("model/pom.xml", MODEL_POM);
    repo.write("docs/VERSION", "4.0.0\n");
    repo.write(
        "docs/CHANGELOG.md",
        "# Docs changelog\n\n## 4.0.0 (2026-01-01)\n\n- old\n",
    );
    repo.write(".gitignore", ".shipit/\n");
    let config = repo.config(CONFIG);
    repo.commit("chore: start");
    for tag in [
        "sources-v0.2.0",
        "protocols-v1.4.0",
        "core-v2.0.0",
        "api-v3.1.4",
        "model-v0.0.7",
        "docs-v4.0.0",
    ] {
        repo.tag(tag);
    }
    (repo, config)
}

fn apply_now(config: &Config, options: &ApplyOptions) -> Applied {
    let plan = plan(config).unwrap_or_else(|e| panic!("plan works:\n{e}"));
    apply(config, &plan, options).unwrap_or_else(|e| panic!("apply works:\n{e}"))
}

fn only_changed(before: &str, after: &str, old: &str, new: &str) {
    let at = before.find(old).expect("old text is in the file");
    let expected = format!("{}{new}{}", &before[..at], &before[at + old.len()..]);
    assert_eq!(after, expected, "only {old:?} → {new:?} may change");
}

#[test]
fn apply_writes_every_format_commits_once_and_tags_each_module() {
    let (repo, config) = every_format();
    let feature = repo.change(
        "sources/src.rs",
        "fn a() {}\n",
        "feat(sources)!: new query API",
    );
    repo.change("model/Model.java", "class Model {}\n", "fix: null ids");
    repo.change("docs/guide.md", "guide\n", "feat: a guide");
    let before_head = repo.git(&["rev-parse", "HEAD"]);

    let applied = apply_now(&config, &options());

    // Versions: sources is breaking below 1.0 → minor; its dependents get patches.
    let versions: Vec<(&str, &str)> = applied
        .versions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        versions,
        [
            ("api", "3.1.5"),
            ("core", "2.0.1"),
            ("docs", "4.1.0"),
            ("model", "0.0.8"),
            ("protocols", "1.4.1"),
            ("sources", "0.3.0"),
        ]
    );

    // Each version file: the version (and references) changed, every other byte kept.
    only_changed(
        SOURCES_CARGO,
        &repo.read("sources/Cargo.toml"),
        "\"0.2.0\"",
        "\"0.3.0\"",
    );
    let protocols = repo.read("protocols/Cargo.toml");
    let expected = PROTOCOLS_CARGO
        .replace("version = \"1.4.0\"", "version = \"1.4.1\"")
        .replace("version = \"0.2.0\" }", "version = \"0.3.0\" }");
    assert_eq!(protocols, expected);
    let core = repo.read("core/package.json");
    let expected = CORE_JSON
        .replace("\"2.0.0\"", "\"2.0.1\"")
        .replace("\"^1.4.0\"", "\"^1.4.1\"");
    assert_eq!(core, expected);
    // project.clj: only the defproject version; its dependency vector is left alone.
    only_changed(APP_CLJ, &repo.read("api/project.clj"), "3.1.4", "3.1.5");
    only_changed(MODEL_POM, &repo.read("model/pom.xml"), "0.0.7", "0.0.8");
    assert_eq!(repo.read("docs/VERSION"), "4.1.0\n");

    // Changelogs: a new file with a title, or a section below the existing title.
    let changelog = repo.read("sources/CHANGELOG.md");
    let short = &feature[..12];
    assert_eq!(
        changelog,
        format!(
            "# Changelog\n\n## 0.3.0 (2026-11-22)\n\n### Breaking changes\n\n- **sources:** new query API ({short})\n"
        )
    );
    assert!(
        repo.read("protocols/CHANGELOG.md")
            .contains("### Dependencies\n\n- sources 0.2.0 → 0.3.0\n")
    );
    assert_eq!(
        repo.read("docs/CHANGELOG.md"),
        format!(
            "# Docs changelog\n\n## 4.1.0 (2026-11-22)\n\n### Features\n\n- a guide ({})\n\n## 4.0.0 (2026-01-01)\n\n- old\n",
            &repo.git(&["log", "-1", "--format=%H", "--", "docs/guide.md"])[..12]
        )
    );

    // One commit, holding exactly the written files, and a clean tree after it.
    assert_eq!(repo.git(&["rev-parse", "HEAD~1"]), before_head);
    assert_eq!(
        applied.commit.as_deref(),
        Some(repo.git(&["rev-parse", "HEAD"]).as_str())
    );
    let committed = repo.git(&["show", "--name-only", "--format=", "HEAD"]);
    let mut committed: Vec<&str> = committed.lines().collect();
    committed.sort_unstable();
    let mut written: Vec<&str> = applied.files.iter().map(|f| f.path.as_str()).collect();
    written.sort_unstable();
    assert_eq!(committed, written);
    assert_eq!(repo.status(), "");
    let subject = repo.git(&["log", "-1", "--format=%s"]);
    assert!(
        subject.starts_with("chore(release): ") && subject.contains("sources 0.3.0"),
        "{subject}"
    );

    // One annotated tag per module, on the release commit.
    for tag in [
        "sources-v0.3.0",
        "protocols-v1.4.1",
        "core-v2.0.1",
        "api-v3.1.5",
        "model-v0.0.8",
        "docs-v4.1.0",
    ] {
        assert_eq!(
            repo.git(&["cat-file", "-t", tag]),
            "tag",
            "{tag} is annotated"
        );
        assert_eq!(
            repo.git(&["rev-parse", &format!("{tag}^{{commit}}")]),
            repo.git(&["rev-parse", "HEAD"])
        );
    }

    // The release commit itself asks for nothing: the next plan keeps every version.
    let again = plan(&config).unwrap();
    assert!(!again.has_work(), "{again:#?}");
}

#[test]
fn a_dirty_tree_is_refused_and_nothing_is_written() {
    let (repo, config) = every_format();
    repo.change("sources/src.rs", "x\n", "feat: x");
    repo.write("notes.txt", "uncommitted\n");
    let plan = plan(&config).unwrap();
    let error = apply(&config, &plan, &options()).unwrap_err();
    assert!(matches!(error, VersionError::Dirty { .. }), "{error:?}");
    assert!(error.to_string().contains("notes.txt"), "{error}");
    assert_eq!(repo.read("sources/Cargo.toml"), SOURCES_CARGO);
    assert_eq!(repo.status(), "?? notes.txt");
    assert_eq!(repo.tags().len(), 6);
}

#[test]
fn shipits_state_folder_does_not_make_the_tree_dirty() {
    let repo = Fixture::new();
    repo.write("lib/VERSION", "1.0.0\n");
    // No .gitignore: the state folder shows as untracked, and is still not a change.
    let config = repo.config("[modules.lib]\npath = \"lib\"\n");
    repo.commit("chore: start");
    repo.tag("lib-v1.0.0");
    repo.change("lib/a.txt", "1", "fix: a");
    repo.write(".shipit/history/x.json", "{}\n");
    let applied = apply_now(&config, &options());
    assert_eq!(applied.versions["lib"], "1.0.1");
    assert_eq!(repo.status(), "?? .shipit/");
}

#[test]
fn dry_run_writes_nothing_and_reports_everything() {
    let (repo, config) = every_format();
    repo.change("sources/src.rs", "x\n", "feat: x");
    let head = repo.git(&["rev-parse", "HEAD"]);
    // A dry run is allowed on a dirty tree: it only reads.
    repo.write("scratch.txt", "wip\n");
    let applied = apply_now(
        &config,
        &ApplyOptions {
            dry_run: true,
            ..options()
        },
    );
    assert!(applied.dry_run);
    assert!(
        applied.tags.contains(&"sources-v0.2.1".to_string()),
        "{:?}",
        applied.tags
    );
    let paths: Vec<&str> = applied.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"sources/Cargo.toml") && paths.contains(&"sources/CHANGELOG.md"));
    assert_eq!(repo.read("sources/Cargo.toml"), SOURCES_CARGO);
    assert!(!repo.path("sources/CHANGELOG.md").exists());
    assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(repo.tags().len(), 6);
    assert_eq!(repo.status(), "?? scratch.txt");
}

#[test]
fn no_commit_writes_the_files_and_neither_commits_nor_tags() {
    let (repo, config) = every_format();
    repo.change("docs/a.md", "x\n", "fix: typo");
    let head = repo.git(&["rev-parse", "HEAD"]);
    let applied = apply_now(
        &config,
        &ApplyOptions {
            commit: false,
            ..options()
        },
    );
    assert_eq!(repo.read("docs/VERSION"), "4.0.1\n");
    assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(applied.commit, None);
    assert!(applied.tags.is_empty());
    assert!(
        applied.notes[0].contains("--no-commit"),
        "{:?}",
        applied.notes
    );
    assert_eq!(repo.tags().len(), 6);
}

#[test]
fn no_tag_commits_and_does_not_tag() {
    let (repo, config) = every_format();
    repo.change("docs/a.md", "x\n", "fix: typo");
    let head = repo.git(&["rev-parse", "HEAD"]);
    let applied = apply_now(
        &config,
        &ApplyOptions {
            tag: false,
            ..options()
        },
    );
    assert_eq!(repo.git(&["rev-parse", "HEAD~1"]), head);
    assert!(applied.tags.is_empty());
    assert_eq!(repo.tags().len(), 6);
    assert_eq!(repo.status(), "");
}

#[test]
fn first_run_tags_without_a_commit() {
    let repo = Fixture::new();
    repo.write("sources/VERSION", "0.1.0\n");
    repo.write(
        "core/package.json",
        "{\"name\":\"core\",\"version\":\"1.0.0\"}",
    );
    let config = repo.config(
        "[modules.sources]\npath = \"sources\"\n[modules.core]\npath = \"core\"\ndepends_on = [\"sources\"]\n",
    );
    let head = repo.commit("feat: everything");
    let applied = apply_now(&config, &options());
    assert!(applied.files.is_empty());
    assert_eq!(applied.commit, None);
    assert_eq!(applied.tags, ["sources-v0.1.0", "core-v1.0.0"]);
    assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(repo.git(&["rev-parse", "sources-v0.1.0^{commit}"]), head);

    // From there on, commits bump.
    repo.change("sources/a.txt", "1", "fix: a");
    let plan = plan(&config).unwrap();
    assert_eq!(plan.module("sources").unwrap().next.to_string(), "0.1.1");
    assert_eq!(plan.module("core").unwrap().next.to_string(), "1.0.1");
}

#[test]
fn an_existing_tag_for_the_next_version_stops_before_any_write() {
    let (repo, config) = every_format();
    // A tag for the next version already exists on a branch HEAD does not contain.
    repo.git(&["checkout", "--quiet", "-b", "stale"]);
    repo.change("docs/x.md", "x\n", "fix: elsewhere");
    repo.tag("docs-v4.0.1");
    repo.git(&["checkout", "--quiet", "main"]);
    repo.change("docs/a.md", "x\n", "fix: typo");
    let plan = plan(&config).unwrap();
    let error = apply(&config, &plan, &options()).unwrap_err();
    assert!(matches!(error, VersionError::TagExists { .. }), "{error:?}");
    assert!(error.to_string().contains("docs-v4.0.1"), "{error}");
    assert_eq!(repo.read("docs/VERSION"), "4.0.0\n");
    assert_eq!(repo.status(), "");
}

#[test]
fn a_broken_dependent_file_stops_before_any_write() {
    let (repo, config) = every_format();
    repo.change("sources/src.rs", "x\n", "fix: x");
    let plan = plan(&config).unwrap();
    // The dependent's manifest breaks between plan and apply.
    repo.change("protocols/Cargo.toml", "[package\n", "chore: break it");
    let error = apply(&config, &plan, &options()).unwrap_err();
    assert!(
        error.to_string().contains("protocols/Cargo.toml"),
        "{error}"
    );
    assert_eq!(repo.read("sources/Cargo.toml"), SOURCES_CARGO);
    assert!(!repo.path("sources/CHANGELOG.md").exists());
    assert_eq!(repo.status(), "");
}

/// A bare repository in its own temp folder, added to `repo` as the remote `origin`.
fn bare_remote(repo: &Fixture) -> tempfile::TempDir {
    let bare = tempfile::tempdir().expect("a temp dir");
    let status = std::process::Command::new("git")
        .args(["init", "--quiet", "--bare"])
        .arg(bare.path())
        .status()
        .unwrap();
    assert!(status.success());
    repo.git(&["remote", "add", "origin", bare.path().to_str().unwrap()]);
    bare
}

/// `git show-ref` in the bare remote: its refs and what they point at (tags peeled).
fn remote_refs(bare: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["show-ref", "--dereference"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn push_sends_the_release_commit_and_every_tag_to_the_remote() {
    let (repo, config) = every_format();
    let bare = bare_remote(&repo);
    repo.change("model/Model.java", "class Model {}\n", "fix: null ids");
    repo.change("docs/guide.md", "guide\n", "feat: a guide");

    let applied = apply_now(
        &config,
        &ApplyOptions {
            push: Some("origin".into()),
            ..options()
        },
    );
    let head = repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(applied.commit.as_deref(), Some(head.as_str()));
    assert_eq!(applied.tags, ["docs-v4.1.0", "model-v0.0.8"]);
    assert_eq!(applied.remote.as_deref(), Some("origin"));
    assert_eq!(
        applied.pushed,
        [
            "HEAD:refs/heads/main",
            "refs/tags/docs-v4.1.0:refs/tags/docs-v4.1.0",
            "refs/tags/model-v0.0.8:refs/tags/model-v0.0.8",
        ]
    );
    let refs = remote_refs(bare.path());
    for name in [
        "refs/heads/main",
        "refs/tags/model-v0.0.8^{}",
        "refs/tags/docs-v4.1.0^{}",
    ] {
        assert!(
            refs.contains(&format!("{head} {name}")),
            "{name} at {head} on the remote: {refs:?}"
        );
    }
    // Only what this apply made: the older tags stay local.
    assert!(
        !refs.iter().any(|r| r.contains("sources-v0.2.0")),
        "{refs:?}"
    );
}

#[test]
fn a_refused_push_names_the_remote_and_what_it_said_and_pushes_nothing() {
    let (repo, config) = every_format();
    let bare = bare_remote(&repo);
    let hook = bare.path().join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'refused by policy' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    repo.change("model/Model.java", "class Model {}\n", "fix: null ids");

    let plan = plan(&config).unwrap();
    let options = ApplyOptions {
        push: Some("origin".into()),
        ..options()
    };
    let error = apply(&config, &plan, &options).unwrap_err();
    let VersionError::Push {
        remote,
        refs,
        message,
    } = &error
    else {
        panic!("expected a push error, got {error:?}");
    };
    assert_eq!(remote, "origin");
    assert!(message.contains("refused by policy"), "{message}");
    assert_eq!(refs.len(), 2, "{refs:?}");
    let hint = error.hint().unwrap();
    assert!(
        hint.contains("git push --atomic origin HEAD:refs/heads/main refs/tags/model-v0.0.8"),
        "{hint}"
    );
    assert!(hint.contains("contents: write"), "{hint}");
    // The release is made here, and nothing reached the remote.
    assert_eq!(repo.git(&["tag", "--list", "model-v0.0.8"]), "model-v0.0.8");
    assert!(remote_refs(bare.path()).is_empty());
}

#[test]
fn a_push_from_a_detached_head_says_so_before_pushing() {
    let (repo, config) = every_format();
    let bare = bare_remote(&repo);
    repo.change("model/Model.java", "class Model {}\n", "fix: null ids");
    repo.git(&["checkout", "--quiet", "--detach"]);
    let plan = plan(&config).unwrap();
    let options = ApplyOptions {
        push: Some("origin".into()),
        ..options()
    };
    let error = apply(&config, &plan, &options).unwrap_err();
    assert!(error.to_string().contains("HEAD is detached"), "{error}");
    assert!(remote_refs(bare.path()).is_empty());
    // Refused before anything was written, committed or tagged.
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert_eq!(repo.git(&["tag", "--list", "model-v0.0.8"]), "");
}

#[test]
fn a_tag_named_like_the_branch_does_not_misdirect_the_push() {
    let (repo, config) = every_format();
    let bare = bare_remote(&repo);
    repo.git(&["tag", "main"]);
    repo.change("model/Model.java", "class Model {}\n", "fix: null ids");
    let applied = apply_now(
        &config,
        &ApplyOptions {
            push: Some("origin".into()),
            ..options()
        },
    );
    assert_eq!(applied.pushed[0], "HEAD:refs/heads/main");
    let head = repo.git(&["rev-parse", "HEAD"]);
    let refs = remote_refs(bare.path());
    assert!(
        refs.contains(&format!("{head} refs/heads/main")),
        "{refs:?}"
    );
    assert!(!refs.iter().any(|r| r.contains("heads/heads")), "{refs:?}");
}
