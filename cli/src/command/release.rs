//! `shipit release`, `shipit rollback` and `shipit promote`: the pipeline runs them; this
//! wires Ctrl-C to their cancel token and prints the record.

use shipit_pipeline::event::Reporter;
use shipit_pipeline::history::{Outcome, ReleaseRecord};
use shipit_pipeline::platform::Platform;
use shipit_pipeline::release::{self, ReleaseError, ReleaseOptions};
use shipit_pipeline::secret::Secrets;
use tokio_util::sync::CancellationToken;

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

/// The flags of `shipit release`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub no_version: bool,
    pub no_promote: bool,
    pub json: bool,
}

/// Fires the token on the first Ctrl-C or SIGTERM, so the release stops at a safe point.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        fire.cancel();
    });
    token
}

pub fn reporter(printer: Printer) -> Reporter {
    Reporter::new(move |event| printer.event(&event))
}

/// The JSON shape of a finished release or rollback: the record plus where it is served.
#[derive(serde::Serialize)]
struct Output<'a> {
    url: String,
    #[serde(flatten)]
    record: &'a ReleaseRecord,
}

pub fn print_result(printer: Printer, json: bool, url: String, record: &ReleaseRecord) {
    if json {
        printer.json(&Output { url, record });
    } else if let Outcome::Staged { preview } = &record.outcome {
        let slot = record.slot.map_or("?".to_string(), |s| s.to_string());
        printer.data(&format!(
            "release {} is staged in the {slot} slot, beside the live release; it takes no live traffic",
            record.serves
        ));
        if let Some(preview) = preview {
            printer.data(&format!("preview it at {preview}"));
        }
        printer.data("make it live with `shipit promote`");
    } else {
        let slot = record.slot.map_or("?".to_string(), |s| s.to_string());
        let took = record
            .duration()
            .map_or(String::new(), |d| format!(" in {} ms", d.as_millis()));
        printer.data(&format!(
            "release {} is live in the {slot} slot at {url}{took}",
            record.serves
        ));
    }
}

pub async fn release(
    selected: &Selected,
    options: Options,
    printer: Printer,
) -> Result<(), Failure> {
    let Options {
        no_version,
        no_promote,
        json,
    } = options;
    let options = ReleaseOptions {
        no_version,
        no_promote,
        cancel: cancel_on_signal(),
    };
    // The state machine's future is large; keep it off the stack.
    let result = Box::pin(release::release(
        &selected.platform,
        &selected.config,
        &selected.service,
        &options,
        &reporter(printer),
    ))
    .await;
    notify(selected, "release", &result, printer).await;
    let record = result?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}

/// Tells the `[notify]` webhook, if there is one, how the run ended. A failed post is a
/// warning: it never changes the run's outcome or exit code.
async fn notify(
    selected: &Selected,
    action: &str,
    result: &Result<ReleaseRecord, ReleaseError>,
    printer: Printer,
) {
    let Some(notify) = &selected.config.notify else {
        return;
    };
    let (record, cause) = match result {
        Ok(record) => (Some(record), None),
        Err(ReleaseError::Phase { record, .. } | ReleaseError::Interrupted { record, .. }) => {
            (Some(&**record), None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let mut message = shipit_pipeline::notify::message(
        action,
        &selected.service.name,
        &selected.target.name,
        &selected.platform.url(),
        record,
        cause.as_deref(),
    );
    // A cause may quote an env value or a secret read from AWS.
    let hidden = [
        Secrets::of_service(&selected.service),
        Secrets::of_config(&selected.config, false),
        shipit_pipeline::secret::resolved(),
    ];
    for secrets in &hidden {
        message.text = secrets.scrub(&message.text).into_owned();
        message.shipit.cause = message
            .shipit
            .cause
            .as_deref()
            .map(|c| secrets.scrub(c).into_owned());
    }
    if let Err(e) = shipit_pipeline::notify::post(&notify.webhook, &message, notify.timeout).await {
        printer.warn(&format!("notify: {e}; the {action} itself is not affected"));
    }
}

/// A run that needs no build input: it acts on what already runs.
#[derive(Debug, Clone)]
pub enum Rerun {
    /// `shipit rollback`: make the release live before the current one live again, or the
    /// release `to`.
    Rollback { to: Option<String> },
    /// `shipit promote`: make the release staged by `shipit release --no-promote` live.
    Promote,
}

pub async fn rerun(
    selected: &Selected,
    json: bool,
    printer: Printer,
    what: Rerun,
) -> Result<(), Failure> {
    let (cancel, reporter) = (cancel_on_signal(), reporter(printer));
    let action = match what {
        Rerun::Rollback { .. } => "rollback",
        Rerun::Promote => "promote",
    };
    // The state machine's future is large; keep it off the stack.
    let result = match what {
        Rerun::Rollback { to } => {
            Box::pin(release::rollback(
                &selected.platform,
                to.as_deref(),
                cancel,
                &reporter,
            ))
            .await
        }
        Rerun::Promote => Box::pin(release::promote(&selected.platform, cancel, &reporter)).await,
    };
    notify(selected, action, &result, printer).await;
    let record = result?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}
