//! [`Registration`]: the handle of a registered instance, and the commands it sends to the
//! registration's background task (which owns every write, see `registrar.rs`).

use std::fmt;

use tokio::sync::{mpsc, oneshot, watch};

use super::instance::Health;
use super::status::{RegistrationStatus, StatusWatch};
use crate::error::{Error, ErrorKind, Result};

/// A registered instance. Its lease is kept alive in the background every TTL/3; if the lease
/// is lost (a partition longer than the TTL, a revoke) the instance registers itself again on
/// a new lease, logs a warning and counts it in [`RegistrationStatus::reregistrations`].
///
/// The registration also watches its own two keys. If one is deleted while the lease is alive
/// (an operator's `etcdctl del`), it writes the keys back, logs a warning and counts it in
/// [`RegistrationStatus::restored_keys`]. If the status key is written on another lease (a
/// registration with the same service and id took over), it becomes
/// [`RegistrationState::Superseded`](super::RegistrationState::Superseded) at once.
///
/// It also follows its drain-request key: when an operator calls
/// [`Registry::request_drain`](super::Registry::request_drain) for this instance, it sets its own
/// health to [`Health::Draining`] as [`set_health`](Self::set_health) would.
///
/// Dropping the handle deregisters in the background (the keys are deleted at once if etcd is
/// reachable, otherwise they expire with the lease). Must be created inside a Tokio runtime.
pub struct Registration {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) status: watch::Receiver<RegistrationStatus>,
    pub(super) status_key: String,
    pub(super) resolver_key: String,
    pub(super) done: bool,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("status_key", &self.status_key)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Deregister(None));
        }
    }
}

impl Registration {
    async fn update(&self, update: Update) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Update(update, tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Sets the manual health and writes it (one transaction: the status record, and the
    /// resolver key put or deleted). [`Health::Draining`] and [`Health::Unhealthy`] take the
    /// instance out of the resolver key space and out of every live view's picks; `Healthy`
    /// brings it back unless a health check is failing.
    ///
    /// # Errors
    /// The etcd error kinds if the write fails (the change is kept and written once etcd is
    /// reachable again); [`ErrorKind::Unavailable`] while the lease is lost and being replaced
    /// (the change goes in with the new registration); [`ErrorKind::Conflict`] if another
    /// registration took the id over; [`ErrorKind::Closed`] after deregistration.
    ///
    /// # Cancel safety
    /// The change is handed to the registration's background task at the first poll; dropping
    /// the future after that does not stop the write, only the result is lost.
    pub async fn set_health(&self, health: Health) -> Result<()> {
        self.update(Update::Health(health)).await
    }

    /// Sets the weight (relative; `0` = no traffic) and writes it.
    ///
    /// # Errors
    /// As [`set_health`](Self::set_health).
    ///
    /// # Cancel safety
    /// As [`set_health`](Self::set_health).
    pub async fn set_weight(&self, weight: u32) -> Result<()> {
        self.update(Update::Weight(weight)).await
    }

    /// Replaces the metadata and writes it.
    ///
    /// # Errors
    /// As [`set_health`](Self::set_health).
    ///
    /// # Cancel safety
    /// As [`set_health`](Self::set_health).
    pub async fn set_metadata(&self, metadata: serde_json::Value) -> Result<()> {
        self.update(Update::Metadata(metadata)).await
    }

    /// Revokes the lease, which deletes both keys at once, and stops the keepalive and any
    /// health check.
    ///
    /// # Errors
    /// The etcd error kinds if the revoke fails; keepalives have stopped, so the keys then
    /// expire within the TTL. [`ErrorKind::Closed`] if the background task is gone.
    ///
    /// # Cancel safety
    /// Deregistration happens whether or not the future completes: from the first poll the
    /// background task has been told to deregister (and an unpolled future drops the handle,
    /// which deregisters too); dropping the future only loses the result.
    pub async fn deregister(mut self) -> Result<()> {
        self.done = true;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Deregister(Some(tx)))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// The current state, lease, health, re-registration and write-back counts.
    pub fn status(&self) -> RegistrationStatus {
        self.status.borrow().clone()
    }

    /// The current lease id.
    pub fn lease_id(&self) -> i64 {
        self.status.borrow().lease_id
    }

    /// A watch on [`status`](Self::status), to react to re-registrations or health flips:
    /// its [`next`](StatusWatch::next) returns the changes made after this call.
    pub fn status_watch(&self) -> StatusWatch {
        let mut status = self.status.clone();
        status.borrow_and_update();
        StatusWatch::new(status)
    }

    /// The status key: `<ns><status prefix>/<service>/<id>`.
    pub fn status_key(&self) -> &str {
        &self.status_key
    }

    /// The resolver key: `<ns><resolver prefix>/<service>/<id>` (present only while serving).
    pub fn resolver_key(&self) -> &str {
        &self.resolver_key
    }
}

pub(super) fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the registration's task has stopped")
}

/// A change of what is registered.
pub(super) enum Update {
    /// The manual health.
    Health(Health),
    /// The weight.
    Weight(u32),
    /// The metadata.
    Metadata(serde_json::Value),
}

/// What the handle asks the background task to do.
pub(super) enum Command {
    /// Write a change; the result is sent back.
    Update(Update, oneshot::Sender<Result<()>>),
    /// A health check flipped (`true` = passing).
    Checked(bool),
    /// Revoke the lease and stop; the result is sent back if asked for.
    Deregister(Option<oneshot::Sender<Result<()>>>),
}
