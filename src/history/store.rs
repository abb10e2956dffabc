//! Reading and writing version records: create-if-absent, chunks and deltas for big prefixes,
//! reading a version's key set back, retention.
//!
//! # Big prefixes
//! etcd refuses requests over 1.5 MiB and transactions over 128 operations, so a record never
//! holds more than 32 KiB inline: bigger content goes to chunk keys of at most 512 KiB each,
//! written before the record (the record names them, so a half-written attempt is never read).
//! A prefix whose key set is over 32 KiB is recorded as **deltas** (the writes of one revision,
//! against the previous version) between **full** records: a record is written full when the
//! delta bytes since the last full one would exceed the size of the key set, so the total size
//! of a chain stays under twice the key set and reading any version back costs at most that.
//!
//! # Retention
//! Whoever creates a record checks the count (one range read with `limit 1`, which reports the
//! total). Over `keep` + 10 % (at least 1), or with the oldest record past `max_age`, it
//! prunes: the newest `keep` (and young enough; always the newest) stay. A kept delta whose base
//! would be deleted is first rewritten as a full record (guarded by its `mod_revision`), then the
//! rest is deleted with its chunks. Every step is idempotent, so several instances may prune at
//! once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};
use serde::Serialize;

use super::keys::Keys;
use super::record::{ChunkRef, Head, Intent, Kind, Meta, Op, Raw, FORMAT};
use super::time::ms_ago;
use crate::config::RawOp;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::{read_range, Etcd};

/// A prefix's key set: full etcd keys (namespace and prefix included) to values.
pub(crate) type Kvs = BTreeMap<Vec<u8>, Vec<u8>>;

/// Key sets up to this size (keys relative to the prefix, plus values) are always recorded full.
pub(crate) const SMALL_STATE_BYTES: u64 = 32 * 1024;
/// Content up to this size (as JSON) is inline in the record.
pub(crate) const INLINE_BYTES: usize = 32 * 1024;
/// Upper bound of one chunk (as JSON), unless a single entry is bigger.
pub(crate) const CHUNK_BYTES: usize = 512 * 1024;
/// Records per page when listing (a record is at most ~33 KiB; tonic decodes up to 4 MiB).
const HEAD_PAGE: i64 = 64;
/// Chunks per page when reading content.
const CHUNK_PAGE: i64 = 4;
/// Version deletions per pruning transaction (two operations each).
const PRUNE_BATCH: usize = 60;

/// What a new record may be a delta against: a version known to exist with the state the
/// writer's delta starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prev {
    pub(crate) revision: i64,
    pub(crate) checkpoint: i64,
    pub(crate) chain_bytes: u64,
}

impl Head {
    /// This record as the base of the next delta.
    pub(crate) fn prev(&self) -> Prev {
        Prev {
            revision: self.revision,
            checkpoint: self.checkpoint,
            chain_bytes: self.chain_bytes,
        }
    }
}

/// Where a new record's audit metadata comes from.
pub(crate) enum MetaFrom {
    /// The writer made the change and knows it.
    Known(Intent),
    /// Look for an intent written in the same revision; otherwise the change is external.
    Lookup,
}

/// What [`Store::record`] did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// This call created the record.
    Created(Head),
    /// Another writer had created it (returned as stored).
    Existing(Head),
    /// Not written: a newer version was recorded meanwhile (only with `newer_than`).
    Superseded,
}

impl Outcome {
    pub(crate) fn head(&self) -> Option<&Head> {
        match self {
            Outcome::Created(h) | Outcome::Existing(h) => Some(h),
            Outcome::Superseded => None,
        }
    }
}

/// A record's content.
enum Content {
    Full(Vec<(Raw, Raw)>),
    Delta(Vec<Op>),
}

/// The history of one prefix in etcd.
#[derive(Clone)]
pub(crate) struct Store {
    etcd: Etcd,
    client: Client,
    keys: Keys,
}

impl Store {
    pub(crate) fn new(etcd: Etcd, keys: Keys) -> Self {
        Store {
            client: etcd.client().clone(),
            etcd,
            keys,
        }
    }

    pub(crate) fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    fn not_found(&self, revision: i64) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "version {revision} of `{}` not found: pruned, or never recorded",
                self.keys.prefix()
            ),
        )
        .with_revision(revision)
    }

    /// The size of a key set as recorded: keys relative to the prefix, plus values.
    pub(crate) fn state_bytes(&self, state: &Kvs) -> u64 {
        state
            .iter()
            .map(|(k, v)| (self.keys.relative(k).len() + v.len()) as u64)
            .sum()
    }

    fn delta_bytes(&self, ops: &[RawOp]) -> u64 {
        ops.iter()
            .map(|op| match op {
                RawOp::Put(k, v) => (self.keys.relative(k).len() + v.len()) as u64,
                RawOp::Delete(k) => self.keys.relative(k).len() as u64,
            })
            .sum()
    }

    /// Creates the record of `revision` unless one exists: `state` is the whole key set at
    /// `revision`; `delta` its writes at that revision, if known; `prev` the version `delta`
    /// applies to, if known to be recorded. With `newer_than = Some(v)`, nothing is written if
    /// any version after `v` exists (for records of a state found at bind or after a resync).
    pub(crate) async fn record(
        &self,
        revision: i64,
        state: &Kvs,
        delta: Option<&[RawOp]>,
        meta: MetaFrom,
        prev: Option<Prev>,
        newer_than: Option<i64>,
    ) -> Result<Outcome> {
        let bytes = self.state_bytes(state);
        let (kind, base, checkpoint, chain_bytes, content) = match (delta, prev) {
            (Some(ops), Some(p))
                if p.revision < revision
                    && bytes > SMALL_STATE_BYTES
                    && p.chain_bytes + self.delta_bytes(ops) <= bytes =>
            {
                let content = Content::Delta(
                    ops.iter()
                        .map(|op| match op {
                            RawOp::Put(k, v) => Op::Put {
                                put: Raw(self.keys.relative(k).to_vec()),
                                value: Raw(v.clone()),
                            },
                            RawOp::Delete(k) => Op::Del {
                                del: Raw(self.keys.relative(k).to_vec()),
                            },
                        })
                        .collect(),
                );
                (
                    Kind::Delta,
                    Some(p.revision),
                    p.checkpoint,
                    p.chain_bytes + self.delta_bytes(ops),
                    content,
                )
            }
            _ => (Kind::Full, None, revision, 0, self.full_content(state)),
        };
        let (intent, mut check_intent) = match meta {
            MetaFrom::Known(intent) => (intent, false),
            MetaFrom::Lookup => (Intent::now(Meta::default()), true),
        };
        let mut head = Head {
            format: FORMAT,
            prefix: self.keys.prefix().to_string(),
            revision,
            time: intent.time,
            unix_ms: intent.unix_ms,
            meta: intent.meta,
            keys: state.len(),
            bytes,
            kind,
            base,
            checkpoint,
            chain_bytes,
            kvs: None,
            ops: None,
            chunks: None,
        };
        let key = self.keys.version(revision);
        let chunk_id = if content_len(&content)? <= INLINE_BYTES {
            match content {
                Content::Full(kvs) => head.kvs = Some(kvs),
                Content::Delta(ops) => head.ops = Some(ops),
            }
            None
        } else {
            // Skip the heavy write if another instance got there first.
            if let Some((existing, _)) = self.head_at(revision, None).await? {
                return Ok(Outcome::Existing(existing));
            }
            let id = nonce();
            let count = self.write_chunks(revision, &id, &content).await?;
            head.chunks = Some(ChunkRef {
                id: id.clone(),
                count,
            });
            Some(id)
        };
        for _ in 0..3 {
            let value = serde_json::to_vec(&head).map_err(encode_error)?;
            let mut compares = vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)];
            if check_intent {
                compares.push(Compare::mod_revision(
                    self.keys.intent(),
                    CompareOp::Less,
                    revision,
                ));
            }
            let mut otherwise = vec![
                TxnOp::get(key.as_str(), None),
                TxnOp::get(self.keys.intent(), None),
            ];
            if let Some(v) = newer_than {
                let start = self.keys.version(v + 1);
                let end = self.keys.versions_end();
                compares.push(
                    Compare::create_revision(start.as_str(), CompareOp::Equal, 0)
                        .with_range(end.clone()),
                );
                otherwise.push(TxnOp::get(
                    start.as_str(),
                    Some(GetOptions::new().with_range(end).with_count_only()),
                ));
            }
            let txn = Txn::new()
                .when(compares)
                .and_then([TxnOp::put(key.as_str(), value, None)])
                .or_else(otherwise);
            let resp = self
                .client
                .clone()
                .txn(txn)
                .await
                .map_err(|e| Error::etcd(format_args!("recording version {revision}"), e))?;
            if resp.succeeded() {
                return Ok(Outcome::Created(head));
            }
            let gets: Vec<_> = resp
                .op_responses()
                .into_iter()
                .filter_map(|r| match r {
                    TxnOpResponse::Get(g) => Some(g),
                    _ => None,
                })
                .collect();
            let existing = gets
                .first()
                .and_then(|g| g.kvs().first())
                .map(|kv| parse_head(kv.value()))
                .transpose()?;
            if let Some(existing) = existing {
                self.drop_chunks(revision, chunk_id.as_deref()).await;
                return Ok(Outcome::Existing(existing));
            }
            if newer_than.is_some() && gets.get(2).is_some_and(|g| g.count() > 0) {
                self.drop_chunks(revision, chunk_id.as_deref()).await;
                return Ok(Outcome::Superseded);
            }
            let intent_rev = gets
                .get(1)
                .and_then(|g| g.kvs().first())
                .map_or(0, KeyValue::mod_revision);
            if check_intent && intent_rev >= revision {
                // A publish or rollback wrote the intent at (or after) this revision: take the
                // metadata if it was written in this very revision.
                check_intent = false;
                if let Some(found) = self.intent_at(revision).await {
                    head.meta = found.meta;
                    head.time = found.time;
                    head.unix_ms = found.unix_ms;
                }
                continue;
            }
            break;
        }
        self.drop_chunks(revision, chunk_id.as_deref()).await;
        Err(Error::new(
            ErrorKind::Conflict,
            format!("could not record version {revision}: its guards kept failing"),
        )
        .with_revision(revision))
    }

    fn full_content(&self, state: &Kvs) -> Content {
        Content::Full(
            state
                .iter()
                .map(|(k, v)| (Raw(self.keys.relative(k).to_vec()), Raw(v.clone())))
                .collect(),
        )
    }

    /// The intent written in exactly `revision`, if any (`None` also if that revision was
    /// compacted: the change then counts as external).
    async fn intent_at(&self, revision: i64) -> Option<Intent> {
        let resp = self
            .client
            .clone()
            .get(
                self.keys.intent(),
                Some(GetOptions::new().with_revision(revision)),
            )
            .await;
        match resp {
            Ok(resp) => resp
                .kvs()
                .first()
                .filter(|kv| kv.mod_revision() == revision)
                .and_then(|kv| serde_json::from_slice(kv.value()).ok()),
            Err(e) => {
                tracing::debug!(revision, error = %Error::etcd("reading the intent", e), "intent unavailable; recording as external");
                None
            }
        }
    }

    async fn write_chunks(&self, revision: i64, id: &str, content: &Content) -> Result<u32> {
        let texts = match content {
            Content::Full(kvs) => chunk_texts(kvs)?,
            Content::Delta(ops) => chunk_texts(ops)?,
        };
        let mut client = self.client.clone();
        for (n, text) in texts.iter().enumerate() {
            let n = n as u32;
            client
                .put(self.keys.chunk(revision, id, n), text.as_str(), None)
                .await
                .map_err(|e| {
                    Error::etcd(format_args!("writing chunk {n} of version {revision}"), e)
                })?;
        }
        Ok(texts.len() as u32)
    }

    /// Best effort: removes the chunks of a failed attempt.
    async fn drop_chunks(&self, revision: i64, id: Option<&str>) {
        if let Some(id) = id {
            let dir = self.keys.chunk_dir(revision, id);
            let _ = self
                .client
                .clone()
                .delete(dir, Some(DeleteOptions::new().with_prefix()))
                .await;
        }
    }

    /// The record of `revision` and its `mod_revision`, read at `at` (or now).
    pub(crate) async fn head_at(
        &self,
        revision: i64,
        at: Option<i64>,
    ) -> Result<Option<(Head, i64)>> {
        let options = at.map(|r| GetOptions::new().with_revision(r));
        let resp = self
            .client
            .clone()
            .get(self.keys.version(revision), options)
            .await
            .map_err(|e| Error::etcd(format_args!("reading version {revision}"), e))?;
        resp.kvs()
            .first()
            .map(|kv| Ok((parse_head(kv.value())?, kv.mod_revision())))
            .transpose()
    }

    /// The newest record, if any.
    pub(crate) async fn latest(&self) -> Result<Option<Head>> {
        let (start, end) = self.digit_range();
        let resp = self
            .client
            .clone()
            .get(
                start,
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(16),
                ),
            )
            .await
            .map_err(|e| Error::etcd("reading the latest version", e))?;
        for kv in resp.kvs() {
            if self.keys.parse_version(kv.key()).is_some() {
                return parse_head(kv.value()).map(Some);
            }
        }
        if resp.kvs().is_empty() {
            return Ok(None);
        }
        // Only other prefixes' keys among the newest: list everything.
        Ok(self.list(None).await?.1.pop().map(|(h, _)| h))
    }

    /// The version records' key range, restricted to keys starting with a digit.
    fn digit_range(&self) -> (String, String) {
        (
            format!("{}0", self.keys.versions()),
            format!("{}:", self.keys.versions()),
        )
    }

    /// Every record (content dropped) with its `mod_revision`, oldest first, read at one
    /// revision (`at`, or the current one, returned).
    pub(crate) async fn list(&self, at: Option<i64>) -> Result<(i64, Vec<(Head, i64)>)> {
        let (start, end) = self.digit_range();
        let (revision, kvs) = read_range(
            &self.etcd,
            start.into_bytes(),
            end.into_bytes(),
            HEAD_PAGE,
            at,
        )
        .await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            if self.keys.parse_version(kv.key()).is_none() {
                continue;
            }
            match parse_head(kv.value()) {
                Ok(head) => out.push((head.without_content(), kv.mod_revision())),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "skipping an unreadable history record")
                }
            }
        }
        Ok((revision, out))
    }

    /// The key set at version `revision` (full keys) and its record.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown or pruned version (or one whose delta chain lost
    /// a record); etcd errors.
    pub(crate) async fn state_at(&self, revision: i64) -> Result<(Head, Kvs)> {
        // Pin every read at one revision: a concurrent pruner cannot tear the chain.
        let resp = self
            .client
            .clone()
            .get(self.keys.version(revision), None)
            .await
            .map_err(|e| Error::etcd(format_args!("reading version {revision}"), e))?;
        let at = resp.header().map_or(0, |h| h.revision());
        let head = match resp.kvs().first() {
            Some(kv) => parse_head(kv.value())?,
            None => return Err(self.not_found(revision)),
        };
        if head.kind == Kind::Full {
            let kvs = match self.content(&head, at).await? {
                Content::Full(kvs) => self.absolute_kvs(kvs),
                Content::Delta(_) => return Err(corrupt(revision, "full record holds ops")),
            };
            return Ok((head, kvs));
        }
        let (_, range) = read_range(
            &self.etcd,
            self.keys
                .version(head.checkpoint.min(revision))
                .into_bytes(),
            self.keys.version(revision).into_bytes(),
            HEAD_PAGE,
            Some(at),
        )
        .await?;
        let mut by_revision: BTreeMap<i64, Head> = range
            .iter()
            .filter_map(|kv| {
                let r = self.keys.parse_version(kv.key())?;
                parse_head(kv.value()).ok().map(|h| (r, h))
            })
            .collect();
        let mut chain = vec![head.clone()];
        let mut next = head.base;
        while let Some(base) = next {
            if base >= chain.last().map_or(i64::MAX, |h| h.revision) {
                return Err(corrupt(revision, "delta base is not older"));
            }
            let found = match by_revision.remove(&base) {
                Some(h) => h,
                None => match self.head_at(base, Some(at)).await? {
                    Some((h, _)) => h,
                    None => {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "version {revision} of `{}` cannot be restored: its base version {base} was pruned",
                                self.keys.prefix()
                            ),
                        )
                        .with_revision(revision))
                    }
                },
            };
            next = match found.kind {
                Kind::Full => None,
                Kind::Delta => found.base,
            };
            chain.push(found);
        }
        let mut kvs = Kvs::new();
        for record in chain.iter().rev() {
            match self.content(record, at).await? {
                Content::Full(full) => kvs = self.absolute_kvs(full),
                Content::Delta(ops) => {
                    for op in ops {
                        match op {
                            Op::Put { put, value } => {
                                kvs.insert(self.keys.absolute(&put.0), value.0);
                            }
                            Op::Del { del } => {
                                kvs.remove(&self.keys.absolute(&del.0));
                            }
                        }
                    }
                }
            }
        }
        if kvs.len() != head.keys {
            return Err(corrupt(
                revision,
                &format!("rebuilt {} keys, the record says {}", kvs.len(), head.keys),
            ));
        }
        Ok((head, kvs))
    }

    fn absolute_kvs(&self, kvs: Vec<(Raw, Raw)>) -> Kvs {
        kvs.into_iter()
            .map(|(k, v)| (self.keys.absolute(&k.0), v.0))
            .collect()
    }

    /// A record's content, inline or from its chunks (read at `at`).
    async fn content(&self, head: &Head, at: i64) -> Result<Content> {
        let Some(chunks) = &head.chunks else {
            return Ok(match head.kind {
                Kind::Full => Content::Full(head.kvs.clone().unwrap_or_default()),
                Kind::Delta => Content::Delta(head.ops.clone().unwrap_or_default()),
            });
        };
        let dir = self.keys.chunk_dir(head.revision, &chunks.id);
        let end = crate::etcd::prefix_end(dir.as_bytes());
        let (_, kvs) = read_range(&self.etcd, dir.into_bytes(), end, CHUNK_PAGE, Some(at)).await?;
        if kvs.len() != chunks.count as usize {
            return Err(corrupt(
                head.revision,
                &format!("{} of {} chunks found", kvs.len(), chunks.count),
            ));
        }
        let bad = |e: serde_json::Error| corrupt(head.revision, &format!("bad chunk: {e}"));
        Ok(match head.kind {
            Kind::Full => {
                let mut all = Vec::with_capacity(head.keys);
                for kv in &kvs {
                    all.extend(serde_json::from_slice::<Vec<(Raw, Raw)>>(kv.value()).map_err(bad)?);
                }
                Content::Full(all)
            }
            Kind::Delta => {
                let mut all = Vec::new();
                for kv in &kvs {
                    all.extend(serde_json::from_slice::<Vec<Op>>(kv.value()).map_err(bad)?);
                }
                Content::Delta(all)
            }
        })
    }

    /// Prunes if the history is over its limits (one cheap read otherwise). Returns the number
    /// of versions deleted.
    pub(crate) async fn maybe_prune(
        &self,
        keep: usize,
        max_age: Option<Duration>,
    ) -> Result<usize> {
        let (start, end) = self.digit_range();
        let resp = self
            .client
            .clone()
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
        if over || old {
            self.prune(keep, max_age).await
        } else {
            Ok(0)
        }
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
        let mut client = self.client.clone();
        for batch in doomed.chunks(PRUNE_BATCH) {
            let mut ops = Vec::with_capacity(batch.len() * 2);
            for &revision in batch {
                ops.push(TxnOp::delete(self.keys.version(revision), None));
                ops.push(TxnOp::delete(
                    self.keys.chunk_revision_dir(revision),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
            client
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| Error::etcd("pruning history", e))?;
        }
        tracing::debug!(prefix = %self.keys.prefix(), pruned = doomed.len(), kept = kept.len(), "pruned history");
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
        let content = self.full_content(&state);
        let new_id = if content_len(&content)? <= INLINE_BYTES {
            if let Content::Full(kvs) = content {
                head.kvs = Some(kvs);
            }
            None
        } else {
            let id = nonce();
            let count = self.write_chunks(revision, &id, &content).await?;
            head.chunks = Some(ChunkRef {
                id: id.clone(),
                count,
            });
            Some(id)
        };
        let key = self.keys.version(revision);
        let value = serde_json::to_vec(&head).map_err(encode_error)?;
        let resp = self
            .client
            .clone()
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

fn parse_head(bytes: &[u8]) -> Result<Head> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(ErrorKind::Etcd, format!("unreadable history record: {e}")).with_source(e)
    })
}

fn corrupt(revision: i64, what: &str) -> Error {
    Error::new(
        ErrorKind::Etcd,
        format!("history record of version {revision} is damaged: {what}"),
    )
    .with_revision(revision)
}

fn encode_error(e: serde_json::Error) -> Error {
    Error::new(ErrorKind::Etcd, format!("encoding a history record: {e}")).with_source(e)
}

fn content_len(content: &Content) -> Result<usize> {
    let len = match content {
        Content::Full(kvs) => serde_json::to_vec(kvs),
        Content::Delta(ops) => serde_json::to_vec(ops),
    }
    .map_err(encode_error)?
    .len();
    Ok(len)
}

/// JSON arrays of the items, each at most [`CHUNK_BYTES`] unless one item alone is bigger.
fn chunk_texts<E: Serialize>(items: &[E]) -> Result<Vec<String>> {
    let mut chunks = Vec::new();
    let mut current = String::from("[");
    for item in items {
        let text = serde_json::to_string(item).map_err(encode_error)?;
        if current.len() > 1 && current.len() + text.len() + 2 > CHUNK_BYTES {
            current.push(']');
            chunks.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&text);
    }
    current.push(']');
    chunks.push(current);
    Ok(chunks)
}

/// A unique id for one attempt to write chunks.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_on_size_and_stay_json_arrays() {
        let items: Vec<(Raw, Raw)> = (0..3000)
            .map(|i| (Raw(format!("k{i}").into_bytes()), Raw(vec![b'x'; 400])))
            .collect();
        let texts = chunk_texts(&items).unwrap();
        assert!(texts.len() >= 3, "{}", texts.len());
        let mut total = 0;
        for t in &texts {
            assert!(t.len() <= CHUNK_BYTES);
            total += serde_json::from_str::<Vec<(Raw, Raw)>>(t).unwrap().len();
        }
        assert_eq!(total, 3000);
        assert_eq!(chunk_texts::<Op>(&[]).unwrap(), vec!["[]".to_string()]);
    }
}
