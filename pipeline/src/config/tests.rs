//! Loading whole configs, from text to `Config` or to the error a person would read: one
//! file per topic under `tests/`, and here the helpers they share.

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

/// The error is at `key`, and its message says `part`.
fn assert_at(error: &ConfigError, key: &str, part: &str) {
    assert_eq!(error.key.as_deref(), Some(key), "{error}");
    assert_says(error, part);
}

/// The error's message says `part`.
fn assert_says(error: &ConfigError, part: &str) {
    assert!(error.message.contains(part), "{}", error.message);
}

/// The error's hint says `part`.
fn assert_hints(error: &ConfigError, part: &str) {
    let hint = error.hint().unwrap_or_default();
    assert!(hint.contains(part), "{error} / hint: {hint}");
}

const HELLO: &str = "[services.hello]\nport = 8080\n";

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

fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("shipit.toml"), &env(&[]), dir)
}

fn local_target(config: &Config, name: &str) -> LocalTarget {
    match &config.targets[name].kind {
        TargetKind::Local(local) => local.clone(),
        other => panic!("expected a local target, got {other:?}"),
    }
}

mod ecs;
mod edge;
mod env_file;
mod errors;
mod interpolation;
mod local;
mod modules;
mod paths;
mod secrets;
mod targets;
mod template;
