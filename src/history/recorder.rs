//! The per-handle recorder: a task that follows the handle's raw change feed, keeps the prefix's
//! key set as of the last revision the handle processed (for publish's guard), keeps the last
//! K applied snapshots in memory, and — in the one handle of the fleet that holds the prefix's
//! recorder seat (see [`seat`](super::seat)) — records every revision as a version.
//!
//! # Who records
//! Every handle that may record campaigns for the seat; the elected one records, the others
//! stand by (they keep their view, so publish, rollback and inspection work through any
//! handle). A record is still a create-if-absent transaction, so a moment with two recorders
//! (an old one paused past its lease) never records a revision twice; a writer through
//! `publish` or `rollback` records its own version in any handle.
//!
//! # Taking over
//! A handle that becomes the recorder (at bind, or when the previous recorder's lease expired)
//! reads the newest recorded version `L` and replays etcd's MVCC history of the prefix from
//! `L + 1` to the revision it has processed, through a [`PrefixFollower`] resumed after `L`
//! (one batch per revision), recording every revision as its own version. What cannot be
//! replayed is recorded as the state it led to, one version holding the current key set: when
//! etcd compacted the revisions after `L` away (the gap is then visible as one version whose
//! predecessor is older than the revisions it skipped), when the replay takes longer than
//! [`REPLAY_LIMIT`], or when no version was ever recorded.
//!
//! Before the bind returns it publishes the type's JSON Schema; if the handle leads by then
//! (it waits up to a few seconds to learn) it has also taken over, so the bound revision is
//! recorded. Only when etcd was unreachable at bind (a stale start) is that left to the task,
//! which then reads the prefix fresh; after a compaction resync or a lagged feed it does the
//! same.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::KeyValue;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use super::keys::Keys;
use super::options::HistoryOptions;
use super::record::Head;
use super::schema;
use super::sealing::Sealing;
use super::seat::{Seat, SeatState};
use super::store::{revs_of, KeySet, Kvs, MetaFrom, Outcome, Prev, Revs, Store};
use crate::background;
use crate::config::{
    BoundRead, ConfigEvent, ConfigOptions, CoordConfig, RawBody, RawOp, RawRevision, Reloader,
    Snapshot, StringFields, Subscription, WatchState,
};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower};
use crate::etcd::Backoff;
use crate::etcd::{read_prefix, read_range};

/// Attempts at recording one revision before leaving it to the other instances.
const RECORD_ATTEMPTS: u32 = 3;

/// How long a new recorder may spend replaying the revisions made since the last recorded
/// version before it records the current key set as one version instead.
pub(crate) const REPLAY_LIMIT: Duration = Duration::from_secs(30);

/// The history part of one [`ConfigHandle`](crate::ConfigHandle) handle, made at bind with the handle (see
/// [`Tracker::start`]): the recorder task and what it shares with the handle's publish,
/// rollback and inspection calls. Dropping it stops the task.
pub(crate) struct Tracker<T: CoordConfig> {
    shared: Arc<Shared<T>>,
    task: JoinHandle<()>,
}

impl<T: CoordConfig> Drop for Tracker<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the recorder shares with the handle's publish, rollback and inspection calls.
pub(crate) struct Shared<T: CoordConfig> {
    pub(crate) store: Store,
    pub(crate) options: HistoryOptions,
    /// The server's `--max-txn-ops`.
    pub(crate) max_txn_ops: usize,
    pub(crate) max_value_bytes: usize,
    view: Mutex<View>,
    seen: watch::Sender<i64>,
    ring: Mutex<Ring<T>>,
    /// The handle's snapshot slot, so [`recent`](Shared::recent) ends with what `load()` returns.
    current: Arc<ArcSwap<Snapshot<T>>>,
    /// Why etcd refused to let this handle record (set once; recording then stops).
    pub(crate) refused: OnceLock<Error>,
}

/// The last applied snapshots, and the handle's events not yet taken into them.
struct Ring<T: CoordConfig> {
    snapshots: VecDeque<Arc<Snapshot<T>>>,
    /// The sum of the kept snapshots' [`Snapshot::approx_bytes`].
    bytes: usize,
    events: Subscription<T>,
}

/// The prefix as of the last revision the handle processed.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// That revision.
    pub(crate) revision: i64,
    /// The key set at that revision.
    pub(crate) kvs: Arc<Kvs>,
    /// The `mod_revision`s of its keys, where known.
    pub(crate) revs: Arc<Revs>,
    /// The key set's size as records count it (keys relative to the prefix plus values).
    pub(crate) bytes: u64,
    /// The version record holding exactly this key set, if known.
    pub(crate) prev: Option<Prev>,
}

impl<T: CoordConfig> Shared<T> {
    /// The view once it has reached `revision` (e.g. the handle's current snapshot), waiting up
    /// to `wait`.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the recorder has not caught up in time.
    pub(crate) async fn view_at_least(&self, revision: i64, wait: Duration) -> Result<View> {
        let mut rx = self.seen.subscribe();
        let target = revision.max(1);
        let reached = tokio::time::timeout(wait, rx.wait_for(|r| *r >= target)).await;
        match reached {
            Ok(Ok(_)) => Ok(self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            _ => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the history of `{}` has not caught up with revision {revision} within {} ms",
                    self.store.keys().prefix(),
                    wait.as_millis()
                ),
            )),
        }
    }

    /// The last applied snapshots, oldest first, ending with the handle's current one.
    pub(crate) fn recent(&self) -> Vec<Arc<Snapshot<T>>> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up(&mut ring);
        ring.snapshots.iter().cloned().collect()
    }

    /// Takes the applied snapshots the handle announced since the last call into the ring, then
    /// the current one if its announcement is still under way (the reload task swaps the
    /// snapshot in before it tells subscribers).
    fn catch_up(&self, ring: &mut Ring<T>) {
        while let Some(event) = ring.events.try_next() {
            if let ConfigEvent::Applied(snapshot) = event {
                self.push(ring, snapshot);
            }
        }
        let current = self.current.load_full();
        self.push(ring, current);
    }

    fn push(&self, ring: &mut Ring<T>, snapshot: Arc<Snapshot<T>>) {
        let newer = ring
            .snapshots
            .back()
            .is_none_or(|last| snapshot.generation() > last.generation());
        if !newer {
            return;
        }
        ring.bytes += snapshot.approx_bytes();
        ring.snapshots.push_back(snapshot);
        while ring.snapshots.len() > self.options.snapshots
            || (ring.bytes > self.options.snapshot_bytes && ring.snapshots.len() > 1)
        {
            if let Some(old) = ring.snapshots.pop_front() {
                ring.bytes = ring.bytes.saturating_sub(old.approx_bytes());
            }
        }
    }

    /// Moves announced snapshots into the ring (so the handle's event buffer does not hold them).
    fn drain_events(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up(&mut ring);
    }
}

impl<T: CoordConfig> Tracker<T> {
    /// The history part for the handle `reloader` will serve, bound to the full `prefix`: must
    /// be made before the reload task runs (it subscribes to the change feed first thing), and
    /// given to the handle.
    ///
    /// When the bind read etcd (the usual case), the task first publishes the JSON Schema,
    /// campaigns for the prefix's recorder seat and, if it wins it within a few seconds, takes
    /// over (records the revisions since the last recorded version, the bound one included); the
    /// returned future resolves when that is done (or the task ended; at once for a handle that
    /// never records, which writes nothing), so the bind can wait until they are in etcd, and
    /// every later revision reaches the recorder through the feed as its own version. A failure there is logged and left to the task, which retries with a
    /// fresh read; it never fails the bind.
    pub(crate) fn start(
        coord: &Coordinator,
        prefix: &str,
        reloader: &Reloader<T>,
        bound_read: Option<BoundRead>,
        options: &ConfigOptions,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let feed = reloader.feed().subscribe();
        // Internal: its lag (never expected, it is drained at every revision) is not a
        // subscriber's.
        let events = Subscription::new(reloader.events().subscribe(), metrics::Counter::noop());
        let bound = reloader.current().load_full();
        let live = reloader.status().load().state == WatchState::Live;
        let namespace = coord.namespace();
        let mut history = options.history.clone();
        if Keys::is_reserved(namespace, prefix) {
            history = history.with_recording(false);
        }
        let env_prefix = match &options.env_prefix {
            crate::config::Setting::FromType => T::ENV_PREFIX.map(str::to_string),
            crate::config::Setting::Set(p) => Some(p.clone()),
            crate::config::Setting::Off => None,
        };
        let schema_doc = history.record.then(|| {
            schema::document(
                reloader.checker().schema(),
                std::any::type_name::<T>(),
                prefix,
                T::SECRETS,
                env_prefix.as_deref(),
            )
        });
        let (seen, _) = watch::channel(0);
        let sealing = Sealing::new(
            T::SECRETS.iter().map(|s| s.to_string()).collect(),
            history.keys.clone(),
            StringFields::new(reloader.checker().schema().clone()),
        );
        let store =
            Store::new(reloader.etcd().clone(), Keys::new(namespace, prefix)).with_sealing(sealing);
        let shared = Arc::new(Shared {
            store,
            options: history,
            max_txn_ops: options.max_txn_ops,
            max_value_bytes: options.max_value_bytes,
            view: Mutex::new(View {
                revision: 0,
                kvs: Arc::default(),
                revs: Arc::default(),
                bytes: 0,
                prev: None,
            }),
            seen,
            ring: Mutex::new(Ring {
                bytes: bound.approx_bytes(),
                snapshots: VecDeque::from([Arc::clone(&bound)]),
                events,
            }),
            current: Arc::clone(reloader.current()),
            refused: OnceLock::new(),
        });
        let seat = shared.options.record.then(|| {
            Seat::start(
                coord,
                shared.store.keys().recorder_election(),
                shared.options.recorder_ttl,
            )
        });
        let recorder = Recorder {
            shared: Arc::clone(&shared),
            page_size: options.page_size,
            kvs: Arc::default(),
            revs: Arc::default(),
            bytes: 0,
            revision: 0,
            prev: None,
            seat,
            leading: None,
        };
        let (bind_done, bind_wait) = oneshot::channel();
        let bind_at = live.then(|| bound.revision());
        let bind_at = bind_at.map(|revision| {
            let read = bound_read.filter(|r| r.revision == revision);
            (revision, read)
        });
        // A handle that never records writes nothing before it is handed out: no wait.
        let writes = recorder.seat.is_some() || schema_doc.is_some();
        let task = tokio::spawn(recorder.run(feed, schema_doc, bind_at, bind_done));
        let bound = async move {
            if writes {
                let _ = bind_wait.await;
            }
        };
        (Tracker { shared, task }, bound)
    }

    /// What the recorder shares with the handle.
    pub(crate) fn shared(&self) -> &Arc<Shared<T>> {
        &self.shared
    }
}

struct Recorder<T: CoordConfig> {
    shared: Arc<Shared<T>>,
    page_size: i64,
    kvs: Arc<Kvs>,
    /// The `mod_revision`s of `kvs`'s keys, where known.
    revs: Arc<Revs>,
    /// `kvs`'s size as records count it, kept up to date with each revision.
    bytes: u64,
    revision: i64,
    prev: Option<Prev>,
    /// This handle's candidacy for the recorder seat (`None` when it never records).
    seat: Option<Seat>,
    /// The term (fencing token) this handle leads in, while it holds the seat.
    leading: Option<i64>,
}

/// The key set, `mod_revision`s and size (as records count it) of the bind's own read.
fn bound_state(store: &Store, read: BoundRead) -> (Kvs, Revs, u64) {
    let revs: Revs = read.kvs.iter().map(|(k, _, r)| (k.clone(), *r)).collect();
    // The layer keeps the same bytes: the view's copy is made here, off the bind's read.
    let kvs: Kvs = read
        .kvs
        .into_iter()
        .map(|(k, v, _)| (k, Vec::from(v)))
        .collect();
    let bytes = store.state_bytes(&kvs);
    (kvs, revs, bytes)
}

/// The next state of `seat`, or never.
async fn seat_changed(seat: &mut Option<Seat>) -> SeatState {
    match seat {
        Some(seat) => seat.changed().await,
        None => std::future::pending().await,
    }
}

impl<T: CoordConfig> Recorder<T> {
    /// With `bind_at` (the bound snapshot's revision, when the bind read etcd), first publishes
    /// the schema and records that revision's key set, then says so on `bind_done` (which the
    /// bind of a handle that never records does not wait for: its view of the bound revision
    /// follows, and readers wait for it with `view_at_least`).
    async fn run(
        mut self,
        mut feed: broadcast::Receiver<Arc<RawRevision>>,
        mut schema_doc: Option<Value>,
        bind_at: Option<(i64, Option<BoundRead>)>,
        bind_done: oneshot::Sender<()>,
    ) {
        if let Some((revision, read)) = bind_at {
            // The bind waits for this part only when it writes something first.
            let bind_waits = self.seat.is_some() || schema_doc.is_some();
            if let Some(doc) = &schema_doc {
                if self.publish_schema(doc).await {
                    schema_doc = None;
                }
            }
            self.bind_at(revision, read, bind_waits).await;
            if self.revision > 0 {
                if let Some(seat) = self.seat.as_mut() {
                    let state = seat.settle().await;
                    self.on_seat(state).await;
                }
            }
        }
        let _ = bind_done.send(());
        if let Some(doc) = schema_doc {
            if self.may_record() {
                self.publish_schema(&doc).await;
            }
        }
        if self.revision == 0 {
            self.resync().await;
        }
        if let Some(state) = self.seat.as_ref().map(Seat::state) {
            self.on_seat(state).await;
        }
        loop {
            let message = tokio::select! {
                state = seat_changed(&mut self.seat) => {
                    self.on_seat(state).await;
                    continue;
                }
                message = feed.recv() => message,
            };
            self.shared.drain_events();
            match message {
                Ok(raw) => self.on_revision(&raw).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(prefix = %self.shared.store.keys().prefix(), missed, "history fell behind the change feed; re-reading the prefix");
                    self.resync().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Whether this handle may record: its options say so and etcd has not refused it.
    fn may_record(&self) -> bool {
        self.shared.options.record && self.shared.refused.get().is_none()
    }

    /// Whether this handle records now: it may, and it holds the recorder seat.
    fn recording(&self) -> bool {
        self.may_record() && self.leading.is_some()
    }

    /// Follows the seat: on a new term, takes over (replays what was not recorded); on losing
    /// it, stands by; on a refusal, stops campaigning.
    async fn on_seat(&mut self, state: SeatState) {
        match state {
            SeatState::Leading { token } => {
                if self.leading == Some(token) || !self.may_record() {
                    return;
                }
                self.leading = Some(token);
                if self.revision > 0 {
                    self.take_over().await;
                    self.publish_view();
                }
            }
            SeatState::Opening | SeatState::Campaigning { .. } => self.leading = None,
            SeatState::Refused(error) => {
                self.leading = None;
                self.seat = None;
                if !self.refuse(&error) {
                    tracing::warn!(prefix = %self.shared.store.keys().prefix(), error = %error, "cannot campaign for the history recorder seat");
                }
            }
        }
    }

    /// Records what happened since the newest recorded version, up to `self.revision`: every
    /// revision replayed from etcd's history, or the current key set as one version where that
    /// history is gone (see the module docs).
    async fn take_over(&mut self) {
        let store = self.shared.store.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut latest = None;
        for _ in 0..5 {
            match store.latest().await {
                Ok(found) => {
                    latest = Some(found);
                    break;
                }
                Err(error) => {
                    if self.refuse(&error) {
                        return;
                    }
                    tracing::warn!(prefix = %store.keys().prefix(), error = %error, "cannot read the latest version");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        match latest {
            Some(Some(head)) if head.revision >= self.revision => {
                if head.revision == self.revision {
                    self.prev = Some(head.prev());
                }
            }
            Some(Some(head)) => {
                if !self.replay(&head).await {
                    self.record_state().await;
                }
            }
            // Nothing recorded yet (or unreadable): the current key set is the first version.
            _ => self.record_state().await,
        }
    }

    /// Replays the prefix's revisions after `head` up to `self.revision` from etcd and records
    /// each. Returns `false` if that history cannot be replayed (compacted, too slow, or not
    /// ending where the handle's view is); what was recorded stays.
    async fn replay(&mut self, head: &Head) -> bool {
        let store = self.shared.store.clone();
        let keys = store.keys().clone();
        let target = self.revision;
        let from = head.revision;
        let read = read_range(
            store.etcd(),
            keys.prefix().as_bytes().to_vec(),
            keys.prefix_end(),
            self.page_size,
            Some(from),
        )
        .await;
        let (mut kvs, mut revs, mut bytes) = match read {
            Ok((_, kvs)) => {
                let revs = revs_of(&kvs);
                let kvs: Kvs = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
                let bytes = store.state_bytes(&kvs);
                (kvs, revs, bytes)
            }
            Err(error) => {
                tracing::warn!(prefix = %keys.prefix(), from, to = target, error = %error, "the revisions since the last recorded version cannot be replayed (compacted?); recording the current key set as one version");
                return false;
            }
        };
        let newest = revs.values().copied().max().unwrap_or(0);
        let options = FollowOptions {
            page_size: self.page_size,
            ..FollowOptions::default()
        };
        let mut follower = PrefixFollower::prefix(store.etcd().clone(), keys.prefix(), options)
            .for_subsystem("history")
            .resume_after(from, kvs.len(), newest);
        let deadline = tokio::time::Instant::now() + REPLAY_LIMIT;
        let mut prev = Some(head.prev());
        let mut replayed = 0u64;
        let mut created = false;
        loop {
            let Ok(item) = tokio::time::timeout_at(deadline, follower.next()).await else {
                tracing::warn!(prefix = %keys.prefix(), from, to = target, replayed, "replaying the revisions since the last recorded version took too long; recording the current key set as one version");
                return false;
            };
            match item {
                Followed::Batch { revision, changes } => {
                    if revision > target {
                        break;
                    }
                    let ops: Vec<RawOp> = changes
                        .into_iter()
                        .map(|change| match change {
                            Change::Put(kv) => {
                                let (k, v) = kv.into_key_value();
                                RawOp::Put(k, v)
                            }
                            Change::Delete(kv) => RawOp::Delete(kv.key().to_vec()),
                        })
                        .collect();
                    store.apply((&mut kvs, &mut revs, &mut bytes), &ops, revision);
                    let outcome = store
                        .record(
                            revision,
                            KeySet {
                                kvs: &kvs,
                                revs: &revs,
                                bytes,
                            },
                            Some(&ops),
                            MetaFrom::Lookup,
                            prev,
                            None,
                        )
                        .await;
                    replayed += 1;
                    match outcome {
                        Ok(outcome) => {
                            created |= matches!(outcome, Outcome::Created(_));
                            prev = outcome.head().map(Head::prev);
                        }
                        Err(error) => {
                            prev = None;
                            if self.refuse(&error) {
                                return true;
                            }
                            tracing::warn!(prefix = %keys.prefix(), revision, error = %error, "could not record a replayed version");
                        }
                    }
                    if revision == target {
                        break;
                    }
                }
                Followed::Live => break,
                Followed::Resynced { reason, .. } => {
                    tracing::warn!(prefix = %keys.prefix(), from, to = target, replayed, %reason, "the revisions since the last recorded version cannot be replayed; recording the current key set as one version");
                    return false;
                }
                Followed::Interrupted { error, retry_in } => {
                    tracing::debug!(prefix = %keys.prefix(), error = %error, ?retry_in, "replay interrupted; retrying");
                }
            }
        }
        tracing::info!(prefix = %keys.prefix(), from, to = target, replayed, "took over recording: replayed the revisions since the last recorded version");
        if created {
            let options = &self.shared.options;
            if let Err(error) = store.maybe_prune(options.keep, options.max_age).await {
                tracing::warn!(prefix = %keys.prefix(), error = %error, "pruning history failed");
            }
        }
        if kvs != *self.kvs {
            tracing::warn!(prefix = %keys.prefix(), revision = target, "the replayed key set differs from the handle's; recording the handle's as one version");
            return false;
        }
        self.prev = prev;
        true
    }

    /// If etcd refused `error`'s request for a missing permission, stops recording for this
    /// handle (the view for publish's guard is still kept), says so once, and returns `true`.
    /// ConfigHandle keeps loading: the history is the one thing lost, and the other instances, or
    /// `coordctl`'s own writes, may still record it.
    fn refuse(&self, error: &Error) -> bool {
        if !error.is_permission_denied() {
            return false;
        }
        let keys = self.shared.store.keys();
        let refused = Error::new(
            ErrorKind::Auth,
            format!(
                "the history of `{}` is not recorded by this handle: {}; recording needs readwrite permission on the prefix `{}` (grant it, or bind with HistoryOptions::with_recording(false))",
                keys.prefix(),
                error.message(),
                keys.reserved(),
            ),
        )
        .with_key(error.key().unwrap_or(keys.reserved()))
        .with_source(error.clone());
        if self.shared.refused.set(refused.clone()).is_ok() {
            tracing::warn!(prefix = %keys.prefix(), error = %refused, "history recording refused by etcd");
        }
        true
    }

    /// Writes the JSON Schema document unless it is already there. Returns whether it is in
    /// etcd now.
    async fn publish_schema(&self, doc: &Value) -> bool {
        let store = &self.shared.store;
        match schema::publish(&store.client(), store.keys().schema(), doc).await {
            Ok(_) => true,
            Err(error) => {
                if !self.refuse(&error) {
                    tracing::warn!(key = store.keys().schema(), error = %error, "could not publish the JSON Schema");
                }
                false
            }
        }
    }

    /// Takes the key set of the bound snapshot's `revision` as the view (`read`, the bind's own
    /// read at that revision, or else one paged read pinned there); recording it is the seat
    /// holder's take-over. Leaves `self.revision` at 0 if the read fails (the task then
    /// re-reads the prefix). With `bind_waits` false (the bind has returned without waiting for
    /// this), the maps of `read` are built on the background thread, which does not take the CPU
    /// from the bind's last steps.
    async fn bind_at(&mut self, revision: i64, read: Option<BoundRead>, bind_waits: bool) {
        let keys = self.shared.store.keys().clone();
        if let Some(read) = read {
            // The bind's own read at this revision: the same keys a read here would return.
            let store = self.shared.store.clone();
            let taken = if bind_waits {
                Some(bound_state(&store, read))
            } else {
                background::run(move || bound_state(&store, read)).await
            };
            match taken {
                Some((kvs, revs, bytes)) => {
                    self.take_state(kvs, revs, bytes);
                    self.revision = revision;
                    self.publish_view();
                }
                None => {
                    tracing::warn!(prefix = %keys.prefix(), revision, "history could not take the bound key set; re-reading the prefix");
                }
            }
            return;
        }
        let read = read_range(
            self.shared.store.etcd(),
            keys.prefix().as_bytes().to_vec(),
            keys.prefix_end(),
            self.page_size,
            Some(revision),
        )
        .await;
        match read {
            Ok((_, kvs)) => {
                self.set_read(kvs);
                self.revision = revision;
                self.publish_view();
            }
            Err(error) => {
                tracing::warn!(prefix = %keys.prefix(), revision, error = %error, "history cannot read the bound revision; re-reading the prefix");
            }
        }
    }

    /// Takes `kvs` and `revs` as the key set, counting its size.
    fn set_state(&mut self, kvs: Kvs, revs: Revs) {
        let bytes = self.shared.store.state_bytes(&kvs);
        self.take_state(kvs, revs, bytes);
    }

    /// Takes `kvs` and `revs` as the key set, of `bytes` as records count it.
    fn take_state(&mut self, kvs: Kvs, revs: Revs, bytes: u64) {
        self.bytes = bytes;
        self.kvs = Arc::new(kvs);
        self.revs = Arc::new(revs);
    }

    /// Takes the key set etcd returned as the key set.
    fn set_read(&mut self, kvs: Vec<KeyValue>) {
        let revs = revs_of(&kvs);
        self.set_state(
            kvs.into_iter().map(KeyValue::into_key_value).collect(),
            revs,
        );
    }

    fn publish_view(&self) {
        *self.shared.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            revision: self.revision,
            kvs: Arc::clone(&self.kvs),
            revs: Arc::clone(&self.revs),
            bytes: self.bytes,
            prev: self.prev,
        };
        self.shared.seen.send_replace(self.revision);
    }

    /// Reads the whole prefix (retrying until etcd answers); the recorder then records what it
    /// has not (see [`take_over`](Self::take_over)).
    async fn resync(&mut self) {
        let store = self.shared.store.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let (revision, kvs) = loop {
            match read_prefix(store.etcd(), store.keys().prefix(), self.page_size).await {
                Ok(read) => break read,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(prefix = %store.keys().prefix(), error = %error, retry_in_ms = delay.as_millis() as u64, "history cannot read the prefix");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        if revision <= self.revision {
            return;
        }
        self.set_read(kvs);
        self.revision = revision;
        self.prev = None;
        self.publish_view();
        if self.recording() {
            self.take_over().await;
            self.publish_view();
        }
    }

    /// Records the key set read at `self.revision` (not a revision that necessarily changed the
    /// prefix) unless the newest version already holds it or is newer.
    async fn record_state(&mut self) {
        let store = self.shared.store.clone();
        let latest = match store.latest().await {
            Ok(latest) => latest,
            Err(error) => {
                if !self.refuse(&error) {
                    tracing::warn!(prefix = %store.keys().prefix(), error = %error, "cannot read the latest version");
                }
                return;
            }
        };
        if let Some(latest) = &latest {
            if latest.revision >= self.revision {
                if latest.revision == self.revision {
                    self.prev = Some(latest.prev());
                }
                return;
            }
            if latest.keys == self.kvs.len() && latest.bytes == self.bytes {
                match store.state_at(latest.revision).await {
                    Ok((_, state))
                        if store
                            .sealing()
                            .same_state(store.keys().prefix(), &state, &self.kvs) =>
                    {
                        self.prev = Some(latest.prev());
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(error = %error, "cannot compare with the latest version")
                    }
                }
            }
        }
        let newer_than = latest.as_ref().map_or(0, |l| l.revision);
        let outcome = store
            .record(
                self.revision,
                KeySet {
                    kvs: &self.kvs,
                    revs: &self.revs,
                    bytes: self.bytes,
                },
                None,
                MetaFrom::Lookup,
                None,
                Some(newer_than),
            )
            .await;
        self.after_record(outcome).await;
    }

    async fn on_revision(&mut self, raw: &RawRevision) {
        if raw.revision <= self.revision {
            return;
        }
        let prev = self.prev.take();
        self.revision = raw.revision;
        let delta = match &raw.body {
            RawBody::Delta(ops) => {
                let state = (
                    Arc::make_mut(&mut self.kvs),
                    Arc::make_mut(&mut self.revs),
                    &mut self.bytes,
                );
                self.shared.store.apply(state, ops, raw.revision);
                Some(ops)
            }
            RawBody::Full(all) => {
                // A resync's read carries no mod revisions: a key keeps the one it had if its
                // value is the same (what a diff needs), and has none if it changed.
                let revs: Revs = all
                    .iter()
                    .filter(|(k, v)| self.kvs.get(k) == Some(v))
                    .filter_map(|(k, _)| Some((k.clone(), *self.revs.get(k)?)))
                    .collect();
                self.set_state(all.iter().cloned().collect(), revs);
                None
            }
        };
        self.publish_view();
        if !self.recording() {
            return;
        }
        let Some(ops) = delta else {
            self.take_over().await;
            self.publish_view();
            return;
        };
        let store = self.shared.store.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = store
                .record(
                    self.revision,
                    KeySet {
                        kvs: &self.kvs,
                        revs: &self.revs,
                        bytes: self.bytes,
                    },
                    Some(ops),
                    MetaFrom::Lookup,
                    prev,
                    None,
                )
                .await;
            match outcome {
                Err(error) if attempt < RECORD_ATTEMPTS && !error.is_permission_denied() => {
                    tracing::debug!(revision = self.revision, error = %error, attempt, "recording failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                outcome => {
                    self.after_record(outcome).await;
                    break;
                }
            }
        }
        self.publish_view();
    }

    async fn after_record(&mut self, outcome: Result<Outcome>) {
        let store = &self.shared.store;
        match outcome {
            Ok(Outcome::Created(head)) => {
                self.prev = Some(head.prev());
                tracing::debug!(prefix = %store.keys().prefix(), revision = head.revision, source = %head.meta.source, "recorded version");
                let options = &self.shared.options;
                if let Err(error) = store.maybe_prune(options.keep, options.max_age).await {
                    tracing::warn!(prefix = %store.keys().prefix(), error = %error, "pruning history failed");
                }
            }
            Ok(Outcome::Existing(head)) => self.prev = Some(head.prev()),
            Ok(Outcome::Superseded) => self.prev = None,
            Err(error) => {
                self.prev = None;
                if self.refuse(&error) {
                    return;
                }
                tracing::warn!(prefix = %store.keys().prefix(), revision = self.revision, error = %error, "could not record a version; other instances may");
            }
        }
    }
}
