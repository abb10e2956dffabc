//! Typed writes through a [`ConfigHandle`] handle: [`ConfigHandle::update`] and [`ConfigHandle::draft`] (only the
//! changed fields, guarded by the snapshot they were derived from), [`ConfigHandle::publish_at`] and
//! [`ConfigHandle::overwrite`] (a whole value). All validate first, write as keys under the prefix and
//! record the version.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::diff::{self, MASK};
use super::layout::layout;
use super::patch::{self, FieldPatch};
use super::record::{Meta, Version, VersionKind};
use super::recorder::Shared;
use super::store::{revs_of, Kvs, Prev, Revs};
use super::write::{write_guarded, Recording};
use crate::config::{ConfigHandle, CoordConfig, Snapshot, StringFields};
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::read_range;

/// How long a publish or rollback waits for the handle's history to reach the handle's current
/// snapshot (it normally already has).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(5);

/// The handle's history state.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a [fixed](ConfigHandle::fixed) handle, which has no etcd.
pub(crate) fn tracker<T: CoordConfig>(config: &ConfigHandle<T>) -> Result<&Arc<Shared<T>>> {
    config.tracker().map(|t| t.shared()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            "a fixed config (ConfigHandle::fixed) has no etcd prefix, so no history, publish or rollback",
        )
    })
}

/// How a writer through a typed handle records and prunes.
pub(crate) fn recording<T: CoordConfig>(shared: &Shared<T>) -> Recording {
    let options = &shared.options;
    Recording {
        max_txn_ops: shared.max_txn_ops,
        record: options.record,
        prune: options.record.then_some((options.keep, options.max_age)),
    }
}

/// The key set (full keys) publish writes for `json`, checked to read back as `json` under the
/// etcd layer's rules and to respect the per-key size limit.
pub(crate) fn target_for(
    prefix: &str,
    json: &Value,
    fields: &StringFields,
    max_value_bytes: usize,
    secrets: &[impl AsRef<str>],
) -> Result<Kvs> {
    let mut target = Kvs::new();
    for (rel, value) in layout(json) {
        let key = format!("{prefix}{rel}");
        if value.len() > max_value_bytes {
            return Err(Error::new(
                ErrorKind::Validation,
                format!(
                    "value is {} bytes, over the limit of {max_value_bytes} bytes per key",
                    value.len()
                ),
            )
            .with_field(rel.replace('/', "."))
            .with_key(key));
        }
        target.insert(key.into_bytes(), value);
    }
    let back = diff::document(prefix, &target, fields);
    if let Some(change) = diff::diff(json, &back, secrets).first() {
        let message = if change.secret {
            format!("secret field `{}` (value {MASK} not shown) does not read back from etcd as written", change.path)
        } else {
            format!("does not read back from etcd as written: {}", change)
        };
        return Err(Error::new(ErrorKind::Validation, message).with_field(change.path.clone()));
    }
    Ok(target)
}

/// How many times [`ConfigHandle::update`] re-runs its closure after a conflict.
pub(crate) const UPDATE_ATTEMPTS: u32 = 10;

/// What a guarded write starts from: the revision it is guarded by, the key set at that
/// revision, and the version record holding that key set (if known).
/// Writes `target` over `base` as one published version, guarded by `base`'s revision.
async fn publish_over<T: CoordConfig>(
    shared: &Shared<T>,
    base: Base,
    target: &Kvs,
    author: &str,
    comment: &str,
) -> Result<Option<Version>> {
    write_guarded(
        &shared.store,
        base.revision,
        shared.store.key_set(&base.kvs, &base.revs),
        target,
        Meta::new(VersionKind::Publish, author, comment),
        base.prev,
        recording(shared),
    )
    .await
}

struct Base {
    revision: i64,
    kvs: Arc<Kvs>,
    revs: Arc<Revs>,
    prev: Option<Prev>,
}

impl<T: CoordConfig + Clone> ConfigHandle<T> {
    /// Publishes only the fields `change` changes, re-running it on the fresh snapshot after a
    /// conflict, like etcd's STM: `cfg.update(|c| c.database.pool = 20, "alice", "more
    /// connections")`.
    ///
    /// Each attempt takes the current snapshot, applies `change` to a copy of its value,
    /// validates the result as a reload would (JSON Schema, `T::validate`) and writes the keys of
    /// the fields that differ from the snapshot (see [`Draft::publish`](crate::history::Draft::publish)),
    /// guarded by the snapshot's revision. If the prefix changed since, the attempt writes
    /// nothing; `update` waits until the handle has processed the newer revision and tries
    /// again, up to 10 attempts. `change` may thus run several times: keep it a pure function of
    /// its argument.
    ///
    /// Returns the new version, or `None` if `change` changed nothing that etcd does not already
    /// hold.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] naming the field (secret values masked; nothing written);
    /// [`ErrorKind::Conflict`] after 10 conflicting attempts, or when the newer revision was
    /// rejected by this handle (its snapshot cannot move on, so there is no fresh value to
    /// re-run `change` on); [`ErrorKind::Unavailable`] if the handle's history does not catch up
    /// within 5 s; etcd errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after its transaction was sent, the change may or may not have
    /// been written (look at [`history`](ConfigHandle::history)).
    pub async fn update<F>(
        &self,
        mut change: F,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>>
    where
        F: FnMut(&mut T),
    {
        let shared = tracker(self)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut draft = self.draft();
            change(&mut draft);
            let error = match draft.publish(author, comment).await {
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < UPDATE_ATTEMPTS => e,
                done => return done,
            };
            let base = draft.base().revision();
            shared.view_at_least(base + 1, CATCH_UP).await?;
            if self.load().revision() <= base {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{}; this handle rejected the newer change, so there is no fresh snapshot to apply the update to",
                        error.message()
                    ),
                )
                .with_revision(base));
            }
            tracing::debug!(prefix = %self.prefix(), base, attempt, "update conflicted; re-running it on the fresh snapshot");
        }
    }

    /// A copy of the current snapshot's value to change and then
    /// [`publish`](crate::history::Draft::publish): `let mut d = cfg.draft(); d.port = 9000;
    /// d.publish("alice", "move").await?`. The draft remembers the snapshot it was taken from,
    /// so a change to the prefix after it fails the publish with [`ErrorKind::Conflict`] instead
    /// of being overwritten. (`draft` and [`update`](ConfigHandle::update) need `T: Clone`: the draft
    /// is a copy.)
    pub fn draft(&self) -> crate::history::Draft<T> {
        crate::history::Draft::new(self.clone(), self.load_full())
    }
}

impl<T: CoordConfig> ConfigHandle<T> {
    /// Publishes `value` as a whole, guarded by `revision`: typically `snapshot.revision()` of
    /// the snapshot `value` was derived from, so a change made after it by anyone (even one this
    /// handle rejected) fails the publish with [`ErrorKind::Conflict`] instead of being
    /// overwritten.
    ///
    /// Unlike [`update`](ConfigHandle::update) and [`Draft::publish`](crate::history::Draft::publish), this
    /// writes **every** leaf field of `value` as a key under the prefix (one key per leaf, see
    /// `docs/history.md`), defaults and values that came from this instance's file or
    /// environment layer included, and deletes every other key. Those keys then set the fields
    /// on every instance, over their own files. Use it to make etcd hold a complete config.
    ///
    /// Validation is what every reload does: serde round trip, the JSON Schema constraints and
    /// `T::validate`; nothing is written if it fails. The write is one etcd transaction when it
    /// fits (etcd's 128 operations or 1.5 MiB), else guarded batches (see [`Version::batch`]).
    /// Every instance then hot-reloads the new version through its watch. Returns the new
    /// version, or `None` if the prefix already holds exactly these keys.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] naming the field (secret values masked);
    /// [`ErrorKind::Conflict`] if the prefix changed after `revision`;
    /// [`ErrorKind::Compacted`] if `revision` is older than both the handle's view and etcd's
    /// compaction; [`ErrorKind::Unavailable`] if the handle's history has not caught up within
    /// 5 s; etcd errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after its transaction was sent, the value may or may not have
    /// been written (look at [`history`](ConfigHandle::history)).
    pub async fn publish_at(
        &self,
        revision: i64,
        value: &T,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        self.publish_whole(Some(revision), value, author, comment)
            .await
    }

    /// Publishes `value` as a whole like [`publish_at`](ConfigHandle::publish_at), but guarded only by
    /// the last revision this handle processed when the call is made, **not** by the snapshot
    /// `value` came from: a change the handle applied between reading the value and this call is
    /// overwritten without a conflict. For replacing whatever is there (a value from a file, a
    /// bad value sitting in etcd: "last processed" includes rejected revisions). To change a
    /// config, use [`update`](ConfigHandle::update) or [`draft`](ConfigHandle::draft).
    ///
    /// # Errors
    /// As [`publish_at`](ConfigHandle::publish_at); [`ErrorKind::Conflict`] only for a change racing
    /// the call itself.
    ///
    /// # Cancel safety
    /// As [`publish_at`](ConfigHandle::publish_at).
    pub async fn overwrite(
        &self,
        value: &T,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        self.publish_whole(None, value, author, comment).await
    }

    async fn publish_whole(
        &self,
        revision: Option<i64>,
        value: &T,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        self.check_value(value)?;
        let shared = tracker(self)?;
        let json = to_json(value)?;
        let fields = StringFields::new(self.schema().clone());
        let target = target_for(
            self.prefix(),
            &json,
            &fields,
            shared.max_value_bytes,
            T::SECRETS,
        )?;
        let base = self.base(shared, revision).await?;
        publish_over(shared, base, &target, author, comment).await
    }

    /// Publishes the fields of `value` that differ from `snapshot`'s value, guarded by the
    /// snapshot's revision (what [`Draft::publish`](crate::history::Draft::publish) does).
    pub(crate) async fn publish_patch(
        &self,
        snapshot: &Snapshot<T>,
        value: &T,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        self.check_value(value)?;
        let shared = tracker(self)?;
        let patches: Vec<FieldPatch> =
            patch::changed_fields(&to_json(snapshot.value())?, &to_json(value)?);
        if patches.is_empty() {
            return Ok(None);
        }
        let base = self.base(shared, Some(snapshot.revision())).await?;
        let fields = StringFields::new(self.schema().clone());
        let target = patch::apply(
            self.prefix(),
            &base.kvs,
            &patches,
            &fields,
            shared.max_value_bytes,
            T::SECRETS,
        )?;
        publish_over(shared, base, &target, author, comment).await
    }

    /// The key set a write guarded by `revision` (`None`: the last revision the handle
    /// processed) starts from.
    ///
    /// For an older `revision`, the key set is read as of it, and compared with the handle's
    /// view of the prefix now: a key deleted since is a conflict here already, whether or not
    /// the transaction's own guard can see deletes (it cannot on a prefix with more keys than
    /// fit in its compares when no version was recorded for the delete).
    async fn base(&self, shared: &Shared<T>, revision: Option<i64>) -> Result<Base> {
        let wanted = revision.unwrap_or(0).max(self.load().revision());
        let view = shared.view_at_least(wanted, CATCH_UP).await?;
        let revision = match revision {
            Some(r) if r != view.revision => r,
            _ => {
                return Ok(Base {
                    revision: view.revision,
                    kvs: view.kvs,
                    revs: view.revs,
                    prev: view.prev,
                })
            }
        };
        let keys = shared.store.keys();
        let (_, kvs) = read_range(
            shared.store.etcd(),
            keys.prefix().as_bytes().to_vec(),
            keys.prefix_end(),
            1000,
            Some(revision),
        )
        .await?;
        let revs = revs_of(&kvs);
        let kvs: Kvs = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
        if kvs != *view.kvs {
            shared.store.metrics().conflicted(VersionKind::Publish);
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "`{}` changed after revision {revision}, the one this write was based on (this handle has seen revision {}): nothing was written; look at the new version and try again",
                    keys.prefix(),
                    view.revision
                ),
            )
            .with_revision(revision));
        }
        Ok(Base {
            revision,
            kvs: Arc::new(kvs),
            revs: Arc::new(revs),
            prev: view.prev,
        })
    }
}

fn to_json<T: CoordConfig>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| {
        Error::new(
            ErrorKind::Validation,
            format!("value does not serialize: {e}"),
        )
    })
}
