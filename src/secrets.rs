//! The one rule for secret fields ([`CoordConfig::SECRETS`](crate::CoordConfig::SECRETS)):
//! which field paths are secret, which hold a secret somewhere below, how a JSON value is
//! shown with its secrets masked, and how a message that may quote a secret is cleaned.
//!
//! Paths are dotted serde field names (`database.password`); `""` is the whole document. A
//! secret path covers everything below it.

use crate::provenance::join_path as join;
use jsonschema::ValidationError;
use serde_json::Value;

use crate::config::pointer_to_dotted;

/// The text shown instead of a secret value.
pub(crate) const MASK: &str = "***";

/// Secret strings shorter than this are not searched for inside free text (see
/// [`SecretPaths::scrub`]): a one- or two-letter search would mangle ordinary words.
const SCRUB_MIN_LEN: usize = 3;

/// A set of secret field paths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecretPaths<'a, S: AsRef<str> = &'static str> {
    paths: &'a [S],
}

impl<'a, S: AsRef<str>> SecretPaths<'a, S> {
    /// The secret paths `paths` (e.g. `T::SECRETS`).
    pub(crate) fn new(paths: &'a [S]) -> Self {
        SecretPaths { paths }
    }

    /// Whether there are no secret paths at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Whether the field at `path` is secret: it is, or is below, one of the secret paths.
    pub(crate) fn is_secret(&self, path: &str) -> bool {
        self.paths.iter().any(|s| is_at_or_below(path, s.as_ref()))
    }

    /// Whether a secret field lies strictly below `path` (`""`, the whole document, holds
    /// every secret).
    pub(crate) fn has_secret_below(&self, path: &str) -> bool {
        self.paths.iter().any(|s| {
            let s = s.as_ref();
            s != path && is_at_or_below(s, path)
        })
    }

    /// Whether the value at `path` is, is inside, or contains a secret: showing it in full
    /// could show a secret.
    pub(crate) fn holds_secret(&self, path: &str) -> bool {
        self.is_secret(path) || self.has_secret_below(path)
    }

    /// `value` (found at `path`) with every secret inside it replaced by `"***"`: how a view of
    /// a document (a diff, a listing) shows it.
    pub(crate) fn mask(&self, path: &str, value: &Value) -> Value {
        if self.is_secret(path) {
            return Value::String(MASK.to_string());
        }
        match value {
            Value::Object(map) if self.has_secret_below(path) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.mask(&join(path, k), v)))
                    .collect(),
            ),
            Value::Array(items) if self.has_secret_below(path) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.mask(&join(path, &i.to_string()), v))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Whether `value` (found at `path`) is or holds a secret field's value: `path` is secret,
    /// or a secret path below it is present in `value`.
    pub(crate) fn has_secret(&self, path: &str, value: &Value) -> bool {
        if self.is_secret(path) {
            return true;
        }
        match value {
            Value::Object(map) if self.has_secret_below(path) => {
                map.iter().any(|(k, v)| self.has_secret(&join(path, k), v))
            }
            Value::Array(items) if self.has_secret_below(path) => items
                .iter()
                .enumerate()
                .any(|(i, v)| self.has_secret(&join(path, &i.to_string()), v)),
            _ => false,
        }
    }

    /// Whether [`mask`](Self::mask) hides every secret of `value` (found at `path`): not when an
    /// array stands where an object holding a secret belongs, as serde also reads a struct from
    /// a sequence, by position (see [`values_in`](Self::values_in)).
    pub(crate) fn mask_covers(&self, path: &str, value: &Value) -> bool {
        if self.is_secret(path) {
            return true;
        }
        match value {
            Value::Object(map) if self.has_secret_below(path) => {
                map.iter().all(|(k, v)| self.mask_covers(&join(path, k), v))
            }
            Value::Array(_) => !self.has_secret_below(path),
            _ => true,
        }
    }

    /// The text of a JSON Schema error, with the value it quotes shown as `***` where the
    /// value at the error's path is, contains or lies inside a secret. The constraint and the
    /// location stay.
    pub(crate) fn schema_error(&self, error: &ValidationError<'_>) -> String {
        let path = pointer_to_dotted(error.instance_path().as_str());
        if self.holds_secret(&path) {
            error.masked_with(MASK).to_string()
        } else {
            error.to_string()
        }
    }

    /// The secret values inside `doc` (the whole document), each as it could appear in a
    /// message: the text of a string, the JSON text of any other value. Every value inside an
    /// array where an object holding a secret belongs counts, as serde also reads a struct
    /// from a sequence.
    pub(crate) fn values_in(&self, doc: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if !self.is_empty() {
            self.collect("", doc, &mut out);
        }
        out
    }

    fn collect(&self, path: &str, value: &Value, out: &mut Vec<String>) {
        if self.is_secret(path) {
            leaves(value, out);
            return;
        }
        match value {
            Value::Object(map) if self.has_secret_below(path) => {
                for (k, v) in map {
                    self.collect(&join(path, k), v, out);
                }
            }
            // serde reads a struct from a sequence too, by position, so any element may
            // stand for a secret field.
            Value::Array(_) if self.has_secret_below(path) => leaves(value, out),
            _ => {}
        }
    }

    /// `message` with every occurrence of a secret value of `doc` replaced by `***`: the last
    /// line of defence for text that quotes values in a way nothing upstream could mask (a
    /// custom `Deserialize` impl, a `validate()` reason). Strings shorter than three
    /// characters are not searched for.
    pub(crate) fn scrub(&self, message: &str, doc: &Value) -> String {
        let mut values = self.values_in(doc);
        // Longest first, so a secret containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = message.to_string();
        for value in values {
            if value.chars().count() < SCRUB_MIN_LEN {
                continue;
            }
            // Also the escaped forms `{:?}` and JSON produce for a string with quotes or
            // backslashes in it.
            let escaped = format!("{value:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            for form in [value.as_str(), escaped] {
                if out.contains(form) {
                    out = out.replace(form, MASK);
                }
            }
        }
        out
    }
}

/// Every scalar below `value`, as text (strings unquoted).
fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Null => {}
        other => out.push(other.to_string()),
    }
}

/// Whether `path` is `base` or lies below it (`""` is above everything).
fn is_at_or_below(path: &str, base: &str) -> bool {
    base.is_empty()
        || path == base
        || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PATHS: &[&str] = &["db.password", "token"];

    #[test]
    fn secret_paths_cover_their_subtree_only() {
        let s = SecretPaths::new(PATHS);
        assert!(s.is_secret("db.password"));
        assert!(s.is_secret("db.password.inner"));
        assert!(s.is_secret("token"));
        assert!(!s.is_secret("db"));
        assert!(!s.is_secret("db.password_hint"));
        assert!(!s.is_secret("tokens"));
        assert!(!s.is_secret(""));
    }

    #[test]
    fn holding_a_secret_means_being_inside_or_above_one() {
        let s = SecretPaths::new(PATHS);
        assert!(s.has_secret_below("db"));
        assert!(s.has_secret_below(""));
        assert!(!s.has_secret_below("db.password"));
        assert!(!s.has_secret_below("db.port"));
        assert!(!s.has_secret_below("d"));
        assert!(s.holds_secret("db"));
        assert!(s.holds_secret("db.password"));
        assert!(s.holds_secret("db.password.x"));
        assert!(!s.holds_secret("db.port"));
        let none = SecretPaths::new(&[] as &[&str]);
        assert!(!none.holds_secret(""));
    }

    #[test]
    fn masking_replaces_secret_subtrees() {
        let s = SecretPaths::new(PATHS);
        let doc = json!({"db": {"password": "hunter2", "port": 5}, "token": {"a": 1}, "x": "y"});
        assert_eq!(
            s.mask("", &doc),
            json!({"db": {"password": MASK, "port": 5}, "token": MASK, "x": "y"})
        );
        assert_eq!(
            s.mask("db", &doc["db"]),
            json!({"password": MASK, "port": 5})
        );
        assert_eq!(s.mask("db.port", &json!(5)), json!(5));
    }

    #[test]
    fn a_value_holds_a_secret_only_where_one_is_present() {
        let s = SecretPaths::new(PATHS);
        assert!(s.has_secret("db", &json!({"password": "x", "port": 5})));
        assert!(!s.has_secret("db", &json!({"port": 5})));
        assert!(s.has_secret("token", &json!(null)));
        assert!(!s.has_secret("x", &json!({"password": "x"})));
        assert!(s.mask_covers("db", &json!({"password": "x", "port": 5})));
        // A struct given as a sequence: masking by field name cannot find the password.
        assert!(!s.mask_covers("db", &json!(["host", "x"])));
        assert!(!s.mask_covers("", &json!({"db": ["host", "x"]})));
        assert!(s.mask_covers("", &json!({"other": ["a"]})));
    }

    #[test]
    fn schema_errors_hide_values_holding_a_secret() {
        let s = SecretPaths::new(PATHS);
        let schema = json!({"properties": {"db": {"not": {"required": ["bad"]}, "properties": {"port": {"minimum": 10}}}}});
        let validator = jsonschema::validator_for(&schema).unwrap();
        let doc = json!({"db": {"password": "hunter2", "port": 1, "bad": true}});
        let shown: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| s.schema_error(&e))
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown.iter().all(|m| !m.contains("hunter2")), "{shown:?}");
        assert!(
            shown.contains(&"1 is less than the minimum of 10".to_string()),
            "{shown:?}"
        );
        assert!(shown.iter().any(|m| m.contains("***")), "{shown:?}");
    }

    #[test]
    fn scrub_removes_every_secret_value_from_text() {
        let s = SecretPaths::new(PATHS);
        let doc = json!({"db": {"password": "hu\"nter2", "port": 5}, "token": {"a": 12345}});
        let text = r#"bad {"password":"hu\"nter2"} and 12345, port 5"#;
        assert_eq!(
            s.scrub(text, &doc),
            r#"bad {"password":"***"} and ***, port 5"#
        );
        // A struct given as a sequence: any element may be the secret.
        let seq = json!({"db": ["s3cret-pw", 5432], "x": "s3cret-x"});
        assert_eq!(s.scrub("s3cret-pw s3cret-x", &seq), "*** s3cret-x");
        // Short secrets are left alone rather than mangling words.
        let short = json!({"token": "a"});
        assert_eq!(s.scrub("a value", &short), "a value");
    }
}
