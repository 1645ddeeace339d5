//! `shipit init`: detect what kind of project a folder holds and write a commented
//! `shipit.toml`, a Dockerfile (when there is none), a `.dockerignore` (when there is none)
//! and a GitHub workflow, from the handlebars templates in `templates/`.
//!
//! Nothing is overwritten without `--force`, and an existing Dockerfile or `.dockerignore` is
//! the project's own: it is kept even then. Every file is rendered before the first is
//! written, so a refusal leaves the folder as it was.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;

use crate::args::{DEFAULT_PORT, Global, ProjectKind};
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// Where the workflow goes, relative to the project folder.
pub const WORKFLOW_PATH: &str = ".github/workflows/shipit-release.yml";
/// Longest service name the config accepts.
const MAX_NAME_LEN: usize = 40;

const SHIPIT_TOML: &str = include_str!("../../../templates/shipit.toml.hbs");
const WORKFLOW: &str = include_str!("../../../templates/workflow.yml.hbs");
const DOCKERIGNORE: &str = include_str!("../../../templates/dockerignore.hbs");
const DOCKERFILE_CARGO: &str = include_str!("../../../templates/Dockerfile.cargo.hbs");
const DOCKERFILE_LEIN: &str = include_str!("../../../templates/Dockerfile.lein.hbs");
const DOCKERFILE_DEPS: &str = include_str!("../../../templates/Dockerfile.deps.hbs");
const DOCKERFILE_NODE: &str = include_str!("../../../templates/Dockerfile.node.hbs");

/// What `shipit init` was asked to do.
pub struct InitOptions<'a> {
    pub dir: Option<&'a Path>,
    pub kind: Option<ProjectKind>,
    pub name: Option<&'a str>,
    pub port: u16,
    pub no_workflow: bool,
    pub force: bool,
    pub json: bool,
}

/// The project found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub kind: ProjectKind,
    /// The package's own name (Cargo's is the binary's name too), when the manifest has one.
    pub package: Option<String>,
    pub has_dockerfile: bool,
}

impl ProjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "cargo",
            ProjectKind::Lein => "lein",
            ProjectKind::Deps => "deps",
            ProjectKind::Node => "node",
            ProjectKind::Dockerfile => "dockerfile",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "Rust (Cargo)",
            ProjectKind::Lein => "Clojure (Leiningen)",
            ProjectKind::Deps => "Clojure (deps.edn)",
            ProjectKind::Node => "Node.js (npm)",
            ProjectKind::Dockerfile => "Dockerfile",
        }
    }

    /// The manifest that marks this kind of project.
    fn manifest(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "Cargo.toml",
            ProjectKind::Lein => "project.clj",
            ProjectKind::Deps => "deps.edn",
            ProjectKind::Node => "package.json",
            ProjectKind::Dockerfile => "Dockerfile",
        }
    }

    fn dockerfile_template(self) -> Option<&'static str> {
        match self {
            ProjectKind::Cargo => Some(DOCKERFILE_CARGO),
            ProjectKind::Lein => Some(DOCKERFILE_LEIN),
            ProjectKind::Deps => Some(DOCKERFILE_DEPS),
            ProjectKind::Node => Some(DOCKERFILE_NODE),
            ProjectKind::Dockerfile => None,
        }
    }

    /// JVM services start slowly: give their first health check more time.
    fn health_timeout(self) -> &'static str {
        match self {
            ProjectKind::Lein | ProjectKind::Deps => "60s",
            _ => "30s",
        }
    }

    /// What the `.dockerignore` leaves out besides git and shipit's state.
    fn ignored(self) -> &'static [&'static str] {
        match self {
            ProjectKind::Cargo => &["target"],
            ProjectKind::Lein | ProjectKind::Deps => {
                &["target", ".cpcache", ".lein-*", ".nrepl-port"]
            }
            ProjectKind::Node => &["node_modules", "npm-debug.log"],
            ProjectKind::Dockerfile => &[],
        }
    }

    fn pre_build_example(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "cargo test --locked",
            ProjectKind::Lein => "lein test",
            ProjectKind::Deps => "clojure -X:test",
            ProjectKind::Node => "npm test",
            ProjectKind::Dockerfile => "make test",
        }
    }

    fn env_example(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "RUST_LOG = \"info\"",
            ProjectKind::Lein | ProjectKind::Deps => {
                "JAVA_TOOL_OPTIONS = \"-XX:MaxRAMPercentage=75\""
            }
            ProjectKind::Node => "NODE_OPTIONS = \"--max-old-space-size=512\"",
            ProjectKind::Dockerfile => "LOG_LEVEL = \"info\"",
        }
    }
}

/// Finds the project in `dir`: the first manifest of Cargo, Leiningen, deps.edn and npm, or
/// else a Dockerfile alone.
pub fn detect(dir: &Path) -> Option<Detected> {
    let has_dockerfile = dir.join("Dockerfile").is_file();
    let kind = [
        ProjectKind::Cargo,
        ProjectKind::Lein,
        ProjectKind::Deps,
        ProjectKind::Node,
    ]
    .into_iter()
    .find(|k| dir.join(k.manifest()).is_file())
    .or(has_dockerfile.then_some(ProjectKind::Dockerfile))?;
    Some(Detected {
        kind,
        package: package_name(dir, kind),
        has_dockerfile,
    })
}

/// The package's name from its manifest, where it has one.
fn package_name(dir: &Path, kind: ProjectKind) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(kind.manifest())).ok()?;
    match kind {
        ProjectKind::Cargo => {
            let manifest: toml::Table = text.parse().ok()?;
            Some(manifest.get("package")?.get("name")?.as_str()?.to_string())
        }
        ProjectKind::Lein => {
            // (defproject group/name "version" ...)
            let rest = &text[text.find("(defproject")? + "(defproject".len()..];
            let symbol = rest.split_whitespace().next()?;
            Some(symbol.rsplit('/').next()?.to_string())
        }
        ProjectKind::Node => {
            let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
            let name = manifest.get("name")?.as_str()?;
            // @scope/name
            Some(name.rsplit('/').next()?.to_string())
        }
        ProjectKind::Deps | ProjectKind::Dockerfile => None,
    }
}

/// A service name the config accepts: lowercase letters, digits and `-`, at most 40.
pub fn service_name(raw: &str) -> String {
    let mut name = String::new();
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "app".to_string()
    } else {
        name
    }
}

/// A file `init` writes, or leaves alone.
#[derive(Debug, Serialize)]
pub struct FileOutcome {
    /// Relative to the project folder.
    pub path: String,
    /// `created`, `overwritten` (with `--force`) or `kept` (the project's own).
    pub action: &'static str,
}

/// The `init --json` shape.
#[derive(Debug, Serialize)]
pub struct Initialized {
    pub dir: PathBuf,
    pub kind: &'static str,
    pub service: String,
    pub port: u16,
    pub files: Vec<FileOutcome>,
}

#[derive(Serialize)]
struct TemplateData<'a> {
    service: &'a str,
    kind: &'static str,
    kind_label: &'static str,
    binary: &'a str,
    port: u16,
    listen_port: u16,
    health_timeout: &'static str,
    pre_build_example: &'static str,
    env_example: &'static str,
    ignore: &'static [&'static str],
    config: &'static str,
}

fn render(template: &str, data: &TemplateData<'_>) -> Result<String, Failure> {
    let mut engine = Handlebars::new();
    engine.set_strict_mode(true);
    // These are TOML, YAML and Dockerfiles: nothing is HTML-escaped.
    engine.register_escape_fn(handlebars::no_escape);
    let mut text = engine
        .render_template(template, data)
        .map_err(|e| Failure::new(exit::UNEXPECTED, format!("cannot render a template: {e}")))?;
    // A file ends with a newline, whatever the template's last line did.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

pub fn run(_global: &Global, options: &InitOptions<'_>, printer: Printer) -> Result<(), Failure> {
    let dir = match options.dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().map_err(|e| {
            Failure::new(
                exit::UNEXPECTED,
                format!("cannot read the current folder: {e}"),
            )
        })?,
    };
    if !dir.is_dir() {
        return Err(
            Failure::new(exit::CONFIG, format!("{} is not a folder", dir.display()))
                .hint("pass the project's folder with --dir"),
        );
    }
    let detected = match (detect(&dir), options.kind) {
        (Some(found), None) => found,
        (found, Some(kind)) => Detected {
            kind,
            package: package_name(&dir, kind),
            has_dockerfile: found.is_some_and(|f| f.has_dockerfile)
                || dir.join("Dockerfile").is_file(),
        },
        (None, None) => {
            return Err(Failure::new(
                exit::CONFIG,
                format!(
                    "no project found in {}: no Cargo.toml, project.clj, deps.edn, package.json \
                     or Dockerfile",
                    dir.display()
                ),
            )
            .hint("run `shipit init` in the project's folder, or name its kind with --kind"));
        }
    };
    let folder = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let service = service_name(
        options
            .name
            .or(detected.package.as_deref())
            .unwrap_or(&folder),
    );
    if let Some(wanted) = options.name
        && wanted != service
    {
        return Err(Failure::new(
            exit::CONFIG,
            format!("invalid service name {wanted:?}: expected lowercase letters, digits and -"),
        )
        .hint(format!("try --name {service}")));
    }
    let binary = detected.package.clone().unwrap_or_else(|| service.clone());
    let data = TemplateData {
        service: &service,
        kind: detected.kind.as_str(),
        kind_label: detected.kind.label(),
        binary: &binary,
        port: options.port,
        listen_port: DEFAULT_PORT,
        health_timeout: detected.kind.health_timeout(),
        pre_build_example: detected.kind.pre_build_example(),
        env_example: detected.kind.env_example(),
        ignore: detected.kind.ignored(),
        config: "shipit.toml",
    };

    // Render everything first: a refusal or a template error writes nothing.
    let mut planned: Vec<(&str, String, bool)> = Vec::new(); // (path, text, overwritable)
    planned.push(("shipit.toml", render(SHIPIT_TOML, &data)?, true));
    match detected.kind.dockerfile_template() {
        Some(template) => planned.push(("Dockerfile", render(template, &data)?, false)),
        // Only reported: an existing file is never written.
        None if detected.has_dockerfile => planned.push(("Dockerfile", String::new(), false)),
        None => {
            return Err(Failure::new(
                exit::CONFIG,
                format!("--kind dockerfile needs a Dockerfile in {}", dir.display()),
            )
            .hint(
                "write the Dockerfile first, or pass the project's kind (cargo, lein, deps, node)",
            ));
        }
    }
    planned.push((".dockerignore", render(DOCKERIGNORE, &data)?, false));
    if !options.no_workflow {
        planned.push((WORKFLOW_PATH, render(WORKFLOW, &data)?, true));
    }

    let mut files = Vec::new();
    let mut refused = Vec::new();
    let mut writes = Vec::new();
    for (path, text, overwritable) in planned {
        let exists = dir.join(path).exists();
        let action = match (exists, overwritable, options.force) {
            (false, _, _) => "created",
            (true, false, _) => "kept",
            (true, true, true) => "overwritten",
            (true, true, false) => {
                refused.push(path);
                continue;
            }
        };
        if action != "kept" {
            writes.push((path, text));
        }
        files.push(FileOutcome {
            path: path.to_string(),
            action,
        });
    }
    if !refused.is_empty() {
        return Err(Failure::new(
            exit::CONFIG,
            format!(
                "{} already exists in {}; nothing was written",
                refused.join(" and "),
                dir.display()
            ),
        )
        .hint("pass --force to overwrite it (an existing Dockerfile and .dockerignore are always kept)"));
    }
    for (path, text) in writes {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write_failure(&target, &e))?;
        }
        std::fs::write(&target, text).map_err(|e| write_failure(&target, &e))?;
    }

    let initialized = Initialized {
        dir,
        kind: detected.kind.as_str(),
        service,
        port: options.port,
        files,
    };
    if options.json {
        printer.json(&initialized);
        return Ok(());
    }
    printer.info(&format!(
        "found a {} project: service {}",
        detected.kind.label(),
        initialized.service
    ));
    for file in &initialized.files {
        let what = match file.action {
            "kept" => "kept the existing",
            other => other,
        };
        printer.data(&format!("{what} {}", file.path));
    }
    printer.info("next: `shipit config check`, then `shipit plan` and `shipit release`");
    Ok(())
}

fn write_failure(path: &Path, e: &std::io::Error) -> Failure {
    Failure::new(
        exit::UNEXPECTED,
        format!("cannot write {}: {e}", path.display()),
    )
    .hint("check that the folder is writable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_made_valid() {
        assert_eq!(service_name("My_App.Server"), "my-app-server");
        assert_eq!(service_name("--x--"), "x");
        assert_eq!(service_name("@@@"), "app");
        assert_eq!(service_name(&"a".repeat(60)).len(), MAX_NAME_LEN);
        assert_eq!(
            service_name(&format!("{}-b", "a".repeat(39))),
            "a".repeat(39)
        );
    }

    #[test]
    fn detection_prefers_a_manifest_and_notes_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect(dir.path()), None);
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(detect(dir.path()).unwrap().kind, ProjectKind::Dockerfile);
        std::fs::write(
            dir.path().join("project.clj"),
            "(defproject acme/orders \"0.1.0\"\n  :dependencies [])\n",
        )
        .unwrap();
        let found = detect(dir.path()).unwrap();
        assert_eq!(found.kind, ProjectKind::Lein);
        assert_eq!(found.package.as_deref(), Some("orders"));
        assert!(found.has_dockerfile);
    }
}
