//! The raw client: writes exact bytes to the edge and splits what comes back into answers
//! with the strict parser of [`crate::wire`].
//!
//! It is generic over its transport: [`crate::harness::Edge::client`] gives one in the
//! transport of the path a case runs on (TLS on `relay-tls`). Reading ends when the edge
//! closes the connection, or once the expected number of final answers has arrived and
//! nothing more came for [`QUIET`] (so that an answer the client did not ask for is still
//! seen), or at [`READ_DEADLINE`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wire::{self, Response};

/// How long the client keeps listening after its last expected answer.
pub const QUIET: Duration = Duration::from_millis(150);
/// The longest a client waits for answers.
pub const READ_DEADLINE: Duration = Duration::from_secs(4);

/// What the edge sent back.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Every answer, interim ones (1xx) included, in order.
    pub answers: Vec<Response>,
    /// The edge closed the connection (or reset it).
    pub closed: bool,
    /// Bytes that did not parse as an answer, and why.
    pub error: Option<(String, Vec<u8>)>,
    /// Bytes of an answer that had not finished when reading stopped.
    pub pending: Vec<u8>,
}

impl Transcript {
    /// The final answers (not 1xx).
    pub fn finals(&self) -> Vec<&Response> {
        self.answers.iter().filter(|a| a.status >= 200).collect()
    }

    /// How many interim answers came.
    pub fn interims(&self) -> usize {
        self.answers.iter().filter(|a| a.status < 200).count()
    }

    /// One line per answer, for failure messages.
    pub fn describe(&self) -> String {
        const SHOWN: usize = 6;
        let shown = |a: &Response| format!("{} {:?}", a.status, wire::escape(&a.body));
        let mut text: Vec<String> = if self.answers.len() > 2 * SHOWN {
            let mut text: Vec<String> = self.answers[..SHOWN].iter().map(shown).collect();
            text.push(format!("… {} more …", self.answers.len() - 2 * SHOWN));
            text.extend(self.answers[self.answers.len() - SHOWN..].iter().map(shown));
            text
        } else {
            self.answers.iter().map(shown).collect()
        };
        if let Some((error, bytes)) = &self.error {
            text.push(format!("unparsable ({error}): {}", wire::escape(bytes)));
        }
        if !self.pending.is_empty() {
            text.push(format!("unfinished: {}", wire::escape(&self.pending)));
        }
        text.push(if self.closed { "closed" } else { "open" }.into());
        format!("[{}]", text.join(", "))
    }
}

/// One client connection to the edge.
pub struct RawClient<S> {
    io: S,
    buf: Vec<u8>,
    closed: bool,
    /// The answers read answer HEAD requests (no body, whatever their framing says).
    head: bool,
}

/// A TCP connection to `addr` from the loopback address `local`.
pub async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    pub fn new(io: S) -> Self {
        RawClient {
            io,
            buf: Vec::new(),
            closed: false,
            head: false,
        }
    }

    /// Reads the answers on this connection as answers to HEAD requests.
    pub fn answering_head(mut self) -> Self {
        self.head = true;
        self
    }

    /// Writes `bytes` while reading answers (a refusing edge may stop reading before the
    /// client has written everything); then, when `finish`, closes the write side. Returns
    /// the answers, read as [`RawClient::read`] does.
    pub async fn exchange(&mut self, bytes: &[u8], finish: bool, want: usize) -> Transcript {
        let (mut reader, mut writer) = tokio::io::split(&mut self.io);
        let write = async {
            // The edge may close first: what it answered is what counts.
            let _ = writer.write_all(bytes).await;
            if finish {
                let _ = writer.shutdown().await;
            }
        };
        let read = read_answers(
            &mut reader,
            &mut self.buf,
            &mut self.closed,
            want,
            QUIET,
            self.head,
        );
        let ((), transcript) = tokio::join!(write, read);
        transcript
    }

    /// Writes `bytes`, ignoring a write error (the edge may have closed).
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
    }

    /// Reads until `want` final answers came and then nothing for [`QUIET`], the edge
    /// closes, or [`READ_DEADLINE`] passes.
    pub async fn read(&mut self, want: usize) -> Transcript {
        let head = self.head;
        read_answers(
            &mut self.io,
            &mut self.buf,
            &mut self.closed,
            want,
            QUIET,
            head,
        )
        .await
    }

    /// Reads until `want` final answers came (not waiting for more), the edge closes, or
    /// [`READ_DEADLINE`] passes: for a client that acts the moment its answer is in.
    pub async fn read_prompt(&mut self, want: usize) -> Transcript {
        let head = self.head;
        read_answers(
            &mut self.io,
            &mut self.buf,
            &mut self.closed,
            want,
            Duration::ZERO,
            head,
        )
        .await
    }
}

async fn read_answers<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    closed: &mut bool,
    want: usize,
    quiet: Duration,
    head: bool,
) -> Transcript {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut transcript = Transcript::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Take every whole answer in the buffer.
        loop {
            match wire::response(buf, *closed, head) {
                Ok(Some((answer, len))) => {
                    buf.drain(..len);
                    transcript.answers.push(answer);
                }
                Ok(None) => break,
                Err(e) => {
                    transcript.error = Some((e, std::mem::take(buf)));
                    break;
                }
            }
        }
        if *closed || transcript.error.is_some() {
            break;
        }
        let until = if transcript.finals().len() >= want {
            if quiet.is_zero() && want > 0 {
                break;
            }
            deadline.min(Instant::now() + quiet)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, io.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => *closed = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    transcript.closed = *closed;
    if transcript.error.is_none() {
        transcript.pending = buf.clone();
    }
    transcript
}
