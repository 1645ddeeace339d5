//! `shipit diff`: the task definition and service settings the next release would launch,
//! against what the live slot runs (ecs targets), as a unified diff on stdout.

use shipit_pipeline::platform::target::TargetPlatform;

use super::Selected;
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// Prints the diff of `selected`, opened read-only. With `exit_code`, a difference makes
/// the command exit [`exit::DIFFERENCES`].
pub async fn run(
    selected: &Selected,
    exit_code: bool,
    json: bool,
    show_secrets: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let TargetPlatform::Ecs(platform) = &selected.platform else {
        return Err(Failure::new(
            exit::CONFIG,
            format!(
                "target {} is a local target: `shipit diff` compares with what runs in AWS",
                selected.target.name
            ),
        )
        .hint("give an ecs target with -t; `shipit plan` shows what a local release would do"));
    };
    let hidden = selected.service.hidden_env_names(show_secrets);
    let diff = platform.diff(&hidden).await.map_err(Failure::from)?;
    if json {
        printer.json(&serde_json::json!({
            "live": diff.live,
            "changed": diff.changed(),
            "diff": diff.diff,
        }));
    } else if diff.changed() {
        for line in diff.diff.lines() {
            printer.data(line);
        }
    } else {
        printer.data(&format!(
            "no difference: the next release launches what {} runs",
            diff.live.as_deref().unwrap_or("the live slot")
        ));
    }
    if exit_code && diff.changed() {
        return Err(Failure::silent(exit::DIFFERENCES));
    }
    Ok(())
}
