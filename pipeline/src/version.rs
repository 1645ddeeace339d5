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
//! - `plan` and `apply`: the two steps above,
//! - `release_step`: the version step of `shipit release` (plan, then apply on a clean work
//!   tree), and what it would do now, for `shipit plan`.

pub mod apply;
pub mod bump;
pub mod changelog;
pub mod commit;
#[cfg(test)]
pub(crate) mod fixture;
pub mod plan;
pub mod release_step;
pub mod repository;
pub mod tag;
pub mod version_file;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use apply::{Applied, ApplyOptions, FileChange, apply};
pub use bump::Bump;
pub use plan::{Action, ModulePlan, Plan, plan};
pub use release_step::{ModuleBump, ModulesPlan, ReleaseVersions, plan_release, prepare_release};

use crate::config::Config;

/// The label prefix of a module version on an app image: `shipit.module.<name>=<version>`.
pub const MODULE_LABEL_PREFIX: &str = "shipit.module.";

/// Why module versions could not be planned or applied. Every message names the file, tag or
/// commit at fault, and [`VersionError::hint`] says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// git could not be run, or failed.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),

    #[error("{dir} is not inside a git work tree, so module versions cannot be read from history")]
    NotARepository { dir: PathBuf },

    #[error("the repository {root} has no commit yet")]
    NoCommits { root: PathBuf },

    #[error("module `{module}` ({path}) is outside the git repository {root}")]
    OutsideRepository {
        module: String,
        path: PathBuf,
        root: PathBuf,
    },

    #[error("the version file {file} of module `{module}` does not exist")]
    MissingFile { module: String, file: PathBuf },

    #[error("cannot read the version file {file}: {source}")]
    Unreadable {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read a version from {file}: {problem}")]
    BadVersionFile {
        file: PathBuf,
        problem: String,
        hint: String,
    },

    #[error("the tag `{tag}` of module `{module}` does not hold a semantic version: {problem}")]
    BadTag {
        module: String,
        tag: String,
        problem: String,
    },

    #[error(
        "commit {commit} has `Release-As: {value}`, which is not a semantic version: {problem}"
    )]
    BadReleaseAs {
        commit: String,
        value: String,
        problem: String,
    },

    #[error(
        "commit {commit} forces module `{module}` to {forced} with `Release-As`, which is not \
         above its current version {current}"
    )]
    ReleaseAsNotNewer {
        module: String,
        commit: String,
        forced: String,
        current: String,
        tag: String,
    },

    #[error("the tag `{tag}` for module `{module}` already exists, but not in the history of HEAD")]
    TagExists { module: String, tag: String },

    #[error("the work tree of {root} has uncommitted changes:\n{files}")]
    Dirty { root: PathBuf, files: String },

    /// The remote refused the version commit or tags (they stay made locally).
    #[error(
        "the version commit and tags were made here, but the push to {remote} failed: {message}"
    )]
    Push {
        remote: String,
        /// The refspecs that were pushed (`HEAD:refs/heads/main`, `refs/tags/…`).
        refs: Vec<String>,
        message: String,
    },

    #[error("cannot write {file}: {source}")]
    Write {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VersionError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            VersionError::Git(e) => return e.hint(),
            VersionError::NotARepository { .. } => {
                "run `git init` and commit the modules, or run shipit from inside the repository"
                    .to_string()
            }
            VersionError::NoCommits { .. } => {
                "commit the modules first; versions are read from the history".to_string()
            }
            VersionError::OutsideRepository { .. } => {
                "every module must live in the repository that holds the config".to_string()
            }
            VersionError::MissingFile { module, .. } => format!(
                "create it, or set modules.{module}.version_file to the file holding the version"
            ),
            VersionError::Unreadable { .. } => "check its permissions".to_string(),
            VersionError::BadVersionFile { hint, .. } => hint.clone(),
            VersionError::BadTag { module, tag, .. } => format!(
                "delete the tag (`git tag -d {tag}`), or change modules.{module}.tag so it no \
                 longer matches"
            ),
            VersionError::BadReleaseAs { .. } => {
                "amend the commit, or add a later commit with a valid `Release-As: x.y.z` footer"
                    .to_string()
            }
            VersionError::ReleaseAsNotNewer { tag, .. } => {
                format!("Release-As must name a version above the last tag `{tag}`")
            }
            VersionError::TagExists { tag, .. } => format!(
                "delete it (`git tag -d {tag}`) if it is stale, or merge the branch it is on"
            ),
            VersionError::Dirty { .. } => {
                "commit or stash them first; `shipit version apply --dry-run` shows what would \
                 change without writing"
                    .to_string()
            }
            VersionError::Push { refs, .. } if refs.is_empty() => {
                "check out the branch the release belongs to (in a GitHub workflow, the checkout \
                 of a push event is on its branch), then run it again"
                    .to_string()
            }
            VersionError::Push { remote, refs, .. } => format!(
                "push them yourself once the remote takes them: `git push --atomic {remote} {}`; \
                 in a GitHub workflow, check out with fetch-depth: 0 and give the job \
                 `permissions: contents: write`",
                refs.join(" ")
            ),
            VersionError::Write { .. } => "check the folder's permissions".to_string(),
        })
    }
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
