//! The one place output is written. Data goes to stdout; progress, warnings and errors go to
//! stderr as plain timestamped lines.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

use shipit_pipeline::event::Event;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub quiet: bool,
    pub color: bool,
}

impl Printer {
    pub fn new(quiet: bool) -> Printer {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stderr().is_terminal();
        Printer { quiet, color }
    }

    fn stamp() -> String {
        jiff::Zoned::now().strftime("%H:%M:%S%.3f").to_string()
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A progress line on stderr.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            eprintln!("{} {text}", self.paint("2", &Self::stamp()));
        }
    }

    pub fn warn(&self, text: &str) {
        eprintln!(
            "{} {} {text}",
            self.paint("2", &Self::stamp()),
            self.paint("33", "warning:")
        );
    }

    /// The one-line cause and the hint of a failed command.
    pub fn error(&self, cause: &str, hint: Option<&str>) {
        eprintln!("{} {cause}", self.paint("31;1", "error:"));
        if let Some(hint) = hint {
            eprintln!("{} {hint}", self.paint("36", "hint:"));
        }
    }

    pub fn event(&self, event: &Event) {
        match event {
            Event::PhaseStarted { phase } => self.info(&format!("▶ {phase}")),
            Event::PhaseFinished { phase, elapsed, ok } => {
                let mark = if *ok { "✓" } else { "✗" };
                self.info(&format!("{mark} {phase} ({} ms)", elapsed.as_millis()))
            }
            Event::Progress { phase, message } => self.info(&format!("  {phase}: {message}")),
            Event::Warning { message } => self.warn(message),
        }
    }

    /// Data for the user or a script, on stdout.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }

    pub fn json(&self, value: &impl serde::Serialize) {
        self.data(&serde_json::to_string_pretty(value).expect("output serializes"));
    }
}
