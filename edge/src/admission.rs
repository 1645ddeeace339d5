//! Which client connections the edge takes: at most so many at once, and so many from one
//! address, so that one client cannot hold every connection the edge can serve.
//!
//! A connection over either limit is answered `503` with `Connection: close` at once,
//! without reading its request, and closed; the accept loop goes on accepting, so the
//! kernel's accept queue never fills (a full queue would refuse everyone alike). A TLS
//! connection over a limit is closed without a handshake: answering it would cost the edge
//! a handshake per refused connection, which is the cost the limit exists to bound.
//!
//! IPv6 clients are counted by their /64 prefix, the block one subscriber usually gets, so
//! that a client cannot step around its limit by using more addresses of its own block.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// What a connection over a limit is told.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 45\r\n\r\n503 Service Unavailable\ntoo many connections\n";
/// How long a refused connection is given to read its answer and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once; past this, one is closed as soon as answered.
const MAX_LINGERING: usize = 256;

/// The connection limits, and the connections open now.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    lingering: Arc<Semaphore>,
}

/// One admitted connection; it stops counting when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_client,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
        })
    }

    /// Counts a new connection from `ip`, or `None` when it is over a limit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let client = client_key(ip);
        let mut per_client = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = per_client.entry(client).or_insert(0);
        if *open >= self.max_per_client {
            drop(per_client);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        *open += 1;
        Some(Admitted {
            admission: Arc::clone(self),
            client,
        })
    }

    /// Answers a plaintext connection over a limit with 503 and closes it, without
    /// reading its request or holding up the accept loop.
    pub(crate) fn refuse(&self, mut stream: TcpStream) {
        // A fresh socket's send buffer takes the whole answer at once.
        let _ = stream.try_write(REFUSAL);
        let Ok(permit) = Arc::clone(&self.lingering).try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            // Reading what the client sent until it closes keeps the close from becoming
            // a reset that could discard the answer before the client read it.
            let _ = stream.shutdown().await;
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                let mut sink = [0u8; 512];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            drop(permit);
        });
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_client = admission
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = per_client.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// What one client is counted by: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_in_total_and_per_client_and_free_on_drop() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = admission.admit(a).expect("first from a");
        let a2 = admission.admit(a).expect("second from a");
        assert!(
            admission.admit(a).is_none(),
            "a third from a is over its limit"
        );
        let b1 = admission.admit(b).expect("first from b");
        assert!(admission.admit(b).is_none(), "over the total");
        assert_eq!(admission.open(), 3);
        drop(a1);
        assert!(admission.admit(b).is_some(), "a slot freed");
        drop((a2, b1));
        assert_eq!(admission.open(), 0);
        assert!(admission.per_client.lock().unwrap().is_empty());
    }

    #[test]
    fn the_refusal_is_framed_by_its_length() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let admission = Admission::new(10, 1);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_block: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_block: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = admission.admit(one).unwrap();
        assert!(admission.admit(same_block).is_none());
        assert!(admission.admit(other_block).is_some());
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        let _v4 = admission.admit("192.0.2.9".parse().unwrap()).unwrap();
        assert!(
            admission.admit(mapped).is_none(),
            "a mapped address is its IPv4 one"
        );
    }
}
