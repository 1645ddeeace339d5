//! `shipit sandbox`: a local AWS for the ecs target, in one command.
//!
//! [`up`] starts an AWS API emulator on 127.0.0.1 (the moto server, from a venv the sandbox
//! keeps under `<state_dir>/sandbox/venv`; or the endpoint given with `--endpoint`), the
//! sandbox's agent in front of it, and a Docker registry for the images. It then creates
//! what an ecs target needs through the SDK ([`infra`]), records it all in
//! `<state_dir>/sandbox/sandbox.json`, and writes a `[targets.sandbox]` block into the
//! config ([`block`]) whose `endpoint` key sends every AWS call of that target to the agent.
//! [`down`] stops what `up` started and takes the block out; [`status`] says what runs.
//!
//! The agent ([`agent`], `shipit sandbox agent`) is the ECS agent the emulator lacks: it runs
//! each service's tasks as containers on the local engine and registers them in their
//! target groups (`runner`), and its endpoint passes every call on to the emulator but
//! answers the task reads from what really runs (`api`).
//!
//! ```text
//! <state>/sandbox/sandbox.json   the record: endpoint, processes, resources
//! <state>/sandbox/sandbox.lock   held by one up or down at a time
//! <state>/sandbox/venv/          the moto server's venv (kept by down: a cache)
//! <state>/sandbox/moto.log       the emulator's output
//! <state>/sandbox/agent.log      the agent's output
//! <state>/sandbox/registry/      the registry's images, and registry.yml, registry.log
//! ```
//!
//! Everything listens on 127.0.0.1 only.

mod api;
pub mod block;
mod emulator;
pub mod infra;
mod plane;
mod process;
mod runner;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use emulator::MOTO_REQUIREMENT;
pub use infra::Infra;
pub use process::Process;

use crate::aws::Clients;
use crate::config::Config;
use crate::state_dir::{create_private_dir, replace_private_file};

/// The sandbox's target in the config, and the prefix of its resources' names.
pub const TARGET: &str = "sandbox";
/// The region of the sandbox's resources.
pub const REGION: &str = "us-east-1";
pub const DEFAULT_EMULATOR_PORT: u16 = 4566;
pub const DEFAULT_REGISTRY_PORT: u16 = 5100;
/// The local ports of the load balancer's production and test listeners.
pub const DEFAULT_PRODUCTION_PORT: u16 = 8090;
pub const DEFAULT_TEST_PORT: u16 = 8091;
/// The record's format; a newer one is refused rather than misread.
const FORMAT: u32 = 1;
const RECORD_FILE: &str = "sandbox.json";
const LOCK_FILE: &str = "sandbox.lock";
/// How long `up` and `down` wait for another one on the same folder.
const LOCK_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("127.0.0.1:{port} is in use, so {what} cannot listen there: {source}")]
    PortInUse {
        port: u16,
        what: String,
        flag: String,
        source: std::io::Error,
    },
    #[error("cannot start {what} ({}): {source}", program.display())]
    Spawn {
        what: String,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} exited as it started; the end of {}:\n{tail}", log.display())]
    Died {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} did not listen on 127.0.0.1:{port} within {}s; the end of {}:\n{tail}", waited.as_secs(), log.display())]
    NotListening {
        what: String,
        port: u16,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} failed ({status}):\n{output}")]
    Install {
        what: String,
        status: String,
        output: String,
        hint: String,
    },
    #[error("not found: {what}")]
    Missing { what: String, hint: String },
    #[error("the emulator refused {call}: {message}")]
    Aws { call: String, message: String },
    #[error("{}: {message}", path.display())]
    Config {
        path: PathBuf,
        message: String,
        hint: String,
    },
    #[error("{}: {message}", path.display())]
    Record { path: PathBuf, message: String },
    #[error("another `shipit sandbox up` or `down` has held {} for {}s", path.display(), waited.as_secs())]
    Busy { path: PathBuf, waited: Duration },
    #[error("{what} (pid {pid}) did not stop after SIGTERM and SIGKILL")]
    Stop { what: String, pid: u32 },
    #[error("the Docker engine: {0}")]
    Docker(String),
    #[error("interrupted: what `sandbox up` had started is stopped again")]
    Interrupted,
    #[error("{0}")]
    LoadBalancer(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            SandboxError::PortInUse { flag, port, .. } => Some(format!(
                "stop what listens on port {port} (`ss -ltnp 'sport = :{port}'` names it), or \
                 pick another port with {flag}"
            )),
            SandboxError::Install { hint, .. }
            | SandboxError::Missing { hint, .. }
            | SandboxError::Config { hint, .. } => Some(hint.clone()),
            SandboxError::Aws { .. } => Some(
                "check that the endpoint is an AWS emulator that has EC2, ELBv2 and ECS (the \
                 moto server has them; LocalStack's free edition has not)"
                    .into(),
            ),
            SandboxError::Record { path, .. } => Some(format!(
                "stop what it names by hand if it still runs, then remove {}",
                path.display()
            )),
            SandboxError::Busy { .. } => Some("wait for it to finish, then try again".into()),
            _ => None,
        }
    }

    /// Whether the error is the user's input (a config or flag to change) rather than the
    /// machine's.
    pub fn is_usage(&self) -> bool {
        matches!(self, SandboxError::Config { .. } | SandboxError::Usage(_))
    }
}

/// What `sandbox up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// An emulator that already runs, instead of starting the moto server.
    pub endpoint: Option<String>,
    pub emulator_port: u16,
    pub registry_port: u16,
    pub production_port: u16,
    pub test_port: u16,
    /// A moto server to run, instead of the one in the sandbox's venv.
    pub moto_server: Option<PathBuf>,
    /// Print the target block instead of writing it into the config.
    pub print: bool,
    /// The program that runs the agent (`shipit`, with `sandbox agent`).
    pub agent_program: PathBuf,
}

/// What runs, as recorded by `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    pub started_at: String,
    /// Where the AWS calls go.
    pub endpoint: String,
    /// The sandbox's id: a hash of its folder, in its containers' names and labels.
    pub id: String,
    /// Where the agent passes the calls on to: the emulator's own address.
    pub upstream: String,
    /// The moto server the sandbox started; `None`: the endpoint was given (`--endpoint`).
    pub emulator: Option<Process>,
    /// The agent, listening on `endpoint`.
    pub agent: Process,
    pub registry: Process,
    /// `127.0.0.1:<port>`.
    pub registry_address: String,
    /// Where the load balancer's production listener serves: `http://127.0.0.1:<port>/`.
    pub production_url: String,
    /// Where its test listener serves.
    pub test_url: String,
    pub infra: Infra,
    /// The config file the target block was written into; `None` with `--print`.
    pub config: Option<PathBuf>,
}

impl Record {
    /// The `[targets.sandbox]` block of this sandbox, its images named `image`.
    pub fn block(&self, image: &str) -> String {
        block::text(
            TARGET,
            &self.endpoint,
            (&self.production_url, &self.test_url),
            &self.infra,
            &self.repository(image),
        )
    }

    /// The ports of 127.0.0.1 the sandbox listens on: its endpoint, registry and listeners.
    fn ports(&self) -> Vec<u16> {
        [
            &self.endpoint,
            &self.registry_address,
            &self.production_url,
            &self.test_url,
        ]
        .iter()
        .filter_map(|address| {
            let rest = address.trim_end_matches('/');
            rest.rsplit(':').next()?.parse().ok()
        })
        .collect()
    }

    /// Where the images of `service` are pushed.
    pub fn repository(&self, service: &str) -> String {
        format!("{}/{service}", self.registry_address)
    }

    /// The problems of a recorded sandbox: each of its processes that no longer runs.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(emulator) = &self.emulator
            && !emulator.alive()
        {
            problems.push(format!(
                "the AWS emulator (pid {}) is not running; its log: {}",
                emulator.pid,
                emulator.log.display()
            ));
        }
        if !self.agent.alive() {
            problems.push(format!(
                "the sandbox's agent (pid {}) is not running; its log: {}",
                self.agent.pid,
                self.agent.log.display()
            ));
        }
        if !self.registry.alive() {
            problems.push(format!(
                "the image registry (pid {}) is not running; its log: {}",
                self.registry.pid,
                self.registry.log.display()
            ));
        }
        problems
    }
}

/// The sandbox of one state directory, as `status` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `running`, `broken` (a process of it died) or `absent`.
    pub state: &'static str,
    pub running: bool,
    pub endpoint: Option<String>,
    pub registry: Option<String>,
    pub production_url: Option<String>,
    pub test_url: Option<String>,
    pub region: &'static str,
    /// `[targets.<target>]` in the config.
    pub target: &'static str,
    pub problems: Vec<String>,
    pub record: Option<Record>,
}

/// How `up` ended.
#[derive(Debug, Clone, Serialize)]
pub struct Up {
    /// `started`, or `found` when a running sandbox was there already.
    pub outcome: &'static str,
    pub status: Status,
    /// The `[targets.sandbox]` block (written into the config unless `--print`).
    pub block: String,
}

/// The sandbox's folder for `config`.
pub fn dir(config: &Config) -> PathBuf {
    config.state_dir.join("sandbox")
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join(RECORD_FILE)
}

fn read_record(dir: &Path) -> Result<Option<Record>, SandboxError> {
    let path = record_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SandboxError::Io {
                action: format!("read {}", path.display()),
                source,
            });
        }
    };
    let unreadable = |e: serde_json::Error| SandboxError::Record {
        path: path.clone(),
        message: format!("not a sandbox record this shipit can read: {e}"),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(unreadable)?;
    // The format first: a newer shipit's record is refused as such, whatever else changed.
    if let Some(format) = value.get("format").and_then(serde_json::Value::as_u64)
        && format != u64::from(FORMAT)
    {
        return Err(SandboxError::Record {
            path,
            message: format!(
                "written in format {format} by another shipit; this one reads {FORMAT}"
            ),
        });
    }
    let record: Record = serde_json::from_value(value).map_err(unreadable)?;
    Ok(Some(record))
}

fn write_record(dir: &Path, record: &Record) -> Result<(), SandboxError> {
    let path = record_path(dir);
    replace_private_file(&path, |out| {
        serde_json::to_writer_pretty(&mut *out, record)?;
        std::io::Write::write_all(out, b"\n")
    })
    .map_err(|source| SandboxError::Io {
        action: format!("write {}", path.display()),
        source,
    })
}

/// Holds the sandbox folder's lock, waiting up to [`LOCK_WAIT`] for another up or down.
async fn lock(dir: &Path) -> Result<Flock<File>, SandboxError> {
    create_private_dir(dir).map_err(|source| SandboxError::Io {
        action: format!("create {}", dir.display()),
        source,
    })?;
    let path = dir.join(LOCK_FILE);
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SandboxError::Io {
            action: format!("open {}", path.display()),
            source,
        })?;
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK)) if tokio::time::Instant::now() < deadline => {
                file = back;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(SandboxError::Busy {
                    path,
                    waited: LOCK_WAIT,
                });
            }
            Err((_, errno)) => {
                return Err(SandboxError::Io {
                    action: format!("lock {}", path.display()),
                    source: errno.into(),
                });
            }
        }
    }
}

/// What `status` says of `record`.
fn status_of(record: Option<Record>) -> Status {
    let (state, problems) = match &record {
        None => ("absent", Vec::new()),
        Some(r) => {
            let problems = r.problems();
            (
                if problems.is_empty() {
                    "running"
                } else {
                    "broken"
                },
                problems,
            )
        }
    };
    Status {
        state,
        running: state == "running",
        endpoint: record.as_ref().map(|r| r.endpoint.clone()),
        registry: record.as_ref().map(|r| r.registry_address.clone()),
        production_url: record.as_ref().map(|r| r.production_url.clone()),
        test_url: record.as_ref().map(|r| r.test_url.clone()),
        region: REGION,
        target: TARGET,
        problems,
        record,
    }
}

/// The sandbox of `config`'s state directory.
pub fn status(config: &Config) -> Result<Status, SandboxError> {
    Ok(status_of(read_record(&dir(config))?))
}

/// The clients of the sandbox's endpoint.
async fn clients(endpoint: &str) -> Clients {
    Clients::new(&crate::aws::sdk_config_for(REGION, Some(endpoint)).await)
}

/// The name the sandbox's images go under: the config's first service, else its project.
fn image_name(config: &Config) -> String {
    config
        .services
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| config.project.clone())
}

/// The health check path of the target groups: the first service's.
fn health_path(config: &Config) -> String {
    config.services.values().next().map_or_else(
        || crate::config::DEFAULT_HEALTH_PATH.to_string(),
        |s| s.health.path.clone(),
    )
}

/// Starts the sandbox of `config`'s state directory, or finds the one that runs. `progress`
/// is told each step.
pub async fn up(
    config: &Config,
    options: &UpOptions,
    progress: &dyn Fn(&str),
) -> Result<Up, SandboxError> {
    let dir = dir(config);
    let _lock = lock(&dir).await?;
    let written_to = (!options.print).then(|| config.path.clone());
    // A config `up` could not write stops it before anything starts.
    if let Some(path) = &written_to {
        block::check(path, TARGET)?;
    }

    if let Some(record) = read_record(&dir)? {
        if record.problems().is_empty() {
            progress(&format!(
                "found the running sandbox: endpoint {}, registry {}",
                record.endpoint, record.registry_address
            ));
            let asked = (
                format!("http://127.0.0.1:{}", options.emulator_port),
                format!("http://127.0.0.1:{}/", options.production_port),
                format!("http://127.0.0.1:{}", options.test_port),
                format!("127.0.0.1:{}", options.registry_port),
            );
            let running = (
                record.endpoint.clone(),
                record.production_url.clone(),
                record.test_url.clone(),
                record.registry_address.clone(),
            );
            if options.endpoint.is_none() && asked != running {
                progress(
                    "the running sandbox keeps its ports; `shipit sandbox down`, then `up`, to \
                     move it",
                );
            }
            // Its resources are found again (and made again if someone deleted them).
            let infra = infra::ensure(
                &clients(&record.endpoint).await,
                REGION,
                &record.infra.cluster,
                &health_path(config),
                progress,
            )
            .await?;
            let record = Record {
                infra,
                config: written_to.clone().or(record.config.clone()),
                ..record
            };
            let block = record.block(&image_name(config));
            if let Some(path) = &written_to {
                block::write(path, TARGET, &block)?;
            }
            write_record(&dir, &record)?;
            return Ok(Up {
                outcome: "found",
                status: status_of(Some(record)),
                block,
            });
        }
        for problem in record.problems() {
            progress(&format!("{problem}: starting the sandbox again"));
        }
        stop_processes(&record)?;
        // The ports the stopped processes held are checked again below; give the kernel a
        // moment to let go of them (their sockets close as the processes end).
        for port in record.ports() {
            process::wait_port_free(port, std::time::Duration::from_secs(5));
        }
        remove_record(&dir)?;
    }

    // Every port is checked before anything starts, so a busy one stops nothing halfway.
    let ports = [
        (options.emulator_port, "--emulator-port"),
        (options.registry_port, "--registry-port"),
        (options.production_port, "--production-port"),
        (options.test_port, "--test-port"),
    ];
    for (i, (port, flag)) in ports.iter().enumerate() {
        if let Some((_, other)) = ports[i + 1..].iter().find(|(p, _)| p == port) {
            return Err(SandboxError::Usage(format!(
                "{flag} and {other} are both {port}: the sandbox needs four different ports"
            )));
        }
    }
    process::check_port_free(
        options.emulator_port,
        "the sandbox's AWS endpoint",
        "--emulator-port",
    )?;
    process::check_port_free(
        options.registry_port,
        "the image registry",
        "--registry-port",
    )?;
    process::check_port_free(
        options.production_port,
        "the load balancer's production listener",
        "--production-port",
    )?;
    process::check_port_free(
        options.test_port,
        "the load balancer's test listener",
        "--test-port",
    )?;
    let upstream_given = match &options.endpoint {
        Some(url) => Some(upstream_of(url)?),
        None => None,
    };
    let registry_program = emulator::registry_program()?;
    let moto = match &options.endpoint {
        Some(_) => None,
        None => Some(emulator::moto_server(
            options.moto_server.as_deref(),
            &dir.join("venv"),
            progress,
        )?),
    };
    let id = sandbox_id(&dir);
    // The names of the resources, and the cluster whose services the agent runs. An emulator
    // the sandbox started is its own; one given with --endpoint may hold other sandboxes'.
    let prefix = match &options.endpoint {
        Some(_) => format!("{TARGET}-{}", &id[..6]),
        None => TARGET.to_string(),
    };

    let mut started: Vec<Process> = Vec::new();
    // Registered before anything starts: a Ctrl-C that comes while a start blocks is seen at
    // the next step, not taken by the default handler, which would leave the processes.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|source| SandboxError::Io {
        action: "handle Ctrl-C".into(),
        source,
    })?;
    let starting = async {
        let (upstream, emulator) = match (upstream_given, &moto) {
            (Some(addr), _) => (addr, None),
            (None, Some(server)) => {
                // The emulator listens on a port of its own; the agent takes the endpoint's.
                progress("starting the AWS emulator (moto)");
                let (p, port) = emulator::start_moto(server, &dir.join("moto.log"))?;
                started.push(p.clone());
                (format!("127.0.0.1:{port}"), Some(p))
            }
            (None, None) => unreachable!("a moto server is found when no endpoint is given"),
        };
        progress(&format!(
            "starting the agent (the tasks, and the AWS endpoint) on 127.0.0.1:{}",
            options.emulator_port
        ));
        let agent = process::start(
            "the sandbox's agent",
            &options.agent_program,
            &[
                "sandbox".into(),
                "agent".into(),
                "--listen".into(),
                options.emulator_port.to_string(),
                "--upstream".into(),
                upstream.clone(),
                "--cluster".into(),
                prefix.clone(),
                "--id".into(),
                id.clone(),
                "--production-port".into(),
                options.production_port.to_string(),
                "--test-port".into(),
                options.test_port.to_string(),
                "--dir".into(),
                dir.display().to_string(),
            ],
            &[],
            &dir.join("agent.log"),
            options.emulator_port,
        )?;
        started.push(agent.clone());
        // Its load balancer's listeners come up beside its endpoint; one that cannot (its
        // port taken meanwhile) stops the agent, and its log says why.
        process::wait_listening(
            &agent,
            "the sandbox's agent",
            &[options.production_port, options.test_port],
        )?;
        progress(&format!(
            "starting the image registry on 127.0.0.1:{}",
            options.registry_port
        ));
        let registry = emulator::start_registry(&registry_program, &dir, options.registry_port)?;
        started.push(registry.clone());
        let endpoint = format!("http://127.0.0.1:{}", options.emulator_port);
        let infra = match infra::ensure(
            &clients(&endpoint).await,
            REGION,
            &prefix,
            &health_path(config),
            progress,
        )
        .await
        {
            Ok(infra) => infra,
            // An agent that died meanwhile is the cause to show, with its log.
            Err(_) if !agent.alive() => {
                return Err(SandboxError::Died {
                    what: "the sandbox's agent".into(),
                    log: agent.log.clone(),
                    tail: process::log_tail(&agent.log),
                });
            }
            Err(e) => return Err(e),
        };
        let record = Record {
            format: FORMAT,
            started_at: jiff::Timestamp::now().to_string(),
            endpoint,
            id: id.clone(),
            upstream,
            emulator,
            agent,
            registry,
            registry_address: format!("127.0.0.1:{}", options.registry_port),
            production_url: format!("http://127.0.0.1:{}/", options.production_port),
            test_url: format!("http://127.0.0.1:{}", options.test_port),
            infra,
            config: written_to.clone(),
        };
        write_record(&dir, &record)?;
        Ok::<_, SandboxError>(record)
    };
    // The processes run in their own process groups, so a Ctrl-C does not reach them: an
    // interrupted `up` stops what it started itself.
    let result = tokio::select! {
        result = starting => result,
        _ = interrupt.recv() => Err(SandboxError::Interrupted),
    };
    let record = match result {
        Ok(record) => record,
        Err(e) => {
            // Nothing half started stays behind.
            for p in started.iter().rev() {
                let _ = p.stop();
            }
            return Err(e);
        }
    };
    let block = record.block(&image_name(config));
    if let Some(path) = &written_to
        && let Err(e) = block::write(path, TARGET, &block)
    {
        let _ = stop_processes(&record);
        let _ = remove_record(&dir);
        return Err(e);
    }
    Ok(Up {
        outcome: "started",
        status: status_of(Some(record)),
        block,
    })
}

fn stop_processes(record: &Record) -> Result<(), SandboxError> {
    record.agent.stop()?;
    record.registry.stop()?;
    if let Some(emulator) = &record.emulator {
        emulator.stop()?;
    }
    Ok(())
}

/// The `host:port` of an `http://` endpoint the agent passes calls on to.
fn upstream_of(url: &str) -> Result<String, SandboxError> {
    let authority = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'));
    let Some(authority) = authority else {
        return Err(SandboxError::Missing {
            what: format!("an http://<host>:<port> endpoint in --endpoint {url:?}"),
            hint: "the sandbox's agent passes calls on to the emulator over plain HTTP; give \
                   its http:// address"
                .into(),
        });
    };
    Ok(if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

/// Removes the engine's tags of images pushed to the sandbox's registry (the images stay
/// while other tags or containers use them); how many it removed. Best effort.
async fn remove_pushed_tags(docker: &bollard::Docker, registry: &str) -> usize {
    use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};
    let filters = [("reference".to_string(), vec![format!("{registry}/*")])].into();
    let Ok(images) = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return 0;
    };
    let mut removed = 0;
    for tag in images
        .iter()
        .flat_map(|i| i.repo_tags.iter())
        .filter(|t| t.starts_with(&format!("{registry}/")))
    {
        let untagged = docker
            .remove_image(tag, None::<RemoveImageOptions>, None)
            .await;
        if untagged.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A short hash of the sandbox's folder: two sandboxes on one engine never share a name.
fn sandbox_id(dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..5])
}

/// How the agent is started (`shipit sandbox agent`).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The port of 127.0.0.1 its endpoint listens on.
    pub listen: u16,
    /// The emulator's `host:port`.
    pub upstream: String,
    pub cluster: String,
    pub id: String,
    /// The local ports of the production and test listeners.
    pub production_port: u16,
    pub test_port: u16,
    /// The sandbox's folder: the load balancer's edges keep their files there.
    pub dir: PathBuf,
}

/// How long the emulator may stop answering before the agent gives up and exits.
const UPSTREAM_GONE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the agent until SIGTERM or SIGINT, or until the emulator has stopped answering for
/// [`UPSTREAM_GONE`]. Containers of an earlier agent of the same sandbox are removed first:
/// their tasks are unknown to this one.
pub async fn agent(options: AgentOptions) -> Result<(), SandboxError> {
    let docker = crate::docker::connect()
        .await
        .map_err(|e| SandboxError::Docker(e.to_string()))?;
    let left = runner::remove_containers(&docker, &options.id)
        .await
        .map_err(SandboxError::Docker)?;
    if left > 0 {
        tracing::info!(
            containers = left,
            "removed the containers of an earlier agent"
        );
    }
    let upstream: std::net::SocketAddr = tokio::net::lookup_host(&options.upstream)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SandboxError::Missing {
            what: format!("the emulator's address {}", options.upstream),
            hint: "give --upstream as <host>:<port>".into(),
        })?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.listen))
        .await
        .map_err(|source| SandboxError::PortInUse {
            port: options.listen,
            what: "the sandbox's AWS endpoint".into(),
            flag: "--emulator-port".into(),
            source,
        })?;
    let runner = runner::Runner::new(
        clients(&format!("http://{}", options.upstream)).await,
        docker,
        &options.cluster,
        &options.id,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let (requests, received) = tokio::sync::mpsc::channel(16);
    let (refresh, refreshes) = tokio::sync::mpsc::channel(16);
    let api = tokio::spawn(api::serve(
        listener,
        upstream,
        runner.tasks.clone(),
        requests,
        refresh,
        stop.clone(),
    ));
    let watch = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            let mut unanswered_since: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                    () = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
                }
                let answers = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    tokio::net::TcpStream::connect(upstream),
                )
                .await
                .is_ok_and(|c| c.is_ok());
                match (answers, unanswered_since) {
                    (true, _) => unanswered_since = None,
                    (false, None) => unanswered_since = Some(tokio::time::Instant::now()),
                    (false, Some(since)) if since.elapsed() >= UPSTREAM_GONE => {
                        tracing::error!(
                            upstream = %upstream,
                            "the emulator stopped answering; the agent stops"
                        );
                        break;
                    }
                    (false, Some(_)) => {}
                }
            }
            stop.cancel();
        })
    };
    let plane = tokio::spawn({
        let (dir, clients, tasks, routed, stop) = (
            options.dir.clone(),
            clients(&format!("http://{}", options.upstream)).await,
            runner.tasks.clone(),
            runner.routed.clone(),
            stop.clone(),
        );
        let load_balancer = format!("{}-alb", options.cluster);
        let ports = (options.production_port, options.test_port);
        async move {
            let result = plane::run(
                &dir,
                ports,
                &load_balancer,
                clients,
                (tasks, routed),
                refreshes,
                stop.clone(),
            )
            .await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "the sandbox's load balancer stopped");
                // Without its load balancer the sandbox is broken: the agent stops with it.
                stop.cancel();
            }
            result
        }
    });
    runner.run(stop.clone(), received).await;
    let _ = api.await;
    let plane = plane.await.unwrap_or(Ok(()));
    watch.abort();
    plane
}

fn remove_record(dir: &Path) -> Result<(), SandboxError> {
    match std::fs::remove_file(record_path(dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SandboxError::Io {
            action: format!("remove {}", record_path(dir).display()),
            source,
        }),
    }
}

/// How `down` ended.
#[derive(Debug, Clone, Serialize)]
pub struct Down {
    /// `stopped`, or `absent` when there was no sandbox.
    pub outcome: &'static str,
    /// What it stopped or removed, one line each.
    pub removed: Vec<String>,
}

/// Stops the sandbox of `config`'s state directory: its processes, the registry's images,
/// the resources it created on an endpoint it did not start, and the target block it wrote.
/// The venv stays, so the next `up` starts at once.
pub async fn down(config: &Config, progress: &dyn Fn(&str)) -> Result<Down, SandboxError> {
    let dir = dir(config);
    let _lock = lock(&dir).await?;
    let Some(record) = read_record(&dir)? else {
        return Ok(Down {
            outcome: "absent",
            removed: Vec::new(),
        });
    };
    let mut removed = Vec::new();
    if record.emulator.is_none() {
        progress(&format!(
            "deleting the sandbox's resources at {}",
            record.endpoint
        ));
        infra::remove(&clients(&record.endpoint).await, &record.infra).await?;
        removed.push(format!("the resources at {}", record.endpoint));
    }
    if record.agent.alive() {
        progress(&format!("stopping the agent (pid {})", record.agent.pid));
    }
    record.agent.stop()?;
    let docker = crate::docker::connect()
        .await
        .map_err(|e| SandboxError::Docker(e.to_string()))?;
    let tasks = runner::remove_containers(&docker, &record.id)
        .await
        .map_err(SandboxError::Docker)?;
    removed.push(format!("the agent and {tasks} task container(s)"));
    let tags = remove_pushed_tags(&docker, &record.registry_address).await;
    if tags > 0 {
        removed.push(format!(
            "{tags} image tag(s) of {}",
            record.registry_address
        ));
    }
    if record.registry.alive() {
        progress(&format!(
            "stopping the image registry (pid {})",
            record.registry.pid
        ));
    }
    record.registry.stop()?;
    removed.push(format!("the image registry on {}", record.registry_address));
    if let Some(emulator) = &record.emulator {
        if emulator.alive() {
            progress(&format!("stopping the AWS emulator (pid {})", emulator.pid));
        }
        emulator.stop()?;
        removed.push(format!("the AWS emulator at {}", record.endpoint));
    }
    let images = dir.join("registry");
    match std::fs::remove_dir_all(&images) {
        Ok(()) => removed.push(format!("the registry's images in {}", images.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SandboxError::Io {
                action: format!("remove {}", images.display()),
                source,
            });
        }
    }
    if let Some(path) = &record.config
        && block::remove(path)?
    {
        removed.push(format!("[targets.{TARGET}] from {}", path.display()));
    }
    remove_record(&dir)?;
    Ok(Down {
        outcome: "stopped",
        removed,
    })
}
