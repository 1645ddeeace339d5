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
            object.insert(
                "warmup".into(),
                serde_json::to_value(&selected.service.warmup).unwrap_or_default(),
            );
        }
        printer.json(&doc);
    } else {
        for line in plan.lines() {
            printer.data(&line);
        }
        if let Some(migrate) = &selected.service.hooks.migrate {
            printer.data(&format!(
                "hook migrate: {} in a one-off container (ecs: a task) of the new image (timeout \
                 {}), before verify; a failure fails the release",
                shipit_pipeline::migrate::shown(&migrate.command),
                duration(migrate.timeout)
            ));
        }
        if let Some(warmup) = &selected.service.warmup {
            printer.data(&format!(
                "warm-up: {} requests on {}, {} at a time, after verify and before traffic \
                 moves{}",
                warmup.requests,
                warmup.paths.join(", "),
                warmup.concurrency,
                warmup.max_p99.map_or(String::new(), |m| format!(
                    "; fails over a p99 of {}",
                    duration(m)
                ))
            ));
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
                duration(hook.timeout)
            ));
        }
    }
    Ok(())
}

fn duration(d: std::time::Duration) -> String {
    jiff::SignedDuration::try_from(d).map_or_else(|_| format!("{d:?}"), |d| format!("{d:#}"))
}
