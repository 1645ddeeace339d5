//! The `shipit` binary: parses arguments, runs a command, prints, and maps errors to exit
//! codes. Everything else lives in the `shipit-pipeline` and `shipit-edge` libraries.

mod args;
mod command;
mod exit;
mod printer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // The HTTP/2 layer warns about what clients do (a stream reset flood, for one); the
    // edge counts and logs those itself, within its per-second budget. rustls warns once
    // per handshake about what a client sent (an IP address as its SNI name): a client
    // could fill the edge's log with those.
    let default_level = if cli.global.verbose {
        "debug"
    } else {
        "warn,h2=error,rustls=error"
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(printer::LogWriter)
        // The detached edge's stderr is its log file: colour only on a terminal.
        .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
        .init();
    let printer = printer::Printer::new(cli.global.quiet);
    let json = cli.command.json();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"), None);
            return ExitCode::from(exit::UNEXPECTED);
        }
    };
    match runtime.block_on(command::run(cli, printer)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) if failure.cause.is_empty() => failure.exit_code(),
        Err(failure) => {
            printer.error(&failure.cause, failure.hint.as_deref());
            if json {
                printer.json(&failure.to_json());
            }
            failure.exit_code()
        }
    }
}
