//! The paths a config names, resolved against the config file's folder lexically (without
//! touching the file system), so `..` and `.` are settled before anything is checked.

use std::path::{Component, Path, PathBuf};

/// `path` with `.` and `..` resolved lexically, without touching the file system; `..` at the
/// root stays at the root.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    // How many `Normal` components `out` ends with, the ones a `..` can take back.
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => out.push(component),
            Component::Normal(_) => {
                out.push(component);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            Component::ParentDir if out.has_root() => {}
            Component::ParentDir => out.push(component),
        }
    }
    out
}

/// A relative path, normalised, if it stays inside the folder it is relative to.
pub(crate) fn inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) | Component::RootDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/.")), PathBuf::from("/a/b"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(
            normalize(Path::new("../a/../../b")),
            PathBuf::from("../../b")
        );
    }

    #[test]
    fn inside_rejects_paths_that_leave_the_folder() {
        assert_eq!(
            inside(Path::new("./a/../Dockerfile")),
            Some("Dockerfile".into())
        );
        assert_eq!(
            inside(Path::new("docker/Dockerfile")),
            Some("docker/Dockerfile".into())
        );
        assert_eq!(inside(Path::new("../Dockerfile")), None);
        assert_eq!(inside(Path::new("/etc/Dockerfile")), None);
        assert_eq!(inside(Path::new(".")), None);
    }
}
