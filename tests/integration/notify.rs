//! `[notify] webhook`: a local HTTP receiver gets one JSON POST per release, failed release
//! and rollback, with a Slack `text`; a webhook that fails or does not answer only warns; the
//! URL (a secret) is in no output.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::{Options, Project, assert_success, stderr};

/// A one-thread HTTP receiver: every POST's body goes to the channel, answered with
/// `status`; with `status` 0 it reads the request and never answers.
struct Receiver {
    port: u16,
    bodies: mpsc::Receiver<serde_json::Value>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (send, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let _ = send.send(serde_json::from_slice(&body).unwrap_or_default());
                if status == 0 {
                    held.push(stream);
                    continue;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                );
            }
        });
        Receiver { port, bodies }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/secret-key-42", self.port)
    }

    fn next(&self) -> serde_json::Value {
        self.bodies
            .recv_timeout(Duration::from_secs(10))
            .expect("the webhook was posted to")
    }
}

fn with_webhook(project: &Project, url: &str, extra: &str) {
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(&format!("\n[notify]\nwebhook = \"{url}\"\n{extra}"));
    std::fs::write(&project.config, config).unwrap();
}

fn assert_no_url(out: &std::process::Output, receiver: &Receiver) {
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        assert!(!text.contains("secret-key-42"), "the URL leaked: {text}");
        assert!(
            !text.contains(&format!("127.0.0.1:{}", receiver.port)),
            "the URL leaked: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_release_failure_and_rollback_is_posted_once() {
    let project = Project::with(
        "notify",
        Options {
            health_timeout: "3s",
            ..Options::default()
        },
    );
    let receiver = Receiver::start(200);
    with_webhook(&project, &receiver.url(), "");

    let first = project.release_async().await;
    let body = receiver.next();
    assert_eq!(body["shipit"]["outcome"], "succeeded", "{body}");
    assert_eq!(body["shipit"]["action"], "release");
    assert_eq!(body["shipit"]["serves"], first.as_str());
    assert_eq!(body["shipit"]["service"], project.service.as_str());
    let text = body["text"].as_str().unwrap();
    assert!(text.contains(&format!("{first} succeeded in ")), "{text}");
    assert!(
        body["shipit"]["duration_ms"].as_u64().unwrap() > 0,
        "{body}"
    );

    let out = project
        .run_async(&["release"], &[("HELLO_HEALTH", "fail")])
        .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let body = receiver.next();
    assert_eq!(body["shipit"]["outcome"], "failed", "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains(&format!("{first} stays live")), "{text}");
    // The app's answer quoted its env value: hidden here as everywhere.
    assert!(text.contains("HELLO_HEALTH=<redacted>"), "{text}");
    assert!(!text.contains("HELLO_HEALTH=fail"), "{text}");
    assert_no_url(&out, &receiver);

    let second = project.release_async().await;
    assert_eq!(receiver.next()["shipit"]["serves"], second.as_str());
    let out = project.run_async(&["rollback"], &[]).await;
    assert_success(&out, "shipit rollback");
    let body = receiver.next();
    assert_eq!(body["shipit"]["action"], "rollback", "{body}");
    assert_eq!(body["shipit"]["serves"], first.as_str(), "{body}");
    assert!(
        receiver.bodies.try_recv().is_err(),
        "one post per run, nothing more"
    );

    let out = project.run(&["config", "check", "--json"]);
    assert_success(&out, "shipit config check");
    assert_no_url(&out, &receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_silent_webhook_warns_and_the_release_stands() {
    let project = Project::new("notifybad");
    let failing = Receiver::start(500);
    with_webhook(&project, &failing.url(), "");
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "a release whose webhook answers 500");
    assert_eq!(failing.next()["shipit"]["outcome"], "succeeded");
    let err = stderr(&out);
    assert!(err.contains("notify: the webhook answered 500"), "{err}");
    assert!(err.contains("not affected"), "{err}");
    assert_no_url(&out, &failing);

    // A webhook that takes the request and never answers costs the timeout, no more.
    let silent = Receiver::start(0);
    let text = std::fs::read_to_string(&project.config)
        .unwrap()
        .replace(&failing.url(), &silent.url());
    std::fs::write(&project.config, format!("{text}timeout = \"1s\"\n")).unwrap();
    let started = std::time::Instant::now();
    let out = project.run_async(&["release"], &[]).await;
    assert_success(&out, "a release whose webhook never answers");
    assert_eq!(silent.next()["shipit"]["outcome"], "succeeded");
    assert!(
        stderr(&out).contains("did not answer within 1.0 s"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
