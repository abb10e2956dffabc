//! [`KeyMonitor`]: notices when a held lock or leader key is deleted.

use std::time::Duration;

use etcd_client::{Client, WatchFilterType, WatchOptions};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::backoff::Backoff;

/// etcd's `mvccpb.Event.EventType` for a delete.
pub(crate) const EVENT_DELETE: i32 = 1;

/// Watches one key (from its creation revision + 1) for its delete and re-opens the watch
/// after errors. Started when a guard or leadership is made (its key and token known), so a
/// delete is noticed whether or not anyone asks.
pub(crate) struct KeyMonitor {
    deleted: watch::Receiver<bool>,
    task: AbortHandle,
}

impl KeyMonitor {
    /// Starts watching `key`, created at revision `token`. `None` outside a Tokio runtime.
    pub(crate) fn start(client: Client, key: String, token: i64) -> Option<KeyMonitor> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, deleted) = watch::channel(false);
        let task = handle
            .spawn(async move {
                follow(client, &key, token).await;
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
async fn follow(mut client: Client, key: &str, token: i64) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut from = token + 1;
    loop {
        match watch_once(&mut client, key, token, &mut from).await {
            Ok(()) => return,
            Err(reason) => {
                let delay = backoff.next_delay();
                tracing::debug!(key, %reason, ?delay, "lock key watch interrupted; re-opening");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One watch stream: `Ok` when the delete is seen, `Err` (a reason) when the stream must be
/// re-opened. After a compaction, re-reads the key and moves `from` forward.
async fn watch_once(
    client: &mut Client,
    key: &str,
    token: i64,
    from: &mut i64,
) -> Result<(), String> {
    let options = WatchOptions::new()
        .with_start_revision(*from)
        .with_filters([WatchFilterType::NoPut]);
    let mut stream = client
        .watch(key, Some(options))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Err("watch stream closed".into()),
            Err(e) => return Err(e.to_string()),
        };
        if resp.events().iter().any(|ev| ev.0.r#type == EVENT_DELETE) {
            return Ok(());
        }
        if resp.canceled() {
            // Compacted past `from`: the key's current state decides.
            let got = client.get(key, None).await.map_err(|e| e.to_string())?;
            let alive = got
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == token);
            if !alive {
                return Ok(());
            }
            *from = got.header().map_or(*from, |h| h.revision() + 1);
            return Err(format!(
                "watch canceled (compact revision {}); resuming at {from}",
                resp.compact_revision()
            ));
        }
    }
}
