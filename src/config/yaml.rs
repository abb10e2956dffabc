//! YAML text (and so JSON, which is YAML's flow style) to a JSON value, built from the YAML
//! parser's events under limits.
//!
//! The events come from `yaml-rust2`'s pull parser, which stops at the first event past a
//! limit: a value nested 40,000 deep, an alias bomb or a mapping with one key twice is refused
//! after reading only what proves it, never after seconds of parsing. The tree is built with an
//! explicit stack (no recursion), and every node counts against a budget, aliases included.
//!
//! Plain scalars are resolved by YAML 1.2's core schema, as `serde_yaml` does: `~`, `null` and
//! empty are null; `true`/`false` (and their `True`/`TRUE` spellings) are bools; decimal,
//! `0x`, `0o` and `0b` integers; decimals and exponents are floats; a leading zero (`0123`) is a
//! string. `.inf` and `.nan` are refused (JSON cannot hold them). Where the bound type's schema
//! says a node is a string, a plain scalar that would resolve to a number or bool keeps the text
//! as written (`1.10` stays `"1.10"`).

use std::collections::HashMap;

use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::value::StringFields;

/// How deep and how large one parsed value may be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Nesting levels the value may have (a scalar is 0, `[1]` is 1).
    pub(crate) depth: usize,
    /// The most nodes (scalars, sequences, mappings) the value may hold, aliases expanded.
    pub(crate) nodes: usize,
    /// The most nodes aliases may add (each alias adds the nodes of its anchor).
    pub(crate) alias_nodes: usize,
    /// The limit to name in a depth error (the configured maximum field-path depth).
    pub(crate) depth_limit: usize,
}

/// A collection being built.
enum Frame<'s> {
    Seq {
        items: Vec<Value>,
        node: Option<&'s Value>,
        anchor: usize,
        first_node: usize,
        height: usize,
    },
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        node: Option<&'s Value>,
        anchor: usize,
        first_node: usize,
        height: usize,
    },
}

/// A finished anchored node, kept for its aliases.
struct Anchored {
    value: Value,
    nodes: usize,
    height: usize,
}

/// Parses `text` as one YAML document. `node` is the schema of the value's place in the bound
/// type (if known), used to keep string fields' text as written.
pub(crate) fn parse(
    text: &str,
    fields: &StringFields,
    node: Option<&Value>,
    budget: Budget,
) -> Result<Value, String> {
    Builder {
        fields,
        budget,
        nodes: 0,
        alias_nodes: 0,
        stack: Vec::new(),
        anchors: HashMap::new(),
    }
    .run(text, node)
}

struct Builder<'s> {
    fields: &'s StringFields,
    budget: Budget,
    nodes: usize,
    alias_nodes: usize,
    stack: Vec<Frame<'s>>,
    anchors: HashMap<usize, Anchored>,
}

fn at(mark: &Marker) -> String {
    format!("at line {} column {}", mark.line(), mark.col() + 1)
}

impl Builder<'_> {
    /// Where the parser is: the field path inside the value (if any) and the line and column.
    fn at(&self, mark: &Marker) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            let segment = match frame {
                Frame::Seq { items, .. } => items.len().to_string(),
                Frame::Map { key: Some(k), .. } => k.clone(),
                Frame::Map { key: None, .. } => break,
            };
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
        if path.is_empty() {
            at(mark)
        } else {
            format!(
                "at `{path}`, line {} column {}",
                mark.line(),
                mark.col() + 1
            )
        }
    }
}

impl<'s> Builder<'s> {
    fn run(mut self, text: &str, root: Option<&'s Value>) -> Result<Value, String> {
        let mut parser = Parser::new_from_str(text);
        let mut result: Option<Value> = None;
        let mut documents = 0;
        loop {
            let (event, mark) = parser.next_token().map_err(|e| self.scan_error(&e))?;
            match event {
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(format!(
                            "more than one YAML document (`---`) {}; a value holds one",
                            self.at(&mark)
                        ));
                    }
                }
                Event::Alias(id) => {
                    let Some(anchored) = self.anchors.get(&id) else {
                        return Err(format!("unknown alias {}", self.at(&mark)));
                    };
                    let (nodes, height) = (anchored.nodes, anchored.height);
                    self.alias_nodes += nodes;
                    if self.alias_nodes > self.budget.alias_nodes {
                        return Err(format!(
                            "the value expands to more than {} nodes through aliases {}",
                            self.budget.alias_nodes,
                            self.at(&mark)
                        ));
                    }
                    self.count(nodes, &mark)?;
                    if self.stack.len() + height > self.budget.depth {
                        return Err(self.too_deep(&mark));
                    }
                    let value = self.anchors[&id].value.clone();
                    self.finish(value, height, &mark, &mut result)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    self.count(1, &mark)?;
                    let node = self.node_here(root);
                    let value = self.scalar(text, style, tag.as_ref(), node, &mark)?;
                    if anchor != 0 {
                        self.anchors.insert(
                            anchor,
                            Anchored {
                                value: value.clone(),
                                nodes: 1,
                                height: 0,
                            },
                        );
                    }
                    self.finish(value, 0, &mark, &mut result)?;
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    let is_seq = matches!(event, Event::SequenceStart(..));
                    if let Some(tag) = tag.as_ref() {
                        let want = if is_seq { "seq" } else { "map" };
                        if !is_core(tag, want) {
                            return Err(unsupported(tag, &mark));
                        }
                    }
                    self.count(1, &mark)?;
                    if self.stack.len() + 1 > self.budget.depth {
                        return Err(self.too_deep(&mark));
                    }
                    let node = self.node_here(root);
                    let first_node = self.nodes;
                    self.stack.push(if is_seq {
                        Frame::Seq {
                            items: Vec::new(),
                            node,
                            anchor,
                            first_node,
                            height: 0,
                        }
                    } else {
                        Frame::Map {
                            map: Map::new(),
                            key: None,
                            node,
                            anchor,
                            first_node,
                            height: 0,
                        }
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (value, anchor, first_node, height) = match self.stack.pop() {
                        Some(Frame::Seq {
                            items,
                            anchor,
                            first_node,
                            height,
                            ..
                        }) => (Value::Array(items), anchor, first_node, height + 1),
                        Some(Frame::Map {
                            map,
                            anchor,
                            first_node,
                            height,
                            ..
                        }) => (Value::Object(map), anchor, first_node, height + 1),
                        None => return Err(format!("unbalanced YAML {}", self.at(&mark))),
                    };
                    if anchor != 0 {
                        self.anchors.insert(
                            anchor,
                            Anchored {
                                value: value.clone(),
                                nodes: self.nodes - first_node + 1,
                                height,
                            },
                        );
                    }
                    self.finish(value, height, &mark, &mut result)?;
                }
            }
        }
        Ok(result.unwrap_or(Value::Null))
    }

    fn count(&mut self, nodes: usize, mark: &Marker) -> Result<(), String> {
        self.nodes += nodes;
        if self.nodes > self.budget.nodes {
            return Err(format!(
                "the value expands to more than {} nodes (aliases included) {}",
                self.budget.nodes,
                self.at(mark)
            ));
        }
        Ok(())
    }

    /// The scanner's error as text. The scanner reads ahead of the parser and gives up past
    /// 255 nested flow collections; that is nesting past the depth limit too (which is below
    /// it unless configured higher), so it is reported as such.
    fn scan_error(&self, e: &yaml_rust2::ScanError) -> String {
        if e.info() != "recursion limit exceeded" {
            return e.to_string();
        }
        if self.budget.depth_limit < 255 {
            return self.too_deep(e.marker());
        }
        format!(
            "nested deeper than 255 flow collections, the most the YAML parser reads {}",
            at(e.marker())
        )
    }

    fn too_deep(&self, mark: &Marker) -> String {
        format!(
            "nested deeper than the limit of {} levels (key segments and document nesting together) {}",
            self.budget.depth_limit,
            self.at(mark)
        )
    }

    /// The schema node of the value that comes next: the root, an item of the sequence being
    /// built, or the value of the mapping key just read. `None` for a mapping key itself.
    fn node_here(&self, root: Option<&'s Value>) -> Option<&'s Value> {
        match self.stack.last() {
            None => root,
            Some(Frame::Seq { node, .. }) => node.and_then(|n| self.fields.item(n)),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                key: Some(key),
                node,
                ..
            }) => node.and_then(|n| self.fields.child(n, key, 0)),
        }
    }

    /// Hands a finished node to its parent (or makes it the result).
    fn finish(
        &mut self,
        value: Value,
        height: usize,
        mark: &Marker,
        result: &mut Option<Value>,
    ) -> Result<(), String> {
        match self.stack.last_mut() {
            None => *result = Some(value),
            Some(Frame::Seq {
                items, height: h, ..
            }) => {
                *h = (*h).max(height);
                items.push(value);
            }
            Some(Frame::Map {
                map,
                key,
                height: h,
                ..
            }) => match key.take() {
                None => match value {
                    Value::String(k) => *key = Some(k),
                    Value::Bool(_) | Value::Number(_) | Value::Null => {
                        // `1: a` or `true: b`: the key's text, as `serde_yaml` gives it.
                        *key = Some(scalar_text(&value));
                    }
                    _ => {
                        return Err(format!(
                            "a mapping key must be a scalar, not a sequence or mapping {}",
                            self.at(mark)
                        ))
                    }
                },
                Some(k) => {
                    *h = (*h).max(height);
                    if map.contains_key(&k) {
                        return Err(format!(
                            "duplicate key `{k}` in a mapping {}",
                            self.at(mark)
                        ));
                    }
                    map.insert(k, value);
                }
            },
        }
        Ok(())
    }

    fn scalar(
        &self,
        text: String,
        style: TScalarStyle,
        tag: Option<&Tag>,
        node: Option<&Value>,
        mark: &Marker,
    ) -> Result<Value, String> {
        let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        if let Some(tag) = tag {
            let suffix = core_suffix(tag).ok_or_else(|| unsupported(tag, mark))?;
            return match suffix {
                "str" => Ok(Value::String(text)),
                "null" | "bool" | "int" | "float" => {
                    let value =
                        resolve_plain(&text).map_err(|e| format!("{e} {}", self.at(mark)))?;
                    let fits = match suffix {
                        "null" => value.is_null(),
                        "bool" => value.is_boolean(),
                        "int" => value.is_i64() || value.is_u64(),
                        _ => value.is_number(),
                    };
                    if fits {
                        Ok(value)
                    } else {
                        Err(format!(
                            "`{text}` is not a valid !!{suffix} {}",
                            self.at(mark)
                        ))
                    }
                }
                _ => Err(unsupported(tag, mark)),
            };
        }
        if style != TScalarStyle::Plain {
            return Ok(Value::String(text));
        }
        if is_key {
            return Ok(Value::String(text));
        }
        let value = resolve_plain(&text).map_err(|e| format!("{e} {}", self.at(mark)))?;
        if matches!(value, Value::Number(_) | Value::Bool(_))
            && node.is_some_and(|n| self.fields.is_string_only(n))
        {
            return Ok(Value::String(text));
        }
        Ok(value)
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// `str` for `!!str` (either spelling of the core tag handle), `None` for any other tag.
fn core_suffix(tag: &Tag) -> Option<&str> {
    match tag.handle.as_str() {
        "!!" | "tag:yaml.org,2002:" => Some(tag.suffix.as_str()),
        _ => None,
    }
}

fn is_core(tag: &Tag, want: &str) -> bool {
    core_suffix(tag) == Some(want)
}

fn unsupported(tag: &Tag, mark: &Marker) -> String {
    format!(
        "YAML tag `{}{}` is not supported (only the core tags !!str, !!int, !!float, !!bool, !!null, !!seq, !!map) {}",
        tag.handle,
        tag.suffix,
        at(mark)
    )
}

/// A plain scalar by YAML 1.2's core schema (the rules `serde_yaml` follows).
pub(crate) fn resolve_plain(text: &str) -> Result<Value, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return Ok(n);
    }
    if leading_zero_digits(text) {
        return Ok(Value::String(text.to_string()));
    }
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if unsigned.starts_with(['+', '-']) && text.starts_with('+') {
        return Ok(Value::String(text.to_string()));
    }
    let lower = unsigned.strip_prefix('-').unwrap_or(unsigned);
    if matches!(lower, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN") {
        return Err(format!("`{text}` is not a finite number"));
    }
    if looks_like_float(unsigned) {
        if let Ok(f) = unsigned.parse::<f64>() {
            return match serde_json::Number::from_f64(f) {
                Some(n) => Ok(Value::Number(n)),
                None => Err(format!("`{text}` is not a finite number")),
            };
        }
    }
    Ok(Value::String(text.to_string()))
}

/// Decimal, `0x`, `0o` and `0b` integers with an optional sign that fit `i64` or `u64`.
fn parse_int(text: &str) -> Option<Value> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b") {
        (2, d)
    } else {
        if body.len() > 1 && body.starts_with('0') {
            return None;
        }
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            Some(Value::from((magnitude as i128).wrapping_neg() as i64))
        } else {
            None
        }
    } else {
        Some(Value::from(magnitude))
    }
}

/// `0123` or `-007`: digits with a leading zero, a string in YAML 1.2.
fn leading_zero_digits(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit())
}

/// YAML 1.2 core float syntax: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn looks_like_float(text: &str) -> bool {
    let s = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let mut i = 0;
    let int_digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budget() -> Budget {
        Budget {
            depth: 64,
            nodes: 10_000,
            alias_nodes: 5_000,
            depth_limit: 64,
        }
    }

    fn yaml(text: &str) -> Result<Value, String> {
        parse(text, &StringFields::new(json!({})), None, budget())
    }

    #[test]
    fn resolves_like_serde_yaml() {
        for text in [
            "8080", "-7", "0", "1.5", "1e3", "-2.5E-3", ".5", "0x1f", "0o17", "0b101", "true",
            "False", "~", "null", "", "hello", "yes", "0123", "+1", "1.10", "-0", "1_000", "1.2.3",
            "--1", "+-1", "0x", "1e", ".",
        ] {
            let ours = resolve_plain(text).unwrap();
            let theirs: Value = serde_yaml::from_str(if text.is_empty() { "~" } else { text })
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(ours, theirs, "`{text}`");
        }
        assert!(resolve_plain(".nan").unwrap_err().contains("finite"));
        assert!(resolve_plain("-.inf").unwrap_err().contains("finite"));
    }

    #[test]
    fn documents_sequences_anchors() {
        assert_eq!(
            yaml("a: 1\nb: [x, {c: 2}]\nd: &d {e: 3}\nf: *d\n").unwrap(),
            json!({"a": 1, "b": ["x", {"c": 2}], "d": {"e": 3}, "f": {"e": 3}})
        );
        assert_eq!(
            yaml("{\"a\": [1, 2.5, null]}").unwrap(),
            json!({"a": [1, 2.5, null]})
        );
        assert_eq!(yaml("'8080'").unwrap(), json!("8080"));
        assert_eq!(yaml("!!str 8080").unwrap(), json!("8080"));
        assert_eq!(yaml("1: a").unwrap(), json!({"1": "a"}));
        assert!(yaml("!custom x").unwrap_err().contains("not supported"));
        assert!(yaml("{a: 1, a: 2}")
            .unwrap_err()
            .contains("duplicate key `a`"));
        assert!(yaml("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .contains("more than one YAML document"));
        assert!(yaml("[a, [b]").is_err());
        assert!(yaml("? [a]\n: 1\n").unwrap_err().contains("mapping key"));
    }

    #[test]
    fn limits_stop_parsing_early() {
        let deep = format!("{}{}", "[".repeat(40_000), "]".repeat(40_000));
        assert!(yaml(&deep).unwrap_err().contains("limit of 64 levels"));
        // The scanner gives up past 255 flow levels before the parser sees level 65: that is
        // reported as the depth limit too.
        let deep = format!("{}1{}", "{a: ".repeat(10_000), "}".repeat(10_000));
        let err = yaml(&deep).unwrap_err();
        assert!(err.contains("limit of 64 levels"), "{err}");
        let deep = format!("{}x\n", "- ".repeat(100));
        assert!(yaml(&deep).unwrap_err().contains("limit of 64 levels"));
        let ok = format!("{}x{}", "[".repeat(64), "]".repeat(64));
        assert!(yaml(&ok).is_ok());
        let over = format!("{}x{}", "[".repeat(65), "]".repeat(65));
        assert!(yaml(&over).unwrap_err().contains("limit of 64 levels"));

        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 1..9 {
            let prev = if i == 1 {
                "a".to_string()
            } else {
                format!("a{}", i - 1)
            };
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
        }
        assert!(yaml(&bomb)
            .unwrap_err()
            .contains("more than 5000 nodes through aliases"));

        // An alias may not carry a deep anchor past the depth limit.
        let nested = format!("a: &a {}x{}\nb: [[*a]]\n", "[".repeat(62), "]".repeat(62));
        assert!(yaml(&nested).unwrap_err().contains("limit of 64 levels"));
    }

    #[test]
    fn string_fields_keep_text_inside_documents() {
        let schema = json!({
            "type": "object",
            "properties": {
                "version": {"type": "string"},
                "port": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "db": {"$ref": "#/$defs/Db"}
            },
            "$defs": {"Db": {"type": "object", "properties": {"password": {"type": "string"}}}}
        });
        let fields = StringFields::new(schema.clone());
        let v = parse(
            "version: 1.10\nport: 8080\ntags: [1.0, true, x]\ndb: {password: 0123}\nother: 1.10\nnone: null",
            &fields,
            Some(&schema),
            budget(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"version": "1.10", "port": 8080, "tags": ["1.0", "true", "x"],
                   "db": {"password": "0123"}, "other": 1.1, "none": null})
        );
    }
}
