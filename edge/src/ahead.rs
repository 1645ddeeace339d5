//! Connections opened to a backend before the switch that makes it live.
//!
//! A switch to a backend the edge has not served opens one connection to it first
//! ([`crate::edge::Edge::connect_ahead`]), so that the first request after the switch finds
//! it ready. Made during the switch, that connect still sits between the admin call and the
//! first response. `PUT /routes/{service}/next` makes it earlier: once the new slot passed
//! verification, the pipeline names the backend its next switch will name, and the edge opens
//! the connection then and holds it here until that switch takes it. No request is sent on
//! it before the switch.
//!
//! At most one backend is held per service (a later call replaces it). A held connection
//! that the slot closed, or wrote on unasked, is not used (the pool's check, [`Pool::take`]).
//! One that is let go (replaced, or passed over by a switch to another backend) is closed
//! then, and one not taken within the pool's idle timeout is closed by its expiry task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::Backend;
use crate::pool::Pool;

/// The connections held, by service.
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    held: Mutex<BTreeMap<String, Arc<Held>>>,
}

/// One connection held for the next switch of a service. Dropped (and its connection
/// closed) as soon as the map lets it go; its expiry task is stopped with it.
#[derive(Debug)]
pub(crate) struct Held {
    backend: Backend,
    pool: Pool,
    expiry: AbortHandle,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

impl Ahead {
    /// The held connections (a poisoned lock still holds a valid map).
    fn held(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Held>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `stream`, open to `backend`, for the next switch of `service`, in place of any
    /// connection held for it before (which is closed). `expiry` starts the task that lets it
    /// go after the idle timeout ([`Ahead::expire`]); it gets a weak reference, so that only
    /// the map keeps the connection open.
    pub(crate) fn hold(
        &self,
        service: &str,
        backend: Backend,
        stream: TcpStream,
        idle_timeout: Duration,
        expiry: impl FnOnce(Weak<Held>) -> AbortHandle,
    ) {
        let pool = Pool::default();
        pool.put(stream, idle_timeout);
        let held = Arc::new_cyclic(|weak| Held {
            backend,
            pool,
            expiry: expiry(Weak::clone(weak)),
        });
        let replaced = self.held().insert(service.to_owned(), held);
        // Closed outside the lock.
        drop(replaced);
    }

    /// The connection held for `service` when it is open to `backend`, still open, and not
    /// held past `idle_timeout`. Whatever was held for `service` is let go either way: the
    /// switch that calls this names the backend the service goes to.
    pub(crate) fn take(
        &self,
        service: &str,
        backend: &Backend,
        idle_timeout: Duration,
    ) -> Option<TcpStream> {
        let held = self.held().remove(service)?;
        if held.backend != *backend {
            return None;
        }
        held.pool.take(idle_timeout)
    }

    /// Closes `held` if it is still what `service` holds: a connection no switch took within
    /// the idle timeout.
    pub(crate) fn expire(&self, service: &str, held: &Weak<Held>) {
        let mut all = self.held();
        if all
            .get(service)
            .is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), held.as_ptr()))
        {
            let expired = all.remove(service);
            drop(all);
            drop(expired);
        }
    }

    /// The backend a connection is held for, for `service`, and that connection's local port.
    #[cfg(test)]
    pub(crate) fn held_for(&self, service: &str) -> Option<(Backend, u16)> {
        self.held().get(service).map(|h| {
            let ports = h.pool.local_ports();
            assert_eq!(ports.len(), 1, "one connection is held, not {ports:?}");
            (h.backend.clone(), ports[0])
        })
    }
}
