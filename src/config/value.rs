//! Parsing one raw value (an etcd value, an environment variable, the local file) into JSON,
//! with the same rules for every layer.
//!
//! Values are YAML, a superset of JSON, so `8080`, `true`, `[1, 2]`, `{"a": 1}`, a YAML block and
//! a bare word all work the way `etcdctl put` users expect. Where the bound type's JSON Schema
//! says a field is a string (and not a number or bool), a value that YAML would read as a number
//! or bool is kept as the text written: `version: 1.10` stays `"1.10"`, `password: 0123` stays
//! `"0123"`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::plain::{plain_scalar, simple};
use super::yaml::{self, Budget};

/// Default for the deepest field path a value may set: key segments below the prefix plus the
/// nesting of the document at that key (64).
pub(crate) const DEFAULT_MAX_DEPTH: usize = 64;

/// Nodes a value may expand to beyond its length in bytes (aliases make a short text large).
const NODE_ALLOWANCE: usize = 4096;

/// A JSON value that refuses what `serde_json::Value` would silently accept: a mapping with
/// the same key twice (the last would win), and numbers JSON cannot hold (NaN, infinities).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        serde::Deserialize::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key.clone(), value).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{key}` in a mapping"
                )));
            }
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// The one parser of raw values for every layer: an etcd value, an environment variable, the
/// local file. It knows which field paths of the bound type are strings (from its JSON Schema),
/// so their text is kept as written, and it enforces the depth limit.
#[derive(Clone, Debug)]
pub(crate) struct StringFields {
    schema: Value,
    /// The target of every local `$ref` (`#/…`) the schema holds, by reference text: looked up
    /// for every value parsed, so resolved once here.
    refs: Arc<HashMap<String, Value>>,
    max_depth: usize,
}

impl StringFields {
    /// A parser for the type whose JSON Schema is `schema`, with the default depth limit.
    pub(crate) fn new(schema: Value) -> Self {
        let mut refs = HashMap::new();
        let mut stack = vec![&schema];
        while let Some(node) = stack.pop() {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(reference)) = map.get("$ref") {
                        let target = reference
                            .strip_prefix('#')
                            .and_then(|pointer| schema.pointer(pointer));
                        if let Some(target) = target {
                            refs.entry(reference.clone())
                                .or_insert_with(|| target.clone());
                        }
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        StringFields {
            refs: Arc::new(refs),
            schema,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }

    /// The same parser with another limit on field-path depth (key segments plus nesting).
    pub(crate) fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth.max(1);
        self
    }

    /// The deepest field path a value may set.
    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Parses `raw` for the field at `path` (empty for the root document): empty is `null`;
    /// YAML, a superset of JSON, otherwise. A number or bool where the schema accepts only a
    /// string keeps the text as written, at any depth of a document. Refused: invalid UTF-8,
    /// invalid YAML or JSON, several documents, a mapping with a key twice, `.nan`/`.inf`,
    /// unsupported tags, nesting that takes the field path past the depth limit, more nodes than
    /// the text's length in bytes plus 4096, and aliases that add more than a quarter of that
    /// length plus 4096 nodes.
    pub(crate) fn parse_for(&self, path: &[&str], raw: &[u8]) -> Result<Value, String> {
        self.parse_with(path, raw, &mut Lookups::default())
    }

    /// [`parse_for`](Self::parse_for), with the schema lookups of the values parsed before
    /// (`lookups`, one per thread, for values parsed one after another) taken as done.
    pub(crate) fn parse_with<'a>(
        &'a self,
        path: &[&str],
        raw: &[u8],
        lookups: &mut Lookups<'a>,
    ) -> Result<Value, String> {
        if path.len() > self.max_depth {
            return Err(format!(
                "field path has {} segments, over the limit of {}",
                path.len(),
                self.max_depth
            ));
        }
        let text =
            std::str::from_utf8(raw).map_err(|e| format!("value is not valid UTF-8: {e}"))?;
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Ok(Value::Null);
        }
        let node = lookups.node_at(self, path);
        // Fast path for the most common values, which YAML reads the same way: a decimal
        // integer without a leading zero, and `true` / `false`.
        if let Some(v) = plain_scalar(text) {
            if node.is_some_and(|n| lookups.string_only(self, n)) {
                return Ok(Value::String(text.to_string()));
            }
            return Ok(v);
        }
        let depth = self.max_depth - path.len();
        // A plain word or a one-line flow mapping of plain words, read as YAML reads them.
        if let Some(v) = simple(text, self, node, depth, lookups) {
            return Ok(v);
        }
        // JSON documents: serde_json is linear and fast; it is used where its result needs no
        // text kept as written, and YAML (which reads JSON too, tabs included) otherwise.
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(Strict(v)) = serde_json::from_str::<Strict>(text) {
                if let Some(true) = self.json_is_final(&v, node, depth) {
                    return Ok(v);
                }
            }
        }
        let budget = Budget {
            depth,
            nodes: text.len().saturating_add(NODE_ALLOWANCE),
            alias_nodes: (text.len() / 4).saturating_add(NODE_ALLOWANCE),
            depth_limit: self.max_depth,
        };
        yaml::parse(text, self, node, budget).map_err(|e| format!("invalid YAML/JSON: {e}"))
    }

    /// Whether a value parsed as JSON can be used as it is: `Some(true)` if it is within the
    /// depth limit and holds no number or bool where the schema wants a string (that needs the
    /// text as written, which only the YAML path keeps); `None` if it is too deep (the YAML
    /// path then reports where).
    fn json_is_final(&self, value: &Value, node: Option<&Value>, depth: usize) -> Option<bool> {
        let mut stack = vec![(value, node, 0usize)];
        while let Some((value, node, level)) = stack.pop() {
            match value {
                Value::Number(_) | Value::Bool(_) => {
                    if node.is_some_and(|n| self.is_string_only(n)) {
                        return Some(false);
                    }
                }
                Value::Array(items) => {
                    if level + 1 > depth {
                        return None;
                    }
                    let item = node.and_then(|n| self.item(n));
                    stack.extend(items.iter().map(|v| (v, item, level + 1)));
                }
                Value::Object(map) => {
                    if level + 1 > depth {
                        return None;
                    }
                    for (k, v) in map {
                        stack.push((v, node.and_then(|n| self.child(n, k, 0)), level + 1));
                    }
                }
                Value::Null | Value::String(_) => {}
            }
        }
        Some(true)
    }

    /// The bound type's JSON Schema.
    pub(crate) fn schema(&self) -> &Value {
        &self.schema
    }

    /// The declared fields of `node` if it is a struct's schema (an object schema with
    /// `properties` and no schema for other keys), following `$ref` and the one non-null branch
    /// of an `Option`. `None` where any key is allowed or the shape is not clear.
    pub(crate) fn struct_properties<'a>(
        &'a self,
        node: &'a Value,
    ) -> Option<&'a serde_json::Map<String, Value>> {
        let mut node = self.resolve(node, 0)?;
        for _ in 0..8 {
            if let Some(properties) = node.get("properties").and_then(Value::as_object) {
                let open = matches!(
                    node.get("additionalProperties"),
                    Some(Value::Bool(true) | Value::Object(_))
                );
                if open || node.get("patternProperties").is_some() {
                    return None;
                }
                return Some(properties);
            }
            let branches = node.get("anyOf").and_then(Value::as_array)?;
            let mut non_null = branches
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"));
            let (Some(one), None) = (non_null.next(), non_null.next()) else {
                return None;
            };
            node = self.resolve(one, 0)?;
        }
        None
    }

    /// The schema node at a field path, if the schema describes it.
    fn node_at(&self, path: &[&str]) -> Option<&Value> {
        let mut node = &self.schema;
        for segment in path {
            node = self.child(node, segment, 0)?;
        }
        Some(node)
    }

    /// Whether a number or bool at `node` should be kept as text.
    pub(crate) fn is_string_only(&self, node: &Value) -> bool {
        self.only_string(node, 0)
    }

    /// The schema of the items of the array schema `node`.
    pub(crate) fn item<'a>(&'a self, node: &'a Value) -> Option<&'a Value> {
        let node = self.resolve(node, 0)?;
        if let Some(items) = node.get("items").filter(|v| v.is_object()) {
            return Some(items);
        }
        for combinator in ["anyOf", "oneOf"] {
            if let Some(branches) = node.get(combinator).and_then(Value::as_array) {
                let mut found = branches.iter().filter_map(|b| self.item(b));
                if let (Some(one), None) = (found.next(), found.next()) {
                    return Some(one);
                }
            }
        }
        None
    }

    /// `node` with its `$ref` followed (itself if it has none); `None` for a reference the
    /// schema does not hold.
    pub(crate) fn resolved<'a>(&'a self, node: &'a Value) -> Option<&'a Value> {
        self.resolve(node, 0)
    }

    fn resolve<'a>(&'a self, node: &'a Value, depth: usize) -> Option<&'a Value> {
        if depth > 32 {
            return None;
        }
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let target = self.refs.get(reference)?;
                self.resolve(target, depth + 1)
            }
            None => Some(node),
        }
    }

    /// The schema of field `segment` of the object schema `node`.
    pub(crate) fn child<'a>(
        &'a self,
        node: &'a Value,
        segment: &str,
        depth: usize,
    ) -> Option<&'a Value> {
        let node = self.resolve(node, depth)?;
        if let Some(found) = node.get("properties").and_then(|p| p.get(segment)) {
            return Some(found);
        }
        if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
            return Some(extra);
        }
        // `Option<Struct>` is `anyOf: [{$ref}, {type: null}]`: follow the one non-null branch.
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(branches) = node.get(combinator).and_then(Value::as_array) {
                let mut found = branches
                    .iter()
                    .filter_map(|b| self.child(b, segment, depth + 1));
                if let (Some(one), None) = (found.next(), found.next()) {
                    return Some(one);
                }
            }
        }
        None
    }

    fn only_string(&self, node: &Value, depth: usize) -> bool {
        let Some(node) = self.resolve(node, depth) else {
            return false;
        };
        match node.get("type") {
            Some(Value::String(t)) => t == "string",
            Some(Value::Array(types)) => {
                let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                names.contains(&"string")
                    && !names
                        .iter()
                        .any(|t| matches!(*t, "number" | "integer" | "boolean"))
            }
            _ => ["anyOf", "oneOf"].iter().any(|c| {
                node.get(*c)
                    .and_then(Value::as_array)
                    .is_some_and(|branches| {
                        let non_null: Vec<&Value> = branches
                            .iter()
                            .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                            .collect();
                        non_null.len() == 1 && self.only_string(non_null[0], depth + 1)
                    })
            }),
        }
    }
}

/// Schema lookups remembered from one parsed value to the next. Keys read in order mostly share
/// their parent's schema node (every entry of a map has the same one), and the values of one
/// map are mappings with the same fields, so most of the schema walk for a value was done for
/// the value before. Each answer is what [`StringFields`] gives without it; the lookups of one
/// `StringFields` only.
#[derive(Default)]
pub(crate) struct Lookups<'a> {
    /// The last key's parent path (all but its last segment) and that path's schema node.
    parent: Option<(Vec<String>, Option<&'a Value>)>,
    /// The last mapping node whose fields were looked up, and for each field asked about
    /// whether a number or bool there is kept as text.
    mapping: Option<(&'a Value, Vec<(String, bool)>)>,
    /// The last node asked whether it keeps numbers and bools as text, and the answer.
    string_only: Option<(&'a Value, bool)>,
}

/// Fields of one mapping node remembered at most (a mapping with more is looked up as usual
/// past them).
const REMEMBERED_FIELDS: usize = 32;

impl<'a> Lookups<'a> {
    /// The schema node of the field at `path`, as [`StringFields::node_at`] gives it.
    fn node_at(&mut self, fields: &'a StringFields, path: &[&str]) -> Option<&'a Value> {
        let Some((last, parents)) = path.split_last() else {
            return Some(&fields.schema);
        };
        let parent = match &self.parent {
            Some((at, node)) if at.iter().map(String::as_str).eq(parents.iter().copied()) => *node,
            _ => {
                let node = fields.node_at(parents);
                self.parent = Some((parents.iter().map(|s| s.to_string()).collect(), node));
                node
            }
        };
        fields.child(parent?, last, 0)
    }

    /// Whether a number or bool at `node` is kept as text, as
    /// [`StringFields::is_string_only`] says.
    pub(crate) fn string_only(&mut self, fields: &'a StringFields, node: &'a Value) -> bool {
        match self.string_only {
            Some((at, only)) if std::ptr::eq(at, node) => only,
            _ => {
                let only = fields.is_string_only(node);
                self.string_only = Some((node, only));
                only
            }
        }
    }

    /// Whether a number or bool in field `key` of the mapping whose schema is `node` is kept as
    /// text: the field's schema is `node`'s child `key` once `node`'s `$ref` is followed.
    pub(crate) fn field_string_only(
        &mut self,
        fields: &'a StringFields,
        node: &'a Value,
        key: &str,
    ) -> bool {
        if !matches!(&self.mapping, Some((at, _)) if std::ptr::eq(*at, node)) {
            self.mapping = Some((node, Vec::new()));
        }
        let Some((_, known)) = self.mapping.as_mut() else {
            unreachable!("set just above");
        };
        if let Some((_, only)) = known.iter().find(|(field, _)| field == key) {
            return *only;
        }
        let only = fields
            .resolved(node)
            .and_then(|n| fields.child(n, key, 0))
            .is_some_and(|child| fields.is_string_only(child));
        if known.len() < REMEMBERED_FIELDS {
            known.push((key.to_string(), only));
        }
        only
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(raw: &[u8]) -> Result<Value, String> {
        StringFields::new(json!({})).parse_for(&[], raw)
    }

    #[test]
    fn yaml_scalars_documents_and_json_parse() {
        assert_eq!(parse(b"8080").unwrap(), json!(8080));
        assert_eq!(parse(b"true").unwrap(), json!(true));
        assert_eq!(parse(b"hello world").unwrap(), json!("hello world"));
        assert_eq!(parse(b"").unwrap(), Value::Null);
        assert_eq!(parse(b"{\n\t\"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(
            parse(b"a: 1\nb: [x, y]\n").unwrap(),
            json!({"a": 1, "b": ["x", "y"]})
        );
        assert!(parse(b"a: [1, 2").is_err());
        assert!(parse(b"{a: 1, a: 2}")
            .unwrap_err()
            .contains("duplicate key `a`"));
        assert!(parse(br#"{"a": 1, "a": 2}"#)
            .unwrap_err()
            .contains("duplicate key"));
        assert!(parse(b".nan").unwrap_err().contains("not a finite number"));
        assert!(parse(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Values parsed one after another with shared lookups read as each does alone, for
        /// paths and mappings that share schema nodes, differ in them, and have none.
        #[test]
        fn shared_lookups_read_as_fresh_ones(
            picks in proptest::collection::vec((0usize..9, 0usize..8), 1..60),
        ) {
            let f = StringFields::new(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "port": {"type": "integer"},
                    "db": {"$ref": "#/$defs/Db"},
                    "items": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Item"}},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    "maybe": {"anyOf": [{"$ref": "#/$defs/Db"}, {"type": "null"}]}
                },
                "$defs": {
                    "Db": {"type": "object", "properties": {"password": {"type": "string"}}},
                    "Item": {"type": "object", "properties": {
                        "label": {"type": "string"}, "weight": {"type": "integer"}
                    }}
                }
            }));
            let paths: [&[&str]; 9] = [
                &["items", "a"], &["items", "b"], &["tags", "x"], &["db"], &["db", "password"],
                &["maybe", "password"], &["name"], &["unknown", "deep"], &[],
            ];
            let raws: [&[u8]; 8] = [
                b"1.10", b"{weight: 1, label: 0123}", b"{label: true, password: 7}", b"true",
                b"0123", b"{password: 1.5}", b"hello world", b"port: 1\nname: 2\n",
            ];
            let mut lookups = Lookups::default();
            for (path, raw) in picks {
                let shared = f.parse_with(paths[path], raws[raw], &mut lookups);
                proptest::prop_assert_eq!(shared, f.parse_for(paths[path], raws[raw]));
            }
        }
    }

    #[test]
    fn string_fields_keep_their_text() {
        let schema = json!({
            "type": "object",
            "properties": {
                "version": {"type": "string"},
                "port": {"type": "integer"},
                "nick": {"type": ["string", "null"]},
                "db": {"$ref": "#/$defs/Db"},
                "maybe": {"anyOf": [{"$ref": "#/$defs/Db"}, {"type": "null"}]}
            },
            "$defs": {"Db": {"type": "object", "properties": {"password": {"type": "string"}}}}
        });
        let f = StringFields::new(schema);
        assert_eq!(f.parse_for(&["version"], b"1.10").unwrap(), json!("1.10"));
        assert_eq!(f.parse_for(&["port"], b"1.10").unwrap(), json!(1.1));
        assert_eq!(f.parse_for(&["nick"], b"true").unwrap(), json!("true"));
        assert_eq!(f.parse_for(&["nick"], b"~").unwrap(), json!(null));
        assert_eq!(
            f.parse_for(&["db", "password"], b"0123").unwrap(),
            json!("0123")
        );
        assert_eq!(
            f.parse_for(&["maybe", "password"], b"12").unwrap(),
            json!("12")
        );
        assert_eq!(f.parse_for(&["unknown"], b"12").unwrap(), json!(12));
        // Inside documents too, JSON or YAML.
        assert_eq!(
            f.parse_for(&["db"], br#"{"password": 1.10}"#).unwrap(),
            json!({"password": "1.10"})
        );
        assert_eq!(
            f.parse_for(&[], b"version: 2.0\nport: 1\n").unwrap(),
            json!({"version": "2.0", "port": 1})
        );
    }

    #[test]
    fn depth_counts_key_segments_and_nesting() {
        let f = StringFields::new(json!({})).with_max_depth(4);
        assert!(f.parse_for(&["a", "b"], b"{c: {d: 1}}").is_ok());
        let err = f.parse_for(&["a", "b"], b"{c: {d: {e: 1}}}").unwrap_err();
        assert!(err.contains("limit of 4 levels"), "{err}");
        let err = f
            .parse_for(&["a", "b"], br#"{"c": {"d": {"e": 1}}}"#)
            .unwrap_err();
        assert!(err.contains("limit of 4 levels"), "{err}");
        let err = f.parse_for(&["a", "b", "c", "d", "e"], b"1").unwrap_err();
        assert!(err.contains("5 segments, over the limit of 4"), "{err}");
    }
}
