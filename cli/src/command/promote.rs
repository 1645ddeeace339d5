//! `shipit promote`: make the release staged by `shipit release --no-promote` live.

use std::collections::BTreeMap;

use shipit_pipeline::platform::Platform;
use shipit_pipeline::release;

use super::release::{input, print_result, reporter};
use super::select;
use crate::args::{Global, Selection};
use crate::exit::Failure;
use crate::printer::Printer;

pub async fn run(
    global: &Global,
    selection: &Selection,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let selected = select(global, selection).await?;
    printer.info(&format!(
        "promoting the staged release of {} on {}",
        selected.service.name,
        selected.platform.describe()
    ));
    let record = Box::pin(release::promote(
        &selected.platform,
        &input(String::new(), None, BTreeMap::new()),
        &reporter(printer),
    ))
    .await?;
    print_result(printer, json, selected.platform.url(), &record);
    Ok(())
}
