//! What the bind's read has already checked of the etcd layer: which keys' values passed their
//! own field's sub-schema as their page was parsed ([`KeyChecks`](super::subschema::KeyChecks)),
//! so that the bind's schema check can leave out the objects made only of such keys
//! ([`Prechecked`]).
//!
//! Leaving them out is sound where the merged document is the etcd layer alone: an object all
//! of whose fields are vouched-for keys is valid exactly when each field is valid against its
//! sub-schema (checked) and the object is valid with no field at all, because a vouched-for
//! field is never one whose absence its object's schema notices (see
//! [`subschema`](super::subschema)). An object is left out only if no key lies deeper than its
//! fields: a deeper key would change a field's value after it was checked.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::unknown::value_at;

/// The keys of a read, counted as they are put into the layer's tree (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Prechecked {
    /// Runs of consecutive vouched-for keys with the same parent: its path and how many.
    groups: Vec<(Vec<String>, usize)>,
    /// The most segments a key's path has.
    deepest: usize,
}

impl Prechecked {
    /// Nothing counted yet.
    pub(crate) fn new() -> Self {
        Prechecked::default()
    }

    /// Counts a key put into the tree at `path` (segments below the prefix); `vouched` when its
    /// whole value passed its field's sub-schema.
    pub(crate) fn key(&mut self, path: &[&str], vouched: bool) {
        self.deepest = self.deepest.max(path.len());
        let Some((_, parent)) = path.split_last().filter(|_| vouched) else {
            return;
        };
        match self.groups.last_mut() {
            Some((last, n)) if last.iter().map(String::as_str).eq(parent.iter().copied()) => {
                *n += 1;
            }
            _ => self
                .groups
                .push((parent.iter().map(|s| (*s).to_string()).collect(), 1)),
        }
    }

    /// What is left to check of `root` (the merged document, made of the etcd layer alone from
    /// the keys counted): `root` with each object whose fields are all vouched-for keys left
    /// empty; `None` where no object is.
    pub(crate) fn rest(&self, root: &Map<String, Value>) -> Option<Value> {
        let mut counts: BTreeMap<&[String], usize> = BTreeMap::new();
        for (parent, n) in &self.groups {
            if parent.len() + 1 == self.deepest {
                *counts.entry(parent.as_slice()).or_default() += n;
            }
        }
        let emptied: Vec<&[String]> = counts
            .into_iter()
            .filter(|(parent, n)| {
                let object = match parent.is_empty() {
                    true => Some(root),
                    false => value_at(root, parent).and_then(Value::as_object),
                };
                object.is_some_and(|o| o.len() == *n)
            })
            .map(|(parent, _)| parent)
            .collect();
        if emptied.is_empty() {
            return None;
        }
        Some(Value::Object(without(root, &emptied, 0)))
    }
}

/// A copy of `object` (at depth `depth`) with the objects at `emptied` (paths from the root
/// through it) left empty.
fn without(object: &Map<String, Value>, emptied: &[&[String]], depth: usize) -> Map<String, Value> {
    if emptied.iter().any(|p| p.len() == depth) {
        return Map::new();
    }
    object
        .iter()
        .map(|(key, value)| {
            let below: Vec<&[String]> = emptied
                .iter()
                .copied()
                .filter(|p| p[depth] == *key)
                .collect();
            let value = match value {
                Value::Object(child) if !below.is_empty() => {
                    Value::Object(without(child, &below, depth + 1))
                }
                _ => value.clone(),
            };
            (key.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn counted(keys: &[(&str, bool)]) -> Prechecked {
        let mut p = Prechecked::new();
        for (key, vouched) in keys {
            let path: Vec<&str> = key.split('/').collect();
            p.key(&path, *vouched);
        }
        p
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_object_of_vouched_keys_only_is_left_empty() {
        let p = counted(&[("items/a", true), ("items/b", true), ("port", false)]);
        let root = object(json!({"items": {"a": {"w": 1}, "b": {"w": 2}}, "port": 80}));
        assert_eq!(p.rest(&root), Some(json!({"items": {}, "port": 80})));
    }

    #[test]
    fn an_object_with_a_field_not_vouched_for_is_checked_whole() {
        let p = counted(&[("items/a", true), ("items/b", false)]);
        let root = object(json!({"items": {"a": 1, "b": 2}}));
        assert_eq!(p.rest(&root), None);
        // A field the keys did not make (here, from a key of the whole map).
        let p = counted(&[("items", false), ("items/a", true)]);
        let root = object(json!({"items": {"a": 1, "z": 2}}));
        assert_eq!(p.rest(&root), None);
    }

    #[test]
    fn nothing_is_left_out_where_a_key_lies_deeper_than_the_fields() {
        let p = counted(&[("items/a", true), ("items/a/x", false)]);
        let root = object(json!({"items": {"a": {"x": 1}}}));
        assert_eq!(p.rest(&root), None);
        // Deeper keys elsewhere stop it too: the rule is by depth, not by subtree.
        let p = counted(&[("db/primary/host", false), ("items/a", true)]);
        let root = object(json!({"db": {"primary": {"host": "h"}}, "items": {"a": 1}}));
        assert_eq!(p.rest(&root), None);
    }

    #[test]
    fn runs_of_one_parent_split_by_other_keys_add_up() {
        let p = counted(&[("m/a", true), ("n/x", true), ("m/b", true), ("root", true)]);
        let root = object(json!({"m": {"a": 1, "b": 2}, "n": {"x": 3}, "root": 4}));
        assert_eq!(p.rest(&root), Some(json!({"m": {}, "n": {}, "root": 4})));
        // The root itself, when all its fields are vouched-for keys.
        let p = counted(&[("a", true), ("b", true)]);
        assert_eq!(p.rest(&object(json!({"a": 1, "b": 2}))), Some(json!({})));
    }

    /// A bound type with a map of items, an optional struct with required fields and a plain
    /// field, each with constraints the schema holds and serde does not.
    #[derive(
        Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
    )]
    struct Fleet {
        #[serde(default)]
        #[schemars(range(max = 9000))]
        port: Option<u16>,
        #[serde(default)]
        items: std::collections::BTreeMap<String, Item>,
        #[serde(default)]
        db: Option<Db>,
    }

    #[derive(
        Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
    )]
    struct Item {
        #[schemars(range(max = 10))]
        weight: u8,
        #[serde(default)]
        #[schemars(length(max = 3))]
        label: String,
    }

    #[derive(
        Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
    )]
    struct Db {
        host: String,
        #[schemars(range(min = 1024))]
        port: u16,
    }

    impl crate::config::CoordConfig for Fleet {
        const PREFIX: &'static str = "/p";
    }

    /// Reads `keys` (paths below `/p/` with their raw values, in any order) as the bind does,
    /// in two pages; returns the merged document, the check's result and, where the read's
    /// checks let the schema check leave something out, the result of that shorter check.
    fn bind(
        keys: &std::collections::BTreeMap<String, String>,
    ) -> Option<(Value, bool, Option<bool>)> {
        use crate::config::check::Checker;
        use crate::config::layers::{EtcdLayer, Loading};
        use crate::config::subschema::SubSchemas;
        use crate::config::tree::{EtcdTree, LayerTree, Merged};
        use crate::config::value::StringFields;
        use std::sync::Arc;

        let schema = Checker::<Fleet>::generate_schema();
        let fields = StringFields::new(schema.clone());
        let schemas = Arc::new(SubSchemas::new(schema));
        let checker = Checker::<Fleet>::compile(Arc::clone(&schemas)).unwrap();
        let kvs: Vec<crate::config::layers::ReadKv> = keys
            .iter()
            .zip(2..)
            .map(|((k, v), r)| {
                (
                    format!("/p/{k}").into_bytes(),
                    v.clone().into_bytes().into(),
                    r,
                )
            })
            .collect();
        let mut layer = EtcdLayer::new("/p/".into(), 1 << 20);
        let mut load = Loading::new("/p/");
        let (first, second) = kvs.split_at(kvs.len() / 2);
        layer.load_page(first, &fields, Some(&schemas), &mut load);
        layer.load_page(second, &fields, Some(&schemas), &mut load);
        let (tree, prechecked) = layer.loaded_tree(load, &fields);
        let tree @ EtcdTree::Keys(_) = tree.ok()? else {
            return None;
        };
        let merged = Merged::full(&LayerTree::default(), tree, &[]);
        let full = checker.check(&merged.root, &merged.sources, false);
        let rest = prechecked?.rest(merged.root.as_object().unwrap());
        let shorter = rest.map(|rest| {
            let value = checker.check_rest(&merged.root, &rest);
            if let (Some(value), Ok(full)) = (&value, &full) {
                assert_eq!(value, full, "the same value either way");
            }
            value.is_some()
        });
        Some((Value::clone(&merged.root), full.is_ok(), shorter))
    }

    #[test]
    fn a_map_of_valid_entries_is_checked_by_the_read_and_an_invalid_one_is_not_passed() {
        let mut keys: std::collections::BTreeMap<String, String> = (0..40)
            .map(|i| {
                (
                    format!("items/k{i:02}"),
                    format!("{{weight: {}, label: ab}}", i % 10),
                )
            })
            .collect();
        keys.insert("port".into(), "80".into());
        let (_, full, shorter) = bind(&keys).unwrap();
        assert!(full);
        assert_eq!(
            shorter,
            Some(true),
            "the items were left out of the schema check"
        );
        // Over the maximum: the read does not vouch for it, so the items are checked whole.
        keys.insert("items/k07".into(), "{weight: 11}".into());
        let (_, full, shorter) = bind(&keys).unwrap();
        assert!(!full);
        assert_eq!(shorter, None);
        // A valid entry with an invalid field below it in another key.
        keys.insert("items/k07".into(), "{weight: 1}".into());
        keys.insert("items/k07/label".into(), "toolong".into());
        let (_, full, shorter) = bind(&keys).unwrap();
        assert!(!full);
        assert_eq!(shorter, None);
    }

    /// An item's raw value: mostly valid, sometimes over a limit or missing a field.
    fn item() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (0u32..11, proptest::option::of("[a-e]{0,3}")).prop_map(|(w, l)| match l {
                Some(l) => format!("{{weight: {w}, label: {l}}}"),
                None => format!("{{weight: {w}}}"),
            }),
            1 => Just("{weight: 11}".to_string()),
            1 => Just("{label: abcd, weight: 1}".to_string()),
            1 => Just("{label: a}".to_string()),
            1 => Just("7".to_string()),
        ]
    }

    /// A key below `/p/` with a raw value: mostly map entries, sometimes the other fields, a
    /// key of the whole map or of a struct, or a key below an entry.
    fn key_value() -> impl Strategy<Value = (String, String)> {
        let entry = "k[1-8]";
        prop_oneof![
            8 => (entry, item()).prop_map(|(k, v)| (format!("items/{k}"), v)),
            1 => (entry, item()).prop_map(|(k, v)| (format!("items/{k}-b"), v)),
            1 => (0u32..10_000).prop_map(|n| ("port".to_string(), n.to_string())),
            1 => prop_oneof![Just("{host: h, port: 2000}"), Just("{host: h}")]
                .prop_map(|v| ("db".to_string(), v.to_string())),
            1 => Just(("db/port".to_string(), "80".to_string())),
            1 => Just(("items".to_string(), "{k1: {weight: 1}, k9: {weight: 12}}".to_string())),
            1 => (entry, prop_oneof![Just("ab"), Just("abcd")])
                .prop_map(|(k, v)| (format!("items/{k}/label"), v.to_string())),
            1 => (entry, prop_oneof![Just("3"), Just("30")])
                .prop_map(|(k, v)| (format!("items/{k}/weight"), v.to_string())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whenever the shorter check passes, the whole check passes with the same value: the
        /// read's checks never let through what the schema refuses.
        #[test]
        fn the_shorter_check_never_passes_what_the_whole_check_refuses(
            keys in proptest::collection::vec(key_value(), 1..16)
                .prop_map(|kvs| kvs.into_iter().collect::<std::collections::BTreeMap<_, _>>()),
        ) {
            if let Some((doc, full, shorter)) = bind(&keys) {
                if shorter == Some(true) {
                    prop_assert!(full, "passed without the items, refused whole: {doc}");
                }
            }
        }
    }
}
