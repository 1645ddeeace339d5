//! WebSocket sessions on `/ws`: the handshake, `messages` text messages one `interval`
//! apart, each of which must come back unchanged, and a clean close.
//!
//! A session is short (a few seconds) on purpose: the edge keeps an upgraded connection on
//! the slot it started on and a release's drain waits for it, up to the drain deadline.
//! Sessions shorter than the deadline must all end cleanly across releases; a session cut
//! by a release is a failure. The handshake, every echoed message and the close each count
//! as one request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::load::{Kind, RECONNECT_BACKOFF, Shared};
use crate::tally::Local;

type Ws = WebSocketStream<TcpStream>;

/// One worker: sessions one after the other until the load stops.
pub async fn worker(shared: Arc<Shared>, index: usize, interval: Duration, messages: u32) -> Local {
    let tally = shared.tally(Kind::WebSocket);
    let mut local = Local::default();
    let mut rng = shared.rng(Kind::WebSocket, index);
    // Spread over one interval, so the workers' messages do not all leave at once.
    if !shared
        .pause(Duration::from_millis(
            rng.below(interval.as_millis().max(1) as u64),
        ))
        .await
    {
        return local;
    }
    let url = format!("ws://{}/ws", shared.authority);
    let mut session = 0u64;
    while shared.take().await {
        session += 1;
        let started = Instant::now();
        let mut ws = match tokio::time::timeout(shared.timeout, connect(&shared, &url)).await {
            Ok(Ok(ws)) => {
                tally.ok(&mut local, started.elapsed(), None);
                ws
            }
            Ok(Err((cause, detail))) => {
                tally.fail(shared.epoch, cause, detail);
                shared.pause(RECONNECT_BACKOFF).await;
                continue;
            }
            Err(_) => {
                tally.fail(shared.epoch, "timeout", "no WebSocket handshake in time");
                shared.pause(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        let mut broken = false;
        for n in 0..messages {
            if !shared.pause(interval).await || !shared.take().await {
                break;
            }
            let payload = format!(
                "{:x}-{index}-{session}-{n}-{:x}",
                shared.seed,
                rng.next_u64()
            );
            let started = Instant::now();
            match tokio::time::timeout(shared.timeout, echo(&mut ws, &payload)).await {
                Ok(Ok(answer)) if answer == payload => {
                    tally.ok(&mut local, started.elapsed(), None);
                }
                Ok(Ok(answer)) => {
                    tally.fail(
                        shared.epoch,
                        "wrong echo",
                        format!("sent {payload:?}, got {answer:?}"),
                    );
                }
                Ok(Err(detail)) => {
                    tally.fail(shared.epoch, "message", detail);
                    broken = true;
                    break;
                }
                Err(_) => {
                    tally.fail(shared.epoch, "timeout", "no echo in time");
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            continue;
        }
        // The close is a request too: a session the edge cuts before it ends is a failure.
        let started = Instant::now();
        match tokio::time::timeout(shared.timeout, close(&mut ws)).await {
            Ok(Ok(())) => tally.ok(&mut local, started.elapsed(), None),
            Ok(Err(detail)) => tally.fail(shared.epoch, "close", detail),
            Err(_) => tally.fail(
                shared.epoch,
                "timeout",
                "the close was not answered in time",
            ),
        }
    }
    local
}

async fn connect(shared: &Shared, url: &str) -> Result<Ws, (&'static str, String)> {
    let stream = TcpStream::connect(shared.addr)
        .await
        .map_err(|e| ("connect", format!("connect to {}: {e}", shared.addr)))?;
    stream.set_nodelay(true).ok();
    let (ws, _response) = client_async(url, stream).await.map_err(|e| match e {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(crate::http1::excerpt)
                .unwrap_or_default();
            ("handshake status", format!("{}: {body}", response.status()))
        }
        other => ("handshake", other.to_string()),
    })?;
    Ok(ws)
}

/// Sends `payload` and waits for the next text message.
async fn echo(ws: &mut Ws, payload: &str) -> Result<String, String> {
    ws.send(Message::text(payload))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_string()),
            Some(Ok(Message::Binary(_))) => return Err("a binary answer to a text message".into()),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the other end: {frame:?}"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(e)) => return Err(format!("receive: {e}")),
            None => return Err("the connection ended".into()),
        }
    }
}

/// Closes the session: our close frame out, the other end's back, then the end of the
/// stream.
async fn close(ws: &mut Ws) -> Result<(), String> {
    ws.close(None)
        .await
        .map_err(|e| format!("send close: {e}"))?;
    loop {
        match ws.next().await {
            None | Some(Err(WsError::ConnectionClosed)) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("after close: {e}")),
        }
    }
}
