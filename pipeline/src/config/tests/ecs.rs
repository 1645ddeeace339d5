//! `kind = "ecs"` targets: required keys, ARNs, slots, CDN, alarms, the task definition.

use super::*;

const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2";
const BLUE_TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-blue/73e2d6bc24d8a067";
const GREEN_TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-green/4e2d6bc24d8a0673";

/// A minimal ecs target, with `extra` lines added to its table.
fn ecs_config(extra: &str) -> String {
    format!(
        "{HELLO}\n[targets.aws]\nkind = \"ecs\"\nregion = \"us-east-1\"\ncluster = \"prod\"\n\
         listener_arn = \"{LISTENER}\"\n\
         target_groups = {{ blue = \"{BLUE_TG}\", green = \"{GREEN_TG}\" }}\n\
         repository = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/hello\"\n{extra}"
    )
}

fn ecs_target(config: &Config) -> &EcsTarget {
    match &config.targets["aws"].kind {
        TargetKind::Ecs(ecs) => ecs,
        other => panic!("expected an ecs target, got {other:?}"),
    }
}

#[test]
fn ecs_target_loads_with_the_defaults() {
    let config = parse(&ecs_config(""));
    let ecs = ecs_target(&config);
    assert_eq!(ecs.region, "us-east-1");
    assert_eq!(ecs.cluster, "prod");
    assert_eq!(ecs.target_groups.get(crate::Slot::Green), GREEN_TG);
    assert_eq!(ecs.desired_count, DEFAULT_ECS_DESIRED_COUNT);
    assert_eq!(ecs.cpu, DEFAULT_ECS_CPU);
    assert_eq!(ecs.memory, DEFAULT_ECS_MEMORY);
    assert_eq!(ecs.verify_timeout, DEFAULT_ECS_VERIFY_TIMEOUT);
    assert_eq!(ecs.keep_previous, DEFAULT_KEEP_PREVIOUS);
    assert_eq!(
        ecs.keep_previous,
        Duration::from_secs(600),
        "a 10-minute warm window"
    );
    assert_eq!(ecs.lock_lease, DEFAULT_LOCK_LEASE);
    assert_eq!(ecs.max_task_failures, 3);
    assert!(
        !ecs.create_log_group,
        "a missing log group fails preflight by default"
    );
    assert_eq!(ecs.shift, crate::shift::DEFAULT_SHIFT);
    assert_eq!(ecs.task_definition, None);
    assert_eq!(ecs.rule_arn, None);
    assert_eq!(ecs.cdn.as_ref().map(|c| c.distribution_id.clone()), None);
    assert_eq!(
        ecs.service_names("hello"),
        PerSlot {
            blue: "hello-blue".to_string(),
            green: "hello-green".to_string()
        }
    );
    assert_eq!(ecs.log_group_for("hello"), "/ecs/hello");
    assert_eq!(
        ecs.registry_host(),
        "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    );
}

#[test]
fn ecs_example_of_the_template_loads() {
    let full: toml::Table =
        toml::from_str(&uncomment(&template_text(), true)).expect("uncommented template parses");
    let mut table = toml::Table::new();
    let mut services = full["services"].clone();
    // The example env file is not in the repository (`config/tests/env_file.rs` loads one).
    if let Some(hello) = services
        .get_mut("hello")
        .and_then(toml::Value::as_table_mut)
    {
        hello.remove("env_file");
    }
    table.insert("services".into(), services);
    let aws = full["targets"]["aws"]
        .as_table()
        .expect("targets.aws")
        .clone();
    // The example shows a weighted shift and a cdn, which do not go together: load it with
    // each in turn.
    for without in ["cdn", "shift"] {
        let mut example = aws.clone();
        example.remove(without);
        let mut targets = toml::Table::new();
        targets.insert("aws".into(), toml::Value::Table(example));
        table.insert("targets".into(), toml::Value::Table(targets));
        let text = toml::to_string(&table).expect("serializes");
        // As if the config sat at the repository's root, where templates/ is.
        let config = Config::parse(
            &text,
            &manifest_dir().join("../shipit.toml"),
            &env(&[]),
            manifest_dir(),
        )
        .unwrap_or_else(|e| panic!("the ecs example loads:\n{e}\n{text}"));
        let ecs = ecs_target(&config);
        assert_eq!(ecs.cdn.is_some(), without == "shift");
        assert_eq!(ecs.shift.is_weighted(), without == "cdn");
        assert!(ecs.test_listener_arn.is_some() && ecs.rule_arn.is_some());
        assert!(
            ecs.task_definition
                .as_ref()
                .is_some_and(|p| p.ends_with("templates/ecs-task-definition.json.hbs"))
        );
    }
}

#[test]
fn ecs_key_on_a_local_target_names_its_kind() {
    let error = parse_err("[targets.edge]\nlisten = \"127.0.0.1:9000\"\ncluster = \"prod\"\n");
    assert_eq!(error.key.as_deref(), Some("targets.edge.cluster"));
    assert_eq!(position(&error), (Some(3), Some(1)));
    assert_eq!(
        error.message,
        "`cluster` is a key of ecs targets, and this target is kind = \"local\""
    );
    assert_hints(&error, "kind = \"ecs\"");
}

#[test]
fn local_key_on_an_ecs_target_names_its_kind() {
    let error = parse_err(&ecs_config("drain_timeout = \"5s\"\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.drain_timeout"));
    assert_eq!(
        error.message,
        "`drain_timeout` is a key of local targets, and this target is kind = \"ecs\""
    );
}

#[test]
fn missing_required_ecs_key_is_reported_at_the_target() {
    let text = ecs_config("").replace("cluster = \"prod\"\n", "");
    let error = parse_err(&text);
    assert_eq!(error.key.as_deref(), Some("targets.aws.cluster"));
    assert_eq!(
        error.message,
        "missing required key `cluster` of an ecs target"
    );
    // The key is not in the file: its table's header is the place.
    assert_eq!(error.line, Some(4));
    assert!(
        error
            .hint()
            .as_deref()
            .is_some_and(|h| h.starts_with("add `cluster = "))
    );

    let text = ecs_config("").replace(
        &format!("target_groups = {{ blue = \"{BLUE_TG}\", green = \"{GREEN_TG}\" }}\n"),
        "",
    );
    let error = parse_err(&text);
    assert_eq!(error.key.as_deref(), Some("targets.aws.target_groups"));
}

#[test]
fn arns_are_checked_for_their_kind_and_region() {
    let error = parse_err(&ecs_config("").replace(LISTENER, BLUE_TG));
    assert_eq!(error.key.as_deref(), Some("targets.aws.listener_arn"));
    assert!(
        error
            .message
            .contains("is the ARN of a elasticloadbalancing targetgroup, not of a listener"),
        "{}",
        error.message
    );
    assert_eq!(position(&error), (Some(8), Some(16)));

    let error =
        parse_err(&ecs_config("").replace(GREEN_TG, &GREEN_TG.replace("us-east-1", "eu-west-1")));
    assert_eq!(
        error.key.as_deref(),
        Some("targets.aws.target_groups.green")
    );
    assert!(
        error
            .message
            .contains("is in region \"eu-west-1\", but the target's region is \"us-east-1\""),
        "{}",
        error.message
    );

    let error = parse_err(&ecs_config("rule_arn = \"listener-rule/x\"\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.rule_arn"));
    assert!(
        error
            .message
            .starts_with("invalid ARN \"listener-rule/x\": expected the ARN of a listener rule"),
        "{}",
        error.message
    );

    let error = parse_err(&ecs_config(&format!(
        "test_listener_arn = \"{LISTENER}\"\n"
    )));
    assert_at(
        &error,
        "targets.aws.test_listener_arn",
        "is the production listener",
    );

    let error = parse_err(&ecs_config(
        "execution_role_arn = \"arn:aws:iam::123456789012:user/me\"\n",
    ));
    assert_eq!(error.key.as_deref(), Some("targets.aws.execution_role_arn"));
}

#[test]
fn slots_need_their_own_target_group_service_and_origin() {
    let error = parse_err(&ecs_config("").replace(GREEN_TG, BLUE_TG));
    assert_at(
        &error,
        "targets.aws.target_groups.green",
        "each slot needs its own",
    );

    let error = parse_err(&ecs_config(
        "services = { blue = \"web\", green = \"web\" }\n",
    ));
    assert_eq!(error.key.as_deref(), Some("targets.aws.services.green"));

    let error = parse_err(&ecs_config("services = { blue = \"web\" }\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.services"));
    assert_eq!(error.message, "missing required key `green`");
}

#[test]
fn cdn_takes_only_an_all_at_once_shift() {
    let cdn = "cdn = { distribution_id = \"E2QWRUHAPOMQZL\", origins = { blue = \"blue.example.com\", green = \"green.example.com\" } }\n";
    let config = parse(&ecs_config(cdn));
    let ecs = ecs_target(&config);
    assert_eq!(
        ecs.cdn.as_ref().map(|c| c.origins.green.as_str()),
        Some("green.example.com")
    );

    let error = parse_err(&ecs_config(&format!("{cdn}shift = \"canary:10:5m\"\n")));
    assert_at(&error, "targets.aws.shift", "canary:10:5m");

    let error = parse_err(&ecs_config(&cdn.replace("E2QWRUHAPOMQZL", "e2qw")));
    assert_eq!(
        error.key.as_deref(),
        Some("targets.aws.cdn.distribution_id")
    );

    let error = parse_err(&ecs_config(
        &cdn.replace("green.example.com", "https://green.example.com/"),
    ));
    assert_eq!(error.key.as_deref(), Some("targets.aws.cdn.origins.green"));
}

#[test]
fn ecs_shift_and_durations_are_read() {
    let config = parse(&ecs_config(
        "shift = \"linear:25:30s\"\nkeep_previous = \"1h\"\nverify_timeout = \"3s\"\ndesired_count = 3\n",
    ));
    let ecs = ecs_target(&config);
    assert_eq!(ecs.shift.steps().len(), 3);
    assert_eq!(ecs.keep_previous, Duration::from_secs(3600));
    assert_eq!(ecs.verify_timeout, Duration::from_secs(3));
    assert_eq!(ecs.desired_count, 3);

    let error = parse_err(&ecs_config("desired_count = 0\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.desired_count"));
}

#[test]
fn ecs_lock_lease_and_task_failures_are_read_and_checked() {
    let config = parse(&ecs_config("lock_lease = \"2m\"\nmax_task_failures = 5\n"));
    let ecs = ecs_target(&config);
    assert_eq!(ecs.lock_lease, Duration::from_secs(120));
    assert_eq!(ecs.max_task_failures, 5);

    let error = parse_err(&ecs_config("lock_lease = \"500ms\"\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.lock_lease"));
    assert!(
        error.message.contains("expected at least 1s"),
        "{}",
        error.message
    );
    let error = parse_err(&ecs_config("max_task_failures = 0\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.max_task_failures"));
    assert!(error.message.contains("at least 1"), "{}", error.message);
}

#[test]
fn create_log_group_is_a_boolean_of_ecs_targets() {
    let config = parse(&ecs_config("create_log_group = true\n"));
    assert!(ecs_target(&config).create_log_group);
    let error = parse_err(&ecs_config("create_log_group = \"yes\"\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.create_log_group"));
}

#[test]
fn ecs_alarms_are_names_listed_once() {
    let config = parse(&ecs_config("alarms = [\"hello-5xx\", \" hello-p99 \"]\n"));
    assert_eq!(ecs_target(&config).alarms, ["hello-5xx", "hello-p99"]);
    assert!(ecs_target(&parse(&ecs_config(""))).alarms.is_empty());

    let error = parse_err(&ecs_config("alarms = [\"hello-5xx\", \"hello-5xx\"]\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.alarms[1]"));
    assert_eq!(position(&error), (Some(11), Some(24)));
    assert_eq!(
        error.message,
        "alarm \"hello-5xx\" is listed twice (also at index 0)"
    );

    let error = parse_err(&ecs_config("alarms = [\"hello-5xx\", \"  \"]\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.alarms[1]"));
    assert!(
        error.message.starts_with("empty alarm name"),
        "{}",
        error.message
    );

    let error = parse_err(&ecs_config(
        "alarms = [\"arn:aws:cloudwatch:us-east-1:123456789012:alarm:hello-5xx\"]\n",
    ));
    assert_at(&error, "targets.aws.alarms[0]", "is an ARN");
    assert!(
        error
            .hint()
            .as_deref()
            .is_some_and(|h| h.contains("after `alarm:`")),
        "{:?}",
        error.hint()
    );

    let error = parse_err(&ecs_config(&format!(
        "alarms = [\"{}\"]\n",
        "a".repeat(256)
    )));
    assert_says(&error, "longer than");

    let error = parse_err(&ecs_config("alarms = \"hello-5xx\"\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.alarms"));

    let error = parse_err("[targets.edge]\nlisten = \"127.0.0.1:9000\"\nalarms = [\"a\"]\n");
    assert_eq!(
        error.message,
        "`alarms` is a key of ecs targets, and this target is kind = \"local\""
    );
}

#[test]
fn task_definition_template_resolves_against_the_config_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("deploy")).expect("mkdir");
    std::fs::write(dir.path().join("deploy/td.json.hbs"), "{}").expect("write");
    let load = |extra: &str| {
        Config::parse(
            &ecs_config(extra),
            Path::new("shipit.toml"),
            &env(&[]),
            dir.path(),
        )
    };
    let config = load("task_definition = \"deploy/td.json.hbs\"\n").expect("loads");
    assert_eq!(
        ecs_target(&config).task_definition,
        Some(dir.path().join("deploy/td.json.hbs"))
    );
    let error = load("task_definition = \"deploy/nope.hbs\"\n").expect_err("missing file");
    assert_at(&error, "targets.aws.task_definition", "does not exist");
}

#[test]
fn repository_names_a_registry_host_without_a_tag() {
    let ok = parse(&ecs_config("").replace(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/hello",
        "127.0.0.1:5000/team/hello",
    ));
    assert_eq!(ecs_target(&ok).registry_host(), "127.0.0.1:5000");
    for bad in ["hello", "library/hello", "127.0.0.1:5000/hello:v1"] {
        let error = parse_err(
            &ecs_config("").replace("123456789012.dkr.ecr.us-east-1.amazonaws.com/hello", bad),
        );
        assert_eq!(
            error.key.as_deref(),
            Some("targets.aws.repository"),
            "{bad}"
        );
    }
}

#[test]
fn an_endpoint_is_a_url_of_scheme_and_host_only() {
    assert_eq!(ecs_target(&parse(&ecs_config(""))).endpoint, None);
    for good in [
        "http://127.0.0.1:4566",
        "https://ecs.internal.example:443/",
        "http://[::1]:5000",
    ] {
        let config = parse(&ecs_config(&format!("endpoint = \"{good}\"\n")));
        assert_eq!(ecs_target(&config).endpoint.as_deref(), Some(good));
    }
    for bad in [
        "127.0.0.1:4566",
        "ftp://x",
        "http://",
        "http://h/path",
        "http://h?x=1",
    ] {
        let error = parse_err(&ecs_config(&format!("endpoint = \"{bad}\"\n")));
        assert_eq!(error.key.as_deref(), Some("targets.aws.endpoint"), "{bad}");
        assert!(
            error.message.contains("expected http://"),
            "{bad}: {}",
            error.message
        );
    }
    let error = parse_err(&format!(
        "{HELLO}\n[targets.local]\nkind = \"local\"\nendpoint = \"http://127.0.0.1:4566\"\n"
    ));
    assert_eq!(error.key.as_deref(), Some("targets.local.endpoint"));
}

#[test]
fn urls_of_the_listeners_are_urls_and_test_url_needs_a_test_listener() {
    let test = format!(
        "test_listener_arn = \"{}\"\n",
        LISTENER.replace("f2f7dc8efc522ab2", "0467ef3c8400ae65")
    );
    let config = parse(&ecs_config(&format!(
        "{test}url = \"http://127.0.0.1:8090/\"\ntest_url = \"http://127.0.0.1:8091/\"\n"
    )));
    let ecs = ecs_target(&config);
    assert_eq!(ecs.url.as_deref(), Some("http://127.0.0.1:8090/"));
    assert_eq!(ecs.test_url.as_deref(), Some("http://127.0.0.1:8091"));
    let error = parse_err(&ecs_config(&format!("{test}url = \"127.0.0.1:8090\"\n")));
    assert_eq!(error.key.as_deref(), Some("targets.aws.url"));
    let error = parse_err(&ecs_config("test_url = \"http://127.0.0.1:8091\"\n"));
    assert_eq!(error.key.as_deref(), Some("targets.aws.test_url"));
    assert!(
        error.message.contains("no test_listener_arn"),
        "{}",
        error.message
    );
}
