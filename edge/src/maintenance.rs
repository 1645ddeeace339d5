//! Maintenance mode of a route: every request it matches is answered `503 Service
//! Unavailable` by the edge itself, with a small HTML page (`PUT` and `DELETE
//! /routes/{service}/maintenance`). Nothing reaches a slot meanwhile.
//!
//! The page carries the operator's message, HTML-escaped (an operator's text never becomes
//! markup), or [`DEFAULT_MAINTENANCE_MESSAGE`]; it is built once, when maintenance is
//! turned on, and every answer shares its bytes. The answer says `Retry-After` (the
//! operator's, or [`DEFAULT_MAINTENANCE_RETRY_AFTER`]) and `Cache-Control: no-store`, so no
//! cache keeps the page once the service is back. Maintenance wins over a pause, and it is
//! saved with the routes ([`crate::state`]), so it lasts across restarts and hand-overs
//! until it is turned off.

use bytes::Bytes;
use http::HeaderValue;
use jiff::Timestamp;

/// The longest message an operator may put on the page, in bytes.
pub const MAX_MAINTENANCE_MESSAGE: usize = 2 * 1024;

/// The longest `Retry-After` asked for, in seconds (a day).
pub const MAX_RETRY_AFTER_S: u32 = 24 * 60 * 60;

/// The page's message when the operator gives none.
pub const DEFAULT_MAINTENANCE_MESSAGE: &str =
    "This service is down for maintenance. Please try again later.";

/// The `Retry-After` of a maintenance answer when the operator gives none, in seconds.
pub const DEFAULT_MAINTENANCE_RETRY_AFTER: u32 = 60;

/// A route's maintenance, with its page ready to send.
#[derive(Debug)]
pub struct Maintenance {
    /// The operator's message; `None`: the default.
    message: Option<String>,
    retry_after_s: u32,
    since: Timestamp,
    page: Bytes,
    retry_after: HeaderValue,
}

/// A copy of a route's maintenance, for status answers and for persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceView {
    /// The operator's message; `None`: [`DEFAULT_MAINTENANCE_MESSAGE`].
    pub message: Option<String>,
    pub retry_after_s: u32,
    /// When it was turned on.
    pub since: Timestamp,
}

/// Checks what an operator asked for over the admin API: a message of 1 to
/// [`MAX_MAINTENANCE_MESSAGE`] bytes (or none), a `Retry-After` of 1 to
/// [`MAX_RETRY_AFTER_S`] seconds (or none). Returns the `Retry-After` to use.
pub fn checked_maintenance(
    message: Option<&str>,
    retry_after_s: Option<u32>,
) -> Result<u32, String> {
    if let Some(message) = message {
        if message.trim().is_empty() {
            return Err(
                "the maintenance `message` is empty; leave it out for the default page".into(),
            );
        }
        if message.len() > MAX_MAINTENANCE_MESSAGE {
            return Err(format!(
                "the maintenance `message` is {} bytes; at most {MAX_MAINTENANCE_MESSAGE} fit \
                 on the page",
                message.len()
            ));
        }
    }
    match retry_after_s {
        None => Ok(DEFAULT_MAINTENANCE_RETRY_AFTER),
        Some(s) if (1..=MAX_RETRY_AFTER_S).contains(&s) => Ok(s),
        Some(s) => Err(format!(
            "`retry_after_s` must be 1 to {MAX_RETRY_AFTER_S} (a day), not {s}"
        )),
    }
}

impl Maintenance {
    pub(crate) fn new(message: Option<String>, retry_after_s: u32, since: Timestamp) -> Self {
        let page = Bytes::from(page(
            message.as_deref().unwrap_or(DEFAULT_MAINTENANCE_MESSAGE),
        ));
        Maintenance {
            message,
            retry_after_s,
            since,
            page,
            retry_after: HeaderValue::from(retry_after_s),
        }
    }

    /// The HTML page, whole (a HEAD answer names its length and sends none of it).
    pub(crate) fn page(&self) -> &Bytes {
        &self.page
    }

    /// The `Retry-After` value.
    pub(crate) fn retry_after(&self) -> &HeaderValue {
        &self.retry_after
    }

    pub(crate) fn view(&self) -> MaintenanceView {
        MaintenanceView {
            message: self.message.clone(),
            retry_after_s: self.retry_after_s,
            since: self.since,
        }
    }
}

/// The maintenance page around `message`.
fn page(message: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>503 Service Unavailable</title>\n</head>\n<body>\n\
         <h1>Service Unavailable</h1>\n<p>{}</p>\n</body>\n</html>\n",
        escape_html(message)
    )
}

/// `text` with every character that means something in HTML (in content or in a quoted
/// attribute) written as an entity.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
