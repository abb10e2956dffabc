//! [`PrefixChanges`]: a prefix's changes as they happen, as changed fields (for tools such as
//! `coordctl config watch`).

use std::collections::VecDeque;

use etcd_client::{Client, WatchOptions, WatchStream};
use serde::Serialize;
use serde_json::Value;

use super::diff::{self, FieldChange};
use super::keys::Keys;
use super::store::Kvs;
use crate::config::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::kv::read_prefix;

/// One etcd revision that changed the prefix.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PrefixChange {
    /// The etcd revision.
    pub revision: i64,
    /// The full etcd keys put or deleted, in etcd's order.
    pub keys: Vec<String>,
    /// The fields whose value changed in the etcd layer's document (secrets masked).
    pub changes: Vec<FieldChange>,
}

/// The changes of a prefix from [`ConfigHistory::changes`](crate::ConfigHistory::changes) on,
/// in revision order. Holds an etcd watch; drop it to stop.
pub struct PrefixChanges {
    keys: Keys,
    fields: StringFields,
    secrets: Vec<String>,
    stream: WatchStream,
    kvs: Kvs,
    doc: Value,
    revision: i64,
    pending: VecDeque<PrefixChange>,
}

impl std::fmt::Debug for PrefixChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixChanges")
            .field("prefix", &self.keys.prefix())
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl PrefixChanges {
    pub(crate) async fn open(
        client: Client,
        keys: Keys,
        fields: StringFields,
        secrets: Vec<String>,
    ) -> Result<Self> {
        let mut client = client;
        let (revision, kvs) = read_prefix(&mut client, keys.prefix(), 1000).await?;
        let kvs: Kvs = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
        let stream = client
            .watch(
                keys.prefix(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .map_err(|e| Error::etcd(format_args!("watching `{}`", keys.prefix()), e))?;
        let doc = diff::document(keys.prefix(), &kvs, &fields);
        Ok(PrefixChanges {
            keys,
            fields,
            secrets,
            stream,
            kvs,
            doc,
            revision,
            pending: VecDeque::new(),
        })
    }

    /// The revision of the last change returned (at first, the revision the prefix was read at).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next change; `None` if etcd closed the watch.
    ///
    /// # Errors
    /// [`ErrorKind::Compacted`] if the watch fell behind a compaction; other etcd errors.
    pub async fn next(&mut self) -> Result<Option<PrefixChange>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                self.revision = change.revision;
                return Ok(Some(change));
            }
            let Some(response) = self
                .stream
                .message()
                .await
                .map_err(|e| Error::etcd("prefix watch", e))?
            else {
                return Ok(None);
            };
            if response.canceled() {
                let kind = if response.compact_revision() > 0 {
                    ErrorKind::Compacted
                } else {
                    ErrorKind::Unavailable
                };
                return Err(Error::new(
                    kind,
                    format!(
                        "etcd cancelled the watch of `{}`: {}",
                        self.keys.prefix(),
                        response.cancel_reason()
                    ),
                ));
            }
            let mut group: Option<(i64, Vec<String>)> = None;
            for event in response.events() {
                let Some(kv) = event.0.kv.as_ref() else {
                    continue;
                };
                if group.as_ref().is_some_and(|(r, _)| *r != kv.mod_revision) {
                    self.finish(group.take());
                }
                match event.0.r#type {
                    0 => {
                        self.kvs.insert(kv.key.clone(), kv.value.clone());
                    }
                    1 => {
                        self.kvs.remove(&kv.key);
                    }
                    _ => continue,
                }
                let entry = group.get_or_insert_with(|| (kv.mod_revision, Vec::new()));
                entry.1.push(String::from_utf8_lossy(&kv.key).into_owned());
            }
            self.finish(group);
        }
    }

    fn finish(&mut self, group: Option<(i64, Vec<String>)>) {
        let Some((revision, keys)) = group else {
            return;
        };
        let doc = diff::document(self.keys.prefix(), &self.kvs, &self.fields);
        let changes = diff::diff(&self.doc, &doc, &self.secrets);
        self.doc = doc;
        self.pending.push_back(PrefixChange {
            revision,
            keys,
            changes,
        });
    }
}
