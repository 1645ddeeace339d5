//! The local target: one Docker host, two containers per service (one per slot), and shipit's
//! edge in front of them.
//!
//! The edge is the source of truth for which slot is live. Containers are found by name (one
//! per slot) and checked by label before anything destructive, so the live container is never
//! stopped or removed by mistake, whatever a crashed run left behind.

mod bake;
mod candidate;
mod container;
mod down;
mod gate;
pub mod images;
mod migrate;
mod observe;
pub mod plan;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerUpdateBody, RestartPolicy};
use bollard::query_parameters::StopContainerOptions;
use shipit_edge::{AdminClient, Backend};
use tokio_util::sync::CancellationToken;

use crate::Slot;
use crate::config::{Config, LocalTarget, Service};
use crate::container_spec::{LABEL_RELEASE, LIVE_RESTART_POLICY, legacy_container_name};
use crate::event::{Phase, Reporter};
use crate::fault::{self, FaultPoint};
use crate::health::{Probe, Prober};
use crate::history::{FileHistory, HistoryStore, ReleaseRecord};
use crate::lock::{FileLockStore, LockStore};
use crate::platform::kind::{Kind, Opening, PlanError};
use crate::platform::observed::Observed;
use crate::platform::{Candidate, ErrorKind, Image, Live, Platform, PlatformError};
use crate::shift::ShiftStrategy;
use crate::state_dir::StatePaths;

use self::bake::{Answers, round_to_ms};
pub use self::bake::{BAKE_MIN_REQUESTS, BAKE_PROGRESS_INTERVAL, BAKE_SAMPLE_INTERVAL};
pub use self::container::LOG_TAIL_LINES;
use self::container::{docker_error, published_port};
pub use self::plan::LocalPlan;

/// How long the edge gets to answer after it is started.
pub const EDGE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The lease of a weighted step's split: should this process die mid-bake, the edge
/// withdraws the candidate by itself this long after the last renewal (see
/// `shipit_edge::lease`). A staged preview (`release --no-promote`) has no lease: it takes
/// no plain traffic and waits for `promote`.
pub const CANDIDATE_LEASE: Duration = shipit_edge::DEFAULT_CANDIDATE_LEASE;
/// How often a bake renews the split's lease: a third of it, so two renewals can be late
/// before it lapses.
pub const CANDIDATE_LEASE_RENEWAL: Duration =
    Duration::from_millis(CANDIDATE_LEASE.as_millis() as u64 / 3);
pub struct LocalPlatform {
    service: Service,
    target_name: String,
    target: LocalTarget,
    config_dir: PathBuf,
    /// The config file, which the edge process reads its target's edge settings from.
    config_path: PathBuf,
    /// The config's project id: our containers carry it in their name and labels.
    project: String,
    docker: Docker,
    paths: StatePaths,
    history: FileHistory,
    locks: FileLockStore,
    /// The shipit executable, started as `shipit edge run` for the edge.
    exe: PathBuf,
    /// The service's `secrets`, read from AWS at the first launch of this run.
    secret_values: tokio::sync::OnceCell<std::collections::BTreeMap<String, String>>,
}

impl LocalPlatform {
    pub fn new(
        config: &Config,
        service: &Service,
        target_name: &str,
        target: &LocalTarget,
        docker: Docker,
        exe: PathBuf,
    ) -> LocalPlatform {
        let paths = StatePaths::new(&config.state_dir, target_name, &service.name);
        LocalPlatform {
            service: service.clone(),
            target_name: target_name.to_string(),
            target: target.clone(),
            config_dir: config.dir.clone(),
            config_path: config.path.clone(),
            project: config.project.clone(),
            docker,
            history: FileHistory::new(paths.releases_dir()),
            locks: FileLockStore::new(paths.lock_file()),
            paths,
            exe,
            secret_values: tokio::sync::OnceCell::new(),
        }
    }

    /// The service as a container is launched with it: its `secrets` read from AWS (once
    /// per run) and added to its env, where every printout and error hides them.
    async fn launch_service(&self) -> Result<std::borrow::Cow<'_, Service>, PlatformError> {
        if self.service.secrets.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(&self.service));
        }
        let values = self
            .secret_values
            .get_or_try_init(|| async {
                Box::pin(crate::secret::fetch(&self.service.secrets))
                    .await
                    .map_err(|e| {
                        PlatformError::new(ErrorKind::Platform, e.to_string()).with_hint(format!(
                            "{}; the key is services.{}.secrets.{}",
                            e.hint, self.service.name, e.name
                        ))
                    })
            })
            .await?;
        let mut service = self.service.clone();
        service.env.extend(values.clone());
        Ok(std::borrow::Cow::Owned(service))
    }

    pub fn paths(&self) -> &StatePaths {
        &self.paths
    }

    /// `e` with the service's env values hidden: a failure's text quotes what the app said
    /// (its health answer, its last log lines), which may echo its secrets, and it goes into
    /// the record and every output.
    fn scrubbed(&self, e: PlatformError) -> PlatformError {
        e.scrubbed(&crate::secret::Secrets::of_service(&self.service))
            .scrubbed(&crate::secret::resolved())
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(self.paths.edge_dir.join(shipit_edge::ADMIN_SOCKET))
    }

    /// The edge's argv after the executable.
    /// The config and target name make the edge read the target's `[edge]` settings.
    pub fn edge_args(
        config: &Path,
        target: &str,
        edge_dir: &Path,
        listen: std::net::SocketAddr,
    ) -> Vec<OsString> {
        vec![
            "--config".into(),
            config.as_os_str().to_owned(),
            "edge".into(),
            "run".into(),
            "--dir".into(),
            edge_dir.as_os_str().to_owned(),
            "--target".into(),
            target.into(),
            "--listen".into(),
            listen.to_string().into(),
        ]
    }

    /// Starts the edge when it is not running, and returns a client to it.
    pub async fn ensure_edge(&self) -> Result<AdminClient, PlatformError> {
        let spec = shipit_edge::daemon::DaemonSpec {
            exe: self.exe.clone(),
            args: Self::edge_args(
                &self.config_path,
                &self.target_name,
                &self.paths.edge_dir,
                self.target.listen,
            ),
            dir: self.paths.edge_dir.clone(),
            listen: self.target.listen,
            start_timeout: EDGE_START_TIMEOUT,
        };
        shipit_edge::daemon::ensure_running(&spec)
            .await
            .map_err(|e| edge_error("starting the edge", e))
    }

    /// Refuses to touch the container of the live slot.
    async fn ensure_not_live(&self, slot: Slot, action: &str) -> Result<(), PlatformError> {
        if let Some(live) = self.live().await?
            && live.slot == slot
        {
            {
                return Err(PlatformError::new(
                    ErrorKind::Platform,
                    format!(
                        "refusing to {action} the {slot} slot of {}: it is live (release {})",
                        self.service.name, live.release
                    ),
                )
                .with_hint("this is a bug in shipit or a concurrent change to the edge; run `shipit status`"));
            }
        }
        Ok(())
    }

    /// Creates the container of an earlier release again in `slot`, from its image.
    async fn recreate(
        &self,
        record: &ReleaseRecord,
        slot: Slot,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        let image = image_of(record).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("release {} has no recorded image", record.serves),
            )
        })?;
        reporter.progress(
            Phase::Launch,
            format!("recreating {} from image {image}", self.name(slot)),
        );
        self.create_and_start(slot, &record.serves, &record.version, image)
            .await
            .map_err(|e| {
                let hint = format!(
                    "the image of release {} may have been removed; release again instead",
                    record.serves
                );
                e.with_hint(hint)
            })
    }
}

impl Kind for LocalPlatform {
    type Target = LocalTarget;
    type Plan = LocalPlan;

    async fn open(opening: &Opening<'_>, target: &LocalTarget) -> Result<Self, PlatformError> {
        let docker = crate::docker::connect().await?;
        Ok(LocalPlatform::new(
            opening.config,
            opening.service,
            &opening.target.name,
            target,
            docker,
            opening.exe.to_path_buf(),
        ))
    }

    async fn plan(&self, config: &Config) -> Result<LocalPlan, PlanError> {
        self.make_plan(config).await
    }

    fn runs_a_process(&self) -> bool {
        shipit_edge::daemon::find(&self.paths.edge_dir).is_some()
    }

    async fn observe(&self, live: Option<&Live>) -> Result<Observed, PlatformError> {
        self.observe_now(live).await
    }
}

impl Platform for LocalPlatform {
    fn candidate_url(&self, candidate: &Candidate) -> Option<String> {
        Some(format!("http://{}", candidate.address))
    }

    fn describe(&self) -> String {
        format!("local target \"{}\"", self.target_name)
    }

    fn service(&self) -> &str {
        &self.service.name
    }

    fn target(&self) -> &str {
        &self.target_name
    }

    fn url(&self) -> String {
        format!("http://{}/", self.target.listen)
    }

    fn locks(&self) -> &dyn LockStore {
        &self.locks
    }

    fn history(&self) -> &dyn HistoryStore {
        &self.history
    }

    fn shift_strategy(&self) -> &ShiftStrategy {
        &self.target.shift
    }

    async fn live(&self) -> Result<Option<Live>, PlatformError> {
        let to_live = |b: Backend, since| Live {
            slot: b.slot,
            release: b.release,
            since: Some(since),
            foreign: None,
        };
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_some() {
            let status = self
                .admin()
                .status()
                .await
                .map_err(|e| edge_error("reading the edge status", e))?;
            return Ok(status
                .routes
                .into_iter()
                .find(|r| r.service == self.service.name)
                .and_then(|r| Some(to_live(r.live?, r.since))));
        }
        // The edge is down: what it restores when it starts is what is live.
        let saved = shipit_edge::state::load(&self.paths.edge_dir)
            .map_err(|e| edge_error("reading the edge's saved routes", e))?;
        Ok(saved
            .into_iter()
            .flat_map(|s| s.routes)
            .find(|r| r.service == self.service.name)
            .map(|r| to_live(r.live, r.since)))
    }

    async fn converge(&self, reporter: &Reporter) -> Result<Option<Live>, PlatformError> {
        self.ensure_edge().await?;
        self.tidy_migrate_leftover(reporter).await?;
        // A candidate still registered (staged for preview, or a split a crashed run left)
        // stands in the idle slot this release is about to replace.
        if let Some(candidate) = self.registered_candidate().await? {
            self.withdraw_candidate(&candidate, reporter, Phase::Version)
                .await?;
            reporter.progress(
                Phase::Version,
                format!(
                    "withdrew the candidate {} in the {} slot from the edge",
                    candidate.release, candidate.slot
                ),
            );
        }
        self.live().await
    }

    async fn build(
        &self,
        input: &crate::platform::BuildInput,
        reporter: &Reporter,
    ) -> Result<Image, PlatformError> {
        let request = super::build_request(
            &self.service,
            &self.project,
            input,
            self.paths.build_cache_dir(),
        );
        super::build_service(
            &self.docker,
            &self.service,
            &self.config_dir,
            &request,
            reporter,
        )
        .await
    }

    async fn push(&self, image: &Image, reporter: &Reporter) -> Result<Image, PlatformError> {
        reporter.progress(
            Phase::Push,
            "local target: the image is already on this engine",
        );
        Ok(image.clone())
    }

    async fn launch(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &Image,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        let result: Result<Candidate, PlatformError> = async {
            self.ensure_not_live(slot, "replace").await?;
            if self.remove_slot(slot).await? {
                reporter.progress(
                    Phase::Launch,
                    format!("removed the previous container of the {slot} slot"),
                );
            }
            let candidate = self
                .create_and_start(slot, release, version, &image.id)
                .await?;
            reporter.progress(
                Phase::Launch,
                format!("started {} on {}", self.name(slot), candidate.address),
            );
            Ok(candidate)
        }
        .await;
        result.map_err(|e| self.scrubbed(e))
    }

    async fn revive(
        &self,
        record: &ReleaseRecord,
        slot: Slot,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        let result: Result<Candidate, PlatformError> = async {
            self.ensure_not_live(slot, "replace").await?;
            // Checked before the idle slot's container goes: it may be what a plain rollback needs.
            let image = image_of(record).ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Platform,
                    format!("release {} has no recorded image", record.serves),
                )
            })?;
            if self.images_present([image]).await?.is_empty() {
                return Err(PlatformError::new(
                    ErrorKind::Platform,
                    format!(
                        "the image of release {} ({image}) is no longer on this engine: it was pruned (keep_images = {}) or removed",
                        record.serves, self.target.keep_images
                    ),
                )
                .with_hint(
                    "`shipit history` marks the releases that can still be rolled back to; to run this version again, check out its commit and `shipit release`",
                ));
            }
            if let Some(info) = self.inspect(slot).await? {
                let labels = info
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                let id = info.id.clone().unwrap_or_else(|| self.name(slot));
                if labels.get(LABEL_RELEASE) == Some(&record.serves) {
                    let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                    let candidate = if running {
                        reporter.progress(
                            Phase::Launch,
                            format!("{} is still running", self.name(slot)),
                        );
                        let port = published_port(&info, self.service.port).ok_or_else(|| {
                            PlatformError::new(
                                ErrorKind::Platform,
                                format!("{} has no published port", self.name(slot)),
                            )
                        })?;
                        Candidate {
                            slot,
                            release: record.serves.clone(),
                            address: format!("127.0.0.1:{port}"),
                            handle: id,
                        }
                    } else {
                        reporter.progress(Phase::Launch, format!("restarting {}", self.name(slot)));
                        match self.start(slot, &record.serves, &id).await {
                            Ok(candidate) => candidate,
                            // Its port went to another process while it was stopped: a new
                            // container from the same image gets another one.
                            Err(e) if e.port_taken => {
                                reporter.warn(format!(
                                    "{} cannot start again: its port is taken ({})",
                                    self.name(slot),
                                    e.error
                                ));
                                self.remove_container(&id).await?;
                                return self.recreate(record, slot, reporter).await;
                            }
                            Err(e) => return Err(e.error),
                        }
                    };
                    return Ok(candidate);
                }
                self.remove_container(&id).await?;
            }
            self.recreate(record, slot, reporter).await
        }
        .await;
        result.map_err(|e| self.scrubbed(e))
    }

    async fn revivable(
        &self,
        records: &[ReleaseRecord],
    ) -> Result<BTreeSet<String>, PlatformError> {
        let images: BTreeSet<&str> = records.iter().filter_map(image_of).collect();
        let present = self.images_present(images).await?;
        Ok(records
            .iter()
            .filter(|r| image_of(r).is_some_and(|i| present.contains(i)))
            .map(|r| r.id.clone())
            .collect())
    }

    async fn prune(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        self.prune_images(reporter).await
    }

    async fn gate(
        &self,
        change: &crate::platform::gate::GateChange,
    ) -> Result<crate::platform::gate::Gate, PlatformError> {
        self.change_gate(change).await
    }

    async fn migrate(
        &self,
        candidate: &Candidate,
        migrate: &crate::config::Migrate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let result = self.run_migrate(candidate, migrate, reporter).await;
        result.map_err(|e| self.scrubbed(e))
    }

    async fn verify(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        let result: Result<(), PlatformError> = async {
            let prober = Prober::new(address_of(candidate)?);
            let check = &self.service.health;
            let mut last_shown: Option<Probe> = None;
            let health = prober.wait_healthy(check, |probe, left| {
                if last_shown.as_ref() != Some(probe) {
                    reporter.progress(
                        Phase::Verify,
                        format!("{}: {probe} ({}s left)", check.path, left.as_secs()),
                    );
                    last_shown = Some(probe.clone());
                }
            });
            let result = tokio::select! {
                r = health => r.map_err(|e| ("health", e.to_string())),
                code = self.exited(&candidate.handle) => Err(("exit", format!(
                    "{} exited with code {} before it became healthy",
                    self.name(candidate.slot),
                    code.map_or("unknown".into(), |c| c.to_string()),
                ))),
                _ = cancel.cancelled() => return Ok(()),
            };
            if let Err((_, message)) = result {
                let logs = self.last_logs(&candidate.handle).await;
                return Err(PlatformError::new(ErrorKind::Verify, self.with_logs(message, &logs))
                    .with_hint(format!(
                        "the live slot was not touched; check the service's {} endpoint and its logs",
                        check.path
                    )));
            }
            if let Some(path) = &self.service.verify.version_path {
                prober
                    .check_version(path, &candidate.release)
                    .await
                    .map_err(|e| {
                        PlatformError::new(ErrorKind::Verify, e.to_string()).with_hint(format!(
                            "the app must include $SHIPIT_RELEASE in the body of {path}; the live slot was not touched"
                        ))
                    })?;
                reporter.progress(
                    Phase::Verify,
                    format!("{path} reports release {}", candidate.release),
                );
            }
            Ok(())
        }
        .await;
        result.map_err(|e| self.scrubbed(e))
    }

    async fn shift(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<Live>, PlatformError> {
        let backend = backend_of(candidate)?;
        // Live containers restart on crashes and engine restarts; candidates do not. Set
        // before the switch, so a crash right after it leaves a live slot that restarts.
        let update = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(LIVE_RESTART_POLICY),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        // Meanwhile the edge opens its connection to the new slot and holds it for the
        // switch, so the switch does not wait for a connect. Only an optimisation: an edge
        // that cannot (one started by an older shipit) is switched all the same, and the
        // switch reports a broken admin socket.
        let admin = self.admin();
        let (updated, ahead) = tokio::join!(
            self.docker.update_container(&candidate.handle, update),
            admin.connect_next(&self.service.name, &backend),
        );
        if let Err(e) = ahead {
            tracing::debug!(
                service = %self.service.name, error = %e,
                "no connection ahead of the switch"
            );
        }
        updated.map_err(|e| {
            docker_error(
                &format!(
                    "setting the restart policy of {} before the switch",
                    self.name(candidate.slot)
                ),
                e,
            )
        })?;
        // The route's hosts and paths come with the switch: the config is their source.
        let routing = shipit_edge::Routing {
            hosts: Some(self.service.route.hosts.clone()),
            paths: Some(self.service.route.paths.clone()),
        };
        let switched = self
            .admin()
            .switch_with(&self.service.name, &backend, &routing)
            .await
            .map_err(|e| edge_error("switching the edge", e))?;
        reporter.progress(
            Phase::Shift,
            format!(
                "edge now routes {} to the {} slot",
                self.service.name, candidate.slot
            ),
        );
        // A switch to what is already live changes nothing, and there is nothing to retire.
        let previous = switched.previous.filter(|b| b.release != backend.release);
        Ok(previous.map(|b| Live {
            slot: b.slot,
            release: b.release,
            since: None,
            foreign: None,
        }))
    }

    async fn split(
        &self,
        candidate: &Candidate,
        live: &Live,
        percent: u8,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let backend = backend_of(candidate)?;
        // Leased: the bake renews it, and the edge withdraws the candidate if this process
        // dies.
        self.admin()
            .weights_leased(&self.service.name, &backend, percent, Some(CANDIDATE_LEASE))
            .await
            .map_err(|e| edge_error("splitting traffic", e))?;
        reporter.progress(
            Phase::Shift,
            format!(
                "edge sends {percent}% of new clients to the {} slot ({}), {}% to the {} slot ({}); clients keep their side",
                candidate.slot,
                candidate.release,
                100 - percent,
                live.slot,
                live.release
            ),
        );
        Ok(())
    }

    async fn bake(
        &self,
        candidate: &Candidate,
        period: Duration,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        let result: Result<(), PlatformError> = async {
            let bound = self.target.max_error_rate;
            let started = tokio::time::Instant::now();
            let deadline = started + period;
            let baseline = self.slot_answers(candidate.slot).await?;
            let counts = |seen: &Answers| {
                format!(
                    "{} slot: {} requests, {} answered 5xx ({:.2}%; bound {:.2}%)",
                    candidate.slot,
                    seen.total,
                    seen.errors,
                    seen.rate() * 100.0,
                    bound * 100.0
                )
            };
            let mut shown = Answers::default();
            let mut shown_at = started;
            let mut renewed_at = started;
            loop {
                let now = tokio::time::Instant::now();
                let wait = BAKE_SAMPLE_INTERVAL.min(deadline.saturating_duration_since(now));
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                if tokio::time::Instant::now().duration_since(renewed_at) >= CANDIDATE_LEASE_RENEWAL {
                    self.renew_lease(candidate).await?;
                    renewed_at = tokio::time::Instant::now();
                }
                let seen = self.slot_answers(candidate.slot).await?.since(&baseline);
                // A new 5xx is news at once; a growing count of good answers now and then.
                let now = tokio::time::Instant::now();
                if seen.errors != shown.errors
                    || (seen != shown && now.duration_since(shown_at) >= BAKE_PROGRESS_INTERVAL)
                {
                    reporter.progress(Phase::Shift, counts(&seen));
                    shown = seen;
                    shown_at = now;
                }
                if seen.breaks(bound) {
                    let logs = self.last_logs(&candidate.handle).await;
                    let message = format!(
                        "the candidate {} in the {} slot answered {} of {} requests with 5xx ({:.2}%) after {} of the bake, over max_error_rate = {bound} ({:.2}%)",
                        candidate.release,
                        candidate.slot,
                        seen.errors,
                        seen.total,
                        seen.rate() * 100.0,
                        humantime::format_duration(round_to_ms(started.elapsed())),
                        bound * 100.0
                    );
                    return Err(
                        PlatformError::new(ErrorKind::Verify, self.with_logs(message, &logs))
                            .with_hint(format!(
                                "traffic went back to the live slot; fix the errors the candidate answers, or raise max_error_rate of target \"{}\"",
                                self.target_name
                            )),
                    );
                }
                if tokio::time::Instant::now() >= deadline {
                    if seen != shown {
                        reporter.progress(Phase::Shift, counts(&seen));
                    }
                    if seen.total == 0 {
                        reporter.warn(format!(
                            "no request reached the candidate in the {} slot during the {} bake: nothing was judged",
                            candidate.slot,
                            humantime::format_duration(period)
                        ));
                    }
                    return Ok(());
                }
            }
        }
        .await;
        result.map_err(|e| self.scrubbed(e))
    }

    async fn unsplit(
        &self,
        live: &Live,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let Some(registered) = self.registered_candidate().await? else {
            return Ok(());
        };
        if registered.release != candidate.release {
            reporter.warn(format!(
                "the edge holds release {} as candidate, not {}; leaving it alone",
                registered.release, candidate.release
            ));
            return Ok(());
        }
        self.withdraw_candidate(&registered, reporter, Phase::Shift)
            .await?;
        reporter.progress(
            Phase::Shift,
            format!(
                "edge sends all traffic to the {} slot ({}) again",
                live.slot, live.release
            ),
        );
        Ok(())
    }

    async fn stage(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<String>, PlatformError> {
        if self.live().await?.is_none() {
            return Err(PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "cannot stage release {} for preview on {}: nothing is live yet, and the edge previews a candidate only beside a live slot",
                    candidate.release,
                    self.describe()
                ),
            )
            .with_hint("release the first version without --no-promote"));
        }
        let backend = backend_of(candidate)?;
        let hosts = self.target.preview_host.clone().map(|h| vec![h]);
        self.admin()
            .preview(&self.service.name, &backend, hosts.as_deref())
            .await
            .map_err(|e| edge_error("registering the candidate for preview", e))?;
        let mut how = format!(
            "{} with the header `X-Shipit-Slot: {}`",
            self.url(),
            candidate.slot
        );
        if let Some(host) = &self.target.preview_host {
            how.push_str(&format!(
                ", or http://{host}:{}/",
                self.target.listen.port()
            ));
        }
        reporter.progress(
            Phase::Shift,
            format!("staged release {} for preview: {how}", candidate.release),
        );
        Ok(Some(how))
    }

    async fn staged(&self, slot: Slot, release: &str) -> Result<Option<Candidate>, PlatformError> {
        let Some(info) = self.inspect(slot).await? else {
            return Ok(None);
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if labels.get(LABEL_RELEASE).map(String::as_str) != Some(release) || !running {
            return Ok(None);
        }
        let Some(port) = published_port(&info, self.service.port) else {
            return Ok(None);
        };
        Ok(Some(Candidate {
            slot,
            release: release.to_string(),
            address: format!("127.0.0.1:{port}"),
            handle: info.id.clone().unwrap_or_else(|| self.name(slot)),
        }))
    }

    async fn retire(&self, old: &Live, reporter: &Reporter) -> Result<(), PlatformError> {
        fault::point(FaultPoint::MidDrain);
        let drained = self
            .admin()
            .drain(&self.service.name, &old.release, self.target.drain_timeout)
            .await
            .map_err(|e| edge_error("draining the old slot", e))?;
        if drained.drained {
            reporter.progress(
                Phase::Retire,
                format!(
                    "drained the {} slot in {} ms",
                    old.slot,
                    drained.waited.as_millis()
                ),
            );
        } else {
            reporter.warn(format!(
                "{} requests were still in flight on the {} slot at the drain deadline ({}); stopping it anyway",
                drained.in_flight,
                old.slot,
                humantime::format_duration(self.target.drain_timeout)
            ));
        }
        fault::point(FaultPoint::MidRetire);
        let Some(info) = self.inspect(old.slot).await? else {
            let legacy = legacy_container_name(&self.service.name, &self.target_name, old.slot);
            if self.docker.inspect_container(&legacy, None).await.is_ok() {
                reporter.warn(format!(
                    "the {} slot was served by {legacy}, made by an earlier shipit without project ids; it is not ours, so it keeps running: remove it with `docker rm -f {legacy}`",
                    old.slot
                ));
            } else {
                reporter.warn(format!(
                    "the container of the {} slot is already gone",
                    old.slot
                ));
            }
            return Ok(());
        };
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get(LABEL_RELEASE) != Some(&old.release) {
            reporter.warn(format!(
                "the {} slot runs another release than {}; leaving it alone",
                old.slot, old.release
            ));
            return Ok(());
        }
        self.docker
            .stop_container(
                &self.name(old.slot),
                Some(StopContainerOptions {
                    t: Some(self.target.stop_timeout.as_secs().max(1) as i32),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| docker_error(&format!("stopping {}", self.name(old.slot)), e))?;
        reporter.progress(
            Phase::Retire,
            format!("stopped {}; kept for rollback", self.name(old.slot)),
        );
        Ok(())
    }

    async fn discard(&self, slot: Slot, reporter: &Reporter) -> Result<(), PlatformError> {
        self.ensure_not_live(slot, "remove").await?;
        if let Some(candidate) = self.registered_candidate().await?
            && candidate.slot == slot
        {
            self.withdraw_candidate(&candidate, reporter, Phase::Record)
                .await?;
        }
        if self.remove_slot(slot).await? {
            reporter.progress(
                Phase::Record,
                format!("removed the candidate in the {slot} slot"),
            );
        }
        Ok(())
    }

    async fn down(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        self.remove_all(reporter).await
    }
}

/// The edge failed: its own hint when it has one, else where to look.
fn edge_error(action: &str, e: shipit_edge::EdgeError) -> PlatformError {
    PlatformError::new(ErrorKind::Platform, format!("edge: {action}: {e}"))
        .with_hint(
            "see the edge log (`shipit edge status` names it), or restart it with `shipit edge stop`",
        )
        .with_hint_of(e.hint())
}

/// The image a release ran: its engine id, else its tag.
fn image_of(record: &ReleaseRecord) -> Option<&str> {
    record.image_id.as_deref().or(record.image.as_deref())
}

/// The edge's view of a candidate.
fn backend_of(candidate: &Candidate) -> Result<Backend, PlatformError> {
    Ok(Backend {
        slot: candidate.slot,
        release: candidate.release.clone(),
        addr: address_of(candidate)?,
        more_addrs: Vec::new(),
    })
}

/// Where a candidate's container is published.
fn address_of(candidate: &Candidate) -> Result<std::net::SocketAddr, PlatformError> {
    candidate.address.parse().map_err(|e| {
        PlatformError::new(
            ErrorKind::Platform,
            format!("bad candidate address {}: {e}", candidate.address),
        )
    })
}
