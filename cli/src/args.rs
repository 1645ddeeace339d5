//! The command line: every flag, its help text and its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The service's port inside its container for `shipit init`, unless `--port` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Parser)]
#[command(
    name = "shipit",
    version,
    about = "Pauseless releases of containerized web services",
    long_about = "shipit builds a service's image, starts it in the idle slot beside the live one, \
                  verifies its health and version, switches traffic atomically, drains the old \
                  slot and records the release. `shipit rollback` brings back the previous one.",
    after_help = "Exit codes: 0 ok, 1 unexpected error, 2 usage or config error, 3 lock held, \
                  4 build failed, 5 verification failed, 6 platform error (Docker, edge), \
                  7 nothing to roll back or promote, 8 module versioning failed, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The config file [default: ./shipit.toml]
    #[arg(short, long, global = true, env = "SHIPIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print only errors and data
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print debug logs too (RUST_LOG wins when set)
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print the services' env values (`config check`, `plan`, `release --dry-run`, logs);
    /// they are shown as <redacted> otherwise. Values read from an env_file are never printed
    #[arg(long, global = true)]
    pub show_secrets: bool,
}

/// Which service on which target a command acts on.
#[derive(Debug, Args, Clone, Default)]
pub struct Selection {
    /// The service, when the config has several
    #[arg(short, long, value_name = "NAME")]
    pub service: Option<String>,
    /// The target [default: the config's default_target, or its only target]
    #[arg(short, long, value_name = "NAME")]
    pub target: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented shipit.toml, a Dockerfile and a GitHub workflow for this project
    ///
    /// Detects a Cargo, Leiningen (project.clj), deps.edn or npm (package.json) project, or an
    /// existing Dockerfile. Writes shipit.toml, a Dockerfile and a .dockerignore when there are
    /// none, and .github/workflows/shipit-release.yml. Overwrites nothing without --force; an
    /// existing Dockerfile or .dockerignore is always kept.
    Init {
        /// The project folder [default: the current folder]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The kind of project, when detection picks the wrong one or finds none
        #[arg(long, value_enum)]
        kind: Option<ProjectKind>,
        /// The service name [default: the package's name, or the folder's]
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The port the app listens on inside its container
        #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
        port: u16,
        /// Do not write the GitHub workflow
        #[arg(long)]
        no_workflow: bool,
        /// Overwrite an existing shipit.toml and workflow
        #[arg(long)]
        force: bool,
        /// Print the files written as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Build, launch in the idle slot, verify, switch traffic, drain and retire the old slot
    ///
    /// With [modules.*] in the config, the version step runs first, as `shipit version apply`
    /// does (on a clean work tree), and the image is labelled with every module's version.
    Release {
        #[command(flatten)]
        selection: Selection,
        /// Skip the version step: label the image with the module versions as the files hold them
        #[arg(long)]
        no_version: bool,
        /// Stop after verify: stage the new release for preview, beside the live one, without
        /// live traffic; `shipit promote` makes it live
        #[arg(long)]
        no_promote: bool,
        /// Read the current state and print the plan (every call it would make, the rendered
        /// task definition on ecs, the shift steps); change nothing. Same as `shipit plan`
        #[arg(long)]
        dry_run: bool,
        /// Release every service of the config in turn (by name), stopping at the first that
        /// fails; with --json, one record per service
        #[arg(long, conflicts_with = "service")]
        all: bool,
        /// Print the release record as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Make the release staged by `shipit release --no-promote` live
    ///
    /// Checks that its candidate still runs, verifies it again, shifts traffic to it by the
    /// target's `shift` strategy and retires the old slot. The staged release's record becomes
    /// a succeeded release.
    Promote {
        #[command(flatten)]
        selection: Selection,
        /// Print the release record as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show what `shipit release` would do now, changing nothing
    ///
    /// The lock, the live slot and the slot the release would use, the module versions it
    /// would apply, whether the image would be reused or built, the shift and what would be
    /// retired.
    Plan {
        #[command(flatten)]
        selection: Selection,
        /// Print the plan as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Diff what the next release would launch against the live slot (ecs targets)
    ///
    /// The rendered task definition and the service settings against the live service's, as
    /// a unified diff; what changes with every release (image, release id, slot) is left
    /// out, and env values are redacted unless --show-secrets is given.
    Diff {
        #[command(flatten)]
        selection: Selection,
        /// Exit 2 when there are differences (0 when there are none)
        #[arg(long)]
        exit_code: bool,
        /// Print the diff as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Check that what an ecs release needs exists in the AWS account
    ///
    /// The execution and task roles, the log group (created when the target sets
    /// create_log_group = true), the image of the version a release would run, every secret's
    /// ARN, the subnets and security groups, and both target groups (type ip, HTTP, the
    /// service's port). Each failure names its config key. Every ecs release runs the same
    /// checks before it builds anything. Exits 6 when one fails.
    Verify {
        #[command(flatten)]
        selection: Selection,
        /// Print the checks as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show the live slot, release, image and version
    Status {
        #[command(flatten)]
        selection: Selection,
        /// Print the status as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// List releases, failed ones included, newest first
    History {
        #[command(flatten)]
        selection: Selection,
        /// How many releases to show
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print the release records as a JSON list on stdout
        #[arg(long)]
        json: bool,
    },
    /// Make the previous release live again, or any earlier one with --to
    ///
    /// Without --to: the release that was live before the live one. With --to: any release
    /// that went live and whose image is still there; `shipit history` marks those (a local
    /// target keeps the newest `keep_images` images of a service).
    Rollback {
        #[command(flatten)]
        selection: Selection,
        /// The release to make live again (its id, as `shipit history` lists it)
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
        /// Print the rollback's record as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show or break the release lock of the service on the target
    ///
    /// On an ecs target the lock is an SSM parameter that a crashed run leaves behind; on a
    /// local target the kernel frees it when its process dies.
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// Remove the service's containers and routes from the target (history is kept)
    ///
    /// On an ecs target both services are scaled to zero and kept, and the command returns
    /// once their targets have drained (at most the target group's deregistration delay).
    Down {
        #[command(flatten)]
        selection: Selection,
        /// Print what was removed as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Hold the service's new requests at the edge (in-flight ones finish) until `shipit
    /// resume` or the timeout; past the timeout they are answered 503 with Retry-After
    ///
    /// For a short window (a database switchover): clients wait instead of failing. Local
    /// targets only (the edge holds them).
    Pause {
        #[command(flatten)]
        selection: Selection,
        /// How long requests are held at most (1ms to 1h)
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
        timeout: std::time::Duration,
        /// Print the pause as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Let the requests held by `shipit pause` go on to the live slot, and route as usual
    Resume {
        #[command(flatten)]
        selection: Selection,
        /// Print how many requests were let go as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Answer every request of the service 503 with a small page and Retry-After, or stop
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Plan and apply the semantic versions of the library modules ([modules.*])
    Version {
        #[command(subcommand)]
        command: VersionCommand,
    },
    /// Work with the config file
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run, inspect or stop the edge proxy of a local target
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// A local AWS for the ecs target: an emulator, a registry and the resources, in one command
    ///
    /// `sandbox up` starts the moto server on 127.0.0.1 (installed once into a venv under the
    /// state directory) and a Docker registry, creates a VPC, subnets, a load balancer with a
    /// production and a test listener, two target groups and an ECS cluster there, and
    /// writes a [targets.sandbox] block into the config. `release --dry-run --target sandbox`,
    /// `plan`, `verify` and `status` then run against it with no AWS account.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Print the shell completion script for SHELL on stdout
    ///
    /// bash: `shipit completions bash > ~/.local/share/bash-completion/completions/shipit`;
    /// zsh: `shipit completions zsh > "${fpath[1]}/_shipit"`;
    /// fish: `shipit completions fish > ~/.config/fish/completions/shipit.fish`.
    Completions {
        /// The shell the script is for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write one page per command into a folder
    ///
    /// `shipit man | man -l -` reads it; `shipit man --dir /usr/local/share/man/man1` installs
    /// shipit.1 and shipit-<command>.1 for every command.
    Man {
        /// Write shipit.1 and one page per command into DIR instead of printing shipit.1
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// What `shipit init` can set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProjectKind {
    /// Rust, Cargo.toml
    Cargo,
    /// Clojure, Leiningen's project.clj
    Lein,
    /// Clojure, the Clojure CLI's deps.edn
    Deps,
    /// Node.js, package.json
    Node,
    /// Only a Dockerfile: it is used as it is
    Dockerfile,
}

impl Command {
    /// Whether the command prints JSON: then a failure is JSON on stdout too.
    pub fn json(&self) -> bool {
        match self {
            Command::Release { json, .. }
            | Command::Promote { json, .. }
            | Command::Plan { json, .. }
            | Command::Diff { json, .. }
            | Command::Verify { json, .. }
            | Command::Status { json, .. }
            | Command::History { json, .. }
            | Command::Rollback { json, .. }
            | Command::Down { json, .. }
            | Command::Pause { json, .. }
            | Command::Resume { json, .. }
            | Command::Maintenance {
                command: MaintenanceCommand::On { json, .. } | MaintenanceCommand::Off { json, .. },
            }
            | Command::Lock {
                command: LockCommand::Status { json, .. } | LockCommand::Release { json, .. },
            }
            | Command::Init { json, .. } => *json,
            Command::Version { command } => match command {
                VersionCommand::Plan { json } | VersionCommand::Apply { json, .. } => *json,
            },
            Command::Config { command } => match command {
                ConfigCommand::Check { json } => *json,
            },
            Command::Edge { command } => match command {
                EdgeCommand::Run { .. } => false,
                EdgeCommand::Status { json, .. }
                | EdgeCommand::Stop { json, .. }
                | EdgeCommand::Upgrade { json, .. }
                | EdgeCommand::Reload { json, .. } => *json,
            },
            Command::Sandbox { command } => match command {
                SandboxCommand::Up { json, .. }
                | SandboxCommand::Down { json }
                | SandboxCommand::Status { json } => *json,
                SandboxCommand::Agent { .. } => false,
            },
            Command::Completions { .. } | Command::Man { .. } => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start the sandbox (or find the one that runs) and write [targets.sandbox] into the config
    ///
    /// Everything binds to 127.0.0.1. Run again, it finds the running sandbox and rewrites the
    /// block; after a crash of its emulator it starts a new one (with new resources).
    Up {
        /// Use the AWS emulator at this URL (moto, LocalStack Pro) instead of starting one
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// The port of the sandbox's AWS endpoint (its agent; the emulator gets a port of its own)
        #[arg(long, value_name = "PORT", default_value_t = shipit_pipeline::sandbox::DEFAULT_EMULATOR_PORT)]
        emulator_port: u16,
        /// The port of the image registry
        #[arg(long, value_name = "PORT", default_value_t = shipit_pipeline::sandbox::DEFAULT_REGISTRY_PORT)]
        registry_port: u16,
        /// The local port of the load balancer's production listener
        #[arg(long, value_name = "PORT", default_value_t = shipit_pipeline::sandbox::DEFAULT_PRODUCTION_PORT)]
        production_port: u16,
        /// The local port of the load balancer's test listener
        #[arg(long, value_name = "PORT", default_value_t = shipit_pipeline::sandbox::DEFAULT_TEST_PORT)]
        test_port: u16,
        /// Run this moto_server instead of installing one into the sandbox's venv
        #[arg(long, value_name = "PATH", conflicts_with = "endpoint")]
        moto_server: Option<PathBuf>,
        /// Print the [targets.sandbox] block on stdout instead of writing it into the config
        #[arg(long)]
        print: bool,
        /// Print the sandbox as JSON on stdout
        #[arg(long, conflicts_with = "print")]
        json: bool,
    },
    /// Stop what `sandbox up` started, and take [targets.sandbox] out of the config
    Down {
        /// Print what was removed as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show whether the sandbox runs, where, and what died (exit 6 when it does not run)
    Status {
        /// Print the sandbox as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Run the sandbox's agent in the foreground (`sandbox up` starts it)
    #[command(hide = true)]
    Agent {
        /// The port of 127.0.0.1 its AWS endpoint listens on
        #[arg(long, value_name = "PORT")]
        listen: u16,
        /// The emulator's host:port, where calls are passed on to
        #[arg(long, value_name = "ADDR")]
        upstream: String,
        /// The ECS cluster whose services it runs
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// The sandbox's id, on its containers
        #[arg(long, value_name = "ID")]
        id: String,
        /// The local port of the production listener
        #[arg(long, value_name = "PORT")]
        production_port: u16,
        /// The local port of the test listener
        #[arg(long, value_name = "PORT")]
        test_port: u16,
        /// The sandbox's folder
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Turn maintenance on: every request gets 503, the page and Retry-After (it lasts
    /// across edge restarts until `maintenance off`)
    On {
        #[command(flatten)]
        selection: Selection,
        /// The page's message (HTML-escaped, at most 2 KiB) [default: the edge's]
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// The answers' Retry-After, 1s to 1 day [default: 60s]
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        retry_after: Option<std::time::Duration>,
        /// Print the maintenance as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Turn maintenance off: the service is served again
    Off {
        #[command(flatten)]
        selection: Selection,
        /// Print the outcome as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

/// A duration such as `30s`, `1m30s` or `500ms`.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 30s, 2m, 500ms)"))
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the lock, since when, doing what
    Status {
        #[command(flatten)]
        selection: Selection,
        /// Print the holder (or null) as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Free the lock: without --force, only clear the record a dead run left
    ///
    /// Whether the lock is held is the flock's answer (on ecs: whether the SSM parameter
    /// exists), never a guess from the pid or host it records. Without --force a held lock is
    /// refused (exit 3) naming who holds it and since when.
    Release {
        #[command(flatten)]
        selection: Selection,
        /// Break it whoever holds it (a run that died on another machine)
        #[arg(long)]
        force: bool,
        /// Print who held it as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the resolved result
    Check {
        /// Print the resolved config as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VersionCommand {
    /// Show each module's version, its commits since its last tag, and its next version and why
    Plan {
        /// Print the plan as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Write the next versions, dependents' references and changelogs; commit and tag
    Apply {
        /// Show what would be written, committed and tagged; write nothing
        #[arg(long)]
        dry_run: bool,
        /// Write the files but do not commit (and so do not tag)
        #[arg(long)]
        no_commit: bool,
        /// Commit but do not tag
        #[arg(long)]
        no_tag: bool,
        /// Push the commit and the tags to the remote (`[versioning] remote`, "origin"), in
        /// one atomic push; `[versioning] push = true` does this always
        #[arg(long, conflicts_with = "no_commit")]
        push: bool,
        /// Print what was done as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// Run the edge in the foreground (`shipit release` starts it detached when needed)
    Run {
        #[command(flatten)]
        edge: EdgeLocation,
        /// The address to listen on [default: the target's `listen`]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Take the sockets of the edge running in the directory over (`edge upgrade` passes it)
        #[arg(long, hide = true)]
        take_over: bool,
    },
    /// Replace the running edge by this shipit's, without dropping a connection
    ///
    /// A new edge process takes the running one's listening sockets over, with the routes,
    /// and the config's edge settings (with --dir and no -t, the running edge's settings),
    /// reading the TLS certificates again. The old process stops accepting, finishes its
    /// requests (answering each keep-alive connection's next one with `Connection: close`),
    /// and exits. If the new process fails to start, the old one keeps serving.
    Upgrade {
        #[command(flatten)]
        edge: EdgeLocation,
        /// Print the old and new pid and the times as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Make the running edge read its TLS certificates again, without a restart
    ///
    /// With a config, the target's `certificates` are sent (added or removed ones too);
    /// with --dir alone, the edge reads the files it serves again. A file that does not
    /// load changes nothing. A new `tls_listen` needs `shipit edge upgrade`.
    Reload {
        #[command(flatten)]
        edge: EdgeLocation,
        /// Print the certificates now served as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show the edge's routes and in-flight requests
    Status {
        #[command(flatten)]
        edge: EdgeLocation,
        /// Print the edge's status as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Stop a running edge
    Stop {
        #[command(flatten)]
        edge: EdgeLocation,
        /// Print what was stopped as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

/// An edge is found by its directory, or by the config's state dir and a target.
#[derive(Debug, Args, Clone)]
pub struct EdgeLocation {
    /// The edge directory [default: <state_dir>/edge/<target>]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The local target whose edge this is (with --dir: whose edge settings apply)
    #[arg(short, long, value_name = "NAME")]
    pub target: Option<String>,
}
