//! [`Receipt`]: what one instance did with the config, kept by the instance under its own
//! lease; and [`ReceiptOptions`], how a bound handle writes it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigStatus, Rejection, WatchState};
use crate::error::{Error, ErrorKind, Result};

/// The environment variable holding an instance's labels, `zone=eu-1a,tier=canary`, read at
/// bind unless [`ReceiptOptions::without_labels_from_env`].
pub const LABELS_ENV: &str = "COORD_LABELS";

/// The environment variable that, when set, is the instance id (unless
/// [`ReceiptOptions::with_instance_id`] sets one).
pub const INSTANCE_ID_ENV: &str = "COORD_INSTANCE_ID";

/// Default lease TTL of a receipt: 10 s.
pub const DEFAULT_RECEIPT_TTL: Duration = Duration::from_secs(10);

/// Default coalescing window of receipt writes: 20 ms.
pub const DEFAULT_RECEIPT_COALESCE: Duration = Duration::from_millis(20);

/// How a bound handle keeps its receipt ([`ConfigOptions::with_receipts`](crate::ConfigOptions::with_receipts)).
///
/// Defaults: on; instance id from [`INSTANCE_ID_ENV`], else `<host>-<pid>-<4 hex digits>`;
/// labels from [`LABELS_ENV`]; lease TTL 10 s; writes coalesced over 20 ms.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "options do nothing until they are passed on"]
pub struct ReceiptOptions {
    pub(crate) enabled: bool,
    pub(crate) instance_id: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) labels_env: bool,
    pub(crate) ttl: Duration,
    pub(crate) coalesce: Duration,
}

impl Default for ReceiptOptions {
    fn default() -> Self {
        ReceiptOptions {
            enabled: true,
            instance_id: None,
            labels: BTreeMap::new(),
            labels_env: true,
            ttl: DEFAULT_RECEIPT_TTL,
            coalesce: DEFAULT_RECEIPT_COALESCE,
        }
    }
}

impl ReceiptOptions {
    /// The defaults (see the type docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// No receipt: the instance is invisible to `coordctl config instances`, the publish gate
    /// and rollouts (it is never in a cohort).
    pub fn disabled() -> Self {
        ReceiptOptions {
            enabled: false,
            ..Self::default()
        }
    }

    /// The instance id (one key segment: not empty, no `/`). Keep it stable across restarts
    /// (a pod name, a host name) so the instance stays in its rollout cohort.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Adds a label (overrides one of the same name from [`LABELS_ENV`]).
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// Does not read labels from [`LABELS_ENV`].
    pub fn without_labels_from_env(mut self) -> Self {
        self.labels_env = false;
        self
    }

    /// The receipt's lease TTL (default 10 s, at least 1 s; etcd may raise it to its minimum,
    /// about 2 s). A crashed or partitioned instance leaves the table within about the TTL.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long changes are collected into one write (default 20 ms): a burst of events
    /// (an apply and a status change, several revisions in a row) costs one etcd put.
    pub fn with_coalesce(mut self, window: Duration) -> Self {
        self.coalesce = window;
        self
    }

    /// The instance id these options give: set, from [`INSTANCE_ID_ENV`], or made up.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty id or one holding `/`.
    pub(crate) fn resolve_id(&self) -> Result<String> {
        let id = match &self.instance_id {
            Some(id) => id.clone(),
            None => match std::env::var(INSTANCE_ID_ENV) {
                Ok(id) if !id.is_empty() => id,
                _ => default_instance_id(),
            },
        };
        if id.is_empty() || id.contains('/') {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("instance id `{id}` must be one key segment: not empty, no `/`"),
            ));
        }
        Ok(id)
    }

    /// The labels: [`LABELS_ENV`] (if read) overridden by those set here.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the variable for an entry that is not
    /// `name=value`.
    pub(crate) fn resolve_labels(&self) -> Result<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        if self.labels_env {
            if let Ok(text) = std::env::var(LABELS_ENV) {
                labels = parse_labels(&text).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!("environment variable {LABELS_ENV}: {e}"),
                    )
                })?;
            }
        }
        labels.extend(self.labels.clone());
        Ok(labels)
    }
}

/// Parses `zone=eu-1a,tier=canary` (spaces around entries ignored; empty entries skipped).
pub(crate) fn parse_labels(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(format!("label `{entry}` is not `name=value`"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("label `{entry}` has an empty name"));
        }
        labels.insert(name.to_string(), value.trim().to_string());
    }
    Ok(labels)
}

/// `<host>-<pid>-<4 hex digits>`.
fn default_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
        .replace('/', "_");
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(now_ms() as u128);
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        hasher.finish() & 0xffff
    )
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `SystemTime` from Unix milliseconds.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What one instance did with the config: the JSON value of its receipt key
/// (`/__coordination/instances/<prefix>/<instance-id>`, held by the instance's lease, so it
/// disappears with the instance). Read them with
/// [`Fleet::instances`](super::Fleet::instances).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Receipt {
    /// The instance id ([`ReceiptOptions::with_instance_id`]).
    pub instance: String,
    /// The instance's labels ([`ReceiptOptions::with_label`], [`LABELS_ENV`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The application (crate) name and version the type was compiled in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppInfo>,
    /// The hash of the type's JSON Schema (12 hex digits of its SHA-256); the schema itself is
    /// at `/__coordination/schemas/<prefix>/<hash>`.
    pub schema_hash: String,
    /// The etcd revision of the snapshot the instance serves.
    pub revision: i64,
    /// The last etcd revision the instance processed (applied or rejected).
    pub processed: i64,
    /// When the instance started serving `revision`, Unix ms.
    pub serving_since_unix_ms: u64,
    /// The handle's watch state.
    pub status: InstanceStatus,
    /// What the application last reported ([`ConfigHandle::report_health`](crate::ConfigHandle::report_health)).
    #[serde(default)]
    pub health: Health,
    /// The last rejected change, if any since the instance last applied one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<ReceiptRejection>,
    /// The rollout step whose staged values the instance serves (or rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReceipt>,
    /// When this receipt was written, Unix ms (by the instance's clock).
    pub updated_unix_ms: u64,
    /// How many times the instance wrote its receipt since bind.
    #[serde(default)]
    pub writes: u64,
}

impl Receipt {
    /// [`serving_since_unix_ms`](Self::serving_since_unix_ms) as a time.
    pub fn serving_since(&self) -> SystemTime {
        from_ms(self.serving_since_unix_ms)
    }

    /// [`updated_unix_ms`](Self::updated_unix_ms) as a time.
    pub fn updated(&self) -> SystemTime {
        from_ms(self.updated_unix_ms)
    }

    /// Whether the instance serves the staged values of rollout `id` at step `step` (or a
    /// later step) without having rejected them.
    pub fn serves_rollout(&self, id: &str, step: u32) -> bool {
        self.rollout
            .as_ref()
            .is_some_and(|r| r.id == id && r.step >= step && r.applied)
    }
}

/// The application a type was compiled in: `CARGO_PKG_NAME` and `CARGO_PKG_VERSION` of the
/// crate that derived [`CoordConfig`](crate::CoordConfig).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// The crate name.
    pub name: String,
    /// The crate version.
    pub version: String,
}

impl std::fmt::Display for AppInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// An instance's watch state, as in its receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstanceStatus {
    /// The watch is open and current.
    Live,
    /// The watch failed and is being re-opened.
    Reconnecting,
    /// Bound without etcd, serving defaults, file, cache and environment.
    Stale,
}

impl InstanceStatus {
    pub(crate) fn of(status: &ConfigStatus) -> Self {
        match status.state {
            WatchState::Live | WatchState::Fixed => InstanceStatus::Live,
            WatchState::Reconnecting => InstanceStatus::Reconnecting,
            WatchState::Stale => InstanceStatus::Stale,
        }
    }

    /// `live`, `reconnecting`, `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Live => "live",
            InstanceStatus::Reconnecting => "reconnecting",
            InstanceStatus::Stale => "stale",
        }
    }
}

/// The health an application reports through its handle
/// ([`ConfigHandle::report_health`](crate::ConfigHandle::report_health)), e.g. from its own
/// error-rate check. A rollout reverts when a cohort instance reports itself unhealthy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum Health {
    /// Healthy (the default).
    #[default]
    Healthy,
    /// Unhealthy, with a reason shown to operators.
    Unhealthy(String),
}

impl Health {
    /// Whether this is [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// A rejected change in a receipt. The error text is the crate's own message, in which secret
/// values are already masked: it never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReceiptRejection {
    /// The etcd revision of the rejected change.
    pub revision: i64,
    /// The dotted field path, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The layer of the bad value (`etcd`, `file`, `env`, `default`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The etcd key, file or variable of the bad value, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The error message (secrets masked).
    pub error: String,
    /// The rollout whose staged values were rejected, if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
}

impl ReceiptRejection {
    pub(crate) fn of(rejection: &Rejection, processed: i64, rollout: Option<String>) -> Self {
        let e = &rejection.error;
        ReceiptRejection {
            revision: e.revision().unwrap_or(processed),
            field: e.field().map(str::to_string),
            layer: e.layer().map(|l| l.as_str().to_string()),
            key: e.key().map(str::to_string),
            error: e.message().to_string(),
            rollout,
        }
    }
}

impl std::fmt::Display for ReceiptRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {}: ", self.revision)?;
        if let Some(field) = &self.field {
            write!(f, "`{field}` ")?;
        }
        match (&self.layer, &self.key) {
            (Some(layer), Some(key)) => write!(f, "from {layer} `{key}`: ")?,
            (Some(layer), None) => write!(f, "from {layer}: ")?,
            (None, Some(key)) => write!(f, "from `{key}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.error)
    }
}

/// The rollout an instance takes part in, as in its receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutReceipt {
    /// The rollout id.
    pub id: String,
    /// The step (0-based) the instance was put in the cohort at, or the latest it saw.
    pub step: u32,
    /// Whether the staged values were applied (false: rejected, or not yet processed).
    pub applied: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_refuse_bad_entries() {
        let l = parse_labels(" zone=eu-1a, tier=canary ,").unwrap();
        assert_eq!(l["zone"], "eu-1a");
        assert_eq!(l["tier"], "canary");
        assert!(parse_labels("zone").unwrap_err().contains("zone"));
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn ids_are_one_segment() {
        let o = ReceiptOptions::new().with_instance_id("a/b");
        assert_eq!(
            o.resolve_id().unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let id = ReceiptOptions::new().with_instance_id("a-1").resolve_id();
        assert_eq!(id.unwrap(), "a-1");
    }

    #[test]
    fn receipts_round_trip_as_json() {
        let r = Receipt {
            instance: "a".into(),
            labels: BTreeMap::from([("zone".into(), "x".into())]),
            app: Some(AppInfo {
                name: "chat".into(),
                version: "1.4.2".into(),
            }),
            schema_hash: "abc".into(),
            revision: 5,
            processed: 6,
            serving_since_unix_ms: 1,
            status: InstanceStatus::Live,
            health: Health::Unhealthy("errors".into()),
            rejection: None,
            rollout: Some(RolloutReceipt {
                id: "r1".into(),
                step: 1,
                applied: true,
            }),
            updated_unix_ms: 2,
            writes: 3,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""health":{"state":"unhealthy","reason":"errors"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Receipt>(&text).unwrap(), r);
        assert!(r.serves_rollout("r1", 0) && r.serves_rollout("r1", 1));
        assert!(!r.serves_rollout("r1", 2) && !r.serves_rollout("r2", 0));
    }
}
