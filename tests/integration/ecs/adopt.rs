//! Adopting an account where something shipit did not make already serves: the listener (or
//! the CloudFront origin) sends traffic to a target group with a healthy target no shipit
//! service registered. That slot is live, as a foreign release: the first release goes to the
//! other slot and moves traffic only once verified, whatever point it dies at. The state is
//! read back with the AWS CLI after every phase, as an operator would.

use std::os::unix::process::ExitStatusExt;

use super::*;
use crate::aws::aws_cli;

/// The foreign target: what another tool registered in a slot's target group.
fn foreign_target(project: &EcsProject) -> String {
    format!("10.{}.9.9", project.infra.net)
}

/// Registers [`foreign_target`] in `slot`'s target group, as another tool would.
async fn register_foreign(project: &EcsProject, slot: Slot) {
    project
        .infra
        .clients
        .elb
        .register_targets()
        .target_group_arn(project.group(slot))
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(foreign_target(project))
                .port(crate::aws::TARGET_PORT)
                .build(),
        )
        .send()
        .await
        .expect("RegisterTargets");
}

/// The slots the production listener forwards to with a weight above 0, read by the CLI.
async fn cli_forwarded(project: &EcsProject) -> Vec<Slot> {
    let listeners = aws_cli(&[
        "elbv2",
        "describe-listeners",
        "--listener-arns",
        &project.infra.listener_arn,
    ])
    .await;
    let action = &listeners["Listeners"][0]["DefaultActions"][0];
    let groups = match action["ForwardConfig"]["TargetGroups"].as_array() {
        Some(groups) => groups
            .iter()
            .filter(|g| g["Weight"].as_i64().unwrap_or(1) > 0)
            .map(|g| g["TargetGroupArn"].as_str().unwrap().to_string())
            .collect(),
        None => vec![action["TargetGroupArn"].as_str().unwrap().to_string()],
    };
    groups
        .iter()
        .map(|g| {
            project
                .infra
                .slot_of(g)
                .unwrap_or_else(|| panic!("the listener forwards to a stranger: {g}"))
        })
        .collect()
}

/// The targets of `slot`'s group and their state, read by the CLI.
async fn cli_targets(project: &EcsProject, slot: Slot) -> Vec<(String, String)> {
    let health = aws_cli(&[
        "elbv2",
        "describe-target-health",
        "--target-group-arn",
        &project.group(slot),
    ])
    .await;
    health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["Target"]["Id"].as_str().unwrap().to_string(),
                d["TargetHealth"]["State"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The desired count of `slot`'s service, read by the CLI (`None`: no such active service).
async fn cli_desired(project: &EcsProject, slot: Slot) -> Option<i64> {
    let name = Infra::service_name(&project.service, slot);
    let out = aws_cli(&[
        "ecs",
        "describe-services",
        "--cluster",
        &project.infra.cluster,
        "--services",
        &name,
    ])
    .await;
    out["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["serviceName"] == name.as_str() && s["status"] == "ACTIVE")
        .map(|s| s["desiredCount"].as_i64().unwrap())
}

/// A release that kills itself at `point`; then the lock its death left is broken.
async fn release_killed_at(project: &EcsProject, point: &str) {
    let out = project
        .command(&["release"])
        .env("SHIPIT_FAULT", point)
        .output()
        .await
        .expect("shipit runs");
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the release was to die at {point}: {}\n{}",
        out.status,
        stderr(&out)
    );
    let out = project.run(&["lock", "release", "--force"]).await;
    ok(&out, "shipit lock release --force");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_live_target_group_keeps_traffic_until_the_first_release_is_verified() {
    let project = EcsProject::new("adopt", "").await;
    // The test infrastructure's listener starts on green: there the foreign target serves.
    let (foreign_slot, first_slot) = (Slot::Green, Slot::Blue);
    let foreign = foreign_target(&project);
    register_foreign(&project, foreign_slot).await;
    assert_eq!(cli_forwarded(&project).await, [foreign_slot]);
    assert_eq!(
        cli_targets(&project, foreign_slot).await,
        [(foreign.clone(), "healthy".to_string())]
    );

    // status names the foreign live slot as such.
    let status = project.status().await;
    assert_eq!(status["live"]["slot"], "green", "{status:#}");
    let what = status["live"]["foreign"].as_str().unwrap_or_default();
    assert!(
        what.contains("not shipit's") && what.contains("1 healthy target"),
        "{status:#}"
    );
    let out = project.run(&["status"]).await;
    ok(&out, "shipit status");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("foreign    not shipit's"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Killed once the candidate runs, and again while it is verified: traffic never left
    // the foreign group, and the candidate went to the other slot.
    for point in ["after-launch", "mid-verify"] {
        release_killed_at(&project, point).await;
        assert_eq!(
            cli_forwarded(&project).await,
            [foreign_slot],
            "after {point}"
        );
        assert_eq!(
            cli_desired(&project, first_slot).await,
            Some(1),
            "after {point}"
        );
        assert_eq!(
            cli_desired(&project, foreign_slot).await,
            None,
            "after {point}"
        );
    }

    // The whole release: verified, then the shift, and the foreign target is left alone
    // (registered, routed nowhere).
    let out = project.run(&["release", "--json"]).await;
    ok(&out, "the first whole release");
    let log = stderr(&out);
    assert!(
        log.contains("the green slot is live, not shipit's")
            && log.contains("goes to the blue slot"),
        "{log}"
    );
    let record = json(&out);
    assert_eq!(record["slot"], "blue");
    assert!(
        record["previous"].is_null(),
        "a foreign release is no rollback target: {record:#}"
    );
    assert_eq!(cli_forwarded(&project).await, [first_slot]);
    assert_eq!(
        cli_targets(&project, foreign_slot).await,
        [(foreign.clone(), "healthy".to_string())]
    );
    assert_eq!(
        cli_desired(&project, foreign_slot).await,
        None,
        "no green service was made"
    );
    let status = project.status().await;
    assert_eq!(status["live"]["slot"], "blue");
    assert!(status["live"].get("foreign").is_none(), "{status:#}");
    assert_finished(&project, record["serves"].as_str().unwrap(), "succeeded").await;

    // The next release would put green tasks beside the foreign target: it refuses, and
    // names it, before anything is launched.
    let out = project.run(&["release"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("no shipit service registered") && log.contains(&foreign),
        "{log}"
    );
    assert_eq!(cli_forwarded(&project).await, [first_slot]);
    assert_eq!(cli_desired(&project, foreign_slot).await, None);

    // Once the operator removes it, releases alternate as usual.
    aws_cli(&[
        "elbv2",
        "deregister-targets",
        "--target-group-arn",
        &project.group(foreign_slot),
        "--targets",
        &format!("Id={foreign},Port={}", crate::aws::TARGET_PORT),
    ])
    .await;
    let third = project.release(&[]).await;
    assert_eq!(third["slot"], "green");
    assert_eq!(cli_forwarded(&project).await, [foreign_slot]);
    assert_eq!(cli_desired(&project, first_slot).await, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_release_with_nothing_live_goes_to_the_slot_traffic_is_not_on() {
    let project = EcsProject::new("empty", "").await;
    // The listener starts on blue here, whose group is empty: the candidate takes green,
    // and the listener is not touched before it is verified.
    let change = aws_cli(&[
        "elbv2",
        "modify-listener",
        "--listener-arn",
        &project.infra.listener_arn,
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={}", project.group(Slot::Blue)),
    ])
    .await;
    assert!(change["Listeners"].is_array(), "{change:#}");
    assert_eq!(cli_forwarded(&project).await, [Slot::Blue]);
    assert!(project.status().await["live"].is_null());
    release_killed_at(&project, "mid-verify").await;
    assert_eq!(cli_forwarded(&project).await, [Slot::Blue]);
    assert_eq!(cli_desired(&project, Slot::Green).await, Some(1));

    let first = project.release(&[]).await;
    assert_eq!(first["slot"], "green");
    assert_eq!(cli_forwarded(&project).await, [Slot::Green]);
    let second = project.release(&[]).await;
    assert_eq!(second["slot"], "blue");
    assert_eq!(cli_forwarded(&project).await, [Slot::Blue]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_cdn_origin_keeps_traffic_until_the_first_release_is_verified() {
    let (blue, green) = ("blue.example.test", "green.example.test");
    let project = EcsProject::new("cdnadopt", "").await;
    let id = project.infra.create_distribution(blue).await;
    let cdn = format!(
        "cdn = {{ distribution_id = \"{id}\", origins = {{ blue = \"{blue}\", green = \"{green}\" }} }}"
    );
    let text = std::fs::read_to_string(&project.config).unwrap();
    std::fs::write(
        &project.config,
        text.replace("desired_count = 1", &format!("desired_count = 1\n{cdn}")),
    )
    .unwrap();
    register_foreign(&project, Slot::Blue).await;
    let origin = || async {
        let out = aws_cli(&["cloudfront", "get-distribution-config", "--id", &id]).await;
        out["DistributionConfig"]["Origins"]["Items"][0]["DomainName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(origin().await, blue);
    assert_eq!(project.status().await["live"]["slot"], "blue");

    release_killed_at(&project, "mid-verify").await;
    assert_eq!(
        origin().await,
        blue,
        "the origin stayed on the foreign slot"
    );
    let first = project.release(&[]).await;
    assert_eq!(first["slot"], "green");
    assert_eq!(origin().await, green);
    assert_eq!(
        cli_targets(&project, Slot::Blue).await,
        [(foreign_target(&project), "healthy".to_string())],
        "the foreign target is left alone"
    );
}
