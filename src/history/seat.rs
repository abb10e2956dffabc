//! The recorder seat of a prefix: the crate's own [election](crate::lock::Election) that picks
//! the one handle, in the whole fleet, which records the prefix's history.
//!
//! Every handle that may record campaigns in the election
//! `<ns>/__coordination/history/<prefix>/recorder/` on a lease of its own (TTL
//! [`HistoryOptions::with_recorder_ttl`](super::HistoryOptions::with_recorder_ttl), 10 s by
//! default), so the keys sit under the history prefix whose permission recording needs anyway.
//! The candidate with the lowest `create_revision` leads and records; the others stand by in
//! the queue. When the leader's process dies its lease expires within the TTL, its key goes,
//! and the next candidate leads; a handle that is dropped resigns at once. A handle that loses
//! its lease (partition, a pause longer than the TTL) stops recording, opens a new lease and
//! queues again.
//!
//! The seat only says who records. Records stay create-if-absent transactions, so two handles
//! that both believe they lead for a moment (an old leader paused past its lease) still write
//! each version once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::etcd::Backoff;
use crate::lock::{Election, Session, SessionOptions};

/// How long the bind waits to learn whether its handle leads, before returning as a standby.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// Where a handle stands in its prefix's recorder election.
#[derive(Clone, Debug)]
pub(crate) enum SeatState {
    /// No lease yet (opening one, or waiting to try again).
    Opening,
    /// Queued on the lease `lease`: another candidate leads (or will in a moment).
    Campaigning { lease: i64 },
    /// This handle leads: it records. `token` is its key's `create_revision`, new for every
    /// term.
    Leading { token: i64 },
    /// etcd refused the campaign for a missing permission: this handle never records.
    Refused(Error),
}

/// A handle's candidacy: the task that campaigns (and campaigns again after a lost lease), and
/// what it reports. Dropping it stops the task, which resigns (or revokes the lease) in the
/// background.
pub(crate) struct Seat {
    election: Election,
    state: watch::Receiver<SeatState>,
    task: JoinHandle<()>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Seat {
    /// Starts campaigning in the election `name` (namespace-relative, see
    /// [`Coordinator::election`]) on leases of `ttl`.
    pub(crate) fn start(coord: &Coordinator, name: &str, ttl: Duration) -> Seat {
        let election = coord.election(name);
        let (tx, state) = watch::channel(SeatState::Opening);
        let task = tokio::spawn(campaign(
            coord.clone(),
            election.clone(),
            SessionOptions::new().with_lease_ttl(ttl),
            tx,
        ));
        Seat {
            election,
            state,
            task,
        }
    }

    /// The state now.
    pub(crate) fn state(&self) -> SeatState {
        self.state.borrow().clone()
    }

    /// The next state once it changes. Pending forever once the task has ended (it only ends
    /// after [`SeatState::Refused`], which is then the last state seen).
    ///
    /// # Cancel safety
    /// Cancel-safe: a change not yet returned is returned by the next call.
    pub(crate) async fn changed(&mut self) -> SeatState {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.state.borrow_and_update().clone()
    }

    /// For the bind: waits (up to [`BIND_WAIT`]) until it is known whether this handle leads.
    /// Returns the state then: [`SeatState::Leading`] if it does.
    pub(crate) async fn settle(&mut self) -> SeatState {
        let deadline = tokio::time::Instant::now() + BIND_WAIT;
        loop {
            let state = self.state.borrow_and_update().clone();
            match state {
                SeatState::Leading { .. } | SeatState::Refused(_) => return state,
                SeatState::Campaigning { lease } => {
                    if let Ok(Some(leader)) = self.election.leader().await {
                        if leader.lease != lease {
                            return state;
                        }
                    }
                }
                SeatState::Opening => {}
            }
            let wake = tokio::time::sleep(Duration::from_millis(10));
            tokio::select! {
                _ = self.state.changed() => {}
                () = wake => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.state.borrow_and_update().clone();
            }
        }
    }
}

/// Opens a lease, campaigns, reports leadership until it is lost, and starts again; ends only
/// when etcd refuses the campaign for a missing permission.
async fn campaign(
    coord: Coordinator,
    election: Election,
    options: SessionOptions,
    tx: watch::Sender<SeatState>,
) {
    let name = election.name().to_string();
    let value = format!("pid {}", std::process::id());
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let refused = |error: &Error| {
            if error.is_permission_denied() {
                tx.send_replace(SeatState::Refused(error.clone()));
                true
            } else {
                false
            }
        };
        let elected: Result<(Session, crate::lock::Leadership)> = async {
            let session = Session::open(&coord, options).await?;
            tx.send_replace(SeatState::Campaigning {
                lease: session.lease_id(),
            });
            let leadership = session.election(&name).campaign(value.clone()).await?;
            Ok((session, leadership))
        }
        .await;
        let (session, leadership) = match elected {
            Ok(elected) => elected,
            Err(error) => {
                if refused(&error) {
                    return;
                }
                let delay = backoff.next_delay();
                tracing::warn!(election = %name, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot campaign for the history recorder seat");
                tx.send_replace(SeatState::Opening);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        let token = leadership.fencing_token();
        tracing::info!(election = %name, token, lease = session.lease_id(), "this handle records the prefix's history");
        tx.send_replace(SeatState::Leading { token });
        let reason = leadership.lost().await;
        tracing::warn!(election = %name, token, reason = ?reason, "lost the history recorder seat; campaigning again");
        tx.send_replace(SeatState::Opening);
        drop(leadership);
        drop(session);
    }
}
