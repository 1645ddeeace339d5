use super::*;

fn definition(env: &[(&str, &str)]) -> TaskDefinition {
    let env: Vec<String> = env
        .iter()
        .map(|(n, v)| format!(r#"{{"name":"{n}","value":"{v}"}}"#))
        .collect();
    serde_json::from_str(&format!(
        r#"{{"family":"prod-hello","networkMode":"awsvpc","cpu":"256","memory":"512",
        "containerDefinitions":[{{"name":"hello","image":"repo/hello@sha256:1",
        "portMappings":[{{"containerPort":8080}}],"environment":[{}]}}]}}"#,
        env.join(",")
    ))
    .unwrap()
}

fn settings() -> Value {
    service_json(
        2,
        Some("FARGATE"),
        "hello",
        8080,
        vec!["s-1".into()],
        vec!["sg-1".into()],
    )
}

fn headers() -> (String, String) {
    ("live".into(), "new".into())
}

fn hidden(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn the_same_config_released_again_shows_no_difference() {
    let live = definition(&[
        ("SHIPIT_RELEASE", "r1"),
        ("A", "1"),
        ("SHIPIT_SLOT", "blue"),
    ]);
    let mut live = live;
    // What ECS fills in by itself, and another image and release.
    live.container_definitions[0].essential = Some(true);
    live.container_definitions[0].port_mappings[0].host_port = Some(8080);
    live.container_definitions[0].port_mappings[0].protocol = Some("tcp".into());
    let new = definition(&[
        ("A", "1"),
        ("SHIPIT_SLOT", "green"),
        ("SHIPIT_RELEASE", "r2"),
    ]);
    let mut new = new;
    new.container_definitions[0].image = "repo/hello@sha256:2".into();
    let diff = diff_text(
        Some((live, settings())),
        &new,
        settings(),
        &hidden(&[]),
        &headers(),
    );
    assert_eq!(diff, "");
}

#[test]
fn an_added_variable_is_one_added_line_with_its_value_hidden() {
    let live = definition(&[("A", "1")]);
    let new = definition(&[("A", "1"), ("TOKEN", "s3cr3t-value")]);
    let diff = diff_text(
        Some((live, settings())),
        &new,
        settings(),
        &hidden(&["A", "TOKEN"]),
        &headers(),
    );
    let added: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert!(
        added.iter().any(|l| l.contains(r#""name": "TOKEN""#)),
        "{diff}"
    );
    assert!(added.iter().any(|l| l.contains("<redacted>")), "{diff}");
    assert!(!diff.contains("s3cr3t-value"), "{diff}");
    assert!(diff.starts_with("--- live\n+++ new\n"), "{diff}");
}

#[test]
fn a_changed_hidden_value_is_marked_without_showing_either_value() {
    let live = definition(&[("TOKEN", "old-secret-1")]);
    let new = definition(&[("TOKEN", "new-secret-2")]);
    let diff = diff_text(
        Some((live, settings())),
        &new,
        settings(),
        &hidden(&["TOKEN"]),
        &headers(),
    );
    let value = |sign: char, shown: &str| {
        diff.lines().any(|l| {
            l.starts_with(sign)
                && l.trim_start_matches(sign).trim() == format!("\"value\": \"{shown}\"")
        })
    };
    assert!(value('-', REDACTED), "{diff}");
    assert!(value('+', REDACTED_CHANGED), "{diff}");
    assert!(
        !diff.contains("secret-1") && !diff.contains("secret-2"),
        "{diff}"
    );
}

#[test]
fn service_settings_are_diffed_too() {
    let live = definition(&[]);
    let mut old = settings();
    old["desiredCount"] = json!(1);
    let diff = diff_text(
        Some((live.clone(), old)),
        &live,
        settings(),
        &hidden(&[]),
        &headers(),
    );
    assert!(diff.contains("-    \"desiredCount\": 1,"), "{diff}");
    assert!(diff.contains("+    \"desiredCount\": 2,"), "{diff}");
}

#[test]
fn with_nothing_live_everything_is_new() {
    let new = definition(&[("A", "1")]);
    let diff = diff_text(None, &new, settings(), &hidden(&[]), &headers());
    assert!(diff.lines().skip(3).all(|l| l.starts_with('+')), "{diff}");
}
