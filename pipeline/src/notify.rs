//! `[notify]`: when a release, rollback or promotion ends, one JSON POST to a webhook. The
//! body is Slack-compatible (`text`, one line a person reads) and carries the details for
//! other receivers under `shipit`: the service, target, release, outcome, versions and
//! duration.
//!
//! A notification never changes how the run ended: the caller shows a failed post as a
//! warning. The webhook URL is a secret (a Slack webhook's path is its key): it is not in any
//! message, including the error of a failed post.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::history::{Kind, Outcome, ReleaseRecord};

/// What the webhook is told about one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// One line for a chat.
    pub text: String,
    pub shipit: Details,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Details {
    pub service: String,
    pub target: String,
    /// `release`, `rollback` or `promote`.
    pub action: String,
    /// `succeeded`, `failed`, `interrupted`, `staged`, or `refused` (the run stopped before
    /// it had a record: the lock was held, the versions could not be applied).
    pub outcome: String,
    /// The attempt's id, when it got one.
    pub id: Option<String>,
    /// The release it serves, once live.
    pub serves: Option<String>,
    /// The release that was live when it started.
    pub previous: Option<String>,
    pub version: Option<String>,
    pub modules: std::collections::BTreeMap<String, String>,
    pub duration_ms: Option<u64>,
    /// Why it failed.
    pub cause: Option<String>,
    /// Where the service is reached.
    pub url: String,
}

/// The message for a run that ended with `record`, or, without one, failed with `cause`.
pub fn message(
    action: &str,
    service: &str,
    target: &str,
    url: &str,
    record: Option<&ReleaseRecord>,
    cause: Option<&str>,
) -> Message {
    let outcome = match record {
        Some(r) => r.outcome.label().to_string(),
        None => "refused".to_string(),
    };
    let cause = cause
        .map(str::to_string)
        .or_else(|| match record.map(|r| &r.outcome) {
            Some(Outcome::Failed { cause, .. } | Outcome::Interrupted { cause }) => {
                Some(cause.clone())
            }
            _ => None,
        });
    let action = match record.map(|r| r.kind) {
        Some(Kind::Rollback) if action == "release" => "rollback".to_string(),
        _ => action.to_string(),
    };
    let duration = record.and_then(ReleaseRecord::duration);
    let details = Details {
        service: service.to_string(),
        target: target.to_string(),
        action,
        outcome,
        id: record.map(|r| r.id.clone()),
        serves: record
            .filter(|r| r.outcome == Outcome::Succeeded)
            .map(|r| r.serves.clone()),
        previous: record.and_then(|r| r.previous.clone()),
        version: record.map(|r| r.version.clone()),
        modules: record.map(|r| r.modules.clone()).unwrap_or_default(),
        duration_ms: duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        cause,
        url: url.to_string(),
    };
    Message {
        text: text(&details, duration),
        shipit: details,
    }
}

fn text(d: &Details, duration: Option<Duration>) -> String {
    let mut line = format!("{} on {}: {}", d.service, d.target, d.action);
    if let Some(id) = &d.id {
        line.push_str(&format!(" {id}"));
    }
    line.push_str(&format!(" {}", d.outcome));
    if let Some(took) = duration {
        line.push_str(&format!(" in {:.1} s", took.as_secs_f64()));
    }
    if d.outcome == "succeeded" {
        if let Some(serves) = &d.serves {
            line.push_str(&format!("; {serves} is live at {}", d.url));
        }
        if let Some(version) = &d.version {
            line.push_str(&format!(", version {version}"));
        }
        if !d.modules.is_empty() {
            let modules: Vec<String> = d.modules.iter().map(|(m, v)| format!("{m} {v}")).collect();
            line.push_str(&format!(", modules {}", modules.join(", ")));
        }
    } else {
        if let Some(cause) = &d.cause {
            line.push_str(&format!(": {cause}"));
        }
        if let Some(previous) = &d.previous {
            line.push_str(&format!("; {previous} stays live"));
        }
    }
    line
}

/// Posts `message` to `webhook` within `timeout`. The error says what went wrong, never the
/// URL.
pub async fn post(webhook: &str, message: &Message, timeout: Duration) -> Result<(), String> {
    let uri: hyper::Uri = webhook
        .parse()
        .map_err(|_| "the webhook is not a URL".to_string())?;
    let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("shipit/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            // The error's text may hold the URL; say what kind of failure it was.
            if e.is_connect() {
                "could not connect to the webhook's host".to_string()
            } else {
                "the request failed".to_string()
            }
        })?;
        let status = response.status();
        // Read to the end (the connection is then done), but never shown: a receiver's
        // error page may quote the URL's path, which is the secret.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the webhook did not answer within {:.1} s",
            timeout.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Slot;
    use crate::history::Kind;

    fn record(outcome: Outcome) -> ReleaseRecord {
        let id = "20261206-013000-ab12";
        let started: jiff::Timestamp = "2026-12-06T01:30:00Z".parse().unwrap();
        ReleaseRecord {
            id: id.into(),
            kind: Kind::Release,
            service: "web".into(),
            target: "prod".into(),
            serves: id.into(),
            slot: Some(Slot::Green),
            image: None,
            image_id: None,
            handle: None,
            version: "1a2b3c4d5e6f".into(),
            revision: None,
            modules: [("core".to_string(), "1.2.1".to_string())].into(),
            image_reused: false,
            previous: Some("20261205-120000-cd34".into()),
            user: "me".into(),
            host: "box".into(),
            started_at: started,
            finished_at: Some(started + jiff::SignedDuration::from_millis(12_300)),
            phases: vec![],
            shift_steps: vec![],
            warmup: None,
            outcome,
        }
    }

    #[test]
    fn a_success_says_what_is_live_with_its_versions_and_time() {
        let m = message(
            "release",
            "web",
            "prod",
            "https://web.example.com",
            Some(&record(Outcome::Succeeded)),
            None,
        );
        assert_eq!(
            m.text,
            "web on prod: release 20261206-013000-ab12 succeeded in 12.3 s; \
             20261206-013000-ab12 is live at https://web.example.com, version 1a2b3c4d5e6f, \
             modules core 1.2.1"
        );
        assert_eq!(m.shipit.duration_ms, Some(12_300));
        assert_eq!(m.shipit.serves.as_deref(), Some("20261206-013000-ab12"));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["shipit"]["modules"]["core"], "1.2.1");
        assert!(json["text"].is_string(), "Slack reads `text`");
    }

    #[test]
    fn a_failure_gives_the_cause_and_what_stays_live() {
        let failed = record(Outcome::Failed {
            cause: "verify failed: /healthz answered 500".into(),
            hint: None,
        });
        let m = message("release", "web", "prod", "http://x", Some(&failed), None);
        assert!(
            m.text.ends_with(
                "failed in 12.3 s: verify failed: /healthz answered 500; \
                 20261205-120000-cd34 stays live"
            ),
            "{}",
            m.text
        );
        assert_eq!(m.shipit.serves, None);
        let refused = message("rollback", "web", "prod", "http://x", None, Some("locked"));
        assert_eq!(refused.shipit.outcome, "refused");
        assert_eq!(refused.text, "web on prod: rollback refused: locked");
    }
}
