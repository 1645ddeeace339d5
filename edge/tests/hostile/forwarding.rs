//! What the edge passes on to a slot, and what it must not: a `CONNECT` (a tunnel to
//! anywhere) is refused; headers that only look like the edge's own forwarding headers
//! (`X_Forwarded_For`, `Forwarded`, `X-Real-IP`) or like framing headers
//! (`Transfer_Encoding`, `Content_Length`) never reach it, since a slot or framework that
//! folds `_` into `-` would trust them; a `Connection` header listing many tokens is
//! forwarded alike on every path; and `Upgrade: h2c` never becomes a tunnel.

use std::sync::Arc;

use shipit_edge::Slot;

use crate::case::{HOST, get, seen};
use crate::client::Transcript;
use crate::h2c::{self, Outcome};
use crate::harness::{Edge, Path, check, on_every_path, on_plain_paths};
use crate::upstream::{Reply, Script, Upstream};
use crate::wire::{Request, escape};

/// The slot's counts are all 0: nothing was counted as its request.
async fn not_counted(edge: &Edge) -> Result<(), String> {
    let settled = edge.settle().await;
    check(settled, || "a request stayed in flight".into())?;
    let counts = edge.slot_counts(Slot::Blue).await;
    check(counts.is_empty(), || {
        format!("the slot's shipit_edge_requests_total counted it: {counts:?}")
    })
}

/// Not one byte reached the slot.
fn nothing_reached(upstream: &Upstream) -> Result<(), String> {
    let reached: Vec<String> = upstream
        .connections()
        .iter()
        .filter(|c| !c.raw.is_empty())
        .map(|c| escape(&c.raw))
        .collect();
    check(reached.is_empty(), || {
        format!("the slot received {reached:?}")
    })
}

/// One request on a new connection.
async fn send(edge: &Edge, bytes: &str) -> Transcript {
    edge.client()
        .await
        .exchange(bytes.as_bytes(), false, 1)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_over_http1_is_refused() {
    on_every_path("connect_over_http1", async |path: Path| {
        let upstream = Upstream::start().await;
        let edge = Edge::routed(path, upstream.addr).await;
        let got = send(&edge, "CONNECT x:80 HTTP/1.1\r\nHost: x:80\r\n\r\n").await;
        let finals = got.finals();
        check(
            finals.len() == 1 && [405, 400].contains(&finals[0].status),
            || {
                format!(
                    "expected 405 (or 400), the client got {}; the slot parsed {}",
                    got.describe(),
                    seen(&upstream)
                )
            },
        )?;
        nothing_reached(&upstream)?;
        not_counted(&edge).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_over_http2_is_refused() {
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    on_plain_paths("connect_over_http2", async |path: Path| {
        let upstream = Upstream::start().await;
        let edge = Edge::routed(path, upstream.addr).await;
        let outcome = h2c::request(
            edge.addr(),
            &[(b":method", b"CONNECT"), (b":authority", b"x:80")],
            None,
        )
        .await;
        check(
            matches!(outcome, Outcome::Answered(Some(405 | 400))),
            || {
                format!(
                    "expected 405 (or 400), the client got {outcome:?}; the slot parsed {}",
                    seen(&upstream)
                )
            },
        )?;
        nothing_reached(&upstream)?;
        not_counted(&edge).await
    })
    .await;
}

/// The one request the slot parsed, answered to the client as the echo of `target`.
fn forwarded_once(
    upstream: &Upstream,
    got: &Transcript,
    method: &str,
    target: &str,
) -> Result<Request, String> {
    let finals = got.finals();
    let expected = format!("{method} {target} 0");
    check(
        finals.len() == 1 && finals[0].status == 200 && finals[0].text() == expected,
        || {
            format!(
                "expected 200 {expected:?}, the client got {}; the slot parsed {}",
                got.describe(),
                seen(upstream)
            )
        },
    )?;
    let requests = upstream.requests();
    match requests.as_slice() {
        [(_, request)] if request.target == target => Ok(request.clone()),
        _ => Err(format!("the slot parsed {}", seen(upstream))),
    }
}

/// The request's headers, one line each, for messages.
fn lines(request: &Request) -> String {
    let all: Vec<String> = request
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", escape(v)))
        .collect();
    format!("[{}]", all.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalike_forwarding_and_framing_headers_never_reach_the_slot() {
    const LOOKALIKES: [(&str, &str); 7] = [
        ("X_Forwarded_Host", "evil"),
        ("X_Forwarded_Proto", "https"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;proto=https"),
        ("X-Real-IP", "6.6.6.6"),
        ("Transfer_Encoding", "chunked"),
        ("Content_Length", "5"),
    ];
    on_every_path("lookalike_forwarding_headers", async |path: Path| {
        let upstream = Upstream::start().await;
        let edge = Edge::routed(path, upstream.addr).await;
        let headers: String = LOOKALIKES
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let got = send(
            &edge,
            &get("/lookalike", &format!("{headers}X-App: kept\r\n")),
        )
        .await;
        let request = forwarded_once(&upstream, &got, "GET", "/lookalike")?;
        let reached: Vec<&str> = LOOKALIKES
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !request.header(name).is_empty())
            .collect();
        check(reached.is_empty(), || {
            format!("{reached:?} reached the slot: {}", lines(&request))
        })?;
        // The edge's own, once each, and nothing the client named.
        for (name, value) in [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", path.scheme()),
            ("x-forwarded-host", HOST),
        ] {
            check(request.header(name) == [value.as_bytes()], || {
                format!(
                    "the slot did not get exactly `{name}: {value}`: {}",
                    lines(&request)
                )
            })?;
        }
        let leaked = request.headers.iter().any(|(_, v)| {
            let v = String::from_utf8_lossy(v);
            v.contains("6.6.6.6") || v.contains("evil")
        });
        check(!leaked, || {
            format!(
                "a value the client sent in a lookalike reached the slot: {}",
                lines(&request)
            )
        })?;
        check(request.header("x-app") == [b"kept"], || {
            format!("an ordinary header was lost: {}", lines(&request))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_with_many_tokens_is_forwarded_on_every_path() {
    const NAMED: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    on_every_path("connection_with_eleven_tokens", async |path: Path| {
        let upstream = Upstream::start().await;
        let edge = Edge::routed(path, upstream.addr).await;
        let mut headers = format!("Connection: keep-alive, {}\r\n", NAMED.join(", "));
        for name in NAMED {
            headers.push_str(&format!("{name}: hop\r\n"));
        }
        headers.push_str("k: kept\r\n");
        let got = send(&edge, &get("/tokens", &headers)).await;
        let request = forwarded_once(&upstream, &got, "GET", "/tokens")?;
        let reached: Vec<&str> = NAMED
            .iter()
            .copied()
            .filter(|name| !request.header(name).is_empty())
            .collect();
        check(reached.is_empty(), || {
            format!(
                "headers named by Connection reached the slot ({reached:?}): {}",
                lines(&request)
            )
        })?;
        check(request.header("k") == [b"kept"], || {
            format!(
                "a header Connection did not name was lost: {}",
                lines(&request)
            )
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_never_passed_on() {
    on_every_path("upgrade_h2c", async |path: Path| {
        // A slot that switches whenever it is asked to: an `Upgrade` reaching it makes a
        // tunnel.
        let script: Script = Arc::new(|asked| {
            if asked.has("upgrade") {
                Reply::Switch(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                        .to_vec(),
                )
            } else {
                Reply::Echo
            }
        });
        let upstream = Upstream::scripted(script).await;
        let edge = Edge::routed(path, upstream.addr).await;
        let got = send(
            &edge,
            &get(
                "/h2c",
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                 HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
            ),
        )
        .await;
        let finals = got.finals();
        let switched = upstream.connections().iter().any(|c| c.switched);
        check(
            !switched && got.answers.iter().all(|a| a.status != 101),
            || {
                format!(
                    "the upgrade became a tunnel: the client got {}; the slot parsed {}",
                    got.describe(),
                    seen(&upstream)
                )
            },
        )?;
        if let [answer] = finals.as_slice()
            && (400..500).contains(&answer.status)
        {
            // Refused: then nothing reached the slot.
            return nothing_reached(&upstream);
        }
        let request = forwarded_once(&upstream, &got, "GET", "/h2c")?;
        let reached: Vec<&str> = ["upgrade", "http2-settings"]
            .into_iter()
            .filter(|name| !request.header(name).is_empty())
            .collect();
        let names_them = request.header("connection").iter().any(|v| {
            let v = String::from_utf8_lossy(v).to_ascii_lowercase();
            v.contains("upgrade") || v.contains("http2-settings")
        });
        check(reached.is_empty() && !names_them, || {
            format!(
                "{reached:?} reached the slot: {}",
                lines(&request)
            )
        })
    })
    .await;
}
