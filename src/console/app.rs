//! The router, the state every page shares, and error pages.

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};

use super::auth::{principal, Keyed, Principal, Writers};
use super::live::Live;
use super::pages;
use super::templates::{self, Nav};
use super::ConsoleOptions;
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind};
use crate::history::ConfigHistory;

/// What every request sees.
pub(crate) struct ConsoleState {
    pub(crate) coord: Coordinator,
    pub(crate) options: ConsoleOptions,
    pub(crate) writers: Writers,
    pub(crate) keyed: Keyed,
    pub(crate) live: Live,
    /// Whether the session cookie is marked `Secure` (set by the options, or by serving TLS).
    pub(crate) secure_cookies: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("namespace", &self.coord.namespace())
            .field("writers", &self.writers)
            .finish_non_exhaustive()
    }
}

pub(crate) type Shared = Arc<ConsoleState>;

impl ConsoleState {
    pub(crate) fn start(coord: Coordinator, options: ConsoleOptions) -> Shared {
        let live = Live::start(&coord, &options);
        let secure = options.secure_cookies;
        Arc::new(ConsoleState {
            writers: options.writers.clone(),
            coord,
            options,
            keyed: Keyed::random(),
            live,
            secure_cookies: std::sync::atomic::AtomicBool::new(secure),
        })
    }

    /// The writer sending this request, if any.
    pub(crate) fn who(&self, headers: &HeaderMap) -> Option<Principal> {
        principal(&self.writers, &self.keyed, headers)
    }

    /// The history of `prefix`, with the configured history keys.
    pub(crate) async fn history(&self, prefix: &str) -> crate::Result<ConfigHistory> {
        let mut history = ConfigHistory::open(&self.coord, prefix).await?;
        if let Some(key) = &self.options.secret_key {
            history = history.with_secret_key(key.clone());
        }
        for key in &self.options.read_keys {
            history = history.with_read_key(key.clone());
        }
        Ok(history)
    }
}

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(pages::prefixes::page))
        .route("/history", get(pages::history::list))
        .route("/version", get(pages::history::version))
        .route("/diff", get(pages::history::diff))
        .route(
            "/rollback",
            get(pages::history::rollback_confirm).post(pages::history::rollback),
        )
        .route(
            "/publish",
            get(pages::history::publish_form).post(pages::history::publish),
        )
        .route("/publish/review", post(pages::history::publish_review))
        .route("/instances", get(pages::instances::page))
        .route("/rollout", post(pages::instances::act))
        .route("/locks", get(pages::locks::page))
        .route(
            "/locks/release",
            get(pages::locks::release_confirm).post(pages::locks::release),
        )
        .route("/registry", get(pages::registry::page))
        .route(
            "/registry/drain",
            get(pages::registry::drain_confirm).post(pages::registry::drain),
        )
        .route("/login", get(pages::login::form).post(pages::login::login))
        .route("/logout", post(pages::login::logout))
        .route("/events", get(super::live::events))
        .route("/static/console.js", get(static_js))
        .route("/static/console.css", get(static_css))
        .fallback(not_found)
        .with_state(state)
}

async fn static_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        templates::SCRIPT,
    )
        .into_response()
}

async fn static_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        templates::STYLE,
    )
        .into_response()
}

async fn not_found(
    axum::extract::State(state): axum::extract::State<Shared>,
    headers: HeaderMap,
) -> Response {
    let who = state.who(&headers);
    error_page(&state, who.as_ref(), StatusCode::NOT_FOUND, "No such page.")
}

/// A page with `message` and `status`.
pub(crate) fn error_page(
    state: &ConsoleState,
    who: Option<&Principal>,
    status: StatusCode,
    message: &str,
) -> Response {
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        p.error-box #error { (message) }
        p { a href="/" { "Back to the prefixes" } }
    };
    (
        status,
        templates::page(state, who, Nav::None, "Error", false, body),
    )
        .into_response()
}

/// The page for a failed crate call: 404 for a missing version or schema, 409 for a conflict,
/// 422 for invalid input, 503 when etcd cannot be reached.
pub(crate) fn crate_error(state: &ConsoleState, who: Option<&Principal>, e: &Error) -> Response {
    let status = status_of(e);
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
        (error_box(e))
        p { a href="/" { "Back to the prefixes" } }
    };
    (
        status,
        templates::page(state, who, Nav::None, "Error", false, body),
    )
        .into_response()
}

pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Validation | ErrorKind::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Auth => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An error as shown in a page: the field path (if any) and the message with its provenance.
pub(crate) fn error_box(e: &Error) -> Markup {
    html! {
        div.error-box #error data-kind=(format!("{:?}", e.kind())) {
            @if let Some(field) = e.field() {
                p { "Field " code.field-error #field-error { (field) } ":" }
            }
            p.message { (e.to_string()) }
        }
    }
}
