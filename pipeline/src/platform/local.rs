//! The local target: one Docker host, two containers per service (one per slot), and shipit's
//! edge in front of them.
//!
//! The edge is the source of truth for which slot is live. Containers are found by name (one
//! per slot) and checked by label before anything destructive, so the live container is never
//! stopped or removed by mistake, whatever a crashed run left behind.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerUpdateBody, RestartPolicy};
use bollard::query_parameters::{
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use shipit_edge::{AdminClient, Backend};
use tokio_util::sync::CancellationToken;

use crate::Slot;
use crate::build::BuildRequest;
use crate::config::{Config, LocalTarget, Service};
use crate::container_spec::{
    LABEL_RELEASE, LABEL_SERVICE, LABEL_TARGET, LIVE_RESTART_POLICY, Launch, container_name,
    container_spec, port_key,
};
use crate::event::{Phase, Reporter};
use crate::health::{Probe, Prober};
use crate::history::{FileHistory, HistoryStore, ReleaseRecord};
use crate::lock::{FileLockStore, LockStore};
use crate::platform::{Candidate, ErrorKind, Image, Live, Platform, PlatformError};
use crate::shift::ShiftStrategy;

/// How long the edge gets to answer after it is started.
pub const EDGE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many log lines of a failed candidate are shown.
pub const LOG_TAIL_LINES: usize = 20;
/// How often a bake reads the edge's counters: often enough to stop a bad candidate within a
/// fraction of a second, rarely enough to cost the edge nothing.
pub const BAKE_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// How often a bake in progress reports its counts, when no new 5xx makes it say so at once.
pub const BAKE_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// The smallest number of requests a bake judges a 5xx rate over. Until the candidate has
/// answered this many, its errors are divided by this number instead, so one early 5xx on a
/// handful of requests does not fail a bake whose bound allows 1 in 100, while a candidate
/// that fails everything is still stopped after a few requests.
pub const BAKE_MIN_REQUESTS: u64 = 100;

/// Where a local target keeps its state, under the config's state directory.
#[derive(Debug, Clone)]
pub struct LocalPaths {
    /// `<state>/edge/<target>`: the edge's socket, routes, pid and log.
    pub edge_dir: PathBuf,
    /// `<state>/targets/<target>/<service>`: the lock, the history and the build cache.
    pub service_dir: PathBuf,
}

impl LocalPaths {
    pub fn new(state_dir: &Path, target: &str, service: &str) -> LocalPaths {
        LocalPaths {
            edge_dir: state_dir.join("edge").join(target),
            service_dir: state_dir.join("targets").join(target).join(service),
        }
    }
}

/// How to start the edge as its own process: this binary, `edge run`, and the paths.
#[derive(Debug, Clone)]
pub struct EdgeCommand {
    pub exe: PathBuf,
}

pub struct LocalPlatform {
    service: Service,
    target_name: String,
    target: LocalTarget,
    config_dir: PathBuf,
    /// The config file, which the edge process reads its target's edge settings from.
    config_path: PathBuf,
    docker: Docker,
    paths: LocalPaths,
    history: FileHistory,
    locks: FileLockStore,
    edge: EdgeCommand,
}

impl LocalPlatform {
    pub fn new(
        config: &Config,
        service: &Service,
        target_name: &str,
        target: &LocalTarget,
        docker: Docker,
        edge: EdgeCommand,
    ) -> LocalPlatform {
        let paths = LocalPaths::new(&config.state_dir, target_name, &service.name);
        LocalPlatform {
            service: service.clone(),
            target_name: target_name.to_string(),
            target: target.clone(),
            config_dir: config.dir.clone(),
            config_path: config.path.clone(),
            docker,
            history: FileHistory::new(paths.service_dir.join("releases")),
            locks: FileLockStore::new(paths.service_dir.join("lock")),
            paths,
            edge,
        }
    }

    pub fn paths(&self) -> &LocalPaths {
        &self.paths
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
            exe: self.edge.exe.clone(),
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

    fn name(&self, slot: Slot) -> String {
        container_name(&self.service.name, &self.target_name, slot)
    }

    async fn inspect(&self, slot: Slot) -> Result<Option<ContainerInspectResponse>, PlatformError> {
        match self.docker.inspect_container(&self.name(slot), None).await {
            Ok(c) => Ok(Some(c)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(docker_error(&format!("inspecting {}", self.name(slot)), e)),
        }
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

    async fn remove_slot(&self, slot: Slot) -> Result<bool, PlatformError> {
        let name = self.name(slot);
        match self
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(docker_error(&format!("removing {name}"), e)),
        }
    }

    async fn create_and_start(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &str,
    ) -> Result<Candidate, PlatformError> {
        let spec = container_spec(&Launch {
            service: &self.service,
            target: &self.target_name,
            slot,
            release,
            image,
            version,
            stop_timeout: self.target.stop_timeout,
        });
        let created = self
            .docker
            .create_container(
                Some(bollard::query_parameters::CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                spec.body,
            )
            .await
            .map_err(|e| docker_error(&format!("creating {}", spec.name), e))?;
        self.start(slot, release, &created.id).await
    }

    async fn start(&self, slot: Slot, release: &str, id: &str) -> Result<Candidate, PlatformError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| docker_error(&format!("starting {}", self.name(slot)), e))?;
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| docker_error(&format!("inspecting {}", self.name(slot)), e))?;
        let port = published_port(&info, self.service.port).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Platform,
                format!(
                    "{} has no published port for {}",
                    self.name(slot),
                    port_key(self.service.port)
                ),
            )
            .with_hint("the container may have exited at once; see `docker logs`")
        })?;
        Ok(Candidate {
            slot,
            release: release.to_string(),
            address: format!("127.0.0.1:{port}"),
            handle: id.to_string(),
        })
    }

    async fn last_logs(&self, id: &str) -> Vec<String> {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: LOG_TAIL_LINES.to_string(),
                ..Default::default()
            }),
        );
        let mut lines = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let text = chunk.to_string();
            lines.extend(text.lines().map(str::to_string));
        }
        let keep = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines.split_off(keep)
    }

    /// Waits until the container is no longer running; returns its exit code.
    async fn exited(&self, id: &str) -> Option<i64> {
        let mut stream = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        match stream.next().await {
            Some(Ok(r)) => Some(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            // The wait itself failed: we cannot tell, so never resolve and let the health
            // deadline decide.
            _ => std::future::pending().await,
        }
    }

    /// The candidate the edge holds for this service (preview or split), if any.
    async fn registered_candidate(&self) -> Result<Option<Backend>, PlatformError> {
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_none() {
            return Ok(None);
        }
        let status = self
            .admin()
            .status()
            .await
            .map_err(|e| edge_error("reading the edge status", e))?;
        Ok(status
            .routes
            .into_iter()
            .find(|r| r.service == self.service.name)
            .and_then(|r| r.candidate)
            .map(|c| c.backend))
    }

    /// Takes the candidate off the edge (split and preview), then waits until the requests
    /// it was serving have finished, so removing its container afterwards breaks none.
    async fn withdraw_candidate(
        &self,
        candidate: &Backend,
        reporter: &Reporter,
        phase: Phase,
    ) -> Result<(), PlatformError> {
        let admin = self.admin();
        admin
            .clear_preview(&self.service.name)
            .await
            .map_err(|e| edge_error("withdrawing the candidate", e))?;
        let drained = admin
            .drain(
                &self.service.name,
                &candidate.release,
                self.target.drain_timeout,
            )
            .await
            .map_err(|e| edge_error("draining the candidate", e))?;
        if drained.drained {
            if !drained.waited.is_zero() {
                reporter.progress(
                    phase,
                    format!(
                        "drained the candidate in the {} slot in {} ms",
                        candidate.slot,
                        drained.waited.as_millis()
                    ),
                );
            }
        } else {
            reporter.warn(format!(
                "{} requests were still in flight on the candidate in the {} slot at the drain deadline ({})",
                drained.in_flight,
                candidate.slot,
                humantime::format_duration(self.target.drain_timeout)
            ));
        }
        Ok(())
    }

    /// What the edge has counted for `slot` of this service so far.
    async fn slot_answers(&self, slot: Slot) -> Result<Answers, PlatformError> {
        let page = self
            .admin()
            .metrics()
            .await
            .map_err(|e| edge_error("reading the edge metrics", e))?;
        Ok(Answers::read(&page, &self.service.name, slot))
    }

    fn with_logs(&self, message: String, logs: &[String]) -> String {
        if logs.is_empty() {
            format!("{message}\n(the container wrote no log lines)")
        } else {
            format!(
                "{message}\nlast {} log lines of the container:\n  {}",
                logs.len(),
                logs.join("\n  ")
            )
        }
    }
}

impl Platform for LocalPlatform {
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
        let live = self.live().await?;
        match &live {
            Some(l) => reporter.progress(
                Phase::Version,
                format!("live: {} slot, release {}", l.slot, l.release),
            ),
            None => reporter.progress(Phase::Version, "nothing live yet: first release"),
        }
        Ok(live)
    }

    async fn build(
        &self,
        input: &crate::platform::BuildInput,
        reporter: &Reporter,
    ) -> Result<Image, PlatformError> {
        if let Some(command) = &self.service.pre_build {
            reporter.progress(Phase::Build, format!("pre-build: {}", command.trim()));
            crate::pre_build::run(command, &self.config_dir, |line| {
                reporter.progress(Phase::Build, line.to_string())
            })
            .await
            .map_err(|e| {
                PlatformError::new(ErrorKind::Build, e.to_string())
                    .with_hint("fix the pre_build command of the service, or run it by hand to see why it fails")
            })?;
        }
        let docker = &self.docker;
        let request = BuildRequest {
            service: self.service.name.clone(),
            context: self.service.context.clone(),
            dockerfile: self.service.dockerfile.clone(),
            tag: format!("{}:{}", self.service.name, input.version),
            labels: {
                let mut labels = crate::build::oci_labels(
                    input.revision.as_ref(),
                    input.created,
                    &input.release,
                );
                labels.extend(crate::version::labels(&input.modules));
                labels
            },
            cache_dir: Some(self.paths.service_dir.clone()),
        };
        super::build_image(docker, &request, reporter).await
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

    async fn revive(
        &self,
        record: &ReleaseRecord,
        slot: Slot,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        self.ensure_not_live(slot, "replace").await?;
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
                    self.start(slot, &record.serves, &id).await?
                };
                return Ok(candidate);
            }
            self.remove_slot(slot).await?;
        }
        let image = record
            .image_id
            .as_deref()
            .or(record.image.as_deref())
            .ok_or_else(|| {
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

    async fn verify(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        let addr = candidate.address.parse().map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("bad candidate address {}: {e}", candidate.address),
            )
        })?;
        let prober = Prober::new(addr);
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

    async fn shift(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<Live>, PlatformError> {
        let address = candidate.address.parse().map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("bad candidate address {}: {e}", candidate.address),
            )
        })?;
        let backend = Backend {
            slot: candidate.slot,
            release: candidate.release.clone(),
            addr: address,
        };
        let switched = self
            .admin()
            .switch(&self.service.name, &backend)
            .await
            .map_err(|e| edge_error("switching the edge", e))?;
        reporter.progress(
            Phase::Shift,
            format!(
                "edge now routes {} to the {} slot",
                self.service.name, candidate.slot
            ),
        );
        // Live containers restart on crashes and engine restarts; candidates do not.
        let update = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(LIVE_RESTART_POLICY),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        if let Err(e) = self
            .docker
            .update_container(&candidate.handle, update)
            .await
        {
            reporter.warn(format!(
                "could not set the restart policy of {}: {e}",
                self.name(candidate.slot)
            ));
        }
        // A switch to what is already live changes nothing, and there is nothing to retire.
        let previous = switched.previous.filter(|b| b.release != backend.release);
        Ok(previous.map(|b| Live {
            slot: b.slot,
            release: b.release,
            since: None,
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
        self.admin()
            .weights(&self.service.name, &backend, percent)
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
        loop {
            let now = tokio::time::Instant::now();
            let wait = BAKE_SAMPLE_INTERVAL.min(deadline.saturating_duration_since(now));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
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
        let Some(info) = self.inspect(old.slot).await? else {
            reporter.warn(format!(
                "the container of the {} slot is already gone",
                old.slot
            ));
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
        if shipit_edge::daemon::find(&self.paths.edge_dir).is_some() {
            let admin = self.admin();
            admin
                .remove(&self.service.name)
                .await
                .map_err(|e| edge_error("removing the route", e))?;
            let status = admin
                .status()
                .await
                .map_err(|e| edge_error("reading the edge status", e))?;
            if status.routes.is_empty() {
                shipit_edge::daemon::stop(&self.paths.edge_dir, shipit_edge::DEFAULT_STOP_TIMEOUT)
                    .await
                    .map_err(|e| edge_error("stopping the edge", e))?;
                reporter.progress(Phase::Retire, "stopped the edge: it has no routes left");
            }
        } else {
            // The edge is down: drop the route from what it would restore.
            let dir = &self.paths.edge_dir;
            if let Some(mut saved) = shipit_edge::state::load(dir)
                .map_err(|e| edge_error("reading the edge's saved routes", e))?
            {
                saved.routes.retain(|r| r.service != self.service.name);
                shipit_edge::state::save(dir, &saved)
                    .map_err(|e| edge_error("saving the edge's routes", e))?;
            }
        }
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_SERVICE}={}", self.service.name),
                format!("{LABEL_TARGET}={}", self.target_name),
            ],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("listing the service's containers", e))?;
        for c in containers {
            let id = c.id.unwrap_or_default();
            self.docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| docker_error(&format!("removing container {id}"), e))?;
            reporter.progress(Phase::Retire, format!("removed container {id:.12}"));
        }
        Ok(())
    }
}

fn published_port(info: &ContainerInspectResponse, port: u16) -> Option<u16> {
    info.network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&port_key(port))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

fn docker_error(action: &str, e: bollard::errors::Error) -> PlatformError {
    PlatformError::new(ErrorKind::Platform, format!("docker: {action}: {e}"))
        .with_hint("check that the Docker engine is running and answers `docker info`")
}

fn edge_error(action: &str, e: shipit_edge::EdgeError) -> PlatformError {
    PlatformError::new(ErrorKind::Platform, format!("edge: {action}: {e}")).with_hint(
        "see the edge log (`shipit edge status` names it), or restart it with `shipit edge stop`",
    )
}

/// The edge's view of a candidate.
fn backend_of(candidate: &Candidate) -> Result<Backend, PlatformError> {
    let addr = candidate.address.parse().map_err(|e| {
        PlatformError::new(
            ErrorKind::Platform,
            format!("bad candidate address {}: {e}", candidate.address),
        )
    })?;
    Ok(Backend {
        slot: candidate.slot,
        release: candidate.release.clone(),
        addr,
    })
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Responses the edge counted for one slot: all of them, and those with a 5xx status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Answers {
    total: u64,
    errors: u64,
}

impl Answers {
    /// Reads the slot's `shipit_edge_requests_total` series from a metrics page; a series not
    /// there yet counts zero.
    fn read(page: &str, service: &str, slot: Slot) -> Answers {
        let slot = slot.to_string();
        let count = |class: &str| {
            shipit_edge::metrics::sample(
                page,
                "shipit_edge_requests_total",
                &[("service", service), ("slot", &slot), ("class", class)],
            )
            .map_or(0, |v| v as u64)
        };
        Answers {
            total: shipit_edge::metrics::STATUS_CLASSES
                .iter()
                .map(|c| count(c))
                .sum(),
            errors: count("5xx"),
        }
    }

    /// What was counted after `baseline`.
    fn since(&self, baseline: &Answers) -> Answers {
        Answers {
            total: self.total.saturating_sub(baseline.total),
            errors: self.errors.saturating_sub(baseline.errors),
        }
    }

    fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }

    /// Whether the 5xx rate is over `bound`, judged over at least [`BAKE_MIN_REQUESTS`].
    fn breaks(&self, bound: f64) -> bool {
        self.errors as f64 > bound * self.total.max(BAKE_MIN_REQUESTS) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_early_error_does_not_fail_a_bake_but_a_failing_candidate_does() {
        let one_early = Answers {
            total: 1,
            errors: 1,
        };
        assert!(!one_early.breaks(0.01));
        assert!(
            Answers {
                total: 2,
                errors: 2
            }
            .breaks(0.01)
        );
        // Past the minimum sample, the plain rate decides.
        assert!(
            !Answers {
                total: 1000,
                errors: 10
            }
            .breaks(0.01)
        );
        assert!(
            Answers {
                total: 1000,
                errors: 11
            }
            .breaks(0.01)
        );
        // A zero bound fails on the first 5xx; a bound of 1 never fails.
        assert!(
            Answers {
                total: 500,
                errors: 1
            }
            .breaks(0.0)
        );
        assert!(
            !Answers {
                total: 5,
                errors: 5
            }
            .breaks(1.0)
        );
        assert!(!Answers::default().breaks(0.0));
    }

    #[test]
    fn answers_are_read_per_slot_and_counted_from_a_baseline() {
        let page = "\
# TYPE shipit_edge_requests_total counter
shipit_edge_requests_total{service=\"web\",slot=\"green\",class=\"2xx\"} 40
shipit_edge_requests_total{service=\"web\",slot=\"green\",class=\"5xx\"} 3
shipit_edge_requests_total{service=\"web\",slot=\"blue\",class=\"5xx\"} 7
shipit_edge_requests_total{service=\"api\",slot=\"green\",class=\"5xx\"} 9
";
        let green = Answers::read(page, "web", Slot::Green);
        assert_eq!(
            green,
            Answers {
                total: 43,
                errors: 3
            }
        );
        assert_eq!(Answers::read(page, "web", Slot::Blue).total, 7);
        assert_eq!(Answers::read("", "web", Slot::Green), Answers::default());
        let later = Answers {
            total: 50,
            errors: 4,
        };
        assert_eq!(
            later.since(&green),
            Answers {
                total: 7,
                errors: 1
            }
        );
        assert!((later.since(&green).rate() - 1.0 / 7.0).abs() < 1e-9);
    }
}
