//! `/registry`: every service with registered instances, each instance's address, health,
//! zone, weight, version, lease and revisions; an operator's drain request with a
//! confirmation (writers only).

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::{enc, field, number, see_other};
use crate::console::app::{crate_error, error_page, Shared};
use crate::console::csrf;
use crate::console::templates::{csrf_field, page as layout, Nav};
use crate::error::Error;
use crate::etcd::read_prefix;
use crate::registry::{Health, Instance};

#[derive(Debug, Deserialize)]
pub(crate) struct RegistryQuery {
    /// `service/id` of an instance just asked to drain.
    #[serde(default)]
    drained: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DrainQuery {
    service: String,
    id: String,
}

/// `GET /registry`.
pub(crate) async fn page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<RegistryQuery>,
) -> Response {
    let who = state.who(&headers);
    let can_write = who.is_some() && !state.writers.is_empty();
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
        @if let Some(drained) = &q.drained { p.flash #flash { "Asked " code { (drained) } " to drain; its row shows draining once the instance has written it." } }
        p.muted { "Read at revision " (revision) ". Serving instances (healthy, weight > 0) are also in the resolver keys that gRPC clients watch." }
        @if services.is_empty() { p #empty { "No registered instance." } }
        @for (service, instances) in &services {
            section.service data-service=(service) {
                h2 { "Service " code { (service) } " · " (instances.iter().filter(|i| i.is_serving()).count()) " of " (instances.len()) " serving" }
                table {
                    thead { tr { th { "id" } th { "address" } th { "health" } th { "zone" } th { "weight" } th { "version" } th { "lease" } th { "revision" } @if can_write { th { "" } } } }
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
                                @if can_write {
                                    td { @if i.health != Health::Draining {
                                        a.button.danger.drain href=(format!("/registry/drain?service={}&id={}", enc(service), enc(i.id()))) { "Drain…" }
                                    } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&state, who.as_ref(), Nav::Registry, "Registry", true, body).into_response()
}

/// `GET /registry/drain?service=S&id=I`: the confirmation.
pub(crate) async fn drain_confirm(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<DrainQuery>,
) -> Response {
    let Some(who) = state.who(&headers) else {
        return error_page(
            &state,
            None,
            StatusCode::FORBIDDEN,
            "Writing needs a writer's token: log in first.",
        );
    };
    let instances = match state.coord.registry().discover(&q.service).await {
        Ok(list) => list,
        Err(e) => return crate_error(&state, Some(&who), &e),
    };
    let instance = instances.iter().find(|i| i.id() == q.id);
    let body = html! {
        h1 { "Drain " code { (q.service) "/" (q.id) } "?" }
        @match instance {
            None => p.error-box { "The instance " code { (q.service) "/" (q.id) } " is no longer registered. " a href="/registry" { "Back" } },
            Some(i) => {
                p { "Asks the instance at " code { (i.addr()) } " (lease " code { (format!("{:x}", i.lease_id)) } ", now "
                    (i.health.to_string()) ") to drain: its own registration sets its health to draining, which takes it out of the resolver keys gRPC clients watch and out of every live view's picks. "
                    "The request stays on its lease: it stays drained until it sets itself healthy again or deregisters." }
                form #drain-form method="post" action="/registry/drain" {
                    (csrf_field(&state, &who))
                    input type="hidden" name="service" value=(q.service);
                    input type="hidden" name="id" value=(q.id);
                    input type="hidden" name="lease" value=(i.lease_id);
                    button.danger #confirm-drain type="submit" { "Drain" }
                    " " a href="/registry" { "Cancel" }
                }
            }
        }
    };
    layout(
        &state,
        Some(&who),
        Nav::Registry,
        "Confirm drain",
        false,
        body,
    )
    .into_response()
}

/// `POST /registry/drain`: asks the instance to drain if it is still the registration
/// confirmed (same lease).
pub(crate) async fn drain(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let who = match csrf::writer(&state, &headers, &form) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let service = field(&form, "service").to_string();
    let id = field(&form, "id").to_string();
    let result = async {
        let lease = number(&form, "lease")?;
        let request = state
            .coord
            .registry()
            .request_drain_on(&service, &id, &who.user, Some(lease))
            .await?;
        tracing::info!(instance = %format_args!("{service}/{id}"), revision = request.revision, user = %who.user, "console: drain requested");
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => see_other(&format!(
            "/registry?drained={}",
            enc(&format!("{service}/{id}"))
        )),
        Err(e) => crate_error(&state, Some(&who), &e),
    }
}
