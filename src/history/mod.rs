//! Versioned history of a config prefix: every revision recorded in etcd under
//! `/__coordination/history/…`, validated publish, diff, and fleet-wide rollback.
//!
//! | concept | entry points |
//! |---|---|
//! | a handle's history part: one record per revision it processes, the last snapshots in memory | [`HistoryOptions`], [`ConfigHandle::history`](crate::ConfigHandle::history), [`ConfigHandle::recent`](crate::ConfigHandle::recent) |
//! | a version: audit metadata (who, when, why, publish or rollback or external) | [`Version`], [`VersionKind`], [`VersionStorage`] |
//! | validated, revision-guarded publish | [`ConfigHandle::update`](crate::ConfigHandle::update), [`ConfigHandle::draft`](crate::ConfigHandle::draft) and [`Draft`], [`ConfigHandle::publish_at`](crate::ConfigHandle::publish_at), [`ConfigHandle::overwrite`](crate::ConfigHandle::overwrite) |
//! | fleet-wide rollback | [`ConfigHandle::rollback_to`](crate::ConfigHandle::rollback_to) |
//! | field-level diffs, secrets masked | [`ConfigHandle::diff`](crate::ConfigHandle::diff), [`FieldChange`] |
//! | secret values kept out of the records, or encrypted with a key | [`HistoryOptions::with_secret_key`], [`SecretKey`] |
//! | the untyped API tools use (`coordctl`) | [`ConfigHistory`] |
//! | a prefix's changes as they happen, as changed fields | [`ConfigHistory::changes`], [`PrefixChanges`], [`PrefixChange`] |
//!
//! Inside: `keys.rs` (where history lives in etcd), `record.rs` (the JSON record, readable with
//! `etcdctl get`), `sealing.rs` (secret values in records) and `key.rs` (their keys), `store.rs` (create-if-absent recording, full records and deltas),
//! `chunks.rs` (big records in chunk keys), `read.rs`, `retention.rs` (pruning), `options.rs`,
//! `recorder.rs` (the task behind a handle's history), `layout.rs` (a struct as keys),
//! `write.rs` (guarded transactions shared by publish and rollback), `publish.rs`, `draft.rs`,
//! `rollback.rs`, `patch.rs`, `diff.rs`, `fields.rs`, `schema.rs`, `admin.rs`, `inspect.rs`,
//! `watch.rs`, `time.rs`.
//!
//! The layout and retention rules are in [the history guide](crate::docs::history).

mod admin;
mod chunks;
mod diff;
mod draft;
mod fields;
mod inspect;
mod key;
mod keys;
mod layout;
mod observe;
mod options;
mod patch;
mod publish;
mod read;
mod record;
mod recorder;
mod retention;
mod rollback;
mod schema;
mod sealing;
mod store;
mod time;
mod watch;
mod write;

pub use admin::ConfigHistory;
pub(crate) use diff::changed_paths;
pub use diff::FieldChange;
pub use draft::Draft;
pub use key::SecretKey;
pub use options::{HistoryOptions, DEFAULT_HISTORY_KEEP, DEFAULT_KEEP_SNAPSHOTS};
pub(crate) use options::{DEFAULT_MAX_TXN_OPS, MIN_TXN_OPS};
pub(crate) use record::Meta;
pub use record::{Version, VersionKind, VersionStorage};
pub(crate) use recorder::Tracker;
pub(crate) use schema::{document as schema_document, secrets_of as schema_secrets, SchemaCheck};
pub use watch::{PrefixChange, PrefixChanges};
