//! [`ConfigHandle<T>`]: the handle a service keeps and reads on every request.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache, Guard};
use metrics::Counter;
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
pub struct ConfigHandle<T: CoordConfig> {
    shared: Arc<Shared<T>>,
}

struct Shared<T: CoordConfig> {
    current: Arc<ArcSwap<Snapshot<T>>>,
    events: broadcast::Sender<ConfigEvent<T>>,
    status: Arc<ArcSwap<ConfigStatus>>,
    checker: Arc<Checker<T>>,
    prefix: String,
    /// Counts the lag events the handle's subscriptions deliver (a no-op for a fixed handle).
    lagged: Counter,
    /// The reload task; `None` for a [fixed](ConfigHandle::fixed) handle.
    task: Option<JoinHandle<()>>,
    /// The versioned history part, made with the handle; `None` for a fixed handle.
    history: Option<Tracker<T>>,
    /// The receipt task (see [`fleet`](crate::fleet)), once started; unset for a fixed handle
    /// or with receipts off.
    fleet: std::sync::OnceLock<crate::fleet::InstanceLink>,
}

/// A read of a [`ConfigHandle`], from [`ConfigHandle::load`]: derefs to the [`Snapshot`] (and through it
/// to `T`, so `cfg.load().port` reads a field). It pins that snapshot while it lives, so keep
/// it short: not across an `.await` (use [`into_arc`](Self::into_arc) or
/// [`ConfigHandle::load_full`] to keep a snapshot).
pub struct SnapshotGuard<T>(Guard<Arc<Snapshot<T>>>);

impl<T> SnapshotGuard<T> {
    /// The snapshot as an owned `Arc`.
    pub fn into_arc(self) -> Arc<Snapshot<T>> {
        Guard::into_inner(self.0)
    }
}

impl<T> std::ops::Deref for SnapshotGuard<T> {
    type Target = Snapshot<T>;

    #[inline]
    fn deref(&self) -> &Snapshot<T> {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for SnapshotGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A per-thread reader of a [`ConfigHandle`], from [`ConfigHandle::local_cache`]: it keeps the snapshot
/// it last saw and only checks, at each [`load`](Self::load), whether a newer one was swapped
/// in (one atomic load, no reference-count change).
pub struct LocalCache<T: CoordConfig> {
    cache: Cache<Arc<ArcSwap<Snapshot<T>>>, Arc<Snapshot<T>>>,
}

impl<T: CoordConfig> LocalCache<T> {
    /// The current snapshot (the one kept, or the newer one now kept instead).
    #[inline]
    pub fn load(&mut self) -> &Arc<Snapshot<T>> {
        self.cache.load()
    }
}

impl<T: CoordConfig> fmt::Debug for LocalCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCache").finish_non_exhaustive()
    }
}

/// What the receipt task reads: the events, the snapshot slot, the status slot.
pub(crate) type FleetParts<T> = (
    Subscription<T>,
    Arc<ArcSwap<Snapshot<T>>>,
    Arc<ArcSwap<ConfigStatus>>,
);

/// What [`ConfigHandle::set_fixed`] writes to.
pub(crate) struct FixedParts<'a, T: CoordConfig> {
    pub(crate) current: &'a ArcSwap<Snapshot<T>>,
    pub(crate) events: &'a broadcast::Sender<ConfigEvent<T>>,
    pub(crate) checker: &'a Checker<T>,
}

impl<T: CoordConfig> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<T: CoordConfig> Clone for ConfigHandle<T> {
    fn clone(&self) -> Self {
        ConfigHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: CoordConfig> fmt::Debug for ConfigHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigHandle")
            .field("prefix", &self.shared.prefix)
            .field("revision", &self.load().revision())
            .finish_non_exhaustive()
    }
}

impl<T: CoordConfig> ConfigHandle<T> {
    /// The handle for what the bind produced, with its history part (made from the same
    /// [`Started`], see [`Tracker::start`]); starts the reload task.
    pub(crate) fn spawn(started: Started<T>, prefix: String, history: Tracker<T>) -> Self {
        let Started {
            reloader,
            file_watch,
            ..
        } = started;
        let current = Arc::clone(reloader.current());
        let events = reloader.events().clone();
        let status = Arc::clone(reloader.status());
        let checker = Arc::clone(reloader.checker());
        let lagged = reloader.metrics.lagged.clone();
        let task = tokio::spawn(reloader.run(file_watch));
        ConfigHandle {
            shared: Arc::new(Shared {
                current,
                events,
                status,
                checker,
                prefix,
                lagged,
                task: Some(task),
                history: Some(history),
                fleet: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The shared state, for the coordinator's table of bound handles.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<dyn std::any::Any + Send + Sync> {
        let weak: std::sync::Weak<Shared<T>> = Arc::downgrade(&self.shared);
        weak
    }

    /// A handle on state from [`downgrade`](Self::downgrade), if it is still alive and of `T`.
    pub(crate) fn upgrade(weak: &std::sync::Weak<dyn std::any::Any + Send + Sync>) -> Option<Self> {
        let shared = weak.upgrade()?.downcast::<Shared<T>>().ok()?;
        Some(ConfigHandle { shared })
    }

    /// A handle with no reload task and no history (see [`ConfigHandle::fixed`]).
    pub(crate) fn without_etcd(
        snapshot: Snapshot<T>,
        status: ConfigStatus,
        checker: Arc<Checker<T>>,
        event_capacity: usize,
    ) -> Self {
        let (events, _) = broadcast::channel(event_capacity.max(1));
        ConfigHandle {
            shared: Arc::new(Shared {
                current: Arc::new(ArcSwap::from_pointee(snapshot)),
                events,
                status: Arc::new(ArcSwap::from_pointee(status)),
                checker,
                prefix: String::new(),
                lagged: Counter::noop(),
                task: None,
                history: None,
                fleet: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The slot, event channel and checker, for a fixed handle's [`ConfigHandle::set_fixed`];
    /// `None` for a bound one.
    pub(crate) fn fixed_parts(&self) -> Option<FixedParts<'_, T>> {
        self.shared.task.is_none().then(|| FixedParts {
            current: &self.shared.current,
            events: &self.shared.events,
            checker: &self.shared.checker,
        })
    }

    /// The current snapshot: a lock-free, allocation-free read (an `arc-swap` guard), a few
    /// nanoseconds. Use it per request; don't hold the guard across an `.await` or for long (use
    /// [`load_full`](Self::load_full) to keep a snapshot).
    #[inline]
    pub fn load(&self) -> SnapshotGuard<T> {
        SnapshotGuard(self.shared.current.load())
    }

    /// The current snapshot as an owned `Arc` (one reference-count increment), to keep across
    /// `.await`s or hand to other tasks.
    pub fn load_full(&self) -> Arc<Snapshot<T>> {
        self.shared.current.load_full()
    }

    /// A per-thread reader whose [`load`](LocalCache::load) costs under a nanosecond while the
    /// snapshot is unchanged. Keep one per worker thread (it is `Send`, not `Sync`).
    pub fn local_cache(&self) -> LocalCache<T> {
        LocalCache {
            cache: Cache::new(Arc::clone(&self.shared.current)),
        }
    }

    /// Whether the snapshot is current: live, reconnecting or stale (with since when), the last
    /// etcd revision processed and the last watch error. Lock-free, like [`load`](Self::load).
    pub fn status(&self) -> Arc<ConfigStatus> {
        self.shared.status.load_full()
    }

    /// Every applied snapshot and every rejected change from now on, in order, and every change
    /// of [`status`](Self::status).
    pub fn subscribe(&self) -> Subscription<T> {
        Subscription::new(self.shared.events.subscribe(), self.shared.lagged.clone())
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

    /// What the receipt task reads: the handle's events, its snapshot slot and its status.
    pub(crate) fn fleet_parts(&self) -> FleetParts<T> {
        (
            self.subscribe(),
            Arc::clone(&self.shared.current),
            Arc::clone(&self.shared.status),
        )
    }

    /// Attaches the receipt task; it stops when the last clone of the handle is dropped.
    pub(crate) fn attach_fleet(&self, link: crate::fleet::InstanceLink) {
        let _ = self.shared.fleet.set(link);
    }

    /// The id this instance's [receipt](crate::fleet::Receipt) is kept under; `None` for a
    /// fixed handle or one bound with receipts off
    /// ([`ConfigOptions::without_receipts`](crate::ConfigOptions::without_receipts)).
    pub fn instance_id(&self) -> Option<&str> {
        self.shared.fleet.get().map(crate::fleet::InstanceLink::id)
    }

    /// Reports the application's own health (e.g. from its error-rate check) in this
    /// instance's receipt, written within the receipt's coalescing window (20 ms by default).
    /// A staged rollout reverts when an instance of its cohort reports
    /// [`Health::Unhealthy`](crate::fleet::Health::Unhealthy) while it applies or bakes. No-op
    /// without a receipt.
    pub fn report_health(&self, health: crate::fleet::Health) {
        if let Some(link) = self.shared.fleet.get() {
            link.report_health(health);
        }
    }

    /// The handle's versioned history part (`None` for a fixed handle).
    pub(crate) fn tracker(&self) -> Option<&Tracker<T>> {
        self.shared.history.as_ref()
    }
}
