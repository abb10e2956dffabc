//! Per-binding options: overrides of the derive's attributes and tuning knobs.

use std::path::PathBuf;
use std::time::Duration;

use crate::history::{HistoryOptions, DEFAULT_MAX_TXN_OPS, MIN_TXN_OPS};

/// Options for [`Coordinator::config_with`](crate::Coordinator::config_with). Every setting
/// defaults to what the type's `#[coord(...)]` attributes say.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "options do nothing until they are passed on"]
pub struct ConfigOptions {
    pub(crate) prefix: Option<String>,
    pub(crate) file: Setting<PathBuf>,
    pub(crate) env_prefix: Setting<String>,
    pub(crate) env_vars: Option<Vec<(String, String)>>,
    pub(crate) max_value_bytes: usize,
    pub(crate) max_depth: usize,
    pub(crate) unknown_keys: UnknownKeys,
    pub(crate) event_capacity: usize,
    pub(crate) file_debounce: Duration,
    pub(crate) page_size: i64,
    pub(crate) cache_file: Option<PathBuf>,
    pub(crate) require_etcd: bool,
    pub(crate) probe_after: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) history: HistoryOptions,
    pub(crate) max_txn_ops: usize,
    pub(crate) shared: bool,
    pub(crate) full_reload: bool,
    /// `None`: receipts on exactly when history recording is (the default).
    pub(crate) receipts: Option<crate::fleet::ReceiptOptions>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Setting<T> {
    FromType,
    Set(T),
    Off,
}

/// Default for [`ConfigOptions::with_max_value_bytes`]: 256 KiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 256 * 1024;

/// Default for [`ConfigOptions::with_max_depth`]: a field path at most 64 levels deep.
pub const DEFAULT_MAX_DEPTH: usize = crate::config::value::DEFAULT_MAX_DEPTH;

/// What a bound handle does with a key, file entry or variable that names no field of the type
/// ([`ConfigOptions::with_unknown_keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UnknownKeys {
    /// Apply the snapshot, and report each unknown key on it
    /// ([`Snapshot::unknown_keys`](crate::Snapshot::unknown_keys)), in a `warn` log and as a
    /// [`ConfigEvent::UnknownKeys`](crate::ConfigEvent::UnknownKeys) event (the default).
    #[default]
    Warn,
    /// Reject a candidate that holds an unknown key, like any other bad value.
    Reject,
    /// Say nothing (serde ignores fields the type does not have).
    Ignore,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        ConfigOptions {
            prefix: None,
            file: Setting::FromType,
            env_prefix: Setting::FromType,
            env_vars: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            unknown_keys: UnknownKeys::Warn,
            event_capacity: 1024,
            file_debounce: Duration::from_millis(50),
            page_size: 1000,
            cache_file: None,
            require_etcd: false,
            probe_after: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            history: HistoryOptions::default(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            shared: true,
            full_reload: false,
            receipts: None,
        }
    }
}

impl ConfigOptions {
    /// The defaults: the type's attributes, 256 KiB per value, 1024 buffered events, 50 ms file
    /// debounce, 1000 keys per page, no last-known-good cache, bind without etcd allowed, a
    /// watch progress probe after 5 s of silence answered within 5 s, reconnect backoff from
    /// 100 ms up to 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds to `prefix` (no trailing `/`) instead of the type's `#[coord(prefix)]`. The
    /// coordinator's namespace is still put in front.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Reads the file layer from `path` instead of the type's `#[coord(file)]`.
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Setting::Set(path.into());
        self
    }

    /// No file layer, whatever the type says.
    pub fn without_file(mut self) -> Self {
        self.file = Setting::Off;
        self
    }

    /// Reads variables starting with `prefix` instead of the type's `#[coord(env_prefix)]`.
    pub fn with_env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = Setting::Set(prefix.into());
        self
    }

    /// No environment layer, whatever the type says.
    pub fn without_env(mut self) -> Self {
        self.env_prefix = Setting::Off;
        self
    }

    /// Takes the environment layer from these `(name, value)` pairs instead of the process
    /// environment (for tests and for embedding). The env prefix still filters them.
    pub fn with_env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env_vars = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The largest etcd value accepted for one key, in bytes (default 256 KiB; etcd itself
    /// accepts up to its `--max-request-bytes`, 1.5 MiB by default). A larger value is rejected
    /// like any other bad value.
    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The deepest field path a value may set, in levels: the key's segments below the prefix
    /// (or the variable's `__`-separated parts) plus the nesting of the document it holds
    /// (default 64, at least 1). A deeper key or value is rejected naming its layer, key and
    /// revision, before the YAML parser reads past the limit, so no input can exhaust the stack
    /// or stall a reload.
    pub fn with_max_depth(mut self, levels: usize) -> Self {
        self.max_depth = levels.max(1);
        self
    }

    /// What to do with keys that name no field of the type, in any layer (default
    /// [`UnknownKeys::Warn`]). A type with `#[serde(deny_unknown_fields)]` rejects them itself,
    /// whatever this says.
    pub fn with_unknown_keys(mut self, policy: UnknownKeys) -> Self {
        self.unknown_keys = policy;
        self
    }

    /// How many events a slow subscriber may fall behind before it gets
    /// [`ConfigEvent::Lagged`](crate::ConfigEvent::Lagged) (default 1024).
    pub fn with_event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events.max(1);
        self
    }

    /// How long the file must be quiet after a change before it is re-read (default 50 ms), so
    /// an editor's write-rename-chmod sequence becomes one reload.
    pub fn with_file_debounce(mut self, quiet: Duration) -> Self {
        self.file_debounce = quiet;
        self
    }

    /// Keys per page when reading the prefix (default 1000). Every page is read at the same
    /// pinned revision, so the result is one consistent view however many pages it takes. A
    /// prefix of 5 pages or more is read as two parts at once (etcd serves each request on
    /// one core), split at a key found from etcd's counts at that revision; the value is the
    /// same as one sequence of pages gives.
    pub fn with_page_size(mut self, keys: u32) -> Self {
        self.page_size = i64::from(keys.max(1));
        self
    }

    /// Versioned history: whether this handle records versions, their retention in etcd, and
    /// the snapshots kept in memory (default [`HistoryOptions::new`]). Replaces what earlier
    /// calls (including [`no_history`](Self::without_history)) set.
    pub fn with_history(mut self, history: HistoryOptions) -> Self {
        self.history = history;
        self
    }

    /// Don't write history records or publish the JSON Schema from this handle (for clients
    /// without write access to `/__coordination/`); nor a [receipt](crate::fleet::Receipt),
    /// unless [`with_receipts`](Self::with_receipts) asks for one. Publish and rollback still work. Shorthand
    /// for [`HistoryOptions::with_recording`]`(false)`, keeping the other history settings.
    pub fn without_history(mut self) -> Self {
        self.history = self.history.with_recording(false);
        self
    }

    /// The etcd server's `--max-txn-ops` (default 128, at least 8). Publishes and rollbacks that
    /// change more keys than fit in one transaction are written in several guarded batches.
    pub fn with_max_txn_ops(mut self, ops: usize) -> Self {
        self.max_txn_ops = ops.max(MIN_TXN_OPS);
        self
    }

    /// Keeps a last-known-good cache in `path`: after each applied etcd revision, the etcd layer
    /// and its revision are written there atomically (mode 0600; keys holding
    /// [secret](crate::CoordConfig::SECRETS) fields are left out). When etcd is unreachable at
    /// bind, the cache stands in for the etcd layer. A corrupt file, or one written for another
    /// prefix, is ignored with a warning.
    pub fn with_cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Fails the bind when etcd cannot be reached, instead of starting stale from defaults,
    /// file, cache and environment (the default) and switching to live when etcd answers.
    pub fn with_etcd_required(mut self) -> Self {
        self.require_etcd = true;
        self
    }

    /// Hung-server detection: after `after` without any message on the watch, ask etcd for a
    /// progress notification; if none arrives within `answer`, treat the connection as failed
    /// and reconnect (defaults 5 s and 5 s). Both are raised to at least 100 ms.
    pub fn with_watch_probe(mut self, after: Duration, answer: Duration) -> Self {
        self.probe_after = after.max(Duration::from_millis(100));
        self.probe_timeout = answer.max(Duration::from_millis(100));
        self
    }

    /// The longest delay between reconnect attempts (default 5 s; delays start at 100 ms and
    /// double, with jitter).
    pub fn with_max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay.max(Duration::from_millis(100));
        self
    }

    /// How this instance keeps its [receipt](crate::fleet::Receipt). By default a handle
    /// keeps one with [`ReceiptOptions::new`](crate::fleet::ReceiptOptions::new) (id and labels
    /// from the environment or made up, lease TTL 10 s) when it records history, and none
    /// after [`without_history`](Self::without_history) (which promises no writes under
    /// `/__coordination/`); setting receipts here overrides that either way.
    pub fn with_receipts(mut self, receipts: crate::fleet::ReceiptOptions) -> Self {
        self.receipts = Some(receipts);
        self
    }

    /// The receipt options in effect, `None` for no receipt.
    pub(crate) fn receipts(&self) -> Option<crate::fleet::ReceiptOptions> {
        match &self.receipts {
            Some(r) if r.enabled => Some(r.clone()),
            Some(_) => None,
            None => self.history.record.then(crate::fleet::ReceiptOptions::new),
        }
    }

    /// No receipt for this handle (for clients without write access to `/__coordination/`):
    /// the instance is not listed, not checked by the publish gate and never in a rollout
    /// cohort.
    pub fn without_receipts(mut self) -> Self {
        self.receipts = Some(crate::fleet::ReceiptOptions::disabled());
        self
    }

    /// Binds a handle of its own instead of sharing one. By default, binding the same type to
    /// the same prefix with equal options through one [`Coordinator`](crate::Coordinator)
    /// returns a handle that shares the first one's snapshot, watch stream, merged tree and
    /// history part, as long as that first handle (or a clone) is alive: a hundred components
    /// binding the same config cost one watch and one reload per change. A separate handle
    /// has its own watch, reload task and history part.
    pub fn without_sharing(mut self) -> Self {
        self.shared = false;
        self
    }

    /// Makes every reload merge all layers, check the whole document against the JSON Schema
    /// and deserialize the whole value, as a bind does. By default a reload caused by an etcd
    /// revision updates the merged tree, the provenance and the value only at the keys the
    /// revision changed, and checks only the parts of the schema those keys can affect (see
    /// [`docs::incremental`](crate::docs::incremental)); `#[coord(full_reload)]` on the type
    /// has the same effect for every handle of it.
    pub fn with_full_reload(mut self) -> Self {
        self.full_reload = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_history_keeps_the_other_history_settings_and_history_replaces_them() {
        let kept = HistoryOptions::new()
            .with_max_versions(7)
            .with_recent_snapshots(3);
        let options = ConfigOptions::new()
            .with_history(kept.clone())
            .without_history();
        assert_eq!(options.history, kept.with_recording(false));
        let options = ConfigOptions::new()
            .without_history()
            .with_history(HistoryOptions::new());
        assert_eq!(options.history, HistoryOptions::new());
        assert!(options.history.record);
    }

    #[test]
    fn history_limits_are_at_least_one() {
        let history = HistoryOptions::new()
            .with_max_versions(0)
            .with_recent_snapshots(0);
        assert_eq!((history.keep, history.snapshots), (1, 1));
        assert_eq!(
            ConfigOptions::new().with_max_txn_ops(2).max_txn_ops,
            MIN_TXN_OPS
        );
    }
}
