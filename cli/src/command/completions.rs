//! `shipit completions <shell>` and `shipit man`: generated from the clap definitions, so they
//! always list the commands and flags this binary has.

use std::path::Path;

use clap::CommandFactory;

use crate::args::Cli;
use crate::exit::{self, Failure};
use crate::printer::Printer;

pub fn completions(shell: clap_complete::Shell, printer: Printer) -> Result<(), Failure> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "shipit", &mut script);
    printer.bytes(&script);
    Ok(())
}

pub fn man(dir: Option<&Path>, printer: Printer) -> Result<(), Failure> {
    let command = Cli::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| {
                    Failure::new(exit::UNEXPECTED, format!("cannot render the man page: {e}"))
                })?;
            printer.bytes(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(command, dir))
                .map_err(|e| {
                    Failure::new(
                        exit::UNEXPECTED,
                        format!("cannot write the man pages into {}: {e}", dir.display()),
                    )
                    .hint("pass a folder you can write to with --dir")
                })?;
            printer.info(&format!("wrote the man pages into {}", dir.display()));
        }
    }
    Ok(())
}
