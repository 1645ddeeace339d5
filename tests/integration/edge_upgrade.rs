//! `shipit edge upgrade` under load: a real edge daemon (the `shipit` binary, started
//! detached the way `shipit release` starts it) in front of a real HTTP backend, replaced
//! several times while keep-alive clients and clients opening a connection per request
//! count every answer. A connection error, a reset, a cut answer or a non-2xx is a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use shipit_edge::{AdminClient, Backend, Slot};

use crate::harness::{SHIPIT, assert_success, free_port, json, stderr};

/// Hard bounds on the load: requests per client and the longest run.
const MAX_REQUESTS_PER_CLIENT: usize = 100_000;
const MAX_LOAD: Duration = Duration::from_secs(120);
/// How many answers the load must get between two upgrades (and after the last).
const ANSWERS_BETWEEN_UPGRADES: usize = 300;
/// How long any one wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// A backend on 127.0.0.1: `/` answers `release=<release>` at once, `/slow?ms=N` after N ms
/// (at most one second), so requests are in flight when the edge changes hands.
pub(crate) struct TestServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(release: &'static str) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: hyper::Request<_>| async move {
                            let wait = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("ms="))
                                .and_then(|ms| ms.parse::<u64>().ok())
                                .unwrap_or(0)
                                .min(1000);
                            if wait > 0 {
                                tokio::time::sleep(Duration::from_millis(wait)).await;
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(format!("release={release}\n")),
                            )))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, task }
    }

    pub(crate) fn backend(&self, slot: Slot, release: &str) -> Backend {
        Backend {
            slot,
            release: release.to_string(),
            addr: self.addr,
            more_addrs: Vec::new(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An edge daemon in its own directory, started as `shipit release` starts it.
struct EdgeDaemon {
    _dir: tempfile::TempDir,
    edge_dir: PathBuf,
    listen: SocketAddr,
}

impl EdgeDaemon {
    async fn start() -> EdgeDaemon {
        let dir = tempfile::Builder::new()
            .prefix("shipit-it-edge-")
            .tempdir()
            .unwrap();
        let edge_dir = dir.path().join("edge");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let spec = shipit_edge::DaemonSpec {
            exe: PathBuf::from(SHIPIT),
            args: vec![
                "edge".into(),
                "run".into(),
                "--dir".into(),
                edge_dir.clone().into_os_string(),
                "--listen".into(),
                listen.to_string().into(),
            ],
            dir: edge_dir.clone(),
            listen,
            start_timeout: Duration::from_secs(20),
        };
        shipit_edge::daemon::ensure_running(&spec).await.unwrap();
        EdgeDaemon {
            _dir: dir,
            edge_dir,
            listen,
        }
    }

    fn client(&self) -> AdminClient {
        AdminClient::new(self.edge_dir.join(shipit_edge::ADMIN_SOCKET))
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(SHIPIT);
        command
            .args(args)
            .env_remove("SHIPIT_CONFIG")
            .env_remove("SHIPIT_STATE_DIR")
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        command
    }

    /// `shipit [before...] edge upgrade --dir <dir> [after...] --json`.
    async fn upgrade(&self, before: &[&str], after: &[&str]) -> std::process::Output {
        let dir = self.edge_dir.to_str().unwrap();
        let mut args: Vec<&str> = before.to_vec();
        args.extend(["edge", "upgrade", "--dir", dir]);
        args.extend(after);
        args.push("--json");
        tokio::time::timeout(DEADLINE, self.command(&args).output())
            .await
            .expect("`shipit edge upgrade` did not finish in time")
            .unwrap()
    }

    fn pid_file(&self) -> String {
        std::fs::read_to_string(self.edge_dir.join(shipit_edge::PID_FILE))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for EdgeDaemon {
    fn drop(&mut self) {
        // Whatever a failed test left running.
        if let Some(pid) = shipit_edge::daemon::find(&self.edge_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicUsize,
    /// Answers that said `Connection: close` (the old edge sending its clients on).
    told_to_close: AtomicUsize,
    connections: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `more` answers arrived after this call.
    async fn progress(&self, more: usize) {
        let wanted = self.ok() + more;
        let waited = async {
            while self.ok() < wanted {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(DEADLINE, waited)
            .await
            .unwrap_or_else(|_| panic!("the load did not get {more} more answers in time"));
    }
}

/// Keep-alive clients (each reusing its connection until told to close it, as HTTP/1.1
/// clients do) and clients that open a connection per request.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request; `Ok(true)` when the answer asked to close the connection.
async fn request(
    sender: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    close: bool,
) -> Result<bool, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let mut request = hyper::Request::get(path).header("host", addr.to_string());
    if close {
        request = request.header("connection", "close");
    }
    let response = sender
        .send_request(request.body(Empty::new()).unwrap())
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = response.status();
    let closing = response
        .headers()
        .get(hyper::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{path}: body: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(format!("{path}: HTTP {status}: {}", body.trim()));
    }
    if !body.starts_with("release=") {
        return Err(format!("{path}: unexpected body {body:?}"));
    }
    Ok(closing)
}

impl Load {
    fn start(addr: SocketAddr, keep_alive: usize, one_shot: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let started = Instant::now();
        let running = {
            let stop = Arc::clone(&stop);
            move |sent: usize| {
                !stop.load(Ordering::Relaxed)
                    && sent < MAX_REQUESTS_PER_CLIENT
                    && started.elapsed() < MAX_LOAD
            }
        };
        let mut tasks = Vec::new();
        for client in 0..keep_alive {
            let (tally, running) = (Arc::clone(&tally), running.clone());
            tasks.push(tokio::spawn(async move {
                let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
                let mut sent = 0;
                while running(sent) {
                    sent += 1;
                    if sender.is_none() {
                        match connect(addr).await {
                            Ok(s) => {
                                tally.connections.fetch_add(1, Ordering::SeqCst);
                                sender = Some(s);
                            }
                            Err(e) => {
                                tally.fail(format!("keep-alive client {client}: {e}"));
                                continue;
                            }
                        }
                    }
                    // Every eighth request takes a while: some are in flight at any moment.
                    let path = if sent % 8 == 0 { "/slow?ms=20" } else { "/" };
                    match request(sender.as_mut().unwrap(), addr, path, false).await {
                        Ok(closing) => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                            if closing {
                                tally.told_to_close.fetch_add(1, Ordering::SeqCst);
                                sender = None;
                            }
                        }
                        Err(e) => {
                            tally.fail(format!("keep-alive client {client}: {e}"));
                            sender = None;
                        }
                    }
                }
            }));
        }
        for client in 0..one_shot {
            let (tally, running) = (Arc::clone(&tally), running.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = 0;
                while running(sent) {
                    sent += 1;
                    let answered = match connect(addr).await {
                        Ok(mut sender) => request(&mut sender, addr, "/", true).await,
                        Err(e) => Err(e),
                    };
                    match answered {
                        Ok(_) => {
                            tally.connections.fetch_add(1, Ordering::SeqCst);
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => tally.fail(format!("one-shot client {client}: {e}")),
                    }
                }
            }));
        }
        Load { stop, tally, tasks }
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("a load client did not stop in time")
                .unwrap();
        }
        self.tally
    }
}

fn assert_no_failures(tally: &Tally) {
    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed; the first ones: {:#?}",
        failures.len(),
        failures.len() + tally.ok(),
        &failures[..failures.len().min(10)]
    );
    assert!(tally.ok() > 0, "the load got no answer at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_drops_no_requests() {
    const UPGRADES: usize = 3;
    const KEEP_ALIVE_CLIENTS: usize = 16;
    let backend = TestServer::start("r1").await;
    let edge = EdgeDaemon::start().await;
    let live = backend.backend(Slot::Blue, "r1");
    edge.client().switch("web", &live).await.unwrap();
    let first_pid = edge.client().status().await.unwrap().pid;

    let load = Load::start(edge.listen, KEEP_ALIVE_CLIENTS, 4);
    load.tally.progress(ANSWERS_BETWEEN_UPGRADES).await;
    let mut pids = vec![first_pid];
    for upgrade in 1..=UPGRADES {
        let out = edge.upgrade(&[], &[]).await;
        assert_success(&out, &format!("shipit edge upgrade #{upgrade}"));
        let report = json(&out);
        let (old, new) = (
            report["old_pid"].as_u64().unwrap() as u32,
            report["new_pid"].as_u64().unwrap() as u32,
        );
        assert_eq!(old, *pids.last().unwrap(), "upgrade #{upgrade}: {report}");
        assert!(
            !pids.contains(&new),
            "upgrade #{upgrade}: pid {new} again: {report}"
        );
        assert!(
            report["old_exited_ms"].is_u64(),
            "upgrade #{upgrade}: the old edge did not finish: {report}"
        );
        assert!(!shipit_edge::daemon::is_running(old), "upgrade #{upgrade}");
        eprintln!(
            "upgrade #{upgrade}: pid {old} → {new}, took over in {} ms, old exited after {} ms",
            report["took_over_ms"], report["old_exited_ms"]
        );
        pids.push(new);
        load.tally.progress(ANSWERS_BETWEEN_UPGRADES).await;
    }
    let tally = load.stop().await;
    eprintln!(
        "{} answers, {} told to close, {} connections",
        tally.ok(),
        tally.told_to_close.load(Ordering::SeqCst),
        tally.connections.load(Ordering::SeqCst)
    );
    assert_no_failures(&tally);
    // The old edges sent their keep-alive clients on with `Connection: close`.
    assert!(
        tally.told_to_close.load(Ordering::SeqCst) >= UPGRADES,
        "{tally:?}"
    );

    // The last edge holds the routes, the pid file and the admin socket.
    let last = *pids.last().unwrap();
    let status = edge.client().status().await.unwrap();
    assert_eq!(status.pid, last);
    assert_eq!(status.listen, edge.listen);
    assert_eq!(status.routes.len(), 1);
    assert_eq!(status.routes[0].live.as_ref(), Some(&live));
    assert_eq!(edge.pid_file(), last.to_string());
    assert_eq!(shipit_edge::daemon::find(&edge.edge_dir), Some(last));
    // And it takes route changes.
    let previous = edge
        .client()
        .switch("web", &backend.backend(Slot::Green, "r2"))
        .await
        .unwrap()
        .previous;
    assert_eq!(previous, Some(live));

    let dir = edge.edge_dir.to_str().unwrap();
    let out = edge
        .command(&["edge", "stop", "--dir", dir, "--json"])
        .output()
        .await
        .unwrap();
    assert_success(&out, "shipit edge stop");
    assert_eq!(json(&out)["pid"].as_u64(), Some(u64::from(last)));
}

/// A config whose local target listens on `listen`, with `edge` as its edge table.
fn config(dir: &Path, listen: SocketAddr, edge: &str) -> PathBuf {
    let path = dir.join("shipit.toml");
    std::fs::write(
        &path,
        format!(
            "[services.web]\nport = 8080\n\n[targets.local]\nlisten = \"{listen}\"\n\n\
             [targets.local.edge]\n{edge}"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_leaves_the_old_edge_serving() {
    let backend = TestServer::start("r1").await;
    let edge = EdgeDaemon::start().await;
    edge.client()
        .switch("web", &backend.backend(Slot::Blue, "r1"))
        .await
        .unwrap();
    let pid = edge.client().status().await.unwrap().pid;
    let load = Load::start(edge.listen, 8, 2);
    load.tally.progress(ANSWERS_BETWEEN_UPGRADES).await;

    // The new edge asks for another address: it gets the sockets, sees that they do not
    // fit, and leaves; the running edge takes up where it was.
    let folder = tempfile::tempdir().unwrap();
    let elsewhere: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let moved = config(folder.path(), elsewhere, "");
    let out = edge
        .upgrade(&["-c", moved.to_str().unwrap()], &["-t", "local"])
        .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("(pid {pid}) keeps serving")),
        "{message}"
    );
    assert!(
        message.contains(&format!("listens on {}, not on {elsewhere}", edge.listen)),
        "the new edge's log lines are shown: {message}"
    );
    assert_eq!(json(&out)["error"]["exit_code"], 6);
    load.tally.progress(ANSWERS_BETWEEN_UPGRADES).await;

    // A certificate that does not load: the new edge stops before it asks for anything.
    std::fs::write(folder.path().join("bad.pem"), "not a certificate\n").unwrap();
    let tls_listen = format!("127.0.0.1:{}", free_port());
    let broken = config(
        folder.path(),
        edge.listen,
        &format!(
            "tls_listen = \"{tls_listen}\"\ncertificates = [{{ cert = \"bad.pem\", key = \"bad.pem\" }}]\n"
        ),
    );
    let out = edge
        .upgrade(&["-c", broken.to_str().unwrap()], &["-t", "local"])
        .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("keeps serving"), "{message}");
    assert!(message.contains("bad.pem"), "{message}");

    // The old edge still serves, takes route changes, and can still be upgraded.
    let status = edge.client().status().await.unwrap();
    assert_eq!(status.pid, pid);
    edge.client()
        .switch("web", &backend.backend(Slot::Green, "r2"))
        .await
        .unwrap();
    load.tally.progress(ANSWERS_BETWEEN_UPGRADES).await;
    let out = edge.upgrade(&[], &[]).await;
    assert_success(&out, "shipit edge upgrade after the failed ones");
    assert_eq!(json(&out)["old_pid"].as_u64(), Some(u64::from(pid)));
    load.tally.progress(ANSWERS_BETWEEN_UPGRADES).await;
    let tally = load.stop().await;
    assert_no_failures(&tally);
    let status = edge.client().status().await.unwrap();
    assert_eq!(
        status.routes[0].live,
        Some(backend.backend(Slot::Green, "r2"))
    );

    let dir = edge.edge_dir.to_str().unwrap();
    let out = edge
        .command(&["edge", "stop", "--dir", dir])
        .output()
        .await
        .unwrap();
    assert_success(&out, "shipit edge stop");
}

#[tokio::test]
async fn upgrade_without_a_running_edge_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(SHIPIT)
        .args(["edge", "upgrade", "--dir"])
        .arg(dir.path())
        .env_remove("SHIPIT_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("no edge is running"), "{message}");
    assert!(message.contains("shipit edge run"), "{message}");
}
