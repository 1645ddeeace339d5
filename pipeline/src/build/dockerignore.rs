//! `.dockerignore`: which files of a build context are not sent to the engine.
//!
//! The rules are Docker's own (moby/patternmatcher and the CLI's context walker), so that a
//! context shipit hashes and sends is the context `docker build` would send:
//!
//! - one pattern a line; lines starting with `#` are comments, blank lines are skipped, and
//!   surrounding whitespace is trimmed;
//! - patterns are paths relative to the context root: they are cleaned like Go's
//!   `filepath.Clean` (`./a//b/` is `a/b`) and a leading `/` is dropped;
//! - globs follow Go's `filepath.Match` (`*` and `?` never cross a `/`, `[a-z]` classes, `\`
//!   escapes), plus `**` for any number of folders (`**/*.log`, `dist/**`, `a/**/b`);
//! - a pattern that matches a folder excludes everything under it;
//! - `!pattern` re-includes, and the last pattern that matches a path decides;
//! - the Dockerfile and `.dockerignore` itself are always sent, even when a pattern matches
//!   them (the CLI appends `!<Dockerfile>` and `!.dockerignore` for them);
//! - a folder that is excluded is not entered unless a `!` pattern starts with that folder's
//!   path (the CLI's walker prunes the same way, so `!**/keep` cannot rescue a file inside an
//!   excluded folder, but `!build/keep` can).
//!
//! Two corners differ from Docker, both in patterns nobody writes on purpose: a class starting
//! with `!` (`[!a]`) negates here as in gitignore, where Go reads the `!` literally; and a `**`
//! glued to other characters in the middle of a pattern (`a**b`) acts as `*`. A leading `**`
//! glued to a name (`**.log`) matches that suffix at any depth, as Docker does.

use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// The name of the ignore file, at the root of the build context.
pub const DOCKERIGNORE_FILE: &str = ".dockerignore";

/// Why a `.dockerignore` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerignoreError {
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path}:{line}: `{pattern}` is not a valid pattern: {source}")]
    Pattern {
        path: PathBuf,
        line: usize,
        pattern: String,
        #[source]
        source: globset::Error,
    },

    #[error("{path}:{line}: `!` alone is not a pattern")]
    BareExclamation { path: PathBuf, line: usize },
}

impl DockerignoreError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            DockerignoreError::Read { .. } => "fix its permissions, or delete it",
            DockerignoreError::Pattern { .. } => {
                "patterns are Go filepath.Match globs plus `**`; escape a literal `[`, `*` or `?` \
                 with `\\`"
            }
            DockerignoreError::BareExclamation { .. } => {
                "write the path to re-include after the `!`, for example `!dist/keep.txt`"
            }
        };
        Some(hint.to_string())
    }
}

/// The compiled patterns of a `.dockerignore`, in file order.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without its `!`.
    text: String,
    /// `!pattern`: a match re-includes the path.
    reinclude: bool,
    matcher: GlobMatcher,
}

impl Dockerignore {
    /// Reads `<context>/.dockerignore` (no file means no patterns) and adds the rules that keep
    /// `dockerfile` (relative to the context, `/`-separated) and the ignore file itself.
    pub fn load(context: &Path, dockerfile: &str) -> Result<Self, DockerignoreError> {
        let path = context.join(DOCKERIGNORE_FILE);
        let mut ignore = match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&String::from_utf8_lossy(&bytes), &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::default(),
            Err(source) => return Err(DockerignoreError::Read { path, source }),
        };
        ignore.always_send(DOCKERIGNORE_FILE);
        ignore.always_send(dockerfile);
        Ok(ignore)
    }

    /// Compiles the text of an ignore file; `origin` only names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, DockerignoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            // Docker checks for `#` before trimming: ` # x` is a pattern, not a comment.
            if raw.starts_with('#') {
                continue;
            }
            let mut pattern = raw.trim();
            if pattern.is_empty() {
                continue;
            }
            let reinclude = pattern.starts_with('!');
            if reinclude {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(DockerignoreError::BareExclamation {
                        path: origin.to_path_buf(),
                        line,
                    });
                }
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let matcher = compile(&cleaned).map_err(|source| DockerignoreError::Pattern {
                path: origin.to_path_buf(),
                line,
                pattern: raw.trim().to_string(),
                source,
            })?;
            patterns.push(Pattern {
                text: cleaned,
                reinclude,
                matcher,
            });
        }
        Ok(Self { patterns })
    }

    /// Whether the context path `rel` (relative, `/`-separated) is left out of the context.
    ///
    /// A pattern matches a path when it matches the path itself or any of its parent folders.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for pattern in &self.patterns {
            // An exclude cannot change an excluded path, nor a re-include an included one.
            if pattern.reinclude != excluded {
                continue;
            }
            if pattern.matches_or_parent_matches(rel) {
                excluded = !pattern.reinclude;
            }
        }
        excluded
    }

    /// Whether an excluded folder must still be walked, because a `!` pattern may re-include
    /// something inside it. This is the CLI's pruning rule: the pattern text must start with
    /// the folder's path.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.reinclude)
            .any(|p| format!("{}/", p.text).starts_with(&dir_slash))
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Re-includes `rel` at the end when a pattern excludes it.
    fn always_send(&mut self, rel: &str) {
        if !self.is_excluded(rel) {
            return;
        }
        let text = clean(rel);
        // A literal path: escape what would otherwise be glob syntax.
        let escaped: String = text
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
                escape.then_some('\\').into_iter().chain([c])
            })
            .collect();
        if let Ok(matcher) = compile_glob(&escaped) {
            self.patterns.push(Pattern {
                text,
                reinclude: true,
                matcher,
            });
        }
    }
}

impl Pattern {
    fn matches_or_parent_matches(&self, rel: &str) -> bool {
        if self.matcher.is_match(rel) {
            return true;
        }
        rel.match_indices('/')
            .any(|(at, _)| self.matcher.is_match(&rel[..at]))
    }
}

/// Translates a cleaned Docker pattern into globset syntax and compiles it.
fn compile(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    let mut glob = String::with_capacity(pattern.len() + 4);
    // Docker reads a leading `**` glued to a name as "any path ending with that name".
    if let Some(rest) = pattern.strip_prefix("**")
        && !rest.is_empty()
        && !rest.starts_with('/')
    {
        glob.push_str("**/*");
        push_escaping_braces(&mut glob, rest);
    } else {
        push_escaping_braces(&mut glob, pattern);
    }
    compile_glob(&glob)
}

/// Go's globs have no `{a,b}` alternation: braces are literal there.
fn push_escaping_braces(glob: &mut String, pattern: &str) {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                glob.push('\\');
                if let Some(next) = chars.next() {
                    glob.push(next);
                }
            }
            '{' | '}' => {
                glob.push('\\');
                glob.push(c);
            }
            c => glob.push(c),
        }
    }
}

fn compile_glob(glob: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher())
}

/// Go's `filepath.Clean` on a `/`-separated path: no empty or `.` parts, `..` folded into its
/// parent where there is one, no trailing `/`; an empty result is `.`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path keeps its leading `..`s.
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Dockerignore {
        Dockerignore::parse(text, Path::new(".dockerignore")).unwrap()
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let rules = ignore("# a comment\n\n   \n#secret.txt\nlog.txt\n");
        assert_eq!(rules.patterns.len(), 1);
        assert!(rules.is_excluded("log.txt"));
        assert!(!rules.is_excluded("#secret.txt"));
        assert!(!rules.is_excluded("a comment"));
    }

    #[test]
    fn patterns_are_relative_to_the_root_and_cleaned() {
        let rules = ignore("/secret.txt\n./build//out/\nsrc/../tmp\n");
        assert!(rules.is_excluded("secret.txt"));
        assert!(rules.is_excluded("build/out/a.o"));
        assert!(rules.is_excluded("tmp"));
        // Relative to the root, not to any folder: `secret.txt` is not `**/secret.txt`.
        assert!(!rules.is_excluded("sub/secret.txt"));
        assert!(!rules.is_excluded("src"));
    }

    #[test]
    fn clean_works_like_go_filepath_clean() {
        assert_eq!(clean("a//b/./c/"), "a/b/c");
        assert_eq!(clean("./a"), "a");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn star_and_question_mark_stay_within_one_folder() {
        let rules = ignore("*.log\nv?.txt\n");
        assert!(rules.is_excluded("app.log"));
        assert!(!rules.is_excluded("logs/app.log"));
        assert!(rules.is_excluded("v1.txt"));
        assert!(!rules.is_excluded("v10.txt"));
        assert!(!rules.is_excluded("v/.txt"));

        let rules = ignore("*/*.tmp\n");
        assert!(rules.is_excluded("a/x.tmp"));
        assert!(!rules.is_excluded("a/b/x.tmp"));
        assert!(!rules.is_excluded("x.tmp"));
    }

    #[test]
    fn double_star_matches_any_number_of_folders() {
        let rules = ignore("**/*.log\n");
        assert!(rules.is_excluded("app.log"));
        assert!(rules.is_excluded("a/b/c/app.log"));
        assert!(!rules.is_excluded("app.txt"));

        let rules = ignore("a/**/z\n");
        assert!(rules.is_excluded("a/z"));
        assert!(rules.is_excluded("a/b/c/z"));
        assert!(!rules.is_excluded("b/z"));

        let rules = ignore("dist/**\n");
        assert!(rules.is_excluded("dist/a/b.js"));

        // Docker's quirk: a leading `**` glued to a name matches that suffix anywhere.
        let rules = ignore("**.bak\n");
        assert!(rules.is_excluded("x.bak"));
        assert!(rules.is_excluded("deep/down/x.bak"));
        assert!(!rules.is_excluded("x.bak.txt"));
    }

    #[test]
    fn character_classes_and_escapes_work() {
        let rules = ignore("file[0-9].txt\nliteral\\*.txt\n");
        assert!(rules.is_excluded("file3.txt"));
        assert!(!rules.is_excluded("filex.txt"));
        assert!(rules.is_excluded("literal*.txt"));
        assert!(!rules.is_excluded("literalX.txt"));
    }

    #[test]
    fn braces_are_literal_as_in_go() {
        let rules = ignore("{a,b}.txt\n");
        assert!(rules.is_excluded("{a,b}.txt"));
        assert!(!rules.is_excluded("a.txt"));
    }

    #[test]
    fn pattern_matching_a_folder_excludes_everything_under_it() {
        let rules = ignore("node_modules\n");
        assert!(rules.is_excluded("node_modules"));
        assert!(rules.is_excluded("node_modules/left-pad/index.js"));
        assert!(!rules.is_excluded("src/node_modules/x.js"));

        let rules = ignore("*/cache\n");
        assert!(rules.is_excluded("app/cache/a/b"));
    }

    #[test]
    fn exclamation_reincludes_and_the_last_match_wins() {
        let rules = ignore("*.md\n!README.md\n");
        assert!(rules.is_excluded("CHANGES.md"));
        assert!(!rules.is_excluded("README.md"));

        let rules = ignore("!README.md\n*.md\n");
        assert!(rules.is_excluded("README.md"));

        let rules = ignore("docs\n!docs/keep.md\n");
        assert!(rules.is_excluded("docs/other.md"));
        assert!(!rules.is_excluded("docs/keep.md"));

        let rules = ignore("docs\n!docs/keep.md\ndocs/keep*\n");
        assert!(rules.is_excluded("docs/keep.md"));
    }

    #[test]
    fn bare_exclamation_is_an_error_naming_the_line() {
        let err = Dockerignore::parse("a\n!\n", Path::new("/ctx/.dockerignore")).unwrap_err();
        assert!(matches!(
            err,
            DockerignoreError::BareExclamation { line: 2, .. }
        ));
        assert!(err.to_string().contains("/ctx/.dockerignore:2"), "{err}");
    }

    #[test]
    fn invalid_glob_is_an_error_naming_the_line_and_pattern() {
        let err = Dockerignore::parse("ok\nbad[\n", Path::new("/ctx/.dockerignore")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/ctx/.dockerignore:2"), "{text}");
        assert!(text.contains("`bad[`"), "{text}");
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DOCKERIGNORE_FILE),
            "*\n.dockerignore\ndocker\n",
        )
        .unwrap();

        let rules = Dockerignore::load(dir.path(), "docker/Dockerfile").unwrap();
        assert!(!rules.is_excluded(".dockerignore"));
        assert!(!rules.is_excluded("docker/Dockerfile"));
        assert!(rules.is_excluded("docker/other"));
        assert!(rules.is_excluded("src/main.rs"));
        // The walker must enter `docker/` to find the Dockerfile.
        assert!(rules.may_reinclude_under("docker"));
        assert!(!rules.may_reinclude_under("src"));
    }

    #[test]
    fn missing_dockerignore_excludes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rules = Dockerignore::load(dir.path(), "Dockerfile").unwrap();
        assert!(rules.is_empty());
        assert!(!rules.is_excluded("anything/at/all"));
    }

    #[test]
    fn excluded_folder_is_pruned_unless_a_reinclude_starts_with_it() {
        let rules = ignore("build\n!build/keep.txt\n");
        assert!(rules.may_reinclude_under("build"));
        let rules = ignore("build\n!**/keep.txt\n");
        assert!(!rules.may_reinclude_under("build"));
        let rules = ignore("build\n");
        assert!(!rules.may_reinclude_under("build"));
    }
}
