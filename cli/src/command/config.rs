//! `shipit config check`: validate the config and print what it resolves to.

use super::load_config;
use crate::args::{ConfigCommand, Global};
use crate::exit::Failure;
use crate::printer::Printer;

pub fn run(global: &Global, command: ConfigCommand, printer: Printer) -> Result<(), Failure> {
    match command {
        ConfigCommand::Check { json } => {
            // Env values are secrets: printed as <redacted> unless asked for.
            let config = load_config(global)?.redacted(global.show_secrets);
            if json {
                printer.json(&config);
            } else {
                printer.info(&format!("{} is valid", config.path.display()));
                let text = toml::to_string_pretty(&config).map_err(|e| {
                    Failure::new(
                        crate::exit::UNEXPECTED,
                        format!("cannot print the config: {e}"),
                    )
                })?;
                printer.data(&text);
            }
            Ok(())
        }
    }
}
