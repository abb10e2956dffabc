//! Following a service's status keys, shared by [`RegistryWatch`] and
//! [`LiveSet`](crate::registry::LiveSet), and the event type.
//!
//! It stands on the crate's prefix follower, as the config reload does: read the prefix at
//! revision R, watch from R + 1, re-open with backoff after failures, and re-read the prefix
//! (diffing against what is known) after compaction, an oversized catch-up or a restore.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::KeyValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::discover::{id_of, parse_kvs};
use super::instance::{validate_segment, Instance};
use super::Registry;
use crate::error::Result;
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower};
use crate::etcd::{read_prefix, Etcd};

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
/// [`Registry::watch`](crate::registry::Registry::watch): read it with [`next`](Self::next) (or, with the
/// `stream` feature, as a `futures_core::Stream` of [`RegistryEvent`]).
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
    ///
    /// # Cancel safety
    /// Cancel-safe: an event not yet returned stays buffered for the next call.
    pub async fn next(&mut self) -> Option<RegistryEvent> {
        self.events.recv().await
    }

    /// The next change if one is already buffered, without waiting (`None` if not).
    pub fn try_next(&mut self) -> Option<RegistryEvent> {
        self.events.try_recv().ok()
    }
}

#[cfg(feature = "stream")]
impl futures_core::Stream for RegistryWatch {
    type Item = RegistryEvent;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RegistryEvent>> {
        self.get_mut().events.poll_recv(cx)
    }
}

impl Registry {
    /// Watches `service`: every instance already registered as
    /// [`Added`](RegistryEvent::Added), then each change, in revision order, each once.
    ///
    /// Returns at once; the first read happens in the background (and is retried with backoff
    /// while etcd is unreachable). Must be called inside a Tokio runtime. An invalid service
    /// name (empty or containing `/`) yields a watch whose [`next`](RegistryWatch::next)
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
    etcd: Etcd,
    service: String,
    /// The status prefix, ending with `/`.
    prefix: String,
    page_size: i64,
    /// Instances by id.
    pub(crate) instances: BTreeMap<String, Arc<Instance>>,
    /// The last revision processed.
    pub(crate) revision: i64,
    follower: PrefixFollower,
}

impl Follower {
    /// A follower whose first batch is every instance registered (read in the background).
    pub(crate) fn new(registry: &Registry, service: &str) -> Self {
        let etcd = registry.coordinator().etcd().clone();
        let prefix = registry.layout().status_dir(service);
        let page_size = registry.layout().page_size;
        let follower = PrefixFollower::prefix(etcd.clone(), &prefix, options(page_size))
            .for_subsystem("registry");
        Follower {
            etcd,
            service: service.to_string(),
            prefix,
            page_size,
            instances: BTreeMap::new(),
            revision: 0,
            follower,
        }
    }

    /// Reads the prefix now and follows on from there; returns the differences from what was
    /// known, in revision order.
    pub(crate) async fn resync(&mut self) -> Result<Vec<RegistryEvent>> {
        let (revision, kvs) = read_prefix(&self.etcd, &self.prefix, self.page_size).await?;
        let newest = kvs.iter().map(KeyValue::mod_revision).max().unwrap_or(0);
        let count = kvs.len();
        let events = self.replace(revision, &kvs);
        self.follower =
            PrefixFollower::prefix(self.etcd.clone(), &self.prefix, options(self.page_size))
                .for_subsystem("registry")
                .resume_after(revision, count, newest);
        Ok(events)
    }

    /// Replaces the known set with `kvs`, read at `revision`; returns the differences.
    fn replace(&mut self, revision: i64, kvs: &[KeyValue]) -> Vec<RegistryEvent> {
        let fresh: BTreeMap<String, Arc<Instance>> = parse_kvs(&self.service, &self.prefix, kvs)
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
        events
    }

    /// The next non-empty batch of changes (one etcd revision, or the differences found by a
    /// resync). The follower heals the watch; this never fails. Cancel-safe.
    pub(crate) async fn next_batch(&mut self) -> Vec<RegistryEvent> {
        loop {
            let events = match self.follower.next().await {
                Followed::Batch { revision, changes } => self.apply(revision, changes),
                Followed::Resynced { revision, kvs, .. } => self.replace(revision, &kvs),
                Followed::Live => continue,
                Followed::Interrupted { error, retry_in } => {
                    tracing::warn!(
                        prefix = %self.prefix,
                        error = %error,
                        retry_in_ms = retry_in.as_millis() as u64,
                        "registry watch interrupted; re-opening"
                    );
                    continue;
                }
            };
            if !events.is_empty() {
                return events;
            }
        }
    }

    /// Applies one revision's changes; returns the resulting events in order.
    fn apply(&mut self, revision: i64, changes: Vec<Change>) -> Vec<RegistryEvent> {
        let mut events = Vec::new();
        self.revision = revision;
        for change in changes {
            let Some(id) = id_of(&self.prefix, change.key()) else {
                continue;
            };
            match &change {
                Change::Put(kv) => match Instance::from_kv(&self.service, id, kv) {
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
                Change::Delete(_) => {
                    if let Some(instance) = self.instances.remove(id) {
                        events.push(RegistryEvent::Removed { instance, revision });
                    }
                }
            }
        }
        events
    }
}

/// How a registry follower paces itself: the crate's defaults, with the layout's page size.
fn options(page_size: i64) -> FollowOptions {
    FollowOptions {
        page_size,
        ..FollowOptions::default()
    }
}
