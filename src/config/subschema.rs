//! The parts of the bound type's JSON Schema that check one field of the document alone: what
//! an incremental check validates a changed subtree with, and what the bind's read checks each
//! key's value with while the next page is read ([`SubSchemas`], [`KeyChecks`]).
//!
//! A field is checked alone only where every schema node above it is *structural* (see
//! [`STRUCTURAL`]): then the document is valid exactly when each such field is valid against
//! its own sub-schema and the rest of the document is valid with those fields left out, as long
//! as leaving a field out cannot change a node above it (it is not `required` there, and that
//! node does not count its fields).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// Keywords of a schema node above a changed field that do not look at the values of the
/// node's fields (beyond `properties` and `additionalProperties`, which the check descends
/// through): such a node may be skipped, as may the [`METADATA`] keywords. `required`,
/// `minProperties` and `maxProperties` look at which fields exist, so they also stop the
/// descent where a field appeared or disappeared.
const STRUCTURAL: &[&str] = &[
    "type",
    "properties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "$schema",
    "$defs",
    "definitions",
    "format",
];

/// Keywords that describe a node without constraining it.
const METADATA: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
];

/// The schema that accepts anything (a field of a map, or of an object without
/// `additionalProperties`).
static ANY: Value = Value::Bool(true);

/// A field's validator as [`SubSchemas::validator`] gives it: `Some(None)` when any value is
/// valid there, `None` when the field cannot be checked alone.
pub(crate) type FieldValidator = Option<Option<Arc<jsonschema::Validator>>>;

/// The bound type's JSON Schema (draft 2020-12) with the validators of its fields, compiled on
/// first use. Shared (behind an `Arc`) by the bind's read, which checks keys with it on several
/// threads, and by the [`Checker`](super::check::Checker).
pub(crate) struct SubSchemas {
    schema: Value,
    /// Validators for sub-schemas (by the address of their node in `schema`); `None` where the
    /// node's schema does not compile alone.
    compiled: Mutex<HashMap<usize, Option<Arc<jsonschema::Validator>>>>,
}

impl SubSchemas {
    /// The sub-schemas of `schema` (the bound type's, as `schemars` generates it).
    pub(crate) fn new(schema: Value) -> Self {
        SubSchemas {
            schema,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// The whole schema.
    pub(crate) fn schema(&self) -> &Value {
        &self.schema
    }

    /// The validator for the field at `path` (segments), descending only through structural
    /// nodes; with `appeared`, also `None` where the field appearing or disappearing could make
    /// the node above it invalid (it is `required` there, or that node counts its fields).
    pub(crate) fn validator<S: AsRef<str>>(&self, path: &[S], appeared: bool) -> FieldValidator {
        let node = match path.split_last() {
            None => &self.schema,
            Some((last, parents)) => child(self.parent(parents)?, last.as_ref(), appeared)?,
        };
        self.compiled(node)
    }

    /// The structural object schema at `parents` (segments from the root).
    fn parent<S: AsRef<str>>(&self, parents: &[S]) -> Option<&Map<String, Value>> {
        let mut node = &self.schema;
        for segment in parents {
            node = child(self.structural(node)?, segment.as_ref(), false)?;
        }
        self.structural(node)
    }

    /// The validator of `node` (a node of `schema`), compiled with the schema's shared
    /// definitions on first use.
    fn compiled(&self, node: &Value) -> FieldValidator {
        let object = match node {
            Value::Bool(true) => return Some(None),
            Value::Object(o) if o.keys().all(|k| METADATA.contains(&k.as_str())) => {
                return Some(None)
            }
            Value::Object(o) => o,
            _ => return None,
        };
        let key = node as *const Value as usize;
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        let validator = compiled.entry(key).or_insert_with(|| {
            let mut alone = object.clone();
            for shared in ["$defs", "definitions", "$schema"] {
                if let Some(v) = self.schema.get(shared) {
                    alone.entry(shared).or_insert_with(|| v.clone());
                }
            }
            jsonschema::validator_for(&Value::Object(alone))
                .ok()
                .map(Arc::new)
        });
        validator.clone().map(Some)
    }

    /// `node` as a structural object schema, following `$ref` and the non-null branch of an
    /// `Option` (`anyOf`/`oneOf` of a schema and `{"type": "null"}`: the value here is an
    /// object, which the null branch never accepts).
    fn structural<'a>(&'a self, mut node: &'a Value) -> Option<&'a Map<String, Value>> {
        for _ in 0..16 {
            let object = node.as_object()?;
            let only_metadata_besides = |keyword: &str| {
                object
                    .keys()
                    .all(|k| k == keyword || METADATA.contains(&k.as_str()))
            };
            if let Some(reference) = object.get("$ref") {
                if !only_metadata_besides("$ref") {
                    return None;
                }
                let pointer = reference.as_str()?.strip_prefix('#')?;
                node = self.schema.pointer(pointer)?;
                continue;
            }
            if let Some((keyword, branches)) = ["anyOf", "oneOf"]
                .iter()
                .find_map(|k| object.get(*k).map(|b| (*k, b)))
            {
                if !only_metadata_besides(keyword) {
                    return None;
                }
                let branches = branches.as_array()?;
                let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
                match branches.as_slice() {
                    [a, b] if is_null(b) && !is_null(a) => node = a,
                    [a, b] if is_null(a) && !is_null(b) => node = b,
                    _ => return None,
                }
                continue;
            }
            return object
                .keys()
                .all(|k| STRUCTURAL.contains(&k.as_str()) || METADATA.contains(&k.as_str()))
                .then_some(object);
        }
        None
    }
}

/// The schema of field `segment` of the structural object schema `object`; with `appeared`,
/// `None` where the field appearing or disappearing could make `object` invalid.
fn child<'a>(object: &'a Map<String, Value>, segment: &str, appeared: bool) -> Option<&'a Value> {
    if appeared {
        let counts = ["minProperties", "maxProperties"]
            .iter()
            .any(|k| object.contains_key(*k));
        let required = object
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|f| f.as_str() == Some(segment)));
        if counts || required {
            return None;
        }
    }
    if object.contains_key("patternProperties") {
        return None;
    }
    match object.get("properties").and_then(|p| p.get(segment)) {
        Some(node) => Some(node),
        None => match object.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Some(&ANY),
            Some(Value::Bool(false)) => None,
            Some(node) => Some(node),
        },
    }
}

/// Checks one key's value after another against its own field's sub-schema (one per thread):
/// the field's schema and validator are looked up again only where a key's parent or field
/// schema differs from the key's before (the keys of a map share both).
pub(crate) struct KeyChecks<'a> {
    schemas: &'a SubSchemas,
    /// The parent of the key checked last.
    parent: Option<Parent<'a>>,
    /// The field schema of the key checked last (by address) and its validator.
    field: Option<(usize, FieldValidator)>,
}

/// A parent path (segments) and its structural object schema, if it has one.
struct Parent<'a> {
    path: Vec<String>,
    schema: Option<&'a Map<String, Value>>,
}

impl<'a> KeyChecks<'a> {
    /// No key checked yet.
    pub(crate) fn new(schemas: &'a SubSchemas) -> Self {
        KeyChecks {
            schemas,
            parent: None,
            field: None,
        }
    }

    /// True when `value`, the whole value of the field at `path` (segments, not empty), is
    /// valid against that field's sub-schema and the field can be checked alone, counted as
    /// having appeared (see the module docs). False says only that it was not vouched for.
    pub(crate) fn vouches(&mut self, path: &[&str], value: &Value) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let same_parent = self.parent.as_ref().is_some_and(|p| {
            p.path
                .iter()
                .map(String::as_str)
                .eq(parents.iter().copied())
        });
        if !same_parent {
            self.parent = Some(Parent {
                path: parents.iter().map(|s| (*s).to_string()).collect(),
                schema: self.schemas.parent(parents),
            });
        }
        let Some(object) = self.parent.as_ref().and_then(|p| p.schema) else {
            return false;
        };
        let Some(node) = child(object, last, true) else {
            return false;
        };
        let address = node as *const Value as usize;
        if self.field.as_ref().is_none_or(|(a, _)| *a != address) {
            self.field = Some((address, self.schemas.compiled(node)));
        }
        match self.field.as_ref().map(|(_, v)| v) {
            Some(Some(None)) => true,
            Some(Some(Some(validator))) => validator.is_valid(value),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> SubSchemas {
        SubSchemas::new(json!({
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"type": "integer"},
                "name": {"type": "string"},
                "items": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Item"}},
                "counted": {"type": "object", "minProperties": 1,
                            "additionalProperties": {"type": "integer"}},
                "free": {"type": "object"},
                "patterned": {"type": "object", "patternProperties": {"^a": {"type": "integer"}}},
                "anything": {"description": "no constraint"},
            },
            "additionalProperties": false,
            "$defs": {"Item": {"type": "object", "required": ["weight"],
                               "properties": {"weight": {"type": "integer", "maximum": 10}}}},
        }))
    }

    #[test]
    fn a_key_is_vouched_for_only_where_its_field_can_be_checked_alone() {
        let s = schemas();
        let mut checks = KeyChecks::new(&s);
        // A map entry, against the map's value schema (through `$ref`).
        assert!(checks.vouches(&["items", "a"], &json!({"weight": 3})));
        assert!(!checks.vouches(&["items", "b"], &json!({"weight": 30})));
        assert!(!checks.vouches(&["items", "c"], &json!({})));
        assert!(checks.vouches(&["items", "d"], &json!({"weight": 1})));
        // A field that is not required; one that is (leaving it out would change the root).
        assert!(checks.vouches(&["name"], &json!("x")));
        assert!(!checks.vouches(&["name"], &json!(1)));
        assert!(!checks.vouches(&["port"], &json!(80)));
        // An object that counts its fields, one with pattern properties, an unknown field.
        assert!(!checks.vouches(&["counted", "a"], &json!(1)));
        assert!(!checks.vouches(&["patterned", "a"], &json!(1)));
        assert!(!checks.vouches(&["nope"], &json!(1)));
        // Fields no schema constrains.
        assert!(checks.vouches(&["free", "x"], &json!([1, "two"])));
        assert!(checks.vouches(&["anything"], &json!({"a": 1})));
        // The root itself is never a key's field.
        assert!(!checks.vouches(&[], &json!({"port": 1})));
    }

    #[test]
    fn a_field_validator_follows_the_structural_descent() {
        let s = schemas();
        assert!(matches!(s.validator(&["items", "x"], true), Some(Some(_))));
        assert!(matches!(s.validator(&["free", "x"], true), Some(None)));
        assert!(s.validator(&["port"], true).is_none());
        assert!(matches!(s.validator(&["port"], false), Some(Some(_))));
        assert!(s.validator(&["patterned", "a"], false).is_none());
        assert!(matches!(s.validator::<&str>(&[], false), Some(Some(_))));
    }
}
