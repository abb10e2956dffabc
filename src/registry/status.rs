//! Where a registration stands: [`RegistrationState`], the [`RegistrationStatus`] at one moment,
//! and [`StatusWatch`] to follow it.

use std::time::Duration;

use tokio::sync::watch;

use super::changes::Changes;
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

/// A registration's state at one moment, from
/// [`Registration::status`](super::Registration::status) and [`StatusWatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// Where the registration stands.
    pub state: RegistrationState,
    /// The current lease id (a re-registration changes it).
    pub lease_id: i64,
    /// The lease TTL etcd granted (whole seconds; etcd may raise tiny TTLs to its minimum, so
    /// it can exceed the requested [`with_lease_ttl`](super::RegistrationBuilder::with_lease_ttl)).
    pub granted_ttl: Duration,
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
///
/// [`next`](Self::next) returns each change after the last one it returned (or after the
/// watch was made); changes made faster than they are read coalesce into the latest. With the
/// `stream` feature it is also a `futures_core::Stream` of [`RegistrationStatus`] with the same
/// items. Cloning gives a watch that has seen what this one has seen.
#[derive(Clone, Debug)]
pub struct StatusWatch {
    pub(super) status: Changes<RegistrationStatus>,
}

impl StatusWatch {
    pub(super) fn new(status: watch::Receiver<RegistrationStatus>) -> Self {
        StatusWatch {
            status: Changes::new(status),
        }
    }

    /// The current status (seen or not; it does not affect [`next`](Self::next)).
    pub fn current(&self) -> RegistrationStatus {
        self.status.latest()
    }

    /// Waits for the next change and returns the status after it; `None` once the
    /// registration's task has ended (after deregistration) and the final status has been
    /// returned.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped call loses no change; the next call returns it.
    pub async fn next(&mut self) -> Option<RegistrationStatus> {
        self.status.next().await
    }

    /// Waits until `condition` holds (at once if it already does for the current status) and
    /// returns that status; `None` if the task ended without it holding. Later calls to
    /// [`next`](Self::next) return changes after the status returned here.
    ///
    /// # Cancel safety
    /// Cancel-safe, except that statuses the condition already rejected count as seen: the
    /// next [`next`](Self::next) does not return them.
    pub async fn wait_for(
        &mut self,
        mut condition: impl FnMut(&RegistrationStatus) -> bool,
    ) -> Option<RegistrationStatus> {
        self.status
            .receiver()
            .wait_for(|s| condition(s))
            .await
            .ok()
            .map(|s| s.clone())
    }
}

#[cfg(feature = "stream")]
impl futures_core::Stream for StatusWatch {
    type Item = RegistrationStatus;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RegistrationStatus>> {
        self.get_mut().status.poll_next(cx)
    }
}
