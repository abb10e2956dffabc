//! How a published value becomes keys under the prefix: **one key per leaf field**.
//!
//! `{"port": 8080, "database": {"host": "db1", "pool": 20}}` becomes `port` = `8080`,
//! `database/host` = `db1`, `database/pool` = `20`. A leaf is a scalar, an array (written as
//! JSON), an empty object (`{}`), or an object with a key that cannot be a key segment (empty or
//! containing `/`; written whole as JSON). Numbers, booleans and `null` are written as JSON. A
//! string is written as plain text when YAML reads that text back as the same string
//! (`db1.internal`), and JSON-quoted otherwise (`"1.10"`, `"true"`, `"a: b"`), so every value
//! reads back exactly under the etcd layer's rules whatever the field's type.

use serde_json::Value;

/// Keys relative to the prefix and their values, for a whole document (the root).
pub(crate) fn layout(value: &Value) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match value {
        Value::Object(map) if map.keys().all(|k| is_segment(k)) => {
            for (key, child) in map {
                walk(key.clone(), child, &mut out);
            }
        }
        other => out.push((String::new(), encode(other))),
    }
    out
}

/// Keys for `value` at the dotted field `path` (segments joined with `/`).
pub(crate) fn layout_at(path: &[&str], value: &Value) -> Vec<(String, Vec<u8>)> {
    if path.is_empty() {
        return layout(value);
    }
    let mut out = Vec::new();
    walk(path.join("/"), value, &mut out);
    out
}

fn walk(key: String, value: &Value, out: &mut Vec<(String, Vec<u8>)>) {
    match value {
        Value::Object(map) if !map.is_empty() && map.keys().all(|k| is_segment(k)) => {
            for (child_key, child) in map {
                walk(format!("{key}/{child_key}"), child, out);
            }
        }
        leaf => out.push((key, encode(leaf))),
    }
}

/// Whether `key` can be one segment of an etcd key below the prefix.
pub(crate) fn is_segment(key: &str) -> bool {
    !key.is_empty() && !key.contains('/')
}

/// One leaf's value as written to etcd.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) if reads_back_plain(s) => s.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

/// Whether YAML reads `text` as exactly this string (so it needs no quotes).
fn reads_back_plain(text: &str) -> bool {
    if text.is_empty()
        || text.trim() != text
        || text.starts_with(['{', '[', '"', '\''])
        || text.contains(['\n', '\r', '\t'])
    {
        return false;
    }
    matches!(serde_yaml::from_str::<Value>(text), Ok(Value::String(s)) if s == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(pairs: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn one_key_per_leaf_field() {
        let v = json!({
            "port": 8080,
            "database": {"host": "db1.internal", "pool": 20, "opts": {}},
            "tags": ["a", "b"],
            "version": "1.10",
            "flag": "true",
            "nick": null,
            "weird": {"a/b": 1}
        });
        assert_eq!(
            text(layout(&v)),
            vec![
                ("database/host".into(), "db1.internal".into()),
                ("database/opts".into(), "{}".into()),
                ("database/pool".into(), "20".into()),
                ("flag".into(), "\"true\"".into()),
                ("nick".into(), "null".into()),
                ("port".into(), "8080".into()),
                ("tags".into(), "[\"a\",\"b\"]".into()),
                ("version".into(), "\"1.10\"".into()),
                ("weird".into(), "{\"a/b\":1}".into()),
            ]
        );
        assert_eq!(
            text(layout_at(&["database", "pool"], &json!(5))),
            vec![("database/pool".into(), "5".into())]
        );
        assert!(layout(&json!({})).is_empty());
    }

    #[test]
    fn strings_that_yaml_would_change_are_quoted() {
        for s in [
            "",
            " x",
            "a: b",
            "# c",
            "~",
            "null",
            "1e3",
            "multi\nline",
            "'q'",
        ] {
            assert!(encode(&json!(s)).starts_with(b"\""), "{s:?}");
        }
        for s in ["db1", "hello world", "a-b_c.d", "ünïcode"] {
            assert_eq!(encode(&json!(s)), s.as_bytes(), "{s:?}");
        }
    }
}
