//! The pages, one file per subsystem.

pub(crate) mod history;
pub(crate) mod instances;
pub(crate) mod locks;
pub(crate) mod login;
pub(crate) mod prefixes;
pub(crate) mod registry;

use std::collections::HashMap;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A query-string value, percent-encoded (`/` kept, so prefixes stay readable).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `303 See Other` to `to` (after a write: the browser then GETs the result).
pub(crate) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A form field, trimmed; `""` when absent.
pub(crate) fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(|s| s.trim()).unwrap_or("")
}

/// A form field read as an integer (a revision, fencing token or lease id);
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the field otherwise.
pub(crate) fn number(form: &HashMap<String, String>, name: &str) -> crate::Result<i64> {
    field(form, name).parse().map_err(|_| {
        crate::Error::new(
            crate::ErrorKind::InvalidArgument,
            format!("the form's `{name}` is not a number"),
        )
    })
}

/// A version's time as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn when(version: &crate::history::Version) -> String {
    let mut text = version.time_rfc3339();
    if let Some(dot) = text.find('.') {
        text.replace_range(dot..text.len() - 1, "");
    }
    text.replace('T', " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoding_keeps_slashes() {
        assert_eq!(super::enc("/apps/chat config&x"), "/apps/chat%20config%26x");
    }
}
