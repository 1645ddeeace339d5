//! The optional pre-build command of a service (e.g. compiling a static binary into the
//! context). It runs with `sh -c` in the config file's folder, before the context is hashed.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// How many output lines a failure shows.
const TAIL_LINES: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum PreBuildError {
    #[error("cannot start the pre-build command `{command}` in {}: {source}", dir.display())]
    Spawn {
        command: String,
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pre-build command `{command}` exited with {status}; its last output:\n{}", tail.join("\n"))]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        tail: Vec<String>,
    },
}

impl PreBuildError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(
            "fix the pre_build command of the service, or run it by hand to see why it fails"
                .to_string(),
        )
    }
}

/// Runs `command` in `dir`, passing each output line (stdout and stderr) to `on_line`.
pub async fn run(
    command: &str,
    dir: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<(), PreBuildError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PreBuildError::Spawn {
            command: command.to_string(),
            dir: dir.to_path_buf(),
            source,
        })?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => l.ok().flatten().or_else(|| { out_open = false; None }),
            l = err.next_line(), if err_open => l.ok().flatten().or_else(|| { err_open = false; None }),
        };
        if let Some(line) = line {
            on_line(&line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child.wait().await.map_err(|source| PreBuildError::Spawn {
        command: command.to_string(),
        dir: dir.to_path_buf(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(PreBuildError::Failed {
            command: command.to_string(),
            status,
            tail: tail.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_lines_are_streamed_in_the_given_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "here").unwrap();
        let mut lines = Vec::new();
        run("cat marker; echo; echo oops >&2", dir.path(), |l| {
            lines.push(l.to_string())
        })
        .await
        .unwrap();
        lines.sort();
        assert_eq!(lines, ["here", "oops"]);
    }

    #[tokio::test]
    async fn failure_shows_status_and_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            "echo compiling; echo 'error: boom' >&2; exit 3",
            dir.path(),
            |_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("error: boom"), "{err}");
    }
}
