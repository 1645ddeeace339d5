//! The build context: the files sent to the engine, their hash, and their tar.
//!
//! [`Context::collect`] walks the context folder in a fixed order (names sorted within each
//! folder, parents before children), keeps symlinks as symlinks, and leaves out what
//! `.dockerignore` excludes. [`ContextHasher`] reduces the collected entries to one sha256,
//! the *context hash*: an image built from a context with the same hash is the same image, so
//! the build can be skipped. [`Context::to_tar`] produces the tar the engine builds from; it is
//! only made when a build actually happens.
//!
//! Deciding "reuse" must be fast (200 ms for an unchanged 100 MB context), so file contents
//! are streamed through the hasher with one reused buffer, and an optional stat cache
//! remembers each file's digest with the stat it had; a file whose stat is unchanged is not
//! read again.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use super::dockerignore::{Dockerignore, DockerignoreError};

/// Files are read through a buffer this large, reused across files.
const READ_BUFFER_LEN: usize = 256 * 1024;

/// The stat cache trusts a file's recorded stat only once the file's timestamps are older than
/// this when the context is collected. A write in the same timestamp tick as the recorded stat
/// would leave mtime, ctime and size unchanged; two seconds cover the coarsest common
/// filesystem clocks (FAT's two-second mtime).
pub const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(2);

/// Bumped whenever what goes into the context hash changes, so old hashes never match.
const HASH_FORMAT: &[u8] = b"shipit-context-v1\0";
/// Bumped whenever the stat cache file's meaning changes; other versions are ignored.
const CACHE_FORMAT: u32 = 1;

/// Why a context could not be collected, hashed or packed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("the build context {path} does not exist or is not a folder")]
    NotAFolder { path: PathBuf, hint: &'static str },

    #[error("the Dockerfile path {path} must be relative to the build context and stay inside it")]
    DockerfileOutside { path: PathBuf },

    #[error(transparent)]
    Dockerignore(#[from] DockerignoreError),

    #[error("could not read {path} while walking the build context: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },

    #[error("could not read {path} from the build context: {source}")]
    Read {
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{path} is a {kind}, which a build context cannot hold")]
    Unsupported { path: PathBuf, kind: &'static str },

    #[error("{path} changed while the build context was being packed")]
    Changed { path: PathBuf },
}

impl ContextError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            ContextError::NotAFolder { hint, .. } | ContextError::Read { hint, .. } => hint,
            ContextError::DockerfileOutside { .. } => {
                "write it relative to the context folder, for example `Dockerfile` or \
                 `docker/Dockerfile`"
            }
            ContextError::Dockerignore(e) => return e.hint(),
            ContextError::Walk { .. } => "fix its permissions, or add it to .dockerignore",
            ContextError::Unsupported { .. } => "add it to .dockerignore",
            ContextError::Changed { .. } => {
                "run the release again once nothing writes into the context"
            }
        };
        Some(hint.to_string())
    }
}

/// What a context entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// A symbolic link, kept as a link with its target as written.
    Symlink(PathBuf),
}

/// One file, folder or symlink sent to the engine.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the context root.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// The permission bits, setuid/setgid/sticky included (`mode & 0o7777`).
    pub mode: u32,
    /// The file's length; 0 for folders and symlinks.
    pub size: u64,
    stat: Stat,
}

/// What the stat cache compares: a file whose stat is unchanged still has the digest it had.
/// ctime is there because no tool can set it: a content change behind a forged mtime still
/// moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    mode: u32,
}

impl Stat {
    fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            mode: meta.mode(),
        }
    }
}

/// Seconds and nanoseconds since the epoch as nanoseconds; i64 lasts until the year 2262.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A collected build context: its root, its Dockerfile and the entries that are sent.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    dockerfile: String,
    entries: Vec<Entry>,
    /// When the walk started: stats recorded after this may not be trusted by the cache yet.
    collected_at: SystemTime,
}

impl Context {
    /// Walks `root` and keeps every entry `.dockerignore` does not exclude. `dockerfile` is
    /// relative to `root`; it is always kept, and it is part of the context hash.
    pub fn collect(root: &Path, dockerfile: &Path) -> Result<Self, ContextError> {
        if !root.is_dir() {
            return Err(ContextError::NotAFolder {
                path: root.to_path_buf(),
                hint: "check the service's `context` in the config",
            });
        }
        let dockerfile =
            relative_slash_path(dockerfile).ok_or_else(|| ContextError::DockerfileOutside {
                path: dockerfile.to_path_buf(),
            })?;
        let ignore = Dockerignore::load(root, &dockerfile)?;
        let collected_at = SystemTime::now();

        let mut entries = Vec::new();
        let mut walk = WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter();
        while let Some(item) = walk.next() {
            let item = item.map_err(|source| ContextError::Walk {
                path: source.path().unwrap_or(root).to_path_buf(),
                source,
            })?;
            let rel = item
                .path()
                .strip_prefix(root)
                .expect("walkdir yields paths under its root")
                .to_path_buf();
            let is_dir = item.file_type().is_dir();
            // Paths the patterns see are `/`-separated; a name that is not UTF-8 is matched
            // through its lossy form, which only an odd pattern could tell apart.
            let rel_text = rel.to_string_lossy();
            if !ignore.is_empty() && ignore.is_excluded(&rel_text) {
                if is_dir && !ignore.may_reinclude_under(&rel_text) {
                    walk.skip_current_dir();
                }
                continue;
            }

            let meta = item.metadata().map_err(|source| ContextError::Walk {
                path: item.path().to_path_buf(),
                source,
            })?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_file() {
                EntryKind::File
            } else if file_type.is_symlink() {
                let target =
                    std::fs::read_link(item.path()).map_err(|source| ContextError::Read {
                        path: item.path().to_path_buf(),
                        hint: "fix its permissions, or add it to .dockerignore",
                        source,
                    })?;
                EntryKind::Symlink(target)
            } else if file_type.is_socket() {
                // Docker leaves sockets out of contexts without a word; so do we.
                continue;
            } else {
                let kind = if file_type.is_fifo() {
                    "named pipe"
                } else if file_type.is_char_device() {
                    "character device"
                } else {
                    "block device"
                };
                return Err(ContextError::Unsupported {
                    path: item.path().to_path_buf(),
                    kind,
                });
            };
            let size = if kind == EntryKind::File {
                meta.len()
            } else {
                0
            };
            entries.push(Entry {
                path: rel,
                kind,
                mode: meta.mode() & 0o7777,
                size,
                stat: Stat::of(&meta),
            });
        }

        Ok(Self {
            root: root.to_path_buf(),
            dockerfile,
            entries,
            collected_at,
        })
    }

    /// The context folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile, relative to the root and `/`-separated.
    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// The entries sent to the engine, in walk order (parents before children).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The total size of the files sent.
    pub fn size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The context as an uncompressed tar, in memory.
    ///
    /// Deterministic: entries in walk order, mtime 0, uid/gid 0, permission bits as on disk.
    /// A file whose size or mtime differs from what was hashed is an error, so an image is
    /// never labelled with the hash of content it was not built from.
    pub fn to_tar(&self) -> Result<Vec<u8>, ContextError> {
        let capacity = self
            .entries
            .iter()
            .map(|e| 1024 + e.size.div_ceil(512) * 512)
            .sum::<u64>()
            + 1024;
        let buffer = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let mut tar = tar::Builder::new(buffer);
        let write_err = |path: &Path, source: io::Error| ContextError::Read {
            path: path.to_path_buf(),
            hint: "the context could not be packed into a tar; check the path's length and name",
            source,
        };

        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mode(entry.mode);
            match &entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    tar.append_data(&mut header, &entry.path, io::empty())
                        .map_err(|e| write_err(&entry.path, e))?;
                }
                EntryKind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, &entry.path, target)
                        .map_err(|e| write_err(&entry.path, e))?;
                }
                EntryKind::File => {
                    let full = self.root.join(&entry.path);
                    let file = open(&full)?;
                    let meta = file.metadata().map_err(|source| read_err(&full, source))?;
                    let now = Stat::of(&meta);
                    if now.size != entry.stat.size || now.mtime_ns != entry.stat.mtime_ns {
                        return Err(ContextError::Changed { path: full });
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(entry.size);
                    tar.append_data(&mut header, &entry.path, file.take(entry.size))
                        .map_err(|e| write_err(&entry.path, e))?;
                }
            }
        }
        tar.into_inner().map_err(|e| write_err(&self.root, e))
    }
}

/// The context hash and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextHash {
    /// sha256, 64 lowercase hex digits.
    pub hex: String,
    pub stats: HashStats,
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
        }
    }

    /// A hasher that keeps per-file digests in `cache_file` (JSON), reuses a digest while the
    /// file's stat (size, mtime, ctime, inode, mode) is unchanged, and writes the cache back
    /// atomically. A missing or unreadable cache only costs time.
    pub fn with_cache(cache_file: PathBuf) -> Self {
        Self {
            cache_file: Some(cache_file),
            racy_window: DEFAULT_RACY_WINDOW,
        }
    }

    /// How old a file's timestamps must be, when the context is collected, before the cache
    /// trusts its stat ([`DEFAULT_RACY_WINDOW`] unless set). Zero suits a filesystem with
    /// nanosecond timestamps and nothing writing into the context while it is hashed.
    pub fn racy_window(mut self, window: Duration) -> Self {
        self.racy_window = window;
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
        let mut fresh = BTreeMap::new();
        let mut stats = HashStats {
            entries: context.entries.len(),
            ..HashStats::default()
        };

        let mut hasher = Sha256::new();
        hasher.update(HASH_FORMAT);
        let mut buffer = vec![0u8; READ_BUFFER_LEN];
        for entry in &context.entries {
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
                EntryKind::File => {
                    let key = entry.path.to_str();
                    let hit = key
                        .and_then(|k| cached.get(k))
                        .filter(|c| c.stat == entry.stat)
                        .and_then(|c| hex_digest(&c.sha256));
                    let digest = match hit {
                        Some(digest) => {
                            stats.files_reused += 1;
                            stats.bytes_reused += entry.size;
                            digest
                        }
                        None => {
                            let digest = file_digest(&context.root.join(&entry.path), &mut buffer)?;
                            stats.files_hashed += 1;
                            stats.bytes_hashed += entry.size;
                            digest
                        }
                    };
                    hasher.update(digest);
                    let settled =
                        entry.stat.mtime_ns < trust_before && entry.stat.ctime_ns < trust_before;
                    if let (Some(key), true) = (key, settled) {
                        fresh.insert(
                            key.to_string(),
                            CachedFile {
                                stat: entry.stat,
                                sha256: hex::encode(digest),
                            },
                        );
                    }
                }
            }
        }
        put_bytes(&mut hasher, context.dockerfile.as_bytes());

        if let Some(cache_file) = &self.cache_file
            && fresh != cached
            && let Err(e) = store_cache(cache_file, fresh)
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
        })
    }
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
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "could not read the context stat cache");
            return BTreeMap::new();
        }
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(cache) if cache.format == CACHE_FORMAT => cache.files,
        Ok(_) => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "ignoring a damaged context stat cache");
            BTreeMap::new()
        }
    }
}

/// Writes the cache next to its final name, then renames it over: a reader sees the old cache
/// or the new one, never half of one. No fsync: a cache lost to a crash only costs time.
fn store_cache(path: &Path, files: BTreeMap<String, CachedFile>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::state_dir::create_private_dir(dir)?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let cache = CacheFile {
        format: CACHE_FORMAT,
        files,
    };
    let written = (|| {
        // State is private to the user from the moment it exists.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::state_dir::PRIVATE_FILE_MODE)
            .open(&tmp)?;
        let mut file = io::BufWriter::new(file);
        serde_json::to_writer(&mut file, &cache)?;
        file.flush()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

fn file_digest(path: &Path, buffer: &mut [u8]) -> Result<[u8; 32], ContextError> {
    let mut file = open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(read_err(path, source)),
        };
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

fn open(path: &Path) -> Result<File, ContextError> {
    File::open(path).map_err(|source| read_err(path, source))
}

fn read_err(path: &Path, source: io::Error) -> ContextError {
    ContextError::Read {
        path: path.to_path_buf(),
        hint: "fix its permissions, or add it to .dockerignore",
        source,
    }
}

/// Length-prefixed, so that no two different sequences of fields hash the same bytes.
fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// `path` as a normalized, `/`-separated relative path, or `None` when it is absolute or
/// climbs out with `..`.
pub(crate) fn relative_slash_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn sample_context() -> tempfile::TempDir {
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

    fn hash(dir: &Path) -> String {
        let context = Context::collect(dir, Path::new("Dockerfile")).unwrap();
        ContextHasher::new().hash(&context).unwrap().hex
    }

    fn tar_paths(tar: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, u64)> {
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
    fn ignored_files_are_in_neither_the_hash_nor_the_tar() {
        let dir = sample_context();
        let before = hash(dir.path());
        write(dir.path(), "secret.env", "TOKEN=2\n");
        write(dir.path(), "target/debug/other.bin", "new");
        assert_eq!(hash(dir.path()), before);

        let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
        let tar = context.to_tar().unwrap();
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
        let first = context.to_tar().unwrap();
        let again = Context::collect(dir.path(), Path::new("Dockerfile"))
            .unwrap()
            .to_tar()
            .unwrap();
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
    fn file_changed_after_hashing_fails_the_tar() {
        let dir = sample_context();
        let context = Context::collect(dir.path(), Path::new("Dockerfile")).unwrap();
        write(dir.path(), "src/main.rs", "a longer body than before\n");
        let err = context.to_tar().unwrap_err();
        assert!(matches!(err, ContextError::Changed { .. }), "{err:?}");
        assert!(err.to_string().contains("src/main.rs"), "{err}");
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
        let tar = context.to_tar().unwrap();
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(tar.as_slice())
            .unpack(out.path())
            .unwrap();
        assert!(out.path().join("target/debug/big.bin").exists());
    }
}
