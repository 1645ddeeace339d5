//! The recording upstream: a raw TCP server on 127.0.0.1 that stands in for a slot.
//!
//! It keeps every byte of every connection, parses requests with the strict parser of
//! [`crate::wire`], and by default answers each one `200 OK` with a `Content-Length` body
//! naming it (`<method> <target> <body length>`) and an `x-upstream-conn` header naming
//! the connection, keeping the connection alive. A request whose target starts with `/slow`
//! is answered after [`SLOW`], so that an answer can still be on its way when the edge
//! hands the connection to another client. A [`Script`] makes it misbehave instead: it
//! chooses, per request, the raw bytes to write back and when; it can also switch a
//! connection to an echo of every byte (a tunnel, after a `101`), or give up on a request
//! whose body is late (a slot with a read deadline).
//!
//! What it saw is read back per connection ([`Connection`]): the requests parsed, the bytes
//! left over when the connection closed, and the parse error that stopped it, if any.
//! Tests wait on it with [`Upstream::wait_for`], which wakes on every change.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::wire::{self, Header, Request};

/// How long a `/slow…` request waits for its answer.
pub const SLOW: Duration = Duration::from_millis(300);

/// What one connection saw.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Every byte received, in order.
    pub raw: Vec<u8>,
    /// The requests parsed, each with its arrival number across all connections.
    pub requests: Vec<(usize, Request)>,
    /// Bytes received that are not part of a whole request (when the connection ended, or
    /// after a parse error).
    pub leftover: Vec<u8>,
    /// Why parsing stopped.
    pub error: Option<String>,
    /// The connection ended: the edge closed (or reset) its side, or the upstream gave up
    /// on it ([`Connection::gave_up`]).
    pub closed: bool,
    /// Bytes a script asked to send later were written.
    pub late_written: bool,
    /// The connection switched protocols: every byte after the request was echoed.
    pub switched: bool,
    /// The upstream closed the connection itself: a request's body was not whole by its
    /// read deadline ([`Reply::CloseUnlessWhole`]).
    pub gave_up: bool,
}

/// A request, as a script sees it once its head arrived.
#[derive(Debug)]
pub struct Asked<'a> {
    pub target: &'a str,
    pub headers: &'a [Header],
}

impl Asked<'_> {
    /// Whether the request has a header `name`.
    pub fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200 OK` naming the request.
    Echo,
    /// These bytes, in one write, once the request is whole.
    Raw(Vec<u8>),
    /// These bytes in writes of this size each, once the request is whole.
    Pieces(Vec<u8>, usize),
    /// These bytes, then close the connection.
    RawThenClose(Vec<u8>),
    /// These bytes as soon as the head arrived, before the body; nothing once it is whole.
    Early(Vec<u8>),
    /// [`Reply::Echo`], then these bytes after a pause, while the connection is idle.
    EchoThenLater(Vec<u8>, Duration),
    /// The first bytes, then the second after a pause (none: at once, in a second write).
    RawThenLater(Vec<u8>, Vec<u8>, Duration),
    /// These bytes (a `101` head), then an echo of every byte that comes after the
    /// request, until the connection closes.
    Switch(Vec<u8>),
    /// [`Reply::Echo`] if the request is whole within this long of its head's arrival;
    /// otherwise the upstream closes the connection, as a slot with a read deadline does.
    CloseUnlessWhole(Duration),
    /// Nothing at all.
    Silent,
}

/// Chooses the reply to each request.
pub type Script = Arc<dyn Fn(&Asked<'_>) -> Reply + Send + Sync>;

struct State {
    conns: Mutex<Vec<Connection>>,
    changed: watch::Sender<u64>,
    arrivals: AtomicUsize,
    script: Script,
}

impl State {
    fn update(&self, conn: usize, f: impl FnOnce(&mut Connection)) {
        {
            let mut conns = self.conns.lock().unwrap();
            f(&mut conns[conn]);
        }
        self.changed.send_modify(|v| *v += 1);
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The accept task owns the connection tasks: they end with it.
        self.task.abort();
    }
}

impl Upstream {
    /// An upstream that answers every request with [`Reply::Echo`].
    pub async fn start() -> Upstream {
        Upstream::scripted(Arc::new(|_| Reply::Echo)).await
    }

    pub async fn scripted(script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            conns: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            arrivals: AtomicUsize::new(0),
            script,
        });
        let accepting = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let id = {
                            let mut conns = accepting.conns.lock().unwrap();
                            conns.push(Connection::default());
                            conns.len() - 1
                        };
                        accepting.changed.send_modify(|v| *v += 1);
                        connections.spawn(serve(stream, id, Arc::clone(&accepting)));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Upstream { addr, state, task }
    }

    /// What every connection saw so far.
    pub fn connections(&self) -> Vec<Connection> {
        self.state.conns.lock().unwrap().clone()
    }

    /// Every request parsed, in arrival order, with the connection it came on.
    pub fn requests(&self) -> Vec<(usize, Request)> {
        let mut all: Vec<(usize, usize, Request)> = self
            .connections()
            .into_iter()
            .enumerate()
            .flat_map(|(conn, c)| {
                c.requests
                    .into_iter()
                    .map(move |(seq, req)| (seq, conn, req))
            })
            .collect();
        all.sort_by_key(|(seq, _, _)| *seq);
        all.into_iter().map(|(_, conn, req)| (conn, req)).collect()
    }

    /// Waits until `done` holds for the connections, at most `timeout`. Whether it held.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Connection]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut changed = self.state.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if done(&self.state.conns.lock().unwrap()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return done(&self.state.conns.lock().unwrap()),
            }
        }
    }

    /// Waits until every connection holding bytes of an unfinished request is closed by
    /// the edge (a request cut short must not leave its connection in use).
    pub async fn wait_for_cut_connections_closed(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |conns| {
            conns.iter().all(|c| c.closed || unfinished(c).is_empty())
        })
        .await
    }
}

/// The bytes of a connection not (yet) part of a whole request.
pub fn unfinished(c: &Connection) -> &[u8] {
    if c.closed || c.error.is_some() {
        return &c.leftover;
    }
    let used: usize = c.requests.iter().map(|(_, r)| r.len).sum();
    &c.raw[used.min(c.raw.len())..]
}

/// The default answer to `req` on connection `conn`.
pub fn echo(conn: usize, req: &Request) -> Vec<u8> {
    let body = format!("{} {} {}", req.method, req.target, req.body.len());
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream-conn: {conn}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn serve(mut stream: TcpStream, id: usize, state: Arc<State>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut read = vec![0u8; 64 * 1024];
    // The reply chosen for the request whose head arrived.
    let mut planned: Option<Reply> = None;
    // When the request whose head arrived must be whole ([`Reply::CloseUnlessWhole`]).
    let mut read_deadline: Option<Instant> = None;
    // After a [`Reply::Switch`]: every byte is echoed, nothing is parsed.
    let mut echoing = false;
    loop {
        let n = match read_deadline {
            None => stream.read(&mut read).await.unwrap_or(0),
            Some(at) => match tokio::time::timeout_at(at, stream.read(&mut read)).await {
                Ok(n) => n.unwrap_or(0),
                Err(_) => {
                    // Dropping the stream closes the connection.
                    state.update(id, |c| {
                        c.closed = true;
                        c.gave_up = true;
                        c.leftover = std::mem::take(&mut buf);
                    });
                    return;
                }
            },
        };
        if n == 0 {
            state.update(id, |c| {
                c.closed = true;
                c.leftover = std::mem::take(&mut buf);
            });
            return;
        }
        state.update(id, |c| c.raw.extend_from_slice(&read[..n]));
        if echoing {
            // A failed write: the next read sees the close.
            let _ = stream.write_all(&read[..n]).await;
            continue;
        }
        buf.extend_from_slice(&read[..n]);
        loop {
            if planned.is_none() {
                match wire::request_head(&buf) {
                    Ok(None) => break,
                    Err(e) => return refuse(stream, id, &state, e, buf).await,
                    Ok(Some(head)) => {
                        let reply = (state.script)(&Asked {
                            target: &head.target,
                            headers: &head.headers,
                        });
                        match &reply {
                            Reply::Early(bytes) => {
                                let _ = stream.write_all(bytes).await;
                            }
                            Reply::CloseUnlessWhole(within) => {
                                read_deadline = Some(Instant::now() + *within);
                            }
                            _ => {}
                        }
                        planned = Some(reply);
                    }
                }
            }
            let req = match wire::request(&buf) {
                Ok(None) => break,
                Err(e) => return refuse(stream, id, &state, e, buf).await,
                Ok(Some(req)) => req,
            };
            buf.drain(..req.len);
            let seq = state.arrivals.fetch_add(1, Ordering::SeqCst);
            let slow = req.target.starts_with("/slow");
            let answer = echo(id, &req);
            state.update(id, |c| c.requests.push((seq, req)));
            read_deadline = None;
            let written = match planned.take().expect("a head came first") {
                Reply::Echo | Reply::CloseUnlessWhole(_) => {
                    if slow {
                        tokio::time::sleep(SLOW).await;
                    }
                    stream.write_all(&answer).await
                }
                Reply::Raw(bytes) => stream.write_all(&bytes).await,
                Reply::Pieces(bytes, size) => {
                    let mut written = Ok(());
                    for piece in bytes.chunks(size) {
                        written = stream.write_all(piece).await;
                        if written.is_err() {
                            break;
                        }
                        // Each piece its own segment, as a slow slot would send it.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    written
                }
                Reply::RawThenClose(bytes) => {
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.shutdown().await;
                    // Keep recording what the edge still sends, until it closes.
                    Ok(())
                }
                Reply::Early(_) | Reply::Silent => Ok(()),
                Reply::EchoThenLater(bytes, pause) => {
                    let first = stream.write_all(&answer).await;
                    tokio::time::sleep(pause).await;
                    let later = stream.write_all(&bytes).await;
                    state.update(id, |c| c.late_written = true);
                    first.and(later)
                }
                Reply::RawThenLater(first, later, pause) => {
                    let first = stream.write_all(&first).await;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    let later = stream.write_all(&later).await;
                    state.update(id, |c| c.late_written = true);
                    first.and(later)
                }
                Reply::Switch(bytes) => {
                    let switched = stream.write_all(&bytes).await;
                    echoing = true;
                    state.update(id, |c| c.switched = true);
                    // What came after the request is the tunnel's already.
                    let rest = std::mem::take(&mut buf);
                    if switched.is_ok() && !rest.is_empty() {
                        stream.write_all(&rest).await
                    } else {
                        switched
                    }
                }
            };
            if written.is_err() {
                // The edge went away: what it sent is recorded; the read sees the close.
                break;
            }
        }
    }
}

/// Records a parse error, answers it with a status no slot sends, and closes.
async fn refuse(mut stream: TcpStream, id: usize, state: &State, error: String, buf: Vec<u8>) {
    state.update(id, |c| {
        c.error = Some(error);
        c.leftover = buf;
    });
    let _ = stream
        .write_all(
            b"HTTP/1.1 555 Upstream Parse Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
    let _ = stream.shutdown().await;
    // Read on until the edge closes, recording it.
    let mut read = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut read)).await {
            Ok(Ok(n)) if n > 0 => state.update(id, |c| {
                c.raw.extend_from_slice(&read[..n]);
                c.leftover.extend_from_slice(&read[..n]);
            }),
            _ => break,
        }
    }
    state.update(id, |c| c.closed = true);
}
