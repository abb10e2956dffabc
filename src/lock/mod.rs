//! Distributed locks with fencing tokens, interoperable with `etcdctl lock` and Go's
//! `concurrency.Mutex`; leader election interoperable with `etcdctl elect` and Go's
//! `concurrency.Election`.
//!
//! # Concepts
//!
//! | concept | type | made by | file |
//! |---|---|---|---|
//! | a lease kept alive in the background; locks and campaigns live on one | [`Session`], [`SessionOptions`] | [`Coordinator::session`](crate::Coordinator::session), [`Session::open`] | `session.rs` |
//! | why a session, lock or leadership can no longer be relied on | [`LostReason`] | [`Session::lost`], [`LockGuard::lost`], [`Leadership::lost`] | `session.rs` |
//! | how to acquire a lock (`.await` it) | [`LockBuilder`] | [`Coordinator::lock`](crate::Coordinator::lock), [`Session::lock`] | `mutex.rs` |
//! | a held lock | [`LockGuard`] | awaiting a [`LockBuilder`], [`LockBuilder::try_acquire`] | `mutex.rs` |
//! | a lock key and its fencing token (the key's create_revision) | [`Fence`] | [`LockGuard::fence`], [`Leadership::fence`] | `fence.rs` |
//! | a transaction that commits only while a fence holds | [`FencedTxn`], [`FencedTxnResponse`] | [`Coordinator::kv_txn_fenced`](crate::Coordinator::kv_txn_fenced) | `fence.rs` |
//! | a lock's holder and waiters; forced release | [`LockStatus`], [`LockEntry`] | [`Coordinator::lock_status`](crate::Coordinator::lock_status), [`Coordinator::force_unlock`](crate::Coordinator::force_unlock) | `admin.rs` |
//! | an election | [`Election`] | [`Coordinator::election`](crate::Coordinator::election), [`Session::election`] | `election.rs` |
//! | a campaign (`.await` it) and the leadership it wins | [`Campaign`], [`Leadership`] | [`Election::campaign`] | `election.rs` |
//! | the leader, once or as it changes | [`LeaderInfo`], [`Observer`] | [`Election::leader`], [`Election::observe`] | `election.rs` |
//!
//! Two private files carry the protocol: `queue.rs` (the key layout and order of Go's
//! `concurrency.Mutex`, shared by locks and elections) and `monitor.rs` (the watch of a held
//! key behind `lost()`). The lease itself is the crate's etcd lease (`src/etcd/lease.rs`):
//! renewed every TTL/3, its keepalive stream re-opened after errors.
//!
//! Times are [`Duration`](std::time::Duration)s; lease TTLs are whole seconds on etcd's side
//! (a requested `lease_ttl` is rounded up; [`Session::granted_ttl`] is what etcd granted,
//! [`Session::remaining_ttl`] what is left of it now). When none is given the lease TTL is
//! [`DEFAULT_TTL`], 10 s, as `etcdctl lock` uses.
//!
//! ```no_run
//! # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
//! use etcd_client::TxnOp;
//!
//! let guard = coord.lock("jobs/rebalance").await?;
//! coord
//!     .kv_txn_fenced(&guard)
//!     .and_then([TxnOp::put("/jobs/rebalance/state", "running", None)])
//!     .commit()
//!     .await?; // ErrorKind::Conflict once the lock is lost
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
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
//! # Safety
//!
//! Holding a guard is a claim, not a proof: a paused process can outlive its lease. The safety
//! model (what the lease guarantees, what fencing adds) is in the
//! [lock safety guide](crate::docs::lock_safety).

mod admin;
mod election;
mod fence;
mod monitor;
mod mutex;
mod queue;
#[cfg(feature = "console")]
pub(crate) use queue::prefix_for;
mod session;

pub use admin::{LockEntry, LockStatus};
pub use election::{Campaign, Election, LeaderInfo, Leadership, Observer};
pub use fence::{Fence, FencedTxn, FencedTxnResponse};
pub use mutex::{LockBuilder, LockGuard};
pub use session::{LostReason, Session, SessionOptions, DEFAULT_TTL};
