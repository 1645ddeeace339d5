//! A raw HTTP/2 client (prior knowledge, h2c) for requests a conforming library refuses to
//! send: connection-specific headers, CR/LF in values, missing or repeated pseudo-headers.
//!
//! It writes frames by hand, with an HPACK encoder that only emits literals without
//! indexing (no Huffman), and reads back just enough to tell what became of stream 1: its
//! `:status`, a `RST_STREAM`, a `GOAWAY` or a close.
//!
//! [`Conn`] holds a connection open for clients that misbehave over time: settings of its
//! own (a zero flow-control window), streams it resets, and a choice of which of the
//! edge's frames it acknowledges (none: a client that never answers a `PING`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// `SETTINGS_INITIAL_WINDOW_SIZE` (RFC 9113 §6.5.2).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// `CANCEL`, the error code of a client's `RST_STREAM` for a request it gave up on.
pub const CANCEL: u32 = 0x8;
/// The stream every request here uses.
const STREAM: u32 = 1;
/// How long to wait for the fate of the stream.
const DEADLINE: Duration = Duration::from_secs(4);

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response head with this status (`None`: not one this decoder reads).
    Answered(Option<u16>),
    /// The stream was reset, with this error code.
    Reset(u32),
    /// The connection was ended with GOAWAY, with this error code.
    GoAway(u32),
    Closed,
    TimedOut,
}

impl Outcome {
    /// Refused: reset, ended, closed, or answered 4xx.
    pub fn refused(&self) -> bool {
        match self {
            Outcome::Answered(status) => status.is_some_and(|s| (400..500).contains(&s)),
            Outcome::Reset(_) | Outcome::GoAway(_) | Outcome::Closed => true,
            Outcome::TimedOut => false,
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits set to `first`.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | u8::try_from(value).expect("fits the prefix"));
        return;
    }
    out.push(first | u8::try_from(max).expect("a prefix fits a byte"));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).expect("7 bits") | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).expect("7 bits"));
}

/// A header block of literals without indexing, with new names, as given (no checks).
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// Sends one request on stream 1 of a new h2c connection and tells what became of it.
pub async fn request(addr: SocketAddr, fields: &[(&[u8], &[u8])], data: Option<&[u8]>) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Outcome::Closed;
    };
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let flags = END_HEADERS | if data.is_none() { END_STREAM } else { 0 };
    out.extend(frame(HEADERS, flags, STREAM, &header_block(fields)));
    if let Some(data) = data {
        out.extend(frame(DATA, END_STREAM, STREAM, data));
    }
    if stream.write_all(&out).await.is_err() {
        return Outcome::Closed;
    }
    read_outcome(&mut stream).await
}

async fn read_outcome(stream: &mut TcpStream) -> Outcome {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            let code = |at: usize| {
                payload
                    .get(at..at + 4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            match kind {
                HEADERS if id == STREAM => return Outcome::Answered(status(&payload, flags)),
                RST_STREAM if id == STREAM => return Outcome::Reset(code(0)),
                GOAWAY => return Outcome::GoAway(code(4)),
                SETTINGS if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(PING, ACK, 0, &payload)).await;
                }
                _ => {}
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Outcome::TimedOut,
            Ok(Ok(0) | Err(_)) => return Outcome::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A frame the edge sent.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The `:status` of a `HEADERS` frame, when this decoder reads it.
    pub fn status(&self) -> Option<u16> {
        (self.kind == HEADERS)
            .then(|| status(&self.payload, self.flags))
            .flatten()
    }

    /// A `HEADERS` or `DATA` frame that ends its stream.
    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, HEADERS | DATA) && self.flags & END_STREAM != 0
    }

    /// The error code of a `RST_STREAM` or `GOAWAY`.
    pub fn code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        self.payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// One word for messages.
    pub fn describe(&self) -> String {
        let name = match self.kind {
            DATA => "DATA",
            HEADERS => "HEADERS",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PING => "PING",
            GOAWAY => "GOAWAY",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            _ => "frame",
        };
        match (self.status(), self.code()) {
            (Some(status), _) => format!("{name}({}, :status {status})", self.stream),
            (_, Some(code)) => format!("{name}({}, code {code:#x})", self.stream),
            _ => format!("{name}({})", self.stream),
        }
    }
}

/// What reading brought.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    /// The edge closed (or reset) the connection.
    Closed,
    TimedOut,
}

/// Which of the edge's frames a [`Conn`] acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// None: a client that went quiet after its preface.
    Nothing,
    /// `SETTINGS`, never a `PING`.
    Settings,
    /// `SETTINGS` and `PING`, as a conforming client does.
    All,
}

/// An HTTP/2 connection that stays open, written frame by frame.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    acks: Acks,
    closed: bool,
}

impl Conn {
    /// Opens a connection from `stream`: the preface and a `SETTINGS` frame with
    /// `settings` (identifier, value).
    pub async fn open(
        mut stream: TcpStream,
        settings: &[(u16, u32)],
        acks: Acks,
    ) -> std::io::Result<Conn> {
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &payload));
        stream.write_all(&out).await?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            acks,
            closed: false,
        })
    }

    /// A request head on `stream`; `end`: no body follows.
    pub async fn headers(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
        end: bool,
    ) -> std::io::Result<()> {
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        let bytes = frame(HEADERS, flags, stream, &header_block(fields));
        self.stream.write_all(&bytes).await
    }

    /// Resets `stream` with `code`.
    pub async fn reset(&mut self, stream: u32, code: u32) -> std::io::Result<()> {
        let bytes = frame(RST_STREAM, 0, stream, &code.to_be_bytes());
        self.stream.write_all(&bytes).await
    }

    /// The next frame, a close, or nothing by `deadline`. `SETTINGS` and `PING` are
    /// acknowledged as [`Acks`] says, and also returned.
    pub async fn next(&mut self, deadline: Instant) -> Event {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let frame = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    self.acknowledge(&frame).await;
                    return Event::Frame(frame);
                }
            }
            if self.closed {
                return Event::Closed;
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Event::TimedOut,
                Ok(Ok(0) | Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads (and keeps) frames until the edge closes the connection or `deadline`
    /// passes: whether it closed, and the frames.
    pub async fn until_closed(&mut self, deadline: Instant) -> (bool, Vec<Frame>) {
        let mut frames = Vec::new();
        loop {
            match self.next(deadline).await {
                Event::Frame(frame) => frames.push(frame),
                Event::Closed => return (true, frames),
                Event::TimedOut => return (false, frames),
            }
        }
    }

    async fn acknowledge(&mut self, frame: &Frame) {
        if frame.flags & ACK != 0 {
            return;
        }
        let ack = match (frame.kind, self.acks) {
            (SETTINGS, Acks::Settings | Acks::All) => frame_ack(SETTINGS, &[]),
            (PING, Acks::All) => frame_ack(PING, &frame.payload),
            _ => return,
        };
        // The edge may have closed: the next read tells.
        let _ = self.stream.write_all(&ack).await;
    }
}

fn frame_ack(kind: u8, payload: &[u8]) -> Vec<u8> {
    frame(kind, ACK, 0, payload)
}

/// Frames as one line, for messages.
pub fn describe(frames: &[Frame]) -> String {
    let all: Vec<String> = frames.iter().map(Frame::describe).collect();
    format!("[{}]", all.join(", "))
}

/// The `:status` of a response's header block, when it comes first (as servers send it)
/// in a form this decoder reads: indexed from the static table, or a literal with the
/// static `:status` name and a plain or Huffman-coded value of digits.
fn status(payload: &[u8], flags: u8) -> Option<u16> {
    let mut block = payload;
    if flags & PADDED != 0 {
        let pad = usize::from(*block.first()?);
        block = block.get(1..block.len().checked_sub(pad)?)?;
    }
    if flags & PRIORITY != 0 {
        block = block.get(5..)?;
    }
    // Dynamic table size updates may come first.
    while block.first()? & 0xe0 == 0x20 {
        let (_, rest) = read_integer(block, 5)?;
        block = rest;
    }
    let first = *block.first()?;
    const STATIC: [(usize, u16); 7] = [
        (8, 200),
        (9, 204),
        (10, 206),
        (11, 304),
        (12, 400),
        (13, 404),
        (14, 500),
    ];
    if first & 0x80 != 0 {
        let (index, _) = read_integer(block, 7)?;
        return STATIC.iter().find(|(i, _)| *i == index).map(|(_, s)| *s);
    }
    let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
    let (name, rest) = read_integer(block, prefix)?;
    if !(8..=14).contains(&name) {
        return None;
    }
    let huffman = rest.first()? & 0x80 != 0;
    let (len, rest) = read_integer(rest, 7)?;
    let value = rest.get(..len)?;
    let digits = if huffman {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    digits.parse().ok()
}

fn read_integer(bytes: &[u8], prefix: u32) -> Option<(usize, &[u8])> {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(*bytes.first()?) & max;
    let mut rest = &bytes[1..];
    if value == max {
        let mut shift = 0;
        loop {
            let b = *rest.first()?;
            rest = &rest[1..];
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    Some((value, rest))
}

/// Decodes a Huffman-coded string of ASCII digits (RFC 7541 Appendix B: `0`–`2` are 5-bit
/// codes 0–2, `3`–`9` are 6-bit codes 0x19–0x1f); the padding is a prefix of EOS (all ones).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| -> Option<u8> {
        bits.get(at..at + n)
            .map(|b| b.iter().fold(0u8, |acc, bit| acc << 1 | bit))
    };
    let mut out = String::new();
    let mut at = 0;
    while bits.len() - at >= 5 {
        if bits[at..].iter().all(|&b| b == 1) {
            break;
        }
        let five = take(at, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
        } else {
            let six = take(at, 6)?;
            if !(0x19..=0x1f).contains(&six) {
                return None;
            }
            out.push(char::from(b'3' + (six - 0x19)));
            at += 6;
        }
    }
    Some(out)
}

#[test]
fn huffman_digits_decode_statuses() {
    // "502": 011011 00000 00010, padded with ones.
    assert_eq!(
        huffman_digits(&[0b0110_1100, 0b0000_0010]).as_deref(),
        Some("502")
    );
    // "431": 011010 011001 00001, padded.
    assert_eq!(
        huffman_digits(&[0b0110_1001, 0b1001_0000, 0b1111_1111]).as_deref(),
        Some("431")
    );
}
