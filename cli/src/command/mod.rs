//! One module per command. Each loads what it needs, calls the libraries, and prints.

mod completions;
mod config;
mod down;
mod edge;
mod history;
pub mod init;
mod lock;
mod plan;
mod platform;
mod release;
mod status;
mod version;

use shipit_pipeline::aws::{Clients, ReadOnly};
use shipit_pipeline::config::{Config, Service, Target, TargetKind};
use shipit_pipeline::platform::ecs::EcsPlatform;
use shipit_pipeline::platform::local::{EdgeCommand, LocalPlatform};

pub use self::platform::TargetPlatform;

use crate::args::{Cli, Command, Global, Selection};
use crate::exit::{self, Failure};
use crate::printer::Printer;

pub async fn run(cli: Cli, printer: Printer) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Release {
            selection,
            no_version,
            no_promote,
            dry_run,
            json,
        } => {
            if dry_run {
                return Box::pin(plan::run(global, &selection, json, printer)).await;
            }
            Box::pin(release::release(
                global,
                &selection,
                release::Options {
                    no_version,
                    no_promote,
                    json,
                },
                printer,
            ))
            .await
        }
        Command::Promote { selection, json } => {
            Box::pin(release::rerun(
                global,
                &selection,
                json,
                printer,
                release::Rerun::Promote,
            ))
            .await
        }
        Command::Rollback { selection, json } => {
            Box::pin(release::rerun(
                global,
                &selection,
                json,
                printer,
                release::Rerun::Rollback,
            ))
            .await
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
        Command::Lock { command } => lock::run(global, command, printer).await,
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
    pub platform: TargetPlatform,
}

pub async fn select(global: &Global, selection: &Selection) -> Result<Selected, Failure> {
    select_with(global, selection, None).await
}

/// Like [`select`], with AWS clients that refuse every call but reads (`release --dry-run`,
/// `plan`): `guard` records the operations they were asked for.
pub async fn select_read_only(
    global: &Global,
    selection: &Selection,
    guard: &ReadOnly,
) -> Result<Selected, Failure> {
    select_with(global, selection, Some(guard)).await
}

async fn select_with(
    global: &Global,
    selection: &Selection,
    read_only: Option<&ReadOnly>,
) -> Result<Selected, Failure> {
    let config = load_config(global)?;
    let service = config.service(selection.service.as_deref())?.clone();
    let target = config.target(selection.target.as_deref())?.clone();
    let platform = match &target.kind {
        TargetKind::Local(local) => {
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
            TargetPlatform::Local(Box::new(LocalPlatform::new(
                &config,
                &service,
                &target.name,
                local,
                docker,
                EdgeCommand { exe },
            )))
        }
        TargetKind::Ecs(ecs) => {
            let sdk = shipit_pipeline::aws::sdk_config(&ecs.region).await;
            let clients = match read_only {
                Some(guard) => Clients::read_only(&sdk, guard),
                None => Clients::new(&sdk),
            };
            TargetPlatform::Ecs(Box::new(
                EcsPlatform::new(&config, &service, &target.name, ecs, clients).await?,
            ))
        }
    };
    Ok(Selected {
        config,
        service,
        target,
        platform,
    })
}
