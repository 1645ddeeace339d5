//! The answer side: a slot that misbehaves (RFC 9112 §6.3 framing tricks, bytes after its
//! answer, an answer before the request was sent, huge heads, endless interim answers). The
//! client must get what the slot framed, the slot connection must be closed after any
//! surprise, and no other client may ever receive the slot's extra bytes.

use std::sync::Arc;
use std::time::Duration;

use crate::case::{get, seen};
use crate::client::Transcript;
use crate::harness::{Edge, Path, check, on_every_path};
use crate::upstream::{Reply, Script, Upstream};
use crate::wire::escape;

/// An answer no client asked for, sent by the slot after a complete one.
const INJECTED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED";
/// How long a slot connection may stay open after a framing surprise.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// An upstream that answers `target` with `reply` and everything else with an echo.
async fn answering(target: &'static str, reply: Reply) -> Upstream {
    let script: Script = Arc::new(move |asked| {
        if asked.target == target {
            reply.clone()
        } else {
            Reply::Echo
        }
    });
    Upstream::scripted(script).await
}

/// One request on a new client connection.
async fn request(edge: &Edge, bytes: &str) -> Transcript {
    edge.client()
        .await
        .exchange(bytes.as_bytes(), false, 1)
        .await
}

/// The upstream connection that carried (part of) the request for `target`.
fn conn_of(upstream: &Upstream, target: &str) -> Option<usize> {
    let line = format!(" {target} HTTP/1.1\r\n");
    upstream
        .connections()
        .iter()
        .position(|c| c.raw.windows(line.len()).any(|w| w == line.as_bytes()))
}

/// The answer is exactly one final answer with this status and body.
fn one_answer(got: &Transcript, status: u16, body: &str) -> Result<(), String> {
    let finals = got.finals();
    check(
        finals.len() == 1
            && finals[0].status == status
            && finals[0].text() == body
            && got.error.is_none(),
        || {
            format!(
                "expected {status} {body:?}, the client got {}",
                got.describe()
            )
        },
    )
}

/// The slot connection that carried `target` gets closed by the edge.
async fn closed_after(upstream: &Upstream, target: &str) -> Result<(), String> {
    let conn = conn_of(upstream, target)
        .ok_or_else(|| format!("no upstream connection carried {target}"))?;
    let closed = upstream
        .wait_for(CLOSE_TIMEOUT, |conns| conns[conn].closed)
        .await;
    check(closed, || {
        format!("the edge kept the slot connection that carried {target} open (it may be pooled)")
    })
}

/// The request for `next` came on another slot connection than the one for `first`.
fn on_another_connection(upstream: &Upstream, first: &str, next: &str) -> Result<(), String> {
    let (a, b) = (conn_of(upstream, first), conn_of(upstream, next));
    check(a.is_some() && b.is_some() && a != b, || {
        format!(
            "{next} went on slot connection {b:?}, {first} on {a:?}: the connection was reused \
             after a framing surprise; the upstream parsed {}",
            seen(upstream)
        )
    })
}

/// No parse error and no stray bytes on any slot connection.
fn upstream_clean(upstream: &Upstream) -> Result<(), String> {
    for (i, c) in upstream.connections().iter().enumerate() {
        check(c.error.is_none(), || {
            format!(
                "upstream connection {i} could not parse what the edge sent ({}): {}",
                c.error.clone().unwrap_or_default(),
                escape(&c.raw)
            )
        })?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_content_length_from_the_slot_does_not_unframe_its_answer() {
    on_every_path(
        "answer_connection_names_content_length",
        async |path: Path| {
            let upstream = answering(
            "/first",
            Reply::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello"
                    .to_vec(),
            ),
        )
        .await;
            let edge = Edge::routed(path, upstream.addr).await;
            one_answer(&request(&edge, &get("/first", "")).await, 200, "hello")?;
            one_answer(
                &request(&edge, &get("/second", "")).await,
                200,
                "GET /second 0",
            )?;
            upstream_clean(&upstream)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_other_than_chunked_is_read_until_close() {
    on_every_path("answer_transfer_encoding_gzip", async |path: Path| {
        const BODY: &str = "0123456789, and on until the slot closes";
        let upstream = answering(
            "/gzip",
            Reply::RawThenClose(
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n{BODY}"
                )
                .into_bytes(),
            ),
        )
        .await;
        let edge = Edge::routed(path, upstream.addr).await;
        let got = request(&edge, &get("/gzip", "")).await;
        one_answer(&got, 200, BODY)?;
        let length = got.finals()[0].header("content-length");
        check(length.iter().all(|l| *l != b"5"), || {
            "the slot's Content-Length reached the client along with its coding".into()
        })?;
        // The client's answer ends with the connection (the relay passes the coding on as
        // it is), or is framed anew in chunks after its coding (hyper's server does that).
        let coding = got.finals()[0].header("transfer-encoding");
        let rechunked = coding.last().is_some_and(|c| {
            c.split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
        check(
            got.closed || rechunked && coding.iter().any(|c| c.starts_with(b"gzip")),
            || {
                format!(
                    "the client's answer lost its coding or its end: {}",
                    got.describe()
                )
            },
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_in_an_answer_is_chunked_and_not_reused() {
    on_every_path("answer_with_content_length_and_transfer_encoding", async |path: Path| {
        let upstream = answering(
            "/clte",
            Reply::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    .to_vec(),
            ),
        )
        .await;
        let edge = Edge::routed(path, upstream.addr).await;
        one_answer(&request(&edge, &get("/clte", "")).await, 200, "hello")?;
        one_answer(&request(&edge, &get("/next", "")).await, 200, "GET /next 0")?;
        on_another_connection(&upstream, "/clte", "/next")?;
        closed_after(&upstream, "/clte").await?;
        upstream_clean(&upstream)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_complete_answer_never_reach_another_client() {
    on_every_path("answer_followed_by_extra_bytes", async |path: Path| {
        let upstream = answering(
            "/first",
            Reply::Raw(
                format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello{INJECTED}").into_bytes(),
            ),
        )
        .await;
        let edge = Edge::routed(path, upstream.addr).await;
        one_answer(&request(&edge, &get("/first", "")).await, 200, "hello")?;
        one_answer(
            &request(&edge, &get("/second", "")).await,
            200,
            "GET /second 0",
        )?;
        on_another_connection(&upstream, "/first", "/second")?;
        closed_after(&upstream, "/first").await?;
        upstream_clean(&upstream)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_slot_sends_on_an_idle_connection_never_reach_another_client() {
    on_every_path(
        "extra_bytes_on_an_idle_slot_connection",
        async |path: Path| {
            let upstream = answering(
                "/first",
                Reply::EchoThenLater(INJECTED.as_bytes().to_vec(), Duration::from_millis(50)),
            )
            .await;
            let edge = Edge::routed(path, upstream.addr).await;
            one_answer(
                &request(&edge, &get("/first", "")).await,
                200,
                "GET /first 0",
            )?;
            let conn =
                conn_of(&upstream, "/first").ok_or("no upstream connection carried /first")?;
            let written = upstream
                .wait_for(CLOSE_TIMEOUT, |conns| conns[conn].late_written)
                .await;
            check(written, || {
                "the upstream did not write its extra bytes".into()
            })?;
            one_answer(
                &request(&edge, &get("/second", "")).await,
                200,
                "GET /second 0",
            )?;
            upstream_clean(&upstream)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_request_body_was_sent_closes_the_slot_connection() {
    on_every_path("answer_before_the_request_body", async |path: Path| {
        const HALF: usize = 100 * 1024;
        let upstream = answering(
            "/early",
            Reply::Early(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly".to_vec()),
        )
        .await;
        let edge = Edge::routed(path, upstream.addr).await;
        let mut client = edge.client().await;
        let head = format!(
            "POST /early HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
            2 * HALF
        );
        client.send(head.as_bytes()).await;
        client.send(&vec![b'x'; HALF]).await;
        // The slot answers once the head reached it; the client sends the rest of its body
        // only once that answer reached it, so the edge surely saw the answer before the
        // request was whole.
        let got = client.read(1).await;
        let finals = got.finals();
        check(finals.len() == 1 && finals[0].text() == "early", || {
            format!("the client got {}", got.describe())
        })?;
        client.send(&vec![b'x'; HALF]).await;
        one_answer(
            &request(&edge, &get("/second", "")).await,
            200,
            "GET /second 0",
        )?;
        on_another_connection(&upstream, "/early", "/second")?;
        closed_after(&upstream, "/early").await?;
        upstream_clean(&upstream)
    })
    .await;
}

/// An answer whose head is over 64 KiB: one header of 70 KB.
fn huge_head() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(70_000)
    )
    .into_bytes()
}

async fn huge_head_is_a_502(path: Path, reply: Reply) -> Result<(), String> {
    let upstream = answering("/big", reply).await;
    let edge = Edge::routed(path, upstream.addr).await;
    let got = request(&edge, &get("/big", "")).await;
    let finals = got.finals();
    check(finals.len() == 1 && finals[0].status == 502, || {
        format!("expected 502, the client got {}", got.describe())
    })?;
    closed_after(&upstream, "/big").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_head_over_64_kib_in_one_write_is_a_502() {
    on_every_path("answer_head_of_70_kb_in_one_write", async |path: Path| {
        huge_head_is_a_502(path, Reply::Raw(huge_head())).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_head_over_64_kib_in_pieces_is_a_502() {
    on_every_path("answer_head_of_70_kb_in_pieces", async |path: Path| {
        huge_head_is_a_502(path, Reply::Pieces(huge_head(), 4096)).await
    })
    .await;
}

/// `count` interim answers, then a final one.
fn interims(count: usize) -> Reply {
    let mut bytes =
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".repeat(count);
    bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
    Reply::Raw(bytes)
}

async fn too_many_interims_are_a_502(path: Path, count: usize) -> Result<(), String> {
    let upstream = answering("/hints", interims(count)).await;
    let edge = Edge::routed(path, upstream.addr).await;
    let got = request(&edge, &get("/hints", "")).await;
    let finals = got.finals();
    check(
        got.interims() <= 10 && finals.len() == 1 && finals[0].status == 502,
        || {
            format!(
                "after {count} interim answers the client got {} interim answers and {}",
                got.interims(),
                got.describe()
            )
        },
    )?;
    closed_after(&upstream, "/hints").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_interim_answers_are_a_502() {
    on_every_path("2000_interim_answers", async |path: Path| {
        too_many_interims_are_a_502(path, 2000).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_interim_answers_are_a_502() {
    on_every_path("11_interim_answers", async |path: Path| {
        too_many_interims_are_a_502(path, 11).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_interim_answers_pass() {
    on_every_path("10_interim_answers", async |path: Path| {
        let upstream = answering("/hints", interims(10)).await;
        let edge = Edge::routed(path, upstream.addr).await;
        let got = request(&edge, &get("/hints", "")).await;
        check(got.interims() <= 10, || {
            format!("the client got {} interim answers", got.interims())
        })?;
        one_answer(&got, 200, "done")?;
        upstream_clean(&upstream)
    })
    .await;
}
