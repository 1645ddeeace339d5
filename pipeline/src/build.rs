//! The image build: a service's context in, a tagged image out.
//!
//! [`build`] hashes the context (see [`context`]) and looks for an image labelled with that
//! hash (`shipit.context-hash`). When there is one, the build is skipped: the image gets the
//! requested tag and is reused, which is what keeps a release of an unchanged service fast.
//! Otherwise the context's tar (honouring [`dockerignore`]) is streamed to the engine's classic
//! builder as it is packed, checked against what was hashed ([`archive`]), and the builder's
//! steps and output are passed to the caller. The image's labels are then put on in one
//! `LABEL` step ([`labels`]) rather than the step per label the builder would spend on labels
//! given with the request. A failed build says which step failed, what the
//! engine said, and what came before. The image a build gives is recorded beside the stat
//! cache ([`last_image`]), so the next "unchanged" decision inspects one image rather than
//! listing the engine's.
//!
//! An image belongs to the service that built it (its `shipit.service` label), and only that
//! service reuses it: so a service's images can be pruned without touching another's.

pub mod archive;
pub mod context;
pub mod dockerignore;
pub mod hash;
mod labels;
mod last_image;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use self::archive::TarBody;
pub use self::context::{Context, ContextError, Stage};
pub use self::hash::{ContextHash, ContextHasher, HashStats};
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
        last_image::store(req, &hash.hex, &id);
        progress(BuildProgress::Reused { id: id.clone() });
        return Ok(BuiltImage {
            id,
            tag: req.tag.clone(),
            context_hash: hash.hex,
            reused: true,
        });
    }

    let mut labels = req.labels.clone();
    labels.insert(CONTEXT_HASH_LABEL.to_string(), hash.hex.clone());
    labels.insert(SERVICE_LABEL.to_string(), req.service.clone());
    // One LABEL step after the build rather than one step per label (see `labels`), unless
    // folding could change the image.
    let count = labels.len();
    let folded = match labels::instruction(&labels) {
        Some(line) if dockerfile_allows_folding(req).await => Some(line),
        _ => None,
    };
    let dockerfile = context::relative_slash_path(&req.dockerfile)
        .expect("check_request accepted the Dockerfile path");
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(&dockerfile)
        .rm(true)
        .forcerm(true);
    if folded.is_none() {
        let labels: HashMap<String, String> = labels.into_iter().collect();
        options = options.t(&req.tag).labels(&labels);
    }
    let options = options.build();

    // The tar is packed on a blocking thread while the engine reads it: the two meet in a
    // queue of a few chunks, so memory does not grow with the context.
    let context_hash = hash.hex.clone();
    let (mut body, chunks) = TarBody::channel();
    let packer = tokio::task::spawn_blocking(move || {
        #[cfg(test)]
        tests::before_send(context.root());
        match archive::write_tar(&context, &hash, &mut body) {
            Ok(_) => body
                .finish()
                .map_err(|source| ContextError::Send { source }),
            Err(e) => {
                body.abort(&e);
                Err(e)
            }
        }
    });
    let sent = send(docker, req, options, chunks, progress).await;
    let packed = match packer.await {
        Ok(packed) => packed,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the blocking tar task was cancelled: {e}"),
        },
    };
    // A tar that failed is why the engine saw a broken upload, so its error comes first,
    // unless the engine stopped reading (then the engine's error says why).
    match (packed, sent) {
        (Ok(()), Ok(built)) => {
            if let Some(line) = folded {
                progress(BuildProgress::Output(format!(
                    "labelling the image: {count} labels in one LABEL step"
                )));
                label(docker, req, built, &line, progress).await?;
            }
        }
        (Err(ContextError::Send { .. }), Err(engine)) | (Ok(()), Err(engine)) => {
            return Err(engine);
        }
        (Err(e), _) => {
            if matches!(e, ContextError::Changed { .. }) {
                forget_cache(req);
            }
            return Err(e.into());
        }
    }

    let image = docker
        .inspect_image(&req.tag)
        .await
        .map_err(|source| BuildError::Engine {
            action: format!("inspecting the image just built as {}", req.tag),
            source,
        })?;
    let id = image.id.unwrap_or_default();
    last_image::store(req, &context_hash, &id);
    progress(BuildProgress::Built { id: id.clone() });
    Ok(BuiltImage {
        id,
        tag: req.tag.clone(),
        context_hash,
        reused: false,
    })
}

/// Runs the engine's build on the streamed `chunks`, reporting its output. Returns the id of
/// the image built, as the engine gave it (`None` from an engine that gave none).
async fn send(
    docker: &Docker,
    req: &BuildRequest,
    options: bollard::query_parameters::BuildImageOptions,
    chunks: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    progress: &mut (dyn FnMut(BuildProgress) + Send),
) -> Result<Option<String>, BuildError> {
    let mut output = BuildOutput::default();
    let mut built = None;
    let mut stream = docker.build_image(options, None, Some(bollard::body_try_stream(chunks)));
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
                if let Some(id) = info.aux.and_then(|aux| aux.id) {
                    built = Some(id);
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
    Ok(built)
}

/// Whether `req`'s labels may be folded into one step after its build: its Dockerfile has no
/// `ONBUILD` or `MAINTAINER` instruction (see [`labels::dockerfile_allows`]). A Dockerfile that
/// cannot be read here is left to the build, which reports it, and keeps the labels on it.
///
/// It is read after the context was hashed, so the text read is the text built: a Dockerfile
/// written in between no longer matches the hash, and the send fails the build as changed.
async fn dockerfile_allows_folding(req: &BuildRequest) -> bool {
    match tokio::fs::read(req.context.join(&req.dockerfile)).await {
        Ok(text) => labels::dockerfile_allows(&String::from_utf8_lossy(&text)),
        Err(_) => false,
    }
}

/// Puts `instruction` (all the labels in one `LABEL` line) on the image `built`, by a build
/// whose Dockerfile is `FROM <built>` and that line, tagged `req.tag`: one build step.
async fn label(
    docker: &Docker,
    req: &BuildRequest,
    built: Option<String>,
    instruction: &str,
    progress: &mut (dyn FnMut(BuildProgress) + Send),
) -> Result<(), BuildError> {
    let Some(id) = built else {
        return Err(BuildError::Failed {
            step: None,
            message: "the engine did not say which image it built".to_string(),
            last_lines: Vec::new(),
        });
    };
    let tar = labels::context_tar(&labels::dockerfile(&id, instruction))
        .expect("a tar of one small file is written to memory");
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&req.tag)
        .rm(true)
        .forcerm(true)
        .build();
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(tar)) });
    // Its two steps are not steps of the service's Dockerfile: only its other lines are passed
    // on (a failure still names its step).
    let mut quiet = |event: BuildProgress| {
        if !matches!(event, BuildProgress::Step { .. }) {
            progress(event);
        }
    };
    send(docker, req, options, body, &mut quiet).await?;
    Ok(())
}

/// Drops the service's stat cache: after a file changed under the send, its recorded stat may
/// pair with a digest it no longer has, and the next hash must read every file again.
fn forget_cache(req: &BuildRequest) {
    if let Some(dir) = &req.cache_dir {
        let _ = std::fs::remove_file(dir.join(cache_file_name(&req.service)));
    }
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

/// An image built for `req`'s service from the context with `hash` that carries `req`'s
/// module labels: the one the last build recorded when it still qualifies, else the newest.
async fn find_reusable(
    docker: &Docker,
    req: &BuildRequest,
    hash: &str,
) -> Result<Option<last_image::Candidate>, BuildError> {
    if let Some(recorded) = last_image::recorded(docker, req, hash).await {
        return Ok(Some(recorded));
    }
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
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)))
        .map(|image| last_image::Candidate {
            id: image.id,
            repo_tags: image.repo_tags,
        }))
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
    format!("context-{}.json", safe_name(service))
}

/// `service` as a file name part: characters other than ASCII letters, digits, `-`, `_` and
/// `.` become `_`.
fn safe_name(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
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
mod tests;
