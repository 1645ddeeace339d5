//! `rollback --to` on ECS runs the task definition revision the history recorded for that
//! release, instead of registering a new one, while that revision is active.

use super::*;

/// The task definition revisions registered in the project's family.
async fn revisions(project: &EcsProject) -> Vec<String> {
    let family = format!("{}-{}", project.infra.cluster, project.service);
    let out = project
        .infra
        .clients
        .ecs
        .list_task_definitions()
        .family_prefix(&family)
        .send()
        .await
        .expect("ListTaskDefinitions");
    out.task_definition_arns().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_to_an_older_release_runs_its_recorded_task_definition() {
    let project = EcsProject::new("rbto", "").await;
    let first = project.release(&[]).await;
    let first_id = first["serves"].as_str().unwrap().to_string();
    let recorded = project.record(&first_id).await["handle"]
        .as_str()
        .expect("the record holds the task definition")
        .to_string();
    assert!(recorded.contains(":task-definition/"), "{recorded}");
    project.release(&[]).await;
    project.release(&[]).await;
    let before = revisions(&project).await;
    assert_eq!(before.len(), 3, "{before:?}");

    // Blue runs the third release now; the first one goes to green, whose service runs the
    // second: its recorded revision is set on the service, nothing is registered.
    let out = project
        .run(&["rollback", "--to", &first_id, "--json"])
        .await;
    ok(&out, "shipit rollback --to");
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "running release {first_id} again from its recorded task definition"
        )),
        "{log}"
    );
    let record = json(&out);
    assert_eq!(record["serves"], first_id.as_str());
    assert_eq!(record["slot"], "green");
    assert_eq!(revisions(&project).await, before, "no new revision");
    let (desired, _, td) = project.service(Slot::Green).await.expect("green");
    assert_eq!((desired, td), (1, recorded.clone()));
    assert_eq!(project.forward().await, all_to(Slot::Green));
    assert_eq!(project.status().await["live"]["release"], first_id.as_str());
}
