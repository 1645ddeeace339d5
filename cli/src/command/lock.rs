//! `shipit lock status` and `shipit lock release [--force]`: the release lock, seen and broken.
//!
//! A local target's lock is a `flock` the kernel frees when its holder dies, so it never needs
//! breaking. An ecs target's lock is an SSM parameter: a run that died leaves it, and the next
//! release is refused (exit 3) naming the holder until someone breaks it. Without `--force`
//! only a lock whose holder ran on this host and is gone is broken; `--force` breaks any.

use serde::Serialize;
use shipit_pipeline::lock::{Holder, hostname};
use shipit_pipeline::platform::Platform;

use super::select;
use crate::args::{Global, LockCommand};
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// The `lock status --json` and `lock release --json` shape.
#[derive(Debug, Serialize)]
struct LockReport {
    service: String,
    target: String,
    /// Where the lock lives: a file, or `SSM /shipit/<cluster>/<service>/lock`.
    store: String,
    /// `status`: who holds it now. `release`: who held it (null: it was free).
    holder: Option<Holder>,
    /// `release` only: whether the lock was broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    released: Option<bool>,
}

/// Whether a holder ran on this host and its process is gone.
fn dead_here(holder: &Holder) -> bool {
    holder.host == hostname() && !std::path::Path::new(&format!("/proc/{}", holder.pid)).exists()
}

pub async fn run(global: &Global, command: LockCommand, printer: Printer) -> Result<(), Failure> {
    let (selection, force, json, release) = match &command {
        LockCommand::Status { selection, json } => (selection, false, *json, false),
        LockCommand::Release {
            selection,
            force,
            json,
        } => (selection, *force, *json, true),
    };
    let selected = select(global, selection).await?;
    let platform = &selected.platform;
    let store = platform.locks();
    let holder = store.holder().await?;
    let mut report = LockReport {
        service: selected.service.name.clone(),
        target: selected.target.name.clone(),
        store: store.describe(),
        holder,
        released: None,
    };
    if release {
        match &report.holder {
            None => report.released = Some(false),
            Some(holder) if force || dead_here(holder) => {
                report.holder = store.force_release().await?;
                report.released = Some(true);
            }
            Some(holder) => {
                return Err(Failure::new(
                    exit::LOCKED,
                    format!("the lock in {} is held: {holder}", report.store),
                )
                .hint(format!(
                    "if that run is dead, break the lock with `shipit lock release --force --target {}`",
                    report.target
                )));
            }
        }
    }
    if json {
        printer.json(&report);
        return Ok(());
    }
    let line = match (release, &report.holder, report.released) {
        (false, Some(holder), _) => format!("held by {holder}\n  in {}", report.store),
        (false, None, _) => format!("free ({})", report.store),
        (true, Some(holder), _) => format!(
            "broke the lock in {}; it was held by {holder}",
            report.store
        ),
        (true, None, _) => format!("the lock in {} was free; nothing to release", report.store),
    };
    printer.data(&line);
    Ok(())
}
