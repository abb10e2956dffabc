//! Retention: keeping the newest versions and pruning the rest.
//!
//! Whoever creates a record checks the count (one range read with `limit 1`, which reports the
//! total). Over `keep` + 10 % (at least 1), or with the oldest record past `max_age`, it
//! prunes: the newest `keep` (and young enough; always the newest) stay. A kept delta whose base
//! would be deleted is first rewritten as a full record (guarded by its `mod_revision`), then the
//! rest is deleted with its chunks. Every step is idempotent, so several instances may prune at
//! once.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

use super::chunks::INLINE_BYTES;
use super::record::{encode_error, parse_head, Content, Kind};
use super::store::Store;
use super::time::ms_ago;
use crate::error::{Error, Result};

/// Version deletions per pruning transaction (two operations each).
const PRUNE_BATCH: usize = 60;

impl Store {
    /// Prunes if the history is over its limits (one cheap read otherwise). Returns the number
    /// of versions deleted.
    pub(crate) async fn maybe_prune(
        &self,
        keep: usize,
        max_age: Option<Duration>,
    ) -> Result<usize> {
        let (start, end) = self.digit_range();
        let resp = self
            .client()
            .get(start, Some(GetOptions::new().with_range(end).with_limit(1)))
            .await
            .map_err(|e| Error::etcd("counting history records", e))?;
        let count = usize::try_from(resp.count()).unwrap_or(0);
        let keep = keep.max(1);
        let over = count > keep + (keep / 10).max(1);
        let old = match (max_age, resp.kvs().first()) {
            (Some(age), Some(kv)) if count > 1 => {
                parse_head(kv.value()).is_ok_and(|h| h.unix_ms < ms_ago(age))
            }
            _ => false,
        };
        let pruned = if over || old {
            self.prune(keep, max_age).await?
        } else {
            0
        };
        self.metrics().counted(count, pruned);
        Ok(pruned)
    }

    /// Keeps the newest `keep` versions (and, with `max_age`, only those recorded since; the
    /// newest always stays), deleting the rest. Returns the number deleted.
    pub(crate) async fn prune(&self, keep: usize, max_age: Option<Duration>) -> Result<usize> {
        let (_, heads) = self.list(None).await?;
        let Some((newest, _)) = heads.last() else {
            return Ok(0);
        };
        let cutoff = max_age.map(ms_ago);
        let mut kept: BTreeSet<i64> = heads[heads.len().saturating_sub(keep.max(1))..]
            .iter()
            .filter(|(h, _)| cutoff.is_none_or(|c| h.unix_ms >= c))
            .map(|(h, _)| h.revision)
            .collect();
        kept.insert(newest.revision);
        let doomed: Vec<i64> = heads
            .iter()
            .map(|(h, _)| h.revision)
            .filter(|r| !kept.contains(r))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        // Kept deltas whose base goes away become full records first.
        for (head, mod_revision) in &heads {
            let orphaned = head.kind == Kind::Delta
                && head.base.is_none_or(|b| !kept.contains(&b))
                && kept.contains(&head.revision);
            if orphaned {
                self.make_full(head.revision, *mod_revision).await?;
            }
        }
        let mut client = self.client();
        for batch in doomed.chunks(PRUNE_BATCH) {
            let mut ops = Vec::with_capacity(batch.len() * 2);
            for &revision in batch {
                ops.push(TxnOp::delete(self.keys().version(revision), None));
                ops.push(TxnOp::delete(
                    self.keys().chunk_revision_dir(revision),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
            client
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| Error::etcd("pruning history", e))?;
        }
        tracing::debug!(prefix = %self.keys().prefix(), pruned = doomed.len(), kept = kept.len(), "pruned history");
        Ok(doomed.len())
    }

    /// Rewrites the delta record of `revision` as a full record (guarded by its
    /// `mod_revision`; a no-op if someone changed it meanwhile).
    async fn make_full(&self, revision: i64, mod_revision: i64) -> Result<()> {
        let (old, state) = self.state_at(revision).await?;
        if old.kind == Kind::Full {
            return Ok(());
        }
        let mut head = old.clone();
        head.kind = Kind::Full;
        head.base = None;
        head.checkpoint = revision;
        head.chain_bytes = 0;
        head.ops = None;
        head.kvs = None;
        head.chunks = None;
        // The values as recorded: a sealed or left-out secret stays so.
        let content = Content::stored(self.keys(), &state);
        let new_id = if content.json_len()? <= INLINE_BYTES {
            head.set_inline(content);
            None
        } else {
            Some(self.write_chunks(revision, &mut head, &content).await?)
        };
        let key = self.keys().version(revision);
        let value = serde_json::to_vec(&head).map_err(encode_error)?;
        let resp = self
            .client()
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        mod_revision,
                    )])
                    .and_then([TxnOp::put(key.as_str(), value, None)]),
            )
            .await
            .map_err(|e| Error::etcd(format_args!("rewriting version {revision} in full"), e))?;
        if resp.succeeded() {
            if let Some(old_chunks) = &old.chunks {
                self.drop_chunks(revision, Some(&old_chunks.id)).await;
            }
        } else {
            self.drop_chunks(revision, new_id.as_deref()).await;
        }
        Ok(())
    }
}
