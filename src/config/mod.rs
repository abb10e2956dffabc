//! Typed configuration bound to an etcd prefix (layers, merge, checks, reload task, handle).

mod cache;
mod check;
mod chunks;
mod coord_config;
mod event;
mod feed;
mod fixed;
mod handle;
mod layers;
mod observe;
mod options;
mod plain;
pub(crate) mod rebuild;
mod reload;
mod snapshot;
mod status;
mod supervise;
mod tree;
mod unknown;
mod value;
mod view;
mod yaml;

pub use crate::etcd::follow::ResyncReason;
pub use coord_config::CoordConfig;
pub use event::{ConfigEvent, Rejection, ReloadCause, Subscription};
pub(crate) use feed::{RawBody, RawOp, RawRevision};
pub use handle::{ConfigHandle, LocalCache, SnapshotGuard};
pub(crate) use options::Setting;
pub use options::{ConfigOptions, UnknownKeys, DEFAULT_MAX_DEPTH, DEFAULT_MAX_VALUE_BYTES};
pub use rebuild::{ChangedPaths, ConfigMap, Rebuild};
pub(crate) use reload::{BoundRead, Reloader};
pub use snapshot::Snapshot;
pub use status::{ConfigStatus, WatchState};
pub use unknown::UnknownKey;
pub use view::{ConfigView, ViewChange, ViewGuard, ViewSubscription};
pub(crate) use {
    check::pointer_to_dotted, layers::EtcdLayer, layers::Overlay, tree::merge, value::StringFields,
};
