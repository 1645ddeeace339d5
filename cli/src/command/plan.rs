//! `shipit plan`: what `shipit release` would do now, found without doing any of it.
//!
//! It reads what a release reads first: the lock, the live slot (from the edge, or the routes
//! it saved), the module version plan and the work tree, and the build context's hash and
//! the images on the engine. It starts nothing, builds nothing, tags nothing and takes no
//! lock. The one write is the context stat cache a build keeps as well.
//!
//! On an ecs target (and for `release --dry-run`, which runs this) the plan is the ecs
//! platform's: every mutating AWS call a release would make, in order, and the rendered task
//! definition. Its AWS clients refuse any call that is not a read, so the plan cannot change
//! anything even through a bug; the operations it did call are counted at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use shipit_pipeline::Slot;
use shipit_pipeline::build::{self, BuildRequest};
use shipit_pipeline::config::{Config, TargetKind};
use shipit_pipeline::lock::Holder;
use shipit_pipeline::platform::{Live, Platform};
use shipit_pipeline::shift::ShiftStrategy;
use shipit_pipeline::version::{self, VersionError};

use shipit_pipeline::aws::ReadOnly;
use shipit_pipeline::platform::ecs::EcsPlatform;
use shipit_pipeline::platform::ecs::plan::EcsPlan;

use super::{Selected, TargetPlatform, select_read_only};
use crate::args::{Global, Selection};
use crate::exit::{self, Failure};
use crate::printer::Printer;

/// The `plan --json` shape.
#[derive(Debug, Serialize)]
pub struct ReleasePlan {
    pub service: String,
    pub target: String,
    pub url: String,
    /// The app version the release would carry (its git revision), before any version commit.
    pub version: String,
    /// Who holds the release lock now; null when it is free.
    pub lock: Option<Holder>,
    /// What serves now; null before the first release.
    pub live: Option<Live>,
    /// The slot the new release would start in.
    pub slot: Slot,
    pub modules: ModulesPlan,
    pub build: BuildPlan,
    pub shift: ShiftPlan,
    /// What would be drained and stopped after the shift; null when nothing is live.
    pub retire: Option<RetirePlan>,
}

#[derive(Debug, Serialize)]
pub struct ModulesPlan {
    /// Whether the version step would write, commit and tag.
    pub apply: bool,
    /// Why it would not, although a module has a new version (a dirty work tree).
    pub skipped: Option<String>,
    /// The tags it would make.
    pub tags: Vec<String>,
    /// Every module's version as the image would record it.
    pub versions: BTreeMap<String, String>,
    /// One line per module: `{name, current, next, action, reason}`.
    pub bumps: Vec<ModuleBump>,
}

#[derive(Debug, Serialize)]
pub struct ModuleBump {
    pub name: String,
    pub current: String,
    pub next: String,
    /// `keep`, `first-tag` or `bump`.
    pub action: version::Action,
    pub reason: String,
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
    pub steps: Vec<ShiftStep>,
}

#[derive(Debug, Serialize)]
pub struct ShiftStep {
    pub slot: Slot,
    pub weight: u8,
    /// How long the step is watched before the next; none for the final switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
}

/// The local plan's shift: the target's strategy, ending with the switch to 100 %.
fn shift_plan(strategy: &ShiftStrategy, slot: Slot) -> ShiftPlan {
    let steps = strategy
        .steps()
        .iter()
        .map(|s| ShiftStep {
            slot,
            weight: s.percent,
            bake: Some(humantime::format_duration(s.bake).to_string()),
        })
        .chain(std::iter::once(ShiftStep {
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

#[derive(Debug, Serialize)]
pub struct RetirePlan {
    pub slot: Slot,
    pub release: String,
    /// How long in-flight requests may take to finish, e.g. `"30s"`.
    pub drain_timeout: String,
    /// How long the stopping container gets between SIGTERM and SIGKILL.
    pub stop_timeout: String,
}

pub async fn run(
    global: &Global,
    selection: &Selection,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let guard = ReadOnly::new();
    let selected = select_read_only(global, selection, &guard).await?;
    if let TargetPlatform::Ecs(ecs) = &selected.platform {
        return Box::pin(ecs_plan(&selected, ecs, &guard, json, printer)).await;
    }
    let plan = Box::pin(make(&selected)).await?;
    if json {
        printer.json(&plan);
    } else {
        print(printer, &selected, &plan);
    }
    Ok(())
}

async fn make(selected: &Selected) -> Result<ReleasePlan, Failure> {
    let Selected {
        config,
        service,
        target,
        platform,
    } = selected;
    let TargetPlatform::Local(local) = platform else {
        return Err(Failure::new(
            exit::UNEXPECTED,
            "internal: not a local target",
        ));
    };
    let lock = platform.locks().holder().await.map_err(|e| {
        Failure::new(exit::UNEXPECTED, e.to_string())
            .hint("check that the state directory is readable")
    })?;
    let live = platform.live().await?;
    let slot = live.as_ref().map_or(Slot::Blue, |l| l.slot.other());
    let modules = modules(config)?;
    let revision = shipit_pipeline::git::revision(&service.context).unwrap_or(None);
    let version = revision
        .as_ref()
        .map_or_else(|| "untracked".to_string(), |r| r.version());

    let request = BuildRequest {
        service: service.name.clone(),
        context: service.context.clone(),
        dockerfile: service.dockerfile.clone(),
        tag: format!("{}:{version}", service.name),
        // Only the module labels decide reuse; the others are set on a new build alone.
        labels: version::labels(&modules.versions),
        cache_dir: Some(local.paths().service_dir.clone()),
    };
    let docker = shipit_pipeline::docker::connect().await.map_err(|e| {
        Failure::new(exit::PLATFORM, e.to_string())
            .hint("start the Docker engine, or point DOCKER_HOST at one that runs")
    })?;
    let decision = build::decide(&docker, &request)
        .await
        .map_err(|e| Failure::new(exit::BUILD, e.to_string()))?;

    let (drain_timeout, stop_timeout) = match &target.kind {
        TargetKind::Local(local) => (local.drain_timeout, local.stop_timeout),
        TargetKind::Ecs(_) => (std::time::Duration::ZERO, std::time::Duration::ZERO),
    };
    let retire = live.as_ref().map(|l| RetirePlan {
        slot: l.slot,
        release: l.release.clone(),
        drain_timeout: humantime::format_duration(drain_timeout).to_string(),
        stop_timeout: humantime::format_duration(stop_timeout).to_string(),
    });
    Ok(ReleasePlan {
        service: service.name.clone(),
        target: target.name.clone(),
        url: platform.url(),
        version,
        lock,
        live,
        slot,
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
        shift: shift_plan(platform.shift_strategy(), slot),
        retire,
    })
}

/// The version step, as `shipit release` would run it: plan, then apply only on a clean
/// work tree. Reads git; writes nothing.
fn modules(config: &Config) -> Result<ModulesPlan, Failure> {
    let mut planned = ModulesPlan {
        apply: false,
        skipped: None,
        tags: Vec::new(),
        versions: BTreeMap::new(),
        bumps: Vec::new(),
    };
    if config.modules.is_empty() {
        return Ok(planned);
    }
    let plan = match version::plan(config) {
        Ok(plan) => plan,
        Err(VersionError::NotARepository { dir }) => {
            planned.versions = version::current(config)?;
            planned.skipped = Some(format!(
                "{} is not in a git repository: module versions are taken from their files",
                dir.display()
            ));
            return Ok(planned);
        }
        Err(e) => return Err(e.into()),
    };
    planned.bumps = plan
        .modules
        .iter()
        .map(|m| ModuleBump {
            name: m.name.clone(),
            current: m.current.to_string(),
            next: m.next.to_string(),
            action: m.action,
            reason: m.reason.clone(),
        })
        .collect();
    planned.versions = version::current(config)?;
    if !plan.has_work() {
        return Ok(planned);
    }
    let repo = version::repository::Repository::discover(&config.dir)?;
    let excluded: Vec<String> = repo.relative(&config.state_dir).into_iter().collect();
    let changes = repo.changes(&excluded)?;
    if changes.is_empty() {
        planned.apply = true;
        planned.tags = plan
            .modules
            .iter()
            .filter_map(|m| m.next_tag.clone())
            .collect();
        planned.versions = plan
            .modules
            .iter()
            .map(|m| (m.name.clone(), m.next.to_string()))
            .collect();
    } else {
        planned.skipped = Some(format!(
            "the work tree has uncommitted changes ({}): the planned versions would not be \
             applied",
            changes.join(", ")
        ));
    }
    Ok(planned)
}

/// The first lines of either kind of plan: what would be released where, who holds the
/// lock, and what is live.
fn print_head(
    printer: Printer,
    service: &str,
    version: &str,
    target: &str,
    lock: Option<&Holder>,
    live: Option<&Live>,
) {
    let line = |label: &str, text: &str| printer.data(&format!("  {label:<9}  {text}"));
    printer.data(&format!(
        "shipit release would release {service} {version} to {target} (nothing was changed):"
    ));
    match lock {
        Some(holder) => line(
            "lock",
            &format!("held by {holder}: the release would be refused (exit 3)"),
        ),
        None => line("lock", "free"),
    }
    match live {
        Some(live) => line(
            "live",
            &format!("{} slot, release {}", live.slot, live.release),
        ),
        None => line("live", "nothing: this would be the first release"),
    }
}

fn print(printer: Printer, selected: &Selected, plan: &ReleasePlan) {
    let line = |label: &str, text: &str| printer.data(&format!("  {label:<9}  {text}"));
    print_head(
        printer,
        &plan.service,
        &plan.version,
        &selected.platform.describe(),
        plan.lock.as_ref(),
        plan.live.as_ref(),
    );
    let modules = &plan.modules;
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
    let build = &plan.build;
    if let Some(command) = &build.pre_build {
        line("build", &format!("runs pre_build first: {command}"));
    }
    let hash = &build.context_hash[..build.context_hash.len().min(12)];
    match &build.image_id {
        Some(id) => line(
            if build.pre_build.is_some() {
                ""
            } else {
                "build"
            },
            &format!(
                "would reuse image {id} (context {hash} unchanged) as {}",
                build.tag
            ),
        ),
        None => line(
            if build.pre_build.is_some() {
                ""
            } else {
                "build"
            },
            &format!(
                "would build {} (context {hash} has no image yet)",
                build.tag
            ),
        ),
    }
    line("launch", &format!("the {} slot", plan.slot));
    let health = &selected.service.health;
    let mut verify = format!(
        "GET {} until {} in a row (deadline {})",
        health.path,
        count(health.healthy_threshold, "success"),
        humantime::format_duration(health.timeout)
    );
    if let Some(path) = &selected.service.verify.version_path {
        verify.push_str(&format!("; then {path} must report the release id"));
    }
    line("verify", &verify);
    let steps: Vec<String> = plan
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
            plan.shift.strategy,
            plan.slot,
            steps.join(", then ")
        ),
    );
    match &plan.retire {
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
}

fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}es")
    }
}

/// The `plan --json` (and `release --dry-run --json`) shape of an ecs target: the platform's
/// plan and the AWS operations reading it took.
#[derive(Debug, Serialize)]
struct EcsPlanOutput<'a> {
    #[serde(flatten)]
    plan: &'a EcsPlan,
    /// Every AWS operation the plan called, as `<service>.<operation>`: reads only.
    aws_operations: Vec<String>,
}

async fn ecs_plan(
    selected: &Selected,
    platform: &EcsPlatform,
    guard: &ReadOnly,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let revision = shipit_pipeline::git::revision(&selected.service.context).unwrap_or(None);
    let version = revision
        .as_ref()
        .map_or_else(|| "untracked".to_string(), |r| r.version());
    let plan = platform.plan(&version).await?;
    let operations = guard.operations();
    if let Some(write) = operations
        .iter()
        .find(|o| !ReadOnly::is_read(o.rsplit('.').next().unwrap_or(o)))
    {
        return Err(Failure::new(
            exit::UNEXPECTED,
            format!("the plan tried to call {write}, which is not a read; it was refused"),
        )
        .hint("this is a bug in shipit; nothing was changed"));
    }
    if json {
        printer.json(&EcsPlanOutput {
            plan: &plan,
            aws_operations: operations,
        });
        return Ok(());
    }
    let line = |label: &str, text: &str| printer.data(&format!("  {label:<9}  {text}"));
    print_head(
        printer,
        &plan.service,
        &plan.version,
        &platform.describe(),
        plan.lock.as_ref(),
        plan.live.as_ref(),
    );
    line("forward", &plan.forward);
    if let Some(origin) = &plan.cdn_origin {
        line("cdn", &format!("the distribution's origin is {origin}"));
    }
    line("push", &plan.image);
    line(
        "launch",
        &format!(
            "the {} slot (service {})",
            plan.slot,
            platform.service_names().get(plan.slot)
        ),
    );
    let steps: Vec<String> = plan
        .steps
        .iter()
        .map(|s| format!("{}% for {}", s.percent, humantime::format_duration(s.bake)))
        .chain(std::iter::once("100%".to_string()))
        .collect();
    line(
        "shift",
        &format!("{}: {}", plan.strategy, steps.join(", then ")),
    );
    for note in &plan.notes {
        line("", note);
    }
    printer.data(&format!("  calls ({}), in order:", plan.calls.len()));
    for (i, call) in plan.calls.iter().enumerate() {
        printer.data(&format!(
            "    {:>2}. [{}] {} {} {}",
            i + 1,
            call.phase,
            call.call.service,
            call.call.operation,
            call.call.input
        ));
    }
    printer.data("  task definition:");
    let rendered = serde_json::to_string_pretty(&plan.task_definition).unwrap_or_default();
    for text in rendered.lines() {
        printer.data(&format!("    {text}"));
    }
    printer.data(&format!(
        "  read with {} AWS calls, all reads: {}",
        operations.len(),
        operations.join(", ")
    ));
    Ok(())
}
