//! The HTTP/1.1 kinds: keep-alive `GET /`, `GET /` on a new connection each time,
//! `POST /echo` with a large body, and `GET /slow`.
//!
//! A request counts as failed when its connection cannot be made, when it was sent and no
//! whole answer came back (a reset, a close, a truncated body), when it takes longer than
//! its timeout, when the status is not 2xx, or when the body is not what hello answers to
//! it. The one thing not counted is a kept-alive connection that the edge closed *before*
//! the request was written on it (hyper hands the request back unsent): the request goes out
//! again on a new connection, as any HTTP client does, and the report counts these
//! reconnects apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::load::{Kind, RECONNECT_BACKOFF, Shared, fnv1a64, release_of};
use crate::tally::Local;

/// What a worker of an HTTP/1.1 kind sends, and what it expects back.
#[derive(Clone)]
pub enum Plan {
    /// `GET /`, answered `hello from release=...`.
    Hello,
    /// `POST /echo` with one of these bodies (picked at random), answered with its length
    /// and hash.
    Echo(Arc<Vec<(Bytes, u64)>>),
    /// `GET /slow?ms=N`, answered `slept Nms ...`.
    Slow(Duration),
}

impl Plan {
    fn request(
        &self,
        shared: &Shared,
        rng: &mut crate::load::Rng,
    ) -> (Request<Full<Bytes>>, Expect) {
        let builder = Request::builder().header(hyper::header::HOST, &shared.authority);
        match self {
            Plan::Hello => (
                builder
                    .uri("/")
                    .body(Full::default())
                    .expect("a valid request"),
                Expect::Hello,
            ),
            Plan::Echo(bodies) => {
                let (body, hash) = &bodies[rng.below(bodies.len() as u64) as usize];
                let request = builder
                    .method("POST")
                    .uri("/echo")
                    .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                (
                    request,
                    Expect::Echo(format!(
                        "received {} bytes fnv1a64={hash:016x} ",
                        body.len()
                    )),
                )
            }
            Plan::Slow(wait) => {
                let ms = wait.as_millis();
                (
                    builder
                        .uri(format!("/slow?ms={ms}"))
                        .body(Full::default())
                        .expect("a valid request"),
                    Expect::Slept(format!("slept {ms}ms ")),
                )
            }
        }
    }

    fn timeout(&self, shared: &Shared) -> Duration {
        match self {
            Plan::Slow(wait) => *wait + shared.timeout,
            Plan::Hello | Plan::Echo(_) => shared.timeout,
        }
    }
}

/// How an answer's body must start.
enum Expect {
    Hello,
    Echo(String),
    Slept(String),
}

impl Expect {
    fn check(&self, body: &[u8]) -> bool {
        match self {
            Expect::Hello => body.starts_with(b"hello from release="),
            Expect::Echo(prefix) | Expect::Slept(prefix) => body.starts_with(prefix.as_bytes()),
        }
    }
}

/// The bodies `POST /echo` sends: `count` seeded random bodies of `size` bytes, each with
/// its hash, made once so that sending one costs no CPU.
pub fn echo_bodies(seed: u64, size: usize, count: usize) -> Arc<Vec<(Bytes, u64)>> {
    let mut rng = crate::load::Rng::new(seed ^ 0xb0d1e5);
    let bodies = (0..count)
        .map(|_| {
            let mut body = Vec::with_capacity(size + 8);
            while body.len() < size {
                body.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
            body.truncate(size);
            let hash = fnv1a64(&body);
            (Bytes::from(body), hash)
        })
        .collect();
    Arc::new(bodies)
}

/// A failed request: the class it is counted under and what happened.
struct Failed {
    cause: String,
    detail: String,
    /// Whether the connection can carry the next request.
    connection_ok: bool,
}

impl Failed {
    fn broken(cause: &str, detail: impl std::fmt::Display) -> Failed {
        Failed {
            cause: cause.to_string(),
            detail: detail.to_string(),
            connection_ok: false,
        }
    }
}

/// One worker: requests of `kind` by `plan` until the load stops, on one kept-alive
/// connection, or on a new connection each time when `fresh`.
pub async fn worker(
    shared: Arc<Shared>,
    kind: Kind,
    index: usize,
    plan: Plan,
    fresh: bool,
) -> Local {
    let tally = shared.tally(kind);
    let mut local = Local::default();
    let mut rng = shared.rng(kind, index);
    // Workers start spread over 100 ms rather than all in the same instant.
    if !shared.pause(Duration::from_millis(rng.below(100))).await {
        return local;
    }
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    while shared.take().await {
        if fresh {
            connection = None;
        }
        let (request, expect) = plan.request(&shared, &mut rng);
        let limit = plan.timeout(&shared);
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(limit, exchange(&shared, kind, &mut connection, request)).await;
        let failed = match outcome {
            Err(_) => Some(Failed::broken(
                "timeout",
                format!(
                    "no whole answer within {}",
                    humantime::format_duration(limit)
                ),
            )),
            Ok(Err(failed)) => Some(failed),
            Ok(Ok((status, body))) => {
                if !status.is_success() {
                    Some(Failed {
                        cause: format!("status {}", status.as_u16()),
                        detail: format!("{status}: {}", excerpt(&body)),
                        connection_ok: true,
                    })
                } else if !expect.check(&body) {
                    Some(Failed {
                        cause: "wrong answer".to_string(),
                        detail: excerpt(&body),
                        connection_ok: true,
                    })
                } else {
                    tally.ok(&mut local, started.elapsed(), release_of(&body));
                    None
                }
            }
        };
        if let Some(failed) = failed {
            tally.fail(shared.epoch, &failed.cause, &failed.detail);
            if !failed.connection_ok {
                connection = None;
                if !shared.pause(RECONNECT_BACKOFF).await {
                    break;
                }
            }
        }
    }
    local
}

/// Sends `request` on the connection (opening one when there is none, or when the edge
/// closed it before the request went out) and reads the whole answer.
async fn exchange(
    shared: &Shared,
    kind: Kind,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
    mut request: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), Failed> {
    let tally = shared.tally(kind);
    // At most once again: a request refused unsent by a new connection is a failure.
    for attempt in 0..2 {
        let sender = match connection {
            Some(sender) if !sender.is_closed() => sender,
            _ => {
                if connection.take().is_some() {
                    tally.reconnect();
                }
                connection.insert(open(shared).await?)
            }
        };
        if sender.ready().await.is_err() {
            *connection = None;
            if attempt == 0 {
                tally.reconnect();
                continue;
            }
            return Err(Failed::broken(
                "send",
                "a new connection was closed before the request",
            ));
        }
        match sender.try_send_request(request).await {
            Ok(response) => return read(response).await,
            Err(mut e) => {
                *connection = None;
                match e.take_message() {
                    Some(unsent) if attempt == 0 => {
                        tally.reconnect();
                        request = unsent;
                    }
                    _ => {
                        let error = e.into_error();
                        return Err(Failed::broken(&cause_of(&error), chain(&error)));
                    }
                }
            }
        }
    }
    Err(Failed::broken("send", "the request could not be sent"))
}

async fn open(shared: &Shared) -> Result<SendRequest<Full<Bytes>>, Failed> {
    let stream = TcpStream::connect(shared.addr)
        .await
        .map_err(|e| Failed::broken("connect", format!("connect to {}: {e}", shared.addr)))?;
    stream.set_nodelay(true).ok();
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failed::broken("handshake", chain(&e)))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn read(response: Response<Incoming>) -> Result<(hyper::StatusCode, Bytes), Failed> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failed::broken("body", chain(&e)))?
        .to_bytes();
    Ok((status, body))
}

/// The class a hyper error is counted under: what kind of thing went wrong, without the
/// details that differ every time.
pub fn cause_of(error: &hyper::Error) -> String {
    let class = if error.is_timeout() {
        "timeout"
    } else if error.is_incomplete_message() {
        "closed before the answer"
    } else if error.is_closed() || error.is_canceled() {
        "connection closed"
    } else if error.is_parse() {
        "malformed answer"
    } else {
        "connection error"
    };
    match io_kind(error) {
        Some(kind) => format!("{class} ({kind:?})"),
        None => class.to_string(),
    }
}

fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

/// An error and its sources, one line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The start of a body, for a failure's detail.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(200)];
    String::from_utf8_lossy(cut).trim_end().to_string()
}
