//! HTTP/2 to HTTP/1.1 downgrades (h2c, prior knowledge): a malformed h2 request is refused
//! (reset, or 4xx), and the slot never sees a request framed otherwise than the client sent
//! it (never a `transfer-encoding`, never a body other than its `content-length`), and
//! gets a well-formed one as HTTP/1.1 says it (its `cookie` fields joined into one).

use std::time::Duration;

use bytes::Bytes;
use shipit_edge::Slot;
use tokio::net::TcpStream;

use crate::case::{HOST, SMUGGLED, one_chunk, seen};
use crate::h2c::{self, Outcome};
use crate::harness::{Edge, Path, check, each_on_plain_paths, on_plain_paths};
use crate::upstream::{Upstream, unfinished};
use crate::wire::{Framing, escape};

/// How long a cut request's slot connection may stay open.
const CUT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// An h2 request sent by the `h2` crate: `POST /h2` with this `content-length`, and `data`.
struct Declared {
    name: &'static str,
    content_length: &'static str,
    data: &'static [u8],
    /// `host` header besides `:authority`.
    host: Option<&'static str>,
}

/// What the h2 crate's client got back.
async fn send_declared(edge: &Edge, case: &Declared) -> Result<Outcome, String> {
    let tcp = TcpStream::connect(edge.addr())
        .await
        .map_err(|e| e.to_string())?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let outcome = async {
        let mut client = client.ready().await?;
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{HOST}/h2"))
            .header("content-length", case.content_length);
        if let Some(host) = case.host {
            request = request.header("host", host);
        }
        let (response, mut body) = client.send_request(request.body(()).unwrap(), false)?;
        body.send_data(Bytes::from_static(case.data), true)?;
        let response = response.await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        Ok::<_, h2::Error>((status, got))
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(4), outcome).await {
        Err(_) => Outcome::TimedOut,
        Ok(Ok((status, body))) => {
            if status == 200 && body != b"POST /h2 5" {
                return Err(format!("answered 200 with {:?}", escape(&body)));
            }
            Outcome::Answered(Some(status))
        }
        Ok(Err(e)) => match (e.reason(), e.is_go_away()) {
            (Some(reason), true) => Outcome::GoAway(u32::from(reason)),
            (Some(reason), false) => Outcome::Reset(u32::from(reason)),
            (None, _) => Outcome::Closed,
        },
    };
    driver.abort();
    Ok(outcome)
}

/// The slot parsed nothing, a request it got part of had its connection closed, and
/// nothing counted as the slot's 5xx.
async fn nothing_forwarded(edge: &Edge, upstream: &Upstream) -> Result<(), String> {
    let settled = edge.settle().await;
    check(settled, || "a request stayed in flight on the edge".into())?;
    let errors = edge.requests_total(Slot::Blue, "5xx").await;
    check(errors == 0.0, || {
        format!("the slot's 5xx counter is {errors}: a client's error counted against the slot")
    })?;
    for (i, c) in upstream.connections().iter().enumerate() {
        check(c.error.is_none(), || {
            format!(
                "upstream connection {i} could not parse what the edge sent ({}): {}",
                c.error.clone().unwrap_or_default(),
                escape(&c.raw)
            )
        })?;
    }
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
        format!("slot connections holding a cut request stayed open: {open:?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_content_length_must_match_its_data() {
    let cases = vec![
        Declared {
            name: "h2_content_length_matches_data",
            content_length: "5",
            data: b"hello",
            host: None,
        },
        Declared {
            name: "h2_content_length_larger_than_data",
            content_length: "10",
            data: b"hello",
            host: None,
        },
        Declared {
            name: "h2_content_length_smaller_than_data",
            content_length: "3",
            data: b"hello",
            host: None,
        },
        Declared {
            name: "h2_host_disagrees_with_authority",
            content_length: "5",
            data: b"hello",
            host: Some("other.test"),
        },
    ];
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    each_on_plain_paths(
        "h2 declared lengths",
        cases,
        |c| c.name.to_string(),
        async |case, path| {
            let upstream = Upstream::start().await;
            let edge = Edge::routed(path, upstream.addr).await;
            let outcome = send_declared(&edge, case).await?;
            let matching = case.content_length == "5" && case.host.is_none();
            if matching {
                check(outcome == Outcome::Answered(Some(200)), || {
                    format!("a well-formed h2 POST got {outcome:?}")
                })?;
                let got = upstream.requests();
                return check(
                    got.len() == 1
                        && got[0].1.body == b"hello"
                        && got[0].1.framing == Framing::Length(5),
                    || format!("the upstream parsed {}", seen(&upstream)),
                );
            }
            check(outcome.refused(), || {
                format!("expected a reset or a 4xx, the client got {outcome:?}")
            })?;
            nothing_forwarded(&edge, &upstream).await
        },
    )
    .await;
}

/// A raw h2 request: its header fields as sent, and its body.
struct Raw {
    name: &'static str,
    fields: Vec<(&'static [u8], &'static [u8])>,
    data: Option<Vec<u8>>,
}

/// The pseudo-headers of `POST /a`, then `extra`.
fn post(extra: &[(&'static [u8], &'static [u8])]) -> Vec<(&'static [u8], &'static [u8])> {
    let mut fields: Vec<(&'static [u8], &'static [u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/a"),
        (b":authority", b"app.test"),
    ];
    fields.extend_from_slice(extra);
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_are_refused() {
    let smuggled_chunk = one_chunk(SMUGGLED).into_bytes();
    let cases = vec![
        Raw {
            name: "h2_raw_well_formed_get_passes",
            fields: vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/raw"),
                (b":authority", b"app.test"),
            ],
            data: None,
        },
        Raw {
            name: "h2_transfer_encoding_chunked",
            fields: post(&[(b"transfer-encoding", b"chunked")]),
            data: Some(smuggled_chunk.clone()),
        },
        Raw {
            name: "h2_connection_names_content_length",
            fields: post(&[
                (b"connection", b"content-length"),
                (b"content-length", b"5"),
            ]),
            data: Some(b"hello".to_vec()),
        },
        Raw {
            name: "h2_upgrade_header",
            fields: post(&[(b"upgrade", b"websocket")]),
            data: Some(b"hello".to_vec()),
        },
        Raw {
            name: "h2_te_other_than_trailers",
            fields: post(&[(b"te", b"chunked")]),
            data: Some(smuggled_chunk.clone()),
        },
        Raw {
            name: "h2_crlf_in_header_value",
            fields: post(&[(b"x-a", b"a\r\nTransfer-Encoding: chunked")]),
            data: Some(smuggled_chunk.clone()),
        },
        Raw {
            name: "h2_lf_in_header_value",
            fields: post(&[(b"x-a", b"a\nContent-Length: 0")]),
            data: Some(SMUGGLED.as_bytes().to_vec()),
        },
        Raw {
            name: "h2_crlf_in_path",
            fields: vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (
                    b":path",
                    b"/a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /smuggled",
                ),
                (b":authority", b"app.test"),
            ],
            data: None,
        },
        Raw {
            name: "h2_space_in_header_name",
            fields: post(&[(b"transfer-encoding ", b"chunked")]),
            data: Some(smuggled_chunk),
        },
        Raw {
            name: "h2_missing_path",
            fields: vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"app.test"),
            ],
            data: None,
        },
        Raw {
            name: "h2_empty_path",
            fields: vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b""),
                (b":authority", b"app.test"),
            ],
            data: None,
        },
        Raw {
            name: "h2_duplicated_method",
            fields: vec![
                (b":method", b"GET"),
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/a"),
                (b":authority", b"app.test"),
            ],
            data: Some(b"hello".to_vec()),
        },
        Raw {
            name: "h2_pseudo_header_after_a_regular_one",
            fields: vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b"x-a", b"b"),
                (b":path", b"/a"),
                (b":authority", b"app.test"),
            ],
            data: None,
        },
        Raw {
            name: "h2_authority_disagrees_with_host",
            fields: vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/a"),
                (b":authority", b"app.test"),
                (b"host", b"other.test"),
            ],
            data: None,
        },
        Raw {
            name: "h2_content_length_with_a_sign",
            fields: post(&[(b"content-length", b"+5")]),
            data: Some(b"hello".to_vec()),
        },
        Raw {
            name: "h2_two_content_lengths",
            fields: post(&[(b"content-length", b"5"), (b"content-length", b"0")]),
            data: Some(b"hello".to_vec()),
        },
    ];
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    each_on_plain_paths(
        "malformed h2 requests",
        cases,
        |c| c.name.to_string(),
        async |case, path: Path| {
            let upstream = Upstream::start().await;
            let edge = Edge::routed(path, upstream.addr).await;
            let outcome = h2c::request(edge.addr(), &case.fields, case.data.as_deref()).await;
            if case.name == "h2_raw_well_formed_get_passes" {
                check(outcome == Outcome::Answered(Some(200)), || {
                    format!("a well-formed raw h2 GET got {outcome:?}")
                })?;
                let got = upstream.requests();
                return check(got.len() == 1 && got[0].1.target == "/raw", || {
                    format!("the upstream parsed {}", seen(&upstream))
                });
            }
            check(outcome.refused(), || {
                format!(
                    "expected a reset or a 4xx, the client got {outcome:?}; the upstream parsed {}",
                    seen(&upstream)
                )
            })?;
            nothing_forwarded(&edge, &upstream).await
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_cookie_fields_reach_the_slot_as_one_header() {
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    on_plain_paths("h2_three_cookie_fields", async |path: Path| {
        let upstream = Upstream::start().await;
        let edge = Edge::routed(path, upstream.addr).await;
        let outcome = h2c::request(
            edge.addr(),
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/cookies"),
                (b":authority", b"app.test"),
                (b"cookie", b"a=1"),
                (b"cookie", b"b=2"),
                (b"cookie", b"c=3"),
            ],
            None,
        )
        .await;
        check(outcome == Outcome::Answered(Some(200)), || {
            format!("an h2 GET with three cookie fields got {outcome:?}")
        })?;
        let got = upstream.requests();
        let [(_, request)] = got.as_slice() else {
            return Err(format!("the upstream parsed {}", seen(&upstream)));
        };
        let cookies: Vec<String> = request.header("cookie").iter().map(|c| escape(c)).collect();
        // RFC 9113 §8.2.3: joined with "; " into one field for HTTP/1.1.
        check(cookies == ["a=1; b=2; c=3"], || {
            format!("the slot got the cookies as {cookies:?}, not one `cookie: a=1; b=2; c=3`")
        })
    })
    .await;
}
