//! [`Registrar`]: the background task of one registration. It owns every write of the
//! instance's keys, stands on the crate's [`Lease`] for its keepalive, re-registers on a new
//! lease when that one is lost, writes its keys back when they are deleted under a live lease,
//! and stops writing once another registration took the id over.

use std::time::Duration;

use etcd_client::{Client, KeyValue};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::instance::{serving, Health, InstanceSpec};
use super::own_keys::{Guard, KeyWatch, OwnKeys, Seen, Which, Written};
use super::registration::{closed, Command, Update};
use super::status::{RegistrationState, RegistrationStatus};
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::lease::{Lease, LeaseLost, LeaseOptions, LeaseState, Unconfirmed};
use crate::etcd::{sleep_until_some, Backoff, Etcd};

/// How a registration's lease is granted: a registration's keys should stay while the lease
/// can be kept, so an unconfirmed window only makes it [`RegistrationState::Reconnecting`]
/// and the same lease is renewed until etcd confirms it or reports it gone.
pub(super) fn lease_options(lease_ttl: Duration) -> LeaseOptions {
    LeaseOptions {
        ttl: lease_ttl,
        margin: None,
        unconfirmed: Unconfirmed::KeepTrying,
    }
}

/// What [`Registrar::new`] needs: the registration as first written.
pub(super) struct Registered {
    pub(super) etcd: Etcd,
    pub(super) spec: InstanceSpec,
    pub(super) keys: OwnKeys,
    /// The requested lease TTL.
    pub(super) lease_ttl: Duration,
    pub(super) lease: Lease,
    pub(super) health: Health,
    /// The revision of the first write.
    pub(super) revision: i64,
}

/// The background task of one registration.
pub(super) struct Registrar {
    etcd: Etcd,
    client: Client,
    spec: InstanceSpec,
    label: String,
    keys: OwnKeys,
    /// The requested lease TTL, for new leases.
    lease_ttl: Duration,
    lease: Lease,
    lease_state: watch::Receiver<LeaseState>,
    /// A lease granted for a re-registration whose write has not been confirmed yet.
    pending: Option<Lease>,
    manual: Health,
    check_ok: bool,
    /// The desired state has not been written yet.
    dirty: bool,
    /// Keys found deleted under the live lease are being written back (counted once written).
    restoring: bool,
    state: RegistrationState,
    reregistrations: u64,
    restored_keys: u64,
    revision: i64,
    /// The `mod_revision` of the last operator drain request followed (0: none).
    drain_request: i64,
    status: watch::Sender<RegistrationStatus>,
    /// The watch of the instance's own keys (dropped once superseded).
    watch: Option<KeyWatch>,
    /// When to try re-registering again.
    retry_at: Option<Instant>,
    backoff: Backoff,
    pub(super) check_task: Option<JoinHandle<()>>,
}

impl Registrar {
    /// The task of a registration just written at `registered.revision`, and the receiver of
    /// its status.
    pub(super) fn new(registered: Registered) -> (Self, watch::Receiver<RegistrationStatus>) {
        let Registered {
            etcd,
            spec,
            keys,
            lease_ttl,
            lease,
            health,
            revision,
        } = registered;
        let (status, status_rx) = watch::channel(RegistrationStatus {
            state: RegistrationState::Registered,
            lease_id: lease.id(),
            granted_ttl: lease.ttl(),
            health,
            reregistrations: 0,
            restored_keys: 0,
            revision,
        });
        let watch = keys.follow(&etcd, revision, serving(health, spec.weight));
        let task = Registrar {
            client: etcd.client().clone(),
            label: format!("{}/{}", spec.service, spec.id),
            lease_state: lease.subscribe(),
            etcd,
            spec,
            keys,
            lease_ttl,
            lease,
            pending: None,
            manual: health,
            check_ok: true,
            dirty: false,
            restoring: false,
            state: RegistrationState::Registered,
            reregistrations: 0,
            restored_keys: 0,
            revision,
            drain_request: 0,
            status,
            watch: Some(watch),
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            check_task: None,
        };
        (task, status_rx)
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Update(update, reply)) => {
                        let result = self.on_update(update).await;
                        let _ = reply.send(result);
                    }
                    Some(Command::Checked(ok)) => self.on_checked(ok).await,
                    Some(Command::Deregister(reply)) => {
                        let result = self.shutdown().await;
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                        return;
                    }
                    None => {
                        let _ = self.shutdown().await;
                        return;
                    }
                },
                () = lease_changed(&mut self.lease_state) => self.on_lease().await,
                () = sleep_until_some(self.retry_at) => self.reregister().await,
                seen = next_seen(self.watch.as_mut()) => self.on_seen(seen).await,
            }
        }
    }

    fn effective_health(&self) -> Health {
        match self.manual {
            Health::Healthy if !self.check_ok => Health::Unhealthy,
            other => other,
        }
    }

    fn publish(&self) {
        self.status.send_replace(RegistrationStatus {
            state: self.state,
            lease_id: self.lease.id(),
            granted_ttl: self.lease.ttl(),
            health: self.effective_health(),
            reregistrations: self.reregistrations,
            restored_keys: self.restored_keys,
            revision: self.revision,
        });
    }

    fn taken_over(&self) -> Error {
        Error::new(
            ErrorKind::Conflict,
            format!(
                "registration of `{}` was taken over by another registration",
                self.label
            ),
        )
    }

    fn being_replaced(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "the lease of `{}` was lost; the change is written when it is registered again",
                self.label
            ),
        )
    }

    async fn on_update(&mut self, update: Update) -> Result<()> {
        let before = (self.spec.clone(), self.effective_health());
        match update {
            Update::Health(health) => self.manual = health,
            Update::Weight(weight) => self.spec.weight = weight,
            Update::Metadata(metadata) => self.spec.metadata = metadata,
        }
        if before == (self.spec.clone(), self.effective_health()) && !self.dirty {
            return Ok(());
        }
        self.dirty = true;
        self.publish();
        self.write_current().await
    }

    async fn on_checked(&mut self, ok: bool) {
        let before = self.effective_health();
        self.check_ok = ok;
        if before == self.effective_health() {
            return;
        }
        self.dirty = true;
        self.publish();
        if let Err(error) = self.write_current().await {
            tracing::warn!(instance = %self.label, error = %error, "cannot write health-check result yet; will retry");
        }
    }

    /// Writes the desired state on the current lease, guarded by the lease still owning the
    /// status key; a status key found deleted is written back (guarded by its absence).
    async fn write_current(&mut self) -> Result<()> {
        match self.state {
            RegistrationState::Deregistered => return Err(closed()),
            RegistrationState::Superseded => return Err(self.taken_over()),
            RegistrationState::Reregistering => return Err(self.being_replaced()),
            RegistrationState::Registered | RegistrationState::Reconnecting => {}
        }
        let lease = self.lease.id();
        let health = self.effective_health();
        let mut guard = Guard::OnLease(lease);
        // Two guards suffice unless the status key keeps appearing and disappearing meanwhile.
        for _ in 0..3 {
            let written = self
                .keys
                .write_if(&mut self.client, guard, &self.spec, health, lease)
                .await;
            match written {
                Ok(Written::Yes(revision)) => {
                    self.wrote(revision, guard == Guard::Absent);
                    return Ok(());
                }
                Ok(Written::Taken(Some(kv))) if kv.lease() != lease => {
                    self.superseded(&kv).await;
                    return Err(self.taken_over());
                }
                // The status key is back on our lease: write over it.
                Ok(Written::Taken(Some(_))) => guard = Guard::OnLease(lease),
                // The status key is gone. If the lease is gone too, the write fails with
                // "lease not found"; otherwise the keys were deleted under it: write them back.
                Ok(Written::Taken(None)) => guard = Guard::Absent,
                Err(e) if self.lease.note_error(&e) => {
                    self.lost(LeaseLost::Expired).await;
                    return match self.state {
                        RegistrationState::Registered => Ok(()),
                        _ => Err(self.being_replaced()),
                    };
                }
                Err(e) => {
                    return Err(Error::etcd(
                        format_args!("writing registration of `{}`", self.label),
                        e,
                    )
                    .needs(
                        Permission::ReadWrite,
                        "the registry's status and resolver prefixes of the service",
                        &self.label,
                    ))
                }
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the status key of `{}` kept changing while writing it; retrying at the next keepalive",
                self.label
            ),
        ))
    }

    /// The desired state was written at `revision`; `restored` if the status key had to be
    /// created again.
    fn wrote(&mut self, revision: i64, restored: bool) {
        self.dirty = false;
        self.revision = revision;
        if self.restoring || restored {
            self.restoring = false;
            self.restored_keys += 1;
            tracing::warn!(
                instance = %self.label,
                lease = %format_args!("{:x}", self.lease.id()),
                revision,
                restored_keys = self.restored_keys,
                "wrote the registration's keys back after they were deleted under its live lease"
            );
        } else {
            tracing::info!(instance = %self.label, health = %self.effective_health(), weight = self.spec.weight, revision, "updated registration");
        }
        self.publish();
    }

    /// The lease was confirmed, failed, or was lost.
    async fn on_lease(&mut self) {
        let lease = *self.lease_state.borrow_and_update();
        if !matches!(
            self.state,
            RegistrationState::Registered | RegistrationState::Reconnecting
        ) {
            return;
        }
        if let Some(reason) = lease.lost {
            return self.lost(reason).await;
        }
        if lease.failing {
            if self.state == RegistrationState::Registered {
                tracing::warn!(instance = %self.label, lease = %format_args!("{:x}", self.lease.id()), "lease keepalive failing; retrying");
                self.state = RegistrationState::Reconnecting;
                self.publish();
            }
            return;
        }
        if self.state == RegistrationState::Reconnecting {
            self.state = RegistrationState::Registered;
            tracing::info!(instance = %self.label, lease = %format_args!("{:x}", self.lease.id()), "lease keepalive restored");
            self.publish();
        }
        if self.dirty {
            if let Err(error) = self.write_current().await {
                tracing::warn!(instance = %self.label, error = %error, "cannot write pending registration change yet");
            }
        }
    }

    /// One of the instance's keys changed (or was read again) after our last write.
    async fn on_seen(&mut self, seen: Seen) {
        if seen.which == Which::Drain {
            // Not filtered by our own last write: a request is a key we never write.
            return self.on_drain_request(seen.kv).await;
        }
        if seen.revision <= self.revision
            || !matches!(
                self.state,
                RegistrationState::Registered | RegistrationState::Reconnecting
            )
        {
            return;
        }
        let should_serve = serving(self.effective_health(), self.spec.weight);
        match (seen.which, seen.kv) {
            (Which::Status, Some(kv)) if kv.lease() != self.lease.id() => {
                self.superseded(&kv).await;
            }
            (Which::Status, None) => self.restore(Which::Status).await,
            (Which::Resolver, None) if should_serve && !self.dirty => {
                self.restore(Which::Resolver).await;
            }
            _ => {}
        }
    }

    /// An operator asked this instance to drain (`Registry::request_drain`): drain exactly as
    /// `set_health(Health::Draining)` does, so the write-back of deleted keys keeps it out of
    /// the resolver space. Requests on another lease (an earlier registration's, on its way
    /// out) and requests already followed (seen again after a resync) are ignored.
    async fn on_drain_request(&mut self, kv: Option<KeyValue>) {
        let Some(kv) = kv else { return };
        if !matches!(
            self.state,
            RegistrationState::Registered | RegistrationState::Reconnecting
        ) || kv.lease() != self.lease.id()
            || kv.mod_revision() <= self.drain_request
        {
            return;
        }
        self.drain_request = kv.mod_revision();
        tracing::warn!(
            instance = %self.label,
            requested_by = %super::drain::requested_by(kv.value()),
            revision = kv.mod_revision(),
            "an operator requested a drain; draining"
        );
        if let Err(error) = self.on_update(Update::Health(Health::Draining)).await {
            tracing::warn!(instance = %self.label, error = %error, "cannot write the requested drain yet; retrying at the next keepalive");
        }
    }

    /// A key was deleted while the lease is alive: write both back.
    async fn restore(&mut self, which: Which) {
        let key = match which {
            Which::Status => &self.keys.status,
            Which::Resolver => &self.keys.resolver,
            Which::Drain => &self.keys.drain,
        };
        tracing::warn!(
            instance = %self.label,
            key = %key,
            lease = %format_args!("{:x}", self.lease.id()),
            "registration key deleted while its lease is alive; writing the keys back"
        );
        self.restoring = true;
        self.dirty = true;
        if let Err(error) = self.write_current().await {
            tracing::warn!(instance = %self.label, error = %error, "cannot write the registration's keys back yet; retrying at the next keepalive");
        }
    }

    /// The lease is gone (and with it the keys): register again on a new one.
    async fn lost(&mut self, reason: LeaseLost) {
        tracing::warn!(
            instance = %self.label,
            lease = %format_args!("{:x}", self.lease.id()),
            %reason,
            "registration lease lost; registering again"
        );
        self.state = RegistrationState::Reregistering;
        self.restoring = false;
        self.publish();
        self.reregister().await;
    }

    /// One attempt to register on a new lease, if the id is free; schedules a retry on failure.
    async fn reregister(&mut self) {
        self.retry_at = None;
        if self.state != RegistrationState::Reregistering {
            return;
        }
        let lease = match self.pending.take() {
            Some(lease) if lease.lost_reason().is_none() => lease,
            _ => match Lease::grant(&self.etcd, lease_options(self.lease_ttl)).await {
                Ok(lease) => lease,
                Err(error) => return self.retry_reregister(&error),
            },
        };
        let health = self.effective_health();
        let written = self
            .keys
            .write_if(
                &mut self.client,
                Guard::Absent,
                &self.spec,
                health,
                lease.id(),
            )
            .await;
        match written {
            Ok(Written::Yes(revision)) => self.reregistered(lease, revision),
            Ok(Written::Taken(Some(kv))) if kv.lease() == lease.id() => {
                // An earlier attempt whose answer was lost did commit.
                self.reregistered(lease, kv.mod_revision());
            }
            Ok(Written::Taken(Some(kv))) if kv.lease() == self.lease.id() => {
                // The lost lease still holds the keys (etcd had not removed them yet).
                self.pending = Some(lease);
                let error = match self.lease.revoke().await {
                    Ok(_) => Error::new(
                        ErrorKind::Conflict,
                        "the lost lease still held the keys; revoked it",
                    ),
                    Err(error) => error,
                };
                self.retry_reregister(&error);
            }
            Ok(Written::Taken(Some(kv))) => {
                let _ = lease.revoke().await;
                self.superseded(&kv).await;
            }
            Ok(Written::Taken(None)) => {
                self.pending = Some(lease);
                let error = Error::new(
                    ErrorKind::Conflict,
                    "status key changed during re-registration",
                );
                self.retry_reregister(&error);
            }
            Err(e) => {
                // A pending lease that expired while we could not write is dropped.
                if !lease.note_error(&e) {
                    self.pending = Some(lease);
                }
                let error =
                    Error::etcd(format_args!("writing registration of `{}`", self.label), e);
                self.retry_reregister(&error);
            }
        }
    }

    fn retry_reregister(&mut self, error: &Error) {
        let delay = self.backoff.next_delay();
        tracing::warn!(instance = %self.label, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot register again yet");
        self.retry_at = Some(Instant::now() + delay);
    }

    fn reregistered(&mut self, lease: Lease, revision: i64) {
        let old = std::mem::replace(&mut self.lease, lease);
        self.lease_state = self.lease.subscribe();
        self.reregistrations += 1;
        metrics::counter!(
            crate::telemetry::REGISTRY_REREGISTRATIONS,
            "service" => self.label.split('/').next().unwrap_or_default().to_string()
        )
        .increment(1);
        self.state = RegistrationState::Registered;
        self.dirty = false;
        self.revision = revision;
        self.retry_at = None;
        self.backoff.reset();
        tracing::warn!(
            instance = %self.label,
            old_lease = %format_args!("{:x}", old.id()),
            lease = %format_args!("{:x}", self.lease.id()),
            revision,
            reregistrations = self.reregistrations,
            "registered again on a new lease"
        );
        self.publish();
    }

    async fn superseded(&mut self, kv: &KeyValue) {
        tracing::error!(
            instance = %self.label,
            other_lease = %format_args!("{:x}", kv.lease()),
            revision = kv.mod_revision(),
            "another registration took over this id; this handle stops writing"
        );
        self.state = RegistrationState::Superseded;
        self.watch = None;
        self.retry_at = None;
        self.pending = None;
        if let Some(task) = self.check_task.take() {
            task.abort();
        }
        // The keys are on the other lease now: revoking ours leaves them alone.
        let _ = self.lease.revoke().await;
        self.publish();
    }

    async fn shutdown(&mut self) -> Result<()> {
        if let Some(task) = self.check_task.take() {
            task.abort();
        }
        self.watch = None;
        let was = self.state;
        self.state = RegistrationState::Deregistered;
        self.publish();
        if let Some(lease) = self.pending.take() {
            let _ = lease.revoke().await;
        }
        if was == RegistrationState::Superseded {
            return Ok(());
        }
        match self.lease.revoke().await {
            Ok(Some(revision)) => {
                self.revision = revision;
                self.publish();
                tracing::info!(instance = %self.label, revision, "deregistered instance");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => {
                let message = format!(
                    "revoking the lease of `{}` (its keys expire within {} s): {}",
                    self.label,
                    self.lease.ttl().as_secs(),
                    error.message()
                );
                let error = error.with_message(message);
                tracing::warn!(instance = %self.label, error = %error, "deregistration failed; keys expire with the lease");
                Err(error)
            }
        }
    }
}

/// Resolves when the lease state changes; never if its sender is gone (it lives as long as the
/// lease, which the task holds).
async fn lease_changed(rx: &mut watch::Receiver<LeaseState>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn next_seen(watch: Option<&mut KeyWatch>) -> Seen {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}
