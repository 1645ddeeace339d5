//! The context hash: one sha256 over a collected [`Context`], and the stat cache that keeps it
//! cheap.
//!
//! An image built from a context with the same hash is the same image, so the build can be
//! skipped. Deciding "reuse" must be fast (50 ms for an unchanged 100 MB context), so a stat
//! cache remembers each file's digest with the stat it had: a file whose stat is unchanged is
//! not opened at all. Files that must be read are read in parallel, one worker per core, each
//! with its own buffer. The per-file digests are kept with the hash, so the tar sent to the
//! engine can prove it holds exactly what was hashed.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::context::{Context, ContextError, Entry, EntryKind, Stage, Stat, read_err};

/// Files are read through a buffer this large, one per hashing worker.
const READ_BUFFER_LEN: usize = 256 * 1024;

/// The stat cache trusts a file's recorded stat only once the file's timestamps are older than
/// this when the context is collected. A write in the same timestamp tick as the recorded stat
/// would leave mtime, ctime and size unchanged; two seconds cover the coarsest common
/// filesystem clocks (FAT's two-second mtime).
pub const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(2);

/// Bumped whenever what goes into the context hash changes, so old hashes never match.
const HASH_FORMAT: &[u8] = b"shipit-context-v1\0";
/// Bumped whenever the stat cache file's meaning changes; other versions are ignored.
/// 2: the stat records the device too.
const CACHE_FORMAT: u32 = 2;

/// The context hash and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextHash {
    /// sha256, 64 lowercase hex digits.
    pub hex: String,
    pub stats: HashStats,
    /// Each entry's content digest, in entry order (zero for folders and symlinks): what the
    /// tar's files are checked against as they are sent.
    pub(super) digests: Vec<[u8; 32]>,
    /// Per entry: a file whose timestamps were older than the racy window when the context
    /// was collected. Its identity (device, inode, size, mtime, ctime) alone proves it
    /// unchanged at the send: any write after the collect moves its ctime past the collect
    /// time. Other files are hashed again as they are sent.
    pub(super) settled: Vec<bool>,
}

/// How much work a hash took; `files_reused` counts digests taken from the stat cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    pub entries: usize,
    pub files_hashed: usize,
    pub files_reused: usize,
    pub bytes_hashed: u64,
    pub bytes_reused: u64,
}

/// Computes context hashes, optionally with a stat cache kept in a file.
///
/// The hash covers, for each entry in walk order: its relative path, its kind, its
/// permission bits, its size, and its content's sha256 (files) or its link target
/// (symlinks); then the Dockerfile path. Owners and timestamps are not covered: the tar
/// sent to the engine does not carry them either.
#[derive(Debug, Clone)]
pub struct ContextHasher {
    cache_file: Option<PathBuf>,
    racy_window: Duration,
    workers: usize,
}

impl Default for ContextHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextHasher {
    /// A hasher that reads every file.
    pub fn new() -> Self {
        Self {
            cache_file: None,
            racy_window: DEFAULT_RACY_WINDOW,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// A hasher that keeps per-file digests in `cache_file` (JSON), reuses a digest while the
    /// file's stat (device, inode, size, mtime, ctime, mode) is unchanged, and writes the
    /// cache back atomically. A missing or unreadable cache only costs time.
    pub fn with_cache(cache_file: PathBuf) -> Self {
        Self {
            cache_file: Some(cache_file),
            ..Self::new()
        }
    }

    /// How old a file's timestamps must be, when the context is collected, before the cache
    /// trusts its stat ([`DEFAULT_RACY_WINDOW`] unless set). Zero suits a filesystem with
    /// nanosecond timestamps and nothing writing into the context while it is hashed.
    pub fn racy_window(mut self, window: Duration) -> Self {
        self.racy_window = window;
        self
    }

    /// How many files are read at once (one per core unless set; at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Hashes the collected context.
    pub fn hash(&self, context: &Context) -> Result<ContextHash, ContextError> {
        let cached = self
            .cache_file
            .as_deref()
            .map(load_cache)
            .unwrap_or_default();
        let trust_before = context
            .collected_at
            .checked_sub(self.racy_window)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut stats = HashStats {
            entries: context.entries.len(),
            ..HashStats::default()
        };

        // Digests from the cache first; what is left is read in parallel.
        let mut digests = vec![None; context.entries.len()];
        let mut hits = vec![false; context.entries.len()];
        let mut to_read = Vec::new();
        for (index, entry) in context.entries.iter().enumerate() {
            if entry.kind != EntryKind::File {
                continue;
            }
            let hit = entry
                .path
                .to_str()
                .and_then(|k| cached.get(k))
                .filter(|c| c.stat == entry.stat)
                .and_then(|c| hex_digest(&c.sha256));
            match hit {
                Some(digest) => {
                    stats.files_reused += 1;
                    stats.bytes_reused += entry.size;
                    digests[index] = Some(digest);
                    hits[index] = true;
                }
                None => {
                    stats.files_hashed += 1;
                    stats.bytes_hashed += entry.size;
                    to_read.push(index);
                }
            }
        }
        for (index, digest) in self.read_digests(context, &to_read)? {
            digests[index] = Some(digest);
        }
        let digests: Vec<[u8; 32]> = digests.into_iter().map(|d| d.unwrap_or_default()).collect();

        let mut hasher = Sha256::new();
        hasher.update(HASH_FORMAT);
        for (entry, digest) in context.entries.iter().zip(&digests) {
            put_bytes(&mut hasher, entry.path.as_os_str().as_bytes());
            let kind: u8 = match entry.kind {
                EntryKind::Dir => b'd',
                EntryKind::File => b'f',
                EntryKind::Symlink(_) => b'l',
            };
            hasher.update([kind]);
            hasher.update(entry.mode.to_le_bytes());
            hasher.update(entry.size.to_le_bytes());
            match &entry.kind {
                EntryKind::Dir => {}
                EntryKind::Symlink(target) => put_bytes(&mut hasher, target.as_os_str().as_bytes()),
                EntryKind::File => hasher.update(digest),
            }
        }
        put_bytes(&mut hasher, context.dockerfile.as_bytes());

        // The cache to keep: every settled file with its stat and digest. When it would hold
        // just what was read (the unchanged case), it is neither rebuilt nor written.
        let settled: Vec<bool> = (context.entries.iter())
            .map(|entry| {
                entry.kind == EntryKind::File
                    && entry.path.to_str().is_some()
                    && entry.stat.mtime_ns < trust_before
                    && entry.stat.ctime_ns < trust_before
            })
            .collect();
        let mut settled_hits = 0;
        let mut same = true;
        for (settled, hit) in settled.iter().zip(&hits) {
            match (settled, hit) {
                (true, true) => settled_hits += 1,
                (true, false) | (false, true) => same = false,
                (false, false) => {}
            }
        }
        // Hits are distinct keys of `cached` with their stat and digest, so as many of them as
        // `cached` has entries means the two hold the same files.
        let same = same && settled_hits == cached.len();
        if let Some(cache_file) = &self.cache_file
            && !same
            && let Err(e) = store_cache(cache_file, fresh_cache(context, &digests, &settled))
        {
            tracing::warn!(
                cache = %cache_file.display(),
                error = %e,
                "could not write the context stat cache; the next hash reads every file again"
            );
        }

        Ok(ContextHash {
            hex: hex::encode(hasher.finalize()),
            stats,
            digests,
            settled,
        })
    }

    /// The digests of the entries at `indices`, read by up to `self.workers` threads that
    /// take the next file from a shared counter. The first error stops the others.
    fn read_digests(
        &self,
        context: &Context,
        indices: &[usize],
    ) -> Result<Vec<(usize, [u8; 32])>, ContextError> {
        let workers = self.workers.min(indices.len());
        if workers <= 1 {
            let mut buffer = vec![0u8; READ_BUFFER_LEN];
            return indices
                .iter()
                .map(|&i| Ok((i, file_digest(context, &context.entries[i], &mut buffer)?)))
                .collect();
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let error: OnceLock<ContextError> = OnceLock::new();
        let done = Mutex::new(Vec::with_capacity(indices.len()));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut buffer = vec![0u8; READ_BUFFER_LEN];
                    let mut mine = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let Some(&index) = indices.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        match file_digest(context, &context.entries[index], &mut buffer) {
                            Ok(digest) => mine.push((index, digest)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                let _ = error.set(e);
                            }
                        }
                    }
                    done.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
                });
            }
        });
        match error.into_inner() {
            Some(e) => Err(e),
            None => Ok(done.into_inner().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

/// The sha256 of `entry`'s content, read from the file the snapshot recorded; a file that
/// changes while it is read is an error, so the cache never pairs a stat with another content.
fn file_digest(
    context: &Context,
    entry: &Entry,
    buffer: &mut [u8],
) -> Result<[u8; 32], ContextError> {
    let mut file = context.open_file(entry, Stage::Hashed)?;
    let mut hasher = Sha256::new();
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(read_err(&context.root.join(&entry.path), source)),
        };
        hasher.update(&buffer[..n]);
    }
    context.check_unchanged(entry, &file, Stage::Hashed)?;
    Ok(hasher.finalize().into())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedFile {
    stat: Stat,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    files: BTreeMap<String, CachedFile>,
}

fn load_cache(path: &Path) -> BTreeMap<String, CachedFile> {
    crate::state_dir::read_hint::<CacheFile>(path, "context stat cache")
        .filter(|cache| cache.format == CACHE_FORMAT)
        .map(|cache| cache.files)
        .unwrap_or_default()
}

/// Replaces the cache file atomically (see [`crate::state_dir::replace_private_file`]).
fn store_cache(path: &Path, files: BTreeMap<String, CachedFile>) -> io::Result<()> {
    let cache = CacheFile {
        format: CACHE_FORMAT,
        files,
    };
    crate::state_dir::replace_private_file(path, |file| Ok(serde_json::to_writer(file, &cache)?))
}

/// The stat cache of `context`: each `settled` file's stat and digest.
fn fresh_cache(
    context: &Context,
    digests: &[[u8; 32]],
    settled: &[bool],
) -> BTreeMap<String, CachedFile> {
    (context.entries.iter().zip(digests).zip(settled))
        .filter(|(_, settled)| **settled)
        .filter_map(|((entry, digest), _)| {
            let key = entry.path.to_str()?.to_string();
            let file = CachedFile {
                stat: entry.stat,
                sha256: hex::encode(digest),
            };
            Some((key, file))
        })
        .collect()
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

/// Length-prefixed, so that no two different sequences of fields hash the same bytes.
fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests;
