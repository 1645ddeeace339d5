//! A module's tag: its format (`<name>-v<version>` by default), the tag of a version, and
//! the version of a tag.
//!
//! A tag belongs to a module when it has the format's text before and after `<version>`,
//! and what stands between starts with a digit. So `sources-vendor-v1.0.0` is not a tag of
//! `sources`, while `sources-v1.2` is, and is reported as one that does not parse rather
//! than silently skipped.

use semver::Version;

/// The placeholder for the module's name.
pub const NAME: &str = "<name>";
/// The placeholder for the version; a format has it exactly once.
pub const VERSION: &str = "<version>";

/// Why a tag format is refused, in words that follow "invalid tag format ...: ".
pub fn check_format(format: &str) -> Result<(), String> {
    match format.matches(VERSION).count() {
        1 => {}
        0 => return Err(format!("expected `{VERSION}` in it")),
        _ => return Err(format!("expected `{VERSION}` only once")),
    }
    let sample = format.replace(NAME, "name").replace(VERSION, "1.0.0");
    if sample.contains(['<', '>']) {
        return Err(format!(
            "unknown placeholder: only `{NAME}` and `{VERSION}` are replaced"
        ));
    }
    check_ref_name(&sample)
}

/// The rules of `git check-ref-format` that a tag name can break.
fn check_ref_name(name: &str) -> Result<(), String> {
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!("{c:?} is not allowed in a git tag"));
    }
    for bad in ["..", "@{", "//", "/."] {
        if name.contains(bad) {
            return Err(format!("{bad:?} is not allowed in a git tag"));
        }
    }
    if name.starts_with(['-', '/', '.']) || name.ends_with(['/', '.']) || name.ends_with(".lock") {
        return Err("a git tag cannot start with -, / or . nor end with /, . or .lock".into());
    }
    Ok(())
}

/// A module's tag format with its name filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFormat {
    prefix: String,
    suffix: String,
}

impl TagFormat {
    /// The format of module `name`; `format` passed [`check_format`].
    pub fn new(format: &str, name: &str) -> TagFormat {
        let format = format.replace(NAME, name);
        let (prefix, suffix) = format.split_once(VERSION).unwrap_or((&format, ""));
        TagFormat {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        }
    }

    /// The tag of `version`.
    pub fn render(&self, version: &Version) -> String {
        format!("{}{version}{}", self.prefix, self.suffix)
    }

    /// A `git tag --list` pattern that matches every tag of the format (and maybe others).
    /// Tag names cannot hold `*`, `?` or `[`, so the fixed parts need no escaping.
    pub fn pattern(&self) -> String {
        format!("{}*{}", self.prefix, self.suffix)
    }

    /// `None` when `tag` is not of this format; otherwise its version, or why it is not one.
    pub fn parse(&self, tag: &str) -> Option<Result<Version, semver::Error>> {
        let middle = tag.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if !middle.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        Some(Version::parse(middle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format_renders_and_parses_its_tags() {
        let format = TagFormat::new("<name>-v<version>", "sources");
        let version = Version::new(1, 2, 3);
        assert_eq!(format.render(&version), "sources-v1.2.3");
        assert_eq!(format.pattern(), "sources-v*");
        assert_eq!(format.parse("sources-v1.2.3").unwrap().unwrap(), version);
        assert_eq!(
            format.parse("sources-v1.0.0-rc.1").unwrap().unwrap(),
            Version::parse("1.0.0-rc.1").unwrap()
        );
    }

    #[test]
    fn tags_of_other_modules_are_not_this_modules() {
        let format = TagFormat::new("<name>-v<version>", "sources");
        assert!(format.parse("sources-vendor-v1.0.0").is_none());
        assert!(format.parse("core-v1.0.0").is_none());
        assert!(format.parse("v1.0.0").is_none());
    }

    #[test]
    fn a_tag_of_the_format_that_is_no_version_is_an_error() {
        let format = TagFormat::new("<name>-v<version>", "sources");
        assert!(format.parse("sources-v1.2").unwrap().is_err());
        assert!(format.parse("sources-v01.2.3").unwrap().is_err());
    }

    #[test]
    fn suffix_and_no_name_are_allowed() {
        let format = TagFormat::new("release/<version>/lib", "core");
        assert_eq!(format.render(&Version::new(2, 0, 0)), "release/2.0.0/lib");
        assert_eq!(
            format.parse("release/2.0.0/lib").unwrap().unwrap(),
            Version::new(2, 0, 0)
        );
        assert!(format.parse("release/2.0.0/app").is_none());
    }

    #[test]
    fn formats_need_one_version_and_a_valid_ref_name() {
        assert!(check_format("<name>-v<version>").is_ok());
        assert!(check_format("v<version>").is_ok());
        assert!(check_format("<name>").unwrap_err().contains("<version>"));
        assert!(check_format("<version>-<version>").is_err());
        assert!(check_format("<name> v<version>").is_err());
        assert!(check_format("<module>-<version>").is_err());
        assert!(check_format("-<version>").is_err());
        assert!(check_format("<version>.lock").is_err());
        assert!(check_format("a..b<version>").is_err());
    }
}
