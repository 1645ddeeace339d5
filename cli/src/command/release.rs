//! `shipit release` and `shipit rollback`.

use shipit_pipeline::event::Reporter;
use shipit_pipeline::history::{Outcome, ReleaseRecord};
use shipit_pipeline::lock::Holder;
use shipit_pipeline::platform::Platform;
use shipit_pipeline::release::{self, ReleaseError, ReleaseInput};
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use shipit_pipeline::config::Config;
use shipit_pipeline::version;

use super::select;
use crate::args::{Global, Selection};
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

pub fn input(
    version: String,
    revision: Option<shipit_pipeline::git::Revision>,
    modules: BTreeMap<String, String>,
) -> ReleaseInput {
    ReleaseInput {
        version,
        revision,
        modules,
        cancel: cancel_on_signal(),
        no_promote: false,
    }
}

/// The version step: the module versions that go into the image, applied first (commit and
/// tags) unless `--no-version`. A dirty work tree skips the apply with a warning rather than
/// failing the release; the image then records the versions the files hold.
fn module_versions(
    config: &Config,
    no_version: bool,
    printer: Printer,
) -> Result<BTreeMap<String, String>, Failure> {
    if config.modules.is_empty() {
        return Ok(BTreeMap::new());
    }
    if no_version {
        printer.info("--no-version: module versions are taken from their files as they are");
        return Ok(version::current(config)?);
    }
    let step = version::prepare_release(config)?;
    if let Some(applied) = &step.applied {
        let commit = applied
            .commit
            .as_deref()
            .map_or(String::new(), |c| format!(" in {}", &c[..c.len().min(12)]));
        printer.info(&format!(
            "versioned the modules{commit}: tagged {}",
            applied.tags.join(", ")
        ));
    }
    if let Some(why) = &step.skipped {
        printer.warn(why);
    }
    let listed: Vec<String> = step
        .modules
        .iter()
        .map(|(name, v)| format!("{name} {v}"))
        .collect();
    printer.info(&format!("modules: {}", listed.join(", ")));
    Ok(step.modules)
}

pub async fn release(
    global: &Global,
    selection: &Selection,
    options: Options,
    printer: Printer,
) -> Result<(), Failure> {
    let Options {
        no_version,
        no_promote,
        json,
    } = options;
    let selected = select(global, selection).await?;
    // The lock comes first: the version step commits and tags, and two releases must not.
    let lock = selected
        .platform
        .locks()
        .acquire(&Holder::current("release"))
        .await
        .map_err(ReleaseError::from)?;
    // Before the revision is read: applying versions makes the commit the app is built from.
    let modules = match module_versions(&selected.config, no_version, printer) {
        Ok(modules) => modules,
        Err(failure) => {
            // A remote lock does not free itself: give it back before failing.
            if let Err(e) = lock.release().await {
                printer.warn(&format!("releasing the lock failed: {e}"));
            }
            return Err(failure);
        }
    };
    let revision = shipit_pipeline::git::revision(&selected.service.context).unwrap_or(None);
    let version = revision
        .as_ref()
        .map_or_else(|| "untracked".to_string(), |r| r.version());
    printer.info(&format!(
        "releasing {} {version} to {}",
        selected.service.name,
        selected.platform.describe()
    ));
    let input = ReleaseInput {
        no_promote,
        ..input(version, revision, modules)
    };
    // The state machine's future is large; keep it off the stack.
    let record = Box::pin(release::release_locked(
        &selected.platform,
        lock,
        &input,
        &reporter(printer),
    ))
    .await?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}

/// A run that needs no build input: it acts on what already runs.
#[derive(Debug, Clone, Copy)]
pub enum Rerun {
    /// `shipit rollback`: make the release live before the current one live again.
    Rollback,
    /// `shipit promote`: make the release staged by `shipit release --no-promote` live.
    Promote,
}

pub async fn rerun(
    global: &Global,
    selection: &Selection,
    json: bool,
    printer: Printer,
    what: Rerun,
) -> Result<(), Failure> {
    let selected = select(global, selection).await?;
    let doing = match what {
        Rerun::Rollback => "rolling back",
        Rerun::Promote => "promoting the staged release of",
    };
    printer.info(&format!(
        "{doing} {} on {}",
        selected.service.name,
        selected.platform.describe()
    ));
    let input = input(String::new(), None, BTreeMap::new());
    let reporter = reporter(printer);
    // The state machine's future is large; keep it off the stack.
    let record = match what {
        Rerun::Rollback => Box::pin(release::rollback(&selected.platform, &input, &reporter)).await,
        Rerun::Promote => Box::pin(release::promote(&selected.platform, &input, &reporter)).await,
    }?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}
