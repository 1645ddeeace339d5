//! Strict HTTP/1.1 parsing (RFC 9112) for both ends of the harness: the recording upstream
//! parses what the edge forwards, the raw client parses what the edge answers.
//!
//! Nothing here is lenient, so that any framing the edge changes shows up: lines end in CRLF
//! (a bare CR or LF is an error), a request line has exactly one space between its parts and
//! says `HTTP/1.1`, headers are parsed by httparse with its strict defaults (no obs-fold, no
//! space before the colon, no NUL), a body is framed by exactly one `Content-Length` of
//! digits or by one `Transfer-Encoding: chunked` (never both, never any other coding), and
//! a request has exactly one `Host`.

/// The largest head either end accepts before calling it an error.
const MAX_HEAD: usize = 1024 * 1024;
/// The most headers either end accepts.
const MAX_HEADERS: usize = 512;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (answers only).
    UntilClose,
}

/// A header as received: its name as written, its value's bytes.
pub type Header = (String, Vec<u8>);

/// A request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<Header>,
    /// Bytes of the head, final CRLF included.
    pub len: usize,
}

/// A whole request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<Header>,
    /// The body's content (chunked: decoded).
    pub body: Vec<u8>,
    pub framing: Framing,
    /// The chunk extensions seen, in order (chunked bodies).
    pub extensions: Vec<String>,
    /// Bytes of the whole request on the wire.
    pub len: usize,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The values of header `name`.
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        values(&self.headers, name)
    }
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        values(&self.headers, name)
    }
}

impl Request {
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        values(&self.headers, name)
    }
}

fn values<'a>(headers: &'a [Header], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// `Ok(None)`: more bytes are needed.
pub type Parsed<T> = Result<Option<T>, String>;

/// Where the head at the start of `buf` ends (after its blank line), checking every line
/// ending on the way.
fn head_end(buf: &[u8]) -> Parsed<usize> {
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => {
                return Err(format!("bare LF at byte {i} of the head"));
            }
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Err(format!("bare CR at byte {i} of the head"));
            }
            b'\n' if i >= 3 && buf[i - 3..=i] == *b"\r\n\r\n" => return Ok(Some(i + 1)),
            // A head made of nothing but its blank line.
            b'\n' if i == 1 => return Err("an empty line where a start line belongs".into()),
            _ => {}
        }
    }
    if buf.len() > MAX_HEAD {
        return Err(format!("no end of head within {MAX_HEAD} bytes"));
    }
    Ok(None)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses the header lines of `section` (each ending in CRLF, then the blank line).
fn headers(section: &[u8]) -> Result<Vec<Header>, String> {
    let mut storage = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(section, &mut storage) {
        Ok(httparse::Status::Complete((len, parsed))) if len == section.len() => Ok(parsed
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect()),
        Ok(httparse::Status::Complete((len, _))) => Err(format!(
            "the header section ends after {len} of its {} bytes",
            section.len()
        )),
        Ok(httparse::Status::Partial) => Err("the header section is incomplete".into()),
        Err(e) => Err(format!("invalid header section: {e}")),
    }
}

/// The head of the request at the start of `buf`.
pub fn request_head(buf: &[u8]) -> Parsed<RequestHead> {
    let Some(len) = head_end(buf)? else {
        return Ok(None);
    };
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a complete head has a line");
    let line = &buf[..line_end];
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "the request line is not `method SP target SP version`: {}",
            escape(line)
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(format!("invalid method: {}", escape(method)));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(format!("invalid target: {}", escape(target)));
    }
    if version != b"HTTP/1.1" {
        return Err(format!("version is not HTTP/1.1: {}", escape(version)));
    }
    let headers = headers(&buf[line_end + 2..len])?;
    Ok(Some(RequestHead {
        method: String::from_utf8(method.to_vec()).expect("tchars are ASCII"),
        target: String::from_utf8(target.to_vec()).expect("checked ASCII"),
        headers,
        len,
    }))
}

/// How a request's body is delimited: strictly, or an error.
fn request_framing(head: &RequestHead) -> Result<Framing, String> {
    let hosts = head.header("host");
    if hosts.len() != 1 {
        return Err(format!("{} Host headers, not one", hosts.len()));
    }
    let te = head.header("transfer-encoding");
    let cl = head.header("content-length");
    if te.len() > 1 {
        return Err("several Transfer-Encoding headers".into());
    }
    if let Some(te) = te.first() {
        if !cl.is_empty() {
            return Err("Content-Length with Transfer-Encoding".into());
        }
        if !te.eq_ignore_ascii_case(b"chunked") {
            return Err(format!("Transfer-Encoding is not chunked: {}", escape(te)));
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(Framing::None),
        [value] => content_length(value).map(Framing::Length),
        _ => Err("several Content-Length headers".into()),
    }
}

fn content_length(value: &[u8]) -> Result<u64, String> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(format!("invalid Content-Length: {}", escape(value)));
    }
    Ok(std::str::from_utf8(value)
        .expect("digits")
        .parse()
        .expect("at most 18 digits"))
}

/// The whole request at the start of `buf`.
pub fn request(buf: &[u8]) -> Parsed<Request> {
    let Some(head) = request_head(buf)? else {
        return Ok(None);
    };
    let framing = request_framing(&head)?;
    let rest = &buf[head.len..];
    let (body, extensions, body_len) = match framing {
        Framing::None => (Vec::new(), Vec::new(), 0),
        Framing::Length(n) => {
            let n = usize::try_from(n).map_err(|_| "Content-Length too large".to_string())?;
            if rest.len() < n {
                return Ok(None);
            }
            (rest[..n].to_vec(), Vec::new(), n)
        }
        Framing::Chunked => match chunked(rest)? {
            None => return Ok(None),
            Some(c) => (c.body, c.extensions, c.len),
        },
        Framing::UntilClose => unreachable!("requests are never delimited by a close"),
    };
    Ok(Some(Request {
        method: head.method,
        target: head.target,
        headers: head.headers,
        body,
        framing,
        extensions,
        len: head.len + body_len,
    }))
}

/// A decoded chunked body.
pub struct Chunked {
    pub body: Vec<u8>,
    pub extensions: Vec<String>,
    /// Bytes on the wire, trailers and final CRLF included.
    pub len: usize,
}

/// The line at `buf[at..]` up to its CRLF: `Ok(None)` until the CRLF arrives; an error on a
/// bare CR or LF or a control byte.
fn line(buf: &[u8], at: usize) -> Parsed<(usize, usize)> {
    for i in at..buf.len() {
        match buf[i] {
            b'\r' if i + 1 == buf.len() => return Ok(None),
            b'\r' if buf[i + 1] == b'\n' => return Ok(Some((i, i + 2))),
            b'\r' => return Err(format!("bare CR in chunk framing at byte {i}")),
            b'\n' => return Err(format!("bare LF in chunk framing at byte {i}")),
            b'\t' => {}
            b if b < 0x20 || b == 0x7f => {
                return Err(format!(
                    "control byte {b:#04x} in chunk framing at byte {i}"
                ));
            }
            _ => {}
        }
        if i - at > 4096 {
            return Err("a chunk line longer than 4 KiB".into());
        }
    }
    Ok(None)
}

/// Decodes the chunked body at the start of `buf` (RFC 9112 §7.1, strictly).
pub fn chunked(buf: &[u8]) -> Parsed<Chunked> {
    let mut at = 0;
    let mut body = Vec::new();
    let mut extensions = Vec::new();
    loop {
        let Some((end, next)) = line(buf, at)? else {
            return Ok(None);
        };
        let text = &buf[at..end];
        let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return Err(format!("invalid chunk size line: {}", escape(text)));
        }
        let size = u64::from_str_radix(std::str::from_utf8(&text[..digits]).expect("hex"), 16)
            .expect("at most 16 hex digits");
        let ext = &text[digits..];
        if !ext.is_empty() {
            let trimmed = ext.trim_ascii_start();
            if !trimmed.starts_with(b";") || trimmed[1..].trim_ascii().is_empty() {
                return Err(format!("invalid chunk extension: {}", escape(ext)));
            }
            extensions.push(String::from_utf8_lossy(ext).into_owned());
        }
        at = next;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let Some((end, next)) = line(buf, at)? else {
                    return Ok(None);
                };
                if end == at {
                    return Ok(Some(Chunked {
                        body,
                        extensions,
                        len: next,
                    }));
                }
                let field = &buf[at..end];
                let name_len = field.iter().take_while(|&&b| is_tchar(b)).count();
                if name_len == 0 || field.get(name_len) != Some(&b':') {
                    return Err(format!("invalid trailer line: {}", escape(field)));
                }
                at = next;
            }
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large".to_string())?;
        if buf.len() < at + size + 2 {
            if buf.len() > at + size && buf[at + size] != b'\r' {
                return Err(format!(
                    "chunk data not followed by CRLF at byte {}",
                    at + size
                ));
            }
            return Ok(None);
        }
        if buf[at + size..at + size + 2] != *b"\r\n" {
            return Err(format!(
                "chunk data not followed by CRLF: {}",
                escape(&buf[at + size..at + size + 2])
            ));
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// The answer at the start of `buf`; `eof`: the connection has closed (which ends an
/// answer delimited by the close). `head_request`: it answers a HEAD (no body).
pub fn response(buf: &[u8], eof: bool, head_request: bool) -> Parsed<(Response, usize)> {
    let Some(len) = head_end(buf)? else {
        return Ok(None);
    };
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a complete head has a line");
    let line = &buf[..line_end];
    let Some(rest) = line.strip_prefix(b"HTTP/1.1 ") else {
        return Err(format!("invalid status line: {}", escape(line)));
    };
    if rest.len() < 4
        || !rest[..3].iter().all(u8::is_ascii_digit)
        || rest[3] != b' '
        || rest[4..]
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!("invalid status line: {}", escape(line)));
    }
    let status: u16 = std::str::from_utf8(&rest[..3])
        .expect("digits")
        .parse()
        .expect("three digits");
    let headers = headers(&buf[line_end + 2..len])?;
    let te = values(&headers, "transfer-encoding");
    let cl = values(&headers, "content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err("an answer with Content-Length and Transfer-Encoding".into());
    }
    if cl.len() > 1 {
        return Err("an answer with several Content-Length headers".into());
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 || head_request
    {
        Framing::None
    } else if !te.is_empty() {
        let last = te
            .last()
            .and_then(|v| v.rsplit(|&b| b == b',').next())
            .unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(value) = cl.first() {
        Framing::Length(content_length(value)?)
    } else {
        Framing::UntilClose
    };
    let rest = &buf[len..];
    let (body, body_len) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(n) => {
            let n = usize::try_from(n).map_err(|_| "Content-Length too large".to_string())?;
            if rest.len() < n {
                return Ok(None);
            }
            (rest[..n].to_vec(), n)
        }
        Framing::Chunked => match chunked(rest)? {
            None => return Ok(None),
            Some(c) => (c.body, c.len),
        },
        Framing::UntilClose if eof => (rest.to_vec(), rest.len()),
        Framing::UntilClose => return Ok(None),
    };
    Ok(Some((
        Response {
            status,
            headers,
            body,
        },
        len + body_len,
    )))
}

/// Bytes as readable text for messages: printable ASCII as is, the rest escaped, cut long.
pub fn escape(bytes: &[u8]) -> String {
    const SHOWN: usize = 300;
    let mut text: String = bytes
        .iter()
        .take(SHOWN)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > SHOWN {
        text.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    text
}
