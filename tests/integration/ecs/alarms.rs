//! CloudWatch alarms watched during an ECS release: a firing alarm stops a bake or the final
//! shift, a missing one stops the release before anything is launched.

use super::*;

/// A CloudWatch client on moto, and a new metric alarm (state OK) named after `prefix`.
async fn create_alarm(prefix: &str) -> (aws_sdk_cloudwatch::Client, String) {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&Moto::sdk_config().await);
    let name = unique(prefix);
    cloudwatch
        .put_metric_alarm()
        .alarm_name(&name)
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_Target_5XX_Count")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("PutMetricAlarm");
    (cloudwatch, name)
}

#[tokio::test(flavor = "multi_thread")]
async fn alarm_firing_during_the_canary_bake_puts_all_traffic_back_and_fails_the_release() {
    let (cloudwatch, alarm) = create_alarm("hello-5xx").await;
    // The bake is longer than the test needs: the alarm, not its end, must stop it.
    let project = EcsProject::new(
        "alarm",
        &format!("shift = \"canary:50:30s\"\nalarms = [\"{alarm}\"]\n"),
    )
    .await;
    // Nothing is live yet: no bake, and the alarm is OK before the shift.
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();
    assert_eq!(project.forward().await, all_to(Slot::Blue));

    // The dry run reads the alarm it would watch.
    let out = project.run(&["release", "--dry-run", "--json"]).await;
    ok(&out, "shipit release --dry-run");
    let plan = json(&out);
    assert_eq!(plan["alarms"]["states"][0]["name"], alarm.as_str());
    assert_eq!(plan["alarms"]["states"][0]["state"], "OK");

    // Watch the listener while the canary runs; once it shows the split, the alarm fires.
    let split = vec![(Slot::Blue, Some(50)), (Slot::Green, Some(50))];
    let release = project.run(&["release", "--json"]);
    tokio::pin!(release);
    let started = std::time::Instant::now();
    let mut fired = false;
    let out = loop {
        tokio::select! {
            out = &mut release => break out,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                assert!(
                    started.elapsed() < Duration::from_secs(180),
                    "the canary release neither split the traffic nor ended"
                );
                if !fired && project.forward().await == split {
                    cloudwatch
                        .set_alarm_state()
                        .alarm_name(&alarm)
                        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
                        .state_reason("Threshold Crossed: 9 answers were 5xx")
                        .send()
                        .await
                        .expect("SetAlarmState");
                    fired = true;
                }
            }
        }
    };
    assert!(
        fired,
        "the release ended before the listener showed the split"
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "the alarm fails the release: {}",
        stderr(&out)
    );
    let error = json(&out);
    let cause = error["error"]["cause"].as_str().unwrap();
    assert!(
        cause.contains("step 1/1 (50% to the green slot): the bake of")
            && cause.contains(&format!(
                "alarm {alarm} is in ALARM: Threshold Crossed: 9 answers were 5xx"
            )),
        "the cause names the step, the alarm and its reason: {cause}"
    );
    let hint = error["error"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("describe-alarm-history"), "{hint}");

    assert_eq!(
        project.forward().await,
        all_to(Slot::Blue),
        "all traffic is back on the old slot"
    );
    assert_eq!(
        project.service(Slot::Green).await.map(|s| s.0),
        Some(0),
        "the candidate is scaled to zero"
    );
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(1));
    assert_eq!(project.status().await["live"]["release"], first_id.as_str());

    let out = project.run(&["history", "--json"]).await;
    ok(&out, "shipit history");
    let failed_id = json(&out)[0]["id"].as_str().unwrap().to_string();
    assert_ne!(failed_id, first_id);
    let record = assert_finished(&project, &failed_id, "failed").await;
    let recorded = record["outcome"]["cause"].as_str().unwrap_or_default();
    assert!(recorded.contains(&alarm), "{record:#}");
    let steps: Vec<(u64, bool)> = record["shift_steps"]
        .as_array()
        .expect("the record lists the shift steps")
        .iter()
        .map(|s| (s["percent"].as_u64().unwrap(), s["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(steps, [(50, false)], "{record:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_alarm_stops_the_release_before_anything_is_launched() {
    let (_cloudwatch, alarm) = create_alarm("hello-5xx").await;
    let typo = format!("{alarm}-typo");
    let project = EcsProject::new(
        "noalarm",
        &format!("shift = \"canary:50:30s\"\nalarms = [\"{alarm}\", \"{typo}\"]\n"),
    )
    .await;
    let forward_before = project.forward().await;

    // The dry run names it too.
    let out = project.run(&["release", "--dry-run", "--json"]).await;
    ok(&out, "shipit release --dry-run");
    let plan = json(&out);
    assert_eq!(plan["alarms"]["missing"][0], typo.as_str(), "{plan:#}");
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("would stop before launching anything"),
        "{notes}"
    );

    let out = project.run(&["release", "--json"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let error = json(&out);
    let cause = error["error"]["cause"].as_str().unwrap();
    assert!(
        cause.contains(&format!(
            "CloudWatch alarm \"{typo}\" named in `alarms` of target \"aws\" does not exist in us-east-1"
        )),
        "{cause}"
    );
    let hint = error["error"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("nothing was launched"), "{hint}");

    // Nothing was built, pushed, launched or routed.
    assert!(project.service(Slot::Blue).await.is_none());
    assert!(project.service(Slot::Green).await.is_none());
    assert_eq!(
        Registry::start()
            .tags(&format!("{}/{}", project.infra.prefix, project.service))
            .await,
        Vec::<String>::new(),
        "no image was pushed"
    );
    assert_eq!(project.forward().await, forward_before);
    let out = project.run(&["history", "--json"]).await;
    ok(&out, "shipit history");
    let failed = json(&out)[0].clone();
    assert_finished(&project, failed["id"].as_str().unwrap(), "failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alarm_in_alarm_stops_the_final_shift_but_not_a_rollback() {
    let (cloudwatch, alarm) = create_alarm("hello-5xx").await;
    let project = EcsProject::new("alarmshift", &format!("alarms = [\"{alarm}\"]\n")).await;
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();
    let second = project.release(&[]).await;
    let second_id = second["serves"].as_str().unwrap().to_string();
    assert_eq!(project.forward().await, all_to(Slot::Green));

    cloudwatch
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("Threshold Crossed: latency")
        .send()
        .await
        .expect("SetAlarmState");

    // An all-at-once release has no bake: the check before the shift stops it.
    let out = project.run(&["release", "--json"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let cause = json(&out)["error"]["cause"].as_str().unwrap().to_string();
    assert!(
        cause.contains(&format!(
            "before the shift to 100% to the blue slot: alarm {alarm} is in ALARM: Threshold Crossed: latency"
        )),
        "{cause}"
    );
    assert_eq!(project.forward().await, all_to(Slot::Green));
    assert_eq!(project.service(Slot::Blue).await.map(|s| s.0), Some(0));
    assert_eq!(
        project.status().await["live"]["release"],
        second_id.as_str()
    );

    // A rollback takes the release back although the alarm still fires.
    let out = project.run(&["rollback", "--json"]).await;
    ok(&out, "shipit rollback while the alarm fires");
    assert!(
        stderr(&out).contains("a rollback shifts anyway"),
        "the rollback says it went past the alarm: {}",
        stderr(&out)
    );
    assert_eq!(json(&out)["serves"].as_str(), Some(first_id.as_str()));
    assert_eq!(project.forward().await, all_to(Slot::Blue));
}
