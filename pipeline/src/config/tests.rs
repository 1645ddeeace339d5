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
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
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
    let TargetKind::Local(local) = &target.kind;
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
            assert!(
                table.contains_key(&key),
                "template does not show {path:?}.{key}"
            );
        }
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
    let error = parse_err("[targets.live]\nkind = \"ecs\"\n");
    assert_eq!(error.key.as_deref(), Some("targets.live.kind"));
    assert_eq!(error.message, "unknown value `ecs`; expected one of: local");
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
    let TargetKind::Local(local) = &config.targets["edge"].kind;
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
    let TargetKind::Local(local) = &target.kind;
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
