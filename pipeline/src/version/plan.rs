//! The version plan: for every module, its current version, the commits since its last tag
//! that touched its folder, and its next version with the reason. Reads, never writes.
//!
//! How a next version is decided, module by module, dependencies first:
//!
//! 1. No tag of the module in the history of HEAD: this is its first release, at the version
//!    its file holds. Nothing is bumped; `apply` only tags it.
//! 2. Otherwise the current version is the last tag's. The commits after that tag that touched
//!    the module's folder (or the folder its files were renamed from) are read as
//!    Conventional Commits; merge commits are skipped, the commits they bring in count.
//! 3. A `Release-As: x.y.z` footer in any of them forces that version.
//! 4. Else the largest bump among them wins (`!`/`BREAKING CHANGE` major, `feat` minor, `fix`
//!    and `perf` patch; one place down below 1.0.0), raised to at least a patch when a module
//!    it depends on gets a new version in this plan.
//! 5. No bump: the module keeps its version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use semver::Version;
use serde::Serialize;

use super::VersionError;
use super::bump::Bump;
use super::changelog::DependencyBump;
use super::commit::Commit;
use super::repository::Repository;
use super::tag::TagFormat;
use super::version_file::{Format, VersionFile};
use crate::config::{Config, Module};

/// Every module's next version, in dependency order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The top folder of the git work tree that holds the modules.
    pub repository: PathBuf,
    /// A module comes after the modules it depends on; ties in name order.
    pub modules: Vec<ModulePlan>,
}

/// What happens to a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing: no commit since its tag asks for a new version.
    Keep,
    /// Its first tag, at the version in its file; no file changes.
    FirstTag,
    /// A new version: the files are rewritten, then committed and tagged.
    Bump,
}

/// One module's line of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct ModulePlan {
    pub name: String,
    /// The module's folder, relative to the repository's top.
    pub path: String,
    /// Its version file, relative to the repository's top.
    pub version_file: String,
    pub format: Format,
    /// The name dependents use for it, from its version file.
    pub package: Option<String>,
    pub depends_on: Vec<String>,
    /// The last tag's version, or the file's on a first release.
    pub current: Version,
    pub last_tag: Option<String>,
    /// The commits since the last tag that touched the module, newest first.
    pub commits: Vec<Commit>,
    /// The dependencies that get a new version in this plan.
    pub dependencies: Vec<DependencyBump>,
    /// How far `next` is from `current`.
    pub bump: Bump,
    pub next: Version,
    /// The tag `apply` creates; `None` when the module keeps its version.
    pub next_tag: Option<String>,
    pub action: Action,
    pub reason: String,
    /// Things worth knowing that change nothing, e.g. a file that disagrees with the tag.
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether `apply` has anything to write or tag.
    pub fn has_work(&self) -> bool {
        self.modules.iter().any(|m| m.action != Action::Keep)
    }

    pub fn module(&self, name: &str) -> Option<&ModulePlan> {
        self.modules.iter().find(|m| m.name == name)
    }
}

/// Plans every module of `config` from its version file, its tags and the history of HEAD.
pub fn plan(config: &Config) -> Result<Plan, VersionError> {
    let repo = Repository::discover(&config.dir)?;
    if repo.head()?.is_none() {
        return Err(VersionError::NoCommits { root: repo.root });
    }
    let mut planned: Vec<ModulePlan> = Vec::new();
    for name in dependency_order(&config.modules) {
        let module = &config.modules[name];
        let module_plan = plan_module(&repo, module, &planned)?;
        planned.push(module_plan);
    }
    Ok(Plan {
        repository: repo.root,
        modules: planned,
    })
}

fn plan_module(
    repo: &Repository,
    module: &Module,
    planned: &[ModulePlan],
) -> Result<ModulePlan, VersionError> {
    let name = &module.name;
    let outside = || VersionError::OutsideRepository {
        module: name.clone(),
        path: module.path.clone(),
        root: repo.root.clone(),
    };
    let path = repo.relative(&module.path).ok_or_else(outside)?;
    let version_file = repo.relative(&module.version_file).ok_or_else(outside)?;
    let file = VersionFile::read(name, &module.version_file)?;
    let format = TagFormat::new(&module.tag, name);

    let dependencies: Vec<DependencyBump> = module
        .depends_on
        .iter()
        .filter_map(|dependency| planned.iter().find(|p| p.name == *dependency))
        .filter(|p| p.action == Action::Bump)
        .map(|p| DependencyBump {
            name: p.name.clone(),
            from: p.current.clone(),
            to: p.next.clone(),
        })
        .collect();

    let mut module_plan = ModulePlan {
        name: name.clone(),
        path: path.clone(),
        version_file: version_file.clone(),
        format: file.format,
        package: file.package.clone(),
        depends_on: module.depends_on.clone(),
        current: file.version.clone(),
        last_tag: None,
        commits: Vec::new(),
        dependencies: Vec::new(),
        bump: Bump::None,
        next: file.version.clone(),
        next_tag: None,
        action: Action::Keep,
        reason: String::new(),
        notes: Vec::new(),
    };

    let Some((tag, current)) = last_tag(repo, name, &format)? else {
        module_plan.action = Action::FirstTag;
        module_plan.next_tag = Some(format.render(&file.version));
        module_plan.reason = format!("no tag yet: first release, at the version in {version_file}");
        if !dependencies.is_empty() {
            module_plan.notes.push(format!(
                "not bumped for {} on its first release; it is tagged at the version its \
                 file holds",
                describe_dependencies(&dependencies)
            ));
        }
        return Ok(module_plan);
    };
    module_plan.current = current.clone();
    module_plan.last_tag = Some(tag.clone());
    if file.version != current {
        module_plan.notes.push(format!(
            "{version_file} holds {} but the last tag `{tag}` is {current}; the next version \
             counts from the tag",
            file.version
        ));
    }

    let mut paths = vec![path.clone()];
    paths.extend(repo.renamed_into(&tag, &path)?);
    if paths.len() > 1 {
        module_plan.notes.push(format!(
            "files were moved in from {} since `{tag}`; their commits there count too",
            paths[1..].join(", ")
        ));
    }
    let commits = repo
        .commits(Some(&tag), &paths)?
        .into_iter()
        .map(|logged| {
            Commit::parse(&logged.sha, &logged.message).map_err(|bad| VersionError::BadReleaseAs {
                commit: logged.sha.clone(),
                value: bad.value,
                problem: bad.problem,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let forced = commits
        .iter()
        .find_map(|c| c.release_as.clone().map(|v| (c, v)));
    let own = commits.iter().map(|c| c.bump).max().unwrap_or(Bump::None);
    let (next, reason) = if let Some((commit, forced)) = forced {
        if forced <= current {
            return Err(VersionError::ReleaseAsNotNewer {
                module: name.clone(),
                commit: commit.sha.clone(),
                forced: forced.to_string(),
                current: current.to_string(),
                tag,
            });
        }
        (
            forced.clone(),
            format!("Release-As: {forced} in {}", commit.short),
        )
    } else {
        let floor = if dependencies.is_empty() {
            Bump::None
        } else {
            Bump::Patch
        };
        let level = own.max(floor);
        let next = level.apply(&current);
        let reason = reason(&current, own, &commits, &dependencies, &tag);
        (next, reason)
    };

    module_plan.bump = level_between(&current, &next);
    module_plan.action = if next == current {
        Action::Keep
    } else {
        Action::Bump
    };
    if module_plan.action == Action::Bump {
        module_plan.next_tag = Some(format.render(&next));
    }
    module_plan.next = next;
    module_plan.reason = reason;
    module_plan.commits = commits;
    module_plan.dependencies = dependencies;
    Ok(module_plan)
}

/// The last tag of the module in the history of HEAD, and its version.
fn last_tag(
    repo: &Repository,
    module: &str,
    format: &TagFormat,
) -> Result<Option<(String, Version)>, VersionError> {
    let mut best: Option<(String, Version)> = None;
    for tag in repo.tags_in_head(&format.pattern())? {
        let version = match format.parse(&tag) {
            None => continue,
            Some(Ok(version)) => version,
            Some(Err(e)) => {
                return Err(VersionError::BadTag {
                    module: module.to_string(),
                    tag,
                    problem: e.to_string(),
                });
            }
        };
        if best.as_ref().is_none_or(|(_, b)| version > *b) {
            best = Some((tag, version));
        }
    }
    Ok(best)
}

/// Why a module gets `own` (or only its dependencies' patch), in one line.
fn reason(
    current: &Version,
    own: Bump,
    commits: &[Commit],
    dependencies: &[DependencyBump],
    tag: &str,
) -> String {
    let deciding = commits.iter().find(|c| c.bump == own && own != Bump::None);
    let mut parts = Vec::new();
    if let Some(commit) = deciding {
        let kind = match own {
            Bump::Major => "breaking change",
            Bump::Minor => "feature",
            _ if commit
                .conventional
                .as_ref()
                .is_some_and(|c| c.type_ == "perf") =>
            {
                "performance fix"
            }
            _ => "fix",
        };
        let mut text = format!("{kind} in {} ({})", commit.short, commit.summary);
        if current.major == 0 {
            match own {
                Bump::Major => text.push_str(" [below 1.0.0 a breaking change bumps minor]"),
                Bump::Minor => text.push_str(" [below 1.0.0 a feature bumps patch]"),
                _ => {}
            }
        }
        parts.push(text);
    }
    if !dependencies.is_empty() {
        parts.push(describe_dependencies(dependencies));
    }
    if parts.is_empty() {
        return if commits.is_empty() {
            format!("no commits since {tag}")
        } else {
            format!(
                "{} since {tag}, none a feat, fix, perf or breaking change",
                count(commits.len(), "commit")
            )
        };
    }
    parts.join("; ")
}

fn describe_dependencies(dependencies: &[DependencyBump]) -> String {
    let list: Vec<String> = dependencies
        .iter()
        .map(|d| format!("{} {} → {}", d.name, d.from, d.to))
        .collect();
    let noun = if dependencies.len() == 1 {
        "dependency"
    } else {
        "dependencies"
    };
    format!("{noun} {}", list.join(", "))
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The level of the step from `current` to `next`, as a reader sees it.
fn level_between(current: &Version, next: &Version) -> Bump {
    if next == current {
        Bump::None
    } else if next.major != current.major {
        Bump::Major
    } else if next.minor != current.minor {
        Bump::Minor
    } else {
        Bump::Patch
    }
}

/// Module names with every module after the modules it depends on, ties in name order.
/// The config has no cycles; a cycle would only drop its modules from the order.
pub fn dependency_order(modules: &BTreeMap<String, Module>) -> Vec<&str> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < modules.len() {
        let ready = modules.values().find(|m| {
            !done.contains(m.name.as_str())
                && m.depends_on
                    .iter()
                    .all(|d| done.contains(d.as_str()) || !modules.contains_key(d))
        });
        let Some(module) = ready else { break };
        done.insert(&module.name);
        order.push(module.name.as_str());
    }
    order
}

#[cfg(test)]
mod tests;
