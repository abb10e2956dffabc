//! `/login` and `/logout`: a writer enters their token and gets a session cookie (HMAC-signed,
//! `HttpOnly`, `SameSite=Strict`, and `Secure` where the console is served over HTTPS).

use std::collections::HashMap;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::field;
use crate::console::app::{error_page, Shared};
use crate::console::auth::{session_value, SESSION_COOKIE};
use crate::console::csrf;
use crate::console::templates::{page as layout, Nav};

/// `GET /login`.
pub(crate) async fn form(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let who = state.who(&headers);
    let body = html! {
        h1 { "Log in to write" }
        @if state.writers.is_empty() {
            p { "This console is read-only: no writers are configured." }
        } @else {
            form #login-form method="post" action="/login" {
                p { label { "Token " input #token type="password" name="token" autocomplete="current-password" required; } }
                button #login type="submit" { "Log in" }
            }
            p.muted { "Tokens come from the console's writers file; scripts can send "
                code { "Authorization: Bearer TOKEN" } " instead." }
        }
    };
    layout(&state, who.as_ref(), Nav::None, "Log in", false, body).into_response()
}

/// The session cookie's attributes: `Secure` too where the console is served over HTTPS.
fn cookie_attributes(state: &Shared) -> &'static str {
    match state
        .secure_cookies
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        true => "Path=/; HttpOnly; SameSite=Strict; Secure",
        false => "Path=/; HttpOnly; SameSite=Strict",
    }
}

/// `POST /login`: a writer's token gives a session cookie.
pub(crate) async fn login(
    State(state): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(user) = state.writers.who(field(&form, "token")).map(str::to_string) else {
        return error_page(
            &state,
            None,
            StatusCode::FORBIDDEN,
            "That is not a writer's token.",
        );
    };
    tracing::info!(user = %user, "console: writer logged in");
    let ttl = state.options.session_ttl;
    let cookie = format!(
        "{SESSION_COOKIE}={}; {}; Max-Age={}",
        session_value(&state.keyed, &user, ttl),
        cookie_attributes(&state),
        ttl.as_secs()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

/// `POST /logout`: clears the session cookie.
pub(crate) async fn logout(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(page) = csrf::writer(&state, &headers, &form) {
        return page;
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!(
                    "{SESSION_COOKIE}=; {}; Max-Age=0",
                    cookie_attributes(&state)
                ),
            ),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}
