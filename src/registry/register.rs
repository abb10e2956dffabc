//! [`RegistrationBuilder`]: the builder of a registration (lease TTL, initial health, health
//! check) and the first write; `.await` it for a [`Registration`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use super::health::HealthCheck;
use super::instance::{Health, InstanceSpec};
use super::own_keys::OwnKeys;
use super::registrar::{lease_options, Registered, Registrar};
use super::registration::{Command, Registration};
use super::Registry;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::lease::Lease;

/// The lease TTL of a registration when none is given.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// A builder for a registration, from [`Registry::register`]; `.await` it to register.
///
/// Defaults: lease TTL 10 s, [`Health::Healthy`], no health check.
///
/// # Awaiting
/// Awaiting grants the lease, writes both keys in one transaction, and starts the background
/// task (keepalive, re-registration, the watch of the instance's own keys). It resolves to the
/// [`Registration`] handle once the keys are in etcd.
///
/// # Errors
/// Awaiting returns [`ErrorKind::InvalidArgument`] for an empty or `/`-containing service or
/// id, an empty addr, a lease TTL under 1 s or a bad health-check target; the etcd error kinds
/// if the lease cannot be granted or the keys written (the lease is then revoked).
///
/// # Cancel safety
/// Dropping the future before it resolves leaves nothing registered: a lease already granted
/// is revoked in the background, taking any keys written on it along.
#[must_use = "a registration happens only when the builder is awaited"]
pub struct RegistrationBuilder {
    registry: Registry,
    instance: InstanceSpec,
    lease_ttl: Duration,
    health: Health,
    check: Option<HealthCheck>,
}

impl fmt::Debug for RegistrationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationBuilder")
            .field("instance", &self.instance)
            .field("lease_ttl", &self.lease_ttl)
            .field("health", &self.health)
            .field("check", &self.check)
            .finish()
    }
}

impl Registry {
    /// Registers `instance`; set options on the returned [`RegistrationBuilder`], then `.await`
    /// it (see the builder for the errors and cancel safety).
    ///
    /// ```no_run
    /// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
    /// # use std::time::Duration;
    /// use coordination::registry::{Health, InstanceSpec};
    /// let reg = coord
    ///     .registry()
    ///     .register(InstanceSpec::new("chat", "chat-1", "10.0.0.7:50051"))
    ///     .with_lease_ttl(Duration::from_secs(10))
    ///     .with_health(Health::Draining)
    ///     .await?;
    /// // ... warm up ...
    /// reg.set_health(Health::Healthy).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Registering an id that is already registered replaces that registration: the old
    /// handle sees its status key written on another lease and becomes
    /// [`RegistrationState::Superseded`](super::RegistrationState::Superseded) at once.
    pub fn register(&self, instance: InstanceSpec) -> RegistrationBuilder {
        RegistrationBuilder {
            registry: self.clone(),
            instance,
            lease_ttl: DEFAULT_LEASE_TTL,
            health: Health::Healthy,
            check: None,
        }
    }
}

impl RegistrationBuilder {
    /// The lease TTL to request (default 10 s; rounded up to whole seconds, at least 1 s;
    /// [`RegistrationStatus::granted_ttl`](super::RegistrationStatus::granted_ttl) says what
    /// etcd granted). The lease is kept alive every TTL/3; if the process dies, the instance
    /// disappears within about the TTL.
    pub fn with_lease_ttl(mut self, lease_ttl: Duration) -> Self {
        self.lease_ttl = lease_ttl;
        self
    }

    /// The initial manual health (default [`Health::Healthy`]); e.g. register as
    /// [`Health::Draining`] and switch to healthy once warmed up.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Runs `check` in the background; its result flips the instance between healthy and
    /// unhealthy (see [`HealthCheck`]).
    pub fn with_health_check(mut self, check: HealthCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Registers (what awaiting the builder does; see the type docs).
    async fn start(self) -> Result<Registration> {
        let RegistrationBuilder {
            registry,
            instance,
            lease_ttl: ttl,
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
                format!("registration lease TTL {} ms is under 1 s", ttl.as_millis()),
            ));
        }
        let layout = registry.layout();
        let keys = OwnKeys {
            status: format!("{}{}", layout.status_dir(&instance.service), instance.id),
            resolver: format!("{}{}", layout.resolver_dir(&instance.service), instance.id),
            drain: layout.drain_key(&instance.service, &instance.id),
        };
        let label = format!("{}/{}", instance.service, instance.id);
        let etcd = registry.coordinator().etcd().clone();
        let lease = Lease::grant(&etcd, lease_options(ttl))
            .await
            .map_err(|error| {
                let message = format!("registering `{label}`: {}", error.message());
                error.with_message(message)
            })?;
        let mut client = etcd.client().clone();
        let (revision, previous) = match keys
            .replace(&mut client, &instance, health, lease.id())
            .await
        {
            Ok(written) => written,
            Err(e) => {
                let _ = lease.revoke().await;
                return Err(
                    Error::etcd(format_args!("writing registration of `{label}`"), e).needs(
                        Permission::ReadWrite,
                        "the registry's status and resolver prefixes of the service",
                        &label,
                    ),
                );
            }
        };
        if let Some(previous) = previous {
            tracing::warn!(
                instance = %label,
                previous_lease = %format_args!("{:x}", previous.lease()),
                "replaced an existing registration with the same id"
            );
        }
        tracing::info!(
            instance = %label,
            addr = %instance.addr,
            lease = %format_args!("{:x}", lease.id()),
            ttl_s = lease.ttl().as_secs(),
            %health,
            revision,
            "registered instance"
        );
        let (mut task, status) = Registrar::new(Registered {
            etcd,
            spec: instance,
            keys: keys.clone(),
            lease_ttl: ttl,
            lease,
            health,
            revision,
        });
        let (commands, rx) = mpsc::unbounded_channel();
        if let Some(check) = check {
            let tx = commands.clone();
            task.check_task =
                Some(check.spawn(label, move |ok| tx.send(Command::Checked(ok)).is_ok()));
        }
        tokio::spawn(task.run(rx));
        Ok(Registration {
            commands,
            status,
            status_key: keys.status,
            resolver_key: keys.resolver,
            done: false,
        })
    }
}

impl IntoFuture for RegistrationBuilder {
    type Output = Result<Registration>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Registration>> + Send>>;

    /// Registers; see the [type docs](RegistrationBuilder).
    fn into_future(self) -> Self::IntoFuture {
        use tracing::Instrument;
        let span = tracing::info_span!(
            target: crate::telemetry::REGISTRY_TARGET,
            "register",
            service = %self.instance.service,
            id = %self.instance.id
        );
        Box::pin(self.start().instrument(span))
    }
}
