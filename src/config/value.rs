//! Parsing one raw value (an etcd value or an environment variable) into JSON.
//!
//! Values are YAML, a superset of JSON, so `8080`, `true`, `[1, 2]`, `{"a": 1}`, a YAML block and
//! a bare word all work the way `etcdctl put` users expect. Where the bound type's JSON Schema
//! says a field is a string (and not a number or bool), a value that YAML would read as a number
//! or bool is kept as the text written: `version: 1.10` stays `"1.10"`, `password: 0123` stays
//! `"0123"`.

use serde_json::Value;

/// Parses a raw value: empty is `null`; a value starting with `{` or `[` is tried as JSON first
/// (fast, and tolerant of tabs that YAML forbids); anything else is YAML.
pub(crate) fn parse(raw: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("value is not valid UTF-8: {e}"))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(Value::Null);
    }
    // Fast path for the most common values, which YAML reads the same way: a decimal integer
    // without a leading zero, and `true` / `false`.
    if let Some(v) = plain_scalar(text) {
        return Ok(v);
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(Strict(v)) = serde_json::from_str::<Strict>(text) {
            return Ok(v);
        }
    }
    serde_yaml::from_str::<Strict>(text)
        .map(|Strict(v)| v)
        .map_err(|e| format!("invalid YAML/JSON: {e}"))
}

/// `Some` for text that is exactly a decimal integer without a leading zero (fits i64 or u64),
/// `true` or `false`: what YAML would make of it, without running the YAML parser.
fn plain_scalar(text: &str) -> Option<Value> {
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !plain {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::from(n));
    }
    text.parse::<u64>().ok().map(Value::from)
}

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

/// Knows which field paths of the bound type are strings, from its JSON Schema.
#[derive(Clone, Debug)]
pub(crate) struct StringFields {
    schema: Value,
}

impl StringFields {
    pub(crate) fn new(schema: Value) -> Self {
        StringFields { schema }
    }

    /// Parses `raw` for the field at `path`, keeping the text of a number or bool where the
    /// schema accepts only strings there.
    pub(crate) fn parse_for(&self, path: &[&str], raw: &[u8]) -> Result<Value, String> {
        let parsed = parse(raw)?;
        if matches!(parsed, Value::Number(_) | Value::Bool(_)) && self.wants_string(path) {
            // `parse` succeeded, so the text is valid UTF-8.
            return Ok(Value::String(
                String::from_utf8_lossy(raw).trim().to_string(),
            ));
        }
        Ok(parsed)
    }

    fn wants_string(&self, path: &[&str]) -> bool {
        let mut node = &self.schema;
        for segment in path {
            match self.child(node, segment, 0) {
                Some(next) => node = next,
                None => return false,
            }
        }
        self.only_string(node, 0)
    }

    fn resolve<'a>(&'a self, node: &'a Value, depth: usize) -> Option<&'a Value> {
        if depth > 32 {
            return None;
        }
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#')?;
                let target = self.schema.pointer(pointer)?;
                self.resolve(target, depth + 1)
            }
            None => Some(node),
        }
    }

    /// The schema of field `segment` of the object schema `node`.
    fn child<'a>(&'a self, node: &'a Value, segment: &str, depth: usize) -> Option<&'a Value> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn fast_path_agrees_with_yaml() {
        for text in [
            "0",
            "7",
            "-7",
            "8080",
            "18446744073709551615",
            "-9223372036854775808",
            "true",
            "false",
        ] {
            let yaml: Value = serde_yaml::from_str(text).unwrap();
            assert_eq!(plain_scalar(text), Some(yaml), "{text}");
        }
        for text in [
            "007", "-0", "1.5", "1e3", "0x10", "+1", "True", " 1", "1 ", "-",
        ] {
            assert_eq!(plain_scalar(text), None, "{text}");
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
        assert_eq!(
            f.parse_for(&["db", "password"], b"0123").unwrap(),
            json!("0123")
        );
        assert_eq!(
            f.parse_for(&["maybe", "password"], b"12").unwrap(),
            json!("12")
        );
        assert_eq!(f.parse_for(&["unknown"], b"12").unwrap(), json!(12));
    }
}
