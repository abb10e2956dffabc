//! [`Lease`]: one etcd lease, kept alive in the background, with a proven validity window.
//!
//! The contract, which lock sessions and registrations both rely on:
//!
//! - **Grant.** The requested TTL is rounded up to whole seconds (etcd's unit), at least 1 s
//!   ([`ttl_secs`]). etcd may raise tiny TTLs to its minimum (about 2 s); the granted TTL is
//!   what counts from then on.
//! - **Keepalive.** A background task sends a keepalive every TTL/3 (at least every 300 ms)
//!   on one stream and reads the answers. A stream that fails or ends, an open that fails or
//!   takes longer than TTL/3, and a keepalive still unanswered when the next one is due all
//!   make it re-open the stream after a backoff with jitter (50 ms doubling to TTL/3, at most
//!   1 s); until the next confirmation the lease counts as *failing* ([`LeaseState::failing`]).
//! - **Proof window.** A keepalive sent at `t` and answered with TTL `T` proves the lease
//!   lives until at least `t + T` (etcd renewed it after `t`). [`Lease::valid_until`] is the
//!   latest such instant minus a margin, on the monotonic clock.
//! - **Lost is final.** etcd saying the lease does not exist (a keepalive answered with TTL 0,
//!   "lease not found" on any request that names it) is [`LeaseLost::Expired`]; revoking or
//!   dropping it here is [`LeaseLost::Closed`]; with [`Unconfirmed::Lose`], `valid_until`
//!   passing without a confirmation is [`LeaseLost::Unconfirmed`], after which the task
//!   revokes the lease as soon as etcd answers (it may still exist; nothing proves it does).
//!   With [`Unconfirmed::KeepTrying`] the task keeps renewing the same lease until etcd says
//!   whether it lives.
//!
//! Whether an etcd error means "this lease does not exist" is decided in one place,
//! [`is_lease_not_found`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use metrics::Counter;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{sleep_until, timeout_at, Instant as TokioInstant};

use super::{sleep_until_some, Backoff, Etcd};
use crate::error::{Error, Result};
use crate::telemetry::ETCD_LEASE_LOST;

/// Why a [`Lease`] can no longer be relied on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LeaseLost {
    /// etcd reported the lease gone: it expired or was revoked elsewhere.
    Expired,
    /// No keepalive was confirmed before [`Lease::valid_until`] (only with
    /// [`Unconfirmed::Lose`]).
    Unconfirmed,
    /// Revoked or dropped through this handle.
    Closed,
}

/// `coordination_etcd_lease_lost_total` by reason: expired, unconfirmed. Made at grant, both
/// at zero, so the first loss is an increase that `increase()` sees.
struct LostCounters {
    expired: Counter,
    unconfirmed: Counter,
}

impl LostCounters {
    fn new() -> Self {
        LostCounters {
            expired: metrics::counter!(ETCD_LEASE_LOST, "reason" => "expired"),
            unconfirmed: metrics::counter!(ETCD_LEASE_LOST, "reason" => "unconfirmed"),
        }
    }

    /// Counts a loss; [`LeaseLost::Closed`] is not one (it is this process's own doing).
    fn count(&self, reason: LeaseLost) {
        match reason {
            LeaseLost::Expired => self.expired.increment(1),
            LeaseLost::Unconfirmed => self.unconfirmed.increment(1),
            LeaseLost::Closed => {}
        }
    }
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseLost::Expired => "lease expired or revoked",
            LeaseLost::Unconfirmed => "lease keepalive not confirmed in time",
            LeaseLost::Closed => "lease closed",
        })
    }
}

/// What passing [`Lease::valid_until`] without a confirmation means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unconfirmed {
    /// The lease is lost ([`LeaseLost::Unconfirmed`]) and revoked when etcd answers: for
    /// holders that must stop before another process can take over.
    Lose,
    /// The lease stays [failing](LeaseState::failing) and the task keeps renewing it until etcd
    /// confirms it or reports it gone: for keys that should simply stay while they can.
    KeepTrying,
}

/// How to grant and keep a [`Lease`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseOptions {
    /// The requested TTL (see [`ttl_secs`]).
    pub(crate) ttl: Duration,
    /// Subtracted from the proven expiry to give [`Lease::valid_until`]; default a fifth of
    /// the granted TTL, capped at half of it.
    pub(crate) margin: Option<Duration>,
    /// What an unconfirmed window means.
    pub(crate) unconfirmed: Unconfirmed,
}

/// What subscribers of a [`Lease`] see change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaseState {
    /// Why the lease is lost, once it is.
    pub(crate) lost: Option<LeaseLost>,
    /// The last keepalive attempt failed (see the module docs); cleared by the next
    /// confirmation.
    pub(crate) failing: bool,
    /// How many keepalives were confirmed (the grant counts as the first).
    pub(crate) confirmations: u64,
}

/// The TTL etcd is asked for: `ttl` rounded up to whole seconds, at least 1 s.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// `true` for etcd-client's answers that mean "this lease does not exist": etcd's gRPC
/// `NotFound` "etcdserver: requested lease not found" (a put, txn, revoke or keepalive naming
/// the lease), or the client's own error for a keepalive stream whose first answer had TTL 0.
pub(crate) fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::LeaseKeepAliveError(msg) => msg.contains("lease not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

/// The remaining TTL of lease `id` as etcd reports it (whole seconds, rounded down), `None` if
/// the lease does not exist.
///
/// # Errors
/// The etcd error kinds if etcd cannot be reached.
pub(crate) async fn remaining_ttl(client: &Client, id: i64) -> Result<Option<Duration>> {
    let resp = client
        .clone()
        .lease_time_to_live(id, None)
        .await
        .map_err(|e| Error::etcd(format_args!("reading TTL of lease {id:x}"), e))?;
    Ok((resp.ttl() >= 0).then(|| Duration::from_secs(resp.ttl().unsigned_abs())))
}

/// State shared between the handle and the keepalive task.
struct Shared {
    id: i64,
    ttl: Duration,
    margin: Duration,
    unconfirmed: Unconfirmed,
    base: Instant,
    /// Nanoseconds after `base` until which the lease is proven to live, minus the margin.
    valid_until: AtomicU64,
    state: watch::Sender<LeaseState>,
    closed: AtomicBool,
    lost_counters: LostCounters,
}

impl Shared {
    fn valid_until(&self) -> Instant {
        self.base + Duration::from_nanos(self.valid_until.load(Ordering::Acquire))
    }

    /// When passing [`valid_until`](Self::valid_until) loses the lease: `None` with
    /// [`Unconfirmed::KeepTrying`].
    fn deadline(&self) -> Option<TokioInstant> {
        (self.unconfirmed == Unconfirmed::Lose).then(|| TokioInstant::from_std(self.valid_until()))
    }

    /// Records that a keepalive sent at `sent` was answered with `ttl`.
    fn confirm(&self, sent: Instant, ttl: Duration) {
        let until = (sent + ttl).saturating_duration_since(self.base);
        let until = until.saturating_sub(self.margin);
        let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.valid_until.fetch_max(nanos, Ordering::AcqRel);
        self.state.send_modify(|state| {
            state.failing = false;
            state.confirmations += 1;
        });
    }

    /// Records a failed keepalive attempt.
    fn failing(&self) {
        self.state
            .send_if_modified(|state| !std::mem::replace(&mut state.failing, true));
    }

    /// Marks the lease lost (the first reason sticks) and counts it. Returns true if this call
    /// did it.
    fn mark_lost(&self, reason: LeaseLost) -> bool {
        let marked = self.state.send_if_modified(|state| {
            if state.lost.is_none() {
                state.lost = Some(reason);
                true
            } else {
                false
            }
        });
        if marked {
            self.lost_counters.count(reason);
        }
        marked
    }

    fn lost_reason(&self) -> Option<LeaseLost> {
        if let Some(reason) = self.state.borrow().lost {
            return Some(reason);
        }
        if self.unconfirmed == Unconfirmed::Lose && Instant::now() >= self.valid_until() {
            self.mark_lost(LeaseLost::Unconfirmed);
            return self.state.borrow().lost;
        }
        None
    }

    async fn lost(&self) -> LeaseLost {
        let mut rx = self.state.subscribe();
        loop {
            if let Some(reason) = self.lost_reason() {
                return reason;
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The sender lives in `self`; this cannot happen, but do not spin.
                        return LeaseLost::Closed;
                    }
                }
                () = sleep_until_some(self.deadline()) => {}
            }
        }
    }

    fn label(&self) -> impl fmt::Display {
        format!("{:x}", self.id)
    }
}

/// One lease kept alive in the background. See the module docs.
///
/// Dropping it stops the keepalive and revokes the lease in the background (unless it is
/// already closed or known gone); without a runtime it expires within its TTL.
pub(crate) struct Lease {
    client: Client,
    shared: Arc<Shared>,
    keepalive: AbortHandle,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &format_args!("{:x}", self.shared.id))
            .field("ttl", &self.shared.ttl)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Grants a lease of `options.ttl` (rounded, see [`ttl_secs`]) and starts keeping it alive.
    ///
    /// # Errors
    /// The etcd error kinds if the lease cannot be granted ([`Unavailable`], [`Connection`],
    /// [`Timeout`], [`Auth`]).
    ///
    /// [`Unavailable`]: crate::ErrorKind::Unavailable
    /// [`Connection`]: crate::ErrorKind::Connection
    /// [`Timeout`]: crate::ErrorKind::Timeout
    /// [`Auth`]: crate::ErrorKind::Auth
    pub(crate) async fn grant(etcd: &Etcd, options: LeaseOptions) -> Result<Lease> {
        let mut client = etcd.client().clone();
        let secs = ttl_secs(options.ttl);
        let sent = Instant::now();
        let resp = client
            .lease_grant(secs, None)
            .await
            .map_err(|e| Error::etcd(format_args!("granting a {secs} s lease"), e))?;
        let granted = Duration::from_secs(resp.ttl().max(1).unsigned_abs());
        let margin = options.margin.unwrap_or(granted / 5).min(granted / 2);
        let (state, _) = watch::channel(LeaseState::default());
        let shared = Arc::new(Shared {
            id: resp.id(),
            ttl: granted,
            margin,
            unconfirmed: options.unconfirmed,
            base: sent,
            valid_until: AtomicU64::new(0),
            state,
            closed: AtomicBool::new(false),
            lost_counters: LostCounters::new(),
        });
        shared.confirm(sent, granted);
        let keepalive = tokio::spawn(keep_alive(client.clone(), shared.clone())).abort_handle();
        Ok(Lease {
            client,
            shared,
            keepalive,
        })
    }

    /// The lease ID.
    pub(crate) fn id(&self) -> i64 {
        self.shared.id
    }

    /// The TTL etcd granted (whole seconds; may exceed the requested one).
    pub(crate) fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// The margin subtracted from the proven expiry.
    pub(crate) fn margin(&self) -> Duration {
        self.shared.margin
    }

    /// The last confirmed keepalive's send time + its TTL − the margin.
    pub(crate) fn valid_until(&self) -> Instant {
        self.shared.valid_until()
    }

    /// Why the lease is lost, or `None`. With [`Unconfirmed::Lose`], passing
    /// [`valid_until`](Self::valid_until) counts as lost even if the task has not run yet.
    pub(crate) fn lost_reason(&self) -> Option<LeaseLost> {
        self.shared.lost_reason()
    }

    /// Resolves when the lease is lost. Cancel-safe; at once if already lost.
    pub(crate) async fn lost(&self) -> LeaseLost {
        self.shared.lost().await
    }

    /// Follows the [`LeaseState`]: it changes at every confirmation, failure and loss.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.shared.state.subscribe()
    }

    /// If `err` (from a request that named this lease) says the lease does not exist, marks it
    /// lost ([`LeaseLost::Expired`]) and returns `true`.
    pub(crate) fn note_error(&self, err: &etcd_client::Error) -> bool {
        let gone = is_lease_not_found(err);
        if gone {
            self.shared.mark_lost(LeaseLost::Expired);
        }
        gone
    }

    /// Sends one keepalive now and waits for etcd's answer, moving
    /// [`valid_until`](Self::valid_until) forward. Returns the granted TTL.
    ///
    /// # Errors
    /// [`NotFound`](crate::ErrorKind::NotFound) if the lease is gone (it is then lost); the etcd
    /// error kinds if etcd cannot be reached.
    pub(crate) async fn renew(&self) -> Result<Duration> {
        let sent = Instant::now();
        let mut client = self.client.clone();
        match client.lease_keep_alive(self.shared.id).await {
            Ok(_) => {
                self.shared.confirm(sent, self.shared.ttl);
                Ok(self.shared.ttl)
            }
            Err(e) if self.note_error(&e) => Err(self.gone("renewing")),
            Err(e) => Err(Error::etcd(
                format_args!("renewing lease {}", self.shared.label()),
                e,
            )),
        }
    }

    /// The remaining TTL as etcd reports it (whole seconds, rounded down).
    ///
    /// # Errors
    /// [`NotFound`](crate::ErrorKind::NotFound) if the lease is gone (it is then lost); the etcd
    /// error kinds if etcd cannot be reached.
    pub(crate) async fn time_to_live(&self) -> Result<Duration> {
        match remaining_ttl(&self.client, self.shared.id).await? {
            Some(ttl) => Ok(ttl),
            None => {
                self.shared.mark_lost(LeaseLost::Expired);
                Err(self.gone("reading the TTL of"))
            }
        }
    }

    /// The error for a request that found the lease gone.
    fn gone(&self, doing: &str) -> Error {
        Error::new(
            crate::ErrorKind::NotFound,
            format!(
                "{doing} lease {}: {}",
                self.shared.label(),
                LeaseLost::Expired
            ),
        )
    }

    /// Whether [`revoke`](Self::revoke) was called (or the handle is being dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Stops the keepalive, marks the lease lost ([`LeaseLost::Closed`], unless it was lost
    /// before) and revokes it, which deletes every key attached to it. Returns the revision of
    /// the revoke, `None` if the lease was already gone. May be called again to retry.
    ///
    /// # Errors
    /// The etcd error kinds if the revoke fails; the lease then expires within its TTL
    /// (keepalives have stopped).
    pub(crate) async fn revoke(&self) -> Result<Option<i64>> {
        self.shared.closed.store(true, Ordering::Release);
        self.keepalive.abort();
        self.shared.mark_lost(LeaseLost::Closed);
        let mut client = self.client.clone();
        match client.lease_revoke(self.shared.id).await {
            Ok(resp) => Ok(Some(resp.header().map_or(0, |h| h.revision()))),
            Err(e) if is_lease_not_found(&e) => Ok(None),
            Err(e) => Err(Error::etcd(
                format_args!("revoking lease {}", self.shared.label()),
                e,
            )),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keepalive.abort();
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let was = self.shared.state.borrow().lost;
        self.shared.mark_lost(LeaseLost::Closed);
        if was == Some(LeaseLost::Expired) {
            return;
        }
        // Revoke in the background; without a runtime the lease expires within its TTL.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let mut client = self.client.clone();
            let id = self.shared.id;
            handle.spawn(async move {
                if let Err(e) = client.lease_revoke(id).await {
                    if !is_lease_not_found(&e) {
                        tracing::debug!(lease = %format_args!("{id:x}"), error = %e, "revoking a dropped lease failed; it expires on its own");
                    }
                }
            });
        }
    }
}

/// The keepalive task: renews every TTL/3, re-opens the stream after failures, and marks the
/// lease lost when etcd says it is gone or (with [`Unconfirmed::Lose`]) when `valid_until`
/// passes unconfirmed.
async fn keep_alive(client: Client, shared: Arc<Shared>) {
    let reason = keep_alive_loop(&client, &shared).await;
    shared.mark_lost(reason);
    let reason = shared.lost_reason().unwrap_or(reason);
    if reason == LeaseLost::Closed {
        return;
    }
    tracing::warn!(lease = %shared.label(), %reason, "lease lost");
    if reason == LeaseLost::Unconfirmed && !shared.closed.load(Ordering::Acquire) {
        revoke_until_expired(client, &shared).await;
    }
}

async fn keep_alive_loop(client: &Client, shared: &Shared) -> LeaseLost {
    let period = (shared.ttl / 3).max(Duration::from_millis(300));
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        period.min(Duration::from_secs(1)),
    );
    let mut lease_client = client.lease_client();
    // The grant itself was the first confirmation.
    let mut next_open = TokioInstant::now() + period;
    loop {
        // Wait for the time to (re)open the stream; the deadline may pass meanwhile.
        loop {
            if let Some(reason) = shared.lost_reason() {
                return reason;
            }
            tokio::select! {
                () = sleep_until(next_open) => break,
                () = sleep_until_some(shared.deadline()) => {}
            }
        }
        // Opening sends the first keepalive and waits for its answer.
        let sent = Instant::now();
        let limit = TokioInstant::from_std(sent + period);
        let limit = shared
            .deadline()
            .map_or(limit, |deadline| deadline.min(limit));
        let (mut keeper, mut stream) = match timeout_at(limit, lease_client.keep_alive(shared.id))
            .await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) if is_lease_not_found(&e) => return LeaseLost::Expired,
            Ok(Err(e)) => {
                let delay = backoff.next_delay();
                tracing::debug!(lease = %shared.label(), error = %e, ?delay, "opening lease keepalive failed; retrying");
                shared.failing();
                next_open = TokioInstant::now() + delay;
                continue;
            }
            Err(_) => {
                let delay = backoff.next_delay();
                tracing::debug!(lease = %shared.label(), ?delay, "opening lease keepalive timed out; retrying");
                shared.failing();
                next_open = TokioInstant::now() + delay;
                continue;
            }
        };
        shared.confirm(sent, shared.ttl);
        backoff.reset();
        let mut pending: VecDeque<Instant> = VecDeque::new();
        let mut next_send = TokioInstant::from_std(sent + period);
        loop {
            if let Some(reason) = shared.lost_reason() {
                return reason;
            }
            tokio::select! {
                () = sleep_until(next_send) => {
                    let now = Instant::now();
                    let overdue = pending.front().is_some_and(|&t| now.duration_since(t) >= period);
                    let sent = !overdue && keeper.keep_alive().await.is_ok();
                    if !sent {
                        let delay = backoff.next_delay();
                        tracing::debug!(lease = %shared.label(), overdue, ?delay, "lease keepalive unanswered or not sent; re-opening");
                        shared.failing();
                        next_open = TokioInstant::now() + delay;
                        break;
                    }
                    pending.push_back(now);
                    next_send = TokioInstant::from_std(now + period);
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.ttl() <= 0 {
                            return LeaseLost::Expired;
                        }
                        if let Some(sent) = pending.pop_front() {
                            shared.confirm(sent, Duration::from_secs(resp.ttl().unsigned_abs()));
                        }
                    }
                    Err(e) if is_lease_not_found(&e) => return LeaseLost::Expired,
                    Ok(None) | Err(_) => {
                        let delay = backoff.next_delay();
                        tracing::debug!(lease = %shared.label(), ?delay, "lease keepalive stream ended; re-opening");
                        shared.failing();
                        next_open = TokioInstant::now() + delay;
                        break;
                    }
                },
                () = sleep_until_some(shared.deadline()) => {}
            }
        }
    }
}

/// After an unconfirmed window the lease may still exist: revoke it so others need not wait
/// for it to expire, retrying until it would have expired anyway.
async fn revoke_until_expired(client: Client, shared: &Shared) {
    // An etcd restart re-extends leases, so keep trying for a while after the proven expiry.
    let give_up = Instant::now() + shared.ttl * 2;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut lease_client = client.lease_client();
    while Instant::now() < give_up {
        match lease_client.revoke(shared.id).await {
            Ok(_) => return,
            Err(e) if is_lease_not_found(&e) => return,
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(unconfirmed: Unconfirmed) -> Shared {
        let (state, _) = watch::channel(LeaseState::default());
        Shared {
            id: 0x1234,
            ttl: Duration::from_secs(10),
            margin: Duration::from_secs(2),
            unconfirmed,
            base: Instant::now(),
            valid_until: AtomicU64::new(u64::MAX),
            state,
            closed: AtomicBool::new(false),
            lost_counters: LostCounters::new(),
        }
    }

    #[test]
    fn a_lost_lease_is_counted_once_by_its_first_reason_and_closing_is_not_a_loss() {
        use crate::telemetry::testing::{value, Recorded};

        let recorded = Recorded::new();
        let (expired, closed) =
            recorded.with(|| (shared(Unconfirmed::Lose), shared(Unconfirmed::KeepTrying)));
        assert!(expired.mark_lost(LeaseLost::Expired));
        assert!(!expired.mark_lost(LeaseLost::Unconfirmed));
        assert!(!expired.mark_lost(LeaseLost::Expired));
        assert!(closed.mark_lost(LeaseLost::Closed));
        assert!(!closed.mark_lost(LeaseLost::Expired));
        let series = recorded.series();
        let lost = |reason: &str| value(&series, ETCD_LEASE_LOST, &[&format!("reason={reason}")]);
        assert_eq!(lost("expired"), Some(1.0));
        assert_eq!(lost("unconfirmed"), Some(0.0));
        assert_eq!(lost("closed"), None);
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds_and_at_least_one() {
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(10)), 10);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::MAX), i64::MAX);
    }

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn lease_not_found_needs_the_code_and_the_message() {
        // What etcd 3.4 answers for a put, txn, revoke or keepalive naming an unknown lease.
        assert!(is_lease_not_found(&status(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )));
        // etcd-client's error for a keepalive stream whose first answer had TTL 0.
        assert!(is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("lease not found".into())
        ));
        // Other NotFound answers (a member, a key range in some proxies) are not about leases.
        assert!(!is_lease_not_found(&status(
            tonic::Code::NotFound,
            "etcdserver: member not found"
        )));
        // The message alone, under another code, is not etcd's answer either.
        assert!(!is_lease_not_found(&status(
            tonic::Code::Unknown,
            "requested lease not found"
        )));
        // A keepalive stream that could not send is a connection problem, not a missing lease.
        assert!(!is_lease_not_found(
            &etcd_client::Error::LeaseKeepAliveError("channel closed".into())
        ));
        assert!(!is_lease_not_found(&status(
            tonic::Code::Unavailable,
            "connection refused"
        )));
    }
}
