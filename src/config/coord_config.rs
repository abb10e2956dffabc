//! The trait that `#[derive(CoordConfig)]` implements.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ConfigHandle, ConfigOptions};
use crate::coordinator::Coordinator;
use crate::error::Result;

/// A configuration struct bound to an etcd key prefix.
///
/// Implement it with `#[derive(CoordConfig)]` and `#[coord(prefix = "…")]`:
///
/// ```
/// use coordination::CoordConfig;
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
/// #[coord(prefix = "/apps/chat/config", file = "config/chat.yaml", env_prefix = "CHAT_",
///         validate = "ChatConfig::check")]
/// struct ChatConfig {
///     #[schemars(range(min = 1))]
///     port: u16,
///     #[serde(default)]
///     replicas: u32,
/// }
///
/// impl ChatConfig {
///     fn check(&self) -> Result<(), String> {
///         if self.replicas > 100 { return Err("at most 100 replicas".into()); }
///         Ok(())
///     }
/// }
///
/// assert_eq!(<ChatConfig as CoordConfig>::PREFIX, "/apps/chat/config");
/// ```
///
/// The serde shape of the type is the shape of the prefix: key `<PREFIX>/a/b` sets field `a.b`.
/// The JSON Schema (from `schemars`, with its `range`, `length` and `regex` constraints) and
/// [`validate`](CoordConfig::validate) are checked before any new value is served; a rejected
/// candidate's error lists every violation (the first 20, then a count), each with its field
/// path.
///
/// # Attributes
/// On the struct, `#[coord(...)]` takes `prefix = "…"` (required), `file = "…"`,
/// `env_prefix = "…"`, `validate = "path::to::fn"` and `secrets = "a.b, c.d"` (dotted paths of
/// secret fields, also inside nested types; each must start with a field of the struct). On a
/// field, `#[coord(secret)]` marks it secret. Paths are serde's names for the fields: a
/// field's `#[serde(rename = "…")]` and the struct's `#[serde(rename_all = "…")]` count (the
/// `deserialize` side where the two differ). See [`SECRETS`](CoordConfig::SECRETS) for what
/// being secret means.
///
/// ```
/// use coordination::CoordConfig;
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
/// #[coord(prefix = "/apps/billing/config", secrets = "database.password")]
/// #[serde(rename_all = "camelCase")]
/// struct BillingConfig {
///     #[coord(secret)]
///     api_token: String,
///     database: Database,
/// }
///
/// #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
/// struct Database {
///     host: String,
///     password: String,
/// }
///
/// assert_eq!(<BillingConfig as CoordConfig>::SECRETS, &["database.password", "apiToken"]);
/// ```
pub trait CoordConfig: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The etcd key prefix, without a trailing `/` (e.g. `/apps/chat/config`). The coordinator's
    /// namespace, if any, is put in front of it.
    const PREFIX: &'static str;

    /// The local YAML (`.yaml`/`.yml`) or JSON (`.json`) file layer, relative to the working
    /// directory; `None` for no file layer. A missing file is an empty layer.
    const FILE: Option<&'static str> = None;

    /// The environment variable prefix (e.g. `CHAT_`); `None` for no environment layer.
    const ENV_PREFIX: Option<&'static str> = None;

    /// Dotted field paths (serde names, as in the document) whose values are secret
    /// (`database.password`): shown as `***` in diffs, history listings, logs and error
    /// messages, and left out of the last-known-good cache. Set by `#[coord(secret)]` on a
    /// field and `#[coord(secrets = "a.b, c.d")]` on the struct. A path covers everything
    /// below it, and an error about a value that holds a secret (an object with a secret
    /// field inside) shows that value as `***` too, keeping the constraint and the location.
    const SECRETS: &'static [&'static str] = &[];

    /// The name and version of the crate the type is compiled in (`CARGO_PKG_NAME`,
    /// `CARGO_PKG_VERSION`), shown in the instance's [receipt](crate::fleet::Receipt) and in
    /// the publish gate's refusals. The derive sets it from the deriving crate's own Cargo
    /// variables; `None` by default.
    const APP: Option<(&'static str, &'static str)> = None;

    /// A check beyond types and schema, run on every candidate value before it is served.
    /// Return `Err(reason)` to reject it. The default accepts everything.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Binds the type to its prefix: reads every layer, validates, and starts the etcd and file
    /// watches. Same as [`Coordinator::config`].
    ///
    /// # Errors
    /// As [`Coordinator::config`]: etcd unreachable, or the current config invalid.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes binds nothing: no task keeps running (the
    /// history part may have recorded the bound revision, which is harmless).
    fn bind(coord: &Coordinator) -> impl Future<Output = Result<ConfigHandle<Self>>> + Send
    where
        Self: Sized,
    {
        coord.config::<Self>()
    }

    /// Binds the type with `options` (another prefix, file, history settings, …). Same as
    /// [`Coordinator::config_with`].
    ///
    /// # Errors
    /// As [`Coordinator::config_with`].
    ///
    /// # Cancel safety
    /// As [`bind`](Self::bind).
    fn bind_with(
        coord: &Coordinator,
        options: ConfigOptions,
    ) -> impl Future<Output = Result<ConfigHandle<Self>>> + Send
    where
        Self: Sized,
    {
        coord.config_with::<Self>(options)
    }
}
