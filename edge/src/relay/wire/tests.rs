use http::{HeaderValue, header};

use super::*;

// --- The chunked framing -----------------------------------------------------------

const CHUNKED: &[u8] =
    b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 31\r\n\r\n";

#[test]
fn chunked_scanner_finds_the_end_wherever_the_body_is_split() {
    let mut body = CHUNKED.to_vec();
    body.extend_from_slice(b"HTTP/1.1 200 OK\r\n"); // the next answer's first bytes
    for split in 0..=body.len() {
        let mut scanner = ChunkedScanner::default();
        let first = scanner.feed(&body[..split]).unwrap();
        let end = match first {
            Some(end) => end,
            None => split + scanner.feed(&body[split..]).unwrap().expect("no end found"),
        };
        assert_eq!(end, CHUNKED.len(), "split at {split}");
    }
}

#[test]
fn chunked_scanner_finds_the_end_fed_byte_by_byte() {
    let mut scanner = ChunkedScanner::default();
    let mut ends = Vec::new();
    for (i, byte) in CHUNKED.iter().enumerate() {
        if let Some(end) = scanner.feed(std::slice::from_ref(byte)).unwrap() {
            ends.push((i, end));
        }
    }
    assert_eq!(ends, vec![(CHUNKED.len() - 1, 1)]);
}

#[test]
fn chunked_scanner_refuses_broken_framing() {
    for broken in [
        &b"zz\r\n"[..],
        b"5\r\nhelloX\r\n",
        b"5\nhello",
        b"\r\n",
        b"ffffffffffffffffff\r\n",
        b"0\r\n\rX",
    ] {
        let mut scanner = ChunkedScanner::default();
        assert!(
            scanner.feed(broken).is_err(),
            "{:?}",
            String::from_utf8_lossy(broken)
        );
    }
}

// --- Parsing and rewriting heads ------------------------------------------------------

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 4096,
    max_headers: 20,
};

fn client() -> Client<'static> {
    Client {
        https: false,
        ip: b"192.0.2.7",
        max_body: Some(1000),
        limits: LIMITS,
    }
}

fn ready(request: &[u8]) -> (Head, String) {
    let mut out = Vec::new();
    match parse_request(request, &mut out, &client()) {
        Parsed::Ready(head) => (head, String::from_utf8(out).unwrap()),
        Parsed::Incomplete => panic!("incomplete: {}", String::from_utf8_lossy(request)),
        Parsed::Fallback => panic!("fallback: {}", String::from_utf8_lossy(request)),
        Parsed::Refuse(r) => panic!("refused ({r:?}): {}", String::from_utf8_lossy(request)),
    }
}

#[test]
fn request_head_is_rewritten_for_the_slot() {
    let request = b"POST /cart/add?id=3 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Trace\r\n\
X-Trace: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9v\r\nTE: trailers\r\n\
X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
Cookie: a=1\r\nContent-Length: 5\r\n\r\nhelloGET /next";
    let (head, out) = ready(request);
    assert_eq!(
        out,
        "POST /cart/add?id=3 HTTP/1.1\r\nHost: shop.example\r\nCookie: a=1\r\nContent-Length: 5\r\n\
x-forwarded-host: shop.example\r\nx-forwarded-proto: http\r\n\
x-forwarded-for: 203.0.113.9, 192.0.2.7\r\n\r\nhello"
    );
    assert_eq!(head.len, request.len() - b"GET /next".len());
    assert_eq!(&request[head.host], b"shop.example");
    assert_eq!(&request[head.path], b"/cart/add");
    assert_eq!(head.split.get(header::COOKIE).unwrap(), "a=1");
    assert!(!head.idempotent && !head.head_method && !head.close);
}

#[test]
fn request_flags_follow_the_method_and_connection() {
    let (head, _) =
        ready(b"HEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\nx-shipit-slot: green\r\n\r\n");
    assert!(head.idempotent && head.head_method && head.close);
    assert_eq!(head.split.get(&SLOT_HEADER).unwrap(), "green");
}

#[test]
fn a_request_waits_for_its_whole_head_and_body() {
    let request = b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd";
    for cut in 1..request.len() {
        let mut out = Vec::new();
        assert!(
            matches!(
                parse_request(&request[..cut], &mut out, &client()),
                Parsed::Incomplete
            ),
            "cut at {cut}"
        );
    }
    ready(request);
}

#[test]
fn requests_the_relay_does_not_take_go_to_the_general_path() {
    for request in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // Transfer-Encoding wins over Content-Length (and the connection then closes):
        // the general path reads the chunked body.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // Over the edge's body limit (1000 here): the general path answers 413.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n",
    ] {
        let mut out = Vec::new();
        let parsed = parse_request(request, &mut out, &client());
        assert!(
            matches!(parsed, Parsed::Fallback),
            "{}: {parsed:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn equal_content_lengths_are_one_and_forwarded_once() {
    let request =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
    let (head, out) = ready(request);
    assert_eq!(head.len, request.len());
    let lower = out.to_ascii_lowercase();
    assert_eq!(lower.matches("content-length").count(), 1, "{out}");
    assert!(out.ends_with("\r\n\r\nabc"), "{out}");
}

#[test]
fn a_partial_http2_preface_waits_for_more() {
    let mut out = Vec::new();
    assert!(matches!(
        parse_request(b"PRI * HT", &mut out, &client()),
        Parsed::Incomplete
    ));
}

#[test]
fn requests_that_break_the_framing_rules_are_refused() {
    let bad = |reason| Refusal::BadRequest(reason);
    let cases: Vec<(&[u8], Refusal)> = vec![
        (b"GET / HTTP/1.1\r\n\r\n", bad("the request has no Host header")),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            bad("the request has several Host headers"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            bad("the request's Host is not a valid authority"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            bad("the request has several different Content-Length headers"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            bad("the request's Content-Length is invalid"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
            bad("the request's Content-Length is invalid"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc",
            bad("Connection names a header that frames or routes the request"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Host\r\n\r\n",
            bad("Connection names a header that frames or routes the request"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-shipit-slot\r\nX-Shipit-Slot: green\r\n\r\n",
            bad("Connection names a header that frames or routes the request"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            bad("the request's Transfer-Encoding is not exactly chunked"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            bad("the request's Transfer-Encoding is not exactly chunked"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            bad("the request's Transfer-Encoding is not exactly chunked"),
        ),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", bad("the request head is malformed")),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            bad("the request head is malformed"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            bad("the request head is malformed"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            bad("the request head is malformed"),
        ),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", bad("the request head is malformed")),
        (
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            bad("the request line's version is not HTTP/1.x"),
        ),
    ];
    for (request, refusal) in cases {
        let mut out = Vec::new();
        let parsed = parse_request(request, &mut out, &client());
        assert!(
            matches!(parsed, Parsed::Refuse(r) if r == refusal),
            "{}: {parsed:?}, expected {refusal:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn heads_over_the_limits_are_refused_complete_or_not() {
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..LIMITS.max_headers {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(LIMITS.max_bytes)
    );
    // Not yet complete, and already over the size.
    let partial = &long.as_bytes()[..LIMITS.max_bytes + 10];
    for request in [&many[..], long.as_bytes(), partial] {
        let mut out = Vec::new();
        let parsed = parse_request(request, &mut out, &client());
        assert!(
            matches!(parsed, Parsed::Refuse(Refusal::HeadTooLarge)),
            "{} bytes: {parsed:?}",
            request.len()
        );
    }
    // Exactly at the header count is fine.
    let mut at = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 1..LIMITS.max_headers {
        at.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    at.extend_from_slice(b"\r\n");
    ready(&at);
}

fn extra() -> Extra {
    Extra {
        set_cookie: None,
        pinned: None,
        close: false,
        head_method: false,
    }
}

fn final_answer(bytes: &[u8], extra: &Extra, closing: bool) -> (Answer, String) {
    let mut out = Vec::new();
    match parse_answer(bytes, &mut out, extra, closing) {
        Ok(Some(Parsed1::Final(answer))) => (answer, String::from_utf8(out).unwrap()),
        Ok(Some(Parsed1::Interim(_))) => panic!("interim"),
        Ok(None) => panic!("incomplete"),
        Err(failure) => panic!("{failure:?}"),
    }
}

#[test]
fn answer_head_is_rewritten_for_the_client() {
    let extra = Extra {
        set_cookie: Some(HeaderValue::from_static("shipit_slot=green.r2; Path=/")),
        pinned: Some("green"),
        ..extra()
    };
    let (answer, out) = final_answer(
        b"HTTP/1.1 201 Made It\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: 5\r\n\
Content-Length: 2\r\nX-App: a\r\n\r\nok",
        &extra,
        false,
    );
    assert_eq!(
        out,
        "HTTP/1.1 201 Made It\r\nContent-Length: 2\r\nX-App: a\r\n\
set-cookie: shipit_slot=green.r2; Path=/\r\nx-shipit-slot: green\r\n\r\n"
    );
    assert_eq!(answer.status, 201);
    assert_eq!(answer.framing, Framing::Length(2));
    assert!(!answer.reusable && !answer.close);
}

#[test]
fn answer_framing_follows_rfc_9112() {
    let cases: [(&[u8], bool, Framing); 7] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
            false,
            Framing::Length(7),
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 7\r\n\r\n",
            false,
            Framing::Chunked,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            false,
            Framing::UntilClose,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false, Framing::Empty),
        (
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            false,
            Framing::Empty,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            true,
            Framing::Empty,
        ),
    ];
    for (bytes, head_method, framing) in cases {
        let extra = Extra {
            head_method,
            ..extra()
        };
        let (answer, out) = final_answer(bytes, &extra, false);
        assert_eq!(
            answer.framing,
            framing,
            "{}",
            String::from_utf8_lossy(bytes)
        );
        // A body that ends with the connection closes the client's too, and says so.
        assert_eq!(answer.close, framing == Framing::UntilClose);
        assert_eq!(out.contains("connection: close"), answer.close, "{out}");
        if framing == Framing::Chunked {
            assert!(out.contains("transfer-encoding: gzip, chunked"), "{out}");
            assert!(!out.contains("content-length"), "{out}");
        }
    }
}

#[test]
fn interim_upgrade_and_invalid_answers() {
    let mut out = Vec::new();
    assert!(matches!(
        parse_answer(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1", &mut out, &extra(), false),
        Ok(Some(Parsed1::Interim(n))) if n == 40
    ));
    assert!(matches!(
        parse_answer(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            &mut out,
            &extra(),
            false
        ),
        Err(Failure::UnaskedUpgrade)
    ));
    assert!(matches!(
        parse_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            &mut out,
            &extra(),
            false
        ),
        Err(Failure::Broken(_))
    ));
    assert!(matches!(
        parse_answer(b"HTTP/1.1 200 OK\r\ncontent-le", &mut out, &extra(), false),
        Ok(None)
    ));
    let (answer, out) = final_answer(
        b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
        &extra(),
        true,
    );
    assert!(
        !answer.reusable,
        "an HTTP/1.0 slot connection is not reused"
    );
    assert!(
        answer.close && out.ends_with("connection: close\r\n\r\n"),
        "{out}"
    );
}

#[test]
fn connection_from_the_slot_never_unframes_its_answer() {
    let (answer, out) = final_answer(
        b"HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 5\r\n\r\nhello",
        &extra(),
        false,
    );
    assert_eq!(answer.framing, Framing::Length(5));
    assert!(answer.reusable);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
}

#[test]
fn an_answer_framed_both_ways_is_chunked_and_its_connection_not_reused() {
    let (answer, out) = final_answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        &extra(),
        false,
    );
    assert_eq!(answer.framing, Framing::Chunked);
    assert!(!answer.reusable);
    assert!(
        !out.to_ascii_lowercase().contains("content-length"),
        "{out}"
    );
    assert!(out.contains("Transfer-Encoding: chunked"), "{out}");
}

#[test]
fn an_answer_whose_last_coding_is_not_chunked_is_read_until_close_without_its_length() {
    let (answer, out) = final_answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
        &extra(),
        false,
    );
    assert_eq!(answer.framing, Framing::UntilClose);
    assert!(!answer.reusable && answer.close);
    assert!(
        !out.to_ascii_lowercase().contains("content-length"),
        "{out}"
    );
    assert!(out.contains("Transfer-Encoding: gzip"), "{out}");
    assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
}

#[test]
fn an_answer_head_over_the_limit_is_refused_in_one_piece_or_in_parts() {
    let head = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(MAX_ANSWER_HEAD)
    );
    let mut out = Vec::new();
    for bytes in [head.as_bytes(), &head.as_bytes()[..MAX_ANSWER_HEAD + 10]] {
        assert!(matches!(
            parse_answer(bytes, &mut out, &extra(), false),
            Err(Failure::Broken(_))
        ));
    }
}

#[test]
fn the_edge_s_own_answers_are_generic_and_framed() {
    let mut out = Vec::new();
    let id = RequestId::new();
    write_message(&mut out, StatusCode::BAD_GATEWAY, id, false, true);
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, format!("502 Bad Gateway\nrequest id: {id}\n"));
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    assert!(head.ends_with("connection: close"), "{head}");
    // To a HEAD request: the same head, and nothing after it.
    let mut out = Vec::new();
    write_message(&mut out, StatusCode::BAD_GATEWAY, id, true, false);
    let text = String::from_utf8(out).unwrap();
    let (head_only, rest) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(rest, "");
    assert!(
        head_only.contains(&format!("content-length: {}", body.len())),
        "{head_only}"
    );
}

#[test]
fn a_bodyless_answer_that_names_a_body_is_not_reused() {
    let head = Extra {
        head_method: true,
        ..extra()
    };
    for (bytes, extra, reusable) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n"[..],
            &head,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &head,
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &head, true),
        (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            &extra(),
            false,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            &extra(),
            false,
        ),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", &extra(), true),
    ] {
        let (answer, _) = final_answer(bytes, extra, false);
        assert_eq!(answer.framing, Framing::Empty);
        assert_eq!(
            answer.reusable,
            reusable,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn lookalikes_of_the_edge_s_headers_and_many_connection_tokens() {
    let (_, out) = ready(
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\
X-Real-IP: 6.6.6.6\r\nContent_Length: 5\r\nConnection: keep-alive, a, b, c, d, e, f, g, h, i\r\n\
i: gone\r\nx-keep: kept\r\n\r\n",
    );
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nHost: a\r\nx-keep: kept\r\nx-forwarded-host: a\r\n\
x-forwarded-proto: http\r\nx-forwarded-for: 192.0.2.7\r\n\r\n"
    );
}
