//! One layer as a JSON tree with the source of every leaf, and the merge of layers.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::provenance::{Source, Sources};

/// A layer's values as a JSON object tree plus the source of every leaf path in it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LayerTree {
    root: Map<String, Value>,
    leaves: BTreeMap<String, Source>,
}

/// A key whose path runs through a value that is not an object (e.g. `port/x` while `port`
/// holds `8080`). Holds the dotted path of the scalar in the way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Blocked(pub(crate) String);

impl LayerTree {
    /// Inserts `value` at `path` (segments). Later inserts win over earlier ones for the paths
    /// they cover, so callers insert shallow keys before deep ones. A `path` of `[]` sets the
    /// whole layer, which must then be an object (`null` counts as empty).
    pub(crate) fn insert(
        &mut self,
        path: &[&str],
        value: Value,
        source: &Source,
    ) -> Result<(), Blocked> {
        let Some((last, parents)) = path.split_last() else {
            return match value {
                Value::Object(map) => {
                    self.leaves.clear();
                    collect_leaves(&map, &mut String::new(), source, &mut self.leaves);
                    self.root = map;
                    Ok(())
                }
                Value::Null => {
                    *self = LayerTree::default();
                    Ok(())
                }
                _ => Err(Blocked(String::new())),
            };
        };
        let mut node = &mut self.root;
        let mut dotted = String::new();
        for segment in parents {
            push_segment(&mut dotted, segment);
            let child = node
                .entry((*segment).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match child {
                Value::Object(map) => map,
                _ => return Err(Blocked(dotted)),
            };
        }
        push_segment(&mut dotted, last);
        remove_below(&mut self.leaves, &dotted);
        match &value {
            Value::Object(map) if !map.is_empty() => {
                let mut prefix = dotted.clone();
                collect_leaves(map, &mut prefix, source, &mut self.leaves);
            }
            _ => {
                self.leaves.insert(dotted, source.clone());
            }
        }
        node.insert((*last).to_string(), value);
        Ok(())
    }
}

fn push_segment(dotted: &mut String, segment: &str) {
    if !dotted.is_empty() {
        dotted.push('.');
    }
    dotted.push_str(segment);
}

fn remove_below(leaves: &mut BTreeMap<String, Source>, path: &str) {
    leaves.remove(path);
    let below = format!("{path}.");
    let doomed: Vec<String> = leaves
        .range(below.clone()..)
        .take_while(|(p, _)| p.starts_with(&below))
        .map(|(p, _)| p.clone())
        .collect();
    for p in doomed {
        leaves.remove(&p);
    }
}

fn collect_leaves(
    map: &Map<String, Value>,
    prefix: &mut String,
    source: &Source,
    out: &mut BTreeMap<String, Source>,
) {
    for (key, value) in map {
        let len = prefix.len();
        push_segment(prefix, key);
        match value {
            Value::Object(inner) if !inner.is_empty() => collect_leaves(inner, prefix, source, out),
            _ => {
                out.insert(prefix.clone(), source.clone());
            }
        }
        prefix.truncate(len);
    }
}

/// Merges layers, lowest precedence first: objects merge key by key, anything else in a higher
/// layer replaces what is below it. Returns the merged tree and the source of each of its leaves.
pub(crate) fn merge<'a>(layers: impl IntoIterator<Item = &'a LayerTree>) -> (Value, Sources) {
    let mut root = Map::new();
    let mut leaves = BTreeMap::new();
    for layer in layers {
        merge_into(&mut root, &layer.root);
        leaves.extend(layer.leaves.iter().map(|(p, s)| (p.clone(), s.clone())));
    }
    // Keep only paths that are still leaves of the merged tree: a higher layer may have replaced
    // an object with a scalar (dropping the leaves below it) or the reverse.
    leaves.retain(|path, _| is_leaf(&root, path));
    (Value::Object(root), Sources::from_map(leaves))
}

fn merge_into(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_into(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn is_leaf(root: &Map<String, Value>, path: &str) -> bool {
    let mut node = root;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Some(value) = node.get(segment) else {
            return false;
        };
        match (value, segments.peek()) {
            (Value::Object(inner), Some(_)) => node = inner,
            (Value::Object(inner), None) => return inner.is_empty(),
            (_, None) => return true,
            (_, Some(_)) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{Layer, Origin};
    use serde_json::json;

    fn src(layer: Layer, key: &str) -> Source {
        Source::new(match layer {
            Layer::Default => Origin::Default,
            Layer::File => Origin::File(key.into()),
            Layer::Etcd => Origin::Etcd {
                key: key.into(),
                mod_revision: 1,
            },
            Layer::Env => Origin::Env(key.into()),
        })
    }

    #[test]
    fn deeper_key_wins_over_document_for_its_field() {
        let mut t = LayerTree::default();
        let doc = src(Layer::Etcd, "/p/database");
        let deep = src(Layer::Etcd, "/p/database/host");
        t.insert(&["database"], json!({"host": "a", "port": 5432}), &doc)
            .unwrap();
        t.insert(&["database", "host"], json!("b"), &deep).unwrap();
        let (v, s) = merge([&t]);
        assert_eq!(v, json!({"database": {"host": "b", "port": 5432}}));
        assert_eq!(s.get("database.host"), &deep);
        assert_eq!(s.get("database.port"), &doc);
    }

    #[test]
    fn key_below_a_scalar_is_blocked() {
        let mut t = LayerTree::default();
        let s = src(Layer::Etcd, "/p/port");
        t.insert(&["port"], json!(8080), &s).unwrap();
        assert_eq!(
            t.insert(&["port", "x"], json!(1), &s),
            Err(Blocked("port".into()))
        );
    }

    #[test]
    fn higher_layers_override_field_by_field() {
        let mut file = LayerTree::default();
        let f = src(Layer::File, "chat.yaml");
        file.insert(
            &[],
            json!({"port": 1, "database": {"host": "f", "user": "u"}}),
            &f,
        )
        .unwrap();
        let mut etcd = LayerTree::default();
        let e = src(Layer::Etcd, "/p/database/host");
        etcd.insert(&["database", "host"], json!("e"), &e).unwrap();
        let mut env = LayerTree::default();
        let v = src(Layer::Env, "CHAT_PORT");
        env.insert(&["port"], json!(3), &v).unwrap();
        let (merged, sources) = merge([&file, &etcd, &env]);
        assert_eq!(
            merged,
            json!({"port": 3, "database": {"host": "e", "user": "u"}})
        );
        assert_eq!(sources.get("port"), &v);
        assert_eq!(sources.get("database.host"), &e);
        assert_eq!(sources.get("database.user"), &f);
    }

    #[test]
    fn scalar_in_higher_layer_drops_leaves_below_it() {
        let mut file = LayerTree::default();
        let f = src(Layer::File, "f");
        file.insert(&[], json!({"a": {"b": 1}}), &f).unwrap();
        let mut etcd = LayerTree::default();
        let e = src(Layer::Etcd, "/p/a");
        etcd.insert(&["a"], json!(7), &e).unwrap();
        let (merged, sources) = merge([&file, &etcd]);
        assert_eq!(merged, json!({"a": 7}));
        assert_eq!(sources.iter().count(), 1);
        assert_eq!(sources.get("a"), &e);
    }
}
