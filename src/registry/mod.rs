//! Service registry: lease-kept registrations, discovery, a live watch, load balancing, and a
//! key layout that Go's gRPC `etcd:///` resolver reads directly.
//!
//! # Concepts
//!
//! | concept | type | made by | file |
//! |---|---|---|---|
//! | where the keys live and how they are read | [`Registry`], [`RegistryOptions`] | [`Coordinator::registry`](crate::Coordinator::registry), [`Coordinator::registry_with`](crate::Coordinator::registry_with) | `mod.rs` |
//! | what an instance registers, and its health | [`InstanceSpec`], [`Health`] | [`InstanceSpec::new`] | `instance.rs` |
//! | a registered instance as read back (spec, health, lease, revisions) | [`Instance`] | [`Registry::discover`], [`RegistryWatch`], [`LiveSet`] | `instance.rs` |
//! | how to register (`.await` it) | [`RegistrationBuilder`] | [`Registry::register`] | `register.rs` |
//! | a registration's handle: health, weight, metadata, deregistration | [`Registration`] | awaiting a [`RegistrationBuilder`] | `registration.rs` |
//! | where a registration stands, once or as it changes | [`RegistrationStatus`], [`RegistrationState`], [`StatusWatch`] | [`Registration::status`], [`Registration::status_watch`] | `status.rs` |
//! | an operator's request that a registered instance drain itself | [`Registry::request_drain`], [`DrainRequest`] | — | `drain.rs` |
//! | a background probe that flips health | [`HealthCheck`] | [`HealthCheck::tcp`], [`HealthCheck::http`], [`HealthCheck::custom`] | `health.rs` |
//! | every change of a service, in revision order | [`RegistryWatch`], [`RegistryEvent`] | [`Registry::watch`] | `watch.rs` |
//! | a service's instances kept current, with lock-free picks | [`LiveSet`], [`LiveInstances`], [`LiveUpdates`] | [`Registry::live`], [`LiveSet::updates`] | `live.rs` |
//! | how a pick chooses among the serving instances | [`Balancer`] | — | `balancer.rs` |
//!
//! Private files: `registrar.rs` is the background task of a registration (keepalive on the
//! crate's etcd lease, guarded writes, re-registration on a new lease, write-back of keys
//! deleted under its live lease, takeover, operator drain requests); `own_keys.rs` holds a
//! registration's two keys, their guarded transactions and their watch (with the
//! drain-request key's); `discover.rs` the one-shot paged reads;
//! `changes.rs` the one-change-at-a-time reading behind [`StatusWatch`] and [`LiveUpdates`].
//!
//! Times are [`Duration`](std::time::Duration)s. A registration's requested lease TTL is
//! [`RegistrationBuilder::with_lease_ttl`] (whole seconds, default 10 s); what etcd granted is
//! [`RegistrationStatus::granted_ttl`].
//!
//! # Waiting for changes
//!
//! Everything that follows changes has one shape, `async fn next(&mut self) -> Option<Item>`,
//! cancel-safe, `None` only when nothing more can come: [`RegistryWatch::next`] (every event),
//! [`StatusWatch::next`] and [`LiveUpdates::next`] (the latest state; changes made faster than
//! they are read coalesce). With the `stream` feature each of them is also a
//! `futures_core::Stream` of the same items.
//!
//! ```no_run
//! # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
//! use coordination::registry::{Balancer, InstanceSpec};
//!
//! let registry = coord.registry();
//! let reg = registry.register(InstanceSpec::new("chat", "chat-1", "10.0.0.7:50051")).await?;
//! let live = registry.live("chat").await?;
//! let mut updates = live.updates();
//! let mut events = registry.watch("chat");
//! if let Some(event) = events.next().await {
//!     println!("{} at revision {}", event.id(), event.revision());
//! }
//! if let Some(view) = updates.next().await {
//!     println!("{} serving", view.serving().len());
//! }
//! let instance = live.pick(&Balancer::WeightedRoundRobin);
//! # drop(instance);
//! reg.deregister().await?;
//! # Ok(()) }
//! ```
//!
//! See the [registry guide](crate::docs::registry) for the layout and behaviour in full.

mod balancer;
mod changes;
mod discover;
mod drain;
mod health;
mod instance;
mod live;
mod own_keys;
mod register;
mod registrar;
mod registration;
mod status;
mod watch;

use std::fmt;
use std::sync::Arc;

pub use balancer::Balancer;
pub use drain::DrainRequest;
pub use health::HealthCheck;
pub use instance::{Health, Instance, InstanceSpec, DEFAULT_WEIGHT};
pub use live::{LiveInstances, LiveSet, LiveUpdates};
pub use register::RegistrationBuilder;
pub use registration::Registration;
pub use status::{RegistrationState, RegistrationStatus, StatusWatch};
pub use watch::{RegistryEvent, RegistryWatch};

use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};

/// The default resolver key prefix: instances that should get traffic live at
/// `<namespace>/services/<service>/<id>`.
pub const DEFAULT_RESOLVER_PREFIX: &str = "/services";

/// The default status key prefix: every registered instance's full record lives at
/// `<namespace>/__coordination/registry/<service>/<id>`.
pub const DEFAULT_STATUS_PREFIX: &str = "/__coordination/registry";

/// Where the registry keeps its keys and how it reads them. Build with
/// [`RegistryOptions::new`] and the `with_*` methods; pass to
/// [`Coordinator::registry_with`].
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    resolver_prefix: String,
    status_prefix: String,
    page_size: u32,
    event_capacity: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryOptions {
    /// Defaults: resolver prefix [`DEFAULT_RESOLVER_PREFIX`], status prefix
    /// [`DEFAULT_STATUS_PREFIX`], reads paged by 1000 keys, watch buffers of 1024 events.
    pub fn new() -> Self {
        RegistryOptions {
            resolver_prefix: DEFAULT_RESOLVER_PREFIX.to_string(),
            status_prefix: DEFAULT_STATUS_PREFIX.to_string(),
            page_size: 1000,
            event_capacity: 1024,
        }
    }

    /// The key prefix a gRPC resolver watches (no trailing `/`; the coordinator's namespace is
    /// put in front). A Go client dials `etcd:///` followed by the full key prefix of the
    /// service with its trailing `/`, see [`Registry::resolver_target`].
    #[must_use]
    pub fn with_resolver_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.resolver_prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    /// The key prefix of the full records (no trailing `/`; the namespace is put in front).
    /// Must not overlap the resolver prefix. Drain requests live beside it, under the same
    /// prefix with `-drain` appended (default `/__coordination/registry-drain`).
    #[must_use]
    pub fn with_status_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.status_prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    /// Keys per page when reading a service (default 1000, at least 1).
    #[must_use]
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Events a [`RegistryWatch`] buffers before it stops reading etcd (default 1024).
    #[must_use]
    pub fn with_event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }
}

/// Full key prefixes (namespace included) and read settings.
#[derive(Debug)]
pub(crate) struct Layout {
    /// `<ns><resolver_prefix>`, no trailing `/`.
    resolver_root: String,
    /// `<ns><status_prefix>`, no trailing `/`.
    status_root: String,
    /// `<status_root>-drain`, no trailing `/`: operators' drain requests.
    drain_root: String,
    pub(crate) page_size: i64,
    pub(crate) event_capacity: usize,
}

impl Layout {
    fn new(coord: &Coordinator, options: &RegistryOptions) -> Result<Self> {
        let resolver_root = coord.key(&options.resolver_prefix);
        let status_root = coord.key(&options.status_prefix);
        for (what, root) in [("resolver", &resolver_root), ("status", &status_root)] {
            if root.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("empty registry {what} prefix"),
                ));
            }
        }
        let overlaps = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if overlaps(&resolver_root, &status_root) || overlaps(&status_root, &resolver_root) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "registry resolver prefix `{resolver_root}` and status prefix `{status_root}` overlap"
                ),
            ));
        }
        let drain_root = format!("{status_root}-drain");
        if overlaps(&resolver_root, &drain_root) || overlaps(&drain_root, &resolver_root) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "registry resolver prefix `{resolver_root}` and drain-request prefix `{drain_root}` overlap"
                ),
            ));
        }
        Ok(Layout {
            resolver_root,
            status_root,
            drain_root,
            page_size: i64::from(options.page_size),
            event_capacity: options.event_capacity,
        })
    }

    /// `<resolver root>/<service>/`.
    pub(crate) fn resolver_dir(&self, service: &str) -> String {
        format!("{}/{service}/", self.resolver_root)
    }

    /// `<status root>/<service>/`.
    pub(crate) fn status_dir(&self, service: &str) -> String {
        format!("{}/{service}/", self.status_root)
    }

    /// `<status root>-drain/<service>/<id>`: an operator's drain request for one instance.
    pub(crate) fn drain_key(&self, service: &str, id: &str) -> String {
        format!("{}/{service}/{id}", self.drain_root)
    }
}

/// The service registry on a [`Coordinator`]'s connection: register instances, discover them,
/// watch them, and keep load-balanced live views. Cheap to clone.
///
/// # Key layout
/// Two key spaces, both written in one transaction and both attached to the instance's lease,
/// and a third where operators ask an instance to drain (also on the instance's lease):
///
/// | key | value | present |
/// |---|---|---|
/// | `<ns>/services/<service>/<id>` | gRPC naming JSON `{"Op":0,"Addr":"host:port","Metadata":null}` | only while the instance is healthy with weight > 0 |
/// | `<ns>/__coordination/registry/<service>/<id>` | the full record: [`InstanceSpec`] fields + `"health"` | while registered |
/// | `<ns>/__coordination/registry-drain/<service>/<id>` | an operator's drain request, JSON `{"requested_by":…}` | from [`request_drain`](Self::request_drain) until the instance's lease ends |
///
/// A Go gRPC client dialing [`resolver_target`](Self::resolver_target) (e.g.
/// `etcd:////services/chat/`) therefore sees exactly the instances that should get traffic;
/// [`discover`](Self::discover), [`watch`](Self::watch) and [`live`](Self::live) read the status
/// space and see every instance with its [`Health`]. The resolver value is what etcd's Go
/// endpoints manager writes for an endpoint without metadata: Go's resolver hands `Metadata` to
/// grpc-go, whose `round_robin` balancer panics on a JSON object there, so weight, zone, version,
/// health and the instance's own `metadata` live only in the status record. Both prefixes are
/// configurable with [`RegistryOptions`].
///
/// ```no_run
/// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
/// use std::time::Duration;
/// use coordination::registry::{Balancer, Health, InstanceSpec};
///
/// let reg = coord
///     .registry()
///     .register(InstanceSpec::new("chat", "chat-1", "10.0.0.7:50051").with_zone("eu-1a"))
///     .with_lease_ttl(Duration::from_secs(10))
///     .await?;
/// let set = coord.registry().live("chat").await?;
/// if let Some(instance) = set.pick(&Balancer::WeightedRoundRobin) {
///     println!("call {}", instance.addr());
/// }
/// reg.set_health(Health::Draining).await?;
/// reg.deregister().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    coord: Coordinator,
    layout: Arc<Layout>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("resolver_root", &self.layout.resolver_root)
            .field("status_root", &self.layout.status_root)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The key prefix gRPC resolvers watch for `service`: `<ns><resolver prefix>/<service>/`.
    pub fn resolver_prefix(&self, service: &str) -> String {
        self.layout.resolver_dir(service)
    }

    /// The key prefix of `service`'s full records: `<ns><status prefix>/<service>/`.
    pub fn status_prefix(&self, service: &str) -> String {
        self.layout.status_dir(service)
    }

    /// The target a Go gRPC client dials to reach `service` through etcd's naming resolver:
    /// `etcd:///` + the resolver key prefix, trailing `/` included, e.g.
    /// `etcd:////services/chat/` (four slashes: the key itself starts with `/`).
    ///
    /// Keep the trailing `/`: Go's resolver watches the target as a plain key prefix, so
    /// `etcd:////services/chat` would also return the instances of `chatty`.
    pub fn resolver_target(&self, service: &str) -> String {
        format!("etcd:///{}", self.layout.resolver_dir(service))
    }
}

impl Coordinator {
    /// The service registry with default [`RegistryOptions`] (resolver prefix `/services`,
    /// status prefix `/__coordination/registry`, under this coordinator's namespace).
    pub fn registry(&self) -> Registry {
        Registry {
            coord: self.clone(),
            layout: Arc::new(
                Layout::new(self, &RegistryOptions::new())
                    .expect("the default registry prefixes are valid"),
            ),
        }
    }

    /// The service registry with custom prefixes or read settings.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if a prefix is empty (with no namespace) or the resolver
    /// and status prefixes overlap.
    pub fn registry_with(&self, options: RegistryOptions) -> Result<Registry> {
        Ok(Registry {
            coord: self.clone(),
            layout: Arc::new(Layout::new(self, &options)?),
        })
    }
}
