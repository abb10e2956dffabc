//! Templates and reference docs from the published JSON Schema: every field with its type,
//! default, constraints, doc comment (`///` becomes the schema's `description` through
//! schemars), whether it is secret, the etcd key that sets it and the environment variable
//! that overrides it.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::history::ConfigHistory;
use crate::secrets::SecretPaths;

/// One field of a config type, from its published schema.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FieldDoc {
    /// Dotted path, `database.pool`.
    pub path: String,
    /// JSON Schema type(s), `integer`, `string|null`.
    pub kind: String,
    /// The default (serde's, as schemars publishes it), if any.
    pub default: Option<Value>,
    /// Constraints as text: `required`, `>= 1`, `<= 100`, `length <= 64`, `pattern ^a`, `one of …`.
    pub constraints: Vec<String>,
    /// The field's doc comment.
    pub description: Option<String>,
    /// Whether the field is secret.
    pub secret: bool,
    /// Whether the type requires it (no serde default).
    pub required: bool,
    /// The etcd key that sets it (namespace included): `/apps/chat/config/database/pool`.
    pub etcd_key: String,
    /// The environment variable that overrides it (`CHAT_DATABASE__POOL`), when the service
    /// reads an environment layer.
    pub env_var: Option<String>,
}

/// An object schema's node: the property's own schema with `$ref` resolved.
fn resolve<'a>(root: &'a Value, node: &'a Value, depth: usize) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Object(map) = node else {
        return out;
    };
    if depth < 32 {
        if let Some(target) = map
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        {
            out = resolve(root, target, depth + 1);
        }
        // `Option<Struct>`: anyOf [{$ref}, {type: null}].
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = map.get(key).and_then(Value::as_array) {
                let objects: Vec<Map<String, Value>> = list
                    .iter()
                    .map(|alt| resolve(root, alt, depth + 1))
                    .filter(|alt| alt.contains_key("properties"))
                    .collect();
                if objects.len() == 1 {
                    out.extend(objects[0].clone());
                }
            }
        }
    }
    for (k, v) in map {
        if k != "$ref" {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn kind_of(root: &Value, node: &Map<String, Value>) -> String {
    if let Some(t) = node.get("type") {
        return match t {
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("|"),
            Value::String(s) => s.clone(),
            _ => "any".into(),
        };
    }
    if node.contains_key("enum") {
        return "enum".into();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = node.get(key).and_then(Value::as_array) {
            let kinds: Vec<String> = list
                .iter()
                .map(|alt| kind_of(root, &resolve(root, alt, 1)))
                .collect();
            return kinds.join("|");
        }
    }
    "any".into()
}

fn constraints_of(node: &Map<String, Value>, required: bool) -> Vec<String> {
    let mut out = Vec::new();
    if required {
        out.push("required".to_string());
    }
    let num = |k: &str| node.get(k).filter(|v| v.is_number()).map(Value::to_string);
    if let Some(v) = num("minimum") {
        out.push(format!(">= {v}"));
    }
    if let Some(v) = num("exclusiveMinimum") {
        out.push(format!("> {v}"));
    }
    if let Some(v) = num("maximum") {
        out.push(format!("<= {v}"));
    }
    if let Some(v) = num("exclusiveMaximum") {
        out.push(format!("< {v}"));
    }
    if let Some(v) = num("minLength") {
        out.push(format!("length >= {v}"));
    }
    if let Some(v) = num("maxLength") {
        out.push(format!("length <= {v}"));
    }
    if let Some(v) = num("minItems") {
        out.push(format!("items >= {v}"));
    }
    if let Some(v) = num("maxItems") {
        out.push(format!("items <= {v}"));
    }
    if let Some(p) = node.get("pattern").and_then(Value::as_str) {
        out.push(format!("pattern {p}"));
    }
    if let Some(list) = node.get("enum").and_then(Value::as_array) {
        let shown: Vec<String> = list.iter().map(Value::to_string).collect();
        out.push(format!("one of {}", shown.join(", ")));
    }
    if let Some(f) = node.get("format").and_then(Value::as_str) {
        out.push(format!("format {f}"));
    }
    out
}

/// A tree of fields: leaves and objects, in schema order.
enum Node {
    Leaf(FieldDoc, Map<String, Value>),
    Object(FieldDoc, Vec<(String, Node)>),
}

struct Walk<'a> {
    root: &'a Value,
    prefix: String,
    env: Option<String>,
    secrets: &'a [String],
}

impl Walk<'_> {
    fn doc(
        &self,
        path: &[&str],
        node: &Map<String, Value>,
        required: bool,
        default: Option<Value>,
    ) -> FieldDoc {
        let dotted = path.join(".");
        FieldDoc {
            kind: kind_of(self.root, node),
            default: node.get("default").cloned().or(default),
            constraints: constraints_of(node, required),
            description: node
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            secret: SecretPaths::new(self.secrets).is_secret(&dotted),
            required,
            etcd_key: format!("{}{}", self.prefix, path.join("/")),
            env_var: self.env.as_ref().map(|p| {
                format!(
                    "{p}{}",
                    path.iter()
                        .map(|s| s.to_uppercase())
                        .collect::<Vec<_>>()
                        .join("__")
                )
            }),
            path: dotted,
        }
    }

    fn children(
        &self,
        path: &[&str],
        node: &Map<String, Value>,
        default: Option<&Value>,
        depth: usize,
    ) -> Vec<(String, Node)> {
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return out;
        };
        for (name, sub) in props {
            let mut child_path = path.to_vec();
            child_path.push(name);
            let sub = resolve(self.root, sub, 0);
            let inherited = default.and_then(|d| d.get(name)).cloned();
            let doc = self.doc(
                &child_path,
                &sub,
                required.contains(&name.as_str()),
                inherited,
            );
            let is_object = sub.contains_key("properties") && depth < 32;
            let child = if is_object {
                let own_default = doc.default.clone();
                let kids = self.children(&child_path, &sub, own_default.as_ref(), depth + 1);
                Node::Object(doc, kids)
            } else {
                Node::Leaf(doc, sub)
            };
            out.push((name.clone(), child));
        }
        out
    }
}

fn tree(history: &ConfigHistory) -> Result<Vec<(String, Node)>> {
    let Some(schema) = history.schema() else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "no JSON Schema is published at `{}`: bind the service once",
                history.schema_key()
            ),
        )
        .with_key(history.schema_key()));
    };
    let walk = Walk {
        root: schema,
        prefix: history.prefix().to_string(),
        env: history.env_prefix(),
        secrets: history.secrets(),
    };
    let top = resolve(schema, schema, 0);
    Ok(walk.children(&[], &top, top.get("default"), 0))
}

fn flatten(nodes: &[(String, Node)], out: &mut Vec<FieldDoc>) {
    for (_, node) in nodes {
        match node {
            Node::Leaf(doc, _) => out.push(doc.clone()),
            Node::Object(_, kids) => flatten(kids, out),
        }
    }
}

/// Every leaf field of the prefix's published schema, in schema order.
///
/// # Errors
/// [`ErrorKind::NotFound`] if no schema is published.
pub fn fields(history: &ConfigHistory) -> Result<Vec<FieldDoc>> {
    let mut out = Vec::new();
    flatten(&tree(history)?, &mut out);
    Ok(out)
}

/// A value that passes the field's constraints, for a template field without a default.
fn placeholder(node: &Map<String, Value>, kind: &str) -> Option<Value> {
    if let Some(first) = node
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|l| l.first())
    {
        return Some(first.clone());
    }
    let first = kind.split('|').next().unwrap_or("any");
    if kind.split('|').any(|k| k == "null") {
        return None;
    }
    Some(match first {
        "integer" | "number" => {
            if let Some(min) = node.get("minimum").filter(|v| v.is_number()) {
                min.clone()
            } else if let Some(min) = node.get("exclusiveMinimum").and_then(Value::as_f64) {
                Value::from(min.floor() as i64 + 1)
            } else {
                Value::from(0)
            }
        }
        "string" => {
            let min = node.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            Value::String("x".repeat(min))
        }
        "boolean" => Value::Bool(false),
        "array" => Value::Array(Vec::new()),
        "object" => Value::Object(Map::new()),
        _ => Value::Null,
    })
}

fn comment_lines(doc: &FieldDoc, indent: &str, out: &mut String) {
    if let Some(text) = &doc.description {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                out.push_str(&format!("{indent}#\n"));
            } else {
                out.push_str(&format!("{indent}# {line}\n"));
            }
        }
    }
    let mut facts = vec![doc.kind.clone()];
    if let Some(d) = &doc.default {
        facts.push(format!("default {d}"));
    }
    facts.extend(doc.constraints.iter().cloned());
    if doc.secret {
        facts.push("secret".into());
    }
    out.push_str(&format!("{indent}# {}\n", facts.join(", ")));
}

fn render(nodes: &[(String, Node)], current: Option<&Value>, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    for (name, node) in nodes {
        let now = current.and_then(|c| c.get(name));
        match node {
            Node::Object(doc, kids) => {
                comment_lines(doc, &indent, out);
                out.push_str(&format!("{indent}{}:\n", key_text(name)));
                render(kids, now, depth + 1, out);
            }
            Node::Leaf(doc, schema) => {
                comment_lines(doc, &indent, out);
                let value = if doc.secret {
                    None
                } else {
                    now.cloned()
                        .or_else(|| doc.default.clone())
                        .or_else(|| placeholder(schema, &doc.kind))
                };
                match value {
                    Some(v) => out.push_str(&format!("{indent}{}: {}\n", key_text(name), value_text(&v))),
                    None if doc.secret => out.push_str(&format!(
                        "{indent}# {}: \"\"   # secret: set it here (applying this file without it removes it)\n",
                        key_text(name)
                    )),
                    None => out.push_str(&format!("{indent}# {}: null\n", key_text(name))),
                }
            }
        }
    }
}

fn key_text(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        name.to_string()
    } else {
        Value::String(name.to_string()).to_string()
    }
}

/// JSON is YAML's flow style: strings are double-quoted, so `"on"` stays a string.
fn value_text(value: &Value) -> String {
    value.to_string()
}

/// A commented YAML document of every field of the prefix's published schema: each field's
/// doc comment, type, default and constraints as comments, then its value, ready to edit and
/// [`apply`](crate::history::ConfigHistory::apply). Values are `current`'s (the etcd layer's
/// document, e.g. from [`ConfigHistory::document`]) where it has them, else the default, else a
/// value that passes the constraints; secret fields are commented out (never printed).
///
/// # Errors
/// [`ErrorKind::NotFound`] if no schema is published.
pub fn template(history: &ConfigHistory, current: Option<&Value>) -> Result<String> {
    let nodes = tree(history)?;
    let mut out = format!(
        "# Config template for {} (from the published JSON Schema).\n# Edit, then: coordctl config apply {} -f FILE\n",
        history.prefix().trim_end_matches('/'),
        history.prefix().trim_end_matches('/')
    );
    render(&nodes, current, 0, &mut out);
    Ok(out)
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown reference table of every field: path, type, default, constraints,
/// description, secret or not, the etcd key that sets it and the environment variable that
/// overrides it.
///
/// # Errors
/// [`ErrorKind::NotFound`] if no schema is published.
pub fn reference_markdown(history: &ConfigHistory) -> Result<String> {
    let fields = fields(history)?;
    let mut out = format!(
        "# Configuration reference: `{}`\n\n| field | type | default | constraints | description | secret | etcd key | env variable |\n|---|---|---|---|---|---|---|---|\n",
        history.prefix().trim_end_matches('/')
    );
    for f in fields {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | `{}` | {} |\n",
            f.path,
            cell(&f.kind),
            f.default
                .as_ref()
                .map_or("—".to_string(), |d| format!("`{}`", cell(&d.to_string()))),
            if f.constraints.is_empty() {
                "—".to_string()
            } else {
                cell(&f.constraints.join(", "))
            },
            f.description.as_deref().map_or("—".to_string(), cell),
            if f.secret { "yes" } else { "no" },
            f.etcd_key,
            f.env_var
                .as_ref()
                .map_or("—".to_string(), |v| format!("`{v}`")),
        ));
    }
    Ok(out)
}
