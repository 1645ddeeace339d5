//! `shipit down`: remove the service's containers and route from the target.

use shipit_pipeline::event::Reporter;
use shipit_pipeline::platform::Platform;

use super::select;
use crate::args::{Global, Selection};
use crate::exit::Failure;
use crate::printer::Printer;

pub async fn run(global: &Global, selection: &Selection, printer: Printer) -> Result<(), Failure> {
    let selected = select(global, selection).await?;
    let reporter = Reporter::new(move |e| printer.event(&e));
    selected.platform.down(&reporter).await?;
    printer.data(&format!(
        "{} is down on {}; its history is kept",
        selected.service.name,
        selected.platform.describe()
    ));
    Ok(())
}
