//! [`Draft`]: a copy of one snapshot's value to change and publish, guarded by that snapshot.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::record::Version;
use crate::config::{ConfigHandle, CoordConfig, Snapshot};
use crate::error::Result;

/// A change to a bound config in the making: a copy of the value of the snapshot it was taken
/// from ([`ConfigHandle::draft`]), which it derefs to, and that snapshot.
///
/// [`publish`](Draft::publish) writes only the fields that differ from the snapshot, guarded by
/// the snapshot's revision: if anyone changed the prefix after it, the publish fails with
/// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) and writes nothing, so a read-modify-write
/// never silently reverts a change it did not see. Take a new draft then (or use
/// [`ConfigHandle::update`], which does that for you).
///
/// ```no_run
/// # use coordination::CoordConfig;
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
/// # #[coord(prefix = "/apps/chat/config")]
/// # struct ChatConfig { port: u16, pool: u32 }
/// # async fn run(cfg: coordination::ConfigHandle<ChatConfig>) -> coordination::Result<()> {
/// let mut draft = cfg.draft();
/// draft.pool += 10;
/// match draft.publish("alice", "more connections").await {
///     Ok(version) => println!("published {version:?}"),
///     Err(e) if e.kind() == coordination::ErrorKind::Conflict => println!("changed meanwhile: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub struct Draft<T: CoordConfig> {
    config: ConfigHandle<T>,
    base: Arc<Snapshot<T>>,
    value: T,
}

impl<T: CoordConfig + Clone> Draft<T> {
    pub(crate) fn new(config: ConfigHandle<T>, base: Arc<Snapshot<T>>) -> Self {
        let value = base.value().clone();
        Draft {
            config,
            base,
            value,
        }
    }
}

impl<T: CoordConfig> Draft<T> {
    /// The snapshot this draft was taken from (its revision guards the publish).
    pub fn base(&self) -> &Arc<Snapshot<T>> {
        &self.base
    }

    /// The changed value.
    pub fn into_value(self) -> T {
        self.value
    }

    /// Validates the changed value as a reload would (JSON Schema constraints, then
    /// `T::validate`), then writes the keys of exactly the fields that differ from the base
    /// snapshot, and records the version with `author` and `comment` (source `publish`).
    ///
    /// A changed field's keys are replaced by its layout (one key per leaf, see
    /// `docs/history.md`); a field that is gone (a removed map entry) has its keys deleted; no
    /// other key is touched. Fields the draft did not change keep coming from wherever they
    /// come from on each instance (etcd, the instance's file, the default): unlike
    /// [`ConfigHandle::publish_at`], a patch does not copy this instance's file values and defaults
    /// into etcd. A changed field that this instance's environment layer sets still shows the
    /// environment's value here.
    ///
    /// The write is one transaction guarded by the base snapshot's revision (or several guarded
    /// batches for a change of more than 127 keys). Returns the new version, or `None` if
    /// nothing changed (nothing is written).
    ///
    /// # Errors
    /// [`ErrorKind::Validation`](crate::ErrorKind::Validation) naming the field (secret values
    /// masked); [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) if the prefix changed after
    /// the base snapshot; [`ErrorKind::Compacted`](crate::ErrorKind::Compacted) if the base
    /// revision was compacted and the handle has moved on;
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) if the handle's history has not
    /// caught up within 5 s; etcd errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after its transaction was sent, the change may or may not have
    /// been written.
    pub async fn publish(&self, author: &str, comment: &str) -> Result<Option<Version>> {
        self.config
            .publish_patch(&self.base, &self.value, author, comment)
            .await
    }
}

impl<T: CoordConfig> Deref for Draft<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: CoordConfig> DerefMut for Draft<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: CoordConfig + fmt::Debug> fmt::Debug for Draft<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draft")
            .field("prefix", &self.config.prefix())
            .field("base_revision", &self.base.revision())
            .field("value", &self.value)
            .finish()
    }
}
