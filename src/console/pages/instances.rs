//! `/instances`: instances and rollouts. Receipts (each instance's applied revision and last
//! rejection) and rollout state come from the fleet module, which this build does not have:
//! the page says so instead of showing nothing.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::console::app::Shared;
use crate::console::templates::{page as layout, Nav};

/// `GET /instances`.
pub(crate) async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let who = state.who(&headers);
    let body = html! {
        h1 { "Instances & rollouts" }
        p #unavailable { "This build has no fleet operations: instances do not report receipts, so the "
            "console cannot show which revision each one applied, their last rejection, or rollouts. "
            "The registry page lists the registered instances." }
    };
    layout(
        &state,
        who.as_ref(),
        Nav::Instances,
        "Instances & rollouts",
        false,
        body,
    )
    .into_response()
}
