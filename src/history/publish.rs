//! [`Config::publish`]: validate a whole value, write it as keys under the prefix, record it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::diff::{self, MASK};
use super::layout::layout;
use super::record::{Meta, Version, VersionSource};
use super::recorder::Shared;
use super::store::Kvs;
use super::write::{write_guarded, Recording};
use crate::config::{Config, CoordConfig, StringFields};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::read_range;

/// How long a publish or rollback waits for the handle's history to reach the handle's current
/// snapshot (it normally already has).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(5);

/// The handle's history state.
pub(crate) fn tracker<T: CoordConfig>(config: &Config<T>) -> Result<&Arc<Shared<T>>> {
    config.history_slot().get().ok_or_else(|| {
        Error::new(
            ErrorKind::Closed,
            format!("`{}` has no history tracker", config.prefix()),
        )
    })
}

/// How a writer through a typed handle records and prunes.
pub(crate) fn recording<T: CoordConfig>(shared: &Shared<T>) -> Recording {
    let settings = &shared.settings;
    Recording {
        max_txn_ops: settings.max_txn_ops,
        record: settings.enabled,
        prune: settings
            .enabled
            .then_some((settings.keep, settings.max_age)),
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

impl<T: CoordConfig> Config<T> {
    /// Publishes `value` as the new configuration: validates it, writes it as keys under the
    /// prefix (one key per leaf field, see `docs/history.md`), deletes the keys that no longer
    /// belong, and records the version with `author` and `comment` (source `publish`).
    ///
    /// Validation is what every reload does: serde round trip, the JSON Schema constraints and
    /// `T::validate`; nothing is written if it fails. The write is one etcd transaction guarded
    /// by the last revision this handle processed (applied or rejected, so a publish can replace
    /// a bad value sitting in etcd): if anything changed the prefix since, it fails with
    /// [`ErrorKind::Conflict`] and writes nothing. Every instance then hot-reloads the new
    /// version through its watch. Only the etcd layer is written: a field set by an instance's
    /// file or environment layer still wins there. To guard with the revision of the snapshot
    /// the value was derived from, use [`publish_at`](Config::publish_at).
    ///
    /// Returns the new version, or `None` if the prefix already holds exactly these keys
    /// (nothing is written). A value with more keys than fit in one transaction (etcd's 128
    /// operations or 1.5 MiB) is written in guarded batches (see [`Version::batch`]).
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] naming the field (secret values masked);
    /// [`ErrorKind::Conflict`] if the prefix changed concurrently; [`ErrorKind::Unavailable`]
    /// if the handle's history has not caught up within 5 s; etcd errors.
    pub async fn publish(&self, value: &T, author: &str, comment: &str) -> Result<Option<Version>> {
        self.publish_guarded(None, value, author, comment).await
    }

    /// Like [`publish`](Config::publish), guarded by `revision`: typically
    /// `snapshot.revision()` of the snapshot `value` was derived from, so a change made after
    /// it by anyone (even one this handle rejected) fails the publish with
    /// [`ErrorKind::Conflict`] instead of being overwritten.
    ///
    /// # Errors
    /// As [`publish`](Config::publish); [`ErrorKind::Compacted`] if `revision` is older than
    /// both the handle's view and etcd's compaction.
    pub async fn publish_at(
        &self,
        revision: i64,
        value: &T,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        self.publish_guarded(Some(revision), value, author, comment)
            .await
    }

    async fn publish_guarded(
        &self,
        revision: Option<i64>,
        value: &T,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        self.check_value(value)?;
        let shared = tracker(self)?;
        let json = serde_json::to_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Validation,
                format!("value does not serialize: {e}"),
            )
        })?;
        let fields = StringFields::new(self.schema().clone());
        let target = target_for(
            self.prefix(),
            &json,
            &fields,
            shared.max_value_bytes,
            T::SECRETS,
        )?;
        let wanted = revision.unwrap_or_else(|| self.load().revision());
        let view = shared.view_at_least(wanted, CATCH_UP).await?;
        let (base, seen, prev) = match revision {
            Some(r) if r != view.revision => {
                // The key set as of the caller's revision: the guard then catches any put or
                // delete after it.
                let keys = shared.store.keys();
                let (_, kvs) = read_range(
                    &shared.store.client(),
                    keys.prefix().as_bytes().to_vec(),
                    keys.prefix_end(),
                    1000,
                    Some(r),
                )
                .await?;
                let kvs: Kvs = kvs.into_iter().map(|kv| kv.into_key_value()).collect();
                (r, Arc::new(kvs), None)
            }
            _ => (view.revision, view.kvs, view.prev),
        };
        write_guarded(
            &shared.store,
            base,
            &seen,
            &target,
            Meta::new(VersionSource::Publish, author, comment),
            prev,
            recording(shared),
        )
        .await
    }
}
