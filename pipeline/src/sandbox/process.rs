//! The sandbox's background processes: started in their own process group, found again by
//! pid and start time, stopped with SIGTERM and then SIGKILL.
//!
//! A pid alone is not an identity: after a crash or a reboot another program may hold it.
//! So a record keeps the process's start time (clock ticks since boot, field 22 of
//! `/proc/<pid>/stat`) beside its pid, and a process counts as the sandbox's only while both
//! match. A stranger that reused the pid is never signalled. A zombie counts as gone, but not
//! a process whose main thread alone has ended ([`start_ticks`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::SandboxError;

/// How long a started process gets to accept connections on its port.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM, then after SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
/// How many lines of a process's log an error shows.
const LOG_TAIL_LINES: usize = 15;

/// One background process of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// Its start time, in clock ticks since boot.
    pub start_ticks: u64,
    /// The program it runs.
    pub program: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Process {
    /// Whether this very process still runs (same pid, same start time, not a zombie).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }

    /// Stops it (SIGTERM, then SIGKILL after [`STOP_WAIT`]). One that is already gone, or
    /// whose pid now belongs to another process, is left alone.
    pub fn stop(&self) -> Result<(), SandboxError> {
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            if !self.alive() {
                return Ok(());
            }
            let pid = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
            // The group too: a program that started helpers of its own takes them along.
            let _ = kill(Pid::from_raw(-pid.as_raw()), signal);
            let _ = kill(pid, signal);
            let deadline = Instant::now() + STOP_WAIT;
            while Instant::now() < deadline {
                if !self.alive() {
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
        Err(SandboxError::Stop {
            what: self.program.display().to_string(),
            pid: self.pid,
        })
    }
}

/// Starts `program` with `args` in its own process group (a Ctrl-C in the terminal that ran
/// `sandbox up` leaves it running), output appended to `log`, and waits until it accepts
/// connections on `port` of 127.0.0.1. `what` names it in errors. If it exits or does not
/// listen in time, it is stopped and the error shows its log's last lines.
pub fn start(
    what: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    port: u16,
) -> Result<Process, SandboxError> {
    let process = spawn(what, program, args, env, log)?;
    if let Err(e) = wait_listening(&process, what, &[port]) {
        let _ = process.stop();
        return Err(e);
    }
    Ok(process)
}

/// Starts `program` as [`start`] does, without waiting for it to listen.
pub fn spawn(
    what: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> Result<Process, SandboxError> {
    let io = |action: &str, path: &Path, source: std::io::Error| SandboxError::Io {
        action: format!("{action} {}", path.display()),
        source,
    };
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io("open", log, e))?;
    writeln!(
        out,
        "--- shipit sandbox: starting {what} at {}: {} {}",
        jiff::Timestamp::now(),
        program.display(),
        args.join(" ")
    )
    .map_err(|e| io("write", log, e))?;
    let err = out.try_clone().map_err(|e| io("open", log, e))?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            what: what.to_string(),
            program: program.to_path_buf(),
            source,
        })?;
    let pid = child.id();
    // The child is not waited for: it outlives this command. Until this process exits, an
    // exited child is a zombie, which `alive` counts as gone.
    drop(child);
    let Some(ticks) = start_ticks(pid) else {
        return Err(SandboxError::Died {
            what: what.to_string(),
            log: log.to_path_buf(),
            tail: log_tail(log),
        });
    };
    let process = Process {
        pid,
        start_ticks: ticks,
        program: program.to_path_buf(),
        log: log.to_path_buf(),
    };
    Ok(process)
}

/// Waits until every one of `ports` accepts connections, while `process` runs; fails with
/// its log when it exits first or the ports do not listen within [`START_TIMEOUT`].
pub fn wait_listening(process: &Process, what: &str, ports: &[u16]) -> Result<(), SandboxError> {
    let deadline = Instant::now() + START_TIMEOUT;
    for port in ports {
        let address = SocketAddr::from(([127, 0, 0, 1], *port));
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                break;
            }
            if !process.alive() {
                return Err(SandboxError::Died {
                    what: what.to_string(),
                    log: process.log.clone(),
                    tail: log_tail(&process.log),
                });
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::NotListening {
                    what: what.to_string(),
                    port: *port,
                    waited: START_TIMEOUT,
                    log: process.log.clone(),
                    tail: log_tail(&process.log),
                });
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Waits, at most `limit`, until `port` of 127.0.0.1 can be bound.
pub fn wait_port_free(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_err()
        && Instant::now() < deadline
    {
        std::thread::sleep(POLL);
    }
}

/// Fails with [`SandboxError::PortInUse`] when `port` of 127.0.0.1 cannot be bound now.
pub fn check_port_free(port: u16, what: &str, flag: &str) -> Result<(), SandboxError> {
    match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
        Ok(_) => Ok(()),
        Err(source) => Err(SandboxError::PortInUse {
            port,
            what: what.to_string(),
            flag: flag.to_string(),
            source,
        }),
    }
}

/// Whether something accepts connections on `port` of 127.0.0.1.
#[cfg(test)]
fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The start time of `pid` in clock ticks since boot; `None` when it does not run or is a
/// zombie.
///
/// The state in `/proc/<pid>/stat` is that of the main thread alone. A process whose main
/// thread has ended while others still run (a server that answers on a thread of its own,
/// being stopped) shows as a zombie, yet it holds its files and ports until its last
/// thread ends: it is a zombie only once it is down to that one thread.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (the state); the thread count is field 20; the start time is
    // field 22.
    let threads: u64 = fields.get(17)?.parse().ok()?;
    if fields.first() == Some(&"Z") && threads <= 1 {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The last lines of a log file, or a note that it cannot be read.
pub fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_made_up_pid_has_none() {
        let me = start_ticks(std::process::id());
        assert!(me.is_some());
        assert_eq!(start_ticks(u32::MAX - 1), None);
    }

    #[test]
    fn a_record_whose_pid_was_reused_is_not_alive() {
        let me = std::process::id();
        let ticks = start_ticks(me).unwrap();
        let record = |start_ticks| Process {
            pid: me,
            start_ticks,
            program: PathBuf::from("/bin/true"),
            log: PathBuf::from("/dev/null"),
        };
        assert!(record(ticks).alive());
        // Same pid, another start time: another process, never to be signalled.
        assert!(!record(ticks + 1).alive());
        // `stop` leaves it alone (this test process would die otherwise).
        record(ticks + 1).stop().unwrap();
    }

    /// A port of 127.0.0.1 that nothing listened on a moment ago.
    fn unused_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// The python3 that the tests start servers with.
    fn python3() -> PathBuf {
        let python = PathBuf::from("/usr/bin/python3");
        assert!(
            python.exists(),
            "python3 is needed for this test (tests/run installs it)"
        );
        python
    }

    #[test]
    fn a_started_process_is_found_stopped_and_then_gone() {
        let dir = tempfile::tempdir().unwrap();
        let port = unused_port();
        // A program that listens: python3's http.server, as the emulator does.
        let log = dir.path().join("server.log");
        let process = start(
            "a test server",
            &python3(),
            &[
                "-m".into(),
                "http.server".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                port.to_string(),
            ],
            &[],
            &log,
            port,
        )
        .unwrap();
        assert!(process.alive());
        assert!(answers(port));
        assert!(check_port_free(port, "x", "--x").is_err());
        process.stop().unwrap();
        assert!(!process.alive());
        assert!(!answers(port));
        check_port_free(port, "x", "--x").unwrap();
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("starting a test server")
        );
    }

    /// The main thread ends (`pthread_exit`) while another thread listens on `argv[1]`.
    const MAIN_THREAD_ENDS: &str = "\
import ctypes, socket, sys, threading
listener = socket.create_server(('127.0.0.1', int(sys.argv[1])))
def serve():
    while True:
        listener.accept()[0].close()
threading.Thread(target=serve).start()
ctypes.CDLL(None).pthread_exit(None)
";

    #[test]
    fn a_process_whose_main_thread_ended_runs_until_its_last_thread_ends() {
        let dir = tempfile::tempdir().unwrap();
        let port = unused_port();
        let log = dir.path().join("server.log");
        let process = start(
            "a server on a thread",
            &python3(),
            &["-c".into(), MAIN_THREAD_ENDS.into(), port.to_string()],
            &[],
            &log,
            port,
        )
        .unwrap();
        // The main thread ends right after it started the other, which then listens.
        let stat = || std::fs::read_to_string(format!("/proc/{}/stat", process.pid)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stat().contains(") Z ") {
            assert!(
                Instant::now() < deadline,
                "the main thread never ended: {}",
                stat()
            );
            std::thread::sleep(POLL);
        }
        assert!(answers(port), "{}", log_tail(&log));
        assert!(
            process.alive(),
            "the process still serves on its port: {}",
            stat()
        );
        process.stop().unwrap();
        assert!(!process.alive());
        assert!(!answers(port));
    }

    #[test]
    fn a_process_that_exits_at_once_fails_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let err = start(
            "a failing server",
            Path::new("/bin/sh"),
            &["-c".into(), "echo 'bad flag --nope'; exit 3".into()],
            &[],
            &log,
            1,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("a failing server"), "{text}");
        assert!(text.contains("bad flag --nope"), "{text}");
    }
}
