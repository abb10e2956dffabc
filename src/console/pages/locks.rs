//! `/locks`: the configured locks and elections (and any name looked up): holder, waiters in
//! order, fencing tokens, leases and their TTL left; force release with a confirmation.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::{enc, field, number, see_other};
use crate::console::app::{crate_error, error_page, Shared};
use crate::console::auth::Principal;
use crate::console::csrf;
use crate::console::templates::{csrf_field, page as layout, Nav};
use crate::error::{Error, ErrorKind};
use crate::lock::{LockEntry, LockStatus};

#[derive(Debug, Deserialize)]
pub(crate) struct LocksQuery {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReleaseQuery {
    name: String,
    token: i64,
}

fn ttl(entry: &LockEntry) -> String {
    match entry.remaining_ttl {
        Some(d) => format!("{} s", d.as_secs()),
        None if entry.lease == 0 => "no lease".into(),
        None => "expired".into(),
    }
}

fn entry_row(role: &str, entry: &LockEntry) -> Markup {
    html! {
        tr.entry data-token=(entry.create_revision) {
            td { (role) }
            td { code { (entry.key) } }
            td.token { (entry.create_revision) }
            td { code { (format!("{:x}", entry.lease)) } }
            td { (ttl(entry)) }
            td { code { (String::from_utf8_lossy(&entry.value)) } }
        }
    }
}

fn status_table(
    state: &Shared,
    who: Option<&Principal>,
    kind: &str,
    name: &str,
    status: &Result<LockStatus, Error>,
) -> Markup {
    html! {
        section.lock data-name=(name) {
            h2 { (kind) " " code { (name) } }
            @match status {
                Err(e) => p.error-box { (e.to_string()) },
                Ok(s) => {
                    p.muted { "prefix " code { (s.prefix) } " · read at revision " (s.revision)
                        " · " (s.waiters.len()) " waiting" }
                    @match &s.holder {
                        None => p.free { "Free: nobody holds it." },
                        Some(holder) => {
                            table {
                                thead { tr { th { "" } th { "key" } th { "fencing token (create_revision)" } th { "lease" } th { "TTL left" } th { "value" } } }
                                tbody {
                                    (entry_row(if kind == "Election" { "leader" } else { "holder" }, holder))
                                    @for (i, w) in s.waiters.iter().enumerate() {
                                        (entry_row(&format!("waiter {}", i + 1), w))
                                    }
                                }
                            }
                            @if who.is_some() && !state.writers.is_empty() {
                                p { a.button.danger.release href=(format!("/locks/release?name={}&token={}", enc(name), holder.create_revision)) { "Force release…" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /locks`.
pub(crate) async fn page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LocksQuery>,
) -> Response {
    let who = state.who(&headers);
    let mut sections = Vec::new();
    let mut names: Vec<(&str, String)> = state
        .options
        .locks
        .iter()
        .map(|n| ("Lock", n.clone()))
        .chain(
            state
                .options
                .elections
                .iter()
                .map(|n| ("Election", n.clone())),
        )
        .collect();
    if let Some(name) = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        if !names.iter().any(|(_, n)| n == name) {
            names.push(("Lock", name.to_string()));
        }
    }
    for (kind, name) in &names {
        let status = state.coord.lock_status(name).await;
        sections.push(status_table(&state, who.as_ref(), kind, name, &status));
    }
    let body = html! {
        h1 { "Locks & elections" }
        @if let Some(done) = &q.done { p.flash #flash { "Force-released the holder with fencing token " (done) "." } }
        form method="get" action="/locks" {
            "Look up a lock or election: " input type="text" name="name" placeholder="jobs/rebalance" value=(q.name.as_deref().unwrap_or(""));
            " " button type="submit" { "Show" }
        }
        @if names.is_empty() { p.muted { "No lock or election is configured (coordctl serve --lock NAME --election NAME)." } }
        @for s in &sections { (s) }
    };
    layout(
        &state,
        who.as_ref(),
        Nav::Locks,
        "Locks & elections",
        true,
        body,
    )
    .into_response()
}

/// `GET /locks/release?name=N&token=T`: the confirmation.
pub(crate) async fn release_confirm(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ReleaseQuery>,
) -> Response {
    let Some(who) = state.who(&headers) else {
        return error_page(
            &state,
            None,
            StatusCode::FORBIDDEN,
            "Writing needs a writer's token: log in first.",
        );
    };
    let status = match state.coord.lock_status(&q.name).await {
        Ok(s) => s,
        Err(e) => return crate_error(&state, Some(&who), &e),
    };
    let holder = status
        .holder
        .as_ref()
        .filter(|h| h.create_revision == q.token);
    let body = html! {
        h1 { "Force-release " code { (q.name) } "?" }
        @match holder {
            None => p.error-box { "The holder shown (fencing token " (q.token) ") no longer holds it. " a href="/locks" { "Back" } },
            Some(h) => {
                p { "Deletes the holder's key " code { (h.key) } " (fencing token " (h.create_revision) "). Its "
                    code { "lost()" } " fires, its fenced writes fail, and the next waiter gets the lock. The lease is left alone." }
                form #release-form method="post" action="/locks/release" {
                    (csrf_field(&state, &who))
                    input type="hidden" name="name" value=(q.name);
                    input type="hidden" name="token" value=(h.create_revision);
                    button.danger #confirm-release type="submit" { "Force release" }
                    " " a href="/locks" { "Cancel" }
                }
            }
        }
    };
    layout(
        &state,
        Some(&who),
        Nav::Locks,
        "Confirm release",
        false,
        body,
    )
    .into_response()
}

/// `POST /locks/release`: releases the holder if it is still the one confirmed.
pub(crate) async fn release(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let who = match csrf::writer(&state, &headers, &form) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let name = field(&form, "name").to_string();
    let result = async {
        let token = number(&form, "token")?;
        let status = state.coord.lock_status(&name).await?;
        if status.holder.as_ref().map(|h| h.create_revision) != Some(token) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the holder of `{name}` with fencing token {token} no longer holds it"),
            ));
        }
        let released = state.coord.force_unlock(&name).await?;
        tracing::info!(lock = %name, token, user = %who.user, "console: force release");
        Ok(released.map_or(token, |e| e.create_revision))
    }
    .await;
    match result {
        Ok(token) => see_other(&format!("/locks?name={}&done={token}", enc(&name))),
        Err(e) => crate_error(&state, Some(&who), &e),
    }
}
