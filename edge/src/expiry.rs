//! The edge's own withdrawal of candidates whose lease lapsed (see [`crate::lease`]): a task
//! that sleeps until the first lease ends, then withdraws through the one route change.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::EdgeError;
use crate::connection::{Stop, stopped};
use crate::edge::Edge;
use crate::lease::{LEASE_CHECK_INTERVAL, until};

/// Withdraws each candidate whose lease lapsed, as soon as it lapses, until the edge stops
/// or hands over (the next edge process runs its own).
pub(crate) async fn expire_lapsed(edge: Arc<Edge>, mut stop: watch::Receiver<Stop>) {
    loop {
        // Registered before the table is read, so a change made meanwhile is not missed.
        let changed = edge.routes_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = Timestamp::now();
        let next = edge.table().next_lease_end();
        if next.is_none_or(|at| at > now) {
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep(until(at, now).min(LEASE_CHECK_INTERVAL)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped(&mut stop) => return,
                () = &mut changed => {}
                () = sleep => {}
            }
            continue;
        }
        let withdrawn = edge
            .change(|table| Ok::<_, EdgeError>(table.expire_leases(Timestamp::now())))
            .await;
        match withdrawn {
            Ok(Ok(withdrawn)) => {
                for (service, backend) in withdrawn {
                    tracing::warn!(
                        %service, slot = %backend.slot, release = %backend.release,
                        addr = %backend.addr,
                        "the candidate's lease lapsed (the release that held it stopped \
                         renewing it); withdrawn, all traffic is on the live slot"
                    );
                }
            }
            // Withdrawn all the same; a restart does not restore a lapsed candidate.
            Ok(Err(e)) => tracing::error!(
                "candidates whose lease lapsed were withdrawn, but the routes were not saved: {e}"
            ),
            // Handed over: the new process holds the table now.
            Err(_) => return,
        }
    }
}
