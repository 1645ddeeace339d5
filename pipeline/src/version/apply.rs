//! Applying a plan: new versions into the version files, the dependents' references, a
//! section on top of each bumped module's `CHANGELOG.md`, then one commit and one annotated
//! tag per module that gets a version.
//!
//! Every new file is computed in memory, and every tag checked, before the first write: a
//! version file that does not parse, or a tag that already exists, leaves the tree as it was.
//! A dirty work tree is refused (shipit's own state folder excepted), so the release commit
//! holds nothing but the release. `--no-commit` writes the files and stops there: no tag is
//! made either, because a tag must point at the commit that holds its version.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::civil::Date;
use serde::Serialize;

use super::VersionError;
use super::changelog::{self, CHANGELOG_FILE};
use super::plan::{Action, Plan};
use super::repository::Repository;
use super::version_file::VersionFile;
use crate::config::Config;

/// How much of the work to do.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Compute and check everything, write nothing.
    pub dry_run: bool,
    /// Commit the written files.
    pub commit: bool,
    /// Tag the modules (needs `commit`).
    pub tag: bool,
    /// The date in the changelog headings; today (UTC) when `None`.
    pub date: Option<Date>,
    /// The remote to push the commit and the tags to, once made; `None`: keep them local.
    pub push: Option<String>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            commit: true,
            tag: true,
            date: None,
            push: None,
        }
    }
}

/// One file that `apply` writes (or would write).
#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    /// Relative to the repository's top.
    pub path: String,
    /// What changes in it, in words.
    pub changes: Vec<String>,
    #[serde(skip)]
    absolute: PathBuf,
    #[serde(skip)]
    pub before: Option<String>,
    #[serde(skip)]
    pub after: String,
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub dry_run: bool,
    /// Every module's version after the apply, by name.
    pub versions: BTreeMap<String, String>,
    pub files: Vec<FileChange>,
    /// The release commit's id, when one was made.
    pub commit: Option<String>,
    /// The tags made (or, on a dry run, that would be made).
    pub tags: Vec<String>,
    /// Where they were pushed, when they were.
    pub remote: Option<String>,
    /// The refs pushed there (`HEAD:refs/heads/main`, `refs/tags/core-v1.2.1:…`).
    pub pushed: Vec<String>,
    pub notes: Vec<String>,
}

/// Applies `plan` (made from `config`) as `options` say.
pub fn apply(
    config: &Config,
    plan: &Plan,
    options: &ApplyOptions,
) -> Result<Applied, VersionError> {
    let repo = Repository::discover(&config.dir)?;
    let mut notes = Vec::new();
    if !options.dry_run {
        let changes = repo.uncommitted(config)?;
        if !changes.is_empty() {
            return Err(VersionError::Dirty {
                root: repo.root.clone(),
                files: changes
                    .iter()
                    .map(|c| format!("  {c}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
    }

    // A push needs a branch: refused before anything is written or committed.
    if let Some(remote) = &options.push
        && options.commit
        && !options.dry_run
        && repo.branch()?.is_none()
    {
        return Err(super::repository::detached(remote));
    }
    let files = edits(config, plan, &repo, options.date.unwrap_or_else(today))?;

    let mut tags = Vec::new();
    for module in plan.modules.iter().filter(|m| m.action != Action::Keep) {
        let Some(tag) = &module.next_tag else {
            continue;
        };
        if repo.tag_exists(tag)? {
            return Err(VersionError::TagExists {
                module: module.name.clone(),
                tag: tag.clone(),
            });
        }
        tags.push(tag.clone());
    }
    let versions = plan
        .modules
        .iter()
        .map(|m| (m.name.clone(), m.next.to_string()))
        .collect();

    let mut applied = Applied {
        dry_run: options.dry_run,
        versions,
        files,
        commit: None,
        tags,
        remote: None,
        pushed: Vec::new(),
        notes: Vec::new(),
    };
    if options.dry_run {
        if let Some(remote) = &options.push
            && options.commit
        {
            notes.push(format!("would push the commit and the tags to {remote}"));
        }
        applied.notes = notes;
        return Ok(applied);
    }

    for file in &applied.files {
        std::fs::write(&file.absolute, &file.after).map_err(|source| VersionError::Write {
            file: file.absolute.clone(),
            source,
        })?;
    }

    if !options.commit {
        if !applied.files.is_empty() || !applied.tags.is_empty() {
            notes.push(
                "not committed (--no-commit), so nothing was tagged: a tag must point at the \
                 commit that holds its version"
                    .to_string(),
            );
        }
        applied.tags.clear();
        applied.notes = notes;
        return Ok(applied);
    }
    if !applied.files.is_empty() {
        let paths: Vec<String> = applied.files.iter().map(|f| f.path.clone()).collect();
        repo.commit(&paths, &commit_message(plan))?;
        applied.commit = repo.head()?;
    }
    if options.tag {
        for module in plan.modules.iter().filter(|m| m.action != Action::Keep) {
            if let Some(tag) = &module.next_tag {
                repo.tag(tag, &format!("{} {}", module.name, module.next))?;
            }
        }
    } else if !applied.tags.is_empty() {
        notes.push(format!(
            "not tagged (--no-tag): {}",
            applied.tags.join(", ")
        ));
        applied.tags.clear();
    }
    if let Some(remote) = &options.push {
        applied.pushed = repo.push(remote, applied.commit.is_some(), &applied.tags)?;
        applied.remote = Some(remote.clone());
    }
    applied.notes = notes;
    Ok(applied)
}

/// The new content of every file the plan changes, in the order first touched.
fn edits(
    config: &Config,
    plan: &Plan,
    repo: &Repository,
    date: Date,
) -> Result<Vec<FileChange>, VersionError> {
    let mut pending = Pending {
        repo,
        files: Vec::new(),
        index: BTreeMap::new(),
    };
    for module_plan in plan.modules.iter().filter(|m| m.action == Action::Bump) {
        let module = &config.modules[&module_plan.name];
        let file = VersionFile::read(&module.name, &module.version_file)?;
        let next = &module_plan.next;
        pending.change(
            module.version_file.clone(),
            Some(file.text.clone()),
            &mut |text| {
                let what = format!("version {} → {next}", file.version);
                Ok(Some((file.with_version(text, next)?, what)))
            },
        )?;

        let package = file.package.clone().unwrap_or_else(|| module.name.clone());
        for dependent in config
            .modules
            .values()
            .filter(|m| m.depends_on.contains(&module.name))
        {
            let dependent_file = VersionFile::read(&dependent.name, &dependent.version_file)?;
            pending.change(
                dependent.version_file.clone(),
                Some(dependent_file.text.clone()),
                &mut |text| {
                    let updated = dependent_file.with_dependency(text, &package, next)?;
                    Ok(updated.map(|t| (t, format!("requires {package} {next}"))))
                },
            )?;
        }

        let changelog_path = module.path.join(CHANGELOG_FILE);
        let existing = match std::fs::read_to_string(&changelog_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(VersionError::Unreadable {
                    file: changelog_path,
                    source,
                });
            }
        };
        let section =
            changelog::section(next, date, &module_plan.commits, &module_plan.dependencies);
        pending.change(changelog_path, existing, &mut |text| {
            let before = (!text.is_empty()).then_some(text);
            Ok(Some((
                changelog::prepend(before, &section),
                format!("changelog section {next}"),
            )))
        })?;
    }
    // A dependent whose file had no reference to update is not a change.
    let mut files = pending.files;
    files.retain(|f| Some(&f.after) != f.before.as_ref());
    Ok(files)
}

/// One edit of a file's text: the new text and what changed, or `None` for no change.
type Edit<'a> = dyn FnMut(&str) -> Result<Option<(String, String)>, VersionError> + 'a;

/// The files being edited, each read once and edited in turn.
struct Pending<'a> {
    repo: &'a Repository,
    files: Vec<FileChange>,
    index: BTreeMap<PathBuf, usize>,
}

impl Pending<'_> {
    /// Applies `edit` to the file at `absolute`, whose content on disk is `before`.
    fn change(
        &mut self,
        absolute: PathBuf,
        before: Option<String>,
        edit: &mut Edit<'_>,
    ) -> Result<(), VersionError> {
        let slot = match self.index.get(&absolute) {
            Some(&i) => i,
            None => {
                let path = self
                    .repo
                    .relative(&absolute)
                    .unwrap_or_else(|| absolute.display().to_string());
                self.files.push(FileChange {
                    path,
                    changes: Vec::new(),
                    absolute: absolute.clone(),
                    after: before.clone().unwrap_or_default(),
                    before,
                });
                self.index.insert(absolute, self.files.len() - 1);
                self.files.len() - 1
            }
        };
        let file = &mut self.files[slot];
        if let Some((text, what)) = edit(&file.after)? {
            file.after = text;
            file.changes.push(what);
        }
        Ok(())
    }
}

fn commit_message(plan: &Plan) -> String {
    let released: Vec<String> = plan
        .modules
        .iter()
        .filter(|m| m.action == Action::Bump)
        .map(|m| format!("{} {}", m.name, m.next))
        .collect();
    format!(
        "chore(release): {}\n\nWritten by `shipit version apply`.",
        released.join(", ")
    )
}

fn today() -> Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

#[cfg(test)]
mod tests;
