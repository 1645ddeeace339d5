//! Requests held by a paused route, whose clients go away: the edge lets go of every one
//! (the held count in `status` goes back to 0, nothing leaks), nothing reaches the slot, and
//! the resume finds nobody to release. HTTP/1.1 clients close their connections; an HTTP/2
//! client resets some of its held streams, then closes the connection with the rest.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::case::{HOST, get, seen};
use crate::h2c::{Acks, CANCEL, Conn};
use crate::harness::{Edge, Path, SERVICE, check, on_every_path};
use crate::upstream::Upstream;

/// HTTP/1.1 clients, one connection each.
const CLIENTS: usize = 40;
/// Held streams on the one HTTP/2 connection; the first [`RESET`] are reset by the client.
const STREAMS: u32 = 10;
const RESET: u32 = 4;
/// How long the held count may take to reach what is expected.
const HELD_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests `web` holds now.
async fn held(edge: &Edge) -> Result<usize, String> {
    let status = edge
        .admin()
        .status()
        .await
        .map_err(|e| format!("status: {e}"))?;
    Ok(status
        .routes
        .iter()
        .find(|r| r.service == SERVICE)
        .and_then(|r| r.paused.as_ref())
        .map_or(0, |p| p.held))
}

/// Waits (looking every few milliseconds, within [`HELD_TIMEOUT`]) until `web` holds
/// exactly `want` requests.
async fn until_held(edge: &Edge, want: usize, when: &str) -> Result<(), String> {
    let deadline = Instant::now() + HELD_TIMEOUT;
    loop {
        let now = held(edge).await?;
        if now == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{when}: the edge holds {now} requests after {HELD_TIMEOUT:?}, not {want}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn h2_get(path: &[u8]) -> Vec<(&[u8], &[u8])> {
    vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", HOST.as_bytes()),
    ]
}

#[tokio::test]
async fn held_requests_whose_clients_leave_are_let_go_without_a_leak() {
    on_every_path("held requests whose clients leave", async |path: Path| {
        let upstream = Upstream::start().await;
        let edge = Edge::routed(path, upstream.addr).await;
        edge.admin()
            .pause(SERVICE, Duration::from_secs(600))
            .await
            .map_err(|e| format!("pause: {e}"))?;

        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            let mut client = edge.client().await;
            client.send(get("/held", "").as_bytes()).await;
            clients.push(client);
        }
        // h2c on the plain listener on every path (HTTP/2 over TLS never meets the relay);
        // the same edge holds both kinds of request.
        let tcp = TcpStream::connect(edge.plain_addr())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut h2 = Conn::open(tcp, &[], Acks::All)
            .await
            .map_err(|e| format!("the preface: {e}"))?;
        for n in 0..STREAMS {
            h2.headers(2 * n + 1, &h2_get(b"/held"), true)
                .await
                .map_err(|e| format!("stream {}: {e}", 2 * n + 1))?;
        }
        let all = CLIENTS + STREAMS as usize;
        until_held(&edge, all, "every client sent its request").await?;

        for n in 0..RESET {
            h2.reset(2 * n + 1, CANCEL)
                .await
                .map_err(|e| format!("reset: {e}"))?;
        }
        until_held(
            &edge,
            all - RESET as usize,
            "the HTTP/2 client reset some streams",
        )
        .await?;
        drop(clients);
        drop(h2);
        until_held(&edge, 0, "every client went away").await?;

        let resumed = edge
            .admin()
            .resume(SERVICE)
            .await
            .map_err(|e| format!("resume: {e}"))?;
        check(resumed.resumed && resumed.released == 0, || {
            format!("the resume released {resumed:?}; every client had gone")
        })?;
        check(upstream.requests().is_empty(), || {
            format!("held requests reached the slot: {}", seen(&upstream))
        })?;
        // And the route serves again.
        let got = edge
            .client()
            .await
            .exchange(get("/after", "").as_bytes(), false, 1)
            .await;
        let finals = got.finals();
        check(finals.len() == 1 && finals[0].status == 200, || {
            format!("after the resume: {}", got.describe())
        })
    })
    .await;
}
