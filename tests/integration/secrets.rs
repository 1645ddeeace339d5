//! No secret value is printed, logged, labelled or recorded unless asked for: a service's env
//! values, from the environment and from an env_file, reach its container and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{Project, assert_success};

/// Interpolated into the config's env table from the environment.
const FROM_ENV: &str = "pw-from-env-7Qx2vB";
/// Read from the service's env_file.
const FROM_FILE: &str = "pw-from-file-9Kd4zW";

/// Every regular file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                found.push((
                    entry.path().display().to_string(),
                    std::fs::read(entry.path()).unwrap_or_default(),
                ));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn docker_inspect(format: &str, id: &str) -> String {
    crate::harness::docker(&["inspect", "--format", format, id])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_appear_in_output_records_logs_or_state() {
    let project = Project::new("secret");
    let service = project.service.clone();
    let config = std::fs::read_to_string(&project.config)
        .unwrap()
        .replacen("port = 8080\n", "port = 8080\nenv_file = \".env\"\n", 1)
        .replacen(
            &format!("[services.{service}.env]\n"),
            &format!("[services.{service}.env]\nDB_PASSWORD = \"${{DB_PASSWORD:-}}\"\n"),
            1,
        );
    std::fs::write(&project.config, config).unwrap();
    let env_file = project.dir.path().join(".env");
    std::fs::write(
        &env_file,
        format!("# the API's key\nexport API_KEY=\"{FROM_FILE}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let env = [("DB_PASSWORD", FROM_ENV)];

    let commands: &[&[&str]] = &[
        &["config", "check"],
        &["config", "check", "--json"],
        &["plan"],
        &["plan", "--json"],
        &["release", "--dry-run"],
        &["release", "--dry-run", "--json"],
        &["-v", "release", "--json"],
        &["release"],
        &["status"],
        &["status", "--json"],
        &["history"],
        &["history", "--json"],
        &["-v", "rollback", "--json"],
        &["lock", "status", "--json"],
        &["edge", "status", "--json"],
    ];
    let mut printed = Vec::new();
    for args in commands {
        let out = project.run_async(args, &env).await;
        assert_success(&out, &format!("shipit {}", args.join(" ")));
        printed.push((format!("shipit {}", args.join(" ")), out.stdout));
        printed.push((format!("shipit {} (stderr)", args.join(" ")), out.stderr));
    }
    // A hook that prints a secret, with every event as JSON on stderr: hidden there too.
    let mut text = std::fs::read_to_string(&project.config).unwrap();
    text.push_str(&format!(
        "\n[services.{service}.hooks]\npre_switch = {{ command = 'echo \"db=$DB_PASSWORD\"' }}\n"
    ));
    std::fs::write(&project.config, text).unwrap();
    let mut with_events = env.to_vec();
    with_events.push(("SHIPIT_EVENTS", "json"));
    let out = project
        .run_async(&["release", "--json"], &with_events)
        .await;
    assert_success(&out, "shipit release with SHIPIT_EVENTS=json");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.lines()
            .any(|l| l.contains("\"pre_switch: db=") && l.contains("redacted")),
        "the hook's line, hidden: {err}"
    );
    printed.push(("release with SHIPIT_EVENTS=json".into(), out.stdout));
    printed.push((
        "release with SHIPIT_EVENTS=json (stderr)".into(),
        out.stderr,
    ));
    let state = files_under(&project.state_dir());
    assert!(
        state.iter().any(|(path, _)| path.contains("/releases/")),
        "the state holds release records: {:?}",
        state.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (place, bytes) in printed.iter().chain(&state) {
        for secret in [FROM_ENV, FROM_FILE] {
            assert!(
                !contains(bytes, secret),
                "{place} holds a secret value:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let config_check = &printed[0].1;
    assert!(
        contains(config_check, "<redacted>"),
        "config check shows the env as redacted"
    );

    // The values are real: the live container has them, in its env and in no label.
    let containers = project.containers();
    assert!(!containers.is_empty());
    for id in &containers {
        let env = docker_inspect("{{json .Config.Env}}", id);
        assert!(env.contains(FROM_ENV) && env.contains(FROM_FILE), "{env}");
        let labels = docker_inspect("{{json .Config.Labels}}", id);
        assert!(
            !labels.contains(FROM_ENV) && !labels.contains(FROM_FILE),
            "{labels}"
        );
    }

    // Asked for, the env table's values are shown; the env file's never are.
    let out = project
        .run_async(&["--show-secrets", "config", "check", "--json"], &env)
        .await;
    assert_success(&out, "shipit --show-secrets config check");
    assert!(
        contains(&out.stdout, FROM_ENV),
        "--show-secrets shows the table's value"
    );
    assert!(
        !contains(&out.stdout, FROM_FILE),
        "an env file's value is never printed"
    );
}

#[test]
fn an_env_file_others_can_read_is_warned_about_without_its_values() {
    let project = Project::new("envfile");
    let config = std::fs::read_to_string(&project.config).unwrap().replacen(
        "port = 8080\n",
        "port = 8080\nenv_file = \"app.env\"\n",
        1,
    );
    std::fs::write(&project.config, config).unwrap();
    let env_file = project.dir.path().join("app.env");
    std::fs::write(&env_file, format!("API_KEY={FROM_FILE}\nnot a line\n")).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = project.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "a bad line is a config error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app.env:2:"), "{err}");
    assert!(err.contains("expected NAME=value"), "{err}");
    assert!(!err.contains(FROM_FILE), "{err}");

    std::fs::write(&env_file, format!("API_KEY={FROM_FILE}\n")).unwrap();
    let out = project.run(&["config", "check"]);
    assert_success(&out, "shipit config check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("mode 0644"),
        "{err}"
    );
    assert!(err.contains("chmod 600"), "{err}");
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(!contains(&all, FROM_FILE));
}

/// Kept in SSM, as a SecureString.
const FROM_SSM: &str = "pw-from-ssm-3Hn8qT";
/// Kept in Secrets Manager, as one field of a JSON secret.
const FROM_SECRETS_MANAGER: &str = "token-from-sm-6Wc1pL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_secrets_reach_the_local_container_and_nothing_else() {
    use crate::aws::{Moto, aws_cli, unique};
    let project = Project::new("awssecret");
    let name = unique("db");
    let put = aws_cli(&[
        "ssm",
        "put-parameter",
        "--name",
        &format!("/shipit-tests/{name}"),
        "--type",
        "SecureString",
        "--value",
        FROM_SSM,
    ])
    .await;
    assert!(put["Version"].is_number(), "{put}");
    let parameter = aws_cli(&[
        "ssm",
        "get-parameter",
        "--name",
        &format!("/shipit-tests/{name}"),
    ])
    .await;
    let ssm_arn = parameter["Parameter"]["ARN"].as_str().unwrap().to_string();
    let created = aws_cli(&[
        "secretsmanager",
        "create-secret",
        "--name",
        &unique("api"),
        "--secret-string",
        &format!(r#"{{"user":"app","token":"{FROM_SECRETS_MANAGER}"}}"#),
    ])
    .await;
    let sm_arn = created["ARN"].as_str().unwrap().to_string();

    let service = project.service.clone();
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(&format!(
        "\n[services.{service}.secrets]\nDB_PASSWORD = \"{ssm_arn}\"\nAPI_TOKEN = \"{sm_arn}:token::\"\n"
    ));
    std::fs::write(&project.config, config).unwrap();
    let moto: Vec<(&'static str, String)> = Moto::env();
    let env: Vec<(&str, &str)> = moto.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let commands: &[&[&str]] = &[
        &["config", "check", "--json"],
        &["plan"],
        &["-v", "release", "--json"],
        &["status", "--json"],
        &["history", "--json"],
        // Even asked for secrets, values read from AWS stay hidden.
        &["--show-secrets", "-v", "release", "--json"],
    ];
    let mut printed = Vec::new();
    for args in commands {
        let out = project.run_async(args, &env).await;
        assert_success(&out, &format!("shipit {}", args.join(" ")));
        printed.push((format!("shipit {}", args.join(" ")), out.stdout));
        printed.push((format!("shipit {} (stderr)", args.join(" ")), out.stderr));
    }
    let config_check = String::from_utf8_lossy(&printed[0].1).to_string();
    assert!(
        config_check.contains(&ssm_arn),
        "the ARN is shown: {config_check}"
    );
    for (place, bytes) in printed.iter().chain(&files_under(&project.state_dir())) {
        for secret in [FROM_SSM, FROM_SECRETS_MANAGER] {
            assert!(
                !contains(bytes, secret),
                "{place} holds a secret value:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let containers = project.containers();
    assert!(!containers.is_empty());
    for id in &containers {
        let env = docker_inspect("{{json .Config.Env}}", id);
        assert!(
            env.contains(&format!("DB_PASSWORD={FROM_SSM}"))
                && env.contains(&format!("API_TOKEN={FROM_SECRETS_MANAGER}")),
            "{env}"
        );
    }

    // A secret that cannot be read stops the release before anything runs, naming its key.
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config = config.replace(&ssm_arn, &format!("{ssm_arn}-gone"));
    std::fs::write(&project.config, config).unwrap();
    let out = project.run_async(&["release"], &env).await;
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the secret DB_PASSWORD")
            && err.contains(&format!("services.{service}.secrets.DB_PASSWORD")),
        "{err}"
    );
}
