//! `shipit history`: every release attempt on the target, newest first, each release that
//! went live marked with whether `shipit rollback --to` can bring it back.

use shipit_pipeline::history::{Outcome, ReleaseRecord};
use shipit_pipeline::platform::Platform;
use shipit_pipeline::release::{RollbackMark, rollback_marks};

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

/// One record as `history --json` prints it: the record, and whether it can be rolled back to.
#[derive(serde::Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    record: &'a ReleaseRecord,
    /// `live`, `available` or `image_gone` for a release that went live; null otherwise (or
    /// when the target could not be asked).
    rollback: Option<RollbackMark>,
    can_roll_back_to: bool,
}

pub async fn run(
    selected: &Selected,
    limit: usize,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let mut records = selected.platform.history().list().await?;
    records.truncate(limit);
    // The history stands on its own: a target that cannot be asked leaves the marks out.
    let marks = match rollback_marks(&selected.platform, &records).await {
        Ok(marks) => marks,
        Err(e) => {
            printer.warn(&format!(
                "cannot tell which releases can be rolled back to: {e}"
            ));
            vec![None; records.len()]
        }
    };
    if json {
        let entries: Vec<Entry<'_>> = records
            .iter()
            .zip(&marks)
            .map(|(record, mark)| Entry {
                record,
                rollback: *mark,
                can_roll_back_to: mark.is_some_and(RollbackMark::available),
            })
            .collect();
        printer.json(&entries);
        return Ok(());
    }
    if records.is_empty() {
        printer.data("no releases yet");
        return Ok(());
    }
    printer.data(&format!(
        "{:<22} {:<8} {:<11} {:<5} {:<16} {:<25} {:>8}  {:<8}  {:<24}  CAUSE",
        "ID", "KIND", "OUTCOME", "SLOT", "VERSION", "STARTED", "TOOK", "ROLLBACK", "MODULES"
    ));
    for (r, mark) in records.iter().zip(&marks) {
        printer.data(&row(r, *mark));
    }
    Ok(())
}

/// The ROLLBACK column: `yes` when `rollback --to` can bring the release back.
fn mark_text(mark: Option<RollbackMark>) -> &'static str {
    match mark {
        Some(RollbackMark::Live) => "live",
        Some(RollbackMark::Available) => "yes",
        Some(RollbackMark::ImageGone) => "gone",
        None => "-",
    }
}

fn row(r: &ReleaseRecord, mark: Option<RollbackMark>) -> String {
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
        "{:<22} {:<8} {:<11} {:<5} {:<16} {:<25} {:>8}  {:<8}  {modules:<24}  {cause}",
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
        mark_text(mark),
    )
}
