//! A request-side case: the exact bytes a client sends, and what must come of them.
//!
//! Every case checks the same promises (ARCHITECTURE.md, invariant 7): the upstream parses exactly
//! the requests the client sent, with the same boundaries, or nothing at all when the edge
//! refuses; the client gets answers only to its own requests; and nothing the client does
//! counts as the slot's 5xx.

use std::time::Duration;

use shipit_edge::Slot;

use crate::client::Transcript;
use crate::harness::{Edge, Path, check, each_on_every_path};
use crate::upstream::{Upstream, unfinished};
use crate::wire::{Framing, escape};

/// The host every case's requests name.
pub const HOST: &str = "app.test";
/// A request hidden in a body or behind a framing trick. Its target is what a test looks
/// for: the upstream must never parse it as a request.
pub const SMUGGLED: &str =
    "GET /smuggled HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 10.6.6.6\r\n\r\n";
/// How long a cut request's upstream connection may stay open.
const CUT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A request the upstream must parse, as the client framed it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    /// Origin-form; an absolute-form target forwarded as is also matches.
    pub target: String,
    pub body: Vec<u8>,
    /// The framing the upstream must see; `None`: either (a body re-framed from
    /// `Content-Length` to chunked or back keeps its boundaries).
    pub framing: Option<Framing>,
}

impl Req {
    pub fn new(method: &'static str, target: &str, body: impl AsRef<[u8]>) -> Req {
        Req {
            method,
            target: target.to_string(),
            body: body.as_ref().to_vec(),
            framing: None,
        }
    }

    pub fn framed(mut self, framing: Framing) -> Req {
        self.framing = Some(framing);
        self
    }

    /// The body the upstream answers this request with.
    fn answer(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.body.len())
    }
}

/// What must come of a case.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The upstream parses exactly these requests, in order, and the client gets their
    /// answers, in order, and nothing else.
    Forwarded(Vec<Req>),
    /// Nothing reaches the upstream; the client gets one answer with one of `statuses`
    /// (or, when `or_close`, the connection closes without one). `closes`: the connection
    /// must also close after the answer.
    Refused {
        statuses: &'static [u16],
        or_close: bool,
        closes: bool,
    },
    /// Either refused (nothing upstream; one of `statuses`, or a close), or forwarded
    /// exactly as [`Expect::Forwarded`]. For requests RFC 9110 lets a server read either way
    /// (optional whitespace, case), where only a changed framing would be a fault.
    RefusedOrForwarded {
        statuses: &'static [u16],
        reqs: Vec<Req>,
    },
    /// Forwarded exactly as [`Expect::Forwarded`], and the client's connection closed
    /// after the answers: a request whose framing the edge settled one way (RFC 9112 §6.1:
    /// `Transfer-Encoding` over `Content-Length`) but would not trust another request after.
    ForwardedThenClosed(Vec<Req>),
    /// The client's body is malformed or cut short: the client gets 400 or the connection
    /// closes, never a 5xx; the upstream parses no request (a partial one is cut: its
    /// connection closed), and the slot's 5xx counter does not move.
    ClientError,
}

/// 400, and nothing else.
pub fn refused_400() -> Expect {
    Expect::Refused {
        statuses: &[400],
        or_close: false,
        closes: false,
    }
}

/// 400, or a close without an answer.
pub fn refused_400_or_close() -> Expect {
    Expect::Refused {
        statuses: &[400],
        or_close: true,
        closes: false,
    }
}

pub struct Case {
    pub name: &'static str,
    pub send: Vec<u8>,
    /// Close the write side after sending (an aborted upload).
    pub abort: bool,
    pub expect: Expect,
}

impl Case {
    pub fn new(name: &'static str, send: impl AsRef<[u8]>, expect: Expect) -> Case {
        Case {
            name,
            send: send.as_ref().to_vec(),
            abort: false,
            expect,
        }
    }

    pub fn aborted(mut self) -> Case {
        self.abort = true;
        self
    }
}

/// Runs every case through every path; fails listing each failing case and path.
pub async fn run_all(what: &str, cases: Vec<Case>) {
    each_on_every_path(what, cases, |c| c.name.to_string(), run).await;
}

/// Runs one case on a fresh edge and upstream.
pub async fn run(case: &Case, path: Path) -> Result<(), String> {
    let upstream = Upstream::start().await;
    let edge = Edge::routed(path, upstream.addr).await;
    let errors_before = edge.requests_total(Slot::Blue, "5xx").await;

    let want = match &case.expect {
        Expect::Forwarded(reqs) | Expect::ForwardedThenClosed(reqs) => reqs.len(),
        Expect::RefusedOrForwarded { reqs, .. } => reqs.len(),
        Expect::Refused { .. } | Expect::ClientError => 1,
    };
    let mut client = edge.client().await;
    let transcript = client.exchange(&case.send, case.abort, want).await;
    let settled = edge.settle().await;
    let errors_after = edge.requests_total(Slot::Blue, "5xx").await;

    let mut problems: Vec<String> = Vec::new();
    problems.extend(
        check(settled, || {
            "a request stayed in flight on the edge for 3 s after the client was done".into()
        })
        .err(),
    );
    problems.extend(
        check(errors_after == errors_before, || {
            format!(
                "the slot's 5xx counter moved from {errors_before} to {errors_after}: a \
                 client's error counted against the slot"
            )
        })
        .err(),
    );
    problems.extend(
        check(
            transcript
                .finals()
                .iter()
                .all(|a| a.status < 500 || a.status == 505),
            || format!("the client got a 5xx: {}", transcript.describe()),
        )
        .err(),
    );
    for (i, c) in upstream.connections().iter().enumerate() {
        if let Some(e) = &c.error {
            problems.push(format!(
                "upstream connection {i} could not parse what the edge sent ({e}): {}",
                escape(&c.raw)
            ));
        }
    }
    let outcome = match &case.expect {
        Expect::Forwarded(reqs) => forwarded(&upstream, &transcript, reqs),
        Expect::ForwardedThenClosed(reqs) => {
            forwarded(&upstream, &transcript, reqs).and_then(|()| {
                check(transcript.closed, || {
                    format!(
                        "the client's connection stayed open after a request framed two ways: {}",
                        transcript.describe()
                    )
                })
            })
        }
        Expect::Refused {
            statuses,
            or_close,
            closes,
        } => refused(&upstream, &transcript, statuses, *or_close, *closes),
        Expect::RefusedOrForwarded { statuses, reqs } => {
            if upstream.connections().iter().any(|c| !c.raw.is_empty()) {
                forwarded(&upstream, &transcript, reqs)
            } else {
                refused(&upstream, &transcript, statuses, true, false)
            }
        }
        Expect::ClientError => client_error(&upstream, &transcript).await,
    };
    problems.extend(outcome.err());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Upstream requests, as `METHOD target (n bytes)`, for messages.
pub fn seen(upstream: &Upstream) -> String {
    let reqs: Vec<String> = upstream
        .requests()
        .iter()
        .map(|(conn, r)| {
            let extensions = if r.extensions.is_empty() {
                String::new()
            } else {
                format!(", chunk extensions {:?}", r.extensions)
            };
            format!(
                "{} {} ({} bytes, {:?}{extensions}, conn {conn})",
                r.method,
                r.target,
                r.body.len(),
                r.framing
            )
        })
        .collect();
    format!("[{}]", reqs.join(", "))
}

/// A target as the upstream saw it, absolute-form reduced to origin-form.
fn origin_form(target: &str) -> &str {
    target
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(target)
}

fn forwarded(upstream: &Upstream, transcript: &Transcript, reqs: &[Req]) -> Result<(), String> {
    let got = upstream.requests();
    let same = got.len() == reqs.len()
        && got.iter().zip(reqs).all(|((_, g), want)| {
            g.method == want.method
                && origin_form(&g.target) == want.target
                && g.body == want.body
                && want.framing.is_none_or(|f| f == g.framing)
        });
    let expected: Vec<String> = reqs
        .iter()
        .map(|r| {
            format!(
                "{} {} ({} bytes, {:?})",
                r.method,
                r.target,
                r.body.len(),
                r.framing
            )
        })
        .collect();
    check(same, || {
        format!(
            "the upstream parsed {} instead of [{}]",
            seen(upstream),
            expected.join(", ")
        )
    })?;
    for (_, r) in &got {
        let host = r.header("host");
        check(host == [HOST.as_bytes()], || {
            let host: Vec<String> = host.iter().map(|h| escape(h)).collect();
            format!(
                "{} {} reached the upstream with Host {host:?}",
                r.method, r.target
            )
        })?;
    }
    for (i, c) in upstream.connections().iter().enumerate() {
        let left = unfinished(c);
        check(left.is_empty(), || {
            format!(
                "upstream connection {i} holds bytes of no whole request: {}",
                escape(left)
            )
        })?;
    }
    let finals = transcript.finals();
    let answered = finals.len() == reqs.len()
        && finals
            .iter()
            .zip(reqs)
            .all(|(a, r)| a.status == 200 && a.text() == r.answer());
    check(answered && transcript.error.is_none(), || {
        let expected: Vec<String> = reqs.iter().map(Req::answer).collect();
        format!(
            "the client got {} instead of the answers to {expected:?}",
            transcript.describe()
        )
    })
}

fn refused(
    upstream: &Upstream,
    transcript: &Transcript,
    statuses: &[u16],
    or_close: bool,
    closes: bool,
) -> Result<(), String> {
    let reached: Vec<String> = upstream
        .connections()
        .iter()
        .filter(|c| !c.raw.is_empty())
        .map(|c| escape(&c.raw))
        .collect();
    check(reached.is_empty(), || {
        format!(
            "the edge forwarded it; the upstream parsed {} from {reached:?}; the client got {}",
            seen(upstream),
            transcript.describe()
        )
    })?;
    let finals = transcript.finals();
    let ok = match finals.as_slice() {
        [] => or_close && transcript.closed,
        [answer] => statuses.contains(&answer.status) && (!closes || transcript.closed),
        _ => false,
    };
    check(ok && transcript.error.is_none(), || {
        format!(
            "expected {}{}{}, the client got {}",
            statuses
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            if or_close { " or a close" } else { "" },
            if closes { " then a close" } else { "" },
            transcript.describe()
        )
    })
}

async fn client_error(upstream: &Upstream, transcript: &Transcript) -> Result<(), String> {
    let finals = transcript.finals();
    let ok = match finals.as_slice() {
        [] => transcript.closed,
        [answer] => answer.status == 400,
        _ => false,
    };
    check(ok, || {
        format!(
            "expected 400 or a close, the client got {}",
            transcript.describe()
        )
    })?;
    check(upstream.requests().is_empty(), || {
        format!("the upstream parsed {}", seen(upstream))
    })?;
    let closed = upstream
        .wait_for_cut_connections_closed(CUT_CLOSE_TIMEOUT)
        .await;
    check(closed, || {
        let open: Vec<String> = upstream
            .connections()
            .iter()
            .filter(|c| !c.closed && !unfinished(c).is_empty())
            .map(|c| escape(unfinished(c)))
            .collect();
        format!("upstream connections holding a cut request stayed open: {open:?}")
    })
}

/// `POST target` with a `Content-Length` body and `headers` (each line ending in CRLF).
pub fn post(target: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: {HOST}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `GET target` with `headers` (each line ending in CRLF).
pub fn get(target: &str, headers: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n")
}

/// `data` as one chunk, then the last chunk.
pub fn one_chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}
