//! [`PrefixChanges`]: a prefix's changes as they happen, as changed fields (for tools such as
//! `coordctl config watch`). It stands on the crate's prefix follower, so it heals itself the
//! way a bound handle does: through etcd restarts, partitions, compaction, oversized
//! catch-ups and snapshot restores (a resync is reported as one change, its `resync` set).

use serde::Serialize;
use serde_json::Value;

use super::diff::{self, FieldChange};
use super::keys::Keys;
use super::store::Kvs;
use crate::config::StringFields;
use crate::error::Result;
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower, ResyncReason};
use crate::etcd::{read_prefix, Etcd};

/// One etcd revision that changed the prefix.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PrefixChange {
    /// The etcd revision.
    pub revision: i64,
    /// The full etcd keys put or deleted, in etcd's order (after a resync: the keys whose
    /// value differs from before, in key order).
    pub keys: Vec<String>,
    /// The fields whose value changed in the etcd layer's document (secrets masked).
    pub changes: Vec<FieldChange>,
    /// Set when the prefix was read again instead of followed by events (compaction, a
    /// catch-up too large for one message, a restored cluster): why. In JSON, its text.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_reason"
    )]
    pub resync: Option<ResyncReason>,
}

/// The changes of a prefix from [`ConfigHistory::changes`](crate::history::ConfigHistory::changes) on,
/// in revision order. Holds an etcd watch; drop it to stop. With the `stream` feature it is also
/// a [`futures_core::Stream`] of the same changes.
pub struct PrefixChanges {
    prefix: String,
    revision: i64,
    /// The follower and what it has seen; `None` while `step` runs with it.
    state: Option<Follow>,
    /// The search for the next change under way (it owns `state` meanwhile): kept when a call
    /// is dropped, so the next call goes on with it.
    step: Option<Step>,
}

type Step = std::pin::Pin<Box<dyn std::future::Future<Output = (Follow, PrefixChange)> + Send>>;

/// What the changes are worked out from: the prefix's keys and document as of the last change.
struct Follow {
    keys: Keys,
    fields: StringFields,
    secrets: Vec<String>,
    follower: PrefixFollower,
    kvs: Kvs,
    doc: Value,
}

impl std::fmt::Debug for PrefixChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixChanges")
            .field("prefix", &self.prefix)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl PrefixChanges {
    pub(crate) async fn open(
        etcd: Etcd,
        keys: Keys,
        fields: StringFields,
        secrets: Vec<String>,
    ) -> Result<Self> {
        let options = FollowOptions::default();
        let (revision, kvs) = read_prefix(&etcd, keys.prefix(), options.page_size).await?;
        let count = kvs.len();
        let newest = kvs.iter().map(|kv| kv.mod_revision()).max().unwrap_or(0);
        let kvs: Kvs = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
        let follower = PrefixFollower::prefix(etcd, keys.prefix(), options)
            .for_subsystem("history")
            .resume_after(revision, count, newest);
        let doc = diff::document(keys.prefix(), &kvs, &fields);
        Ok(PrefixChanges {
            prefix: keys.prefix().to_string(),
            revision,
            state: Some(Follow {
                keys,
                fields,
                secrets,
                follower,
                kvs,
                doc,
            }),
            step: None,
        })
    }

    /// The revision of the last change returned (at first, the revision the prefix was read at).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next change. While etcd is unreachable this waits (the watch is re-opened with
    /// backoff inside this call); it heals through restarts, compaction and restores, so it
    /// returns `None` only if the stream can no longer run (never today).
    ///
    /// # Cancel safety
    /// Cancel-safe: the search for the next change goes on in the next call (a change found
    /// is never lost), and the follower under it loses nothing.
    pub async fn next(&mut self) -> Option<PrefixChange> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<PrefixChange>> {
        if self.step.is_none() {
            let Some(follow) = self.state.take() else {
                return std::task::Poll::Ready(None);
            };
            self.step = Some(Box::pin(follow.next_change()));
        }
        let step = self.step.as_mut().expect("set above");
        let std::task::Poll::Ready((follow, change)) = step.as_mut().poll(cx) else {
            return std::task::Poll::Pending;
        };
        self.step = None;
        self.state = Some(follow);
        self.revision = change.revision;
        std::task::Poll::Ready(Some(change))
    }
}

#[cfg(feature = "stream")]
impl futures_core::Stream for PrefixChanges {
    type Item = PrefixChange;

    /// As [`PrefixChanges::next`].
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<PrefixChange>> {
        self.get_mut().poll_change(cx)
    }
}

impl Follow {
    /// Follows the prefix until a revision changes it, and returns that change.
    async fn next_change(mut self) -> (Self, PrefixChange) {
        loop {
            let change = match self.follower.next().await {
                Followed::Batch { revision, changes } => {
                    let mut keys = Vec::with_capacity(changes.len());
                    for change in changes {
                        keys.push(String::from_utf8_lossy(change.key()).into_owned());
                        match change {
                            Change::Put(kv) => {
                                let (key, value) = kv.into_key_value();
                                self.kvs.insert(key, value);
                            }
                            Change::Delete(kv) => {
                                self.kvs.remove(kv.key());
                            }
                        }
                    }
                    self.finish(revision, keys, None)
                }
                Followed::Resynced {
                    revision,
                    kvs,
                    reason,
                } => {
                    let fresh: Kvs = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
                    let mut keys: Vec<String> = fresh
                        .iter()
                        .filter(|(k, v)| self.kvs.get(*k) != Some(*v))
                        .chain(self.kvs.iter().filter(|(k, _)| !fresh.contains_key(*k)))
                        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    keys.sort();
                    self.kvs = fresh;
                    self.finish(revision, keys, Some(reason))
                }
                Followed::Live => continue,
                Followed::Interrupted { error, retry_in } => {
                    tracing::warn!(prefix = %self.keys.prefix(), error = %error, retry_in_ms = retry_in.as_millis() as u64, "prefix watch interrupted; re-opening");
                    continue;
                }
            };
            return (self, change);
        }
    }

    /// The change of `revision` (its `keys`), the document brought up to date with it.
    fn finish(
        &mut self,
        revision: i64,
        keys: Vec<String>,
        resync: Option<ResyncReason>,
    ) -> PrefixChange {
        let doc = diff::document(self.keys.prefix(), &self.kvs, &self.fields);
        let changes = diff::diff(&self.doc, &doc, &self.secrets);
        self.doc = doc;
        PrefixChange {
            revision,
            keys,
            changes,
            resync,
        }
    }
}

fn serialize_reason<S: serde::Serializer>(
    reason: &Option<ResyncReason>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match reason {
        Some(reason) => serializer.collect_str(reason),
        None => serializer.serialize_none(),
    }
}
