//! Pausing a route: its new requests are held (neither answered nor forwarded) until the
//! operator resumes it, or its deadline passes (`PUT` and `DELETE /routes/{service}/pause`).
//!
//! A request claims its backend under the route table's read lock ([`crate::route`]). On a
//! paused route it gets a [`Hold`] instead, which counts it as held for as long as it
//! lives. The hold waits on the pause's watch channel, never by polling. A resume wakes
//! every held request, and each one claims again: it goes to whatever is live after the
//! resume, a switch made meanwhile included. Once the deadline has passed, the held
//! requests and every new one are answered `503` with `Retry-After`
//! ([`PAUSE_RETRY_AFTER`]) until the route is resumed, and `status` shows the pause as
//! expired. Pausing a paused route again sets its new deadline (the held requests keep
//! waiting). Requests already in flight when the pause begins are not touched, and a
//! drain does not wait for held requests: they have no backend yet.
//!
//! What bounds the held requests: each one is a request on a client connection, so the
//! connection limits (and HTTP/2's streams per connection) bound them. A client that goes
//! away takes its request with it (hyper drops the request; the relay watches the
//! socket), and with it its hold. One exception: a held HTTP/1.1 request whose body is
//! still arriving on the general path is not read meanwhile, so the edge only notices that
//! its client left when the hold ends.
//!
//! A pause is saved with the routes, as its deadline ([`crate::state`]). An edge that
//! restarts or takes over keeps the route paused until that deadline, and expired after it.
//! The requests held by an edge that stops or hands over are answered 503 with
//! `Retry-After` (on HTTP/1.1 their connection then closes). A request cannot move to
//! another process, and the client's next try reaches the new one, which is still paused.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::route::Closed;

/// The longest pause: past it, a pause is an outage, not a pause.
pub const MAX_PAUSE: Duration = Duration::from_secs(60 * 60);

/// The `Retry-After` of the 503s of a pause whose deadline passed, and of the held
/// requests of an edge that stops.
pub const PAUSE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How many holds in a row one request waits through (paused, resumed, paused again…)
/// before it is answered 503 all the same: each wait is bounded by its pause's deadline,
/// and this bounds their number.
pub(crate) const MAX_HOLDS: usize = 8;

/// Checks a pause asked for over the admin API: more than zero, at most [`MAX_PAUSE`].
pub fn checked_pause_ms(timeout_ms: u64) -> Result<Duration, String> {
    let timeout = Duration::from_millis(timeout_ms);
    if timeout.is_zero() || timeout > MAX_PAUSE {
        return Err(format!(
            "`timeout_ms` must be 1 to {} (1 hour), not {timeout_ms}",
            MAX_PAUSE.as_millis()
        ));
    }
    Ok(timeout)
}

/// Where a pause stands, as its watch channel carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// New requests are held until `until` (on the runtime's clock; `deadline` is the
    /// same instant on the wall clock, for `status` and `routes.json`).
    Holding { until: Instant, deadline: Timestamp },
    /// Resumed: the held requests claim again.
    Resumed,
}

/// The pause of one route.
#[derive(Debug)]
pub(crate) struct Pause {
    /// The paused service, for the log.
    service: String,
    state: watch::Sender<State>,
    /// Requests held right now.
    held: AtomicUsize,
}

/// A copy of a pause, for status answers and for persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseView {
    /// When the pause ends without a resume.
    pub deadline: Timestamp,
    /// Requests held right now.
    pub held: usize,
    /// The deadline passed: requests are answered 503 until the route is resumed.
    pub expired: bool,
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The route was resumed: claim again.
    Resumed,
    /// The deadline passed first: answer 503.
    Expired,
    /// The edge stops (or hands over) first: answer 503.
    Stopping,
}

impl Pause {
    /// A pause of `service` for `timeout` from now.
    pub(crate) fn starting(service: &str, timeout: Duration) -> Arc<Pause> {
        Pause::with_state(service, holding(timeout))
    }

    fn with_state(service: &str, state: State) -> Arc<Pause> {
        let (state, _) = watch::channel(state);
        Arc::new(Pause {
            service: service.to_string(),
            state,
            held: AtomicUsize::new(0),
        })
    }

    /// A saved pause that ends at `deadline` (wall clock): expired when that has passed,
    /// and never longer than [`MAX_PAUSE`] from now (a clock set back, or a file not
    /// written by an edge).
    pub(crate) fn until_deadline(service: &str, deadline: Timestamp) -> Arc<Pause> {
        let left =
            Duration::try_from(deadline.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);
        let state = if left > MAX_PAUSE {
            holding(MAX_PAUSE)
        } else {
            State::Holding {
                until: Instant::now() + left,
                deadline,
            }
        };
        Pause::with_state(service, state)
    }

    /// Sets a new deadline, `timeout` from now; the held requests keep waiting. Returns the
    /// pause, with the requests held when the call came: counted before the change, as a
    /// deadline that has already passed lets them go on other threads at once (see
    /// [`Pause::resume`]).
    pub(crate) fn extend(&self, timeout: Duration) -> PauseView {
        let held = self.held.load(Ordering::SeqCst);
        self.state.send_replace(holding(timeout));
        PauseView {
            held,
            ..self.view()
        }
    }

    /// Lets the held requests go, and says how many there were. Counted before they go: a
    /// released request on another thread claims again, and drops its hold, at once. (The
    /// caller holds the table's write lock, so no request is held meanwhile.)
    pub(crate) fn resume(&self) -> usize {
        let held = self.held.load(Ordering::SeqCst);
        self.state.send_replace(State::Resumed);
        held
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        match *self.state.borrow() {
            State::Holding { until, .. } => Instant::now() >= until,
            State::Resumed => false,
        }
    }

    pub(crate) fn view(&self) -> PauseView {
        let (deadline, expired) = match *self.state.borrow() {
            State::Holding { until, deadline } => (deadline, Instant::now() >= until),
            State::Resumed => (Timestamp::now(), false),
        };
        PauseView {
            deadline,
            held: self.held.load(Ordering::SeqCst),
            expired,
        }
    }

    /// Holds one request: counted as held until the hold is dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        self.held.fetch_add(1, Ordering::SeqCst);
        Hold {
            pause: Arc::clone(self),
        }
    }
}

/// The state of a pause of `timeout` from now.
fn holding(timeout: Duration) -> State {
    let length = SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX);
    State::Holding {
        until: Instant::now() + timeout,
        deadline: Timestamp::now()
            .saturating_add(length)
            .unwrap_or(Timestamp::MAX),
    }
}

/// A request held by a paused route. Dropping it (the client went away) counts it out.
#[derive(Debug)]
pub struct Hold {
    pause: Arc<Pause>,
}

impl Hold {
    /// What a request that was held [`MAX_HOLDS`] times in a row gets: the 503 of a pause
    /// past its deadline.
    pub(crate) fn gave_up(&self) -> Closed {
        Closed::PauseExpired {
            service: self.pause.service.clone(),
        }
    }

    /// Waits until the route is resumed, its deadline passes, or `stopping` resolves.
    ///
    /// Each turn of the loop follows a change of the pause (an admin call that resumed or
    /// extended it), and the wait of each has the pause's deadline.
    pub(crate) async fn wait(&self, stopping: impl Future<Output = ()>) -> Held {
        tokio::pin!(stopping);
        let mut state = self.pause.state.subscribe();
        loop {
            let until = match *state.borrow_and_update() {
                State::Resumed => return Held::Resumed,
                State::Holding { until, .. } => until,
            };
            tokio::select! {
                biased;
                changed = state.changed() => {
                    if changed.is_err() {
                        // The pause is gone with its route: claim again.
                        return Held::Resumed;
                    }
                }
                () = tokio::time::sleep_until(until) => return Held::Expired,
                () = &mut stopping => return Held::Stopping,
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.pause.held.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
