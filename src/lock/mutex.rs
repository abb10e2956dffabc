//! [`LockBuilder`] and [`LockGuard`]: the distributed mutex.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::fence::Fence;
use super::queue::{enqueue, member_key, prefix_for, wait_turn, Held};
use super::session::{LostReason, Session, SessionOptions};
use crate::coordinator::Coordinator;
use crate::error::Result;

impl Coordinator {
    /// A lock named `name`: keys `name/{lease:x}`, the layout of `etcdctl lock name` and Go's
    /// `concurrency.NewMutex(s, "name")`. With a namespace the keys are
    /// `{namespace}/name/{lease:x}` (for etcdctl, name the lock `{namespace}/name`). Configure
    /// the returned [`LockBuilder`] with its `with_*` methods, then `.await` it to wait for the
    /// lock, or call [`try_acquire`](LockBuilder::try_acquire) to take it only if it is free.
    ///
    /// Without [`LockBuilder::with_session`] each acquisition opens its own lease (TTL
    /// [`DEFAULT_TTL`](super::DEFAULT_TTL), 10 s, unless [`LockBuilder::with_lease_ttl`] says
    /// otherwise), kept alive until the guard is released.
    ///
    /// ```no_run
    /// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
    /// use std::time::Duration;
    ///
    /// let guard = coord
    ///     .lock("jobs/rebalance")
    ///     .with_lease_ttl(Duration::from_secs(5))
    ///     .with_timeout(Duration::from_secs(30))
    ///     .await?;
    /// // ... critical section, fenced with guard.fencing_token() ...
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, name: &str) -> LockBuilder {
        LockBuilder {
            coord: self.clone(),
            name: name.to_string(),
            options: SessionOptions::default(),
            session: None,
            timeout: None,
        }
    }
}

impl Session {
    /// A lock named `name` on this session's lease (see [`Coordinator::lock`]). Acquiring a lock
    /// the session already holds succeeds at once with the same key and fencing token.
    pub fn lock(&self, name: &str) -> LockBuilder {
        self.coordinator().lock(name).with_session(self)
    }
}

/// How to acquire a lock: made by [`Coordinator::lock`] or [`Session::lock`]. `.await` it to
/// wait for the lock (a [`LockGuard`]), or call [`try_acquire`](Self::try_acquire).
///
/// Defaults: a lease of its own with TTL [`DEFAULT_TTL`](super::DEFAULT_TTL) (10 s) and a
/// margin of TTL/5, no timeout.
///
/// # Awaiting
/// Awaiting the builder waits until the lock is ours. Waiters are served in arrival order (the
/// order their keys were created). Waiting survives etcd restarts and connection loss (watches
/// are re-opened); it ends with an error if the session is lost, or when the
/// [timeout](Self::with_timeout) passes.
///
/// # Errors
/// Awaiting returns [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an
/// empty name; the etcd error kinds if the lease cannot be granted or the key cannot be
/// created; [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) if our key was deleted or the
/// lease expired while waiting; [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) if
/// keepalives could not be confirmed while waiting;
/// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when the timeout passes. Our key is
/// removed on every error.
///
/// # Cancel safety
/// Dropping the future before it resolves leaves nothing behind: our waiter key is deleted in
/// the background (or the lease opened for this acquisition is revoked), so a cancelled
/// acquisition neither holds nor blocks the lock. Use [`with_timeout`](Self::with_timeout)
/// rather than `tokio::time::timeout` when the error should say what timed out; both are
/// safe.
#[derive(Clone, Debug)]
#[must_use = "a LockBuilder does nothing until awaited"]
pub struct LockBuilder {
    coord: Coordinator,
    name: String,
    options: SessionOptions,
    session: Option<Session>,
    timeout: Option<Duration>,
}

enum Mode {
    Wait(Option<tokio::time::Instant>),
    Try,
}

impl LockBuilder {
    /// The TTL of the lease opened for this lock (default [`DEFAULT_TTL`](super::DEFAULT_TTL),
    /// 10 s; whole seconds, rounded up). If the holder stops renewing (crash, pause, partition)
    /// others get the lock after at most this long. Ignored with
    /// [`with_session`](Self::with_session).
    pub fn with_lease_ttl(mut self, lease_ttl: Duration) -> Self {
        self.options = self.options.with_lease_ttl(lease_ttl);
        self
    }

    /// The safety margin of the lease opened for this lock (default TTL/5; see
    /// [`SessionOptions::with_margin`]). Ignored with [`with_session`](Self::with_session).
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.options = self.options.with_margin(margin);
        self
    }

    /// Uses `session`'s lease instead of opening one per acquisition: acquire and release are
    /// then one request each, and re-acquiring a lock the session holds is re-entrant.
    pub fn with_session(mut self, session: &Session) -> Self {
        self.session = Some(session.clone());
        self
    }

    /// Gives up waiting after `timeout`, counted from the moment the builder is awaited (the
    /// lease grant and the queueing request are not cut short). The error is then
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) and our waiter key has been removed.
    /// Default: wait as long as the session lives. Does not apply to
    /// [`try_acquire`](Self::try_acquire), which never waits for another holder.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Takes the lock if it is free (or already held by this session), without waiting:
    /// `Ok(None)` when someone else holds it. Our key is removed before returning `None`.
    ///
    /// # Errors
    /// As awaiting the builder (see the [type docs](Self)), without the waiting errors.
    ///
    /// # Cancel safety
    /// As awaiting the builder: a dropped future leaves no key behind.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        self.run(Mode::Try).await
    }

    /// Waits for the lock (what awaiting the builder does).
    async fn acquire(self) -> Result<LockGuard> {
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let guard = self.run(Mode::Wait(deadline)).await?;
        Ok(guard.expect("a waiting acquisition returns a guard"))
    }

    async fn run(self, mode: Mode) -> Result<Option<LockGuard>> {
        let asked = Instant::now();
        let prefix = prefix_for(&self.coord, "lock", &self.name)?;
        let deadline = match mode {
            Mode::Wait(deadline) => deadline,
            Mode::Try => None,
        };
        let (session, owned) = match self.session {
            Some(session) => (session, false),
            None => (Session::open(&self.coord, self.options).await?, true),
        };
        if let Some(reason) = session.lost_reason() {
            return Err(reason.into_error(&format!("locking `{prefix}`")));
        }
        let key = member_key(&prefix, session.lease_id());
        let mut client = session.inner().client.clone();
        let (mut held, users) =
            Held::register(&session, owned, key.clone(), deadline, &prefix).await?;
        let queued = enqueue(&mut client, &session, &prefix, &key, b"").await;
        drop(users);
        let queued = match queued {
            Ok(queued) => queued,
            Err(e) => {
                let _ = held.release().await;
                return Err(e);
            }
        };
        held.token = queued.rev;
        if !queued.owner {
            match mode {
                Mode::Try => {
                    held.release().await?;
                    return Ok(None);
                }
                Mode::Wait(deadline) => {
                    let waited = wait_turn(&session, &prefix, &key, queued.rev, deadline).await;
                    if let Err(e) = waited {
                        if let Err(release) = held.release().await {
                            tracing::debug!(key, error = %release, "removing waiter key failed");
                        }
                        return Err(e);
                    }
                }
            }
        }
        held.watch_key();
        let name = self.name.clone();
        metrics::histogram!(crate::telemetry::LOCK_ACQUIRE_SECONDS, "lock" => name.clone())
            .record(asked.elapsed().as_secs_f64());
        held.time_hold(metrics::histogram!(crate::telemetry::LOCK_HOLD_SECONDS, "lock" => name));
        Ok(Some(LockGuard {
            name: self.name,
            held,
        }))
    }
}

impl IntoFuture for LockBuilder {
    type Output = Result<LockGuard>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<LockGuard>> + Send>>;

    /// Waits for the lock; see the [type docs](LockBuilder).
    fn into_future(self) -> Self::IntoFuture {
        use tracing::Instrument;
        let span = tracing::info_span!(target: crate::telemetry::LOCK_TARGET, "acquire", lock = %self.name);
        Box::pin(self.acquire().instrument(span))
    }
}

/// A held lock. Release it with [`unlock`](Self::unlock); dropping it releases in the
/// background (deletes the key, or revokes the lease the lock opened for itself).
///
/// Holding the guard is a *claim*, not a proof: the lease can expire (process paused, etcd
/// unreachable) or an operator can force-release the lock. Watch [`lost`](Self::lost), stop
/// before [`valid_until`](Self::valid_until), and make writes conditional on the
/// [fencing token](Self::fencing_token) (see [`Coordinator::kv_txn_fenced`]).
pub struct LockGuard {
    name: String,
    held: Held,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("key", &self.held.key)
            .field("fencing_token", &self.held.token)
            .field("lost", &self.held.session.lost_reason())
            .finish()
    }
}

impl LockGuard {
    /// The lock name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Our lock key, namespace included: `[{namespace}/]NAME/{lease:x}`.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The fencing token: our key's create_revision. Strictly greater than every earlier
    /// holder's token (etcd revisions only grow); the same for re-entrant acquisitions of one
    /// session. Hand it to every resource the critical section writes to, and have the
    /// resource reject tokens lower than the highest it has seen.
    pub fn fencing_token(&self) -> i64 {
        self.held.token
    }

    /// The key and token as a [`Fence`] (for [`Coordinator::kv_txn_fenced`], or to keep after
    /// the guard is gone).
    pub fn fence(&self) -> Fence {
        Fence::new(self.held.key.clone(), self.held.token)
    }

    /// The lease our key lives on.
    pub fn lease_id(&self) -> i64 {
        self.held.session.lease_id()
    }

    /// The session (lease) holding the lock.
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// The instant the critical section must be finished by: the last confirmed keepalive's
    /// send time + TTL − margin (see [`Session::valid_until`]). It moves forward every TTL/3
    /// while keepalives are confirmed; if it passes, the guard is lost.
    pub fn valid_until(&self) -> Instant {
        self.held.session.valid_until()
    }

    /// Why the lock is lost, or `None` while it holds as far as this process knows: the lease
    /// is gone, keepalives were not confirmed by [`valid_until`](Self::valid_until), or our key
    /// was deleted (the key is watched from the moment the lock was acquired, so a
    /// force-release is reported shortly after it happens, whether or not anyone asked
    /// before).
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.held.lost_reason()
    }

    /// `true` once the lock is lost (see [`lost_reason`](Self::lost_reason)).
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when the lock is lost: the lease expired or was revoked, keepalives could not
    /// be confirmed before [`valid_until`](Self::valid_until), or our key was deleted
    /// (force-release). Use it in `tokio::select!` next to the critical section.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes the guard (the key watch runs in the background from the
    /// moment the lock was acquired), so it can be dropped and called again without missing
    /// the loss.
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// The lease's remaining TTL as etcd reports it now (see [`Session::remaining_ttl`]; whole
    /// seconds, rounded down).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) if the lease is gone; the etcd error
    /// kinds if etcd cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read.
    pub async fn remaining_ttl(&self) -> Result<Duration> {
        self.held.session.remaining_ttl().await
    }

    /// Renews the lease now and waits for etcd's confirmation (see [`Session::renew`]);
    /// returns the granted TTL (whole seconds).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) if the lease is gone; the etcd error
    /// kinds if etcd cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel-safe (see [`Session::renew`]).
    pub async fn renew(&self) -> Result<Duration> {
        self.held.session.renew().await
    }

    /// Releases the lock: deletes our key (one request), or revokes the lease the lock opened
    /// for itself. With re-entrant guards of one session, only the last release deletes the
    /// key. The next waiter is woken by the delete.
    ///
    /// # Errors
    /// The etcd error kinds if the request fails; it is then retried in the background until
    /// it succeeds or the lease is gone.
    ///
    /// # Cancel safety
    /// The release runs in a task of its own: dropping the future does not stop it, only the
    /// result is lost (as when the guard is dropped).
    pub async fn unlock(self) -> Result<()> {
        self.held.release().await
    }
}
