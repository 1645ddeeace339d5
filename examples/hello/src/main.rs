//! hello: the example service shipit releases in its docs, demos and tests.
//!
//! It is linked statically so that its image can be `FROM scratch` (the engine on a CI box
//! may have no base images). Behaviour is driven by the environment shipit gives a slot:
//!
//! - `PORT` (default 8080): the port to listen on, on all interfaces of the container.
//! - `SHIPIT_RELEASE`, `SHIPIT_SLOT`, `SHIPIT_VERSION`: reported by `/version` and `/`.
//! - `HELLO_HEALTH=fail`: `/healthz` answers 503, so the release must refuse this candidate.
//! - `HELLO_ROOT=fail`: `/` answers 500 while `/healthz` stays healthy: a candidate that passes
//!   verification and then fails real traffic, which a canary's bake must catch.
//! - `HELLO_STARTUP_MS=N`: the server does not accept connections for the first N ms, like a
//!   slow-booting JVM.
//! - `HELLO_EXIT=N`: the process exits with code N at once, before it listens: a candidate
//!   that crashes on boot, which a release must see fail fast. Unset or empty: it runs.
//!
//! - `HELLO_COLD_REQUESTS=N`: its first N requests (all but `/healthz` and `/version`) take
//!   `HELLO_COLD_MS` (default 200) ms longer, like a JVM before its JIT warmed up: what a
//!   release's warm-up traffic is for.
//!
//! `hello migrate` is its migration: it prints `migrated to <SHIPIT_RELEASE>` and exits 0, or
//! fails with exit code 3 when `HELLO_MIGRATE=fail`; `HELLO_MIGRATE_MS=N` makes it take N ms.
//!
//! Routes: `/healthz`, `/version`, `/`, `/host` (`host=<HOSTNAME>`: which of a slot's
//! containers answered), `/slow?ms=N` (answers after N ms), `POST /echo`
//! (reads the body; answers its length, its FNV-1a hash and the release) and `/ws` (a
//! WebSocket that echoes every text and binary message). bench/soak.sh loads all of them.

// Its two log lines go to stderr, where the engine collects container logs.
#![allow(clippy::print_stderr)]
// `hello migrate` prints its result on stdout, as a migration tool does.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The longest `/slow` delay honoured, so a bad query cannot pin a connection for ever.
const MAX_SLOW: Duration = Duration::from_secs(60);
/// The largest body `/echo` reads; a larger one is answered 413.
const MAX_ECHO_BODY: usize = 16 * 1024 * 1024;

struct Identity {
    release: String,
    slot: String,
    version: String,
    /// The container's host name (the engine sets `HOSTNAME` to the container's id).
    host: String,
    healthy: bool,
    root_fails: bool,
    /// How many more requests are slow (see `HELLO_COLD_REQUESTS`), and by how much.
    cold_left: AtomicU64,
    cold_delay: Duration,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// FNV-1a, 64 bits: enough for a client to tell that the body arrived byte for byte.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `POST /echo`: the body's length and hash, and who answered.
async fn echo(body: Incoming, who: &str) -> Response<Full<Bytes>> {
    match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            text(
                StatusCode::OK,
                format!(
                    "received {} bytes fnv1a64={:016x} {who}\n",
                    bytes.len(),
                    fnv1a64(&bytes)
                ),
            )
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_ECHO_BODY} bytes\n"),
        ),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
    }
}

/// `GET /ws`: answers the WebSocket handshake and echoes every text and binary message on
/// the upgraded connection until the client closes it.
fn websocket(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let upgrade_asked = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .filter(|_| upgrade_asked)
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket handshake\n".into(),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            let echo = match message {
                Message::Text(_) | Message::Binary(_) => message,
                // tungstenite answers pings and closes by itself.
                _ => continue,
            };
            if ws.send(echo).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("a base64 key is a valid header value"),
    );
    response
}

fn query_ms(query: Option<&str>) -> Duration {
    let ms = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ms).min(MAX_SLOW)
}

async fn handle(
    id: &'static Identity,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = format!(
        "release={} slot={} version={}",
        id.release, id.slot, id.version
    );
    let path = req.uri().path();
    if path != "/healthz"
        && path != "/version"
        && id
            .cold_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    {
        tokio::time::sleep(id.cold_delay).await;
    }
    let response = match req.uri().path() {
        "/healthz" if id.healthy => text(StatusCode::OK, "ok\n".into()),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: HELLO_HEALTH=fail\n".into(),
        ),
        "/version" => text(StatusCode::OK, format!("{who}\n")),
        "/host" => text(StatusCode::OK, format!("host={}\n", id.host)),
        "/slow" => {
            let wait = query_ms(req.uri().query());
            tokio::time::sleep(wait).await;
            text(
                StatusCode::OK,
                format!("slept {}ms {who}\n", wait.as_millis()),
            )
        }
        "/echo" if req.method() == Method::POST => echo(req.into_body(), &who).await,
        "/echo" => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST a body to /echo\n".into(),
        ),
        "/ws" => websocket(&mut req),
        "/" if id.root_fails => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failing on purpose (HELLO_ROOT=fail): {who}\n"),
        ),
        "/" => text(StatusCode::OK, format!("hello from {who}\n")),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

/// `hello migrate`: what a real service's migration step would be, for the migrate hook.
async fn migrate() -> Result<(), Box<dyn std::error::Error>> {
    let release = env_or("SHIPIT_RELEASE", "unknown");
    let took = Duration::from_millis(env_or("HELLO_MIGRATE_MS", "0").parse().unwrap_or(0));
    eprintln!("hello: migrating to {release}");
    tokio::time::sleep(took).await;
    if env_or("HELLO_MIGRATE", "ok") == "fail" {
        eprintln!("hello: migration failed on purpose (HELLO_MIGRATE=fail)");
        std::process::exit(3);
    }
    println!("migrated to {release}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("migrate") => return migrate().await,
        Some(other) => {
            return Err(format!("unknown command {other:?}; expected `migrate` or none").into());
        }
    }
    let port: u16 = env_or("PORT", "8080")
        .parse()
        .map_err(|e| format!("PORT must be a port number: {e}"))?;
    let identity: &'static Identity = Box::leak(Box::new(Identity {
        release: env_or("SHIPIT_RELEASE", "unknown"),
        slot: env_or("SHIPIT_SLOT", "none"),
        version: env_or("SHIPIT_VERSION", "dev"),
        host: env_or("HOSTNAME", "unknown"),
        healthy: env_or("HELLO_HEALTH", "ok") != "fail",
        root_fails: env_or("HELLO_ROOT", "ok") == "fail",
        cold_left: AtomicU64::new(env_or("HELLO_COLD_REQUESTS", "0").parse().unwrap_or(0)),
        cold_delay: Duration::from_millis(env_or("HELLO_COLD_MS", "200").parse().unwrap_or(200)),
    }));
    let exit = env_or("HELLO_EXIT", "");
    if !exit.is_empty() {
        let code: i32 = exit
            .parse()
            .map_err(|e| format!("HELLO_EXIT must be an exit code: {e}"))?;
        eprintln!("hello: HELLO_EXIT={code}, exiting before listening");
        std::process::exit(code);
    }
    let startup = Duration::from_millis(env_or("HELLO_STARTUP_MS", "0").parse().unwrap_or(0));
    if !startup.is_zero() {
        tokio::time::sleep(startup).await;
    }

    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    eprintln!("hello listening on :{port} ({})", identity.release);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(identity, req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
            _ = terminate.recv() => {
                eprintln!("hello: SIGTERM, exiting");
                return Ok(());
            }
        }
    }
}
