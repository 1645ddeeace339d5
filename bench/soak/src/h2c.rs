//! HTTP/2 without TLS (h2c, prior knowledge: the edge's plain port speaks it): a few
//! connections, each carrying several streams at once, each stream a `GET /` after the
//! other.
//!
//! Counted as the HTTP/1.1 kinds are. When a connection dies, every stream that had a
//! request on it fails; once all its streams have stopped, the connection is made again.
//! A request hyper hands back unsent (the connection was already closing) ends that stream
//! without a failure, and is counted as a reconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::http1::{cause_of, chain, excerpt};
use crate::load::{Kind, RECONNECT_BACKOFF, Shared, release_of};
use crate::tally::Local;

/// One connection's worker: opens it, runs `streams` request loops on it, and opens it
/// again when they stop, until the load stops.
pub async fn connection(shared: Arc<Shared>, index: usize, streams: usize) -> Local {
    let tally = shared.tally(Kind::H2);
    let mut local = Local::default();
    let mut rng = shared.rng(Kind::H2, index);
    if !shared.pause(Duration::from_millis(rng.below(100))).await {
        return local;
    }
    let mut opened_before = false;
    while !shared.stop.is_cancelled() {
        let sender = match tokio::time::timeout(shared.timeout, open(&shared)).await {
            Ok(Ok(sender)) => sender,
            Ok(Err((cause, detail))) => {
                tally.fail(shared.epoch, cause, detail);
                shared.pause(RECONNECT_BACKOFF).await;
                continue;
            }
            Err(_) => {
                tally.fail(
                    shared.epoch,
                    "timeout",
                    "the h2c connection was not set up in time",
                );
                shared.pause(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        if opened_before {
            tally.reconnect();
        }
        opened_before = true;
        let mut set = JoinSet::new();
        for _ in 0..streams {
            set.spawn(stream(Arc::clone(&shared), sender.clone()));
        }
        drop(sender);
        while let Some(joined) = set.join_next().await {
            if let Ok(stream_local) = joined {
                local.merge(stream_local);
            }
        }
    }
    local
}

async fn open(shared: &Shared) -> Result<SendRequest<Full<Bytes>>, (&'static str, String)> {
    let stream = TcpStream::connect(shared.addr)
        .await
        .map_err(|e| ("connect", format!("connect to {}: {e}", shared.addr)))?;
    stream.set_nodelay(true).ok();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| ("handshake", chain(&e)))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One stream loop: `GET /` after `GET /` on the shared connection, until the load stops
/// or the connection can carry no more.
async fn stream(shared: Arc<Shared>, mut sender: SendRequest<Full<Bytes>>) -> Local {
    let tally = shared.tally(Kind::H2);
    let mut local = Local::default();
    let uri = format!("http://{}/", shared.authority);
    while !sender.is_closed() && shared.take().await {
        if sender.ready().await.is_err() {
            break;
        }
        let request = Request::get(&uri)
            .body(Full::default())
            .expect("a valid request");
        let started = Instant::now();
        let exchange = async {
            let response = sender.try_send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await;
            Ok::<_, hyper::client::conn::TrySendError<_>>((status, body))
        };
        match tokio::time::timeout(shared.timeout, exchange).await {
            Err(_) => {
                tally.fail(
                    shared.epoch,
                    "timeout",
                    format!(
                        "no whole answer within {}",
                        humantime::format_duration(shared.timeout)
                    ),
                );
            }
            Ok(Err(mut e)) => {
                if e.take_message().is_some() {
                    // Never sent: the connection is going away. Not a failed request.
                    break;
                }
                let error = e.into_error();
                tally.fail(shared.epoch, &cause_of(&error), chain(&error));
            }
            Ok(Ok((status, Err(e)))) => {
                tally.fail(shared.epoch, "body", format!("{status}: {}", chain(&e)));
            }
            Ok(Ok((status, Ok(collected)))) => {
                let body = collected.to_bytes();
                if !status.is_success() {
                    let cause = format!("status {}", status.as_u16());
                    tally.fail(
                        shared.epoch,
                        &cause,
                        format!("{status}: {}", excerpt(&body)),
                    );
                } else if !body.starts_with(b"hello from release=") {
                    tally.fail(shared.epoch, "wrong answer", excerpt(&body));
                } else {
                    tally.ok(&mut local, started.elapsed(), release_of(&body));
                }
            }
        }
    }
    local
}
