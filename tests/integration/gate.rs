//! Pause and maintenance on the local target: under load, a 1.5 s pause then a resume fails
//! no request, and the requests sent meanwhile are answered only after the resume; a pause
//! past its timeout answers 503 with Retry-After; maintenance answers 503 with an escaped
//! page and Retry-After until it is turned off; `status` shows both.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::{Project, assert_success, json};
use crate::load::Load;

/// One raw HTTP/1.1 GET on a new connection: the whole answer, head and body.
fn raw_get(addr: SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap();
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_under_load_holds_requests_until_the_resume_and_fails_none() {
    let project = Project::new("pause");
    let release = project.release_async().await;
    let load = Load::start(project.listen, 8);
    assert!(load.answered_after_now(Duration::from_secs(10)).await);

    let out = project
        .run_async(&["pause", "--timeout", "30s", "--json"], &[])
        .await;
    assert_success(&out, "shipit pause");
    let paused_at = Instant::now();
    assert!(
        json(&out)["paused"]["deadline"].is_string(),
        "{}",
        json(&out)
    );
    // The window the pause is for.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = project.status();
    let held = status["gate"]["paused"]["held"].as_u64().unwrap_or(0);
    assert!(held >= 1, "no request is held: {status}");
    let resuming_at = Instant::now();
    let out = project.run_async(&["resume", "--json"], &[]).await;
    assert_success(&out, "shipit resume");
    let released = json(&out)["released"].as_u64().unwrap();
    assert!(released >= 1, "{}", json(&out));
    assert!(load.answered_after_now(Duration::from_secs(10)).await);
    let report = load.stop().await;
    report.assert_no_failures();
    // Nothing was answered during the pause (in-flight requests had 100 ms to finish)...
    let settled = paused_at + Duration::from_millis(100);
    let answered_while_paused: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.finished >= settled && s.finished < resuming_at)
        .collect();
    assert!(
        answered_while_paused.is_empty(),
        "answered while paused: {answered_while_paused:?}"
    );
    // ...and the held requests were answered after the resume began, by the live release.
    let held_requests: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.started < resuming_at && s.finished >= resuming_at)
        .collect();
    eprintln!(
        "pause: {held} held at the status read, {released} released, {} answered after the resume",
        held_requests.len()
    );
    assert!(!held_requests.is_empty(), "no request was held");
    for sample in &held_requests {
        assert_eq!(
            sample.release.as_deref(),
            Some(release.as_str()),
            "{sample:?}"
        );
    }
    assert!(
        project.status().get("gate").is_none(),
        "{}",
        project.status()
    );

    // Past its timeout, a pause answers 503 with Retry-After until the resume.
    let out = project.run(&["pause", "--timeout", "300ms"]);
    assert_success(&out, "shipit pause --timeout 300ms");
    let answer = raw_get(project.listen);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(header(&answer, "retry-after").is_some(), "{answer}");
    assert_eq!(project.status()["gate"]["paused"]["expired"], true);
    assert_success(&project.run(&["resume"]), "shipit resume");
    assert!(raw_get(project.listen).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_answers_503_with_an_escaped_page_until_it_is_turned_off() {
    let project = Project::new("maint");
    project.release_async().await;
    let out = project.run(&[
        "maintenance",
        "on",
        "--message",
        "<b>back at 5</b>",
        "--retry-after",
        "2m",
        "--json",
    ]);
    assert_success(&out, "shipit maintenance on");
    assert_eq!(json(&out)["maintenance"]["message"], "<b>back at 5</b>");
    let answer = raw_get(project.listen);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(header(&answer, "retry-after"), Some("120"), "{answer}");
    assert!(answer.contains("&lt;b&gt;back at 5&lt;/b&gt;"), "{answer}");
    assert!(
        !answer.contains("<b>back"),
        "the message was not escaped: {answer}"
    );
    let status = project.status();
    assert_eq!(status["gate"]["maintenance"]["message"], "<b>back at 5</b>");
    let text = String::from_utf8_lossy(&project.run(&["status"]).stdout).to_string();
    assert!(text.contains("MAINTENANCE since"), "{text}");

    assert_success(
        &project.run(&["maintenance", "off"]),
        "shipit maintenance off",
    );
    let answer = raw_get(project.listen);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(project.status().get("gate").is_none());
}
