//! [`KeyMonitor`]: notices when a held lock or leader key is deleted.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::etcd::follow::{key_gone, FollowOptions};
use crate::etcd::Etcd;

/// Follows one key (read, then watched) until it is deleted; the crate's prefix follower heals
/// the watch. Started when a guard or leadership is made (its key and token known), so a
/// delete is noticed whether or not anyone asks.
pub(crate) struct KeyMonitor {
    deleted: watch::Receiver<bool>,
    task: AbortHandle,
}

impl KeyMonitor {
    /// Starts watching `key`, created at revision `token`. `None` outside a Tokio runtime.
    pub(crate) fn start(etcd: Etcd, key: String, token: i64) -> Option<KeyMonitor> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, deleted) = watch::channel(false);
        let task = handle
            .spawn(async move {
                follow(etcd, &key, token).await;
                let _ = tx.send(true);
            })
            .abort_handle();
        Some(KeyMonitor { deleted, task })
    }

    /// `true` once the delete was seen.
    pub(crate) fn deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    /// Resolves when the delete is seen.
    pub(crate) async fn wait(&self) {
        let mut rx = self.deleted.clone();
        // An error means the task ended without sending, which only an abort does: then wait
        // forever, as the caller also waits on the session.
        if rx.wait_for(|deleted| *deleted).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for KeyMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Returns when `key` (created at `token`) has been deleted.
async fn follow(etcd: Etcd, key: &str, token: i64) {
    // Only errors no retry fixes end the follow early: treat the key as gone then, so the
    // guard reports the loss instead of trusting a key it cannot watch.
    match key_gone(etcd, key, token, None, lock_follow_options()).await {
        Ok(()) => metrics::counter!(crate::telemetry::LOCK_KEY_DELETED).increment(1),
        Err(error) => {
            tracing::warn!(key, error = %error, "cannot watch the lock key; treating it as deleted")
        }
    }
}

/// How lock and leader key watches are paced: re-opened quickly (50 ms doubling to 1 s), as a
/// waiter's turn or a holder's loss should be noticed soon after etcd is back.
pub(crate) fn lock_follow_options() -> FollowOptions {
    FollowOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
        ..FollowOptions::default()
    }
}
