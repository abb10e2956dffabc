//! Fixed configs: a [`ConfigHandle`] made from a value, without etcd, for unit tests of code that
//! takes a `ConfigHandle<T>`.

use std::sync::Arc;

use super::check::Checker;
use super::coord_config::CoordConfig;
use super::event::{ConfigEvent, Rejection, ReloadCause};
use super::handle::{ConfigHandle, FixedParts};
use super::snapshot::Snapshot;
use super::status::{ConfigStatus, WatchState};
use crate::error::{Error, ErrorKind, Result};
use crate::provenance::Sources;

/// How many events a fixed handle's subscribers may fall behind by.
const FIXED_EVENT_CAPACITY: usize = 64;

impl<T: CoordConfig> ConfigHandle<T> {
    /// A handle that serves `value` without etcd, a file or the environment: for unit tests of
    /// code that takes a `ConfigHandle<T>`. `load`, `map`, `subscribe` and `status` work as on a
    /// bound handle (status [`WatchState::Fixed`], revision 0, every field's source the default
    /// layer); [`set_fixed`](Self::set_fixed) pushes a new value as a reload would. History,
    /// publish and rollback return [`ErrorKind::InvalidArgument`]. Needs no Tokio runtime.
    ///
    /// ```
    /// # use coordination::{ConfigHandle, CoordConfig};
    /// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, CoordConfig)]
    /// #[coord(prefix = "/apps/chat/config")]
    /// struct ChatConfig { port: u16 }
    ///
    /// let cfg = ConfigHandle::fixed(ChatConfig { port: 8080 }).unwrap();
    /// assert_eq!(cfg.load().port, 8080);
    /// cfg.set_fixed(ChatConfig { port: 9090 }).unwrap();
    /// assert_eq!(cfg.load().port, 9090);
    /// assert_eq!(cfg.load().generation(), 2);
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] if `value` breaks the type's JSON Schema or `validate()`.
    pub fn fixed(value: T) -> Result<ConfigHandle<T>> {
        let checker = Arc::new(Checker::<T>::new()?);
        checker.check_value(&value)?;
        let snapshot = Snapshot::new(value, 0, 1, Sources::default(), ReloadCause::Initial);
        let status = ConfigStatus::new(WatchState::Fixed, 0, None);
        Ok(ConfigHandle::without_etcd(
            snapshot,
            status,
            checker,
            FIXED_EVENT_CAPACITY,
        ))
    }

    /// Replaces a fixed handle's value as a reload would: the value is checked, swapped in as a
    /// new snapshot (next generation, [`ReloadCause::Fixed`]) and sent to subscribers as
    /// [`ConfigEvent::Applied`]; a value that does not validate is sent as
    /// [`ConfigEvent::Rejected`] and the previous snapshot keeps serving.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] for a value that does not validate;
    /// [`ErrorKind::InvalidArgument`] on a handle bound to etcd.
    pub fn set_fixed(&self, value: T) -> Result<()> {
        let Some(FixedParts {
            current,
            events,
            checker,
        }) = self.fixed_parts()
        else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "set_fixed needs a handle made by ConfigHandle::fixed; a bound handle follows etcd",
            ));
        };
        let serving = current.load_full();
        if let Err(error) = checker.check_value(&value) {
            let _ = events.send(ConfigEvent::Rejected(Arc::new(Rejection {
                cause: ReloadCause::Fixed,
                error: error.clone(),
                serving_revision: serving.revision(),
            })));
            return Err(error);
        }
        let snapshot = Arc::new(Snapshot::new(
            value,
            0,
            serving.generation() + 1,
            Sources::default(),
            ReloadCause::Fixed,
        ));
        current.store(Arc::clone(&snapshot));
        let _ = events.send(ConfigEvent::Applied(snapshot));
        Ok(())
    }
}
