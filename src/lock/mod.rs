//! Distributed locks with fencing tokens, interoperable with `etcdctl lock`; leader election.
//!
//! | concept | file | entry points |
//! |---|---|---|
//! | lease + keepalive | `session.rs` | [`Session::open`], [`Session::lost`], [`Session::valid_until`] |
//! | queue protocol (Go's `concurrency.Mutex` layout) | `queue.rs` | — |
//! | mutex | `mutex.rs` | [`Coordinator::lock`](crate::Coordinator::lock), [`LockGuard`] |
//! | key-deletion watch behind `lost()` | `monitor.rs` | — |
//! | fencing | `fence.rs` | [`Fence`], [`Coordinator::kv_txn_fenced`](crate::Coordinator::kv_txn_fenced) |
//! | administration | `admin.rs` | [`Coordinator::lock_status`](crate::Coordinator::lock_status), [`Coordinator::force_unlock`](crate::Coordinator::force_unlock) |
//! | leader election | `election.rs` | [`Coordinator::election`](crate::Coordinator::election), [`Leadership`], [`Observer`] |
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
