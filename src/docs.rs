//! Guides: how the crate behaves and how it lays out its keys, rendered from `docs/*.md`.
//!
//! - [`failure`]: what every part does when etcd, the network or the input misbehaves.
//! - [`lock_safety`]: the lock's safety model, fencing tokens and interop with Go and `etcdctl`.
//! - [`history`]: the versioned history's layout in etcd, retention, publish and rollback.
//! - [`registry`]: the service registry's keys, the gRPC naming format and the balancers.
//! - [`security`]: TLS, mutual TLS, users and tokens, the etcd permissions each part needs,
//!   roles for a service, an operator and CI, and the threat model.
//! - [`incremental`]: how a reload updates only what an etcd revision changed, and how it
//!   stays equal to a full rebuild.
//! - [`observability`]: the metrics (names, types, units, labels), the alerting rules in
//!   `docs/alerts.yml`, and the tracing targets, spans and fields.

pub mod failure {
    #![doc = include_str!("../docs/failure.md")]
}

pub mod lock_safety {
    #![doc = include_str!("../docs/lock-safety.md")]
}

pub mod history {
    #![doc = include_str!("../docs/history.md")]
}

pub mod registry {
    #![doc = include_str!("../docs/registry.md")]
}

pub mod security {
    #![doc = include_str!("../docs/security.md")]
}

pub mod observability {
    #![doc = include_str!("../docs/observability.md")]
}

pub mod incremental {
    #![doc = include_str!("../docs/incremental.md")]
}
