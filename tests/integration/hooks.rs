//! `[services.<s>.hooks]` on the local target: `pre_switch` runs with the release in its
//! environment before traffic moves, and a failing one leaves the live slot serving under
//! load; `on_failure` then runs; a failing `post_release` only warns.

use std::time::Instant;

use crate::harness::{Options, Project, assert_success, stderr};
use crate::load::{Load, assert_served_by};

/// Replaces the service's `[hooks]` table with `hooks` (TOML lines).
fn set_hooks(project: &Project, hooks: &str) {
    project.set_service_table("hooks", Some(hooks));
}

/// The `KEY=value` lines a hook wrote with `env | grep ^SHIPIT_ > <file>`.
fn written(project: &Project, file: &str) -> Vec<String> {
    let path = project.dir.path().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the hook wrote {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pre_switch_gets_the_release_and_a_failing_one_leaves_the_live_slot_serving() {
    let project = Project::with(
        "hooks",
        Options {
            health_timeout: "5s",
            ..Options::default()
        },
    );
    let first = project.release_async().await;
    set_hooks(
        &project,
        r#"pre_switch = { command = 'env | grep ^SHIPIT_ > pre.env', timeout = "30s" }"#,
    );
    let plan = project.run(&["plan", "--json"]);
    assert_success(&plan, "shipit plan --json");
    let plan = crate::harness::json(&plan);
    assert_eq!(
        plan["hooks"]["pre_switch"]["command"], "env | grep ^SHIPIT_ > pre.env",
        "{plan}"
    );
    assert_eq!(plan["hooks"]["pre_switch"]["timeout"], "30s", "{plan}");
    let plan = project.run(&["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(text.contains("hook pre_switch: `env | grep"), "{text}");
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "a release with a pre_switch hook");
    let second = crate::harness::json(&out)["serves"]
        .as_str()
        .unwrap()
        .to_string();
    let env = written(&project, "pre.env");
    let url = env
        .iter()
        .find_map(|l| l.strip_prefix("SHIPIT_CANDIDATE_URL="))
        .unwrap_or_else(|| panic!("{env:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{env:?}");
    for expected in [
        format!("SHIPIT_LIVE_RELEASE={first}"),
        format!("SHIPIT_RELEASE={second}"),
        format!("SHIPIT_SERVICE={}", project.service),
        "SHIPIT_SLOT=green".to_string(),
        "SHIPIT_TARGET=local".to_string(),
    ] {
        assert!(env.contains(&expected), "{expected} is not in {env:?}");
    }
    assert!(
        stderr(&out).contains("pre_switch hook: running"),
        "{}",
        stderr(&out)
    );

    // A failing check: the release fails in Verify, under load, with no request lost.
    set_hooks(
        &project,
        r#"pre_switch = { command = 'echo "checking the candidate"; exit 3' }
on_failure = { command = 'env | grep ^SHIPIT_ > failed.env' }"#,
    );
    let load = Load::start(project.listen, 16);
    let from = Instant::now();
    let out = project.run_async(&["release"], &[]).await;
    let report = load.stop().await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the pre_switch hook failed (exit code 3)"),
        "{err}"
    );
    assert!(err.contains("pre_switch: checking the candidate"), "{err}");
    report.assert_no_failures();
    assert_served_by(&report, from, Instant::now(), &second);
    assert_eq!(
        project.running_releases(),
        std::slice::from_ref(&second),
        "the candidate was not removed"
    );
    let history = project.history();
    assert_eq!(history[0]["outcome"]["status"], "failed");
    assert!(
        history[0]["outcome"]["cause"]
            .as_str()
            .unwrap()
            .contains("pre_switch"),
        "{}",
        history[0]
    );
    let failed = written(&project, "failed.env");
    assert!(
        failed.contains(&format!("SHIPIT_LIVE_RELEASE={second}")),
        "{failed:?}"
    );
    assert!(
        failed.contains(&format!(
            "SHIPIT_RELEASE={}",
            history[0]["id"].as_str().unwrap()
        )),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_post_release_warns_and_the_release_stays_live() {
    let project = Project::new("posthook");
    set_hooks(
        &project,
        r#"post_release = { command = 'echo "$SHIPIT_RELEASE" > post.txt; exit 1' }"#,
    );
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "a release whose post_release hook fails");
    let id = crate::harness::json(&out)["serves"]
        .as_str()
        .unwrap()
        .to_string();
    let err = stderr(&out);
    assert!(
        err.contains("the post_release hook failed (exit code 1)"),
        "{err}"
    );
    assert!(err.contains("succeeded all the same"), "{err}");
    assert_eq!(
        std::fs::read_to_string(project.dir.path().join("post.txt"))
            .unwrap()
            .trim(),
        id
    );
    assert_eq!(project.status()["live"]["release"], id.as_str());
}

/// Adds `HELLO_MIGRATE` and `HELLO_MIGRATE_MS` to the service's env, from shipit's own.
fn pass_migrate_env(project: &Project) {
    project.add_env(&[
        ("HELLO_MIGRATE", "${HELLO_MIGRATE:-ok}"),
        ("HELLO_MIGRATE_MS", "${HELLO_MIGRATE_MS:-0}"),
    ]);
}

/// The migrate container of `project`, running or not, if there is one.
fn migrate_container(project: &Project) -> Option<String> {
    migrate_container_where(project, &[])
}

/// The migrate container, if it exists and is running (not only created).
fn running_migrate_container(project: &Project) -> Option<String> {
    migrate_container_where(project, &["--filter", "status=running"])
}

fn migrate_container_where(project: &Project, filters: &[&str]) -> Option<String> {
    let name = format!(
        "shipit-{}-local-{}-migrate",
        project.project_id(),
        project.service
    );
    let by_name = format!("name=^{name}$");
    let mut args = vec!["ps", "-aq", "--filter", &by_name];
    args.extend_from_slice(filters);
    let id = crate::harness::docker(&args).trim().to_string();
    (!id.is_empty()).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_runs_once_in_the_new_image_and_a_failing_one_leaves_the_live_slot_serving() {
    let project = Project::with(
        "migrate",
        Options {
            health_timeout: "5s",
            ..Options::default()
        },
    );
    pass_migrate_env(&project);
    set_hooks(
        &project,
        r#"migrate = { command = ["migrate"], timeout = "1m" }"#,
    );
    let plan = project.run(&["plan", "--json"]);
    assert_success(&plan, "shipit plan --json");
    let plan = crate::harness::json(&plan);
    assert_eq!(plan["hooks"]["migrate"]["command"][0], "migrate", "{plan}");
    let text = String::from_utf8_lossy(&project.run(&["plan"]).stdout).to_string();
    assert!(text.contains("hook migrate: `migrate`"), "{text}");

    // With SHIPIT_EVENTS=json, stderr is one JSON event per line: the hook's output is in
    // the Verify phase's progress events.
    let out = project
        .run_async(&["release", "--json"], &[("SHIPIT_EVENTS", "json")])
        .await;
    assert_success(&out, "a release with a migrate hook");
    let first = crate::harness::json(&out)["serves"]
        .as_str()
        .unwrap()
        .to_string();
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect();
    let verify: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "progress" && e["phase"] == "verify")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    // The new image's `hello migrate` ran with the new release's env, once.
    let migrated = format!("migrate: migrated to {first}");
    assert_eq!(
        verify.iter().filter(|m| **m == migrated).count(),
        1,
        "{verify:?}"
    );
    assert!(verify.contains(&"migrate hook: done"), "{verify:?}");
    assert!(
        events.iter().any(|e| e["event"] == "phase_finished"
            && e["phase"] == "verify"
            && e["elapsed_ms"].is_u64()),
        "{events:?}"
    );
    assert_eq!(
        migrate_container(&project),
        None,
        "the migrate container was left"
    );
    assert_eq!(project.containers().len(), 1);

    // A failing migration, under load: the release fails in Verify, the live slot serves.
    let load = Load::start(project.listen, 16);
    let from = Instant::now();
    let out = project
        .run_async(&["release"], &[("HELLO_MIGRATE", "fail")])
        .await;
    let report = load.stop().await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the migrate hook failed (exit code 3)"),
        "{err}"
    );
    assert!(err.contains("migration failed on purpose"), "{err}");
    report.assert_no_failures();
    assert_served_by(&report, from, Instant::now(), &first);
    assert_eq!(project.running_releases(), std::slice::from_ref(&first));
    assert_eq!(
        migrate_container(&project),
        None,
        "the migrate container was left"
    );
    let history = project.history();
    assert_eq!(history[0]["outcome"]["status"], "failed");
    let cause = history[0]["outcome"]["cause"].as_str().unwrap();
    assert!(
        cause.contains("migrate hook failed (exit code 3)"),
        "{cause}"
    );

    // Past its timeout: killed and removed, and the release fails the same way.
    set_hooks(
        &project,
        r#"migrate = { command = ["migrate"], timeout = "1s" }"#,
    );
    let out = project
        .run_async(&["release"], &[("HELLO_MIGRATE_MS", "20000")])
        .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("did not finish within its timeout of 1s"),
        "{err}"
    );
    assert_eq!(
        migrate_container(&project),
        None,
        "the migrate container was left"
    );
    assert_eq!(project.status()["live"]["release"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_left_running_by_a_killed_run_blocks_the_next_one_until_it_ends() {
    let project = Project::new("migratekill");
    pass_migrate_env(&project);
    set_hooks(
        &project,
        r#"migrate = { command = ["migrate"], timeout = "5m" }"#,
    );
    let earlier = project.release_async().await;
    let first = project.release_async().await;
    let mut run = tokio::process::Command::from(project.command(&["release"]));
    run.env("HELLO_MIGRATE_MS", "120000");
    let mut child = run.spawn().unwrap();
    // Bounded: the migration starts within the release's first seconds. Running, not only
    // created: a run killed between the create and the start leaves a container that never
    // ran, which the next release rightly removes.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while running_migrate_container(&project).is_none() {
        assert!(Instant::now() < deadline, "no migrate container started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        running_migrate_container(&project).is_some(),
        "SIGKILL leaves it running"
    );
    assert_eq!(project.status()["live"]["release"], first.as_str());

    // Still running: no second migration beside it, and the live slot serves on.
    let out = project.run_async(&["release"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is still running"), "{err}");
    assert!(err.contains("two migrations must not run at once"), "{err}");
    assert!(
        migrate_container(&project).is_some(),
        "a running migration was removed"
    );
    assert_eq!(project.status()["live"]["release"], first.as_str());
    // A rollback is not blocked by it (converge only warns).
    let out = project.run_async(&["rollback"], &[]).await;
    assert_success(&out, "a rollback beside a running migration");
    assert!(
        stderr(&out).contains("is still running"),
        "{}",
        stderr(&out)
    );
    assert_eq!(project.status()["live"]["release"], earlier.as_str());

    // Once it has ended (here: stopped by the operator), the next release removes it.
    let id = migrate_container(&project).unwrap();
    crate::harness::docker(&["stop", "-t", "1", &id]);
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "the release after the migration ended");
    let err = stderr(&out);
    assert!(err.contains("left by an interrupted run"), "{err}");
    assert_eq!(migrate_container(&project), None);
    let second = crate::harness::json(&out)["serves"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second, first);
    assert_eq!(project.status()["live"]["release"], second.as_str());
}
