//! Where a registration stands: [`RegistrationState`], the [`RegistrationStatus`] snapshot,
//! and [`StatusWatch`] to follow it.

use tokio::sync::watch;

use super::instance::Health;

/// Where a [`Registration`](super::Registration) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The keys are in etcd and the lease is being kept alive.
    Registered,
    /// Keepalives are failing (etcd down or unreachable); the lease may still be alive. The
    /// task retries with backoff and re-registers if the lease turns out to be gone.
    Reconnecting,
    /// The lease was lost (expired or revoked, so the keys are gone); the task is registering
    /// the instance again on a new lease.
    Reregistering,
    /// Another registration with the same service and id took the keys over; this handle no
    /// longer writes anything. Noticed from the watch of the status key as soon as the other
    /// registration writes it (or at this handle's next write, whichever comes first).
    Superseded,
    /// Deregistered (explicitly or by dropping the handle).
    Deregistered,
}

/// A snapshot of a [`Registration`](super::Registration)'s state, from
/// [`Registration::status`](super::Registration::status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// Where the registration stands.
    pub state: RegistrationState,
    /// The current lease id (a re-registration changes it).
    pub lease_id: i64,
    /// The TTL etcd granted, in seconds (etcd may raise tiny TTLs to its minimum).
    pub ttl_secs: i64,
    /// The health written to etcd (or to be written): a manual [`Health::Draining`] or
    /// [`Health::Unhealthy`] wins, otherwise `Unhealthy` while a health check fails.
    pub health: Health,
    /// How many times the instance re-registered itself after losing its lease.
    pub reregistrations: u64,
    /// How many times the registration wrote its keys back after finding them deleted while
    /// its lease was alive (an operator's `etcdctl del`, or a registration with the same id
    /// that took the keys over and then went away unseen). Each write-back also logs a
    /// warning. A deletion with the lease is not counted here: that is a re-registration.
    pub restored_keys: u64,
    /// The etcd revision of the last write of the instance's keys.
    pub revision: i64,
}

/// Follows a [`Registration`](super::Registration)'s [`RegistrationStatus`]. From
/// [`Registration::status_watch`](super::Registration::status_watch).
#[derive(Clone, Debug)]
pub struct StatusWatch {
    pub(super) status: watch::Receiver<RegistrationStatus>,
}

impl StatusWatch {
    /// The current status.
    pub fn current(&self) -> RegistrationStatus {
        self.status.borrow().clone()
    }

    /// Waits for the next change and returns it; `None` once the registration's task has ended
    /// (after deregistration) and the final status has been seen.
    pub async fn changed(&mut self) -> Option<RegistrationStatus> {
        self.status.changed().await.ok()?;
        Some(self.status.borrow_and_update().clone())
    }

    /// Waits until `condition` holds (at once if it already does); `None` if the task ended
    /// without it holding.
    pub async fn wait_for(
        &mut self,
        mut condition: impl FnMut(&RegistrationStatus) -> bool,
    ) -> Option<RegistrationStatus> {
        self.status
            .wait_for(|s| condition(s))
            .await
            .ok()
            .map(|s| s.clone())
    }
}
