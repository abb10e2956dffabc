//! [`ConfigHandle::rollback_to`]: restore an earlier version's exact key set on every instance.

use super::publish::{recording, tracker, CATCH_UP};
use super::record::{Meta, Version, VersionKind};
use super::store::KeySet;
use super::write::write_guarded;
use crate::config::{ConfigHandle, CoordConfig};
use crate::error::Result;

impl<T: CoordConfig> ConfigHandle<T> {
    /// Restores version `version` (a revision from [`history`](ConfigHandle::history)): puts every
    /// key it had with its exact bytes and deletes every key it did not have, in one etcd
    /// transaction guarded like [`overwrite`](ConfigHandle::overwrite).
    ///
    /// Secret values come back exactly when the version was recorded with a secret key
    /// ([`HistoryOptions::with_secret_key`](crate::history::HistoryOptions::with_secret_key)) and
    /// this handle has it. A version recorded without a key does not hold them: each secret key
    /// keeps its current value (for a key holding a document, the recorded document gets the
    /// current value's secret fields), a secret key the version did not have is deleted, and
    /// one that is absent now stays absent. It is recorded as a new version
    /// with source `rollback` and [`Version::restored_from`] = `version`; every instance
    /// hot-reloads it through its watch (and, like any change, rejects it if it is invalid
    /// for that instance).
    ///
    /// Returns the new version, or `None` if the prefix already holds exactly that key set.
    /// A restore of more keys than fit in one transaction is written in guarded batches.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a pruned or unknown version;
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the key id when
    /// the version holds a secret encrypted with a key this handle was not given (nothing is
    /// written);
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) if the prefix changed concurrently;
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) if the handle's history has not
    /// caught up within 5 s; etcd errors.
    ///
    /// # Cancel safety
    /// Dropping the future after the write was sent leaves its outcome unknown: the change is one
    /// etcd transaction (or, over the transaction limit, a sequence of guarded batches) that may
    /// or may not have committed. Read the history or the handle's snapshot to find out; a retry
    /// is guarded by the revision, so it cannot apply the change twice.
    pub async fn rollback_to(
        &self,
        version: i64,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        let shared = tracker(self)?;
        let view = shared
            .view_at_least(self.load().revision(), CATCH_UP)
            .await?;
        let target = shared.store.restore_at(version, &view.kvs).await?;
        let mut meta = Meta::new(VersionKind::Rollback, author, comment);
        meta.restored_from = Some(version);
        write_guarded(
            &shared.store,
            view.revision,
            KeySet {
                kvs: &view.kvs,
                revs: &view.revs,
                bytes: view.bytes,
            },
            &target,
            meta,
            view.prev,
            recording(shared),
        )
        .await
    }
}
