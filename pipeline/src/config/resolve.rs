//! The second stage: a raw config (shapes checked by serde) becomes a typed [`Config`].
//!
//! Here defaults are filled in from the `DEFAULT_*` constants, names are checked, relative
//! paths are made absolute against the config file's folder, and the rules that span
//! several values (`default_target` names a target) are enforced. The first problem found
//! is returned with its key path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env_file::{self, EnvFile};
use super::error::Problem;
use super::interpolate::is_var_name;
use super::locate::KeyPath;
use super::path::{inside, normalize};
use super::raw::{
    RawConfig, RawHealth, RawHook, RawHooks, RawModule, RawNotify, RawRoute, RawService, RawTarget,
    RawTargetKind, RawVerify, RawVersioning, RawWarmup, present,
};
use super::{
    Config, DEFAULT_DOCKERFILE, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_HEALTHY_THRESHOLD, DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MIGRATE_TIMEOUT, DEFAULT_MODULE_TAG, DEFAULT_NOTIFY_TIMEOUT, DEFAULT_STATE_DIR,
    DEFAULT_TARGET_NAME, DEFAULT_VERSION_REMOTE, DEFAULT_WARMUP_CONCURRENCY,
    DEFAULT_WARMUP_REQUESTS, DEFAULT_WARMUP_TIMEOUT, Env, HealthCheck, Hook, Hooks,
    MAX_WARMUP_CONCURRENCY, MAX_WARMUP_REQUESTS, Migrate, Module, Notify, Route, STATE_DIR_ENV,
    Service, Target, TargetKind, VERSION_FILES, Verify, Versioning, Warmup,
};

/// The longest service or target name; names end up in container names and folder names.
pub(crate) const MAX_NAME_LEN: usize = 40;

/// Where the config came from: what its relative paths and `SHIPIT_STATE_DIR` resolve against.
pub(crate) struct Origin<'a> {
    /// Absolute, normalised path of the config file.
    pub(crate) path: &'a Path,
    pub(crate) env: &'a dyn Env,
    pub(crate) cwd: &'a Path,
}

pub(crate) fn config(raw: RawConfig, origin: &Origin<'_>) -> Result<Config, Problem> {
    let root = KeyPath::root();
    let dir = origin
        .path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);

    let state_dir = match origin.env.var(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(from_env) => normalize(&origin.cwd.join(from_env)),
        None => {
            let written = raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR);
            not_empty(written, &root.key("state_dir"))?;
            normalize(&dir.join(written))
        }
    };

    let project = match raw.project.as_deref() {
        Some(written) => {
            super::project::check(written, &root.key("project"))?;
            written.to_string()
        }
        None => super::project::derived_project(&state_dir, origin.path),
    };

    let mut services = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, raw_service) in raw.services {
        let path = root.key("services").key(&name);
        check_name(&name, "service", &path)?;
        let service = service(name.clone(), raw_service, &dir, &path, &mut warnings)?;
        services.insert(name, service);
    }

    let mut targets = BTreeMap::new();
    if raw.targets.is_empty() {
        let implicit = RawTarget::default();
        targets.insert(
            DEFAULT_TARGET_NAME.to_string(),
            target(
                DEFAULT_TARGET_NAME.to_string(),
                implicit,
                &dir,
                &root.key("targets").key(DEFAULT_TARGET_NAME),
            )?,
        );
    }
    for (name, raw_target) in raw.targets {
        let path = root.key("targets").key(&name);
        check_name(&name, "target", &path)?;
        targets.insert(name.clone(), target(name, raw_target, &dir, &path)?);
    }

    // Several services on one local target share its edge: their routes must tell them apart.
    if targets
        .values()
        .any(|t: &Target| matches!(t.kind, TargetKind::Local(_)))
    {
        overlapping_routes(&services, &root)?;
    }

    let default_target = present(raw.default_target);
    if let Some(default) = &default_target
        && !targets.contains_key(default)
    {
        let names = list(targets.keys());
        return Err(Problem::value(
            root.key("default_target"),
            format!("no target named `{default}`; expected one of: {names}"),
        )
        .with_hint("set default_target to the name of a [targets.<name>] table, or remove it"));
    }

    let modules = modules(raw.modules, &dir, &root.key("modules"))?;
    let versioning = versioning(raw.versioning.unwrap_or_default(), &root.key("versioning"))?;
    let notify = match raw.notify {
        Some(raw) => notify(raw, &root.key("notify"))?,
        None => None,
    };

    Ok(Config {
        path: origin.path.to_path_buf(),
        dir,
        state_dir,
        project,
        default_target,
        services,
        targets,
        modules,
        versioning,
        notify,
        warnings,
    })
}

/// `[notify]`: an http(s) URL, or nothing (empty: no notifications).
fn notify(raw: RawNotify, path: &KeyPath) -> Result<Option<Notify>, Problem> {
    let timeout = raw.timeout.map_or(DEFAULT_NOTIFY_TIMEOUT, |d| d.0);
    not_zero(timeout, &path.key("timeout"))?;
    let Some(webhook) = present(raw.webhook) else {
        return Ok(None);
    };
    let valid = webhook.parse::<http::Uri>().ok().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    });
    if !valid {
        // The value may hold a secret: the message does not repeat it.
        return Err(Problem::value(
            path.key("webhook"),
            "expected an http:// or https:// URL".to_string(),
        )
        .with_hint("e.g. webhook = \"${SLACK_WEBHOOK:-}\": no notifications when it is unset"));
    }
    Ok(Some(Notify { webhook, timeout }))
}

/// `[versioning]`: a remote is a name git accepts (no spaces, not an option).
fn versioning(raw: RawVersioning, path: &KeyPath) -> Result<Versioning, Problem> {
    let remote = present(raw.remote).unwrap_or_else(|| DEFAULT_VERSION_REMOTE.to_string());
    let valid = !remote.starts_with('-')
        && !remote
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if !valid {
        return Err(Problem::value(
            path.key("remote"),
            format!("invalid remote {remote:?}: expected a git remote's name, such as \"origin\""),
        ));
    }
    Ok(Versioning {
        push: raw.push.unwrap_or(false),
        remote,
    })
}

/// The modules, each checked on its own, then as a set: `depends_on` names modules, no two
/// paths overlap, and the dependency graph has no cycle.
fn modules(
    raw: BTreeMap<String, RawModule>,
    dir: &Path,
    path: &KeyPath,
) -> Result<BTreeMap<String, Module>, Problem> {
    let mut modules = BTreeMap::new();
    for (name, raw_module) in raw {
        let key = path.key(&name);
        check_name(&name, "module", &key)?;
        modules.insert(name.clone(), module(name, raw_module, dir, &key)?);
    }

    for module in modules.values() {
        for (index, dependency) in module.depends_on.iter().enumerate() {
            if !modules.contains_key(dependency) {
                let others: Vec<&String> = modules.keys().filter(|n| **n != module.name).collect();
                let expected = if others.is_empty() {
                    "it is the only module".to_string()
                } else {
                    format!("expected one of: {}", list(others))
                };
                return Err(Problem::value(
                    path.key(&module.name).key("depends_on").index(index),
                    format!("no module named `{dependency}`; {expected}"),
                )
                .with_hint("depends_on lists the names of other [modules.<name>] tables"));
            }
        }
    }

    let all: Vec<&Module> = modules.values().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                return Err(Problem::value(
                    path.key(&b.name).key("path"),
                    format!(
                        "path {} overlaps the path {} of module `{}`: a commit under both \
                         could not be told apart",
                        b.path.display(),
                        a.path.display(),
                        a.name
                    ),
                )
                .with_hint("give each module its own folder, neither inside the other"));
            }
        }
    }

    if let Some(cycle) = dependency_cycle(&modules) {
        return Err(Problem::value(
            path.key(&cycle[0]).key("depends_on"),
            format!("dependency cycle: {}", cycle.join(" → ")),
        )
        .with_hint("a module cannot depend on itself, even through others: remove one of these depends_on entries"));
    }
    Ok(modules)
}

fn module(name: String, raw: RawModule, dir: &Path, path: &KeyPath) -> Result<Module, Problem> {
    let path_key = path.key("path");
    not_empty(&raw.path, &path_key)?;
    let folder = normalize(&dir.join(&raw.path));
    if !folder.is_dir() {
        return Err(Problem::value(
            path_key,
            format!(
                "module folder {} does not exist or is not a folder",
                folder.display()
            ),
        )
        .with_hint(format!(
            "path is relative to the config file's folder ({})",
            dir.display()
        )));
    }

    let version_file = match raw.version_file.as_deref() {
        Some(written) => {
            let key = path.key("version_file");
            let relative = inside(Path::new(written)).ok_or_else(|| {
                Problem::value(
                    key.clone(),
                    format!("version_file {written:?} is outside the module's folder"),
                )
                .with_hint("give the file's path relative to the module's `path`, inside it")
            })?;
            let file = folder.join(relative);
            if !file.is_file() {
                return Err(Problem::value(
                    key,
                    format!("version file {} does not exist", file.display()),
                )
                .with_hint(format!(
                    "version_file is relative to the module's folder ({}); leave it out to \
                     detect one of: {}",
                    folder.display(),
                    VERSION_FILES.join(", ")
                )));
            }
            file
        }
        None => VERSION_FILES
            .iter()
            .map(|candidate| folder.join(candidate))
            .find(|file| file.is_file())
            .ok_or_else(|| {
                Problem::key(
                    path.clone(),
                    format!(
                        "module `{name}` has no version file in {}: looked for {}",
                        folder.display(),
                        VERSION_FILES.join(", ")
                    ),
                )
                .with_hint("add one of them, or set version_file to the file holding the version")
            })?,
    };

    let tag = present(raw.tag).unwrap_or_else(|| DEFAULT_MODULE_TAG.to_string());
    if let Err(problem) = crate::version::tag::check_format(&tag) {
        return Err(Problem::value(
            path.key("tag"),
            format!("invalid tag format {tag:?}: {problem}"),
        )
        .with_hint(format!("the default is \"{DEFAULT_MODULE_TAG}\"")));
    }

    let mut depends_on: Vec<String> = Vec::new();
    for dependency in raw.depends_on {
        if !depends_on.contains(&dependency) {
            depends_on.push(dependency);
        }
    }

    Ok(Module {
        name,
        path: folder,
        version_file,
        depends_on,
        tag,
    })
}

/// The first dependency cycle found, as the names along it with the first repeated at the
/// end (`a → b → a`), searching from the modules in name order.
fn dependency_cycle(modules: &BTreeMap<String, Module>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        modules: &BTreeMap<String, Module>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name.to_string(), Mark::Visiting);
        stack.push(name.to_string());
        for dependency in modules.get(name).map_or(&[][..], |m| &m.depends_on[..]) {
            if let Some(cycle) = visit(dependency, modules, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(name.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    modules
        .keys()
        .find_map(|name| visit(name, modules, &mut marks, &mut Vec::new()))
}

fn service(
    name: String,
    raw: RawService,
    dir: &Path,
    path: &KeyPath,
    warnings: &mut Vec<String>,
) -> Result<Service, Problem> {
    let context_key = path.key("context");
    let written = raw.context.as_deref().unwrap_or(".");
    not_empty(written, &context_key)?;
    let context = normalize(&dir.join(written));
    match std::fs::metadata(&context) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Problem::value(
                context_key,
                format!("build context {} is not a folder", context.display()),
            )
            .with_hint("context is the folder sent to the Docker build, relative to this file"));
        }
        Err(error) => {
            return Err(Problem::value(
                context_key,
                format!(
                    "build context {} cannot be read: {error}",
                    context.display()
                ),
            )
            .with_hint(format!(
                "context is relative to the config file's folder ({})",
                dir.display()
            )));
        }
    }

    let dockerfile_key = path.key("dockerfile");
    let written = raw.dockerfile.as_deref().unwrap_or(DEFAULT_DOCKERFILE);
    not_empty(written, &dockerfile_key)?;
    let dockerfile = inside(Path::new(written)).ok_or_else(|| {
        Problem::value(
            dockerfile_key,
            format!("dockerfile {written:?} is outside the build context"),
        )
        .with_hint("give the Dockerfile's path relative to `context`, inside it")
    })?;

    for env_name in raw.env.keys() {
        if !is_var_name(env_name) {
            return Err(Problem::key(
                path.key("env").key(env_name),
                format!(
                    "invalid environment variable name {env_name:?}: expected letters, digits \
                     and _, not starting with a digit"
                ),
            ));
        }
    }

    let mut env = raw.env;
    let env_file = match present(raw.env_file) {
        Some(written) => Some(env_file(&written, dir, &mut env, path, warnings)?),
        None => None,
    };
    let mut secrets = BTreeMap::new();
    for (secret_name, arn) in raw.secrets {
        let key = path.key("secrets").key(&secret_name);
        if !is_var_name(&secret_name) || crate::container_spec::is_reserved_env(&secret_name) {
            return Err(Problem::key(
                key,
                format!(
                    "invalid secret name {secret_name:?}: expected an environment variable name                      (letters, digits and _, not starting with a digit) that shipit does not set                      itself (PORT, SHIPIT_*)"
                ),
            ));
        }
        if env.contains_key(&secret_name) {
            return Err(Problem::key(
                key,
                format!("{secret_name} is set in both env (or env_file) and secrets"),
            )
            .with_hint("a variable comes from one place: remove it from one of them"));
        }
        let parsed = crate::secret::SecretArn::parse(&arn).map_err(|problem| {
            Problem::value(key.clone(), format!("invalid secret ARN {arn:?}: {problem}")).with_hint(
                "give the ARN of an SSM parameter (arn:aws:ssm:<region>:<account>:parameter/<name>)                  or of a Secrets Manager secret (arn:aws:secretsmanager:<region>:<account>:secret:<name>)",
            )
        })?;
        secrets.insert(secret_name, parsed);
    }

    Ok(Service {
        name,
        context,
        dockerfile,
        port: raw.port.0,
        env,
        env_file,
        secrets,
        pre_build: present(raw.pre_build),
        health: health(raw.health, &path.key("health"))?,
        verify: verify(raw.verify, &path.key("verify"))?,
        hooks: hooks(raw.hooks.unwrap_or_default(), &path.key("hooks"))?,
        route: route(raw.route.unwrap_or_default(), &path.key("route"))?,
        warmup: raw
            .warmup
            .map(|w| warmup(w, &path.key("warmup")))
            .transpose()?,
    })
}

/// `[services.<s>.route]`: host names (lowercased) and path prefixes (normalized as the edge
/// does: no trailing `/`, duplicates dropped, `/` meaning any path).
fn route(raw: RawRoute, path: &KeyPath) -> Result<Route, Problem> {
    let mut hosts: Vec<String> = Vec::new();
    for (n, host) in raw.hosts.iter().enumerate() {
        let lower = host.to_ascii_lowercase();
        let valid = !lower.is_empty()
            && lower.len() <= 253
            && lower.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(Problem::value(
                path.key("hosts").index(n),
                format!(
                    "expected a host name like \"shop.example.com\" (no scheme, port or path), got {host:?}"
                ),
            ));
        }
        if !hosts.contains(&lower) {
            hosts.push(lower);
        }
    }
    let paths = shipit_edge::route::normalize_paths(&raw.paths).map_err(|why| {
        let n = raw
            .paths
            .iter()
            .position(|p| shipit_edge::route::normalize_paths(std::slice::from_ref(p)).is_err())
            .unwrap_or(0);
        Problem::value(path.key("paths").index(n), why).with_hint(
            "a prefix matches whole segments: \"/api\" matches /api and /api/x, not /apix",
        )
    })?;
    Ok(Route { hosts, paths })
}

/// Two services that could tie on a local target's edge: neither would win their requests.
fn overlapping_routes(services: &BTreeMap<String, Service>, root: &KeyPath) -> Result<(), Problem> {
    let listed: Vec<&Service> = services.values().collect();
    for (i, a) in listed.iter().enumerate() {
        for b in &listed[i + 1..] {
            if let Some((host, path)) = a.route.tie(&b.route) {
                let hosts = if host == "*" {
                    "any host".to_string()
                } else {
                    format!("host {host}")
                };
                return Err(Problem::value(
                    root.key("services").key(&b.name).key("route"),
                    format!(
                        "services `{}` and `{}` overlap on a local target's edge: both answer \
                         {hosts} under {path}, and neither would win",
                        a.name, b.name
                    ),
                )
                .with_hint(format!(
                    "give each service its own [services.<name>.route] hosts or paths, e.g. \
                     hosts = [\"{}.example.com\"] or paths = [\"/{}\"]",
                    b.name, b.name
                )));
            }
        }
    }
    Ok(())
}

/// `[services.<s>.warmup]`: at least one request, paths that are paths, bounded counts.
fn warmup(raw: RawWarmup, path: &KeyPath) -> Result<Warmup, Problem> {
    let paths = raw.paths.unwrap_or_else(|| vec!["/".to_string()]);
    if paths.is_empty() {
        return Err(Problem::value(
            path.key("paths"),
            "expected at least one path, e.g. [\"/\"], got an empty list",
        )
        .with_hint("leave `paths` out to warm up \"/\""));
    }
    for (n, p) in paths.iter().enumerate() {
        let valid = p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok();
        if !valid {
            return Err(Problem::value(
                path.key("paths").index(n),
                format!(
                    "expected a path starting with /, like \"/\" or \"/search?q=x\", got {p:?}"
                ),
            ));
        }
    }
    let requests = raw.requests.unwrap_or(DEFAULT_WARMUP_REQUESTS);
    if requests == 0 || requests > MAX_WARMUP_REQUESTS {
        return Err(Problem::value(
            path.key("requests"),
            format!("expected 1 to {MAX_WARMUP_REQUESTS} requests, got {requests}"),
        ));
    }
    let concurrency = raw.concurrency.unwrap_or(DEFAULT_WARMUP_CONCURRENCY);
    if concurrency == 0 || concurrency > MAX_WARMUP_CONCURRENCY {
        return Err(Problem::value(
            path.key("concurrency"),
            format!("expected 1 to {MAX_WARMUP_CONCURRENCY}, got {concurrency}"),
        ));
    }
    let timeout = raw.timeout.map_or(DEFAULT_WARMUP_TIMEOUT, |d| d.0);
    not_zero(timeout, &path.key("timeout"))?;
    let max_p99 = raw.max_p99.map(|d| d.0);
    if let Some(max) = max_p99 {
        not_zero(max, &path.key("max_p99"))?;
    }
    Ok(Warmup {
        paths,
        requests,
        concurrency: concurrency.min(requests),
        max_p99,
        timeout,
    })
}

/// `[services.<s>.hooks]`: each a command that is not blank, with a timeout above zero.
fn hooks(raw: RawHooks, path: &KeyPath) -> Result<Hooks, Problem> {
    let hook = |raw: Option<RawHook>, key: &str| -> Result<Option<Hook>, Problem> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let path = path.key(key);
        let Some(command) = present(Some(raw.command)) else {
            return Err(Problem::value(
                path.key("command"),
                "expected a shell command, got an empty string".to_string(),
            )
            .with_hint(format!("remove the {key} hook, or give it a command")));
        };
        let timeout = raw.timeout.map_or(DEFAULT_HOOK_TIMEOUT, |d| d.0);
        not_zero(timeout, &path.key("timeout"))?;
        Ok(Some(Hook { command, timeout }))
    };
    let migrate = match raw.migrate {
        None => None,
        Some(raw) => {
            let path = path.key("migrate");
            if raw.command.is_empty() || raw.command[0].trim().is_empty() {
                return Err(Problem::value(
                    path.key("command"),
                    "expected the container's command as a list, e.g. [\"./manage\", \"migrate\"], got an empty one".to_string(),
                )
                .with_hint("remove the migrate hook, or give it a command"));
            }
            let timeout = raw.timeout.map_or(DEFAULT_MIGRATE_TIMEOUT, |d| d.0);
            not_zero(timeout, &path.key("timeout"))?;
            Some(Migrate {
                command: raw.command,
                timeout,
            })
        }
    };
    Ok(Hooks {
        migrate,
        pre_switch: hook(raw.pre_switch, "pre_switch")?,
        post_release: hook(raw.post_release, "post_release")?,
        on_failure: hook(raw.on_failure, "on_failure")?,
    })
}

/// Reads the service's `env_file` (`written`, relative to `dir`) into `env`. A name the `env`
/// table sets too is an error: one place decides each value. No value of the file is ever in
/// a message.
fn env_file(
    written: &str,
    dir: &Path,
    env: &mut BTreeMap<String, String>,
    service: &KeyPath,
    warnings: &mut Vec<String>,
) -> Result<EnvFile, Problem> {
    let key = service.key("env_file");
    let file = normalize(&dir.join(written));
    let text = std::fs::read_to_string(&file).map_err(|error| {
        Problem::value(
            key.clone(),
            format!("cannot read the env file {}: {error}", file.display()),
        )
        .with_hint(format!(
            "env_file is a dotenv file (NAME=value lines), relative to the config file's \
             folder ({})",
            dir.display()
        ))
    })?;
    let entries = env_file::parse(&text).map_err(|e| {
        Problem::value(
            key.clone(),
            format!("{}:{}: {}", file.display(), e.line, e.message),
        )
        .with_hint(
            "each line is NAME=value, `export NAME=value`, a # comment or blank; quote a \
                 value with ' (as written) or \" (with \\n, \\t, \\\" escapes)",
        )
    })?;
    if let Ok(Some(warning)) = env_file::open_to_others(&file) {
        warnings.push(warning);
    }
    let mut keys = Vec::with_capacity(entries.len());
    for entry in entries {
        if env.contains_key(&entry.name) {
            return Err(Problem::key(
                service.key("env").key(&entry.name),
                format!(
                    "{} is set both in the env table and in the env file {} (line {})",
                    entry.name,
                    file.display(),
                    entry.line
                ),
            )
            .with_hint("set each variable in one place"));
        }
        keys.push(entry.name.clone());
        env.insert(entry.name, entry.value);
    }
    Ok(EnvFile { path: file, keys })
}

fn health(raw: RawHealth, path: &KeyPath) -> Result<HealthCheck, Problem> {
    let health_path = raw.path.unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
    url_path(&health_path, &path.key("path"))?;
    let interval = raw.interval.map_or(DEFAULT_HEALTH_INTERVAL, |d| d.0);
    not_zero(interval, &path.key("interval"))?;
    let timeout = raw.timeout.map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0);
    not_zero(timeout, &path.key("timeout"))?;
    Ok(HealthCheck {
        path: health_path,
        interval,
        timeout,
        healthy_threshold: raw
            .healthy_threshold
            .map_or(DEFAULT_HEALTHY_THRESHOLD, |n| n.0),
    })
}

fn verify(raw: RawVerify, path: &KeyPath) -> Result<Verify, Problem> {
    let version_path = present(raw.version_path);
    if let Some(version_path) = &version_path {
        url_path(version_path, &path.key("version_path"))?;
    }
    Ok(Verify { version_path })
}

fn target(name: String, raw: RawTarget, dir: &Path, path: &KeyPath) -> Result<Target, Problem> {
    if raw.kind == RawTargetKind::Local {
        super::ecs::refuse_ecs_keys(&raw, path)?;
    }
    let kind = match raw.kind {
        RawTargetKind::Ecs => TargetKind::Ecs(Box::new(super::ecs::target(raw, dir, path)?)),
        RawTargetKind::Local => TargetKind::Local(super::local::target(raw, dir, path)?),
    };
    Ok(Target { name, kind })
}

/// Service, target and module names: `[a-z0-9][a-z0-9-]*`, at most [`MAX_NAME_LEN`] characters.
fn check_name(name: &str, noun: &str, path: &KeyPath) -> Result<(), Problem> {
    let valid = name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        return Ok(());
    }
    Err(Problem::key(
        path.clone(),
        format!(
            "invalid {noun} name {name:?}: expected lowercase letters, digits and -, starting \
             with a letter or digit, at most {MAX_NAME_LEN} characters"
        ),
    )
    .with_hint(format!(
        "{noun} names become parts of container and folder names"
    )))
}

fn url_path(value: &str, path: &KeyPath) -> Result<(), Problem> {
    if value.starts_with('/') {
        return Ok(());
    }
    Err(Problem::value(
        path.clone(),
        format!("invalid path {value:?}: expected it to start with /"),
    )
    .with_hint(format!(
        "write it as \"/{}\"",
        value.trim_start_matches('/')
    )))
}

fn not_zero(duration: Duration, path: &KeyPath) -> Result<(), Problem> {
    if duration.is_zero() {
        return Err(Problem::value(
            path.clone(),
            "invalid duration 0: expected more than zero",
        ));
    }
    Ok(())
}

fn not_empty(value: &str, path: &KeyPath) -> Result<(), Problem> {
    if value.is_empty() {
        return Err(Problem::value(
            path.clone(),
            "empty path: expected a path relative to the config file's folder",
        )
        .with_hint("write \".\" for the config file's own folder"));
    }
    Ok(())
}

/// `names` as "`a`, `b`".
pub(crate) fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_words_of_at_most_40_characters() {
        let path = KeyPath::root();
        assert!(check_name("hello-2", "service", &path).is_ok());
        assert!(check_name("9lives", "service", &path).is_ok());
        assert!(check_name(&"a".repeat(40), "service", &path).is_ok());
        assert!(check_name(&"a".repeat(41), "service", &path).is_err());
        assert!(check_name("Hello", "service", &path).is_err());
        assert!(check_name("-x", "service", &path).is_err());
        assert!(check_name("a_b", "service", &path).is_err());
        assert!(check_name("", "service", &path).is_err());
    }
}
