use std::path::Path;

use bollard::query_parameters::{RemoveImageOptions, RemoveImageOptionsBuilder};

use super::*;
use crate::build::context::tests::Hooks;

/// Runs on the packing thread once the context is hashed, before its tar is sent.
static BEFORE_SEND: Hooks = Hooks::new();

pub(super) fn before_send(root: &Path) {
    BEFORE_SEND.run(root, root);
}

#[test]
fn step_headers_are_parsed() {
    assert_eq!(
        parse_step("Step 2/5 : COPY . /app"),
        Some((2, 5, "COPY . /app"))
    );
    assert_eq!(parse_step(" ---> Running in 1234"), None);
    assert_eq!(parse_step("Step x/5 : RUN"), None);
}

#[test]
fn output_is_cut_into_lines_across_chunks_and_keeps_a_tail() {
    let mut events = Vec::new();
    let mut progress = |p: BuildProgress| events.push(p);
    let mut output = BuildOutput::default();
    output.push("Step 1/2 : FROM scratch\n ---> ", &mut progress);
    output.push("\nStep 2/2 : COPY a /\n", &mut progress);
    for i in 0..12 {
        output.push(&format!("line {i}\n"), &mut progress);
    }
    output.push("no newline", &mut progress);
    output.flush(&mut progress);

    assert_eq!(
        events[0],
        BuildProgress::Step {
            index: 1,
            total: 2,
            text: "FROM scratch".to_string()
        }
    );
    assert_eq!(events[1], BuildProgress::Output(" --->".to_string()));
    assert_eq!(
        events.last(),
        Some(&BuildProgress::Output("no newline".to_string()))
    );

    let BuildError::Failed {
        step, last_lines, ..
    } = output.failure("boom\n".to_string())
    else {
        unreachable!()
    };
    assert_eq!(step.as_deref(), Some("Step 2/2 : COPY a /"));
    assert_eq!(last_lines.len(), FAILURE_TAIL_LINES);
    assert_eq!(last_lines.last().map(String::as_str), Some("no newline"));
}

#[test]
fn failure_message_shows_step_error_output_and_hint() {
    let err = BuildError::Failed {
        step: Some("Step 2/2 : COPY missing.txt /".to_string()),
        message: "COPY failed: file not found".to_string(),
        last_lines: vec!["Step 1/2 : FROM scratch".to_string(), " --->".to_string()],
    };
    let text = err.to_string();
    assert!(
        text.starts_with("the image build failed at `Step 2/2 : COPY missing.txt /`: COPY failed"),
        "{text}"
    );
    assert!(text.contains("\n  Step 1/2 : FROM scratch\n"), "{text}");
    assert!(
        err.hint()
            .is_some_and(|h| h.starts_with("fix the Dockerfile"))
    );
}

#[test]
fn references_split_into_repo_and_tag() {
    assert_eq!(split_reference("hello:1a2b"), ("hello", "1a2b"));
    assert_eq!(split_reference("hello"), ("hello", "latest"));
    assert_eq!(
        split_reference("registry:5000/team/hello"),
        ("registry:5000/team/hello", "latest")
    );
    assert_eq!(
        split_reference("registry:5000/hello:v1"),
        ("registry:5000/hello", "v1")
    );
}

#[test]
fn oci_labels_carry_revision_version_created_and_release() {
    let revision = Revision {
        sha: "0123456789abcdef0123456789abcdef01234567".to_string(),
        short: "0123456789ab".to_string(),
        dirty: true,
    };
    let created: jiff::Timestamp = "2026-11-22T10:11:12Z".parse().unwrap();
    let labels = oci_labels(Some(&revision), created, "r-42");
    assert_eq!(labels[OCI_REVISION_LABEL], revision.sha);
    assert_eq!(labels[OCI_VERSION_LABEL], "0123456789ab-dirty");
    assert_eq!(labels[OCI_CREATED_LABEL], "2026-11-22T10:11:12Z");
    assert_eq!(labels[RELEASE_LABEL], "r-42");

    let labels = oci_labels(None, created, "r-43");
    assert!(!labels.contains_key(OCI_REVISION_LABEL));
    assert_eq!(labels.len(), 2);
}

#[test]
fn cache_file_names_are_safe() {
    assert_eq!(cache_file_name("hello"), "context-hello.json");
    assert_eq!(cache_file_name("../x y"), "context-.._x_y.json");
}

/// Images made by one test, all removed when it ends (even when it fails): every image
/// it builds carries `shipit.test=<id>`, and its tags live in its own repository.
struct TestImages {
    id: String,
    repo: String,
    /// Intermediate images seen in build output (` ---> 1a2b3c4d5e6f`): a failed build
    /// keeps the steps before the failure as cache, and those carry no test label.
    intermediates: std::sync::Mutex<Vec<String>>,
}

const TEST_LABEL: &str = "shipit.test";

impl TestImages {
    fn new() -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        let id = hex::encode(bytes);
        Self {
            repo: format!("shipit-test-build-{id}"),
            id,
            intermediates: std::sync::Mutex::default(),
        }
    }

    fn tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repo)
    }

    fn request(&self, context: &Path, tag: &str) -> BuildRequest {
        BuildRequest {
            service: "hello".to_string(),
            context: context.to_path_buf(),
            dockerfile: PathBuf::from("Dockerfile"),
            tag: self.tag(tag),
            labels: BTreeMap::from([
                (TEST_LABEL.to_string(), self.id.clone()),
                (RELEASE_LABEL.to_string(), "r-test".to_string()),
            ]),
            cache_dir: None,
        }
    }
}

impl Drop for TestImages {
    fn drop(&mut self) {
        let (id, repo) = (self.id.clone(), self.repo.clone());
        let intermediates = std::mem::take(&mut *self.intermediates.lock().unwrap());
        // Drop cannot await; a thread with its own runtime can.
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(remove_images(&id, &repo, &intermediates));
        });
        let _ = cleanup.join();
    }
}

async fn remove_images(id: &str, repo: &str, intermediates: &[String]) {
    let Ok(docker) = crate::docker::connect().await else {
        return;
    };
    for filter in [
        ("label", format!("{TEST_LABEL}={id}")),
        ("reference", repo.to_string()),
    ] {
        let filters = HashMap::from([(filter.0, vec![filter.1])]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        for image in docker.list_images(Some(options)).await.unwrap_or_default() {
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            let _ = docker.remove_image(&image.id, Some(options), None).await;
        }
    }
    // Children first; an id still used by a kept image fails to go, which is right.
    for image in intermediates.iter().rev() {
        let _ = docker
            .remove_image(image, None::<RemoveImageOptions>, None)
            .await;
    }
}

/// A context whose content is unique to this test, so no other test's image matches it.
fn hello_context(images: &TestImages) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("hello.txt"),
        format!("hello {}\n", images.id),
    )
    .unwrap();
    dir
}

/// [`hello_context`] with `dockerfile` as its Dockerfile.
fn hello_context_with(images: &TestImages, dockerfile: &str) -> tempfile::TempDir {
    let dir = hello_context(images);
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

async fn run(
    docker: &Docker,
    images: &TestImages,
    req: &BuildRequest,
) -> (Result<BuiltImage, BuildError>, Vec<BuildProgress>) {
    let mut events = Vec::new();
    let result = build(docker, req, &mut |p| events.push(p)).await;
    let mut intermediates = images.intermediates.lock().unwrap();
    for event in &events {
        if let BuildProgress::Output(line) = event
            && let Some(id) = line.trim().strip_prefix("---> ")
            && id.len() == 12
            && id.chars().all(|c| c.is_ascii_hexdigit())
        {
            intermediates.push(id.to_string());
        }
    }
    (result, events)
}

#[tokio::test]
async fn unchanged_context_reuses_the_image_without_building() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let req = images.request(context.path(), "one");

    let (first, events) = run(&docker, &images, &req).await;
    let first = first.unwrap();
    assert!(!first.reused);
    assert_eq!(first.tag, req.tag);
    assert!(first.id.starts_with("sha256:"), "{first:?}");
    assert_eq!(events[0], BuildProgress::Hashing);
    assert!(events.iter().any(|e| matches!(e, BuildProgress::Step { index: 2, text, .. } if text == "COPY hello.txt /hello.txt")), "{events:?}");
    assert_eq!(
        events.last(),
        Some(&BuildProgress::Built {
            id: first.id.clone()
        })
    );

    let inspected = docker.inspect_image(&req.tag).await.unwrap();
    assert_eq!(inspected.id.as_deref(), Some(first.id.as_str()));
    let labels = inspected.config.unwrap().labels.unwrap();
    assert_eq!(labels[CONTEXT_HASH_LABEL], first.context_hash);
    assert_eq!(labels[RELEASE_LABEL], "r-test");
    assert_eq!(labels[TEST_LABEL], images.id);
    assert_eq!(labels[SERVICE_LABEL], req.service);

    let (second, events) = run(&docker, &images, &req).await;
    let second = second.unwrap();
    assert!(second.reused);
    assert_eq!(second.id, first.id);
    assert_eq!(second.context_hash, first.context_hash);
    assert_eq!(
        events,
        [
            BuildProgress::Hashing,
            BuildProgress::Reused {
                id: first.id.clone()
            }
        ]
    );

    // A new tag for the same context: reused, and the image now carries that tag too.
    let other = images.request(context.path(), "two");
    let (third, _) = run(&docker, &images, &other).await;
    let third = third.unwrap();
    assert!(third.reused);
    let inspected = docker.inspect_image(&other.tag).await.unwrap();
    assert_eq!(inspected.id.as_deref(), Some(first.id.as_str()));
}

#[tokio::test]
async fn another_service_builds_its_own_image_from_the_same_context() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let ours = images.request(context.path(), "ours");
    let (first, _) = run(&docker, &images, &ours).await;
    let mut theirs = images.request(context.path(), "theirs");
    theirs.service = "another".to_string();
    let (second, _) = run(&docker, &images, &theirs).await;
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(!second.reused, "{second:?}");
    assert_ne!(second.id, first.id);
    let labels = docker.inspect_image(&theirs.tag).await.unwrap();
    assert_eq!(
        labels.config.unwrap().labels.unwrap()[SERVICE_LABEL],
        "another"
    );
}

#[tokio::test]
async fn new_module_versions_build_again_and_are_labelled() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let module = |version: &str| {
        (
            format!("{}sources", crate::version::MODULE_LABEL_PREFIX),
            version.to_string(),
        )
    };
    let mut req = images.request(context.path(), "m1");
    req.labels.extend([module("0.1.0")]);
    let first = run(&docker, &images, &req).await.0.unwrap();
    assert!(!first.reused);

    // Same context, new module version: an image labelled with the old one is not reused.
    let mut bumped = images.request(context.path(), "m2");
    bumped.labels.extend([module("0.2.0")]);
    let second = run(&docker, &images, &bumped).await.0.unwrap();
    assert!(!second.reused);
    assert_eq!(second.context_hash, first.context_hash);
    let labels = docker
        .inspect_image(&bumped.tag)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels["shipit.module.sources"], "0.2.0");

    // The same versions again: reused.
    let mut again = images.request(context.path(), "m3");
    again.labels.extend([module("0.2.0")]);
    let third = run(&docker, &images, &again).await.0.unwrap();
    assert!(third.reused);
    assert_eq!(third.id, second.id);
}

#[tokio::test]
async fn changed_file_builds_a_new_image_with_a_new_hash() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let cache = tempfile::tempdir().unwrap();
    let mut req = images.request(context.path(), "v1");
    req.cache_dir = Some(cache.path().to_path_buf());

    let first = run(&docker, &images, &req).await.0.unwrap();
    assert!(!first.reused);

    std::fs::write(
        context.path().join("hello.txt"),
        format!("changed {}\n", images.id),
    )
    .unwrap();
    req.tag = images.tag("v2");
    let second = run(&docker, &images, &req).await.0.unwrap();
    assert!(!second.reused);
    assert_ne!(second.context_hash, first.context_hash);
    assert_ne!(second.id, first.id);
    let labels = docker
        .inspect_image(&req.tag)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels[CONTEXT_HASH_LABEL], second.context_hash);
}

#[tokio::test]
async fn failing_step_is_reported_with_the_engine_error_and_last_lines() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context_with(
        &images,
        "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY missing.txt /\n",
    );
    let req = images.request(context.path(), "broken");

    let (result, events) = run(&docker, &images, &req).await;
    let err = result.unwrap_err();
    let BuildError::Failed {
        step,
        message,
        last_lines,
    } = &err
    else {
        panic!("expected a failed build, got {err:?}");
    };
    let step = step.as_deref().unwrap_or_default();
    assert!(step.contains("COPY missing.txt"), "{step}");
    assert!(message.contains("missing.txt"), "{message}");
    assert!(
        last_lines.iter().any(|l| l.contains("COPY missing.txt")),
        "{last_lines:?}"
    );
    assert!(err.hint().is_some(), "{err}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BuildProgress::Built { .. }))
    );
    assert!(docker.inspect_image(&req.tag).await.is_err());
}

#[tokio::test]
async fn ignored_file_is_not_sent_to_the_engine() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    std::fs::write(context.path().join(".dockerignore"), "hello.txt\n").unwrap();
    let req = images.request(context.path(), "ignored");

    let err = run(&docker, &images, &req).await.0.unwrap_err();
    let BuildError::Failed { step, .. } = &err else {
        panic!("expected a failed build, got {err:?}");
    };
    assert!(
        step.as_deref()
            .unwrap_or_default()
            .contains("COPY hello.txt"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_dockerfile_is_an_error_before_anything_is_sent() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let mut req = images.request(context.path(), "nofile");
    req.dockerfile = PathBuf::from("docker/Dockerfile");

    let (result, events) = run(&docker, &images, &req).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, BuildError::DockerfileMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("docker/Dockerfile"), "{err}");
    assert!(events.is_empty(), "{events:?}");

    req.context = context.path().join("nowhere");
    let err = run(&docker, &images, &req).await.0.unwrap_err();
    assert!(matches!(err, BuildError::ContextMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere"), "{err}");
}

/// The files of the image `tag`, read back from a container's exported filesystem: path to
/// content (files) or target (symlinks).
async fn image_files(docker: &Docker, images: &TestImages, tag: &str) -> BTreeMap<String, Vec<u8>> {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    use std::io::Read;

    let created = docker
        .create_container(
            None,
            ContainerCreateBody {
                image: Some(tag.to_string()),
                cmd: Some(vec!["/never-run".to_string()]),
                labels: Some(HashMap::from([(TEST_LABEL.to_string(), images.id.clone())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let exported: Result<Vec<bytes::Bytes>, _> = docker
        .export_container(&created.id)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect();
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&created.id, Some(options))
        .await
        .unwrap();
    let exported = exported.unwrap().concat();

    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(exported.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let content = match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                content
            }
            tar::EntryType::Symlink => entry
                .link_name()
                .unwrap()
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
                .to_vec(),
            _ => continue,
        };
        files.insert(path, content);
    }
    files
}

#[tokio::test]
async fn context_larger_than_the_send_buffer_arrives_byte_for_byte() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = crate::build::context::tests::sample_context();
    let root = context.path();
    std::fs::write(root.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
    std::fs::write(root.join("run-id"), &images.id).unwrap();
    // Several times what the body holds at once, in one file and in many.
    let big_len = (archive::SEND_QUEUE_CHUNKS + 2) * archive::SEND_CHUNK_LEN * 3 + 12_345;
    let big: Vec<u8> = (0..big_len).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    for i in 0..200 {
        let content: Vec<u8> = (0..10_000).map(|j| ((i * 7 + j) % 256) as u8).collect();
        std::fs::create_dir_all(root.join("many")).unwrap();
        std::fs::write(root.join(format!("many/{i:03}.bin")), content).unwrap();
    }
    let req = images.request(root, "large");

    let built = run(&docker, &images, &req).await.0.unwrap();
    assert!(!built.reused);
    let files = image_files(&docker, &images, &req.tag).await;

    let mut expected = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "secret.env" || rel.starts_with("target") {
            continue;
        }
        let content = if entry.path_is_symlink() {
            std::fs::read_link(entry.path())
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
                .to_vec()
        } else if entry.file_type().is_file() {
            std::fs::read(entry.path()).unwrap()
        } else {
            continue;
        };
        expected.insert(format!("ctx/{rel}"), content);
    }
    let sent: BTreeMap<_, _> = files
        .into_iter()
        .filter(|(path, _)| path.starts_with("ctx/"))
        .collect();
    assert_eq!(
        sent.len(),
        expected.len(),
        "{:?}",
        sent.keys().collect::<Vec<_>>()
    );
    for (path, content) in &expected {
        assert!(
            sent.get(path) == Some(content),
            "{path} differs in the image"
        );
    }
    assert_eq!(sent["ctx/main-link"], b"src/main.rs");
    assert_eq!(sent["ctx/big.bin"].len(), big_len);
}

#[tokio::test]
async fn file_changed_between_hash_and_send_fails_and_builds_nothing() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let root = context.path().to_path_buf();
    // Enough after the changed file that the engine gets part of the tar before the failure.
    let filler: Vec<u8> = (0..3 * archive::SEND_CHUNK_LEN)
        .map(|i| (i % 249) as u8)
        .collect();
    std::fs::write(root.join("a-filler.bin"), filler).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut req = images.request(&root, "changed");
    req.cache_dir = Some(cache.path().to_path_buf());
    let cache_file = cache.path().join(cache_file_name("hello"));
    std::fs::write(&cache_file, "{}").unwrap();
    let hello = root.join("hello.txt");
    BEFORE_SEND.on(&root, move |_| {
        std::fs::write(&hello, format!("rewritten {}\n", "x".repeat(40))).unwrap();
    });

    let (result, events) = run(&docker, &images, &req).await;
    let err = result.unwrap_err();
    let BuildError::Context(ContextError::Changed { path, stage, .. }) = &err else {
        panic!("expected a changed context, got {err:?}");
    };
    assert_eq!(*stage, Stage::Sent);
    assert!(path.ends_with("hello.txt"), "{err}");
    assert!(
        err.to_string()
            .starts_with("the context changed while it was being sent: "),
        "{err}"
    );
    assert!(err.hint().is_some());
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BuildProgress::Step { .. } | BuildProgress::Built { .. })),
        "the engine started building: {events:?}"
    );
    // Nothing half-built: no image by tag, none by label, and the stale cache is gone.
    assert!(docker.inspect_image(&req.tag).await.is_err());
    let filters = HashMap::from([("label", vec![format!("{TEST_LABEL}={}", images.id)])]);
    let options = ListImagesOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    assert!(docker.list_images(Some(options)).await.unwrap().is_empty());
    assert!(
        !cache_file.exists(),
        "the stat cache outlived a changed send"
    );
}

/// Builds, straight through the engine, an image that qualifies for reuse by `req` with
/// `hash` (the labels a shipit build would give it) but is not the one shipit built: a
/// `variant` label makes each one its own image.
async fn qualifying_image(
    docker: &Docker,
    images: &TestImages,
    req: &BuildRequest,
    hash: &str,
    variant: &str,
) -> String {
    let body = labels::context_tar("FROM scratch\nLABEL shipit.test.note=raw\n").unwrap();
    let mut labels = req.labels.clone();
    labels.insert(CONTEXT_HASH_LABEL.to_string(), hash.to_string());
    labels.insert(SERVICE_LABEL.to_string(), req.service.clone());
    labels.insert("variant".to_string(), variant.to_string());
    engine_build(
        docker,
        body,
        &images.tag(&format!("raw-{variant}")),
        &labels,
    )
    .await
}

/// Builds the context tar `body` straight through the engine, tagged `tag`, with `labels` on
/// the request (the engine's own way: one step per label). Returns the image id.
async fn engine_build(
    docker: &Docker,
    body: Vec<u8>,
    tag: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let labels: HashMap<String, String> = labels.clone().into_iter().collect();
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .labels(&labels)
        .rm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(body.into())));
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
    docker.inspect_image(tag).await.unwrap().id.unwrap()
}

#[tokio::test]
async fn the_recorded_image_is_the_one_reused_while_it_qualifies() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let cache = tempfile::tempdir().unwrap();
    let mut req = images.request(context.path(), "rec");
    let hash = decide(&docker, &req).await.unwrap().context_hash;

    // Two images qualify; without a record the list picks one of them.
    let a = qualifying_image(&docker, &images, &req, &hash, "a").await;
    let b = qualifying_image(&docker, &images, &req, &hash, "b").await;
    let listed = decide(&docker, &req).await.unwrap().reuse.unwrap();
    assert!(
        listed == a || listed == b,
        "{listed} is neither {a} nor {b}"
    );
    let other = if listed == a { b.clone() } else { a.clone() };

    // A record naming the other one: it is reused, and a build keeps the record.
    req.cache_dir = Some(cache.path().to_path_buf());
    last_image::store(&req, &hash, &other);
    assert_eq!(
        decide(&docker, &req).await.unwrap().reuse,
        Some(other.clone())
    );
    let built = run(&docker, &images, &req).await.0.unwrap();
    assert!(built.reused);
    assert_eq!(built.id, other);
    let record = std::fs::read_to_string(last_image::path(&req).unwrap()).unwrap();
    assert!(
        record.contains(&other) && record.contains(&hash),
        "{record}"
    );

    // A damaged record, or one for another hash, is only a hint lost: the list decides.
    std::fs::write(last_image::path(&req).unwrap(), b"{\"format\":1,").unwrap();
    assert_eq!(
        decide(&docker, &req).await.unwrap().reuse,
        Some(listed.clone())
    );
    last_image::store(&req, &"0".repeat(64), &other);
    assert_eq!(
        decide(&docker, &req).await.unwrap().reuse,
        Some(listed.clone())
    );

    // A record naming an image that is gone: the list decides.
    last_image::store(&req, &hash, &other);
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    docker
        .remove_image(&other, Some(options), None)
        .await
        .unwrap();
    assert_eq!(
        decide(&docker, &req).await.unwrap().reuse,
        Some(listed.clone())
    );
}

#[tokio::test]
async fn a_recorded_image_that_does_not_qualify_is_not_reused() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let cache = tempfile::tempdir().unwrap();
    let mut req = images.request(context.path(), "q");
    req.cache_dir = Some(cache.path().to_path_buf());
    let hash = decide(&docker, &req).await.unwrap().context_hash;
    let raw = qualifying_image(&docker, &images, &req, &hash, "q").await;

    // Recorded for this hash, but built for another service: not ours to reuse.
    let mut theirs = req.clone();
    theirs.service = "another".to_string();
    let theirs_image = qualifying_image(&docker, &images, &theirs, &hash, "theirs").await;
    last_image::store(&req, &hash, &theirs_image);
    assert_eq!(
        decide(&docker, &req).await.unwrap().reuse,
        Some(raw.clone())
    );

    // Other module versions asked for: neither the recorded image nor the listed one.
    last_image::store(&req, &hash, &raw);
    let mut bumped = req.clone();
    bumped.labels.insert(
        format!("{}sources", crate::version::MODULE_LABEL_PREFIX),
        "0.2.0".to_string(),
    );
    assert_eq!(decide(&docker, &bumped).await.unwrap().reuse, None);

    // A build records what it built; the record then decides.
    let built = run(&docker, &images, &bumped).await.0.unwrap();
    assert!(!built.reused);
    let record = std::fs::read_to_string(last_image::path(&bumped).unwrap()).unwrap();
    assert!(record.contains(&built.id), "{record}");
    assert_eq!(
        decide(&docker, &bumped).await.unwrap().reuse,
        Some(built.id)
    );
}

/// Builds `context` (a folder of files) straight through the engine with `labels` on the
/// request, the engine's own way to label an image: one step per label. The tar's headers are
/// shipit's (mtime 0, owner 0), so the builder's cache gives both builds the same layers.
async fn engine_labelled_build(
    docker: &Docker,
    context: &Path,
    tag: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut tar = tar::Builder::new(Vec::new());
    for entry in std::fs::read_dir(context).unwrap() {
        let entry = entry.unwrap();
        let content = std::fs::read(entry.path()).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(entry.metadata().unwrap().permissions().mode() & 0o7777);
        header.set_size(content.len() as u64);
        tar.append_data(&mut header, entry.file_name(), content.as_slice())
            .unwrap();
    }
    engine_build(docker, tar.into_inner().unwrap(), tag, labels).await
}

/// The steps of an image's history that set labels.
async fn label_steps(docker: &Docker, image: &str) -> usize {
    docker
        .image_history(image)
        .await
        .unwrap()
        .iter()
        .filter(|item| item.created_by.contains(" LABEL "))
        .count()
}

/// A Dockerfile that sets every part of an image's config a `FROM` could lose.
const FULL_CONFIG_DOCKERFILE: &str = "FROM scratch
COPY hello.txt /srv/hello.txt
ENV A=1 B=\"two words\"
WORKDIR /srv
USER 1000:1000
EXPOSE 8080/tcp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD [\"/srv/health\"]
SHELL [\"/bin/ash\", \"-c\"]
ENTRYPOINT [\"/srv/app\"]
CMD [\"serve\"]
";

#[tokio::test]
async fn labels_take_one_step_and_give_the_image_the_engine_gives_with_a_step_each() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context_with(&images, FULL_CONFIG_DOCKERFILE);
    let mut req = images.request(context.path(), "folded");
    req.labels.insert(
        "shipit.test.tricky".to_string(),
        r#"say "hi" to $HOME \ ${X} = é"#.to_string(),
    );
    req.labels.insert(
        OCI_CREATED_LABEL.to_string(),
        "2026-12-06T12:00:00Z".to_string(),
    );

    let (built, events) = run(&docker, &images, &req).await;
    let built = built.unwrap();
    assert_eq!(label_steps(&docker, &req.tag).await, 1);
    assert!(
        events.iter().any(|e| matches!(e, BuildProgress::Output(line) if line == &format!("labelling the image: {} labels in one LABEL step", req.labels.len() + 2))),
        "{events:?}"
    );
    // The Dockerfile's steps are the only steps reported.
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, BuildProgress::Step { total, .. } if *total != 12)),
        "{events:?}"
    );
    let ours = docker.inspect_image(&req.tag).await.unwrap();
    assert_eq!(ours.id.as_deref(), Some(built.id.as_str()));

    let mut expected = req.labels.clone();
    expected.insert(CONTEXT_HASH_LABEL.to_string(), built.context_hash.clone());
    expected.insert(SERVICE_LABEL.to_string(), req.service.clone());
    let config = ours.config.clone().unwrap();
    let labels: BTreeMap<String, String> = config.labels.clone().unwrap().into_iter().collect();
    assert_eq!(labels, expected);

    // The engine's own labelling of the same context and labels, a step per label, gives
    // the same config and the same layers.
    let theirs_tag = images.tag("engine");
    engine_labelled_build(&docker, context.path(), &theirs_tag, &expected).await;
    assert_eq!(label_steps(&docker, &theirs_tag).await, expected.len());
    let theirs = docker.inspect_image(&theirs_tag).await.unwrap();
    assert_eq!(theirs.config.unwrap(), config);
    assert_eq!(theirs.author, ours.author);
    assert_eq!(theirs.root_fs.unwrap().layers, ours.root_fs.unwrap().layers);
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.entrypoint, Some(vec!["/srv/app".to_string()]));
}

#[tokio::test]
async fn onbuild_and_maintainer_keep_their_place_and_the_labels_go_on_the_build() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context_with(
        &images,
        "FROM scratch\nMAINTAINER shipit tests\nCOPY hello.txt /hello.txt\nONBUILD COPY . /app\n",
    );
    let req = images.request(context.path(), "onbuild");
    let (built, events) = run(&docker, &images, &req).await;
    let built = built.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BuildProgress::Output(line) if line.starts_with("labelling"))),
        "{events:?}"
    );
    let image = docker.inspect_image(&req.tag).await.unwrap();
    assert_eq!(image.id.as_deref(), Some(built.id.as_str()));
    assert_eq!(image.author.as_deref(), Some("shipit tests"));
    let config = image.config.unwrap();
    assert_eq!(config.on_build, Some(vec!["COPY . /app".to_string()]));
    let labels = config.labels.unwrap();
    assert_eq!(labels[CONTEXT_HASH_LABEL], built.context_hash);
    assert_eq!(labels[TEST_LABEL], images.id);
    // Four labels (two asked for, the hash and the service), a step each.
    assert_eq!(label_steps(&docker, &req.tag).await, 4);
}

#[tokio::test]
async fn a_dockerfile_that_gains_onbuild_after_the_hash_fails_the_build_as_changed() {
    let docker = crate::docker::connect().await.unwrap();
    let images = TestImages::new();
    let context = hello_context(&images);
    let root = context.path().to_path_buf();
    let req = images.request(&root, "late-onbuild");
    let dockerfile = root.join("Dockerfile");
    BEFORE_SEND.on(&root, move |_| {
        let text = std::fs::read_to_string(&dockerfile).unwrap();
        std::fs::write(&dockerfile, format!("{text}ONBUILD COPY . /app\n")).unwrap();
    });

    let (result, _) = run(&docker, &images, &req).await;
    let err = result.unwrap_err();
    let BuildError::Context(ContextError::Changed { path, stage, .. }) = &err else {
        panic!("expected a changed context, got {err:?}");
    };
    assert_eq!(*stage, Stage::Sent);
    assert!(path.ends_with("Dockerfile"), "{err}");
    assert!(docker.inspect_image(&req.tag).await.is_err());
}
