//! Two clients: A tries to smuggle a request whose answer the slot delays (`/slow…`), so that
//! the answer is still queued on the slot connection when the edge hands it to B's request.
//! B must get the answer to its own request, and the slot must never parse A's hidden one.

use crate::case::{HOST, one_chunk, seen};
use crate::harness::{Edge, check, each_on_every_path};
use crate::upstream::Upstream;

/// A's hidden request: slow to answer, so its answer waits on the slot connection.
const HIDDEN: &str = "GET /slow-smuggled-by-A HTTP/1.1\r\nHost: app.test\r\n\r\n";
const VICTIM: &str = "GET /B-victim HTTP/1.1\r\nHost: app.test\r\n\r\n";

struct Attack {
    name: &'static str,
    bytes: String,
}

fn attacks() -> Vec<Attack> {
    let n = HIDDEN.len();
    let chunk = one_chunk(HIDDEN);
    vec![
        Attack {
            name: "connection_content_length_post",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nConnection: content-length\r\nContent-Length: {n}\r\n\r\n{HIDDEN}"
            ),
        },
        Attack {
            name: "connection_content_length_get",
            bytes: format!(
                "GET /A HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, content-length\r\nContent-Length: {n}\r\n\r\n{HIDDEN}"
            ),
        },
        Attack {
            name: "connection_transfer_encoding",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n{chunk}"
            ),
        },
        Attack {
            name: "cl_te",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}",
                n + 5
            ),
        },
        Attack {
            name: "te_cl",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
            ),
        },
        Attack {
            name: "te_te_xchunked",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: xchunked\r\n\r\n{chunk}"
            ),
        },
        Attack {
            name: "cl_cl",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\nContent-Length: {n}\r\n\r\n{HIDDEN}"
            ),
        },
        Attack {
            name: "connection_host",
            bytes: format!(
                "POST /A HTTP/1.1\r\nHost: {HOST}\r\nConnection: host\r\nContent-Length: {n}\r\n\r\n{HIDDEN}"
            ),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_answer_never_reaches_another_client() {
    each_on_every_path(
        "two-client poisoning",
        attacks(),
        |a| a.name.to_string(),
        async |attack, path| {
            let upstream = Upstream::start().await;
            let edge = Edge::routed(path, upstream.addr).await;

            let mut a = edge.client().await;
            let a_got = a.exchange(attack.bytes.as_bytes(), false, 1).await;
            let mut b = edge.client().await;
            let b_got = b.exchange(VICTIM.as_bytes(), false, 1).await;

            let b_answers = b_got.finals();
            let b_ok = b_answers.len() == 1
                && b_answers[0].status == 200
                && b_answers[0].text() == "GET /B-victim 0";
            let hidden_parsed = upstream
                .requests()
                .iter()
                .any(|(_, r)| r.target.contains("smuggled"));
            let a_leak = a_got.finals().iter().any(|r| r.text().contains("smuggled"));
            let parse_errors: Vec<String> = upstream
                .connections()
                .iter()
                .filter_map(|c| c.error.clone())
                .collect();
            check(
                b_ok && !hidden_parsed && !a_leak && parse_errors.is_empty(),
                || {
                    format!(
                        "B got {}; A got {}; the upstream parsed {}{}",
                        b_got.describe(),
                        a_got.describe(),
                        seen(&upstream),
                        if parse_errors.is_empty() {
                            String::new()
                        } else {
                            format!(" and could not parse the rest: {parse_errors:?}")
                        }
                    )
                },
            )
        },
    )
    .await;
}
