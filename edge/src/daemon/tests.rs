use super::*;
use crate::server::{EdgeOptions, start};
use nix::sys::wait::{Id, WaitPidFlag, waitid};

/// Marks the arguments of [`edge_child_process`], passed as extra test-name filters.
const CHILD_DIR: &str = "shipit-edge-child-dir=";

/// The edge process for the daemon tests: this test binary, run again with only this
/// test selected and the directory in an extra filter argument.
#[test]
#[ignore = "run by the daemon tests as the edge process"]
fn edge_child_process() {
    let Some(dir) = std::env::args().find_map(|a| a.strip_prefix(CHILD_DIR).map(PathBuf::from))
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(crate::server::run(EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir,
        }))
        .unwrap();
}

fn child_spec(dir: &Path) -> DaemonSpec {
    let mut dir_arg = OsString::from(CHILD_DIR);
    dir_arg.push(dir);
    DaemonSpec {
        exe: std::env::current_exe().unwrap(),
        args: vec![
            "daemon::tests::edge_child_process".into(),
            "--exact".into(),
            "--ignored".into(),
            "--nocapture".into(),
            dir_arg,
        ],
        dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        start_timeout: Duration::from_secs(20),
    }
}

/// The new edge of an upgrade: this test binary, taking over from the edge of the
/// directory in the extra filter argument.
#[test]
#[ignore = "run by the daemon tests as the new edge of an upgrade"]
fn edge_takeover_process() {
    let Some(dir) = std::env::args().find_map(|a| a.strip_prefix(CHILD_DIR).map(PathBuf::from))
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(crate::server::run_taking_over(crate::TakeOver {
            dir,
            listen: None,
            settings: None,
        }))
        .unwrap();
}

fn takeover_spec(dir: &Path) -> DaemonSpec {
    let mut spec = child_spec(dir);
    spec.args[0] = "daemon::tests::edge_takeover_process".into();
    spec
}

#[tokio::test]
async fn upgrade_replaces_the_running_edge_and_the_old_one_exits() {
    let dir = tempfile::tempdir().unwrap();
    let old = ensure_running(&child_spec(dir.path()))
        .await
        .unwrap()
        .status()
        .await
        .unwrap();

    let upgraded = upgrade(&takeover_spec(dir.path()), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(upgraded.old_pid, old.pid);
    assert_ne!(upgraded.new_pid, old.pid);
    assert!(upgraded.old_exited_after.is_some(), "{upgraded:?}");
    assert!(!is_running(old.pid));
    let client = AdminClient::new(dir.path().join(ADMIN_SOCKET));
    let status = client.status().await.unwrap();
    assert_eq!(status.pid, upgraded.new_pid);
    assert_eq!(status.listen, old.listen);
    // The lock and the pid file name the new process.
    assert_eq!(
        lock_holder(&dir.path().join(LOCK_FILE)),
        Holder::Pid(upgraded.new_pid)
    );
    assert_eq!(find(dir.path()), Some(upgraded.new_pid));
    let recorded = std::fs::read_to_string(dir.path().join(PID_FILE)).unwrap();
    assert_eq!(recorded.trim(), upgraded.new_pid.to_string());

    let outcome = stop(dir.path(), Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        outcome,
        StopOutcome::ShutDown {
            pid: upgraded.new_pid
        }
    );
    assert_eq!(find(dir.path()), None);
}

#[tokio::test]
async fn failed_upgrade_leaves_the_old_edge_serving_and_shows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let old = ensure_running(&child_spec(dir.path()))
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    let failing = DaemonSpec {
        exe: PathBuf::from("sh"),
        args: vec![
            "-c".into(),
            "echo 'cannot read the certificate' >&2; exit 3".into(),
        ],
        ..child_spec(dir.path())
    };
    let err = upgrade(&failing, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, EdgeError::UpgradeExited { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("cannot read the certificate"), "{message}");
    assert!(
        message.contains(&format!("(pid {}) keeps serving", old.pid)),
        "{message}"
    );
    let client = AdminClient::new(dir.path().join(ADMIN_SOCKET));
    assert_eq!(client.status().await.unwrap().pid, old.pid);
    assert_eq!(find(dir.path()), Some(old.pid));
    stop(dir.path(), Duration::from_secs(20)).await.unwrap();
}

#[tokio::test]
async fn upgrade_without_a_running_edge_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = upgrade(&takeover_spec(dir.path()), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, EdgeError::NotRunning { .. }), "{err:?}");
    assert!(err.to_string().contains("no edge is running"), "{err}");
}

/// Marks the argument of [`private_files_process`]: the root to make the edge under.
const PRIVATE_ROOT: &str = "shipit-edge-private-root=";

/// Starts an edge in a missing directory under the root in the extra filter argument,
/// gives it a route, and checks the mode of everything made. Run by
/// [`edge_files_are_private_under_a_permissive_umask`] under umask 0, which is safe for
/// a process-wide setting only because this process runs this one test.
#[test]
#[ignore = "run by the daemon tests under umask 0"]
fn private_files_process() {
    use std::os::unix::fs::FileTypeExt;
    let Some(root) = std::env::args().find_map(|a| a.strip_prefix(PRIVATE_ROOT).map(PathBuf::from))
    else {
        return;
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.lines().any(|line| line == "Umask:\t0000"),
        "this check needs umask 0: {status}"
    );
    let dir = root.join("state/edge/local");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = ensure_running(&child_spec(&dir)).await.unwrap();
        let backend = crate::Backend {
            slot: crate::Slot::Blue,
            release: "r1".into(),
            addr: "127.0.0.1:9".parse().unwrap(),
            more_addrs: Vec::new(),
        };
        let switched = client.switch("web", &backend).await;
        // What exists while the edge runs: (name, the right kind, mode).
        let parents = ["state", "state/edge", "state/edge/local"].map(|made| {
            let meta = std::fs::metadata(root.join(made)).unwrap();
            (made.to_string(), meta.is_dir(), meta.mode() & 0o777)
        });
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let kind = meta.is_file() || meta.file_type().is_socket();
            let name = entry.file_name().into_string().unwrap();
            files.push((name, kind, meta.mode() & 0o777));
        }
        // Stopped before any assertion, so that a failure leaves no edge running.
        stop(&dir, Duration::from_secs(20)).await.unwrap();
        switched.unwrap();

        for (name, is_dir, mode) in &parents {
            assert!(*is_dir && *mode == 0o700, "{name}: {mode:04o}");
        }
        files.sort();
        for (name, kind, mode) in &files {
            assert!(*kind && *mode == 0o600, "{name}: {mode:04o}");
        }
        let names: Vec<&str> = files.iter().map(|(name, ..)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                ADMIN_SOCKET,
                DAEMON_LOCK_FILE,
                LOCK_FILE,
                LOG_FILE,
                PID_FILE,
                crate::ROUTES_FILE,
                crate::state::GOOD_ROUTES_FILE,
            ]
        );
    });
}

#[test]
fn edge_files_are_private_under_a_permissive_umask() {
    let root = tempfile::tempdir().unwrap();
    let mut root_arg = OsString::from(PRIVATE_ROOT);
    root_arg.push(root.path());
    // The shell sets the umask of the process it becomes, not of this one.
    let output = Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "daemon::tests::private_files_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .arg(root_arg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("daemon::tests::private_files_process ... ok"),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
}

/// The path `/proc/<pid>/fd/<fd>` points at.
fn fd_path(pid: u32, fd: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap()
}

#[tokio::test]
async fn detached_edge_rotates_its_own_log() {
    use crate::log_file::LOG_CHECK_INTERVAL;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().canonicalize().unwrap().join(LOG_FILE);
    let numbered = |n: u32| log.with_file_name(format!("{LOG_FILE}.{n}"));
    let filler = |byte: u8| {
        let mut filler = vec![byte; usize::try_from(LOG_MAX_SIZE).unwrap()];
        filler.push(b'\n');
        filler
    };
    // A log left long by earlier runs is rotated before the start.
    std::fs::write(&log, filler(b'a')).unwrap();
    let pid = ensure_running(&child_spec(dir.path()))
        .await
        .unwrap()
        .status()
        .await
        .unwrap()
        .pid;
    assert_eq!(std::fs::read(numbered(1)).unwrap(), filler(b'a'));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .starts_with(START_MARKER)
    );

    // While it runs, the edge rotates the file it writes to itself.
    crate::log_file::open(&log)
        .unwrap()
        .write_all(&filler(b'b'))
        .unwrap();
    // The edge renames `.1` to `.2` and its log to `.1`, then points its stdout and stderr
    // at a new log: looked at until all three are done, or the deadline.
    let deadline = Instant::now() + 10 * LOG_CHECK_INTERVAL;
    let writes_to = || [fd_path(pid, 1), fd_path(pid, 2)];
    let renamed = || {
        numbered(2).exists()
            && std::fs::File::open(numbered(1)).is_ok_and(|mut file| {
                let mut head = vec![0u8; START_MARKER.len()];
                std::io::Read::read_exact(&mut file, &mut head).is_ok()
                    && head == START_MARKER.as_bytes()
            })
    };
    while !(renamed() && writes_to() == [log.clone(), log.clone()]) && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let writes_to = writes_to();
    // Stopped before any assertion, so that a failure leaves no edge running.
    stop(dir.path(), Duration::from_secs(20)).await.unwrap();

    assert!(
        numbered(2).exists(),
        "the running edge did not rotate its log"
    );
    let rotated = std::fs::read(numbered(1)).unwrap();
    assert!(rotated.starts_with(START_MARKER.as_bytes()));
    assert!(rotated.ends_with(&filler(b'b')));
    assert_eq!(std::fs::read(numbered(2)).unwrap(), filler(b'a'));
    // Its stdout and stderr wrote the new file, 0600.
    assert_eq!(writes_to, [log.clone(), log.clone()]);
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn zombie_counts_as_dead() {
    let child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Wait for the exit but leave the child unreaped: a zombie.
    waitid(
        Id::Pid(Pid::from_raw(pid as i32)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    )
    .unwrap();
    assert!(
        kill(Pid::from_raw(pid as i32), None).is_ok(),
        "a zombie still answers kill(0)"
    );
    assert!(is_zombie(pid));
    assert!(!is_running(pid));
    let mut child = child;
    child.wait().unwrap();
}

#[test]
fn live_process_is_running_and_reaped_one_is_not() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    assert!(is_running(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!is_running(pid));
    assert!(!is_running(0), "pid 0 is a process group, never an edge");
    assert!(!is_running(u32::MAX));
}

#[test]
fn stale_pid_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PID_FILE), format!("{}\n", dead_pid())).unwrap();
    assert_eq!(find(dir.path()), None);
}

#[test]
fn pid_file_of_unlocked_directory_is_stale_even_if_the_pid_lives() {
    // The pid was reused by a process that is no edge: nobody holds edge.lock.
    let dir = tempfile::tempdir().unwrap();
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.path().join(PID_FILE), format!("{}\n", other.id())).unwrap();
    std::fs::write(dir.path().join(LOCK_FILE), b"").unwrap();
    assert_eq!(find(dir.path()), None);
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn lock_holder_is_read_from_proc_locks() {
    let locks = "1: FLOCK  ADVISORY  WRITE 1413 fe:00:753934 0 EOF\n\
                 1: -> FLOCK  ADVISORY  WRITE 1500 fe:00:753934 0 EOF\n\
                 2: POSIX  ADVISORY  WRITE 1777 fe:00:42 0 EOF\n\
                 3: FLOCK  ADVISORY  WRITE -1 fe:00:99 0 EOF\n";
    assert_eq!(flock_holder(locks, 753934), Holder::Pid(1413));
    assert_eq!(flock_holder(locks, 42), Holder::Nobody);
    assert_eq!(flock_holder(locks, 99), Holder::Unknown);
    assert_eq!(flock_holder(locks, 7), Holder::Nobody);
}

#[tokio::test]
async fn in_process_edge_is_found_by_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    assert_eq!(find(dir.path()), Some(std::process::id()));
    edge.shutdown().await.unwrap();
    assert_eq!(find(dir.path()), None);
    assert!(!dir.path().join(PID_FILE).exists());
    assert!(!dir.path().join(ADMIN_SOCKET).exists());
}

#[tokio::test]
async fn ensure_running_recovers_from_stale_pid_and_socket_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PID_FILE), format!("{}\n", dead_pid())).unwrap();
    // A socket file nobody listens on, as a crashed edge leaves it.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join(ADMIN_SOCKET)).unwrap());
    let spec = child_spec(dir.path());

    let client = ensure_running(&spec).await.unwrap();
    let status = client.status().await.unwrap();
    assert_ne!(status.pid, std::process::id());
    assert!(is_running(status.pid));
    assert_eq!(find(dir.path()), Some(status.pid));
    let recorded = std::fs::read_to_string(dir.path().join(PID_FILE)).unwrap();
    assert_eq!(recorded.trim(), status.pid.to_string());

    // A second call reuses the same edge.
    let again = ensure_running(&spec).await.unwrap().status().await.unwrap();
    assert_eq!(again.pid, status.pid);

    // Asking for another port is refused, not silently ignored.
    let mut elsewhere = spec.clone();
    elsewhere.listen = SocketAddr::new(
        status.listen.ip(),
        status.listen.port().wrapping_add(1).max(1),
    );
    let err = ensure_running(&elsewhere).await.unwrap_err();
    assert!(matches!(err, EdgeError::ListenMismatch { .. }), "{err:?}");

    let outcome = stop(dir.path(), Duration::from_secs(20)).await.unwrap();
    assert_eq!(outcome, StopOutcome::ShutDown { pid: status.pid });
    assert!(!is_running(status.pid));
    assert!(!dir.path().join(PID_FILE).exists());
    assert_eq!(find(dir.path()), None);
    assert_eq!(
        stop(dir.path(), Duration::from_secs(5)).await.unwrap(),
        StopOutcome::NotRunning
    );
}

#[tokio::test]
async fn ensure_running_reports_an_edge_that_exits_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DaemonSpec {
        exe: PathBuf::from("sh"),
        args: vec![
            "-c".into(),
            "echo 'cannot listen: port taken' >&2; exit 3".into(),
        ],
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        start_timeout: Duration::from_secs(20),
    };
    let err = ensure_running(&spec).await.unwrap_err();
    assert!(matches!(err, EdgeError::StartExited { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("cannot listen: port taken"), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(!dir.path().join(PID_FILE).exists());
}

#[tokio::test]
async fn ensure_running_stops_an_edge_that_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DaemonSpec {
        exe: PathBuf::from("sh"),
        args: vec!["-c".into(), "echo still booting; exec sleep 60".into()],
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        start_timeout: Duration::from_millis(500),
    };
    let err = ensure_running(&spec).await.unwrap_err();
    let EdgeError::StartTimeout { ref tail, .. } = err else {
        panic!("expected a start timeout, got {err:?}");
    };
    assert_eq!(tail, "still booting");
    assert!(!dir.path().join(PID_FILE).exists());
}

/// A stand-in for a hung edge: holds the edge lock of a directory and never answers.
#[test]
#[ignore = "run by the daemon tests as a hung edge"]
fn hung_edge_process() {
    let Some(dir) = std::env::args().find_map(|a| a.strip_prefix(HUNG_DIR).map(PathBuf::from))
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A registered tokio handler turns SIGTERM into a no-op for this process.
    let _ignored = std::env::args()
        .any(|a| a == IGNORE_TERM)
        .then(|| {
            runtime.block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            })
        })
        .transpose()
        .unwrap();
    let file = File::create(dir.join(LOCK_FILE)).unwrap();
    let _lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{LOCKED}").unwrap();
    stdout.flush().unwrap();
    // Bounded: the parent kills it long before.
    std::thread::sleep(Duration::from_secs(60));
}

const HUNG_DIR: &str = "shipit-edge-hung-dir=";
const IGNORE_TERM: &str = "shipit-edge-ignore-term";
const LOCKED: &str = "shipit-edge-locked";

/// Starts [`hung_edge_process`] and returns once it holds the lock of `dir`.
fn spawn_hung_edge(dir: &Path, ignore_term: bool) -> Child {
    use std::io::BufRead;
    let mut dir_arg = OsString::from(HUNG_DIR);
    dir_arg.push(dir);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "daemon::tests::hung_edge_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .arg(dir_arg)
        .stdout(Stdio::piped());
    if ignore_term {
        command.arg(IGNORE_TERM);
    }
    let mut child = command.spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let locked = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line == LOCKED);
    assert!(locked, "the hung edge did not take the lock");
    std::fs::write(dir.join(PID_FILE), format!("{}\n", child.id())).unwrap();
    child
}

#[tokio::test]
async fn stop_terminates_an_edge_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut hung = spawn_hung_edge(dir.path(), false);
    let pid = hung.id();
    assert_eq!(find(dir.path()), Some(pid));
    let outcome = stop(dir.path(), Duration::from_secs(20)).await.unwrap();
    assert_eq!(outcome, StopOutcome::Terminated { pid });
    assert!(!dir.path().join(PID_FILE).exists());
    let exit = hung.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(Signal::SIGTERM as i32)
    );
}

#[tokio::test]
async fn stop_kills_an_edge_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut hung = spawn_hung_edge(dir.path(), true);
    let pid = hung.id();
    let outcome = stop(dir.path(), Duration::from_millis(300)).await.unwrap();
    assert_eq!(outcome, StopOutcome::Killed { pid });
    let exit = hung.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(Signal::SIGKILL as i32)
    );
}
