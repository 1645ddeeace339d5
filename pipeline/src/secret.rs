//! Secret values: a service's env values, and what hides them in free text.
//!
//! Where a value's place is known (the config's env, a task definition's environment), it is
//! replaced by [`REDACTED`] by name. [`Secrets::scrub`] is for text whose shape is not known:
//! log lines (a Docker client logging the create-container payload at debug level), and an
//! error that quotes rendered text. There a value is hidden where it follows its name
//! (`NAME=value`, Docker's env form), and anywhere once it is [`MIN_SCRUBBED_LEN`] long: a
//! shorter value ("1", "ok") occurs in text that has nothing to do with it.

use std::borrow::Cow;

mod arn;
mod fetch;

pub use arn::{SecretArn, SecretStore};
pub use fetch::{SecretError, fetch, remember, resolved};

use crate::config::Config;

/// What a secret value is printed as, unless secrets are asked for (`--show-secrets`).
pub const REDACTED: &str = "<redacted>";

/// The length from which a value is hidden wherever it occurs in free text.
pub const MIN_SCRUBBED_LEN: usize = 6;

/// The secret values of one or more services, to hide in free text.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// (name, value), longest value first so a value that holds another is replaced whole.
    pairs: Vec<(String, String)>,
}

impl Secrets {
    /// The secrets among `pairs` of (name, value); empty values hide nothing.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Secrets {
        let mut pairs: Vec<(String, String)> =
            pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        pairs.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        Secrets { pairs }
    }

    /// The env values of every service that a printout hides ([`Service::hidden_env_names`]):
    /// all of a service's own, or with `show_secrets` those of its `env_file`.
    ///
    /// [`Service::hidden_env_names`]: crate::config::Service::hidden_env_names
    pub fn of_config(config: &Config, show_secrets: bool) -> Secrets {
        // The notify webhook's URL is its key: hidden whatever `show_secrets` says.
        let webhook = config
            .notify
            .iter()
            .map(|n| ("notify.webhook".to_string(), n.webhook.clone()));
        Secrets::new(webhook.chain(config.services.values().flat_map(|service| {
            service
                .hidden_env_names(show_secrets)
                .into_iter()
                .filter_map(|name| {
                    let value = service.env.get(&name)?.clone();
                    Some((name, value))
                })
        })))
    }

    /// The env values of one service, all of them: what a record or an error hides.
    pub fn of_service(service: &crate::config::Service) -> Secrets {
        Secrets::new(
            service
                .hidden_env_names(false)
                .into_iter()
                .filter_map(|name| Some((name.clone(), service.env.get(&name)?.clone()))),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `text` with the secret values in it replaced by [`REDACTED`], as they are written and
    /// JSON-escaped.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for (name, value) in &self.pairs {
            let escaped = escape_json(value);
            let mut forms = vec![format!("{name}={escaped}"), format!("{name}={value}")];
            if value.len() >= MIN_SCRUBBED_LEN {
                forms.extend([escaped, value.clone()]);
            }
            for form in forms {
                if text.contains(form.as_str()) {
                    let hidden = match form.split_once('=') {
                        Some((named, _)) if *named == **name => format!("{name}={REDACTED}"),
                        _ => REDACTED.to_string(),
                    };
                    text = Cow::Owned(text.replace(form.as_str(), &hidden));
                }
            }
        }
        text
    }
}

/// `text` as it is written inside a JSON string.
fn escape_json(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::new([
            ("DB_PASSWORD".to_string(), "pa\"ss-word-1".to_string()),
            ("FLAG".to_string(), "ok".to_string()),
            ("EMPTY".to_string(), String::new()),
        ])
    }

    #[test]
    fn long_values_are_hidden_wherever_they_are_and_short_ones_after_their_name() {
        let s = secrets();
        let log = r#"{"Env":["DB_PASSWORD=pa\"ss-word-1","FLAG=ok","PORT=8080"]} ok"#;
        assert_eq!(
            s.scrub(log),
            r#"{"Env":["DB_PASSWORD=<redacted>","FLAG=<redacted>","PORT=8080"]} ok"#
        );
        assert_eq!(
            s.scrub("login failed for pa\"ss-word-1"),
            "login failed for <redacted>"
        );
        assert_eq!(s.scrub("all ok, EMPTY="), "all ok, EMPTY=");
        assert!(matches!(s.scrub("nothing here"), Cow::Borrowed(_)));
    }
}
