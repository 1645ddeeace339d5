//! `env_file`: a dotenv file's variables join the service's env, and no value of it, or of
//! the env table, is ever in an error or a printout unless asked for.

use std::os::unix::fs::PermissionsExt;

use super::*;

const SECRET: &str = "s3cr3t-from-the-file";

/// A folder with `.env` holding `text`, private unless `mode` says otherwise.
fn with_env_file(text: &str, mode: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

const SERVICE: &str = "[services.hello]\nport = 8080\nenv_file = \".env\"\n\
                       env = { API_TOKEN = \"token-from-the-table\" }\n";

#[test]
fn env_file_variables_join_the_env_and_are_redacted_when_printed() {
    let dir = with_env_file(
        &format!("# db\nexport DB_PASSWORD=\"{SECRET}\"\nDB_USER=app\n"),
        0o600,
    );
    let config = parse_in(dir.path(), SERVICE).unwrap_or_else(|e| panic!("{e}"));
    let service = &config.services["hello"];
    assert_eq!(service.env["DB_PASSWORD"], SECRET);
    assert_eq!(service.env["DB_USER"], "app");
    assert_eq!(service.env["API_TOKEN"], "token-from-the-table");
    let file = service.env_file.as_ref().expect("env_file");
    assert_eq!(file.path, dir.path().join(".env"));
    assert_eq!(file.keys, ["DB_PASSWORD", "DB_USER"]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let hidden = serde_json::to_string(&config.redacted(false)).unwrap();
    for value in [SECRET, "token-from-the-table", "\"app\""] {
        assert!(!hidden.contains(value), "{value} in {hidden}");
    }
    assert!(hidden.contains(REDACTED), "{hidden}");
    // --show-secrets shows the table's values, never the file's.
    let shown = config.redacted(true);
    let env = &shown.services["hello"].env;
    assert_eq!(env["API_TOKEN"], "token-from-the-table");
    assert_eq!(env["DB_PASSWORD"], REDACTED);
    assert_eq!(env["DB_USER"], REDACTED);
    // Text output goes through the same redacted value.
    let text = toml::to_string_pretty(&config.redacted(false)).unwrap();
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn env_file_errors_name_the_file_and_line_never_the_value() {
    let dir = with_env_file(&format!("A=1\n\nB=\"{SECRET}\n"), 0o600);
    let error = parse_in(dir.path(), SERVICE).unwrap_err();
    assert_at(&error, "services.hello.env_file", ".env:3:");
    assert_says(&error, "double quote that is not closed");
    assert_hints(&error, "NAME=value");
    let printed = format!("{error} {}", error.hint().unwrap_or_default());
    assert!(!printed.contains(SECRET), "{printed}");
    assert_eq!(error.line, Some(3), "the line of env_file in shipit.toml");
}

#[test]
fn missing_env_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = parse_in(dir.path(), SERVICE).unwrap_err();
    assert_at(
        &error,
        "services.hello.env_file",
        "cannot read the env file",
    );
    assert_says(&error, &dir.path().join(".env").display().to_string());
    assert_hints(&error, "relative to the config file's folder");
}

#[test]
fn a_name_in_both_the_file_and_the_table_is_refused() {
    let dir = with_env_file(&format!("API_TOKEN={SECRET}\n"), 0o600);
    let error = parse_in(dir.path(), SERVICE).unwrap_err();
    assert_at(&error, "services.hello.env.API_TOKEN", "set both");
    assert_says(&error, "(line 1)");
    assert!(!error.to_string().contains(SECRET), "{error}");
}

#[test]
fn an_env_file_others_can_read_is_warned_about() {
    let dir = with_env_file("DB_USER=app\n", 0o644);
    let config = parse_in(dir.path(), SERVICE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("mode 0644"),
        "{:?}",
        config.warnings
    );
    assert!(config.warnings[0].contains(".env"), "{:?}", config.warnings);
}
