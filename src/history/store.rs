//! The history of one prefix in etcd ([`Store`]) and creating version records
//! (create-if-absent, so any number of instances record each revision once).
//!
//! The store's other parts have their own modules: the record format and its encoding in
//! [`record`](super::record), big content in [`chunks`](super::chunks), reading versions back
//! in [`read`](super::read), pruning in [`retention`](super::retention).
//!
//! # Big prefixes
//! etcd refuses requests over 1.5 MiB and transactions over 128 operations, so a record never
//! holds more than 32 KiB inline: bigger content goes to chunk keys of at most 512 KiB each,
//! written before the record (the record names them, so a half-written attempt is never read).
//! A prefix whose key set is over 32 KiB is recorded as **deltas** (the writes of one revision,
//! against the previous version) between **full** records: a record is written full when the
//! delta bytes since the last full one would exceed the size of the key set, so the total size
//! of a chain stays under twice the key set and reading any version back costs at most that.

use std::collections::BTreeMap;
use std::time::Instant;

use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};

use super::chunks::INLINE_BYTES;
use std::sync::Arc;

use super::keys::Keys;
use super::observe::HistoryMetrics;
use super::record::{encode_error, parse_head, Content, Head, Intent, Kind, Meta, Stored, FORMAT};
use super::sealing::Sealing;
use crate::change::{Clock, SystemClock};
use crate::config::RawOp;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::Etcd;
use crate::telemetry::HISTORY_TARGET;

/// A prefix's key set: full etcd keys (namespace and prefix included) to values.
pub(crate) type Kvs = imbl::OrdMap<Vec<u8>, Vec<u8>>;

/// The `mod_revision`s of (some of) a key set's keys, full keys.
pub(crate) type Revs = imbl::OrdMap<Vec<u8>, i64>;

/// The `mod_revision`s of keys read from etcd.
pub(crate) fn revs_of(kvs: &[KeyValue]) -> Revs {
    kvs.iter()
        .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
        .collect()
}

/// A key set and the `mod_revision`s of its keys, where known (recorded with secret values, so
/// that a diff can tell an unchanged secret from one written since).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySet<'a> {
    pub(crate) kvs: &'a Kvs,
    pub(crate) revs: &'a Revs,
    /// `kvs`'s size as records count it ([`Store::state_bytes`]), known to the caller so that
    /// recording a revision of a big prefix does not scan it.
    pub(crate) bytes: u64,
}

/// A key set as records hold it: full keys to values, secrets kept out (see
/// [`sealing`](super::sealing)).
pub(crate) type StoredKvs = BTreeMap<Vec<u8>, Stored>;

/// Key sets up to this size (keys relative to the prefix, plus values) are always recorded full.
pub(crate) const SMALL_STATE_BYTES: u64 = 32 * 1024;

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

/// The history of one prefix in etcd.
#[derive(Clone)]
pub(crate) struct Store {
    etcd: Etcd,
    client: Client,
    keys: Keys,
    sealing: Arc<Sealing>,
    metrics: HistoryMetrics,
    /// The clock change windows are checked with.
    clock: Arc<dyn Clock>,
}

impl Store {
    /// The history of the prefix `keys` names, knowing no secrets (see
    /// [`with_sealing`](Self::with_sealing)).
    pub(crate) fn new(etcd: Etcd, keys: Keys) -> Self {
        Store {
            client: etcd.client().clone(),
            metrics: HistoryMetrics::new(keys.prefix()),
            etcd,
            keys,
            sealing: Arc::new(Sealing::none()),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same store, checking change windows by `clock`.
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock change windows are checked with.
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The same store, keeping secrets out of the records it writes as `sealing` says.
    pub(crate) fn with_sealing(mut self, sealing: Sealing) -> Self {
        self.sealing = Arc::new(sealing);
        self
    }

    /// How this store treats secret values.
    pub(crate) fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// The metrics of this prefix's history.
    pub(crate) fn metrics(&self) -> &HistoryMetrics {
        &self.metrics
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

    /// The size of a key set as recorded: keys relative to the prefix, plus values.
    pub(crate) fn state_bytes(&self, state: &Kvs) -> u64 {
        state
            .iter()
            .map(|(k, v)| (self.keys.relative(k).len() + v.len()) as u64)
            .sum()
    }

    /// `kvs` and `revs` as a [`KeySet`], its size counted by a scan.
    pub(crate) fn key_set<'a>(&self, kvs: &'a Kvs, revs: &'a Revs) -> KeySet<'a> {
        KeySet {
            kvs,
            revs,
            bytes: self.state_bytes(kvs),
        }
    }

    /// Applies `ops`, the writes of `revision`, to a key set (`kvs`, `revs`, and `bytes`, its
    /// size as [`state_bytes`](Self::state_bytes) counts it), without a scan.
    pub(crate) fn apply(
        &self,
        (kvs, revs, bytes): (&mut Kvs, &mut Revs, &mut u64),
        ops: &[RawOp],
        revision: i64,
    ) {
        let size = |k: &[u8], v: &[u8]| (self.keys.relative(k).len() + v.len()) as u64;
        for op in ops {
            let (k, old) = match op {
                RawOp::Put(k, v) => {
                    *bytes += size(k, v);
                    revs.insert(k.clone(), revision);
                    (k, kvs.insert(k.clone(), v.clone()))
                }
                RawOp::Delete(k) => {
                    revs.remove(k);
                    (k, kvs.remove(k))
                }
            };
            if let Some(old) = old {
                *bytes = bytes.saturating_sub(size(k, &old));
            }
        }
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
        state: KeySet<'_>,
        delta: Option<&[RawOp]>,
        meta: MetaFrom,
        prev: Option<Prev>,
        newer_than: Option<i64>,
    ) -> Result<Outcome> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            target: HISTORY_TARGET,
            "record",
            prefix = %self.keys.prefix(),
            revision
        );
        let started = Instant::now();
        let outcome = self
            .record_once(revision, state, delta, meta, prev, newer_than)
            .instrument(span)
            .await;
        self.metrics.recorded(started.elapsed(), &outcome);
        outcome
    }

    async fn record_once(
        &self,
        revision: i64,
        state: KeySet<'_>,
        delta: Option<&[RawOp]>,
        meta: MetaFrom,
        prev: Option<Prev>,
        newer_than: Option<i64>,
    ) -> Result<Outcome> {
        let KeySet {
            kvs: state,
            revs,
            bytes,
        } = state;
        debug_assert_eq!(bytes, self.state_bytes(state), "a key set's size drifted");
        let (kind, base, checkpoint, chain_bytes, content) = match (delta, prev) {
            (Some(ops), Some(p))
                if p.revision < revision
                    && bytes > SMALL_STATE_BYTES
                    && p.chain_bytes + self.delta_bytes(ops) <= bytes =>
            {
                (
                    Kind::Delta,
                    Some(p.revision),
                    p.checkpoint,
                    p.chain_bytes + self.delta_bytes(ops),
                    Content::delta(&self.keys, ops, revision, &self.sealing),
                )
            }
            _ => (
                Kind::Full,
                None,
                revision,
                0,
                Content::full(&self.keys, state, revs, &self.sealing),
            ),
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
            secrets: self.sealing.secrets().to_vec(),
            kvs: None,
            ops: None,
            chunks: None,
        };
        let key = self.keys.version(revision);
        let chunk_id = if content.json_len()? <= INLINE_BYTES {
            head.set_inline(content);
            None
        } else {
            // Skip the heavy write if another instance got there first.
            if let Some((existing, _)) = self.head_at(revision, None).await? {
                return Ok(Outcome::Existing(existing));
            }
            Some(self.write_chunks(revision, &mut head, &content).await?)
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
            let resp = self.client.clone().txn(txn).await.map_err(|e| {
                Error::etcd(format_args!("recording version {revision}"), e).needs(
                    Permission::ReadWrite,
                    &self.keys.root_label(),
                    self.keys.root(),
                )
            })?;
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
}
