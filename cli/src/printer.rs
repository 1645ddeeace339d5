//! The one place output is written. Data goes to stdout; progress, warnings and errors go to
//! stderr, in one of three modes chosen once at start:
//!
//! - **terminal** (stderr is a TTY): a spinner per phase showing the phase's latest progress
//!   line and how long it has run, replaced by a `✓ phase (ms)` line when the phase ends; a
//!   weighted shift turns it into a bar that fills over each step's bake;
//! - **GitHub Actions** (`GITHUB_ACTIONS=true`): plain lines, each phase folded in a
//!   `::group::<phase>` … `::endgroup::` block, warnings and the final error also as
//!   `::warning::` / `::error::` annotations;
//! - **plain** (anything else: a pipe, a file, CI): timestamped lines (a bake gets a line at
//!   each quarter of its period).
//!
//! `-q` keeps only warnings, errors and data. `NO_COLOR` (set and not empty) turns colour off.
//! The spinner is process-wide state: a `Printer` is `Copy` and handed to event sinks on other
//! threads, and there is one stderr to draw on.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shipit_pipeline::event::{Event, Phase};
use shipit_pipeline::secret::Secrets;

/// How often the spinner redraws.
const SPINNER_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Terminal,
    GitHub,
    /// `SHIPIT_EVENTS=json`: one JSON object per line on stderr for every event, warning,
    /// note and error, for a program to read.
    Events,
}

/// The variable that asks for [`Mode::Events`].
pub const EVENTS_ENV: &str = "SHIPIT_EVENTS";

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub quiet: bool,
    pub color: bool,
    pub mode: Mode,
}

/// The secret values hidden in everything written to stderr (progress, warnings, errors and
/// logs), set once the config is loaded unless `--show-secrets` was given.
static SECRETS: OnceLock<Secrets> = OnceLock::new();

/// Hides `secrets` in every later line on stderr.
pub fn hide_on_stderr(secrets: Secrets) {
    let _ = SECRETS.set(secrets);
}

/// `text` with the registered secret values hidden.
/// Values read from AWS at a local launch (a service's `secrets`) are hidden too, always.
fn scrubbed(text: &str) -> std::borrow::Cow<'_, str> {
    let text = match SECRETS.get() {
        Some(secrets) => secrets.scrub(text),
        None => std::borrow::Cow::Borrowed(text),
    };
    let resolved = shipit_pipeline::secret::resolved();
    if resolved.is_empty() {
        return text;
    }
    match resolved.scrub(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(hidden) => std::borrow::Cow::Owned(hidden),
    }
}

/// The spinner of the phase in progress (terminal mode).
static SPINNER: Mutex<Option<ProgressBar>> = Mutex::new(None);
/// Whether a `::group::` is open (GitHub mode).
static GROUP_OPEN: AtomicBool = AtomicBool::new(false);
/// The last bake line printed in plain mode: step × 8 + quarter.
static LAST_BAKE_MARK: AtomicU64 = AtomicU64::new(0);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Time left, rounded up: "1s left" until it is all gone.
fn seconds_left(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// Runs `write` with the spinner, if any, cleared from the screen, so a line printed while a
/// phase runs never lands in the middle of it.
fn above_spinner<R>(write: impl FnOnce() -> R) -> R {
    let spinner = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match spinner {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Hides the secret values in every string of `value`.
fn scrub_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(hidden) = scrubbed(text) {
                *text = hidden;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_strings),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(scrub_strings),
        _ => {}
    }
}

/// Escapes a workflow command's message: the runner reads `%`, CR and LF as escapes, and an
/// unescaped newline would let a log line start a command of its own.
fn escape_command(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

impl Printer {
    pub fn new(quiet: bool) -> Printer {
        let terminal = std::io::stderr().is_terminal();
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && terminal;
        let mode = if std::env::var(EVENTS_ENV).is_ok_and(|v| v == "json") {
            Mode::Events
        } else if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
            Mode::GitHub
        } else if terminal && !quiet && std::env::var("TERM").is_ok_and(|t| t != "dumb") {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Printer { quiet, color, mode }
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

    /// A line on stderr, with secret values hidden.
    fn line(&self, text: &str) {
        let text = scrubbed(text);
        above_spinner(|| eprintln!("{text}"));
    }

    /// One JSON object on a line of stderr. Secret values are hidden in each string before
    /// it is JSON-escaped: a value with a quote or a backslash would not match once escaped.
    fn json_line(&self, value: &serde_json::Value) {
        let mut value = value.clone();
        scrub_strings(&mut value);
        self.line(&value.to_string());
    }

    /// A progress line on stderr.
    pub fn info(&self, text: &str) {
        if self.mode == Mode::Events {
            if !self.quiet {
                self.json_line(&serde_json::json!({ "event": "note", "message": text }));
            }
            return;
        }
        if !self.quiet {
            self.line(&format!("{} {text}", self.paint("2", &Self::stamp())));
        }
    }

    pub fn warn(&self, text: &str) {
        if self.mode == Mode::Events {
            self.json_line(&serde_json::json!({ "event": "warning", "message": text }));
            return;
        }
        self.line(&format!(
            "{} {} {text}",
            self.paint("2", &Self::stamp()),
            self.paint("33", "warning:")
        ));
        if self.mode == Mode::GitHub {
            self.line(&format!("::warning::{}", escape_command(text)));
        }
    }

    /// The one-line cause and the hint of a failed command.
    pub fn error(&self, cause: &str, hint: Option<&str>) {
        if self.mode == Mode::Events {
            self.json_line(&serde_json::json!({ "event": "error", "cause": cause, "hint": hint }));
            return;
        }
        self.end_phase_output();
        self.line(&format!("{} {cause}", self.paint("31;1", "error:")));
        if let Some(hint) = hint {
            self.line(&format!("{} {hint}", self.paint("36", "hint:")));
        }
        if self.mode == Mode::GitHub {
            let text = match hint {
                Some(hint) => format!("{cause}\nhint: {hint}"),
                None => cause.to_string(),
            };
            self.line(&format!("::error title=shipit::{}", escape_command(&text)));
        }
    }

    pub fn event(&self, event: &Event) {
        if self.mode == Mode::Events {
            if !self.quiet || matches!(event, Event::Warning { .. }) {
                match serde_json::to_value(event) {
                    Ok(value) => self.json_line(&value),
                    Err(e) => self.warn(&format!("internal: an event did not serialize: {e}")),
                }
            }
            return;
        }
        match event {
            Event::PhaseStarted { phase } => self.phase_started(*phase),
            Event::PhaseFinished { phase, elapsed, ok } => {
                self.phase_finished(*phase, *elapsed, *ok)
            }
            Event::Progress { phase, message } => self.progress(*phase, message),
            Event::Count { phase, done, total } => self.count(*phase, *done, *total),
            Event::Warning { message } => self.warn(message),
            Event::Note { message } => self.info(message),
            Event::ShiftStep {
                index,
                total,
                percent,
                bake,
            } => self.shift_step(*index, *total, *percent, *bake),
            Event::Bake {
                index,
                total,
                percent,
                elapsed,
                period,
            } => self.bake(*index, *total, *percent, *elapsed, *period),
        }
    }

    /// A weighted step of the shift begins. On a terminal the phase's spinner becomes a bar
    /// that fills over the bake; elsewhere it is a line.
    fn shift_step(&self, index: usize, total: usize, percent: u8, bake: Duration) {
        if self.quiet {
            return;
        }
        let text = format!(
            "step {index}/{total}: {percent}% of new clients on the candidate, baking {}",
            humantime::format_duration(bake)
        );
        LAST_BAKE_MARK.store(0, Ordering::SeqCst);
        if self.mode == Mode::Terminal {
            let spinner = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(bar) = spinner {
                let template = if self.color {
                    "{spinner:.cyan} {prefix:.bold} [{bar:24.cyan/blue}] {wide_msg} {elapsed:.dim}"
                } else {
                    "{spinner} {prefix} [{bar:24}] {wide_msg} {elapsed}"
                };
                let style = ProgressStyle::with_template(template)
                    .expect("the bar template parses")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
                    .progress_chars("=> ");
                bar.set_style(style);
                bar.set_length(millis(bake).max(1));
                bar.set_position(0);
                bar.set_prefix(format!("{} {index}/{total} {percent}%", Phase::Shift));
                bar.set_message(text);
                return;
            }
        }
        self.info(&format!("  {}: {text}", Phase::Shift));
    }

    /// Time passing in a bake: the bar moves on a terminal; elsewhere a line at each quarter
    /// of the bake, so a long bake shows it is alive without flooding a CI log.
    fn bake(&self, index: usize, total: usize, percent: u8, elapsed: Duration, period: Duration) {
        if self.quiet {
            return;
        }
        let left = period.saturating_sub(elapsed);
        let text = format!(
            "step {index}/{total}: {percent}% on the candidate, {} of {} baked, {} left",
            humantime::format_duration(whole_seconds(elapsed)),
            humantime::format_duration(period),
            humantime::format_duration(seconds_left(left))
        );
        if self.mode == Mode::Terminal {
            let spinner = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(bar) = spinner {
                // The step and the time left lead the bar; the message keeps the latest
                // progress line (the bake's counts).
                bar.set_position(millis(elapsed));
                bar.set_prefix(format!(
                    "{} {index}/{total} {percent}% {} left",
                    Phase::Shift,
                    humantime::format_duration(seconds_left(left))
                ));
                return;
            }
        }
        let quarter = (millis(elapsed) * 4 / millis(period).max(1)).min(4);
        // One line per quarter reached, for this step (`shift_step` resets the mark).
        let mark = index as u64 * 8 + quarter;
        if quarter > 0 && LAST_BAKE_MARK.fetch_max(mark, Ordering::SeqCst) < mark {
            self.info(&format!("  {}: {text}", Phase::Shift));
        }
    }

    fn phase_started(&self, phase: Phase) {
        if self.quiet {
            return;
        }
        match self.mode {
            // Events mode prints the event itself and never gets here.
            Mode::Plain | Mode::Events => self.info(&format!("▶ {phase}")),
            Mode::GitHub => {
                self.close_group();
                self.line(&format!("::group::{phase}"));
                GROUP_OPEN.store(true, Ordering::SeqCst);
            }
            Mode::Terminal => {
                let template = if self.color {
                    "{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed:.dim}"
                } else {
                    "{spinner} {prefix} {wide_msg} {elapsed}"
                };
                let style = ProgressStyle::with_template(template)
                    .expect("the spinner template parses")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_style(style)
                    .with_prefix(phase.to_string());
                bar.enable_steady_tick(SPINNER_TICK);
                let previous = SPINNER
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(bar);
                if let Some(previous) = previous {
                    previous.finish_and_clear();
                }
            }
        }
    }

    /// Counted progress: on a terminal the phase's spinner becomes a bar of `total`; other
    /// modes already print the matching `Progress` lines, so they add nothing.
    fn count(&self, phase: Phase, done: u64, total: u64) {
        if self.quiet || self.mode != Mode::Terminal || total == 0 {
            return;
        }
        let spinner = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(bar) = spinner {
            if bar.length() != Some(total) {
                let template = if self.color {
                    "{spinner:.cyan} {prefix:.bold} [{bar:24.cyan/blue}] {pos}/{len} {wide_msg} {elapsed:.dim}"
                } else {
                    "{spinner} {prefix} [{bar:24}] {pos}/{len} {wide_msg} {elapsed}"
                };
                let style = ProgressStyle::with_template(template)
                    .expect("the bar template parses")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
                    .progress_chars("=> ");
                bar.set_style(style);
                bar.set_length(total);
                bar.set_prefix(phase.to_string());
            }
            bar.set_position(done.min(total));
        }
    }

    fn progress(&self, phase: Phase, message: &str) {
        if self.quiet {
            return;
        }
        if self.mode == Mode::Terminal {
            let spinner = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(bar) = spinner {
                // Only the latest line stays on screen: a build's output scrolls in place.
                bar.set_message(scrubbed(message).into_owned());
                return;
            }
        }
        self.info(&format!("  {phase}: {message}"));
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration, ok: bool) {
        if self.quiet {
            return;
        }
        if let Some(bar) = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        let mark = if ok {
            self.paint("32", "✓")
        } else {
            self.paint("31", "✗")
        };
        self.info(&format!("{mark} {phase} ({} ms)", elapsed.as_millis()));
        if self.mode == Mode::GitHub {
            self.close_group();
        }
    }

    /// Clears a spinner and closes a group left open by a phase that never finished.
    fn end_phase_output(&self) {
        if let Some(bar) = SPINNER.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        self.close_group();
    }

    fn close_group(&self) {
        if GROUP_OPEN.swap(false, Ordering::SeqCst) {
            self.line("::endgroup::");
        }
    }

    /// Data for the user or a script, on stdout, with the registered secret values hidden
    /// as on stderr (a failure's cause can quote what the app said).
    pub fn data(&self, text: &str) {
        above_spinner(|| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", scrubbed(text));
        });
    }

    /// Generated data (a completion script, a man page), written as is on stdout.
    pub fn bytes(&self, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data);
        let _ = out.flush();
    }

    pub fn json(&self, value: &impl serde::Serialize) {
        self.data(&serde_json::to_string_pretty(value).expect("output serializes"));
    }
}

/// Where `tracing` writes its logs (`-v`, `RUST_LOG`): stderr, above the spinner.
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    /// One log event per call (the formatter writes each whole), with secret values hidden.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = scrubbed(&text);
        above_spinner(|| std::io::stderr().write_all(text.as_bytes()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::escape_command;

    #[test]
    fn workflow_command_text_cannot_start_a_new_line() {
        assert_eq!(
            escape_command("100% down\nlast log:\r\n::add-mask::x"),
            "100%25 down%0Alast log:%0D%0A::add-mask::x"
        );
    }
}
