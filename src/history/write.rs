//! The guarded write shared by publish and rollback: from the key set the writer last saw to a
//! target key set, in one etcd transaction when it fits, recorded as a version.
//!
//! # The guard
//! Every transaction compares, against the revision `S` the writer last saw:
//! - every key under the prefix has `mod_revision <= S` (one range compare: no put since `S`);
//! - the audit intent has `mod_revision <= S` (no publish or rollback since `S`);
//! - every key that existed at `S` still exists (one compare per key: no delete since `S`) —
//!   or, when the prefix has more keys than fit in one transaction, that no version was recorded
//!   after `S` (a delete by another client is recorded by the running instances within
//!   milliseconds, so only a delete in that window escapes the guard).
//!
//! If a compare fails, nothing is written and the call fails with
//! [`ErrorKind::Conflict`](crate::ErrorKind::Conflict).
//!
//! # Batches
//! etcd allows 128 operations (`--max-txn-ops`) and 1.5 MiB per transaction. A change of more
//! keys than that is written in batches in key order, each guarded by the revision of the one
//! before; instances apply each batch as it lands (each is one revision), and every batch is
//! recorded as a version (`batch: [n, of]`), the last one holding the complete change. A
//! conflict after the first batch leaves the batches before it applied (and recorded); the error
//! says so.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use tracing::Instrument;

use super::record::{Head, Intent, Kind, Meta, Version, VersionKind, FORMAT};
use super::store::{KeySet, Kvs, MetaFrom, Outcome, Prev, Store};
use crate::config::RawOp;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::telemetry::HISTORY_TARGET;

/// Request bytes per transaction (etcd's default limit is 1.5 MiB).
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// How to write: transaction size, and what to do about history around the write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recording {
    /// The server's `--max-txn-ops`.
    pub(crate) max_txn_ops: usize,
    /// Write the version record (the writer's own handle records it anyway; tools must).
    pub(crate) record: bool,
    /// Retention to apply after recording: (keep, max age).
    pub(crate) prune: Option<(usize, Option<Duration>)>,
}

/// The writes that turn `current` into `target`, in key order.
pub(crate) fn plan(current: &Kvs, target: &Kvs) -> Vec<RawOp> {
    let mut ops = Vec::new();
    let mut a = current.iter().peekable();
    let mut b = target.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    ops.push(RawOp::Delete(ka.to_vec()));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    ops.push(RawOp::Put(kb.to_vec(), vb.to_vec()));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        ops.push(RawOp::Put(kb.to_vec(), vb.to_vec()));
                    }
                    a.next();
                    b.next();
                }
            },
            (Some((ka, _)), None) => {
                ops.push(RawOp::Delete(ka.to_vec()));
                a.next();
            }
            (None, Some((kb, vb))) => {
                ops.push(RawOp::Put(kb.to_vec(), vb.to_vec()));
                b.next();
            }
            (None, None) => return ops,
        }
    }
}

fn op_bytes(op: &RawOp) -> usize {
    match op {
        RawOp::Put(k, v) => k.len() + v.len() + 16,
        RawOp::Delete(k) => k.len() + 16,
    }
}

/// Splits `ops` into transactions of at most `per_txn` operations and [`MAX_TXN_BYTES`].
fn batches(ops: Vec<RawOp>, per_txn: usize) -> Vec<Vec<RawOp>> {
    let mut out: Vec<Vec<RawOp>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let size = op_bytes(&op);
        match out.last_mut() {
            Some(batch) if batch.len() < per_txn && bytes + size <= MAX_TXN_BYTES => {
                bytes += size;
                batch.push(op);
            }
            _ => {
                bytes = size;
                out.push(vec![op]);
            }
        }
    }
    out
}

/// Turns `seen` (the key set at `seen_revision`; `prev` its version record, if known) into
/// `target`, guarded as described in the module docs, and records the result with `meta`.
/// `Ok(None)` if they are equal (nothing is written).
///
/// Runs in a `publish` or `rollback` span (target `coordination::history`; fields `prefix`,
/// `revision` = `seen_revision`, `version` once written, and for a rollback `restored_from`)
/// and counts its outcome in `coordination_history_writes_total`.
///
/// # Errors
/// [`ErrorKind::Conflict`] if the prefix changed after `seen_revision`; etcd errors.
pub(crate) async fn write_guarded(
    store: &Store,
    seen_revision: i64,
    seen: KeySet<'_>,
    target: &Kvs,
    meta: Meta,
    prev: Option<Prev>,
    recording: Recording,
) -> Result<Option<Version>> {
    let prefix = store.keys().prefix();
    let kind = meta.source;
    let span = match kind {
        VersionKind::Rollback => tracing::info_span!(
            target: HISTORY_TARGET,
            "rollback",
            prefix,
            revision = seen_revision,
            restored_from = meta.restored_from,
            version = tracing::field::Empty
        ),
        VersionKind::Publish | VersionKind::External | VersionKind::Rollout => tracing::info_span!(
            target: HISTORY_TARGET,
            "publish",
            prefix,
            revision = seen_revision,
            version = tracing::field::Empty
        ),
    };
    let written = write_batches(store, seen_revision, seen, target, meta, prev, recording)
        .instrument(span.clone())
        .await;
    if let Ok(Some(version)) = &written {
        span.record("version", version.revision);
    }
    store.metrics().wrote(kind, &written);
    written
}

async fn write_batches(
    store: &Store,
    seen_revision: i64,
    seen: KeySet<'_>,
    target: &Kvs,
    meta: Meta,
    prev: Option<Prev>,
    recording: Recording,
) -> Result<Option<Version>> {
    let max_txn_ops = recording.max_txn_ops;
    let ops = plan(seen.kvs, target);
    if ops.is_empty() {
        return Ok(None);
    }
    let keys = store.keys();
    // Change control: refused here unless the policy allows the write; the policy key's
    // revision as read is compared in every batch.
    let policy = crate::change::gate(store, &meta).await?;
    let batches = batches(ops, max_txn_ops.saturating_sub(1).max(1));
    let total = batches.len() as u32;
    let mut state = seen.kvs.clone();
    let mut revs = seen.revs.clone();
    let mut bytes = seen.bytes;
    let mut base = seen_revision;
    let mut prev = prev;
    let mut last = None;
    let mut created = false;
    let mut client = store.client();
    for (index, batch) in batches.into_iter().enumerate() {
        let mut meta = meta.clone();
        if total > 1 {
            meta.batch = Some([index as u32 + 1, total]);
        }
        let intent = Intent::now(meta);
        let intent_json = serde_json::to_vec(&intent).map_err(|e| {
            Error::new(ErrorKind::Etcd, format!("encoding the intent: {e}")).with_source(e)
        })?;
        let mut compares = vec![
            Compare::mod_revision(keys.prefix(), CompareOp::Less, base + 1)
                .with_range(keys.prefix_end()),
            Compare::mod_revision(keys.intent(), CompareOp::Less, base + 1),
            policy.clone(),
        ];
        if state.len() + compares.len() <= max_txn_ops {
            compares.extend(
                state
                    .keys()
                    .map(|k| Compare::version(k.clone(), CompareOp::Greater, 0)),
            );
        } else {
            compares.push(
                Compare::create_revision(keys.version(base + 1), CompareOp::Equal, 0)
                    .with_range(keys.versions_end()),
            );
        }
        let mut txn_ops: Vec<TxnOp> = batch
            .iter()
            .map(|op| match op {
                RawOp::Put(k, v) => TxnOp::put(k.clone(), v.clone(), None),
                RawOp::Delete(k) => TxnOp::delete(k.clone(), None),
            })
            .collect();
        txn_ops.push(TxnOp::put(keys.intent(), intent_json, None));
        let resp = client
            .txn(Txn::new().when(compares).and_then(txn_ops))
            .await
            .map_err(|e| {
                Error::etcd(format_args!("writing `{}`", keys.prefix()), e).needs(
                    Permission::ReadWrite,
                    &format!(
                        "the prefix `{}` and on {} (and read on the change-control policy `{}`)",
                        keys.prefix(),
                        keys.root_label(),
                        keys.policy()
                    ),
                    keys.prefix(),
                )
            })?;
        if !resp.succeeded() {
            let message = if index == 0 {
                format!(
                    "`{}` changed after revision {seen_revision}, the one this write was based on: nothing was written; look at the new version and try again",
                    keys.prefix()
                )
            } else {
                format!(
                    "`{}` changed while a {total}-batch write was under way: batches 1 to {index} were applied (up to revision {base}) and recorded; look at the history and try again",
                    keys.prefix()
                )
            };
            return Err(Error::new(ErrorKind::Conflict, message).with_revision(base));
        }
        let revision = resp.header().map_or(base + 1, |h| h.revision());
        store.apply((&mut state, &mut revs, &mut bytes), &batch, revision);
        base = revision;
        let synthetic = synthetic_version(store, revision, &intent, (state.len(), bytes));
        if !recording.record {
            last = Some(synthetic);
            continue;
        }
        match store
            .record(
                revision,
                KeySet {
                    kvs: &state,
                    revs: &revs,
                    bytes,
                },
                Some(&batch),
                MetaFrom::Known(intent),
                prev,
                None,
            )
            .await
        {
            Ok(outcome) => {
                created |= matches!(outcome, Outcome::Created(_));
                prev = outcome.head().map(Head::prev);
                last = Some(outcome.head().map_or(synthetic, Head::version));
            }
            Err(error) => {
                tracing::warn!(prefix = %keys.prefix(), revision, error = %error, "written, but the version record failed; running instances record it");
                prev = None;
                last = Some(synthetic);
            }
        }
    }
    if let (true, Some((keep, max_age))) = (created, recording.prune) {
        if let Err(error) = store.maybe_prune(keep, max_age).await {
            tracing::warn!(prefix = %keys.prefix(), error = %error, "pruning history failed");
        }
    }
    Ok(last)
}

/// The listing entry of a version written but not (yet) recorded.
/// `(keys, bytes)` is the key set's size.
fn synthetic_version(
    store: &Store,
    revision: i64,
    intent: &Intent,
    (keys, bytes): (usize, u64),
) -> Version {
    Head {
        format: FORMAT,
        prefix: store.keys().prefix().to_string(),
        revision,
        time: intent.time.clone(),
        unix_ms: intent.unix_ms,
        meta: intent.meta.clone(),
        keys,
        bytes,
        kind: Kind::Full,
        base: None,
        checkpoint: revision,
        chain_bytes: 0,
        secrets: Vec::new(),
        kvs: None,
        ops: None,
        chunks: None,
    }
    .version()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvs(pairs: &[(&str, &str)]) -> Kvs {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn plan_puts_changed_and_new_keys_and_deletes_the_rest() {
        let current = kvs(&[("/p/a", "1"), ("/p/b", "2"), ("/p/d", "4")]);
        let target = kvs(&[("/p/b", "2"), ("/p/c", "3"), ("/p/d", "5")]);
        assert_eq!(
            plan(&current, &target),
            vec![
                RawOp::Delete(b"/p/a".to_vec()),
                RawOp::Put(b"/p/c".to_vec(), b"3".to_vec()),
                RawOp::Put(b"/p/d".to_vec(), b"5".to_vec()),
            ]
        );
        assert!(plan(&target, &target).is_empty());
    }

    #[test]
    fn batches_respect_op_and_byte_limits() {
        let ops: Vec<RawOp> = (0..300)
            .map(|i| RawOp::Put(format!("/p/{i}").into_bytes(), vec![b'x'; 10]))
            .collect();
        let b = batches(ops, 127);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![127, 127, 46]
        );
        let big: Vec<RawOp> = (0..5)
            .map(|i| RawOp::Put(format!("/p/{i}").into_bytes(), vec![b'x'; 400 * 1024]))
            .collect();
        assert_eq!(batches(big, 127).len(), 3);
    }
}
