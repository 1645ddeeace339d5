use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::build::context::tests::{hash, opens, sample_context, write};
use crate::build::context::{Context, Stage};

use super::*;

#[test]
fn hash_is_stable_across_runs_and_copies() {
    let dir = sample_context();
    let first = hash(dir.path());
    assert_eq!(first.len(), 64);
    assert_eq!(hash(dir.path()), first);
    // Same content elsewhere, created at other times: same hash.
    assert_eq!(hash(sample_context().path()), first);
}

#[test]
fn hash_changes_with_content_mode_name_link_target_or_dockerfile() {
    let dir = sample_context();
    let base = hash(dir.path());

    write(dir.path(), "src/main.rs", "fn main() { }\n");
    let content = hash(dir.path());
    assert_ne!(content, base);

    std::fs::set_permissions(
        dir.path().join("src/main.rs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mode = hash(dir.path());
    assert_ne!(mode, content);

    std::fs::rename(dir.path().join("src/lib"), dir.path().join("src/lib2")).unwrap();
    let renamed = hash(dir.path());
    assert_ne!(renamed, mode);

    std::fs::remove_file(dir.path().join("main-link")).unwrap();
    std::os::unix::fs::symlink("src/lib2", dir.path().join("main-link")).unwrap();
    let relinked = hash(dir.path());
    assert_ne!(relinked, renamed);

    write(dir.path(), "Other.Dockerfile", "FROM scratch\n");
    let with_other = hash(dir.path());
    let context = Context::collect(dir.path(), Path::new("Other.Dockerfile")).unwrap();
    let other = ContextHasher::new().hash(&context).unwrap().hex;
    assert_ne!(other, with_other);
}

#[test]
fn stat_cache_gives_the_same_hash_and_skips_unchanged_files() {
    let dir = sample_context();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_file = cache_dir.path().join("cache/context.json");
    let hasher = ContextHasher::with_cache(cache_file.clone()).racy_window(Duration::ZERO);
    let plain = hash(dir.path());

    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let cold = hasher.hash(&context).unwrap();
    assert_eq!(cold.hex, plain);
    assert_eq!(cold.stats.files_hashed, 4);
    assert_eq!(cold.stats.files_reused, 0);
    assert!(cache_file.exists());

    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let warm = hasher.hash(&context).unwrap();
    assert_eq!(warm.hex, plain);
    assert_eq!(warm.stats.files_hashed, 0);
    assert_eq!(warm.stats.files_reused, 4);

    // One changed file is read again; the others still come from the cache.
    write(dir.path(), "src/main.rs", "fn main() { println!() }\n");
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let changed = hasher.hash(&context).unwrap();
    assert_eq!(changed.hex, hash(dir.path()));
    assert_ne!(changed.hex, plain);
    assert_eq!(changed.stats.files_hashed, 1);
    assert_eq!(changed.stats.files_reused, 3);
}

/// The files the stat cache at `path` lists, and the inode it is stored in (a rewrite is a
/// rename over it, so a new inode).
fn cached_files(path: &Path) -> (Vec<String>, u64) {
    use std::os::unix::fs::MetadataExt;
    let cache: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let files = cache["files"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    (files, std::fs::metadata(path).unwrap().ino())
}

#[test]
fn stat_cache_is_written_only_when_what_it_holds_changes() {
    let dir = sample_context();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_file = cache_dir.path().join("context.json");
    let hasher = ContextHasher::with_cache(cache_file.clone()).racy_window(Duration::ZERO);
    let hash_now = || {
        let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
        hasher.hash(&context).unwrap()
    };

    hash_now();
    let (files, cold) = cached_files(&cache_file);
    assert_eq!(
        files,
        [
            ".dockerignore",
            "Dockerfile",
            "src/lib/util.rs",
            "src/main.rs"
        ]
    );
    // Unchanged: the same cache, not written again.
    assert_eq!(hash_now().stats.files_reused, 4);
    assert_eq!(cached_files(&cache_file), (files, cold));

    // A file gone: every other one is a hit, but the cache must drop it.
    std::fs::remove_file(dir.path().join("src/lib/util.rs")).unwrap();
    assert_eq!(hash_now().stats.files_hashed, 0);
    let (files, removed) = cached_files(&cache_file);
    assert_eq!(files, [".dockerignore", "Dockerfile", "src/main.rs"]);
    assert_ne!(removed, cold);

    // A file that is a hit but too new to trust again (a racy window wider than its age)
    // leaves the cache.
    let wary = ContextHasher::with_cache(cache_file.clone()).racy_window(Duration::from_secs(3600));
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    assert_eq!(wary.hash(&context).unwrap().stats.files_reused, 3);
    assert_eq!(cached_files(&cache_file).0, Vec::<String>::new());
}

#[test]
fn stat_cache_does_not_trust_files_written_just_now() {
    let dir = sample_context();
    let cache_dir = tempfile::tempdir().unwrap();
    let hasher = ContextHasher::with_cache(cache_dir.path().join("context.json"));

    for _ in 0..2 {
        let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
        let hashed = hasher.hash(&context).unwrap();
        assert_eq!(hashed.stats.files_reused, 0);
    }
}

#[test]
fn damaged_stat_cache_is_ignored() {
    let dir = sample_context();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache_file = cache_dir.path().join("context.json");
    std::fs::write(&cache_file, "{ not json").unwrap();
    let hasher = ContextHasher::with_cache(cache_file).racy_window(Duration::ZERO);

    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let hashed = hasher.hash(&context).unwrap();
    assert_eq!(hashed.hex, hash(dir.path()));
    assert_eq!(hashed.stats.files_hashed, 4);
}

#[test]
fn parallel_workers_give_the_same_hash_as_one() {
    let dir = sample_context();
    for i in 0..50 {
        write(
            dir.path(),
            &format!("many/{i:03}.txt"),
            &format!("file {i}\n"),
        );
    }
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let one = ContextHasher::new().workers(1).hash(&context).unwrap();
    let four = ContextHasher::new().workers(4).hash(&context).unwrap();
    assert_eq!(one.hex, four.hex);
    assert_eq!(one.digests, four.digests);
    assert_eq!(four.stats.files_hashed, 54);
}

/// 10,000 files in 100 folders; the second hash must decide from stats alone.
#[test]
fn unchanged_ten_thousand_files_are_hashed_without_opening_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", "FROM scratch\nCOPY . /\n");
    for folder in 0..100 {
        for file in 0..100 {
            write(
                dir.path(),
                &format!("d{folder:02}/f{file:02}"),
                &format!("{folder}/{file}\n"),
            );
        }
    }
    let cache_dir = tempfile::tempdir().unwrap();
    let hasher = ContextHasher::with_cache(cache_dir.path().join("context.json"))
        .racy_window(Duration::ZERO);

    let before = opens(dir.path());
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let cold = hasher.hash(&context).unwrap();
    assert_eq!(cold.stats.files_hashed, 10_001);
    assert_eq!(
        opens(dir.path()) - before,
        10_001,
        "the cold hash reads every file"
    );

    let before = opens(dir.path());
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let warm = hasher.hash(&context).unwrap();
    assert_eq!(opens(dir.path()), before, "a file was opened");
    assert_eq!(warm.hex, cold.hex);
    assert_eq!(warm.digests, cold.digests);
    assert_eq!(warm.stats.files_hashed, 0);
    assert_eq!(warm.stats.files_reused, 10_001);
}

#[test]
fn file_swapped_after_the_walk_is_refused_by_the_hash() {
    let dir = sample_context();
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    std::fs::remove_file(dir.path().join("src/main.rs")).unwrap();
    std::os::unix::fs::symlink("lib/util.rs", dir.path().join("src/main.rs")).unwrap();
    let err = ContextHasher::new().hash(&context).unwrap_err();
    assert!(
        matches!(
            err,
            ContextError::Changed {
                stage: Stage::Hashed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("src/main.rs"), "{err}");
}
