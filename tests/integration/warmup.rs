//! `[services.<s>.warmup]` on the local target: a candidate whose first requests are slow
//! (`HELLO_COLD_REQUESTS`) gets them from the warm-up, so no client request after the switch
//! is slow; without warm-up the same clients pay (the control that shows the test can fail);
//! a `max_p99` that the cold start breaks fails the release with the live slot serving.

use std::time::{Duration, Instant};

use crate::harness::{Project, assert_success, json, stderr};

/// The cold requests of each new container, and how much slower each is.
const COLD_REQUESTS: &str = "8";
const COLD_MS: u64 = 1000;
/// A client request slower than this hit a cold candidate (an answer takes about a
/// millisecond otherwise).
const SLOW: Duration = Duration::from_millis(COLD_MS / 2);

fn pass_cold_env(project: &Project) {
    project.add_env(&[
        ("HELLO_COLD_REQUESTS", COLD_REQUESTS),
        ("HELLO_COLD_MS", &COLD_MS.to_string()),
    ]);
}

/// Replaces the service's `[warmup]` table with `lines` (TOML), or removes it.
fn set_warmup(project: &Project, lines: Option<&str>) {
    project.set_service_table("warmup", lines);
}

/// How long each of `n` requests in turn through the edge took.
async fn client_latencies(project: &Project, n: usize) -> Vec<Duration> {
    let mut took = Vec::new();
    for _ in 0..n {
        let sent = Instant::now();
        let (status, body) = crate::harness::get(project.listen, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        took.push(sent.elapsed());
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_warmup_no_client_request_after_the_switch_is_slow() {
    let project = Project::new("warmup");
    pass_cold_env(&project);
    let cold: usize = COLD_REQUESTS.parse().unwrap();

    // The control: without warm-up, the first clients after the switch get the cold start.
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "a release without warm-up");
    assert!(json(&out).get("warmup").is_none(), "{}", json(&out));
    let took = client_latencies(&project, cold + 4).await;
    let slow = took.iter().filter(|t| **t >= SLOW).count();
    assert_eq!(slow, cold, "without warm-up: {took:?}");

    // With warm-up: it takes the cold requests, and the record says what it measured.
    set_warmup(&project, Some("requests = 16\nconcurrency = 4"));
    let plan = project.run(&["plan", "--json"]);
    assert_success(&plan, "shipit plan --json");
    assert_eq!(json(&plan)["warmup"]["requests"], 16);
    let out = project.run_async(&["release", "--json"], &[]).await;
    assert_success(&out, "a release with warm-up");
    let record = json(&out);
    let second = record["serves"].as_str().unwrap().to_string();
    assert_eq!(record["warmup"]["requests"], 16, "{record}");
    let p99 = record["warmup"]["p99_us"].as_u64().unwrap();
    assert!(
        p99 >= COLD_MS * 1000,
        "the warm-up met the cold start: {record}"
    );
    assert!(
        stderr(&out).contains("warm-up: 16 requests in"),
        "{}",
        stderr(&out)
    );
    let took = client_latencies(&project, cold + 4).await;
    assert!(
        took.iter().all(|t| *t < SLOW),
        "a client request after the switch was slow: {took:?}"
    );
    assert_eq!(project.history()[0]["warmup"]["requests"], 16);

    // A cold start over max_p99 fails the release; the live slot keeps serving.
    set_warmup(&project, Some("requests = 16\nmax_p99 = \"100ms\""));
    let out = project.run_async(&["release"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is over max_p99 100ms"), "{err}");
    assert_eq!(project.status()["live"]["release"], second.as_str());
    assert_eq!(project.running_releases(), [second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_candidate_failing_its_warmup_is_refused() {
    let project = Project::new("warmupfail");
    let first = project.release_async().await;
    // /slow?ms=3000 is slower than the request timeout; a path that 5xx-es fails the same way.
    set_warmup(
        &project,
        Some("paths = [\"/slow?ms=3000\"]\nrequests = 2\ntimeout = \"1s\""),
    );
    let out = project.run_async(&["release"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warm-up: the candidate failed a request"),
        "{err}"
    );
    assert!(err.contains("did not answer within 1s"), "{err}");
    assert_eq!(project.status()["live"]["release"], first.as_str());
    assert_eq!(project.running_releases(), [first]);
}
