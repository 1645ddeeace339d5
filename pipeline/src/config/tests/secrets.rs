//! `[services.<s>.secrets]`: names to ARNs, checked when the config loads.

use super::*;

const SSM: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db-password";
const SM: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-AbCdEf:token::";

#[test]
fn secrets_are_read_by_name_and_printed_as_their_arns() {
    let config = parse(&format!(
        "[services.hello]\nport = 8080\n[services.hello.secrets]\nDB_PASSWORD = \"{SSM}\"\nAPI_TOKEN = \"{SM}\"\n"
    ));
    let secrets = &config.services["hello"].secrets;
    assert_eq!(secrets["DB_PASSWORD"].id, "/prod/db-password");
    assert_eq!(secrets["API_TOKEN"].json_key.as_deref(), Some("token"));
    let json = serde_json::to_value(&config.services["hello"]).unwrap();
    assert_eq!(json["secrets"]["DB_PASSWORD"], SSM);
    assert!(!config.services["hello"].env.contains_key("DB_PASSWORD"));
}

#[test]
fn a_bad_secret_names_its_key_and_what_was_expected() {
    let error = parse_err(
        "[services.hello]\nport = 8080\n[services.hello.secrets]\nDB_PASSWORD = \"hunter2\"\n",
    );
    assert_eq!(
        error.key.as_deref(),
        Some("services.hello.secrets.DB_PASSWORD")
    );
    assert!(
        error.message.contains("invalid secret ARN"),
        "{}",
        error.message
    );
    assert!(
        error
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("arn:aws:ssm:"),
        "{error:?}"
    );

    let error = parse_err(&format!(
        "[services.hello]\nport = 8080\nenv = {{ DB_PASSWORD = \"x\" }}\n[services.hello.secrets]\nDB_PASSWORD = \"{SSM}\"\n"
    ));
    assert_eq!(
        error.key.as_deref(),
        Some("services.hello.secrets.DB_PASSWORD")
    );
    assert!(error.message.contains("both env"), "{}", error.message);

    let error = parse_err(&format!(
        "[services.hello]\nport = 8080\n[services.hello.secrets]\nSHIPIT_RELEASE = \"{SSM}\"\n"
    ));
    assert_eq!(
        error.key.as_deref(),
        Some("services.hello.secrets.SHIPIT_RELEASE")
    );
}

#[test]
fn notify_webhook_is_an_http_url_never_repeated_and_empty_turns_it_off() {
    let config = parse("[notify]\nwebhook = \"https://hooks.example.com/T0/B0/key\"\n");
    let notify = config.notify.as_ref().expect("a webhook");
    assert_eq!(notify.webhook, "https://hooks.example.com/T0/B0/key");
    assert_eq!(notify.timeout, crate::config::DEFAULT_NOTIFY_TIMEOUT);
    let shown = serde_json::to_string(&config).unwrap();
    assert!(!shown.contains("T0/B0/key"), "{shown}");
    assert!(
        crate::secret::Secrets::of_config(&config, true)
            .scrub("posting to https://hooks.example.com/T0/B0/key")
            .contains("<redacted>")
    );

    assert!(parse("[notify]\nwebhook = \"\"\n").notify.is_none());
    let error = parse_err("[notify]\nwebhook = \"ftp://hooks.example.com/key-77\"\n");
    assert_eq!(error.key.as_deref(), Some("notify.webhook"));
    assert!(!error.to_string().contains("key-77"), "{error}");
    let error = parse_err("[notify]\nwebhook = \"https://h.example.com\"\ntimeout = \"0s\"\n");
    assert_eq!(error.key.as_deref(), Some("notify.timeout"));
}
