//! `${VAR}` interpolation of every string value.

use super::*;

#[test]
fn unset_variable_names_the_variable_and_the_key() {
    let error = parse_err(&format!("{HELLO}env = {{ TOKEN = \"${{API_TOKEN}}\" }}\n"));
    assert_at(&error, "services.hello.env.TOKEN", "`API_TOKEN` is not set");
    assert_eq!(position(&error), (Some(3), Some(17)));
    assert_eq!(
        error.hint().as_deref(),
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
