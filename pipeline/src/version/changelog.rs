//! The `CHANGELOG.md` section of a module's release, grouped by type, and putting it on top of
//! the file.
//!
//! The section goes below the file's `# ` title when it has one, so a hand-written title and
//! introduction stay first; everything already in the file follows unchanged.

use jiff::civil::Date;
use semver::Version;

use super::bump::Bump;
use super::commit::Commit;

/// The changelog file in a module's folder.
pub const CHANGELOG_FILE: &str = "CHANGELOG.md";
/// The title a new changelog starts with.
const TITLE: &str = "# Changelog";

/// A dependency whose new version bumped the module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DependencyBump {
    pub name: String,
    pub from: Version,
    pub to: Version,
}

/// The group a commit is listed under.
fn group(commit: &Commit) -> &'static str {
    match (&commit.conventional, commit.bump) {
        (_, Bump::Major) => "Breaking changes",
        (Some(c), _) if c.type_ == "feat" => "Features",
        (Some(c), _) if c.type_ == "fix" => "Bug fixes",
        (Some(c), _) if c.type_ == "perf" => "Performance",
        _ => "Other changes",
    }
}

const GROUPS: [&str; 5] = [
    "Breaking changes",
    "Features",
    "Bug fixes",
    "Performance",
    "Other changes",
];

/// The section for `version`, released on `date`, from `commits` (newest first) and the
/// dependencies that moved.
pub fn section(
    version: &Version,
    date: Date,
    commits: &[Commit],
    dependencies: &[DependencyBump],
) -> String {
    let mut out = format!("## {version} ({date})\n");
    for name in GROUPS {
        let entries: Vec<&Commit> = commits.iter().filter(|c| group(c) == name).collect();
        if entries.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {name}\n\n"));
        for commit in entries {
            out.push_str(&format!("- {} ({})\n", commit.entry(), commit.short));
        }
    }
    if !dependencies.is_empty() {
        out.push_str("\n### Dependencies\n\n");
        for d in dependencies {
            out.push_str(&format!("- {} {} → {}\n", d.name, d.from, d.to));
        }
    }
    out
}

/// `existing` (the file's content, if it exists) with `section` on top, below its title.
pub fn prepend(existing: Option<&str>, section: &str) -> String {
    let Some(existing) = existing.filter(|e| !e.trim().is_empty()) else {
        return format!("{TITLE}\n\n{section}");
    };
    let first_line_end = existing.find('\n').map_or(existing.len(), |i| i + 1);
    let first_line = &existing[..first_line_end];
    if first_line.starts_with("# ") {
        let rest = existing[first_line_end..].trim_start_matches(['\n', '\r']);
        let newline = if first_line.ends_with('\n') { "" } else { "\n" };
        if rest.is_empty() {
            return format!("{first_line}{newline}\n{section}");
        }
        format!("{first_line}{newline}\n{section}\n{rest}")
    } else {
        format!("{section}\n{existing}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha_digit: char, message: &str) -> Commit {
        let sha: String = std::iter::repeat_n(sha_digit, 40).collect();
        Commit::parse(&sha, message).unwrap()
    }

    fn date() -> Date {
        Date::new(2026, 11, 22).unwrap()
    }

    #[test]
    fn section_groups_commits_by_type_in_a_fixed_order() {
        let commits = [
            commit('a', "fix(db): retry on timeout"),
            commit('b', "feat!: drop the v1 API"),
            commit('c', "docs: explain"),
            commit('d', "feat(db): add postgres"),
            commit('e', "perf: cache"),
        ];
        let deps = [DependencyBump {
            name: "sources".into(),
            from: Version::new(0, 2, 0),
            to: Version::new(0, 3, 0),
        }];
        let text = section(&Version::new(2, 0, 0), date(), &commits, &deps);
        assert_eq!(
            text,
            "## 2.0.0 (2026-11-22)\n\
             \n### Breaking changes\n\n- drop the v1 API (bbbbbbbbbbbb)\n\
             \n### Features\n\n- **db:** add postgres (dddddddddddd)\n\
             \n### Bug fixes\n\n- **db:** retry on timeout (aaaaaaaaaaaa)\n\
             \n### Performance\n\n- cache (eeeeeeeeeeee)\n\
             \n### Other changes\n\n- explain (cccccccccccc)\n\
             \n### Dependencies\n\n- sources 0.2.0 → 0.3.0\n"
        );
    }

    #[test]
    fn prepend_starts_a_new_file_with_a_title() {
        let section = "## 0.2.0 (2026-11-22)\n\n### Features\n\n- x (abc)\n";
        assert_eq!(prepend(None, section), format!("# Changelog\n\n{section}"));
    }

    #[test]
    fn prepend_goes_below_the_title_and_keeps_the_rest() {
        let old = "# Changelog of sources\n\n## 0.1.0 (2026-01-01)\n\n- first\n";
        let new = prepend(Some(old), "## 0.2.0 (2026-11-22)\n");
        assert_eq!(
            new,
            "# Changelog of sources\n\n## 0.2.0 (2026-11-22)\n\n## 0.1.0 (2026-01-01)\n\n- first\n"
        );
        let untitled = "## 0.1.0\n";
        assert_eq!(
            prepend(Some(untitled), "## 0.2.0\n"),
            "## 0.2.0\n\n## 0.1.0\n"
        );
    }
}
