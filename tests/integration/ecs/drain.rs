//! Retire on ECS: with `keep_previous = "0s"` the old service is scaled down only after the
//! shift and the release waits for its targets to leave the group; with a warm-rollback
//! window the old service is kept, tagged, and scaled down by the first run after its time.

use super::*;

/// One look during a release: the old service's desired count, then the forward.
type Sample = (Option<i32>, Vec<(Slot, Option<i32>)>);

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_moves_before_the_old_service_is_scaled_down_and_the_drain_is_awaited() {
    let project = EcsProject::new("order", "").await;
    project.release(&[]).await;
    assert_eq!(project.forward().await, all_to(Slot::Blue));

    // While the second release runs, sample the old service's desired count, then the
    // forward: a count of 0 read before a forward still on blue would be traffic sent to a
    // slot already scaled down.
    let mut samples: Vec<Sample> = Vec::new();
    let release = project.run(&["release", "--json"]);
    tokio::pin!(release);
    let out = loop {
        tokio::select! {
            out = &mut release => break out,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                let desired = project.service(Slot::Blue).await.map(|s| s.0);
                let forward = project.forward().await;
                samples.push((desired, forward));
            }
        }
    };
    ok(&out, "the second release");
    let violations: Vec<_> = samples
        .iter()
        .filter(|(desired, forward)| *desired == Some(0) && *forward == all_to(Slot::Blue))
        .collect();
    assert!(
        violations.is_empty(),
        "scaled down before the shift: {violations:?}"
    );
    assert!(
        samples
            .iter()
            .any(|(d, f)| *d == Some(1) && *f == all_to(Slot::Green)),
        "the watch saw the moment between the shift and the scale-down: {} samples",
        samples.len()
    );
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert!(
        project
            .infra
            .targets(&project.group(Slot::Blue))
            .await
            .is_empty()
    );
    let log = stderr(&out);
    let waiting = log
        .find("waiting for the blue target group")
        .unwrap_or_else(|| panic!("the drain is shown: {log}"));
    let retired = log
        .find("the blue slot is retired: its targets left the group")
        .unwrap_or_else(|| panic!("retired once drained: {log}"));
    assert!(waiting < retired, "{log}");
    assert!(
        log.contains("deregistration_delay.timeout_seconds = 300s"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_previous_slot_rolls_back_warm_and_is_scaled_down_after_its_time() {
    let project = EcsProject::new("keep", "keep_previous = \"10m\"\n").await;
    let first = project.release(&[]).await;
    let second_out = project.run(&["release", "--json"]).await;
    ok(&second_out, "the second release");
    let log = stderr(&second_out);
    assert!(
        log.contains("kept") && log.contains("running for rollback (keep_previous = 10m)"),
        "{log}"
    );
    assert!(
        !log.contains("waiting for the blue target group"),
        "no drain wait: {log}"
    );
    assert_eq!(project.forward().await, all_to(Slot::Green));
    let blue = Infra::service_name(&project.service, Slot::Blue);
    let kept = project
        .infra
        .service(&blue)
        .await
        .expect("the blue service");
    assert_eq!(kept.desired_count(), 1, "the old slot keeps running");
    let tags = project
        .infra
        .service_tags(kept.service_arn().unwrap())
        .await;
    let after: jiff::Timestamp = tags
        .get("shipit.retire-after")
        .unwrap_or_else(|| panic!("tagged: {tags:?}"))
        .parse()
        .unwrap();
    let left = after.duration_since(jiff::Timestamp::now()).as_secs();
    assert!(
        (590..=600).contains(&left),
        "retire after ~10 min: {left} s"
    );

    // Within the window, a rollback only moves traffic back.
    let out = project.run(&["rollback", "--json"]).await;
    ok(&out, "the warm rollback");
    assert!(
        stderr(&out).contains("no scale-up needed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(project.forward().await, all_to(Slot::Blue));
    assert_eq!(
        json(&out)["serves"],
        first["serves"],
        "the first release serves again"
    );

    // Its time passes (the tag says so): the next run scales the kept green slot down before
    // it launches there.
    let green = Infra::service_name(&project.service, Slot::Green);
    let kept = project
        .infra
        .service(&green)
        .await
        .expect("the green service");
    assert_eq!(kept.desired_count(), 1, "green is kept after the rollback");
    project
        .infra
        .tag_service(
            kept.service_arn().unwrap(),
            "shipit.retire-after",
            "2026-01-01T00:00:00Z",
        )
        .await;
    let out = project.run(&["release", "--json"]).await;
    ok(&out, "the release after the window");
    let log = stderr(&out);
    assert!(
        log.contains(
            "the old green slot was kept for rollback until 2026-01-01T00:00:00Z: scaling"
        ),
        "{log}"
    );
    assert_eq!(json(&out)["slot"], "green");
}
