//! Answers that have no body whatever their head says (to HEAD, 204, 304: RFC 9112 §6.3),
//! from a slot that sends one anyway, late: bytes that look like a whole answer, written
//! 0, 1, 5 or 50 ms after the head. Another client's request, sent the moment the first
//! answer is in, must get its own answer, never those bytes, and must go on another slot
//! connection than the one that carried the body-less answer. Each timing runs several
//! times, so that a race shows.

use std::sync::Arc;
use std::time::Duration;

use crate::case::{HOST, seen};
use crate::harness::{Edge, Path, check, each_on_every_path};
use crate::upstream::{Reply, Script, Upstream};
use crate::wire::escape;

/// What the slot sends late: 46 bytes that read as an answer of their own.
const LATE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPWNED!!!";
/// How many times each timing runs.
const REPEATS: usize = 10;

/// A body-less answer whose head says otherwise.
#[derive(Debug, Clone, Copy)]
enum Bodyless {
    /// HEAD, answered `200` with `Content-Length: 46`.
    HeadWithLength,
    /// `204` with `Content-Length: 46`.
    NoContentWithLength,
    /// `204` with `Transfer-Encoding: chunked`.
    NoContentChunked,
    /// `304` with `Content-Length: 46`.
    NotModifiedWithLength,
    /// `304` with `Transfer-Encoding: chunked`.
    NotModifiedChunked,
}

impl Bodyless {
    const ALL: [Bodyless; 5] = [
        Bodyless::HeadWithLength,
        Bodyless::NoContentWithLength,
        Bodyless::NoContentChunked,
        Bodyless::NotModifiedWithLength,
        Bodyless::NotModifiedChunked,
    ];

    fn method(self) -> &'static str {
        match self {
            Bodyless::HeadWithLength => "HEAD",
            _ => "GET",
        }
    }

    fn status(self) -> u16 {
        match self {
            Bodyless::HeadWithLength => 200,
            Bodyless::NoContentWithLength | Bodyless::NoContentChunked => 204,
            Bodyless::NotModifiedWithLength | Bodyless::NotModifiedChunked => 304,
        }
    }

    /// The slot's head.
    fn head(self) -> String {
        let framing = match self {
            Bodyless::NoContentChunked | Bodyless::NotModifiedChunked => {
                "Transfer-Encoding: chunked".to_string()
            }
            _ => format!("Content-Length: {}", LATE.len()),
        };
        let line = match self.status() {
            200 => "200 OK",
            204 => "204 No Content",
            _ => "304 Not Modified",
        };
        format!("HTTP/1.1 {line}\r\n{framing}\r\n\r\n")
    }
}

/// How the second client sends its request.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// A plain GET (the relay takes it).
    Get,
    /// A POST with a chunked body (the general path takes it).
    ChunkedPost,
}

impl Victim {
    fn request(self, target: &str) -> String {
        match self {
            Victim::Get => format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            Victim::ChunkedPost => format!(
                "POST {target} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n"
            ),
        }
    }

    fn answer(self, target: &str) -> String {
        match self {
            Victim::Get => format!("GET {target} 0"),
            Victim::ChunkedPost => format!("POST {target} 5"),
        }
    }
}

struct Race {
    answer: Bodyless,
    pause: Duration,
    victim: Victim,
}

fn races() -> Vec<Race> {
    let mut all = Vec::new();
    for answer in Bodyless::ALL {
        for pause in [0, 1, 5, 50] {
            for victim in [Victim::Get, Victim::ChunkedPost] {
                all.push(Race {
                    answer,
                    pause: Duration::from_millis(pause),
                    victim,
                });
            }
        }
    }
    all
}

/// The slot connection whose bytes hold `line`.
fn conn_with(upstream: &Upstream, line: &str) -> Option<usize> {
    upstream
        .connections()
        .iter()
        .position(|c| c.raw.windows(line.len()).any(|w| w == line.as_bytes()))
}

/// One round: client A gets the body-less answer, client B asks right after.
async fn round(edge: &Edge, upstream: &Upstream, race: &Race, n: usize) -> Result<(), String> {
    let first = format!("/first-{n}");
    let victim = format!("/victim-{n}");
    let mut a = edge.client().await;
    if race.answer.method() == "HEAD" {
        a = a.answering_head();
    }
    a.send(
        format!(
            "{} {first} HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
            race.answer.method()
        )
        .as_bytes(),
    )
    .await;
    let a_got = a.read_prompt(1).await;
    let a_finals = a_got.finals();
    check(
        a_finals.len() == 1 && a_finals[0].status == race.answer.status(),
        || format!("round {n}: A got {}", a_got.describe()),
    )?;
    // B asks the moment A's answer is in; A listens on meanwhile.
    let b_request = race.victim.request(&victim);
    let mut b = edge.client().await;
    let (b_got, a_rest) = tokio::join!(b.exchange(b_request.as_bytes(), false, 1), a.read(0));
    let b_finals = b_got.finals();
    let expected = race.victim.answer(&victim);
    check(
        b_finals.len() == 1
            && b_finals[0].status == 200
            && b_finals[0].text() == expected
            && b_got.error.is_none()
            && b_got.pending.is_empty(),
        || {
            format!(
                "round {n}: B expected 200 {expected:?}, got {}; the upstream parsed {}",
                b_got.describe(),
                seen(upstream)
            )
        },
    )?;
    check(
        a_rest.answers.is_empty() && a_rest.error.is_none() && a_rest.pending.is_empty(),
        || {
            format!(
                "round {n}: A got more after its answer: {}",
                a_rest.describe()
            )
        },
    )?;
    // The slot connection that carried the body-less answer carried nothing after it.
    let a_conn = conn_with(upstream, &format!(" {first} HTTP/1.1\r\n"));
    let b_conn = conn_with(upstream, &format!(" {victim} HTTP/1.1\r\n"));
    check(
        a_conn.is_some() && b_conn.is_some() && a_conn != b_conn,
        || {
            format!(
                "round {n}: {victim} went on slot connection {b_conn:?}, {first} on {a_conn:?}: \
             the connection was reused after a body-less answer; the upstream parsed {}",
                seen(upstream)
            )
        },
    )?;
    for (i, c) in upstream.connections().iter().enumerate() {
        check(c.error.is_none(), || {
            format!(
                "round {n}: upstream connection {i} could not parse what the edge sent ({}): {}",
                c.error.clone().unwrap_or_default(),
                escape(&c.raw)
            )
        })?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_bytes_after_a_bodyless_answer_never_reach_another_client() {
    each_on_every_path(
        "late bytes after a body-less answer",
        races(),
        |r| {
            format!(
                "{:?}_late_by_{}ms_then_{:?}",
                r.answer,
                r.pause.as_millis(),
                r.victim
            )
        },
        async |race, path: Path| {
            let (head, pause) = (race.answer.head(), race.pause);
            let script: Script = Arc::new(move |asked| {
                if asked.target.starts_with("/first-") {
                    Reply::RawThenLater(head.clone().into_bytes(), LATE.as_bytes().to_vec(), pause)
                } else {
                    Reply::Echo
                }
            });
            let upstream = Upstream::scripted(script).await;
            let edge = Edge::routed(path, upstream.addr).await;
            for n in 0..REPEATS {
                round(&edge, &upstream, race, n).await?;
            }
            Ok(())
        },
    )
    .await;
}

/// The edge's own answers to HEAD (a 503 here: no service is routed yet) name their
/// length and send no body: two HEAD requests in a row on one connection read as two whole
/// answers with nothing left over, and over HTTP/2 the answer's `HEADERS` end the stream.
#[tokio::test]
async fn the_edges_own_answers_to_head_carry_no_body() {
    use crate::h2c::{self, Acks, Conn, Event};
    use crate::harness::on_every_path;

    on_every_path("the edge's own answers to HEAD", async |path: Path| {
        let edge = Edge::start(path).await;
        let head = format!("HEAD /a HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let got = edge
            .client()
            .await
            .answering_head()
            .exchange(head.repeat(2).as_bytes(), false, 2)
            .await;
        let finals = got.finals();
        check(
            got.error.is_none()
                && got.pending.is_empty()
                && !got.closed
                && finals.len() == 2
                && finals.iter().all(|a| a.status == 503 && a.body.is_empty()),
            || format!("two HEAD requests got {}", got.describe()),
        )?;

        // h2c on the plain listener on every path: HTTP/2 over TLS never meets the relay.
        let tcp = tokio::net::TcpStream::connect(edge.plain_addr())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut conn = Conn::open(tcp, &[], Acks::All)
            .await
            .map_err(|e| format!("the preface: {e}"))?;
        let fields: [(&[u8], &[u8]); 4] = [
            (b":method", b"HEAD"),
            (b":scheme", b"http"),
            (b":path", b"/a"),
            (b":authority", HOST.as_bytes()),
        ];
        conn.headers(1, &fields, true)
            .await
            .map_err(|e| format!("HEADERS: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match conn.next(deadline).await {
                Event::Frame(frame) if frame.stream == 1 && frame.kind == h2c::HEADERS => {
                    return check(frame.status() == Some(503) && frame.ends_stream(), || {
                        format!("HTTP/2 HEAD got {}", h2c::describe(&[frame]))
                    });
                }
                Event::Frame(frame) if frame.stream == 1 => {
                    return Err(format!(
                        "HTTP/2 HEAD got {} before its HEADERS",
                        h2c::describe(&[frame])
                    ));
                }
                Event::Frame(_) => {}
                Event::Closed | Event::TimedOut => {
                    return Err("HTTP/2 HEAD got no answer".into());
                }
            }
        }
    })
    .await;
}
