//! One module per command. Each loads what it needs, calls the libraries, and prints.

mod completions;
mod config;
mod diff;
mod down;
mod edge;
mod gate;
mod history;
pub mod init;
mod lock;
mod plan;
mod release;
mod sandbox;
mod status;
mod verify;
mod version;

use shipit_pipeline::config::{Config, Service, Target};
use shipit_pipeline::platform::target::{Opening, TargetPlatform};
use shipit_pipeline::secret::Secrets;

use crate::args::{Cli, Command, Global, MaintenanceCommand, Selection};
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
            all,
            json,
        } => {
            if all {
                // Loaded without its warnings: each selection loads it again, and says them.
                let config = Config::load(global.config.as_deref())?;
                for selection in every_service(&config, &selection)? {
                    printer.info(&format!(
                        "service {}",
                        selection.service.as_deref().unwrap_or_default()
                    ));
                    if dry_run {
                        let selected = select_read_only(global, &selection).await?;
                        Box::pin(plan::run(&selected, json, global.show_secrets, printer)).await?;
                        continue;
                    }
                    let options = release::Options {
                        no_version,
                        no_promote,
                        json,
                    };
                    let selected = select(global, &selection).await?;
                    Box::pin(release::release(&selected, options, printer)).await?;
                }
                return Ok(());
            }
            if dry_run {
                let selected = select_read_only(global, &selection).await?;
                return Box::pin(plan::run(&selected, json, global.show_secrets, printer)).await;
            }
            let options = release::Options {
                no_version,
                no_promote,
                json,
            };
            let selected = select(global, &selection).await?;
            Box::pin(release::release(&selected, options, printer)).await
        }
        Command::Promote { selection, json } => {
            let selected = select(global, &selection).await?;
            Box::pin(release::rerun(
                &selected,
                json,
                printer,
                release::Rerun::Promote,
            ))
            .await
        }
        Command::Rollback {
            selection,
            to,
            json,
        } => {
            let selected = select(global, &selection).await?;
            Box::pin(release::rerun(
                &selected,
                json,
                printer,
                release::Rerun::Rollback { to },
            ))
            .await
        }
        Command::Plan { selection, json } => {
            let selected = select_read_only(global, &selection).await?;
            Box::pin(plan::run(&selected, json, global.show_secrets, printer)).await
        }
        Command::Diff {
            selection,
            exit_code,
            json,
        } => {
            let selected = select_read_only(global, &selection).await?;
            Box::pin(diff::run(
                &selected,
                exit_code,
                json,
                global.show_secrets,
                printer,
            ))
            .await
        }
        Command::Verify { selection, json } => {
            let selected = select(global, &selection).await?;
            Box::pin(verify::run(&selected, json, printer)).await
        }
        Command::Status { selection, json } => {
            // Without -s, a config of several services gets the status of each.
            let config = Config::load(global.config.as_deref())?;
            if selection.service.is_none() && config.services.len() > 1 {
                let mut all = Vec::new();
                for selection in every_service(&config, &selection)? {
                    all.push(status::collect(&select(global, &selection).await?).await?);
                }
                return status::print_all(&all, json, printer);
            }
            status::run(&select(global, &selection).await?, json, printer).await
        }
        Command::History {
            selection,
            limit,
            json,
        } => history::run(&select(global, &selection).await?, limit, json, printer).await,
        Command::Down { selection, json } => {
            down::run(&select(global, &selection).await?, json, printer).await
        }
        Command::Pause {
            selection,
            timeout,
            json,
        } => {
            let change = gate::GateChange::Pause { timeout };
            gate::run(&select(global, &selection).await?, &change, json, printer).await
        }
        Command::Resume { selection, json } => {
            let change = gate::GateChange::Resume;
            gate::run(&select(global, &selection).await?, &change, json, printer).await
        }
        Command::Maintenance { command } => {
            let (selection, change, json) = match command {
                MaintenanceCommand::On {
                    selection,
                    message,
                    retry_after,
                    json,
                } => (
                    selection,
                    gate::GateChange::MaintenanceOn {
                        message,
                        retry_after,
                    },
                    json,
                ),
                MaintenanceCommand::Off { selection, json } => {
                    (selection, gate::GateChange::MaintenanceOff, json)
                }
            };
            gate::run(&select(global, &selection).await?, &change, json, printer).await
        }
        Command::Lock { command } => lock::run(global, command, printer).await,
        Command::Config { command } => config::run(global, command, printer),
        Command::Version { command } => version::run(global, command, printer),
        Command::Edge { command } => edge::run(global, command, printer).await,
        Command::Sandbox { command } => sandbox::run(global, command, printer).await,
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

/// Loads the config, hides its secret values on stderr from now on (with `--show-secrets`,
/// those of an `env_file`), and prints what loading found worth a warning (an env file others can
/// read).
pub fn load_config(global: &Global) -> Result<Config, Failure> {
    let config = Config::load(global.config.as_deref())?;
    crate::printer::hide_on_stderr(Secrets::of_config(&config, global.show_secrets));
    let printer = Printer::new(global.quiet);
    for warning in &config.warnings {
        printer.warn(warning);
    }
    Ok(config)
}

/// `selection` for each service of the config, by name.
fn every_service(config: &Config, selection: &Selection) -> Result<Vec<Selection>, Failure> {
    if config.services.is_empty() {
        config.service(None)?;
    }
    Ok(config
        .services
        .keys()
        .map(|name| Selection {
            service: Some(name.clone()),
            target: selection.target.clone(),
        })
        .collect())
}

/// The service, target and platform a command acts on.
pub struct Selected {
    pub config: Config,
    pub service: Service,
    pub target: Target,
    pub platform: TargetPlatform,
}

pub async fn select(global: &Global, selection: &Selection) -> Result<Selected, Failure> {
    select_with(global, selection, false).await
}

/// Like [`select`], with a platform that refuses every call that would change the target
/// (`release --dry-run`, `plan`).
pub async fn select_read_only(global: &Global, selection: &Selection) -> Result<Selected, Failure> {
    select_with(global, selection, true).await
}

async fn select_with(
    global: &Global,
    selection: &Selection,
    read_only: bool,
) -> Result<Selected, Failure> {
    let config = load_config(global)?;
    let service = config.service(selection.service.as_deref())?.clone();
    let target = config.target(selection.target.as_deref())?.clone();
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            exit::UNEXPECTED,
            format!("cannot find the shipit executable: {e}"),
        )
    })?;
    let platform = TargetPlatform::open(&Opening {
        config: &config,
        service: &service,
        target: &target,
        exe: &exe,
        read_only,
    })
    .await?;
    Ok(Selected {
        config,
        service,
        target,
        platform,
    })
}
