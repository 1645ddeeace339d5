//! `edge.log`: the detached edge's stdout and stderr, rotated by size.
//!
//! [`crate::daemon`] starts the edge with both descriptors on `edge.log`, opened for
//! appending, so everything the process writes lands there: its tracing lines, a panic, a
//! failure before tracing was set up (which the daemon shows as the log's tail when a start
//! fails). The edge process rotates that file itself, on those descriptors: once every
//! [`LOG_CHECK_INTERVAL`] it looks at the size of the file its stderr writes to, and past
//! [`LOG_MAX_SIZE`] it moves `edge.log` to `edge.log.1` (`.1` to `.2`, and so on, keeping
//! [`LOG_KEEP`] old files), opens a new `edge.log` (0600) and puts it under stdout and
//! stderr with `dup2`. No writer needs to know about it: the tracing subscriber, the panic
//! hook and anything else keep writing to descriptor 2, and each write lands whole in the old
//! file or the new one. The file can pass the limit by what one interval's writes add.
//!
//! Only a process whose stderr *is* its directory's `edge.log` rotates (the daemon started
//! it); in the foreground (`shipit edge run` on a terminal) or in a test nothing is touched.
//! When `edge.log` was moved away by someone else (an operator, logrotate without
//! `copytruncate`), the edge opens a new one at the path instead of writing to the moved
//! file for ever. Only the serving edge rotates: one that handed over to a new process stops
//! (see `server::Signals::serve`), so two processes never shift the same files.

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{LOG_FILE, directory};

/// The size past which `edge.log` is rotated: 10 MiB.
pub const LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// How many rotated files are kept: `edge.log.1` (the newest) to `edge.log.3`.
pub const LOG_KEEP: u32 = 3;
/// How often the edge looks at the size of its log.
pub const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Opens `path` for appending, creating it 0600 (a wider existing file is set to 0600).
pub(crate) fn open(path: &Path) -> io::Result<File> {
    directory::open(path, OpenOptions::new().create(true).append(true))
}

/// Moves `path` to `path.1`, `path.1` to `path.2`, and so on; the file that would become
/// `path.<keep + 1>` is removed. Missing files are skipped.
pub(crate) fn shift(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    ignore_missing(std::fs::remove_file(numbered(keep)))?;
    for n in (1..keep).rev() {
        ignore_missing(std::fs::rename(numbered(n), numbered(n + 1)))?;
    }
    ignore_missing(std::fs::rename(path, numbered(1)))
}

/// Rotates `path` when it is larger than `max_size`; used before a start, when no edge
/// writes to it. Whether it did.
pub(crate) fn rotate_if_over(path: &Path, max_size: u64, keep: u32) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > max_size => shift(path, keep).map(|()| true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// What one [`Rotation::check`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The file is under the limit and still at its path.
    Kept,
    /// The file passed the limit: it is now `edge.log.1`, and a new one is written.
    Rotated,
    /// The path named another file, or none (it was moved away): that one is written now.
    Reopened,
}

/// The descriptors the log is written through.
#[derive(Debug)]
enum Writers {
    /// The process's stderr, and its stdout when that was the same file.
    Stdio { stdout: bool },
    /// A descriptor standing in for stderr, in tests: the test harness's own stderr is not
    /// for redirecting.
    #[cfg(test)]
    Fd(std::os::fd::OwnedFd),
}

/// The rotation of one edge's log, done on the descriptors that write it.
#[derive(Debug)]
pub(crate) struct Rotation {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    writers: Writers,
}

impl Rotation {
    /// The rotation of `dir`'s `edge.log`, when this process's stderr is that file.
    pub(crate) fn of_stdio(dir: &Path) -> Option<Rotation> {
        let path = dir.join(LOG_FILE);
        let log = std::fs::metadata(&path).ok()?;
        let same = |fd: BorrowedFd<'_>| {
            nix::sys::stat::fstat(fd)
                .is_ok_and(|st| st.st_dev == log.dev() && st.st_ino == log.ino())
        };
        if !same(io::stderr().as_fd()) {
            return None;
        }
        Some(Rotation {
            path,
            max_size: LOG_MAX_SIZE,
            keep: LOG_KEEP,
            writers: Writers::Stdio {
                stdout: same(io::stdout().as_fd()),
            },
        })
    }

    /// The file the log is written to now.
    fn written(&self) -> nix::Result<nix::sys::stat::FileStat> {
        match &self.writers {
            Writers::Stdio { .. } => nix::sys::stat::fstat(io::stderr()),
            #[cfg(test)]
            Writers::Fd(fd) => nix::sys::stat::fstat(fd),
        }
    }

    /// Points the writers at `file`.
    fn redirect(&mut self, file: &File) -> io::Result<()> {
        match &mut self.writers {
            Writers::Stdio { stdout } => {
                if *stdout {
                    nix::unistd::dup2_stdout(file)?;
                }
                nix::unistd::dup2_stderr(file)?;
            }
            #[cfg(test)]
            Writers::Fd(fd) => nix::unistd::dup2(file, fd)?,
        }
        Ok(())
    }

    /// Rotates the log when it passed the size limit, and follows its path when the file
    /// there is not the one written (it was moved away).
    pub(crate) fn check(&mut self) -> io::Result<Checked> {
        let written = self.written()?;
        let at_path = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let moved = !at_path
            .is_some_and(|meta| meta.dev() == written.st_dev && meta.ino() == written.st_ino);
        let checked = if moved {
            Checked::Reopened
        } else if u64::try_from(written.st_size).unwrap_or(0) > self.max_size {
            shift(&self.path, self.keep)?;
            Checked::Rotated
        } else {
            return Ok(Checked::Kept);
        };
        let file = open(&self.path)?;
        self.redirect(&file)?;
        Ok(checked)
    }

    /// Checks the log every [`LOG_CHECK_INTERVAL`], for as long as the future is polled.
    /// A failed check is logged once, until one succeeds again.
    pub(crate) async fn keep(mut self) -> Infallible {
        let mut failing = false;
        loop {
            tokio::time::sleep(LOG_CHECK_INTERVAL).await;
            match self.check() {
                Ok(Checked::Kept) => failing = false,
                Ok(Checked::Rotated) => {
                    failing = false;
                    tracing::info!(
                        "rotated the log: earlier lines are in {}.1",
                        self.path.display()
                    );
                }
                Ok(Checked::Reopened) => {
                    failing = false;
                    tracing::info!("{} was moved away; writing a new one", self.path.display());
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cannot rotate the log {}: {e}", self.path.display());
                }
                Err(_) => {}
            }
        }
    }
}

/// Rotates `dir`'s `edge.log` for as long as it is polled when this process writes to it;
/// otherwise waits for ever.
pub(crate) async fn keep_rotated(dir: &Path) -> Infallible {
    match Rotation::of_stdio(dir) {
        Some(rotation) => rotation.keep().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::PermissionsExt;

    fn rotation(dir: &Path, max_size: u64) -> Rotation {
        let path = dir.join(LOG_FILE);
        let stand_in = OwnedFd::from(open(&path).unwrap());
        Rotation {
            path,
            max_size,
            keep: LOG_KEEP,
            writers: Writers::Fd(stand_in),
        }
    }

    /// Writes through the stand-in for stderr, as the edge's tracing lines are.
    fn write(rotation: &Rotation, line: &str) {
        let Writers::Fd(fd) = &rotation.writers else {
            unreachable!("tests write through a stand-in")
        };
        assert_eq!(nix::unistd::write(fd, line.as_bytes()).unwrap(), line.len());
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn log_rotates_past_its_size_keeping_three_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let max = 1000;
        let mut rotation = rotation(dir.path(), max);
        let mut rotated = 0;
        // 10-byte lines, checked every 5 lines: a file ends at most 50 bytes past the limit.
        for n in 0..1000 {
            write(&rotation, &format!("line {n:04}\n"));
            if n % 5 == 4 && rotation.check().unwrap() == Checked::Rotated {
                rotated += 1;
            }
        }
        assert!(rotated >= 9, "{rotated} rotations");
        let log = dir.path().join(LOG_FILE);
        let files: Vec<PathBuf> = ["3", "2", "1"]
            .iter()
            .map(|n| dir.path().join(format!("{LOG_FILE}.{n}")))
            .chain([log.clone()])
            .collect();
        assert!(!dir.path().join(format!("{LOG_FILE}.4")).exists());
        let mut all = Vec::new();
        for file in &files {
            let meta = std::fs::metadata(file).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{}",
                file.display()
            );
            if file != &log {
                assert!(meta.len() > max && meta.len() <= max + 50, "{meta:?}");
            }
            all.extend(lines(file));
        }
        // The files hold the newest lines, in order, with none lost between them.
        let last: Vec<String> = (1000 - all.len()..1000)
            .map(|n| format!("line {n:04}"))
            .collect();
        assert_eq!(all, last);
    }

    #[test]
    fn log_moved_away_is_opened_again_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut rotation = rotation(dir.path(), LOG_MAX_SIZE);
        write(&rotation, "before\n");
        assert_eq!(rotation.check().unwrap(), Checked::Kept);
        let log = dir.path().join(LOG_FILE);
        let moved = dir.path().join("moved.log");
        std::fs::rename(&log, &moved).unwrap();
        assert_eq!(rotation.check().unwrap(), Checked::Reopened);
        write(&rotation, "after\n");
        assert_eq!(lines(&moved), ["before"]);
        assert_eq!(lines(&log), ["after"]);
        assert_eq!(rotation.check().unwrap(), Checked::Kept);
    }

    #[test]
    fn rotation_before_a_start_moves_only_a_file_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        assert!(!rotate_if_over(&log, 10, LOG_KEEP).unwrap());
        std::fs::write(&log, b"0123456789").unwrap();
        assert!(!rotate_if_over(&log, 10, LOG_KEEP).unwrap());
        std::fs::write(&log, b"0123456789A").unwrap();
        assert!(rotate_if_over(&log, 10, LOG_KEEP).unwrap());
        assert!(!log.exists());
        let first = dir.path().join(format!("{LOG_FILE}.1"));
        assert_eq!(std::fs::read(first).unwrap(), b"0123456789A");
    }

    #[test]
    fn a_process_whose_stderr_is_not_the_log_rotates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), b"").unwrap();
        assert!(Rotation::of_stdio(dir.path()).is_none());
    }
}
