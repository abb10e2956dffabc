//! Field patches: only the fields that changed, written over the prefix's key set as it is.
//!
//! A whole-value publish lays out every leaf field, defaults and file-layer values included, so
//! after it etcd sets every field on every instance. A patch touches only the keys at or below
//! the fields it changes (see [`changed_fields`]); every other key, and every field that no key
//! sets (so each instance's file layer or default still applies), stays as it is.

use serde_json::Value;

use super::diff;
use super::layout::{is_segment, layout_at};
use super::store::Kvs;
use crate::config::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::secrets::{SecretPaths, MASK};

/// One changed field: its path segments (`["database", "pool"]`; empty for the whole
/// document) and its new value (`None`: the field is gone, its keys are deleted).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldPatch {
    pub(crate) path: Vec<String>,
    pub(crate) value: Option<Value>,
}

impl FieldPatch {
    /// The dotted path, as in errors and diffs.
    pub(crate) fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The fields that differ from `before` to `after` (two serializations of one type), at the
/// granularity publish lays keys out at: objects are compared field by field, while a scalar, an
/// array, an empty object or an object with a key that cannot be a key segment is one field.
pub(crate) fn changed_fields(before: &Value, after: &Value) -> Vec<FieldPatch> {
    let mut out = Vec::new();
    walk(&mut Vec::new(), before, after, &mut out);
    out
}

fn recursable(map: &serde_json::Map<String, Value>) -> bool {
    map.keys().all(|k| is_segment(k))
}

fn walk(path: &mut Vec<String>, before: &Value, after: &Value, out: &mut Vec<FieldPatch>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(a), Value::Object(b)) if !b.is_empty() && recursable(a) && recursable(b) => {
            for (key, old) in a {
                path.push(key.clone());
                match b.get(key) {
                    Some(new) => walk(path, old, new, out),
                    None => out.push(FieldPatch {
                        path: path.clone(),
                        value: None,
                    }),
                }
                path.pop();
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    path.push(key.clone());
                    out.push(FieldPatch {
                        path: path.clone(),
                        value: Some(new.clone()),
                    });
                    path.pop();
                }
            }
        }
        _ => out.push(FieldPatch {
            path: path.clone(),
            value: Some(after.clone()),
        }),
    }
}

/// `current` (full keys under `prefix`) with `patches` applied: for each, the keys at or below
/// its path are replaced by its layout (none for a removed field). Checked to read back under
/// the etcd layer's rules (a key above a path holding a document that still sets the field is
/// refused) and against `max_value_bytes` per key.
///
/// # Errors
/// [`ErrorKind::Validation`] naming the field (secret values never shown).
pub(crate) fn apply(
    prefix: &str,
    current: &Kvs,
    patches: &[FieldPatch],
    fields: &StringFields,
    max_value_bytes: usize,
    secrets: &[impl AsRef<str>],
) -> Result<Kvs> {
    let mut target = current.clone();
    for patch in patches {
        let rel = patch.path.join("/");
        let below = format!("{rel}/");
        let doomed: Vec<Vec<u8>> = target
            .keys()
            .filter(|key| {
                let r = key.strip_prefix(prefix.as_bytes()).unwrap_or(key);
                rel.is_empty() || r == rel.as_bytes() || r.starts_with(below.as_bytes())
            })
            .cloned()
            .collect();
        for key in doomed {
            target.remove(&key);
        }
        let Some(value) = &patch.value else {
            continue;
        };
        let segments: Vec<&str> = patch.path.iter().map(String::as_str).collect();
        for (key, bytes) in layout_at(&segments, value) {
            let key = format!("{prefix}{key}");
            if bytes.len() > max_value_bytes {
                return Err(Error::new(
                    ErrorKind::Validation,
                    format!(
                        "value is {} bytes, over the limit of {max_value_bytes} bytes per key",
                        bytes.len()
                    ),
                )
                .with_field(patch.dotted())
                .with_key(key));
            }
            target.insert(key.into_bytes(), bytes);
        }
    }
    let doc = diff::document(prefix, &target, fields);
    for patch in patches {
        let pointer: String = patch
            .path
            .iter()
            .map(|s| format!("/{}", s.replace('~', "~0")))
            .collect();
        if doc.pointer(&pointer) != patch.value.as_ref() {
            let path = patch.dotted();
            let what = if SecretPaths::new(secrets).is_secret(&path) {
                format!("secret field `{path}` (value {MASK} not shown)")
            } else {
                format!("`{path}`")
            };
            let why = if patch.value.is_some() {
                "a key above it holds a value that is not an object?"
            } else {
                "a key above it holds a document that still sets it?"
            };
            return Err(Error::new(
                ErrorKind::Validation,
                format!("{what} does not read back from etcd as written ({why})"),
            )
            .with_field(path));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(path: &[&str], value: Option<Value>) -> FieldPatch {
        FieldPatch {
            path: path.iter().map(|s| s.to_string()).collect(),
            value,
        }
    }

    #[test]
    fn only_changed_leaves_are_patches() {
        let before = json!({
            "port": 8080,
            "database": {"host": "db1", "pool": 10},
            "features": {"a": true, "b": false},
            "tags": ["x"],
            "weird": {"a/b": 1}
        });
        let after = json!({
            "port": 8080,
            "database": {"host": "db1", "pool": 20},
            "features": {"a": true, "c": true},
            "tags": ["x", "y"],
            "weird": {"a/b": 2}
        });
        assert_eq!(
            changed_fields(&before, &after),
            vec![
                patch(&["database", "pool"], Some(json!(20))),
                patch(&["features", "b"], None),
                patch(&["features", "c"], Some(json!(true))),
                patch(&["tags"], Some(json!(["x", "y"]))),
                patch(&["weird"], Some(json!({"a/b": 2}))),
            ]
        );
        assert!(changed_fields(&before, &before).is_empty());
        assert_eq!(
            changed_fields(&json!({"m": {"a": 1}}), &json!({"m": {}})),
            vec![patch(&["m"], Some(json!({})))]
        );
    }

    fn kvs(pairs: &[(&str, &str)]) -> Kvs {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn apply_replaces_only_the_patched_keys() {
        let fields = StringFields::new(json!({}));
        let current = kvs(&[
            ("/p/port", "8080"),
            ("/p/database/host", "db1"),
            ("/p/features/b", "false"),
            ("/p/features/old/x", "1"),
        ]);
        let target = apply(
            "/p/",
            &current,
            &[
                patch(&["database", "pool"], Some(json!(20))),
                patch(&["features", "b"], None),
                patch(&["features", "old"], Some(json!(5))),
            ],
            &fields,
            1024,
            &[] as &[&str],
        )
        .unwrap();
        assert_eq!(
            target,
            kvs(&[
                ("/p/port", "8080"),
                ("/p/database/host", "db1"),
                ("/p/database/pool", "20"),
                ("/p/features/old", "5"),
            ])
        );
    }

    #[test]
    fn apply_refuses_what_does_not_read_back_and_big_values() {
        let fields = StringFields::new(json!({}));
        let current = kvs(&[("/p/database", "{pool: 5, password: hunter2}")]);
        let err = apply(
            "/p/",
            &current,
            &[patch(&["database", "password"], None)],
            &fields,
            1024,
            &["database.password"],
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("database.password"));
        assert!(err.to_string().contains("secret"), "{err}");
        let err = apply(
            "/p/",
            &Kvs::new(),
            &[patch(&["blob"], Some(json!("x".repeat(100))))],
            &fields,
            10,
            &[] as &[&str],
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation);
        assert_eq!(err.key(), Some("/p/blob"));
    }
}
