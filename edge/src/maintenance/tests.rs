use super::*;

use std::time::Duration;

use http::{Method, StatusCode};

use crate::Slot;
use crate::test_backend::{Client, Protocol, Reply, SIGNAL_TIMEOUT, TestBackend, TestEdge};

#[test]
fn markup_in_the_message_is_escaped() {
    let m = Maintenance::new(
        Some("<script>alert('x')</script> & \"more\"".into()),
        30,
        Timestamp::now(),
    );
    let page = std::str::from_utf8(m.page()).unwrap();
    assert!(
        page.contains(
            "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;</p>"
        ),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    assert_eq!(m.retry_after(), "30");
}

#[test]
fn without_a_message_the_page_says_the_default() {
    let m = Maintenance::new(None, DEFAULT_MAINTENANCE_RETRY_AFTER, Timestamp::now());
    let page = std::str::from_utf8(m.page()).unwrap();
    assert!(page.contains(DEFAULT_MAINTENANCE_MESSAGE), "{page}");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert_eq!(m.view().message, None);
}

#[test]
fn messages_and_retry_after_are_bounded() {
    assert_eq!(
        checked_maintenance(None, None),
        Ok(DEFAULT_MAINTENANCE_RETRY_AFTER)
    );
    assert_eq!(checked_maintenance(Some("back soon"), Some(120)), Ok(120));
    let longest = "x".repeat(MAX_MAINTENANCE_MESSAGE);
    assert!(checked_maintenance(Some(&longest), None).is_ok());
    let too_long = "x".repeat(MAX_MAINTENANCE_MESSAGE + 1);
    let error = checked_maintenance(Some(&too_long), None).unwrap_err();
    assert!(error.contains("2049 bytes"), "{error}");
    assert!(checked_maintenance(Some("  "), None).is_err());
    assert!(checked_maintenance(None, Some(0)).is_err());
    assert!(checked_maintenance(None, Some(MAX_RETRY_AFTER_S + 1)).is_err());
}

/// What an operator might paste, markup and all.
const HOSTILE: &str = "<script>alert('owned')</script> Back at 10:00 & \"soon\"";

/// Checks a maintenance answer: 503, the HTML page with `message` escaped, and its headers.
fn assert_page(reply: &Reply, message: &str, retry_after: &str, what: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    assert_eq!(reply.header("retry-after"), Some(retry_after), "{what}");
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
    let length = reply.body.len().to_string();
    assert_eq!(
        reply.header("content-length"),
        Some(length.as_str()),
        "{what}"
    );
    let page = reply.text();
    assert!(page.contains(&escape_html(message)), "{what}: {page}");
    assert!(!page.contains("<script"), "{what}: {page}");
}

async fn maintenance_on_and_off(protocol: Protocol) {
    let edge = TestEdge::start_with(protocol.tuning()).await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let admin = edge.client();
    let on = admin.maintenance("web", Some(HOSTILE)).await.unwrap();
    assert_eq!(on.previous, None);
    let status = admin.status().await.unwrap();
    let shown = status.routes[0].maintenance.clone().unwrap();
    assert_eq!(shown.message.as_deref(), Some(HOSTILE));
    assert_eq!(shown.retry_after_s, DEFAULT_MAINTENANCE_RETRY_AFTER);

    let mut client = Client::open(edge.addr(), protocol).await;
    let page = client.get("/any/path").await.unwrap();
    assert_page(&page, HOSTILE, "60", &format!("{protocol:?} GET"));
    // HEAD: the same head, no body; the next answer on the connection is whole.
    let head = client.send(Method::HEAD, "/").await.unwrap();
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE, "{protocol:?}");
    assert!(head.body.is_empty(), "{protocol:?}");
    let length = page.body.len().to_string();
    assert_eq!(
        head.header("content-length"),
        Some(length.as_str()),
        "{protocol:?}"
    );
    assert_eq!(head.header("retry-after"), Some("60"), "{protocol:?}");
    let again = client.get("/").await.unwrap();
    assert_eq!(again.body, page.body, "{protocol:?}");
    assert_eq!(blue.served(), 0, "{protocol:?}");
    let counted = edge
        .metric(
            "shipit_edge_closed_route_answers_total",
            &[("reason", "maintenance")],
        )
        .await;
    assert_eq!(counted, 3.0, "{protocol:?}");

    let off = admin.maintenance_off("web").await.unwrap();
    assert_eq!(off.maintenance, None);
    assert_eq!(off.previous.unwrap().message.as_deref(), Some(HOSTILE));
    let served = client.get("/").await.unwrap();
    assert_eq!(served.status, StatusCode::OK, "{protocol:?}");
    assert_eq!(served.header("x-backend"), Some("blue"), "{protocol:?}");
    assert_eq!(admin.status().await.unwrap().routes[0].maintenance, None);
}

#[tokio::test]
async fn maintenance_answers_503_with_the_escaped_page_and_off_serves_again() {
    for protocol in Protocol::ALL {
        maintenance_on_and_off(protocol).await;
    }
}

#[tokio::test]
async fn maintenance_without_a_message_shows_the_default_and_its_retry_after() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let on = edge
        .client()
        .maintenance_with("web", None, Some(Duration::from_millis(1_500)))
        .await
        .unwrap();
    assert_eq!(on.maintenance.unwrap().retry_after_s, 2);
    let mut client = Client::open(edge.addr(), Protocol::Relay).await;
    let page = client.get("/").await.unwrap();
    assert_page(&page, DEFAULT_MAINTENANCE_MESSAGE, "2", "default");
}

#[tokio::test]
async fn maintenance_wins_over_a_pause_and_the_pause_holds_once_it_is_off() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let admin = edge.client();
    admin.pause("web", Duration::from_secs(600)).await.unwrap();
    admin.maintenance("web", Some("upgrading")).await.unwrap();
    // Answered at once with the page, not held.
    let mut client = Client::open(edge.addr(), Protocol::Relay).await;
    let page = tokio::time::timeout(SIGNAL_TIMEOUT, client.get("/"))
        .await
        .expect("a request under maintenance was held")
        .unwrap();
    assert_page(&page, "upgrading", "60", "paused and under maintenance");

    admin.maintenance_off("web").await.unwrap();
    let addr = edge.addr();
    let held = tokio::spawn(async move {
        let mut client = Client::open(addr, Protocol::Relay).await;
        client.get("/").await.unwrap()
    });
    edge.until_held(1).await;
    assert_eq!(admin.resume("web").await.unwrap().released, 1);
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(blue.served(), 1);
}

#[tokio::test]
async fn maintenance_and_a_pause_survive_a_restart() {
    let edge = TestEdge::start().await;
    let blue = TestBackend::start("blue").await;
    edge.switch(&blue.backend(Slot::Blue, "r1")).await;
    let admin = edge.client();
    admin.maintenance("web", Some(HOSTILE)).await.unwrap();
    let paused = admin.pause("web", Duration::from_secs(600)).await.unwrap();
    let before = admin.status().await.unwrap().routes[0].clone();
    let TestEdge { dir, handle } = edge;
    handle.shutdown().await.unwrap();

    let restarted = crate::server::start(crate::EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let route = restarted.client().status().await.unwrap().routes[0].clone();
    assert_eq!(route.maintenance, before.maintenance);
    let pause = route.paused.unwrap();
    assert_eq!((pause.deadline, pause.expired), (paused.deadline, false));
    let mut client = Client::open(restarted.local_addr(), Protocol::Relay).await;
    let page = client.get("/").await.unwrap();
    assert_page(&page, HOSTILE, "60", "after a restart");
    assert_eq!(blue.served(), 0);
    restarted.shutdown().await.unwrap();
}
