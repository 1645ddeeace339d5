//! `shipit lock status` and `shipit lock release [--force]`: the release lock, seen and broken.
//!
//! A local target's lock is a `flock` the kernel frees when its holder dies, so it never needs
//! breaking: the record a dead run left is only cleared. An ecs target's lock is an SSM
//! parameter: a run that died leaves it, and the next release is refused (exit 3) naming the
//! holder until someone breaks it. Without `--force` a held lock is never broken, whatever
//! pid or host its record names (those say nothing about a process in another PID namespace
//! or on another machine); `--force` breaks any.

use serde::Serialize;
use shipit_pipeline::lock::{Holder, LockError};
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
    /// `release` only: whether the lock was broken (or the record a dead run left cleared).
    #[serde(skip_serializing_if = "Option::is_none")]
    released: Option<bool>,
}

/// The refusal of `lock release` without `--force` on a held lock.
fn refusal(store: &str, target: &str, holder: Option<&Holder>) -> Failure {
    let who = holder.map_or_else(
        || "a process whose holder record is unreadable".to_string(),
        Holder::to_string,
    );
    Failure::new(
        exit::LOCKED,
        format!("the lock in {store} is held by {who}; without --force a held lock is not broken"),
    )
    .hint(format!(
        "wait for that run to finish; if it is dead (on ecs, or stuck), break the lock with \
         `shipit lock release --force --target {target}`"
    ))
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
    let (target, described) = (selected.target.name.clone(), store.describe());
    let held = |e: LockError| match e {
        LockError::Held { holder, .. } | LockError::HeldRemote { holder, .. } => {
            refusal(&described, &target, Some(&holder))
        }
        LockError::HeldUnknown { .. } => refusal(&described, &target, None),
        other => other.into(),
    };
    let holder = match (release, force) {
        // Forced: whatever holds it, unreadable record or not.
        (true, true) => None,
        (true, false) => store.holder().await.map_err(&held)?,
        (false, _) => store.holder().await?,
    };
    let mut report = LockReport {
        service: selected.service.name.clone(),
        target: target.clone(),
        store: described.clone(),
        holder,
        released: None,
    };
    if release {
        if force {
            report.holder = store.force_release().await?;
            report.released = Some(true);
        } else if let Some(holder) = &report.holder {
            return Err(refusal(&described, &target, Some(holder)));
        } else {
            // Free: only the record a run that died left, if any, is cleared; a run that
            // took the lock meanwhile is refused here, by the lock itself.
            report.holder = store.clear_stale().await.map_err(&held)?;
            report.released = Some(report.holder.is_some());
        }
    }
    if json {
        printer.json(&report);
        return Ok(());
    }
    let line = match (release, &report.holder, report.released) {
        (false, Some(holder), _) => format!("held by {holder}\n  in {}", report.store),
        (false, None, _) => format!("free ({})", report.store),
        (true, Some(holder), _) if force => format!(
            "broke the lock in {}; it was held by {holder}",
            report.store
        ),
        (true, Some(holder), _) => format!(
            "the lock in {} was free; cleared the record left by a run that died: {holder}",
            report.store
        ),
        (true, None, _) => format!("the lock in {} was free; nothing to release", report.store),
    };
    printer.data(&line);
    Ok(())
}
