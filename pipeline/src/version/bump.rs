//! How far a version moves: none, patch, minor or major, and what that makes of a version.
//!
//! Below 1.0.0 everything moves one place down, as Cargo and npm read 0.x versions: the
//! minor number is the compatibility line, so a breaking change bumps minor (0.3.1 → 0.4.0)
//! and a feature bumps patch (0.3.1 → 0.3.2). A fix bumps patch either way. Only a
//! `Release-As` footer takes a module to 1.0.0.

use semver::{BuildMetadata, Prerelease, Version};
use serde::Serialize;

/// A bump level, ordered: the largest bump among a module's commits wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bump {
    None,
    Patch,
    Minor,
    Major,
}

impl Bump {
    pub fn as_str(self) -> &'static str {
        match self {
            Bump::None => "none",
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        }
    }

    /// The bump that `self` amounts to on `version`: one place down below 1.0.0.
    pub fn effective(self, version: &Version) -> Bump {
        if version.major > 0 {
            return self;
        }
        match self {
            Bump::Major => Bump::Minor,
            Bump::Minor | Bump::Patch => Bump::Patch,
            Bump::None => Bump::None,
        }
    }

    /// The next version after `version` for a change of this level, 0.x rules included.
    ///
    /// A pre-release is released rather than skipped: `1.0.0-rc.1` with a fix becomes
    /// `1.0.0`, and with a breaking change too, since `1.0.0` is already the next major.
    pub fn apply(self, version: &Version) -> Version {
        let v = version;
        let pre = !v.pre.is_empty();
        let (major, minor, patch) = match self.effective(v) {
            Bump::None => return v.clone(),
            Bump::Patch if pre => (v.major, v.minor, v.patch),
            Bump::Patch => (v.major, v.minor, v.patch + 1),
            Bump::Minor if pre && v.patch == 0 => (v.major, v.minor, 0),
            Bump::Minor => (v.major, v.minor + 1, 0),
            Bump::Major if pre && v.patch == 0 && v.minor == 0 => (v.major, 0, 0),
            Bump::Major => (v.major + 1, 0, 0),
        };
        Version {
            major,
            minor,
            patch,
            pre: Prerelease::EMPTY,
            build: BuildMetadata::EMPTY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn from_1_0_0_up_breaking_is_major_feature_minor_fix_patch() {
        assert_eq!(Bump::Major.apply(&v("1.4.2")), v("2.0.0"));
        assert_eq!(Bump::Minor.apply(&v("1.4.2")), v("1.5.0"));
        assert_eq!(Bump::Patch.apply(&v("1.4.2")), v("1.4.3"));
        assert_eq!(Bump::None.apply(&v("1.4.2")), v("1.4.2"));
    }

    #[test]
    fn below_1_0_0_breaking_bumps_minor_and_feature_bumps_patch() {
        assert_eq!(Bump::Major.apply(&v("0.3.1")), v("0.4.0"));
        assert_eq!(Bump::Minor.apply(&v("0.3.1")), v("0.3.2"));
        assert_eq!(Bump::Patch.apply(&v("0.3.1")), v("0.3.2"));
        assert_eq!(Bump::Major.apply(&v("0.0.3")), v("0.1.0"));
        assert_eq!(Bump::Major.effective(&v("0.9.0")), Bump::Minor);
        assert_eq!(Bump::Minor.effective(&v("0.9.0")), Bump::Patch);
        assert_eq!(Bump::Major.effective(&v("1.0.0")), Bump::Major);
    }

    #[test]
    fn a_prerelease_is_released_rather_than_skipped() {
        assert_eq!(Bump::Patch.apply(&v("1.0.0-rc.1")), v("1.0.0"));
        assert_eq!(Bump::Major.apply(&v("2.0.0-beta.2")), v("2.0.0"));
        assert_eq!(Bump::Minor.apply(&v("1.2.0-rc.1")), v("1.2.0"));
        assert_eq!(Bump::Minor.apply(&v("1.2.1-rc.1")), v("1.3.0"));
        assert_eq!(Bump::Patch.apply(&v("1.2.3+build.5")), v("1.2.4"));
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Bump::None < Bump::Patch && Bump::Patch < Bump::Minor && Bump::Minor < Bump::Major);
        assert_eq!(
            [Bump::Patch, Bump::Major, Bump::None].into_iter().max(),
            Some(Bump::Major)
        );
    }
}
