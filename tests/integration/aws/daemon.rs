//! A helper process (moto, the registry) that ends with the test process.

use super::*;

/// A process that lives as long as this test process: it runs under `sh`, which kills it when
/// this process's end of its stdin pipe closes (at exit, however the process ends), then
/// removes its folder (`dir`, which holds its log and whatever it stores).
pub(super) struct Daemon {
    _child: Child,
    _stdin: ChildStdin,
    log: PathBuf,
}

impl Daemon {
    pub(super) fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], dir: PathBuf) -> Self {
        let log = dir.join("daemon.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(
                r#"dir=$1; shift; "$@" >"$dir/daemon.log" 2>&1 & pid=$!
                cat >/dev/null; kill "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir""#,
            )
            .arg("daemon")
            .arg(&dir)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdin = child.stdin.take().unwrap();
        Daemon {
            _child: child,
            _stdin: stdin,
            log,
        }
    }

    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for `find` to pull something out of the log.
    pub(super) fn wait_for_log<T>(&self, what: &str, mut find: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if let Some(found) = find(&text) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 30s waiting for {what}; log so far:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
