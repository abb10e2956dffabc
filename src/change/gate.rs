//! The check every guarded write makes (publish, put, apply, rollback, typed handles and
//! tools alike): the prefix's policy, read once, decides; its `mod_revision` goes into the
//! write's transaction so a policy changed meanwhile fails the write as a conflict.

use etcd_client::Compare;

use super::policy;
use crate::error::{Error, ErrorKind, Result};
use crate::history::{Meta, Store, VersionKind};
use crate::telemetry::HISTORY_TARGET;

/// Whether the write described by `meta` may go ahead on `store`'s prefix; the compare to add
/// to its transaction.
///
/// # Errors
/// [`ErrorKind::Refused`] (a publish that needs an approved proposal; any write outside the
/// change windows) unless `meta` breaks glass; etcd errors. A user who may not read the policy
/// key gets the compare all the same, which etcd refuses with the write.
pub(crate) async fn gate(store: &Store, meta: &Meta) -> Result<Compare> {
    let keys = store.keys();
    let key = keys.policy();
    let (policy, revision) = match policy::read(store.etcd(), key).await {
        Ok(read) => read,
        // The compare in the write's transaction needs read on the key too, so etcd refuses
        // that write all the same (an `Auth` error naming the key): fail closed there, with
        // the message of the write.
        Err(e) if e.is_permission_denied() => return Ok(policy::unchanged(key, 0)),
        Err(e) => return Err(e),
    };
    let change = meta.change.as_ref();
    let broken = change.and_then(|c| c.break_glass.as_deref());
    let author = meta.author.as_deref().unwrap_or("-");
    if let Some(policy) = &policy {
        let mut refusals = Vec::new();
        let from_proposal = change.is_some_and(|c| c.proposal.is_some());
        if policy.approvals > 0 && meta.source == VersionKind::Publish && !from_proposal {
            refusals.push(format!(
                "its policy (`{key}`) needs {} approval(s): propose the change (`coordctl config propose`) and apply it once approved",
                policy.approvals
            ));
        }
        let (open, local) = policy.window_open(store.clock().now())?;
        if !open {
            refusals.push(format!(
                "it is {local}, outside the change windows {}",
                policy.windows_text()
            ));
        }
        if !refusals.is_empty() {
            if broken.is_none() {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "{} of `{}` refused: {}; or break glass (`--break-glass --reason …`), which is recorded",
                        meta.source,
                        keys.prefix(),
                        refusals.join("; ")
                    ),
                )
                .with_key(key));
            }
            tracing::warn!(
                target: HISTORY_TARGET,
                prefix = %keys.prefix(),
                author,
                reason = broken.unwrap_or(""),
                bypassed = %refusals.join("; "),
                "break-glass {} past the change-control policy",
                meta.source
            );
            return Ok(policy::unchanged(key, revision));
        }
    }
    if let Some(reason) = broken {
        tracing::warn!(
            target: HISTORY_TARGET,
            prefix = %keys.prefix(),
            author,
            reason,
            "break-glass {} (the policy would have allowed it)",
            meta.source
        );
    }
    Ok(policy::unchanged(key, revision))
}
