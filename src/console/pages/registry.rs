//! `/registry`: every service with registered instances, each instance's address, health,
//! zone, weight, version, lease and revisions.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::console::app::{crate_error, Shared};
use crate::console::templates::{page as layout, Nav};
use crate::error::Error;
use crate::etcd::read_prefix;
use crate::registry::Instance;

/// `GET /registry`.
pub(crate) async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let who = state.who(&headers);
    let registry = state.coord.registry();
    let result = async {
        // The status root: `<ns>/__coordination/registry/`, from the registry's own layout.
        let probe = registry.status_prefix("_");
        let root = probe.trim_end_matches("_/").to_string();
        let (revision, kvs) = read_prefix(state.coord.etcd(), &root, 1000).await?;
        let services: BTreeSet<String> = kvs
            .iter()
            .filter_map(|kv| {
                let rest = kv.key().strip_prefix(root.as_bytes())?;
                let rest = std::str::from_utf8(rest).ok()?;
                rest.split_once('/').map(|(s, _)| s.to_string())
            })
            .collect();
        let mut out: Vec<(String, Vec<Instance>)> = Vec::new();
        for service in services {
            let instances = registry.discover(&service).await?;
            out.push((service, instances));
        }
        Ok::<_, Error>((revision, out))
    }
    .await;
    let (revision, services) = match result {
        Ok(v) => v,
        Err(e) => return crate_error(&state, who.as_ref(), &e),
    };
    let body = html! {
        h1 { "Registry" }
        p.muted { "Read at revision " (revision) ". Serving instances (healthy, weight > 0) are also in the resolver keys that gRPC clients watch." }
        @if services.is_empty() { p #empty { "No registered instance." } }
        @for (service, instances) in &services {
            section.service data-service=(service) {
                h2 { "Service " code { (service) } " · " (instances.iter().filter(|i| i.is_serving()).count()) " of " (instances.len()) " serving" }
                table {
                    thead { tr { th { "id" } th { "address" } th { "health" } th { "zone" } th { "weight" } th { "version" } th { "lease" } th { "revision" } } }
                    tbody {
                        @for i in instances {
                            tr.instance data-id=(i.id()) {
                                td { code { (i.id()) } }
                                td { code { (i.addr()) } }
                                td class=(format!("health {}", i.health)) { (i.health.to_string()) @if !i.is_serving() { " (no traffic)" } }
                                td { (i.zone().unwrap_or("—")) }
                                td { (i.weight()) }
                                td { (i.spec.version.as_deref().unwrap_or("—")) }
                                td { code { (format!("{:x}", i.lease_id)) } }
                                td { (i.mod_revision) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&state, who.as_ref(), Nav::Registry, "Registry", true, body).into_response()
}
