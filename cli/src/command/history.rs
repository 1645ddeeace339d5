//! `shipit history`: every release attempt on the target, newest first.

use shipit_pipeline::history::{Outcome, ReleaseRecord};
use shipit_pipeline::platform::Platform;

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

pub async fn run(
    selected: &Selected,
    limit: usize,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let mut records = selected.platform.history().list().await?;
    records.truncate(limit);
    if json {
        printer.json(&records);
        return Ok(());
    }
    if records.is_empty() {
        printer.data("no releases yet");
        return Ok(());
    }
    printer.data(&format!(
        "{:<22} {:<8} {:<11} {:<5} {:<16} {:<25} {:>8}  {:<24}  CAUSE",
        "ID", "KIND", "OUTCOME", "SLOT", "VERSION", "STARTED", "TOOK", "MODULES"
    ));
    for r in &records {
        printer.data(&row(r));
    }
    Ok(())
}

fn row(r: &ReleaseRecord) -> String {
    let kind = match r.kind {
        shipit_pipeline::history::Kind::Release => "release".to_string(),
        shipit_pipeline::history::Kind::Rollback => "rollback".to_string(),
    };
    let cause = match &r.outcome {
        Outcome::Failed { cause, .. } | Outcome::Interrupted { cause } => {
            cause.lines().next().unwrap_or("").to_string()
        }
        Outcome::Staged { .. } => "staged for preview; `shipit promote` makes it live".to_string(),
        Outcome::Superseded { by } => format!("staged, then replaced by {by}"),
        _ if r.kind == shipit_pipeline::history::Kind::Rollback => format!("restored {}", r.serves),
        _ => String::new(),
    };
    let modules = if r.modules.is_empty() {
        "-".to_string()
    } else {
        r.modules
            .iter()
            .map(|(name, version)| format!("{name}@{version}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{:<22} {:<8} {:<11} {:<5} {:<16} {:<25} {:>8}  {modules:<24}  {cause}",
        r.id,
        kind,
        r.outcome.label(),
        r.slot.map_or("-".into(), |s| s.to_string()),
        r.version,
        r.started_at
            .round(jiff::Unit::Second)
            .unwrap_or(r.started_at)
            .to_string(),
        r.duration()
            .map_or("-".into(), |d| format!("{}ms", d.as_millis())),
    )
}
