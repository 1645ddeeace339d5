//! Idle keep-alive connections to one slot, for the HTTP/1.1 relay ([`crate::relay`]).
//!
//! Each `ActiveBackend` (backend.rs) owns one pool, so a slot's connections close
//! when that slot is replaced and drained, and a slot reused by a later release starts
//! with fresh ones. The newest idle connection is reused first (it is the least likely to
//! have been closed by the slot); connections idle for longer than the pool's idle timeout
//! are closed when the pool is next touched.
//!
//! A connection the slot closed while it sat in the pool is told apart without a system
//! call in the common case: the runtime already knows whether the socket became readable
//! (an idle HTTP/1.1 connection only becomes readable when the slot closes it or breaks
//! protocol), so only a readable one is read to find out, and then dropped.
//!
//! A connection is registered with the epoll of the serving thread that opened it
//! ([`crate::workers`]). A thread takes the newest of its own; only when it has none idle does
//! it take the newest of another thread's and move it to its own epoll, so that no thread's
//! requests wait on another thread's event loop. A move costs two `epoll_ctl` calls: a thread
//! that looked for its own among the last few only moved about one connection in four under
//! an HTTP/2 load, where the threads return connections in turn (`bench/RESULTS.md`).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// At most this many idle connections are kept per slot; the oldest go first.
pub(crate) const MAX_IDLE: usize = 512;

#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<VecDeque<Idle>>,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
    /// The serving thread whose epoll the socket is registered with (`None`: another
    /// runtime's, such as the admin API's).
    home: Option<usize>,
}

impl Pool {
    /// The idle connections, oldest first (a poisoned lock still holds a valid queue).
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection that is still open, if any: the newest of this thread's own,
    /// else the newest, moved to this thread's epoll.
    pub(crate) fn take(&self, idle_timeout: Duration) -> Option<TcpStream> {
        let here = crate::workers::current();
        let mut idle = self.idle();
        if !settle(&mut idle, idle_timeout) {
            return None;
        }
        let newest = idle.len() - 1;
        for at in (0..=newest).rev() {
            if idle[at].home == here {
                // The newest is known to be open; an older one is looked at now.
                if at == newest || still_open(&idle[at].stream) {
                    return idle.remove(at).map(|own| own.stream);
                }
                idle.remove(at);
            }
        }
        let other = idle.pop_back()?;
        drop(idle);
        match crate::workers::move_here(other.stream) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::debug!("cannot move an idle slot connection between threads: {e}");
                None
            }
        }
    }

    /// Keeps `stream`, idle, for the next request.
    pub(crate) fn put(&self, stream: TcpStream, idle_timeout: Duration) {
        self.put_homed(stream, idle_timeout, crate::workers::current());
    }

    /// [`Pool::put`] for a stream registered with serving thread `home`'s epoll (`None`:
    /// with another runtime's), not necessarily this thread's.
    pub(crate) fn put_homed(&self, stream: TcpStream, idle_timeout: Duration, home: Option<usize>) {
        let now = Instant::now();
        let mut idle = self.idle();
        expire(&mut idle, now, idle_timeout);
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle {
            stream,
            since: now,
            home,
        });
    }

    /// Whether an idle connection that is still open is held. Connections found closed,
    /// or idle past `idle_timeout`, are dropped on the way.
    pub(crate) fn has_open(&self, idle_timeout: Duration) -> bool {
        settle(&mut self.idle(), idle_timeout)
    }

    /// Moves `other`'s idle connections into this pool, each with the time it has been
    /// idle, as older than the ones held here: for a switch back to a slot whose replaced
    /// backend still holds connections to it.
    pub(crate) fn adopt(&self, other: &Pool) {
        let adopted = std::mem::take(&mut *other.idle());
        if adopted.is_empty() {
            return;
        }
        let mut idle = self.idle();
        for conn in adopted.into_iter().rev() {
            if idle.len() >= MAX_IDLE {
                break;
            }
            idle.push_front(conn);
        }
    }

    /// Whether no idle connection is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.idle().is_empty()
    }

    /// Idle connections held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle().len()
    }

    /// The serving threads the idle connections are registered with, each once, in order.
    #[cfg(test)]
    pub(crate) fn homes(&self) -> Vec<Option<usize>> {
        let mut homes: Vec<_> = self.idle().iter().map(|idle| idle.home).collect();
        homes.sort_unstable();
        homes.dedup();
        homes
    }

    /// The local ports of the idle connections, oldest first.
    #[cfg(test)]
    pub(crate) fn local_ports(&self) -> Vec<u16> {
        self.idle()
            .iter()
            .map(|i| i.stream.local_addr().unwrap().port())
            .collect()
    }
}

/// Drops the expired connections, then closed ones from the newest end, until the newest is
/// open. Whether one is.
fn settle(idle: &mut VecDeque<Idle>, idle_timeout: Duration) -> bool {
    expire(idle, Instant::now(), idle_timeout);
    while let Some(newest) = idle.back() {
        if still_open(&newest.stream) {
            return true;
        }
        idle.pop_back();
    }
    false
}

/// Drops the connections idle for longer than `idle_timeout` (the oldest are in front).
fn expire(idle: &mut VecDeque<Idle>, now: Instant, idle_timeout: Duration) {
    while idle
        .front()
        .is_some_and(|oldest| now.saturating_duration_since(oldest.since) >= idle_timeout)
    {
        idle.pop_front();
    }
}

/// Whether an idle connection can carry a request: not closed by the slot, and with no
/// unasked-for bytes waiting.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// Pools an open connection, then one the slot closes at once. Returns the open one's
    /// port, and its slot side, to be kept so that it stays open.
    async fn open_then_closed(listener: &TcpListener, pool: &Pool) -> (u16, TcpStream) {
        let (open, server_open) = pair(listener).await;
        let open_port = open.local_addr().unwrap().port();
        let (closed, server_closed) = pair(listener).await;
        pool.put(open, Duration::from_secs(60));
        pool.put(closed, Duration::from_secs(60));
        drop(server_closed);
        (open_port, server_open)
    }

    #[tokio::test]
    async fn a_connection_the_slot_closed_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (open_port, _server_open) = open_then_closed(&listener, &pool).await;
        // The close reaches the pooled socket through the runtime: wait for it to be seen.
        let taken = loop {
            let taken = pool.take(Duration::from_secs(60)).unwrap();
            if taken.local_addr().unwrap().port() == open_port {
                break taken;
            }
            // Still counted open: the FIN has not been seen yet. Put it back and retry.
            pool.put(taken, Duration::from_secs(60));
            tokio::task::yield_now().await;
        };
        assert_eq!(taken.local_addr().unwrap().port(), open_port);
        assert_eq!(pool.len(), 0, "the closed connection was dropped");
    }

    #[tokio::test]
    async fn a_connection_with_unasked_bytes_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (client, mut server) = pair(&listener).await;
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // Wait until the bytes are readable on the client side before pooling it.
        client.readable().await.unwrap();
        pool.put(client, Duration::from_secs(60));
        assert!(pool.take(Duration::from_secs(60)).is_none());
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_and_the_newest_is_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (first, _s1) = pair(&listener).await;
        let (second, _s2) = pair(&listener).await;
        let second_port = second.local_addr().unwrap().port();
        pool.put(first, Duration::from_secs(60));
        pool.put(second, Duration::from_secs(60));
        let newest = pool.take(Duration::from_secs(60)).unwrap();
        assert_eq!(newest.local_addr().unwrap().port(), second_port);
        assert_eq!(pool.len(), 1);
        assert!(
            pool.take(Duration::ZERO).is_none(),
            "an expired connection was reused"
        );
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn adopted_connections_come_as_older_than_the_pools_own() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (earlier, pool) = (Pool::default(), Pool::default());
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..3 {
            let (client, server) = pair(&listener).await;
            servers.push(server);
            ports.push(client.local_addr().unwrap().port());
            if ports.len() < 3 {
                earlier.put(client, Duration::from_secs(60));
            } else {
                pool.put(client, Duration::from_secs(60));
            }
        }
        pool.adopt(&earlier);
        assert_eq!(earlier.len(), 0);
        assert_eq!(pool.local_ports(), [ports[0], ports[1], ports[2]]);
        // The pool's own newest goes first, then the adopted ones, newest first.
        for port in ports.iter().rev() {
            let taken = pool.take(Duration::from_secs(60)).unwrap();
            assert_eq!(taken.local_addr().unwrap().port(), *port);
        }
    }

    #[tokio::test]
    async fn an_open_idle_connection_is_found_and_closed_ones_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        assert!(!pool.has_open(Duration::from_secs(60)));
        let (open_port, _server_open) = open_then_closed(&listener, &pool).await;
        // The close reaches the pooled socket through the runtime: look until it is seen.
        for _ in 0..100_000 {
            assert!(pool.has_open(Duration::from_secs(60)));
            if pool.len() < 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.local_ports(), [open_port], "the closed one was kept");
        assert!(
            !pool.has_open(Duration::ZERO),
            "an expired connection counted as open"
        );
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_max_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            let (client, server) = pair(&listener).await;
            servers.push(server);
            pool.put(client, Duration::from_secs(60));
        }
        assert_eq!(pool.len(), MAX_IDLE);
    }
}
