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
//!
//! Routes: `/healthz`, `/version`, `/` and `/slow?ms=N` (answers after N ms).

// Its two log lines go to stderr, where the engine collects container logs.
#![allow(clippy::print_stderr)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The longest `/slow` delay honoured, so a bad query cannot pin a connection for ever.
const MAX_SLOW: Duration = Duration::from_secs(60);

struct Identity {
    release: String,
    slot: String,
    version: String,
    healthy: bool,
    root_fails: bool,
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
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = format!(
        "release={} slot={} version={}",
        id.release, id.slot, id.version
    );
    let response = match req.uri().path() {
        "/healthz" if id.healthy => text(StatusCode::OK, "ok\n".into()),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: HELLO_HEALTH=fail\n".into(),
        ),
        "/version" => text(StatusCode::OK, format!("{who}\n")),
        "/slow" => {
            let wait = query_ms(req.uri().query());
            tokio::time::sleep(wait).await;
            text(
                StatusCode::OK,
                format!("slept {}ms {who}\n", wait.as_millis()),
            )
        }
        "/" if id.root_fails => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failing on purpose (HELLO_ROOT=fail): {who}\n"),
        ),
        "/" => text(StatusCode::OK, format!("hello from {who}\n")),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = env_or("PORT", "8080")
        .parse()
        .map_err(|e| format!("PORT must be a port number: {e}"))?;
    let identity: &'static Identity = Box::leak(Box::new(Identity {
        release: env_or("SHIPIT_RELEASE", "unknown"),
        slot: env_or("SHIPIT_SLOT", "none"),
        version: env_or("SHIPIT_VERSION", "dev"),
        healthy: env_or("HELLO_HEALTH", "ok") != "fail",
        root_fails: env_or("HELLO_ROOT", "ok") == "fail",
    }));
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
