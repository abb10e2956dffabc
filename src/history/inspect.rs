//! Inspecting a typed handle's history: versions, diffs, recent snapshots.

use std::sync::Arc;

use super::admin::ConfigHistory;
use super::diff::{self, FieldChange};
use super::publish::tracker;
use super::record::Version;
use super::sealing::union;
use crate::config::{ConfigHandle, CoordConfig, Snapshot, StringFields};
use crate::error::Result;

impl<T: CoordConfig> ConfigHandle<T> {
    /// Every recorded version of the prefix, oldest first (audit metadata, no values). At most
    /// the configured retention ([`HistoryOptions::with_max_versions`](crate::history::HistoryOptions::with_max_versions),
    /// 100 by default) is kept.
    ///
    /// # Errors
    /// etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn history(&self) -> Result<Vec<Version>> {
        let shared = tracker(self)?;
        let (_, heads) = shared.store.list(None).await?;
        Ok(heads.into_iter().map(|(h, _)| h.version()).collect())
    }

    /// The fields that changed from version `from` to version `to` (revisions from
    /// [`history`](ConfigHandle::history)), in path order, with old and new values as the etcd layer
    /// reads them for `T` (string fields keep their text). Secret fields show `***`; a secret
    /// whose value the history does not hold readably (recorded without a secret key, or
    /// encrypted with a key this handle lacks) is listed with
    /// [`FieldChange::unknown`] set instead of as changed.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a pruned or unknown version;
    /// etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn diff(&self, from: i64, to: i64) -> Result<Vec<FieldChange>> {
        let shared = tracker(self)?;
        let (ha, a) = shared.store.view_at(from, true).await?;
        let (hb, b) = shared.store.view_at(to, true).await?;
        let fields = StringFields::new(self.schema().clone());
        let a = diff::document(self.prefix(), &a, &fields);
        let b = diff::document(self.prefix(), &b, &fields);
        let secrets = union(&union(&ha.secrets, &hb.secrets), T::SECRETS);
        Ok(diff::diff(&a, &b, &secrets))
    }

    /// Why this handle records no history although its options say it should: etcd refused
    /// the writes for a missing permission (an [`ErrorKind::Auth`](crate::ErrorKind::Auth)
    /// error naming the key and the permission: recording needs readwrite on
    /// `<namespace>/__coordination/`). `None` while recording works, and when
    /// [`HistoryOptions::with_recording`](crate::history::HistoryOptions::with_recording) is off.
    ///
    /// A refusal does not fail the bind: config keeps loading and reloading, and
    /// [`update`](ConfigHandle::update) and [`rollback_to`](ConfigHandle::rollback_to) still work where
    /// the user may write both the prefix and the history. The refusal is logged once, at
    /// `warn`; the handle does not try again (bind again after granting the permission).
    pub fn history_refused(&self) -> Option<crate::Error> {
        tracker(self).ok()?.refused.get().cloned()
    }

    /// The last applied snapshots this handle kept in memory, oldest first, the current one
    /// last ([`HistoryOptions::with_recent_snapshots`](crate::history::HistoryOptions::with_recent_snapshots), 16 by
    /// default). Instant: no etcd request.
    pub fn recent(&self) -> Vec<Arc<Snapshot<T>>> {
        match tracker(self) {
            Ok(shared) => shared.recent(),
            Err(_) => vec![self.load_full()],
        }
    }

    /// The untyped history API for this prefix ([`ConfigHistory`]), using `T`'s schema and
    /// secret fields: documents of any version, diffs against the current state, and the
    /// operations `coordctl` offers.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`](crate::ErrorKind::Validation) if `T`'s JSON Schema is not a
    /// valid JSON Schema.
    pub fn history_admin(&self) -> Result<ConfigHistory> {
        let shared = tracker(self)?;
        let doc = super::schema::document(
            self.schema(),
            std::any::type_name::<T>(),
            self.prefix(),
            T::SECRETS,
            T::ENV_PREFIX,
        );
        ConfigHistory::from_parts(shared.store.clone(), Some(doc), &[], shared.max_txn_ops)
    }
}
