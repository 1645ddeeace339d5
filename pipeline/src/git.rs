//! The git revision of a build context: the commit it was built from and whether the work tree
//! under the context differs from that commit.
//!
//! The deployable app is versioned by its commit (`1a2b3c4d5e6f`, or `1a2b3c4d5e6f-dirty` when
//! the context has uncommitted changes). This module asks the `git` command line rather than
//! linking a git library: it honours the user's git config (safe.directory, worktrees,
//! alternates) exactly as the user's own `git` does. A folder outside any git work tree, or a
//! repository without commits, has no revision: that is `Ok(None)`, not an error.
//!
//! It is also shipit's one git runner (`run`, `checked`): module versioning
//! (`version/repository.rs`) reads tags and history and commits through it, and its errors
//! are [`GitError`]s wherever git runs.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How many hex digits of the commit id the short form has.
///
/// Twelve rather than git's default seven: the short sha ends up in image tags and release
/// records that outlive the repository's current size, and twelve digits stay unambiguous in
/// repositories with millions of objects. git lengthens it further if twelve are ambiguous.
pub const SHORT_SHA_LEN: usize = 12;

/// The suffix of [`Revision::version`] when the context has uncommitted changes.
pub const DIRTY_SUFFIX: &str = "-dirty";

/// `git status` as shipit asks it, for the folder git runs in and below: one `XY path` line
/// per modified, staged, deleted or untracked (not ignored) file. `--no-optional-locks`: a
/// status run by a tool must not take the index lock from an editor or a concurrent git
/// command. Pathspecs may follow (`:(exclude)…`).
pub(crate) const STATUS_ARGS: [&str; 6] = [
    "--no-optional-locks",
    "status",
    "--porcelain",
    "--untracked-files=normal",
    "--",
    ".",
];

/// The version of an app whose context git cannot name a commit for.
pub const UNTRACKED_VERSION: &str = "untracked";

/// The commit a context was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The full commit id (40 hex digits for SHA-1 repositories).
    pub sha: String,
    /// The abbreviated commit id, [`SHORT_SHA_LEN`] digits or more.
    pub short: String,
    /// Whether the work tree under the context folder differs from the commit: modified,
    /// staged, deleted or untracked (not ignored) files.
    pub dirty: bool,
}

impl Revision {
    /// The version of the app built from this revision: `<short>` or `<short>-dirty`.
    pub fn version(&self) -> String {
        if self.dirty {
            format!("{}{DIRTY_SUFFIX}", self.short)
        } else {
            self.short.clone()
        }
    }
}

/// Why git could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("the `git` command was not found on PATH (shipit runs it in {dir})")]
    NotInstalled { dir: PathBuf },

    #[error("could not run `git` in {dir}: {source}")]
    Spawn {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`git {args}` failed in {dir} ({status}): {stderr}")]
    Failed {
        dir: PathBuf,
        args: String,
        status: String,
        stderr: String,
    },
}

impl GitError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            GitError::NotInstalled { .. } => "install git, or put it on PATH".to_string(),
            GitError::Spawn { .. } => "check that the folder exists".to_string(),
            GitError::Failed { args, .. } => format!(
                "check that the folder exists and run `git {args}` in it to see what git needs; \
                 a repository owned by another user needs `git config --global --add \
                 safe.directory <repository>`"
            ),
        })
    }
}

/// The revision of the git work tree that holds `dir`.
///
/// `Ok(None)` when `dir` is not inside a git work tree, or when the repository has no commit
/// yet. `dirty` looks only at `dir` and below: a change elsewhere in the repository does not
/// reach the build context, so it does not make this build dirty.
pub fn revision(dir: &Path) -> Result<Option<Revision>, GitError> {
    let inside = run(dir, &["rev-parse", "--is-inside-work-tree"])?;
    if !inside.status.success() {
        let stderr = String::from_utf8_lossy(&inside.stderr);
        if stderr.contains("not a git repository") {
            return Ok(None);
        }
        return Err(failed(
            dir,
            &["rev-parse", "--is-inside-work-tree"],
            &inside,
        ));
    }
    // "false" inside a .git folder or a bare repository: there is no work tree to build from.
    if stdout_line(&inside) != "true" {
        return Ok(None);
    }

    // `--verify --quiet` exits 1 without a word when HEAD does not name a commit yet.
    let head = run(dir, &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])?;
    if !head.status.success() {
        if head.status.code() == Some(1) && head.stderr.is_empty() {
            return Ok(None);
        }
        return Err(failed(dir, &["rev-parse", "--verify", "HEAD"], &head));
    }
    let sha = stdout_line(&head);

    let short_arg = format!("--short={SHORT_SHA_LEN}");
    let short_args = ["rev-parse", short_arg.as_str(), sha.as_str()];
    let short = run(dir, &short_args)?;
    if !short.status.success() {
        return Err(failed(dir, &short_args, &short));
    }
    let short = stdout_line(&short);

    let status = run(dir, &STATUS_ARGS)?;
    if !status.status.success() {
        return Err(failed(dir, &STATUS_ARGS, &status));
    }
    let dirty = !status.stdout.iter().all(u8::is_ascii_whitespace);

    Ok(Some(Revision { sha, short, dirty }))
}

/// The version of the app built from the context in `dir`, and the revision it names:
/// `<short>` or `<short>-dirty`, or [`UNTRACKED_VERSION`] when git names no commit (outside a
/// work tree, no commit yet, or git failing: the version labels a release and never stops
/// one).
pub fn app_version(dir: &Path) -> (String, Option<Revision>) {
    let revision = revision(dir).unwrap_or(None);
    let version = revision
        .as_ref()
        .map_or_else(|| UNTRACKED_VERSION.to_string(), Revision::version);
    (version, revision)
}

/// A `git -C dir` command for the repository that holds `dir`, whatever git environment the
/// caller runs in.
fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        // A hook or an outer git command may have set these; they would point git at another
        // repository than the one holding `dir`.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        // shipit runs git unattended (a push in CI): a missing credential is an error, never
        // a prompt that waits forever.
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Runs `git args` in `dir` and returns what it wrote and how it exited; only a git that
/// cannot be started is an error.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Result<Output, GitError> {
    command(dir)
        .args(args)
        .output()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => GitError::NotInstalled {
                dir: dir.to_path_buf(),
            },
            _ => GitError::Spawn {
                dir: dir.to_path_buf(),
                source,
            },
        })
}

/// The first line of a command's stdout, trimmed.
pub(crate) fn stdout_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs `git args` in `dir` and returns its stdout, or the error of a failed run.
pub(crate) fn checked(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let output = run(dir, args)?;
    if !output.status.success() {
        return Err(failed(dir, args, &output));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The error of `git args`, which ran in `dir` and failed with `output`.
pub(crate) fn failed(dir: &Path, args: &[&str], output: &Output) -> GitError {
    GitError::Failed {
        dir: dir.to_path_buf(),
        args: args.join(" "),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::version::fixture::Fixture;

    /// A repository with one commit of `app.txt` (a fixed identity: the tests do not depend on
    /// the user's config).
    fn repo_with_commit() -> Fixture {
        let repo = Fixture::new();
        repo.change("app.txt", "v1\n", "first");
        repo
    }

    #[test]
    fn clean_repo_has_its_head_commit_and_is_not_dirty() {
        let repo = repo_with_commit();
        let rev = revision(&repo.root).unwrap().expect("a revision");

        assert_eq!(rev.sha.len(), 40);
        assert!(rev.sha.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(rev.short.len(), SHORT_SHA_LEN);
        assert!(rev.sha.starts_with(&rev.short));
        assert!(!rev.dirty);
        assert_eq!(rev.version(), rev.short);
    }

    #[test]
    fn modified_or_untracked_file_makes_the_revision_dirty() {
        let repo = repo_with_commit();
        repo.write("app.txt", "v2\n");
        let rev = revision(&repo.root).unwrap().unwrap();
        assert!(rev.dirty);
        assert_eq!(rev.version(), format!("{}-dirty", rev.short));

        let repo = repo_with_commit();
        repo.write("new.txt", "new\n");
        assert!(revision(&repo.root).unwrap().unwrap().dirty);
    }

    #[test]
    fn ignored_file_does_not_make_the_revision_dirty() {
        let repo = repo_with_commit();
        repo.change(".gitignore", "target/\n", "ignore");
        repo.write("target/out.bin", "x");

        assert!(!revision(&repo.root).unwrap().unwrap().dirty);
    }

    #[test]
    fn dirty_looks_only_under_the_context_folder() {
        let repo = repo_with_commit();
        repo.change("app/main.txt", "main\n", "app");
        repo.write("app.txt", "changed outside the context\n");

        let in_app = revision(&repo.path("app")).unwrap().unwrap();
        assert!(!in_app.dirty);
        let at_root = revision(&repo.root).unwrap().unwrap();
        assert!(at_root.dirty);
        assert_eq!(in_app.sha, at_root.sha);
    }

    #[test]
    fn folder_outside_any_repository_has_no_revision() {
        let dir = tempfile::tempdir().unwrap();
        // Guard against a temp dir that happens to live inside a work tree.
        let probe = Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(["rev-parse", "--is-inside-work-tree"])
            .output()
            .unwrap();
        if probe.status.success() {
            return;
        }
        assert_eq!(revision(dir.path()).unwrap(), None);
    }

    #[test]
    fn repository_without_commits_has_no_revision() {
        let repo = Fixture::new();
        repo.write("app.txt", "v1\n");
        assert_eq!(revision(&repo.root).unwrap(), None);
    }

    #[test]
    fn missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = revision(&missing).unwrap_err();
        assert!(matches!(err, GitError::Failed { .. }), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
