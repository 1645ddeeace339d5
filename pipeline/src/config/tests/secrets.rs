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
