//! Which dotted field paths a published JSON Schema knows: `database.pool` is a field of the
//! schema if `database` is a property of the root (through `$ref`, `allOf`, `anyOf`, `oneOf`)
//! and `pool` one of its object schema. Below a map (`additionalProperties` with a schema) and
//! below a field of any type (`true`, `{}`), every path is known. A struct's schema without
//! `additionalProperties` does not make unknown names known: serde would ignore them.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// The schemas `node` stands for: itself with `$ref`s followed, and the members of its
/// `allOf`/`anyOf`/`oneOf`, recursively (at most a few levels: schemas are trees of refs).
fn alternatives<'a>(root: &'a Value, node: &'a Value, depth: usize, out: &mut Vec<&'a Value>) {
    /// What an unresolvable `$ref` stands for: anything (the check then lets the path pass).
    static ANYTHING: Value = Value::Bool(true);
    if depth > 16 {
        return;
    }
    out.push(node);
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        match reference.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(target) => alternatives(root, target, depth + 1, out),
            None => out.push(&ANYTHING),
        }
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        for member in node
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            alternatives(root, member, depth + 1, out);
        }
    }
}

/// Whether a schema admits any value and so any field below it: `true`, `{}`, or one without
/// a type, properties or combinators.
fn open(node: &Value) -> bool {
    match node {
        Value::Bool(b) => *b,
        Value::Object(map) => ![
            "type",
            "properties",
            "$ref",
            "allOf",
            "anyOf",
            "oneOf",
            "enum",
            "const",
        ]
        .iter()
        .any(|k| map.contains_key(*k)),
        _ => false,
    }
}

/// What a failed step says it allows: its field names, or its type.
fn describe(nodes: &[&Value]) -> String {
    let names: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().map(String::as_str))
        .collect();
    if !names.is_empty() {
        return format!(
            "its fields are {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let types: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.get("type"))
        .flat_map(|t| match t {
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        })
        .filter(|t| t != "null")
        .collect();
    match types.len() {
        0 => "it has no fields".to_string(),
        _ => format!(
            "it is {} and has no fields",
            types.into_iter().collect::<Vec<_>>().join(" or ")
        ),
    }
}

/// Checks that `path` (dotted, already split) names a field of the published schema `doc`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] naming the path, the first unknown part, and the fields the
/// schema has there.
pub(crate) fn check_known(doc: &Value, path: &[&str]) -> Result<()> {
    let mut nodes = Vec::new();
    alternatives(doc, doc, 0, &mut nodes);
    for (depth, segment) in path.iter().enumerate() {
        if nodes.iter().any(|n| open(n)) {
            return Ok(());
        }
        let mut next = Vec::new();
        for node in &nodes {
            if let Some(child) = node.get("properties").and_then(|p| p.get(*segment)) {
                alternatives(doc, child, 0, &mut next);
            } else if let Some(values) = node
                .get("additionalProperties")
                .filter(|v| !matches!(v, Value::Bool(false)))
            {
                alternatives(doc, values, 0, &mut next);
            } else if node
                .get("patternProperties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty())
            {
                return Ok(());
            }
        }
        if next.is_empty() {
            let parent = path[..depth].join(".");
            let place = if parent.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in `{parent}`")
            };
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "`{}` is not a field of the published schema: no `{segment}` {place}; {}",
                    path.join("."),
                    describe(&nodes)
                ),
            )
            .with_field(path.join(".")));
        }
        nodes = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "port": {"type": "integer"},
                "database": {"$ref": "#/$defs/Db"},
                "backup": {"anyOf": [{"$ref": "#/$defs/Db"}, {"type": "null"}]},
                "features": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "extra": true
            },
            "$defs": {
                "Db": {"type": "object", "properties": {"host": {"type": "string"}, "pool": {"type": "integer"}}}
            }
        })
    }

    #[test]
    fn known_paths_pass() {
        let doc = schema();
        for path in [
            "port",
            "database",
            "database.pool",
            "backup.host",
            "features.anything",
            "extra.a.b",
        ] {
            let segments: Vec<&str> = path.split('.').collect();
            check_known(&doc, &segments).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }

    #[test]
    fn unknown_paths_name_what_is_there() {
        let doc = schema();
        let e = check_known(&doc, &["nosuchfield"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let text = e.to_string();
        assert!(text.contains("`nosuchfield`"), "{text}");
        assert!(
            text.contains("`database`") && text.contains("`port`"),
            "{text}"
        );
        let e = check_known(&doc, &["database", "poool"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`database.poool`") && text.contains("`pool`"),
            "{text}"
        );
        let e = check_known(&doc, &["port", "x"]).unwrap_err();
        assert!(e.to_string().contains("integer"), "{e}");
    }
}
