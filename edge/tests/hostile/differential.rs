//! The relay against hyper, differentially: generated request byte streams (framing headers
//! and their obfuscations, Host variants, chunked and `Content-Length` bodies holding a
//! request, odd line ends, a pipelined follow-up) go through every path (the relay on plain
//! TCP and behind TLS, and hyper), each in front of the recording upstream, and all must
//! agree: the same requests accepted with the same body lengths (or refused alike), and the
//! same statuses for the client.
//!
//! The run is bounded ([`CASES`], or `HOSTILE_DIFF_CASES`) and deterministic (its seed is
//! fixed, or `HOSTILE_DIFF_SEED`); `bench/fuzz.sh` runs a long one with a fresh seed. A
//! stream found to diverge is kept, escaped, one per line, in `hostile/corpus.txt`, and
//! every run replays the corpus first.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::case::{HOST, SMUGGLED, one_chunk};
use crate::harness::{Edge, Path};
use crate::upstream::Upstream;

/// Generated streams per run.
const CASES: u32 = 32;
/// The streams found to diverge so far.
const CORPUS: &str = include_str!("corpus.txt");

/// What one path made of a stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Requests the upstream parsed: method, target, body length.
    forwarded: Vec<(String, String, usize)>,
    /// The upstream could not parse what it was sent.
    upstream_error: bool,
    /// The statuses of the client's final answers.
    statuses: Vec<u16>,
}

async fn outcome(bytes: &[u8], want: usize, path: Path) -> Outcome {
    let upstream = Upstream::start().await;
    let edge = Edge::routed(path, upstream.addr).await;
    let got = edge.client().await.exchange(bytes, false, want).await;
    edge.settle().await;
    Outcome {
        forwarded: upstream
            .requests()
            .into_iter()
            .map(|(_, r)| (r.method, r.target, r.body.len()))
            .collect(),
        upstream_error: upstream.connections().iter().any(|c| c.error.is_some()),
        statuses: got.finals().iter().map(|a| a.status).collect(),
    }
}

/// Every path's outcome for `bytes`; `Err` naming each when they differ.
async fn agree(bytes: &[u8], want: usize) -> Result<(), String> {
    let outcomes = futures_util::future::join_all(
        Path::ALL.map(|path| async move { (path, outcome(bytes, want, path).await) }),
    )
    .await;
    if outcomes.iter().all(|(_, o)| *o == outcomes[0].1) {
        Ok(())
    } else {
        let each: Vec<String> = outcomes
            .iter()
            .map(|(path, o)| format!("\n  {:<10} {o:?}", format!("{path}:")))
            .collect();
        Err(format!(
            "the paths disagree on {}{}",
            escape_all(bytes),
            each.concat()
        ))
    }
}

/// `bytes` escaped in full, as the corpus keeps them.
fn escape_all(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

/// A corpus line back to bytes (`\r`, `\n`, `\t`, `\\`, `\'`, `\"` and `\xNN`).
fn unescape(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = line.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("two hex digits in the corpus"));
            }
            Some(other) => out.push(other),
            None => panic!("a corpus line ends in a backslash: {line}"),
        }
    }
    out
}

/// How many final answers a client of `bytes` waits for: one per request line it holds.
fn requests_in(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    text.matches(" HTTP/1.")
        .count()
        .saturating_sub(text.matches(SMUGGLED_LINE).count())
        .max(1)
}

/// The request line of the request hidden in bodies.
const SMUGGLED_LINE: &str = "GET /smuggled HTTP/1.";

/// A generated stream: one request, perhaps a second one pipelined after it.
#[derive(Debug, Clone)]
struct Stream {
    method: &'static str,
    version: &'static str,
    hosts: Vec<&'static str>,
    /// Header lines, `{n}` standing for the body's length on the wire.
    headers: Vec<&'static str>,
    body: String,
    eol: &'static str,
    follow_up: bool,
}

impl Stream {
    fn bytes(&self) -> Vec<u8> {
        let eol = self.eol;
        let mut out = format!("{} /d {}{eol}", self.method, self.version);
        for host in &self.hosts {
            out.push_str(&format!("Host: {host}{eol}"));
        }
        for header in &self.headers {
            out.push_str(&header.replace("{n}", &self.body.len().to_string()));
            out.push_str(eol);
        }
        out.push_str(eol);
        out.push_str(&self.body);
        if self.follow_up {
            out.push_str(&format!("GET /next HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
        }
        out.into_bytes()
    }

    fn want(&self) -> usize {
        1 + usize::from(self.follow_up)
    }
}

fn streams() -> impl Strategy<Value = Stream> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "DELETE"]);
    let version = prop_oneof![
        8 => Just("HTTP/1.1"),
        1 => Just("HTTP/1.0"),
        1 => Just("HTTP/1.2"),
    ];
    let hosts = prop_oneof![
        6 => Just(vec![HOST]),
        1 => Just(vec![]),
        1 => Just(vec![HOST, HOST]),
        1 => Just(vec![HOST, "other.test"]),
    ];
    let header = prop::sample::select(vec![
        "Content-Length: {n}",
        "Content-Length: {n}",
        "Content-Length: 0",
        "Content-Length: {n}, {n}",
        "Content-Length: +{n}",
        "Content-Length : {n}",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding: identity",
        "Connection: content-length",
        "Connection: transfer-encoding",
        "Connection: host",
        "Connection: close",
        "Connection: keep-alive",
        "Expect: 100-continue",
        "X-Fold: a\r\n b",
        "X-Cr: a\rb",
        "X-Filler: value",
    ]);
    let body = prop_oneof![
        Just(String::new()),
        Just(SMUGGLED.to_string()),
        Just(one_chunk(SMUGGLED)),
        Just(format!(
            "{:x};ext=1\r\n{SMUGGLED}\r\n0\r\n\r\n",
            SMUGGLED.len()
        )),
        Just("0\r\n\r\n".to_string()),
    ];
    let eol = prop_oneof![9 => Just("\r\n"), 1 => Just("\n")];
    (
        method,
        version,
        hosts,
        prop::collection::vec(header, 0..4),
        body,
        eol,
        any::<bool>(),
    )
        .prop_map(
            |(method, version, hosts, headers, body, eol, follow_up)| Stream {
                method,
                version,
                hosts,
                headers,
                body,
                eol,
                follow_up,
            },
        )
}

fn seed() -> [u8; 32] {
    let mut seed = [7u8; 32];
    if let Some(n) = std::env::var("HOSTILE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        seed[..8].copy_from_slice(&n.to_le_bytes());
    }
    seed
}

#[test]
fn relay_and_general_path_agree_on_generated_streams() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let deadline = Duration::from_secs(20);
    let run = |bytes: &[u8], want: usize| {
        runtime.block_on(async {
            tokio::time::timeout(deadline, agree(bytes, want))
                .await
                .unwrap_or_else(|_| Err(format!("no outcome within {deadline:?}")))
        })
    };

    let mut failures: Vec<String> = CORPUS
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let bytes = unescape(line);
            run(&bytes, requests_in(&bytes))
                .err()
                .map(|e| format!("corpus: {e}"))
        })
        .collect();

    let cases = std::env::var("HOSTILE_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed()));
    if let Err(e) = runner.run(&streams(), |stream| {
        run(&stream.bytes(), stream.want()).map_err(TestCaseError::fail)
    }) {
        failures.push(format!(
            "generated (shrunk; keep it in hostile/corpus.txt): {e}"
        ));
    }
    assert!(
        failures.is_empty(),
        "the relay (plain or TLS) and the general path disagree:\n{}",
        failures.join("\n")
    );
}

#[test]
fn corpus_lines_round_trip() {
    let bytes = b"POST / HTTP/1.1\r\nX: a\x0bb\\\"\r\n\r\n";
    assert_eq!(unescape(&escape_all(bytes)), bytes);
}
