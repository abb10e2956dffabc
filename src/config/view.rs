//! [`ConfigView`]: one part of a bound config, for a component that needs only that part.
//!
//! A config reloads as a whole; a component (the database pool, the HTTP client) usually cares
//! about one sub-struct. [`ConfigHandle::map`] gives it a handle that loads only its part, at the
//! cost of one extra function call per read, and whose subscription reports only changes of
//! that part, with the field paths that changed (relative to the part).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::coord_config::CoordConfig;
use super::event::{ConfigEvent, Subscription};
use super::handle::{ConfigHandle, SnapshotGuard};
use super::snapshot::Snapshot;

/// The projection a view reads through.
type Project<T, U> = dyn Fn(&T) -> &U + Send + Sync;

/// One part `U` of a bound config `T`, from [`ConfigHandle::map`]. Cheap to clone; reads are as
/// lock-free as [`ConfigHandle::load`].
///
/// ```no_run
/// # use coordination::{CoordConfig, ConfigHandle};
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, CoordConfig)]
/// # #[coord(prefix = "/apps/chat/config")]
/// # struct ChatConfig { database: Database }
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// # struct Database { host: String, pool: u32 }
/// # async fn run(cfg: ConfigHandle<ChatConfig>) {
/// let db = cfg.map(|c| &c.database);
/// println!("pool {}", db.load().pool);
/// let mut changes = db.subscribe();
/// while let Some(change) = changes.next().await {
///     println!("database changed at {}: {:?}", change.revision(), change.paths());
/// }
/// # }
/// ```
pub struct ConfigView<T: CoordConfig, U: ?Sized> {
    config: ConfigHandle<T>,
    project: Arc<Project<T, U>>,
}

impl<T: CoordConfig, U: ?Sized> Clone for ConfigView<T, U> {
    fn clone(&self) -> Self {
        ConfigView {
            config: self.config.clone(),
            project: Arc::clone(&self.project),
        }
    }
}

impl<T: CoordConfig, U: ?Sized> fmt::Debug for ConfigView<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigView")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: CoordConfig> ConfigHandle<T> {
    /// A view of one part of the config: `cfg.map(|c| &c.database)`. The view follows every
    /// reload of the whole; [`ConfigView::subscribe`] reports only the reloads that change
    /// its part.
    pub fn map<U: ?Sized>(
        &self,
        project: impl Fn(&T) -> &U + Send + Sync + 'static,
    ) -> ConfigView<T, U> {
        ConfigView {
            config: self.clone(),
            project: Arc::new(project),
        }
    }
}

impl<T: CoordConfig, U: ?Sized> ConfigView<T, U> {
    /// The part, as of the current snapshot: a lock-free read plus one call of the projection.
    /// Don't hold the guard across an `.await` (see [`ConfigHandle::load`]).
    #[inline]
    pub fn load(&self) -> ViewGuard<'_, T, U> {
        ViewGuard {
            snapshot: self.config.load(),
            project: &*self.project,
        }
    }

    /// A narrower view: `db.map(|d| &d.pool)`.
    pub fn map<V: ?Sized>(
        &self,
        project: impl Fn(&U) -> &V + Send + Sync + 'static,
    ) -> ConfigView<T, V>
    where
        U: 'static,
    {
        let outer = Arc::clone(&self.project);
        ConfigView {
            config: self.config.clone(),
            project: Arc::new(move |t: &T| project(outer(t))),
        }
    }

    /// The whole config this view reads from.
    pub fn config(&self) -> &ConfigHandle<T> {
        &self.config
    }
}

impl<T: CoordConfig, U: ?Sized + Serialize> ConfigView<T, U> {
    /// The reloads that change this part, from now on, each with the field paths that changed
    /// (relative to the part; `""` when the part itself is a scalar or was replaced whole).
    /// Reloads that leave the part as it was are not reported.
    pub fn subscribe(&self) -> ViewSubscription<T, U> {
        let seen = to_value(&*self.load());
        ViewSubscription {
            events: self.config.subscribe(),
            view: self.clone(),
            seen,
        }
    }
}

/// A read of a [`ConfigView`]: derefs to the part. Holds the snapshot it was read from.
pub struct ViewGuard<'a, T, U: ?Sized> {
    snapshot: SnapshotGuard<T>,
    project: &'a Project<T, U>,
}

impl<T, U: ?Sized> ViewGuard<'_, T, U> {
    /// The etcd revision of the snapshot the part was read from.
    pub fn revision(&self) -> i64 {
        self.snapshot.revision()
    }

    /// The whole snapshot the part was read from.
    pub fn snapshot(&self) -> &Snapshot<T> {
        &self.snapshot
    }
}

impl<T, U: ?Sized> Deref for ViewGuard<'_, T, U> {
    type Target = U;

    #[inline]
    fn deref(&self) -> &U {
        (self.project)(&self.snapshot)
    }
}

impl<T, U: ?Sized + fmt::Debug> fmt::Debug for ViewGuard<'_, T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A change of a [`ConfigView`]'s part, from [`ViewSubscription::next`].
pub struct ViewChange<T, U: ?Sized> {
    snapshot: Arc<Snapshot<T>>,
    project: Arc<Project<T, U>>,
    paths: Vec<String>,
}

impl<T, U: ?Sized> ViewChange<T, U> {
    /// The part after the change.
    pub fn value(&self) -> &U {
        (self.project)(&self.snapshot)
    }

    /// The field paths inside the part that changed, dotted (`pool`, `replicas.0.host`), in
    /// path order; `[""]` when the part is a scalar.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The etcd revision of the snapshot that changed the part.
    pub fn revision(&self) -> i64 {
        self.snapshot.revision()
    }

    /// The whole snapshot that changed the part.
    pub fn snapshot(&self) -> &Arc<Snapshot<T>> {
        &self.snapshot
    }
}

impl<T, U: ?Sized> fmt::Debug for ViewChange<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewChange")
            .field("revision", &self.snapshot.revision())
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// The changes of one part of a config, from [`ConfigView::subscribe`].
pub struct ViewSubscription<T: CoordConfig, U: ?Sized> {
    events: Subscription<T>,
    view: ConfigView<T, U>,
    /// The part as last reported (or as subscribed), as JSON.
    seen: Value,
}

impl<T: CoordConfig, U: ?Sized> fmt::Debug for ViewSubscription<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewSubscription").finish_non_exhaustive()
    }
}

impl<T: CoordConfig, U: ?Sized + Serialize> ViewSubscription<T, U> {
    /// The next change of the part. `None` once the config's background task has stopped.
    /// When this subscriber falls behind, the changes it missed are folded into one (the
    /// current part against the last one reported), so none is lost.
    ///
    /// # Cancel safety
    /// Cancel-safe: a change not yet returned stays queued.
    pub async fn next(&mut self) -> Option<ViewChange<T, U>> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ViewChange<T, U>>> {
        loop {
            let snapshot = match std::task::ready!(self.events.poll_event(cx)) {
                None => return std::task::Poll::Ready(None),
                Some(ConfigEvent::Applied(snapshot)) => snapshot,
                Some(ConfigEvent::Lagged { .. }) => self.view.config.load_full(),
                Some(_) => continue,
            };
            let now = to_value((self.view.project)(&snapshot));
            if now == self.seen {
                continue;
            }
            let paths = crate::history::changed_paths(&self.seen, &now);
            self.seen = now;
            return std::task::Poll::Ready(Some(ViewChange {
                snapshot,
                project: Arc::clone(&self.view.project),
                paths,
            }));
        }
    }
}

#[cfg(feature = "stream")]
impl<T: CoordConfig, U: ?Sized + Serialize> futures_core::Stream for ViewSubscription<T, U> {
    type Item = ViewChange<T, U>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ViewChange<T, U>>> {
        self.get_mut().poll_change(cx)
    }
}

/// The part as JSON (`null` if it cannot be serialized, which a `CoordConfig` part can).
fn to_value<U: ?Sized + Serialize>(part: &U) -> Value {
    serde_json::to_value(part).unwrap_or(Value::Null)
}
