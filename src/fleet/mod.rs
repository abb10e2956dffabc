//! Fleet operations: what every instance did with every revision (receipts), staged rollouts
//! by label with bake and automatic revert, and a publish gate against the schemas actually
//! running. All of it in etcd, on the crate's own lease, watch, lock and history.
//!
//! | concept | entry points | file |
//! |---|---|---|
//! | an instance's receipt: id, labels, app, schema hash, revision served, status, health, last rejection, rollout step | [`Receipt`], [`ReceiptOptions`], [`ConfigOptions::with_receipts`](crate::ConfigOptions::with_receipts), [`ConfigHandle::report_health`](crate::ConfigHandle::report_health) | `receipt.rs`, `writer.rs` (the task that writes it) |
//! | the live instances, typed | [`Fleet::instances`], [`Instances`], [`Instance`] | `instances.rs` |
//! | wait until every live instance serves a revision | [`Fleet::wait`], [`WaitReport`] | `wait.rs` |
//! | the publish gate | [`Fleet::gate`], [`GateFinding`], [`ConfigHistory::with_gate_forced`](crate::history::ConfigHistory::with_gate_forced) | `gate.rs` |
//! | a rollout's state in etcd | [`RolloutState`], [`RolloutStatus`], [`Phase`], [`Step`], [`Transition`] | `state.rs` |
//! | cohorts: label selector + stable hash of the instance id | [`Selector`] | `cohort.rs` |
//! | start, drive (the controller), pause, resume, promote, abort | [`Fleet::start_rollout`], [`RolloutPlan`], [`Fleet::drive_rollout`], [`DriveOptions`] | `controller.rs` |
//! | the staged values as a layer above etcd, below env | (internal) | `config/layers/overlay.rs` |
//! | where it all lives in etcd | (see the table in `keys.rs` and the README) | `keys.rs` |
//!
//! # Guarantees and limits
//! - A receipt is written under the instance's own lease: it disappears within about the TTL
//!   (10 s by default) after the instance dies or is cut off, so [`Fleet::instances`] lists
//!   live instances only.
//! - Receipt writes are coalesced: one etcd put per processed revision per instance at most
//!   (fewer in bursts), plus lease keepalives (see `writer.rs`).
//! - Instances outside a rollout's cohort never apply its staged values: an instance lays them
//!   over its etcd layer only while its own id is in the cohort the state names.
//! - Auto-revert undoes what the rollout itself did: cohort instances drop the staged values
//!   and serve the fleet's version again. It cannot undo what the application did while it
//!   served them (requests answered, data written), and it cannot revert a release that has
//!   already been published by the last step (use
//!   [`ConfigHistory::rollback_to`](crate::history::ConfigHistory::rollback_to)).

mod cohort;
mod controller;
mod gate;
mod instances;
mod keys;
mod receipt;
mod state;
mod wait;
mod writer;

pub use cohort::Selector;
pub use controller::{
    DriveOptions, RolloutPlan, DEFAULT_APPLY_TIMEOUT, DEFAULT_BAKE, MAX_STAGED_KEYS,
};
pub(crate) use gate::refusal as gate_refusal;
pub use gate::GateFinding;
pub use instances::{Fleet, Instance, Instances, DEFAULT_STALE_AFTER};
pub use receipt::{
    AppInfo, Health, InstanceStatus, Receipt, ReceiptOptions, ReceiptRejection, RolloutReceipt,
    DEFAULT_RECEIPT_COALESCE, DEFAULT_RECEIPT_TTL, INSTANCE_ID_ENV, LABELS_ENV,
};
pub use state::{Phase, RolloutState, RolloutStatus, Step, Transition};
pub use wait::WaitReport;
pub(crate) use writer::start as start_receipts;
pub use writer::InstanceLink;
