//! The config reference, `templates/shipit.toml`: it loads to the defaults, and shows every key.

use super::*;

fn load_template_text(text: &str) -> Config {
    Config::parse(text, &template_path(), &env(&[]), manifest_dir())
        .unwrap_or_else(|error| panic!("template should load:\n{error}"))
}

/// The config as JSON with the config's folder written as `<config dir>`, and a project id
/// derived from it as `<derived>`, so it does not depend on where the repository is checked
/// out.
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
    if config.project == derived_project(&config.state_dir, &config.path) {
        value["project"] = "<derived>".into();
    }
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
    assert_eq!(local.keep_images, DEFAULT_KEEP_IMAGES);
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
        (
            vec!["services", "hello", "hooks"],
            "[services.hello]\nport = 1\n[services.hello.hooks]\n",
        ),
        (
            vec!["services", "hello", "route"],
            "[services.hello]\nport = 1\n[services.hello.route]\n",
        ),
        (
            vec!["services", "hello", "warmup"],
            "[services.hello]\nport = 1\n[services.hello.warmup]\n",
        ),
        (vec!["versioning"], "[versioning]\n"),
        (vec!["notify"], "[notify]\n"),
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
