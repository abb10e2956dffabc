//! Following a service's status keys: the self-healing watch engine shared by
//! [`RegistryWatch`] and [`LiveSet`](crate::LiveSet), and the event type.
//!
//! Same rules as the config watch: read the prefix once at revision R, watch from R + 1, skip
//! events at or below the last processed revision after a re-open, re-open with backoff after a
//! stream error (etcd restart, partition), and re-read the prefix (diffing against what is
//! known) when the resume revision has been compacted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::discover::{id_of, parse_kvs};
use super::instance::{validate_segment, Instance};
use super::Registry;
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Result};
use crate::kv::read_prefix;

/// One change to a service's set of instances, with the etcd revision it happened at.
///
/// A [`RegistryWatch`] delivers these in revision order, each change once. A registration is
/// `Added`; a change of health, weight, metadata (or anything else in the record) is
/// `Updated`; a deregistration, an expired lease or a deleted key is `Removed`. After a
/// resync (compaction while disconnected) the differences found are reported at the revision of
/// the re-read (`Added`/`Updated` carry the instance's own `mod_revision`).
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryEvent {
    /// A new instance.
    Added {
        /// The instance as registered.
        instance: Arc<Instance>,
        /// The revision of the change.
        revision: i64,
    },
    /// A changed instance (health, weight, address, metadata, lease).
    Updated {
        /// The instance before the change.
        previous: Arc<Instance>,
        /// The instance after it.
        instance: Arc<Instance>,
        /// The revision of the change.
        revision: i64,
    },
    /// A removed instance (deregistered, lease expired, key deleted).
    Removed {
        /// The instance as last seen.
        instance: Arc<Instance>,
        /// The revision of the removal.
        revision: i64,
    },
}

impl RegistryEvent {
    /// The etcd revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            RegistryEvent::Added { revision, .. }
            | RegistryEvent::Updated { revision, .. }
            | RegistryEvent::Removed { revision, .. } => *revision,
        }
    }

    /// The instance after the change (for `Removed`: as last seen).
    pub fn instance(&self) -> &Arc<Instance> {
        match self {
            RegistryEvent::Added { instance, .. }
            | RegistryEvent::Updated { instance, .. }
            | RegistryEvent::Removed { instance, .. } => instance,
        }
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        self.instance().id()
    }
}

/// A live stream of [`RegistryEvent`]s for one service, from
/// [`Registry::watch`](crate::Registry::watch).
///
/// It first reports every instance already registered as `Added`, then each change as it
/// happens. It heals itself (re-opens after etcd restarts, resyncs after compaction) and never
/// reports an error; while etcd is unreachable it is simply quiet. The background task stops
/// when this value is dropped. Events wait in a bounded buffer (the options' event capacity);
/// when it is full the watch stops reading from etcd until you catch up, so nothing is lost.
#[derive(Debug)]
pub struct RegistryWatch {
    events: mpsc::Receiver<RegistryEvent>,
    task: JoinHandle<()>,
}

impl Drop for RegistryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RegistryWatch {
    /// The next change, in revision order. `None` only if the watch cannot run: an invalid
    /// service name (logged as an error) or a runtime shutting down.
    pub async fn recv(&mut self) -> Option<RegistryEvent> {
        self.events.recv().await
    }

    /// The next change if one is already buffered (`None` if not).
    pub fn try_recv(&mut self) -> Option<RegistryEvent> {
        self.events.try_recv().ok()
    }
}

impl Registry {
    /// Watches `service`: every instance already registered as
    /// [`Added`](RegistryEvent::Added), then each change, in revision order, each once.
    ///
    /// Returns at once; the first read happens in the background (and is retried with backoff
    /// while etcd is unreachable). Must be called inside a Tokio runtime. An invalid service
    /// name (empty or containing `/`) yields a watch whose [`recv`](RegistryWatch::recv)
    /// returns `None` at once.
    pub fn watch(&self, service: &str) -> RegistryWatch {
        let (tx, rx) = mpsc::channel(self.layout().event_capacity.max(1));
        let valid = validate_segment("service name", service);
        let mut follower = Follower::new(self, service);
        let task = tokio::spawn(async move {
            if let Err(error) = valid {
                tracing::error!(error = %error, "cannot watch registry service");
                return;
            }
            follower.needs_resync = true;
            loop {
                let batch = tokio::select! {
                    batch = follower.next_batch() => batch,
                    () = tx.closed() => return,
                };
                for event in batch {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        RegistryWatch { events: rx, task }
    }
}

/// The state of one service as followed from etcd.
pub(crate) struct Follower {
    client: Client,
    service: String,
    /// The status prefix, ending with `/`.
    prefix: String,
    page_size: i64,
    /// Instances by id.
    pub(crate) instances: BTreeMap<String, Arc<Instance>>,
    /// The last revision processed; the watch resumes after it.
    pub(crate) revision: i64,
    stream: Option<WatchStream>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Re-read the prefix before (re-)opening the watch.
    pub(crate) needs_resync: bool,
}

impl Follower {
    pub(crate) fn new(registry: &Registry, service: &str) -> Self {
        Follower {
            client: registry.coordinator().client(),
            service: service.to_string(),
            prefix: registry.layout().status_dir(service),
            page_size: registry.layout().page_size,
            instances: BTreeMap::new(),
            revision: 0,
            stream: None,
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            needs_resync: false,
        }
    }

    /// Replaces the known set with a fresh read; returns the differences, in revision order.
    pub(crate) async fn resync(&mut self) -> Result<Vec<RegistryEvent>> {
        let (revision, kvs) = read_prefix(&mut self.client, &self.prefix, self.page_size).await?;
        let fresh: BTreeMap<String, Arc<Instance>> = parse_kvs(&self.service, &self.prefix, &kvs)
            .into_iter()
            .map(|i| (i.id().to_string(), Arc::new(i)))
            .collect();
        let mut events = Vec::new();
        for (id, instance) in &fresh {
            match self.instances.get(id) {
                None => events.push(RegistryEvent::Added {
                    instance: Arc::clone(instance),
                    revision: instance.mod_revision,
                }),
                Some(previous) if previous.differs_from(instance) => {
                    events.push(RegistryEvent::Updated {
                        previous: Arc::clone(previous),
                        instance: Arc::clone(instance),
                        revision: instance.mod_revision,
                    });
                }
                Some(_) => {}
            }
        }
        for (id, instance) in &self.instances {
            if !fresh.contains_key(id) {
                events.push(RegistryEvent::Removed {
                    instance: Arc::clone(instance),
                    revision,
                });
            }
        }
        events.sort_by_key(RegistryEvent::revision);
        self.instances = fresh;
        self.revision = revision;
        Ok(events)
    }

    async fn open(&mut self) -> Result<WatchStream> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.revision + 1);
        self.client
            .watch(self.prefix.as_bytes(), Some(options))
            .await
            .map_err(|e| {
                Error::etcd(
                    format_args!("watching registry prefix `{}`", self.prefix),
                    e,
                )
            })
    }

    fn retry_later(&mut self, error: &Error, what: &str) {
        let delay = self.backoff.next_delay();
        tracing::warn!(
            prefix = %self.prefix,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "{what}"
        );
        self.stream = None;
        self.retry_at = Some(Instant::now() + delay);
    }

    /// The next non-empty batch of changes (one watch response, or the differences found by a
    /// resync). Heals the watch as needed; never fails. Cancel-safe only as far as dropping the
    /// follower goes.
    pub(crate) async fn next_batch(&mut self) -> Vec<RegistryEvent> {
        loop {
            if self.stream.is_none() {
                if let Some(at) = self.retry_at.take() {
                    sleep_until(at).await;
                }
                if self.needs_resync {
                    match self.resync().await {
                        Ok(events) => {
                            self.needs_resync = false;
                            if !events.is_empty() {
                                return events;
                            }
                        }
                        Err(error) => {
                            self.retry_later(&error, "cannot read registry prefix; retrying");
                            continue;
                        }
                    }
                }
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(error) => {
                        self.retry_later(&error, "cannot open registry watch; retrying");
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    if response.canceled() {
                        if response.compact_revision() > 0 {
                            tracing::warn!(
                                prefix = %self.prefix,
                                resume_revision = self.revision + 1,
                                compact_revision = response.compact_revision(),
                                "registry watch resume revision was compacted; re-reading the prefix"
                            );
                            self.stream = None;
                            self.needs_resync = true;
                        } else {
                            let error = Error::new(
                                ErrorKind::Unavailable,
                                format!("etcd cancelled the watch: {}", response.cancel_reason()),
                            );
                            self.retry_later(&error, "registry watch cancelled; re-opening");
                        }
                        continue;
                    }
                    self.backoff.reset();
                    let events = self.apply(&response);
                    if !events.is_empty() {
                        return events;
                    }
                }
                Ok(None) => {
                    let error = Error::new(ErrorKind::Unavailable, "watch stream ended");
                    self.retry_later(&error, "registry watch ended; re-opening");
                }
                Err(e) => {
                    let error = Error::etcd("registry watch stream", e);
                    self.retry_later(&error, "registry watch failed; re-opening");
                }
            }
        }
    }

    /// Applies one watch response; returns the resulting changes in order.
    fn apply(&mut self, response: &WatchResponse) -> Vec<RegistryEvent> {
        let mut events = Vec::new();
        // Events at or below this were seen before a re-open. (Not `self.revision`, which moves
        // during the loop: one transaction's events share one revision.)
        let floor = self.revision;
        for event in response.events() {
            let Some(kv) = event.kv() else {
                continue;
            };
            let revision = kv.mod_revision();
            if revision <= floor {
                continue;
            }
            self.revision = self.revision.max(revision);
            let Some(id) = id_of(&self.prefix, kv.key()) else {
                continue;
            };
            // `Event::event_type()` panics on unknown types; read the raw value.
            match event.0.r#type {
                0 => match Instance::from_kv(&self.service, id, kv) {
                    Ok(instance) => {
                        let instance = Arc::new(instance);
                        match self.instances.insert(id.to_string(), Arc::clone(&instance)) {
                            None => events.push(RegistryEvent::Added { instance, revision }),
                            Some(previous) if previous.differs_from(&instance) => {
                                events.push(RegistryEvent::Updated {
                                    previous,
                                    instance,
                                    revision,
                                });
                            }
                            Some(_) => {}
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "malformed registry record; treating the instance as removed");
                        if let Some(instance) = self.instances.remove(id) {
                            events.push(RegistryEvent::Removed { instance, revision });
                        }
                    }
                },
                1 => {
                    if let Some(instance) = self.instances.remove(id) {
                        events.push(RegistryEvent::Removed { instance, revision });
                    }
                }
                other => {
                    tracing::warn!(prefix = %self.prefix, event_type = other, "ignoring unknown watch event type");
                }
            }
        }
        events
    }
}
