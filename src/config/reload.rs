//! The background task behind a [`Config`](super::Config): it owns the layers, follows the etcd
//! watch and the file watch, and swaps in each change that validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{Client, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::broadcast;
use tokio::time::{sleep_until, Instant};

use super::check::Checker;
use super::coord_config::CoordConfig;
use super::event::{Change, ConfigEvent, Rejection};
use super::feed::{RawBody, RawOp, RawRevision};
use super::layers::{env_layer, file_layer, EtcdLayer, FileWatch};
use super::options::{ConfigOptions, Setting};
use super::snapshot::Snapshot;
use super::source::Layer;
use super::tree::{merge, LayerTree};
use super::value::StringFields;
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Result};
use crate::kv::read_prefix;

/// Every layer as last read, and how to check a merge of them.
struct State<T: CoordConfig> {
    client: Client,
    /// The full etcd prefix, namespace included, ending with `/`.
    prefix: String,
    page_size: i64,
    checker: Arc<Checker<T>>,
    fields: StringFields,
    etcd: EtcdLayer,
    file_path: Option<PathBuf>,
    file: Result<LayerTree>,
    env: LayerTree,
    /// The last etcd revision processed (applied or rejected); the watch resumes after it.
    revision: i64,
    /// The generation of the snapshot being served.
    generation: u64,
}

/// The background task's state: the layers, and the slot and channel it publishes to.
pub(crate) struct Reloader<T: CoordConfig> {
    state: State<T>,
    current: Arc<ArcSwap<Snapshot<T>>>,
    events: broadcast::Sender<ConfigEvent<T>>,
    feed: broadcast::Sender<Arc<RawRevision>>,
}

/// What the bind produced: the first snapshot and the task's state.
pub(crate) struct Started<T: CoordConfig> {
    pub(crate) reloader: Reloader<T>,
    pub(crate) file_watch: Option<FileWatch>,
    pub(crate) debounce: Duration,
}

impl<T: CoordConfig> Reloader<T> {
    /// Reads every layer, validates, and returns the state with the first snapshot stored.
    pub(crate) async fn start(
        client: Client,
        prefix: String,
        options: &ConfigOptions,
    ) -> Result<Started<T>> {
        let checker = Arc::new(Checker::<T>::new()?);
        let fields = checker.string_fields();

        let env_prefix = match &options.env_prefix {
            Setting::FromType => T::ENV_PREFIX.map(str::to_string),
            Setting::Set(p) => Some(p.clone()),
            Setting::Off => None,
        };
        let env = match env_prefix {
            None => LayerTree::default(),
            Some(p) => match &options.env_vars {
                Some(vars) => env_layer(&p, vars.iter().cloned(), &fields)?,
                None => env_layer(&p, std::env::vars(), &fields)?,
            },
        };

        let file_path = match &options.file {
            Setting::FromType => T::FILE.map(PathBuf::from),
            Setting::Set(p) => Some(p.clone()),
            Setting::Off => None,
        };
        let file = match &file_path {
            Some(path) => file_layer(path)?,
            None => LayerTree::default(),
        };
        let file_watch = file_path.as_deref().map(FileWatch::new).transpose()?;

        let mut state = State {
            etcd: EtcdLayer::new(prefix.clone(), options.max_value_bytes),
            client,
            prefix,
            page_size: options.page_size,
            checker,
            fields,
            file_path,
            file: Ok(file),
            env,
            revision: 0,
            generation: 0,
        };
        state.read_all().await?;
        let snapshot = state.build(Change::Initial)?;
        state.generation = snapshot.generation();
        tracing::info!(
            prefix = %state.prefix,
            revision = snapshot.revision(),
            keys = state.etcd.len(),
            "bound config"
        );
        let (events, _) = broadcast::channel(options.event_capacity);
        let (feed, _) = broadcast::channel(options.event_capacity);
        Ok(Started {
            reloader: Reloader {
                state,
                current: Arc::new(ArcSwap::from_pointee(snapshot)),
                events,
                feed,
            },
            file_watch,
            debounce: options.file_debounce,
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

    pub(crate) fn checker(&self) -> &Arc<Checker<T>> {
        &self.state.checker
    }

    pub(crate) fn client(&self) -> &Client {
        &self.state.client
    }

    /// Builds and, if valid, swaps in a snapshot for `change`; otherwise reports the rejection.
    fn apply(&mut self, change: Change) {
        match self.state.build(change.clone()) {
            Ok(snapshot) => {
                self.state.generation = snapshot.generation();
                let snapshot = Arc::new(snapshot);
                self.current.store(Arc::clone(&snapshot));
                tracing::info!(
                    prefix = %self.state.prefix,
                    revision = snapshot.revision(),
                    generation = snapshot.generation(),
                    change = ?change,
                    "applied config snapshot"
                );
                let _ = self.events.send(ConfigEvent::Applied(snapshot));
            }
            Err(error) => {
                let serving_revision = self.current.load().revision();
                tracing::warn!(
                    prefix = %self.state.prefix,
                    error = %error,
                    serving_revision,
                    "rejected config change; the last good snapshot keeps serving"
                );
                let _ = self.events.send(ConfigEvent::Rejected(Arc::new(Rejection {
                    change,
                    error,
                    serving_revision,
                })));
            }
        }
    }

    /// Runs until the handle is dropped (the task is aborted then).
    pub(crate) async fn run(mut self, file_watch: Option<FileWatch>, debounce: Duration) {
        let mut stream: Option<WatchStream> = None;
        let mut retry_at = Some(Instant::now());
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut file_due: Option<Instant> = None;
        loop {
            let now = Instant::now();
            tokio::select! {
                message = next_message(stream.as_mut()) => match message {
                    Ok(Some(response)) => match self.on_response(response).await {
                        Ok(Flow::Continue) => backoff.reset(),
                        Ok(Flow::Reopen) => {
                            stream = None;
                            retry_at = Some(Instant::now());
                        }
                        Err(error) => {
                            tracing::warn!(prefix = %self.state.prefix, error = %error, "config watch failed; re-opening");
                            stream = None;
                            retry_at = Some(Instant::now() + backoff.next_delay());
                        }
                    },
                    Ok(None) => {
                        tracing::warn!(prefix = %self.state.prefix, "config watch stream ended; re-opening");
                        stream = None;
                        retry_at = Some(Instant::now() + backoff.next_delay());
                    }
                    Err(error) => {
                        let error = Error::etcd("config watch stream", error);
                        tracing::warn!(prefix = %self.state.prefix, error = %error, "config watch failed; re-opening");
                        stream = None;
                        retry_at = Some(Instant::now() + backoff.next_delay());
                    }
                },
                () = sleep_until(retry_at.unwrap_or(now)), if stream.is_none() => {
                    match self.open_watch().await {
                        Ok(s) => {
                            stream = Some(s);
                            retry_at = None;
                        }
                        Err(error) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(prefix = %self.state.prefix, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot open config watch");
                            retry_at = Some(Instant::now() + delay);
                        }
                    }
                }
                () = file_changed(file_watch.as_ref()) => {
                    file_due = Some(Instant::now() + debounce);
                }
                () = sleep_until(file_due.unwrap_or(now)), if file_due.is_some() => {
                    file_due = None;
                    self.reload_file();
                }
            }
        }
    }

    async fn open_watch(&mut self) -> Result<WatchStream> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.state.revision + 1);
        self.state
            .client
            .watch(self.state.prefix.as_bytes(), Some(options))
            .await
            .map_err(|e| Error::etcd(format_args!("watching prefix `{}`", self.state.prefix), e))
    }

    async fn on_response(&mut self, response: WatchResponse) -> Result<Flow> {
        if response.canceled() {
            if response.compact_revision() > 0 {
                tracing::warn!(
                    prefix = %self.state.prefix,
                    resume_revision = self.state.revision + 1,
                    compact_revision = response.compact_revision(),
                    "watch resume revision was compacted; re-reading the prefix"
                );
                let (keys, kvs) = self.state.read_all().await?;
                let _ = self.feed.send(Arc::new(RawRevision {
                    revision: self.state.revision,
                    body: RawBody::Full(kvs),
                }));
                if !keys.is_empty() {
                    self.apply(Change::Resync {
                        revision: self.state.revision,
                        keys,
                    });
                }
                return Ok(Flow::Reopen);
            }
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("etcd cancelled the watch: {}", response.cancel_reason()),
            ));
        }
        // Events arrive in revision order; one transaction's events share one revision and
        // arrive in one response. Apply each revision as one snapshot.
        let events = response.events();
        let mut start = 0;
        while start < events.len() {
            let revision = events[start].0.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            let end = events[start..]
                .iter()
                .position(|e| e.0.kv.as_ref().map_or(0, |kv| kv.mod_revision) != revision)
                .map_or(events.len(), |n| start + n);
            let group = &events[start..end];
            start = end;
            if revision <= self.state.revision {
                continue; // Already processed (a resumed watch never repeats, but be safe).
            }
            let mut keys = Vec::with_capacity(group.len());
            let mut ops = Vec::with_capacity(group.len());
            for event in group {
                let Some(kv) = event.0.kv.as_ref() else {
                    continue;
                };
                match event.0.r#type {
                    0 => {
                        self.state
                            .etcd
                            .put(&kv.key, &kv.value, revision, &self.state.fields);
                        ops.push(RawOp::Put(kv.key.clone(), kv.value.clone()));
                    }
                    1 => {
                        self.state.etcd.delete(&kv.key);
                        ops.push(RawOp::Delete(kv.key.clone()));
                    }
                    other => {
                        tracing::warn!(prefix = %self.state.prefix, event_type = other, "ignoring unknown watch event type");
                        continue;
                    }
                }
                keys.push(String::from_utf8_lossy(&kv.key).into_owned());
            }
            self.state.revision = revision;
            let _ = self.feed.send(Arc::new(RawRevision {
                revision,
                body: RawBody::Delta(ops),
            }));
            self.apply(Change::Etcd { revision, keys });
        }
        Ok(Flow::Continue)
    }

    fn reload_file(&mut self) {
        let Some(path) = self.state.file_path.clone() else {
            return;
        };
        self.state.file = file_layer(&path);
        self.apply(Change::File { path });
    }
}

impl<T: CoordConfig> State<T> {
    /// Replaces the etcd layer with a fresh read of the prefix; returns the keys that differ
    /// from before (put, changed or deleted) and every key with its raw value.
    async fn read_all(&mut self) -> Result<(Vec<String>, Vec<(Vec<u8>, Vec<u8>)>)> {
        let (revision, kvs) = read_prefix(&mut self.client, &self.prefix, self.page_size).await?;
        let mut before: BTreeMap<String, i64> = self
            .etcd
            .revisions()
            .map(|(k, r)| (k.to_string(), r))
            .collect();
        self.etcd.clear();
        let mut changed = Vec::new();
        for kv in &kvs {
            self.etcd
                .put(kv.key(), kv.value(), kv.mod_revision(), &self.fields);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if before.remove(&key) != Some(kv.mod_revision()) {
                changed.push(key);
            }
        }
        changed.extend(before.into_keys()); // deleted since
        self.revision = revision;
        let raw = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
        Ok((changed, raw))
    }

    /// Merges the layers and checks the result.
    fn build(&self, change: Change) -> Result<Snapshot<T>> {
        let blame = |e: Error| self.blame(e, &change);
        let etcd = self.etcd.tree().map_err(blame)?;
        let file = self.file.as_ref().map_err(|e| blame(e.clone()))?;
        let (merged, sources) = merge([file, &etcd, &self.env]);
        let value = self.checker.check(&merged, &sources).map_err(blame)?;
        Ok(Snapshot::new(
            value,
            self.revision,
            self.generation + 1,
            sources,
            change,
        ))
    }

    /// Fills in the revision and, where the error does not name a key itself (a missing field,
    /// a `validate()` failure), what the change touched.
    fn blame(&self, error: Error, change: &Change) -> Error {
        let error = error.or_revision(self.revision);
        if error.key().is_some() {
            return error;
        }
        match change {
            Change::Etcd { keys, .. } | Change::Resync { keys, .. } if !keys.is_empty() => {
                let e = error.with_key(keys.join(", "));
                if e.layer().is_none() {
                    e.with_layer(Layer::Etcd)
                } else {
                    e
                }
            }
            Change::File { path } => error
                .with_key(path.display().to_string())
                .with_layer(Layer::File),
            _ => error,
        }
    }
}

enum Flow {
    Continue,
    Reopen,
}

async fn next_message(
    stream: Option<&mut WatchStream>,
) -> std::result::Result<Option<WatchResponse>, etcd_client::Error> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn file_changed(watch: Option<&FileWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
