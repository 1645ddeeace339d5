//! `shipit pause`, `resume` and `maintenance on|off`: the gate in front of a service's
//! traffic, changed at the edge (`pipeline/src/platform/gate.rs`).

use serde::Serialize;
use shipit_pipeline::platform::Platform;
use shipit_pipeline::platform::gate::Gate;
pub use shipit_pipeline::platform::gate::GateChange;

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

/// The `--json` shape of each of these commands.
#[derive(Serialize)]
struct Output<'a> {
    service: &'a str,
    target: &'a str,
    #[serde(flatten)]
    gate: &'a Gate,
}

pub async fn run(
    selected: &Selected,
    change: &GateChange,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let gate = selected.platform.gate(change).await?;
    let (service, target) = (&selected.service.name, &selected.target.name);
    if json {
        printer.json(&Output {
            service,
            target,
            gate: &gate,
        });
        return Ok(());
    }
    let line = match change {
        GateChange::Pause { timeout } => format!(
            "{service} on {target} is paused: new requests are held until `shipit resume`, or \
             for {} (then answered 503 with Retry-After); requests in flight finish",
            humantime::format_duration(*timeout)
        ),
        GateChange::Resume if gate.released.is_none() => {
            format!("{service} on {target} was not paused: nothing to resume")
        }
        GateChange::Resume => format!(
            "{service} on {target} is resumed: {} held requests went on to the live slot",
            gate.released.unwrap_or(0)
        ),
        GateChange::MaintenanceOn { .. } => format!(
            "{service} on {target} is under maintenance: every request is answered 503 with \
             the page and Retry-After, until `shipit maintenance off`"
        ),
        GateChange::MaintenanceOff => format!("{service} on {target} is served again"),
    };
    printer.data(&line);
    if gate.maintenance.is_some() && !matches!(change, GateChange::MaintenanceOn { .. }) {
        printer.warn("maintenance is still on: `shipit maintenance off` serves the service again");
    }
    Ok(())
}
