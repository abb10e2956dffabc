//! Field-level views of a key set: the etcd layer's document, diffs, and secret masking.

use crate::provenance::join_path as join;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sealing::UNREADABLE;
use super::store::Kvs;
use crate::config::{merge, EtcdLayer, StringFields};
use crate::secrets::SecretPaths;
pub(crate) use crate::secrets::MASK;

/// One changed field between two versions of a prefix.
///
/// `path` is the dotted field path from the struct (`database.pool`; `""` for the root).
/// `old`/`new` are the values as the etcd layer reads them (`None`: absent). A field marked
/// `#[coord(secret)]` (or listed in `#[coord(secrets = "…")]`) shows `"***"` instead of its
/// values, and so does any secret field inside an object value.
///
/// A secret present in both versions whose value the history does not hold readably on one
/// side (recorded without a secret key, or encrypted with a key this reader was not given) is
/// listed with [`unknown`](Self::unknown) set: it may or may not have changed. In JSON,
/// `"unknown": true` is there only then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FieldChange {
    /// Dotted field path, e.g. `database.pool`.
    pub path: String,
    /// The value before, `None` if the field was absent.
    pub old: Option<Value>,
    /// The value after, `None` if the field is now absent.
    pub new: Option<Value>,
    /// Whether the field is secret (its values are shown as `***`).
    pub secret: bool,
    /// Whether this is a secret whose value the history does not hold readably on at least one
    /// side, so whether it changed is unknown (see the type's docs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            None => "(absent)".to_string(),
            Some(v) => v.to_string(),
        };
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {} -> {}", show(&self.old), show(&self.new))?;
        if self.unknown {
            f.write_str(" (secret not readable from the history: whether it changed is unknown)")?;
        }
        Ok(())
    }
}

/// The etcd layer's document for a key set, built exactly as the reload task builds it (keys
/// are field paths, deeper keys win, string fields keep their text). A key the layer would
/// reject (bad YAML, a key below a scalar) is shown as its raw text, or left out if it still
/// cannot be placed, so a broken version can still be inspected and diffed.
pub(crate) fn document(prefix: &str, kvs: &Kvs, fields: &StringFields) -> Value {
    let mut layer = EtcdLayer::new(prefix.to_string(), usize::MAX);
    for (key, value) in kvs {
        layer.put(key, value, 0, fields);
    }
    let mut patched = std::collections::BTreeSet::new();
    for _ in 0..=2 * kvs.len() {
        match layer.tree(fields) {
            Ok(tree) => return merge([&tree]).0,
            Err(error) => {
                let Some(key) = error.key().map(str::to_string) else {
                    break;
                };
                if patched.insert(key.clone()) {
                    let raw = kvs
                        .get(key.as_bytes())
                        .map_or_else(String::new, |v| String::from_utf8_lossy(v).into_owned());
                    let quoted = serde_json::to_vec(&Value::String(raw)).unwrap_or_default();
                    layer.put(key.as_bytes(), &quoted, 0, fields);
                } else {
                    layer.delete(key.as_bytes());
                }
            }
        }
    }
    Value::Object(serde_json::Map::new())
}

/// The dotted paths of the leaves that differ between `old` and `new`, in path order (`""`
/// when the documents are scalars that differ).
pub(crate) fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    diff::<&str>(old, new, &[])
        .into_iter()
        .map(|c| c.path)
        .collect()
}

/// The changed leaf fields from `old` to `new`, in path order, secrets masked; a secret that
/// either side holds as [`UNREADABLE`] is listed as unknown.
pub(crate) fn diff<S: AsRef<str>>(old: &Value, new: &Value, secrets: &[S]) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", Some(old), Some(new), secrets, &mut out);
    out
}

fn walk<S: AsRef<str>>(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    secrets: &[S],
    out: &mut Vec<FieldChange>,
) {
    let paths = SecretPaths::new(secrets);
    if let (Some(a), Some(b)) = (old, new) {
        if paths.is_secret(path) && (unreadable(a) || unreadable(b)) {
            // The same placeholder naming the same write on both sides: unchanged.
            if a == b && !untracked(a) {
                return;
            }
            out.push(FieldChange {
                path: path.to_string(),
                old: Some(paths.mask(path, a)),
                new: Some(paths.mask(path, b)),
                secret: true,
                unknown: true,
            });
            return;
        }
    }
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                walk(&join(path, key), a.get(key), b.get(key), secrets, out);
            }
        }
        (Some(Value::Object(a)), None) if !a.is_empty() => {
            for (key, v) in a {
                walk(&join(path, key), Some(v), None, secrets, out);
            }
        }
        (None, Some(Value::Object(b))) if !b.is_empty() => {
            for (key, v) in b {
                walk(&join(path, key), None, Some(v), secrets, out);
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.to_string(),
            old: a.map(|v| paths.mask(path, v)),
            new: b.map(|v| paths.mask(path, v)),
            secret: paths.is_secret(path),
            unknown: false,
        }),
        _ => {}
    }
}

/// Whether `value` is, or holds, a secret a view could not read (see [`UNREADABLE`]).
fn unreadable(value: &Value) -> bool {
    any_string(value, &|s| s.starts_with(UNREADABLE))
}

/// Whether `value` holds a secret a view could not read whose write is not known either.
fn untracked(value: &Value) -> bool {
    any_string(value, &|s| s == UNREADABLE)
}

fn any_string(value: &Value, test: &dyn Fn(&str) -> bool) -> bool {
    match value {
        Value::String(s) => test(s),
        Value::Object(map) => map.values().any(|v| any_string(v, test)),
        Value::Array(items) => items.iter().any(|v| any_string(v, test)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_leaf_changes_with_secrets_masked() {
        let secrets = ["database.password", "token"];
        let a = json!({"port": 1, "database": {"host": "a", "password": "old-pw"}, "token": "t1",
                       "gone": {"x": 1}});
        let b = json!({"port": 2, "database": {"host": "a", "password": "new-pw"}, "token": "t2",
                       "added": {"y": [1]}});
        let changes = diff(&a, &b, &secrets);
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["added.y", "database.password", "gone.x", "port", "token"]
        );
        let pw = &changes[1];
        assert!(pw.secret);
        assert_eq!(pw.old, Some(json!("***")));
        assert_eq!(pw.new, Some(json!("***")));
        assert_eq!(changes[2].new, None);
        assert_eq!(changes[3].to_string(), "port: 1 -> 2");
        let shown = format!("{changes:?}");
        assert!(!shown.contains("pw") && !shown.contains("t1"), "{shown}");
    }

    #[test]
    fn secrets_the_history_cannot_read_are_unknown_not_changed() {
        let secrets = ["database.password", "token", "unchanged"];
        let same = format!("{UNREADABLE}@7");
        let a = json!({"database": {"password": UNREADABLE, "host": "a"}, "token": UNREADABLE,
                       "unchanged": same});
        let b = json!({"database": {"password": "now", "host": "b"}, "unchanged": same});
        let changes = diff(&a, &b, &secrets);
        assert_eq!(changes.len(), 3, "{changes:?}");
        let pw = &changes[1];
        assert_eq!(pw.path, "database.password");
        assert!(pw.secret && pw.unknown);
        assert_eq!(
            (pw.old.clone(), pw.new.clone()),
            (Some(json!("***")), Some(json!("***")))
        );
        assert!(pw.to_string().contains("unknown"), "{pw}");
        // Gone is a known change, even if the old value was not recorded.
        let token = &changes[2];
        assert_eq!((token.path.as_str(), token.unknown), ("token", false));
        assert_eq!(token.new, None);
        assert!(!format!("{changes:?}").contains(UNREADABLE));
        assert!(!serde_json::to_string(&changes[0])
            .unwrap()
            .contains("unknown"));
    }

    #[test]
    fn masks_secrets_inside_replaced_objects() {
        let secrets = ["database.password"];
        let a = json!({"database": {"password": "pw", "host": "h"}});
        let b = json!({"database": 7});
        let changes = diff(&a, &b, &secrets);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].old,
            Some(json!({"password": "***", "host": "h"}))
        );
    }

    #[test]
    fn documents_follow_the_etcd_layer_rules_and_tolerate_bad_keys() {
        let fields = StringFields::new(json!({
            "type": "object",
            "properties": {"version": {"type": "string"}}
        }));
        let kvs: Kvs = [
            (
                b"/p/database".to_vec(),
                br#"{"host": "a", "pool": 1}"#.to_vec(),
            ),
            (b"/p/database/host".to_vec(), b"b".to_vec()),
            (b"/p/version".to_vec(), b"1.10".to_vec()),
            (b"/p/broken".to_vec(), b"a: [1".to_vec()),
        ]
        .into_iter()
        .collect();
        let doc = document("/p/", &kvs, &fields);
        assert_eq!(
            doc,
            json!({"database": {"host": "b", "pool": 1}, "version": "1.10", "broken": "a: [1"})
        );
    }
}
