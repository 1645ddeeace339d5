//! A service's runner hooks, `[services.<s>.hooks]`: `pre_switch`, `post_release` and
//! `on_failure`, shell commands run on the machine that runs shipit (`sh -c`, in the config's
//! folder), with the release in their environment. The pre-build command runs through the same
//! [`run`].
//!
//! - `pre_switch` runs in the Verify phase, once the candidate passed its health and version
//!   checks and before any traffic moves to it. A failure fails the release: the live slot is
//!   untouched and the candidate removed.
//! - `post_release` runs once the release is live; a failure is a warning.
//! - `on_failure` runs after a release failed (the live slot serving again); a failure of the
//!   hook itself is a warning.
//!
//! A hook runs in its own process group: at its timeout the whole group is killed, so a
//! command that started children cannot outlive it.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Slot;
use crate::config::Hook;
use crate::event::{Phase, Reporter};
use crate::platform::{ErrorKind, Platform, PlatformError};

/// How many output lines a failure shows.
const TAIL_LINES: usize = 15;

/// How a command ended, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start `{command}` in {}: {source}", dir.display())]
    Spawn {
        command: String,
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}; its last output:\n{}", tail.join("\n"))]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        tail: Vec<String>,
    },
    #[error("`{command}` did not finish within {}s and was killed; its last output:\n{}", timeout.as_secs_f64(), tail.join("\n"))]
    TimedOut {
        command: String,
        timeout: Duration,
        tail: Vec<String>,
    },
}

impl CommandError {
    /// The exit code, when the command exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CommandError::Failed { status, .. } => status.code(),
            _ => None,
        }
    }
}

/// Runs `command` with `sh -c` in `dir`, with `env` added to shipit's environment, passing
/// each output line (stdout and stderr) to `on_line`; killed with its process group after
/// `timeout`, when given.
pub async fn run(
    command: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    mut on_line: impl FnMut(&str),
) -> Result<(), CommandError> {
    let spawn_error = |source| CommandError::Spawn {
        command: command.to_string(),
        dir: dir.to_path_buf(),
        source,
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(nix::unistd::Pid::from_raw);
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let output = async {
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
        child.wait().await
    };
    let waited = match timeout {
        Some(limit) => tokio::time::timeout(limit, output).await.ok(),
        None => Some(output.await),
    };
    let Some(status) = waited else {
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        return Err(CommandError::TimedOut {
            command: command.to_string(),
            timeout: timeout.unwrap_or_default(),
            tail: tail.into(),
        });
    };
    let status = status.map_err(spawn_error)?;
    if status.success() {
        Ok(())
    } else {
        Err(CommandError::Failed {
            command: command.to_string(),
            status,
            tail: tail.into(),
        })
    }
}

/// The environment of a hook: which release of which service, where.
pub fn environment<P: Platform>(
    platform: &P,
    release: &str,
    slot: Option<Slot>,
    candidate_url: Option<String>,
    live_release: Option<&str>,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SHIPIT_SERVICE".to_string(), platform.service().to_string()),
        ("SHIPIT_TARGET".to_string(), platform.target().to_string()),
        ("SHIPIT_RELEASE".to_string(), release.to_string()),
        (
            "SHIPIT_SLOT".to_string(),
            slot.map(|s| s.to_string()).unwrap_or_default(),
        ),
        (
            "SHIPIT_CANDIDATE_URL".to_string(),
            candidate_url.unwrap_or_default(),
        ),
        (
            "SHIPIT_LIVE_RELEASE".to_string(),
            live_release.unwrap_or_default().to_string(),
        ),
    ])
}

/// Runs the hook `name` as part of `phase`: its output streams as that phase's progress,
/// and a failure is the platform error that names the hook, its command and exit code.
pub async fn run_hook(
    name: &str,
    hook: &Hook,
    dir: &Path,
    env: &BTreeMap<String, String>,
    phase: Phase,
    reporter: &Reporter,
) -> Result<(), PlatformError> {
    reporter.progress(phase, format!("{name} hook: running `{}`", hook.command));
    let started = std::time::Instant::now();
    run(&hook.command, dir, env, Some(hook.timeout), |line| {
        reporter.progress(phase, format!("{name}: {line}"));
    })
    .await
    .map_err(|e| {
        let code = e
            .exit_code()
            .map_or(String::new(), |c| format!(" (exit code {c})"));
        PlatformError::new(
            ErrorKind::Verify,
            format!("the {name} hook failed{code}: {e}"),
        )
        .with_hint(format!(
            "fix the {name} command in the service's [hooks], or run it by hand with the \
                 SHIPIT_* variables set to see why"
        ))
    })?;
    reporter.progress(
        phase,
        format!(
            "{name} hook: done in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_lines_are_streamed_with_the_env_in_the_given_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "here").unwrap();
        let env = BTreeMap::from([("SHIPIT_RELEASE".to_string(), "r-1".to_string())]);
        let mut lines = Vec::new();
        run(
            "cat marker; echo; echo \"$SHIPIT_RELEASE\" >&2",
            dir.path(),
            &env,
            None,
            |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        lines.sort();
        assert_eq!(lines, ["here", "r-1"]);
    }

    #[tokio::test]
    async fn a_failure_gives_the_exit_code_and_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            "echo checking; echo 'error: boom' >&2; exit 3",
            dir.path(),
            &BTreeMap::new(),
            None,
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), Some(3));
        let text = err.to_string();
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("error: boom"), "{text}");
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let started = std::time::Instant::now();
        let err = run(
            "sleep 30 & echo $! > child.pid; echo started; wait",
            dir.path(),
            &BTreeMap::new(),
            Some(Duration::from_millis(500)),
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let child: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background child went with the group: it is gone, or a zombie being reaped.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat"));
            let gone = stat.map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"));
            if gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's child {child} outlived the timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
