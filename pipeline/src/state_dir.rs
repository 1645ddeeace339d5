//! The layout of the state directory (`state_dir` in the config, `.shipit/` by default): where
//! each target kind keeps what it keeps on this machine.
//!
//! ```text
//! <state>/edge/<target>/                the local edge: admin.sock, routes.json, edge.pid, edge.log
//! <state>/targets/<target>/<service>/   one service on one target:
//!     lock                              the release lock (local targets)
//!     releases/                         the release records (local targets)
//!     (the rest)                        the build context's stat cache and the last
//!                                       image built (every kind)
//! ```
//!
//! Every path is derived here, so a kind that keeps state locally never spells a folder name
//! itself, and the CLI finds an edge's folder without opening a platform. What holds state is
//! private to the user from the moment it exists: folders [`PRIVATE_DIR_MODE`], files
//! [`PRIVATE_FILE_MODE`], created with that mode rather than narrowed after.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of every folder shipit creates for its state.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of every file shipit creates for its state (the lock, the release records).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with [`PRIVATE_DIR_MODE`] (a umask can only narrow
/// it further). `dir` itself, if an older shipit left it more open, is narrowed to that mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    }
    Ok(())
}

/// Replaces `path` (creating its folder) with what `write` writes, through a private
/// temporary file beside it that is renamed over it: a reader sees the old file or the new
/// one, never half of one. No fsync: for state whose loss only costs time, such as the build
/// caches (release records have their own durable write).
pub fn replace_private_file(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<std::fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)?;
        let mut file = io::BufWriter::new(file);
        write(&mut file)?;
        file.flush()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The JSON state at `path` that is only a hint (a cache): `None` when it is missing, and
/// `None` with a warning naming `what` when it cannot be read or parsed.
pub fn read_hint<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not read {what}");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring a damaged {what}");
            None
        }
    }
}

/// The folder of the edge of local target `target`.
pub fn edge_dir(state_dir: &Path, target: &str) -> PathBuf {
    state_dir.join("edge").join(target)
}

/// Where one service on one target keeps its state.
#[derive(Debug, Clone)]
pub struct StatePaths {
    /// `<state>/edge/<target>`: the edge's socket, routes, pid and log.
    pub edge_dir: PathBuf,
    /// `<state>/targets/<target>/<service>`: the lock, the history and the build cache.
    pub service_dir: PathBuf,
}

impl StatePaths {
    pub fn new(state_dir: &Path, target: &str, service: &str) -> StatePaths {
        StatePaths {
            edge_dir: edge_dir(state_dir, target),
            service_dir: state_dir.join("targets").join(target).join(service),
        }
    }

    /// The file behind the release lock.
    pub fn lock_file(&self) -> PathBuf {
        self.service_dir.join("lock")
    }

    /// The folder of the release records, one JSON file each.
    pub fn releases_dir(&self) -> PathBuf {
        self.service_dir.join("releases")
    }

    /// Where a build keeps its stat cache of the context.
    pub fn build_cache_dir(&self) -> &Path {
        &self.service_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_lives_under_the_state_directory() {
        let paths = StatePaths::new(Path::new("/p/.shipit"), "local", "hello");
        assert_eq!(paths.edge_dir, Path::new("/p/.shipit/edge/local"));
        assert_eq!(
            paths.service_dir,
            Path::new("/p/.shipit/targets/local/hello")
        );
        assert_eq!(
            paths.lock_file(),
            Path::new("/p/.shipit/targets/local/hello/lock")
        );
        assert_eq!(
            paths.releases_dir(),
            Path::new("/p/.shipit/targets/local/hello/releases")
        );
        assert_eq!(paths.build_cache_dir(), paths.service_dir);
        assert_eq!(edge_dir(Path::new("/s"), "beta"), Path::new("/s/edge/beta"));
    }
}
