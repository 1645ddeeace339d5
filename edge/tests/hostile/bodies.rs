//! Request bodies: malformed chunked framing and aborted uploads are the client's error (400
//! or a close, never a 502, never the slot's 5xx); well-formed chunk extensions and
//! trailers pass.

use shipit_edge::{Backend, Slot};

use crate::case::{Case, Expect, HOST, Req, run_all};
use crate::harness::{Edge, Path, SERVICE, check, each_on_every_path};
use crate::upstream::Upstream;
use crate::wire::Framing;

/// `POST /up` with a chunked body made of `chunks` (raw framing, as written).
fn chunked(chunks: &str) -> String {
    format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}")
}

/// Malformed chunked bodies, each after a first good chunk, so that a streaming edge has
/// already started the upstream request when the fault arrives.
fn malformed_chunked() -> Vec<(&'static str, String)> {
    vec![
        (
            "chunk_size_not_hex",
            chunked("5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunk_size_overflow",
            chunked("5\r\nhello\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunk_size_negative",
            chunked("5\r\nhello\r\n-5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunk_data_longer_than_its_size",
            chunked("5\r\nhelloXX\r\n0\r\n\r\n"),
        ),
        (
            "chunk_size_line_ends_in_bare_lf",
            chunked("5\r\nhello\r\n5\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunk_data_ends_in_bare_lf",
            chunked("5\r\nhello\n0\r\n\r\n"),
        ),
        (
            "chunk_extension_with_bare_cr",
            chunked("5\r\nhello\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "first_chunk_size_not_hex",
            chunked("g\r\nhello\r\n0\r\n\r\n"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_the_clients_error() {
    run_all(
        "malformed chunked bodies",
        malformed_chunked()
            .into_iter()
            .map(|(name, bytes)| Case::new(name, bytes, Expect::ClientError))
            .collect(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_uploads_are_the_clients_error() {
    let part = "x".repeat(100 * 1024);
    run_all(
        "aborted uploads",
        vec![
            Case::new(
                "small_content_length_body_cut_short",
                format!(
                    "POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\nonly ten.."
                ),
                Expect::ClientError,
            )
            .aborted(),
            Case::new(
                "large_content_length_body_cut_short",
                format!(
                    "POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{part}",
                    1024 * 1024
                ),
                Expect::ClientError,
            )
            .aborted(),
            Case::new(
                "chunked_body_cut_inside_a_chunk",
                chunked(&format!("{:x}\r\n{part}", 400 * 1024)),
                Expect::ClientError,
            )
            .aborted(),
            Case::new(
                "chunked_body_cut_before_the_last_chunk",
                chunked("5\r\nhello\r\n"),
                Expect::ClientError,
            )
            .aborted(),
            Case::new(
                "chunked_body_cut_before_its_final_crlf",
                chunked("5\r\nhello\r\n0\r\n"),
                Expect::ClientError,
            )
            .aborted(),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_chunk_extensions_and_trailers_pass() {
    let forwarded = || {
        Expect::Forwarded(vec![
            Req::new("POST", "/up", "hello").framed(Framing::Chunked),
        ])
    };
    run_all(
        "chunk extensions and trailers",
        vec![
            Case::new(
                "chunk_extension_token",
                chunked("5;ext=1\r\nhello\r\n0\r\n\r\n"),
                forwarded(),
            ),
            Case::new(
                "chunk_extension_quoted",
                chunked("5;name=\"a b;c\"\r\nhello\r\n0\r\n\r\n"),
                forwarded(),
            ),
            Case::new(
                "chunk_extension_without_value",
                chunked("5;flag\r\nhello\r\n0;last\r\n\r\n"),
                forwarded(),
            ),
            Case::new(
                "chunked_body_with_a_trailer",
                chunked("5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"),
                forwarded(),
            ),
            Case::new(
                "chunked_body_in_many_small_chunks",
                chunked("1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\n"),
                forwarded(),
            ),
        ],
    )
    .await;
}

/// A flood of malformed uploads pinned to the candidate (`X-Shipit-Slot`) must not count
/// as the candidate's 5xx: any anonymous client could otherwise fail a canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_uploads_pinned_to_the_candidate_do_not_count_against_it() {
    const FLOOD: usize = 10;
    each_on_every_path(
        "malformed uploads pinned to the candidate",
        vec!["pinned_malformed_chunked_flood"],
        |name| name.to_string(),
        async |_, path| pinned_flood(path, FLOOD).await,
    )
    .await;
}

async fn pinned_flood(path: Path, flood: usize) -> Result<(), String> {
    let live = Upstream::start().await;
    let candidate = Upstream::start().await;
    let edge = Edge::routed(path, live.addr).await;
    let backend = Backend {
        slot: Slot::Green,
        release: "rel-candidate".into(),
        addr: candidate.addr,
        more_addrs: Vec::new(),
    };
    edge.admin().preview(SERVICE, &backend, None).await.unwrap();

    let uploads = malformed_chunked();
    let sent = (0..flood).map(|i| {
        let (_, bytes) = &uploads[i % uploads.len()];
        let pinned = bytes.replacen(
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nX-Shipit-Slot: green\r\n",
            1,
        );
        let edge = &edge;
        async move {
            let mut client = edge.client().await;
            let transcript = client.exchange(pinned.as_bytes(), false, 1).await;
            check(transcript.finals().iter().all(|a| a.status < 500), || {
                format!("upload {i} got {}", transcript.describe())
            })
        }
    });
    for outcome in futures_util::future::join_all(sent).await {
        outcome?;
    }
    // The candidate's requests end before the counters are read: end the preview, which
    // sends the candidate to drain, and wait for that drain.
    edge.admin().clear_preview(SERVICE).await.unwrap();
    let drained = edge
        .admin()
        .drain(SERVICE, "rel-candidate", std::time::Duration::from_secs(3))
        .await
        .unwrap();
    check(drained.drained, || {
        "requests stayed in flight on the candidate".into()
    })?;
    let errors = edge.requests_total(Slot::Green, "5xx").await;
    check(errors == 0.0, || {
        format!("the candidate's 5xx counter is {errors} after {flood} malformed uploads")
    })?;
    check(candidate.requests().is_empty(), || {
        "the candidate parsed a request from a malformed upload".into()
    })
}
