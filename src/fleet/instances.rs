//! [`Fleet`]: the untyped fleet API of one prefix (instances, wait, gate, rollouts), and
//! [`Instances`], the live receipts read at one revision.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use etcd_client::{GetOptions, SortOrder, SortTarget};
use serde::Serialize;
use serde_json::Value;

use super::gate::{self, GateFinding};
use super::keys::FleetKeys;
use super::receipt::{now_ms, InstanceStatus, Receipt, ReceiptRejection};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::read_prefix;

/// Keys per page when reading receipts.
const PAGE: i64 = 1000;

/// Default for [`Fleet::with_stale_after`]: 10 s.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);

/// The fleet of one config prefix, without its Rust type: the instances bound to it and what
/// they did with each revision ([`instances`](Self::instances), [`wait`](Self::wait)), the
/// publish gate ([`gate`](Self::gate)) and staged rollouts ([`start_rollout`](Self::start_rollout)
/// and the rest in `controller.rs`). Cheap to clone. The key layout is in the README's
/// "Fleet operations" section.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub(crate) coord: Coordinator,
    pub(crate) keys: FleetKeys,
    stale_after: Duration,
}

impl Fleet {
    /// The fleet of `prefix` (as in `#[coord(prefix = "/apps/chat/config")]`; the
    /// coordinator's namespace is put in front). Reads nothing yet.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty prefix.
    pub fn open(coord: &Coordinator, prefix: &str) -> Result<Self> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty etcd prefix"));
        }
        let slash = if prefix.starts_with('/') { "" } else { "/" };
        let full = format!("{}{slash}{prefix}/", coord.namespace());
        Ok(Fleet {
            keys: FleetKeys::new(coord.namespace(), &full),
            coord: coord.clone(),
            stale_after: DEFAULT_STALE_AFTER,
        })
    }

    /// An instance that has not processed the prefix's newest revision and whose receipt is
    /// older than `threshold` is flagged [stale](Instance::stale) (default 10 s).
    #[must_use]
    pub fn with_stale_after(mut self, threshold: Duration) -> Self {
        self.stale_after = threshold;
        self
    }

    /// The full prefix (namespace included, ending with `/`).
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The prefix the receipts live under.
    pub fn instances_prefix(&self) -> &str {
        self.keys.instances()
    }

    /// The live instances' receipts (a receipt disappears with its instance's lease), sorted
    /// by instance id, with the prefix's newest revision and staleness.
    ///
    /// # Errors
    /// etcd errors (e.g. [`ErrorKind::Auth`] without read access to `/__coordination/`).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn instances(&self) -> Result<Instances> {
        let (revision, kvs) = read_prefix(self.coord.etcd(), self.keys.instances(), PAGE)
            .await
            .map_err(|e| {
                e.needs(
                    Permission::Read,
                    &format!("`{}`", self.keys.instances()),
                    self.keys.instances(),
                )
            })?;
        let receipts = kvs
            .iter()
            .filter_map(|kv| match serde_json::from_slice::<Receipt>(kv.value()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable receipt; skipped");
                    None
                }
            })
            .collect();
        let newest = self.newest_revision().await?;
        Ok(Instances::new(revision, newest, receipts, self.stale_after))
    }

    /// The newest `mod_revision` of a key under the prefix (0 if it is empty).
    pub(crate) async fn newest_revision(&self) -> Result<i64> {
        let resp = self
            .coord
            .client()
            .get(
                self.keys.prefix(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Mod, SortOrder::Descend)
                        .with_limit(1),
                ),
            )
            .await
            .map_err(|e| {
                Error::etcd(
                    format_args!("reading the prefix `{}`", self.keys.prefix()),
                    e,
                )
            })?;
        Ok(resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }

    /// The schemas the live `receipts` run, by hash (those published).
    pub(crate) async fn schemas(&self, receipts: &[Receipt]) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for r in receipts {
            if out.contains_key(&r.schema_hash) {
                continue;
            }
            let key = self.keys.schema(&r.schema_hash);
            let resp = self
                .coord
                .client()
                .get(key.as_str(), None)
                .await
                .map_err(|e| Error::etcd(format_args!("reading the schema at `{key}`"), e))?;
            if let Some(kv) = resp.kvs().first() {
                match serde_json::from_slice(kv.value()) {
                    Ok(doc) => {
                        out.insert(r.schema_hash.clone(), doc);
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "unreadable schema; not checked"),
                }
            }
        }
        Ok(out)
    }

    /// The publish gate: checks `document` (the etcd layer's document, as
    /// [`ConfigHistory::document`](crate::history::ConfigHistory::document) shows it) against
    /// the JSON Schema of every type the live instances run. Fields other layers may supply
    /// can be missing. Empty when every running schema accepts it.
    ///
    /// # Errors
    /// etcd errors; [`ErrorKind::Validation`] if a published schema does not compile.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn gate(&self, document: &Value) -> Result<Vec<GateFinding>> {
        let instances = self.instances().await?;
        let receipts: Vec<Receipt> = instances.list.into_iter().map(|i| i.receipt).collect();
        let schemas = self.schemas(&receipts).await?;
        gate::findings(document, &receipts, &schemas)
    }
}

/// One live instance: its receipt and whether it is stale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Instance {
    /// The receipt as the instance wrote it.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// Why the instance is stale: not live, or behind the prefix for longer than the
    /// threshold ([`Fleet::with_stale_after`]); `None` if it is current.
    pub stale: Option<String>,
}

/// The live instances of a prefix, from [`Fleet::instances`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Instances {
    /// The etcd revision the receipts were read at.
    pub read_revision: i64,
    /// The newest `mod_revision` under the config prefix (what a current instance serves or
    /// has processed).
    pub prefix_revision: i64,
    /// The instances, by id.
    pub list: Vec<Instance>,
}

impl Instances {
    pub(crate) fn new(
        read_revision: i64,
        prefix_revision: i64,
        mut receipts: Vec<Receipt>,
        stale_after: Duration,
    ) -> Self {
        receipts.sort_by(|a, b| a.instance.cmp(&b.instance));
        let now = now_ms();
        let list = receipts
            .into_iter()
            .map(|receipt| {
                let stale = if receipt.status != InstanceStatus::Live {
                    Some(format!("{} (its etcd watch is down)", receipt.status.as_str()))
                } else if receipt.processed < prefix_revision
                    && now.saturating_sub(receipt.updated_unix_ms)
                        > u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX)
                {
                    Some(format!(
                        "processed revision {} while the prefix is at {prefix_revision}, receipt {} s old",
                        receipt.processed,
                        now.saturating_sub(receipt.updated_unix_ms) / 1000
                    ))
                } else {
                    None
                };
                Instance { receipt, stale }
            })
            .collect();
        Instances {
            read_revision,
            prefix_revision,
            list,
        }
    }

    /// How many instances serve each revision, by revision.
    pub fn by_revision(&self) -> BTreeMap<i64, usize> {
        let mut out = BTreeMap::new();
        for i in &self.list {
            *out.entry(i.receipt.revision).or_insert(0) += 1;
        }
        out
    }

    /// The instances that have a rejection, with it.
    pub fn rejections(&self) -> Vec<(&str, &ReceiptRejection)> {
        self.list
            .iter()
            .filter_map(|i| {
                i.receipt
                    .rejection
                    .as_ref()
                    .map(|r| (i.receipt.instance.as_str(), r))
            })
            .collect()
    }

    /// The stale instances.
    pub fn stale(&self) -> Vec<&Instance> {
        self.list.iter().filter(|i| i.stale.is_some()).collect()
    }

    /// The instance `id`, if it is live.
    pub fn get(&self, id: &str) -> Option<&Instance> {
        self.list.iter().find(|i| i.receipt.instance == id)
    }

    /// The instances serving less than `revision`.
    pub fn behind(&self, revision: i64) -> Vec<&Instance> {
        self.list
            .iter()
            .filter(|i| i.receipt.revision < revision)
            .collect()
    }

    /// When the oldest receipt was written (`None` if there are none).
    pub fn oldest_update(&self) -> Option<SystemTime> {
        self.list.iter().map(|i| i.receipt.updated()).min()
    }
}
