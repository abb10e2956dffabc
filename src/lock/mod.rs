//! Distributed locks with fencing tokens, interoperable with `etcdctl lock`; leader election.
//!
//! | concept | file | entry points |
//! |---|---|---|
//! | lease + keepalive (on the crate's etcd lease, `src/etcd/lease.rs`) | `session.rs` | [`Session::open`], [`Session::lost`], [`Session::valid_until`] |
//! | queue protocol (Go's `concurrency.Mutex` layout) | `queue.rs` | — |
//! | mutex | `mutex.rs` | [`Coordinator::lock`](crate::Coordinator::lock), [`LockGuard`] |
//! | key-deletion watch behind `lost()` | `monitor.rs` | — |
//! | fencing | `fence.rs` | [`Fence`], [`Coordinator::kv_txn_fenced`](crate::Coordinator::kv_txn_fenced) |
//! | administration | `admin.rs` | [`Coordinator::lock_status`](crate::Coordinator::lock_status), [`Coordinator::force_unlock`](crate::Coordinator::force_unlock) |
//! | leader election | `election.rs` | [`Coordinator::election`](crate::Coordinator::election), [`Leadership`], [`Observer`] |
//!
//! # Nested names
//!
//! The queue of lock (or election) `NAME` is made of its direct children `NAME/{lease:x}`:
//! one segment of lowercase hex after `NAME/`. The keys of a nested name such as
//! `NAME/rebalance` (`NAME/rebalance/{lease:x}`) are another lock's: acquiring, waiting,
//! [`Coordinator::lock_status`](crate::Coordinator::lock_status) and
//! [`Coordinator::force_unlock`](crate::Coordinator::force_unlock) of `NAME` never look at
//! them, so `jobs` and `jobs/rebalance` are held independently.
//!
//! Go's `concurrency.Mutex` (also behind `etcdctl lock` and the server's Lock RPC) takes every
//! key under `NAME/` instead: a Go mutex on `jobs` sees the keys of `jobs/rebalance` as its own
//! holders and waiters and waits for them. Exclusion on one name holds either way, but Go
//! clients wait longer than needed. When Go clients share the names, keep them prefix-free
//! (no name followed by `/` starts another name: `jobs/main` and `jobs/rebalance`, not `jobs`
//! and `jobs/rebalance`).
//!
//! The safety model (what the lease guarantees, what fencing adds) is in
//! `docs/lock-safety.md`.

mod admin;
mod election;
mod fence;
mod monitor;
mod mutex;
mod queue;
mod session;

pub use admin::{LockEntry, LockStatus};
pub use election::{Election, LeaderInfo, Leadership, Observer};
pub use fence::{Fence, FencedTxn, FencedTxnResponse};
pub use mutex::{LockBuilder, LockGuard};
pub use session::{LostReason, Session, SessionOptions, DEFAULT_LOCK_TTL};
