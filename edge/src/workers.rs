//! The threads that serve client connections: one event loop per core.
//!
//! In tokio's multi-thread runtime only one worker at a time waits on epoll. A worker with
//! no task parks, and it does not see a socket become readable until another worker hands it
//! work, so under load about a tenth of a 2-core box sat idle (`bench/RESULTS.md`). nginx and
//! HAProxy run one event loop per worker, each with its own epoll, and so does the edge: each
//! serving thread runs a current-thread runtime of its own, and the loop that accepts deals
//! the connections out to them in turn. A connection's task, its timers, its tunnel and the
//! slot connections it opens all live on the thread it was dealt to.
//!
//! The threads belong to the process. They start the first time an edge asks for them and
//! run until the process exits. An edge's stop ends its connections' tasks (the listener's
//! `JoinSet` reaches across runtimes) and its tunnels, not the threads: so a pooled slot
//! connection never outlives the runtime its socket is registered with, and a process that
//! starts edges one after another (a take-over, the tests) does not start threads for each.
//!
//! A slot connection is registered with the epoll of the thread that opened it. One that the
//! relay takes from a slot's pool on another thread is moved to that thread's epoll first
//! ([`crate::pool`]), so that its requests do not wait on another thread's event loop. (The
//! general path's slot connections, hyper's, are shared by every thread: each is served by
//! the thread that opened it.)

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

thread_local! {
    /// Which serving thread this is; `None` on any other thread.
    static THIS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The serving threads started so far, in the order they started.
static THREADS: Mutex<Vec<Handle>> = Mutex::new(Vec::new());

/// The serving thread this code runs on, if it runs on one.
pub(crate) fn current() -> Option<usize> {
    THIS.with(Cell::get)
}

/// One serving thread per core: the default for [`crate::settings::Tuning::threads`].
pub fn per_core() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Where an edge's client connections run.
#[derive(Debug)]
pub(crate) struct Workers {
    /// The serving threads' runtimes; empty: the connections run on the edge's own runtime.
    threads: Vec<Handle>,
    /// The thread the next connection goes to.
    next: AtomicUsize,
    /// Connections dealt to each thread, for the tests.
    #[cfg(test)]
    pub(crate) dealt: Vec<AtomicUsize>,
}

impl Workers {
    /// The first `count` serving threads of the process, started now if fewer run. With a
    /// `count` of 0, connections run on the caller's runtime, as tasks of their own.
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.min(crate::MAX_THREADS);
        let mut threads = threads();
        while threads.len() < count {
            let index = threads.len();
            // The runtime is built, and only ever dropped, on its own thread: one dropped
            // inside the caller's runtime (a thread that failed to start) would panic.
            let (started, handle) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name(format!("shipit-edge-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            THIS.with(|this| this.set(Some(index)));
                            let _ = started.send(Ok(runtime.handle().clone()));
                            runtime.block_on(std::future::pending::<()>());
                        }
                        Err(e) => drop(started.send(Err(e))),
                    }
                })?;
            // The thread answers as soon as its runtime is built (or failed to be).
            let handle = handle.recv().map_err(|_| {
                std::io::Error::other("a serving thread ended before its runtime started")
            })??;
            threads.push(handle);
        }
        Ok(Workers::on(threads[..count].to_vec()))
    }

    /// No serving threads: connections run on the caller's runtime.
    pub(crate) fn here() -> Workers {
        Workers::on(Vec::new())
    }

    fn on(threads: Vec<Handle>) -> Workers {
        Workers {
            #[cfg(test)]
            dealt: (0..threads.len()).map(|_| AtomicUsize::new(0)).collect(),
            threads,
            next: AtomicUsize::new(0),
        }
    }

    /// Spawns `serve` for the connection `stream` into `set`: on the next serving thread in
    /// turn, with the socket moved to that thread's epoll, or here when there are none.
    pub(crate) fn spawn<F>(
        &self,
        set: &mut JoinSet<()>,
        stream: TcpStream,
        serve: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.threads.is_empty() {
            set.spawn(serve(stream));
            return;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        #[cfg(test)]
        self.dealt[turn].fetch_add(1, Ordering::Relaxed);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => return tracing::debug!("cannot hand a client connection over: {e}"),
        };
        set.spawn_on(
            async move {
                // Inside the serving thread's runtime: the socket joins its epoll.
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve(stream).await,
                    Err(e) => tracing::debug!("cannot take a client connection in: {e}"),
                }
            },
            &self.threads[turn],
        );
    }

    /// `stream`, moved to the first serving thread's epoll, and that thread; as it is, with
    /// `None`, when there are no serving threads.
    pub(crate) fn give_first(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(TcpStream, Option<usize>)> {
        match self.threads.first() {
            None => Ok((stream, None)),
            Some(first) => {
                let _inside = first.enter();
                Ok((move_here(stream)?, Some(0)))
            }
        }
    }

    /// The serving threads' runtimes (none when connections run on the edge's own).
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.threads
    }
}

/// The list of serving threads (a poisoned lock still holds a valid list).
fn threads() -> MutexGuard<'static, Vec<Handle>> {
    THREADS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `stream`, registered with the epoll of the runtime this runs on (a socket stays with the
/// runtime it was registered with until it is moved).
pub(crate) fn move_here(stream: TcpStream) -> std::io::Result<TcpStream> {
    TcpStream::from_std(stream.into_std()?)
}

#[cfg(test)]
mod tests;
