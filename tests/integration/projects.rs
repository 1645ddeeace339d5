//! Two projects on one engine: each touches only the containers that carry its project id,
//! even when both release a service of the same name.

use std::process::Command;

use crate::harness::{Project, assert_success, docker, stderr};
use crate::load::Load;

/// Removes a container the test made by hand, even when the test fails.
struct Foreign(String);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn exists(container: &str) -> bool {
    Command::new("docker")
        .args(["inspect", container])
        .output()
        .expect("docker runs")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn down_of_one_project_leaves_the_other_serving_a_service_of_the_same_name() {
    let one = Project::new("twin");
    let other = one.twin();
    assert_eq!(one.service, other.service);
    assert_ne!(one.project_id(), other.project_id());
    let first = one.release_async().await;
    let serving = other.release_async().await;

    let load = Load::start(other.listen, 8);
    // Under the other's load: a release of this project (converge, launch, switch, retire),
    // then its `down`.
    let second = one.release_async().await;
    assert_ne!(first, second);
    let out = one.run_async(&["down"], &[]).await;
    assert_success(&out, "shipit down");
    let report = load.stop().await;

    report.assert_no_failures();
    let strays: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.release.as_deref() != Some(serving.as_str()))
        .collect();
    assert!(
        strays.is_empty(),
        "requests to the other project were answered by another release: {:#?}",
        &strays[..strays.len().min(5)]
    );
    assert!(one.containers().is_empty(), "{:?}", one.containers());
    assert_eq!(other.running_releases(), std::slice::from_ref(&serving));
    let status = other.status();
    assert_eq!(status["live"]["release"], serving.as_str());
    // Its image tag and its container carry its project id.
    let id = other.project_id();
    let image = status["live"]["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("{}-{id}:", other.service)),
        "{image}"
    );
    for container in other.containers() {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.Name}}", &container])
            .output()
            .unwrap();
        let name = String::from_utf8_lossy(&out.stdout);
        assert!(
            name.trim().starts_with(&format!("/shipit-{id}-local-")),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_without_our_project_id_under_our_name_is_left_alone_with_a_hint() {
    let project = Project::new("foreign");
    let first = project.release_async().await;
    let image = project.status()["live"]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The idle slot's name, taken by a container that shipit did not make for this project
    // (as one made by an earlier shipit, without the project label, would be).
    let name = format!(
        "shipit-{}-local-{}-green",
        project.project_id(),
        project.service
    );
    docker(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("shipit.service={}", project.service),
        &image,
    ]);
    let foreign = Foreign(name);

    let out = project.run_async(&["release"], &[]).await;
    assert!(
        !out.status.success(),
        "the release replaced a foreign container"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the container {}", foreign.0)),
        "{err}"
    );
    assert!(err.contains("not to this project"), "{err}");
    assert!(
        err.contains(&format!(
            "hint: remove it yourself if it is not needed (`docker rm -f {}`)",
            foreign.0
        )),
        "{err}"
    );
    assert!(exists(&foreign.0), "the foreign container was removed");
    assert_eq!(project.status()["live"]["release"], first.as_str());

    // `down` removes only what carries our id.
    let out = project.run_async(&["down"], &[]).await;
    assert_success(&out, "shipit down");
    assert!(exists(&foreign.0), "down removed the foreign container");
    assert!(project.containers().is_empty());
}
