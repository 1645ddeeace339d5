//! The project id: what tells this config's containers, image tags and labels apart from
//! every other project's on the same Docker engine.
//!
//! It is the `project` key when the config sets one, so two checkouts of one project can
//! share it on purpose; otherwise a short hash of the state directory and the config file's
//! path, so two checkouts, or one checkout with two state directories, never act on each
//! other's containers. The id ends up in container names, image repositories and label
//! values, so it is held to what all three accept.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::Problem;
use super::locate::KeyPath;

/// The longest `project` a config may set; the id becomes part of container names.
pub const MAX_PROJECT_LEN: usize = 20;
/// How many hex digits of the hash make a derived project id.
pub const PROJECT_ID_HEX_LEN: usize = 8;

/// The id of the project whose state lives in `state_dir` and whose config is `config`
/// (both absolute): the first [`PROJECT_ID_HEX_LEN`] hex digits of their SHA-256. Stable for
/// as long as neither moves.
pub fn derived_project(state_dir: &Path, config: &Path) -> String {
    let mut hash = Sha256::new();
    hash.update(state_dir.as_os_str().as_encoded_bytes());
    // A separator that no path holds, so ("/a", "b/c") and ("/a/b", "c") differ.
    hash.update([0u8]);
    hash.update(config.as_os_str().as_encoded_bytes());
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..PROJECT_ID_HEX_LEN].to_string()
}

/// A `project` key's value: lowercase letters and digits, with single `-` between them,
/// at most [`MAX_PROJECT_LEN`] characters (what a Docker image repository accepts).
pub(crate) fn check(value: &str, path: &KeyPath) -> Result<(), Problem> {
    let valid = !value.is_empty()
        && value.len() <= MAX_PROJECT_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if valid {
        return Ok(());
    }
    Err(Problem::value(
        path.clone(),
        format!(
            "invalid project {value:?}: expected lowercase letters and digits, with single - \
             between them, at most {MAX_PROJECT_LEN} characters"
        ),
    )
    .with_hint(
        "the project id becomes part of container names, image tags and labels; leave `project` \
         out to derive one from the state directory and the config path",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_project_is_stable_and_differs_by_state_dir_and_config() {
        let one = derived_project(Path::new("/p/.shipit"), Path::new("/p/shipit.toml"));
        assert_eq!(
            one,
            derived_project(Path::new("/p/.shipit"), Path::new("/p/shipit.toml"))
        );
        assert_eq!(one.len(), PROJECT_ID_HEX_LEN);
        assert!(
            one.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(
            one,
            derived_project(Path::new("/p/.other"), Path::new("/p/shipit.toml"))
        );
        assert_ne!(
            one,
            derived_project(Path::new("/p/.shipit"), Path::new("/q/shipit.toml"))
        );
        assert_ne!(
            derived_project(Path::new("/a"), Path::new("b/c")),
            derived_project(Path::new("/a/b"), Path::new("c"))
        );
    }

    #[test]
    fn project_is_lowercase_words_joined_by_single_dashes() {
        let path = KeyPath::root().key("project");
        for good in [
            "shop",
            "shop-2",
            "9lives",
            "a",
            &"a".repeat(MAX_PROJECT_LEN),
        ] {
            assert!(check(good, &path).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_PROJECT_LEN + 1);
        for bad in [
            "", "Shop", "shop_2", "-shop", "shop-", "a--b", "a.b", "a b", &long,
        ] {
            assert!(check(bad, &path).is_err(), "{bad}");
        }
    }
}
