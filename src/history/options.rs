//! [`HistoryOptions`]: the versioned history of one bound handle, given to
//! [`ConfigOptions::with_history`](crate::ConfigOptions::with_history).

use std::time::Duration;

/// Default number of versions kept in etcd per prefix ([`HistoryOptions::with_max_versions`]).
pub const DEFAULT_HISTORY_KEEP: usize = 100;

/// Default number of applied snapshots a handle keeps in memory
/// ([`HistoryOptions::with_recent_snapshots`], [`ConfigHandle::recent`](crate::ConfigHandle::recent)).
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 16;

/// etcd's default `--max-txn-ops`.
pub(crate) const DEFAULT_MAX_TXN_OPS: usize = 128;

/// The smallest `--max-txn-ops` writes are split for: room for the audit intent and three
/// guards (below 8 nothing useful fits).
pub(crate) const MIN_TXN_OPS: usize = 8;

/// Versioned history of one bound handle: whether it records versions, how many (and how old)
/// are kept in etcd, and how many applied snapshots it keeps in memory. Given to
/// [`ConfigOptions::with_history`](crate::ConfigOptions::with_history); the defaults record every
/// version and keep [`DEFAULT_HISTORY_KEEP`] (100) of any age and [`DEFAULT_KEEP_SNAPSHOTS`]
/// (16) snapshots.
///
/// ```
/// use std::time::Duration;
/// use coordination::history::HistoryOptions;
/// use coordination::ConfigOptions;
///
/// let options = ConfigOptions::new().with_history(
///     HistoryOptions::new()
///         .with_max_versions(500)
///         .with_max_age(Duration::from_secs(30 * 24 * 3600))
///         .with_recent_snapshots(4),
/// );
/// # let _ = options;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "options do nothing until they are passed on"]
pub struct HistoryOptions {
    /// Record versions and publish the schema (off: publish and rollback still work).
    pub(crate) record: bool,
    /// Versions kept in etcd (at least 1).
    pub(crate) keep: usize,
    /// Versions older than this are pruned (the newest is always kept).
    pub(crate) max_age: Option<Duration>,
    /// Applied snapshots kept in memory (at least 1).
    pub(crate) snapshots: usize,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            record: true,
            keep: DEFAULT_HISTORY_KEEP,
            max_age: None,
            snapshots: DEFAULT_KEEP_SNAPSHOTS,
        }
    }
}

impl HistoryOptions {
    /// The defaults: record, keep 100 versions of any age and 16 snapshots.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many versions of the prefix to keep in etcd (default [`DEFAULT_HISTORY_KEEP`], 100;
    /// at least 1). Older ones are pruned by whichever instance records a new version. Use the
    /// same setting on every instance bound to the prefix: the smallest one wins.
    pub fn with_max_versions(mut self, versions: usize) -> Self {
        self.keep = versions.max(1);
        self
    }

    /// Also prune versions recorded more than `age` ago (by the recording instance's clock).
    /// The newest version is always kept. Default: no age limit.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// How many applied snapshots the handle keeps in memory for
    /// [`ConfigHandle::recent`](crate::ConfigHandle::recent) (default [`DEFAULT_KEEP_SNAPSHOTS`], 16; at
    /// least 1). Kept whether or not the handle records.
    pub fn with_recent_snapshots(mut self, snapshots: usize) -> Self {
        self.snapshots = snapshots.max(1);
        self
    }

    /// Whether this handle writes history records and publishes the JSON Schema (default
    /// `true`). Off is for clients without write access to `/__coordination/`; publish and
    /// rollback still work.
    pub fn with_recording(mut self, record: bool) -> Self {
        self.record = record;
        self
    }
}
