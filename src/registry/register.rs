//! [`Registration`]: an instance's keys on a lease kept alive every TTL/3, re-registered by
//! itself when the lease is lost, updated and deregistered through one background task.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, KeyValue, LeaseKeepAliveResponse, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::health::HealthCheck;
use super::instance::{naming_json, record_json, serving, Health, ServiceInstance};
use super::Registry;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::Backoff;

/// Where a [`Registration`] stands.
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
    /// longer writes anything.
    Superseded,
    /// Deregistered (explicitly or by dropping the handle).
    Deregistered,
}

/// A snapshot of a [`Registration`]'s state, from [`Registration::status`].
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
    /// The etcd revision of the last write of the instance's keys.
    pub revision: i64,
}

/// A builder for a registration, from [`Registry::register`]; `.await` it to register.
///
/// Defaults: TTL 10 s, [`Health::Healthy`], no health check.
#[must_use = "a registration happens only when the builder is awaited"]
pub struct Register {
    registry: Registry,
    instance: ServiceInstance,
    ttl: Duration,
    health: Health,
    check: Option<HealthCheck>,
}

impl fmt::Debug for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Register")
            .field("instance", &self.instance)
            .field("ttl", &self.ttl)
            .field("health", &self.health)
            .field("check", &self.check)
            .finish()
    }
}

impl Registry {
    /// Registers `instance`; set options on the returned builder, then `.await` it.
    ///
    /// ```no_run
    /// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
    /// # use std::time::Duration;
    /// use coordination::ServiceInstance;
    /// let reg = coord
    ///     .registry()
    ///     .register(ServiceInstance::new("chat", "chat-1", "10.0.0.7:50051"))
    ///     .ttl(Duration::from_secs(10))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Registering an id that is already registered replaces that registration (the old
    /// handle becomes [`RegistrationState::Superseded`] at its next write).
    pub fn register(&self, instance: ServiceInstance) -> Register {
        Register {
            registry: self.clone(),
            instance,
            ttl: Duration::from_secs(10),
            health: Health::Healthy,
            check: None,
        }
    }
}

impl Register {
    /// The lease TTL (default 10 s; rounded up to whole seconds, at least 1 s). The lease is
    /// kept alive every TTL/3; if the process dies, the instance disappears within about the
    /// TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The initial manual health (default [`Health::Healthy`]); e.g. register as
    /// [`Health::Draining`] and switch to healthy once warmed up.
    pub fn health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Runs `check` in the background; its result flips the instance between healthy and
    /// unhealthy (see [`HealthCheck`]).
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Grants the lease, writes the keys in one transaction, and starts the keepalive task.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty or `/`-containing service or id, an empty
    /// addr, a TTL under 1 s or a bad health-check target; the etcd error kinds if the lease
    /// cannot be granted or the keys written (the lease is then revoked).
    pub async fn start(self) -> Result<Registration> {
        let Register {
            registry,
            instance,
            ttl,
            health,
            check,
        } = self;
        instance.validate()?;
        if let Some(check) = &check {
            check.validate()?;
        }
        if ttl < Duration::from_secs(1) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("registration TTL {} ms is under 1 s", ttl.as_millis()),
            ));
        }
        let ttl_secs =
            i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        let layout = registry.layout();
        let status_key = format!("{}{}", layout.status_dir(&instance.service), instance.id);
        let resolver_key = format!("{}{}", layout.resolver_dir(&instance.service), instance.id);
        let label = format!("{}/{}", instance.service, instance.id);
        let mut client = registry.coordinator().client();
        let lease = client
            .lease_grant(ttl_secs, None)
            .await
            .map_err(|e| Error::etcd(format_args!("granting a lease for `{label}`"), e))?;
        let (status_tx, status_rx) = watch::channel(RegistrationStatus {
            state: RegistrationState::Registered,
            lease_id: lease.id(),
            ttl_secs: lease.ttl(),
            health,
            reregistrations: 0,
            revision: 0,
        });
        let mut task = Registrar {
            client,
            spec: instance,
            label: label.clone(),
            status_key: status_key.clone(),
            resolver_key: resolver_key.clone(),
            ttl_secs,
            granted_secs: lease.ttl(),
            lease: lease.id(),
            pending_lease: None,
            manual: health,
            check_ok: true,
            dirty: false,
            state: RegistrationState::Registered,
            reregistrations: 0,
            revision: 0,
            status: status_tx,
            keeper: None,
            last_ok: Instant::now(),
            next_tick: Instant::now(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            check_task: None,
        };
        let ops = task.ops(task.lease);
        let txn = Txn::new().and_then(
            std::iter::once(TxnOp::get(status_key.as_bytes(), None))
                .chain(ops)
                .collect::<Vec<_>>(),
        );
        match task.client.txn(txn).await {
            Ok(resp) => {
                task.revision = resp.header().map_or(0, |h| h.revision());
                if let Some(TxnOpResponse::Get(get)) = resp.op_responses().first() {
                    if let Some(prev) = get.kvs().first() {
                        tracing::warn!(
                            instance = %label,
                            previous_lease = %format!("{:x}", prev.lease()),
                            "replaced an existing registration with the same id"
                        );
                    }
                }
            }
            Err(e) => {
                let _ = task.client.lease_revoke(task.lease).await;
                return Err(Error::etcd(
                    format_args!("writing registration of `{label}`"),
                    e,
                ));
            }
        }
        tracing::info!(
            instance = %label,
            addr = %task.spec.addr,
            lease = %format!("{:x}", task.lease),
            ttl_s = task.granted_secs,
            health = %task.effective_health(),
            revision = task.revision,
            "registered instance"
        );
        task.publish();
        let (commands, rx) = mpsc::unbounded_channel();
        if let Some(check) = check {
            let tx = commands.clone();
            task.check_task =
                Some(check.spawn(label, move |ok| tx.send(Command::Checked(ok)).is_ok()));
        }
        tokio::spawn(task.run(rx));
        Ok(Registration {
            commands,
            status: status_rx,
            status_key,
            resolver_key,
            done: false,
        })
    }
}

impl IntoFuture for Register {
    type Output = Result<Registration>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Registration>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

/// A registered instance. Its lease is kept alive in the background every TTL/3; if the lease
/// is lost (etcd restarted, a partition longer than the TTL, a revoke) the instance registers
/// itself again on a new lease, logs a warning and counts it in
/// [`RegistrationStatus::reregistrations`].
///
/// Dropping the handle deregisters in the background (the keys are deleted at once if etcd is
/// reachable, otherwise they expire with the lease). Must be created inside a Tokio runtime.
pub struct Registration {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<RegistrationStatus>,
    status_key: String,
    resolver_key: String,
    done: bool,
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
    pub async fn set_health(&self, health: Health) -> Result<()> {
        self.update(Update::Health(health)).await
    }

    /// Sets the weight (`0` = no traffic) and writes it. Errors as
    /// [`set_health`](Self::set_health).
    ///
    /// # Errors
    /// As [`set_health`](Self::set_health).
    pub async fn set_weight(&self, weight: u32) -> Result<()> {
        self.update(Update::Weight(weight)).await
    }

    /// Replaces the metadata and writes it.
    ///
    /// # Errors
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
    pub async fn deregister(mut self) -> Result<()> {
        self.done = true;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Deregister(Some(tx)))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// The current state, lease, health and re-registration count.
    pub fn status(&self) -> RegistrationStatus {
        self.status.borrow().clone()
    }

    /// The current lease id.
    pub fn lease_id(&self) -> i64 {
        self.status.borrow().lease_id
    }

    /// A watch on [`status`](Self::status), to react to re-registrations or health flips.
    pub fn status_watch(&self) -> StatusWatch {
        StatusWatch {
            status: self.status.clone(),
        }
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

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the registration's task has stopped")
}

/// Follows a [`Registration`]'s [`RegistrationStatus`]. From [`Registration::status_watch`].
#[derive(Clone, Debug)]
pub struct StatusWatch {
    status: watch::Receiver<RegistrationStatus>,
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

enum Update {
    Health(Health),
    Weight(u32),
    Metadata(serde_json::Value),
}

enum Command {
    Update(Update, oneshot::Sender<Result<()>>),
    /// A health check flipped (`true` = passing).
    Checked(bool),
    Deregister(Option<oneshot::Sender<Result<()>>>),
}

/// The outcome of a guarded write.
enum Written {
    /// Written at this revision.
    Yes(i64),
    /// The guard failed; the status key as it is (if it exists).
    Taken(Option<KeyValue>),
}

/// The background task of one registration.
struct Registrar {
    client: Client,
    spec: ServiceInstance,
    label: String,
    status_key: String,
    resolver_key: String,
    ttl_secs: i64,
    granted_secs: i64,
    lease: i64,
    /// A lease granted for a re-registration whose write has not been confirmed yet.
    pending_lease: Option<i64>,
    manual: Health,
    check_ok: bool,
    /// The desired state has not been written yet.
    dirty: bool,
    state: RegistrationState,
    reregistrations: u64,
    revision: i64,
    status: watch::Sender<RegistrationStatus>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    last_ok: Instant,
    next_tick: Instant,
    backoff: Backoff,
    check_task: Option<JoinHandle<()>>,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// etcd says the lease does not exist (expired or revoked).
fn lease_gone(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::NotFound || s.message().contains("lease not found")
        }
        _ => false,
    }
}

async fn next_keepalive(
    keeper: Option<&mut (LeaseKeeper, LeaseKeepAliveStream)>,
) -> std::result::Result<Option<LeaseKeepAliveResponse>, etcd_client::Error> {
    match keeper {
        Some((_, stream)) => stream.message().await,
        None => std::future::pending().await,
    }
}

impl Registrar {
    fn effective_health(&self) -> Health {
        match self.manual {
            Health::Healthy if !self.check_ok => Health::Unhealthy,
            other => other,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.granted_secs.max(1)).unwrap_or(1) * 1000 / 3)
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.granted_secs.max(1)).unwrap_or(1))
    }

    fn publish(&self) {
        self.status.send_replace(RegistrationStatus {
            state: self.state,
            lease_id: self.lease,
            ttl_secs: self.granted_secs,
            health: self.effective_health(),
            reregistrations: self.reregistrations,
            revision: self.revision,
        });
    }

    /// The transaction's writes for the desired state on `lease`.
    fn ops(&self, lease: i64) -> Vec<TxnOp> {
        let health = self.effective_health();
        let on_lease = || Some(PutOptions::new().with_lease(lease));
        let mut ops = vec![TxnOp::put(
            self.status_key.as_bytes(),
            record_json(&self.spec, health),
            on_lease(),
        )];
        if serving(health, self.spec.weight) {
            ops.push(TxnOp::put(
                self.resolver_key.as_bytes(),
                naming_json(&self.spec),
                on_lease(),
            ));
        } else {
            ops.push(TxnOp::delete(self.resolver_key.as_bytes(), None));
        }
        ops
    }

    /// Writes the desired state if `guard` holds; otherwise reads the status key.
    async fn write_if(&mut self, guard: Compare, lease: i64) -> Result<Written> {
        let txn = Txn::new()
            .when([guard])
            .and_then(self.ops(lease))
            .or_else([TxnOp::get(self.status_key.as_bytes(), None)]);
        let resp = self.client.txn(txn).await.map_err(|e| {
            Error::etcd(format_args!("writing registration of `{}`", self.label), e)
        })?;
        if resp.succeeded() {
            return Ok(Written::Yes(resp.header().map_or(0, |h| h.revision())));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        Ok(Written::Taken(current))
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
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
                () = sleep_until(self.next_tick) => self.tick().await,
                response = next_keepalive(self.keeper.as_mut()) => self.on_keepalive(response).await,
            }
        }
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

    /// Writes the desired state on the current lease (guarded by the lease still owning the
    /// status key).
    async fn write_current(&mut self) -> Result<()> {
        match self.state {
            RegistrationState::Deregistered => return Err(closed()),
            RegistrationState::Superseded => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "registration of `{}` was taken over by another registration",
                        self.label
                    ),
                ))
            }
            RegistrationState::Reregistering => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                    "the lease of `{}` was lost; the change is written when it is registered again",
                    self.label
                ),
                ))
            }
            RegistrationState::Registered | RegistrationState::Reconnecting => {}
        }
        let guard = Compare::lease(self.status_key.as_bytes(), CompareOp::Equal, self.lease);
        match self.write_if(guard, self.lease).await {
            Ok(Written::Yes(revision)) => {
                self.dirty = false;
                self.revision = revision;
                self.publish();
                tracing::info!(instance = %self.label, health = %self.effective_health(), weight = self.spec.weight, revision, "updated registration");
                Ok(())
            }
            Ok(Written::Taken(Some(kv))) if kv.lease() != self.lease => {
                self.superseded(&kv).await;
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "registration of `{}` was taken over by another registration",
                        self.label
                    ),
                ))
            }
            Ok(Written::Taken(_)) => {
                // The keys are gone: the lease expired or was revoked.
                self.lost().await;
                if self.state == RegistrationState::Registered {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("the lease of `{}` was lost; the change is written when it is registered again", self.label),
                    ))
                }
            }
            Err(error) => Err(error),
        }
    }

    async fn tick(&mut self) {
        match self.state {
            RegistrationState::Superseded | RegistrationState::Deregistered => {
                self.next_tick = far_future();
                return;
            }
            RegistrationState::Reregistering => {
                self.reregister().await;
                return;
            }
            RegistrationState::Registered | RegistrationState::Reconnecting => {}
        }
        let now = Instant::now();
        let stuck = now.duration_since(self.last_ok) > self.ttl();
        if let Some((keeper, _)) = self.keeper.as_mut() {
            if stuck {
                self.keeper = None;
                self.reconnecting("no keepalive answer for a whole TTL");
            } else {
                match keeper.keep_alive().await {
                    Ok(()) => {
                        self.next_tick = now + self.interval();
                        return;
                    }
                    Err(e) => {
                        self.keeper = None;
                        let error = Error::etcd("sending lease keepalive", e);
                        self.reconnecting(&error.to_string());
                    }
                }
            }
        }
        // Opening waits for the first answer; bound it so a hung etcd cannot stall the task
        // (and with it `set_health` and `deregister`).
        let limit = self.interval().max(Duration::from_millis(500));
        let opened =
            match tokio::time::timeout(limit, self.client.lease_keep_alive(self.lease)).await {
                Ok(opened) => opened,
                Err(_) => {
                    self.reconnecting("opening lease keepalive timed out");
                    self.next_tick = Instant::now() + self.backoff.next_delay();
                    return;
                }
            };
        match opened {
            Ok(keeper) => {
                // Opening sends one keepalive and reads its answer.
                self.keeper = Some(keeper);
                self.next_tick = Instant::now() + self.interval();
                self.alive().await;
            }
            Err(e) if lease_gone(&e) => self.lost().await,
            Err(e) => {
                let error = Error::etcd("opening lease keepalive", e);
                self.reconnecting(&error.to_string());
                self.next_tick = Instant::now() + self.backoff.next_delay();
            }
        }
    }

    async fn on_keepalive(
        &mut self,
        response: std::result::Result<Option<LeaseKeepAliveResponse>, etcd_client::Error>,
    ) {
        match response {
            Ok(Some(r)) if r.ttl() > 0 => self.alive().await,
            Ok(Some(_)) => self.lost().await,
            Ok(None) => {
                self.keeper = None;
                self.reconnecting("keepalive stream ended");
                self.next_tick = Instant::now() + self.backoff.next_delay();
            }
            Err(e) if lease_gone(&e) => self.lost().await,
            Err(e) => {
                self.keeper = None;
                let error = Error::etcd("lease keepalive stream", e);
                self.reconnecting(&error.to_string());
                self.next_tick = Instant::now() + self.backoff.next_delay();
            }
        }
    }

    /// A keepalive was answered with a positive TTL.
    async fn alive(&mut self) {
        self.last_ok = Instant::now();
        self.backoff.reset();
        if self.state == RegistrationState::Reconnecting {
            self.state = RegistrationState::Registered;
            tracing::info!(instance = %self.label, lease = %format!("{:x}", self.lease), "lease keepalive restored");
            self.publish();
        }
        if self.dirty {
            if let Err(error) = self.write_current().await {
                tracing::warn!(instance = %self.label, error = %error, "cannot write pending registration change yet");
            }
        }
    }

    fn reconnecting(&mut self, why: &str) {
        if self.state == RegistrationState::Registered {
            tracing::warn!(instance = %self.label, lease = %format!("{:x}", self.lease), reason = why, "lease keepalive failing; retrying");
            self.state = RegistrationState::Reconnecting;
            self.publish();
        } else {
            tracing::debug!(instance = %self.label, reason = why, "lease keepalive still failing");
        }
    }

    /// The lease is gone (and with it the keys): register again on a new one.
    async fn lost(&mut self) {
        tracing::warn!(
            instance = %self.label,
            lease = %format!("{:x}", self.lease),
            "registration lease lost (expired or revoked); registering again"
        );
        self.keeper = None;
        self.state = RegistrationState::Reregistering;
        self.publish();
        self.reregister().await;
    }

    /// One attempt to register on a new lease, if the id is free; schedules a retry on failure.
    async fn reregister(&mut self) {
        let lease = match self.pending_lease {
            Some(lease) => lease,
            None => match self.client.lease_grant(self.ttl_secs, None).await {
                Ok(resp) => {
                    self.granted_secs = resp.ttl();
                    resp.id()
                }
                Err(e) => {
                    let error = Error::etcd("granting a new lease", e);
                    self.retry_reregister(&error);
                    return;
                }
            },
        };
        self.pending_lease = Some(lease);
        let guard = Compare::version(self.status_key.as_bytes(), CompareOp::Equal, 0);
        match self.write_if(guard, lease).await {
            Ok(Written::Yes(revision)) => self.reregistered(lease, revision),
            Ok(Written::Taken(Some(kv))) if kv.lease() == lease => {
                // An earlier attempt whose answer was lost did commit.
                self.reregistered(lease, kv.mod_revision());
            }
            Ok(Written::Taken(Some(kv))) => {
                self.pending_lease = None;
                let _ = self.client.lease_revoke(lease).await;
                self.superseded(&kv).await;
            }
            Ok(Written::Taken(None)) => {
                let error = Error::new(
                    ErrorKind::Conflict,
                    "status key changed during re-registration",
                );
                self.retry_reregister(&error);
            }
            Err(error) => {
                if error.kind() == ErrorKind::NotFound {
                    // The pending lease expired while we could not write.
                    self.pending_lease = None;
                }
                self.retry_reregister(&error);
            }
        }
    }

    fn retry_reregister(&mut self, error: &Error) {
        let delay = self.backoff.next_delay();
        tracing::warn!(instance = %self.label, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot register again yet");
        self.next_tick = Instant::now() + delay;
    }

    fn reregistered(&mut self, lease: i64, revision: i64) {
        let old = self.lease;
        self.lease = lease;
        self.pending_lease = None;
        self.reregistrations += 1;
        self.state = RegistrationState::Registered;
        self.dirty = false;
        self.revision = revision;
        self.last_ok = Instant::now();
        self.keeper = None;
        self.next_tick = Instant::now();
        self.backoff.reset();
        tracing::warn!(
            instance = %self.label,
            old_lease = %format!("{old:x}"),
            lease = %format!("{lease:x}"),
            revision,
            reregistrations = self.reregistrations,
            "registered again on a new lease"
        );
        self.publish();
    }

    async fn superseded(&mut self, kv: &KeyValue) {
        tracing::error!(
            instance = %self.label,
            other_lease = %format!("{:x}", kv.lease()),
            "another registration took over this id; this handle stops writing"
        );
        self.state = RegistrationState::Superseded;
        self.keeper = None;
        self.next_tick = far_future();
        if let Some(task) = self.check_task.take() {
            task.abort();
        }
        let _ = self.client.lease_revoke(self.lease).await;
        self.publish();
    }

    async fn shutdown(&mut self) -> Result<()> {
        if let Some(task) = self.check_task.take() {
            task.abort();
        }
        self.keeper = None;
        let was = self.state;
        self.state = RegistrationState::Deregistered;
        self.publish();
        if let Some(lease) = self.pending_lease.take() {
            let _ = self.client.lease_revoke(lease).await;
        }
        if was == RegistrationState::Superseded {
            return Ok(());
        }
        match self.client.lease_revoke(self.lease).await {
            Ok(resp) => {
                let revision = resp.header().map_or(0, |h| h.revision());
                self.revision = revision;
                self.publish();
                tracing::info!(instance = %self.label, revision, "deregistered instance");
                Ok(())
            }
            Err(e) if lease_gone(&e) => Ok(()),
            Err(e) => {
                let error = Error::etcd(
                    format_args!(
                        "revoking the lease of `{}` (its keys expire within {} s)",
                        self.label, self.granted_secs
                    ),
                    e,
                );
                tracing::warn!(instance = %self.label, error = %error, "deregistration failed; keys expire with the lease");
                Err(error)
            }
        }
    }
}
