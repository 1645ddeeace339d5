//! Module versioning: each library module (`[modules.<name>]`) is released on its own
//! semantic version, bumped from the Conventional Commits that touched its folder since its
//! last tag, and its dependents are bumped with it.
//!
//! The work is split into a pure-ish [`plan`] (read the version files, the tags and the
//! history; decide every next version and why) and [`apply`] (write the version files, the
//! dependents' references and the changelogs, then commit and tag). `plan` never writes;
//! `apply` computes every new file in memory and checks every tag before it writes the
//! first byte, so bad input leaves the tree as it was.
//!
//! The files, one noun each:
//!
//! - `bump`: the bump levels and how they apply to a version (with the 0.x rules),
//! - `commit`: a commit message read as a Conventional Commit (`Release-As` included),
//! - `tag`: a module's tag format, rendering and parsing tags,
//! - `repository`: the `git` command line: tags, history, dirty check, commit and tag,
//! - `version_file`: reading and rewriting the five version-file formats,
//! - `changelog`: the `CHANGELOG.md` section of a release,
//! - `plan` and `apply`: the two steps above.

pub mod apply;
pub mod bump;
pub mod changelog;
pub mod commit;
#[cfg(test)]
mod fixture;
pub mod plan;
pub mod repository;
pub mod tag;
pub mod version_file;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use apply::{Applied, ApplyOptions, FileChange, apply};
pub use bump::Bump;
pub use plan::{Action, ModulePlan, Plan, plan};

use crate::config::Config;

/// The label prefix of a module version on an app image: `shipit.module.<name>=<version>`.
pub const MODULE_LABEL_PREFIX: &str = "shipit.module.";

/// Why module versions could not be planned or applied. Every message names the file, tag or
/// commit at fault and ends with a `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "the `git` command was not found on PATH (needed to read the history of {dir})\n\
         hint: install git, or put it on PATH"
    )]
    GitNotInstalled { dir: PathBuf },

    #[error("could not run `git` in {dir}: {source}\nhint: check that the folder exists")]
    GitSpawn {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "`git {args}` failed in {dir}: {stderr}\n\
         hint: run `git {args}` in {dir} to see what git needs"
    )]
    Git {
        dir: PathBuf,
        args: String,
        stderr: String,
    },

    #[error(
        "{dir} is not inside a git work tree, so module versions cannot be read from history\n\
         hint: run `git init` and commit the modules, or run shipit from inside the repository"
    )]
    NotARepository { dir: PathBuf },

    #[error(
        "the repository {root} has no commit yet\n\
         hint: commit the modules first; versions are read from the history"
    )]
    NoCommits { root: PathBuf },

    #[error(
        "module `{module}` ({path}) is outside the git repository {root}\n\
         hint: every module must live in the repository that holds the config"
    )]
    OutsideRepository {
        module: String,
        path: PathBuf,
        root: PathBuf,
    },

    #[error(
        "the version file {file} of module `{module}` does not exist\n\
         hint: create it, or set modules.{module}.version_file to the file holding the version"
    )]
    MissingFile { module: String, file: PathBuf },

    #[error("cannot read the version file {file}: {source}\nhint: check its permissions")]
    Unreadable {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read a version from {file}: {problem}\nhint: {hint}")]
    BadVersionFile {
        file: PathBuf,
        problem: String,
        hint: String,
    },

    #[error(
        "the tag `{tag}` of module `{module}` does not hold a semantic version: {problem}\n\
         hint: delete the tag (`git tag -d {tag}`), or change modules.{module}.tag so it no \
         longer matches"
    )]
    BadTag {
        module: String,
        tag: String,
        problem: String,
    },

    #[error(
        "commit {commit} has `Release-As: {value}`, which is not a semantic version: {problem}\n\
         hint: amend the commit, or add a later commit with a valid `Release-As: x.y.z` footer"
    )]
    BadReleaseAs {
        commit: String,
        value: String,
        problem: String,
    },

    #[error(
        "commit {commit} forces module `{module}` to {forced} with `Release-As`, which is not \
         above its current version {current}\n\
         hint: Release-As must name a version above the last tag `{tag}`"
    )]
    ReleaseAsNotNewer {
        module: String,
        commit: String,
        forced: String,
        current: String,
        tag: String,
    },

    #[error(
        "the tag `{tag}` for module `{module}` already exists, but not in the history of HEAD\n\
         hint: delete it (`git tag -d {tag}`) if it is stale, or merge the branch it is on"
    )]
    TagExists { module: String, tag: String },

    #[error(
        "the work tree of {root} has uncommitted changes:\n{files}\n\
         hint: commit or stash them first; `shipit version apply --dry-run` shows what would \
         change without writing"
    )]
    Dirty { root: PathBuf, files: String },

    #[error("cannot write {file}: {source}\nhint: check the folder's permissions")]
    Write {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The version of every module as its version file holds it now, by name. This is what an
/// image built from the work tree contains, whatever the tags say.
pub fn current(config: &Config) -> Result<BTreeMap<String, String>, VersionError> {
    config
        .modules
        .values()
        .map(|module| {
            let file = version_file::VersionFile::read(&module.name, &module.version_file)?;
            Ok((module.name.clone(), file.version.to_string()))
        })
        .collect()
}

/// The image labels of module versions: `shipit.module.<name>=<version>`.
pub fn labels(modules: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    modules
        .iter()
        .map(|(name, version)| (format!("{MODULE_LABEL_PREFIX}{name}"), version.clone()))
        .collect()
}

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
    let options = ApplyOptions::default();
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
