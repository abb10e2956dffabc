//! [`Session`]: one etcd lease, kept alive in the background, that lock and leader keys live on.
//!
//! The lease is the crate's [`Lease`]: renewed every TTL/3, the keepalive stream re-opened
//! after errors, and the time it is *known* to live tracked: a keepalive sent at `t` and
//! answered with TTL `T` proves the lease lives until at least `t + T` (the server renewed it
//! after `t`). [`Session::valid_until`] is that instant minus a safety margin; when it passes
//! without a new confirmation the session counts as lost ([`LostReason::Unconfirmed`]),
//! because the lease may be gone and another process may hold the lock. The lock code adds
//! [`LostReason::KeyDeleted`] on top, from the watch of its own key.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::lease::{Lease, LeaseLost, LeaseOptions, Unconfirmed};

/// The lease TTL of a [`Session`], lock or campaign when none is given: 10 s, as `etcdctl lock`
/// uses.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Why a session, lock or leadership is no longer safe to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// etcd reported the lease gone: it expired (no keepalive reached etcd within its TTL) or
    /// someone revoked it (`etcdctl lease revoke`).
    LeaseExpired,
    /// No keepalive was confirmed before [`Session::valid_until`] (TTL minus the margin after
    /// the last confirmed one): etcd is unreachable or this process was paused. The lease may
    /// still exist, but nothing proves it any more; the session revokes it when it can.
    Unconfirmed,
    /// The lock or leader key was deleted: force-released by an operator
    /// ([`Coordinator::force_unlock`], `etcdctl del`) or resigned through another handle.
    KeyDeleted,
    /// The session was closed through another handle ([`Session::close`]).
    Closed,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::LeaseExpired => "lease expired or revoked",
            LostReason::Unconfirmed => "lease keepalive not confirmed in time",
            LostReason::KeyDeleted => "key deleted",
            LostReason::Closed => "session closed",
        })
    }
}

impl From<LeaseLost> for LostReason {
    fn from(lost: LeaseLost) -> Self {
        match lost {
            LeaseLost::Expired => LostReason::LeaseExpired,
            LeaseLost::Unconfirmed => LostReason::Unconfirmed,
            LeaseLost::Closed => LostReason::Closed,
        }
    }
}

impl LostReason {
    /// The error an operation that needs the lost lease or key returns.
    pub(crate) fn into_error(self, what: &str) -> Error {
        let kind = match self {
            LostReason::LeaseExpired | LostReason::KeyDeleted => ErrorKind::NotFound,
            LostReason::Unconfirmed => ErrorKind::Unavailable,
            LostReason::Closed => ErrorKind::Closed,
        };
        Error::new(kind, format!("{what}: {self}"))
    }
}

/// Options for [`Session::open`] and [`Coordinator::session`]: the lease TTL and the safety
/// margin. Build with [`SessionOptions::new`] and the `with_*` methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    lease_ttl: Duration,
    margin: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions::new()
    }
}

impl SessionOptions {
    /// Defaults: a lease TTL of [`DEFAULT_TTL`] (10 s) and a margin of a fifth of the granted
    /// TTL.
    pub fn new() -> Self {
        SessionOptions {
            lease_ttl: DEFAULT_TTL,
            margin: None,
        }
    }

    /// The requested lease TTL (see [`with_lease_ttl`](Self::with_lease_ttl)).
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Sets the lease TTL to request: rounded up to whole seconds and at least 1 s (etcd's
    /// unit; the server may raise tiny TTLs to its minimum, about 2 s, and
    /// [`Session::granted_ttl`] says what it granted). If this process stops renewing (crash,
    /// pause, partition), its keys are deleted after at most this long.
    #[must_use]
    pub fn with_lease_ttl(mut self, lease_ttl: Duration) -> Self {
        self.lease_ttl = lease_ttl;
        self
    }

    /// How long before the proven lease expiry the session counts as lost when keepalives
    /// cannot be confirmed (default TTL/5; capped at TTL/2). It covers clock-rate differences
    /// and the time a critical section needs to notice [`Session::lost`] and stop.
    #[must_use]
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }
}

/// A lease kept alive in the background, on which lock and leader keys are created.
///
/// Locks and campaigns made through one session share its lease: acquiring a lock the session
/// already holds returns at once with the same key and fencing token (re-entrancy, as in Go's
/// `concurrency.Mutex`); the key is deleted when the last guard for it is released.
///
/// `Session` is a cheap handle (clone it freely); guards keep it alive. When the last handle
/// and guard are dropped, the lease is revoked in the background; [`close`](Self::close)
/// revokes it now. A session that is lost ([`lost`](Self::lost)) stays lost: open a new one.
///
/// ```no_run
/// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
/// use coordination::lock::SessionOptions;
/// use std::time::Duration;
///
/// let options = SessionOptions::new().with_lease_ttl(Duration::from_secs(10));
/// let session = coord.session(options).await?;
/// let guard = session.lock("jobs/rebalance").await?;
/// // ... critical section ...
/// guard.unlock().await?;
/// session.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) coord: Coordinator,
    pub(crate) client: Client,
    /// The lease; dropping it (with the last handle and guard) revokes it in the background.
    pub(crate) lease: Lease,
    /// Per key: how many guards and pending acquisitions of this session use it. The async
    /// mutex also serialises the create and delete requests for the key.
    keys: StdMutex<HashMap<String, KeyRef>>,
}

/// A per-key user count, shared by the guards of one session on one key.
pub(crate) type KeyRef = Arc<tokio::sync::Mutex<u32>>;

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.lease_id()))
            .field("granted_ttl", &self.granted_ttl())
            .field("margin", &self.margin())
            .field("lost", &self.lost_reason())
            .finish()
    }
}

impl Coordinator {
    /// Opens a [`Session`] on this connection: the same as [`Session::open`]`(self, options)`.
    ///
    /// # Errors
    /// As [`Session::open`].
    ///
    /// # Cancel safety
    /// As [`Session::open`]: a lease granted before the future is dropped is not kept alive and
    /// expires within its TTL.
    pub async fn session(&self, options: SessionOptions) -> Result<Session> {
        Session::open(self, options).await
    }
}

impl Session {
    /// Grants a lease of [`options.lease_ttl()`](SessionOptions::lease_ttl) and starts keeping
    /// it alive (every TTL/3, re-opening the keepalive stream after errors with backoff).
    ///
    /// # Errors
    /// The etcd error kinds if the lease cannot be granted ([`ErrorKind::Unavailable`],
    /// [`ErrorKind::Connection`], [`ErrorKind::Timeout`], [`ErrorKind::Auth`]).
    ///
    /// # Cancel safety
    /// Dropping the future leaves no session behind: a lease etcd granted before that is not
    /// kept alive, holds no keys and expires within its TTL.
    pub async fn open(coord: &Coordinator, options: SessionOptions) -> Result<Session> {
        let lease = Lease::grant(
            coord.etcd(),
            LeaseOptions {
                ttl: options.lease_ttl,
                margin: options.margin,
                unconfirmed: Unconfirmed::Lose,
            },
        )
        .await?;
        Ok(Session {
            inner: Arc::new(SessionInner {
                coord: coord.clone(),
                client: coord.client(),
                lease,
                keys: StdMutex::new(HashMap::new()),
            }),
        })
    }

    /// The lease ID. Lock keys of this session are `NAME/{lease_id:x}`.
    pub fn lease_id(&self) -> i64 {
        self.inner.lease.id()
    }

    /// The lease TTL etcd granted (whole seconds; may exceed the requested
    /// [`lease_ttl`](SessionOptions::lease_ttl)). Fixed for the session's life.
    pub fn granted_ttl(&self) -> Duration {
        self.inner.lease.ttl()
    }

    /// The safety margin (see [`SessionOptions::with_margin`]).
    pub fn margin(&self) -> Duration {
        self.inner.lease.margin()
    }

    /// The instant until which the lease is proven to live, minus the margin: the last
    /// confirmed keepalive's send time + TTL − margin. Work that relies on the lease must be
    /// finished by then; normally it moves forward every TTL/3.
    pub fn valid_until(&self) -> Instant {
        self.inner.lease.valid_until()
    }

    /// Why the session is lost, or `None` while it is alive. Passing
    /// [`valid_until`](Self::valid_until) counts as lost ([`LostReason::Unconfirmed`]) even if
    /// the background task has not run yet (e.g. right after this process was resumed).
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.inner.lease.lost_reason().map(LostReason::from)
    }

    /// `true` once the session is lost (see [`lost_reason`](Self::lost_reason)).
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when the session is lost: the lease is known gone, keepalives could not be
    /// confirmed before [`valid_until`](Self::valid_until), or the session was closed.
    /// Resolves at once if already lost, and keeps resolving with the same reason after that.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes the session, so it can be dropped (e.g. as the losing
    /// branch of `tokio::select!`) and called again without missing the loss.
    pub async fn lost(&self) -> LostReason {
        self.inner.lease.lost().await.into()
    }

    /// Sends one keepalive now and waits for etcd's answer, moving
    /// [`valid_until`](Self::valid_until) forward. Returns the granted TTL (whole seconds).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the lease is gone (the session is then lost);
    /// [`ErrorKind::Closed`] if the session was closed; [`ErrorKind::Unavailable`] if it was
    /// lost unconfirmed; the etcd error kinds if etcd cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future may leave the keepalive unsent or its answer unread,
    /// which only means `valid_until` does not move for it; the background keepalive goes on.
    pub async fn renew(&self) -> Result<Duration> {
        self.on_lease("renewing the session lease", self.inner.lease.renew())
            .await
    }

    /// The lease's remaining TTL as etcd reports it now (one request; whole seconds, rounded
    /// down; at most [`granted_ttl`](Self::granted_ttl)).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the lease is gone (the session is then lost); the etcd error
    /// kinds if etcd cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read, nothing changes.
    pub async fn remaining_ttl(&self) -> Result<Duration> {
        self.on_lease(
            "reading the session lease TTL",
            self.inner.lease.time_to_live(),
        )
        .await
    }

    /// Runs a request on the lease unless the session is lost; an error that lost it is
    /// reported as the loss.
    async fn on_lease(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<Duration>>,
    ) -> Result<Duration> {
        if let Some(reason) = self.lost_reason() {
            return Err(reason.into_error(what));
        }
        request
            .await
            .map_err(|error| self.lost_reason().map_or(error, |r| r.into_error(what)))
    }

    /// Revokes the lease now: every key of this session (lock, waiter and leader keys) is
    /// deleted, and every guard on it reports [`LostReason::Closed`].
    ///
    /// # Errors
    /// The etcd error kinds if the revoke fails; the lease then expires on its own within the
    /// TTL (keepalives have stopped).
    ///
    /// # Cancel safety
    /// The session is closed from the first poll on (keepalives stop, guards report
    /// [`LostReason::Closed`]) whether or not the future completes; if it is dropped before etcd
    /// answered, the revoke may not have arrived and the keys expire within the TTL instead.
    pub async fn close(self) -> Result<()> {
        self.inner.revoke().await
    }

    pub(crate) fn inner(&self) -> &SessionInner {
        &self.inner
    }

    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.inner.coord
    }

    /// The user count of `key` in this session (created on first use).
    pub(crate) fn key_ref(&self, key: &str) -> KeyRef {
        let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(key.to_string()).or_default().clone()
    }

    /// Forgets `key`'s user count once nobody uses it (no guard, no pending acquisition).
    pub(crate) fn forget_key(&self, key: &str, key_ref: &KeyRef) {
        let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        // The map and the caller hold the only references, and new references are only made
        // under the map lock, so nobody can start using it after this check.
        let idle = Arc::strong_count(key_ref) == 2 && key_ref.try_lock().is_ok_and(|n| *n == 0);
        if idle && keys.get(key).is_some_and(|k| Arc::ptr_eq(k, key_ref)) {
            keys.remove(key);
        }
    }
}

impl SessionInner {
    /// Whether the lease was revoked (or is being revoked) by this process.
    pub(crate) fn is_closed(&self) -> bool {
        self.lease.is_closed()
    }

    /// Revokes the lease (once) and marks the session closed.
    pub(crate) async fn revoke(&self) -> Result<()> {
        if self.lease.is_closed() {
            return Ok(());
        }
        self.lease.revoke().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_reasons_map_to_error_kinds() {
        assert_eq!(
            LostReason::LeaseExpired.into_error("x").kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            LostReason::Unconfirmed.into_error("x").kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(LostReason::Closed.into_error("x").kind(), ErrorKind::Closed);
    }

    #[test]
    fn lease_reasons_map_to_lost_reasons() {
        assert_eq!(
            LostReason::from(LeaseLost::Expired),
            LostReason::LeaseExpired
        );
        assert_eq!(
            LostReason::from(LeaseLost::Unconfirmed),
            LostReason::Unconfirmed
        );
        assert_eq!(LostReason::from(LeaseLost::Closed), LostReason::Closed);
    }
}
