//! Leader election with Go's `concurrency.Election` semantics (campaign, proclaim, resign,
//! leader, observe), interoperable with `etcdctl elect` and the server's Election RPCs.
//!
//! Candidates queue exactly like lock waiters (keys `NAME/{lease:x}` holding the candidate's
//! value); the leader is the direct child with the lowest create_revision (keys of nested
//! names such as `NAME/eu/{lease:x}` belong to the election `NAME/eu`).

use std::fmt;
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
    /// Without [`Election::session`] each campaign opens its own lease (TTL 10 s unless
    /// [`Election::ttl`] says otherwise).
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
        self.coordinator().election(name).session(self)
    }
}

/// An election: campaign for leadership, or read and observe the leader. Cheap to clone.
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
    /// The TTL of the lease opened for a campaign (default 10 s, whole seconds): a crashed
    /// leader is replaced after at most this long. Ignored with [`session`](Self::session).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options = self.options.with_ttl(ttl);
        self
    }

    /// The safety margin of the lease opened for a campaign (default TTL/5; see
    /// [`SessionOptions::with_margin`]). Ignored with [`session`](Self::session).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.options = self.options.with_margin(margin);
        self
    }

    /// Campaigns on `session`'s lease. Campaigning again on a session that already
    /// campaigns (or leads) joins the same key, proclaiming the new value if it differs.
    pub fn session(mut self, session: &Session) -> Self {
        self.session = Some(session.clone());
        self
    }

    /// The election name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Campaigns with `value` and waits until elected (candidates are elected in the order they
    /// started campaigning). Survives etcd restarts while waiting.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty name; the etcd error kinds if the lease or
    /// key cannot be created; [`ErrorKind::NotFound`] / [`ErrorKind::Unavailable`] if the
    /// session is lost or our key deleted while waiting. Our key is removed on every error.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        self.run(value.into(), None).await
    }

    /// As [`campaign`](Self::campaign), giving up after `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when `timeout` passes (our key has been removed); otherwise as
    /// [`campaign`](Self::campaign).
    pub async fn campaign_timeout(
        &self,
        value: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Leadership> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.run(value.into(), Some(deadline)).await
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

    /// The current leader, `None` if nobody leads.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty name; the etcd error kinds.
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

/// Leadership of an election, from [`Election::campaign`]. Resign with
/// [`resign`](Self::resign); dropping it resigns in the background.
///
/// As with a [`LockGuard`](crate::LockGuard), leadership is a claim that can be lost (lease
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

    /// Why leadership is lost, or `None` (see [`LockGuard::lost_reason`](crate::LockGuard::lost_reason)).
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.held.lost_reason()
    }

    /// `true` once leadership is lost.
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when leadership is lost: lease gone or unconfirmed, or our key deleted.
    /// Cancel-safe.
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// Replaces our value (observers see it) while we still lead, without a new election.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if we no longer lead; the etcd error kinds.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let mut client = self.held.session.inner().client.clone();
        proclaim(&mut client, &self.held.key, self.held.token, &value.into()).await
    }

    /// Gives up leadership: deletes our key (or revokes the lease the campaign opened), so the
    /// next candidate is elected at once.
    ///
    /// # Errors
    /// The etcd error kinds; the delete is then retried in the background.
    pub async fn resign(self) -> Result<()> {
        self.held.release().await
    }
}

/// A stream of leaders from [`Election::observe`]. Dropping it stops the watch.
#[derive(Debug)]
pub struct Observer {
    rx: mpsc::Receiver<LeaderInfo>,
    task: AbortHandle,
}

impl Observer {
    /// The next leader or proclaimed value. `None` only if the runtime is shutting down.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<LeaderInfo> {
        self.rx.recv().await
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
    let mut follower = PrefixFollower::prefix(etcd, &prefix, FollowOptions::default());
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
