//! `shipit release` and `shipit rollback`.

use shipit_pipeline::event::Reporter;
use shipit_pipeline::history::ReleaseRecord;
use shipit_pipeline::platform::Platform;
use shipit_pipeline::release::{self, ReleaseInput};
use tokio_util::sync::CancellationToken;

use super::select;
use crate::args::{Global, Selection};
use crate::exit::Failure;
use crate::printer::Printer;

/// Fires the token on the first Ctrl-C or SIGTERM, so the release stops at a safe point.
fn cancel_on_signal() -> CancellationToken {
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

fn reporter(printer: Printer) -> Reporter {
    Reporter::new(move |event| printer.event(&event))
}

/// The JSON shape of a finished release or rollback: the record plus where it is served.
#[derive(serde::Serialize)]
struct Output<'a> {
    url: String,
    #[serde(flatten)]
    record: &'a ReleaseRecord,
}

fn print_result(printer: Printer, json: bool, url: String, record: &ReleaseRecord) {
    if json {
        printer.json(&Output { url, record });
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

fn input(version: String, revision: Option<shipit_pipeline::git::Revision>) -> ReleaseInput {
    ReleaseInput {
        version,
        revision,
        modules: Default::default(),
        cancel: cancel_on_signal(),
    }
}

pub async fn release(
    global: &Global,
    selection: &Selection,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let selected = select(global, selection).await?;
    let revision = shipit_pipeline::git::revision(&selected.service.context).unwrap_or(None);
    let version = revision
        .as_ref()
        .map_or_else(|| "untracked".to_string(), |r| r.version());
    printer.info(&format!(
        "releasing {} {version} to {}",
        selected.service.name,
        selected.platform.describe()
    ));
    // The state machine's future is large; keep it off the stack.
    let record = Box::pin(release::release(
        &selected.platform,
        &input(version, revision),
        &reporter(printer),
    ))
    .await?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}

pub async fn rollback(
    global: &Global,
    selection: &Selection,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let selected = select(global, selection).await?;
    printer.info(&format!(
        "rolling back {} on {}",
        selected.service.name,
        selected.platform.describe()
    ));
    let record = Box::pin(release::rollback(
        &selected.platform,
        &input(String::new(), None),
        &reporter(printer),
    ))
    .await?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}
