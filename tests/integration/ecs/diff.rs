//! `shipit diff` against moto: nothing to show right after a release; a variable added to
//! the config shows as one added line, its value redacted; `plan` carries the same diff.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_added_env_var_shows_in_the_diff_with_its_value_redacted() {
    let project = EcsProject::new("diff", "").await;
    let out = project.run(&["diff"]).await;
    ok(&out, "shipit diff with nothing live");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("--- live: nothing\n"), "{text}");

    let first = project.release(&[]).await;
    let out = project.run(&["diff", "--exit-code"]).await;
    ok(&out, "shipit diff --exit-code right after a release");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("no difference"), "{text}");

    let mut config = std::fs::read_to_string(&project.config).unwrap();
    config.push_str(&format!(
        "\n[services.{}.env]\nNEW_VAR = \"value-of-the-new-var\"\n",
        project.service
    ));
    std::fs::write(&project.config, config).unwrap();
    let out = project.run(&["diff", "--exit-code"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let added: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert!(
        added.iter().any(|l| l.contains("\"name\": \"NEW_VAR\"")),
        "{text}"
    );
    assert!(added.iter().any(|l| l.contains("<redacted>")), "{text}");
    assert!(!text.contains("value-of-the-new-var"), "{text}");
    let removed = text
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .count();
    assert_eq!(removed, 0, "only additions: {text}");
    let live_td = project.service(Slot::Blue).await.unwrap().2;
    assert!(
        text.contains(live_td.rsplit('/').next().unwrap()),
        "the header names the live task definition: {text}"
    );

    let out = project.run(&["--show-secrets", "diff"]).await;
    ok(&out, "shipit diff --show-secrets");
    assert!(String::from_utf8_lossy(&out.stdout).contains("value-of-the-new-var"));

    let out = project.run(&["diff", "--json"]).await;
    ok(&out, "shipit diff --json");
    let doc = json(&out);
    assert_eq!(doc["changed"], true);
    assert!(doc["live"].as_str().unwrap().contains("-blue"), "{doc}");

    let out = project.run(&["plan"]).await;
    ok(&out, "shipit plan");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("diff against the live slot (service"),
        "{text}"
    );
    assert!(text.contains("\"name\": \"NEW_VAR\""), "{text}");
    assert!(!text.contains("value-of-the-new-var"), "{text}");
    assert_eq!(project.status().await["live"]["release"], first["serves"]);
}
