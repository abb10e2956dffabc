//! The per-handle recorder: a task that follows the handle's raw change feed, keeps the prefix's
//! key set as of the last revision the handle processed (for publish's guard), records every
//! revision as a version (create-if-absent, so N instances record it once), and keeps the last
//! K applied snapshots in memory.
//!
//! At bind, before `bind()` returns, it publishes the type's JSON Schema and records the key set
//! of the bound snapshot's revision unless the newest version already holds it (changes made
//! while no instance ran become one `external` version), so every later revision is recorded as
//! its own version from the feed. Only when etcd was unreachable at bind (a stale start) is that
//! left to the task, which then reads the prefix fresh; after a compaction resync or a lagged
//! feed it does the same.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::keys::Keys;
use super::schema;
use super::settings::HistorySettings;
use super::store::{Kvs, MetaFrom, Outcome, Prev, Store};
use crate::config::{
    Config, ConfigEvent, ConfigOptions, CoordConfig, RawBody, RawOp, RawRevision, Snapshot,
    Subscription, WatchState,
};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::Backoff;
use crate::etcd::{read_prefix, read_range};

/// Attempts at recording one revision before leaving it to the other instances.
const RECORD_ATTEMPTS: u32 = 3;

/// The history state of one [`Config`] handle (a field of the handle, set at bind).
pub(crate) struct Tracking<T: CoordConfig> {
    cell: OnceLock<Tracker<T>>,
}

impl<T: CoordConfig> Default for Tracking<T> {
    fn default() -> Self {
        Tracking {
            cell: OnceLock::new(),
        }
    }
}

impl<T: CoordConfig> Tracking<T> {
    /// The tracker, once [`start`] ran for the handle.
    pub(crate) fn get(&self) -> Option<&Arc<Shared<T>>> {
        self.cell.get().map(|t| &t.shared)
    }
}

struct Tracker<T: CoordConfig> {
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
    pub(crate) settings: HistorySettings,
    pub(crate) max_value_bytes: usize,
    view: Mutex<View>,
    seen: watch::Sender<i64>,
    ring: Mutex<Ring<T>>,
    /// The handle's snapshot slot, so [`recent`](Shared::recent) ends with what `load()` returns.
    current: Arc<ArcSwap<Snapshot<T>>>,
}

/// The last applied snapshots, and the handle's events not yet taken into them.
struct Ring<T: CoordConfig> {
    snapshots: VecDeque<Arc<Snapshot<T>>>,
    events: Subscription<T>,
}

/// The prefix as of the last revision the handle processed.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// That revision.
    pub(crate) revision: i64,
    /// The key set at that revision.
    pub(crate) kvs: Arc<Kvs>,
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
        while let Some(event) = ring.events.try_recv() {
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
        ring.snapshots.push_back(snapshot);
        while ring.snapshots.len() > self.settings.snapshots {
            ring.snapshots.pop_front();
        }
    }

    /// Moves announced snapshots into the ring (so the handle's event buffer does not hold them).
    fn drain_events(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up(&mut ring);
    }
}

/// Starts history for a freshly bound handle: must run right after `Config::spawn`, before the
/// reload task can process a new revision (it subscribes to the feed first thing).
///
/// When the bind read etcd (the usual case), this publishes the JSON Schema and records the
/// bound snapshot's key set before it returns, so both are in etcd when `bind()` returns and
/// every later revision reaches the recorder through the feed as its own version. A failure here
/// is logged and left to the task, which retries with a fresh read; it never fails the bind.
pub(crate) async fn start<T: CoordConfig>(
    coord: &Coordinator,
    config: &Config<T>,
    options: &ConfigOptions,
) {
    let feed = config.feed();
    let events = config.subscribe();
    let bound = config.load_full();
    let live = config.status().state == WatchState::Live;
    let namespace = coord.namespace();
    let prefix = config.prefix();
    let mut settings = options.history.clone();
    if Keys::is_reserved(namespace, prefix) {
        settings = settings.disabled();
    }
    let schema_doc = settings.enabled.then(|| {
        schema::document(
            config.schema(),
            std::any::type_name::<T>(),
            prefix,
            T::SECRETS,
        )
    });
    let (seen, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        store: Store::new(config.etcd(), Keys::new(namespace, prefix)),
        settings,
        max_value_bytes: options.max_value_bytes,
        view: Mutex::new(View {
            revision: 0,
            kvs: Arc::default(),
            prev: None,
        }),
        seen,
        ring: Mutex::new(Ring {
            snapshots: VecDeque::from([Arc::clone(&bound)]),
            events,
        }),
        current: config.snapshot_slot(),
    });
    let mut recorder = Recorder {
        shared: Arc::clone(&shared),
        page_size: options.page_size,
        kvs: Arc::default(),
        revision: 0,
        prev: None,
    };
    let mut schema_doc = schema_doc;
    if live {
        if let Some(doc) = &schema_doc {
            if recorder.publish_schema(doc).await {
                schema_doc = None;
            }
        }
        recorder.bind_at(bound.revision()).await;
    }
    let task = tokio::spawn(recorder.run(feed, schema_doc));
    let _ = config.history_slot().cell.set(Tracker { shared, task });
}

struct Recorder<T: CoordConfig> {
    shared: Arc<Shared<T>>,
    page_size: i64,
    kvs: Arc<Kvs>,
    revision: i64,
    prev: Option<Prev>,
}

impl<T: CoordConfig> Recorder<T> {
    async fn run(
        mut self,
        mut feed: broadcast::Receiver<Arc<RawRevision>>,
        schema_doc: Option<Value>,
    ) {
        if let Some(doc) = schema_doc {
            self.publish_schema(&doc).await;
        }
        if self.revision == 0 {
            self.resync().await;
        }
        loop {
            let message = feed.recv().await;
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

    /// Writes the JSON Schema document unless it is already there. Returns whether it is in
    /// etcd now.
    async fn publish_schema(&self, doc: &Value) -> bool {
        let store = &self.shared.store;
        match schema::publish(&store.client(), store.keys().schema(), doc).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(key = store.keys().schema(), error = %error, "could not publish the JSON Schema");
                false
            }
        }
    }

    /// Takes the key set of the bound snapshot's `revision` (one paged read pinned there) as the
    /// view and records it unless the newest version holds it. Leaves `self.revision` at 0 if
    /// the read fails (the task then re-reads the prefix).
    async fn bind_at(&mut self, revision: i64) {
        let keys = self.shared.store.keys().clone();
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
                self.kvs = Arc::new(kvs.into_iter().map(|kv| kv.into_key_value()).collect());
                self.revision = revision;
                self.publish_view();
                if self.shared.settings.enabled {
                    self.record_state().await;
                    self.publish_view();
                }
            }
            Err(error) => {
                tracing::warn!(prefix = %keys.prefix(), revision, error = %error, "history cannot read the bound revision; re-reading the prefix");
            }
        }
    }

    fn publish_view(&self) {
        *self.shared.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            revision: self.revision,
            kvs: Arc::clone(&self.kvs),
            prev: self.prev,
        };
        self.shared.seen.send_replace(self.revision);
    }

    /// Reads the whole prefix (retrying until etcd answers) and records it if it is new.
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
        self.kvs = Arc::new(kvs.into_iter().map(|kv| kv.into_key_value()).collect());
        self.revision = revision;
        self.prev = None;
        self.publish_view();
        if self.shared.settings.enabled {
            self.record_state().await;
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
                tracing::warn!(prefix = %store.keys().prefix(), error = %error, "cannot read the latest version");
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
            if latest.keys == self.kvs.len() && latest.bytes == store.state_bytes(&self.kvs) {
                match store.state_at(latest.revision).await {
                    Ok((_, state)) if state == *self.kvs => {
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
                &self.kvs,
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
                let kvs = Arc::make_mut(&mut self.kvs);
                for op in ops {
                    match op {
                        RawOp::Put(k, v) => {
                            kvs.insert(k.clone(), v.clone());
                        }
                        RawOp::Delete(k) => {
                            kvs.remove(k);
                        }
                    }
                }
                Some(ops)
            }
            RawBody::Full(all) => {
                self.kvs = Arc::new(all.iter().cloned().collect());
                None
            }
        };
        self.publish_view();
        if !self.shared.settings.enabled {
            return;
        }
        let Some(ops) = delta else {
            self.record_state().await;
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
                    &self.kvs,
                    Some(ops),
                    MetaFrom::Lookup,
                    prev,
                    None,
                )
                .await;
            match outcome {
                Err(error) if attempt < RECORD_ATTEMPTS => {
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
                let settings = &self.shared.settings;
                if let Err(error) = store.maybe_prune(settings.keep, settings.max_age).await {
                    tracing::warn!(prefix = %store.keys().prefix(), error = %error, "pruning history failed");
                }
            }
            Ok(Outcome::Existing(head)) => self.prev = Some(head.prev()),
            Ok(Outcome::Superseded) => self.prev = None,
            Err(error) => {
                self.prev = None;
                tracing::warn!(prefix = %store.keys().prefix(), revision = self.revision, error = %error, "could not record a version; other instances may");
            }
        }
    }
}
