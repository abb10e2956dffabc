//! Reading versions back: one record, the newest, the listing, and a version's whole key set
//! (its record, or a delta record applied over the chain down to a full one, every read pinned
//! at one revision so a concurrent pruner cannot tear the chain).

use std::collections::BTreeMap;

use etcd_client::{GetOptions, SortOrder, SortTarget};

use super::record::{absolute_kvs, corrupt, parse_head, Content, Head, Intent, Kind, Op};
use super::store::{Kvs, Store, StoredKvs};
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::read_range;

/// Records per page when listing (a record is at most ~33 KiB; tonic decodes up to 4 MiB).
const HEAD_PAGE: i64 = 64;

impl Store {
    fn not_found(&self, revision: i64) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "version {revision} of `{}` not found: pruned, or never recorded",
                self.keys().prefix()
            ),
        )
        .with_revision(revision)
    }

    /// The intent written in exactly `revision`, if any (`None` also if that revision was
    /// compacted: the change then counts as external).
    pub(crate) async fn intent_at(&self, revision: i64) -> Option<Intent> {
        let resp = self
            .client()
            .get(
                self.keys().intent(),
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

    /// The record of `revision` and its `mod_revision`, read at `at` (or now).
    pub(crate) async fn head_at(
        &self,
        revision: i64,
        at: Option<i64>,
    ) -> Result<Option<(Head, i64)>> {
        let options = at.map(|r| GetOptions::new().with_revision(r));
        let resp = self
            .client()
            .get(self.keys().version(revision), options)
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
            .client()
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
            .map_err(|e| {
                Error::etcd("reading the latest version", e).needs(
                    Permission::Read,
                    &self.keys().root_label(),
                    self.keys().root(),
                )
            })?;
        for kv in resp.kvs() {
            if self.keys().parse_version(kv.key()).is_some() {
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
    pub(crate) fn digit_range(&self) -> (String, String) {
        (
            format!("{}0", self.keys().versions()),
            format!("{}:", self.keys().versions()),
        )
    }

    /// Every record (content dropped) with its `mod_revision`, oldest first, read at one
    /// revision (`at`, or the current one, returned).
    pub(crate) async fn list(&self, at: Option<i64>) -> Result<(i64, Vec<(Head, i64)>)> {
        let (start, end) = self.digit_range();
        let (revision, kvs) = read_range(
            self.etcd(),
            start.into_bytes(),
            end.into_bytes(),
            HEAD_PAGE,
            at,
        )
        .await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            if self.keys().parse_version(kv.key()).is_none() {
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

    /// The key set a rollback to version `revision` writes, given the `current` one (full
    /// keys): the recorded values, secrets decrypted, and the current value of a secret the
    /// record does not hold (see [`Sealing::restore`](super::sealing::Sealing::restore)).
    ///
    /// # Errors
    /// As [`state_at`](Self::state_at); [`ErrorKind::InvalidArgument`] naming the key id for a
    /// secret encrypted with a key this store was not given.
    pub(crate) async fn restore_at(&self, revision: i64, current: &Kvs) -> Result<Kvs> {
        let (head, stored) = self.state_at(revision).await?;
        self.sealing().restore_state(
            self.keys().prefix(),
            head.revision,
            &head.secrets,
            &stored,
            current,
        )
    }

    /// The key set at version `revision` as views see it (see
    /// [`Sealing::view`](super::sealing::Sealing::view)): with `decrypt`, sealed secrets this
    /// store has the key for are decrypted so that a diff can compare them.
    ///
    /// # Errors
    /// As [`state_at`](Self::state_at).
    pub(crate) async fn view_at(&self, revision: i64, decrypt: bool) -> Result<(Head, Kvs)> {
        let (head, stored) = self.state_at(revision).await?;
        let kvs = self
            .sealing()
            .view_state(self.keys().prefix(), &head.secrets, &stored, decrypt);
        Ok((head, kvs))
    }

    /// The key set at version `revision` (full keys) as its records hold it, and its record.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown or pruned version (or one whose delta chain lost
    /// a record); etcd errors.
    pub(crate) async fn state_at(&self, revision: i64) -> Result<(Head, StoredKvs)> {
        // Pin every read at one revision: a concurrent pruner cannot tear the chain.
        let resp = self
            .client()
            .get(self.keys().version(revision), None)
            .await
            .map_err(|e| Error::etcd(format_args!("reading version {revision}"), e))?;
        let at = resp.header().map_or(0, |h| h.revision());
        let head = match resp.kvs().first() {
            Some(kv) => parse_head(kv.value())?,
            None => return Err(self.not_found(revision)),
        };
        if head.kind == Kind::Full {
            let kvs = match self.content(&head, at).await? {
                Content::Full(kvs) => absolute_kvs(self.keys(), kvs),
                Content::Delta(_) => return Err(corrupt(revision, "full record holds ops")),
            };
            return Ok((head, kvs));
        }
        let (_, range) = read_range(
            self.etcd(),
            self.keys()
                .version(head.checkpoint.min(revision))
                .into_bytes(),
            self.keys().version(revision).into_bytes(),
            HEAD_PAGE,
            Some(at),
        )
        .await?;
        let mut by_revision: BTreeMap<i64, Head> = range
            .iter()
            .filter_map(|kv| {
                let r = self.keys().parse_version(kv.key())?;
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
                                self.keys().prefix()
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
        let mut kvs = StoredKvs::new();
        for record in chain.iter().rev() {
            match self.content(record, at).await? {
                Content::Full(full) => kvs = absolute_kvs(self.keys(), full),
                Content::Delta(ops) => {
                    for op in ops {
                        match op {
                            Op::Put { put, value } => {
                                kvs.insert(self.keys().absolute(&put.0), value);
                            }
                            Op::Del { del } => {
                                kvs.remove(&self.keys().absolute(&del.0));
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
}
