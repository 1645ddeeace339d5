//! The command line: every flag, its help text and its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
                  7 nothing to roll back, 8 module versioning failed, 130 interrupted."
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
        /// Print the release record as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Show the live slot, release, image and version
    Status {
        #[command(flatten)]
        selection: Selection,
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
        #[arg(long)]
        json: bool,
    },
    /// Make the previous release live again
    Rollback {
        #[command(flatten)]
        selection: Selection,
        #[arg(long)]
        json: bool,
    },
    /// Remove the service's containers and routes from the target (history is kept)
    Down {
        #[command(flatten)]
        selection: Selection,
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
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and print the resolved result
    Check {
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
    },
    /// Show the edge's routes and in-flight requests
    Status {
        #[command(flatten)]
        edge: EdgeLocation,
        #[arg(long)]
        json: bool,
    },
    /// Stop a running edge
    Stop {
        #[command(flatten)]
        edge: EdgeLocation,
    },
}

/// An edge is found by its directory, or by the config's state dir and a target.
#[derive(Debug, Args, Clone)]
pub struct EdgeLocation {
    /// The edge directory [default: <state_dir>/edge/<target>]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The local target whose edge this is
    #[arg(short, long, value_name = "NAME")]
    pub target: Option<String>,
}
