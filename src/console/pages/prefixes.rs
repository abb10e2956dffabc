//! `/`: every config prefix with a published schema in the namespace, with its type, secret
//! fields, current revision, how many live instances serve it (their receipts) and history.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::Value;

use super::enc;
use crate::console::app::{crate_error, Shared};
use crate::console::templates::{page as layout, Nav};
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::etcd::read_prefix;

/// A prefix whose type published its schema.
#[derive(Clone, Debug)]
pub(crate) struct Published {
    /// As bound, without the namespace and the trailing `/` (`/apps/chat/config`).
    pub(crate) prefix: String,
    /// The Rust type's name from the schema's annotation.
    pub(crate) type_name: Option<String>,
    /// The secret field paths it names.
    pub(crate) secrets: Vec<String>,
}

/// Every schema under `<ns>/__coordination/schema/`, in key order.
pub(crate) async fn published(coord: &Coordinator) -> Result<Vec<Published>> {
    let root = format!("{}/__coordination/schema", coord.namespace());
    let (_, kvs) = read_prefix(coord.etcd(), &format!("{root}/"), 1000).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(kv.key()).ok()?;
            let prefix = key.strip_prefix(&root)?.to_string();
            let doc: Value = serde_json::from_slice(kv.value()).unwrap_or(Value::Null);
            let note = doc.get("x-coordination");
            Some(Published {
                prefix,
                type_name: note
                    .and_then(|n| n.get("type"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                secrets: note
                    .and_then(|n| n.get("secrets"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// One row: the prefix's keys and newest version.
struct Row {
    published: Published,
    keys: usize,
    revision: i64,
    versions: std::result::Result<Vec<crate::history::Version>, String>,
    /// Live instances (receipts), and how many serve the newest revision of the prefix.
    instances: std::result::Result<(usize, usize), String>,
}

async fn page_rows(state: &Shared) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for p in published(&state.coord).await? {
        let full = format!("{}{}/", state.coord.namespace(), p.prefix);
        let (_, kvs) = read_prefix(state.coord.etcd(), &full, 1000).await?;
        let revision = kvs.iter().map(|kv| kv.mod_revision()).max().unwrap_or(0);
        let versions = match state.history(&p.prefix).await {
            Ok(h) => h.versions().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let instances = match crate::fleet::Fleet::open(&state.coord, &p.prefix) {
            Ok(fleet) => fleet
                .instances()
                .await
                .map(|i| {
                    let current = i
                        .list
                        .iter()
                        .filter(|x| x.receipt.revision >= revision)
                        .count();
                    (i.list.len(), current)
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        rows.push(Row {
            published: p,
            keys: kvs.len(),
            revision,
            versions,
            instances,
        });
    }
    Ok(rows)
}

/// `GET /`.
pub(crate) async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let who = state.who(&headers);
    let rows = match page_rows(&state).await {
        Ok(rows) => rows,
        Err(e) => return crate_error(&state, who.as_ref(), &e),
    };
    let body = html! {
        h1 { "Prefixes" }
        p.muted { "Every config prefix in " code { (if state.coord.namespace().is_empty() { "/" } else { state.coord.namespace() }) }
            " whose type published its JSON Schema (at " code { "/__coordination/schema/…" } ")." }
        @if rows.is_empty() {
            p #empty { "No bound prefix yet: bind a config type once and its schema appears here." }
        } @else {
            table #prefixes {
                thead { tr { th { "prefix" } th { "type" } th { "secret fields" } th { "keys" } th { "current revision" } th { "instances (at it / live)" } th { "versions" } th { "newest version" } } }
                tbody {
                    @for row in &rows {
                        tr data-prefix=(row.published.prefix) {
                            td { a href=(format!("/history?prefix={}", enc(&row.published.prefix))) { code { (row.published.prefix) } } }
                            td { code { (row.published.type_name.as_deref().unwrap_or("?")) } }
                            td { @for s in &row.published.secrets { code { (s) } " " } }
                            td { (row.keys) }
                            td.revision { (row.revision) }
                            td.instances {
                                @match &row.instances {
                                    Ok((live, current)) => { a href=(format!("/instances?prefix={}", enc(&row.published.prefix))) { (current) " / " (live) } }
                                    Err(e) => span.muted { (e) },
                                }
                            }
                            @match &row.versions {
                                Ok(versions) => {
                                    td { (versions.len()) }
                                    td {
                                        @if let Some(v) = versions.last() {
                                            (v.revision) " · " span class=(format!("kind {}", v.kind)) { (v.kind.to_string()) }
                                            " · " (super::when(v)) " · " (v.author.as_deref().unwrap_or("—"))
                                        }
                                    }
                                }
                                Err(e) => { td colspan="2" .muted { (e) } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&state, who.as_ref(), Nav::Prefixes, "Prefixes", true, body).into_response()
}
