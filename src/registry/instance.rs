//! What an instance is: the description a service registers, its health, the record stored in
//! the status key space, and the gRPC-naming value (address only) stored in the resolver key
//! space.

use std::fmt;

use etcd_client::KeyValue;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The weight [`InstanceSpec::new`] gives an instance (and the weight assumed when a stored
/// record has none).
pub const DEFAULT_WEIGHT: u32 = 100;

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// What a service instance registers: where it listens and how it should be balanced.
///
/// Stored as JSON in the status key space (with its [`Health`]) and, while it should get
/// traffic, as gRPC-naming JSON carrying only `addr` in the resolver key space (see the
/// [module docs](crate::registry::Registry)).
///
/// - `service` and `id` must be non-empty and contain no `/` (they are key segments);
/// - `addr` is passed to gRPC clients as is, normally `host:port`;
/// - `weight` is relative (`0` means "no traffic": the instance is never picked and is not
///   resolver-visible);
/// - `metadata` is any JSON value, kept as given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The service name, e.g. `chat`.
    pub service: String,
    /// The instance id, unique within the service, e.g. `chat-1`.
    pub id: String,
    /// The address clients connect to, e.g. `10.0.0.7:50051`.
    pub addr: String,
    /// Relative weight for [`Balancer::WeightedRoundRobin`](crate::registry::Balancer::WeightedRoundRobin)
    /// and zone affinity; `0` takes the instance out of traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Availability zone, used by [`Balancer::ZoneAffinity`](crate::registry::Balancer::ZoneAffinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Free-form version string, e.g. `1.4.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Any JSON value (default `null`).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl InstanceSpec {
    /// An instance of `service` named `id` at `addr`, with weight [`DEFAULT_WEIGHT`], no zone,
    /// no version and `null` metadata.
    pub fn new(service: impl Into<String>, id: impl Into<String>, addr: impl Into<String>) -> Self {
        InstanceSpec {
            service: service.into(),
            id: id.into(),
            addr: addr.into(),
            weight: DEFAULT_WEIGHT,
            zone: None,
            version: None,
            metadata: serde_json::Value::Null,
        }
    }

    /// Sets the relative weight (`0` = no traffic).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the availability zone.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the version string.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Checks the fields that become key segments.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_segment("service name", &self.service)?;
        validate_segment("instance id", &self.id)?;
        if self.addr.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("instance `{}/{}` has an empty addr", self.service, self.id),
            ));
        }
        Ok(())
    }
}

/// Checks that `value` can be one etcd key segment: non-empty, no `/`.
pub(crate) fn validate_segment(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("empty {what}"),
        ));
    }
    if value.contains('/') {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} `{value}` contains `/`"),
        ));
    }
    Ok(())
}

/// Whether an instance should get traffic.
///
/// Only [`Health::Healthy`] instances with a non-zero weight are resolver-visible and picked by
/// a [`LiveSet`](crate::registry::LiveSet); the others stay visible to [`discover`](crate::registry::Registry::discover)
/// and [`watch`](crate::registry::Registry::watch) with their status. Stored as `"healthy"`,
/// `"unhealthy"` or `"draining"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Serving: gets traffic.
    #[default]
    Healthy,
    /// Failing (set by hand or by a [`HealthCheck`](crate::registry::HealthCheck)): no traffic.
    Unhealthy,
    /// Finishing in-flight work before shutting down: no new traffic.
    Draining,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
        })
    }
}

/// A registered instance as read from etcd: what it registered, its health, and the lease and
/// revisions of its status key.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// What the instance registered.
    pub spec: InstanceSpec,
    /// Its current health.
    pub health: Health,
    /// The etcd lease its keys live on (`0` for instances built by hand).
    pub lease_id: i64,
    /// The revision at which its status key was created (a re-registration creates it anew).
    pub create_revision: i64,
    /// The revision of the last change to its status key.
    pub mod_revision: i64,
}

impl Instance {
    /// An instance built by hand (for [`LiveSet::from_instances`](crate::registry::LiveSet::from_instances)
    /// and tests): lease and revisions are `0`.
    pub fn new(spec: InstanceSpec, health: Health) -> Self {
        Instance {
            spec,
            health,
            lease_id: 0,
            create_revision: 0,
            mod_revision: 0,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.spec.service
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The address clients connect to.
    pub fn addr(&self) -> &str {
        &self.spec.addr
    }

    /// The relative weight.
    pub fn weight(&self) -> u32 {
        self.spec.weight
    }

    /// The availability zone, if any.
    pub fn zone(&self) -> Option<&str> {
        self.spec.zone.as_deref()
    }

    /// `true` if the instance should get traffic: [`Health::Healthy`] and weight above 0. Exactly
    /// these instances are in the resolver key space and are picked by balancers.
    pub fn is_serving(&self) -> bool {
        serving(self.health, self.spec.weight)
    }

    /// Parses a status key's value. `id` is the key's last segment (it wins over the record's).
    pub(crate) fn from_kv(service: &str, id: &str, kv: &KeyValue) -> Result<Instance> {
        let record: Record = serde_json::from_slice(kv.value()).map_err(|e| {
            Error::new(
                ErrorKind::Validation,
                format!("malformed registry record for `{service}/{id}`: {e}"),
            )
            .with_key(String::from_utf8_lossy(kv.key()).into_owned())
            .with_revision(kv.mod_revision())
            .with_source(e)
        })?;
        let mut spec = record.spec;
        spec.service = service.to_string();
        spec.id = id.to_string();
        Ok(Instance {
            spec,
            health: record.health,
            lease_id: kv.lease(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// `true` if what the instance registered or its health differ (revisions aside).
    pub(crate) fn differs_from(&self, other: &Instance) -> bool {
        self.spec != other.spec || self.health != other.health || self.lease_id != other.lease_id
    }
}

/// Whether an instance with this health and weight gets traffic.
pub(crate) fn serving(health: Health, weight: u32) -> bool {
    health == Health::Healthy && weight > 0
}

/// The JSON in a status key: every [`InstanceSpec`] field plus `health`.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    spec: InstanceSpec,
    #[serde(default)]
    health: Health,
}

/// The status key's value for `spec` at `health`.
pub(crate) fn record_json(spec: &InstanceSpec, health: Health) -> String {
    serde_json::to_string(&Record {
        spec: spec.clone(),
        health,
    })
    .expect("a registry record always serializes")
}

/// gRPC naming's `naming.Update` exactly as etcd's Go endpoints manager
/// (`clientv3/naming/endpoints`) writes an endpoint without metadata:
/// `{"Op":0,"Addr":"host:port","Metadata":null}`, field order as Go's `encoding/json` writes it.
///
/// `Metadata` stays `null` on purpose: Go's resolver copies it into `resolver.Address`, and
/// grpc-go's `round_robin` (every balancer built on `balancer/base`) uses that address as a map
/// key, so a JSON object there panics the Go client ("hash of unhashable type"). Everything else
/// an instance registers lives in its status record.
#[derive(Serialize)]
struct NamingUpdate<'a> {
    #[serde(rename = "Op")]
    op: u8,
    #[serde(rename = "Addr")]
    addr: &'a str,
    #[serde(rename = "Metadata")]
    metadata: (),
}

/// The resolver key's value for `spec`: gRPC naming JSON with `Op` 0 (add), its `addr`, and
/// `null` metadata.
pub(crate) fn naming_json(spec: &InstanceSpec) -> String {
    serde_json::to_string(&NamingUpdate {
        op: 0,
        addr: &spec.addr,
        metadata: (),
    })
    .expect("a naming update always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat() -> InstanceSpec {
        InstanceSpec::new("chat", "chat-1", "10.0.0.7:50051")
            .with_zone("eu-1a")
            .with_version("1.4.2")
            .with_metadata(json!({"proto": "v2"}))
    }

    #[test]
    fn naming_json_is_what_go_writes_for_an_endpoint_without_metadata() {
        // Byte for byte what `endpoints.Manager.AddEndpoint(ctx, key, Endpoint{Addr: addr})`
        // stores; the instance's own metadata stays out of it.
        assert_eq!(
            naming_json(&chat()),
            r#"{"Op":0,"Addr":"10.0.0.7:50051","Metadata":null}"#
        );
    }

    #[test]
    fn record_round_trips_with_health() {
        let text = record_json(&chat(), Health::Draining);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["health"], "draining");
        assert_eq!(v["addr"], "10.0.0.7:50051");
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back.spec, chat());
        assert_eq!(back.health, Health::Draining);
    }

    #[test]
    fn record_defaults_missing_fields() {
        let back: Record =
            serde_json::from_str(r#"{"service":"s","id":"i","addr":"a:1"}"#).unwrap();
        assert_eq!(back.spec.weight, DEFAULT_WEIGHT);
        assert_eq!(back.health, Health::Healthy);
    }

    #[test]
    fn segments_must_be_plain() {
        assert!(InstanceSpec::new("chat", "a/b", "x").validate().is_err());
        assert!(InstanceSpec::new("", "a", "x").validate().is_err());
        assert!(InstanceSpec::new("chat", "a", "").validate().is_err());
        assert!(InstanceSpec::new("chat", "a", "x").validate().is_ok());
    }

    #[test]
    fn serving_needs_health_and_weight() {
        assert!(serving(Health::Healthy, 1));
        assert!(!serving(Health::Healthy, 0));
        assert!(!serving(Health::Draining, 100));
        assert!(!serving(Health::Unhealthy, 100));
    }
}
