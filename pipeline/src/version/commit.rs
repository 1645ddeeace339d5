//! A commit message read as a Conventional Commit (with the `git-conventional` crate): its
//! type, scope, whether it breaks, the bump it asks for, and a `Release-As` footer.
//!
//! A message that is not a Conventional Commit (a merge message, "WIP") is kept, asks for no
//! bump and is listed under "Other changes". Its `Release-As:` line still counts: forcing a
//! version should not depend on the header's spelling.

use git_conventional::Type;
use semver::Version;
use serde::Serialize;

use super::bump::Bump;

/// The footer that forces a module's next version.
pub const RELEASE_AS: &str = "Release-As";

/// One commit that touched a module's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub sha: String,
    pub short: String,
    /// The message's first line.
    pub summary: String,
    /// `None` when the message is not a Conventional Commit.
    pub conventional: Option<Conventional>,
    /// A `Release-As: x.y.z` footer's version.
    pub release_as: Option<Version>,
    pub bump: Bump,
}

/// The parts of a Conventional Commit header shipit uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conventional {
    /// Lowercase: `feat`, `fix`, `perf`, `docs`, ...
    #[serde(rename = "type")]
    pub type_: String,
    pub scope: Option<String>,
    pub description: String,
    /// `!` after the type, or a `BREAKING CHANGE:` footer.
    pub breaking: bool,
}

/// A `Release-As` value that is not a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReleaseAs {
    pub value: String,
    pub problem: String,
}

impl Commit {
    /// Reads the commit `sha` with the full `message`.
    pub fn parse(sha: &str, message: &str) -> Result<Commit, BadReleaseAs> {
        let message = message.trim();
        let summary = message.lines().next().unwrap_or("").trim().to_string();
        let short = sha.chars().take(crate::git::SHORT_SHA_LEN).collect();
        let (conventional, release_as) = match git_conventional::Commit::parse(message) {
            Ok(parsed) => {
                let release_as = parsed
                    .footers()
                    .iter()
                    .find(|f| f.token().as_str().eq_ignore_ascii_case(RELEASE_AS))
                    .map(|f| f.value().trim().to_string());
                let conventional = Conventional {
                    type_: parsed.type_().as_str().to_ascii_lowercase(),
                    scope: parsed.scope().map(|s| s.as_str().to_string()),
                    description: parsed.description().trim().to_string(),
                    breaking: parsed.breaking(),
                };
                (Some(conventional), release_as)
            }
            Err(_) => (None, release_as_line(message)),
        };
        let release_as = release_as
            .map(|value| {
                Version::parse(&value).map_err(|e| BadReleaseAs {
                    value: value.clone(),
                    problem: e.to_string(),
                })
            })
            .transpose()?;
        let bump = conventional.as_ref().map_or(Bump::None, Conventional::bump);
        Ok(Commit {
            sha: sha.to_string(),
            short,
            summary,
            conventional,
            release_as,
            bump,
        })
    }

    /// The changelog's words for this commit: the description, after its scope in bold.
    pub fn entry(&self) -> String {
        match &self.conventional {
            Some(c) => match &c.scope {
                Some(scope) => format!("**{scope}:** {}", c.description),
                None => c.description.clone(),
            },
            None => self.summary.clone(),
        }
    }
}

impl Conventional {
    /// `!` or `BREAKING CHANGE:` is major, `feat` minor, `fix` and `perf` patch; other types
    /// (docs, chore, refactor, test, ...) ask for nothing.
    pub fn bump(&self) -> Bump {
        let type_ = Type::new_unchecked(&self.type_);
        if self.breaking {
            Bump::Major
        } else if type_ == Type::FEAT {
            Bump::Minor
        } else if type_ == Type::FIX || type_ == Type::PERF {
            Bump::Patch
        } else {
            Bump::None
        }
    }
}

/// The value of a `Release-As:` line in a message that is not a Conventional Commit.
fn release_as_line(message: &str) -> Option<String> {
    message.lines().skip(1).find_map(|line| {
        let (token, value) = line.split_once(':')?;
        token
            .trim()
            .eq_ignore_ascii_case(RELEASE_AS)
            .then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn parse(message: &str) -> Commit {
        Commit::parse(SHA, message).expect("parses")
    }

    #[test]
    fn feat_is_minor_fix_and_perf_are_patch_others_none() {
        assert_eq!(parse("feat: add a source").bump, Bump::Minor);
        assert_eq!(parse("feat(sources): add a source").bump, Bump::Minor);
        assert_eq!(parse("fix: handle timeouts").bump, Bump::Patch);
        assert_eq!(parse("perf(core): cache lookups").bump, Bump::Patch);
        assert_eq!(parse("docs: explain").bump, Bump::None);
        assert_eq!(parse("chore: tidy").bump, Bump::None);
        assert_eq!(parse("FEAT: shouting").bump, Bump::Minor);
    }

    #[test]
    fn bang_or_breaking_change_footer_is_major() {
        assert_eq!(parse("feat!: drop v1").bump, Bump::Major);
        assert_eq!(parse("refactor(core)!: rename").bump, Bump::Major);
        let footer = parse("fix: change the wire format\n\nBREAKING CHANGE: v1 clients break");
        assert_eq!(footer.bump, Bump::Major);
        assert!(footer.conventional.unwrap().breaking);
        let arrow = parse("fix: x\n\nBREAKING-CHANGE: y");
        assert_eq!(arrow.bump, Bump::Major);
    }

    #[test]
    fn a_message_that_is_not_conventional_asks_for_nothing() {
        let merge = parse("Merge branch 'feature' into main");
        assert_eq!(merge.conventional, None);
        assert_eq!(merge.bump, Bump::None);
        assert_eq!(merge.entry(), "Merge branch 'feature' into main");
        assert_eq!(parse("feature: not a type the spec knows").bump, Bump::None);
    }

    #[test]
    fn release_as_footer_forces_a_version() {
        let commit = parse("chore: release 1.0\n\nRelease-As: 1.0.0");
        assert_eq!(commit.release_as, Some(Version::new(1, 0, 0)));
        let loose = parse("Prepare 2.0\n\nrelease-as: 2.0.0");
        assert_eq!(loose.release_as, Some(Version::new(2, 0, 0)));
        let bad = Commit::parse(SHA, "chore: x\n\nRelease-As: one").unwrap_err();
        assert_eq!(bad.value, "one");
    }

    #[test]
    fn summary_short_sha_and_entry() {
        let commit = parse("feat(sources): add postgres\n\nLonger text.\n");
        assert_eq!(commit.summary, "feat(sources): add postgres");
        assert_eq!(commit.short, &SHA[..12]);
        assert_eq!(commit.entry(), "**sources:** add postgres");
        assert_eq!(parse("fix: retry").entry(), "retry");
    }
}
