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

/// The lease TTL used when none is given: 10 s, as `etcdctl lock` uses.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);

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

/// Options for [`Session::open`]: the lease TTL and the safety margin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    ttl: Duration,
    margin: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions::new(DEFAULT_LOCK_TTL)
    }
}

impl SessionOptions {
    /// A lease of `ttl`, rounded up to whole seconds and at least 1 s (etcd's unit; the server
    /// may raise tiny TTLs to its minimum, about 2 s). The default margin is a fifth of the granted TTL.
    pub fn new(ttl: Duration) -> Self {
        SessionOptions { ttl, margin: None }
    }

    /// The requested TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Sets the TTL (see [`new`](Self::new)).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long before the proven lease expiry the session counts as lost when keepalives
    /// cannot be confirmed (default TTL/5; capped at TTL/2). It covers clock-rate differences
    /// and the time a critical section needs to notice [`Session::lost`] and stop.
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
/// use coordination::{Session, SessionOptions};
/// use std::time::Duration;
///
/// let session = Session::open(&coord, SessionOptions::new(Duration::from_secs(10))).await?;
/// let guard = session.lock("jobs/rebalance").acquire().await?;
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
            .field("ttl", &self.granted_ttl())
            .field("margin", &self.margin())
            .field("lost", &self.lost_reason())
            .finish()
    }
}

impl Session {
    /// Grants a lease of `options.ttl` and starts keeping it alive (every TTL/3, re-opening the
    /// keepalive stream after errors with backoff).
    ///
    /// # Errors
    /// The etcd error kinds if the lease cannot be granted ([`ErrorKind::Unavailable`],
    /// [`ErrorKind::Connection`], [`ErrorKind::Timeout`], [`ErrorKind::Auth`]).
    pub async fn open(coord: &Coordinator, options: SessionOptions) -> Result<Session> {
        let lease = Lease::grant(
            coord.etcd(),
            LeaseOptions {
                ttl: options.ttl,
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

    /// The TTL etcd granted (whole seconds; may exceed the requested one).
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
    /// Cancel-safe; resolves at once if already lost.
    pub async fn lost(&self) -> LostReason {
        self.inner.lease.lost().await.into()
    }

    /// Sends one keepalive now and waits for etcd's answer, moving
    /// [`valid_until`](Self::valid_until) forward. Returns the granted TTL.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the lease is gone (the session is then lost);
    /// [`ErrorKind::Closed`] if the session was closed; [`ErrorKind::Unavailable`] if it was
    /// lost unconfirmed; the etcd error kinds if etcd cannot be reached.
    pub async fn renew(&self) -> Result<Duration> {
        self.on_lease("renewing the session lease", self.inner.lease.renew())
            .await
    }

    /// The lease's remaining TTL as etcd reports it (whole seconds, rounded down).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the lease is gone (the session is then lost); the etcd error
    /// kinds if etcd cannot be reached.
    pub async fn time_to_live(&self) -> Result<Duration> {
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
