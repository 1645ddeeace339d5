//! The seam between the release state machine and the outside world.
//!
//! A [`Platform`] is one service on one target. The state machine in [`crate::release`] only
//! calls these methods, in order, and knows nothing of Docker or AWS. `local` implements them
//! with the Docker Engine and shipit's edge; `ecs` does the same with the AWS SDK. `target`
//! opens the platform of a config's target, whatever its kind.

pub mod ecs;
pub mod gate;
pub mod kind;
pub mod local;
pub mod observed;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Slot;
use crate::build::BuildRequest;
use crate::config::Service;
use crate::event::Reporter;
use crate::history::{HistoryStore, ReleaseRecord};
use crate::lock::LockStore;
use crate::shift::ShiftStrategy;

/// The slot that serves traffic now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Live {
    pub slot: Slot,
    /// The id of the release whose container serves (what its version endpoint reports).
    pub release: String,
    pub since: Option<Timestamp>,
    /// Set when what serves in the slot is not shipit's (targets another tool registered in
    /// the forwarded target group): what it is. A release goes to the other slot and leaves
    /// it alone; it is never a release to roll back to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign: Option<String>,
}

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// A reference that runs it: the tag, e.g. `hello:1a2b3c4`.
    pub reference: String,
    /// The engine's image id (or, after a push, the registry digest).
    pub id: String,
    pub reused: bool,
}

/// A launched (not yet live) instance of a release in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub slot: Slot,
    pub release: String,
    /// Where the platform reaches it, e.g. `127.0.0.1:49153` for a local container.
    pub address: String,
    /// The platform's handle: a container id, an ECS service name.
    pub handle: String,
}

/// What a build needs to know about the release it builds for.
#[derive(Debug, Clone)]
pub struct BuildInput {
    pub release: String,
    pub version: String,
    pub revision: Option<crate::git::Revision>,
    pub created: Timestamp,
    /// Library module versions that go into the image, by module name; they become
    /// `shipit.module.<name>` labels.
    pub modules: BTreeMap<String, String>,
}

/// An error from the outside world, with what to do about it ([`PlatformError::hint`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlatformError {
    pub kind: ErrorKind,
    pub message: String,
    hint: Option<String>,
}

/// What broke, so the CLI can map it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The build failed (a Dockerfile step, the pre-build command, the context).
    Build,
    /// The candidate never became healthy, exited, or reported another release.
    Verify,
    /// Docker, the edge or a cloud API failed or could not be reached.
    Platform,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Build => "build",
            ErrorKind::Verify => "verify",
            ErrorKind::Platform => "platform",
        }
    }
}

impl PlatformError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PlatformError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Carries the hint of the error this one reports, if it has one.
    pub fn with_hint_of(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }

    /// What to do about it.
    /// The error with `secrets` hidden in its message and hint.
    pub fn scrubbed(mut self, secrets: &crate::secret::Secrets) -> Self {
        if !secrets.is_empty() {
            self.message = secrets.scrub(&self.message).into_owned();
            self.hint = self.hint.map(|h| secrets.scrub(&h).into_owned());
        }
        self
    }

    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// One service on one target. Every method that waits has a deadline.
pub trait Platform {
    /// How the target is named in messages, e.g. `local target "local"`.
    fn describe(&self) -> String;

    /// The name of the service this platform releases.
    fn service(&self) -> &str;

    /// The name of the target, as the config calls it.
    fn target(&self) -> &str;

    /// The public URL of the service on this target.
    fn url(&self) -> String;

    /// The release lock of this service on this target.
    fn locks(&self) -> &dyn LockStore;

    /// Where this service's release records live.
    fn history(&self) -> &dyn HistoryStore;

    /// How traffic moves to a verified candidate on this target (from the target's `shift`
    /// key).
    fn shift_strategy(&self) -> &ShiftStrategy;

    /// The slot a release takes when nothing is live: the one traffic is not routed to, as
    /// the last `converge` read it, so that the candidate gets no traffic before it is
    /// verified. Blue by default.
    fn first_slot(&self) -> Slot {
        Slot::Blue
    }

    /// Where a hook (or a person) reaches `candidate` before traffic moves to it, if
    /// anywhere from this machine.
    fn candidate_url(&self, _candidate: &Candidate) -> Option<String> {
        None
    }

    /// The live slot, read from where traffic really goes.
    fn live(&self) -> impl Future<Output = Result<Option<Live>, PlatformError>>;

    /// Brings the target to a known state before a release: whatever a crashed run left in
    /// the idle slot is removed, and the routing layer is up. Returns the live slot (the state
    /// machine reports it).
    fn converge(
        &self,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Option<Live>, PlatformError>>;

    /// Checks, before a release versions, builds or changes anything, that what it needs
    /// exists (an ecs target's account: roles, log group, secrets, network, target groups).
    /// Rollbacks do not run it: they go back to what ran before.
    fn preflight(&self, _reporter: &Reporter) -> impl Future<Output = Result<(), PlatformError>> {
        std::future::ready(Ok(()))
    }

    /// Builds (or reuses) the service's image.
    fn build(
        &self,
        input: &BuildInput,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Image, PlatformError>>;

    /// Makes the image available where the target runs it. Local targets return it as is.
    fn push(
        &self,
        image: &Image,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Image, PlatformError>>;

    /// Starts `image` for `release` in `slot`, which must be idle.
    fn launch(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &Image,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Candidate, PlatformError>>;

    /// Starts an earlier release again in `slot`, from what is left of it (a stopped
    /// container, or its image).
    fn revive(
        &self,
        record: &ReleaseRecord,
        slot: Slot,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Candidate, PlatformError>>;

    /// The ids of those `records` whose release could be started again here by `revive`:
    /// by default those that name an image (a registry keeps it); the local target checks
    /// that the image is still on the engine.
    fn revivable(
        &self,
        records: &[ReleaseRecord],
    ) -> impl Future<Output = Result<BTreeSet<String>, PlatformError>> {
        let ids = records
            .iter()
            .filter(|r| r.image.is_some())
            .map(|r| r.id.clone())
            .collect();
        std::future::ready(Ok(ids))
    }

    /// Removes what older releases left beyond what the target keeps (local: the service's
    /// images past `keep_images`). Runs after a successful release, and its failure is only a
    /// warning. Nothing to do by default.
    fn prune(&self, reporter: &Reporter) -> impl Future<Output = Result<(), PlatformError>> {
        let _ = reporter;
        std::future::ready(Ok(()))
    }

    /// Runs the service's migrate hook once for `candidate`, in a one-off container (a task)
    /// of its image with its env and secrets, and waits for it to exit 0 within its
    /// timeout (see [`crate::migrate`]). Every kind implements it (no default, so no
    /// dispatcher can miss it).
    fn migrate(
        &self,
        candidate: &Candidate,
        migrate: &crate::config::Migrate,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Pauses, resumes, or puts under maintenance the service's traffic (see
    /// [`gate`]); a kind whose traffic does not pass through shipit's edge cannot.
    fn gate(
        &self,
        change: &gate::GateChange,
    ) -> impl Future<Output = Result<gate::Gate, PlatformError>> {
        let _ = change;
        std::future::ready(Err(PlatformError::new(
            ErrorKind::Platform,
            format!(
                "{} has no edge of shipit's in front of its traffic: pause and maintenance work on local targets",
                self.describe()
            ),
        )
        .with_hint("on an ecs target, a listener rule with a fixed response does the same")))
    }

    /// Waits until the candidate is healthy and reports its release. Fails at once if it
    /// exits, and stops waiting when `cancel` fires.
    fn verify(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Sends all traffic to the candidate, atomically. Returns the slot it replaced.
    fn shift(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Option<Live>, PlatformError>>;

    /// Sends `percent` (1..=99) of traffic to the candidate and the rest to `live`.
    fn split(
        &self,
        candidate: &Candidate,
        live: &Live,
        percent: u8,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Watches the candidate for `period` while it takes a share of traffic; Err (kind
    /// Verify) as soon as it breaks its bound (local: the 5xx rate from the edge metrics over
    /// `max_error_rate`; ecs: unhealthy targets or alarms). Stops early on `cancel` with Ok.
    fn bake(
        &self,
        candidate: &Candidate,
        period: Duration,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Puts all traffic back on `live` after a failed or interrupted split.
    fn unsplit(
        &self,
        live: &Live,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Makes a verified candidate reachable for a person to check, without live traffic
    /// (local: the edge preview route; ecs: the test listener). Returns how to reach it,
    /// e.g. a URL or "X-Shipit-Slot: green".
    fn stage(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<Option<String>, PlatformError>>;

    /// The candidate of `release` staged in `slot`, if it still runs there.
    fn staged(
        &self,
        slot: Slot,
        release: &str,
    ) -> impl Future<Output = Result<Option<Candidate>, PlatformError>>;

    /// Drains the replaced slot and stops it, keeping what a rollback needs.
    fn retire(
        &self,
        old: &Live,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Removes whatever runs in `slot`, which must not be live: a candidate that will not go
    /// live, possibly only half launched.
    fn discard(
        &self,
        slot: Slot,
        reporter: &Reporter,
    ) -> impl Future<Output = Result<(), PlatformError>>;

    /// Removes everything of the service on the target: routes and instances.
    fn down(&self, reporter: &Reporter) -> impl Future<Output = Result<(), PlatformError>>;
}

/// The engine could not be reached: a kind that needs it cannot build or run anything.
impl From<crate::docker::DockerError> for PlatformError {
    fn from(e: crate::docker::DockerError) -> PlatformError {
        PlatformError::new(ErrorKind::Platform, e.to_string()).with_hint_of(e.hint())
    }
}

/// The build request of a release of `service` in `project`: tagged
/// `<service>-<project>:<version>` (so two projects on one engine never move each other's
/// tags), labelled with
/// the release's OCI labels and its module versions (only these decide whether an image is
/// reused), with the context's stat cache in `cache_dir`. Every kind builds from it, and
/// `plan` decides "reuse or build" with it.
pub fn build_request(
    service: &Service,
    project: &str,
    input: &BuildInput,
    cache_dir: &Path,
) -> BuildRequest {
    let mut labels =
        crate::build::oci_labels(input.revision.as_ref(), input.created, &input.release);
    labels.extend(crate::version::labels(&input.modules));
    BuildRequest {
        service: service.name.clone(),
        context: service.context.clone(),
        dockerfile: service.dockerfile.clone(),
        tag: image_tag(&service.name, project, &input.version),
        labels,
        cache_dir: Some(cache_dir.to_path_buf()),
    }
}

/// The local tag of `service`'s image of `version` in `project`.
pub fn image_tag(service: &str, project: &str, version: &str) -> String {
    format!("{service}-{project}:{version}")
}

/// The Build phase of every kind: runs the service's pre-build command (in the config's
/// folder `config_dir`), then builds (or reuses) its image, reporting the build's steps as
/// progress lines and as a count the terminal shows as a bar.
pub(crate) async fn build_service(
    docker: &bollard::Docker,
    service: &Service,
    config_dir: &Path,
    request: &BuildRequest,
    reporter: &Reporter,
) -> Result<Image, PlatformError> {
    use crate::build::BuildProgress;
    use crate::event::{Event, Phase};
    if let Some(command) = &service.pre_build {
        reporter.progress(Phase::Build, format!("pre-build: {}", command.trim()));
        crate::pre_build::run(command, config_dir, |line| {
            reporter.progress(Phase::Build, line.to_string())
        })
        .await
        .map_err(|e| PlatformError::new(ErrorKind::Build, e.to_string()).with_hint_of(e.hint()))?;
    }
    let mut on_progress = |p: BuildProgress| match p {
        BuildProgress::Hashing => reporter.progress(Phase::Build, "hashing the context"),
        BuildProgress::Reused { id } => reporter.progress(
            Phase::Build,
            format!("reused image {id}: context unchanged"),
        ),
        BuildProgress::Step { index, total, text } => {
            reporter.progress(Phase::Build, format!("step {index}/{total}: {text}"));
            reporter.emit(Event::Count {
                phase: Phase::Build,
                done: u64::from(index.saturating_sub(1)),
                total: u64::from(total),
            });
        }
        BuildProgress::Output(line) => reporter.progress(Phase::Build, line),
        BuildProgress::Built { id } => reporter.progress(Phase::Build, format!("built {id}")),
    };
    let built = crate::build::build(docker, request, &mut on_progress)
        .await
        .map_err(|e| PlatformError::new(ErrorKind::Build, e.to_string()).with_hint_of(e.hint()))?;
    Ok(Image {
        reference: built.tag,
        id: built.id,
        reused: built.reused,
    })
}
