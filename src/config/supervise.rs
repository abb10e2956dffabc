//! The reload task's main loop: follows the etcd prefix through the crate's
//! [`PrefixFollower`] (which heals the watch through restarts, partitions, hangs, compaction,
//! oversized catch-ups and snapshot restores) and the file watch, and turns what they report
//! into snapshots and status changes.
//!
//! - A batch (one etcd revision) is applied as one snapshot.
//! - A resync (first contact after a cold start, compaction, a catch-up too large for one
//!   message, a restored cluster) replaces the etcd layer and is applied as one
//!   [`ReloadCause::Resync`](super::ReloadCause::Resync) naming its [`ResyncReason`](super::ResyncReason).
//! - The status turns live only when the follower has caught up with what etcd had when the
//!   watch opened, so a backlog after a partition never counts as live.

use tokio::time::{sleep_until, Instant};

use super::coord_config::CoordConfig;
use super::layers::FileWatch;
use super::reload::Reloader;
use super::status::WatchState;
use crate::etcd::follow::{Followed, PrefixFollower};

impl<T: CoordConfig> Reloader<T> {
    /// Runs until the handle is dropped (the task is aborted then).
    pub(crate) async fn run(mut self, file_watch: Option<FileWatch>) {
        // What the bind left to do once the handle serves.
        self.settle();
        let mut follower = self.follower();
        let mut file_due: Option<Instant> = None;
        let mut overlay = self.overlay_rx.take();
        loop {
            let now = Instant::now();
            tokio::select! {
                item = follower.next() => {
                self.set_watch_opens(follower.opens());
                match item {
                    Followed::Batch { revision, changes } => self.on_batch(revision, changes),
                    Followed::Resynced { revision, kvs, reason } => {
                        self.on_resynced(revision, kvs, reason);
                    }
                    Followed::Live => self.set_status(WatchState::Live, None),
                    Followed::Interrupted { error, .. } => {
                        self.metrics.interrupted(error.kind());
                        let stale = self.status().load().state == WatchState::Stale;
                        let state = if stale { WatchState::Stale } else { WatchState::Reconnecting };
                        self.set_status(state, Some(error));
                    }
                }
                }
                () = file_changed(file_watch.as_ref()) => {
                    file_due = Some(Instant::now() + self.timing.debounce);
                }
                changed = overlay_changed(overlay.as_mut()) => {
                    match changed {
                        Some(next) => self.set_overlay(next),
                        None => overlay = None, // the receipt task is gone
                    }
                }
                () = sleep_until(file_due.unwrap_or(now)), if file_due.is_some() => {
                    file_due = None;
                    self.reload_file();
                }
            }
        }
    }

    /// The follower of the prefix: resuming after the bound revision when etcd was read at
    /// bind, starting with a read after a cold start.
    fn follower(&self) -> PrefixFollower {
        let state = &self.state;
        let follower =
            PrefixFollower::prefix(state.conn.clone(), &state.prefix, self.timing.follow)
                .for_subsystem("config")
                .confirming(self.metrics.confirmed_at.clone());
        if state.synced {
            follower.resume_after(state.revision, state.etcd_len(), state.etcd_newest())
        } else {
            follower
        }
    }
}

/// The next overlay sent by the receipt task; `None` once its sender is gone.
async fn overlay_changed(
    rx: Option<&mut tokio::sync::watch::Receiver<Option<std::sync::Arc<super::layers::Overlay>>>>,
) -> Option<Option<std::sync::Arc<super::layers::Overlay>>> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn file_changed(watch: Option<&FileWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
