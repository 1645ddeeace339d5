//! Preflight against moto: `shipit verify` passes on a sound target and tells a pushed image
//! from one a release would push; a missing role, log group, secret, subnet or security group,
//! or a target group of the wrong type, fails it with the config key of each, and fails a
//! release before anything is built or changed. `create_log_group = true` creates the group.
//! The runner hooks run on an ecs release too, with the test listener as the candidate URL,
//! and a migrate task that cannot run (moto runs none on awsvpc) fails the release.

use super::*;
use crate::aws::aws_cli;

/// The checks of `shipit verify --json`, by `what` and `status`, with the whole document.
fn checks(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    doc["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {doc}"))
        .iter()
        .map(|c| {
            (
                c["what"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of<'a>(checks: &'a [(String, String, String)], what: &str) -> Vec<&'a str> {
    checks
        .iter()
        .filter(|(w, _, _)| w == what)
        .map(|(_, s, _)| s.as_str())
        .collect()
}

/// The state a refused release must leave exactly as it was (the lock and history
/// parameters aside: taking and freeing the lock writes them).
async fn deployed(project: &EcsProject) -> String {
    stored_state(project)
        .await
        .lines()
        .filter(|l| !l.starts_with("parameters"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A target group of the test's VPC, HTTP on port 9090 (the service's is 8080): its ARN.
async fn target_group_on_9090(
    project: &EcsProject,
    suffix: &str,
    target_type: aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum,
) -> String {
    project
        .infra
        .clients
        .elb
        .create_target_group()
        .name(format!("{}-{suffix}", project.infra.prefix))
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(9090)
        .vpc_id(&project.infra.vpc_id)
        .target_type(target_type)
        .send()
        .await
        .expect("CreateTargetGroup")
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string()
}

/// An IAM role ECS tasks may assume, made with the AWS CLI: its ARN.
async fn create_role(name: &str) -> String {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let out = aws_cli(&[
        "iam",
        "create-role",
        "--role-name",
        name,
        "--assume-role-policy-document",
        trust,
    ])
    .await;
    out["Role"]["Arn"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_a_sound_target_and_sees_the_image_once_pushed() {
    let project = EcsProject::new("verify", "").await;
    let out = project.run(&["verify", "--json"]).await;
    ok(&out, "shipit verify --json");
    let doc = json(&out);
    assert_eq!(doc["passed"], true, "{doc}");
    let found = checks(&doc);
    assert_eq!(status_of(&found, "target group"), ["ok", "ok"], "{doc}");
    assert_eq!(status_of(&found, "subnet"), ["ok", "ok"], "{doc}");
    assert_eq!(status_of(&found, "security group"), ["ok"], "{doc}");
    // Nothing is pushed yet: the release would push it, which is no failure.
    assert_eq!(status_of(&found, "image"), ["pending"], "{doc}");
    // An ip target group on another port serves (ECS registers the tasks on the container
    // port): a warning, not a failure.
    let other_port = target_group_on_9090(
        &project,
        "port",
        aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip,
    )
    .await;
    let sound = std::fs::read_to_string(&project.config).unwrap();
    std::fs::write(
        &project.config,
        sound.replace(&project.infra.target_groups.green, &other_port),
    )
    .unwrap();
    let out = project.run(&["verify", "--json"]).await;
    ok(&out, "shipit verify with a target group on another port");
    let doc = json(&out);
    assert_eq!(
        status_of(&checks(&doc), "target group"),
        ["ok", "warning"],
        "{doc}"
    );
    std::fs::write(&project.config, sound).unwrap();
    // No execution role: the built-in template writes no role and no log configuration.
    assert!(status_of(&found, "execution role").is_empty(), "{doc}");
    assert!(status_of(&found, "log group").is_empty(), "{doc}");

    project.release(&[]).await;
    let out = project.run(&["verify"]).await;
    ok(&out, "shipit verify after a release");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let image = text
        .lines()
        .find(|l| l.contains(" image "))
        .unwrap_or_else(|| panic!("no image line: {text}"));
    assert!(image.starts_with("ok "), "{text}");
    assert!(text.contains("preflight passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_missing_thing_fails_preflight_with_its_key_and_a_release_changes_nothing() {
    let project = EcsProject::new("preflight", "").await;
    let service = &project.service;
    let infra = &project.infra;
    let role = create_role(&format!("{}-exec", infra.prefix)).await;
    // A target group that exists but registers instances (Fargate tasks need ip), on
    // another port than the service's 8080.
    let wrong_group = target_group_on_9090(
        &project,
        "wrong",
        aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance,
    )
    .await;
    let missing_secret = format!(
        "arn:aws:secretsmanager:{}:123456789012:secret:{service}/nothing-here",
        crate::aws::REGION
    );
    let text = std::fs::read_to_string(&project.config).unwrap();
    let text = text
        .replace(
            &format!("subnets = [\"{}\"", infra.subnets.blue),
            &format!(
                "subnets = [\"subnet-0000000000000dead\", \"{}\"",
                infra.subnets.blue
            ),
        )
        .replace(
            &format!("security_groups = [\"{}\"]", infra.security_group),
            "security_groups = [\"sg-0000000000000dead\"]",
        )
        .replace(
            &format!("green = \"{}\"", infra.target_groups.green),
            &format!("green = \"{wrong_group}\""),
        )
        .replace(
            "desired_count = 1",
            &format!("desired_count = 1\nexecution_role_arn = \"{role}\""),
        );
    let text = format!("{text}\n[services.{service}.secrets]\nDB = \"{missing_secret}\"\n");
    std::fs::write(&project.config, text).unwrap();

    let out = project.run(&["verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["passed"], false, "{doc}");
    assert_eq!(doc["error"]["exit_code"], 6, "{doc}");
    assert!(
        doc["error"]["cause"]
            .as_str()
            .unwrap()
            .contains("preflight found 5 problems"),
        "{doc}"
    );
    let found = checks(&doc);
    let failed: Vec<(&str, &str)> = found
        .iter()
        .filter(|(_, s, _)| s == "failed")
        .map(|(w, _, k)| (w.as_str(), k.as_str()))
        .collect();
    let secret_key = format!("services.{service}.secrets.DB");
    assert_eq!(
        failed,
        [
            ("log group", "targets.aws.log_group"),
            ("secret", secret_key.as_str()),
            ("subnet", "targets.aws.subnets"),
            ("security group", "targets.aws.security_groups"),
            ("target group", "targets.aws.target_groups.green"),
        ],
        "{doc}"
    );
    assert_eq!(status_of(&found, "execution role"), ["ok"], "{doc}");
    assert_eq!(status_of(&found, "subnet"), ["failed", "ok", "ok"], "{doc}");
    let wrong = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "targets.aws.target_groups.green")
        .unwrap();
    let detail = wrong["detail"].as_str().unwrap();
    assert!(detail.contains("its target type is instance"), "{wrong}");
    assert!(detail.contains("its port is 9090"), "{wrong}");
    assert!(
        wrong["hint"].as_str().unwrap().contains("port 8080"),
        "{wrong}"
    );

    // A release stops at the same checks, before it builds, pushes or changes anything.
    let before = deployed(&project).await;
    let out = project.run(&["release"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("preflight found 5 problems"), "{err}");
    for key in [
        "targets.aws.log_group",
        secret_key.as_str(),
        "targets.aws.subnets",
        "targets.aws.security_groups",
        "targets.aws.target_groups.green",
    ] {
        assert!(err.contains(key), "{key} is not named: {err}");
    }
    assert!(err.contains("nothing was built or changed"), "{err}");
    assert!(!err.contains("pushed"), "{err}");
    assert_eq!(deployed(&project).await, before);
    assert!(project.service(Slot::Blue).await.is_none());
    assert!(project.service(Slot::Green).await.is_none());

    // A role that does not exist is named by its key too.
    let text = std::fs::read_to_string(&project.config)
        .unwrap()
        .replace(&role, &format!("{role}-gone"));
    std::fs::write(&project.config, text).unwrap();
    let out = project.run(&["verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let doc = json(&out);
    assert!(
        checks(&doc).contains(&(
            "execution role".to_string(),
            "failed".to_string(),
            "targets.aws.execution_role_arn".to_string()
        )),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_log_group_makes_the_missing_group_and_the_release_goes_on() {
    let project = EcsProject::new("loggroup", "create_log_group = true\n").await;
    let role = create_role(&format!("{}-exec", project.infra.prefix)).await;
    let text = std::fs::read_to_string(&project.config).unwrap().replace(
        "desired_count = 1",
        &format!("desired_count = 1\nexecution_role_arn = \"{role}\""),
    );
    std::fs::write(&project.config, text).unwrap();
    let group = format!("/ecs/{}", project.service);
    let listed = |out: serde_json::Value| -> Vec<String> {
        out["logGroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["logGroupName"].as_str().unwrap().to_string())
            .collect()
    };
    let before = aws_cli(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        &group,
    ])
    .await;
    assert!(listed(before).is_empty());

    let record = project.release(&[]).await;
    assert_eq!(record["outcome"]["status"], "succeeded", "{record}");
    let after = aws_cli(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        &group,
    ])
    .await;
    assert_eq!(listed(after), std::slice::from_ref(&group));

    let out = project.run(&["verify", "--json"]).await;
    ok(&out, "shipit verify once the group exists");
    let doc = json(&out);
    assert_eq!(status_of(&checks(&doc), "log group"), ["ok"], "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_run_on_an_ecs_release_with_the_test_listener_as_the_candidate_url() {
    let project = EcsProject::new("ecshooks", "").await;
    // The project has no version_path: nothing but the warm-up and the hooks needs the test
    // listener, and the hook must still reach the candidate through it. So the hook reads
    // where the test listener forwards while it runs.
    let aws = crate::harness::repo_root().join(".venv/bin/aws");
    assert!(aws.exists(), "no aws CLI at {}", aws.display());
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(&format!(
        "\n[services.{}.hooks]\npre_switch = {{ command = '{} elbv2 describe-listeners --listener-arns {} --output json > pre.listener.json && env | grep ^SHIPIT_ > pre.env' }}\npost_release = {{ command = 'echo \"$SHIPIT_RELEASE\" > post.txt' }}\n",
        project.service,
        aws.display(),
        project.infra.test_listener_arn,
    ));
    std::fs::write(&project.config, config).unwrap();
    let record = project.release(&[]).await;
    let id = record["serves"].as_str().unwrap();
    let slot = record["slot"].as_str().unwrap();
    let candidate_group = match slot {
        "blue" => &project.infra.target_groups.blue,
        _ => &project.infra.target_groups.green,
    };
    let listener: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.dir.path().join("pre.listener.json")).unwrap(),
    )
    .unwrap();
    let action = &listener["Listeners"][0]["DefaultActions"][0];
    let weighted: Vec<(&str, i64)> = action["ForwardConfig"]["TargetGroups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| {
                    (
                        g["TargetGroupArn"].as_str().unwrap(),
                        g["Weight"].as_i64().unwrap_or(1),
                    )
                })
                .filter(|(_, weight)| *weight > 0)
                .collect()
        })
        .unwrap_or_else(|| vec![(action["TargetGroupArn"].as_str().unwrap(), 1)]);
    assert_eq!(
        weighted.iter().map(|(arn, _)| *arn).collect::<Vec<_>>(),
        vec![candidate_group.as_str()],
        "while pre_switch ran, the test listener forwarded only to the candidate's ({slot}) group: {action}"
    );
    let env = std::fs::read_to_string(project.dir.path().join("pre.env")).unwrap();
    let expected = format!(
        "SHIPIT_CANDIDATE_URL=http://{}:8080",
        project.infra.load_balancer_dns
    );
    assert!(env.lines().any(|l| l == expected), "{expected} in {env}");
    assert!(
        env.lines().any(|l| l == format!("SHIPIT_RELEASE={id}")),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "SHIPIT_TARGET=aws"), "{env}");
    assert_eq!(
        std::fs::read_to_string(project.dir.path().join("post.txt"))
            .unwrap()
            .trim(),
        id
    );
}

/// moto (5.x) cannot run a task on an `awsvpc` network: its RunTask answers HTTP 500 (the
/// task's network interface lacks an attribute moto reads). So against moto the migrate hook
/// shows its failure path: the error names RunTask, the release fails before traffic moves and
/// the live release keeps serving. A task that exits 0, one that exits non-zero, one past its
/// timeout (stopped with StopTask) and one that cannot start are tested with scripted SDK
/// answers in `pipeline/src/platform/ecs/migrate/tests.rs`.
#[tokio::test(flavor = "multi_thread")]
async fn a_migrate_task_that_cannot_run_fails_the_release_before_traffic_moves() {
    let project = EcsProject::new("ecsmigrate", "").await;
    let first = project.release(&[]).await;
    let first = first["serves"].as_str().unwrap().to_string();
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(&format!(
        "\n[services.{}.hooks]\nmigrate = {{ command = [\"migrate\", \"--all\"], timeout = \"30s\" }}\n",
        project.service
    ));
    std::fs::write(&project.config, config).unwrap();
    let plan = project.run(&["plan"]).await;
    ok(&plan, "shipit plan");
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(text.contains("hook migrate: `migrate --all`"), "{text}");

    let out = project.run(&["release"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("RunTask"), "{err}");
    let out = project.run(&["history", "--json"]).await;
    ok(&out, "shipit history");
    let history = json(&out);
    assert_eq!(history[0]["outcome"]["status"], "failed", "{history}");
    let live = project.status().await;
    assert_eq!(live["live"]["release"], first.as_str(), "{live}");
}
