//! [`Session`]: one etcd lease, kept alive in the background, that lock and leader keys live on.
//!
//! The keepalive task renews the lease every TTL/3 and re-opens the keepalive stream after
//! errors. It tracks how long the lease is *known* to live: a keepalive sent at `t` and answered
//! with TTL `T` proves the lease lives until at least `t + T` (the server renewed it after `t`).
//! [`Session::valid_until`] is that instant minus a safety margin; when it passes without a new
//! confirmation the session counts as lost ([`LostReason::Unconfirmed`]), because the lease may
//! be gone and another process may hold the lock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::Backoff;

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
    /// A lease of `ttl`, rounded up to whole seconds (etcd's unit; the server may raise tiny TTLs
    /// to its minimum, about 2 s). The default margin is a fifth of the granted TTL.
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

    fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
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
    pub(crate) shared: Arc<Shared>,
    keepalive: AbortHandle,
    /// Per key: how many guards and pending acquisitions of this session use it. The async
    /// mutex also serialises the create and delete requests for the key.
    keys: StdMutex<HashMap<String, KeyRef>>,
}

/// A per-key user count, shared by the guards of one session on one key.
pub(crate) type KeyRef = Arc<tokio::sync::Mutex<u32>>;

/// State shared between the session handles and the keepalive task.
pub(crate) struct Shared {
    pub(crate) lease: i64,
    pub(crate) ttl: Duration,
    pub(crate) margin: Duration,
    base: Instant,
    /// Nanoseconds after `base` until which the lease is proven to live, minus the margin.
    valid_until: AtomicU64,
    lost: watch::Sender<Option<LostReason>>,
    closed: AtomicBool,
}

impl Shared {
    fn valid_until(&self) -> Instant {
        self.base + Duration::from_nanos(self.valid_until.load(Ordering::Acquire))
    }

    /// Records that a keepalive sent at `sent` was answered with `ttl`.
    fn confirm(&self, sent: Instant, ttl: Duration) {
        let until = (sent + ttl).saturating_duration_since(self.base);
        let until = until.saturating_sub(self.margin);
        let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.valid_until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Marks the session lost (the first reason sticks). Returns true if this call did it.
    pub(crate) fn mark_lost(&self, reason: LostReason) -> bool {
        self.lost.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(reason);
                true
            } else {
                false
            }
        })
    }

    fn lost_reason(&self) -> Option<LostReason> {
        if let Some(reason) = *self.lost.borrow() {
            return Some(reason);
        }
        if Instant::now() >= self.valid_until() {
            self.mark_lost(LostReason::Unconfirmed);
            return *self.lost.borrow();
        }
        None
    }

    async fn lost(&self) -> LostReason {
        let mut rx = self.lost.subscribe();
        loop {
            if let Some(reason) = self.lost_reason() {
                return reason;
            }
            let deadline = tokio::time::Instant::from_std(self.valid_until());
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The sender lives in `self`; this cannot happen, but do not spin.
                        return LostReason::Closed;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.shared.lease))
            .field("ttl", &self.inner.shared.ttl)
            .field("margin", &self.inner.shared.margin)
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
        let mut client = coord.client();
        let ttl_secs = options.ttl_secs();
        let sent = Instant::now();
        let resp = client
            .lease_grant(ttl_secs, None)
            .await
            .map_err(|e| Error::etcd(format_args!("granting a {ttl_secs} s lease"), e))?;
        let granted = Duration::from_secs(u64::try_from(resp.ttl().max(1)).unwrap_or(1));
        let margin = options.margin.unwrap_or(granted / 5).min(granted / 2);
        let (lost, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            lease: resp.id(),
            ttl: granted,
            margin,
            base: sent,
            valid_until: AtomicU64::new(0),
            lost,
            closed: AtomicBool::new(false),
        });
        shared.confirm(sent, granted);
        let keepalive = tokio::spawn(keep_alive(client.clone(), shared.clone())).abort_handle();
        Ok(Session {
            inner: Arc::new(SessionInner {
                coord: coord.clone(),
                client,
                shared,
                keepalive,
                keys: StdMutex::new(HashMap::new()),
            }),
        })
    }

    /// The lease ID. Lock keys of this session are `NAME/{lease_id:x}`.
    pub fn lease_id(&self) -> i64 {
        self.inner.shared.lease
    }

    /// The TTL etcd granted (whole seconds; may exceed the requested one).
    pub fn granted_ttl(&self) -> Duration {
        self.inner.shared.ttl
    }

    /// The safety margin (see [`SessionOptions::with_margin`]).
    pub fn margin(&self) -> Duration {
        self.inner.shared.margin
    }

    /// The instant until which the lease is proven to live, minus the margin: the last
    /// confirmed keepalive's send time + TTL − margin. Work that relies on the lease must be
    /// finished by then; normally it moves forward every TTL/3.
    pub fn valid_until(&self) -> Instant {
        self.inner.shared.valid_until()
    }

    /// Why the session is lost, or `None` while it is alive. Passing
    /// [`valid_until`](Self::valid_until) counts as lost ([`LostReason::Unconfirmed`]) even if
    /// the background task has not run yet (e.g. right after this process was resumed).
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.inner.shared.lost_reason()
    }

    /// `true` once the session is lost (see [`lost_reason`](Self::lost_reason)).
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when the session is lost: the lease is known gone, keepalives could not be
    /// confirmed before [`valid_until`](Self::valid_until), or the session was closed.
    /// Cancel-safe; resolves at once if already lost.
    pub async fn lost(&self) -> LostReason {
        self.inner.shared.lost().await
    }

    /// Sends one keepalive now and waits for etcd's answer, moving
    /// [`valid_until`](Self::valid_until) forward. Returns the granted TTL.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the lease is gone (the session is then lost);
    /// [`ErrorKind::Closed`] if the session was closed; the etcd error kinds if etcd cannot be
    /// reached.
    pub async fn renew(&self) -> Result<Duration> {
        let shared = &self.inner.shared;
        if let Some(reason) = self.lost_reason() {
            return Err(reason.into_error("renewing the session lease"));
        }
        let sent = Instant::now();
        let mut client = self.inner.client.clone();
        match client.lease_keep_alive(shared.lease).await {
            Ok(_) => {
                shared.confirm(sent, shared.ttl);
                Ok(shared.ttl)
            }
            Err(e) if is_lease_not_found(&e) => {
                shared.mark_lost(LostReason::LeaseExpired);
                Err(LostReason::LeaseExpired.into_error("renewing the session lease"))
            }
            Err(e) => Err(Error::etcd(
                format_args!("renewing lease {:x}", shared.lease),
                e,
            )),
        }
    }

    /// The lease's remaining TTL as etcd reports it (whole seconds).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the lease is gone (the session is then lost); the etcd error
    /// kinds if etcd cannot be reached.
    pub async fn time_to_live(&self) -> Result<Duration> {
        let shared = &self.inner.shared;
        let mut client = self.inner.client.clone();
        let resp = client
            .lease_time_to_live(shared.lease, None)
            .await
            .map_err(|e| Error::etcd(format_args!("reading TTL of lease {:x}", shared.lease), e))?;
        if resp.ttl() <= 0 {
            shared.mark_lost(LostReason::LeaseExpired);
            return Err(LostReason::LeaseExpired.into_error("reading the session lease TTL"));
        }
        Ok(Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0)))
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
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Revokes the lease (once) and marks the session closed.
    pub(crate) async fn revoke(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.keepalive.abort();
        shared.mark_lost(LostReason::Closed);
        let mut client = self.client.clone();
        match client.lease_revoke(shared.lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Ok(()),
            Err(e) => Err(Error::etcd(
                format_args!("revoking lease {:x}", shared.lease),
                e,
            )),
        }
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.keepalive.abort();
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.mark_lost(LostReason::Closed);
        // Revoke in the background; without a runtime the lease expires within its TTL.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let mut client = self.client.clone();
            let lease = self.shared.lease;
            handle.spawn(async move {
                if let Err(e) = client.lease_revoke(lease).await {
                    tracing::debug!(lease = %format_args!("{lease:x}"), error = %e, "revoking dropped session lease failed; it expires on its own");
                }
            });
        }
    }
}

/// `true` for etcd-client's answers that mean "this lease does not exist".
pub(crate) fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::LeaseKeepAliveError(msg) => msg.contains("lease not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

/// The keepalive task: renews every TTL/3, re-opens the stream after errors, and marks the
/// session lost when etcd says the lease is gone or when `valid_until` passes unconfirmed.
async fn keep_alive(client: Client, shared: Arc<Shared>) {
    let reason = keep_alive_loop(client.clone(), &shared).await;
    shared.mark_lost(reason);
    let reason = shared.lost.borrow().unwrap_or(reason);
    tracing::warn!(lease = %format_args!("{:x}", shared.lease), %reason, "session lost");
    if reason == LostReason::Unconfirmed && !shared.closed.load(Ordering::Acquire) {
        revoke_until_expired(client, &shared).await;
    }
}

async fn keep_alive_loop(client: Client, shared: &Shared) -> LostReason {
    use tokio::time::{sleep_until, Instant as TokioInstant};

    let period = (shared.ttl / 3).max(Duration::from_millis(300));
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        period.min(Duration::from_secs(1)),
    );
    let mut lease_client = client.lease_client();
    // The grant itself was the first confirmation.
    let mut next_open = Instant::now() + period;
    loop {
        // Wait for the time to (re)open the stream; the deadline may pass meanwhile.
        loop {
            if let Some(reason) = shared.lost_reason() {
                return reason;
            }
            let deadline = TokioInstant::from_std(shared.valid_until());
            tokio::select! {
                () = sleep_until(TokioInstant::from_std(next_open)) => break,
                () = sleep_until(deadline) => {}
            }
        }
        // Opening sends the first keepalive and waits for its answer.
        let sent = Instant::now();
        let deadline = TokioInstant::from_std(shared.valid_until());
        let opened = tokio::select! {
            opened = lease_client.keep_alive(shared.lease) => opened,
            () = sleep_until(deadline) => {
                next_open = Instant::now();
                continue;
            }
        };
        let (mut keeper, mut stream) = match opened {
            Ok(pair) => pair,
            Err(e) if is_lease_not_found(&e) => return LostReason::LeaseExpired,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::debug!(lease = %format_args!("{:x}", shared.lease), error = %e, ?delay, "opening lease keepalive failed; retrying");
                next_open = Instant::now() + delay;
                continue;
            }
        };
        shared.confirm(sent, shared.ttl);
        backoff.reset();
        let mut pending: VecDeque<Instant> = VecDeque::new();
        let mut next_send = sent + period;
        loop {
            if let Some(reason) = shared.lost_reason() {
                return reason;
            }
            let deadline = TokioInstant::from_std(shared.valid_until());
            tokio::select! {
                () = sleep_until(TokioInstant::from_std(next_send)) => {
                    let now = Instant::now();
                    if keeper.keep_alive().await.is_err() {
                        next_open = Instant::now();
                        break;
                    }
                    pending.push_back(now);
                    next_send = now + period;
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.ttl() <= 0 {
                            return LostReason::LeaseExpired;
                        }
                        if let Some(sent) = pending.pop_front() {
                            let ttl = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
                            shared.confirm(sent, ttl);
                        }
                    }
                    Ok(None) | Err(_) => {
                        let delay = backoff.next_delay();
                        tracing::debug!(lease = %format_args!("{:x}", shared.lease), ?delay, "lease keepalive stream ended; re-opening");
                        next_open = Instant::now() + delay;
                        break;
                    }
                },
                () = sleep_until(deadline) => {}
            }
        }
    }
}

/// After an unconfirmed keepalive the lease may still exist: revoke it so others need not
/// wait for it to expire, retrying until it would have expired anyway.
async fn revoke_until_expired(client: Client, shared: &Shared) {
    // An etcd restart re-extends leases, so keep trying for a while after the proven expiry.
    let give_up = Instant::now() + shared.ttl * 2;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut lease_client = client.lease_client();
    while Instant::now() < give_up {
        match lease_client.revoke(shared.lease).await {
            Ok(_) => return,
            Err(e) if is_lease_not_found(&e) => return,
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(
            SessionOptions::new(Duration::from_millis(1500)).ttl_secs(),
            2
        );
        assert_eq!(SessionOptions::new(Duration::from_secs(10)).ttl_secs(), 10);
        assert_eq!(SessionOptions::new(Duration::ZERO).ttl_secs(), 1);
    }

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
}
