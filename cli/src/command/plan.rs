//! `shipit plan` (and `release --dry-run`): what `shipit release` would do now, found without
//! doing any of it. The target's kind makes the plan (`pipeline/src/platform/<kind>/plan.rs`),
//! on a platform opened read-only; this prints it.

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

/// Prints the plan of `selected`, which was opened read-only, with the service's env values
/// hidden unless `show_secrets`.
pub async fn run(
    selected: &Selected,
    json: bool,
    show_secrets: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let mut plan = Box::pin(selected.platform.plan(&selected.config)).await?;
    plan.redact_env(&selected.service.hidden_env_names(show_secrets));
    if json {
        printer.json(&plan);
    } else {
        for line in plan.lines() {
            printer.data(&line);
        }
    }
    Ok(())
}
