//! `shipit verify`: preflight for an ecs target. Checks that what a release needs exists in
//! the account (roles, log group, image, secrets, subnets, security groups, target groups),
//! and creates a missing log group when the target sets `create_log_group = true`.

use shipit_pipeline::platform::ecs::preflight::Status;
use shipit_pipeline::platform::target::TargetPlatform;

use super::Selected;
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// Prints every check; exits [`exit::PLATFORM`] when one failed.
pub async fn run(selected: &Selected, json: bool, printer: Printer) -> Result<(), Failure> {
    let TargetPlatform::Ecs(platform) = &selected.platform else {
        return Err(Failure::new(
            exit::CONFIG,
            format!(
                "target {} is a local target: `shipit verify` checks an AWS account",
                selected.target.name
            ),
        )
        .hint("give an ecs target with -t; a local release needs only the Docker engine"));
    };
    let preflight = platform.verify_account().await.map_err(Failure::from)?;
    let failure = preflight.error(&selected.target.name).map(Failure::from);
    if json {
        // One document: the checks, and the error a failed command prints as JSON.
        let mut doc = serde_json::json!({
            "target": selected.target.name,
            "service": selected.service.name,
            "passed": preflight.passed(),
            "checks": preflight.checks,
        });
        if let Some(failure) = &failure {
            doc["error"] = failure.to_json()["error"].clone();
        }
        printer.json(&doc);
        return match failure {
            Some(failure) => Err(Failure::silent(failure.code)),
            None => Ok(()),
        };
    }
    for check in &preflight.checks {
        printer.data(&format!(
            "{:<9} {:<14} {}  ({}): {}",
            check.status.word(),
            check.what,
            check.subject,
            check.key,
            check.detail
        ));
        if check.status != Status::Ok
            && let Some(hint) = &check.hint
        {
            printer.data(&format!("{:<9} hint: {hint}", ""));
        }
    }
    match failure {
        Some(failure) => Err(failure),
        None => {
            printer.data(&format!(
                "preflight passed: {} checks for {} on target {}",
                preflight.checks.len(),
                selected.service.name,
                selected.target.name
            ));
            Ok(())
        }
    }
}
