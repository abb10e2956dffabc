//! Versioned history of a config prefix: every revision recorded in etcd under
//! `/__coordination/history/…`, validated publish, diff, and fleet-wide rollback.
//!
//! - [`keys`]: where history lives in etcd (records, chunks, the audit intent, the schema).
//! - [`record`]: the JSON record format (`etcdctl get` readable), its encoding, and the public
//!   [`Version`].
//! - [`store`]: create-if-absent recording, full records and deltas for big prefixes.
//! - [`chunks`]: the content of big records, in chunk keys.
//! - [`read`]: reading versions back (one record, the listing, a version's key set).
//! - [`retention`]: pruning to the configured number and age of versions.
//! - [`options`]: [`HistoryOptions`], a handle's history settings.
//! - [`recorder`]: the handle's history part ([`Tracker`]): the task that records every
//!   revision the handle processes, and the in-memory snapshot ring.
//! - [`layout`]: a serialized struct as keys under the prefix (publish's key layout).
//! - [`write`]: the guarded transaction(s) shared by publish and rollback.
//! - [`publish`], [`draft`], [`rollback`]: the typed [`Config`](crate::Config) API.
//! - [`patch`]: the fields that changed, as keys written over the key set as it is.
//! - [`diff`]: documents from key sets, field-level diffs, secret masking.
//! - [`fields`]: which field paths a published schema knows (for tools' writes).
//! - [`schema`]: publishing the bound type's JSON Schema next to the config.
//! - [`admin`]: [`ConfigHistory`], the untyped API that tools (and `coordctl`) use.
//! - [`watch`]: [`PrefixChanges`], a field-level change stream for tools.
//!
//! The layout and retention rules are documented in `docs/history.md`.

mod admin;
mod chunks;
mod diff;
mod draft;
mod fields;
mod inspect;
mod keys;
mod layout;
mod options;
mod patch;
mod publish;
mod read;
mod record;
mod recorder;
mod retention;
mod rollback;
mod schema;
mod store;
mod time;
mod watch;
mod write;

pub use admin::ConfigHistory;
pub(crate) use diff::changed_paths;
pub use diff::FieldChange;
pub use draft::Draft;
pub use options::{HistoryOptions, DEFAULT_HISTORY_KEEP, DEFAULT_KEEP_SNAPSHOTS};
pub(crate) use options::{DEFAULT_MAX_TXN_OPS, MIN_TXN_OPS};
pub use record::{Version, VersionSource};
pub(crate) use recorder::Tracker;
pub use watch::{PrefixChange, PrefixChanges};
