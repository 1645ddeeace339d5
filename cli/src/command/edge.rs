//! `shipit edge run|status|stop`.

use std::path::PathBuf;

use shipit_edge::daemon::StopOutcome;
use shipit_pipeline::config::TargetKind;
use shipit_pipeline::platform::local::LocalPaths;

use super::load_config;
use crate::args::{EdgeCommand, EdgeLocation, Global};
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// The edge directory and the target's listen address, from `--dir` or the config.
fn locate(
    global: &Global,
    edge: &EdgeLocation,
) -> Result<(PathBuf, Option<std::net::SocketAddr>), Failure> {
    if let Some(dir) = &edge.dir {
        return Ok((dir.clone(), None));
    }
    let config = load_config(global)?;
    let target = config.target(edge.target.as_deref())?;
    match &target.kind {
        TargetKind::Local(local) => {
            let paths = LocalPaths::new(&config.state_dir, &target.name, "");
            Ok((paths.edge_dir, Some(local.listen)))
        }
    }
}

pub async fn run(global: &Global, command: EdgeCommand, printer: Printer) -> Result<(), Failure> {
    match command {
        EdgeCommand::Run { edge, listen } => {
            let (dir, configured) = locate(global, &edge)?;
            let listen = listen.or(configured).ok_or_else(|| {
                Failure::new(exit::CONFIG, "the edge needs an address to listen on")
                    .hint("pass --listen ADDR, or run it from a config with a local target")
            })?;
            shipit_edge::server::run(shipit_edge::EdgeOptions { listen, dir }).await?;
            Ok(())
        }
        EdgeCommand::Status { edge, json } => {
            let (dir, _) = locate(global, &edge)?;
            if shipit_edge::daemon::find(&dir).is_none() {
                return Err(Failure::new(
                    exit::PLATFORM,
                    format!("no edge is running in {}", dir.display()),
                )
                .hint("`shipit release` starts it, or run `shipit edge run`"));
            }
            let client = shipit_edge::AdminClient::new(dir.join(shipit_edge::ADMIN_SOCKET));
            let status = client.status().await?;
            if json {
                printer.json(&status);
            } else {
                printer.data(&format!(
                    "edge pid {} listening on {} (dir {}, log {})",
                    status.pid,
                    status.listen,
                    dir.display(),
                    dir.join(shipit_edge::LOG_FILE).display()
                ));
                for route in &status.routes {
                    match &route.live {
                        Some(b) => printer.data(&format!(
                            "  {} → {} slot, release {} at {}",
                            route.service, b.slot, b.release, b.addr
                        )),
                        None => printer.data(&format!("  {} → no live slot", route.service)),
                    }
                }
            }
            Ok(())
        }
        EdgeCommand::Stop { edge, json } => {
            let (dir, _) = locate(global, &edge)?;
            let outcome = if shipit_edge::daemon::find(&dir).is_none() {
                StopOutcome::NotRunning
            } else {
                shipit_edge::daemon::stop(&dir, shipit_edge::DEFAULT_STOP_TIMEOUT).await?
            };
            let stopped = Stopped::new(dir, &outcome);
            if json {
                printer.json(&stopped);
            } else if stopped.pid.is_none() {
                printer.data(&format!("no edge is running in {}", stopped.dir.display()));
            } else {
                printer.data(&format!("stopped the edge in {}", stopped.dir.display()));
            }
            Ok(())
        }
    }
}

/// The `edge stop --json` shape.
#[derive(Debug, serde::Serialize)]
struct Stopped {
    dir: PathBuf,
    /// The pid of the edge that was stopped; null when none was running.
    pid: Option<u32>,
    /// `not_running`, `shut_down` (it answered `/shutdown`), `terminated` (SIGTERM) or
    /// `killed` (still running at the deadline).
    how: &'static str,
}

impl Stopped {
    fn new(dir: PathBuf, outcome: &StopOutcome) -> Stopped {
        let (pid, how) = match outcome {
            StopOutcome::NotRunning => (None, "not_running"),
            StopOutcome::ShutDown { pid } => (Some(*pid), "shut_down"),
            StopOutcome::Terminated { pid } => (Some(*pid), "terminated"),
            StopOutcome::Killed { pid } => (Some(*pid), "killed"),
        };
        Stopped { dir, pid, how }
    }
}
