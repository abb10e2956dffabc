//! CSRF tokens and the checks every write passes: a writer's credentials, the CSRF token
//! bound to their session, and a same-origin `Origin` header when the browser sends one.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::app::{error_page, ConsoleState};
use super::auth::{constant_eq, principal, Principal};

/// The form field holding the CSRF token.
pub(crate) const FIELD: &str = "csrf";

/// The CSRF token for `who`: an HMAC of their name and session.
pub(crate) fn token(state: &ConsoleState, who: &Principal) -> String {
    state.keyed.mac(&["csrf", &who.user, &who.binding])
}

/// The writer behind a POST, or the 403 page: no writers configured, no writer's
/// credentials, a foreign origin, or a missing or wrong CSRF token.
#[allow(clippy::result_large_err)]
pub(crate) fn writer(
    state: &ConsoleState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Principal, Response> {
    let refuse = |why: &str| Err(error_page(state, None, StatusCode::FORBIDDEN, why));
    if state.writers.is_empty() {
        return refuse("This console is read-only: no writers are configured.");
    }
    let Some(who) = principal(&state.writers, &state.keyed, headers) else {
        return refuse("Writing needs a writer's token: log in first.");
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin_host != host {
            return refuse("Refused: the form was sent from another origin.");
        }
    }
    let expected = token(state, &who);
    match form.get(FIELD) {
        Some(sent) if constant_eq(sent.as_bytes(), expected.as_bytes()) => Ok(who),
        Some(_) => refuse("Refused: the CSRF token does not match this session; reload the page."),
        None => refuse("Refused: the form carries no CSRF token."),
    }
}
