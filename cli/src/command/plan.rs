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
    let hooks = selected.service.hooks.listed();
    if json {
        let mut doc = serde_json::to_value(&plan).map_err(|e| {
            Failure::new(crate::exit::UNEXPECTED, format!("internal: the plan: {e}"))
        })?;
        if let Some(object) = doc.as_object_mut() {
            object.insert(
                "hooks".into(),
                serde_json::to_value(&selected.service.hooks).unwrap_or_default(),
            );
        }
        printer.json(&doc);
    } else {
        for line in plan.lines() {
            printer.data(&line);
        }
        for (name, hook) in hooks {
            let when = match name {
                "pre_switch" => "after verify, before traffic moves; a failure fails the release",
                "post_release" => "once live; a failure warns",
                _ => "after a failed release; a failure warns",
            };
            printer.data(&format!(
                "hook {name}: `{}` (timeout {}), {when}",
                hook.command,
                jiff::SignedDuration::try_from(hook.timeout)
                    .map_or_else(|_| format!("{:?}", hook.timeout), |d| format!("{d:#}"))
            ));
        }
    }
    Ok(())
}
