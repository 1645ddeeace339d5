//! Plans made from real git repositories.

use super::*;
use crate::version::fixture::Fixture;

/// Three layers: core depends on protocols, protocols on sources; plain VERSION files.
const LAYERS: &str = r#"
[modules.sources]
path = "sources"

[modules.protocols]
path = "protocols"
depends_on = ["sources"]

[modules.core]
path = "core"
depends_on = ["protocols"]
"#;

/// A repository with the three layers at the given versions, committed and tagged.
fn layers(sources: &str, protocols: &str, core: &str) -> (Fixture, Config) {
    let repo = Fixture::new();
    repo.write("sources/VERSION", &format!("{sources}\n"));
    repo.write("protocols/VERSION", &format!("{protocols}\n"));
    repo.write("core/VERSION", &format!("{core}\n"));
    let config = repo.config(LAYERS);
    repo.commit("chore: the three layers");
    repo.tag(&format!("sources-v{sources}"));
    repo.tag(&format!("protocols-v{protocols}"));
    repo.tag(&format!("core-v{core}"));
    (repo, config)
}

fn planned(config: &Config) -> Plan {
    plan(config).unwrap_or_else(|e| panic!("plan works:\n{e}"))
}

fn next(plan: &Plan, name: &str) -> String {
    plan.module(name).expect("module planned").next.to_string()
}

#[test]
fn first_run_tags_the_version_in_the_file() {
    let repo = Fixture::new();
    repo.write("sources/VERSION", "0.4.0\n");
    repo.write("sources/src.txt", "code\n");
    let config = repo.config("[modules.sources]\npath = \"sources\"\n");
    repo.commit("feat: a feature before any tag");

    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.action, Action::FirstTag);
    assert_eq!(sources.current.to_string(), "0.4.0");
    assert_eq!(sources.next.to_string(), "0.4.0");
    assert_eq!(sources.next_tag.as_deref(), Some("sources-v0.4.0"));
    assert_eq!(sources.last_tag, None);
    assert!(sources.commits.is_empty());
    assert!(
        sources.reason.contains("first release"),
        "{}",
        sources.reason
    );
    assert!(plan.has_work());
}

#[test]
fn fix_feat_and_breaking_bump_patch_minor_and_major() {
    let (repo, config) = layers("1.2.3", "1.0.0", "1.0.0");
    repo.change("sources/a.txt", "1", "fix(sources): handle timeouts");
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.next.to_string(), "1.2.4");
    assert_eq!(sources.bump, Bump::Patch);
    assert_eq!(sources.commits.len(), 1);
    assert!(sources.reason.starts_with("fix in "), "{}", sources.reason);

    repo.change("sources/b.txt", "1", "feat(sources): add postgres");
    assert_eq!(next(&planned(&config), "sources"), "1.3.0");

    repo.change(
        "sources/c.txt",
        "1",
        "fix: change the format\n\nBREAKING CHANGE: old readers fail",
    );
    let plan = planned(&config);
    assert_eq!(next(&plan, "sources"), "2.0.0");
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.commits.len(), 3);
    assert!(
        sources.reason.starts_with("breaking change in "),
        "{}",
        sources.reason
    );

    repo.change("sources/d.txt", "1", "perf!: drop the slow path");
    assert_eq!(next(&planned(&config), "sources"), "2.0.0");
}

#[test]
fn below_1_0_0_breaking_bumps_minor_and_feature_bumps_patch() {
    let (repo, config) = layers("0.3.1", "0.1.0", "0.1.0");
    repo.change("sources/a.txt", "1", "feat: add a source");
    let plan = planned(&config);
    assert_eq!(next(&plan, "sources"), "0.3.2");
    let reason = &plan.module("sources").unwrap().reason;
    assert!(
        reason.contains("below 1.0.0 a feature bumps patch"),
        "{reason}"
    );

    repo.change("sources/b.txt", "1", "feat(sources)!: drop v1");
    let plan = planned(&config);
    assert_eq!(next(&plan, "sources"), "0.4.0");
    let reason = &plan.module("sources").unwrap().reason;
    assert!(
        reason.contains("below 1.0.0 a breaking change bumps minor"),
        "{reason}"
    );
}

#[test]
fn dependents_get_at_least_a_patch_naming_the_dependency() {
    let (repo, config) = layers("1.0.0", "2.0.0", "3.0.0");
    repo.change("sources/a.txt", "1", "feat: add a source");
    let plan = planned(&config);
    assert_eq!(
        plan.modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["sources", "protocols", "core"],
        "dependencies come first"
    );
    assert_eq!(next(&plan, "sources"), "1.1.0");
    let protocols = plan.module("protocols").unwrap();
    assert_eq!(protocols.next.to_string(), "2.0.1");
    assert_eq!(protocols.reason, "dependency sources 1.0.0 → 1.1.0");
    assert!(protocols.commits.is_empty());
    let core = plan.module("core").unwrap();
    assert_eq!(core.next.to_string(), "3.0.1");
    assert_eq!(core.reason, "dependency protocols 2.0.0 → 2.0.1");
}

#[test]
fn a_dependents_own_feature_wins_over_the_dependency_patch() {
    let (repo, config) = layers("1.0.0", "2.0.0", "3.0.0");
    repo.change("sources/a.txt", "1", "fix: a");
    repo.change("protocols/a.txt", "1", "feat: b");
    let plan = planned(&config);
    let protocols = plan.module("protocols").unwrap();
    assert_eq!(protocols.next.to_string(), "2.1.0");
    assert!(
        protocols.reason.starts_with("feature in ")
            && protocols
                .reason
                .ends_with("; dependency sources 1.0.0 → 1.0.1"),
        "{}",
        protocols.reason
    );
}

#[test]
fn module_without_relevant_commits_keeps_its_version() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    repo.change("core/a.txt", "1", "fix: only core");
    repo.change("sources/notes.md", "1", "docs: only docs in sources");
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.action, Action::Keep);
    assert_eq!(sources.next.to_string(), "1.0.0");
    assert_eq!(sources.next_tag, None);
    assert_eq!(
        sources.reason,
        "1 commit since sources-v1.0.0, none a feat, fix, perf or breaking change"
    );
    let protocols = plan.module("protocols").unwrap();
    assert_eq!(protocols.action, Action::Keep);
    assert_eq!(protocols.reason, "no commits since protocols-v1.0.0");
    assert_eq!(next(&plan, "core"), "1.0.1");
}

#[test]
fn a_commit_touching_several_modules_counts_for_each() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    repo.write("sources/a.txt", "1");
    repo.write("core/a.txt", "1");
    repo.commit("feat: across two layers");
    let plan = planned(&config);
    assert_eq!(next(&plan, "sources"), "1.1.0");
    assert_eq!(next(&plan, "protocols"), "1.0.1");
    let core = plan.module("core").unwrap();
    assert_eq!(core.next.to_string(), "1.1.0");
    assert_eq!(core.commits.len(), 1);
}

#[test]
fn merged_branch_commits_count_and_the_merge_commit_does_not() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    repo.git(&["checkout", "--quiet", "-b", "feature"]);
    repo.change("sources/a.txt", "1", "feat(sources): on a branch");
    repo.git(&["checkout", "--quiet", "main"]);
    repo.change("sources/b.txt", "1", "fix(sources): on main");
    repo.git(&[
        "merge",
        "--quiet",
        "--no-ff",
        "--no-edit",
        "-m",
        "Merge branch 'feature'",
        "feature",
    ]);
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.next.to_string(), "1.1.0");
    let summaries: Vec<&str> = sources.commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(summaries.contains(&"feat(sources): on a branch"));
    assert!(
        !summaries.iter().any(|s| s.starts_with("Merge")),
        "{summaries:?}"
    );
}

#[test]
fn tag_on_a_merged_branch_is_found_and_tags_off_head_are_not() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    // A release tagged on a side branch that is not merged does not count.
    repo.git(&["checkout", "--quiet", "-b", "side"]);
    repo.change("sources/side.txt", "1", "feat: side");
    repo.tag("sources-v1.1.0");
    repo.git(&["checkout", "--quiet", "main"]);
    repo.change("sources/a.txt", "1", "fix: main");
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.last_tag.as_deref(), Some("sources-v1.0.0"));
    assert_eq!(sources.next.to_string(), "1.0.1");

    // Once merged, its tag is the last one and only later commits count.
    repo.git(&["merge", "--quiet", "--no-edit", "side"]);
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.last_tag.as_deref(), Some("sources-v1.1.0"));
    assert_eq!(sources.current.to_string(), "1.1.0");
    assert_eq!(sources.next.to_string(), "1.1.1");
}

#[test]
fn a_moved_module_folder_keeps_the_commits_made_at_its_old_place() {
    let repo = Fixture::new();
    repo.write("libs/source/VERSION", "1.0.0\n");
    repo.write("libs/source/lib.txt", "v1\n");
    repo.commit("chore: start");
    repo.tag("sources-v1.0.0");
    repo.change(
        "libs/source/lib.txt",
        "v2\n",
        "feat: a feature at the old place",
    );
    repo.git(&["mv", "libs/source", "sources"]);
    repo.commit("refactor: move the module");
    let config = repo.config("[modules.sources]\npath = \"sources\"\n");
    repo.commit("chore: config");

    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    let summaries: Vec<&str> = sources.commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "refactor: move the module",
            "feat: a feature at the old place"
        ]
    );
    assert_eq!(sources.next.to_string(), "1.1.0");
    assert!(
        sources.notes.iter().any(|n| n.contains("libs/source")),
        "{:?}",
        sources.notes
    );
}

#[test]
fn release_as_forces_the_version() {
    let (repo, config) = layers("0.9.0", "1.0.0", "1.0.0");
    repo.change(
        "sources/a.txt",
        "1",
        "chore: stable now\n\nRelease-As: 1.0.0",
    );
    repo.change("sources/b.txt", "1", "fix: later fix");
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.next.to_string(), "1.0.0");
    assert_eq!(sources.bump, Bump::Major);
    assert!(
        sources.reason.starts_with("Release-As: 1.0.0 in "),
        "{}",
        sources.reason
    );
    assert_eq!(next(&plan, "protocols"), "1.0.1");
}

#[test]
fn release_as_not_above_the_current_version_is_an_error() {
    let (repo, config) = layers("2.0.0", "1.0.0", "1.0.0");
    let sha = repo.change("sources/a.txt", "1", "fix: x\n\nRelease-As: 1.5.0");
    let error = plan(&config).unwrap_err();
    assert!(
        matches!(error, VersionError::ReleaseAsNotNewer { .. }),
        "{error:?}"
    );
    let (text, hint) = (error.to_string(), error.hint().unwrap_or_default());
    assert!(
        text.contains(&sha) && text.contains("1.5.0") && hint.contains("sources-v2.0.0"),
        "{text} / {hint}"
    );

    repo.change("sources/b.txt", "1", "fix: y\n\nRelease-As: two");
    let error = plan(&config).unwrap_err();
    assert!(error.to_string().contains("Release-As: two"), "{error}");
}

#[test]
fn a_tag_that_does_not_parse_is_an_error_naming_it() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    repo.tag("sources-v1.1");
    // A tag of another module that merely starts alike is not this module's.
    repo.tag("sources-vendor-v3.0.0");
    let error = plan(&config).unwrap_err();
    assert!(matches!(error, VersionError::BadTag { .. }), "{error:?}");
    let (text, hint) = (error.to_string(), error.hint().unwrap_or_default());
    assert!(
        text.contains("`sources-v1.1`") && hint.contains("git tag -d sources-v1.1"),
        "{text} / {hint}"
    );
}

#[test]
fn an_unparsable_or_missing_version_file_is_an_error_naming_it() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    repo.write("protocols/VERSION", "1.0\n");
    let error = plan(&config).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&repo.path("protocols/VERSION").display().to_string())
            && text.contains("\"1.0\" is not a semantic version"),
        "{text}"
    );

    std::fs::remove_file(repo.path("protocols/VERSION")).unwrap();
    let error = plan(&config).unwrap_err();
    assert!(
        matches!(error, VersionError::MissingFile { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("protocols/VERSION"), "{error}");
}

#[test]
fn custom_tag_format_is_used_for_reading_and_naming_tags() {
    let repo = Fixture::new();
    repo.write("core/VERSION", "2.1.0\n");
    let config =
        repo.config("[modules.core]\npath = \"core\"\ntag = \"release/<name>/<version>\"\n");
    repo.commit("chore: start");
    repo.tag("release/core/2.1.0");
    repo.change("core/a.txt", "1", "fix: x");
    let plan = planned(&config);
    let core = plan.module("core").unwrap();
    assert_eq!(core.last_tag.as_deref(), Some("release/core/2.1.0"));
    assert_eq!(core.next_tag.as_deref(), Some("release/core/2.1.1"));
}

#[test]
fn a_file_that_disagrees_with_the_tag_is_noted_and_the_tag_wins() {
    let (repo, config) = layers("1.0.0", "1.0.0", "1.0.0");
    repo.change("sources/VERSION", "1.4.0\n", "chore: hand-edited version");
    let plan = planned(&config);
    let sources = plan.module("sources").unwrap();
    assert_eq!(sources.current.to_string(), "1.0.0");
    assert_eq!(sources.action, Action::Keep);
    assert!(
        sources.notes[0].contains("holds 1.4.0"),
        "{:?}",
        sources.notes
    );
}

#[test]
fn a_folder_outside_any_repository_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Guard against a temp dir that happens to live inside a work tree.
    if Repository::discover(dir.path()).is_ok() {
        return;
    }
    std::fs::create_dir(dir.path().join("sources")).unwrap();
    std::fs::write(dir.path().join("sources/VERSION"), "1.0.0\n").unwrap();
    let config = Config::parse(
        "[modules.sources]\npath = \"sources\"\n",
        std::path::Path::new("shipit.toml"),
        &BTreeMap::<String, String>::new(),
        dir.path(),
    )
    .unwrap();
    let error = plan(&config).unwrap_err();
    assert!(
        matches!(error, VersionError::NotARepository { .. }),
        "{error:?}"
    );
}
