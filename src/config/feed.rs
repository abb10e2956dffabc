//! The raw change feed: every etcd revision of a bound prefix, byte for byte, for consumers
//! inside the crate (versioned history). Public users see typed snapshots instead.

/// One write under the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawOp {
    /// Key and its new value.
    Put(Vec<u8>, Vec<u8>),
    /// Key deleted.
    Delete(Vec<u8>),
}

/// What a revision did to the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawBody {
    /// The writes of one revision (one transaction), in etcd's order.
    Delta(Vec<RawOp>),
    /// The whole prefix as of the revision (after a resync that follows a compaction): every
    /// key and value; keys not listed do not exist.
    Full(Vec<(Vec<u8>, Vec<u8>)>),
}

/// One etcd revision of the bound prefix, as the reload task processed it (whether the typed
/// snapshot was applied or rejected: history records what etcd holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawRevision {
    /// The etcd revision.
    pub(crate) revision: i64,
    /// The writes, or the full state.
    pub(crate) body: RawBody,
}
