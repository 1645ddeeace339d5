//! `shipit down`: remove the service's containers and route from the target.

use serde::Serialize;
use shipit_pipeline::event::Reporter;
use shipit_pipeline::platform::{Live, Platform};

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

/// The `down --json` shape.
#[derive(Debug, Serialize)]
struct Down {
    service: String,
    target: String,
    /// What was live before: `{slot, release, since}`; null when nothing was, or the edge
    /// could not say.
    was_live: Option<Live>,
    /// Whether the target's edge still runs (it stops when its last route goes). Always
    /// false on an ecs target, whose services are scaled to zero and kept.
    edge_running: bool,
    /// The release records stay; `shipit history` still lists them.
    history_kept: bool,
}

pub async fn run(selected: &Selected, json: bool, printer: Printer) -> Result<(), Failure> {
    let platform = &selected.platform;
    // Best effort: `down` must still clean up when the edge is broken.
    let was_live = platform.live().await.ok().flatten();
    let reporter = Reporter::new(move |e| printer.event(&e));
    platform.down(&reporter).await?;
    let down = Down {
        service: selected.service.name.clone(),
        target: selected.target.name.clone(),
        was_live,
        edge_running: platform.runs_a_process(),
        history_kept: true,
    };
    if json {
        printer.json(&down);
    } else {
        printer.data(&format!(
            "{} is down on {}; its history is kept",
            down.service,
            platform.describe()
        ));
    }
    Ok(())
}
