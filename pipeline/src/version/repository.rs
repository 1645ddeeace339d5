//! The git repository that holds the modules, through [`crate::git`]'s runner (the `git`
//! command line, so the user's git config applies): tags, the commits that touched a folder,
//! renames, the dirty check, and the release commit and tags.
//!
//! git runs in the repository's top folder, so every path given to it is relative to that
//! folder, with `/` separators.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::config::Config;
use crate::git::{failed, stdout_line};

use super::VersionError;

/// Field and record separators in `git log` output: unit separator and NUL.
const FIELD: char = '\x1f';

/// A git work tree.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The top folder of the work tree, canonical.
    pub root: PathBuf,
}

/// A commit as `git log` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCommit {
    pub sha: String,
    pub message: String,
}

impl Repository {
    /// The repository whose work tree holds `dir`.
    pub fn discover(dir: &Path) -> Result<Repository, VersionError> {
        let output = crate::git::run(dir, &["rev-parse", "--show-toplevel"])?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("not a git repository") || stderr.contains("work tree") {
                return Err(VersionError::NotARepository {
                    dir: dir.to_path_buf(),
                });
            }
            return Err(failed(dir, &["rev-parse", "--show-toplevel"], &output).into());
        }
        let top = PathBuf::from(stdout_line(&output));
        let root = top.canonicalize().unwrap_or(top);
        Ok(Repository { root })
    }

    /// `path` relative to the top folder, with `/` separators (`.` for the top itself), or
    /// `None` when it is outside the work tree.
    pub fn relative(&self, path: &Path) -> Option<String> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let rest = path.strip_prefix(&self.root).ok()?;
        let parts: Vec<String> = rest
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        })
    }

    /// The commit HEAD names, or `None` in a repository without commits.
    pub fn head(&self) -> Result<Option<String>, VersionError> {
        let args = ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"];
        let output = self.git(&args)?;
        if output.status.success() {
            return Ok(Some(stdout_line(&output)));
        }
        if output.status.code() == Some(1) && output.stderr.is_empty() {
            return Ok(None);
        }
        Err(failed(&self.root, &args, &output).into())
    }

    /// The tags matching `pattern` that are in the history of HEAD.
    pub fn tags_in_head(&self, pattern: &str) -> Result<Vec<String>, VersionError> {
        let args = ["tag", "--list", "--merged", "HEAD", pattern];
        Ok(lines(&self.checked(&args)?))
    }

    /// Whether the tag `name` exists anywhere in the repository.
    pub fn tag_exists(&self, name: &str) -> Result<bool, VersionError> {
        let reference = format!("refs/tags/{name}");
        let output = self.git(&["rev-parse", "--verify", "--quiet", &reference])?;
        Ok(output.status.success())
    }

    /// The commits after `since` (all commits when `None`) up to HEAD that touched any of
    /// `paths`, newest first. Merge commits are left out: the commits they bring in are
    /// listed one by one, so a merged branch counts once, commit by commit.
    pub fn commits(
        &self,
        since: Option<&str>,
        paths: &[String],
    ) -> Result<Vec<LoggedCommit>, VersionError> {
        let range = match since {
            Some(since) => format!("{since}..HEAD"),
            None => "HEAD".to_string(),
        };
        let format = format!("--format=%H{FIELD}%B");
        let mut args = vec!["log", "-z", "--no-merges", &format, &range, "--"];
        args.extend(paths.iter().map(String::as_str));
        let text = self.checked(&args)?;
        Ok(text
            .split('\0')
            .filter(|record| !record.trim().is_empty())
            .filter_map(|record| {
                let (sha, message) = record.split_once(FIELD)?;
                Some(LoggedCommit {
                    sha: sha.trim().to_string(),
                    message: message.to_string(),
                })
            })
            .collect())
    }

    /// Where the files under `path` (relative to the top) lived at `since`, for those that
    /// were renamed into it since: a module folder moved after its last tag keeps the
    /// history of its old place.
    pub fn renamed_into(&self, since: &str, path: &str) -> Result<Vec<String>, VersionError> {
        let range = format!("{since}..HEAD");
        let args = [
            "diff",
            "--name-status",
            "-z",
            "-M",
            "--diff-filter=R",
            range.as_str(),
        ];
        let text = self.checked(&args)?;
        let fields: Vec<&str> = text.split('\0').collect();
        let mut old_places = Vec::new();
        // Records are `R<score>`, old path, new path.
        for record in fields.chunks(3) {
            let [status, old, new] = record else { continue };
            if !status.starts_with('R') {
                continue;
            }
            let Some(rest) = under(new, path) else {
                continue;
            };
            if under(old, path).is_some() {
                continue;
            }
            // `libs/source/src/lib.rs` → `sources/src/lib.rs` puts the folder at `libs/source`;
            // a single file moved in from elsewhere keeps its own old path.
            let place = match old.strip_suffix(rest) {
                Some(prefix) if !rest.is_empty() && prefix.ends_with('/') => {
                    prefix.trim_end_matches('/').to_string()
                }
                _ => (*old).to_string(),
            };
            if !place.is_empty() && !old_places.contains(&place) {
                old_places.push(place);
            }
        }
        Ok(old_places)
    }

    /// The changes `git status` reports, except under `excluded` (relative to the top):
    /// modified, staged, deleted and untracked files, one `XY path` line each.
    pub fn changes(&self, excluded: &[String]) -> Result<Vec<String>, VersionError> {
        let excludes: Vec<String> = excluded
            .iter()
            .map(|path| format!(":(exclude){path}"))
            .collect();
        let mut args = crate::git::STATUS_ARGS.to_vec();
        args.extend(excludes.iter().map(String::as_str));
        Ok(lines(&self.checked(&args)?))
    }

    /// The work tree's changes ([`Repository::changes`]) outside `config`'s state directory,
    /// which shipit itself writes to: what makes the tree too dirty to version.
    pub fn uncommitted(&self, config: &Config) -> Result<Vec<String>, VersionError> {
        let excluded: Vec<String> = self.relative(&config.state_dir).into_iter().collect();
        self.changes(&excluded)
    }

    /// Stages `files` (relative to the top) and commits them, and only them, with `message`.
    ///
    /// Hooks are skipped: the release commit holds only files shipit just wrote, and a
    /// pre-commit hook that reformats or rejects them would make the commit differ from the
    /// plan that was shown.
    pub fn commit(&self, files: &[String], message: &str) -> Result<(), VersionError> {
        let mut add = vec!["add", "--"];
        add.extend(files.iter().map(String::as_str));
        self.checked(&add)?;
        let mut commit = vec!["commit", "--quiet", "--no-verify", "-m", message, "--"];
        commit.extend(files.iter().map(String::as_str));
        self.checked(&commit)?;
        Ok(())
    }

    /// Creates the annotated tag `name` on HEAD.
    pub fn tag(&self, name: &str, message: &str) -> Result<(), VersionError> {
        self.checked(&["tag", "--annotate", "--message", message, name, "HEAD"])?;
        Ok(())
    }

    /// Pushes the branch HEAD is on (when `branch`) and `tags` to `remote` in one atomic
    /// push: the remote takes all of them or none. Returns the refs pushed.
    pub fn push(
        &self,
        remote: &str,
        branch: bool,
        tags: &[String],
    ) -> Result<Vec<String>, VersionError> {
        let mut refs = Vec::new();
        if branch {
            let Some(head) = self.branch()? else {
                return Err(detached(remote));
            };
            refs.push(format!("HEAD:{head}"));
        }
        refs.extend(tags.iter().map(|t| format!("refs/tags/{t}:refs/tags/{t}")));
        if refs.is_empty() {
            return Ok(refs);
        }
        let mut args = vec!["push", "--atomic", "--quiet", remote];
        args.extend(refs.iter().map(String::as_str));
        let output = self.git(&args)?;
        if !output.status.success() {
            // What the remote said, the first refused ref, and git's verdict.
            let stderr = String::from_utf8_lossy(&output.stderr);
            let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
            let mut said: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("remote:") && l.len() > "remote:".len())
                .take(4)
                .collect();
            said.extend(lines.iter().copied().find(|l| l.starts_with("! [")));
            said.extend(
                lines
                    .iter()
                    .copied()
                    .filter(|l| l.starts_with("error:") || l.starts_with("fatal:"))
                    .take(2),
            );
            let tail = said.join(" / ");
            return Err(VersionError::Push {
                remote: remote.to_string(),
                refs,
                message: if tail.is_empty() {
                    format!("git push exited with {}", output.status)
                } else {
                    tail
                },
            });
        }
        Ok(refs)
    }

    /// The full name of the branch HEAD is on (`refs/heads/main`), or `None` when HEAD is
    /// detached. The full name, since a short one can be ambiguous with a tag.
    pub fn branch(&self) -> Result<Option<String>, VersionError> {
        let output = self.git(&["symbolic-ref", "--quiet", "HEAD"])?;
        Ok(output.status.success().then(|| stdout_line(&output)))
    }

    fn git(&self, args: &[&str]) -> Result<Output, VersionError> {
        Ok(crate::git::run(&self.root, args)?)
    }

    /// Runs git and returns its stdout, or the error of a failed run.
    fn checked(&self, args: &[&str]) -> Result<String, VersionError> {
        Ok(crate::git::checked(&self.root, args)?)
    }
}

/// The refusal to push from a detached HEAD.
pub(crate) fn detached(remote: &str) -> VersionError {
    VersionError::Push {
        remote: remote.to_string(),
        refs: Vec::new(),
        message: "HEAD is detached, so the version commit would be on no branch to push; check \
                  out a branch first"
            .to_string(),
    }
}

/// The part of `file` below the folder `dir` (both relative to the top), `""` for the
/// folder itself, or `None` when it is not under it.
fn under<'a>(file: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "." {
        return Some(file);
    }
    if file == dir {
        return Some("");
    }
    file.strip_prefix(dir)?.strip_prefix('/')
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_finds_the_part_below_a_folder() {
        assert_eq!(under("sources/src/lib.rs", "sources"), Some("src/lib.rs"));
        assert_eq!(under("sources", "sources"), Some(""));
        assert_eq!(under("sources-extra/x", "sources"), None);
        assert_eq!(under("a/b", "."), Some("a/b"));
    }
}
