//! Loading whole configs, from text to `Config` or to the error a person would read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A folder that exists, so the default build context "." resolves to something real.
fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("shipit.toml"), &env(vars), manifest_dir())
}

fn parse(text: &str) -> Config {
    parse_with(text, &[]).unwrap_or_else(|error| panic!("config should load:\n{error}"))
}

fn parse_err(text: &str) -> ConfigError {
    match parse_with(text, &[]) {
        Ok(config) => panic!("config should fail to load, got {config:#?}"),
        Err(error) => error,
    }
}

fn position(error: &ConfigError) -> (Option<usize>, Option<usize>) {
    (error.line, error.column)
}

const HELLO: &str = "[services.hello]\nport = 8080\n";

// ---- the template -------------------------------------------------------------------------

fn template_path() -> PathBuf {
    manifest_dir().join("../templates/shipit.toml")
}

fn template_text() -> String {
    std::fs::read_to_string(template_path()).expect("templates/shipit.toml is readable")
}

/// The template with its commented settings uncommented: the `# key = value` defaults and
/// `# [table]` headers, and with `examples` also the `# e.g. key = value` lines.
fn uncomment(text: &str, examples: bool) -> String {
    let setting = |line: &str| {
        let is_header = line.starts_with('[') && line.ends_with(']');
        let is_pair = line.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
        is_header || is_pair
    };
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line;
            };
            let rest = match rest.strip_prefix("e.g. ") {
                Some(example) if examples => example,
                _ => rest,
            };
            if setting(rest) { rest } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn load_template_text(text: &str) -> Config {
    Config::parse(text, &template_path(), &env(&[]), manifest_dir())
        .unwrap_or_else(|error| panic!("template should load:\n{error}"))
}

/// The config as JSON with the config's folder written as `<config dir>`, so it does not
/// depend on where the repository is checked out.
fn portable_json(config: &Config) -> serde_json::Value {
    fn walk(value: &mut serde_json::Value, dir: &str) {
        match value {
            serde_json::Value::String(text) => {
                if let Some(rest) = text.strip_prefix(dir) {
                    *text = format!("<config dir>{rest}");
                }
            }
            serde_json::Value::Array(values) => values.iter_mut().for_each(|v| walk(v, dir)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| walk(v, dir)),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config).expect("config serializes");
    walk(&mut value, &config.dir.display().to_string());
    value
}

#[test]
fn template_loads_to_the_defaults() {
    let config = Config::load_with(&template_path(), &env(&[]), manifest_dir())
        .unwrap_or_else(|error| panic!("template should load:\n{error}"));
    insta::assert_json_snapshot!("template", portable_json(&config));

    // The snapshot is reviewed once; these hold the values to the constants for good.
    let service = config.service(None).expect("the template has one service");
    assert_eq!(service.context, config.dir);
    assert_eq!(service.dockerfile, PathBuf::from(DEFAULT_DOCKERFILE));
    assert_eq!(service.health.path, DEFAULT_HEALTH_PATH);
    assert_eq!(service.health.interval, DEFAULT_HEALTH_INTERVAL);
    assert_eq!(service.health.timeout, DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(service.health.healthy_threshold, DEFAULT_HEALTHY_THRESHOLD);
    assert_eq!(config.state_dir, config.dir.join(DEFAULT_STATE_DIR));
    let target = config.target(None).expect("the implicit target");
    assert_eq!(target.name, DEFAULT_TARGET_NAME);
    let TargetKind::Local(local) = &target.kind else {
        panic!("expected a local target, got {target:?}");
    };
    assert_eq!(local.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(local.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(local.stop_timeout, DEFAULT_STOP_TIMEOUT);
}

#[test]
fn template_commented_values_are_the_defaults() {
    let text = template_text();
    let uncommented = uncomment(&text, false);
    for exposed in ["\n[targets.local]\n", "\ninterval = ", "\nstate_dir = "] {
        assert!(
            uncommented.matches(exposed).count() == 1,
            "uncommenting should expose {exposed:?} once:\n{uncommented}"
        );
    }
    let as_written = load_template_text(&text);
    let spelled_out = load_template_text(&uncommented);
    assert_eq!(portable_json(&spelled_out), portable_json(&as_written));
}

/// The keys a table accepts, read from the unknown-key error, so that a key added to the
/// raw structs but not to the template fails this test.
fn allowed_keys(table_text: &str) -> Vec<String> {
    let error = parse_err(&format!("{table_text}zzz_probe = 1\n"));
    let list = error
        .message
        .split_once("allowed keys: ")
        .unwrap_or_else(|| panic!("unknown-key error lists the allowed keys: {error}"))
        .1;
    list.split(", ").map(str::to_string).collect()
}

#[test]
fn template_shows_every_key() {
    let full: toml::Table =
        toml::from_str(&uncomment(&template_text(), true)).expect("uncommented template parses");
    let tables = [
        (vec![], ""),
        (vec!["services", "hello"], HELLO),
        (
            vec!["services", "hello", "health"],
            "[services.hello]\nport = 1\n[services.hello.health]\n",
        ),
        (
            vec!["services", "hello", "verify"],
            "[services.hello]\nport = 1\n[services.hello.verify]\n",
        ),
        (vec!["targets", "local"], "[targets.local]\n"),
        (vec!["targets", "local", "edge"], "[targets.local.edge]\n"),
        (
            vec!["modules", "sources"],
            "[modules.sources]\npath = \"src\"\n",
        ),
    ];
    for (path, probe) in tables {
        let table = path.iter().fold(&full, |table, key| {
            table
                .get(*key)
                .and_then(toml::Value::as_table)
                .unwrap_or_else(|| panic!("template has a table at {path:?}"))
        });
        let allowed = allowed_keys(probe);
        assert!(!allowed.is_empty());
        for key in allowed {
            // Target keys are shown on the target of their kind: the ecs ones on the
            // example ecs target, `[targets.aws]`.
            let (path, table) =
                if path == ["targets", "local"] && super::raw::ECS_KEYS.contains(&key.as_str()) {
                    let aws = full["targets"]["aws"]
                        .as_table()
                        .expect("template has an ecs target at targets.aws");
                    (vec!["targets", "aws"], aws)
                } else {
                    (path.clone(), table)
                };
            assert!(
                table.contains_key(&key),
                "template does not show {path:?}.{key}"
            );
        }
    }
    let certificate = &full["targets"]["local"]["edge"]["certificates"][0];
    let probe = "[[targets.local.edge.certificates]]\ncert = \"c\"\nkey = \"k\"\n";
    for key in allowed_keys(probe) {
        assert!(
            certificate.get(&key).is_some(),
            "template does not show targets.local.edge.certificates[0].{key}"
        );
    }
    let aws = full["targets"]["aws"].as_table().expect("targets.aws");
    for shared in ["kind", "shift"] {
        assert!(
            aws.contains_key(shared),
            "template does not show targets.aws.{shared}"
        );
    }
    for (table, keys) in [
        ("target_groups", &["blue", "green"][..]),
        ("services", &["blue", "green"][..]),
        ("cdn", &["distribution_id", "origins"][..]),
    ] {
        for key in keys {
            assert!(
                aws[table].get(key).is_some(),
                "template does not show targets.aws.{table}.{key}"
            );
        }
    }
}

#[test]
fn every_target_key_belongs_to_a_kind() {
    let allowed = allowed_keys("[targets.local]\n");
    for key in &allowed {
        let local = super::raw::LOCAL_KEYS.contains(&key.as_str());
        let ecs = super::raw::ECS_KEYS.contains(&key.as_str());
        let shared = ["kind", "shift"].contains(&key.as_str());
        assert_eq!(
            u8::from(local) + u8::from(ecs) + u8::from(shared),
            1,
            "target key {key} must be listed as local, ecs or shared exactly once"
        );
    }
    for key in super::raw::LOCAL_KEYS.iter().chain(super::raw::ECS_KEYS) {
        assert!(
            allowed.iter().any(|a| a == key),
            "{key} is not a target key"
        );
    }
}

// ---- errors: where and what ---------------------------------------------------------------

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
    assert_eq!(error.hint.as_deref(), Some("did you mean `interval`?"));
}

#[test]
fn unknown_top_level_key_is_reported() {
    let error = parse_err("state_dir = \"s\"\nservice = 1\n");
    assert_eq!(position(&error), (Some(2), Some(1)));
    assert_eq!(error.key.as_deref(), Some("service"));
    assert!(
        error.message.contains("services, targets"),
        "{}",
        error.message
    );
    assert_eq!(error.hint.as_deref(), Some("did you mean `services`?"));
}

#[test]
fn error_displays_file_position_key_message_and_hint() {
    let error =
        parse_err("[services.hello]\nport = 8080\n[services.hello.health]\ninterval = \"fast\"\n");
    assert_eq!(
        error.to_string(),
        "shipit.toml:4:12: services.hello.health.interval: invalid duration \"fast\": expected \
         a duration like \"100ms\", \"30s\" or \"2m\"\nhint: write a number and a unit in quotes: \
         ms, s, m or h"
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
        error.hint.as_deref(),
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
    assert_eq!(error.hint.as_deref(), Some("write it as \"/healthz\""));

    let error = parse_err(&format!("{HELLO}verify = {{ version_path = \"v\" }}\n"));
    assert_eq!(
        error.key.as_deref(),
        Some("services.hello.verify.version_path")
    );
    assert_eq!(position(&error), (Some(3), Some(27)));
}

// ---- interpolation ------------------------------------------------------------------------

#[test]
fn unset_variable_names_the_variable_and_the_key() {
    let error = parse_err(&format!("{HELLO}env = {{ TOKEN = \"${{API_TOKEN}}\" }}\n"));
    assert_eq!(error.key.as_deref(), Some("services.hello.env.TOKEN"));
    assert_eq!(position(&error), (Some(3), Some(17)));
    assert!(
        error.message.contains("`API_TOKEN` is not set"),
        "{}",
        error.message
    );
    assert_eq!(
        error.hint.as_deref(),
        Some("export API_TOKEN, or give it a default with ${API_TOKEN:-default}")
    );
}

#[test]
fn unterminated_reference_is_an_error() {
    let error = parse_err(&format!("{HELLO}pre_build = \"echo ${{OOPS\"\n"));
    assert_eq!(error.key.as_deref(), Some("services.hello.pre_build"));
    assert!(
        error.message.starts_with("unterminated `${`"),
        "{}",
        error.message
    );
}

#[test]
fn every_string_is_interpolated() {
    let text = r#"
state_dir = "${STATE:-state}"
default_target = "${TARGET}"

[services.hello]
context = "${CTX:-.}"
port = 8080
pre_build = "echo $HOME $$HOME ${GREETING:-hi}"
env = { A = "${A:-fallback}", B = "${B}", PRICE = "$$5" }

[services.hello.health]
path = "${HEALTH:-/healthz}"
interval = "${INTERVAL:-1s}"

[targets.edge]
listen = "127.0.0.1:${EDGE_PORT:-9000}"
"#;
    let config = parse_with(
        text,
        &[
            ("TARGET", "edge"),
            ("A", ""),
            ("B", "bee"),
            ("INTERVAL", "250ms"),
            ("HEALTH", "/up"),
        ],
    )
    .unwrap_or_else(|error| panic!("config should load:\n{error}"));
    let service = &config.services["hello"];
    assert_eq!(config.state_dir, manifest_dir().join("state"));
    assert_eq!(config.default_target.as_deref(), Some("edge"));
    assert_eq!(service.context, manifest_dir());
    assert_eq!(service.pre_build.as_deref(), Some("echo $HOME $HOME hi"));
    assert_eq!(
        service.env["A"], "fallback",
        "default applies when set but empty"
    );
    assert_eq!(service.env["B"], "bee");
    assert_eq!(service.env["PRICE"], "$5");
    assert_eq!(service.health.path, "/up");
    assert_eq!(service.health.interval, Duration::from_millis(250));
    let TargetKind::Local(local) = &config.targets["edge"].kind else {
        panic!("expected a local target");
    };
    assert_eq!(local.listen.to_string(), "127.0.0.1:9000");
}

#[test]
fn blank_optional_keys_without_defaults_count_as_absent() {
    let text = format!(
        "default_target = \"${{T:-}}\"\n{HELLO}pre_build = \"${{P:-}}\"\n\
         verify = {{ version_path = \"${{V:-}}\" }}\n"
    );
    let config = parse(&text);
    assert_eq!(config.default_target, None);
    assert_eq!(config.services["hello"].pre_build, None);
    assert_eq!(config.services["hello"].verify.version_path, None);

    let error = parse_err(&format!("{HELLO}context = \"${{C:-}}\"\n"));
    assert_eq!(error.key.as_deref(), Some("services.hello.context"));
    assert!(error.message.starts_with("empty path"), "{}", error.message);
}

// ---- paths --------------------------------------------------------------------------------

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let root = tempfile::tempdir().expect("temp dir");
    let app = root.path().join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    let text = "state_dir = \"../state/./x\"\n[services.hello]\nport = 1\ncontext = \"./app/../app\"\ndockerfile = \"./docker/../Dockerfile.prod\"\n";
    std::fs::write(root.path().join("shipit.toml"), text).expect("config written");

    // The config path is relative to cwd; everything in it is relative to its folder.
    let cwd = root.path().parent().expect("temp dir has a parent");
    let relative = Path::new(root.path().file_name().expect("name")).join("shipit.toml");
    let config = Config::load_with(&relative, &env(&[]), cwd).expect("config loads");

    assert_eq!(config.path, root.path().join("shipit.toml"));
    assert_eq!(config.dir, root.path());
    assert_eq!(config.state_dir, cwd.join("state/x"));
    assert_eq!(config.services["hello"].context, app);
    assert_eq!(
        config.services["hello"].dockerfile,
        PathBuf::from("Dockerfile.prod")
    );
}

#[test]
fn missing_build_context_is_reported_at_its_key() {
    let error = parse_err(&format!("{HELLO}context = \"no-such-folder\"\n"));
    assert_eq!(error.key.as_deref(), Some("services.hello.context"));
    assert_eq!(position(&error), (Some(3), Some(11)));
    assert!(
        error.message.contains("no-such-folder"),
        "{}",
        error.message
    );
}

#[test]
fn dockerfile_outside_the_context_is_refused() {
    let error = parse_err(&format!("{HELLO}dockerfile = \"../Dockerfile\"\n"));
    assert_eq!(error.key.as_deref(), Some("services.hello.dockerfile"));
    assert_eq!(
        error.message,
        "dockerfile \"../Dockerfile\" is outside the build context"
    );
}

#[test]
fn state_dir_defaults_beside_the_config() {
    let config = parse(HELLO);
    assert_eq!(config.state_dir, manifest_dir().join(DEFAULT_STATE_DIR));
}

#[test]
fn state_dir_env_overrides_the_file_relative_to_cwd() {
    let text = format!("state_dir = \"from-file\"\n{HELLO}");
    let cwd = Path::new("/somewhere/else");
    let config = Config::parse(
        &text,
        &manifest_dir().join("shipit.toml"),
        &env(&[(STATE_DIR_ENV, "../from-env")]),
        cwd,
    )
    .expect("config loads");
    assert_eq!(config.state_dir, PathBuf::from("/somewhere/from-env"));

    let config = Config::parse(
        &text,
        &manifest_dir().join("shipit.toml"),
        &env(&[(STATE_DIR_ENV, "")]),
        cwd,
    )
    .expect("config loads");
    assert_eq!(
        config.state_dir,
        manifest_dir().join("from-file"),
        "empty is unset"
    );
}

// ---- loading the file ---------------------------------------------------------------------

#[test]
fn missing_default_file_hints_init_or_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = load_file(
        Path::new(DEFAULT_CONFIG_FILE),
        &env(&[]),
        dir.path(),
        Lookup::Default,
    )
    .expect_err("no file");
    assert_eq!(error.file, PathBuf::from("shipit.toml"));
    assert_eq!(
        error.message,
        format!("no shipit.toml in {}", dir.path().display())
    );
    assert_eq!(
        error.hint.as_deref(),
        Some("run `shipit init` to write one, or pass a config file with -c")
    );
}

#[test]
fn missing_given_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error =
        Config::load_with(Path::new("conf/prod.toml"), &env(&[]), dir.path()).expect_err("no file");
    assert_eq!(
        error.to_string(),
        "conf/prod.toml: config file not found\nhint: check the path given with -c"
    );
}

// ---- targets and services -----------------------------------------------------------------

#[test]
fn config_without_targets_gets_an_implicit_local_target() {
    let config = parse(HELLO);
    assert_eq!(config.targets.len(), 1);
    let target = config.target(None).expect("the implicit target");
    assert_eq!(target.name, DEFAULT_TARGET_NAME);
    let TargetKind::Local(local) = &target.kind else {
        panic!("expected a local target, got {target:?}");
    };
    assert_eq!(local.listen, resolve::default_listen());
    assert_eq!(local.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
}

#[test]
fn explicit_targets_replace_the_implicit_one() {
    let config = parse("[targets.beta]\nlisten = \"[::1]:9090\"\n");
    assert_eq!(config.targets.keys().collect::<Vec<_>>(), ["beta"]);
    assert_eq!(config.target(None).expect("only target").name, "beta");
}

#[test]
fn default_target_must_name_a_target() {
    let error = parse_err("default_target = \"prod\"\n[targets.live]\n[targets.beta]\n");
    assert_eq!(error.key.as_deref(), Some("default_target"));
    assert_eq!(position(&error), (Some(1), Some(18)));
    assert_eq!(
        error.message,
        "no target named `prod`; expected one of: `beta`, `live`"
    );

    let config = parse("default_target = \"local\"\n");
    assert_eq!(config.target(None).expect("default").name, "local");
}

#[test]
fn target_none_picks_default_target_among_several() {
    let config = parse("default_target = \"beta\"\n[targets.live]\n[targets.beta]\n");
    assert_eq!(config.target(None).expect("default").name, "beta");
    assert_eq!(config.target(Some("live")).expect("named").name, "live");
}

#[test]
fn target_none_with_several_and_no_default_lists_them() {
    let config = parse("[targets.live]\n[targets.beta]\n");
    let error = config.target(None).expect_err("ambiguous");
    assert_eq!(
        error.message,
        "several targets are configured and no default_target: `beta`, `live`"
    );
    assert!(
        error
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("--target"))
    );

    let error = config.target(Some("prod")).expect_err("unknown");
    assert_eq!(
        error.message,
        "no target named `prod`; expected one of: `beta`, `live`"
    );
}

#[test]
fn service_none_with_no_services_is_an_error() {
    let config = parse("");
    assert!(config.services.is_empty(), "a library-only config loads");
    let error = config.service(None).expect_err("no services");
    assert_eq!(error.message, "no services are configured");
    assert_eq!(error.file, config.path);
}

#[test]
fn service_none_with_one_service_is_that_service() {
    let config = parse(HELLO);
    let service = config.service(None).expect("only service");
    assert_eq!(service.name, "hello");
    assert_eq!(service.port, 8080);
    assert_eq!(service.context, manifest_dir());
}

#[test]
fn service_none_with_two_services_lists_them() {
    let config = parse(&format!("{HELLO}[services.api]\nport = 9000\n"));
    let error = config.service(None).expect_err("ambiguous");
    assert_eq!(
        error.message,
        "several services are configured: `api`, `hello`"
    );
    assert_eq!(
        error.hint.as_deref(),
        Some("choose one with --service <name>")
    );
    assert_eq!(config.service(Some("api")).expect("named").port, 9000);

    let error = config.service(Some("web")).expect_err("unknown");
    assert_eq!(
        error.message,
        "no service named `web`; expected one of: `api`, `hello`"
    );
}

// ---- modules ------------------------------------------------------------------------------

/// A folder with module folders `names`, each holding a `VERSION` file.
fn module_folders(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for name in names {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("VERSION"), "0.1.0\n").unwrap();
    }
    dir
}

fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("shipit.toml"), &env(&[]), dir)
}

const LAYERS: &str = r#"[modules.sources]
path = "sources"

[modules.protocols]
path = "protocols"
depends_on = ["sources"]

[modules.core]
path = "core"
depends_on = ["protocols", "sources"]
"#;

#[test]
fn modules_only_config_loads_with_defaults() {
    let dir = module_folders(&["sources", "protocols", "core"]);
    let config = parse_in(dir.path(), LAYERS).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.services.is_empty(), "a library-only config is valid");
    let core = &config.modules["core"];
    assert_eq!(core.path, dir.path().join("core"));
    assert_eq!(core.version_file, dir.path().join("core/VERSION"));
    assert_eq!(core.depends_on, ["protocols", "sources"]);
    assert_eq!(core.tag, DEFAULT_MODULE_TAG);
}

#[test]
fn version_file_is_detected_in_the_documented_order() {
    let dir = module_folders(&["lib"]);
    std::fs::write(dir.path().join("lib/package.json"), "{}").unwrap();
    let config = parse_in(dir.path(), "[modules.lib]\npath = \"lib\"\n").unwrap();
    assert_eq!(
        config.modules["lib"].version_file,
        dir.path().join("lib/package.json"),
        "package.json comes before VERSION"
    );
    std::fs::write(dir.path().join("lib/Cargo.toml"), "").unwrap();
    let config = parse_in(dir.path(), "[modules.lib]\npath = \"lib\"\n").unwrap();
    assert_eq!(
        config.modules["lib"].version_file,
        dir.path().join("lib/Cargo.toml")
    );
    let config = parse_in(
        dir.path(),
        "[modules.lib]\npath = \"lib\"\nversion_file = \"VERSION\"\n",
    )
    .unwrap();
    assert_eq!(
        config.modules["lib"].version_file,
        dir.path().join("lib/VERSION")
    );
}

#[test]
fn module_without_a_version_file_lists_what_was_looked_for() {
    let dir = module_folders(&[]);
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    let error = parse_in(dir.path(), "[modules.lib]\npath = \"lib\"\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.lib"));
    assert_eq!(position(&error), (Some(1), Some(10)));
    assert!(
        error
            .message
            .contains("looked for Cargo.toml, package.json, project.clj, pom.xml, VERSION"),
        "{}",
        error.message
    );

    let error = parse_in(
        dir.path(),
        "[modules.lib]\npath = \"lib\"\nversion_file = \"version.txt\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.lib.version_file"));
    assert_eq!(position(&error), (Some(3), Some(16)));
    assert!(error.message.contains("version.txt"), "{}", error.message);

    let error = parse_in(
        dir.path(),
        "[modules.lib]\npath = \"lib\"\nversion_file = \"../VERSION\"\n",
    )
    .unwrap_err();
    assert!(error.message.contains("outside the module's folder"));
}

#[test]
fn module_path_is_required_and_must_exist() {
    let dir = module_folders(&[]);
    let error = parse_in(dir.path(), "[modules.lib]\ntag = \"v<version>\"\n").unwrap_err();
    assert_eq!(error.message, "missing required key `path`");
    assert!(error.hint.as_deref().is_some_and(|h| h.contains("path = ")));

    let error = parse_in(dir.path(), "[modules.lib]\npath = \"nope\"\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.lib.path"));
    assert_eq!(position(&error), (Some(2), Some(8)));
    assert!(
        error.message.contains("does not exist"),
        "{}",
        error.message
    );
}

#[test]
fn depends_on_must_name_modules() {
    let dir = module_folders(&["a", "b"]);
    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ndepends_on = [\"b\", \"c\"]\n[modules.b]\npath = \"b\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.a.depends_on[1]"));
    assert_eq!(position(&error), (Some(3), Some(20)));
    assert_eq!(error.message, "no module named `c`; expected one of: `b`");
}

#[test]
fn overlapping_module_paths_are_refused() {
    let dir = module_folders(&["lib", "lib/inner"]);
    let error = parse_in(
        dir.path(),
        "[modules.outer]\npath = \"lib\"\n[modules.inner]\npath = \"lib/inner\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.outer.path"));
    assert!(
        error.message.contains("overlaps") && error.message.contains("module `inner`"),
        "{}",
        error.message
    );

    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"lib\"\n[modules.b]\npath = \"./lib/\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.b.path"));

    // Folders that only share a name prefix do not overlap.
    let dir = module_folders(&["lib", "lib-extra"]);
    assert!(
        parse_in(
            dir.path(),
            "[modules.a]\npath = \"lib\"\n[modules.b]\npath = \"lib-extra\"\n"
        )
        .is_ok()
    );
}

#[test]
fn dependency_cycle_is_an_error_naming_the_cycle() {
    let dir = module_folders(&["a", "b", "c"]);
    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ndepends_on = [\"b\"]\n\
         [modules.b]\npath = \"b\"\ndepends_on = [\"c\"]\n\
         [modules.c]\npath = \"c\"\ndepends_on = [\"a\"]\n",
    )
    .unwrap_err();
    assert_eq!(error.message, "dependency cycle: a → b → c → a");
    assert_eq!(error.key.as_deref(), Some("modules.a.depends_on"));
    assert_eq!(position(&error), (Some(3), Some(14)));

    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ndepends_on = [\"a\"]\n",
    )
    .unwrap_err();
    assert_eq!(error.message, "dependency cycle: a → a");
}

#[test]
fn tag_format_needs_the_version_placeholder() {
    let dir = module_folders(&["a"]);
    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ntag = \"<name>-latest\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.a.tag"));
    assert_eq!(
        error.message,
        "invalid tag format \"<name>-latest\": expected `<version>` in it"
    );
    assert_eq!(
        error.hint.as_deref(),
        Some("the default is \"<name>-v<version>\"")
    );
    let config = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ntag = \"v<version>\"\n",
    )
    .unwrap();
    assert_eq!(config.modules["a"].tag, "v<version>");
}

#[test]
fn module_names_follow_the_service_name_rules() {
    let dir = module_folders(&["a"]);
    let error = parse_in(dir.path(), "[modules.Sources]\npath = \"a\"\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.Sources"));
    assert!(error.message.starts_with("invalid module name \"Sources\""));
}

// ---- ecs targets --------------------------------------------------------------------------

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
    table.insert("services".into(), full["services"].clone());
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
    assert!(
        error
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("kind = \"ecs\""))
    );
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
            .hint
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
    assert_eq!(error.key.as_deref(), Some("targets.aws.test_listener_arn"));
    assert!(
        error.message.contains("is the production listener"),
        "{}",
        error.message
    );

    let error = parse_err(&ecs_config(
        "execution_role_arn = \"arn:aws:iam::123456789012:user/me\"\n",
    ));
    assert_eq!(error.key.as_deref(), Some("targets.aws.execution_role_arn"));
}

#[test]
fn slots_need_their_own_target_group_service_and_origin() {
    let error = parse_err(&ecs_config("").replace(GREEN_TG, BLUE_TG));
    assert_eq!(
        error.key.as_deref(),
        Some("targets.aws.target_groups.green")
    );
    assert!(
        error.message.contains("each slot needs its own"),
        "{}",
        error.message
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
    assert_eq!(error.key.as_deref(), Some("targets.aws.shift"));
    assert!(error.message.contains("canary:10:5m"), "{}", error.message);

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
    assert_eq!(error.key.as_deref(), Some("targets.aws.alarms[0]"));
    assert!(error.message.contains("is an ARN"), "{}", error.message);
    assert!(
        error
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("after `alarm:`")),
        "{:?}",
        error.hint
    );

    let error = parse_err(&ecs_config(&format!(
        "alarms = [\"{}\"]\n",
        "a".repeat(256)
    )));
    assert!(error.message.contains("longer than"), "{}", error.message);

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
    assert_eq!(error.key.as_deref(), Some("targets.aws.task_definition"));
    assert!(
        error.message.contains("does not exist"),
        "{}",
        error.message
    );
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

// ---- shift, bake bound and preview host of a local target ---------------------------------

fn local_target(config: &Config, name: &str) -> LocalTarget {
    match &config.targets[name].kind {
        TargetKind::Local(local) => local.clone(),
        other => panic!("expected a local target, got {other:?}"),
    }
}

#[test]
fn local_shift_keys_default_to_the_constants() {
    let local = local_target(&parse(HELLO), DEFAULT_TARGET_NAME);
    assert_eq!(local.shift, crate::shift::DEFAULT_SHIFT);
    assert_eq!(local.max_error_rate, crate::shift::DEFAULT_MAX_ERROR_RATE);
    assert_eq!(local.preview_host, None);
}

#[test]
fn local_shift_keys_are_read() {
    let config = parse(&format!(
        "{HELLO}[targets.edge]\nshift = \"linear:25:30s\"\nmax_error_rate = \"5%\"\n\
         preview_host = \"Preview.Example.com\"\n"
    ));
    let local = local_target(&config, "edge");
    assert_eq!(
        local.shift,
        crate::shift::ShiftStrategy::Linear {
            percent: 25,
            interval: Duration::from_secs(30)
        }
    );
    assert!((local.max_error_rate - 0.05).abs() < 1e-12);
    assert_eq!(local.preview_host.as_deref(), Some("preview.example.com"));

    for (written, rate) in [("0", 0.0), ("1", 1.0), ("0.25", 0.25), ("\"0.5\"", 0.5)] {
        let config = parse(&format!(
            "{HELLO}[targets.edge]\nmax_error_rate = {written}\n"
        ));
        assert_eq!(
            local_target(&config, "edge").max_error_rate,
            rate,
            "{written}"
        );
    }
    let config = parse_with(
        &format!("{HELLO}[targets.edge]\nshift = \"${{SHIFT:-all-at-once}}\"\n"),
        &[("SHIFT", "canary:10:2m")],
    )
    .expect("config loads");
    assert_eq!(
        local_target(&config, "edge").shift.to_string(),
        "canary:10:2m"
    );
}

#[test]
fn bad_shift_reports_key_path_position_and_the_forms() {
    let error = parse_err(&format!(
        "{HELLO}[targets.edge]\nshift = \"canary:150:5m\"\n"
    ));
    assert_eq!(error.key.as_deref(), Some("targets.edge.shift"));
    assert_eq!(position(&error), (Some(4), Some(9)));
    assert!(error.message.contains("from 1 to 99"), "{}", error.message);
    assert!(
        error.message.contains("linear:<percent>:<interval>"),
        "{}",
        error.message
    );
    let error = parse_err(&format!("{HELLO}[targets.edge]\nshift = 25\n"));
    assert_eq!(error.key.as_deref(), Some("targets.edge.shift"));
}

#[test]
fn max_error_rate_must_be_a_fraction() {
    for bad in ["1.5", "-0.1", "\"150%\"", "\"lots\"", "true"] {
        let error = parse_err(&format!("{HELLO}[targets.edge]\nmax_error_rate = {bad}\n"));
        assert_eq!(
            error.key.as_deref(),
            Some("targets.edge.max_error_rate"),
            "{bad}"
        );
        assert!(
            error.message.contains("a fraction from 0 to 1"),
            "{bad}: {}",
            error.message
        );
    }
}

#[test]
fn preview_host_must_be_a_bare_host_name() {
    for bad in [
        "http://preview.example.com",
        "preview.example.com:8080",
        "a b",
        "-x.com",
    ] {
        let error = parse_err(&format!(
            "{HELLO}[targets.edge]\npreview_host = \"{bad}\"\n"
        ));
        assert_eq!(
            error.key.as_deref(),
            Some("targets.edge.preview_host"),
            "{bad}"
        );
        assert!(
            error
                .hint
                .as_deref()
                .unwrap_or("")
                .contains("without http://")
        );
    }
    let blank = parse(&format!(
        "{HELLO}[targets.edge]\npreview_host = \"${{PREVIEW:-}}\"\n"
    ));
    assert_eq!(local_target(&blank, "edge").preview_host, None);
}

// ---- the edge table of a local target ----------------------------------------------------

/// A config folder holding `certs/a.pem` and `certs/a.key` (their content is the edge's
/// business; the config only checks that they are files).
fn cert_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    for file in ["a.pem", "a.key", "b.pem", "b.key"] {
        std::fs::write(dir.path().join("certs").join(file), "PEM\n").unwrap();
    }
    dir
}

fn edge_err(dir: &Path, table: &str) -> ConfigError {
    let text = format!(
        "{HELLO}[targets.local]\nlisten = \"127.0.0.1:8080\"\n[targets.local.edge]\n{table}"
    );
    match parse_in(dir, &text) {
        Ok(config) => panic!("the edge table should be refused:\n{table}\ngot {config:#?}"),
        Err(error) => error,
    }
}

#[test]
fn edge_settings_default_to_the_edge_constants() {
    let local = local_target(&parse(HELLO), DEFAULT_TARGET_NAME);
    assert_eq!(*local.edge, EdgeSettings::default());
    assert_eq!(
        local.edge.header_read_timeout,
        shipit_edge::HEADER_READ_TIMEOUT
    );
    assert_eq!(local.edge.idle_timeout, shipit_edge::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        local.edge.connect_timeout,
        shipit_edge::DEFAULT_CONNECT_TIMEOUT
    );
    assert_eq!(
        local.edge.response_timeout,
        shipit_edge::DEFAULT_RESPONSE_HEADER_TIMEOUT
    );
    assert_eq!(
        local.edge.max_request_body,
        shipit_edge::DEFAULT_MAX_REQUEST_BODY
    );
    let settings = local.edge.edge(local.drain_timeout);
    assert_eq!(
        settings.tuning,
        shipit_edge::Tuning {
            shutdown_grace: DEFAULT_DRAIN_TIMEOUT,
            ..shipit_edge::Tuning::default()
        }
    );
    assert_eq!(settings.tls, None);
}

#[test]
fn edge_settings_are_read_and_paths_resolved_against_the_config_folder() {
    let dir = cert_folder();
    let text = format!(
        r#"{HELLO}[targets.local]
drain_timeout = "12s"

[targets.local.edge]
tls_listen = "127.0.0.1:8443"
certificates = [
  {{ host = "Shop.Example.com", cert = "certs/a.pem", key = "./certs/a.key" }},
  {{ host = "*.example.com", cert = "certs/b.pem", key = "certs/b.key" }},
  {{ cert = "certs/b.pem", key = "certs/b.key" }},
]
header_read_timeout = "5s"
idle_timeout = "90s"
connect_timeout = "250ms"
response_timeout = "2m"
max_request_body = "${{BODY:-10MiB}}"
body_idle_timeout = "7s"
write_timeout = "45s"
max_header_size = "32KiB"
max_headers = 60
max_connections = 500
max_connections_per_ip = 50
h2_max_concurrent_streams = 64
h2_max_header_list_size = "16KiB"
h2_max_resets_per_second = 20
"#
    );
    let config = parse_in(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    let local = local_target(&config, DEFAULT_TARGET_NAME);
    let edge = &local.edge;
    assert_eq!(edge.tls_listen, Some("127.0.0.1:8443".parse().unwrap()));
    assert_eq!(edge.header_read_timeout, Duration::from_secs(5));
    assert_eq!(edge.idle_timeout, Duration::from_secs(90));
    assert_eq!(edge.connect_timeout, Duration::from_millis(250));
    assert_eq!(edge.response_timeout, Duration::from_secs(120));
    assert_eq!(edge.max_request_body, 10 * 1024 * 1024);
    let certs = dir.path().join("certs");
    assert_eq!(
        edge.certificates,
        vec![
            Certificate {
                host: Some("shop.example.com".into()),
                cert: certs.join("a.pem"),
                key: certs.join("a.key"),
            },
            Certificate {
                host: Some("*.example.com".into()),
                cert: certs.join("b.pem"),
                key: certs.join("b.key"),
            },
            Certificate {
                host: None,
                cert: certs.join("b.pem"),
                key: certs.join("b.key"),
            },
        ]
    );

    let settings = edge.edge(local.drain_timeout);
    assert_eq!(settings.tuning.shutdown_grace, Duration::from_secs(12));
    assert_eq!(settings.tuning.idle_timeout, Duration::from_secs(90));
    assert_eq!(
        settings.tuning.response_header_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(settings.tuning.max_request_body, Some(10 * 1024 * 1024));
    assert_eq!(settings.tuning.body_idle_timeout, Duration::from_secs(7));
    assert_eq!(settings.tuning.write_timeout, Duration::from_secs(45));
    assert_eq!(settings.tuning.max_header_bytes, 32 * 1024);
    assert_eq!(settings.tuning.max_headers, 60);
    assert_eq!(settings.tuning.max_connections, 500);
    assert_eq!(settings.tuning.max_connections_per_ip, 50);
    assert_eq!(settings.tuning.h2_max_concurrent_streams, 64);
    assert_eq!(settings.tuning.h2_max_header_list_size, 16 * 1024);
    assert_eq!(settings.tuning.h2_max_resets_per_second, 20);
    let tls = settings.tls.expect("TLS is on");
    assert_eq!(tls.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(
        tls.certificates[0].hosts,
        vec!["shop.example.com".to_string()]
    );
    assert!(
        tls.certificates[2].hosts.is_empty(),
        "the default has no hosts"
    );
}

#[test]
fn edge_durations_must_be_durations_of_more_than_zero() {
    let dir = cert_folder();
    let error = edge_err(dir.path(), "idle_timeout = \"0s\"\n");
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.idle_timeout")
    );
    assert_eq!(position(&error), (Some(6), Some(16)));
    assert!(
        error.message.contains("more than zero"),
        "{}",
        error.message
    );
    assert!(
        error.hint.as_deref().unwrap_or("").contains("30s"),
        "{error}"
    );

    let error = edge_err(dir.path(), "connect_timeout = \"soon\"\n");
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.connect_timeout")
    );
    assert!(
        error.message.contains("invalid duration \"soon\""),
        "{}",
        error.message
    );
}

#[test]
fn edge_head_limits_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    for (line, key) in [
        ("max_header_size = \"512B\"\n", "max_header_size"),
        ("max_header_size = \"2MiB\"\n", "max_header_size"),
        ("max_headers = 1001\n", "max_headers"),
        ("max_headers = 0\n", "max_headers"),
        ("max_connections = 0\n", "max_connections"),
        ("body_idle_timeout = \"0s\"\n", "body_idle_timeout"),
    ] {
        let error = edge_err(dir.path(), line);
        assert_eq!(
            error.key.as_deref(),
            Some(format!("targets.local.edge.{key}").as_str()),
            "{line}: {error}"
        );
    }
}

#[test]
fn max_request_body_is_a_size_with_a_unit() {
    let dir = cert_folder();
    let error = edge_err(dir.path(), "max_request_body = 1048576\n");
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.max_request_body")
    );
    assert_eq!(position(&error), (Some(6), Some(20)));
    assert!(error.message.contains("\"1048576B\""), "{}", error.message);
    for bad in ["10MB", "1.5GiB", "0KiB", "lots"] {
        let error = edge_err(dir.path(), &format!("max_request_body = \"{bad}\"\n"));
        assert_eq!(
            error.key.as_deref(),
            Some("targets.local.edge.max_request_body"),
            "{bad}"
        );
        assert!(error.message.contains(bad), "{bad}: {}", error.message);
    }
}

#[test]
fn unknown_edge_key_lists_the_keys_and_suggests_one() {
    let dir = cert_folder();
    let error = edge_err(dir.path(), "tls_lsten = \"127.0.0.1:8443\"\n");
    assert_eq!(error.key.as_deref(), Some("targets.local.edge.tls_lsten"));
    assert!(
        error.message.contains("max_request_body"),
        "{}",
        error.message
    );
    assert_eq!(error.hint.as_deref(), Some("did you mean `tls_listen`?"));
}

#[test]
fn tls_listen_and_certificates_come_together() {
    let dir = cert_folder();
    let error = edge_err(dir.path(), "tls_listen = \"127.0.0.1:8443\"\n");
    assert_eq!(error.key.as_deref(), Some("targets.local.edge.tls_listen"));
    assert!(
        error.message.contains("no certificate"),
        "{}",
        error.message
    );
    assert!(
        error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("certificates = [")
    );

    let error = edge_err(
        dir.path(),
        "certificates = [{ cert = \"certs/a.pem\", key = \"certs/a.key\" }]\n",
    );
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.certificates")
    );
    assert!(
        error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("tls_listen = ")
    );

    let error = edge_err(
        dir.path(),
        "tls_listen = \"127.0.0.1:8080\"\ncertificates = [{ cert = \"certs/a.pem\", key = \"certs/a.key\" }]\n",
    );
    assert_eq!(error.key.as_deref(), Some("targets.local.edge.tls_listen"));
    assert!(error.message.contains("`listen`"), "{}", error.message);
}

#[test]
fn certificate_files_must_exist_and_are_named_with_their_key() {
    let dir = cert_folder();
    let table = "tls_listen = \"127.0.0.1:8443\"\ncertificates = [\n  { host = \"a.test\", cert = \"certs/a.pem\", key = \"certs/a.key\" },\n  { host = \"b.test\", cert = \"certs/missing.pem\", key = \"certs/b.key\" },\n]\n";
    let error = edge_err(dir.path(), table);
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.certificates[1].cert")
    );
    // The element on line 9 of the file.
    assert_eq!(error.line, Some(9));
    let missing = dir.path().join("certs/missing.pem");
    assert!(
        error.message.contains(&missing.display().to_string()),
        "{}",
        error.message
    );
    assert!(
        error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("relative to the config file's folder")
    );

    let error = edge_err(
        dir.path(),
        "tls_listen = \"127.0.0.1:8443\"\ncertificates = [{ cert = \"certs/a.pem\" }]\n",
    );
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.certificates[0]")
    );
    assert!(
        error.message.contains("missing required key `key`"),
        "{}",
        error.message
    );

    let error = edge_err(
        dir.path(),
        "tls_listen = \"127.0.0.1:8443\"\ncertificates = [{ cert = \"certs\", key = \"certs/a.key\" }]\n",
    );
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.certificates[0].cert")
    );
    assert!(error.message.contains("is not a file"), "{}", error.message);
}

#[test]
fn certificate_hosts_are_host_names_served_once() {
    let dir = cert_folder();
    for bad in ["https://a.test", "a.test:443", "*.*.test", "a b"] {
        let error = edge_err(
            dir.path(),
            &format!(
                "tls_listen = \"127.0.0.1:8443\"\ncertificates = [{{ host = \"{bad}\", cert = \"certs/a.pem\", key = \"certs/a.key\" }}]\n"
            ),
        );
        assert_eq!(
            error.key.as_deref(),
            Some("targets.local.edge.certificates[0].host"),
            "{bad}"
        );
        assert!(
            error
                .hint
                .as_deref()
                .unwrap_or("")
                .contains("without https://")
        );
    }
    let twice = "tls_listen = \"127.0.0.1:8443\"\ncertificates = [\n  { host = \"a.test\", cert = \"certs/a.pem\", key = \"certs/a.key\" },\n  { host = \"A.test\", cert = \"certs/b.pem\", key = \"certs/b.key\" },\n]\n";
    let error = edge_err(dir.path(), twice);
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.certificates[1]")
    );
    assert!(
        error.message.contains("a.test has two certificates"),
        "{}",
        error.message
    );

    let two_defaults = "tls_listen = \"127.0.0.1:8443\"\ncertificates = [\n  { cert = \"certs/a.pem\", key = \"certs/a.key\" },\n  { cert = \"certs/b.pem\", key = \"certs/b.key\" },\n]\n";
    let error = edge_err(dir.path(), two_defaults);
    assert!(
        error.message.contains("only one may be the default"),
        "{}",
        error.message
    );
}

#[test]
fn edge_table_belongs_to_local_targets() {
    let error = parse_err(&format!(
        "{HELLO}[targets.aws]\nkind = \"ecs\"\n[targets.aws.edge]\nidle_timeout = \"1s\"\n"
    ));
    assert_eq!(error.key.as_deref(), Some("targets.aws.edge"));
    assert!(
        error.message.contains("a key of local targets"),
        "{}",
        error.message
    );
}
