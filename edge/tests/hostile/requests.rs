//! Request smuggling from the public literature, request side: each case is the exact bytes
//! a client sends, on every path.

use crate::case::{
    Case, Expect, HOST, Req, SMUGGLED, get, one_chunk, post, refused_400, refused_400_or_close,
    run_all,
};
use crate::wire::Framing;

/// `POST /a` with these header lines, a `Content-Length` for `body`, and `body`.
fn post_a(headers: &str, body: &str) -> String {
    post("/a", headers, body)
}

/// `POST /a` with these header lines and a chunked body holding [`SMUGGLED`].
fn chunked_a(headers: &str) -> String {
    format!(
        "POST /a HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n{}",
        one_chunk(SMUGGLED)
    )
}

fn refused_then_closed() -> Expect {
    Expect::Refused {
        statuses: &[400],
        or_close: false,
        closes: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_name_framing_or_routing_headers() {
    run_all(
        "Connection naming a framing or routing header",
        vec![
            Case::new(
                "connection_names_content_length",
                post_a("Connection: content-length\r\n", SMUGGLED),
                refused_400(),
            ),
            Case::new(
                "connection_names_content_length_on_get",
                format!(
                    "GET /a HTTP/1.1\r\nHost: {HOST}\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                    SMUGGLED.len()
                ),
                refused_400(),
            ),
            Case::new(
                "connection_lists_content_length_among_others",
                post_a("Connection: keep-alive, Content-Length\r\n", SMUGGLED),
                refused_400(),
            ),
            Case::new(
                "second_connection_header_names_content_length",
                post_a(
                    "Connection: keep-alive\r\nConnection: content-length\r\n",
                    SMUGGLED,
                ),
                refused_400(),
            ),
            Case::new(
                "connection_names_transfer_encoding",
                chunked_a("Transfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n"),
                refused_400(),
            ),
            Case::new(
                "connection_names_host",
                get("/a", "Connection: host\r\n"),
                refused_400(),
            ),
            Case::new(
                "connection_names_x_shipit_slot",
                get("/a", "X-Shipit-Slot: green\r\nConnection: x-shipit-slot\r\n"),
                refused_400(),
            ),
            Case::new(
                "connection_names_cookie",
                get(
                    "/a",
                    "Cookie: shipit_slot=green.rel-2\r\nConnection: close, cookie\r\n",
                ),
                refused_400(),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_be_single_and_agree_with_the_target() {
    run_all(
        "Host rules",
        vec![
            Case::new("missing_host", "GET /a HTTP/1.1\r\n\r\n", refused_400()),
            Case::new(
                "two_host_headers",
                "GET /a HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
                refused_400(),
            ),
            Case::new(
                "two_equal_host_headers",
                "GET /a HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n\r\n",
                refused_400(),
            ),
            Case::new(
                "absolute_form_authority_disagrees_with_host",
                "GET http://other.test/a HTTP/1.1\r\nHost: app.test\r\n\r\n",
                refused_400(),
            ),
            Case::new(
                "absolute_form_agrees_with_host",
                "GET http://app.test/abs HTTP/1.1\r\nHost: app.test\r\n\r\n",
                Expect::Forwarded(vec![Req::new("GET", "/abs", "")]),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_read_by_transfer_encoding_then_closed() {
    let chunked_smuggled = one_chunk(SMUGGLED);
    run_all(
        "CL.TE and TE.CL",
        vec![
            // The front end reads Content-Length, the back end chunked: `G…` is left over.
            Case::new(
                "cl_te_classic",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"
                ),
                Expect::ForwardedThenClosed(vec![Req::new("POST", "/a", "").framed(Framing::Chunked)]),
            ),
            Case::new(
                "cl_te_smuggles_a_request_after_the_last_chunk",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
                    5 + SMUGGLED.len()
                ),
                Expect::ForwardedThenClosed(vec![Req::new("POST", "/a", "").framed(Framing::Chunked)]),
            ),
            // The front end reads chunked, the back end Content-Length: the chunk is a request.
            Case::new(
                "te_cl_classic",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggled}"
                ),
                Expect::ForwardedThenClosed(vec![Req::new("POST", "/a", SMUGGLED).framed(Framing::Chunked)]),
            ),
            Case::new(
                "te_cl_with_transfer_encoding_first",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunked_smuggled}"
                ),
                Expect::ForwardedThenClosed(vec![Req::new("POST", "/a", SMUGGLED).framed(Framing::Chunked)]),
            ),
            Case::new(
                "cl_with_obfuscated_te",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n{chunked_smuggled}"
                ),
                refused_then_closed(),
            ),
            // A bare LF ends a header line for some parsers and not for others.
            Case::new(
                "bare_lf_hides_transfer_encoding_next_to_content_length",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunked_smuggled}"
                ),
                Expect::ForwardedThenClosed(vec![Req::new("POST", "/a", SMUGGLED).framed(Framing::Chunked)]),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_obfuscations_are_refused() {
    let ows = |name: &'static str, te_line: &str| Case {
        name,
        send: chunked_a(te_line).into_bytes(),
        abort: false,
        expect: Expect::RefusedOrForwarded {
            statuses: &[400],
            reqs: vec![Req::new("POST", "/a", SMUGGLED).framed(Framing::Chunked)],
        },
    };
    run_all(
        "TE.TE obfuscations",
        vec![
            Case::new(
                "te_chunked_then_identity",
                chunked_a("Transfer-Encoding: chunked, identity\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_identity",
                chunked_a("Transfer-Encoding: identity\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_xchunked",
                chunked_a("Transfer-Encoding: xchunked\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_quoted_chunked",
                chunked_a("Transfer-Encoding: \"chunked\"\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_chunked_with_a_parameter",
                chunked_a("Transfer-Encoding: chunked;q=1\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_space_before_colon",
                chunked_a("Transfer-Encoding : chunked\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_vertical_tab_before_value",
                chunked_a("Transfer-Encoding:\x0bchunked\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_nul_after_value",
                chunked_a("Transfer-Encoding: chunked\0\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_bare_cr_inside_value",
                chunked_a("Transfer-Encoding: chunked\rX: y\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_obs_folded_value",
                chunked_a("Transfer-Encoding:\r\n chunked\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_two_headers_chunked_then_identity",
                chunked_a("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_two_chunked_headers",
                chunked_a("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_chunked_listed_twice",
                chunked_a("Transfer-Encoding: chunked, chunked\r\n"),
                refused_400_or_close(),
            ),
            Case::new(
                "te_in_an_http_1_0_request",
                format!(
                    "POST /a HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                    one_chunk(SMUGGLED)
                ),
                Expect::Refused {
                    statuses: &[400],
                    or_close: true,
                    closes: true,
                },
            ),
            // Optional whitespace and case are part of the grammar (RFC 9110 §5.5, §5.6.1,
            // RFC 9112 §7): reading them as `chunked` is not a fault, changing the framing is.
            ows("te_tab_before_value", "Transfer-Encoding:\tchunked\r\n"),
            ows("te_trailing_space", "Transfer-Encoding: chunked \r\n"),
            ows("te_upper_case", "Transfer-Encoding: CHUNKED\r\n"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_lengths_are_refused() {
    let cl = |value: &str| {
        format!("POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {value}\r\n\r\n{SMUGGLED}")
    };
    let n = SMUGGLED.len();
    run_all(
        "invalid Content-Length",
        vec![
            Case::new("cl_not_digits", cl("5a"), refused_400()),
            Case::new("cl_hex", cl(&format!("0x{n:x}")), refused_400()),
            Case::new("cl_plus_sign", cl(&format!("+{n}")), refused_400()),
            Case::new("cl_negative", cl("-1"), refused_400()),
            Case::new("cl_empty", cl(""), refused_400()),
            Case::new("cl_comma_list_equal", cl(&format!("{n}, {n}")), refused_400()),
            Case::new("cl_comma_list_different", cl(&format!("0, {n}")), refused_400()),
            Case::new(
                "cl_two_equal_headers",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"
                ),
                // Equal copies are one length (RFC 9110 §8.6), on every path; one is forwarded.
                Expect::Forwarded(vec![Req::new("POST", "/a", SMUGGLED).framed(Framing::Length(SMUGGLED.len() as u64))]),
            ),
            Case::new(
                "cl_two_different_headers",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}"
                ),
                refused_400(),
            ),
            Case::new("cl_u64_overflow", cl("18446744073709551616"), refused_400()),
            Case::new(
                "cl_huge_overflow",
                cl("99999999999999999999999999999999999999"),
                refused_400(),
            ),
            Case::new(
                "cl_space_before_colon",
                format!(
                    "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length : {n}\r\n\r\n{SMUGGLED}"
                ),
                refused_400(),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cr_obs_fold_and_nul_in_a_head_are_refused() {
    run_all(
        "bare CR, obs-fold, NUL and broken header lines",
        vec![
            Case::new(
                "bare_cr_in_header_value",
                get("/a", "X-A: a\rTransfer-Encoding: chunked\r\n"),
                refused_400(),
            ),
            Case::new(
                "bare_cr_in_request_line",
                format!("GET /a\r HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
                refused_400(),
            ),
            Case::new("obs_fold", get("/a", "X-A: a\r\n b\r\n"), refused_400()),
            Case::new(
                "obs_fold_hides_transfer_encoding",
                chunked_a("X-A: a\r\n Transfer-Encoding: chunked\r\n"),
                refused_400(),
            ),
            Case::new(
                "whitespace_before_first_header",
                format!("GET /a HTTP/1.1\r\n Host: {HOST}\r\n\r\n"),
                refused_400(),
            ),
            Case::new(
                "nul_in_header_value",
                get("/a", "X-A: a\0b\r\n"),
                refused_400(),
            ),
            Case::new(
                "space_inside_header_name",
                get("/a", "X A: b\r\n"),
                refused_400(),
            ),
            Case::new(
                "header_line_without_colon",
                get("/a", "X-A b\r\n"),
                refused_400(),
            ),
            // A single LF as line end is allowed to a recipient (RFC 9112 §2.2).
            Case::new(
                "bare_lf_line_ends",
                format!("GET /lf HTTP/1.1\nHost: {HOST}\n\n"),
                Expect::RefusedOrForwarded {
                    statuses: &[400],
                    reqs: vec![Req::new("GET", "/lf", "")],
                },
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_line_oddities_are_refused() {
    let line = |l: &str| format!("{l}\r\nHost: {HOST}\r\n\r\n");
    let version = Expect::Refused {
        statuses: &[400, 505],
        or_close: false,
        closes: false,
    };
    run_all(
        "request-line oddities",
        vec![
            Case::new(
                "double_space_after_method",
                line("GET  /a HTTP/1.1"),
                refused_400(),
            ),
            Case::new(
                "double_space_before_version",
                line("GET /a  HTTP/1.1"),
                refused_400(),
            ),
            Case::new(
                "trailing_space_after_version",
                line("GET /a HTTP/1.1 "),
                refused_400(),
            ),
            Case::new("tab_as_separator", line("GET\t/a HTTP/1.1"), refused_400()),
            Case::new("missing_version", line("GET /a"), refused_400()),
            Case::new("http_1_2", line("GET /a HTTP/1.2"), version.clone()),
            Case::new(
                "http_2_0_in_a_request_line",
                line("GET /a HTTP/2.0"),
                version,
            ),
            Case::new("lower_case_version", line("GET /a http/1.1"), refused_400()),
            Case::new(
                "target_with_del",
                line("GET /a\x7fb HTTP/1.1"),
                refused_400(),
            ),
            Case::new(
                "target_with_control_byte",
                line("GET /a\x01b HTTP/1.1"),
                refused_400(),
            ),
            Case::new(
                "method_with_separator",
                line("G(T /a HTTP/1.1"),
                refused_400(),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    let many = |count: usize, size: usize| -> String {
        (0..count)
            .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(size)))
            .collect()
    };
    let too_large = Expect::Refused {
        statuses: &[431],
        or_close: false,
        closes: false,
    };
    run_all(
        "head limits",
        vec![
            Case::new(
                "one_header_of_70_kb",
                get("/a", &format!("X-Big: {}\r\n", "a".repeat(70_000))),
                too_large.clone(),
            ),
            Case::new(
                "500_kib_of_headers",
                get("/a", &many(80, 6_400)),
                too_large.clone(),
            ),
            Case::new("101_headers", get("/a", &many(100, 4)), too_large),
            Case::new(
                "100_headers_pass",
                get("/a", &many(99, 4)),
                Expect::Forwarded(vec![Req::new("GET", "/a", "")]),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_look_like_requests_stay_bodies() {
    let with_body = |method: &'static str| {
        Case::new(
            match method {
                "GET" => "cl_0_get_with_a_request_as_body",
                "OPTIONS" => "cl_0_options_with_a_request_as_body",
                _ => "cl_0_delete_with_a_request_as_body",
            },
            format!(
                "{method} /cl0 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            Expect::Forwarded(vec![
                Req::new(method, "/cl0", SMUGGLED).framed(Framing::Length(SMUGGLED.len() as u64)),
            ]),
        )
    };
    run_all(
        "CL.0 and 0.CL",
        vec![
            with_body("GET"),
            with_body("OPTIONS"),
            with_body("DELETE"),
            Case::new(
                "zero_cl_post_then_a_request",
                format!("{}{}", post("/a", "", ""), get("/b", "")),
                Expect::Forwarded(vec![Req::new("POST", "/a", ""), Req::new("GET", "/b", "")]),
            ),
            Case::new(
                "post_with_a_request_as_body",
                post("/a", "", SMUGGLED),
                Expect::Forwarded(vec![
                    Req::new("POST", "/a", SMUGGLED).framed(Framing::Length(SMUGGLED.len() as u64)),
                ]),
            ),
            Case::new(
                "chunked_post_with_a_request_as_chunk",
                chunked_a("Transfer-Encoding: chunked\r\n"),
                Expect::Forwarded(vec![Req::new("POST", "/a", SMUGGLED)]),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_keep_their_boundaries() {
    let chunked_post = format!(
        "POST /c HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        one_chunk("hello")
    );
    run_all(
        "pipelining after a body",
        vec![
            Case::new(
                "post_then_get",
                format!("{}{}", post("/a", "", "hello"), get("/b", "")),
                Expect::Forwarded(vec![
                    Req::new("POST", "/a", "hello"),
                    Req::new("GET", "/b", ""),
                ]),
            ),
            Case::new(
                "chunked_post_then_get",
                format!("{chunked_post}{}", get("/b", "")),
                Expect::Forwarded(vec![
                    Req::new("POST", "/c", "hello"),
                    Req::new("GET", "/b", ""),
                ]),
            ),
            Case::new(
                "three_posts_with_bodies",
                format!(
                    "{}{}{}",
                    post("/1", "", "one"),
                    post("/2", "", SMUGGLED),
                    post("/3", "", "three")
                ),
                Expect::Forwarded(vec![
                    Req::new("POST", "/1", "one"),
                    Req::new("POST", "/2", SMUGGLED),
                    Req::new("POST", "/3", "three"),
                ]),
            ),
            Case::new(
                "get_then_post_then_get_with_close",
                format!(
                    "{}{}{}",
                    get("/1", ""),
                    post("/2", "", "two"),
                    get("/3", "Connection: close\r\n")
                ),
                Expect::Forwarded(vec![
                    Req::new("GET", "/1", ""),
                    Req::new("POST", "/2", "two"),
                    Req::new("GET", "/3", ""),
                ]),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_abuse_keeps_boundaries() {
    run_all(
        "Expect: 100-continue abuse",
        vec![
            Case::new(
                "expect_continue_with_the_body_sent_at_once",
                post("/a", "Expect: 100-continue\r\n", "hello"),
                Expect::Forwarded(vec![Req::new("POST", "/a", "hello")]),
            ),
            Case::new(
                "expect_continue_on_a_get",
                get("/a", "Expect: 100-continue\r\n"),
                Expect::Forwarded(vec![Req::new("GET", "/a", "")]),
            ),
            Case::new(
                "expect_continue_then_a_pipelined_get",
                format!(
                    "{}{}",
                    post("/a", "Expect: 100-continue\r\n", SMUGGLED),
                    get("/b", "")
                ),
                Expect::Forwarded(vec![
                    Req::new("POST", "/a", SMUGGLED),
                    Req::new("GET", "/b", ""),
                ]),
            ),
            Case::new(
                "expect_continue_with_a_chunked_body_sent_at_once",
                chunked_a("Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n"),
                Expect::Forwarded(vec![Req::new("POST", "/a", SMUGGLED)]),
            ),
            Case::new(
                "unknown_expectation",
                post("/a", "Expect: 200-ok\r\n", "hello"),
                Expect::RefusedOrForwarded {
                    statuses: &[417],
                    reqs: vec![Req::new("POST", "/a", "hello")],
                },
            ),
        ],
    )
    .await;
}
