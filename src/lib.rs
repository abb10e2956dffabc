//! Typed, hot-reloading configuration on etcd.
//!
//! `#[derive(CoordConfig)]` binds a serde struct to an etcd key prefix. Values come in layers,
//! defaults < local file < etcd prefix < environment, and every value knows which layer and key
//! it came from. The merged, validated struct lives in an `arc-swap` snapshot: [`ConfigHandle::load`]
//! costs nanoseconds and never blocks. An etcd watch and a file watch reload it; one etcd
//! revision becomes one snapshot, and bad config is rejected while the last good snapshot keeps
//! serving.
//!
//! # Contents
//! - [Quick start](#quick-start)
//! - [Layers](#layers)
//! - [The prefix ↔ struct rule](#the-prefix--struct-rule)
//! - [Reloads and validation](#reloads-and-validation)
//! - [Errors](#errors)
//! - [Security](#security)
//! - [Observability](#observability)
//! - [Feature flags](#feature-flags)
//!
//! # Quick start
//! ```no_run
//! use coordination::{CoordConfig, Coordinator, CoordinatorOptions};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
//! #[coord(prefix = "/apps/chat/config", file = "config/chat.yaml", env_prefix = "CHAT_")]
//! struct ChatConfig {
//!     #[schemars(range(min = 1))]
//!     port: u16,
//!     #[serde(default)]
//!     greeting: String,
//! }
//!
//! # async fn run() -> coordination::Result<()> {
//! let coord = Coordinator::connect(CoordinatorOptions::new(["http://127.0.0.1:2379"])).await?;
//! let cfg = ChatConfig::bind(&coord).await?;
//! let snap = cfg.load();                  // lock-free, no allocation
//! println!("port {} at revision {}", snap.port, snap.revision());
//! println!("port came from {}", snap.source("port"));
//! let mut events = cfg.subscribe();       // applied snapshots and rejections, in order
//! while let Some(event) = events.next().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! # Layers
//! Values come from four layers; a higher one overrides a lower one field by field:
//!
//! | precedence | layer | where | origin recorded |
//! |---|---|---|---|
//! | 1 (lowest) | [`Layer::Default`](provenance::Layer::Default) | `#[serde(default)]` in the type | [`Origin::Default`](provenance::Origin::Default) |
//! | 2 | [`Layer::File`](provenance::Layer::File) | `#[coord(file = "…")]`, YAML or JSON by extension | [`Origin::File`](provenance::Origin::File) (path) |
//! | 3 | [`Layer::Etcd`](provenance::Layer::Etcd) | keys under `#[coord(prefix = "…")]` | [`Origin::Etcd`](provenance::Origin::Etcd) (key, `mod_revision`) |
//! | 4 (highest) | [`Layer::Env`](provenance::Layer::Env) | `<env_prefix><FIELD>__<SUB>` variables | [`Origin::Env`](provenance::Origin::Env) (variable name) |
//!
//! A snapshot records the [`Source`](provenance::Source) of every value ([`Snapshot::sources`]); an [`Error`] about
//! a bad value carries its [`Provenance`](provenance::Provenance), which names the same layer and key.
//!
//! # The prefix ↔ struct rule
//! Key `<prefix>/a/b` is field `a.b`. A value is YAML (so JSON, `8080`, `true` and bare words
//! work); a field the schema types as a string keeps the text as written. A key may hold a whole
//! sub-document; where `<prefix>/a` holds a document and `<prefix>/a/b` also exists, the deeper
//! key wins for field `b`. Deleting a key lets the field fall back to the next lower layer.
//!
//! # Reloads and validation
//! A snapshot is the prefix as of one etcd revision: read once (paged at a pinned revision),
//! then watched from that revision + 1. All events of one revision (one transaction) become one
//! snapshot. Each candidate is merged, deserialized (`serde_path_to_error`), checked against the
//! type's JSON Schema and its `validate()`; a bad one is rejected, logged and delivered to
//! subscribers, and the last good snapshot keeps serving. The state of each layer always mirrors
//! its source: while a bad key stays in etcd (or a bad file on disk), every later change is
//! rejected too, naming the bad key, until it is fixed.
//!
//! # Errors
//! Every fallible call returns [`Error`]: an [`ErrorKind`] to branch on, a message, the
//! [`Provenance`](provenance::Provenance) of a bad value (layer, field path, etcd key, revision) and the underlying
//! error as `source()`.
//!
//! # Security
//! `https://` endpoints with a CA ([`CoordinatorOptions::with_ca_file`]), a client certificate
//! for etcd's `--client-cert-auth` ([`CoordinatorOptions::with_client_identity_files`]) and a
//! user ([`CoordinatorOptions::with_user`]; its auth token is renewed as it expires). A TLS
//! handshake failure is [`ErrorKind::Connection`]; a wrong password or a missing etcd
//! permission is [`ErrorKind::Auth`], naming the key and the permission. [`docs::security`]
//! lists the permissions each part needs, roles for a service, an operator and CI, and the
//! threat model.
//!
//! Secret fields (`#[coord(secret)]`, `#[coord(secrets = "a.b")]`) are masked in errors, logs,
//! diffs and `coordctl`, left out of the last-known-good cache, and never rest in plaintext in
//! the history: they are left out of its records, or encrypted there with a key you provide
//! ([`HistoryOptions::with_secret_key`](history::HistoryOptions::with_secret_key),
//! [`SecretKey`](history::SecretKey)), so that a rollback restores them (see the history guide's
//! [Secrets at rest](docs::history#secrets-at-rest)).
//!
//! # Change control
//! [`change`]: proposals that are reviewed and approved before they apply (a publish guarded by
//! the proposal's base revision, recorded with author, approvers and proposal id), a policy per
//! prefix in etcd (approvals, whether authors may approve their own change, who counts, change
//! windows in an IANA time zone), break-glass writes recorded with their reason, promotion
//! between environments' prefixes, and a YAML template and Markdown reference generated from the
//! published schema. Every guarded write the crate makes checks the policy; a raw `etcdctl put`
//! does not, so etcd RBAC (see [`docs::security`]) keeps operators to proposals.
//!
//! # Observability
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade: the application installs
//! a recorder (before [`Coordinator::connect`]) and picks the exporter. Logs and spans go
//! through `tracing`, one target per subsystem (`coordination::config`, `coordination::history`,
//! `coordination::etcd`, …). [`docs::observability`] has the table of metric names, types,
//! units and labels, the spans and their fields; `docs/alerts.yml` holds Prometheus alerting
//! rules over them.
//!
//! # Feature flags
//! | feature | default | what it adds |
//! |---|---|---|
//! | `derive` | yes | `#[derive(CoordConfig)]` (the `coordination-derive` proc-macro crate) |
//! | `tls` | yes | TLS and mutual TLS to etcd: `https://` endpoints, [`CoordinatorOptions::with_ca_file`] and the other TLS options (etcd-client's rustls with the *ring* provider). See [`docs::security`] |
//! | `cli` | no | the `coordctl` operator binary (history, diff, publish, rollback, schema, watch; clap, rpassword); implies `tls` |
//! | `console` | no | the operator web console, `coordctl serve` and [`console::Console`] (axum, maud, hmac; rustls for its own HTTPS); implies `cli` |
//! | `stream` | no | `futures_core::Stream` for [`config::Subscription`], [`registry::RegistryWatch`], [`registry::StatusWatch`], [`registry::LiveUpdates`], [`lock::Observer`] and [`history::PrefixChanges`] (the `futures-core` crate) |

mod background;
pub mod change;
pub mod config;
#[cfg(feature = "console")]
pub mod console;
mod coordinator;
pub mod docs;
mod error;
mod etcd;
pub mod fleet;
pub mod history;
pub mod lock;
pub mod provenance;
pub mod registry;
mod secrets;
mod telemetry;
#[cfg(feature = "tls")]
mod tls;

pub use config::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, Snapshot};
pub use coordinator::{Coordinator, CoordinatorOptions};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use etcd::DEFAULT_MAX_DECODE_BYTES;
/// The etcd client this crate is built on, re-exported so that [`Coordinator::client`] and the
/// fenced transactions' `Compare`/`TxnOp` types need no separately pinned dependency.
pub use etcd_client;

/// `#[derive(CoordConfig)]`: implements [`CoordConfig`] from `#[coord(...)]` attributes (the
/// table below); see the trait for an example with secret fields.
#[cfg(feature = "derive")]
pub use coordination_derive::CoordConfig;

/// `#[derive(Rebuild)]`: implements [`config::Rebuild`] for a struct nested in a config type, so
/// a reload that changed one of its fields deserializes that field only.
#[cfg(feature = "derive")]
pub use coordination_derive::Rebuild;

/// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Items used by `#[derive(CoordConfig)]`'s generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::config::rebuild::{
        KeepClone, KeepDeserialize, Probe, ViaDeserialize, ViaRebuild,
    };
    pub use crate::config::{ChangedPaths, CoordConfig, Rebuild};
    pub use schemars::JsonSchema;
    pub use serde::de::DeserializeOwned;
    pub use serde::Deserialize;
    pub use serde::Serialize;
    pub use serde_json::{Error as JsonError, Value};
    pub use std::result::Result;
    pub use std::string::{String, ToString};
}
