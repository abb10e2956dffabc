//! Change control: proposals that are reviewed and approved before they apply, a policy per
//! prefix (approvals, who counts, change windows), break-glass writes, promotion between
//! environments, and templates and reference docs generated from the published schema.
//!
//! | concept | entry points |
//! |---|---|
//! | propose, approve, reject, apply, rebase | [`ChangeControl`], [`Proposal`], [`ProposalState`] |
//! | a prefix's policy | [`Policy`], [`ChangeControl::policy`], [`ChangeControl::set_policy`] |
//! | change windows, and the clock they are checked by | [`ChangeWindow`], [`Clock`], [`SystemClock`], [`FixedClock`] |
//! | writes past the policy, recorded | [`ConfigHistory::with_break_glass`](crate::history::ConfigHistory::with_break_glass) |
//! | what a version records | [`ChangeRecord`] in [`Version::change`](crate::history::Version::change), [`Promotion`] |
//! | promotion between environments | [`ChangeControl::promote`], [`Promoted`] |
//! | a commented YAML template, a Markdown reference | [`template`], [`reference_markdown`], [`FieldDoc`] |
//!
//! # What enforces it
//! The crate, for every write that goes through it: `coordctl config put/apply/rollback`,
//! [`ConfigHistory`](crate::history::ConfigHistory) and the typed handle's
//! [`update`](crate::ConfigHandle::update), [`publish_at`](crate::ConfigHandle::publish_at),
//! [`overwrite`](crate::ConfigHandle::overwrite) and
//! [`rollback_to`](crate::ConfigHandle::rollback_to) all run the same guarded write, which
//! reads the prefix's policy first and refuses with [`ErrorKind::Refused`](crate::ErrorKind::Refused)
//! a publish that needs an approved proposal, and any write outside the change windows, unless
//! it breaks glass (the reason is recorded in the version and logged at `warn`). The policy's
//! `mod_revision` is compared in the write's transaction. A raw `etcdctl put` on the prefix
//! bypasses all of it: etcd's RBAC is what stops that (operators write proposals only; the
//! approver role may write the prefix), see the security guide.
//!
//! Inside: `proposal.rs` (the stored proposal, secrets kept out), `policy.rs`, `window.rs`,
//! `gate.rs` (the check in every guarded write), `control.rs`, `promote.rs`, `reference.rs`
//! (template and docs), `audit.rs` (what a version records).

mod audit;
mod control;
mod gate;
mod policy;
mod promote;
mod proposal;
mod reference;
mod window;

pub use audit::{ChangeRecord, Promotion};
pub use control::ChangeControl;
pub(crate) use gate::gate;
pub use policy::Policy;
pub use promote::Promoted;
pub use proposal::{Applied, Approval, Proposal, ProposalState, Rejection};
pub use reference::{fields as field_docs, reference_markdown, template, FieldDoc};
pub use window::{ChangeWindow, Clock, FixedClock, SystemClock};
