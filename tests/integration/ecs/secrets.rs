//! `[services.<s>.secrets]` on an ecs target: the task definition ECS registers carries them
//! as `secrets` (`valueFrom` the ARN), never in its environment.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_registered_by_arn_and_never_as_environment() {
    let project = EcsProject::new("secrets", "").await;
    let arn = format!(
        "arn:aws:ssm:{}:123456789012:parameter/{}/db-password",
        crate::aws::REGION,
        project.service
    );
    // Preflight refuses a release whose secret does not exist.
    crate::aws::aws_cli(&[
        "ssm",
        "put-parameter",
        "--name",
        &format!("/{}/db-password", project.service),
        "--type",
        "SecureString",
        "--value",
        "not-in-any-output",
    ])
    .await;
    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(&format!(
        "\n[services.{}.secrets]\nDB_PASSWORD = \"{arn}\"\n",
        project.service
    ));
    std::fs::write(&project.config, config).unwrap();
    project.release(&[]).await;
    let td = project.service(Slot::Blue).await.expect("blue").2;
    let described = project
        .infra
        .clients
        .ecs
        .describe_task_definition()
        .task_definition(&td)
        .send()
        .await
        .unwrap();
    let container = &described.task_definition().unwrap().container_definitions()[0];
    let secrets: Vec<(&str, &str)> = container
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    assert_eq!(secrets, [("DB_PASSWORD", arn.as_str())]);
    assert!(
        container
            .environment()
            .iter()
            .all(|e| e.name() != Some("DB_PASSWORD")),
        "{:?}",
        container.environment()
    );
}
