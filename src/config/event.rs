//! What subscribers receive: applied snapshots and rejected changes, in revision order.

use std::path::PathBuf;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use metrics::Counter;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::Stream as _;

use super::snapshot::Snapshot;
use super::status::ConfigStatus;
use super::unknown::UnknownKey;
use crate::error::Error;
use crate::etcd::follow::ResyncReason;

/// What triggered a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadCause {
    /// The first read, at bind.
    Initial,
    /// One etcd revision that changed keys under the prefix (all of a transaction's keys arrive
    /// together).
    Etcd {
        /// The revision of the change.
        revision: i64,
        /// The full etcd keys put or deleted at that revision, in the order etcd reported them.
        keys: Vec<String>,
    },
    /// The local file was written, replaced or removed.
    File {
        /// The file's path, as configured.
        path: PathBuf,
    },
    /// A new value pushed into a [fixed](crate::ConfigHandle::fixed) handle with
    /// [`ConfigHandle::set_fixed`](crate::ConfigHandle::set_fixed).
    Fixed,
    /// The prefix was read again at `revision` instead of followed by events, and applied as
    /// one change; `reason` says why.
    Resync {
        /// The revision of the fresh read.
        revision: i64,
        /// The keys whose value differs from what the handle had (put, changed or deleted).
        keys: Vec<String>,
        /// Why the prefix was read again.
        reason: ResyncReason,
    },
    /// A rollout's staged values were laid over the etcd layer (this instance joined the
    /// cohort, or the rollout moved to a later step) or removed (the rollout completed or was
    /// aborted). See [`fleet`](crate::fleet).
    Rollout {
        /// The rollout id.
        rollout: String,
        /// The step the instance serves the staged values at; `None` when they were removed.
        step: Option<u32>,
    },
}

/// A change that failed to parse or validate and was not applied.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// What was rejected.
    pub cause: ReloadCause,
    /// Why: names the field path, layer, key and revision where known.
    pub error: Error,
    /// The revision of the snapshot that keeps serving.
    pub serving_revision: i64,
}

/// An event delivered to a [`Subscription`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigEvent<T> {
    /// A new snapshot was validated and swapped in.
    Applied(Arc<Snapshot<T>>),
    /// A change was rejected; the previous snapshot keeps serving.
    Rejected(Arc<Rejection>),
    /// The handle's watch changed state (live, reconnecting, stale); see
    /// [`ConfigHandle::status`](crate::ConfigHandle::status).
    Status(Arc<ConfigStatus>),
    /// The snapshot just applied holds keys that name no field of the type, and they differ
    /// from those of the snapshot before it (see
    /// [`ConfigOptions::with_unknown_keys`](crate::ConfigOptions::with_unknown_keys)); sent right after
    /// the [`Applied`](ConfigEvent::Applied) event it belongs to.
    UnknownKeys(Arc<[UnknownKey]>),
    /// This subscriber fell behind and `missed` events were dropped (see
    /// [`ConfigOptions::with_event_capacity`](crate::ConfigOptions::with_event_capacity)). The current
    /// snapshot is always available from `load()`.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

impl<T> Clone for ConfigEvent<T> {
    fn clone(&self) -> Self {
        match self {
            ConfigEvent::Applied(s) => ConfigEvent::Applied(Arc::clone(s)),
            ConfigEvent::Rejected(r) => ConfigEvent::Rejected(Arc::clone(r)),
            ConfigEvent::Status(s) => ConfigEvent::Status(Arc::clone(s)),
            ConfigEvent::UnknownKeys(k) => ConfigEvent::UnknownKeys(Arc::clone(k)),
            ConfigEvent::Lagged { missed } => ConfigEvent::Lagged { missed: *missed },
        }
    }
}

/// A stream of [`ConfigEvent`]s from one [`ConfigHandle`](crate::ConfigHandle) handle, in the order the
/// changes were processed (etcd revision order; file changes in between where they happened).
pub struct Subscription<T> {
    events: BroadcastStream<ConfigEvent<T>>,
    /// `coordination_config_subscriber_lagged_total` of the handle.
    lagged: Counter,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Subscription<T> {
    /// A subscription that counts each [`ConfigEvent::Lagged`] it delivers on `lagged`.
    pub(crate) fn new(rx: broadcast::Receiver<ConfigEvent<T>>, lagged: Counter) -> Self {
        Subscription {
            events: BroadcastStream::new(rx),
            lagged,
        }
    }

    /// Waits for the next event. `None` once the handle's background task has stopped and every
    /// event was received.
    ///
    /// # Cancel safety
    /// Cancel-safe: an event not yet returned stays queued for the next call.
    pub async fn next(&mut self) -> Option<ConfigEvent<T>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<ConfigEvent<T>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_event(&mut cx) {
            Poll::Ready(event) => event,
            Poll::Pending => None,
        }
    }

    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ConfigEvent<T>>> {
        let lagged = &self.lagged;
        Pin::new(&mut self.events)
            .poll_next(cx)
            .map(|event| match event? {
                Ok(event) => Some(event),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    lagged.increment(1);
                    Some(ConfigEvent::Lagged { missed })
                }
            })
    }
}

#[cfg(feature = "stream")]
impl<T: Send + Sync + 'static> futures_core::Stream for Subscription<T> {
    type Item = ConfigEvent<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ConfigEvent<T>>> {
        self.get_mut().poll_event(cx)
    }
}
