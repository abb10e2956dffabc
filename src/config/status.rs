//! How current a handle's snapshot is: live, reconnecting, or stale.

use std::time::SystemTime;

use crate::error::Error;
use crate::etcd::follow::ResyncReason;

/// The state of a handle's connection to etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchState {
    /// The watch is open: every change under the prefix is being applied within milliseconds.
    Live,
    /// The watch failed (etcd down, restarted, hung or partitioned away) and is being re-opened
    /// with backoff; the snapshot is the last one applied and may be out of date.
    Reconnecting,
    /// Bound without reaching etcd (cold start): the snapshot comes from defaults, the file,
    /// the last-known-good cache and the environment; etcd is retried in the background.
    Stale,
    /// Made by [`ConfigHandle::fixed`](crate::ConfigHandle::fixed): no etcd; the value changes only through
    /// [`ConfigHandle::set_fixed`](crate::ConfigHandle::set_fixed).
    Fixed,
}

/// A handle's status, from [`ConfigHandle::status`](crate::ConfigHandle::status) and
/// [`ConfigEvent::Status`](crate::ConfigEvent::Status) (sent on every change of state).
#[derive(Clone, Debug)]
pub struct ConfigStatus {
    /// Live, reconnecting or stale.
    pub state: WatchState,
    /// When the handle entered `state` (for `Reconnecting` and `Stale`: since when the snapshot
    /// may be out of date).
    pub since: SystemTime,
    /// The last etcd revision processed (applied or rejected); 0 if etcd was never reached.
    pub revision: i64,
    /// The most recent error of the watch (connection, timeout, hung server), if any since the
    /// handle was last live.
    pub last_error: Option<Error>,
    /// The last time the prefix was read again instead of followed by events, and the
    /// revision it was read at (see [`ResyncReason`]); `None` if it never was.
    pub last_resync: Option<(ResyncReason, i64)>,
    /// How many times the handle opened its etcd watch since bind, the first included. It
    /// grows by one per reconnection; a number that keeps growing while etcd is up means
    /// the watch cannot stay open.
    pub watch_opens: u64,
}

impl ConfigStatus {
    pub(crate) fn new(state: WatchState, revision: i64, last_error: Option<Error>) -> Self {
        ConfigStatus {
            state,
            since: SystemTime::now(),
            revision,
            last_error,
            last_resync: None,
            watch_opens: 0,
        }
    }
}
