//! Upgraded connections (WebSocket, or any HTTP/1.1 `Upgrade`), passed through byte for byte.
//!
//! The client's upgrade request goes to the slot with its `Upgrade` header kept. When the
//! slot answers 101, the client gets the 101 and the two upgraded connections are joined.
//! The tunnel keeps the request's in-flight guard, so it counts for its backend like a
//! request: after a switch it stays on the old slot, and a drain of that slot waits for it.
//! At the drain's deadline the tunnel is closed (see [`crate::drain`]). When the edge stops,
//! tunnels get the same grace period as requests, then close.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::InFlightGuard;
use crate::connection::ClientConn;

/// Whether `req` asks to switch protocols: HTTP/1.1, `Upgrade`, and `Connection: upgrade`.
/// An upgrade to HTTP/2 (`h2c`) is not passed on: the edge speaks HTTP/2 to clients itself,
/// and a slot that took it would give the client a tunnel past the edge's rules; such a
/// request is forwarded as an ordinary one, its `Upgrade` dropped.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get(header::UPGRADE).is_some_and(|v| {
            !v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
        })
        && connection_has(req.headers(), "upgrade")
}

/// Whether a `Connection` header lists `token`.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Puts back the two headers an upgrade needs after the hop-by-hop ones were removed.
pub(crate) fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The open tunnels of one edge.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    tracker: TaskTracker,
    /// Cancelled when the edge stops and the grace period is over.
    closing: CancellationToken,
}

impl Tunnels {
    /// Joins the client's and the slot's upgraded connections once both are ready.
    ///
    /// `connection` is the client connection the tunnel came from: holding it keeps the
    /// tunnel counted under the edge's connection limits.
    pub(crate) fn open(
        &self,
        client: OnUpgrade,
        upstream: OnUpgrade,
        guard: InFlightGuard,
        connection: Arc<ClientConn>,
    ) {
        let count = guard.active().open_tunnel();
        let closing = self.closing.clone();
        self.tracker.spawn(async move {
            let _connection = connection;
            let active = Arc::clone(guard.active());
            let backend = active.backend();
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(service = %active.service(), slot = %backend.slot, "upgrade failed: {e}");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    tracing::debug!(service = %active.service(), slot = %backend.slot, "upgraded connection ended: {copied:?}");
                }
                () = active.tunnels_closed().cancelled() => {
                    tracing::info!(
                        service = %active.service(), slot = %backend.slot, release = %backend.release,
                        "closing an upgraded connection: the drain deadline of its slot passed"
                    );
                }
                () = closing.cancelled() => {
                    tracing::info!(service = %active.service(), "closing an upgraded connection: the edge stops");
                }
            }
            drop(count);
            drop(guard);
        });
    }

    /// Closes the open tunnels now: for an edge dropped without a graceful stop, whose
    /// tunnels would otherwise go on on the process's serving threads.
    pub(crate) fn cut(&self) {
        self.closing.cancel();
    }

    /// Waits for the open tunnels to end, at most `grace`, then closes the rest.
    pub(crate) async fn finish(&self, grace: Duration) {
        self.tracker.close();
        let open = self.tracker.len();
        if open == 0 {
            return;
        }
        tracing::info!(
            "letting {open} upgraded connection(s) finish (grace {})",
            humantime::format_duration(grace)
        );
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} upgraded connection(s) still open after the grace period; closing them",
                self.tracker.len()
            );
            self.closing.cancel();
            self.tracker.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_needs_http11_upgrade_and_connection_token() {
        let req = |version, upgrade: bool, connection: &str| {
            let mut builder = Request::builder().version(version);
            if upgrade {
                builder = builder.header("upgrade", "websocket");
            }
            builder.header("connection", connection).body(()).unwrap()
        };
        assert!(is_upgrade(&req(
            Version::HTTP_11,
            true,
            "keep-alive, Upgrade"
        )));
        assert!(!is_upgrade(&req(Version::HTTP_11, true, "keep-alive")));
        assert!(!is_upgrade(&req(Version::HTTP_11, false, "upgrade")));
        assert!(!is_upgrade(&req(Version::HTTP_10, true, "upgrade")));
        assert!(!is_upgrade(&req(Version::HTTP_2, true, "upgrade")));
    }

    use crate::Slot;
    use crate::test_backend::{SIGNAL_TIMEOUT, TestBackend, TestEdge, echo, get, websocket};

    #[tokio::test]
    async fn websocket_stays_on_old_slot_across_switch_until_drain_deadline() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut old = websocket(edge.addr()).await;
        assert_eq!(echo(&mut old, "hi").await.as_deref(), Some("blue: hi"));

        edge.switch(&green.backend(Slot::Green, "r2")).await;
        // New requests and new WebSockets go to green; the open one stays on blue.
        assert_eq!(
            get(edge.addr(), "/").await.backend.as_deref(),
            Some("green")
        );
        let mut new = websocket(edge.addr()).await;
        assert_eq!(echo(&mut new, "a").await.as_deref(), Some("green: a"));
        assert_eq!(echo(&mut old, "b").await.as_deref(), Some("blue: b"));
        let status = edge.client().status().await.unwrap();
        assert_eq!(status.routes[0].draining.len(), 1);
        assert_eq!(status.routes[0].draining[0].in_flight, 1);
        assert_eq!(status.routes[0].in_flight, 1, "the green WebSocket");

        let outcome = edge
            .client()
            .drain("web", "r1", Duration::from_millis(200))
            .await
            .unwrap();
        assert!(!outcome.drained, "{outcome:?}");
        assert_eq!(outcome.in_flight, 1);
        assert_eq!(outcome.closed, 1);
        // The deadline closed it: the next exchange finds the connection gone.
        assert_eq!(echo(&mut old, "c").await, None);
        let after = edge
            .client()
            .drain("web", "r1", SIGNAL_TIMEOUT)
            .await
            .unwrap();
        assert!(after.drained, "{after:?}");
        // The green one is untouched.
        assert_eq!(echo(&mut new, "d").await.as_deref(), Some("green: d"));
        assert_eq!(
            edge.metric("shipit_edge_upgraded_closed_total", &[]).await,
            1.0
        );
        assert_eq!(
            edge.metric(
                "shipit_edge_drains_total",
                &[("service", "web"), ("outcome", "deadline")]
            )
            .await,
            1.0
        );
    }

    /// The tunnels run on the process's serving threads, which outlive the edge: a handle
    /// dropped without a graceful stop (a failing test) still closes them.
    #[tokio::test]
    async fn a_dropped_edge_closes_its_websockets() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut ws = websocket(edge.addr()).await;
        assert_eq!(echo(&mut ws, "hi").await.as_deref(), Some("blue: hi"));
        drop(edge);
        let ended = tokio::time::timeout(SIGNAL_TIMEOUT, echo(&mut ws, "again")).await;
        assert_eq!(ended, Ok(None), "the WebSocket outlived its edge");
    }

    #[tokio::test]
    async fn drain_ends_when_the_websocket_closes_before_the_deadline() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let mut ws = websocket(edge.addr()).await;
        assert_eq!(echo(&mut ws, "hi").await.as_deref(), Some("blue: hi"));
        edge.switch(&green.backend(Slot::Green, "r2")).await;

        let client = edge.client();
        let drain =
            tokio::spawn(async move { client.drain("web", "r1", SIGNAL_TIMEOUT).await.unwrap() });
        edge.client().status().await.unwrap();
        assert!(
            !drain.is_finished(),
            "the open WebSocket must hold the drain"
        );
        ws.close(None).await.unwrap();
        drop(ws);
        let outcome = drain.await.unwrap();
        assert!(outcome.drained, "{outcome:?}");
        assert_eq!(outcome.closed, 0);
    }

    #[tokio::test]
    async fn upgrade_request_answered_without_101_is_a_plain_response() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let req = Request::builder()
            .uri("/headers")
            .header("host", "app.test")
            .header("connection", "upgrade")
            .header("upgrade", "h2c-nope")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let answer = crate::test_backend::send(edge.addr(), req).await;
        assert_eq!(answer.status, http::StatusCode::OK);
        let seen: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(&answer.body).unwrap();
        // The upgrade was offered to the slot, which declined it.
        assert_eq!(seen["upgrade"], vec!["h2c-nope".to_string()]);
        assert_eq!(seen["connection"], vec!["upgrade".to_string()]);
        // The request ends on its serving thread once its answer's last byte is written.
        edge.until_in_flight(0).await;
    }
}
