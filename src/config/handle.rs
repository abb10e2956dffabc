//! [`Config<T>`]: the handle a service keeps and reads on every request.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache, Guard};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::check::Checker;
use super::coord_config::CoordConfig;
use super::event::{ConfigEvent, Subscription};
use super::reload::Started;
use super::snapshot::Snapshot;
use super::status::ConfigStatus;
use crate::history::Tracker;

/// A bound configuration: the current [`Snapshot`] of `T`, kept up to date by a background task
/// that follows the etcd prefix and the local file.
///
/// Cheap to clone (all clones share one snapshot and one task). The background task stops when
/// the last clone is dropped. Must be created inside a Tokio runtime.
pub struct Config<T: CoordConfig> {
    shared: Arc<Shared<T>>,
}

struct Shared<T: CoordConfig> {
    current: Arc<ArcSwap<Snapshot<T>>>,
    events: broadcast::Sender<ConfigEvent<T>>,
    status: Arc<ArcSwap<ConfigStatus>>,
    checker: Arc<Checker<T>>,
    prefix: String,
    task: JoinHandle<()>,
    /// The versioned history part, made with the handle.
    history: Tracker<T>,
}

impl<T: CoordConfig> Drop for Shared<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: CoordConfig> Clone for Config<T> {
    fn clone(&self) -> Self {
        Config {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: CoordConfig> fmt::Debug for Config<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("prefix", &self.shared.prefix)
            .field("revision", &self.load().revision())
            .finish_non_exhaustive()
    }
}

impl<T: CoordConfig> Config<T> {
    /// The handle for what the bind produced, with its history part (made from the same
    /// [`Started`], see [`Tracker::start`]); starts the reload task.
    pub(crate) fn spawn(started: Started<T>, prefix: String, history: Tracker<T>) -> Self {
        let Started {
            reloader,
            file_watch,
        } = started;
        let current = Arc::clone(reloader.current());
        let events = reloader.events().clone();
        let status = Arc::clone(reloader.status());
        let checker = Arc::clone(reloader.checker());
        let task = tokio::spawn(reloader.run(file_watch));
        Config {
            shared: Arc::new(Shared {
                current,
                events,
                status,
                checker,
                prefix,
                task,
                history,
            }),
        }
    }

    /// The current snapshot: a lock-free, allocation-free read (an `arc-swap` guard), a few
    /// nanoseconds. Use it per request; don't hold the guard across an `.await` or for long (use
    /// [`load_full`](Self::load_full) to keep a snapshot).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot<T>>> {
        self.shared.current.load()
    }

    /// The current snapshot as an owned `Arc` (one reference-count increment), to keep across
    /// `.await`s or hand to other tasks.
    pub fn load_full(&self) -> Arc<Snapshot<T>> {
        self.shared.current.load_full()
    }

    /// A per-thread cache whose `load()` costs under a nanosecond while the snapshot is
    /// unchanged (see `arc_swap::Cache`). Keep one per worker thread.
    pub fn cache(&self) -> Cache<Arc<ArcSwap<Snapshot<T>>>, Arc<Snapshot<T>>> {
        Cache::new(Arc::clone(&self.shared.current))
    }

    /// Whether the snapshot is current: live, reconnecting or stale (with since when), the last
    /// etcd revision processed and the last watch error. Lock-free, like [`load`](Self::load).
    pub fn status(&self) -> Arc<ConfigStatus> {
        self.shared.status.load_full()
    }

    /// Every applied snapshot and every rejected change from now on, in order, and every change
    /// of [`status`](Self::status).
    pub fn subscribe(&self) -> Subscription<T> {
        Subscription::new(self.shared.events.subscribe())
    }

    /// The full etcd prefix this handle follows (namespace included, ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The JSON Schema (draft 2020-12) every candidate is checked against.
    pub fn schema(&self) -> &serde_json::Value {
        self.shared.checker.schema()
    }

    /// Checks a candidate value as a reload would (JSON Schema constraints, then
    /// `T::validate`), without the layers: for publishing a whole value.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`](crate::ErrorKind::Validation) naming the failing field.
    pub(crate) fn check_value(&self, value: &T) -> crate::Result<()> {
        self.shared.checker.check_value(value)
    }

    /// The handle's versioned history part.
    pub(crate) fn tracker(&self) -> &Tracker<T> {
        &self.shared.history
    }
}
