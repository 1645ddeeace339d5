//! The production forward as a listener rule (`rule_arn`, moved with ModifyRule), and the
//! version check through the test listener, with a local HTTP server standing in for the
//! emulated load balancer's name (`SHIPIT_TEST_RESOLVE`, test-only).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, PathPatternConditionConfig, RuleCondition,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A rule on the production listener sending `/app/*` to `slot`'s group: its ARN.
async fn create_rule(project: &EcsProject, slot: Slot) -> String {
    let out = project
        .infra
        .clients
        .elb
        .create_rule()
        .listener_arn(&project.infra.listener_arn)
        .priority(10)
        .conditions(
            RuleCondition::builder()
                .field("path-pattern")
                .path_pattern_config(
                    PathPatternConditionConfig::builder()
                        .values("/app/*")
                        .build(),
                )
                .build(),
        )
        .actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(project.group(slot))
                .build(),
        )
        .send()
        .await
        .expect("CreateRule");
    out.rules()[0].rule_arn().unwrap().to_string()
}

fn rule_slots(
    project: &EcsProject,
    forward: Vec<(String, Option<i32>)>,
) -> Vec<(Slot, Option<i32>)> {
    forward
        .into_iter()
        .map(|(g, w)| (project.infra.slot_of(&g).expect("a slot's group"), w))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_rule_arn_the_rule_moves_and_the_listener_stays() {
    let base = EcsProject::new("rule", "").await;
    let rule = create_rule(&base, Slot::Green).await;
    let text = std::fs::read_to_string(&base.config).unwrap();
    std::fs::write(
        &base.config,
        text.replace(
            "desired_count = 1",
            &format!("desired_count = 1\nrule_arn = \"{rule}\""),
        ),
    )
    .unwrap();
    let listener = base.infra.listener_forward(&base.infra.listener_arn).await;

    let first = base.release(&[]).await;
    assert_eq!(first["slot"], "blue", "the rule forwarded to green");
    assert_eq!(
        rule_slots(&base, base.infra.rule_forward(&rule).await),
        all_to(Slot::Blue)
    );
    let second = base.release(&[]).await;
    assert_eq!(second["slot"], "green");
    assert_eq!(
        rule_slots(&base, base.infra.rule_forward(&rule).await),
        all_to(Slot::Green)
    );
    assert_eq!(
        base.infra.listener_forward(&base.infra.listener_arn).await,
        listener,
        "the listener's default action is left alone"
    );
    assert_eq!(base.status().await["live"]["release"], second["serves"]);
}

/// The name and port the test listener answers at, as shipit reads them.
async fn test_listener_authority(project: &EcsProject) -> String {
    let elb = &project.infra.clients.elb;
    let listeners = elb
        .describe_listeners()
        .listener_arns(&project.infra.test_listener_arn)
        .send()
        .await
        .unwrap();
    let listener = &listeners.listeners()[0];
    let lbs = elb
        .describe_load_balancers()
        .load_balancer_arns(listener.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    format!(
        "{}:{}",
        lbs.load_balancers()[0].dns_name().unwrap(),
        listener.port().unwrap()
    )
}

/// The release the newest task definition of the project runs: what a candidate behind the
/// test listener would report.
async fn newest_release(ecs: &aws_sdk_ecs::Client, family: &str) -> String {
    let list = ecs
        .list_task_definitions()
        .family_prefix(family)
        .send()
        .await
        .unwrap();
    let revision = |arn: &&String| {
        arn.rsplit(':')
            .next()
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let Some(newest) = list.task_definition_arns().iter().max_by_key(revision) else {
        return "none".into();
    };
    let td = ecs
        .describe_task_definition()
        .task_definition(newest)
        .send()
        .await
        .unwrap();
    td.task_definition()
        .into_iter()
        .flat_map(|t| t.container_definitions())
        .flat_map(|c| c.environment())
        .find(|e| e.name() == Some("SHIPIT_RELEASE"))
        .and_then(|e| e.value())
        .unwrap_or("none")
        .to_string()
}

/// A stand-in for the test listener: answers `GET /version` with `wrong` for its first
/// `wrong_first` requests (as a listener whose change has not reached it yet), then with the
/// newest task definition's release. Counts the requests.
async fn stand_in(
    ecs: aws_sdk_ecs::Client,
    family: String,
    wrong_first: usize,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&head[..n]).to_string();
            let seen = served.fetch_add(1, Ordering::Relaxed);
            let body = if !request.starts_with("GET /version ") {
                "not found\n".to_string()
            } else if seen >= wrong_first {
                format!("{}\n", newest_release(&ecs, &family).await)
            } else {
                "wrong\n".to_string()
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (addr, count)
}

fn with_version_path(project: &EcsProject) {
    let mut text = std::fs::read_to_string(&project.config).unwrap();
    text.push_str(&format!(
        "\n[services.{}.verify]\nversion_path = \"/version\"\n",
        project.service
    ));
    std::fs::write(&project.config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_check_goes_through_the_test_listener() {
    let project = EcsProject::new("vcheck", "").await;
    with_version_path(&project);
    let family = format!("{}-{}", project.infra.cluster, project.service);
    let authority = test_listener_authority(&project).await;
    let before = project.forward().await;

    // A candidate that reports the wrong release fails verify; traffic stays put.
    let (addr, count) = stand_in(
        project.infra.clients.ecs.clone(),
        family.clone(),
        usize::MAX,
    )
    .await;
    let out = project
        .command(&["release"])
        .env("SHIPIT_TEST_RESOLVE", format!("{authority}={addr}"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("through the test listener"),
        "{}",
        stderr(&out)
    );
    assert!(
        count.load(Ordering::Relaxed) >= 1,
        "the check reached the stand-in"
    );
    assert_eq!(project.forward().await, before, "nothing moved");
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));

    // One that reports its own release once the listener change has reached the stand-in
    // (after two answers of the other release) passes, and the release goes live.
    let (addr, count) = stand_in(project.infra.clients.ecs.clone(), family, 2).await;
    let out = project
        .command(&["release", "--json"])
        .env("SHIPIT_TEST_RESOLVE", format!("{authority}={addr}"))
        .output()
        .await
        .unwrap();
    ok(&out, "the release whose candidate reports its release");
    let record = json(&out);
    let id = record["serves"].as_str().unwrap();
    assert!(
        stderr(&out).contains(&format!("/version reports release {id}")),
        "{}",
        stderr(&out)
    );
    assert!(
        count.load(Ordering::Relaxed) >= 3,
        "asked again after the other release"
    );
    assert_eq!(project.forward().await, all_to(Slot::Blue));
}
