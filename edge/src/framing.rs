//! The HTTP/1.1 framing rules the edge holds every request to, on both paths.
//!
//! A proxy that reads a message's framing differently from the slot behind it lets a client
//! smuggle a second request inside the first (RFC 9112 §11.2). So both paths — the relay
//! ([`crate::relay`]) and hyper ([`crate::proxy`]) — run each request head through the one
//! [`RequestCheck`] here, and refuse what could be read two ways, before anything is sent:
//!
//! - `Connection` may name hop-by-hop headers only: naming `Content-Length`,
//!   `Transfer-Encoding`, `Host` (framing) or `Cookie`, `X-Shipit-Slot` (routing) is a 400,
//!   never a request forwarded with its framing or routing changed;
//! - exactly one `Host`, a valid authority (400 when missing or repeated);
//! - `Content-Length` as plain digits, and copies only of one value (400 otherwise; equal
//!   copies are read as one, as hyper reads them, and forwarded as one);
//! - `Transfer-Encoding` only as exactly `chunked` on HTTP/1.1 (400 otherwise). With a
//!   `Content-Length` beside it, `Transfer-Encoding` wins, the length is dropped and the
//!   connection closes after the answer (RFC 9112 §6.1);
//! - the head's size and header count within the edge's limits (431 otherwise).
//!
//! Whatever a check refuses, the connection closes after the answer: the edge cannot know
//! where the refused request ends.
//!
//! [`is_hop_by_hop`] is the one rule for the headers that describe a single connection,
//! used by both paths in both directions. The limits on a slot's answer
//! ([`MAX_INTERIM_ANSWERS`], [`MAX_ANSWER_HEAD`]) are here too, for the same reason: both
//! paths must read an answer the same way.

use http::StatusCode;

/// The largest request head the edge reads by default (then 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most header lines a request may have by default (then 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The most header lines any setting may allow: the relay parses into an array this long.
pub const MAX_HEADERS_LIMIT: usize = 1000;
/// Interim (1xx) answers passed on for one request; one more is a broken slot (502).
pub const MAX_INTERIM_ANSWERS: usize = 10;
/// The largest answer head read from a slot, on either path; a larger one is a broken slot
/// (502).
pub(crate) const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// Why a request is refused before it reaches a slot: the client's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400, with the reason for the log.
    BadRequest(&'static str),
    /// 431: the head or its header count is over the limit.
    HeadTooLarge,
    /// 408: the request (head or body) did not arrive in time.
    Timeout,
    /// 405: a method the edge does not forward (CONNECT).
    MethodNotAllowed,
}

impl Refusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// What was wrong, for the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest(reason) => reason,
            Refusal::HeadTooLarge => "the request head is over the size or header-count limit",
            Refusal::Timeout => "the request did not arrive within its timeout",
            Refusal::MethodNotAllowed => "the edge does not forward CONNECT",
        }
    }
}

/// The head limits a request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_headers: usize,
}

/// How a request's body is framed, once its head passed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// `Content-Length` (none: 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a request head says, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked<'a> {
    pub(crate) host: &'a [u8],
    pub(crate) body: BodyFraming,
    /// The connection closes after the answer: the client asked, or its framing was
    /// ambiguous enough that the edge will not read another request after it.
    pub(crate) close: bool,
    pub(crate) expect: bool,
    pub(crate) upgrade: bool,
}

/// The checks of one request head, fed one header at a time (so each path can walk its
/// own representation of the head once).
#[derive(Debug)]
pub(crate) struct RequestCheck<'a> {
    http11: bool,
    limits: HeadLimits,
    bytes: usize,
    count: usize,
    host: Option<&'a [u8]>,
    length: Option<u64>,
    /// `Transfer-Encoding` seen: whether every value so far is exactly one `chunked`.
    coding: Option<bool>,
    close: bool,
    expect: bool,
    upgrade: bool,
}

impl<'a> RequestCheck<'a> {
    /// Starts the check of a head whose request line is `line_len` bytes long.
    pub(crate) fn new(http11: bool, line_len: usize, limits: HeadLimits) -> Self {
        RequestCheck {
            http11,
            limits,
            bytes: line_len + 2,
            count: 0,
            host: None,
            length: None,
            coding: None,
            close: false,
            expect: false,
            upgrade: false,
        }
    }

    /// Checks one header line.
    pub(crate) fn header(&mut self, name: &str, value: &'a [u8]) -> Result<(), Refusal> {
        self.count += 1;
        self.bytes += name.len() + value.len() + 4;
        if self.count > self.limits.max_headers || self.bytes > self.limits.max_bytes {
            return Err(Refusal::HeadTooLarge);
        }
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if self.host.is_some() {
                    return Err(Refusal::BadRequest("the request has several Host headers"));
                }
                self.host = Some(value);
            }
            6 if name.eq_ignore_ascii_case("expect") => self.expect = true,
            7 if name.eq_ignore_ascii_case("upgrade") => self.upgrade = true,
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if decides_framing_or_routing(token) {
                        return Err(Refusal::BadRequest(
                            "Connection names a header that frames or routes the request",
                        ));
                    }
                }
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let length = parse_length(value).ok_or(Refusal::BadRequest(
                    "the request's Content-Length is invalid",
                ))?;
                // Equal copies mean one length (RFC 9110 §8.6), as hyper reads them; the
                // relay forwards one of them.
                if self.length.is_some_and(|seen| seen != length) {
                    return Err(Refusal::BadRequest(
                        "the request has several different Content-Length headers",
                    ));
                }
                self.length = Some(length);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                if !self.http11 {
                    return Err(Refusal::BadRequest(
                        "an HTTP/1.0 request has a Transfer-Encoding",
                    ));
                }
                let only_chunked = self.coding.is_none() && {
                    let mut all = tokens(value);
                    all.next()
                        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
                        && all.next().is_none()
                };
                self.coding = Some(only_chunked);
            }
            _ => {}
        }
        Ok(())
    }

    /// The checked head, or why it is refused.
    pub(crate) fn finish(self) -> Result<Checked<'a>, Refusal> {
        let host = self
            .host
            .ok_or(Refusal::BadRequest("the request has no Host header"))?;
        if !valid_authority(host) {
            return Err(Refusal::BadRequest(
                "the request's Host is not a valid authority",
            ));
        }
        let (body, close) = match (self.coding, self.length) {
            (Some(false), _) => {
                return Err(Refusal::BadRequest(
                    "the request's Transfer-Encoding is not exactly chunked",
                ));
            }
            // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length, and the
            // connection is not used again.
            (Some(true), Some(_)) => (BodyFraming::Chunked, true),
            (Some(true), None) => (BodyFraming::Chunked, self.close),
            (None, length) => (BodyFraming::Length(length.unwrap_or(0)), self.close),
        };
        Ok(Checked {
            host,
            body,
            close: close || !self.http11,
            expect: self.expect,
            upgrade: self.upgrade,
        })
    }
}

/// Whether `Connection` may not name this header: removing it would change how the
/// request is framed or routed.
fn decides_framing_or_routing(token: &[u8]) -> bool {
    [
        &b"content-length"[..],
        b"transfer-encoding",
        b"host",
        b"cookie",
        b"x-shipit-slot",
    ]
    .iter()
    .any(|name| token.eq_ignore_ascii_case(name))
}

/// The comma-separated tokens of a header value, without their optional white space;
/// empty list elements are skipped (RFC 9110 §5.6.1).
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: one decimal number, nothing else.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether `host` is a `Host` value the edge routes and passes on: `host[:port]`, with
/// the characters of RFC 3986's `reg-name`, an IPv6 literal in brackets, and a numeric port.
pub(crate) fn valid_authority(host: &[u8]) -> bool {
    if host.is_empty() {
        return false;
    }
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(colon) if !host.starts_with(b"[") || host[..colon].ends_with(b"]") => {
            (&host[..colon], Some(&host[colon + 1..]))
        }
        _ => (host, None),
    };
    if port.is_some_and(|p| p.len() > 5 || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    if let Some(literal) = name.strip_prefix(b"[") {
        let Some(inner) = literal.strip_suffix(b"]") else {
            return false;
        };
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !name.is_empty()
        && name.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b';'
                        | b'='
                        | b'%'
                )
        })
}

/// Whether a header describes one connection only (RFC 9110 §7.6.1), or is a `Proxy-*`
/// one: never passed on, in either direction, on either path.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    let listed = match name.len() {
        2 => name.eq_ignore_ascii_case("te"),
        7 => name.eq_ignore_ascii_case("trailer") || name.eq_ignore_ascii_case("upgrade"),
        10 => name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive"),
        14 => name.eq_ignore_ascii_case("http2-settings"),
        16 => name.eq_ignore_ascii_case("proxy-connection"),
        17 => name.eq_ignore_ascii_case("transfer-encoding"),
        _ => false,
    };
    listed || (name.len() > 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"proxy-"))
}

/// Whether a client's header is never passed on because a slot could take it for one the
/// edge sets or one that frames the request: `Forwarded` and `X-Real-IP` (the edge sets
/// `X-Forwarded-*` instead, and a slot reading these would trust the client), and any
/// name with `_` that reads as such a header with `-` (CGI-style servers map both to the
/// same variable).
pub(crate) fn is_spoofable(name: &str) -> bool {
    const SPOOFABLE: [&str; 9] = [
        "forwarded",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
    ];
    let underscored = name.contains('_');
    if !underscored {
        return name.eq_ignore_ascii_case("forwarded") || name.eq_ignore_ascii_case("x-real-ip");
    }
    SPOOFABLE.iter().any(|known| {
        known.len() == name.len()
            && known
                .bytes()
                .zip(name.bytes())
                .all(|(k, n)| k == n.to_ascii_lowercase() || (k == b'-' && n == b'_'))
    })
}

#[cfg(test)]
mod tests;
