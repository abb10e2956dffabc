//! Leader election with Go's `concurrency.Election` semantics (campaign, proclaim, resign,
//! leader, observe), interoperable with `etcdctl elect` and the server's Election RPCs.
//!
//! Candidates queue exactly like lock waiters (keys `NAME/{lease:x}` holding the candidate's
//! value); the leader is the direct child with the lowest create_revision (keys of nested
//! names such as `NAME/eu/{lease:x}` belong to the election `NAME/eu`).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::fence::Fence;
use super::queue::{enqueue, is_member, member_key, prefix_for, read_members, wait_turn, Held};
use super::session::{LostReason, Session, SessionOptions};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower};
use crate::etcd::Etcd;

impl Coordinator {
    /// The election named `name`: keys `name/{lease:x}` as `etcdctl elect name` writes them
    /// (`{namespace}/name/{lease:x}` with a namespace).
    /// Without [`Election::with_session`] each campaign opens its own lease (TTL
    /// [`DEFAULT_TTL`](super::DEFAULT_TTL), 10 s, unless [`Election::with_lease_ttl`] says
    /// otherwise).
    ///
    /// ```no_run
    /// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
    /// let election = coord.election("chat/leader");
    /// let mut observer = election.observe()?;
    /// let leadership = election.campaign("chat-1").await?;
    /// leadership.proclaim("chat-1 (warm)").await?;
    /// while let Some(leader) = observer.next().await {
    ///     println!("leader: {:?}", leader.value_str());
    /// #   break;
    /// }
    /// leadership.resign().await?;
    /// # Ok(()) }
    /// ```
    pub fn election(&self, name: &str) -> Election {
        Election {
            coord: self.clone(),
            name: name.to_string(),
            options: SessionOptions::default(),
            session: None,
        }
    }
}

impl Session {
    /// The election named `name`, campaigning on this session's lease (see
    /// [`Coordinator::election`]).
    pub fn election(&self, name: &str) -> Election {
        self.coordinator().election(name).with_session(self)
    }
}

/// An election: campaign for leadership ([`campaign`](Self::campaign)), or read
/// ([`leader`](Self::leader)) and follow ([`observe`](Self::observe)) the leader. Made by
/// [`Coordinator::election`] or [`Session::election`]; cheap to clone.
///
/// Defaults for campaigns: a lease of their own with TTL [`DEFAULT_TTL`](super::DEFAULT_TTL)
/// (10 s) and a margin of TTL/5.
#[derive(Clone, Debug)]
pub struct Election {
    coord: Coordinator,
    name: String,
    options: SessionOptions,
    session: Option<Session>,
}

/// The current leader of an election.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The leader's key, namespace included (`[{namespace}/]NAME/{lease:x}`).
    pub key: String,
    /// The value the leader campaigned with or last proclaimed.
    pub value: Vec<u8>,
    /// The key's create_revision: the leader's fencing token.
    pub create_revision: i64,
    /// The revision of the last proclaim (or of the campaign).
    pub mod_revision: i64,
    /// The leader's lease.
    pub lease: i64,
}

impl LeaderInfo {
    fn from_kv(kv: &KeyValue) -> Self {
        LeaderInfo {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }

    /// The value as UTF-8, if it is.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

impl Election {
    /// The TTL of the lease opened for a campaign (default
    /// [`DEFAULT_TTL`](super::DEFAULT_TTL), 10 s; whole seconds, rounded up): a crashed leader
    /// is replaced after at most this long. Ignored with [`with_session`](Self::with_session).
    #[must_use]
    pub fn with_lease_ttl(mut self, lease_ttl: Duration) -> Self {
        self.options = self.options.with_lease_ttl(lease_ttl);
        self
    }

    /// The safety margin of the lease opened for a campaign (default TTL/5; see
    /// [`SessionOptions::with_margin`]). Ignored with [`with_session`](Self::with_session).
    #[must_use]
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.options = self.options.with_margin(margin);
        self
    }

    /// Campaigns on `session`'s lease. Campaigning again on a session that already
    /// campaigns (or leads) joins the same key, proclaiming the new value if it differs.
    #[must_use]
    pub fn with_session(mut self, session: &Session) -> Self {
        self.session = Some(session.clone());
        self
    }

    /// The election name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A campaign with `value` (the leader key's value, what observers see): `.await` the
    /// returned [`Campaign`] to wait until elected, optionally with
    /// [`Campaign::with_timeout`]. Candidates are elected in the order they started
    /// campaigning.
    pub fn campaign(&self, value: impl Into<Vec<u8>>) -> Campaign {
        Campaign {
            election: self.clone(),
            value: value.into(),
            timeout: None,
        }
    }

    async fn run(
        &self,
        value: Vec<u8>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Leadership> {
        let prefix = prefix_for(&self.coord, "election", &self.name)?;
        let (session, owned) = match &self.session {
            Some(session) => (session.clone(), false),
            None => (Session::open(&self.coord, self.options).await?, true),
        };
        if let Some(reason) = session.lost_reason() {
            return Err(reason.into_error(&format!("campaigning in `{prefix}`")));
        }
        let key = member_key(&prefix, session.lease_id());
        let mut client = session.inner().client.clone();
        let (mut held, users) =
            Held::register(&session, owned, key.clone(), deadline, &prefix).await?;
        let queued = match enqueue(&mut client, &session, &prefix, &key, &value).await {
            Ok(queued) => {
                held.token = queued.rev;
                match &queued.existing_value {
                    Some(old) if *old != value => proclaim(&mut client, &key, queued.rev, &value)
                        .await
                        .map(|()| queued),
                    _ => Ok(queued),
                }
            }
            Err(e) => Err(e),
        };
        drop(users);
        let queued = match queued {
            Ok(queued) => queued,
            Err(e) => {
                let _ = held.release().await;
                return Err(e);
            }
        };
        if !queued.owner {
            if let Err(e) = wait_turn(&session, &prefix, &key, queued.rev, deadline).await {
                if let Err(release) = held.release().await {
                    tracing::debug!(key, error = %release, "removing candidate key failed");
                }
                return Err(e);
            }
        }
        held.watch_key();
        Ok(Leadership {
            name: self.name.clone(),
            held,
        })
    }

    /// The current leader, `None` if nobody leads (one linearizable read).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty name; the etcd error kinds.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let prefix = prefix_for(&self.coord, "election", &self.name)?;
        let (_, members) = read_members(self.coord.etcd(), &prefix).await?;
        Ok(members.first().map(LeaderInfo::from_kv))
    }

    /// Follows the leader: yields the current leader, then every new leader and every value it
    /// proclaims (as Go's `Election.Observe`). While nobody leads, nothing is yielded. The
    /// watch heals itself (etcd restarts, partitions, compaction, restores), so the observer
    /// outlives them; a change that happens and is undone while disconnected may be missed,
    /// the state after it is not.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty name.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the watch runs in a spawned task).
    pub fn observe(&self) -> Result<Observer> {
        let prefix = prefix_for(&self.coord, "election", &self.name)?;
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(observe(self.coord.etcd().clone(), prefix, tx)).abort_handle();
        Ok(Observer { rx, task })
    }
}

/// A campaign for leadership: made by [`Election::campaign`], `.await` it for the
/// [`Leadership`].
///
/// # Awaiting
/// Awaiting creates our candidate key (or joins the session's existing one, proclaiming the new
/// value if it differs) and waits until every earlier candidate is gone. Waiting survives etcd
/// restarts.
///
/// # Errors
/// Awaiting returns [`ErrorKind::InvalidArgument`] for an empty name; the etcd error kinds if
/// the lease or key cannot be created; [`ErrorKind::NotFound`] / [`ErrorKind::Unavailable`] if
/// the session is lost or our key deleted while waiting; [`ErrorKind::Timeout`] when the
/// [timeout](Self::with_timeout) passes. Our key is removed on every error.
///
/// # Cancel safety
/// Dropping the future before it resolves leaves nothing behind: our candidate key is deleted
/// in the background (or the lease opened for the campaign is revoked).
#[derive(Clone, Debug)]
#[must_use = "a Campaign does nothing until awaited"]
pub struct Campaign {
    election: Election,
    value: Vec<u8>,
    timeout: Option<Duration>,
}

impl Campaign {
    /// Gives up after `timeout`, counted from the moment the campaign is awaited: the error is
    /// then [`ErrorKind::Timeout`] and our candidate key has been removed. Default: wait as
    /// long as the session lives.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn run(self) -> Result<Leadership> {
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        self.election.run(self.value, deadline).await
    }
}

impl IntoFuture for Campaign {
    type Output = Result<Leadership>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Leadership>> + Send>>;

    /// Campaigns and waits until elected; see the [type docs](Campaign).
    fn into_future(self) -> Self::IntoFuture {
        use tracing::Instrument;
        let span = tracing::info_span!(
            target: crate::telemetry::LOCK_TARGET,
            "campaign",
            election = %self.election.name
        );
        Box::pin(self.run().instrument(span))
    }
}

async fn proclaim(client: &mut Client, key: &str, token: i64, value: &[u8]) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, token)])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_ignore_lease()),
        )]);
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| Error::etcd(format_args!("proclaiming on `{key}`"), e))?;
    if !resp.succeeded() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("not the leader any more: `{key}` is gone or was re-created"),
        )
        .with_key(key));
    }
    Ok(())
}

/// Leadership of an election, from awaiting a [`Campaign`]. Resign with
/// [`resign`](Self::resign); dropping it resigns in the background.
///
/// As with a [`LockGuard`](crate::lock::LockGuard), leadership is a claim that can be lost (lease
/// expiry, process pause, force-release): watch [`lost`](Self::lost) and fence writes with
/// [`fence`](Self::fence).
pub struct Leadership {
    name: String,
    held: Held,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name)
            .field("key", &self.held.key)
            .field("fencing_token", &self.held.token)
            .field("lost", &self.held.session.lost_reason())
            .finish()
    }
}

impl Leadership {
    /// The election name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Our leader key, namespace included: `[{namespace}/]NAME/{lease:x}`.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The fencing token: our key's create_revision, higher than every earlier leader's.
    pub fn fencing_token(&self) -> i64 {
        self.held.token
    }

    /// The key and token as a [`Fence`] (see [`Coordinator::kv_txn_fenced`]).
    pub fn fence(&self) -> Fence {
        Fence::new(self.held.key.clone(), self.held.token)
    }

    /// The session (lease) our key lives on.
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// The instant leader work must be finished by (see [`Session::valid_until`]).
    pub fn valid_until(&self) -> Instant {
        self.held.session.valid_until()
    }

    /// Why leadership is lost, or `None` (see [`LockGuard::lost_reason`](crate::lock::LockGuard::lost_reason)).
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.held.lost_reason()
    }

    /// `true` once leadership is lost.
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when leadership is lost: lease gone or unconfirmed, or our key deleted.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes (see [`LockGuard::lost`](crate::lock::LockGuard::lost)).
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// Replaces our value (observers see it) while we still lead, without a new election.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if we no longer lead; the etcd error kinds.
    ///
    /// # Cancel safety
    /// One transaction: if the future is dropped after it was sent, the value may or may not
    /// have been written (observers tell which); nothing else changes.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let mut client = self.held.session.inner().client.clone();
        proclaim(&mut client, &self.held.key, self.held.token, &value.into()).await
    }

    /// Gives up leadership: deletes our key (or revokes the lease the campaign opened), so the
    /// next candidate is elected at once.
    ///
    /// # Errors
    /// The etcd error kinds; the delete is then retried in the background.
    ///
    /// # Cancel safety
    /// The resignation runs in a task of its own: dropping the future does not stop it, only
    /// the result is lost (as when the leadership is dropped).
    pub async fn resign(self) -> Result<()> {
        self.held.release().await
    }
}

/// A stream of leaders from [`Election::observe`]: read it with [`next`](Self::next) (or, with
/// the `stream` feature, as a `futures_core::Stream` of [`LeaderInfo`]). Dropping it stops the
/// watch.
#[derive(Debug)]
pub struct Observer {
    rx: mpsc::Receiver<LeaderInfo>,
    task: AbortHandle,
}

impl Observer {
    /// The next leader or proclaimed value (a new key, or a new `mod_revision` of the same
    /// key). `None` only if the runtime is shutting down.
    ///
    /// # Cancel safety
    /// Cancel-safe: a leader not yet returned stays buffered for the next call.
    pub async fn next(&mut self) -> Option<LeaderInfo> {
        self.rx.recv().await
    }
}

#[cfg(feature = "stream")]
impl futures_core::Stream for Observer {
    type Item = LeaderInfo;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<LeaderInfo>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the election's prefix with the crate's prefix follower (which heals the watch) and
/// sends the leader (the member with the lowest create_revision) whenever its key or value
/// changes. Returns when the observer is dropped.
async fn observe(etcd: Etcd, prefix: String, tx: mpsc::Sender<LeaderInfo>) {
    let mut follower =
        PrefixFollower::prefix(etcd, &prefix, FollowOptions::default()).for_subsystem("election");
    let changes = metrics::counter!(
        crate::telemetry::ELECTION_LEADER_CHANGES,
        "election" => prefix.clone()
    );
    let mut leader_key: Option<String> = None;
    let mut members: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut last: Option<(String, i64)> = None;
    loop {
        let item = tokio::select! {
            item = follower.next() => item,
            () = tx.closed() => return,
        };
        match item {
            Followed::Resynced { kvs, .. } => {
                members = kvs
                    .into_iter()
                    .filter(|kv| is_member(&prefix, kv.key()))
                    .map(|kv| (kv.key().to_vec(), kv))
                    .collect();
            }
            Followed::Batch { changes, .. } => {
                for change in changes {
                    if !is_member(&prefix, change.key()) {
                        continue;
                    }
                    match change {
                        Change::Put(kv) => {
                            members.insert(kv.key().to_vec(), kv);
                        }
                        Change::Delete(kv) => {
                            members.remove(kv.key());
                        }
                    }
                }
            }
            Followed::Live => continue,
            Followed::Interrupted { error, retry_in } => {
                tracing::debug!(prefix, error = %error, ?retry_in, "observing election interrupted; retrying");
                continue;
            }
        }
        let leader = members.values().min_by_key(|kv| kv.create_revision());
        if let Some(kv) = leader {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if leader_key.as_deref() != Some(key.as_str()) {
                changes.increment(1);
                leader_key = Some(key);
            }
            if !emit(&tx, &mut last, LeaderInfo::from_kv(kv)).await {
                return;
            }
        }
    }
}

/// Sends `leader` unless it is the same key and revision as the last one sent.
async fn emit(
    tx: &mpsc::Sender<LeaderInfo>,
    last: &mut Option<(String, i64)>,
    leader: LeaderInfo,
) -> bool {
    let id = (leader.key.clone(), leader.mod_revision);
    if last.as_ref() == Some(&id) {
        return true;
    }
    *last = Some(id);
    tx.send(leader).await.is_ok()
}
