//! The config as written: serde structs that mirror the file's keys one for one.
//!
//! Every struct denies unknown keys, so a typo is an error rather than a silently ignored
//! setting. Values whose shape serde can check on its own (ports, durations, addresses) are
//! read into small newtypes whose messages say what was expected; rules that need more than
//! one value, or the file system, are checked later when the raw config is resolved.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use super::error::Problem;
use super::locate::KeyPath;
use super::size::ByteSize;
use crate::shift::{SHIFT_FORMS, ShiftStrategy};

/// What `expected ...` says in a duration error, and the examples in its message.
pub(crate) const DURATION_EXAMPLES: &str = r#"a duration like "100ms", "30s" or "2m""#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of shipit settings")]
pub(crate) struct RawConfig {
    pub(crate) project: Option<String>,
    pub(crate) state_dir: Option<String>,
    pub(crate) default_target: Option<String>,
    #[serde(default)]
    pub(crate) services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub(crate) targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    pub(crate) modules: BTreeMap<String, RawModule>,
    pub(crate) versioning: Option<RawVersioning>,
    pub(crate) notify: Option<RawNotify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of notification settings")]
pub(crate) struct RawNotify {
    pub(crate) webhook: Option<String>,
    pub(crate) timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of hooks: migrate, pre_switch, post_release, on_failure"
)]
pub(crate) struct RawHooks {
    pub(crate) migrate: Option<RawMigrate>,
    pub(crate) pre_switch: Option<RawHook>,
    pub(crate) post_release: Option<RawHook>,
    pub(crate) on_failure: Option<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a hook: { command = \"<shell command>\", timeout = \"5m\" }"
)]
pub(crate) struct RawHook {
    pub(crate) command: String,
    pub(crate) timeout: Option<DurationValue>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a migrate hook: { command = [\"<program>\", \"<arg>\"], timeout = \"10m\" }"
)]
pub(crate) struct RawMigrate {
    pub(crate) command: Vec<String>,
    pub(crate) timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of versioning settings")]
pub(crate) struct RawVersioning {
    pub(crate) push: Option<bool>,
    pub(crate) remote: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of module settings")]
pub(crate) struct RawModule {
    pub(crate) path: String,
    pub(crate) version_file: Option<String>,
    #[serde(default)]
    pub(crate) depends_on: Vec<String>,
    pub(crate) tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of service settings")]
pub(crate) struct RawService {
    pub(crate) context: Option<String>,
    pub(crate) dockerfile: Option<String>,
    pub(crate) port: Port,
    pub(crate) pre_build: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// A dotenv file of more environment, relative to the config's folder.
    pub(crate) env_file: Option<String>,
    /// Environment read from AWS: name → an SSM parameter's or a Secrets Manager secret's ARN.
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) health: RawHealth,
    #[serde(default)]
    pub(crate) verify: RawVerify,
    pub(crate) hooks: Option<RawHooks>,
    pub(crate) warmup: Option<RawWarmup>,
    pub(crate) route: Option<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route table: hosts = [\"<host name>\"], paths = [\"/<prefix>\"]"
)]
pub(crate) struct RawRoute {
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    #[serde(default)]
    pub(crate) paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a warm-up table: paths, requests, concurrency, max_p99, timeout"
)]
pub(crate) struct RawWarmup {
    pub(crate) paths: Option<Vec<String>>,
    pub(crate) requests: Option<u32>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) max_p99: Option<DurationValue>,
    pub(crate) timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of health check settings")]
pub(crate) struct RawHealth {
    pub(crate) path: Option<String>,
    pub(crate) interval: Option<DurationValue>,
    pub(crate) timeout: Option<DurationValue>,
    pub(crate) healthy_threshold: Option<Count>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of verify settings")]
pub(crate) struct RawVerify {
    pub(crate) version_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of target settings")]
pub(crate) struct RawTarget {
    /// Defaults to `local`; an explicit kind keeps the file readable once there are others.
    #[serde(default)]
    pub(crate) kind: RawTargetKind,
    pub(crate) listen: Option<Listen>,
    pub(crate) drain_timeout: Option<DurationValue>,
    pub(crate) stop_timeout: Option<DurationValue>,
    /// How traffic moves to a verified candidate (every kind of target).
    pub(crate) shift: Option<ShiftValue>,
    /// The largest share of 5xx answers during a bake (local).
    pub(crate) max_error_rate: Option<Fraction>,
    /// A host name whose requests reach a staged candidate (local).
    pub(crate) preview_host: Option<String>,
    /// How many images of each service to keep on the engine (local).
    pub(crate) keep_images: Option<Count>,
    // The keys of `kind = "ecs"` targets; [`ECS_KEYS`] lists them, `config/ecs.rs` checks them.
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) test_url: Option<String>,
    pub(crate) cluster: Option<String>,
    pub(crate) listener_arn: Option<String>,
    pub(crate) rule_arn: Option<String>,
    pub(crate) test_listener_arn: Option<String>,
    pub(crate) target_groups: Option<RawSlotPair>,
    pub(crate) services: Option<RawSlotPair>,
    pub(crate) desired_count: Option<Count>,
    pub(crate) repository: Option<String>,
    pub(crate) task_definition: Option<String>,
    pub(crate) cpu: Option<Count>,
    pub(crate) memory: Option<Count>,
    pub(crate) log_group: Option<String>,
    pub(crate) create_log_group: Option<bool>,
    pub(crate) execution_role_arn: Option<String>,
    pub(crate) subnets: Option<Vec<String>>,
    pub(crate) security_groups: Option<Vec<String>>,
    pub(crate) verify_timeout: Option<DurationValue>,
    pub(crate) keep_previous: Option<DurationValue>,
    pub(crate) lock_lease: Option<DurationValue>,
    pub(crate) max_task_failures: Option<Count>,
    pub(crate) cdn: Option<RawCdn>,
    /// CloudWatch alarm names watched during a bake (ecs).
    pub(crate) alarms: Option<Vec<String>>,
    /// The edge's TLS, timeouts and limits (local); `config/edge.rs` checks it.
    pub(crate) edge: Option<RawEdgeSettings>,
}

/// The target keys only a `kind = "ecs"` target takes.
pub(crate) const ECS_KEYS: &[&str] = &[
    "region",
    "endpoint",
    "url",
    "test_url",
    "cluster",
    "listener_arn",
    "rule_arn",
    "test_listener_arn",
    "target_groups",
    "services",
    "desired_count",
    "repository",
    "task_definition",
    "cpu",
    "memory",
    "log_group",
    "create_log_group",
    "execution_role_arn",
    "subnets",
    "security_groups",
    "verify_timeout",
    "keep_previous",
    "lock_lease",
    "max_task_failures",
    "cdn",
    "alarms",
];

/// The target keys only a `kind = "local"` target takes.
pub(crate) const LOCAL_KEYS: &[&str] = &[
    "listen",
    "drain_timeout",
    "stop_timeout",
    "max_error_rate",
    "preview_host",
    "keep_images",
    "edge",
];

/// One value per slot: `{ blue = "…", green = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table with a value for each slot: { blue = "…", green = "…" }"#
)]
pub(crate) struct RawSlotPair {
    pub(crate) blue: String,
    pub(crate) green: String,
}

/// `cdn = { distribution_id = "…", origins = { blue = "…", green = "…" } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of CDN settings")]
pub(crate) struct RawCdn {
    pub(crate) distribution_id: String,
    pub(crate) origins: RawSlotPair,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawTargetKind {
    #[default]
    Local,
    Ecs,
}

/// A TCP port, 1..=65535. A string of digits is taken too, so `port = "${PORT:-8080}"` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port(pub(crate) u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number from 1 to 65535")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(port) if port > 0 => Ok(Port(port)),
                    _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(port) if port > 0 => Ok(Port(port)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v.trim().parse::<i64>() {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// A count of at least 1 (`healthy_threshold`). A string of digits is taken too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count(pub(crate) u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of at least 1")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                match u32::try_from(v) {
                    Ok(n) if n > 0 => Ok(Count(n)),
                    _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                match u32::try_from(v) {
                    Ok(n) if n > 0 => Ok(Count(n)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                match v.trim().parse::<i64>() {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// A humantime duration written as a string: "100ms", "30s", "2m", "1m 30s".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXAMPLES)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                humantime::parse_duration(v.trim())
                    .map(DurationValue)
                    .map_err(|_| {
                        E::custom(format_args!(
                            "invalid duration {v:?}: expected {DURATION_EXAMPLES}"
                        ))
                    })
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A shift strategy: `"all-at-once"`, `"canary:<percent>:<bake>"`, `"linear:<percent>:<interval>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShiftValue(pub(crate) ShiftStrategy);

impl<'de> Deserialize<'de> for ShiftValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShiftVisitor;
        impl Visitor<'_> for ShiftVisitor {
            type Value = ShiftValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SHIFT_FORMS)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShiftValue, E> {
                crate::shift::parse(v).map(ShiftValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(ShiftVisitor)
    }
}

/// What `expected ...` says in a fraction error.
pub(crate) const FRACTION_EXAMPLES: &str =
    r#"a fraction from 0 to 1 like 0.01, or a percent like "1%""#;

/// A share from 0 to 1: a number (`0.01`), or a string holding one or a percent (`"1%"`),
/// so `max_error_rate = "${MAX_ERRORS:-1%}"` works.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fraction(pub(crate) f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FractionVisitor;
        impl FractionVisitor {
            fn check<E: de::Error>(v: f64, shown: &dyn fmt::Display) -> Result<Fraction, E> {
                if (0.0..=1.0).contains(&v) {
                    Ok(Fraction(v))
                } else {
                    Err(E::custom(format_args!(
                        "invalid fraction {shown}: expected {FRACTION_EXAMPLES}"
                    )))
                }
            }
        }
        impl Visitor<'_> for FractionVisitor {
            type Value = Fraction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(FRACTION_EXAMPLES)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Fraction, E> {
                Self::check(v, &v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Fraction, E> {
                Self::check(v as f64, &v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Fraction, E> {
                Self::check(v as f64, &v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fraction, E> {
                let text = v.trim();
                let parsed = match text.strip_suffix('%') {
                    Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
                    None => text.parse::<f64>(),
                };
                match parsed {
                    Ok(n) if n.is_finite() => Self::check(n, &format_args!("{v:?}")),
                    _ => Err(E::custom(format_args!(
                        "invalid fraction {v:?}: expected {FRACTION_EXAMPLES}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(FractionVisitor)
    }
}

/// The address the edge listens on: an IP address and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listen(pub(crate) SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenVisitor;
        impl Visitor<'_> for ListenVisitor {
            type Value = Listen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an IP address and port like "127.0.0.1:8080" or "[::1]:8080""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listen, E> {
                v.trim().parse().map(Listen).map_err(|_| {
                    E::custom(format_args!(
                        "invalid listen address {v:?}: expected an IP address and port like \
                         \"127.0.0.1:8080\" or \"[::1]:8080\""
                    ))
                })
            }
        }
        deserializer.deserialize_any(ListenVisitor)
    }
}

/// `[targets.<name>.edge]`: the edge's TLS, timeouts and limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of edge settings")]
pub(crate) struct RawEdgeSettings {
    pub(crate) tls_listen: Option<Listen>,
    #[serde(default)]
    pub(crate) certificates: Vec<RawCertificate>,
    pub(crate) header_read_timeout: Option<DurationValue>,
    pub(crate) idle_timeout: Option<DurationValue>,
    pub(crate) connect_timeout: Option<DurationValue>,
    pub(crate) response_timeout: Option<DurationValue>,
    pub(crate) max_request_body: Option<ByteSize>,
    pub(crate) body_idle_timeout: Option<DurationValue>,
    pub(crate) write_timeout: Option<DurationValue>,
    pub(crate) max_header_size: Option<ByteSize>,
    pub(crate) max_headers: Option<Count>,
    pub(crate) max_connections: Option<Count>,
    pub(crate) max_connections_per_ip: Option<Count>,
    pub(crate) h2_max_concurrent_streams: Option<Count>,
    pub(crate) h2_max_header_list_size: Option<ByteSize>,
    pub(crate) h2_max_resets_per_second: Option<Count>,
    pub(crate) threads: Option<Count>,
}

/// One of the edge's `certificates`: `{ host = "…", cert = "…", key = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a certificate like { host = "example.com", cert = "cert.pem", key = "key.pem" }"#
)]
pub(crate) struct RawCertificate {
    pub(crate) host: Option<String>,
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// Reads the interpolated table into the raw structs. A failure names the key path where
/// serde stopped, says what was expected, and for an unknown key lists the allowed ones.
pub(crate) fn deserialize(table: toml::Table) -> Result<RawConfig, Problem> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
        let path = KeyPath::from_serde(error.path());
        problem(path, error.inner().message())
    })
}

/// Rephrases serde's messages in the file's words ("key", not "field") and adds a hint.
fn problem(path: KeyPath, message: &str) -> Problem {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, allowed) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed_names = backticked(allowed);
        let expected = match allowed_names.as_slice() {
            [] => "this table takes no keys".to_string(),
            names => format!("allowed keys: {}", names.join(", ")),
        };
        // serde's path ends at the table holding the key; the key belongs on the path.
        let path = if path.last_key() == Some(name) {
            path
        } else {
            path.key(name)
        };
        let problem = Problem::key(path, format!("unknown key `{name}`; {expected}"));
        return match closest(name, &allowed_names) {
            Some(near) => problem.with_hint(format!("did you mean `{near}`?")),
            None => problem,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        let problem = Problem::key(path, format!("missing required key `{name}`"));
        return match name {
            "port" => {
                problem.with_hint("add `port = <the port the app listens on in its container>`")
            }
            // Only a module has a required `path`.
            "path" => {
                problem.with_hint("add `path = \"<the module's folder, relative to this file>\"`")
            }
            _ => problem,
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (name, allowed) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = backticked(allowed).join(", ");
        let problem = Problem::value(
            path.clone(),
            format!("unknown value `{name}`; expected one of: {allowed}"),
        );
        return match path.last_key() {
            Some("kind") => problem.with_hint(
                "\"local\" runs on this Docker host behind shipit's edge; \"ecs\" runs ECS services behind an ALB",
            ),
            _ => problem,
        };
    }
    // The maps of services, targets and env are tables in the file's words.
    let message = match message.strip_suffix("expected a map") {
        Some(start) => format!("{start}expected a table"),
        None => message.to_string(),
    };
    let message = message.as_str();
    let problem = Problem::value(path, message);
    if message.starts_with("invalid type") && message.ends_with("expected a string") {
        problem.with_hint("put the value in double quotes")
    } else if message.contains(DURATION_EXAMPLES) {
        problem.with_hint("write a number and a unit in quotes: ms, s, m or h")
    } else {
        problem
    }
}

/// The `name`s in a serde list such as "expected one of `a`, `b`".
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The allowed name a typo most likely meant: at most two edits away.
fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// An optional key without a default that is blank counts as absent, so that
/// `pre_build = "${PRE_BUILD:-}"` can switch it off from the environment.
pub(crate) fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}
