//! The edge directory and the modes of what it holds: private to the user from the moment
//! each thing exists (invariant 10).
//!
//! Whoever can reach `admin.sock` switches the traffic, and `routes.json` names every slot's
//! address, so the directory is 0700 and every file in it 0600 (the socket included). Modes
//! are given at creation (`DirBuilder::mode`, `OpenOptions::mode`) and then set exactly,
//! because the umask can only take bits away: a file is never wider than asked for, even for
//! an instant, and a umask that took the owner's own bits does not leave one unusable.
//!
//! An edge directory that already exists with wider permissions (earlier versions made it
//! 0755) is tightened to 0700 with a warning rather than refused: it is shipit's own
//! directory, and refusing would stop every existing edge at its next start. It is refused,
//! naming it, only when it cannot be tightened (another user owns it).

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::EdgeError;

/// The mode of the edge directory and of any parent shipit creates for it.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in the edge directory, the admin socket included.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir`, and each missing parent, 0700 whatever the umask. An existing `dir` that
/// others can enter is tightened to 0700, with a warning; parents that exist are left as
/// they are (they may be shared, like a home directory).
pub fn create(dir: &Path) -> Result<(), EdgeError> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::symlink_metadata(at) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(EdgeError::io("look at the edge directory", at, e)),
        }
    }
    for path in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
            Ok(()) => set_mode(path, DIR_MODE)
                .map_err(|e| EdgeError::io("make the new directory private", path, e))?,
            // Made meanwhile by another shipit: the check below still applies to `dir`.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(EdgeError::io("create the edge directory", path, e)),
        }
    }
    let meta =
        std::fs::metadata(dir).map_err(|e| EdgeError::io("look at the edge directory", dir, e))?;
    if !meta.is_dir() {
        return Err(EdgeError::io(
            "use as the edge directory",
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        set_mode(dir, DIR_MODE)
            .map_err(|e| EdgeError::io("make the edge directory private (mode 0700)", dir, e))?;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the edge directory {} was open to other users (mode {mode:04o}); made it \
                 private (0700)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Opens `path` with `options`, creating it 0600; a file that existed with another mode is
/// set to 0600.
pub(crate) fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options.mode(FILE_MODE).open(path)?;
    make_private(&file)?;
    Ok(file)
}

/// Opens a lock file in the edge directory (`edge.lock`, `daemon.lock`), creating it 0600.
/// Only its `flock` matters: nothing is read from it or written to it.
pub(crate) fn open_lock(path: &Path) -> Result<File, EdgeError> {
    open(
        path,
        OpenOptions::new().create(true).truncate(false).write(true),
    )
    .map_err(|e| EdgeError::io("open the lock file", path, e))
}

/// Sets an open file's mode to exactly 0600, unless it already is.
pub(crate) fn make_private(file: &File) -> io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// Sets the mode of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn missing_parents_are_created_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/edge/local");
        create(&dir).unwrap();
        for made in ["state", "state/edge", "state/edge/local"] {
            assert_eq!(mode(&root.path().join(made)), 0o700, "{made}");
        }
        // Again: nothing changes, nothing fails.
        create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn existing_open_edge_directory_is_tightened_but_not_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("state");
        let dir = parent.join("edge");
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&parent, 0o755).unwrap();
        set_mode(&dir, 0o755).unwrap();
        create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            mode(&parent),
            0o755,
            "a parent shipit did not create is left alone"
        );
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("edge");
        std::fs::write(&dir, b"").unwrap();
        let message = create(&dir).unwrap_err().to_string();
        assert!(message.contains(&*dir.to_string_lossy()), "{message}");
    }

    #[test]
    fn opened_files_are_0600_and_an_existing_wider_one_is_fixed() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("new");
        open(&new, OpenOptions::new().create(true).append(true)).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = root.path().join("old");
        std::fs::write(&old, b"x").unwrap();
        set_mode(&old, 0o644).unwrap();
        open(&old, OpenOptions::new().create(true).append(true)).unwrap();
        assert_eq!(mode(&old), 0o600);
    }
}
