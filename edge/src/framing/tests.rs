use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 1024,
    max_headers: 8,
};

fn check(http11: bool, headers: &[(&str, &str)]) -> Result<Checked<'static>, Refusal> {
    let headers: &'static [(String, String)] = Box::leak(
        headers
            .iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let mut check = RequestCheck::new(http11, 16, LIMITS);
    for (name, value) in headers {
        check.header(name, value.as_bytes())?;
    }
    check.finish()
}

#[test]
fn a_plain_request_passes_with_its_framing() {
    let checked = check(
        true,
        &[("Host", "shop.example:8080"), ("Content-Length", "12")],
    )
    .unwrap();
    assert_eq!(checked.host, b"shop.example:8080");
    assert_eq!(checked.body, BodyFraming::Length(12));
    assert!(!checked.close && !checked.expect && !checked.upgrade);
    let chunked = check(true, &[("host", "a"), ("transfer-encoding", "Chunked")]).unwrap();
    assert_eq!(chunked.body, BodyFraming::Chunked);
    assert!(!chunked.close);
}

#[test]
fn transfer_encoding_beside_a_length_wins_and_closes_the_connection() {
    for order in [
        [("content-length", "5"), ("transfer-encoding", "chunked")],
        [("transfer-encoding", "chunked"), ("content-length", "5")],
    ] {
        let mut headers = vec![("host", "a")];
        headers.extend(order);
        let checked = check(true, &headers).unwrap();
        assert_eq!(checked.body, BodyFraming::Chunked);
        assert!(checked.close);
    }
}

#[test]
fn connection_may_not_name_a_header_that_frames_or_routes() {
    for named in [
        "content-length",
        "Transfer-Encoding",
        "HOST",
        "cookie",
        "x-shipit-slot",
        "keep-alive, content-length",
        " ,content-length,",
    ] {
        assert_eq!(
            check(true, &[("host", "a"), ("connection", named)]).unwrap_err(),
            Refusal::BadRequest("Connection names a header that frames or routes the request"),
            "{named}"
        );
    }
    let ok = check(
        true,
        &[("host", "a"), ("connection", "keep-alive, x-trace, close")],
    )
    .unwrap();
    assert!(ok.close);
}

#[test]
fn host_must_be_there_once_and_valid() {
    assert_eq!(
        check(true, &[]).unwrap_err(),
        Refusal::BadRequest("the request has no Host header")
    );
    assert_eq!(
        check(true, &[("host", "a"), ("Host", "a")]).unwrap_err(),
        Refusal::BadRequest("the request has several Host headers")
    );
    for bad in [
        "", "a b", "a/b", "user@a", "a:80x", "a:123456", "[::1", "a,b", "a\tb",
    ] {
        assert!(!valid_authority(bad.as_bytes()), "{bad:?} passed");
    }
    for good in [
        "a",
        "shop.example",
        "shop.example:8080",
        "[::1]:80",
        "[2001:db8::1]",
        "127.0.0.1:1",
        "xn--bcher-kva.example",
    ] {
        assert!(valid_authority(good.as_bytes()), "{good:?} refused");
    }
}

#[test]
fn content_length_is_one_number_of_digits() {
    for bad in [
        "",
        "+5",
        "-1",
        "5 ",
        " 5",
        "5,5",
        "0x10",
        "99999999999999999999999",
    ] {
        assert_eq!(parse_length(bad.as_bytes()), None, "{bad:?}");
    }
    assert_eq!(parse_length(b"0"), Some(0));
    assert_eq!(parse_length(b"007"), Some(7));
    assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
    let twice = |second: &'static str| {
        check(
            true,
            &[
                ("host", "a"),
                ("content-length", "3"),
                ("content-length", second),
            ],
        )
    };
    assert_eq!(
        twice("4").unwrap_err(),
        Refusal::BadRequest("the request has several different Content-Length headers")
    );
    assert_eq!(twice("3").unwrap().body, BodyFraming::Length(3));
}

#[test]
fn transfer_encoding_must_be_exactly_chunked_on_http_1_1() {
    for bad in [
        vec!["chunked, identity"],
        vec!["identity"],
        vec!["xchunked"],
        vec!["gzip, chunked"],
        vec!["chunked, chunked"],
        vec!["chunked", "chunked"],
        vec!["gzip", "chunked"],
        vec![""],
    ] {
        let mut headers = vec![("host", "a")];
        headers.extend(bad.iter().map(|v| ("transfer-encoding", *v)));
        assert_eq!(
            check(true, &headers).unwrap_err(),
            Refusal::BadRequest("the request's Transfer-Encoding is not exactly chunked"),
            "{bad:?}"
        );
    }
    assert_eq!(
        check(false, &[("host", "a"), ("transfer-encoding", "chunked")]).unwrap_err(),
        Refusal::BadRequest("an HTTP/1.0 request has a Transfer-Encoding")
    );
    // HTTP/1.0 closes after its answer.
    assert!(check(false, &[("host", "a")]).unwrap().close);
}

#[test]
fn the_head_limits_count_bytes_and_lines() {
    let many: Vec<(&str, &str)> = std::iter::once(("host", "a"))
        .chain(std::iter::repeat_n(("x", "1"), LIMITS.max_headers))
        .collect();
    assert_eq!(check(true, &many).unwrap_err(), Refusal::HeadTooLarge);
    let big = "v".repeat(LIMITS.max_bytes);
    assert_eq!(
        check(true, &[("host", "a"), ("x-big", &big)]).unwrap_err(),
        Refusal::HeadTooLarge
    );
}

#[test]
fn hop_by_hop_headers_are_known_by_name_in_any_case() {
    for name in [
        "Connection",
        "keep-alive",
        "TE",
        "trailer",
        "Transfer-Encoding",
        "upgrade",
        "Proxy-Connection",
        "proxy-authorization",
    ] {
        assert!(is_hop_by_hop(name), "{name}");
    }
    for name in ["content-length", "host", "x-trace", "proxy", "tee"] {
        assert!(!is_hop_by_hop(name), "{name}");
    }
}

#[test]
fn refusals_map_to_their_statuses() {
    assert_eq!(Refusal::BadRequest("x").status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        Refusal::HeadTooLarge.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(Refusal::Timeout.status(), StatusCode::REQUEST_TIMEOUT);
}

#[test]
fn spoofable_names_are_the_edge_s_own_and_framing_headers_with_underscores() {
    for name in [
        "Forwarded",
        "x-real-ip",
        "X_Forwarded_For",
        "x_forwarded_host",
        "X_FORWARDED_PROTO",
        "Content_Length",
        "transfer_encoding",
        "host",
    ] {
        assert_eq!(is_spoofable(name), name != "host", "{name}");
    }
    for name in [
        "x-forwarded-for",
        "x_trace_id",
        "content-length",
        "my_header",
    ] {
        assert!(!is_spoofable(name), "{name}");
    }
}
