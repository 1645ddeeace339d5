//! The `[targets.<name>.edge]` table of a local target.

use super::*;

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
threads = 3
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
    assert_eq!(settings.tuning.threads, 3);
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
    assert_at(&error, "targets.local.edge.idle_timeout", "more than zero");
    assert_eq!(position(&error), (Some(6), Some(16)));
    assert_hints(&error, "30s");

    let error = edge_err(dir.path(), "connect_timeout = \"soon\"\n");
    assert_at(
        &error,
        "targets.local.edge.connect_timeout",
        "invalid duration \"soon\"",
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
        ("threads = 0\n", "threads"),
        ("threads = 257\n", "threads"),
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
    assert_at(
        &error,
        "targets.local.edge.max_request_body",
        "\"1048576B\"",
    );
    assert_eq!(position(&error), (Some(6), Some(20)));
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
    assert_at(&error, "targets.local.edge.tls_lsten", "max_request_body");
    assert_eq!(error.hint().as_deref(), Some("did you mean `tls_listen`?"));
}

#[test]
fn tls_listen_and_certificates_come_together() {
    let dir = cert_folder();
    let error = edge_err(dir.path(), "tls_listen = \"127.0.0.1:8443\"\n");
    assert_at(&error, "targets.local.edge.tls_listen", "no certificate");
    assert_hints(&error, "certificates = [");

    let error = edge_err(
        dir.path(),
        "certificates = [{ cert = \"certs/a.pem\", key = \"certs/a.key\" }]\n",
    );
    assert_eq!(
        error.key.as_deref(),
        Some("targets.local.edge.certificates")
    );
    assert_hints(&error, "tls_listen = ");

    let error = edge_err(
        dir.path(),
        "tls_listen = \"127.0.0.1:8080\"\ncertificates = [{ cert = \"certs/a.pem\", key = \"certs/a.key\" }]\n",
    );
    assert_at(&error, "targets.local.edge.tls_listen", "`listen`");
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
    assert_hints(&error, "relative to the config file's folder");

    let error = edge_err(
        dir.path(),
        "tls_listen = \"127.0.0.1:8443\"\ncertificates = [{ cert = \"certs/a.pem\" }]\n",
    );
    assert_at(
        &error,
        "targets.local.edge.certificates[0]",
        "missing required key `key`",
    );

    let error = edge_err(
        dir.path(),
        "tls_listen = \"127.0.0.1:8443\"\ncertificates = [{ cert = \"certs\", key = \"certs/a.key\" }]\n",
    );
    assert_at(
        &error,
        "targets.local.edge.certificates[0].cert",
        "is not a file",
    );
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
        assert_hints(&error, "without https://");
    }
    let twice = "tls_listen = \"127.0.0.1:8443\"\ncertificates = [\n  { host = \"a.test\", cert = \"certs/a.pem\", key = \"certs/a.key\" },\n  { host = \"A.test\", cert = \"certs/b.pem\", key = \"certs/b.key\" },\n]\n";
    let error = edge_err(dir.path(), twice);
    assert_at(
        &error,
        "targets.local.edge.certificates[1]",
        "a.test has two certificates",
    );

    let two_defaults = "tls_listen = \"127.0.0.1:8443\"\ncertificates = [\n  { cert = \"certs/a.pem\", key = \"certs/a.key\" },\n  { cert = \"certs/b.pem\", key = \"certs/b.key\" },\n]\n";
    let error = edge_err(dir.path(), two_defaults);
    assert_says(&error, "only one may be the default");
}

#[test]
fn edge_table_belongs_to_local_targets() {
    let error = parse_err(&format!(
        "{HELLO}[targets.aws]\nkind = \"ecs\"\n[targets.aws.edge]\nidle_timeout = \"1s\"\n"
    ));
    assert_at(&error, "targets.aws.edge", "a key of local targets");
}
