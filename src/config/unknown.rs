//! Keys that name no field of the bound type: a typo in an etcd key, a file or a variable, which
//! serde would otherwise drop without a word.

use std::fmt;

use serde_json::Value;

use super::value::StringFields;
use crate::provenance::{Source, Sources};

/// A key in some layer that sets no field of the bound type (see
/// [`ConfigOptions::with_unknown_keys`](crate::ConfigOptions::with_unknown_keys)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKey {
    /// The dotted field path the key names, e.g. `database.hots`.
    pub path: String,
    /// Where it came from: layer, etcd key (or file, or variable) and `mod_revision`.
    pub source: Source,
    /// The fields the type does have at that level, in schema order.
    pub known: Vec<String>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field `{}`", self.path)?;
        write!(f, " (layer {}", self.source.layer)?;
        if let Some(key) = self.source.origin.key() {
            write!(f, ", {key}")?;
        }
        if let Some(revision) = self.source.revision {
            write!(f, ", revision {revision}")?;
        }
        write!(f, ")")?;
        if !self.known.is_empty() {
            write!(f, "; known fields here: {}", self.known.join(", "))?;
        }
        Ok(())
    }
}

/// The paths of `merged` that the schema's structs do not declare, with their sources. Objects
/// whose schema allows any key (maps, `serde_json::Value`) and places the schema does not
/// describe clearly (enums, untagged unions) are not looked into.
pub(crate) fn find(merged: &Value, sources: &Sources, fields: &StringFields) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    find_from(
        merged,
        fields.schema(),
        String::new(),
        sources,
        fields,
        &mut found,
    );
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// Adds the unknown paths at and below `value` (at dotted `path`, described by schema `node`).
fn find_from<'v>(
    value: &'v Value,
    node: &'v Value,
    path: String,
    sources: &Sources,
    fields: &'v StringFields,
    found: &mut Vec<UnknownKey>,
) {
    let mut stack: Vec<(&Value, &Value, String)> = vec![(value, node, path)];
    while let Some((value, node, path)) = stack.pop() {
        let Value::Object(map) = value else { continue };
        let Some(properties) = fields.struct_properties(node) else {
            continue;
        };
        for (key, child) in map {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match properties.get(key) {
                Some(schema) => stack.push((child, schema, child_path)),
                None => found.push(unknown(child_path, sources, properties)),
            }
        }
    }
}

fn unknown(
    path: String,
    sources: &Sources,
    properties: &serde_json::Map<String, Value>,
) -> UnknownKey {
    let source = sources
        .find_within(&path)
        .cloned()
        .unwrap_or_else(|| Source::DEFAULT.clone());
    UnknownKey {
        path,
        source,
        known: properties.keys().cloned().collect(),
    }
}

/// Brings `found` (the unknown keys of the merged tree before a change, in path order) up to
/// date after the merged tree changed at `path` only: what [`find`] would return for `merged`.
pub(crate) fn update_at(
    found: &mut Vec<UnknownKey>,
    merged: &serde_json::Map<String, Value>,
    sources: &Sources,
    fields: &StringFields,
    path: &[String],
) {
    let within = |found: &mut Vec<UnknownKey>, here: &str, itself: bool| {
        let below = format!("{here}.");
        found.retain(|u| !(u.path.starts_with(&below) || (itself && u.path == here)));
    };
    let mut node = fields.schema();
    for (i, segment) in path.iter().enumerate() {
        let Some(properties) = fields.struct_properties(node) else {
            // Not looked into from here down: nothing at or below `path` is reported.
            return;
        };
        match properties.get(segment.as_str()) {
            Some(child) => node = child,
            None => {
                let here = path[..=i].join(".");
                within(found, &here, true);
                if value_at(merged, &path[..=i]).is_some() {
                    found.push(unknown(here, sources, properties));
                    found.sort_by(|a, b| a.path.cmp(&b.path));
                }
                return;
            }
        }
    }
    let here = path.join(".");
    within(found, &here, false);
    if let Some(value) = value_at(merged, path) {
        find_from(value, node, here, sources, fields, found);
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
}

/// The value at `path` in `root`, through objects only.
pub(crate) fn value_at<'v>(
    root: &'v serde_json::Map<String, Value>,
    path: &[String],
) -> Option<&'v Value> {
    let (last, parents) = path.split_last()?;
    let mut node = root;
    for segment in parents {
        node = node.get(segment.as_str())?.as_object()?;
    }
    node.get(last.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::{merge, LayerTree};
    use crate::provenance::Origin;
    use serde_json::json;

    #[test]
    fn structs_are_checked_maps_and_values_are_not() {
        let schema = json!({
            "type": "object",
            "properties": {
                "port": {"type": "integer"},
                "db": {"anyOf": [{"$ref": "#/$defs/Db"}, {"type": "null"}]},
                "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
                "any": true
            },
            "$defs": {"Db": {"type": "object", "properties": {"host": {"type": "string"}}}}
        });
        let fields = StringFields::new(schema);
        let mut tree = LayerTree::default();
        let src = Source::new(Origin::Etcd {
            key: "/p/db/hots".into(),
            mod_revision: 7,
        });
        tree.insert(
            &[],
            json!({"port": 1, "prot": 2, "db": {"hots": "x"}, "extra": {"a": 1}, "any": {"b": 1}}),
            &src,
        )
        .unwrap();
        let (merged, sources) = merge([&tree]);
        let unknown = find(&merged, &sources, &fields);
        let paths: Vec<&str> = unknown.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(paths, ["db.hots", "prot"]);
        assert_eq!(unknown[0].source.revision, Some(7));
        assert_eq!(unknown[0].known, ["host"]);
        assert!(unknown[0].to_string().contains("unknown field `db.hots`"));
    }
}
