//! The etcd layer every feature sits on: knows nothing of config, locks or registries.
//!
//! - [`range`]: paged reads of a key range at one pinned revision, pages bounded by bytes
//!   (the client's decode limit) as well as keys; a large range is read as two parts at once.
//! - [`split`]: where to split a large read, found from etcd's counts at the read's revision.
//! - [`follow`]: [`PrefixFollower`](follow::PrefixFollower), one key range followed through
//!   restarts, partitions, hangs, compaction, oversized catch-ups and snapshot restores; the
//!   config reload, the registry watch and live view, the history change feed, lock monitors
//!   and election observers all read it.
//! - [`lease`]: [`Lease`](lease::Lease), one lease kept alive every TTL/3 with a proven
//!   validity window; lock sessions and registrations both stand on it.
//! - [`backoff`]: exponential backoff with jitter for every re-open.
//!
//! No `watch`, `lease_grant`, `lease_keep_alive`, `lease_revoke` or `lease_time_to_live` call
//! lives outside this module.

pub(crate) mod backoff;
pub(crate) mod follow;
pub(crate) mod lease;
pub(crate) mod range;
pub(crate) mod split;

use etcd_client::{Client, KvClient, WatchClient};

pub(crate) use backoff::Backoff;
pub(crate) use range::{
    is_too_large, prefix_end, read_prefix, read_range, read_range_pages, Page, Pages, Part,
};

/// Sleeps until `at`, or forever for `None`: a `select!` branch for an optional deadline.
pub(crate) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The decode limit used when none is set: 16 MiB. tonic's own default (4 MiB) is exceeded
/// by one watch response after a partition during which a few large values were written.
pub const DEFAULT_MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

/// A client and the largest response it decodes, in bytes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Etcd {
    client: Client,
    max_decode_bytes: usize,
}

impl Etcd {
    pub(crate) fn new(client: Client, max_decode_bytes: usize) -> Self {
        Etcd {
            client,
            max_decode_bytes: max_decode_bytes.max(64 * 1024),
        }
    }

    /// The client, for unary requests (get of one key, put, txn, lease calls).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// A KV client with the decode limit set: for range reads.
    pub(crate) fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(self.max_decode_bytes)
    }

    /// A watch client with the decode limit set.
    pub(crate) fn watch_client(&self) -> WatchClient {
        self.client
            .watch_client()
            .max_decoding_message_size(self.max_decode_bytes)
    }
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("max_decode_bytes", &self.max_decode_bytes)
            .finish_non_exhaustive()
    }
}
