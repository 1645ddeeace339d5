//! Errors: where (file, line:column, key path) and what (expected, found, a hint).

use super::*;

#[test]
fn unknown_key_reports_position_key_path_and_allowed_keys() {
    let error = parse_err(
        "[services.hello]\nport = 8080\n\n[services.hello.health]\npath = \"/\"\nintervall = \"1s\"\n",
    );
    assert_eq!(position(&error), (Some(6), Some(1)));
    assert_eq!(
        error.key.as_deref(),
        Some("services.hello.health.intervall")
    );
    assert_eq!(
        error.message,
        "unknown key `intervall`; allowed keys: path, interval, timeout, healthy_threshold"
    );
    assert_eq!(error.hint().as_deref(), Some("did you mean `interval`?"));
}

#[test]
fn unknown_top_level_key_is_reported() {
    let error = parse_err("state_dir = \"s\"\nservice = 1\n");
    assert_eq!(position(&error), (Some(2), Some(1)));
    assert_at(&error, "service", "services, targets");
    assert_eq!(error.hint().as_deref(), Some("did you mean `services`?"));
}

#[test]
fn error_displays_file_position_key_message_and_hint() {
    let error =
        parse_err("[services.hello]\nport = 8080\n[services.hello.health]\ninterval = \"fast\"\n");
    assert_eq!(
        error.to_string(),
        "shipit.toml:4:12: services.hello.health.interval: invalid duration \"fast\": expected \
         a duration like \"100ms\", \"30s\" or \"2m\""
    );
    assert_eq!(
        error.hint().as_deref(),
        Some("write a number and a unit in quotes: ms, s, m or h")
    );
}

#[test]
fn error_serializes_every_field() {
    let error = parse_err("[services.hello]\nport = 0\n");
    let json = serde_json::to_value(&error).expect("error serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "file": "shipit.toml",
            "line": 2,
            "column": 8,
            "key": "services.hello.port",
            "message": "invalid value: integer `0`, expected a port number from 1 to 65535",
            "hint": null,
        })
    );
}

#[test]
fn wrong_type_reports_key_path_and_position() {
    let error = parse_err("[services.hello]\nport = 8080\nhealth = \"/healthz\"\n");
    assert_eq!(position(&error), (Some(3), Some(10)));
    assert_eq!(error.key.as_deref(), Some("services.hello.health"));
    assert_eq!(
        error.message,
        "invalid type: string \"/healthz\", expected a table of health check settings"
    );

    let error = parse_err("[services.hello]\nport = 8080\nenv = { A = 1 }\n");
    assert_eq!(error.key.as_deref(), Some("services.hello.env.A"));
    assert_eq!(position(&error), (Some(3), Some(13)));
    assert_eq!(
        error.hint().as_deref(),
        Some("put the value in double quotes")
    );

    let error = parse_err("services = 3\n");
    assert_eq!(error.message, "invalid type: integer `3`, expected a table");
}

#[test]
fn bad_duration_reports_key_path_and_position() {
    let error = parse_err("[targets.live]\nstop_timeout = 10\n");
    assert_eq!(position(&error), (Some(2), Some(16)));
    assert_eq!(error.key.as_deref(), Some("targets.live.stop_timeout"));
    assert_eq!(
        error.message,
        "invalid type: integer `10`, expected a duration like \"100ms\", \"30s\" or \"2m\""
    );
}

#[test]
fn zero_health_interval_is_refused() {
    let error = parse_err(&format!(
        "{HELLO}[services.hello.health]\ninterval = \"0s\"\n"
    ));
    assert_eq!(error.key.as_deref(), Some("services.hello.health.interval"));
    assert_eq!(position(&error), (Some(4), Some(12)));
}

#[test]
fn bad_port_reports_key_path_and_position() {
    let error = parse_err("[services.hello]\nport = 70000\n");
    assert_eq!(position(&error), (Some(2), Some(8)));
    assert_eq!(error.key.as_deref(), Some("services.hello.port"));
    assert_eq!(
        error.message,
        "invalid value: integer `70000`, expected a port number from 1 to 65535"
    );

    let error = parse_err("[services.hello]\nport = true\n");
    assert_eq!(
        error.message,
        "invalid type: boolean `true`, expected a port number from 1 to 65535"
    );
}

#[test]
fn port_may_come_from_the_environment() {
    let config = parse_with(
        "[services.hello]\nport = \"${PORT:-8080}\"\n",
        &[("PORT", "9000")],
    )
    .expect("numeric string port loads");
    assert_eq!(config.services["hello"].port, 9000);
}

#[test]
fn missing_port_is_reported_at_the_service() {
    let error = parse_err("[services.hello]\ncontext = \".\"\n");
    assert_eq!(position(&error), (Some(1), Some(11)));
    assert_eq!(error.key.as_deref(), Some("services.hello"));
    assert_eq!(error.message, "missing required key `port`");
}

#[test]
fn bad_listen_reports_key_path_and_position() {
    let error = parse_err("[targets.local]\nlisten = \"localhost:80\"\n");
    assert_eq!(position(&error), (Some(2), Some(10)));
    assert_eq!(error.key.as_deref(), Some("targets.local.listen"));
    assert!(
        error
            .message
            .starts_with("invalid listen address \"localhost:80\": expected an IP address"),
        "{}",
        error.message
    );
}

#[test]
fn unknown_target_kind_lists_the_kinds() {
    let error = parse_err("[targets.live]\nkind = \"k8s\"\n");
    assert_eq!(error.key.as_deref(), Some("targets.live.kind"));
    assert_eq!(
        error.message,
        "unknown value `k8s`; expected one of: local, ecs"
    );
    assert_eq!(position(&error), (Some(2), Some(8)));
}

#[test]
fn syntax_error_reports_line_and_column() {
    let error = parse_err("[services.hello]\nport = 8080\ncontext = .\n");
    assert_eq!(position(&error), (Some(3), Some(11)));
    assert_eq!(error.key, None);
    assert!(
        error.message.starts_with("invalid TOML: "),
        "{}",
        error.message
    );

    let error = parse_err("[services.hello\nport = 8080\n");
    assert_eq!(position(&error), (Some(1), Some(16)));
    assert_eq!(error.message, "invalid TOML: unclosed table, expected `]`");
}

#[test]
fn invalid_names_are_reported_at_the_key() {
    let error = parse_err("[services.Hello]\nport = 1\n");
    assert_eq!(error.key.as_deref(), Some("services.Hello"));
    assert_eq!(position(&error), (Some(1), Some(11)));
    assert!(error.message.starts_with("invalid service name \"Hello\""));

    let long = "a".repeat(41);
    let error = parse_err(&format!("[targets.{long}]\n"));
    assert_eq!(error.key, Some(format!("targets.{long}")));

    let error = parse_err(&format!(
        "{HELLO}env = {{ OK_1 = \"x\", \"MY VAR\" = \"y\" }}\n"
    ));
    assert_eq!(error.key.as_deref(), Some("services.hello.env.\"MY VAR\""));
    assert_eq!(position(&error), (Some(3), Some(21)));
}

#[test]
fn http_paths_must_start_with_a_slash() {
    let error = parse_err(&format!(
        "{HELLO}[services.hello.health]\npath = \"healthz\"\n"
    ));
    assert_eq!(error.key.as_deref(), Some("services.hello.health.path"));
    assert_eq!(error.hint().as_deref(), Some("write it as \"/healthz\""));

    let error = parse_err(&format!("{HELLO}verify = {{ version_path = \"v\" }}\n"));
    assert_eq!(
        error.key.as_deref(),
        Some("services.hello.verify.version_path")
    );
    assert_eq!(position(&error), (Some(3), Some(27)));
}

#[test]
fn hooks_are_commands_with_timeouts_and_migrate_is_a_container_command() {
    let service = "[services.web]\nport = 8080\n\n[services.web.hooks]\n";
    let config = parse(&format!(
        "{service}pre_switch = {{ command = \"./check.sh\", timeout = \"1m\" }}\non_failure = {{ command = \"./page.sh\" }}\n"
    ));
    let hooks = &config.service(None).unwrap().hooks;
    let pre = hooks.pre_switch.as_ref().unwrap();
    assert_eq!(pre.command, "./check.sh");
    assert_eq!(pre.timeout, Duration::from_secs(60));
    assert_eq!(
        hooks.on_failure.as_ref().unwrap().timeout,
        crate::config::DEFAULT_HOOK_TIMEOUT
    );
    assert!(hooks.post_release.is_none());
    let names: Vec<&str> = hooks.listed().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["pre_switch", "on_failure"]);

    let error = parse_err(&format!("{service}pre_switch = {{ command = \"  \" }}\n"));
    assert_eq!(
        error.key.as_deref(),
        Some("services.web.hooks.pre_switch.command")
    );
    let error = parse_err(&format!(
        "{service}post_release = {{ command = \"x\", timeout = \"0s\" }}\n"
    ));
    assert_eq!(
        error.key.as_deref(),
        Some("services.web.hooks.post_release.timeout")
    );
    // migrate runs in the image, not in a shell: its command is a list.
    let error = parse_err(&format!("{service}migrate = {{ command = \"x\" }}\n"));
    assert_eq!(
        error.key.as_deref(),
        Some("services.web.hooks.migrate.command")
    );
    let error = parse_err(&format!("{service}migrate = {{ command = [] }}\n"));
    assert_eq!(
        error.key.as_deref(),
        Some("services.web.hooks.migrate.command")
    );
    let config = parse(&format!(
        "{service}migrate = {{ command = [\"migrate\", \"--all\"], timeout = \"2m\" }}\n"
    ));
    let migrate = config.service(None).unwrap().hooks.migrate.clone().unwrap();
    assert_eq!(migrate.command, ["migrate", "--all"]);
    assert_eq!(migrate.timeout, Duration::from_secs(120));
    let config = parse(&format!("{service}migrate = {{ command = [\"m\"] }}\n"));
    let migrate = config.service(None).unwrap().hooks.migrate.clone().unwrap();
    assert_eq!(migrate.timeout, crate::config::DEFAULT_MIGRATE_TIMEOUT);
}

#[test]
fn warmup_has_defaults_and_bounded_values_named_by_key() {
    let service = "[services.web]\nport = 8080\n\n[services.web.warmup]\n";
    let config = parse(service);
    let warmup = config.service(None).unwrap().warmup.clone().unwrap();
    assert_eq!(warmup.paths, ["/"]);
    assert_eq!(warmup.requests, crate::config::DEFAULT_WARMUP_REQUESTS);
    assert_eq!(
        warmup.concurrency,
        crate::config::DEFAULT_WARMUP_CONCURRENCY
    );
    assert_eq!(warmup.max_p99, None);
    let config = parse(&format!(
        "{service}paths = [\"/\", \"/search?q=x\"]\nrequests = 2\nconcurrency = 8\nmax_p99 = \"250ms\"\n"
    ));
    let warmup = config.service(None).unwrap().warmup.clone().unwrap();
    assert_eq!(warmup.paths, ["/", "/search?q=x"]);
    // Never more at once than there are requests.
    assert_eq!(warmup.concurrency, 2);
    assert_eq!(warmup.max_p99, Some(Duration::from_millis(250)));
    assert!(
        parse("[services.web]\nport = 8080\n")
            .service(None)
            .unwrap()
            .warmup
            .is_none()
    );

    for (line, key) in [
        ("paths = []", "services.web.warmup.paths"),
        (
            "paths = [\"/\", \"http://x/\"]",
            "services.web.warmup.paths[1]",
        ),
        ("requests = 0", "services.web.warmup.requests"),
        ("concurrency = 300", "services.web.warmup.concurrency"),
        ("max_p99 = \"0s\"", "services.web.warmup.max_p99"),
        ("timeout = \"0s\"", "services.web.warmup.timeout"),
        ("rps = 3", "services.web.warmup.rps"),
    ] {
        let error = parse_err(&format!("{service}{line}\n"));
        assert_eq!(error.key.as_deref(), Some(key), "{line}: {error}");
    }
}

#[test]
fn routes_are_normalized_and_services_that_could_tie_on_one_edge_are_refused() {
    let two = |a: &str, b: &str| {
        format!("[services.shop]\nport = 1\n{a}\n[services.api]\nport = 2\n{b}\n")
    };
    let config = parse(&two(
        "[services.shop.route]\nhosts = [\"Shop.Example.com\"]",
        "[services.api.route]\npaths = [\"/api/\", \"/api\", \"/v2\"]",
    ));
    let route = &config.service(Some("shop")).unwrap().route;
    assert_eq!(route.hosts, ["shop.example.com"]);
    assert!(route.paths.is_empty());
    assert_eq!(
        config.service(Some("api")).unwrap().route.paths,
        ["/api", "/v2"]
    );
    // "/" is every path: beside it, "/api" narrows nothing.
    let config =
        parse("[services.web]\nport = 1\n[services.web.route]\npaths = [\"/\", \"/api\"]\n");
    assert!(config.service(None).unwrap().route.paths.is_empty());
    // Same host, different prefixes: the longest prefix wins, so no tie.
    parse(&two(
        "[services.shop.route]\nhosts = [\"a.test\"]\npaths = [\"/\"]",
        "[services.api.route]\nhosts = [\"a.test\"]\npaths = [\"/api\"]",
    ));

    for (a, b, said) in [
        ("", "", "both answer any host under /"),
        (
            "[services.shop.route]\npaths = [\"/api\"]",
            "[services.api.route]\npaths = [\"/api/\"]",
            "both answer any host under /api",
        ),
        (
            "[services.shop.route]\nhosts = [\"a.test\", \"b.test\"]",
            "[services.api.route]\nhosts = [\"B.test\"]",
            "both answer host b.test under /",
        ),
    ] {
        let error = parse_err(&two(a, b));
        assert_eq!(error.key.as_deref(), Some("services.shop.route"), "{error}");
        assert!(
            error.message.contains("services `api` and `shop` overlap"),
            "{error}"
        );
        assert!(error.message.contains(said), "{error}");
    }
    let error =
        parse_err("[services.web]\nport = 1\n[services.web.route]\nhosts = [\"http://x\"]\n");
    assert_eq!(error.key.as_deref(), Some("services.web.route.hosts[0]"));
    let error =
        parse_err("[services.web]\nport = 1\n[services.web.route]\npaths = [\"/a\", \"b\"]\n");
    assert_eq!(error.key.as_deref(), Some("services.web.route.paths[1]"));
}
