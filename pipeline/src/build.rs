//! The image build: a service's context in, a tagged image out.
//!
//! [`build`] hashes the context (see [`context`]) and looks for an image labelled with that
//! hash (`shipit.context-hash`). When there is one, the build is skipped: the image gets the
//! requested tag and is reused, which is what keeps a release of an unchanged service fast.
//! Otherwise the context is packed into an in-memory tar (honouring [`dockerignore`]) and
//! built with the engine's classic builder, streaming its steps and output to the caller. A
//! failed build says which step failed, what the engine said, and what came before.
//!
//! An image belongs to the service that built it (its `shipit.service` label), and only that
//! service reuses it: so a service's images can be pruned without touching another's.

pub mod context;
pub mod dockerignore;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

pub use self::context::{Context, ContextError, ContextHash, ContextHasher, HashStats};
use crate::git::Revision;

/// The label that records which context an image was built from.
pub const CONTEXT_HASH_LABEL: &str = "shipit.context-hash";
/// The label that records the release that built an image.
pub const RELEASE_LABEL: &str = "shipit.release";
/// The label that records the service an image was built for; only that service reuses it.
pub const SERVICE_LABEL: &str = crate::container_spec::LABEL_SERVICE;
/// OCI: the source control revision the image was built from.
pub const OCI_REVISION_LABEL: &str = "org.opencontainers.image.revision";
/// OCI: the version of the packaged software (`<short sha>` or `<short sha>-dirty`).
pub const OCI_VERSION_LABEL: &str = "org.opencontainers.image.version";
/// OCI: when the image was built, RFC 3339.
pub const OCI_CREATED_LABEL: &str = "org.opencontainers.image.created";

/// How many lines of build output a failure keeps.
pub const FAILURE_TAIL_LINES: usize = 10;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The service the image is for; names the stat cache file.
    pub service: String,
    /// The build context folder.
    pub context: PathBuf,
    /// The Dockerfile, relative to `context`.
    pub dockerfile: PathBuf,
    /// The reference the image gets, e.g. `hello:1a2b3c4d5e6f`.
    pub tag: String,
    /// Labels set on a newly built image (see [`oci_labels`]). A reused image keeps the
    /// labels of the build that made it.
    pub labels: BTreeMap<String, String>,
    /// Where the context stat cache lives; `None` reads every file on every hash.
    pub cache_dir: Option<PathBuf>,
}

/// The image a build produced or reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image id (`sha256:...`).
    pub id: String,
    /// The tag it carries, as requested.
    pub tag: String,
    /// The context hash, also in the image's `shipit.context-hash` label.
    pub context_hash: String,
    /// `true` when an existing image was reused and nothing was built.
    pub reused: bool,
}

/// What [`build`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// The context is being walked and hashed.
    Hashing,
    /// An image with the same context hash exists; it is used and nothing is built.
    Reused { id: String },
    /// The builder started a Dockerfile step (`Step 2/5 : COPY . /app` is index 2, total 5,
    /// text `COPY . /app`).
    Step {
        index: u32,
        total: u32,
        text: String,
    },
    /// A line of build output that is not a step header.
    Output(String),
    /// The image was built.
    Built { id: String },
}

/// Why a build did not produce an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the build context {path} does not exist or is not a folder")]
    ContextMissing { path: PathBuf },

    #[error("the Dockerfile {path} is not in the build context {context}")]
    DockerfileMissing { path: PathBuf, context: PathBuf },

    #[error(transparent)]
    Context(#[from] ContextError),

    #[error("the Docker Engine failed while {action}: {source}")]
    Engine {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("{}", render_failure(.step.as_deref(), .message, .last_lines))]
    Failed {
        /// The step header the engine was running (`Step 2/2 : COPY missing.txt /`).
        step: Option<String>,
        /// The engine's error.
        message: String,
        /// The last lines of build output before the error.
        last_lines: Vec<String>,
    },
}

impl BuildError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            BuildError::ContextMissing { .. } => {
                "check the service's `context` in the config; relative paths are resolved \
                 against the config file's folder"
            }
            BuildError::DockerfileMissing { .. } => {
                "create it, or set the service's `dockerfile` to its path relative to the context"
            }
            BuildError::Context(e) => return e.hint(),
            BuildError::Engine { .. } => {
                "check that the engine is running and healthy (`docker info`), then try again"
            }
            BuildError::Failed { .. } => {
                "fix the Dockerfile or the build context and release again; files matched by \
                 .dockerignore are not sent to the engine"
            }
        };
        Some(hint.to_string())
    }
}

fn render_failure(step: Option<&str>, message: &str, last_lines: &[String]) -> String {
    let mut text = match step {
        Some(step) => format!("the image build failed at `{step}`: {message}"),
        None => format!("the image build failed: {message}"),
    };
    if !last_lines.is_empty() {
        text.push_str("\nlast build output:");
        for line in last_lines {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    text
}

/// Builds `req`'s image, or reuses the image already built from the same context.
pub async fn build(
    docker: &Docker,
    req: &BuildRequest,
    progress: &mut (dyn FnMut(BuildProgress) + Send),
) -> Result<BuiltImage, BuildError> {
    check_request(req)?;

    progress(BuildProgress::Hashing);
    let (context, hash) = hash_context(req).await?;
    tracing::debug!(
        service = %req.service,
        hash = %hash.hex,
        entries = hash.stats.entries,
        files_hashed = hash.stats.files_hashed,
        files_reused = hash.stats.files_reused,
        "hashed the build context"
    );

    if let Some(id) = reuse(docker, req, &hash.hex).await? {
        progress(BuildProgress::Reused { id: id.clone() });
        return Ok(BuiltImage {
            id,
            tag: req.tag.clone(),
            context_hash: hash.hex,
            reused: true,
        });
    }

    let tar = blocking(move || context.to_tar()).await?;
    let mut labels: HashMap<String, String> = req
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(CONTEXT_HASH_LABEL.to_string(), hash.hex.clone());
    labels.insert(SERVICE_LABEL.to_string(), req.service.clone());
    let dockerfile = context::relative_slash_path(&req.dockerfile)
        .expect("check_request accepted the Dockerfile path");
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&dockerfile)
        .t(&req.tag)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();

    let mut output = BuildOutput::default();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref() {
                    output.push(text, progress);
                }
                if let Some(status) = info.status.as_deref() {
                    output.push(status, progress);
                    output.push("\n", progress);
                }
            }
            Err(
                bollard::errors::Error::DockerStreamError { error }
                | bollard::errors::Error::DockerResponseServerError { message: error, .. },
            ) => {
                output.flush(progress);
                return Err(output.failure(error));
            }
            Err(source) => {
                return Err(BuildError::Engine {
                    action: format!("building {}", req.tag),
                    source,
                });
            }
        }
    }
    output.flush(progress);

    let image = docker
        .inspect_image(&req.tag)
        .await
        .map_err(|source| BuildError::Engine {
            action: format!("inspecting the image just built as {}", req.tag),
            source,
        })?;
    let id = image.id.unwrap_or_default();
    progress(BuildProgress::Built { id: id.clone() });
    Ok(BuiltImage {
        id,
        tag: req.tag.clone(),
        context_hash: hash.hex,
        reused: false,
    })
}

/// What [`build`] would do with a request, found without doing it (`shipit plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The context hash, as the `shipit.context-hash` label would record it.
    pub context_hash: String,
    /// The id of the image that would be reused; `None` when an image would be built.
    pub reuse: Option<String>,
    /// How the context was hashed: entries, and files read or taken from the stat cache.
    pub stats: HashStats,
}

/// Whether [`build`] would reuse an image for `req` or build one: hashes the context and
/// looks for an image with that hash and the same module labels. Read-only: nothing is built
/// or tagged. (The context stat cache that every build refreshes is refreshed here too.)
pub async fn decide(docker: &Docker, req: &BuildRequest) -> Result<Decision, BuildError> {
    check_request(req)?;
    let (_, hash) = hash_context(req).await?;
    let reuse = find_reusable(docker, req, &hash.hex)
        .await?
        .map(|image| image.id);
    Ok(Decision {
        context_hash: hash.hex,
        reuse,
        stats: hash.stats,
    })
}

/// Walks and hashes `req`'s context off the async runtime.
async fn hash_context(req: &BuildRequest) -> Result<(Context, ContextHash), BuildError> {
    let root = req.context.clone();
    let dockerfile = req.dockerfile.clone();
    let hasher = match &req.cache_dir {
        Some(dir) => ContextHasher::with_cache(dir.join(cache_file_name(&req.service))),
        None => ContextHasher::new(),
    };
    Ok(blocking(move || {
        let context = Context::collect(&root, &dockerfile)?;
        let hash = hasher.hash(&context)?;
        Ok::<_, ContextError>((context, hash))
    })
    .await?)
}

/// The labels a release puts on the image it builds: the OCI revision, version and creation
/// time, and the release id.
pub fn oci_labels(
    revision: Option<&Revision>,
    created: jiff::Timestamp,
    release: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Some(revision) = revision {
        labels.insert(OCI_REVISION_LABEL.to_string(), revision.sha.clone());
        labels.insert(OCI_VERSION_LABEL.to_string(), revision.version());
    }
    labels.insert(OCI_CREATED_LABEL.to_string(), created.to_string());
    labels.insert(RELEASE_LABEL.to_string(), release.to_string());
    labels
}

/// Refuses, before anything is read or sent, a request whose context or Dockerfile is missing.
fn check_request(req: &BuildRequest) -> Result<(), BuildError> {
    if !req.context.is_dir() {
        return Err(BuildError::ContextMissing {
            path: req.context.clone(),
        });
    }
    if context::relative_slash_path(&req.dockerfile).is_none() {
        return Err(ContextError::DockerfileOutside {
            path: req.dockerfile.clone(),
        }
        .into());
    }
    let dockerfile = req.context.join(&req.dockerfile);
    if !dockerfile.is_file() {
        return Err(BuildError::DockerfileMissing {
            path: dockerfile,
            context: req.context.clone(),
        });
    }
    Ok(())
}

/// The id of an image built from the context with `hash`, tagged `req.tag` if it was not.
///
/// The image must also carry the same `shipit.module.*` labels as the request: the module
/// versions are part of what an image is, and a reused image keeps the labels it was built
/// with. A module bump that leaves the context unchanged therefore builds again (a fast,
/// fully cached build) rather than reuse an image that records the old versions.
async fn reuse(
    docker: &Docker,
    req: &BuildRequest,
    hash: &str,
) -> Result<Option<String>, BuildError> {
    let Some(image) = find_reusable(docker, req, hash).await? else {
        return Ok(None);
    };

    let (repo, tag) = split_reference(&req.tag);
    let full = format!("{repo}:{tag}");
    if !image.repo_tags.contains(&full) {
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        docker
            .tag_image(&image.id, Some(options))
            .await
            .map_err(|source| BuildError::Engine {
                action: format!("tagging the reused image {} as {full}", image.id),
                source,
            })?;
    }
    Ok(Some(image.id))
}

/// The newest image built for `req`'s service from the context with `hash` that carries
/// `req`'s module labels.
async fn find_reusable(
    docker: &Docker,
    req: &BuildRequest,
    hash: &str,
) -> Result<Option<bollard::models::ImageSummary>, BuildError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{CONTEXT_HASH_LABEL}={hash}"),
            format!("{SERVICE_LABEL}={}", req.service),
        ],
    )]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker
        .list_images(Some(options))
        .await
        .map_err(|source| BuildError::Engine {
            action: "looking for an image built from the same context".to_string(),
            source,
        })?;
    let wanted = module_labels(req.labels.iter());
    Ok(images
        .into_iter()
        .filter(|image| module_labels(image.labels.iter()) == wanted)
        // Newest first; the id breaks a tie (`created` is in seconds), so `shipit plan` names
        // the image the release will pick.
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id))))
}

/// The `shipit.module.*` labels among `labels`, sorted.
fn module_labels<'a>(
    labels: impl Iterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<&'a str, &'a str> {
    labels
        .filter(|(key, _)| key.starts_with(crate::version::MODULE_LABEL_PREFIX))
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// `repo[:tag]` into its repository and tag (`latest` when absent). A `:` before the last
/// `/` belongs to a registry's port, not to the tag.
fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rfind(':') {
        Some(at) if !reference[at..].contains('/') => (&reference[..at], &reference[at + 1..]),
        _ => (reference, "latest"),
    }
}

fn cache_file_name(service: &str) -> String {
    let safe: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("context-{safe}.json")
}

/// The builder's text stream, cut into lines: step headers become [`BuildProgress::Step`],
/// the rest [`BuildProgress::Output`]. Keeps the current step and the last lines for errors.
#[derive(Debug, Default)]
struct BuildOutput {
    partial: String,
    step: Option<String>,
    tail: VecDeque<String>,
}

impl BuildOutput {
    fn push(&mut self, text: &str, progress: &mut (dyn FnMut(BuildProgress) + Send)) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(line.trim_end(), progress);
        }
    }

    fn flush(&mut self, progress: &mut (dyn FnMut(BuildProgress) + Send)) {
        let rest = std::mem::take(&mut self.partial);
        if !rest.trim().is_empty() {
            self.line(rest.trim_end(), progress);
        }
    }

    fn line(&mut self, line: &str, progress: &mut (dyn FnMut(BuildProgress) + Send)) {
        if line.trim().is_empty() {
            return;
        }
        if self.tail.len() == FAILURE_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        match parse_step(line) {
            Some((index, total, text)) => {
                self.step = Some(line.to_string());
                progress(BuildProgress::Step {
                    index,
                    total,
                    text: text.to_string(),
                });
            }
            None => progress(BuildProgress::Output(line.to_string())),
        }
    }

    fn failure(self, message: String) -> BuildError {
        BuildError::Failed {
            step: self.step,
            message: message.trim().to_string(),
            last_lines: self.tail.into(),
        }
    }
}

/// `Step 2/5 : COPY . /app` into `(2, 5, "COPY . /app")`.
fn parse_step(line: &str) -> Option<(u32, u32, &str)> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, text) = rest.split_once(" : ")?;
    let (index, total) = counts.split_once('/')?;
    Some((index.parse().ok()?, total.parse().ok()?, text))
}

/// Runs blocking file work off the async threads; a panic in it resumes here.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the blocking build task was cancelled: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bollard::query_parameters::{RemoveImageOptions, RemoveImageOptionsBuilder};

    use super::*;

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
            text.starts_with(
                "the image build failed at `Step 2/2 : COPY missing.txt /`: COPY failed"
            ),
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
        let context = hello_context(&images);
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY missing.txt /\n",
        )
        .unwrap();
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
}
