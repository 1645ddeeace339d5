//! Weighted shifts on the local target: a canary splits new clients by the configured share
//! and keeps each on its side by cookie, then promotes; a canary that answers 5xx during its
//! bake is pulled, with all traffic back on the old release.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::harness::{Project, SHIPIT, assert_success, json, stderr};
use crate::load::{Load, release_of};

/// How many fresh clients measure the split's share.
const SHARE_PROBES: usize = 400;
/// How far the measured share may be from the configured one, in percentage points. The
/// edge assigns new clients by one counter (exactly `percent` of each hundred), and every
/// request without a cookie is a new client: the probes' and the load's alike. Their
/// requests in the measuring window take consecutive turns of that counter, so over all of
/// them the share is 25 % up to the rounding at the window's two ends. The probes alone are
/// interleaved with the load in no particular pattern, and see only roughly 25 %.
const SHARE_TOLERANCE: f64 = 2.0;

/// One answer, with what a test needs of it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The release the body reports.
    pub release: Option<String>,
    /// `name=value` of the sticky cookie the edge set, if it set one.
    pub cookie: Option<String>,
}

/// One GET on a fresh connection, with extra headers (a cookie, `X-Shipit-Slot`, `Host`).
pub async fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::get(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        builder = builder.header("host", addr.to_string());
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        release: release_of(&String::from_utf8_lossy(&body)),
        cookie,
    })
}

/// The edge's view of the service's candidate: (release, percent), if one is registered.
/// Panics when the edge does not answer.
pub async fn candidate(project: &Project) -> Option<(String, u64)> {
    let out = tokio::process::Command::new(SHIPIT)
        .args(["edge", "status", "--json", "--dir"])
        .arg(project.edge_dir())
        .output()
        .await
        .unwrap();
    // A failed status call must not read as "no candidate": a wait for the split to end
    // would stop early while it still stands.
    assert!(
        out.status.success(),
        "shipit edge status failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "shipit edge status printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let route = status["routes"]
        .as_array()?
        .iter()
        .find(|r| r["service"] == project.service.as_str())?
        .clone();
    let candidate = &route["candidate"];
    Some((
        candidate["backend"]["release"].as_str()?.to_string(),
        candidate["percent"].as_u64()?,
    ))
}

/// Adds `lines` to the project's `[targets.local]` table (the last table of its config).
pub fn configure_target(project: &Project, lines: &str) {
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    assert!(
        config.trim_end().ends_with("stop_timeout = \"2s\""),
        "[targets.local] is the last table of the test config:\n{config}"
    );
    config.push_str(lines);
    std::fs::write(&project.config, config).unwrap();
}

/// Passes `HELLO_ROOT` from shipit's environment to the service's containers.
fn pass_hello_root(project: &Project) {
    let config = std::fs::read_to_string(&project.config).unwrap();
    let knob = "HELLO_STARTUP_MS = \"${HELLO_STARTUP_MS:-0}\"\n";
    assert!(config.contains(knob), "{config}");
    let config = config.replace(
        knob,
        &format!("{knob}HELLO_ROOT = \"${{HELLO_ROOT:-ok}}\"\n"),
    );
    std::fs::write(&project.config, config).unwrap();
}

/// Polls the edge until a candidate takes `percent`, or `deadline` passes: its release.
pub async fn wait_for_split(project: &Project, percent: u64, deadline: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some((release, p)) = candidate(project).await
            && p == percent
        {
            return release;
        }
        assert!(
            start.elapsed() < deadline,
            "no candidate took {percent}% within {deadline:?}; last seen: {:?}",
            candidate(project).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that the canary still takes 25 %: the bake that began when the split was seen at
/// `split_seen` has not ended.
async fn assert_still_baking(project: &Project, canary: &str, split_seen: Instant) {
    assert_eq!(
        candidate(project).await,
        Some((canary.to_string(), 25)),
        "the bake ended before the probes finished ({:?} after the split was seen); lengthen it",
        split_seen.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_release_splits_traffic_within_tolerance_then_promotes() {
    let project = Project::new("canary");
    // The probes and the cookie checks below must all fall within the bake. With the crash
    // and canary tests four at a time and a release build beside them, they took 7 to 11 s
    // (an 8 s bake failed there in four runs of five).
    configure_target(&project, "shift = \"canary:25:30s\"\n");
    let first = project.release_async().await;
    let load = Load::start(project.listen, 16);

    let mut releasing = tokio::process::Command::from(project.command(&["release", "--json"]));
    let releasing = tokio::spawn(async move { releasing.output().await.expect("shipit runs") });
    let canary = wait_for_split(&project, 25, Duration::from_secs(60)).await;
    let split_seen = Instant::now();
    assert_ne!(canary, first);

    // Fresh clients, one connection and no cookie each, beside the load's.
    let measure_from = Instant::now();
    let mut on_canary = 0usize;
    let mut canary_cookie = None;
    let mut live_cookie = None;
    for _ in 0..SHARE_PROBES {
        let answer = request(project.listen, "/", &[])
            .await
            .expect("probe answered");
        assert_eq!(answer.status, 200, "{answer:?}");
        let release = answer.release.clone().expect("the body names its release");
        if release == canary {
            on_canary += 1;
            canary_cookie = canary_cookie.or(answer.cookie.clone());
        } else {
            assert_eq!(release, first, "only the two releases answer");
            live_cookie = live_cookie.or(answer.cookie.clone());
        }
    }
    let measure_until = Instant::now();
    assert!(
        on_canary > 0 && on_canary < SHARE_PROBES,
        "{on_canary} of {SHARE_PROBES} probes reached the canary: the split is not a split"
    );

    // A client keeps its side: its cookie brings it back to the release that set it.
    for (cookie, release) in [(canary_cookie, &canary), (live_cookie, &first)] {
        let cookie = cookie.expect("the split sets a sticky cookie on both sides");
        for _ in 0..20 {
            let answer = request(project.listen, "/", &[("cookie", cookie.as_str())])
                .await
                .unwrap();
            if answer.release.as_ref() != Some(release) {
                // Once the bake ends, the canary is live and the old release's cookie no
                // longer names a side: tell that apart from a broken cookie.
                assert_still_baking(&project, &canary, split_seen).await;
                panic!(
                    "cookie {cookie} brought a client to {:?}, not to {release}",
                    answer.release
                );
            }
        }
    }
    // All of that happened within the bake, or the measure proves nothing.
    assert_still_baking(&project, &canary, split_seen).await;
    eprintln!(
        "the probes and cookie checks took {:?} of the bake",
        split_seen.elapsed()
    );

    let out = releasing.await.unwrap();
    assert_success(&out, "shipit release (canary)");
    let record = json(&out);
    assert_eq!(record["serves"], canary.as_str());
    assert_eq!(record["outcome"]["status"], "succeeded");
    let steps = record["shift_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{record}");
    assert_eq!(steps[0]["percent"], 25);
    assert_eq!(steps[0]["ok"], true);
    let report = load.stop().await;
    report.assert_no_failures();

    // Of every new client in the measuring window, a quarter went to the canary.
    let window: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.started >= measure_from && s.started < measure_until)
        .collect();
    let load_on_canary = window
        .iter()
        .filter(|s| s.release.as_deref() == Some(canary.as_str()))
        .count();
    let clients = window.len() + SHARE_PROBES;
    let share = (load_on_canary + on_canary) as f64 * 100.0 / clients as f64;
    eprintln!(
        "canary share: {} of {clients} new clients = {share:.2}% (probes alone: {on_canary}/{SHARE_PROBES})",
        load_on_canary + on_canary
    );
    assert!(
        clients >= 1000,
        "too few requests in the window to measure: {clients}"
    );
    assert!(
        (share - 25.0).abs() <= SHARE_TOLERANCE,
        "{share:.2}% of new clients reached the canary; expected 25% ± {SHARE_TOLERANCE}"
    );

    // The switch made it 100 %: fresh clients and the old side's cookie alike.
    assert_eq!(candidate(&project).await, None);
    for _ in 0..50 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        assert_eq!(answer.release.as_deref(), Some(canary.as_str()));
    }
    assert_eq!(project.status()["live"]["release"], canary.as_str());
    assert_eq!(project.running_releases(), std::slice::from_ref(&canary));
    eprintln!(
        "{} requests under load, {} ok",
        report.samples.len(),
        report.ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_bake_aborts_when_candidate_returns_5xx() {
    let project = Project::new("badcanary");
    pass_hello_root(&project);
    let bake = Duration::from_secs(60);
    configure_target(
        &project,
        &format!("shift = \"canary:25:{}s\"\n", bake.as_secs()),
    );
    let first = project.release_async().await;
    // Traffic for the bake to judge: a quarter of it meets the failing canary.
    let load = Load::start(project.listen, 8);
    let out = project
        .run_async(&["release", "--json"], &[("HELLO_ROOT", "fail")])
        .await;
    let returned = Instant::now();
    // After the release gave up, every fresh client is on the old release again.
    for _ in 0..100 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.release.as_deref(), Some(first.as_str()));
    }
    let report = load.stop().await;

    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("answered"), "{err}");
    assert!(err.contains("with 5xx"), "{err}");
    assert!(err.contains("max_error_rate = 0.01"), "{err}");
    let failure = json(&out);
    assert_eq!(failure["error"]["exit_code"], 5);

    // The load saw the canary's 500s while it was in the split, and none after.
    let late: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.started >= returned)
        .collect();
    assert!(
        late.iter()
            .all(|s| s.failure.is_none() && s.release.as_deref() == Some(first.as_str())),
        "requests after the failed release went elsewhere than {first}: {:?}",
        late.iter()
            .filter(|s| s.release.as_deref() != Some(first.as_str()))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        report
            .failures()
            .iter()
            .all(|s| s.failure.as_deref().unwrap_or("").contains("HTTP 500")),
        "only the canary's own 500s failed: {:?}",
        report.failures().iter().take(5).collect::<Vec<_>>()
    );

    assert_eq!(
        candidate(&project).await,
        None,
        "the edge holds no candidate"
    );
    assert_eq!(project.status()["live"]["release"], first.as_str());
    assert_eq!(project.running_releases(), std::slice::from_ref(&first));
    let newest = &project.history()[0];
    assert_eq!(newest["outcome"]["status"], "failed");
    let cause = newest["outcome"]["cause"].as_str().unwrap();
    assert!(cause.contains("max_error_rate"), "{cause}");
    // It was pulled as soon as the rate broke the bound, not at the end of the bake.
    let step = &newest["shift_steps"][0];
    assert_eq!(step["ok"], false, "{newest}");
    let started: jiff::Timestamp = step["started_at"].as_str().unwrap().parse().unwrap();
    let finished: jiff::Timestamp = step["finished_at"].as_str().unwrap().parse().unwrap();
    let baked = finished.duration_since(started);
    assert!(
        baked < jiff::SignedDuration::try_from(bake).unwrap(),
        "the bake ran {baked:?} of {bake:?} before it was stopped"
    );
}

/// Starts `shipit release` of a canary with a long bake and waits until the split is in the
/// edge: the release is then baking. Returns the child, its pid and the canary's release.
pub async fn release_baking(
    project: &Project,
) -> (tokio::process::Child, nix::unistd::Pid, String) {
    let mut cmd = tokio::process::Command::from(project.command(&["release", "--json"]));
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    let canary = wait_for_split(project, 25, Duration::from_secs(60)).await;
    (child, pid, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_during_a_canary_bake_puts_all_traffic_back_and_removes_the_candidate() {
    let project = Project::new("canaryint");
    configure_target(&project, "shift = \"canary:25:60s\"\n");
    let first = project.release_async().await;
    let load = Load::start(project.listen, 16);
    let (child, pid, canary) = release_baking(&project).await;
    // Some of the load is on the canary when the interrupt comes.
    let mut seen = false;
    for _ in 0..200 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        seen |= answer.release.as_deref() == Some(canary.as_str());
        if seen {
            break;
        }
    }
    assert!(seen, "no fresh client reached the canary during the split");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().await.unwrap();
    let returned = Instant::now();
    for _ in 0..50 {
        let answer = request(project.listen, "/", &[]).await.unwrap();
        assert_eq!(answer.release.as_deref(), Some(first.as_str()));
    }
    let report = load.stop().await;

    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    // The canary was healthy: its requests finished before it was removed, so none failed.
    report.assert_no_failures();
    assert!(
        report
            .samples
            .iter()
            .filter(|s| s.started >= returned)
            .all(|s| s.release.as_deref() == Some(first.as_str())),
        "requests after the interrupt reached another release than {first}"
    );
    assert_eq!(candidate(&project).await, None);
    assert_eq!(project.status()["live"]["release"], first.as_str());
    assert_eq!(project.running_releases(), std::slice::from_ref(&first));
    let newest = &project.history()[0];
    assert_eq!(newest["id"], canary.as_str());
    assert_eq!(newest["outcome"]["status"], "interrupted", "{newest}");
    assert_eq!(newest["shift_steps"][0]["ok"], false, "{newest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_killed_mid_bake_is_converged_by_the_next() {
    let project = Project::new("canarykill");
    configure_target(&project, "shift = \"canary:25:60s\"\n");
    let first = project.release_async().await;
    let (child, pid, canary) = release_baking(&project).await;
    // A crash: no cleanup runs, and the edge keeps the split.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait_with_output().await.unwrap();
    assert_eq!(candidate(&project).await, Some((canary.clone(), 25)));

    // The next run finds the split, withdraws the dead run's canary and releases anew.
    let config = std::fs::read_to_string(&project.config)
        .unwrap()
        .replace("canary:25:60s", "canary:25:1s");
    std::fs::write(&project.config, config).unwrap();
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "the release after the crash");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("withdrew the candidate {canary}")),
        "{err}"
    );
    let next = json(&out)["serves"].as_str().unwrap().to_string();
    assert_ne!(next, canary);
    assert_eq!(candidate(&project).await, None);
    assert_eq!(project.status()["live"]["release"], next.as_str());
    assert_eq!(project.running_releases(), std::slice::from_ref(&next));
    let statuses: Vec<String> = project
        .history()
        .iter()
        .map(|r| r["outcome"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["succeeded", "interrupted", "succeeded"]);
    assert_ne!(first, next);
}

/// Sends malformed and aborted uploads pinned to `slot` until `stop` turns: the kind any
/// anonymous client can send. Returns how many it sent.
async fn malformed_uploads(
    addr: SocketAddr,
    slot: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broken: [&[u8]; 3] = [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\n",
    ];
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !*stop.borrow() && Instant::now() < deadline {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let head = if sent % 4 == 3 {
            // Aborted: a declared body, cut off.
            format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Shipit-Slot: {slot}\r\nContent-Length: 100000\r\n\r\nabc"
            )
        } else {
            format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Shipit-Slot: {slot}\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        };
        let _ = stream.write_all(head.as_bytes()).await;
        if sent % 4 != 3 {
            let _ = stream.write_all(broken[sent % 4]).await;
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
            // A slot may answer before it reads the body (hello does); the body's break is
            // the client's either way, never a 5xx.
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty()
                    || answer.starts_with("HTTP/1.1 400")
                    || answer.starts_with("HTTP/1.1 200"),
                "a malformed upload was answered {answer}"
            );
        }
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_uploads_pinned_to_the_candidate_do_not_fail_its_bake() {
    let project = Project::new("floodcanary");
    configure_target(&project, "shift = \"canary:25:4s\"\n");
    let first = project.release_async().await;
    let live = project.status()["live"]["slot"]
        .as_str()
        .unwrap()
        .to_string();
    let candidate_slot = if live == "blue" { "green" } else { "blue" };
    let load = Load::start(project.listen, 4);
    let (child, _pid, canary) = release_baking(&project).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let flood = tokio::spawn(malformed_uploads(project.listen, candidate_slot, stopped));
    let out = child.wait_with_output().await.unwrap();
    stop.send_replace(true);
    let sent = flood.await.unwrap();
    let report = load.stop().await;

    assert_success(
        &out,
        "the canary release under a flood of malformed uploads",
    );
    assert!(
        sent >= 20,
        "only {sent} malformed uploads were sent during the bake"
    );
    assert_eq!(project.status()["live"]["release"], canary.as_str());
    assert_ne!(canary, first);
    assert!(
        report.failures().is_empty(),
        "the load saw failures: {:?}",
        report.failures().iter().take(5).collect::<Vec<_>>()
    );
}
