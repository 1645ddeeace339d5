//! `shipit down`: remove the service's containers and route from the target.

use serde::Serialize;
use shipit_pipeline::event::Reporter;
use shipit_pipeline::platform::{Live, Platform};

use super::{TargetPlatform, select};
use crate::args::{Global, Selection};
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

pub async fn run(
    global: &Global,
    selection: &Selection,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let selected = select(global, selection).await?;
    let platform = &selected.platform;
    // Best effort: `down` must still clean up when the edge is broken.
    let was_live = platform.live().await.ok().flatten();
    let reporter = Reporter::new(move |e| printer.event(&e));
    platform.down(&reporter).await?;
    let down = Down {
        service: selected.service.name.clone(),
        target: selected.target.name.clone(),
        was_live,
        edge_running: match platform {
            TargetPlatform::Local(local) => {
                shipit_edge::daemon::find(&local.paths().edge_dir).is_some()
            }
            TargetPlatform::Ecs(_) => false,
        },
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
