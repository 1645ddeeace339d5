//! The optional pre-build command of a service (e.g. compiling a static binary into the
//! context). It runs with `sh -c` in the config file's folder, before the context is hashed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::hook::CommandError;

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
    on_line: impl FnMut(&str),
) -> Result<(), PreBuildError> {
    crate::hook::run(command, dir, &BTreeMap::new(), None, on_line)
        .await
        .map_err(|e| match e {
            CommandError::Spawn {
                command,
                dir,
                source,
            } => PreBuildError::Spawn {
                command,
                dir,
                source,
            },
            CommandError::Failed {
                command,
                status,
                tail,
            } => PreBuildError::Failed {
                command,
                status,
                tail,
            },
            // Never without a timeout.
            CommandError::TimedOut { command, tail, .. } => PreBuildError::Failed {
                command,
                status: std::process::ExitStatus::default(),
                tail,
            },
        })
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
