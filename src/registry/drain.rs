//! Operator drain: [`Registry::request_drain`] asks a registered instance (usually in another
//! process) to drain itself. The request is one key per instance,
//! `<ns><status prefix>-drain/<service>/<id>`, put on the instance's own lease (so it goes
//! when the registration ends); the instance's registration follows that key with the crate's
//! prefix follower and then sets its own health to [`Health::Draining`](super::Health::Draining),
//! exactly as [`Registration::set_health`](super::Registration::set_health) would, so its
//! write-back of deleted keys never undoes the drain.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::instance::validate_segment;
use super::Registry;
use crate::error::{Error, ErrorKind, Permission, Result};

/// A drain request as written by [`Registry::request_drain`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainRequest {
    /// The service of the instance asked to drain.
    pub service: String,
    /// The instance id.
    pub id: String,
    /// The request key: `<ns><status prefix>-drain/<service>/<id>`.
    pub key: String,
    /// The instance's lease (from its status record), which the request key is attached to.
    pub lease_id: i64,
    /// The etcd revision at which the request was written.
    pub revision: i64,
}

/// The value of a drain-request key.
pub(super) fn request_json(requested_by: &str) -> String {
    serde_json::json!({ "requested_by": requested_by }).to_string()
}

/// Who asked for a drain, from a drain-request value (`"?"` if it is not ours).
pub(super) fn requested_by(value: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v.get("requested_by")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

impl Registry {
    /// Asks the registered instance `service`/`id` to drain: it stops getting traffic (its
    /// resolver key is deleted and live views stop picking it) once its registration has seen
    /// the request, normally within milliseconds, and reports
    /// [`Health::Draining`](super::Health::Draining) in its record and its
    /// [`RegistrationStatus::health`](super::RegistrationStatus::health). The instance may
    /// still be serving when this returns: follow [`discover`](Self::discover) or
    /// [`watch`](Self::watch) to see the drain take effect.
    ///
    /// The request is a key attached to the instance's current lease, written only if the
    /// status record is still on that lease (compare-and-swap), with `requested_by` (e.g. the
    /// operator's name) in its value for the instance's log. A drained instance stays drained
    /// through re-registrations on a new lease (its own health setting is what drains it); it
    /// may bring itself back with `set_health(Health::Healthy)`. A new process registering the
    /// same id starts healthy (the request went with the old lease).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty service or id or one containing `/`;
    /// [`ErrorKind::NotFound`] if the instance is not registered (or its record has no lease,
    /// so no registration of this crate keeps it); [`ErrorKind::Conflict`] if the record kept
    /// moving to other leases while writing; the etcd error kinds if a read or write fails
    /// (the etcd user needs read permission on the status prefix and write permission on the
    /// drain-request prefix).
    ///
    /// # Cancel safety
    /// Cancel-safe: a read and one transaction; if the future is dropped after the transaction
    /// was sent, the request may or may not have been written.
    pub async fn request_drain(
        &self,
        service: &str,
        id: &str,
        requested_by: &str,
    ) -> Result<DrainRequest> {
        self.request_drain_on(service, id, requested_by, None).await
    }

    /// [`request_drain`](Self::request_drain), refused with [`ErrorKind::Conflict`] unless the
    /// instance is registered on `expected_lease` (the registration an operator was shown).
    pub(crate) async fn request_drain_on(
        &self,
        service: &str,
        id: &str,
        requested_by: &str,
        expected_lease: Option<i64>,
    ) -> Result<DrainRequest> {
        validate_segment("service name", service)?;
        validate_segment("instance id", id)?;
        let layout = self.layout();
        let status_key = format!("{}{id}", layout.status_dir(service));
        let drain_key = layout.drain_key(service, id);
        let label = format!("{service}/{id}");
        let mut client = self.coordinator().etcd().client().clone();
        let needs = |e: Error| {
            e.needs(
                Permission::ReadWrite,
                "the registry's status and drain-request prefixes of the service",
                &label,
            )
        };
        let mut current = client
            .get(status_key.as_bytes(), None)
            .await
            .map_err(|e| needs(Error::etcd(format_args!("reading `{status_key}`"), e)))?
            .take_kvs()
            .into_iter()
            .next();
        for _ in 0..3 {
            let Some(kv) = current.take() else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("instance `{label}` is not registered (no key `{status_key}`)"),
                )
                .with_key(status_key));
            };
            let lease = kv.lease();
            if lease == 0 {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "the record `{status_key}` has no lease: no registration keeps it, so none can drain"
                    ),
                )
                .with_key(status_key)
                .with_revision(kv.mod_revision()));
            }
            if let Some(expected) = expected_lease.filter(|&e| e != lease) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "instance `{label}` is registered on lease {lease:x} now, not {expected:x}: it registered again"
                    ),
                )
                .with_key(status_key)
                .with_revision(kv.mod_revision()));
            }
            let txn = Txn::new()
                .when([Compare::lease(
                    status_key.as_bytes(),
                    CompareOp::Equal,
                    lease,
                )])
                .and_then([TxnOp::put(
                    drain_key.as_bytes(),
                    request_json(requested_by),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(status_key.as_bytes(), None)]);
            let resp = client.txn(txn).await.map_err(|e| {
                needs(Error::etcd(
                    format_args!("writing drain request `{drain_key}`"),
                    e,
                ))
            })?;
            let revision = resp.header().map_or(0, |h| h.revision());
            if resp.succeeded() {
                tracing::info!(instance = %label, lease = %format_args!("{lease:x}"), revision, %requested_by, "requested drain");
                return Ok(DrainRequest {
                    service: service.to_string(),
                    id: id.to_string(),
                    key: drain_key,
                    lease_id: lease,
                    revision,
                });
            }
            current = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                _ => None,
            });
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!("the record of `{label}` kept moving to other leases while requesting a drain"),
        )
        .with_key(status_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_name_the_requester() {
        assert_eq!(requested_by(request_json("alice").as_bytes()), "alice");
        assert_eq!(requested_by(b"not json"), "?");
    }
}
