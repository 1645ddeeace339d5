use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::build::context::tests::{hash, sample_context, tar_of, tar_paths, write};
use crate::build::context::{Context, ContextError, Stage};
use crate::build::hash::ContextHasher;

use super::*;
use crate::build::context::tests::Hooks;

/// Runs before each file of the context is opened for the tar.
static BEFORE_FILE: Hooks = Hooks::new();

pub(in crate::build) fn before_file(root: &Path, path: &Path) {
    BEFORE_FILE.run(root, path);
}

/// The context at `dir`, collected and hashed.
fn hashed(dir: &Path) -> (Context, ContextHash) {
    let context = Context::collect(dir, Path::new("Dockerfile")).unwrap();
    let hash = ContextHasher::new().hash(&context).unwrap();
    (context, hash)
}

/// Overwrites the start of `file` (under `dir`) with `bytes`, keeping its inode, just before
/// the tar opens it.
fn rewrite_in_place_when_reached(dir: &Path, file: &'static str, bytes: &'static [u8]) {
    let root = dir.to_path_buf();
    BEFORE_FILE.on(dir, move |path| {
        if path == Path::new(file) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(root.join(path))
                .unwrap()
                .write_all(bytes)
                .unwrap();
        }
    });
}

fn assert_changed(err: &ContextError, file: &str, details: &[&str]) {
    let ContextError::Changed {
        path,
        stage,
        detail: said,
    } = err
    else {
        panic!("expected a changed context, got {err:?}");
    };
    assert!(path.ends_with(file), "{err}");
    assert_eq!(*stage, Stage::Sent, "{err}");
    assert!(details.contains(said), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the context changed while it was being sent: ") && text.contains(file),
        "{text}"
    );
}

#[test]
fn file_rewritten_after_hashing_fails_the_tar_naming_it() {
    let dir = sample_context();
    let (context, hash) = hashed(dir.path());
    write(dir.path(), "src/main.rs", "a longer body than before\n");
    let err = write_tar(&context, &hash, &mut Vec::new()).unwrap_err();
    assert_changed(&err, "src/main.rs", &["changed size"]);
    assert!(err.hint().is_some());
}

#[test]
fn file_rewritten_in_place_during_the_send_fails_the_tar() {
    let dir = sample_context();
    let (context, hash) = hashed(dir.path());
    // Same length, same inode, written once the tar is under way (after util.rs went out).
    rewrite_in_place_when_reached(dir.path(), "src/main.rs", b"fn nope() {}\n");
    let mut out = Vec::new();
    let err = write_tar(&context, &hash, &mut out).unwrap_err();
    // Within one tick of the filesystem's clock the stat may not move; the digest still does.
    assert_changed(
        &err,
        "src/main.rs",
        &["was modified", "no longer has the content that was hashed"],
    );
    // The part written before holds util.rs but no end-of-archive marker.
    assert!(
        out.windows(13).any(|w| w == b"pub fn f() {}"),
        "the send was under way"
    );
    assert!(
        !out.ends_with(&[0u8; 1024]),
        "a cut tar must not look whole"
    );
}

#[test]
fn settled_file_rewritten_in_place_during_the_send_fails_by_its_identity() {
    use std::os::unix::fs::MetadataExt;
    let dir = sample_context();
    let main = dir.path().join("src/main.rs");
    // Fresh files are within the racy window: their bytes are hashed again on the send.
    let (context, hash) = hashed(dir.path());
    let index = |context: &Context| {
        (context.entries.iter())
            .position(|e| e.path == Path::new("src/main.rs"))
            .unwrap()
    };
    assert!(!hash.settled[index(&context)]);

    // Once older than a 50 ms window, the file is settled: only its identity is checked.
    let window = std::time::Duration::from_millis(50);
    let ctime = || {
        let meta = std::fs::metadata(&main).unwrap();
        std::time::UNIX_EPOCH
            + std::time::Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::SystemTime::now() < ctime() + window * 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock does not move"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let hash = ContextHasher::new()
        .racy_window(window)
        .hash(&context)
        .unwrap();
    assert!(hash.settled[index(&context)]);

    // Same length, same inode, written as the tar reaches it: the write moved its ctime.
    rewrite_in_place_when_reached(dir.path(), "src/main.rs", b"fn nope() {}\n");
    let err = write_tar(&context, &hash, &mut Vec::new()).unwrap_err();
    assert_changed(&err, "src/main.rs", &["was modified"]);
}

#[test]
fn file_swapped_for_a_symlink_is_not_followed() {
    let dir = sample_context();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", "TOP-SECRET-VALUE\n");
    let (context, hash) = hashed(dir.path());

    std::fs::remove_file(dir.path().join("src/main.rs")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        dir.path().join("src/main.rs"),
    )
    .unwrap();
    let mut out = Vec::new();
    let err = write_tar(&context, &hash, &mut out).unwrap_err();
    assert_changed(&err, "src/main.rs", &["was replaced by a symlink"]);
    assert!(
        !out.windows(10).any(|w| w == b"TOP-SECRET"),
        "the link was followed"
    );
}

#[test]
fn folder_swapped_for_a_symlink_is_not_followed() {
    let dir = sample_context();
    let outside = tempfile::tempdir().unwrap();
    // The same name and length as the real file, elsewhere.
    write(outside.path(), "util.rs", "SECRET f() {}\n");
    let (context, hash) = hashed(dir.path());

    std::fs::rename(dir.path().join("src/lib"), dir.path().join("lib-moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("src/lib")).unwrap();
    let mut out = Vec::new();
    let err = write_tar(&context, &hash, &mut out).unwrap_err();
    assert_changed(&err, "src/lib/util.rs", &["was replaced by another file"]);
    assert!(
        !out.windows(6).any(|w| w == b"SECRET"),
        "the link was followed"
    );
}

#[test]
fn symlinks_are_sent_as_links_with_the_hashed_target() {
    let dir = sample_context();
    let (context, hash) = hashed(dir.path());
    let mut out = Vec::new();
    write_tar(&context, &hash, &mut out).unwrap();
    let mut archive = tar::Archive::new(out.as_slice());
    let link = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap() == Path::new("main-link"))
        .unwrap();
    assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
    assert_eq!(
        link.link_name().unwrap().as_deref(),
        Some(Path::new("src/main.rs"))
    );
    assert_eq!(link.header().size().unwrap(), 0);
}

/// A context whose tar is several times what the body may hold at once.
fn large_context() -> tempfile::TempDir {
    let dir = sample_context();
    let len = (SEND_QUEUE_CHUNKS + 2) * SEND_CHUNK_LEN * 3 + 12_345;
    let big: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), big).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_tar_streams_through_the_body_in_bounded_chunks() {
    use futures_util::StreamExt;

    let dir = large_context();
    let (context, hash) = hashed(dir.path());
    let mut whole = Vec::new();
    write_tar(&context, &hash, &mut whole).unwrap();
    assert!(whole.len() > (SEND_QUEUE_CHUNKS + 2) * SEND_CHUNK_LEN * 3);

    let (mut body, chunks) = TarBody::channel();
    let packer = tokio::task::spawn_blocking(move || {
        write_tar(&context, &hash, &mut body).unwrap();
        body.finish().unwrap();
    });
    let chunks: Vec<_> = chunks.map(Result::unwrap).collect().await;
    packer.await.unwrap();
    assert!(chunks.iter().all(|c| c.len() <= SEND_CHUNK_LEN));
    assert!(chunks.len() > SEND_QUEUE_CHUNKS * 3, "{}", chunks.len());
    assert_eq!(chunks.concat(), whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_file_ends_the_body_with_an_error_not_a_clean_end() {
    use futures_util::StreamExt;

    let dir = large_context();
    let (context, hash) = hashed(dir.path());
    write(dir.path(), "src/main.rs", "a longer body than before\n");
    let (mut body, chunks) = TarBody::channel();
    let packer = tokio::task::spawn_blocking(move || match write_tar(&context, &hash, &mut body) {
        Ok(_) => panic!("the tar of a changed context was written"),
        Err(e) => body.abort(&e),
    });
    let items: Vec<_> = chunks.collect().await;
    packer.await.unwrap();
    let last = items.last().expect("the body carries the failure");
    let err = last.as_ref().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the context changed while it was being sent"),
        "{err}"
    );
    let sent: Vec<u8> = items[..items.len() - 1]
        .iter()
        .flat_map(|c| c.as_ref().unwrap().to_vec())
        .collect();
    assert!(
        !sent.ends_with(&[0u8; 1024]),
        "a cut tar must not look whole"
    );
}

#[test]
fn ignored_files_are_in_neither_the_hash_nor_the_tar() {
    let dir = sample_context();
    let before = hash(dir.path());
    write(dir.path(), "secret.env", "TOKEN=2\n");
    write(dir.path(), "target/debug/other.bin", "new");
    assert_eq!(hash(dir.path()), before);

    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let tar = tar_of(&context).unwrap();
    let names: BTreeSet<_> = tar_paths(&tar).into_iter().map(|t| t.0).collect();
    assert!(!names.contains("secret.env"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("target")), "{names:?}");
    assert!(names.contains("src/lib/util.rs"), "{names:?}");
}

#[test]
fn tar_is_deterministic_with_zero_mtime_and_owner_and_modes_kept() {
    let dir = sample_context();
    std::fs::set_permissions(
        dir.path().join("src/main.rs"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
    let first = tar_of(&context).unwrap();
    let again = tar_of(&Context::collect(dir.path(), Path::new("Dockerfile")).unwrap()).unwrap();
    assert_eq!(first, again);

    let entries = tar_paths(&first);
    assert!(entries.iter().all(|e| e.3 == 0 && e.4 == 0), "{entries:?}");
    let main = entries.iter().find(|e| e.0 == "src/main.rs").unwrap();
    assert_eq!(main.2, 0o751);
    let link = entries.iter().find(|e| e.0 == "main-link").unwrap();
    assert_eq!(link.1, tar::EntryType::Symlink);
    let src = entries.iter().find(|e| e.0 == "src").unwrap();
    assert_eq!(src.1, tar::EntryType::Directory);

    let mut archive = tar::Archive::new(first.as_slice());
    let mut util = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap() == Path::new("src/lib/util.rs"))
        .unwrap();
    let mut text = String::new();
    util.read_to_string(&mut text).unwrap();
    assert_eq!(text, "pub fn f() {}\n");
}
