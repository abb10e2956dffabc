//! The background task behind a [`ConfigHandle`](super::ConfigHandle): it owns the layers, follows the etcd
//! watch and the file watch, and swaps in each change that validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use etcd_client::KeyValue;
use tokio::sync::broadcast;

use super::cache::{self, CacheFile, CacheWriter, CachedKey};
use super::check::{Checker, Region};
use super::coord_config::CoordConfig;
use super::event::{ConfigEvent, Rejection, ReloadCause};
use super::feed::{RawBody, RawOp, RawRevision};
use super::layers::{
    env_layer, file_layer, read_file, read_layer, EtcdLayer, FileContent, FileWatch, LayerRead,
    Overlay, ReadKv,
};
use super::observe::ConfigMetrics;
use super::options::{ConfigOptions, Setting, UnknownKeys};
use super::snapshot::Snapshot;
use super::status::{ConfigStatus, WatchState};
use super::tree::{EtcdTree, LayerTree, Merged};
use super::unknown::{self, UnknownKey};
use super::value::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::follow::{self, FollowOptions, ResyncReason};
use crate::etcd::Etcd;
use crate::provenance::{Layer, Origin};
use crate::secrets::SecretPaths;
use crate::telemetry::CONFIG_TARGET;

/// Keys with their raw values, in key order.
type RawKvs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every layer as last read, and how to check a merge of them.
pub(super) struct State<T: CoordConfig> {
    /// The connection the layer is read and watched over.
    pub(super) conn: Etcd,
    /// The full etcd prefix, namespace included, ending with `/`.
    pub(super) prefix: String,
    checker: Arc<Checker<T>>,
    fields: StringFields,
    etcd: EtcdLayer,
    /// The etcd layer's tree as built with a read of the whole prefix, for the full build that
    /// follows the read (which takes it instead of building it again).
    etcd_tree: Option<Result<EtcdTree>>,
    file_path: Option<PathBuf>,
    file: Result<LayerTree>,
    /// What the file held at its last read (or why it could not be read): a file event whose
    /// read finds the same is not a change.
    file_seen: Option<std::result::Result<FileContent, String>>,
    max_file_bytes: usize,
    env: LayerTree,
    /// A rollout's staged values, laid over the etcd layer on cohort instances (see
    /// `layers/overlay.rs`), and their tree (or the bad staged key).
    overlay: Option<(Arc<Overlay>, Result<LayerTree>)>,
    unknown_keys: UnknownKeys,
    /// The unknown keys of the serving snapshot, to report only when they change.
    unknown_seen: Vec<UnknownKey>,
    /// The last etcd revision processed (applied or rejected); the watch resumes after it.
    pub(super) revision: i64,
    /// The generation of the snapshot being served.
    generation: u64,
    /// Whether the etcd layer reflects etcd (false after a cold start until the first read).
    pub(super) synced: bool,
    /// The merged tree and provenance of the layers as they are now, when the last merge of
    /// them succeeded; `None` forces the next reload to merge from scratch.
    merged: Option<Merged>,
    /// The unknown keys of `merged`.
    unknown_now: Vec<UnknownKey>,
    /// Where the merged document differs from the one the serving snapshot's value was made
    /// from; `None` when that is not known (the next reload is a full one).
    pending: Option<Pending>,
    /// Every reload merges, checks and deserializes the whole value.
    full_reload: bool,
    /// Whether the last build was made in place (for the reload log).
    in_place: bool,
}

/// Changed paths kept while changes are rejected, before the next reload is a full one.
const MAX_PENDING: usize = 4096;

/// The changes since the serving snapshot: rejected ones accumulate here, so the next in-place
/// build rebuilds and re-checks them too.
#[derive(Debug, Default)]
struct Pending {
    /// The field paths the changes touched.
    paths: Vec<Vec<String>>,
    /// The subtrees those changes may have made invalid.
    regions: Vec<Region>,
}

/// The background task's state: the layers, and the slot and channels it publishes to.
pub(crate) struct Reloader<T: CoordConfig> {
    pub(super) state: State<T>,
    current: Arc<ArcSwap<Snapshot<T>>>,
    events: broadcast::Sender<ConfigEvent<T>>,
    feed: broadcast::Sender<Arc<RawRevision>>,
    status: Arc<ArcSwap<ConfigStatus>>,
    cache: Option<CacheWriter>,
    pub(super) timing: Timing,
    /// The handle's metrics, labelled with its prefix.
    pub(super) metrics: ConfigMetrics,
    /// Where the receipt task sends the rollout overlay (taken by the run loop).
    pub(super) overlay_rx: Option<tokio::sync::watch::Receiver<Option<Arc<Overlay>>>>,
    overlay_tx: tokio::sync::watch::Sender<Option<Arc<Overlay>>>,
}

/// How the watch is supervised (from [`ConfigOptions`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    pub(super) debounce: Duration,
    pub(super) follow: FollowOptions,
}

/// What the bind produced: the first snapshot and the task's state.
pub(crate) struct Started<T: CoordConfig> {
    pub(crate) reloader: Reloader<T>,
    pub(crate) file_watch: Option<FileWatch>,
    /// What the bind read from etcd, if it did (not after a cold start): the history part
    /// starts from it instead of reading the prefix a second time.
    pub(crate) bound_read: Option<BoundRead>,
}

/// The keys under the prefix as the bind read them, at the bound revision.
#[derive(Debug)]
pub(crate) struct BoundRead {
    /// The revision every page was read at (the bound snapshot's).
    pub(crate) revision: i64,
    /// Every key with its value (the bytes the etcd layer holds) and `mod_revision`, in key
    /// order.
    pub(crate) kvs: Vec<ReadKv>,
}

impl<T: CoordConfig> Reloader<T> {
    /// Reads every layer, validates, and returns the state with the first snapshot stored.
    pub(crate) async fn start(
        etcd: Etcd,
        prefix: String,
        options: &ConfigOptions,
    ) -> Result<Started<T>> {
        let schema = Checker::<T>::generate_schema();
        let fields = StringFields::new(schema.clone()).with_max_depth(options.max_depth);
        // The schema is checked and compiled on a thread of its own while etcd is read (the
        // read waits on etcd at first); a schema that does not compile still fails the bind.
        let compiling = tokio::task::spawn_blocking(move || Checker::<T>::compile(schema));

        let env_prefix = match &options.env_prefix {
            Setting::FromType => T::ENV_PREFIX.map(str::to_string),
            Setting::Set(p) => Some(p.clone()),
            Setting::Off => None,
        };
        let env = match env_prefix {
            None => LayerTree::default(),
            Some(p) => match &options.env_vars {
                Some(vars) => {
                    env_layer(&p, vars.iter().map(|(k, v)| (k.into(), v.into())), &fields)?
                }
                None => env_layer(&p, std::env::vars_os(), &fields)?,
            },
        };

        let file_path = match &options.file {
            Setting::FromType => T::FILE.map(PathBuf::from),
            Setting::Set(p) => Some(p.clone()),
            Setting::Off => None,
        };
        let (file, file_seen) = match &file_path {
            Some(path) => {
                let content = read_file(path, options.max_value_bytes)?;
                (file_layer(path, &content, &fields)?, Some(Ok(content)))
            }
            None => (LayerTree::default(), None),
        };
        let file_watch = file_path.as_deref().map(FileWatch::new).transpose()?;

        let cache_path = options.cache_file.clone();
        let (layer, read) = read_layer(
            &etcd,
            &prefix,
            options.page_size,
            EtcdLayer::new(prefix.clone(), options.max_value_bytes),
            &fields,
        )
        .await;
        let checker = match compiling.await {
            Ok(compiled) => Arc::new(compiled?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("binding `{prefix}`: the runtime is shutting down"),
                ))
            }
        };
        let mut state = State {
            etcd: layer,
            etcd_tree: None,
            conn: etcd,
            prefix,
            checker,
            fields,
            file_path,
            file: Ok(file),
            file_seen,
            max_file_bytes: options.max_value_bytes,
            env,
            overlay: None,
            unknown_keys: options.unknown_keys,
            unknown_seen: Vec::new(),
            revision: 0,
            generation: 0,
            synced: false,
            merged: None,
            unknown_now: Vec::new(),
            pending: None,
            full_reload: options.full_reload,
            in_place: false,
        };
        let mut bound_read = None;
        let status = match read {
            Ok(LayerRead {
                revision,
                kvs,
                tree,
            }) => {
                state.etcd_tree = Some(tree);
                state.revision = revision;
                bound_read = Some(BoundRead { revision, kvs });
                state.synced = true;
                ConfigStatus::new(WatchState::Live, state.revision, None)
            }
            Err(e) if options.require_etcd || !is_unreachable(&e) => return Err(e),
            Err(unreachable) => {
                state.etcd.clear();
                let cached = cache_path
                    .as_deref()
                    .and_then(|p| cache::load(p, &state.prefix));
                if let Some(c) = &cached {
                    for k in &c.keys {
                        state.etcd.put(
                            k.key.as_bytes(),
                            k.value.as_bytes(),
                            k.mod_revision,
                            &state.fields,
                        );
                    }
                    state.revision = c.revision;
                }
                tracing::warn!(
                    prefix = %state.prefix,
                    error = %unreachable,
                    cached_revision = cached.as_ref().map(|c| c.revision),
                    "etcd unreachable at bind; serving defaults, file, last-known-good cache and environment (stale)"
                );
                let mut status = ConfigStatus::new(WatchState::Stale, state.revision, None);
                status.last_error = Some(unreachable);
                status
            }
        };
        let snapshot = match state.build(ReloadCause::Initial, None) {
            Ok(s) => s,
            Err(invalid) if status.state == WatchState::Stale => {
                let unreachable = status.last_error.clone().expect("set when stale");
                return Err(Error::new(
                    unreachable.kind(),
                    format!(
                        "{}; and without etcd the other layers do not make a valid config: {invalid}",
                        unreachable.message()
                    ),
                )
                .with_source(unreachable));
            }
            Err(invalid) => return Err(invalid),
        };
        state.generation = snapshot.generation();
        state.note_unknown(&snapshot);
        let metrics = ConfigMetrics::new(&state.prefix);
        if state.synced {
            metrics.confirmed();
        }
        metrics.applied(snapshot.revision());
        tracing::info!(
            prefix = %state.prefix,
            revision = snapshot.revision(),
            keys = state.etcd.len(),
            state = ?status.state,
            "bound config"
        );
        let (events, _) = broadcast::channel(options.event_capacity);
        let (feed, _) = broadcast::channel(options.event_capacity);
        let (overlay_tx, overlay_rx) = tokio::sync::watch::channel(None);
        let reloader = Reloader {
            overlay_rx: Some(overlay_rx),
            overlay_tx,
            cache: cache_path.map(CacheWriter::spawn),
            state,
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            events,
            feed,
            status: Arc::new(ArcSwap::from_pointee(status)),
            timing: Timing {
                debounce: options.file_debounce,
                follow: FollowOptions {
                    page_size: options.page_size,
                    probe_after: options.probe_after,
                    probe_timeout: options.probe_timeout,
                    backoff_base: Duration::from_millis(100),
                    backoff_max: options.max_backoff,
                },
            },
            metrics,
        };
        if reloader.state.synced {
            reloader.write_cache();
        }
        Ok(Started {
            reloader,
            file_watch,
            bound_read,
        })
    }

    pub(crate) fn current(&self) -> &Arc<ArcSwap<Snapshot<T>>> {
        &self.current
    }

    pub(crate) fn events(&self) -> &broadcast::Sender<ConfigEvent<T>> {
        &self.events
    }

    pub(crate) fn feed(&self) -> &broadcast::Sender<Arc<RawRevision>> {
        &self.feed
    }

    pub(crate) fn status(&self) -> &Arc<ArcSwap<ConfigStatus>> {
        &self.status
    }

    pub(crate) fn checker(&self) -> &Arc<Checker<T>> {
        &self.state.checker
    }

    pub(crate) fn etcd(&self) -> &Etcd {
        &self.state.conn
    }

    /// Where to send a rollout overlay (`None` removes it); the run loop applies each change.
    pub(crate) fn overlay_sender(&self) -> tokio::sync::watch::Sender<Option<Arc<Overlay>>> {
        self.overlay_tx.clone()
    }

    /// Lays `overlay` over the etcd layer (or removes it) and applies the result.
    pub(super) fn set_overlay(&mut self, overlay: Option<Arc<Overlay>>) {
        let same = match (&self.state.overlay, &overlay) {
            (Some((old, _)), Some(new)) => old == new,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        let cause = ReloadCause::Rollout {
            rollout: overlay
                .as_ref()
                .or(self.state.overlay.as_ref().map(|(o, _)| o))
                .map(|o| o.rollout.clone())
                .unwrap_or_default(),
            step: overlay.as_ref().map(|o| o.step),
        };
        self.state.overlay = overlay.map(|o| {
            let tree = o.tree(self.state.max_file_bytes, &self.state.fields);
            (o, tree)
        });
        self.apply(cause);
    }

    /// Replaces the etcd layer with what the follower read at `revision` and applies the
    /// difference as one snapshot (first contact after a cold start, compaction, an oversized
    /// catch-up, a restored cluster).
    pub(super) fn on_resynced(&mut self, revision: i64, kvs: Vec<KeyValue>, reason: ResyncReason) {
        let span = tracing::info_span!(
            target: CONFIG_TARGET,
            "resync",
            prefix = %self.state.prefix,
            revision,
            %reason
        );
        let _entered = span.enter();
        self.metrics.resynced(reason);
        if let ResyncReason::Restored { previous_revision } = reason {
            tracing::warn!(
                prefix = %self.state.prefix,
                previous_revision,
                revision,
                "etcd went back in time (restored from a snapshot?); the prefix was read again and is applied as it is now"
            );
        }
        let (keys, kvs) = self.state.replace_etcd(revision, kvs);
        self.state.synced = true;
        let _ = self.feed.send(Arc::new(RawRevision {
            revision,
            body: RawBody::Full(kvs),
        }));
        self.note_resync(reason);
        if !keys.is_empty() {
            self.apply(ReloadCause::Resync {
                revision,
                keys,
                reason,
            });
        }
        self.touch_status();
    }

    /// Puts the bind's read into the etcd layer's map of entries (see [`EtcdLayer::settle`]).
    pub(super) fn settle(&mut self) {
        self.state.etcd.settle();
    }

    /// Records a new watch state (and the error that caused it); subscribers get a
    /// [`ConfigEvent::Status`] when the state changes.
    pub(super) fn set_status(&self, state: WatchState, error: Option<Error>) {
        let old = self.status.load();
        if old.state == state && error.is_none() {
            return;
        }
        let mut status = ConfigStatus::new(state, self.state.revision, error.clone());
        status.last_resync = old.last_resync;
        status.watch_opens = old.watch_opens;
        if old.state == state {
            // Same state, new error: keep the time the state began.
            status.since = old.since;
        } else if state != WatchState::Live && old.state != WatchState::Live {
            // Stale and reconnecting both mean "out of date since" the first of them.
            status.since = old.since;
        }
        if status.last_error.is_none() && state != WatchState::Live {
            status.last_error = old.last_error.clone();
        }
        let changed = old.state != state;
        let status = Arc::new(status);
        self.status.store(Arc::clone(&status));
        if changed {
            match state {
                WatchState::Live => {
                    tracing::info!(prefix = %self.state.prefix, revision = self.state.revision, "config watch live")
                }
                _ => {
                    tracing::warn!(prefix = %self.state.prefix, state = ?state, error = ?error.as_ref().map(|e| format!("{e:#}")), "config watch not live; serving the last applied snapshot")
                }
            }
            let _ = self.events.send(ConfigEvent::Status(status));
        }
    }

    /// Moves the status's revision to the last processed one (the state is unchanged; no event).
    fn touch_status(&self) {
        let old = self.status.load();
        if old.revision == self.state.revision {
            return;
        }
        let mut status = ConfigStatus::clone(&old);
        status.revision = self.state.revision;
        self.status.store(Arc::new(status));
    }

    /// Records how many watches the follower has opened.
    pub(super) fn set_watch_opens(&self, opens: u64) {
        let old = self.status.load();
        if old.watch_opens == opens {
            return;
        }
        self.metrics
            .watches_opened(opens.saturating_sub(old.watch_opens));
        let mut status = ConfigStatus::clone(&old);
        status.watch_opens = opens;
        self.status.store(Arc::new(status));
    }

    /// Records the reason and revision of a resync in the status.
    fn note_resync(&self, reason: ResyncReason) {
        let old = self.status.load();
        let mut status = ConfigStatus::clone(&old);
        status.revision = self.state.revision;
        status.last_resync = Some((reason, self.state.revision));
        self.status.store(Arc::new(status));
    }

    /// Queues the etcd layer of the serving snapshot for the last-known-good cache, without
    /// keys that hold secrets.
    fn write_cache(&self) {
        let Some(writer) = &self.cache else {
            return;
        };
        let keys = self
            .state
            .etcd
            .raw_entries()
            .filter(|(key, _, _)| {
                let path = self.state.etcd.field_path(key).unwrap_or_default();
                !SecretPaths::new(T::SECRETS).holds_secret(&path)
            })
            .filter_map(|(key, raw, mod_revision)| {
                Some(CachedKey {
                    key: key.to_string(),
                    value: String::from_utf8(raw.to_vec()).ok()?,
                    mod_revision,
                })
            })
            .collect();
        writer.store(CacheFile::new(
            &self.state.prefix,
            self.state.revision,
            keys,
        ));
    }

    /// Builds and, if valid, swaps in a snapshot for `change`; otherwise reports the rejection.
    fn apply(&mut self, change: ReloadCause) {
        let span = tracing::info_span!(
            target: CONFIG_TARGET,
            "reload",
            prefix = %self.state.prefix,
            revision = self.state.revision,
            cause = cause_label(&change)
        );
        let _entered = span.enter();
        let started = Instant::now();
        let previous = self.current.load_full();
        match self.state.build(change.clone(), Some(previous.value())) {
            Ok(snapshot) => {
                self.state.generation = snapshot.generation();
                let unknown_changed = self.state.note_unknown(&snapshot);
                let snapshot = Arc::new(snapshot);
                self.current.store(Arc::clone(&snapshot));
                self.metrics.applied(snapshot.revision());
                tracing::info!(
                    prefix = %self.state.prefix,
                    revision = snapshot.revision(),
                    generation = snapshot.generation(),
                    in_place = self.state.in_place,
                    change = ?change,
                    "applied config snapshot"
                );
                let unknown: Option<Arc<[UnknownKey]>> = (unknown_changed
                    && !snapshot.unknown_keys().is_empty())
                .then(|| snapshot.unknown_keys().into());
                let _ = self.events.send(ConfigEvent::Applied(snapshot));
                if let Some(keys) = unknown {
                    let _ = self.events.send(ConfigEvent::UnknownKeys(keys));
                }
                if self.state.synced && !matches!(change, ReloadCause::File { .. }) {
                    self.write_cache();
                }
            }
            Err(error) => {
                let serving_revision = self.current.load().revision();
                self.metrics.rejected(error.layer());
                tracing::warn!(
                    prefix = %self.state.prefix,
                    revision = error.revision().unwrap_or(self.state.revision),
                    key = error.key(),
                    layer = error.layer().map(Layer::as_str),
                    field = error.field(),
                    error = %error,
                    serving_revision,
                    "rejected config change; the last good snapshot keeps serving"
                );
                let _ = self.events.send(ConfigEvent::Rejected(Arc::new(Rejection {
                    cause: change,
                    error,
                    serving_revision,
                })));
            }
        }
        self.metrics.reloaded(started.elapsed());
    }

    /// Applies one etcd revision's changes as one snapshot.
    pub(super) fn on_batch(&mut self, revision: i64, changes: Vec<follow::Change>) {
        if revision <= self.state.revision {
            return; // Already processed (the follower never repeats, but be safe).
        }
        let mut keys = Vec::with_capacity(changes.len());
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                follow::Change::Put(kv) => {
                    self.state
                        .etcd
                        .put(kv.key(), kv.value(), revision, &self.state.fields);
                    keys.push(String::from_utf8_lossy(kv.key()).into_owned());
                    let (key, value) = kv.into_key_value();
                    ops.push(RawOp::Put(key, value));
                }
                follow::Change::Delete(kv) => {
                    self.state.etcd.delete(kv.key());
                    keys.push(String::from_utf8_lossy(kv.key()).into_owned());
                    ops.push(RawOp::Delete(kv.into_key_value().0));
                }
            }
        }
        self.state.revision = revision;
        // Swap and notify subscribers first: the hot path. The raw feed (history) follows.
        self.apply(ReloadCause::Etcd { revision, keys });
        self.touch_status();
        let _ = self.feed.send(Arc::new(RawRevision {
            revision,
            body: RawBody::Delta(ops),
        }));
    }

    /// Re-reads the file after a file event. Nothing happens when it holds what it held at the
    /// last read (the event was a touch, a rewrite of the same bytes, or an editor's dance), so
    /// one write is one reload and a bad file is reported once, not at every event.
    pub(super) fn reload_file(&mut self) {
        let Some(path) = self.state.file_path.clone() else {
            return;
        };
        let read = read_file(&path, self.state.max_file_bytes);
        let seen = read.clone().map_err(|e| format!("{e:#}"));
        if self.state.file_seen.as_ref() == Some(&seen) {
            tracing::trace!(file = %path.display(), "config file event without a change of content");
            return;
        }
        self.state.file_seen = Some(seen);
        self.state.file = read.and_then(|content| file_layer(&path, &content, &self.state.fields));
        self.apply(ReloadCause::File { path });
    }
}

impl<T: CoordConfig> State<T> {
    /// Replaces the etcd layer with `kvs`, read at `revision`; returns the keys that differ
    /// from before (put, changed or deleted) and every key with its raw value.
    fn replace_etcd(&mut self, revision: i64, kvs: Vec<KeyValue>) -> (Vec<String>, RawKvs) {
        let mut before: BTreeMap<String, i64> = self
            .etcd
            .revisions()
            .map(|(k, r)| (k.to_string(), r))
            .collect();
        self.etcd.clear();
        self.etcd_tree = None;
        let batch: Vec<(&[u8], &[u8], i64)> = kvs
            .iter()
            .map(|kv| (kv.key(), kv.value(), kv.mod_revision()))
            .collect();
        self.etcd.put_all(&batch, &self.fields);
        drop(batch);
        let mut changed = Vec::new();
        for kv in &kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if before.remove(&key) != Some(kv.mod_revision()) {
                changed.push(key);
            }
        }
        changed.extend(before.into_keys()); // deleted since
        self.revision = revision;
        let raw = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
        (changed, raw)
    }

    /// How many keys the etcd layer holds.
    pub(super) fn etcd_len(&self) -> usize {
        self.etcd.len()
    }

    /// The newest `mod_revision` in the etcd layer (0 if empty).
    pub(super) fn etcd_newest(&self) -> i64 {
        self.etcd.revisions().map(|(_, r)| r).max().unwrap_or(0)
    }

    /// Merges the layers and checks the result: in place at the changed paths where the change
    /// is an etcd revision whose keys name field paths and `previous` (the serving value) is
    /// known, from scratch otherwise or whenever the in-place path cannot vouch for the result.
    fn build(&mut self, change: ReloadCause, previous: Option<&T>) -> Result<Snapshot<T>> {
        let paths = match &change {
            ReloadCause::Etcd { keys, .. } => keys
                .iter()
                .map(|k| self.etcd.path_of(k))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let mut pending = match (self.pending.take(), &paths) {
            (Some(pending), Some(new)) if pending.paths.len() + new.len() <= MAX_PENDING => {
                Some(pending)
            }
            _ => None,
        };
        self.in_place = false;
        if let (Some(previous), Some(paths), Some(p)) = (previous, &paths, pending.as_mut()) {
            p.paths.extend(paths.iter().cloned());
            let (snapshot, regions) = self.build_in_place(previous, paths, p, &change);
            if let Some(snapshot) = snapshot {
                self.pending = Some(Pending::default());
                self.in_place = true;
                return Ok(snapshot);
            }
            // Where the in-place update did not get as far as knowing the regions: the whole
            // top-level field of each path (a field made above a path is at or below it).
            p.regions.extend(regions.unwrap_or_else(|| {
                paths
                    .iter()
                    .map(|path| Region {
                        path: path.iter().take(1).cloned().collect(),
                        fields_changed: true,
                    })
                    .collect()
            }));
        }
        self.pending = pending;
        let built = self.build_full(change);
        if built.is_ok() {
            self.pending = Some(Pending::default());
        }
        built
    }

    /// The in-place build; `None` where it cannot vouch for the result (the caller then builds
    /// from scratch, which also gives the authoritative error). Also returns the regions the
    /// change may have made invalid, once known.
    fn build_in_place(
        &mut self,
        previous: &T,
        paths: &[Vec<String>],
        pending: &Pending,
        change: &ReloadCause,
    ) -> (Option<Snapshot<T>>, Option<Vec<Region>>) {
        let Some(regions) = self.update_in_place(paths) else {
            return (None, None);
        };
        let Some(merged) = self.merged.as_ref() else {
            return (None, Some(regions));
        };
        if self.unknown_keys == UnknownKeys::Reject && !self.unknown_now.is_empty() {
            return (None, Some(regions));
        }
        let all: Vec<&Region> = pending.regions.iter().chain(&regions).collect();
        let Some(value) =
            self.checker
                .check_incremental(previous, &merged.root, &pending.paths, &all)
        else {
            return (None, Some(regions));
        };
        let snapshot = Snapshot::new(
            value,
            self.revision,
            self.generation + 1,
            merged.sources.clone(),
            change.clone(),
        )
        .with_unknown_keys(self.unknown_now.clone())
        .with_approx_bytes(
            self.etcd.bytes() + 64 * merged.sources.len_if_ready().unwrap_or(self.etcd.len()),
        );
        (Some(snapshot), Some(regions))
    }

    /// Updates the merged tree, provenance and unknown keys in place at `paths`; returns the
    /// regions to check, or `None` (and no merged tree: the next build merges from scratch)
    /// where that cannot be done.
    fn update_in_place(&mut self, paths: &[Vec<String>]) -> Option<Vec<Region>> {
        if self.full_reload || self.etcd.has_bad() {
            return None;
        }
        let file = self.file.as_ref().ok()?;
        let overlay = match &self.overlay {
            Some((_, Ok(tree))) => Some(tree),
            Some((_, Err(_))) => return None,
            None => None,
        };
        let layers: Vec<&LayerTree> = [Some(file), None, overlay, Some(&self.env)]
            .into_iter()
            .flatten()
            .collect();
        let mut merged = self.merged.take()?;
        // Only the shallowest of nested paths: updating it updates what is below it.
        let mut roots: Vec<&Vec<String>> = paths.iter().collect();
        roots.sort();
        roots.dedup();
        let mut kept: Vec<&Vec<String>> = Vec::with_capacity(roots.len());
        for p in roots {
            if !kept.last().is_some_and(|k| p.starts_with(k)) {
                kept.push(p);
            }
        }
        let mut regions = Vec::with_capacity(kept.len());
        for path in kept {
            if path.is_empty() {
                return None;
            }
            let etcd = self.etcd.subtree(path, &self.fields)?;
            let mut at = layers.clone();
            at.insert(1, &etcd);
            let touched = merged.update(&at, path)?;
            if let Some(at) = touched.check_at {
                regions.push(Region {
                    path: at,
                    fields_changed: touched.fields_changed,
                });
            }
            if self.unknown_keys != UnknownKeys::Ignore {
                let root = merged.root.as_object()?;
                unknown::update_at(
                    &mut self.unknown_now,
                    root,
                    &merged.sources,
                    &self.fields,
                    path,
                );
            }
        }
        self.merged = Some(merged);
        Some(regions)
    }

    /// Merges the layers from scratch and checks the whole result.
    fn build_full(&mut self, change: ReloadCause) -> Result<Snapshot<T>> {
        self.merged = None;
        let etcd = match self.etcd_tree.take() {
            Some(tree) => tree,
            None => self.etcd.tree(&self.fields).map(EtcdTree::Leaves),
        };
        let etcd = etcd.map_err(|e| self.blame(e, &change))?;
        let file = self
            .file
            .as_ref()
            .map_err(|e| self.blame(e.clone(), &change))?;
        let overlay = match &self.overlay {
            Some((_, tree)) => Some(tree.as_ref().map_err(|e| self.blame(e.clone(), &change))?),
            None => None,
        };
        let above: Vec<&LayerTree> = overlay.into_iter().chain([&self.env]).collect();
        let merged = Merged::full(file, etcd, &above);
        let unknown = match self.unknown_keys {
            UnknownKeys::Ignore => Vec::new(),
            UnknownKeys::Warn | UnknownKeys::Reject => {
                unknown::find(&merged.root, &merged.sources, &self.fields)
            }
        };
        self.unknown_now = unknown.clone();
        self.merged = Some(merged);
        let merged = self.merged.as_ref().expect("just set");
        let blame = |e: Error| self.blame(e, &change);
        let value = self
            .checker
            .check(
                &merged.root,
                &merged.sources,
                self.etcd.len() >= PARALLEL_CHECK_MIN,
            )
            .map_err(blame)?;
        if let (UnknownKeys::Reject, Some(first)) = (self.unknown_keys, unknown.first()) {
            let mut error = Error::new(ErrorKind::Validation, first.to_string())
                .with_origin(&first.source.origin)
                .with_field(first.path.clone());
            if let Some(revision) = first.source.revision {
                error = error.or_revision(revision);
            }
            return Err(blame(error));
        }
        Ok(Snapshot::new(
            value,
            self.revision,
            self.generation + 1,
            merged.sources.clone(),
            change,
        )
        .with_unknown_keys(unknown)
        .with_approx_bytes(
            self.etcd.bytes() + 64 * merged.sources.len_if_ready().unwrap_or(self.etcd.len()),
        ))
    }

    /// Remembers the unknown keys of a snapshot about to serve; logs them at `warn` and returns
    /// true when they differ from the serving snapshot's.
    fn note_unknown(&mut self, snapshot: &Snapshot<T>) -> bool {
        if snapshot.unknown_keys() == self.unknown_seen.as_slice() {
            return false;
        }
        for key in snapshot.unknown_keys() {
            if !self.unknown_seen.contains(key) {
                tracing::warn!(
                    prefix = %self.prefix,
                    revision = snapshot.revision(),
                    field = %key.path,
                    layer = %key.source.layer,
                    key = %key.source.origin.key().unwrap_or_default(),
                    "config key names no field of the type; it has no effect"
                );
            }
        }
        self.unknown_seen = snapshot.unknown_keys().to_vec();
        true
    }

    /// Fills in the revision and, where the error does not name a key itself (a missing field,
    /// a `validate()` failure), what the change touched.
    fn blame(&self, error: Error, change: &ReloadCause) -> Error {
        let error = error.or_revision(self.revision);
        if error.key().is_some() {
            return error;
        }
        match change {
            ReloadCause::Etcd { keys, .. } | ReloadCause::Resync { keys, .. }
                if !keys.is_empty() =>
            {
                let e = error.with_key(keys.join(", "));
                if e.layer().is_none() {
                    e.with_layer(Layer::Etcd)
                } else {
                    e
                }
            }
            ReloadCause::File { path } => error.with_origin(&Origin::File(path.clone())),
            ReloadCause::Rollout { step: Some(_), .. } => match &self.overlay {
                Some((overlay, _)) => error
                    .with_key(overlay.prefix.clone())
                    .with_layer(Layer::Etcd),
                None => error,
            },
            _ => error,
        }
    }
}

/// The fewest etcd keys for which a full build checks the schema's constraints on a second
/// thread while it deserializes (below it, the thread costs more than it saves).
const PARALLEL_CHECK_MIN: usize = 2048;

/// The `cause` field of a `reload` span.
fn cause_label(change: &ReloadCause) -> &'static str {
    match change {
        ReloadCause::Initial => "initial",
        ReloadCause::Etcd { .. } => "etcd",
        ReloadCause::File { .. } => "file",
        ReloadCause::Fixed => "fixed",
        ReloadCause::Resync { .. } => "resync",
        ReloadCause::Rollout { .. } => "rollout",
    }
}

/// Whether an error means etcd could not be reached (as opposed to a bad request or bad data).
pub(super) fn is_unreachable(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Unavailable
    )
}
