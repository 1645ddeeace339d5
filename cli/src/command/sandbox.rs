//! `shipit sandbox up|down|status`: a local AWS for the ecs target (see
//! `shipit_pipeline::sandbox`).

use shipit_pipeline::sandbox::{self, SandboxError, Status, UpOptions};

use super::load_config;
use crate::args::{Global, SandboxCommand};
use crate::exit::{self, Failure};
use crate::printer::Printer;

impl From<SandboxError> for Failure {
    fn from(e: SandboxError) -> Failure {
        let code = if e.is_usage() {
            exit::CONFIG
        } else if matches!(e, SandboxError::Interrupted) {
            exit::INTERRUPTED
        } else {
            exit::PLATFORM
        };
        let hint = e.hint();
        let failure = Failure::new(code, e.to_string());
        match hint {
            Some(hint) => failure.hint(hint),
            None => failure,
        }
    }
}

pub async fn run(
    global: &Global,
    command: SandboxCommand,
    printer: Printer,
) -> Result<(), Failure> {
    if let SandboxCommand::Agent {
        listen,
        upstream,
        cluster,
        id,
        production_port,
        test_port,
        dir,
    } = command
    {
        // The agent needs no config: `sandbox up` gives it everything.
        return Ok(sandbox::agent(sandbox::AgentOptions {
            listen,
            upstream,
            cluster,
            id,
            production_port,
            test_port,
            dir,
        })
        .await?);
    }
    let config = load_config(global)?;
    let progress = |line: &str| printer.info(&format!("sandbox: {line}"));
    match command {
        SandboxCommand::Up {
            endpoint,
            emulator_port,
            registry_port,
            production_port,
            test_port,
            moto_server,
            print,
            json,
        } => {
            if let Some(url) = &endpoint
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(Failure::new(
                    exit::CONFIG,
                    format!("--endpoint {url:?} is not a URL: expected http://<host>:<port>"),
                ));
            }
            let agent_program = std::env::current_exe().map_err(|e| {
                Failure::new(
                    exit::UNEXPECTED,
                    format!("cannot find this program's path: {e}"),
                )
            })?;
            let options = UpOptions {
                endpoint,
                emulator_port,
                registry_port,
                production_port,
                test_port,
                moto_server,
                print,
                agent_program,
            };
            let up = sandbox::up(&config, &options, &progress).await?;
            if json {
                printer.json(&up);
            } else if print {
                printer.data(up.block.trim_end());
            } else {
                let verb = if up.outcome == "found" {
                    "is already running"
                } else {
                    "is running"
                };
                printer.data(&format!(
                    "the sandbox {verb}: AWS endpoint {}, image registry {}",
                    up.status.endpoint.as_deref().unwrap_or("?"),
                    up.status.registry.as_deref().unwrap_or("?"),
                ));
                let with_config = match &global.config {
                    Some(path) => format!(" -c {}", path.display()),
                    None => String::new(),
                };
                printer.data(&format!(
                    "[targets.{target}] is in {}; try:\n  shipit{with_config} release --target {target}\n  curl {}\n  shipit{with_config} sandbox down   # stops it and takes the target out again",
                    config.path.display(),
                    up.status.production_url.as_deref().unwrap_or("?"),
                    target = sandbox::TARGET,
                ));
            }
            Ok(())
        }
        SandboxCommand::Down { json } => {
            let down = sandbox::down(&config, &progress).await?;
            if json {
                printer.json(&down);
            } else if down.outcome == "absent" {
                printer.data(&format!(
                    "no sandbox runs for {}: nothing to stop",
                    config.path.display()
                ));
            } else {
                printer.data(&format!(
                    "the sandbox is down; removed {}",
                    down.removed.join(", ")
                ));
            }
            Ok(())
        }
        SandboxCommand::Agent { .. } => unreachable!("handled before the config is loaded"),
        SandboxCommand::Status { json } => {
            let status = sandbox::status(&config)?;
            if json {
                printer.json(&status);
            } else {
                print_status(&status, printer);
            }
            if status.running {
                Ok(())
            } else {
                Err(Failure::silent(exit::PLATFORM))
            }
        }
    }
}

fn print_status(status: &Status, printer: Printer) {
    let Some(record) = &status.record else {
        printer.data("no sandbox: `shipit sandbox up` starts one");
        return;
    };
    printer.data(&format!(
        "sandbox {} (since {})",
        status.state, record.started_at
    ));
    let emulator = match &record.emulator {
        Some(p) => format!(
            "{} (moto, pid {}{})",
            record.endpoint,
            p.pid,
            running_note(p)
        ),
        None => format!("{} (given with --endpoint)", record.endpoint),
    };
    printer.data(&format!("  AWS endpoint    {emulator}"));
    printer.data(&format!(
        "  agent           pid {}{} (runs the ECS tasks as containers; the endpoint)",
        record.agent.pid,
        running_note(&record.agent)
    ));
    printer.data(&format!(
        "  image registry  {} (pid {}{})",
        record.registry_address,
        record.registry.pid,
        running_note(&record.registry)
    ));
    printer.data(&format!(
        "  load balancer   production listener {}, test listener {} ({})",
        record.production_url, record.test_url, record.infra.load_balancer_dns
    ));
    printer.data(&format!("  ECS cluster     {}", record.infra.cluster));
    if let Some(path) = &record.config {
        printer.data(&format!(
            "  target          [targets.{}] in {}",
            status.target,
            path.display()
        ));
    }
    for problem in &status.problems {
        printer.warn(problem);
    }
    if !status.running {
        printer.data("`shipit sandbox up` starts it again (with new resources); `shipit sandbox down` cleans up");
    }
}

/// `""` for a process that runs, `", not running"` for one that died.
fn running_note(process: &sandbox::Process) -> &'static str {
    if process.alive() { "" } else { ", not running" }
}
