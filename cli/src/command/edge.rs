//! `shipit edge run|upgrade|reload|status|stop`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shipit_edge::daemon::StopOutcome;
use shipit_edge::{Settings, TakeOver};
use shipit_pipeline::config::TargetEdge;

use super::load_config;
use crate::args::{EdgeCommand, EdgeLocation, Global};
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// How much longer than its grace period an upgraded edge's predecessor is waited for.
const FINISH_MARGIN: Duration = Duration::from_secs(5);

/// An edge directory, and the config target it belongs to when one was read.
struct Located {
    dir: PathBuf,
    target: Option<ConfiguredEdge>,
}

/// A target's edge, as the config sets it.
struct ConfiguredEdge {
    /// The config file, which the new process of an upgrade reads again.
    config: PathBuf,
    edge: TargetEdge,
}

impl Located {
    fn listen(&self) -> Option<SocketAddr> {
        self.target.as_ref().map(|t| t.edge.listen)
    }

    /// The settings the config gives the edge; `None` without a config.
    fn settings(&self) -> Option<Settings> {
        self.target
            .as_ref()
            .map(|t| t.edge.settings.edge(t.edge.drain_timeout))
    }
}

/// The edge directory from `--dir`, or the config's state dir and target. With `settings`,
/// the config is also read when `--dir` comes with `--target`, for the target's settings.
fn locate(global: &Global, edge: &EdgeLocation, settings: bool) -> Result<Located, Failure> {
    if let Some(dir) = &edge.dir
        && (!settings || edge.target.is_none())
    {
        return Ok(Located {
            dir: dir.clone(),
            target: None,
        });
    }
    let config = load_config(global)?;
    let configured = config.edge(edge.target.as_deref())?;
    Ok(Located {
        dir: edge.dir.clone().unwrap_or_else(|| configured.dir.clone()),
        target: Some(ConfiguredEdge {
            config: config.path.clone(),
            edge: configured,
        }),
    })
}

fn not_running(dir: &std::path::Path) -> Failure {
    Failure::new(
        exit::PLATFORM,
        format!("no edge is running in {}", dir.display()),
    )
    .hint("`shipit release` starts it, or run `shipit edge run`")
}

pub async fn run(global: &Global, command: EdgeCommand, printer: Printer) -> Result<(), Failure> {
    match command {
        EdgeCommand::Run {
            edge,
            listen,
            take_over,
        } => {
            let located = locate(global, &edge, true)?;
            let listen = listen.or(located.listen());
            let settings = located.settings();
            if take_over {
                shipit_edge::server::run_taking_over(TakeOver {
                    dir: located.dir,
                    listen,
                    settings,
                })
                .await?;
                return Ok(());
            }
            let listen = listen.ok_or_else(|| {
                Failure::new(exit::CONFIG, "the edge needs an address to listen on")
                    .hint("pass --listen ADDR, or run it from a config with a local target")
            })?;
            shipit_edge::server::run_settings(
                shipit_edge::EdgeOptions {
                    listen,
                    dir: located.dir,
                },
                settings.unwrap_or_default(),
            )
            .await?;
            Ok(())
        }
        EdgeCommand::Upgrade { edge, json } => {
            let located = locate(global, &edge, true)?;
            let upgraded = upgrade(&located).await?;
            let report = UpgradeReport::new(located.dir, &upgraded);
            if json {
                printer.json(&report);
            } else {
                let finished = match upgraded.old_exited_after {
                    Some(after) => format!(
                        "the old process finished its connections after {}",
                        shown(after)
                    ),
                    None => format!(
                        "the old process (pid {}) is still finishing its connections",
                        upgraded.old_pid
                    ),
                };
                printer.data(&format!(
                    "upgraded the edge in {}: pid {} → {} in {}; {finished}",
                    report.dir.display(),
                    upgraded.old_pid,
                    upgraded.new_pid,
                    shown(upgraded.took_over_after),
                ));
            }
            Ok(())
        }
        EdgeCommand::Reload { edge, json } => {
            let located = locate(global, &edge, true)?;
            let dir = &located.dir;
            if shipit_edge::daemon::find(dir).is_none() {
                return Err(not_running(dir));
            }
            let client = shipit_edge::AdminClient::new(dir.join(shipit_edge::ADMIN_SOCKET));
            let status = client.status().await?;
            let configured = located
                .target
                .as_ref()
                .and_then(|t| t.edge.settings.tls_listen);
            match (configured, status.tls_listen) {
                (Some(wanted), None) => {
                    return Err(Failure::new(
                        exit::PLATFORM,
                        format!(
                            "the edge in {} does not terminate TLS yet; the config asks for it \
                             on {wanted}",
                            dir.display()
                        ),
                    )
                    .hint("`shipit edge upgrade` starts TLS without dropping a connection"));
                }
                (Some(wanted), Some(running)) if wanted.port() != 0 && wanted != running => {
                    printer.warn(&format!(
                        "the edge serves TLS on {running}, the config says {wanted}: a reload \
                         reads certificates only; `shipit edge upgrade` moves the address"
                    ));
                }
                _ => {}
            }
            let certificates = located
                .target
                .as_ref()
                .filter(|t| t.edge.settings.tls_listen.is_some())
                .map(|t| t.edge.settings.certificate_files());
            let answer = client.reload_tls(certificates).await?;
            if json {
                printer.json(&Reloaded {
                    dir: dir.clone(),
                    certificates: answer.certificates,
                });
            } else {
                printer.data(&format!(
                    "the edge in {} serves {} certificate(s) from the next TLS handshake on:",
                    dir.display(),
                    answer.certificates.len()
                ));
                for certificate in &answer.certificates {
                    let hosts = if certificate.hosts.is_empty() {
                        "(default)".to_string()
                    } else {
                        certificate.hosts.join(", ")
                    };
                    printer.data(&format!("  {hosts} → {}", certificate.cert.display()));
                }
            }
            Ok(())
        }
        EdgeCommand::Status { edge, json } => {
            let dir = locate(global, &edge, false)?.dir;
            if shipit_edge::daemon::find(&dir).is_none() {
                return Err(not_running(&dir));
            }
            let client = shipit_edge::AdminClient::new(dir.join(shipit_edge::ADMIN_SOCKET));
            let status = client.status().await?;
            if json {
                printer.json(&status);
            } else {
                let tls = status
                    .tls_listen
                    .map(|addr| format!(", TLS on {addr}"))
                    .unwrap_or_default();
                printer.data(&format!(
                    "edge pid {} listening on {}{tls} (dir {}, log {})",
                    status.pid,
                    status.listen,
                    dir.display(),
                    dir.join(shipit_edge::LOG_FILE).display()
                ));
                if let Some(previous) = status.previous_pid {
                    printer.data(&format!(
                        "  the previous edge process (pid {previous}) is still finishing its connections"
                    ));
                }
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
            let dir = locate(global, &edge, false)?.dir;
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

/// Starts this executable as `edge run --take-over` and waits for it to take over.
async fn upgrade(located: &Located) -> Result<shipit_edge::Upgraded, Failure> {
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            exit::UNEXPECTED,
            format!("cannot find the shipit executable to start the new edge from: {e}"),
        )
    })?;
    let mut args: Vec<OsString> = Vec::new();
    if let Some(target) = &located.target {
        args.extend(["--config".into(), target.config.clone().into_os_string()]);
    }
    args.extend([
        "edge".into(),
        "run".into(),
        "--take-over".into(),
        "--dir".into(),
        located.dir.clone().into_os_string(),
    ]);
    if let Some(target) = &located.target {
        args.extend(["--target".into(), OsString::from(&target.edge.target)]);
    }
    let spec = shipit_edge::DaemonSpec {
        exe,
        args,
        dir: located.dir.clone(),
        listen: located
            .listen()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        start_timeout: shipit_edge::DEFAULT_START_TIMEOUT,
    };
    let grace = located
        .target
        .as_ref()
        .map_or(shipit_edge::DEFAULT_SHUTDOWN_GRACE, |t| {
            t.edge.drain_timeout
        });
    Ok(shipit_edge::daemon::upgrade(&spec, grace + FINISH_MARGIN).await?)
}

/// A duration as a person reads it: "85 ms", "1.2 s".
fn shown(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The `edge upgrade --json` shape.
#[derive(Debug, serde::Serialize)]
struct UpgradeReport {
    dir: PathBuf,
    old_pid: u32,
    new_pid: u32,
    /// From the start of the new process until it answered the admin socket.
    took_over_ms: u64,
    /// Until the old process had finished its connections and exited; null when it was
    /// still finishing them at the deadline.
    old_exited_ms: Option<u64>,
}

impl UpgradeReport {
    fn new(dir: PathBuf, upgraded: &shipit_edge::Upgraded) -> UpgradeReport {
        UpgradeReport {
            dir,
            old_pid: upgraded.old_pid,
            new_pid: upgraded.new_pid,
            took_over_ms: millis(upgraded.took_over_after),
            old_exited_ms: upgraded.old_exited_after.map(millis),
        }
    }
}

/// The `edge reload --json` shape.
#[derive(Debug, serde::Serialize)]
struct Reloaded {
    dir: PathBuf,
    /// The certificates now served: `{hosts, cert, key}` (`hosts` left out for the default).
    certificates: Vec<shipit_edge::CertificateFiles>,
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
