//! One module per command. Each loads what it needs, calls the libraries, and prints.

mod completions;
mod config;
mod down;
mod edge;
mod history;
pub mod init;
mod plan;
mod release;
mod status;
mod version;

use shipit_pipeline::config::{Config, Service, Target, TargetKind};
use shipit_pipeline::platform::local::{EdgeCommand, LocalPlatform};

use crate::args::{Cli, Command, Global, Selection};
use crate::exit::{self, Failure};
use crate::printer::Printer;

pub async fn run(cli: Cli, printer: Printer) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Release {
            selection,
            no_version,
            json,
        } => {
            Box::pin(release::release(
                global, &selection, no_version, json, printer,
            ))
            .await
        }
        Command::Rollback { selection, json } => {
            Box::pin(release::rollback(global, &selection, json, printer)).await
        }
        Command::Plan { selection, json } => {
            Box::pin(plan::run(global, &selection, json, printer)).await
        }
        Command::Status { selection, json } => status::run(global, &selection, json, printer).await,
        Command::History {
            selection,
            limit,
            json,
        } => history::run(global, &selection, limit, json, printer).await,
        Command::Down { selection, json } => down::run(global, &selection, json, printer).await,
        Command::Config { command } => config::run(global, command, printer),
        Command::Version { command } => version::run(global, command, printer),
        Command::Edge { command } => edge::run(global, command, printer).await,
        Command::Init {
            dir,
            kind,
            name,
            port,
            no_workflow,
            force,
            json,
        } => init::run(
            global,
            &init::InitOptions {
                dir: dir.as_deref(),
                kind,
                name: name.as_deref(),
                port,
                no_workflow,
                force,
                json,
            },
            printer,
        ),
        Command::Completions { shell } => completions::completions(shell, printer),
        Command::Man { dir } => completions::man(dir.as_deref(), printer),
    }
}

pub fn load_config(global: &Global) -> Result<Config, Failure> {
    Ok(Config::load(global.config.as_deref())?)
}

/// The service, target and platform a command acts on.
pub struct Selected {
    pub config: Config,
    pub service: Service,
    pub target: Target,
    pub platform: LocalPlatform,
}

pub async fn select(global: &Global, selection: &Selection) -> Result<Selected, Failure> {
    let config = load_config(global)?;
    let service = config.service(selection.service.as_deref())?.clone();
    let target = config.target(selection.target.as_deref())?.clone();
    let docker = shipit_pipeline::docker::connect().await.map_err(|e| {
        Failure::new(exit::PLATFORM, e.to_string())
            .hint("start the Docker engine, or point DOCKER_HOST at one that runs")
    })?;
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            exit::UNEXPECTED,
            format!("cannot find the shipit executable: {e}"),
        )
    })?;
    let platform = match &target.kind {
        TargetKind::Local(local) => LocalPlatform::new(
            &config,
            &service,
            &target.name,
            local,
            docker,
            EdgeCommand { exe },
        ),
    };
    Ok(Selected {
        config,
        service,
        target,
        platform,
    })
}
