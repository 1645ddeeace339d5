//! Running the edge detached: start it once, find it again, stop it.
//!
//! `shipit release` calls [`ensure_running`]: it reuses the edge whose admin socket answers,
//! or cleans the files a dead edge left behind and spawns a new one in its own process
//! group, with its output appended to `edge.log`, and waits until its socket answers. The
//! directory is made (or made again) 0700 and its files 0600 ([`crate::directory`]);
//! `edge.log` is rotated by size, by the edge itself while it runs ([`crate::log_file`]).
//! [`stop`] asks `POST /shutdown` and falls back to SIGTERM, then SIGKILL. [`upgrade`]
//! spawns a new edge that takes the running one's sockets over (`edge run --take-over`,
//! see [`crate::handover`]) and waits until the new one answers the admin socket and the
//! old one has finished.
//!
//! Which process is the edge: the server holds an exclusive `flock` on `edge.lock` for its
//! whole life, and `/proc/locks` names the holder. So a pid file whose pid was reused by an
//! unrelated process after a crash or reboot is recognised as stale and that process is
//! never signalled. Without `/proc/locks`, the pid file and `kill(pid, 0)` decide. A zombie
//! (exited, not yet reaped: tests that spawn the edge may not reap it) counts as dead.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::api::Status;
use crate::log_file::{LOG_KEEP, LOG_MAX_SIZE};
use crate::{ADMIN_SOCKET, AdminClient, EdgeError, LOCK_FILE, LOG_FILE, PID_FILE};

/// Held while a shipit command starts or stops the edge of a directory.
const DAEMON_LOCK_FILE: &str = "daemon.lock";
/// How long one "does the socket answer" probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a starting edge's socket, a stopping edge's pid, or a busy lock is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a SIGKILLed edge gets to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How many lines of `edge.log` an error shows.
const LOG_TAIL_LINES: usize = 20;
/// Written to `edge.log` before each start, so an error shows only that start's lines.
const START_MARKER: &str = "--- shipit: starting the edge";

/// How to start the edge of one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// The program that runs the edge (usually the `shipit` binary itself).
    pub exe: PathBuf,
    /// Its arguments, e.g. `edge run --dir <dir> --listen <addr>`.
    pub args: Vec<OsString>,
    /// The edge directory.
    pub dir: PathBuf,
    /// Where the edge must listen. Port 0 accepts any port on that address.
    pub listen: SocketAddr,
    /// How long a new edge may take until its admin socket answers.
    pub start_timeout: Duration,
}

/// How [`stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// No edge was running; stale files, if any, were removed.
    NotRunning,
    /// The edge stopped after `POST /shutdown`.
    ShutDown { pid: u32 },
    /// The edge did not answer its socket and stopped on SIGTERM.
    Terminated { pid: u32 },
    /// The edge was still running at the deadline and was killed.
    Killed { pid: u32 },
}

/// Returns a client of the edge of `spec.dir`, starting the edge if none runs.
pub async fn ensure_running(spec: &DaemonSpec) -> Result<AdminClient, EdgeError> {
    let dir = spec.dir.as_path();
    crate::directory::create(dir)?;
    let deadline = Instant::now() + spec.start_timeout;
    let _serialized = lock_daemon(dir, deadline, spec.start_timeout).await?;
    let client = AdminClient::new(dir.join(ADMIN_SOCKET));
    let probe = client
        .clone()
        .with_timeout(PROBE_TIMEOUT.min(spec.start_timeout));

    if let Ok(status) = probe.status().await {
        adopt(dir, &status, spec.listen)?;
        tracing::debug!(pid = status.pid, "reusing the running edge");
        return Ok(client);
    }
    if let Some(pid) = find(dir) {
        // An edge holds the directory but does not answer: it may be starting.
        tracing::info!(pid, "the edge does not answer yet; waiting for it");
        loop {
            if let Ok(status) = probe.status().await {
                adopt(dir, &status, spec.listen)?;
                return Ok(client);
            }
            if !is_running(pid) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(EdgeError::NotAnswering {
                    dir: dir.to_path_buf(),
                    pid,
                    socket: client.socket_path().to_path_buf(),
                    log: dir.join(LOG_FILE),
                    tail: log_tail(&dir.join(LOG_FILE)),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    remove_stale_files(dir)?;
    // No edge writes to the log now: a long one from earlier runs is rotated here, so the new
    // process starts on a small file (a running edge rotates its own, see `log_file`).
    let log = dir.join(LOG_FILE);
    if let Err(e) = crate::log_file::rotate_if_over(&log, LOG_MAX_SIZE, LOG_KEEP) {
        tracing::warn!("cannot rotate the edge log {}: {e}", log.display());
    }
    let mut child = spawn(spec)?;
    let pid = child.id();
    crate::state::write_atomic(&dir.join(PID_FILE), format!("{pid}\n").as_bytes())?;
    tracing::info!(pid, exe = %spec.exe.display(), "started the edge");
    loop {
        if let Ok(status) = probe.status().await {
            if let Err(e) = adopt(dir, &status, spec.listen) {
                abandon(&mut child, dir);
                return Err(e);
            }
            // Reap it whenever it exits while this process still runs.
            std::thread::spawn(move || child.wait());
            return Ok(client);
        }
        if let Some(exit) = child
            .try_wait()
            .map_err(|e| EdgeError::io("wait for the edge started from", &spec.exe, e))?
        {
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            return Err(EdgeError::StartExited {
                exe: spec.exe.clone(),
                status: exit.to_string(),
                log: dir.join(LOG_FILE),
                tail: log_tail(&dir.join(LOG_FILE)),
            });
        }
        if Instant::now() >= deadline {
            abandon(&mut child, dir);
            return Err(EdgeError::StartTimeout {
                exe: spec.exe.clone(),
                socket: client.socket_path().to_path_buf(),
                after: spec.start_timeout,
                log: dir.join(LOG_FILE),
                tail: log_tail(&dir.join(LOG_FILE)),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// How [`upgrade`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    pub old_pid: u32,
    pub new_pid: u32,
    /// From the spawn until the new edge answered the admin socket (the old one no longer
    /// accepted by then).
    pub took_over_after: Duration,
    /// From the spawn until the old edge had finished its connections and exited; `None`
    /// when it still ran at the deadline (it exits at its own grace period).
    pub old_exited_after: Option<Duration>,
}

/// Replaces the edge running in `spec.dir` by a new process, without refusing or dropping
/// a connection. `spec.args` must start the edge with `--take-over`. Waits `spec.start_timeout`
/// for the new edge to take over (else it is killed, and the old one keeps serving), then
/// up to `finish_timeout` for the old one to exit.
pub async fn upgrade(spec: &DaemonSpec, finish_timeout: Duration) -> Result<Upgraded, EdgeError> {
    let dir = spec.dir.as_path();
    let started = Instant::now();
    let deadline = started + spec.start_timeout;
    let serialized = lock_daemon(dir, deadline, spec.start_timeout).await?;
    let client = AdminClient::new(dir.join(ADMIN_SOCKET));
    let probe = client
        .clone()
        .with_timeout(PROBE_TIMEOUT.min(spec.start_timeout));
    let old_pid = match probe.status().await {
        Ok(status) => status.pid,
        Err(_) => {
            return Err(match find(dir) {
                Some(pid) => EdgeError::NotAnswering {
                    dir: dir.to_path_buf(),
                    pid,
                    socket: client.socket_path().to_path_buf(),
                    log: dir.join(LOG_FILE),
                    tail: log_tail(&dir.join(LOG_FILE)),
                },
                None => EdgeError::NotRunning {
                    dir: dir.to_path_buf(),
                },
            });
        }
    };
    let mut child = spawn(spec)?;
    let new_pid = child.id();
    tracing::info!(old_pid, new_pid, exe = %spec.exe.display(), "started the new edge");
    loop {
        // While both run, either may answer: only the new pid means it took over.
        if let Ok(status) = probe.status().await
            && status.pid == new_pid
        {
            break;
        }
        if let Some(exit) = child
            .try_wait()
            .map_err(|e| EdgeError::io("wait for the edge started from", &spec.exe, e))?
        {
            return Err(EdgeError::UpgradeExited {
                exe: spec.exe.clone(),
                status: exit.to_string(),
                old_pid,
                log: dir.join(LOG_FILE),
                tail: log_tail(&dir.join(LOG_FILE)),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(EdgeError::UpgradeTimeout {
                exe: spec.exe.clone(),
                old_pid,
                after: spec.start_timeout,
                log: dir.join(LOG_FILE),
                tail: log_tail(&dir.join(LOG_FILE)),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let took_over_after = started.elapsed();
    // Reap it whenever it exits while this process still runs.
    std::thread::spawn(move || child.wait());
    drop(serialized);
    let old_exited_after = if old_pid == std::process::id() {
        // An edge inside this very process (tests) cannot be waited for here.
        None
    } else {
        wait_gone(old_pid, Instant::now() + finish_timeout)
            .await
            .then(|| started.elapsed())
    };
    Ok(Upgraded {
        old_pid,
        new_pid,
        took_over_after,
        old_exited_after,
    })
}

/// Stops the edge of `dir`: `POST /shutdown`, else SIGTERM; SIGKILL once `timeout` has
/// passed. Removes the pid file and a stale socket.
pub async fn stop(dir: &Path, timeout: Duration) -> Result<StopOutcome, EdgeError> {
    let deadline = Instant::now() + timeout;
    let _serialized = lock_daemon(dir, deadline, timeout).await?;
    let client = AdminClient::new(dir.join(ADMIN_SOCKET)).with_timeout(PROBE_TIMEOUT.min(timeout));
    let answering = client.status().await.ok().map(|status| status.pid);
    let Some(pid) = answering.or_else(|| find(dir)) else {
        remove_stale_files(dir)?;
        return Ok(StopOutcome::NotRunning);
    };
    if pid == std::process::id() {
        // An edge running inside this very process (tests): it cleans up after itself.
        if answering.is_some() {
            client.shutdown().await?;
        }
        return Ok(StopOutcome::ShutDown { pid });
    }

    let mut outcome = None;
    if answering.is_some() && client.shutdown().await.is_ok() && wait_gone(pid, deadline).await {
        outcome = Some(StopOutcome::ShutDown { pid });
    }
    if outcome.is_none() && is_running(pid) {
        tracing::info!(pid, "sending SIGTERM to the edge");
        signal(pid, Signal::SIGTERM)?;
        if wait_gone(pid, deadline).await {
            outcome = Some(StopOutcome::Terminated { pid });
        }
    }
    let outcome = match outcome {
        Some(outcome) => outcome,
        None if !is_running(pid) => StopOutcome::Terminated { pid },
        None => {
            tracing::warn!(
                pid,
                "the edge is still running at the deadline; sending SIGKILL"
            );
            signal(pid, Signal::SIGKILL)?;
            if !wait_gone(pid, Instant::now() + KILL_WAIT).await {
                return Err(EdgeError::StopTimeout {
                    pid,
                    after: KILL_WAIT,
                });
            }
            StopOutcome::Killed { pid }
        }
    };
    remove_stale_files(dir)?;
    Ok(outcome)
}

/// The pid of the edge running in `dir`, if one runs.
pub fn find(dir: &Path) -> Option<u32> {
    let recorded = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match lock_holder(&dir.join(LOCK_FILE)) {
        Holder::Nobody => None,
        Holder::Pid(holder) if is_running(holder) => Some(holder),
        Holder::Pid(_) | Holder::Unknown => recorded.filter(|pid| is_running(*pid)),
    }
}

/// Whether `pid` names a live process: `kill(pid, 0)` succeeds (or is merely not allowed)
/// and `/proc/<pid>/stat` does not show a zombie.
pub fn is_running(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // 0 and negative values address process groups, not a process.
    if raw <= 0 {
        return false;
    }
    match kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

/// `Z` (zombie) or `X` (dead) in `/proc/<pid>/stat`.
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may hold spaces and parentheses, so split at the last `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| matches!(state, 'Z' | 'X'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Nobody holds the lock: no edge runs in the directory.
    Nobody,
    Pid(u32),
    /// `/proc/locks` cannot be read.
    Unknown,
}

/// Who holds the `flock` on `lock_file`, from `/proc/locks`.
fn lock_holder(lock_file: &Path) -> Holder {
    let inode = match std::fs::metadata(lock_file) {
        Ok(meta) => meta.ino(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Holder::Nobody,
        Err(_) => return Holder::Unknown,
    };
    match std::fs::read_to_string("/proc/locks") {
        Ok(locks) => flock_holder(&locks, inode),
        Err(_) => Holder::Unknown,
    }
}

/// Finds the holder of the flock on `inode` in the text of `/proc/locks`, whose lines read
/// `1: FLOCK  ADVISORY  WRITE 1234 fe:00:753934 0 EOF` (waiters have `->` after the id).
fn flock_holder(locks: &str, inode: u64) -> Holder {
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, _, pid, id, ..] = fields.as_slice() else {
            continue;
        };
        let on_inode = id
            .rsplit(':')
            .next()
            .and_then(|ino| ino.parse::<u64>().ok())
            == Some(inode);
        if on_inode {
            // A holder in another pid namespace shows as -1 or 0: an edge runs, pid unknown.
            return match pid.parse::<u32>() {
                Ok(pid) if pid > 0 => Holder::Pid(pid),
                _ => Holder::Unknown,
            };
        }
    }
    Holder::Nobody
}

/// Accepts a running edge: it must listen where asked; the pid file then names it.
fn adopt(dir: &Path, status: &Status, requested: SocketAddr) -> Result<(), EdgeError> {
    let running = status.listen;
    let same = running.ip() == requested.ip()
        && (requested.port() == 0 || running.port() == requested.port());
    if !same {
        return Err(EdgeError::ListenMismatch {
            dir: dir.to_path_buf(),
            pid: status.pid,
            running,
            requested,
        });
    }
    let pid_file = dir.join(PID_FILE);
    let recorded = std::fs::read_to_string(&pid_file).unwrap_or_default();
    if recorded.trim() != status.pid.to_string() {
        crate::state::write_atomic(&pid_file, format!("{}\n", status.pid).as_bytes())?;
    }
    Ok(())
}

fn spawn(spec: &DaemonSpec) -> Result<Child, EdgeError> {
    let log_path = spec.dir.join(LOG_FILE);
    let mut log = crate::log_file::open(&log_path)
        .map_err(|e| EdgeError::io("open the edge log", &log_path, e))?;
    let args: Vec<_> = spec.args.iter().map(|a| a.to_string_lossy()).collect();
    writeln!(
        log,
        "{START_MARKER} at {}: {} {}",
        jiff::Timestamp::now(),
        spec.exe.display(),
        args.join(" ")
    )
    .map_err(|e| EdgeError::io("write the edge log", &log_path, e))?;
    let stderr = log
        .try_clone()
        .map_err(|e| EdgeError::io("open the edge log", &log_path, e))?;
    Command::new(&spec.exe)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a Ctrl-C in the terminal of `shipit release` must not
        // take the edge down with it.
        .process_group(0)
        .spawn()
        .map_err(|source| EdgeError::Spawn {
            exe: spec.exe.clone(),
            source,
        })
}

/// Kills a child that did not come up right, and forgets it.
fn abandon(child: &mut Child, dir: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(dir.join(PID_FILE));
}

fn remove_stale_files(dir: &Path) -> Result<(), EdgeError> {
    for (name, action) in [
        (PID_FILE, "remove the stale pid file"),
        (ADMIN_SOCKET, "remove the stale admin socket"),
    ] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a file left by a stopped edge")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EdgeError::io(action, path, e)),
        }
    }
    Ok(())
}

fn signal(pid: u32, signal: Signal) -> Result<(), EdgeError> {
    let raw = i32::try_from(pid).expect("a running pid fits in i32");
    match kill(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(EdgeError::Signal {
            pid,
            signal: signal.as_str(),
            source,
        }),
    }
}

/// Waits until `pid` is gone or `deadline` passes. A process that is not our child gives
/// no signal on exit, so this looks at it every [`POLL_INTERVAL`].
async fn wait_gone(pid: u32, deadline: Instant) -> bool {
    loop {
        if !is_running(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Serializes the commands that start and stop the edge of `dir`, so two concurrent
/// releases do not both spawn one.
async fn lock_daemon(
    dir: &Path,
    deadline: Instant,
    budget: Duration,
) -> Result<Flock<File>, EdgeError> {
    let path = dir.join(DAEMON_LOCK_FILE);
    let mut file = crate::directory::open_lock(&path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK)) => file = back,
            Err((_, errno)) => {
                return Err(EdgeError::io("lock", &path, std::io::Error::from(errno)));
            }
        }
        if Instant::now() >= deadline {
            return Err(EdgeError::LockTimeout {
                path,
                after: budget,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The last lines `edge.log` got since the last start marker.
fn log_tail(path: &Path) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file
        .seek(SeekFrom::Start(len.saturating_sub(WINDOW)))
        .is_err()
    {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let since_start = text.rfind(START_MARKER).map_or(&text[..], |at| {
        text[at..].split_once('\n').map_or("", |(_, rest)| rest)
    });
    let lines: Vec<&str> = since_start.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests;
