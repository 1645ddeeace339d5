//! `shipit plan` (and `release --dry-run`) on a local target: what a release would do now,
//! found without doing any of it.
//!
//! It reads what a release reads first: the lock, the live slot (from the edge, or the routes
//! it saved), the module version plan and the work tree, and the build context's hash and
//! the images on the engine. It starts nothing, builds nothing, tags nothing and takes no
//! lock. The one write is the context stat cache a build keeps as well.

use std::path::PathBuf;

use serde::Serialize;

use super::LocalPlatform;
use crate::Slot;
use crate::config::Config;
use crate::platform::kind::{KindPlan, PLANNED_RELEASE, PlanError, PlanHead, plan_line};
use crate::platform::{BuildInput, Platform, build_request};
use crate::shift::ShiftStrategy;
use crate::version::{self, ModulesPlan};

/// The `plan --json` shape of a local target.
#[derive(Debug, Serialize)]
pub struct LocalPlan {
    #[serde(flatten)]
    pub head: PlanHead,
    pub modules: ModulesPlan,
    pub build: BuildPlan,
    pub shift: ShiftPlan,
    /// What would be drained and stopped after the shift; null when nothing is live.
    pub retire: Option<RetirePlan>,
    /// What Verify would wait for, as the text says it.
    #[serde(skip)]
    verify: String,
}

#[derive(Debug, Serialize)]
pub struct BuildPlan {
    /// `reuse` (an image with this context hash and these module versions exists) or `build`.
    pub action: &'static str,
    /// The tag the image would get.
    pub tag: String,
    pub context: PathBuf,
    pub context_hash: String,
    /// The id of the image that would be reused.
    pub image_id: Option<String>,
    /// A pre-build command runs before the hash is taken and may change the context: the
    /// decision is for the context as it is now.
    pub pre_build: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ShiftPlan {
    /// `atomic`: all traffic moves in one switch; `canary` or `linear`: weighted steps,
    /// each baked, before it.
    pub strategy: &'static str,
    /// The traffic each step sends to the new slot, in percent, in order; the last is 100.
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Serialize)]
pub struct PlannedStep {
    pub slot: Slot,
    pub weight: u8,
    /// How long the step is watched before the next; none for the final switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RetirePlan {
    pub slot: Slot,
    pub release: String,
    /// How long in-flight requests may take to finish, e.g. `"30s"`.
    pub drain_timeout: String,
    /// How long the stopping container gets between SIGTERM and SIGKILL.
    pub stop_timeout: String,
}

/// The shift: the target's strategy, ending with the switch to 100 %.
fn shift_plan(strategy: &ShiftStrategy, slot: Slot) -> ShiftPlan {
    let steps = strategy
        .steps()
        .iter()
        .map(|s| PlannedStep {
            slot,
            weight: s.percent,
            bake: Some(humantime::format_duration(s.bake).to_string()),
        })
        .chain(std::iter::once(PlannedStep {
            slot,
            weight: 100,
            bake: None,
        }))
        .collect();
    ShiftPlan {
        strategy: match strategy {
            ShiftStrategy::AllAtOnce => "atomic",
            ShiftStrategy::Canary { .. } => "canary",
            ShiftStrategy::Linear { .. } => "linear",
        },
        steps,
    }
}

impl LocalPlatform {
    /// The plan of a release now, with `config`'s modules.
    pub(super) async fn make_plan(&self, config: &Config) -> Result<LocalPlan, PlanError> {
        let lock = self.locks().holder().await?;
        let live = self.live().await?;
        let modules = version::plan_release(config)?;
        let service = &self.service;
        let (version, revision) = crate::git::app_version(&service.context);
        let head = PlanHead::new(self, &version, lock, live);

        // Only the module labels decide reuse; the others are set on a new build alone.
        let input = BuildInput {
            release: PLANNED_RELEASE.to_string(),
            version: version.clone(),
            revision,
            created: jiff::Timestamp::now(),
            modules: modules.versions.clone(),
        };
        let request = build_request(service, &self.project, &input, self.paths.build_cache_dir());
        let decision = crate::build::decide(&self.docker, &request).await?;

        let retire = head.live.as_ref().map(|l| RetirePlan {
            slot: l.slot,
            release: l.release.clone(),
            drain_timeout: humantime::format_duration(self.target.drain_timeout).to_string(),
            stop_timeout: humantime::format_duration(self.target.stop_timeout).to_string(),
        });
        let health = &service.health;
        let mut verify = format!(
            "GET {} until {} in a row (deadline {})",
            health.path,
            count(health.healthy_threshold, "success"),
            humantime::format_duration(health.timeout)
        );
        if let Some(path) = &service.verify.version_path {
            verify.push_str(&format!("; then {path} must report the release id"));
        }
        let shift = shift_plan(self.shift_strategy(), head.slot);
        Ok(LocalPlan {
            head,
            modules,
            build: BuildPlan {
                action: if decision.reuse.is_some() {
                    "reuse"
                } else {
                    "build"
                },
                tag: request.tag,
                context: service.context.clone(),
                context_hash: decision.context_hash,
                image_id: decision.reuse,
                pre_build: service.pre_build.as_ref().map(|c| c.trim().to_string()),
            },
            shift,
            retire,
            verify,
        })
    }
}

impl KindPlan for LocalPlan {
    fn lines(&self) -> Vec<String> {
        let mut lines = self.head.lines();
        let mut line = |label: &str, text: &str| lines.push(plan_line(label, text));
        let modules = &self.modules;
        if !modules.bumps.is_empty() || !modules.versions.is_empty() {
            let listed: Vec<String> = modules
                .bumps
                .iter()
                .map(|m| match m.action {
                    version::Action::Keep => format!("{} {} (kept)", m.name, m.current),
                    version::Action::FirstTag => format!("{} {} (first tag)", m.name, m.next),
                    version::Action::Bump => {
                        format!("{} {} → {} ({})", m.name, m.current, m.next, m.reason)
                    }
                })
                .collect();
            if listed.is_empty() {
                let versions: Vec<String> = modules
                    .versions
                    .iter()
                    .map(|(name, v)| format!("{name} {v}"))
                    .collect();
                line("modules", &versions.join(", "));
            } else {
                line("modules", &listed.join("; "));
            }
            if modules.apply {
                line(
                    "",
                    &format!(
                        "would commit the versions and tag {}",
                        modules.tags.join(", ")
                    ),
                );
            }
            if let Some(why) = &modules.skipped {
                line("", why);
            }
        }
        let build = &self.build;
        if let Some(command) = &build.pre_build {
            line("build", &format!("runs pre_build first: {command}"));
        }
        let hash = &build.context_hash[..build.context_hash.len().min(12)];
        let label = if build.pre_build.is_some() {
            ""
        } else {
            "build"
        };
        match &build.image_id {
            Some(id) => line(
                label,
                &format!(
                    "would reuse image {id} (context {hash} unchanged) as {}",
                    build.tag
                ),
            ),
            None => line(
                label,
                &format!(
                    "would build {} (context {hash} has no image yet)",
                    build.tag
                ),
            ),
        }
        line("launch", &format!("the {} slot", self.head.slot));
        line("verify", &self.verify);
        let steps: Vec<String> = self
            .shift
            .steps
            .iter()
            .map(|s| match &s.bake {
                Some(bake) => format!("{}% for {bake}", s.weight),
                None => "100% in one switch".to_string(),
            })
            .collect();
        line(
            "shift",
            &format!(
                "{} to the {} slot: {}",
                self.shift.strategy,
                self.head.slot,
                steps.join(", then ")
            ),
        );
        match &self.retire {
            Some(r) => line(
                "retire",
                &format!(
                    "drain the {} slot (release {}, up to {}), then stop it (SIGKILL after {}); \
                     kept for rollback",
                    r.slot, r.release, r.drain_timeout, r.stop_timeout
                ),
            ),
            None => line("retire", "nothing"),
        }
        lines
    }
}

fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}es")
    }
}
