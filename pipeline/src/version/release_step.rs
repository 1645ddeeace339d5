//! The version step of `shipit release`: the module versions that go into the image, applied
//! first (written, committed and tagged) when there is something to release and the work
//! tree is clean; and [`plan_release`], what that step would do now, for `shipit plan`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::repository::Repository;
use super::{Action, Applied, ApplyOptions, VersionError, apply, current, plan};
use crate::config::Config;

/// What the version step of a release did.
#[derive(Debug, Clone, Default)]
pub struct ReleaseVersions {
    /// Every module's version, as it goes into the image.
    pub modules: BTreeMap<String, String>,
    /// What was applied, when the step wrote versions, committed and tagged.
    pub applied: Option<Applied>,
    /// Why planned versions were not applied (a dirty work tree, no repository).
    pub skipped: Option<String>,
}

/// The version step of `shipit release`: plan, and apply (commit and tag) when there is
/// something to release and the work tree is clean.
///
/// A dirty work tree does not fail the release: the versions are left as they are, the
/// image records the versions the files hold, and `skipped` says why. Bad input (an
/// unreadable version file, a tag that does not parse) does fail it.
pub fn prepare_release(config: &Config) -> Result<ReleaseVersions, VersionError> {
    if config.modules.is_empty() {
        return Ok(ReleaseVersions::default());
    }
    let plan = match plan(config) {
        Ok(plan) => plan,
        Err(VersionError::NotARepository { dir }) => {
            return Ok(ReleaseVersions {
                modules: current(config)?,
                applied: None,
                skipped: Some(format!(
                    "{} is not in a git repository: module versions are taken from their \
                     files as they are",
                    dir.display()
                )),
            });
        }
        Err(e) => return Err(e),
    };
    if !plan.has_work() {
        return Ok(ReleaseVersions {
            modules: current(config)?,
            ..ReleaseVersions::default()
        });
    }
    let options = ApplyOptions {
        push: config
            .versioning
            .push
            .then(|| config.versioning.remote.clone()),
        ..ApplyOptions::default()
    };
    match apply(config, &plan, &options) {
        Ok(applied) => Ok(ReleaseVersions {
            modules: current(config)?,
            applied: Some(applied),
            skipped: None,
        }),
        Err(VersionError::Dirty { files, .. }) => {
            let pending: Vec<String> = plan
                .modules
                .iter()
                .filter(|m| m.action != Action::Keep)
                .map(|m| format!("{} {}", m.name, m.next))
                .collect();
            Ok(ReleaseVersions {
                modules: current(config)?,
                applied: None,
                skipped: Some(format!(
                    "the work tree has uncommitted changes ({}), so the planned module \
                     versions ({}) were not applied; the image records the versions in the \
                     files. Commit, then run `shipit version apply`",
                    files.lines().map(str::trim).collect::<Vec<_>>().join(", "),
                    pending.join(", ")
                )),
            })
        }
        Err(e) => Err(e),
    }
}

/// What the version step would do now (`shipit plan`'s `modules`).
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
    pub action: Action,
    pub reason: String,
}

/// The version step, as `shipit release` would run it now: plan, then apply only on a clean
/// work tree. Reads git; writes nothing.
pub fn plan_release(config: &Config) -> Result<ModulesPlan, VersionError> {
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
    let plan = match plan(config) {
        Ok(plan) => plan,
        Err(VersionError::NotARepository { dir }) => {
            planned.versions = current(config)?;
            planned.skipped = Some(format!(
                "{} is not in a git repository: module versions are taken from their files",
                dir.display()
            ));
            return Ok(planned);
        }
        Err(e) => return Err(e),
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
    planned.versions = current(config)?;
    if !plan.has_work() {
        return Ok(planned);
    }
    let changes = Repository::discover(&config.dir)?.uncommitted(config)?;
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
