//! The relay's HTTP/1.1 codec: pure functions from bytes to bytes, no I/O.
//!
//! [`parse_request`] reads a client's request and, when the relay takes it, writes the
//! slot's copy (hop-by-hop headers out, `X-Forwarded-*` in, the body as sent); it holds the
//! head to [`crate::framing`]'s rules, the same ones the general path applies.
//! [`parse_answer`] reads the slot's answer head, decides how its body ends (RFC 9112 §6.3)
//! and writes the client's head (or, through [`AnswerSink`], an HTTP/2 answer's parts). [`ChunkedScanner`] follows a chunked body passed through
//! unchanged, to find where it ends. [`write_message`] writes an answer of the edge's own.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::answer::{self, Failure, RequestId, Unavailable};
use crate::connector;
use crate::framing::{
    self, BodyFraming, HeadLimits, MAX_ANSWER_HEAD, MAX_HEADERS_LIMIT, Refusal, RequestCheck,
    is_hop_by_hop,
};
use crate::split::SLOT_HEADER;

/// Request bodies up to this size are read whole before the request is sent; a larger one
/// streams through the general path.
pub(crate) const BUFFERED_BODY: u64 = 64 * 1024;
/// Headers per answer head.
const MAX_ANSWER_HEADERS: usize = 100;
/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What the slot's head says about the client, and the client's limits.
pub(crate) struct Client<'a> {
    pub(crate) https: bool,
    /// The client's address, as `X-Forwarded-For` gets it.
    pub(crate) ip: &'a [u8],
    pub(crate) max_body: Option<u64>,
    pub(crate) limits: HeadLimits,
}

/// The request the relay is about to forward: where its parts are in the client's bytes.
#[derive(Debug)]
pub(crate) struct Head {
    /// Head and body.
    pub(crate) len: usize,
    pub(crate) host: Range<usize>,
    pub(crate) path: Range<usize>,
    /// `Cookie` and `X-Shipit-Slot`, the headers the split looks at, when present.
    pub(crate) split: HeaderMap,
    pub(crate) idempotent: bool,
    pub(crate) head_method: bool,
    /// The client asked to close after this request.
    pub(crate) close: bool,
}

#[derive(Debug)]
pub(crate) enum Parsed {
    Incomplete,
    /// For the general path.
    Fallback,
    /// The client's error: answer it and close.
    Refuse(Refusal),
    Ready(Head),
}

/// Parses the request at the start of `buf` and, when the relay takes it, writes its
/// upstream head and body into `out`.
pub(crate) fn parse_request(buf: &[u8], out: &mut Vec<u8>, client: &Client<'_>) -> Parsed {
    let preface = buf.len().min(H2_PREFACE.len());
    if buf[..preface] == H2_PREFACE[..preface] {
        return if preface == H2_PREFACE.len() {
            Parsed::Fallback
        } else {
            Parsed::Incomplete
        };
    }
    let limits = client.limits;
    // One slot more than allowed, so that one header too many is seen as such.
    let mut storage =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_LIMIT + 1];
    let slots = &mut storage[..limits.max_headers.min(MAX_HEADERS_LIMIT) + 1];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_bytes => {
            return Parsed::Refuse(Refusal::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(Refusal::HeadTooLarge),
        // As hyper answers it: a version other than HTTP/1.x is a malformed request line.
        Err(httparse::Error::Version) => {
            return Parsed::Refuse(Refusal::BadRequest(
                "the request line's version is not HTTP/1.x",
            ));
        }
        Err(_) => return Parsed::Refuse(Refusal::BadRequest("the request head is malformed")),
    };
    if head_len > limits.max_bytes {
        return Parsed::Refuse(Refusal::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(Refusal::BadRequest("the request line is incomplete"));
    };
    if version != 1 || !target.starts_with('/') || method == "CONNECT" {
        // HTTP/1.0, absolute-form, `*` and CONNECT: the general path's.
        return Parsed::Fallback;
    }
    let line_len = method.len() + target.len() + 10;
    let mut check = RequestCheck::new(true, line_len, limits);
    let mut split = HeaderMap::new();
    for h in req.headers.iter() {
        if let Err(refusal) = check.header(h.name, h.value) {
            return Parsed::Refuse(refusal);
        }
        match h.name.len() {
            6 if h.name.eq_ignore_ascii_case("cookie") => {
                if let Ok(value) = HeaderValue::from_bytes(h.value) {
                    split.append(header::COOKIE, value);
                }
            }
            13 if h.name.eq_ignore_ascii_case("x-shipit-slot") => {
                if let Ok(value) = HeaderValue::from_bytes(h.value) {
                    split.insert(SLOT_HEADER, value);
                }
            }
            _ => {}
        }
    }
    let checked = match check.finish() {
        Ok(checked) => checked,
        Err(refusal) => return Parsed::Refuse(refusal),
    };
    if checked.expect || checked.upgrade {
        return Parsed::Fallback;
    }
    let length = match checked.body {
        BodyFraming::Length(length) => length,
        // Streamed by the general path, which holds it to the same framing.
        BodyFraming::Chunked => return Parsed::Fallback,
    };
    if length > BUFFERED_BODY || client.max_body.is_some_and(|max| length > max) {
        // Streamed, or refused with 413, by the general path.
        return Parsed::Fallback;
    }
    let len = head_len + length as usize;
    if buf.len() < len {
        return Parsed::Incomplete;
    }

    let has_connection = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection"));
    out.clear();
    out.reserve(len + 160);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut prior_for: [&[u8]; 4] = [&[]; 4];
    let mut priors = 0;
    let mut length_written = false;
    for h in req.headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name)
            || framing::is_spoofable(name)
            || has_connection && named_by_connection(req.headers, name)
        {
            continue;
        }
        match name.len() {
            14 if name.eq_ignore_ascii_case("content-length") => {
                if length_written {
                    continue;
                }
                length_written = true;
            }
            15 if name.eq_ignore_ascii_case("x-forwarded-for") => {
                if priors == prior_for.len() {
                    return Parsed::Fallback;
                }
                prior_for[priors] = h.value;
                priors += 1;
                continue;
            }
            16 if name.eq_ignore_ascii_case("x-forwarded-host") => continue,
            17 if name.eq_ignore_ascii_case("x-forwarded-proto") => continue,
            _ => {}
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-host: ");
    out.extend_from_slice(checked.host);
    out.extend_from_slice(if client.https {
        b"\r\nx-forwarded-proto: https\r\nx-forwarded-for: "
    } else {
        b"\r\nx-forwarded-proto: http\r\nx-forwarded-for: "
    });
    for prior in &prior_for[..priors] {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.ip);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&buf[head_len..len]);

    Parsed::Ready(Head {
        len,
        host: offset(buf, checked.host),
        path: offset(buf, target.split('?').next().unwrap_or(target).as_bytes()),
        split,
        idempotent: Method::from_bytes(method.as_bytes())
            .is_ok_and(|m| connector::is_idempotent(&m)),
        head_method: method == "HEAD",
        close: checked.close,
    })
}

fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// How the slot's answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The answer's head, already rewritten into `out`.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head_len: usize,
    pub(crate) framing: Framing,
    /// The slot's connection may carry another request once this answer is read whole:
    /// it did not ask to close, speaks HTTP/1.1, and framed the answer one way only.
    pub(crate) reusable: bool,
    /// The client connection closes after this answer.
    pub(crate) close: bool,
}

/// What the answer's head gets besides the slot's headers.
#[derive(Debug)]
pub(crate) struct Extra {
    pub(crate) set_cookie: Option<HeaderValue>,
    pub(crate) pinned: Option<&'static str>,
    pub(crate) close: bool,
    pub(crate) head_method: bool,
}

#[derive(Debug)]
pub(crate) enum Parsed1 {
    /// A 1xx answer (not 101) of this many bytes, to pass on as it is.
    Interim(usize),
    Final(Answer),
}

/// Where an answer's head goes once [`parse_answer`] has read and checked it: the client's
/// HTTP/1.1 head (a `Vec<u8>`, for the relay), or the parts of an HTTP/2 answer
/// ([`crate::upstream`]). Either gets the same headers, chosen by the same rules.
pub(crate) trait AnswerSink {
    /// Whether `Transfer-Encoding` is passed on with a chunked body or one that ends with
    /// its connection (HTTP/1.1); HTTP/2 frames every body itself and takes none.
    const PASSES_TRANSFER_ENCODING: bool;
    /// The status line; `size_hint`: the slot's head was about this long.
    fn begin(&mut self, code: StatusCode, reason: &str, size_hint: usize);
    fn header(&mut self, name: &str, value: &[u8]) -> Result<(), Failure>;
    /// After the slot's headers: the edge's own, and the end of the head.
    fn end(&mut self, extra: &Extra, close: bool);
}

/// The client's HTTP/1.1 head, written as it goes.
impl AnswerSink for Vec<u8> {
    const PASSES_TRANSFER_ENCODING: bool = true;

    fn begin(&mut self, code: StatusCode, reason: &str, size_hint: usize) {
        self.clear();
        self.reserve(size_hint + 128);
        self.extend_from_slice(b"HTTP/1.1 ");
        self.extend_from_slice(code.as_str().as_bytes());
        self.push(b' ');
        self.extend_from_slice(reason.as_bytes());
        self.extend_from_slice(b"\r\n");
    }

    fn header(&mut self, name: &str, value: &[u8]) -> Result<(), Failure> {
        self.extend_from_slice(name.as_bytes());
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn end(&mut self, extra: &Extra, close: bool) {
        if let Some(cookie) = &extra.set_cookie {
            self.extend_from_slice(b"set-cookie: ");
            self.extend_from_slice(cookie.as_bytes());
            self.extend_from_slice(b"\r\n");
        }
        if let Some(slot) = extra.pinned {
            self.extend_from_slice(b"x-shipit-slot: ");
            self.extend_from_slice(slot.as_bytes());
            self.extend_from_slice(b"\r\n");
        }
        if close {
            self.extend_from_slice(b"connection: close\r\n");
        }
        self.extend_from_slice(b"\r\n");
    }
}

/// Parses the answer's head at the start of `buf` and writes the client's head into `out`.
pub(crate) fn parse_answer<W: AnswerSink>(
    buf: &[u8],
    out: &mut W,
    extra: &Extra,
    closing: bool,
) -> Result<Option<Parsed1>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_ANSWER_HEAD => {
            return Err(too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Failure::Broken(format!(
                "its answer is not valid HTTP/1.1 ({e})"
            )));
        }
    };
    if head_len > MAX_ANSWER_HEAD {
        return Err(too_large());
    }
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err(Failure::Broken("its answer has no status".into()));
    };
    if status == 101 {
        return Err(Failure::UnaskedUpgrade);
    }
    if (100..200).contains(&status) {
        return Ok(Some(Parsed1::Interim(head_len)));
    }
    let mut upstream_close = version == 0;
    let mut length: Option<u64> = None;
    // The last Transfer-Encoding line's last coding: whether it is `chunked`.
    let mut chunked = None;
    let mut has_connection = false;
    for h in res.headers.iter() {
        let name = h.name;
        match name.len() {
            10 if name.eq_ignore_ascii_case("connection") => {
                has_connection = true;
                if framing::tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close")) {
                    upstream_close = true;
                }
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                match (framing::parse_length(h.value), length) {
                    (Some(value), None) => length = Some(value),
                    (Some(value), Some(seen)) if value == seen => {}
                    _ => {
                        return Err(Failure::Broken(
                            "its answer has an invalid Content-Length".into(),
                        ));
                    }
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                chunked = Some(
                    framing::tokens(h.value)
                        .last()
                        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
                );
            }
            _ => {}
        }
    }
    let bodyless = extra.head_method || status == 204 || status == 304;
    let framing = if bodyless {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    // Both framings at once: Transfer-Encoding wins, and the connection is not trusted
    // with another request.
    let framed_twice = chunked.is_some() && length.is_some();
    // A body-less answer that names a body: the slot may send one anyway (a HEAD handled
    // like a GET), and those bytes must not meet the next request on this connection.
    let names_a_body = chunked.is_some() || length.is_some_and(|l| l > 0);
    let unsafe_to_reuse = upstream_close || framed_twice || bodyless && names_a_body;
    let reusable = !unsafe_to_reuse;
    let close = closing || framing == Framing::UntilClose;

    let code = StatusCode::from_u16(status)
        .map_err(|_| Failure::Broken(format!("its answer's status {status} is not valid")))?;
    let reason = res
        .reason
        .filter(|r| !r.is_empty())
        .or_else(|| code.canonical_reason());
    out.begin(code, reason.unwrap_or(""), buf.len().max(head_len));
    let mut length_written = false;
    for h in res.headers.iter() {
        let name = h.name;
        // The framing headers are decided here, never by what `Connection` names.
        if name.eq_ignore_ascii_case("content-length") {
            let keep = matches!(framing, Framing::Length(_) | Framing::Empty)
                && chunked.is_none()
                && !length_written;
            if !keep {
                continue;
            }
            length_written = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !W::PASSES_TRANSFER_ENCODING
                || !matches!(framing, Framing::Chunked | Framing::UntilClose)
            {
                continue;
            }
        } else if is_hop_by_hop(name) || has_connection && named_by_connection(res.headers, name) {
            continue;
        }
        out.header(name, h.value)?;
    }
    out.end(extra, close);
    Ok(Some(Parsed1::Final(Answer {
        status,
        head_len,
        framing,
        reusable,
        close,
    })))
}

/// Whether a `Connection` header among `headers` names `name`.
fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| framing::tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

fn too_large() -> Failure {
    Failure::Broken(format!(
        "its answer's head is larger than {MAX_ANSWER_HEAD} bytes"
    ))
}

/// Writes an answer from the edge: the generic text of [`answer::body`], with its length;
/// to a HEAD request, the same head without the body (RFC 9110 §9.3.2), so that a kept
/// connection's next answer is not read from it.
pub(crate) fn write_message(
    out: &mut Vec<u8>,
    status: StatusCode,
    id: RequestId,
    head_method: bool,
    close: bool,
) {
    let text = answer::body(status, id);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_method {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Writes the edge's 503 for a request of a closed route ([`Unavailable`]); to a HEAD,
/// without the body, whose length the head names all the same.
pub(crate) fn write_unavailable(
    out: &mut Vec<u8>,
    unavailable: &Unavailable,
    head_method: bool,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: ");
    out.extend_from_slice(unavailable.content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(unavailable.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nretry-after: ");
    out.extend_from_slice(unavailable.retry_after.as_bytes());
    out.extend_from_slice(b"\r\ncache-control: no-store");
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_method {
        out.extend_from_slice(&unavailable.body);
    }
}

/// Follows the framing of a chunked body passed through unchanged, to find where it ends.
#[derive(Debug, Default)]
pub(crate) struct ChunkedScanner {
    state: Chunk,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk size: its value and how many digits so far.
    #[default]
    SizeStart,
    Size(u64),
    Extension(u64),
    SizeEnd(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedScanner {
    /// Feeds the next bytes of the body. `Ok(Some(n))`: the body ends after the first `n`
    /// of them. `Err`: the framing is broken.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        self.feed_data(bytes, |_| {})
    }

    /// [`feed`](Self::feed), handing each run of the body's data (without the framing) to
    /// `data`: how an HTTP/2 answer takes a chunked body apart.
    pub(crate) fn feed_data(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                Chunk::SizeStart => Chunk::Size(hex(b).ok_or(())?),
                Chunk::Size(size) => match b {
                    b'\r' => Chunk::SizeEnd(size),
                    b';' | b' ' | b'\t' => Chunk::Extension(size),
                    _ => {
                        let digit = hex(b).ok_or(())?;
                        Chunk::Size(
                            size.checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .ok_or(())?,
                        )
                    }
                },
                Chunk::Extension(size) => match b {
                    b'\r' => Chunk::SizeEnd(size),
                    b'\n' => return Err(()),
                    _ => Chunk::Extension(size),
                },
                Chunk::SizeEnd(size) => match (b, size) {
                    (b'\n', 0) => Chunk::TrailerStart,
                    (b'\n', size) => Chunk::Data(size),
                    _ => return Err(()),
                },
                Chunk::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    data(&bytes[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::SizeStart,
                Chunk::DataCr | Chunk::DataLf => return Err(()),
                Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
                Chunk::TrailerStart | Chunk::Trailer if b != b'\r' => Chunk::Trailer,
                Chunk::TrailerStart | Chunk::Trailer => Chunk::TrailerLf,
                Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => Chunk::Done,
                Chunk::TrailerLf | Chunk::EndLf => return Err(()),
                Chunk::Done => return Ok(Some(i)),
            };
            i += 1;
            if self.state == Chunk::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests;
