//! The tar of a hashed context, written as it is read and streamed to the engine.
//!
//! [`write_tar`] writes the entries of the [`Context`] snapshot that was hashed, nothing else:
//! folders and symlinks from the snapshot (a link's target as the walk read it, never
//! followed), files through [`Context::open_file`] (no symlink, same identity as hashed), and
//! each file's identity is checked again once its bytes are in. A file whose timestamps were
//! within the racy window of the hash (where a write in the same clock tick would leave its
//! identity unchanged) also goes through sha256 on its way into the tar and must give the
//! digest that went into the context hash; for the others a write moves the ctime, so the
//! identity suffices and their bytes are not hashed twice. A file that differs fails the whole
//! tar with [`ContextError::Changed`] before its end-of-archive marker is written.
//!
//! [`TarBody`] carries the tar to the engine in chunks of [`SEND_CHUNK_LEN`] bytes through a
//! queue of [`SEND_QUEUE_CHUNKS`]: the packing thread waits while the engine reads, so memory
//! stays a few chunks whatever the context's size. A failure ends the request body with an
//! error, never a clean end: the engine sees a broken upload and builds nothing from it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::context::{Context, ContextError, EntryKind, Stage};
use super::hash::ContextHash;

/// The tar goes to the engine in chunks this large.
pub const SEND_CHUNK_LEN: usize = 256 * 1024;
/// How many chunks may wait for the engine; with the one being filled and the one being
/// written, memory for the body stays under `(SEND_QUEUE_CHUNKS + 2) * SEND_CHUNK_LEN`.
pub const SEND_QUEUE_CHUNKS: usize = 4;
/// Files are read into the tar through a buffer this large.
const FILE_BUFFER_LEN: usize = 256 * 1024;

/// Writes `context` as an uncompressed tar into `out`, checking every file against `hash`.
///
/// Deterministic: entries in walk order, mtime 0, uid/gid 0, permission bits as on disk.
/// Returns the number of bytes written.
pub fn write_tar<W: Write>(
    context: &Context,
    hash: &ContextHash,
    out: &mut W,
) -> Result<u64, ContextError> {
    assert_eq!(
        hash.digests.len(),
        context.entries.len(),
        "the hash was computed from this context"
    );
    let mut tar = tar::Builder::new(Counted {
        out,
        written: 0,
        closed: false,
    });
    let written = append_entries(context, hash, &mut tar);
    if written.is_err() {
        // A builder that is dropped unfinished writes the end-of-archive marker: a cut tar
        // must not end like a whole one, so nothing more reaches `out`.
        tar.get_mut().closed = true;
    }
    written?;
    tar.finish().map_err(|e| pack_err(context.root(), e))?;
    let counted = tar.into_inner().map_err(|e| pack_err(context.root(), e))?;
    Ok(counted.written)
}

fn append_entries<W: Write>(
    context: &Context,
    hash: &ContextHash,
    tar: &mut tar::Builder<Counted<'_, W>>,
) -> Result<(), ContextError> {
    for ((entry, digest), settled) in context.entries.iter().zip(&hash.digests).zip(&hash.settled) {
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
                    .map_err(|e| pack_err(&entry.path, e))?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &entry.path, target)
                    .map_err(|e| pack_err(&entry.path, e))?;
            }
            EntryKind::File => {
                #[cfg(test)]
                tests::before_file(context.root(), &entry.path);
                let file = context.open_file(entry, Stage::Sent)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(entry.size);
                let mut reader = Checked::new(file, entry.size, !settled);
                let appended = tar.append_data(&mut header, &entry.path, &mut reader);
                let full = || context.root().join(&entry.path);
                if let Some(detail) = reader.problem {
                    return Err(ContextError::Changed {
                        path: full(),
                        stage: Stage::Sent,
                        detail,
                    });
                }
                if let Some(source) = reader.read_error {
                    return Err(super::context::read_err(&full(), source));
                }
                appended.map_err(|e| pack_err(&entry.path, e))?;
                context.check_unchanged(entry, reader.inner.get_ref(), Stage::Sent)?;
                if let Some(sha256) = reader.sha256
                    && sha256.finalize().as_slice() != digest.as_slice()
                {
                    return Err(ContextError::Changed {
                        path: full(),
                        stage: Stage::Sent,
                        detail: "no longer has the content that was hashed",
                    });
                }
            }
        }
    }
    Ok(())
}

/// An error from the writer is the engine's side going away; anything else is a bad entry.
fn pack_err(path: &Path, source: io::Error) -> ContextError {
    if source.kind() == io::ErrorKind::BrokenPipe {
        ContextError::Send { source }
    } else {
        ContextError::Pack {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The tar's writer: counts what was written, and once closed takes nothing more.
struct Counted<'a, W> {
    out: &'a mut W,
    written: u64,
    closed: bool,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::other("the tar failed; nothing more is written"));
        }
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A file's content on its way into the tar: exactly `size` bytes, hashed as they pass when
/// asked. A file that ends early or goes on past `size` is recorded as a problem (and fails
/// the read, so the tar stops there).
struct Checked {
    inner: BufReader<File>,
    left: u64,
    sha256: Option<Sha256>,
    problem: Option<&'static str>,
    read_error: Option<io::Error>,
}

impl Checked {
    fn new(file: File, size: u64, digest: bool) -> Self {
        Self {
            inner: BufReader::with_capacity(FILE_BUFFER_LEN, file),
            left: size,
            sha256: digest.then(Sha256::new),
            problem: None,
            read_error: None,
        }
    }

    fn fail(&mut self, detail: &'static str) -> io::Error {
        self.problem = Some(detail);
        io::Error::other(detail)
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Past the recorded size: the file must end here.
            return match self.inner.fill_buf() {
                Ok([]) => Ok(0),
                Ok(_) => Err(self.fail("grew while it was read")),
                Err(e) => {
                    let kind = e.kind();
                    self.read_error = Some(e);
                    Err(io::Error::from(kind))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => Err(self.fail("shrank while it was read")),
            Ok(n) => {
                if let Some(sha256) = &mut self.sha256 {
                    sha256.update(&buf[..n]);
                }
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.read_error = Some(e);
                Err(io::Error::from(kind))
            }
        }
    }
}

/// The write end of a streamed request body: fills a chunk, hands it to the queue when full,
/// and waits (blocking its thread) while the queue is full.
pub struct TarBody {
    tx: mpsc::Sender<io::Result<Bytes>>,
    chunk: BytesMut,
}

impl TarBody {
    /// A body writer and the stream the engine request reads, with at most
    /// [`SEND_QUEUE_CHUNKS`] chunks between them.
    pub fn channel() -> (
        Self,
        impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    ) {
        let (tx, mut rx) = mpsc::channel(SEND_QUEUE_CHUNKS);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (
            Self {
                tx,
                chunk: BytesMut::with_capacity(SEND_CHUNK_LEN),
            },
            stream,
        )
    }

    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        self.tx.blocking_send(item).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            )
        })
    }

    /// Sends what is left and ends the body cleanly: only for a complete tar.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.chunk.is_empty() {
            let last = self.chunk.split().freeze();
            self.send(Ok(last))?;
        }
        Ok(())
    }

    /// Ends the body with an error, so the request is aborted rather than ended: the engine
    /// must never take a tar cut short for a whole one.
    pub fn abort(mut self, why: &ContextError) {
        let _ = self.send(Err(io::Error::other(why.to_string())));
    }
}

impl Write for TarBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = SEND_CHUNK_LEN - self.chunk.len();
        let n = buf.len().min(room);
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == SEND_CHUNK_LEN {
            let full = self.chunk.split().freeze();
            self.chunk.reserve(SEND_CHUNK_LEN);
            self.send(Ok(full))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
