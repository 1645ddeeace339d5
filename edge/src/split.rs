//! The weighted split between a service's live slot and its candidate, and the two ways a
//! client picks a slot itself: the sticky cookie and the preview pin.
//!
//! - A client without a valid cookie is assigned by a counter, so that exactly `percent` of
//!   every hundred such clients go to the candidate, spread evenly (not the first ten of each
//!   hundred). The answer sets `shipit_slot=<slot>.<release>` so the client stays where it
//!   was put while the split lasts.
//! - The cookie names the release as well as the slot: after a promotion the slots swap
//!   roles, and a cookie that only said `blue` would send every client that sat on the old
//!   live slot to the next release's candidate.
//! - `X-Shipit-Slot: <slot>` pins one request to that slot's registered backend, for a
//!   person checking a candidate before it is promoted.
//!
//! Only backends the pipeline registered (live or candidate) can be chosen: a cookie or
//! header that names anything else is ignored.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::{Backend, Slot};

/// The cookie that keeps a client on one side of a split.
pub const STICKY_COOKIE: &str = "shipit_slot";
/// The request header that pins a request to a slot (`blue` or `green`).
pub const SLOT_HEADER: HeaderName = HeaderName::from_static("x-shipit-slot");

/// Decides, for clients without a valid cookie, which ones go to the candidate.
#[derive(Debug, Default)]
pub struct SplitCounter(AtomicU64);

impl SplitCounter {
    /// Whether the next new client goes to the candidate, so that over any hundred
    /// consecutive new clients exactly `percent` do.
    pub fn to_candidate(&self, percent: u8) -> bool {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let p = u64::from(percent.min(100));
        (n % 100 + 1) * p / 100 > (n % 100) * p / 100
    }
}

/// The slot named by `X-Shipit-Slot`, if the request has a valid one.
pub fn pinned_slot(headers: &HeaderMap) -> Option<Slot> {
    headers
        .get(&SLOT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .to_ascii_lowercase()
        .parse()
        .ok()
}

/// Which of `backends` the request's sticky cookie names, if any.
pub fn sticky<T>(headers: &HeaderMap, backends: [(&Backend, T); 2]) -> Option<T> {
    let [(first, a), (second, b)] = backends;
    let mut a = Some(a);
    let mut b = Some(b);
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some(cookie) = pair.trim().strip_prefix(STICKY_COOKIE) else {
                continue;
            };
            let Some(cookie) = cookie.strip_prefix('=') else {
                continue;
            };
            if names(cookie, first) {
                return a.take();
            }
            if names(cookie, second) {
                return b.take();
            }
        }
    }
    None
}

fn names(cookie: &str, backend: &Backend) -> bool {
    cookie
        .split_once('.')
        .is_some_and(|(slot, tag)| slot == backend.slot.as_str() && tag == release_tag(backend))
}

/// The `Set-Cookie` value that keeps the client on `backend`, scoped to the route's path.
pub fn set_cookie(backend: &Backend, path: &str) -> Option<HeaderValue> {
    let path = if path.is_empty() { "/" } else { path };
    HeaderValue::try_from(format!(
        "{STICKY_COOKIE}={}.{}; Path={path}; HttpOnly; SameSite=Lax",
        backend.slot,
        release_tag(backend)
    ))
    .ok()
}

/// The release as it appears in the cookie: as is when it is a valid cookie value,
/// otherwise a hash of it.
fn release_tag(backend: &Backend) -> Cow<'_, str> {
    let release = backend.release.as_str();
    // RFC 6265 cookie-octet.
    let safe = release
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E));
    if safe && !release.is_empty() {
        Cow::Borrowed(release)
    } else {
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let hash = release.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Cow::Owned(format!("h{hash:016x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(slot: Slot, release: &str) -> Backend {
        Backend {
            slot,
            release: release.into(),
            addr: "127.0.0.1:9001".parse().unwrap(),
            more_addrs: Vec::new(),
        }
    }

    #[test]
    fn counter_sends_exactly_the_percent_spread_over_each_hundred() {
        for percent in [0u8, 1, 10, 33, 50, 99, 100] {
            let counter = SplitCounter::default();
            let picks: Vec<bool> = (0..300).map(|_| counter.to_candidate(percent)).collect();
            for hundred in picks.chunks(100) {
                let n = hundred.iter().filter(|p| **p).count();
                assert_eq!(n, usize::from(percent), "{percent}%");
            }
            if percent == 10 {
                // Spread: one in each run of ten, not ten in a row.
                for ten in picks.chunks(10) {
                    assert_eq!(ten.iter().filter(|p| **p).count(), 1);
                }
            }
        }
    }

    #[test]
    fn cookie_names_slot_and_release_and_round_trips() {
        let live = backend(Slot::Blue, "20261122-101500-a1b2");
        let candidate = backend(Slot::Green, "odd release;x");
        let value = set_cookie(&candidate, "/api").unwrap();
        let text = value.to_str().unwrap();
        assert!(text.starts_with("shipit_slot=green.h"), "{text}");
        assert!(
            text.ends_with("; Path=/api; HttpOnly; SameSite=Lax"),
            "{text}"
        );
        let cookie = text.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("theme=dark; {cookie}").parse().unwrap(),
        );
        assert_eq!(
            sticky(&headers, [(&live, "live"), (&candidate, "candidate")]),
            Some("candidate")
        );
        let live_cookie = set_cookie(&live, "").unwrap();
        assert!(
            live_cookie
                .to_str()
                .unwrap()
                .starts_with("shipit_slot=blue.20261122-101500-a1b2; Path=/;")
        );
    }

    #[test]
    fn cookie_of_another_release_in_the_same_slot_is_ignored() {
        let live = backend(Slot::Green, "r2");
        let candidate = backend(Slot::Blue, "r3");
        let mut headers = HeaderMap::new();
        // Left from the previous split, where blue was the live r1.
        headers.insert(header::COOKIE, "shipit_slot=blue.r1".parse().unwrap());
        assert_eq!(sticky(&headers, [(&live, 1), (&candidate, 2)]), None);
        headers.insert(header::COOKIE, "shipit_slot_x=blue.r3".parse().unwrap());
        assert_eq!(sticky(&headers, [(&live, 1), (&candidate, 2)]), None);
    }

    #[test]
    fn slot_header_is_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(pinned_slot(&headers), None);
        headers.insert(&SLOT_HEADER, " Green ".parse().unwrap());
        assert_eq!(pinned_slot(&headers), Some(Slot::Green));
        headers.insert(&SLOT_HEADER, "red".parse().unwrap());
        assert_eq!(pinned_slot(&headers), None);
    }

    use bytes::Bytes;
    use http::{Request, StatusCode};
    use http_body_util::Full;

    use crate::test_backend::{Connection, TestBackend, TestEdge, answer, get, send};

    fn with_header(path: &str, name: &str, value: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .uri(path)
            .header("host", "app.test")
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn weighted_split_sends_ten_percent_of_new_clients_to_the_candidate() {
        const CLIENTS: usize = 2000;
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let set = edge
            .client()
            .weights("web", &green.backend(Slot::Green, "r2"), 10)
            .await
            .unwrap();
        assert_eq!(set.percent, 10);
        assert_eq!(set.replaced, None);

        // Every request comes without a cookie: each is a new client.
        let mut connection = Connection::open(edge.addr()).await;
        let mut to_green = 0usize;
        for _ in 0..CLIENTS {
            let response = connection
                .send(crate::test_backend::request("/"))
                .await
                .unwrap();
            let cookie = response.headers()[http::header::SET_COOKIE]
                .to_str()
                .unwrap()
                .to_string();
            let answer = answer(response).await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            let slot = answer.backend.unwrap();
            assert!(
                cookie.starts_with(&format!("shipit_slot={slot}.")),
                "{cookie}"
            );
            to_green += usize::from(slot == "green");
        }
        let share = to_green as f64 / CLIENTS as f64;
        assert!(
            (0.07..=0.13).contains(&share),
            "{to_green} of {CLIENTS} went to green"
        );
        assert_eq!(blue.served() + green.served(), CLIENTS);
    }

    #[tokio::test]
    async fn client_keeps_its_side_of_the_split_by_cookie() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        edge.client()
            .weights("web", &green.backend(Slot::Green, "r2"), 50)
            .await
            .unwrap();
        let mut connection = Connection::open(edge.addr()).await;
        let mut sides = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let response = connection
                .send(crate::test_backend::request("/"))
                .await
                .unwrap();
            let cookie = response.headers()[http::header::SET_COOKIE]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let first = answer(response).await.unwrap().backend.unwrap();
            sides.insert(first.clone());
            for _ in 0..25 {
                let response = connection
                    .send(with_header("/", "cookie", &cookie))
                    .await
                    .unwrap();
                assert!(!response.headers().contains_key(http::header::SET_COOKIE));
                let again = answer(response).await.unwrap().backend.unwrap();
                assert_eq!(again, first, "cookie {cookie}");
            }
        }
        assert_eq!(sides.len(), 2, "a 50 % split put four clients on one side");

        // A normal switch ends the split: the cookie no longer matters.
        edge.switch(&green.backend(Slot::Green, "r2")).await;
        let answer = send(
            edge.addr(),
            with_header("/", "cookie", "shipit_slot=blue.r1"),
        )
        .await;
        assert_eq!(answer.backend.as_deref(), Some("green"));
        assert!(
            edge.client().status().await.unwrap().routes[0]
                .candidate
                .is_none()
        );
    }

    #[tokio::test]
    async fn preview_pin_reaches_the_idle_candidate_by_header_only() {
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;

        // Before it is registered, the header cannot reach green.
        let unregistered = send(edge.addr(), with_header("/", "x-shipit-slot", "green")).await;
        assert_eq!(unregistered.backend.as_deref(), Some("blue"));

        edge.client()
            .preview("web", &green.backend(Slot::Green, "r2"), None)
            .await
            .unwrap();
        for _ in 0..20 {
            assert_eq!(get(edge.addr(), "/").await.backend.as_deref(), Some("blue"));
        }
        let mut connection = Connection::open(edge.addr()).await;
        let response = connection
            .send(with_header("/", "X-Shipit-Slot", "green"))
            .await
            .unwrap();
        assert_eq!(response.headers()["x-shipit-slot"], "green");
        assert_eq!(
            answer(response).await.unwrap().backend.as_deref(),
            Some("green")
        );
        let live = send(edge.addr(), with_header("/", "x-shipit-slot", "blue")).await;
        assert_eq!(live.backend.as_deref(), Some("blue"));
        let status = edge.client().status().await.unwrap();
        let candidate = status.routes[0].candidate.as_ref().unwrap();
        assert_eq!(candidate.backend, green.backend(Slot::Green, "r2"));
        assert_eq!(candidate.percent, 0);

        // `shipit promote`: the switch makes the previewed candidate live.
        let switched = edge
            .client()
            .switch("web", &green.backend(Slot::Green, "r2"))
            .await
            .unwrap();
        assert_eq!(switched.previous, Some(blue.backend(Slot::Blue, "r1")));
        assert_eq!(
            get(edge.addr(), "/").await.backend.as_deref(),
            Some("green")
        );
    }

    #[tokio::test]
    async fn preview_host_name_reaches_the_candidate() {
        let logs = crate::test_backend::Logs::capture();
        let edge = TestEdge::start().await;
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        edge.switch(&blue.backend(Slot::Blue, "r1")).await;
        let hosts = vec!["preview.app.test".to_string()];
        edge.client()
            .preview("web", &green.backend(Slot::Green, "r2"), Some(&hosts))
            .await
            .unwrap();
        let preview = Request::builder()
            .uri("/")
            .header("host", "preview.app.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(
            send(edge.addr(), preview).await.backend.as_deref(),
            Some("green")
        );
        assert_eq!(get(edge.addr(), "/").await.backend.as_deref(), Some("blue"));

        let removed = edge.client().clear_preview("web").await.unwrap();
        assert_eq!(removed, Some(green.backend(Slot::Green, "r2")));
        let preview = Request::builder()
            .uri("/")
            .header("host", "preview.app.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(edge.addr(), preview).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        let id = crate::test_backend::generic_answer(&answer.body, StatusCode::SERVICE_UNAVAILABLE);
        assert!(logs.line_of(&id).contains("no candidate of service web"));
    }

    #[tokio::test]
    async fn two_services_on_path_prefixes_are_released_independently() {
        let edge = TestEdge::start().await;
        let web_blue = TestBackend::start("web-blue").await;
        let api_blue = TestBackend::start("api-blue").await;
        let api_green = TestBackend::start("api-green").await;
        let client = edge.client();
        let api = crate::Routing {
            hosts: None,
            paths: Some(vec!["/api".into()]),
        };
        client
            .switch_with("api", &api_blue.backend(Slot::Blue, "a1"), &api)
            .await
            .unwrap();
        client
            .switch("web", &web_blue.backend(Slot::Blue, "w1"))
            .await
            .unwrap();
        let addr = edge.addr();
        let at = |path: &'static str| async move { get(addr, path).await.backend };
        assert_eq!(at("/api/users").await.as_deref(), Some("api-blue"));
        assert_eq!(at("/").await.as_deref(), Some("web-blue"));
        assert_eq!(at("/apix").await.as_deref(), Some("web-blue"));

        // Release api alone: web does not move.
        client
            .switch("api", &api_green.backend(Slot::Green, "a2"))
            .await
            .unwrap();
        assert_eq!(at("/api").await.as_deref(), Some("api-green"));
        assert_eq!(at("/index.html").await.as_deref(), Some("web-blue"));
        // And roll it back.
        client
            .switch("api", &api_blue.backend(Slot::Blue, "a1"))
            .await
            .unwrap();
        assert_eq!(at("/api/v2").await.as_deref(), Some("api-blue"));
        let status = client.status().await.unwrap();
        let services: Vec<(&str, &str)> = status
            .routes
            .iter()
            .map(|r| {
                (
                    r.service.as_str(),
                    r.live.as_ref().unwrap().release.as_str(),
                )
            })
            .collect();
        assert_eq!(services, vec![("api", "a1"), ("web", "w1")]);
        assert_eq!(status.routes[0].paths, vec!["/api".to_string()]);
    }
}
