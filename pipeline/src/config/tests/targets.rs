//! Targets and services: the implicit local target, the default, picking one by name.

use super::*;

#[test]
fn config_without_targets_gets_an_implicit_local_target() {
    let config = parse(HELLO);
    assert_eq!(config.targets.len(), 1);
    let target = config.target(None).expect("the implicit target");
    assert_eq!(target.name, DEFAULT_TARGET_NAME);
    let TargetKind::Local(local) = &target.kind else {
        panic!("expected a local target, got {target:?}");
    };
    assert_eq!(local.listen, crate::config::local::default_listen());
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
    assert_hints(&error, "--target");

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
    let config = parse(&format!(
        "{HELLO}[services.api]\nport = 9000\n[services.api.route]\npaths = [\"/api\"]\n"
    ));
    let error = config.service(None).expect_err("ambiguous");
    assert_eq!(
        error.message,
        "several services are configured: `api`, `hello`"
    );
    assert_eq!(
        error.hint().as_deref(),
        Some("choose one with --service <name>")
    );
    assert_eq!(config.service(Some("api")).expect("named").port, 9000);

    let error = config.service(Some("web")).expect_err("unknown");
    assert_eq!(
        error.message,
        "no service named `web`; expected one of: `api`, `hello`"
    );
}
