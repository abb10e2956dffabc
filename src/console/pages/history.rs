//! A prefix's history: versions, a version's document, the diff between two versions, and
//! the writes: rollback and publish, each through a confirmation that shows what changes.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::{enc, field, number, see_other, when};
use crate::console::app::{crate_error, error_box, error_page, Shared};
use crate::console::auth::Principal;
use crate::console::csrf;
use crate::console::templates::{csrf_field, page, value, Nav};
use crate::error::{Error, ErrorKind};
use crate::history::{ConfigHistory, FieldChange};

#[derive(Debug, Deserialize)]
pub(crate) struct PrefixQuery {
    prefix: String,
    #[serde(default)]
    done: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct VersionQuery {
    prefix: String,
    version: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DiffQuery {
    prefix: String,
    from: String,
    to: String,
}

fn history_href(prefix: &str) -> String {
    format!("/history?prefix={}", enc(prefix))
}

fn parse_at(text: &str) -> Result<Option<i64>, Error> {
    match text {
        "current" | "" => Ok(None),
        n => n.parse().map(Some).map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("`{n}` is not a version: a revision from the history, or `current`"),
            )
        }),
    }
}

fn at_label(at: Option<i64>) -> String {
    at.map_or_else(|| "current".to_string(), |r| r.to_string())
}

/// The table of changed fields.
fn changes_table(changes: &[FieldChange]) -> Markup {
    html! {
        @if changes.is_empty() {
            p #no-changes { "No field changes." }
        } @else {
            table #diff {
                thead { tr { th { "field" } th { "before" } th { "after" } } }
                tbody {
                    @for c in changes {
                        tr data-path=(c.path) {
                            td { code { (if c.path.is_empty() { "(root)" } else { &c.path }) }
                                @if c.secret { " " span.badge { "secret" } }
                                @if c.unknown { " " span.muted { "(not readable from the history: may or may not differ)" } } }
                            td.old { (value(c.old.as_ref())) }
                            td.new { (value(c.new.as_ref())) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /history?prefix=P`: versions newest first.
pub(crate) async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<PrefixQuery>,
) -> Response {
    let who = state.who(&headers);
    let result = async {
        let history = state.history(&q.prefix).await?;
        let versions = history.versions().await?;
        let (revision, _) = history.document(None).await?;
        Ok::<_, Error>((versions, revision))
    }
    .await;
    let (mut versions, revision) = match result {
        Ok(v) => v,
        Err(e) => return crate_error(&state, who.as_ref(), &e),
    };
    versions.reverse();
    let p = &q.prefix;
    let body = html! {
        h1 { "History of " code { (p) } }
        @if let Some(done) = &q.done { p.flash #flash { (done_message(done)) } }
        p.actions {
            a href=(format!("/diff?prefix={}&from={}&to=current", enc(p), versions.first().map_or(0, |v| v.revision))) { "Newest version → current" }
            @if who.is_some() {
                a.button #publish href=(format!("/publish?prefix={}", enc(p))) { "Publish…" }
            }
            span.muted { " read at revision " (revision) }
        }
        form.compare method="get" action="/diff" {
            input type="hidden" name="prefix" value=(p);
            "Compare "
            select name="from" { @for v in &versions { option value=(v.revision) { (v.revision) } } option value="current" { "current" } }
            " with "
            select name="to" { option value="current" { "current" } @for v in &versions { option value=(v.revision) { (v.revision) } } }
            " " button type="submit" { "Diff" }
        }
        table #versions {
            thead { tr { th { "version" } th { "time (UTC)" } th { "kind" } th { "author" } th { "comment" } th { "keys" } th { "" } } }
            tbody {
                @for (i, v) in versions.iter().enumerate() {
                    tr id=(format!("v-{}", v.revision)) data-revision=(v.revision) {
                        td { a href=(format!("/version?prefix={}&version={}", enc(p), v.revision)) { (v.revision) } }
                        td { (when(v)) }
                        td { span class=(format!("kind {}", v.kind)) { (v.kind.to_string()) }
                             @if let Some(from) = v.restored_from { " of " (from) } }
                        td.author { (v.author.as_deref().unwrap_or("—")) }
                        td.comment { (v.comment.as_deref().unwrap_or("")) }
                        td { (v.keys) }
                        td.actions {
                            @if let Some(prev) = versions.get(i + 1) {
                                a href=(format!("/diff?prefix={}&from={}&to={}", enc(p), prev.revision, v.revision)) { "diff" }
                            }
                            @if who.is_some() {
                                a.button.danger.rollback href=(format!("/rollback?prefix={}&version={}", enc(p), v.revision)) { "Roll back…" }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&state, who.as_ref(), Nav::Prefixes, "History", true, body).into_response()
}

fn done_message(done: &str) -> String {
    if let Some(v) = done.strip_prefix("rollback-") {
        format!("Rolled back: version {v} written.")
    } else if let Some(v) = done.strip_prefix("publish-") {
        format!("Published: version {v} written.")
    } else {
        "Nothing changed: the prefix already held exactly this.".to_string()
    }
}

/// `GET /version?prefix=P&version=V`: a version's document and keys, secrets masked.
pub(crate) async fn version(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<VersionQuery>,
) -> Response {
    let who = state.who(&headers);
    let result = async {
        let history = state.history(&q.prefix).await?;
        let meta = history.version(q.version).await?;
        let (_, doc) = history.document(Some(q.version)).await?;
        let (_, kvs) = history.kvs(Some(q.version)).await?;
        Ok::<_, Error>((meta, doc, kvs))
    }
    .await;
    let (meta, doc, kvs) = match result {
        Ok(v) => v,
        Err(e) => return crate_error(&state, who.as_ref(), &e),
    };
    let p = &q.prefix;
    let body = html! {
        h1 { "Version " (meta.revision) " of " a href=(history_href(p)) { code { (p) } } }
        p { span class=(format!("kind {}", meta.kind)) { (meta.kind.to_string()) } " · " (when(&meta))
            " · " (meta.author.as_deref().unwrap_or("—")) " · " (meta.comment.as_deref().unwrap_or("")) }
        h2 { "Document (etcd layer)" }
        pre #document { (serde_json::to_string_pretty(&doc).unwrap_or_default()) }
        h2 { "Keys" }
        table #keys {
            thead { tr { th { "key" } th { "value" } } }
            tbody { @for (k, v) in &kvs { tr { td { code { (k) } } td { code { (String::from_utf8_lossy(v)) } } } } }
        }
    };
    page(&state, who.as_ref(), Nav::Prefixes, "Version", true, body).into_response()
}

/// `GET /diff?prefix=P&from=A&to=B` (`current` for the prefix now).
pub(crate) async fn diff(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> Response {
    let who = state.who(&headers);
    let result = async {
        let from = parse_at(&q.from)?;
        let to = parse_at(&q.to)?;
        let history = state.history(&q.prefix).await?;
        let changes = history.diff(from, to).await?;
        Ok::<_, Error>((from, to, changes))
    }
    .await;
    let (from, to, changes) = match result {
        Ok(v) => v,
        Err(e) => return crate_error(&state, who.as_ref(), &e),
    };
    let body = html! {
        h1 { "Diff " (at_label(from)) " → " (at_label(to)) " of " a href=(history_href(&q.prefix)) { code { (q.prefix) } } }
        p.muted { (changes.len()) " field(s) changed; secret fields show as " code { "***" } "." }
        (changes_table(&changes))
    };
    page(&state, who.as_ref(), Nav::Prefixes, "Diff", true, body).into_response()
}

/// The writer, or the 403 page, for the GET of a write's form.
#[allow(clippy::result_large_err)]
fn writer_for_form(state: &Shared, headers: &HeaderMap) -> Result<Principal, Response> {
    state.who(headers).ok_or_else(|| {
        error_page(
            state,
            None,
            StatusCode::FORBIDDEN,
            "Writing needs a writer's token: log in first.",
        )
    })
}

/// `GET /rollback?prefix=P&version=V`: what the rollback would change, and its confirmation.
pub(crate) async fn rollback_confirm(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<VersionQuery>,
) -> Response {
    let who = match writer_for_form(&state, &headers) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let result = async {
        let history = state.history(&q.prefix).await?;
        history.version(q.version).await?;
        let (seen, _) = history.document(None).await?;
        let changes = history.diff(None, Some(q.version)).await?;
        Ok::<_, Error>((seen, changes))
    }
    .await;
    let (seen, changes) = match result {
        Ok(v) => v,
        Err(e) => return crate_error(&state, Some(&who), &e),
    };
    let body = html! {
        h1 { "Roll back " code { (q.prefix) } " to version " (q.version) "?" }
        p { "Every instance will hot-reload version " (q.version) "'s exact keys. Compared with the prefix as of revision " (seen) ", these fields change:" }
        (changes_table(&changes))
        form #rollback-form method="post" action="/rollback" {
            (csrf_field(&state, &who))
            input type="hidden" name="prefix" value=(q.prefix);
            input type="hidden" name="version" value=(q.version);
            input type="hidden" name="seen" value=(seen);
            p { label { "Comment (required) " input #comment type="text" name="comment" required; } }
            p { "Recorded as author " strong { (who.user) } "." }
            button.danger #confirm-rollback type="submit" { "Roll back to version " (q.version) }
            " " a href=(history_href(&q.prefix)) { "Cancel" }
        }
    };
    page(
        &state,
        Some(&who),
        Nav::Prefixes,
        "Confirm rollback",
        false,
        body,
    )
    .into_response()
}

fn bad_input(message: &str) -> Error {
    Error::new(ErrorKind::InvalidArgument, message.to_string())
}

/// `POST /rollback`: the confirmed rollback, compare-and-swap on the revision shown.
pub(crate) async fn rollback(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let who = match csrf::writer(&state, &headers, &form) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let prefix = field(&form, "prefix").to_string();
    let result = async {
        let version = number(&form, "version")?;
        let seen = number(&form, "seen")?;
        let comment = field(&form, "comment");
        if comment.is_empty() {
            return Err(bad_input("a comment is required"));
        }
        let history = state.history(&prefix).await?;
        history
            .rollback_seen(seen, version, &who.user, comment)
            .await
    }
    .await;
    match result {
        Ok(Some(v)) => see_other(&format!(
            "{}&done=rollback-{}",
            history_href(&prefix),
            v.revision
        )),
        Ok(None) => see_other(&format!("{}&done=unchanged", history_href(&prefix))),
        Err(e) => crate_error(&state, Some(&who), &e),
    }
}

/// The publish form: the document as text, the revision it was read at, a comment.
fn publish_page(
    state: &Shared,
    who: &Principal,
    prefix: &str,
    seen: i64,
    text: &str,
    comment: &str,
    error: Option<&Error>,
) -> Response {
    let body = html! {
        h1 { "Publish " code { (prefix) } }
        p.muted { "The document of the etcd layer as of revision " (seen) ", as JSON or YAML. "
            "Secret fields show as " code { "***" } "; leave them so to keep their value. "
            "It is checked against the published schema, then shown for confirmation." }
        @if let Some(e) = error { (error_box(e)) }
        form #publish-form method="post" action="/publish/review" {
            (csrf_field(state, who))
            input type="hidden" name="prefix" value=(prefix);
            input type="hidden" name="seen" value=(seen);
            textarea #document name="document" spellcheck="false" { (text) }
            p { label { "Comment (required) " input #comment type="text" name="comment" value=(comment) required; } }
            p { "Recorded as author " strong { (who.user) } "." }
            button #review type="submit" { "Review changes" }
            " " a href=(history_href(prefix)) { "Cancel" }
        }
    };
    let status = match error {
        Some(e) => crate::console::app::status_of(e),
        None => StatusCode::OK,
    };
    (
        status,
        page(state, Some(who), Nav::Prefixes, "Publish", false, body),
    )
        .into_response()
}

/// `GET /publish?prefix=P`: the edit form.
pub(crate) async fn publish_form(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<PrefixQuery>,
) -> Response {
    let who = match writer_for_form(&state, &headers) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let result = async {
        let history = state.history(&q.prefix).await?;
        history.document(None).await
    }
    .await;
    match result {
        Ok((seen, doc)) => {
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            publish_page(&state, &who, &q.prefix, seen, &text, "", None)
        }
        Err(e) => crate_error(&state, Some(&who), &e),
    }
}

/// What a publish form sent, checked.
struct Submitted {
    history: ConfigHistory,
    document: serde_json::Value,
}

async fn submitted(state: &Shared, form: &HashMap<String, String>) -> Result<Submitted, Error> {
    if field(form, "comment").is_empty() {
        return Err(bad_input("a comment is required"));
    }
    let history = state.history(field(form, "prefix")).await?;
    let text = form.get("document").map(String::as_str).unwrap_or("");
    let document = history.parse_document(text.as_bytes())?;
    history.validate(&document)?;
    Ok(Submitted { history, document })
}

/// `POST /publish/review`: validates the edited document and shows what would change, with
/// the confirmation; or the form again with the field error.
pub(crate) async fn publish_review(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let who = match csrf::writer(&state, &headers, &form) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let prefix = field(&form, "prefix").to_string();
    let seen = number(&form, "seen").unwrap_or(0);
    let comment = field(&form, "comment").to_string();
    let text = form.get("document").cloned().unwrap_or_default();
    let result = async {
        let s = submitted(&state, &form).await?;
        s.history.preview(&s.document).await
    }
    .await;
    let changes = match result {
        Ok(changes) => changes,
        Err(e) => return publish_page(&state, &who, &prefix, seen, &text, &comment, Some(&e)),
    };
    let body = html! {
        h1 { "Publish to " code { (prefix) } "?" }
        p { "Valid against the published schema. Compared with the prefix now, these fields change:" }
        (changes_table(&changes))
        @if !changes.is_empty() {
            form #confirm-form method="post" action="/publish" {
                (csrf_field(&state, &who))
                input type="hidden" name="prefix" value=(prefix);
                input type="hidden" name="seen" value=(seen);
                input type="hidden" name="comment" value=(comment);
                input type="hidden" name="document" value=(text);
                p { "Comment: " em { (comment) } " · author " strong { (who.user) } " · only if the prefix is still as of revision " (seen) "." }
                button.danger #confirm-publish type="submit" { "Publish" }
                " " a href=(history_href(&prefix)) { "Cancel" }
            }
        }
    };
    page(
        &state,
        Some(&who),
        Nav::Prefixes,
        "Confirm publish",
        false,
        body,
    )
    .into_response()
}

/// `POST /publish`: the confirmed publish, compare-and-swap on the revision the form showed.
pub(crate) async fn publish(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let who = match csrf::writer(&state, &headers, &form) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let prefix = field(&form, "prefix").to_string();
    let seen = number(&form, "seen").unwrap_or(0);
    let comment = field(&form, "comment").to_string();
    let text = form.get("document").cloned().unwrap_or_default();
    let result = async {
        let seen = number(&form, "seen")?;
        let s = submitted(&state, &form).await?;
        s.history
            .apply_seen(seen, &s.document, &who.user, &comment)
            .await
    }
    .await;
    match result {
        Ok(Some(v)) => see_other(&format!(
            "{}&done=publish-{}",
            history_href(&prefix),
            v.revision
        )),
        Ok(None) => see_other(&format!("{}&done=unchanged", history_href(&prefix))),
        Err(e) => publish_page(&state, &who, &prefix, seen, &text, &comment, Some(&e)),
    }
}
