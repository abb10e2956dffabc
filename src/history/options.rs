//! [`HistoryOptions`]: the versioned history of one bound handle, given to
//! [`ConfigOptions::with_history`](crate::ConfigOptions::with_history).

use std::time::Duration;

use super::key::{KeyRing, SecretKey};

/// Default number of versions kept in etcd per prefix ([`HistoryOptions::with_max_versions`]).
pub const DEFAULT_HISTORY_KEEP: usize = 100;

/// Default number of applied snapshots a handle keeps in memory
/// ([`HistoryOptions::with_recent_snapshots`], [`ConfigHandle::recent`](crate::ConfigHandle::recent)).
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 16;

/// Default for [`HistoryOptions::with_recent_snapshot_bytes`]: 64 MiB (by
/// [`Snapshot::approx_bytes`](crate::Snapshot::approx_bytes)).
pub const DEFAULT_KEEP_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// Default lease TTL of a handle's candidacy for its prefix's recorder seat
/// ([`HistoryOptions::with_recorder_ttl`]): 10 s, the election default.
pub const DEFAULT_RECORDER_TTL: Duration = Duration::from_secs(10);

/// etcd's default `--max-txn-ops`.
pub(crate) const DEFAULT_MAX_TXN_OPS: usize = 128;

/// The smallest `--max-txn-ops` writes are split for: room for the audit intent and three
/// guards (below 8 nothing useful fits).
pub(crate) const MIN_TXN_OPS: usize = 8;

/// Versioned history of one bound handle: whether it records versions, how many (and how old)
/// are kept in etcd, how many applied snapshots it keeps in memory, and the keys secret values
/// are encrypted with. Given to
/// [`ConfigOptions::with_history`](crate::ConfigOptions::with_history); the defaults record every
/// version and keep [`DEFAULT_HISTORY_KEEP`] (100) of any age and [`DEFAULT_KEEP_SNAPSHOTS`]
/// (16) snapshots.
///
/// **Secrets.** A history record never holds a secret value in plaintext. With a key
/// ([`with_secret_key`](Self::with_secret_key)) the values of keys holding a secret field are
/// encrypted (XChaCha20-Poly1305) and a rollback restores them exactly; without one they are
/// left out of the records, and a rollback keeps each secret's current value. See the history
/// guide's "Secrets at rest".
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
    /// The most bytes (by [`Snapshot::approx_bytes`](crate::Snapshot::approx_bytes)) the kept
    /// snapshots may add up to; the newest is always kept.
    pub(crate) snapshot_bytes: usize,
    /// The keys secret values in records are encrypted with and read with.
    pub(crate) keys: KeyRing,
    /// The lease TTL of the recorder election's candidacy.
    pub(crate) recorder_ttl: Duration,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            record: true,
            keep: DEFAULT_HISTORY_KEEP,
            max_age: None,
            snapshots: DEFAULT_KEEP_SNAPSHOTS,
            snapshot_bytes: DEFAULT_KEEP_SNAPSHOT_BYTES,
            keys: KeyRing::default(),
            recorder_ttl: DEFAULT_RECORDER_TTL,
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

    /// The most bytes the snapshots kept in memory for
    /// [`ConfigHandle::recent`](crate::ConfigHandle::recent) may add up to, by each snapshot's
    /// [`approx_bytes`](crate::Snapshot::approx_bytes) (default
    /// [`DEFAULT_KEEP_SNAPSHOT_BYTES`], 64 MiB). The oldest are dropped first; the newest is
    /// always kept, whatever its size. The estimate counts every snapshot as if it shared
    /// nothing, so the memory they really hold (they share unchanged parts) is lower.
    pub fn with_recent_snapshot_bytes(mut self, bytes: usize) -> Self {
        self.snapshot_bytes = bytes;
        self
    }

    /// Whether this handle writes history records and publishes the JSON Schema (default
    /// `true`). Off is for clients without write access to `/__coordination/`; publish and
    /// rollback still work.
    pub fn with_recording(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// The lease TTL of this handle's candidacy for the prefix's **recorder seat** (default
    /// [`DEFAULT_RECORDER_TTL`], 10 s; whole seconds, rounded up; etcd raises tiny TTLs to its
    /// minimum, about 2 s). One handle in the fleet records the prefix's history: the winner of
    /// an election under `/__coordination/history/<prefix>/recorder/`; the others stand by.
    /// When the recording process dies, a standby takes over within this TTL and records every
    /// revision made meanwhile (see the history guide, "Who records"). A shorter TTL hands over
    /// sooner and costs one lease keepalive every TTL/3 per handle.
    pub fn with_recorder_ttl(mut self, ttl: Duration) -> Self {
        self.recorder_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Encrypts the secret values in the history records this handle writes with `key`
    /// (XChaCha20-Poly1305; the key's [id](SecretKey::id) is recorded next to each value), and
    /// decrypts them for [`rollback_to`](crate::ConfigHandle::rollback_to), which then restores
    /// them byte for byte. A secret value is the value of a key whose field is secret
    /// (`#[coord(secret)]`, `#[coord(secrets = "…")]`) or of a key holding a document with a
    /// secret field inside; the whole value is encrypted, and for a document the record also
    /// keeps the document with its secret leaves masked, for diffs.
    ///
    /// **Without a key** (the default) secret values are left out of the records: a rollback
    /// then keeps each secret key's current value (a secret key the version did not have is
    /// still deleted, and one that is absent now stays absent), and a diff reports a secret as
    /// not recorded ([`FieldChange::unknown`](crate::history::FieldChange::unknown)) rather than
    /// as changed.
    ///
    /// Give every instance of the prefix, and `coordctl` (`--history-key-file`,
    /// `COORD_HISTORY_KEY`), the same key. To rotate, make the new key the secret key and keep
    /// the old one with [`with_read_key`](Self::with_read_key) as long as records written with
    /// it are kept. A rollback to a version encrypted with a key that was not given fails with
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the key's id,
    /// and writes nothing.
    ///
    /// ```no_run
    /// use coordination::history::{HistoryOptions, SecretKey};
    /// use coordination::ConfigOptions;
    ///
    /// // openssl rand -hex 32 > /etc/chat/history.key
    /// let history = HistoryOptions::new()
    ///     .with_secret_key(SecretKey::from_file("/etc/chat/history.key")?)
    ///     .with_read_key(SecretKey::from_env("CHAT_OLD_HISTORY_KEY")?);
    /// let options = ConfigOptions::new().with_history(history);
    /// # let _ = options;
    /// # Ok::<(), coordination::Error>(())
    /// ```
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.keys.set_write(key);
        self
    }

    /// Also decrypts secret values encrypted with `key` (an older key after a rotation); new
    /// records are never encrypted with it. May be given several times.
    pub fn with_read_key(mut self, key: SecretKey) -> Self {
        self.keys.add_read(key);
        self
    }
}
