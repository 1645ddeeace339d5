//! A throwaway shipit project per test: a config in a temp dir that releases the hello
//! example under a unique service name on a free port, and cleans up after itself.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

/// When set, a file each test project appends its service name and edge folder to (a line
/// each, tab-separated), so `tests/leftovers` can check after the run that nothing of them is
/// left on the engine, scoped to this run's own names.
pub const CENSUS_ENV: &str = "SHIPIT_TEST_CENSUS";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the hello example's static binary into its context once per test run, the same
/// way its config's pre_build does.
pub fn hello_context() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let context = repo_root().join("examples/hello");
            let target_dir = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo_root().join("target"))
                .join("hello");
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--release", "--locked", "-p", "hello"])
                .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
                .arg(&target_dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .current_dir(repo_root())
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the hello example failed");
            std::fs::create_dir_all(context.join("dist")).unwrap();
            let binary = target_dir.join("x86_64-unknown-linux-gnu/release/hello");
            let dest = context.join("dist/hello");
            // Copy through a temp name: tests in other processes may be reading it.
            let tmp = context.join(format!("dist/.hello.{}", std::process::id()));
            std::fs::copy(&binary, &tmp).unwrap();
            std::fs::rename(&tmp, &dest).unwrap();
            context
        })
        .clone()
}

/// A free port on loopback (bound, then released for the edge to take), never one this
/// test process was given before. The kernel may hand a released port straight back, so
/// two ports of one test, or two tests' edges, could otherwise get the same one (a sandbox
/// test once got "--production-port and --test-port are both 41233").
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("the kernel gave 1000 ports in a row that this test process had already used");
}

pub struct Project {
    pub dir: tempfile::TempDir,
    pub service: String,
    pub listen: SocketAddr,
    pub config: PathBuf,
}

/// Knobs of a test project's config.
pub struct Options {
    pub health_timeout: &'static str,
    pub drain_timeout: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            health_timeout: "20s",
            drain_timeout: "10s",
        }
    }
}

impl Project {
    pub fn new(name: &str) -> Project {
        Project::with(name, Options::default())
    }

    pub fn with(name: &str, options: Options) -> Project {
        let mut suffix = [0u8; 3];
        getrandom_fill(&mut suffix);
        let service = format!("{name}-{:02x}{:02x}{:02x}", suffix[0], suffix[1], suffix[2]);
        Project::named(service, options)
    }

    /// Another project (its own folder, state directory and edge port) that releases a
    /// service of the same name as this one, on the same engine.
    pub fn twin(&self) -> Project {
        Project::named(self.service.clone(), Options::default())
    }

    fn named(service: String, options: Options) -> Project {
        let context = hello_context();
        let dir = tempfile::Builder::new()
            .prefix("shipit-it-")
            .tempdir()
            .unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("shipit.toml");
        let text = format!(
            r#"
[services.{service}]
context = "{context}"
port = 8080

[services.{service}.env]
HELLO_HEALTH = "${{HELLO_HEALTH:-ok}}"
HELLO_STARTUP_MS = "${{HELLO_STARTUP_MS:-0}}"

[services.{service}.health]
path = "/healthz"
interval = "50ms"
timeout = "{health_timeout}"
healthy_threshold = 2

[services.{service}.verify]
version_path = "/version"

[targets.local]
kind = "local"
listen = "{listen}"
drain_timeout = "{drain_timeout}"
stop_timeout = "2s"
"#,
            context = context.display(),
            health_timeout = options.health_timeout,
            drain_timeout = options.drain_timeout,
        );
        std::fs::write(&config, text).unwrap();
        let project = Project {
            dir,
            service,
            listen,
            config,
        };
        count_in_census(&project.service, Some(&project.edge_dir()));
        project
    }

    /// Replaces the service's `[services.<s>.<table>]` (which must come last in the file, as
    /// the tests add them) with `lines` (TOML), or removes it.
    pub fn set_service_table(&self, table: &str, lines: Option<&str>) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let header = format!("\n[services.{}.{table}]\n", self.service);
        let kept = text.split(&header).next().unwrap().to_string();
        let text = match lines {
            Some(lines) => format!("{kept}{header}{lines}\n"),
            None => kept,
        };
        std::fs::write(&self.config, text).unwrap();
    }

    /// Adds `NAME = "value"` lines to the service's env table (values may be `${VAR:-x}`).
    pub fn add_env(&self, pairs: &[(&str, &str)]) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = "HELLO_STARTUP_MS = \"${HELLO_STARTUP_MS:-0}\"\n";
        assert!(text.contains(line), "{text}");
        let added: String = pairs
            .iter()
            .map(|(name, value)| format!("{name} = \"{value}\"\n"))
            .collect();
        std::fs::write(&self.config, text.replace(line, &format!("{line}{added}"))).unwrap();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".shipit")
    }

    pub fn edge_dir(&self) -> PathBuf {
        self.state_dir().join("edge/local")
    }

    /// The project id shipit derives for this project (no `project` key in its config).
    pub fn project_id(&self) -> String {
        shipit_pipeline::config::derived_project(&self.state_dir(), &self.config)
    }

    /// The `docker ps` filters that select this project's containers of its service.
    fn filters(&self) -> [String; 4] {
        [
            "--filter".to_string(),
            format!("label=shipit.service={}", self.service),
            "--filter".to_string(),
            format!("label=shipit.project={}", self.project_id()),
        ]
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SHIPIT);
        cmd.arg("-c").arg(&self.config).args(args);
        cmd.env_remove("SHIPIT_STATE_DIR")
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1");
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("shipit runs")
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert_success(&out, "shipit status");
        json(&out)
    }

    /// The ids of containers of this service, in any state.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq"])
            .args(self.filters())
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The ids of the images built for this service, each once.
    pub fn images(&self) -> Vec<String> {
        images_of(&self.service)
    }

    /// A build context of this project's own (the hello binary, a Dockerfile and a file
    /// `build.txt`), made the service's context: writing `build.txt` makes the next release
    /// build a new image.
    pub fn own_context(&self) -> PathBuf {
        let context = self.dir.path().join("app");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy(hello_context().join("dist/hello"), context.join("hello")).unwrap();
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY hello /hello\nCOPY build.txt /build.txt\nEXPOSE 8080\nENTRYPOINT [\"/hello\"]\n",
        )
        .unwrap();
        std::fs::write(context.join("build.txt"), "first\n").unwrap();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let hello = format!("context = \"{}\"", hello_context().display());
        assert!(text.contains(&hello), "{text}");
        let text = text.replace(&hello, &format!("context = \"{}\"", context.display()));
        std::fs::write(&self.config, text).unwrap();
        context
    }

    /// The release label of each running container of this service.
    pub fn running_releases(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "--format", "{{.Label \"shipit.release\"}}"])
            .args(self.filters())
            .output()
            .expect("docker runs");
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    pub fn edge_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.edge_dir().join("edge.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// A test removes what it made on the engine when it ends, passed or failed (this runs while
/// a failed test unwinds): its containers, its images and its edge. All carry the test's own
/// service name, so nothing of another test's is touched.
impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-s", &self.service]);
        // Whatever `down` could not remove (a test that broke the edge on purpose).
        for id in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        remove_images_of(&self.service);
        if let Some(pid) = self.edge_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Appends a test's service (and the edge folder, if it runs an edge) to the run's census
/// file, if the run keeps one ([`CENSUS_ENV`]).
pub fn count_in_census(service: &str, edge_dir: Option<&Path>) {
    use std::io::Write;
    let Some(path) = std::env::var_os(CENSUS_ENV) else {
        return;
    };
    let edge_dir = edge_dir.map_or(String::new(), |d| d.display().to_string());
    let line = format!("{service}\t{edge_dir}\n");
    // One short append per line: lines from tests running at once do not interleave.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the census file {path:?}: {e}"));
    file.write_all(line.as_bytes()).unwrap();
}

/// The ids of the images built for `service` (its `shipit.service` label), each once.
pub fn images_of(service: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["images", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=shipit.service={service}"))
        .output()
        .expect("docker runs");
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Removes the images built for a test's `service` (a name unique to the test), once its
/// containers are gone: the service's own tags (`<service>-<project>:<tag>`, and pushed ones
/// `<registry>/.../<service>:<tag>`) are untagged, which deletes an image with its last tag,
/// and an image left without any tag is deleted. Never forced: an image someone else tagged
/// or runs stays theirs.
pub fn remove_images_of(service: &str) {
    // The local tag is `<service>-<project>:<version>`; a pushed one ends in `/<service>`.
    let ours = |tag: &str| {
        let repository = tag.rsplit_once(':').map_or(tag, |(r, _)| r);
        let name = repository.rsplit('/').next().unwrap_or(repository);
        name == service || name.starts_with(&format!("{service}-"))
    };
    for id in images_of(service) {
        let out = Command::new("docker")
            .args(["image", "inspect", "--format", "{{json .RepoTags}}", &id])
            .output()
            .expect("docker runs");
        let tags: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // --no-prune: the build cache's parent layers stay. Every test builds the same
        // example app, so they share those layers, and deleting them under a build that is
        // using them as its cache fails that build ("failed to get digest").
        for tag in tags.iter().filter(|t| ours(t)) {
            let _ = Command::new("docker")
                .args(["rmi", "--no-prune", tag])
                .output();
        }
        if tags.iter().all(|t| ours(t)) {
            let _ = Command::new("docker")
                .args(["rmi", "--no-prune", &id])
                .output();
        }
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let seed = nanos ^ std::process::id().rotate_left(16);
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mixed = seed
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n.wrapping_mul(40_503));
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (mixed >> (i * 8)) as u8;
    }
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `docker args…`, which must succeed; its standard output.
pub fn docker<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    let what = format!(
        "docker {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_success(&out, &what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for `condition` to hold, checking every 20 ms, and panics with `what` after
/// `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A single GET through the edge on a fresh connection: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut client = crate::load::Connection::open(addr).await?;
    client.get(path).await
}

/// The same with `host` as the Host header.
pub async fn get_as(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut client = crate::load::Connection::open(addr).await?;
    client.get_as(host, path).await
}

impl Project {
    /// `shipit <args>` without blocking the async runtime (load runs beside it).
    pub async fn run_async(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::from(self.command(args));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.expect("shipit runs")
    }

    pub async fn release_async(&self) -> String {
        let out = self.run_async(&["release", "--json"], &[]).await;
        assert_success(&out, "shipit release");
        json(&out)["serves"].as_str().unwrap().to_string()
    }

    /// The history, newest first, as `shipit history --json` prints it.
    pub fn history(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["history", "--json", "-n", "1000"]);
        assert_success(&out, "shipit history");
        json(&out).as_array().unwrap().clone()
    }
}
