//! What can go wrong in the edge, its admin client and its daemon control.
//!
//! Every message names what failed with its context (a path, an address, a pid), and
//! [`EdgeError::hint`] says what to do next: the CLI prints the two as they are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot listen for traffic on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the admin socket path `{path}` is {len} bytes long, more than the 107 a unix socket \
         allows: it needs a shorter state directory"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },

    #[error(
        "another edge already runs in `{dir}`{}",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning { dir: PathBuf, pid: Option<u32> },

    #[error(
        "TLS: {reason}{}",
        if path.as_os_str().is_empty() { String::new() } else { format!(" (`{}`)", path.display()) }
    )]
    Tls { path: PathBuf, reason: String },

    #[error(
        "cannot read the routes in `{path}`: {source}; the edge cannot restore its routes \
         until the file is fixed or you remove it"
    )]
    RoutesCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "invalid service name `{name}`: use letters, digits, `.`, `_` and `-` (at most 128 characters)"
    )]
    InvalidService { name: String },

    #[error("cannot reach the edge admin socket `{socket}`: {source}")]
    AdminUnreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the edge admin socket `{socket}` did not answer `{request}` within {}",
        humantime::format_duration(*after)
    )]
    AdminTimeout {
        socket: PathBuf,
        request: String,
        after: Duration,
    },

    #[error("`{request}` on the edge admin socket `{socket}` failed: {source}")]
    AdminProtocol {
        socket: PathBuf,
        request: String,
        #[source]
        source: hyper::Error,
    },

    #[error("the edge refused `{request}` (HTTP {status}, admin socket `{socket}`): {message}")]
    AdminRejected {
        socket: PathBuf,
        request: String,
        status: u16,
        message: String,
    },

    #[error("the edge answered `{request}` on `{socket}` with something unexpected: {detail}")]
    AdminAnswer {
        socket: PathBuf,
        request: String,
        detail: String,
    },

    #[error(
        "the edge in `{dir}` (pid {pid}) listens on {running}, not on the requested {requested}"
    )]
    ListenMismatch {
        dir: PathBuf,
        pid: u32,
        running: SocketAddr,
        requested: SocketAddr,
    },

    #[error(
        "the edge in `{dir}` (pid {pid}) is running but its admin socket `{socket}` does not \
         answer; its log is `{log}`{tail}",
        tail = format_tail(tail)
    )]
    NotAnswering {
        dir: PathBuf,
        pid: u32,
        socket: PathBuf,
        log: PathBuf,
        tail: String,
    },

    #[error("cannot start the edge `{exe}`: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the edge `{exe}` exited during start ({status}); its log is `{log}`{tail}",
        tail = format_tail(tail)
    )]
    StartExited {
        exe: PathBuf,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "the edge `{exe}` did not answer on `{socket}` within {} and was stopped; its log is `{log}`{tail}",
        humantime::format_duration(*after),
        tail = format_tail(tail)
    )]
    StartTimeout {
        exe: PathBuf,
        socket: PathBuf,
        after: Duration,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "timed out after {} waiting for the lock `{path}`",
        humantime::format_duration(*after)
    )]
    LockTimeout { path: PathBuf, after: Duration },

    #[error("cannot signal the edge (pid {pid}) with {signal}: {source}")]
    Signal {
        pid: u32,
        signal: &'static str,
        #[source]
        source: nix::Error,
    },

    #[error(
        "the edge (pid {pid}) is still running {} after SIGKILL",
        humantime::format_duration(*after)
    )]
    StopTimeout { pid: u32, after: Duration },

    #[error("no edge is running in `{dir}`")]
    NotRunning { dir: PathBuf },

    #[error(
        "no edge answers on `{socket}` to take over from, so there is nothing to upgrade \
         (`shipit edge run` starts one): {source}"
    )]
    NothingToTakeOver {
        dir: PathBuf,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot take over the edge in `{dir}`: {reason}")]
    Handover { dir: PathBuf, reason: String },

    #[error(
        "the edge process in `{dir}` has handed over to a new process and takes no route change"
    )]
    HandedOver { dir: PathBuf },

    #[error(
        "the edge in `{dir}` does not terminate TLS (it has no `tls_listen`), so it has no \
         certificates to reload"
    )]
    NoTls { dir: PathBuf },

    #[error(
        "the new edge `{exe}` exited before it took over ({status}); the running edge (pid \
         {old_pid}) keeps serving. The new edge's log is `{log}`{tail}",
        tail = format_tail(tail)
    )]
    UpgradeExited {
        exe: PathBuf,
        status: String,
        old_pid: u32,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "the new edge `{exe}` did not take over within {} and was stopped; the running edge \
         (pid {old_pid}) keeps serving. The new edge's log is `{log}`{tail}",
        humantime::format_duration(*after),
        tail = format_tail(tail)
    )]
    UpgradeTimeout {
        exe: PathBuf,
        old_pid: u32,
        after: Duration,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "`{path}` holds routes in format version {found}, newer than this edge reads \
         (version {supported}); the edge does not start without them"
    )]
    RoutesVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

impl EdgeError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        EdgeError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl EdgeError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            EdgeError::Bind { .. } => {
                "another edge or server may hold that port; pick another `listen` address or stop it"
            }
            EdgeError::SocketPathTooLong { .. } => {
                "set `state_dir` (or SHIPIT_STATE_DIR) to a shorter path"
            }
            EdgeError::AlreadyRunning { .. } => {
                "reuse it, or stop it with `shipit edge stop` first"
            }
            EdgeError::Tls { .. } => TLS_FILES_HINT,
            EdgeError::RoutesVersion { .. } => {
                "run the edge of a shipit at least as new as the one that wrote the file; it was \
                 left as it is"
            }
            EdgeError::RoutesCorrupt { .. } => {
                "fix the file or remove it (the edge then starts with no routes)"
            }
            EdgeError::AdminUnreachable { .. } => {
                "is the edge running? `shipit release` starts it, `shipit edge run` runs it in the \
                 foreground"
            }
            EdgeError::AdminTimeout { .. } => "see the edge log next to the socket",
            // The admin API answers with the message alone: what to do depends on the call.
            EdgeError::AdminRejected {
                request, status, ..
            } if request.ends_with(" /tls/reload") => match status {
                409 => NO_TLS_HINT,
                400 => TLS_FILES_HINT,
                _ => return None,
            },
            EdgeError::ListenMismatch { .. } => {
                "stop it with `shipit edge stop` so it restarts on the new address, or change \
                 `listen` back"
            }
            EdgeError::NotAnswering { .. } => "stop it with `shipit edge stop`",
            EdgeError::LockTimeout { .. } => {
                "another shipit command is starting or stopping this edge; retry when it is done"
            }
            EdgeError::StopTimeout { pid, .. } => {
                return Some(format!(
                    "check the process with `ps -o pid,stat,cmd -p {pid}`"
                ));
            }
            EdgeError::NotRunning { .. } => "`shipit release` starts it, or run `shipit edge run`",
            EdgeError::NothingToTakeOver { .. } => {
                "an upgrade replaces a running edge; start one with `shipit edge run` (or \
                 `shipit release`)"
            }
            EdgeError::Handover { dir, .. } => {
                return Some(format!(
                    "the running edge keeps serving; its log is `{}`",
                    dir.join(crate::LOG_FILE).display()
                ));
            }
            EdgeError::HandedOver { .. } => "send the call again: it reaches the new process",
            EdgeError::NoTls { .. } => NO_TLS_HINT,
            EdgeError::Io { .. }
            | EdgeError::InvalidService { .. }
            | EdgeError::AdminProtocol { .. }
            | EdgeError::AdminRejected { .. }
            | EdgeError::AdminAnswer { .. }
            | EdgeError::Spawn { .. }
            | EdgeError::StartExited { .. }
            | EdgeError::StartTimeout { .. }
            | EdgeError::Signal { .. }
            | EdgeError::UpgradeExited { .. }
            | EdgeError::UpgradeTimeout { .. } => return None,
        };
        Some(hint.to_string())
    }
}

/// What to do about certificate files that do not load.
const TLS_FILES_HINT: &str =
    "check the certificate and key files (PEM, leaf first) and the hosts they serve";

/// How to turn TLS on.
const NO_TLS_HINT: &str = "set `tls_listen` and `certificates` in the target's \
     `[targets.<name>.edge]` table, then run `shipit edge upgrade` to start TLS without \
     dropping a connection";

fn format_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::from(" (empty)")
    } else {
        format!("; its last lines:\n{}", tail.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_timeout_message_names_socket_log_and_tail() {
        let err = EdgeError::StartTimeout {
            exe: PathBuf::from("/usr/bin/shipit"),
            socket: PathBuf::from("/s/edge/local/admin.sock"),
            after: Duration::from_secs(10),
            log: PathBuf::from("/s/edge/local/edge.log"),
            tail: String::from("line one\nline two\n"),
        };
        let msg = err.to_string();
        assert!(msg.contains("/s/edge/local/admin.sock"), "{msg}");
        assert!(msg.contains("10s"), "{msg}");
        assert!(msg.contains("/s/edge/local/edge.log"), "{msg}");
        assert!(msg.ends_with("line one\nline two"), "{msg}");
    }
}
