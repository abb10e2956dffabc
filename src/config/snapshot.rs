//! One applied configuration: the typed value, its etcd revision and where each value came from.

use std::ops::Deref;
use std::time::SystemTime;

use super::event::ReloadCause;
use super::unknown::UnknownKey;
use crate::provenance::{Source, Sources};

/// An immutable, validated configuration as served by [`ConfigHandle::load`](crate::ConfigHandle::load).
///
/// Derefs to `T`, so `cfg.load().port` reads a field. A snapshot never changes; a reload makes a
/// new one and swaps it in atomically, so all fields read through one snapshot are consistent
/// with each other (a multi-key etcd transaction is never seen half applied).
#[derive(Debug)]
pub struct Snapshot<T> {
    value: T,
    revision: i64,
    generation: u64,
    sources: Sources,
    cause: ReloadCause,
    applied_at: SystemTime,
    unknown_keys: Vec<UnknownKey>,
    approx_bytes: usize,
}

impl<T> Snapshot<T> {
    pub(crate) fn new(
        value: T,
        revision: i64,
        generation: u64,
        sources: Sources,
        cause: ReloadCause,
    ) -> Self {
        Snapshot {
            value,
            revision,
            generation,
            sources,
            cause,
            applied_at: SystemTime::now(),
            unknown_keys: Vec::new(),
            approx_bytes: 0,
        }
    }

    /// Sets the estimate of [`approx_bytes`](Self::approx_bytes).
    pub(crate) fn with_approx_bytes(mut self, bytes: usize) -> Self {
        self.approx_bytes = bytes;
        self
    }

    /// An estimate of the memory this snapshot would hold if it shared nothing with other
    /// snapshots, in bytes: the etcd keys and raw values it was built from plus 64 bytes per
    /// provenance entry. Bounds the in-memory ring of recent snapshots
    /// ([`HistoryOptions::with_recent_snapshot_bytes`](crate::history::HistoryOptions::with_recent_snapshot_bytes)).
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    pub(crate) fn with_unknown_keys(mut self, unknown: Vec<UnknownKey>) -> Self {
        self.unknown_keys = unknown;
        self
    }

    /// The typed value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The etcd revision whose view of the prefix this snapshot holds: the prefix is exactly as
    /// etcd had it at this revision. A snapshot made by a file change keeps the revision of the
    /// etcd layer it was merged with.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Counts snapshots applied by this handle, from 1 for the one made at bind; it increases by
    /// one per applied snapshot (etcd or file), never for a rejected change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Provenance of every value: layer, key (or file, or variable) and etcd `mod_revision`.
    ///
    /// Never blocks itself, but right after a bind of a large prefix the first question asked
    /// of the returned [`Sources`] may wait while its map is worked out (about 10 ms at 10,000
    /// keys on 2 cores; see [`Sources`]). [`load`](crate::ConfigHandle::load) never waits for it.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Where the value at the dotted `path` came from (`database.host`);
    /// [`Source::DEFAULT`] for values from the type's serde defaults. May wait as
    /// [`sources`](Self::sources) says.
    pub fn source(&self, path: &str) -> &Source {
        self.sources.get(path)
    }

    /// What made this snapshot: the bind, an etcd revision (with the keys it changed), a file
    /// change or a resync after compaction.
    pub fn cause(&self) -> &ReloadCause {
        &self.cause
    }

    /// Keys in the layers that name no field of the type (typos, leftovers), each with its
    /// layer, key and revision, in path order; empty when there are none or when
    /// [`ConfigOptions::with_unknown_keys`](crate::ConfigOptions::with_unknown_keys) is `Ignore`. serde
    /// ignored them: they had no effect on the value.
    pub fn unknown_keys(&self) -> &[UnknownKey] {
        &self.unknown_keys
    }

    /// Wall-clock time at which this snapshot was built and swapped in.
    pub fn applied_at(&self) -> SystemTime {
        self.applied_at
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}
