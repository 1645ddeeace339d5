//! Tests of the walk, and the helpers the hash and tar tests share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::*;
use crate::build::hash::ContextHasher;

/// How many times [`Context::open_file`] opened a file of each context root: the one door
/// through which the hash and the tar read file contents.
static OPENS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

pub(in crate::build) fn count_open(root: &Path) {
    *OPENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(root.to_path_buf())
        .or_default() += 1;
}

/// The files of the context at `root` opened so far.
pub(in crate::build) fn opens(root: &Path) -> usize {
    OPENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(root)
        .copied()
        .unwrap_or(0)
}

/// Test code run at a named point of the build, for one context root only, so tests running
/// side by side do not see each other's hooks.
pub(in crate::build) struct Hooks(Mutex<Vec<Hook>>);

type Hook = (PathBuf, Box<dyn FnMut(&Path) + Send>);

impl Hooks {
    pub(in crate::build) const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// Runs `hook` with the entry's path each time the point is reached for `root`.
    pub(in crate::build) fn on(&self, root: &Path, hook: impl FnMut(&Path) + Send + 'static) {
        self.lock().push((root.to_path_buf(), Box::new(hook)));
    }

    pub(in crate::build) fn run(&self, root: &Path, path: &Path) {
        for (hook_root, hook) in self.lock().iter_mut() {
            if hook_root == root {
                hook(path);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Hook>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(in crate::build) fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

pub(in crate::build) fn sample_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", "FROM scratch\nCOPY . /\n");
    write(dir.path(), "src/main.rs", "fn main() {}\n");
    write(dir.path(), "src/lib/util.rs", "pub fn f() {}\n");
    write(dir.path(), "secret.env", "TOKEN=1\n");
    write(dir.path(), "target/debug/big.bin", "0123456789");
    write(dir.path(), ".dockerignore", "secret.env\ntarget\n");
    std::os::unix::fs::symlink("src/main.rs", dir.path().join("main-link")).unwrap();
    dir
}

pub(in crate::build) fn hash(dir: &Path) -> String {
    let context = Context::collect(dir, Path::new("Dockerfile")).unwrap();
    ContextHasher::new().hash(&context).unwrap().hex
}

/// `context`, hashed, as a tar in memory.
pub(in crate::build) fn tar_of(context: &Context) -> Result<Vec<u8>, ContextError> {
    let hash = ContextHasher::new().hash(context)?;
    let mut tar = Vec::new();
    crate::build::archive::write_tar(context, &hash, &mut tar)?;
    Ok(tar)
}

pub(in crate::build) fn tar_paths(tar: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, u64)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string(),
                h.entry_type(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
            )
        })
        .collect()
}

#[test]
fn collect_walks_sorted_and_leaves_out_ignored_entries() {
    let dir = sample_context();
    let context = Context::collect(dir.path(), Path::new("./Dockerfile")).unwrap();
    let paths: Vec<_> = context
        .entries()
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        paths,
        [
            ".dockerignore",
            "Dockerfile",
            "main-link",
            "src",
            "src/lib",
            "src/lib/util.rs",
            "src/main.rs"
        ]
    );
    assert_eq!(context.dockerfile(), "Dockerfile");
    let link = &context.entries()[2];
    assert_eq!(link.kind, EntryKind::Symlink(PathBuf::from("src/main.rs")));
}

#[test]
fn dockerfile_outside_the_context_is_refused() {
    let dir = sample_context();
    for path in ["../Dockerfile", "/etc/Dockerfile", "."] {
        let err = Context::collect(dir.path(), Path::new(path)).unwrap_err();
        assert!(
            matches!(err, ContextError::DockerfileOutside { .. }),
            "{path}: {err:?}"
        );
    }
}

#[test]
fn missing_context_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Context::collect(&missing, Path::new("Dockerfile")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn excluded_folder_is_not_walked_unless_reincluded_inside() {
    let dir = sample_context();
    write(
        dir.path(),
        ".dockerignore",
        "target\n!target/debug/big.bin\n",
    );
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let paths: Vec<_> = context
        .entries()
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    assert!(
        paths.contains(&"target/debug/big.bin".to_string()),
        "{paths:?}"
    );
    assert!(!paths.contains(&"target".to_string()), "{paths:?}");

    // The tar still unpacks: the file's parents are implied.
    let tar = tar_of(&context).unwrap();
    let out = tempfile::tempdir().unwrap();
    tar::Archive::new(tar.as_slice())
        .unpack(out.path())
        .unwrap();
    assert!(out.path().join("target/debug/big.bin").exists());
}
