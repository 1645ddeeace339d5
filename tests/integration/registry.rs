//! Pushing images to a real registry (Debian's `docker-registry` on 127.0.0.1), and ECR
//! credentials from moto.

use std::process::Command;
use std::sync::{Arc, Mutex};

use shipit_pipeline::event::{Event, Reporter};
use shipit_pipeline::platform::Image;
use shipit_pipeline::registry::{self, Credentials};

use crate::aws::{Clients, Registry, unique};

/// A small `FROM scratch` image with content of its own (so its layer is new to the
/// registry), removed from the engine when dropped.
struct ScratchImage {
    image: Image,
    dir: tempfile::TempDir,
}

impl ScratchImage {
    fn build(name: &str) -> ScratchImage {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY payload /payload\n",
        )
        .unwrap();
        let payload: String = (0..64 * 1024).map(|i| format!("{name}-{i}\n")).collect();
        std::fs::write(dir.path().join("payload"), payload).unwrap();
        let tag = format!("shipit-push-test:{name}");
        let context = dir.path().to_str().expect("a UTF-8 temp path");
        let id = crate::harness::docker(&["build", "-q", "-t", &tag, context])
            .trim()
            .to_string();
        assert!(id.starts_with("sha256:"), "{id}");
        ScratchImage {
            image: Image {
                reference: tag,
                id,
                reused: false,
            },
            dir,
        }
    }
}

impl Drop for ScratchImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image.id])
            .output();
        let _ = &self.dir;
    }
}

fn recording_reporter() -> (Reporter, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reporter = Reporter::new(move |event| {
        if let Event::Progress { message, .. } = event {
            sink.lock().unwrap().push(message);
        }
    });
    (reporter, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_image_is_listed_by_the_registry_under_its_tag_and_digest() {
    let registry = Registry::start();
    let name = unique("push");
    let scratch = ScratchImage::build(&name);
    let docker = shipit_pipeline::docker::connect().await.unwrap();
    let repository = registry.repository(&format!("shipit/{name}"));
    let (reporter, lines) = recording_reporter();

    let pushed = registry::push(&docker, &scratch.image, &repository, "v1", None, &reporter)
        .await
        .unwrap_or_else(|e| panic!("push failed: {e}\nhint: {:?}", e.hint()));

    assert!(pushed.id.starts_with("sha256:"), "{pushed:?}");
    assert_eq!(pushed.reference, format!("{repository}@{}", pushed.id));
    let path = format!("shipit/{name}");
    assert_eq!(registry.tags(&path).await, ["v1"]);
    assert_eq!(
        registry.manifest_digest(&path, "v1").await.as_deref(),
        Some(pushed.id.as_str()),
        "the registry serves the digest the push reported"
    );
    assert_eq!(
        registry.manifest_digest(&path, &pushed.id).await.as_deref(),
        Some(pushed.id.as_str())
    );
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("layer 1 of 1 pushed")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&pushed.reference)),
        "{lines:#?}"
    );

    // A second push of the same image finds its layer already there and the same digest.
    let (reporter, lines) = recording_reporter();
    let again = registry::push(&docker, &scratch.image, &repository, "v2", None, &reporter)
        .await
        .unwrap();
    assert_eq!(again.id, pushed.id);
    let mut tags = registry.tags(&path).await;
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("already in the registry")),
        "{:#?}",
        lines.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_an_authenticating_registry_needs_the_right_credentials() {
    let registry = Registry::start_with_auth();
    let (user, password) = registry.credentials.clone().unwrap();
    let name = unique("auth");
    let scratch = ScratchImage::build(&name);
    let docker = shipit_pipeline::docker::connect().await.unwrap();
    let repository = registry.repository(&format!("shipit/{name}"));
    let reporter = Reporter::default();

    let refused = registry::push(&docker, &scratch.image, &repository, "v1", None, &reporter)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains(&registry.host), "{refused}");
    assert!(refused.to_string().contains(&repository), "{refused}");
    let hint = refused.hint().unwrap();
    assert!(
        hint.contains(registry::REGISTRY_USERNAME_ENV) && hint.contains("docker login"),
        "{hint}"
    );

    let wrong = Credentials {
        server: registry.host.clone(),
        username: user.clone(),
        password: "not-the-password".into(),
    };
    let refused = registry::push(
        &docker,
        &scratch.image,
        &repository,
        "v1",
        Some(&wrong),
        &reporter,
    )
    .await
    .unwrap_err();
    assert!(
        refused.hint().unwrap().contains("refused the credentials"),
        "{refused} / {:?}",
        refused.hint()
    );

    let right = Credentials {
        server: registry.host.clone(),
        username: user,
        password,
    };
    let pushed = registry::push(
        &docker,
        &scratch.image,
        &repository,
        "v1",
        Some(&right),
        &reporter,
    )
    .await
    .unwrap_or_else(|e| panic!("push with credentials failed: {e}\nhint: {:?}", e.hint()));
    let path = format!("shipit/{name}");
    assert_eq!(registry.tags(&path).await, ["v1"]);
    assert_eq!(
        registry.manifest_digest(&path, "v1").await.as_deref(),
        Some(pushed.id.as_str())
    );
}

#[tokio::test]
async fn ecr_credentials_come_from_get_authorization_token() {
    let clients = Clients::new().await;
    let creds = registry::ecr_credentials(&clients.ecr).await.unwrap();
    assert_eq!(creds.username, "AWS");
    assert!(!creds.password.is_empty());
    let host = creds
        .server
        .trim_start_matches("https://")
        .trim_end_matches('/');
    assert!(
        registry::is_ecr_host(host),
        "the proxy endpoint {} is an ECR host",
        creds.server
    );
}
