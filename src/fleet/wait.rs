//! [`Fleet::wait`]: wait until every live instance serves a revision, following the receipts
//! with the crate's prefix follower (no polling).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::instances::{Fleet, Instance, Instances};
use super::receipt::{Receipt, ReceiptRejection};
use crate::error::Result;
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower};

/// The outcome of [`Fleet::wait`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WaitReport {
    /// The revision waited for.
    pub revision: i64,
    /// Whether every live instance (at least one) serves `revision` or later.
    pub converged: bool,
    /// How long it waited, ms.
    pub waited_ms: u64,
    /// The instances as last seen.
    pub instances: Instances,
    /// The instances serving an older revision.
    pub laggards: Vec<Instance>,
    /// The laggards' rejections of `revision` or later (instance id, rejection).
    pub rejections: Vec<(String, ReceiptRejection)>,
}

impl Fleet {
    /// Waits until every live instance serves `revision` or later (and at least one instance
    /// is live), for at most `timeout`. Returns early, not converged, when every instance that
    /// lags has rejected `revision` or a later one (it will not serve it unless the config is
    /// fixed).
    ///
    /// # Errors
    /// etcd errors of the first read; later interruptions are retried until the timeout.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn wait(&self, revision: i64, timeout: Duration) -> Result<WaitReport> {
        let started = Instant::now();
        let deadline = started + timeout;
        let first = self.instances().await?;
        let prefix_revision = first.prefix_revision;
        let mut receipts: BTreeMap<Vec<u8>, Receipt> = BTreeMap::new();
        let mut read_revision = first.read_revision;
        for i in first.list {
            receipts.insert(
                self.keys.instance(&i.receipt.instance).into_bytes(),
                i.receipt,
            );
        }
        let mut follower = PrefixFollower::prefix(
            self.coord.etcd().clone(),
            self.keys.instances(),
            FollowOptions::default(),
        )
        .for_subsystem("fleet");
        loop {
            let view = Instances::new(
                read_revision,
                prefix_revision,
                receipts.values().cloned().collect(),
                Duration::from_secs(3600),
            );
            let laggards: Vec<Instance> = view.behind(revision).into_iter().cloned().collect();
            let rejections: Vec<(String, ReceiptRejection)> = laggards
                .iter()
                .filter_map(|i| {
                    i.receipt
                        .rejection
                        .as_ref()
                        .filter(|r| r.revision >= revision)
                        .map(|r| (i.receipt.instance.clone(), r.clone()))
                })
                .collect();
            let converged = !view.list.is_empty() && laggards.is_empty();
            let hopeless = !laggards.is_empty() && rejections.len() == laggards.len();
            if converged || hopeless || Instant::now() >= deadline {
                return Ok(WaitReport {
                    revision,
                    converged,
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    instances: view,
                    laggards,
                    rejections,
                });
            }
            let next = tokio::time::timeout_at(deadline, follower.next()).await;
            match next {
                Err(_) => continue, // the deadline: report as is
                Ok(Followed::Resynced {
                    revision: at, kvs, ..
                }) => {
                    read_revision = at;
                    receipts.clear();
                    for kv in kvs {
                        if let Ok(r) = serde_json::from_slice(kv.value()) {
                            receipts.insert(kv.key().to_vec(), r);
                        }
                    }
                }
                Ok(Followed::Batch {
                    revision: at,
                    changes,
                }) => {
                    read_revision = at;
                    for change in changes {
                        match change {
                            Change::Put(kv) => {
                                if let Ok(r) = serde_json::from_slice(kv.value()) {
                                    receipts.insert(kv.key().to_vec(), r);
                                }
                            }
                            Change::Delete(kv) => {
                                receipts.remove(kv.key());
                            }
                        }
                    }
                }
                Ok(Followed::Live | Followed::Interrupted { .. }) => {}
            }
        }
    }
}
