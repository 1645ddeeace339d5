//! The migrate hook, `[services.<s>.hooks] migrate`: a command run once per release in a
//! one-off container of the new image, with the service's env and secrets, after the launch
//! and before traffic moves. The local target runs it as a container through the Engine API
//! (`platform/local/migrate.rs`), the ecs target as a task of the candidate's task definition
//! (`platform/ecs/migrate.rs`). Its output streams as progress of the Verify phase.
//!
//! It runs before the candidate's health checks, so an app that needs the new schema to
//! become healthy does. A failure, or a run past its timeout, fails the release: the live
//! slot is untouched and the candidate removed. Promoting a staged release does not run it
//! again: the release that staged it did.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::Migrate;
use crate::event::{Phase, Reporter};
use crate::platform::{ErrorKind, PlatformError};

/// How many output lines a failure shows.
pub const TAIL_LINES: usize = 20;
/// The longest output line kept; a longer one (or output with no line break, a progress bar)
/// is cut there.
pub const MAX_LINE: usize = 2048;

/// The output of a migrate run: each line goes to the reporter, the last ones are kept for
/// the failure's message.
pub struct Output<'a> {
    reporter: &'a Reporter,
    tail: VecDeque<String>,
    /// Each stream's (stdout, stderr) unfinished last line, completed by its next chunk.
    partial: [String; 2],
}

impl<'a> Output<'a> {
    pub fn new(reporter: &'a Reporter) -> Output<'a> {
        Output {
            reporter,
            tail: VecDeque::with_capacity(TAIL_LINES),
            partial: [String::new(), String::new()],
        }
    }

    /// One whole line of output, cut at [`MAX_LINE`] bytes.
    pub fn line(&mut self, line: &str) {
        let mut line = line.trim_end_matches('\r');
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line = &line[..end];
        }
        self.reporter
            .progress(Phase::Verify, format!("migrate: {line}"));
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    /// A chunk of `stream` (0 stdout, 1 stderr), which may end in the middle of a line. A
    /// carriage return ends a line too, and an unfinished line is cut at [`MAX_LINE`].
    pub fn chunk(&mut self, stream: usize, text: &str) {
        let stream = stream.min(1);
        self.partial[stream].push_str(text);
        while let Some(end) = self.partial[stream].find(['\n', '\r']) {
            let line: String = self.partial[stream].drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.is_empty() {
                self.line(line);
            }
        }
        if self.partial[stream].len() > MAX_LINE {
            let line = std::mem::take(&mut self.partial[stream]);
            self.line(&line);
        }
    }

    /// The last lines, the unfinished ones included.
    pub fn finish(mut self) -> Vec<String> {
        for stream in 0..2 {
            let rest = std::mem::take(&mut self.partial[stream]);
            if !rest.is_empty() {
                self.line(&rest);
            }
        }
        self.tail.into()
    }
}

/// How a migrate run ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exited(i64),
    /// It stopped without an exit code (the task could not start, the container was killed
    /// behind shipit's back): why, as the platform says it.
    Stopped(String),
    /// It ran past its timeout and was stopped.
    TimedOut(Duration),
}

/// Announces the run in the Verify phase.
pub fn starting(reporter: &Reporter, migrate: &Migrate, where_: &str) {
    reporter.progress(
        Phase::Verify,
        format!(
            "migrate hook: running {} in {where_}",
            shown(&migrate.command)
        ),
    );
}

/// The command as one line, each word quoted when it needs to be.
pub fn shown(command: &[String]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
            {
                w.clone()
            } else {
                format!("{w:?}")
            }
        })
        .collect();
    format!("`{}`", words.join(" "))
}

/// The failure of a migrate run: it names the hook, how it ended and its last output lines.
pub fn failed(migrate: &Migrate, where_: &str, ended: &Ended, tail: &[String]) -> PlatformError {
    let how = match ended {
        Ended::Exited(code) => format!("exited with code {code}"),
        Ended::Stopped(why) => format!("stopped without an exit code: {why}"),
        Ended::TimedOut(limit) => format!(
            "did not finish within its timeout of {} and was stopped",
            humantime::format_duration(*limit)
        ),
    };
    let output = if tail.is_empty() {
        "\n(it wrote no output)".to_string()
    } else {
        format!(
            "\nits last {} output lines:\n  {}",
            tail.len(),
            tail.join("\n  ")
        )
    };
    let code = match ended {
        Ended::Exited(code) => format!(" (exit code {code})"),
        _ => String::new(),
    };
    PlatformError::new(
        ErrorKind::Verify,
        format!(
            "the migrate hook failed{code}: {} in {where_} {how}{output}",
            shown(&migrate.command)
        ),
    )
    .with_hint(match ended {
        Ended::TimedOut(_) => {
            "the live slot was not touched; raise services.<s>.hooks.migrate.timeout if the \
             migration needs longer"
                .to_string()
        }
        _ => "the live slot was not touched and the candidate was removed; fix the migration \
              and release again"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrate() -> Migrate {
        Migrate {
            command: vec!["migrate".into(), "--to".into(), "a b".into()],
            timeout: Duration::from_secs(90),
        }
    }

    #[test]
    fn chunks_are_split_into_lines_and_the_tail_is_bounded() {
        let reporter = Reporter::default();
        let mut output = Output::new(&reporter);
        output.chunk(0, "one\ntw");
        // stderr's lines do not run into stdout's.
        output.chunk(1, "err\n");
        output.chunk(0, "o\r\nthree");
        let tail = output.finish();
        assert_eq!(tail, ["one", "err", "two", "three"]);

        // A progress bar (carriage returns) and output with no line break are bounded.
        let mut output = Output::new(&reporter);
        output.chunk(0, "10%\r20%\r");
        output.chunk(0, &"x".repeat(MAX_LINE * 3));
        let tail = output.finish();
        assert_eq!(tail[..2], ["10%", "20%"]);
        assert!(
            tail.iter().all(|l| l.len() <= MAX_LINE),
            "{:?}",
            tail.iter().map(String::len).collect::<Vec<_>>()
        );

        let mut output = Output::new(&reporter);
        for n in 0..(TAIL_LINES + 5) {
            output.line(&n.to_string());
        }
        let tail = output.finish();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "5");
    }

    #[test]
    fn a_failure_names_the_hook_the_exit_code_and_the_output() {
        let error = failed(
            &migrate(),
            "a container of release r-1",
            &Ended::Exited(3),
            &["no such table".to_string()],
        );
        let text = error.to_string();
        assert!(text.contains("migrate hook failed (exit code 3)"), "{text}");
        assert!(text.contains("`migrate --to \"a b\"`"), "{text}");
        assert!(text.contains("no such table"), "{text}");
        assert_eq!(error.kind, ErrorKind::Verify);

        let text = failed(
            &migrate(),
            "task x",
            &Ended::TimedOut(Duration::from_secs(90)),
            &[],
        )
        .to_string();
        assert!(text.contains("timeout of 1m 30s"), "{text}");
        assert!(text.contains("wrote no output"), "{text}");
    }
}
