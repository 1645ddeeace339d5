//! HTTP/2 streams run on their connection's own task.
//!
//! hyper's HTTP/2 server hands every stream to its executor as a future of its own. With
//! tokio's executor each stream is a task: spawned, scheduled, woken from the connection's
//! task when frames arrive and waking it back when its answer is queued, often on the other
//! worker thread. nginx and HAProxy serve a stream on its connection's event loop instead.
//!
//! [`OnConnection`] is the executor the edge gives hyper. While [`Streams::poll_connection`]
//! polls a connection, the streams it starts are gathered here, not spawned, and the same
//! task then polls them. A round runs the connection (frames read, streams started), then
//! the streams that were woken (answers queued), then the connection again, so that the
//! answers of one round leave in the same writes. A future handed to the executor outside
//! such a poll (the send half of an upgraded HTTP/2 stream, started while a stream is
//! polled) is spawned as before: it may outlive the connection's task.
//!
//! When the connection's future ends, its streams are dropped with it: hyper's HTTP/2
//! connection ends once every stream has ended, or when the client is gone and no answer
//! can reach it any more.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// The streams started by the connection being polled on this thread, if one is.
    static GATHERED: RefCell<Option<Vec<Stream>>> = const { RefCell::new(None) };
}

/// The executor of client connections: streams are gathered for their connection's task
/// while it is polled (see the module), anything else is spawned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OnConnection;

impl<F> hyper::rt::Executor<F> for OnConnection
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let mut future = Some(future);
        GATHERED.with_borrow_mut(|gathered| {
            if let Some(gathered) = gathered {
                // A stream that panics ends alone, as a task of its own would, not with
                // every other stream of its connection.
                let future = AssertUnwindSafe(future.take().expect("taken once"))
                    .catch_unwind()
                    .map(|ended| {
                        if ended.is_err() {
                            tracing::error!("an HTTP/2 stream panicked; its connection goes on");
                        }
                    });
                gathered.push(Box::pin(future));
            }
        });
        if let Some(future) = future {
            tokio::spawn(future);
        }
    }
}

/// One connection's gathering. When its poll ends, also by a panic, it puts back what
/// gathered before (nothing, unless polls nest), so that nothing a later poll on this
/// thread starts is gathered for the wrong connection or for no one.
struct Gathering {
    outer: Option<Vec<Stream>>,
}

impl Gathering {
    fn start(spare: Vec<Stream>) -> Self {
        let outer = GATHERED.with_borrow_mut(|gathered| gathered.replace(spare));
        Gathering { outer }
    }

    /// The streams started since `start`.
    fn finish(self) -> Vec<Stream> {
        let ours = GATHERED.with_borrow_mut(Option::take);
        drop(self);
        ours.unwrap_or_default()
    }
}

impl Drop for Gathering {
    fn drop(&mut self) {
        let outer = self.outer.take();
        GATHERED.with_borrow_mut(|gathered| *gathered = outer);
    }
}

/// One connection's streams.
#[derive(Default)]
pub(crate) struct Streams {
    /// Made when the first stream starts: a connection that never speaks HTTP/2 (an
    /// HTTP/1.1 one on hyper's path) does not pay for it.
    running: Option<FuturesUnordered<Stream>>,
    /// The gathering vector, kept between polls so that a poll allocates nothing.
    spare: Vec<Stream>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("running", &self.len())
            .finish()
    }
}

impl Streams {
    /// How many streams run.
    pub(crate) fn len(&self) -> usize {
        self.running.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// Polls the connection, then the streams that are due, then the connection again
    /// (see the module). Ready with the connection's output once it ends.
    pub(crate) fn poll_connection<C: Future>(
        &mut self,
        mut connection: Pin<&mut C>,
        cx: &mut Context<'_>,
    ) -> Poll<C::Output> {
        for _ in 0..2 {
            if let (Poll::Ready(output), _) = self.poll_gathering(connection.as_mut(), cx) {
                return Poll::Ready(output);
            }
            let Some(running) = &mut self.running else {
                return Poll::Pending;
            };
            // Until every stream that was due is pending again (or the set has used its
            // share of this poll: it then wakes the task to go on).
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
        }
        let (polled, started) = self.poll_gathering(connection, cx);
        if started && polled.is_pending() {
            // Streams started in this last poll have not been polled, and a push does not
            // wake the task: come back for them.
            cx.waker().wake_by_ref();
        }
        polled
    }

    fn poll_gathering<C: Future>(
        &mut self,
        connection: Pin<&mut C>,
        cx: &mut Context<'_>,
    ) -> (Poll<C::Output>, bool) {
        let gathering = Gathering::start(std::mem::take(&mut self.spare));
        let polled = connection.poll(cx);
        let mut started = gathering.finish();
        let any = !started.is_empty();
        if any {
            let running = self.running.get_or_insert_with(FuturesUnordered::new);
            for stream in started.drain(..) {
                running.push(stream);
            }
        }
        self.spare = started;
        (polled, any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A connection stand-in that starts `starts` streams through the executor on its first
    /// poll, each waiting for `gate` to open and then counting itself in `done`, and that
    /// ends once all have.
    struct Starter {
        starts: usize,
        started: bool,
        gate: tokio::sync::watch::Receiver<bool>,
        done: Arc<AtomicUsize>,
    }

    impl Future for Starter {
        type Output = &'static str;
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<&'static str> {
            if !self.started {
                self.started = true;
                for _ in 0..self.starts {
                    let done = Arc::clone(&self.done);
                    let mut gate = self.gate.clone();
                    OnConnection.execute(async move {
                        gate.wait_for(|open| *open).await.expect("the gate is kept");
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
            // The streams' own wake-ups bring the task back: each is polled on it.
            if self.done.load(Ordering::SeqCst) == self.starts {
                Poll::Ready("ended")
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn streams_started_while_the_connection_is_polled_run_on_its_task() {
        let (open, gate) = tokio::sync::watch::channel(false);
        let done = Arc::new(AtomicUsize::new(0));
        let mut connection = std::pin::pin!(Starter {
            starts: 5,
            started: false,
            gate,
            done: Arc::clone(&done),
        });
        let mut streams = Streams::default();
        let first = std::future::poll_fn(|cx| {
            Poll::Ready(streams.poll_connection(connection.as_mut(), cx))
        })
        .await;
        assert!(first.is_pending());
        // Held here, not spawned (a spawned one would not be counted), and waiting.
        assert_eq!(streams.len(), 5);
        assert_eq!(done.load(Ordering::SeqCst), 0);
        // Nothing is left gathering once the poll is over.
        GATHERED.with_borrow(|gathered| assert!(gathered.is_none()));

        open.send(true).expect("the streams hold the gate");
        let ended =
            std::future::poll_fn(|cx| streams.poll_connection(connection.as_mut(), cx)).await;
        assert_eq!(ended, "ended");
        assert_eq!(done.load(Ordering::SeqCst), 5);
        assert_eq!(streams.len(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_future_started_outside_a_connection_poll_is_spawned() {
        let (sent, received) = tokio::sync::oneshot::channel();
        OnConnection.execute(async move {
            sent.send(()).expect("the receiver waits");
        });
        // Only the runtime can run it: nothing else holds it.
        tokio::time::timeout(std::time::Duration::from_secs(5), received)
            .await
            .expect("the spawned future ran")
            .expect("it sent");
    }

    /// A connection stand-in that starts one stream on its `on`th poll (counting from 1),
    /// which counts itself in `done`, and ends once it has. With `on` over 1, its first poll
    /// starts a stream that never ends, so that a round polls it three times.
    struct LateStarter {
        polls: usize,
        on: usize,
        panics_first: bool,
        done: Arc<AtomicUsize>,
    }

    impl LateStarter {
        fn new(on: usize, panics_first: bool, done: &Arc<AtomicUsize>) -> Self {
            LateStarter {
                polls: 0,
                on,
                panics_first,
                done: Arc::clone(done),
            }
        }
    }

    impl Future for LateStarter {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls == 1 && self.on > 1 {
                OnConnection.execute(std::future::pending::<()>());
            }
            if self.polls == self.on {
                if self.panics_first {
                    OnConnection.execute(async { panic!("a stream panics") });
                }
                let done = Arc::clone(&self.done);
                OnConnection.execute(async move {
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            if self.done.load(Ordering::SeqCst) == 1 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A waker that counts its wake-ups.
    struct Counting(AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_stream_started_in_the_last_poll_of_a_round_wakes_the_task() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut connection = std::pin::pin!(LateStarter::new(6, false, &done));
        let wakes = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut streams = Streams::default();
        // A round polls the connection three times: polls 1 to 3 (the first starts the
        // stream that never ends), then 4 to 6. The sixth starts the counting stream, and
        // neither the connection nor the set asks for another poll: only the round can.
        assert!(
            streams
                .poll_connection(connection.as_mut(), &mut cx)
                .is_pending()
        );
        wakes.0.store(0, Ordering::SeqCst);
        assert!(
            streams
                .poll_connection(connection.as_mut(), &mut cx)
                .is_pending()
        );
        assert_eq!(streams.len(), 2);
        assert_eq!(done.load(Ordering::SeqCst), 0);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the task is woken for the new stream"
        );
        assert!(
            streams
                .poll_connection(connection.as_mut(), &mut cx)
                .is_ready()
        );
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_that_panics_ends_alone() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut connection = std::pin::pin!(LateStarter::new(1, true, &done));
        let mut streams = Streams::default();
        std::future::poll_fn(|cx| streams.poll_connection(connection.as_mut(), cx)).await;
        // The stream started after the one that panicked still ran.
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_nested_poll_gives_the_outer_gathering_back() {
        let outer = Gathering::start(Vec::new());
        OnConnection.execute(async {});
        let inner = Gathering::start(Vec::new());
        OnConnection.execute(async {});
        OnConnection.execute(async {});
        assert_eq!(inner.finish().len(), 2);
        OnConnection.execute(async {});
        assert_eq!(outer.finish().len(), 2);
        GATHERED.with_borrow(|gathered| assert!(gathered.is_none()));
    }

    #[test]
    fn a_panicking_poll_leaves_nothing_gathering() {
        struct Panics;
        impl Future for Panics {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                panic!("a connection's poll panics");
            }
        }
        let mut streams = Streams::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = streams.poll_connection(std::pin::pin!(Panics), &mut cx);
        }));
        assert!(panicked.is_err());
        GATHERED.with_borrow(|gathered| assert!(gathered.is_none()));
    }
}
