//! The receipt task behind a bound handle: it keeps the instance's [`Receipt`] in etcd under
//! the instance's own lease, fed by the handle's events and status, and lays a rollout's staged
//! values over the etcd layer when the instance is in the cohort.
//!
//! # Write rate
//! Every change (an applied or rejected revision, a status change, a reported health, a
//! rollout step) marks the receipt dirty; the task writes it once the coalescing window
//! (20 ms by default) has passed since the first unwritten change. So an instance costs **one
//! etcd put per processed revision** when revisions are further apart than the window, and
//! fewer when they come faster (a burst of revisions inside one window is one put); a status
//! change that happens with an apply rides on the same put. With no change there are no
//! writes: only the lease keepalive (one request every TTL/3). `benches/fleet_ops.rs` measures
//! it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::keys::FleetKeys;
use super::receipt::{
    now_ms, AppInfo, Health, InstanceStatus, Receipt, ReceiptOptions, ReceiptRejection,
    RolloutReceipt,
};
use super::state::RolloutState;
use crate::config::Overlay;
use crate::config::{
    ConfigEvent, ConfigHandle, ConfigStatus, CoordConfig, ReloadCause, Snapshot, Subscription,
};
use crate::error::Result;
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower};
use crate::etcd::lease::{Lease, LeaseLost, LeaseOptions, Unconfirmed};
use crate::etcd::{sleep_until_some, Etcd};
use crate::telemetry::CONFIG_TARGET;

/// A bound handle's link to its receipt task: the instance id and the health channel. The
/// task stops (and its lease is revoked, deleting the receipt) when this is dropped.
pub struct InstanceLink {
    id: String,
    health: watch::Sender<Health>,
    task: AbortHandle,
}

impl std::fmt::Debug for InstanceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceLink")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for InstanceLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InstanceLink {
    /// The instance id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Records the application's health.
    pub(crate) fn report_health(&self, health: Health) {
        self.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
    }
}

/// Starts the receipt task of `handle` and attaches it.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a bad instance id or
/// a bad [`LABELS_ENV`](super::LABELS_ENV).
pub(crate) fn start<T: CoordConfig>(
    etcd: Etcd,
    namespace: &str,
    handle: &ConfigHandle<T>,
    overlay: watch::Sender<Option<Arc<Overlay>>>,
    options: &ReceiptOptions,
) -> Result<()> {
    let id = options.resolve_id()?;
    let labels = options.resolve_labels()?;
    let keys = FleetKeys::new(namespace, handle.prefix());
    let schema = handle.schema().clone();
    let schema_hash = super::gate::schema_hash(&schema);
    let doc = crate::history::schema_document(
        &schema,
        std::any::type_name::<T>(),
        handle.prefix(),
        T::SECRETS,
    );
    let (health_tx, health_rx) = watch::channel(Health::Healthy);
    let (events, current, status) = handle.fleet_parts();
    let snapshot = current.load_full();
    let writer = Writer {
        etcd,
        key: keys.instance(&id),
        keys,
        receipt: Receipt {
            instance: id.clone(),
            labels,
            app: T::APP.map(|(name, version)| AppInfo {
                name: name.to_string(),
                version: version.to_string(),
            }),
            schema_hash,
            revision: snapshot.revision(),
            processed: status.load().revision,
            serving_since_unix_ms: now_ms(),
            status: InstanceStatus::of(&status.load()),
            health: Health::Healthy,
            rejection: None,
            rollout: None,
            updated_unix_ms: 0,
            writes: 0,
        },
        schema_doc: Some(doc),
        ttl: options.ttl,
        coalesce: options.coalesce,
        overlay,
        sent: None,
        state: None,
        staged: BTreeMap::new(),
    };
    let task = tokio::spawn(writer.run(events, current, status, health_rx)).abort_handle();
    handle.attach_fleet(InstanceLink {
        id,
        health: health_tx,
        task,
    });
    Ok(())
}

/// The receipt task's state.
struct Writer {
    etcd: Etcd,
    keys: FleetKeys,
    key: String,
    receipt: Receipt,
    /// The schema document to publish by hash (taken once published).
    schema_doc: Option<Value>,
    ttl: Duration,
    coalesce: Duration,
    overlay: watch::Sender<Option<Arc<Overlay>>>,
    /// The overlay last sent to the reload task.
    sent: Option<Arc<Overlay>>,
    /// The rollout state as last followed, and the staged keys.
    state: Option<RolloutState>,
    staged: BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
}

async fn lease_lost(lease: Option<&Lease>) -> LeaseLost {
    match lease {
        Some(l) => l.lost().await,
        None => std::future::pending().await,
    }
}

impl Writer {
    async fn run<T: CoordConfig>(
        mut self,
        mut events: Subscription<T>,
        current: Arc<ArcSwap<Snapshot<T>>>,
        status: Arc<ArcSwap<ConfigStatus>>,
        mut health: watch::Receiver<Health>,
    ) {
        let mut follower = PrefixFollower::prefix(
            self.etcd.clone(),
            self.keys.rollouts(),
            FollowOptions::default(),
        )
        .for_subsystem("fleet");
        let mut lease: Option<Lease> = None;
        let mut due = Some(Instant::now());
        let mut failures = 0u32;
        loop {
            let mut dirty = false;
            tokio::select! {
                event = events.next() => match event {
                    None => break,
                    Some(event) => dirty = self.on_event(&event),
                },
                followed = follower.next() => dirty = self.on_followed(followed),
                changed = health.changed() => match changed {
                    Ok(()) => {
                        self.receipt.health = health.borrow_and_update().clone();
                        dirty = true;
                    }
                    Err(_) => break,
                },
                reason = lease_lost(lease.as_ref()) => {
                    tracing::warn!(target: CONFIG_TARGET, key = %self.key, %reason, "receipt lease lost; granting a new one");
                    lease = None;
                    due = Some(Instant::now());
                }
                () = sleep_until_some(due) => {
                    due = None;
                    match self.write(&mut lease, &current, &status).await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            failures += 1;
                            let delay = Duration::from_millis(200 * u64::from(failures.min(10)));
                            tracing::warn!(target: CONFIG_TARGET, key = %self.key, error = %e, retry_in_ms = delay.as_millis() as u64, "could not write the instance receipt");
                            due = Some(Instant::now() + delay);
                        }
                    }
                }
            }
            if dirty && due.is_none() {
                due = Some(Instant::now() + self.coalesce);
            }
        }
        if let Some(lease) = lease {
            let _ = lease.revoke().await;
        }
    }

    /// Notes an event of the handle; whether the receipt changed.
    fn on_event<T>(&mut self, event: &ConfigEvent<T>) -> bool {
        match event {
            ConfigEvent::Applied(snapshot) => {
                if snapshot.revision() != self.receipt.revision {
                    self.receipt.serving_since_unix_ms = now_ms();
                }
                self.receipt.rejection = None;
                if let ReloadCause::Rollout { rollout, step } = snapshot.cause() {
                    self.receipt.rollout = step.map(|step| RolloutReceipt {
                        id: rollout.clone(),
                        step,
                        applied: true,
                    });
                }
                true
            }
            ConfigEvent::Rejected(rejection) => {
                if let ReloadCause::Rollout {
                    rollout,
                    step: Some(step),
                } = &rejection.cause
                {
                    self.receipt.rollout = Some(RolloutReceipt {
                        id: rollout.clone(),
                        step: *step,
                        applied: false,
                    });
                }
                let rollout = self.sent.as_ref().map(|o| o.rollout.clone());
                self.receipt.rejection = Some(ReceiptRejection::of(
                    rejection,
                    self.receipt.processed,
                    rollout,
                ));
                true
            }
            ConfigEvent::Status(_) | ConfigEvent::Lagged { .. } => true,
            _ => false,
        }
    }

    /// Follows the rollout keys; sends a changed overlay. Whether the receipt changed.
    fn on_followed(&mut self, followed: Followed) -> bool {
        let state_key = self.keys.state();
        let staged = self.keys.staged();
        let put = |this: &mut Self, key: &[u8], value: &[u8], rev: i64| {
            if key == state_key.as_bytes() {
                this.state = serde_json::from_slice(value)
                    .map_err(|e| {
                        tracing::warn!(target: CONFIG_TARGET, key = %state_key, error = %e, "unreadable rollout state; ignored");
                    })
                    .ok();
            } else if key.starts_with(staged.as_bytes()) {
                this.staged.insert(key.to_vec(), (value.to_vec(), rev));
            }
        };
        match followed {
            Followed::Resynced { kvs, .. } => {
                self.state = None;
                self.staged.clear();
                for kv in &kvs {
                    put(self, kv.key(), kv.value(), kv.mod_revision());
                }
            }
            Followed::Batch { revision, changes } => {
                for change in &changes {
                    match change {
                        Change::Put(kv) => put(self, kv.key(), kv.value(), revision),
                        Change::Delete(kv) => {
                            if kv.key() == state_key.as_bytes() {
                                self.state = None;
                            }
                            self.staged.remove(kv.key());
                        }
                    }
                }
            }
            Followed::Live | Followed::Interrupted { .. } => return false,
        }
        self.send_overlay()
    }

    /// The overlay this instance should serve now.
    fn desired(&self) -> Option<Arc<Overlay>> {
        let state = self.state.as_ref()?;
        if !state.status.is_active() || !state.cohort.contains(&self.receipt.instance) {
            return None;
        }
        Some(Arc::new(Overlay {
            rollout: state.id.clone(),
            step: state.step,
            prefix: self.keys.staged(),
            kvs: self
                .staged
                .iter()
                .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
                .collect(),
        }))
    }

    /// Sends the desired overlay if it differs from the one sent; whether it did.
    fn send_overlay(&mut self) -> bool {
        let desired = self.desired();
        if desired == self.sent {
            return false;
        }
        match &desired {
            Some(o) => {
                tracing::info!(target: CONFIG_TARGET, prefix = %self.keys.prefix(), rollout = %o.rollout, step = o.step, "in the rollout cohort: serving the staged values");
                let applied = self
                    .receipt
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.id == o.rollout && r.applied);
                // Until the reload task reports, the new step counts as not yet applied
                // (a step change alone keeps the values, and is applied again at once).
                self.receipt.rollout = Some(RolloutReceipt {
                    id: o.rollout.clone(),
                    step: o.step,
                    applied: applied && self.sent.as_ref().is_some_and(|s| s.kvs == o.kvs),
                });
            }
            None => {
                tracing::info!(target: CONFIG_TARGET, prefix = %self.keys.prefix(), "out of the rollout cohort: staged values removed");
            }
        }
        self.sent = desired.clone();
        self.overlay.send_replace(desired);
        true
    }

    /// Writes the receipt (granting a lease first if there is none).
    async fn write<T>(
        &mut self,
        lease: &mut Option<Lease>,
        current: &ArcSwap<Snapshot<T>>,
        status: &ArcSwap<ConfigStatus>,
    ) -> Result<()> {
        if let Some(doc) = &self.schema_doc {
            match publish_schema(
                &self.etcd,
                &self.keys.schema(&self.receipt.schema_hash),
                doc,
            )
            .await
            {
                Ok(()) => self.schema_doc = None,
                Err(e) => {
                    tracing::warn!(target: CONFIG_TARGET, hash = %self.receipt.schema_hash, error = %e, "could not publish the JSON Schema by hash");
                }
            }
        }
        if lease.is_none() {
            *lease = Some(
                Lease::grant(
                    &self.etcd,
                    LeaseOptions {
                        ttl: self.ttl,
                        margin: None,
                        unconfirmed: Unconfirmed::KeepTrying,
                    },
                )
                .await?,
            );
        }
        let held = lease.as_ref().expect("granted above");
        let snapshot = current.load();
        if snapshot.revision() != self.receipt.revision {
            self.receipt.revision = snapshot.revision();
        }
        let status = status.load();
        self.receipt.processed = status.revision.max(self.receipt.revision);
        self.receipt.status = InstanceStatus::of(&status);
        self.receipt.updated_unix_ms = now_ms();
        self.receipt.writes += 1;
        let value = serde_json::to_vec(&self.receipt).unwrap_or_default();
        let put = self
            .etcd
            .client()
            .clone()
            .put(
                self.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(held.id())),
            )
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => {
                self.receipt.writes -= 1;
                if held.note_error(&e) {
                    *lease = None;
                }
                Err(crate::error::Error::etcd(
                    format_args!("writing the receipt at `{}`", self.key),
                    e,
                ))
            }
        }
    }
}

/// Writes the schema document at `key` unless a value is there (schemas by hash never change).
async fn publish_schema(etcd: &Etcd, key: &str, doc: &Value) -> Result<()> {
    let text = serde_json::to_vec(doc).unwrap_or_default();
    etcd.client()
        .clone()
        .txn(
            Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, text, None)]),
        )
        .await
        .map_err(|e| {
            crate::error::Error::etcd(format_args!("publishing the schema at `{key}`"), e)
        })?;
    Ok(())
}
