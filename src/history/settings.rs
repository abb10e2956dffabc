//! Per-handle history settings, set through [`ConfigOptions`](crate::ConfigOptions).

use std::time::Duration;

/// Default number of versions kept in etcd per prefix.
pub const DEFAULT_HISTORY_KEEP: usize = 100;

/// Default number of applied snapshots a handle keeps in memory ([`Config::recent`](crate::Config::recent)).
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 16;

/// etcd's default `--max-txn-ops`.
pub(crate) const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Retention, the in-memory ring and transaction limits of one bound handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HistorySettings {
    /// Record versions and publish the schema (off: publish and rollback still work).
    pub(crate) enabled: bool,
    /// Versions kept in etcd (at least 1).
    pub(crate) keep: usize,
    /// Versions older than this are pruned (the newest is always kept).
    pub(crate) max_age: Option<Duration>,
    /// Applied snapshots kept in memory (at least 1).
    pub(crate) snapshots: usize,
    /// The server's `--max-txn-ops`.
    pub(crate) max_txn_ops: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            enabled: true,
            keep: DEFAULT_HISTORY_KEEP,
            max_age: None,
            snapshots: DEFAULT_KEEP_SNAPSHOTS,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

impl HistorySettings {
    pub(crate) fn keep(mut self, versions: usize) -> Self {
        self.keep = versions.max(1);
        self
    }

    pub(crate) fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    pub(crate) fn snapshots(mut self, snapshots: usize) -> Self {
        self.snapshots = snapshots.max(1);
        self
    }

    pub(crate) fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    pub(crate) fn txn_ops(mut self, ops: usize) -> Self {
        // Room for the audit intent and three guards: below 8 nothing useful fits.
        self.max_txn_ops = ops.max(8);
        self
    }
}
