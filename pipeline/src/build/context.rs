//! The build context: the files sent to the engine, as one snapshot.
//!
//! [`Context::collect`] walks the context folder in a fixed order (names sorted within each
//! folder, parents before children), keeps symlinks as symlinks, and leaves out what
//! `.dockerignore` excludes. Each entry keeps the stat it had in the walk (device, inode,
//! size, mtime and ctime to the nanosecond, mode): that stat is the snapshot. The hash
//! ([`super::hash`]) and the tar ([`super::archive`]) both read files only through
//! [`Context::open_file`], which refuses a symlink and a file whose identity is no longer the
//! one in the snapshot, so what is hashed and what is sent are the same files.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use walkdir::WalkDir;

use super::dockerignore::{Dockerignore, DockerignoreError};

/// Why a context could not be collected, hashed or sent.
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

    /// A file is not what the snapshot recorded: it was rewritten, replaced (by another file
    /// or a symlink), or grew or shrank after the walk.
    #[error("the context changed while it was being {stage}: {path} {detail}")]
    Changed {
        path: PathBuf,
        stage: Stage,
        detail: &'static str,
    },

    #[error("could not pack {path} into the build context's tar: {source}")]
    Pack {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the build context could not be sent to the engine: {source}")]
    Send {
        #[source]
        source: io::Error,
    },
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
                "nothing was built; run the release again once nothing writes into the context, \
                 or add the file to .dockerignore if it is written while releasing"
            }
            ContextError::Pack { .. } => "check the path's length and name",
            ContextError::Send { .. } => {
                "check that the engine is running and healthy (`docker info`), then try again"
            }
        };
        Some(hint.to_string())
    }
}

/// When a change to the context was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// While its files were read for the context hash.
    Hashed,
    /// While its tar was streamed to the engine.
    Sent,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Hashed => "hashed",
            Stage::Sent => "sent",
        })
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
    pub(super) stat: Stat,
}

/// A file's identity and state as the walk saw it. The stat cache compares it to reuse a
/// digest, and every open compares it to refuse a file that is no longer the one walked.
/// ctime is there because no tool can set it: a content change behind a forged mtime still
/// moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stat {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
    pub(super) mode: u32,
}

impl Stat {
    pub(super) fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
        }
    }

    /// How `now` differs from this snapshot, in words; `None` when it does not.
    pub(super) fn difference(&self, now: &Stat) -> Option<&'static str> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            Some("was replaced by another file")
        } else if self.size != now.size {
            Some("changed size")
        } else if self.mtime_ns != now.mtime_ns || self.ctime_ns != now.ctime_ns {
            Some("was modified")
        } else if self.mode != now.mode {
            Some("changed mode")
        } else {
            None
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
    pub(super) root: PathBuf,
    pub(super) dockerfile: String,
    pub(super) entries: Vec<Entry>,
    /// When the walk started: stats recorded after this may not be trusted by the cache yet.
    pub(super) collected_at: SystemTime,
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

    /// Opens `entry`, a file, for reading: without following a symlink in its last component
    /// (`O_NOFOLLOW`), and only when the opened file is the one in the snapshot (device,
    /// inode, size, mtime and ctime to the nanosecond, mode). A symlink swapped in for a
    /// folder above it leads to another inode, so it is refused too.
    pub(super) fn open_file(&self, entry: &Entry, stage: Stage) -> Result<File, ContextError> {
        let full = self.root.join(&entry.path);
        #[cfg(test)]
        tests::count_open(&self.root);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::libc::O_NOCTTY)
            .open(&full);
        let file = match file {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(ContextError::Changed {
                    path: full,
                    stage,
                    detail: "was replaced by a symlink",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContextError::Changed {
                    path: full,
                    stage,
                    detail: "was removed",
                });
            }
            Err(source) => return Err(read_err(&full, source)),
        };
        self.check_unchanged(entry, &file, stage)?;
        Ok(file)
    }

    /// Fails when the open `file` no longer matches `entry`'s snapshot.
    pub(super) fn check_unchanged(
        &self,
        entry: &Entry,
        file: &File,
        stage: Stage,
    ) -> Result<(), ContextError> {
        let full = || self.root.join(&entry.path);
        let meta = file.metadata().map_err(|e| read_err(&full(), e))?;
        let detail = if meta.file_type().is_file() {
            entry.stat.difference(&Stat::of(&meta))
        } else {
            Some("is no longer a regular file")
        };
        match detail {
            None => Ok(()),
            Some(detail) => Err(ContextError::Changed {
                path: full(),
                stage,
                detail,
            }),
        }
    }
}

pub(super) fn read_err(path: &Path, source: io::Error) -> ContextError {
    ContextError::Read {
        path: path.to_path_buf(),
        hint: "fix its permissions, or add it to .dockerignore",
        source,
    }
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
pub(super) mod tests;
