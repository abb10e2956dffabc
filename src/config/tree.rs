//! One layer as a JSON tree with the source of every leaf, and the merge of layers.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::provenance::{Leaves, Source, Sources};

/// A layer's values as a JSON object tree plus the source of every leaf path in it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LayerTree {
    root: Map<String, Value>,
    /// The source of every leaf path of `root`, exactly (no path that is not a leaf): one
    /// `Arc` per inserted key, shared by every leaf that key set. Paths are `Arc<str>` so that
    /// the merged [`Sources`] take them without copying.
    leaves: Leaves,
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
        self.insert_shared(path, value, &Arc::new(source.clone()))
    }

    /// As [`insert`](Self::insert), with the source already shared: every leaf `value` sets
    /// points to the one `source` (no copy of it per leaf).
    pub(crate) fn insert_shared(
        &mut self,
        path: &[&str],
        value: Value,
        source: &Arc<Source>,
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
        let mut dotted = String::with_capacity(path.iter().map(|s| s.len() + 1).sum());
        let leaves = &mut self.leaves;
        let node = walk_to_parent(&mut self.root, parents, |segment, was_empty| {
            push_segment(&mut dotted, segment);
            if was_empty {
                // An empty object was a leaf; it is about to hold the new value.
                leaves.remove(dotted.as_str());
            }
        })
        .map_err(|at| Blocked(parents[..=at].join(".")))?;
        push_segment(&mut dotted, last);
        if node.contains_key(*last) {
            // Only a path that holds a value has leaves at or below it.
            remove_below(&mut self.leaves, &dotted);
        }
        match &value {
            Value::Object(map) if !map.is_empty() => {
                let mut prefix = dotted;
                collect_leaves(map, &mut prefix, source, &mut self.leaves);
            }
            _ => {
                self.leaves.insert(Arc::from(dotted), source.clone());
            }
        }
        node.insert((*last).to_string(), value);
        Ok(())
    }
}

/// Walks from `root` down `parents` (segments), making the objects that are missing, and
/// returns the object at the end. `visit` sees each segment as it is entered, with whether its
/// object was empty before (an empty object is a leaf that is about to hold a value). `Err`
/// holds the index of the first segment whose value is not an object.
fn walk_to_parent<'m>(
    root: &'m mut Map<String, Value>,
    parents: &[&str],
    mut visit: impl FnMut(&str, bool),
) -> Result<&'m mut Map<String, Value>, usize> {
    let mut node = root;
    for (i, segment) in parents.iter().enumerate() {
        if !node.contains_key(*segment) {
            node.insert((*segment).to_string(), Value::Object(Map::new()));
        }
        node = match node.get_mut(*segment).expect("inserted above") {
            Value::Object(map) => {
                visit(segment, map.is_empty());
                map
            }
            _ => return Err(i),
        };
    }
    Ok(node)
}

/// A layer's tree built from the keys of a read in key order, with the source of each key
/// instead of each leaf: the leaves' sources are worked out from the finished tree later
/// ([`Merged::full`] defers them; the bind starts a thread for them as it returns). In key order a key comes
/// before every key below it, so each leaf's source is that of the deepest key at or above
/// it, as [`LayerTree::insert`] would have recorded it.
#[derive(Debug, Default)]
pub(crate) struct KeyedTree {
    root: Map<String, Value>,
    /// The etcd key prefix the keys' paths are relative to (ends with `/`).
    prefix: String,
    /// The source of every inserted key, each naming its etcd key.
    keys: Vec<Arc<Source>>,
    /// Values of consecutive keys with the same parent (its path first), put into the parent
    /// together: a map made from many entries at once compares far fewer keys than one that
    /// takes them one by one.
    pending: Option<Siblings>,
}

/// A parent's path (segments) and values to put into it, in key order.
type Siblings = (Vec<String>, Vec<(String, Value)>);

impl KeyedTree {
    /// An empty tree for the keys under `prefix` (which ends with `/`).
    pub(crate) fn new(prefix: &str) -> Self {
        KeyedTree {
            prefix: prefix.to_string(),
            ..KeyedTree::default()
        }
    }

    /// Makes room for the sources of `additional` more keys.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.keys.reserve(additional);
    }

    /// Inserts `value` at `path` (segments of the key that `source` names, below the prefix),
    /// as [`LayerTree::insert_shared`] does. Keys must come in key order.
    pub(crate) fn insert(
        &mut self,
        path: &[&str],
        value: Value,
        source: &Arc<Source>,
    ) -> Result<(), Blocked> {
        let Some((last, parents)) = path.split_last() else {
            self.flush();
            match value {
                Value::Object(map) => self.root = map,
                Value::Null => self.root = Map::new(),
                _ => return Err(Blocked(String::new())),
            }
            self.keys.push(Arc::clone(source));
            return Ok(());
        };
        match &mut self.pending {
            // Its parent is known to be an object: the key before this one went there.
            Some((parent, children))
                if parent
                    .iter()
                    .map(String::as_str)
                    .eq(parents.iter().copied()) =>
            {
                children.push(((*last).to_string(), value));
            }
            _ => {
                self.flush();
                walk_to_parent(&mut self.root, parents, |_, _| {})
                    .map_err(|at| Blocked(parents[..=at].join(".")))?;
                let parent = parents.iter().map(|s| (*s).to_string()).collect();
                self.pending = Some((parent, vec![((*last).to_string(), value)]));
            }
        }
        self.keys.push(Arc::clone(source));
        Ok(())
    }

    /// Puts the pending values into their parent (later values win, as later inserts do).
    fn flush(&mut self) {
        let Some((parent, children)) = self.pending.take() else {
            return;
        };
        let parents: Vec<&str> = parent.iter().map(String::as_str).collect();
        let node = walk_to_parent(&mut self.root, &parents, |_, _| {})
            .expect("the parent was reached when its first value was inserted");
        node.append(&mut children.into_iter().collect());
    }

    /// The tree with the source of every leaf, as [`LayerTree::insert`] builds it.
    pub(crate) fn into_layer(mut self) -> LayerTree {
        self.flush();
        let leaves = leaves_of_keys(&self.root, &self.keys, &self.prefix);
        LayerTree {
            root: self.root,
            leaves,
        }
    }
}

/// The source of every leaf of `root`: that of the deepest key in `keys` at or above it.
fn leaves_of_keys(root: &Map<String, Value>, keys: &[Arc<Source>], prefix: &str) -> Leaves {
    let by_path: std::collections::HashMap<String, &Arc<Source>> = keys
        .iter()
        .filter_map(|source| {
            let key = source.origin.key()?;
            let rel = key.strip_prefix(prefix)?;
            Some((rel.replace('/', "."), source))
        })
        .collect();
    fn walk(
        map: &Map<String, Value>,
        path: &mut String,
        source: Option<&Arc<Source>>,
        by_path: &std::collections::HashMap<String, &Arc<Source>>,
        out: &mut Leaves,
    ) {
        for (segment, value) in map {
            let len = path.len();
            push_segment(path, segment);
            let here = by_path.get(path.as_str()).copied().or(source);
            match value {
                Value::Object(inner) if !inner.is_empty() => walk(inner, path, here, by_path, out),
                _ => {
                    if let Some(source) = here {
                        out.insert(Arc::from(path.as_str()), Arc::clone(source));
                    }
                }
            }
            path.truncate(len);
        }
    }
    let mut out = Leaves::new();
    walk(
        root,
        &mut String::new(),
        by_path.get("").copied(),
        &by_path,
        &mut out,
    );
    out
}

/// A layer's tree as a read of the whole prefix built it: with the source of every leaf, or
/// of every key (see [`KeyedTree`]).
#[derive(Debug)]
pub(crate) enum EtcdTree {
    /// Built key by key with the source of every leaf.
    Leaves(LayerTree),
    /// Built in key order with the source of every key.
    Keys(KeyedTree),
}

impl EtcdTree {
    /// The tree with the source of every leaf.
    #[cfg(test)]
    pub(crate) fn into_layer(self) -> LayerTree {
        match self {
            EtcdTree::Leaves(layer) => layer,
            EtcdTree::Keys(keyed) => keyed.into_layer(),
        }
    }
}

/// What a layer holds at a field path.
#[derive(Debug)]
pub(crate) enum At<'a> {
    /// Nothing at the path (nor at any field above it that is not an object).
    Absent,
    /// The value at the path.
    Value(&'a Value),
    /// A field above the path holds a value that is not an object: the layer replaces
    /// everything below it there.
    Under,
}

impl LayerTree {
    /// True when the layer holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty() && self.leaves.is_empty()
    }

    /// What the layer holds at `path` (segments; not empty).
    pub(crate) fn at(&self, path: &[String]) -> At<'_> {
        let Some((last, parents)) = path.split_last() else {
            return At::Absent;
        };
        let mut node = &self.root;
        for segment in parents {
            match node.get(segment.as_str()) {
                None => return At::Absent,
                Some(Value::Object(map)) => node = map,
                Some(_) => return At::Under,
            }
        }
        node.get(last.as_str()).map_or(At::Absent, At::Value)
    }

    /// The leaves at the dotted `path` and below it, with their sources, in path order.
    pub(crate) fn leaves_within<'s>(
        &'s self,
        path: &str,
    ) -> impl Iterator<Item = (&'s Arc<str>, &'s Arc<Source>)> + 's {
        let exact = self.leaves.get_key_value(path);
        let from = format!("{path}.");
        let to = format!("{path}/");
        exact.into_iter().chain(
            self.leaves
                .range::<_, str>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str()))),
        )
    }
}

/// The merged tree of the layers and the source of each of its leaves, kept between reloads
/// and updated in place at the paths a change touched.
#[derive(Debug)]
pub(crate) struct Merged {
    /// The merged tree (always an object). Shared with the computation of `sources` until
    /// that is done (see [`Sources::settle`]).
    pub(crate) root: Arc<Value>,
    /// The source of every leaf of `root` (shared with the snapshots made from it).
    pub(crate) sources: Sources,
}

/// What an in-place update at one path did.
#[derive(Debug)]
pub(crate) struct Touched {
    /// The shallowest path whose subtree may now be invalid: the updated path, or the highest
    /// field that did not exist before (made to hold it). `None` when nothing changed.
    pub(crate) check_at: Option<Vec<String>>,
    /// Whether a field appeared or disappeared at `check_at` (so its parent's set of fields
    /// changed, which `required` and similar keywords look at).
    pub(crate) fields_changed: bool,
}

impl Merged {
    /// Merges the layers from scratch, as [`merge`] does, taking the etcd layer's tree
    /// instead of copying it (it is usually by far the biggest). `above` are the layers over
    /// etcd, lowest precedence first (a rollout's overlay, then the environment).
    pub(crate) fn full(file: &LayerTree, etcd: EtcdTree, above: &[&LayerTree]) -> Merged {
        let etcd = match etcd {
            EtcdTree::Keys(mut keyed) if file.is_empty() && above.iter().all(|l| l.is_empty()) => {
                keyed.flush();
                // One layer: its leaves are those of its tree, worked out when first needed or
                // on the thread the bind starts as it returns (the snapshot serves before).
                let root = Arc::new(Value::Object(keyed.root));
                let shared = Arc::clone(&root);
                let (keys, prefix) = (keyed.keys, keyed.prefix);
                let sources = Sources::deferred(move || {
                    let map = shared.as_object().expect("the merged tree is an object");
                    leaves_of_keys(map, &keys, &prefix)
                });
                return Merged { root, sources };
            }
            EtcdTree::Keys(keyed) => keyed.into_layer(),
            EtcdTree::Leaves(layer) => layer,
        };
        let (root, leaves) = merge_full(file, etcd, above);
        Merged {
            root: Arc::new(Value::Object(root)),
            sources: Sources::from_map(leaves),
        }
    }

    /// Recomputes the merged subtree and the sources at `path` (segments, not empty) from the
    /// layers, lowest precedence first, where each layer is exact at and below `path` (the
    /// etcd layer may be the subtree its keys at, above and below `path` make). `None` when the
    /// change cannot be applied in place (a field above `path` is not an object in the merged
    /// tree, or a field would be left empty): the caller merges in full. The tree may be
    /// half-updated then and must be rebuilt.
    pub(crate) fn update(&mut self, layers: &[&LayerTree], path: &[String]) -> Option<Touched> {
        let (last, parents) = path.split_last()?;
        let found: Vec<At<'_>> = layers.iter().map(|l| l.at(path)).collect();
        // A layer with a non-object above the path wipes what the layers below it had there.
        let start = found
            .iter()
            .rposition(|a| matches!(a, At::Under))
            .map_or(0, |i| i + 1);
        let mut value: Option<Value> = None;
        for at in &found[start..] {
            if let At::Value(v) = at {
                value = Some(match (value, v) {
                    (Some(Value::Object(mut base)), Value::Object(over)) => {
                        merge_into(&mut base, over);
                        Value::Object(base)
                    }
                    _ => (*v).clone(),
                });
            }
        }
        // Walk to the parent, making the objects the new value needs. Nothing else holds the
        // tree once its sources are settled, so it is changed in place, not copied.
        self.sources.settle();
        let mut node = Arc::make_mut(&mut self.root).as_object_mut()?;
        let mut created: Option<usize> = None;
        // The shallowest object above the path that was a leaf before (missing or empty):
        // the objects above it were not empty, so no source was recorded at their paths.
        let mut was_leaf: Option<usize> = None;
        for (depth, segment) in parents.iter().enumerate() {
            if !node.contains_key(segment.as_str()) {
                if value.is_none() {
                    return Some(Touched {
                        check_at: None,
                        fields_changed: false,
                    });
                }
                created.get_or_insert(depth);
                node.insert(segment.clone(), Value::Object(Map::new()));
            }
            node = match node.get_mut(segment.as_str()) {
                Some(Value::Object(map)) => map,
                _ => return None,
            };
            if node.is_empty() {
                was_leaf.get_or_insert(depth);
            }
        }
        let existed = node.contains_key(last.as_str());
        let present = value.is_some();
        match value {
            Some(v) => {
                node.insert(last.clone(), v);
            }
            None if !existed => {
                return Some(Touched {
                    check_at: None,
                    fields_changed: false,
                })
            }
            None => {
                node.remove(last.as_str());
                if node.is_empty() {
                    return None;
                }
            }
        }
        // Provenance: drop what was recorded at and below the path (and at the objects above
        // it, which are not leaves now), then take the layers' leaves that are leaves of the
        // merged tree.
        let dotted = path.join(".");
        if existed {
            // Only a path that held a value has sources at or below it.
            self.sources.remove_within(&dotted);
        }
        if let Some(from) = was_leaf {
            let mut above = parents[..from].join(".");
            for segment in &parents[from..] {
                push_segment(&mut above, segment);
                self.sources.remove(&above);
            }
        }
        let mut leaves: BTreeMap<&Arc<str>, &Arc<Source>> = BTreeMap::new();
        for layer in &layers[start..] {
            leaves.extend(layer.leaves_within(&dotted));
        }
        // Each path is `dotted` or below it: it is looked up from the value at `dotted`.
        let at = node.get(last.as_str());
        for (p, source) in leaves {
            let below = p[dotted.len()..].strip_prefix('.').unwrap_or("");
            if at.is_some_and(|value| is_leaf_of(value, below)) {
                self.sources.insert(Arc::clone(p), Arc::clone(source));
            }
        }
        let (check_at, fields_changed) = match created {
            Some(depth) => (path[..=depth].to_vec(), true),
            None => (path.to_vec(), !existed || !present),
        };
        Some(Touched {
            check_at: Some(check_at),
            fields_changed,
        })
    }
}

/// The merged tree and the source of each of its leaves, from scratch (see [`Merged::full`]).
fn merge_full(
    file: &LayerTree,
    etcd: LayerTree,
    above: &[&LayerTree],
) -> (Map<String, Value>, Leaves) {
    if file.is_empty() && above.iter().all(|l| l.is_empty()) {
        // One layer: its leaves are exactly the leaves of its tree.
        return (etcd.root, etcd.leaves);
    }
    let (mut root, mut leaves) = if file.is_empty() {
        (etcd.root, etcd.leaves)
    } else {
        let mut root = file.root.clone();
        let mut leaves = file.leaves.clone();
        merge_into(&mut root, &etcd.root);
        leaves.extend(etcd.leaves);
        (root, leaves)
    };
    for layer in above {
        merge_into(&mut root, &layer.root);
        leaves.extend(layer.leaves.iter().map(|(p, s)| (p.clone(), s.clone())));
    }
    keep_leaves(&mut leaves, &root);
    (root, leaves)
}

fn push_segment(dotted: &mut String, segment: &str) {
    if !dotted.is_empty() {
        dotted.push('.');
    }
    dotted.push_str(segment);
}

/// Drops the paths that are not leaves of `root` (a higher layer replaced an object with a
/// scalar, dropping the leaves below it, or the reverse).
fn keep_leaves(leaves: &mut Leaves, root: &Map<String, Value>) {
    let doomed: Vec<Arc<str>> = leaves
        .keys()
        .filter(|path| !is_leaf(root, path))
        .cloned()
        .collect();
    for path in doomed {
        leaves.remove(&*path);
    }
}

fn remove_below(leaves: &mut Leaves, path: &str) {
    leaves.remove(path);
    let below = format!("{path}.");
    let doomed: Vec<Arc<str>> = leaves
        .range::<_, str>((Bound::Included(below.as_str()), Bound::Unbounded))
        .take_while(|(p, _)| p.starts_with(&below))
        .map(|(p, _)| Arc::clone(p))
        .collect();
    for p in doomed {
        leaves.remove(&p);
    }
}

fn collect_leaves(
    map: &Map<String, Value>,
    prefix: &mut String,
    source: &Arc<Source>,
    out: &mut Leaves,
) {
    for (key, value) in map {
        let len = prefix.len();
        push_segment(prefix, key);
        match value {
            Value::Object(inner) if !inner.is_empty() => collect_leaves(inner, prefix, source, out),
            _ => {
                out.insert(Arc::from(prefix.as_str()), source.clone());
            }
        }
        prefix.truncate(len);
    }
}

/// Merges layers, lowest precedence first: objects merge key by key, anything else in a higher
/// layer replaces what is below it. Returns the merged tree and the source of each of its leaves.
pub(crate) fn merge<'a>(layers: impl IntoIterator<Item = &'a LayerTree>) -> (Value, Sources) {
    let mut root = Map::new();
    let mut leaves = Leaves::new();
    for layer in layers {
        merge_into(&mut root, &layer.root);
        leaves.extend(layer.leaves.iter().map(|(p, s)| (p.clone(), s.clone())));
    }
    // Keep only paths that are still leaves of the merged tree: a higher layer may have replaced
    // an object with a scalar (dropping the leaves below it) or the reverse.
    keep_leaves(&mut leaves, &root);
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

/// Whether `path` (dotted, relative to `value`; empty for `value` itself) is a leaf of `value`.
fn is_leaf_of(value: &Value, path: &str) -> bool {
    match value {
        Value::Object(map) if path.is_empty() => map.is_empty(),
        Value::Object(map) => is_leaf(map, path),
        _ => path.is_empty(),
    }
}

/// Whether `path` (dotted) is a leaf of `node`. A field name may itself hold dots (a map key
/// such as `api.example.com`), so each dot is tried as the end of the first segment: every
/// attempt follows a field that exists, so the work is bounded by the tree's own fields.
fn is_leaf(node: &Map<String, Value>, path: &str) -> bool {
    let mut start = 0;
    loop {
        let dot = path[start..].find('.').map(|at| start + at);
        let segment = &path[..dot.unwrap_or(path.len())];
        let rest = dot.map(|at| &path[at + 1..]);
        let found = match (node.get(segment), rest) {
            (None, _) => false,
            (Some(Value::Object(inner)), Some(rest)) => is_leaf(inner, rest),
            (Some(Value::Object(inner)), None) => inner.is_empty(),
            (Some(_), rest) => rest.is_none(),
        };
        match dot {
            _ if found => return true,
            Some(at) => start = at + 1,
            None => return false,
        }
    }
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
    fn sources_worked_out_from_the_keys_equal_those_recorded_leaf_by_leaf() {
        let keys = [
            (
                "/p/",
                json!({"port": 1, "items": {"a": {"w": 1, "l": "x"}}}),
            ),
            ("/p/items/a", json!({"w": 2})),
            ("/p/items/a-b", json!({})),
            ("/p/items/a/l", json!("y")),
            ("/p/items/b", json!({"w": 3, "l": "z"})),
            ("/p/items/c", json!(null)),
            ("/p/z", json!([1, 2])),
        ];
        let mut leaf_by_leaf = LayerTree::default();
        let mut keyed = KeyedTree::new("/p/");
        for (key, value) in keys.clone() {
            let path: Vec<&str> = key["/p/".len()..]
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            let source = Arc::new(src(Layer::Etcd, key));
            leaf_by_leaf
                .insert_shared(&path, value.clone(), &source)
                .unwrap();
            keyed.insert(&path, value, &source).unwrap();
        }
        let want = merge([&leaf_by_leaf]);
        assert_eq!(want.1.get("items.a.l"), &src(Layer::Etcd, "/p/items/a/l"));
        assert_eq!(want.1.get("items.a.w"), &src(Layer::Etcd, "/p/items/a"));
        assert_eq!(want.1.get("port"), &src(Layer::Etcd, "/p/"));

        let mut merged = Merged::full(&LayerTree::default(), EtcdTree::Keys(keyed), &[]);
        // Until the sources are worked out, their computation shares the tree.
        assert_eq!(Arc::strong_count(&merged.root), 2);
        let reader = merged.sources.clone();
        merged.sources.compute_in_background();
        let from_threads: Vec<usize> = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..4).map(|_| scope.spawn(|| reader.len())).collect();
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(from_threads, vec![want.1.len(); 4]);
        assert_eq!((Value::clone(&merged.root), merged.sources.clone()), want);
        // Settled, nothing else holds the tree: an update changes it in place.
        merged.sources.settle();
        assert_eq!(Arc::strong_count(&merged.root), 1);
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
    fn a_map_key_holding_dots_keeps_its_sources_when_layers_merge_and_when_it_changes() {
        let mut file = LayerTree::default();
        let f = src(Layer::File, "f");
        file.insert(&[], json!({"port": 1, "hosts": {"b": {"w": 1}}}), &f)
            .unwrap();
        let mut etcd = LayerTree::default();
        let key = "/p/hosts/api.example.com";
        let e = src(Layer::Etcd, key);
        etcd.insert(&["hosts", "api.example.com"], json!({"w": 2}), &e)
            .unwrap();
        let (merged, sources) = merge([&file, &etcd]);
        assert_eq!(merged["hosts"]["api.example.com"], json!({"w": 2}));
        assert_eq!(sources.get("hosts.api.example.com.w"), &e);
        assert_eq!(sources.get("hosts.b.w"), &f);

        let mut full = Merged::full(&file, EtcdTree::Leaves(etcd.clone()), &[]);
        assert_eq!(full.sources.get("hosts.api.example.com.w"), &e);
        let e2 = src(Layer::Etcd, key);
        etcd.insert(&["hosts", "api.example.com"], json!({"w": 3, "x": 4}), &e2)
            .unwrap();
        let path = ["hosts".to_string(), "api.example.com".to_string()];
        full.update(&[&file, &etcd], &path)
            .expect("updated in place");
        assert_eq!(
            full.root["hosts"]["api.example.com"],
            json!({"w": 3, "x": 4})
        );
        assert_eq!(full.sources.get("hosts.api.example.com.x"), &e2);
        assert_eq!(full.sources.get("hosts.api.example.com.w"), &e2);
        // A document above the key changes: the key's leaves are looked up from there.
        let doc = src(Layer::Etcd, "/p/hosts");
        etcd.insert(&["hosts"], json!({"c.example.com": {"w": 5}}), &doc)
            .unwrap();
        etcd.insert(&["hosts", "api.example.com"], json!({"w": 3, "x": 4}), &e2)
            .unwrap();
        full.update(&[&file, &etcd], &["hosts".to_string()])
            .expect("updated in place");
        assert_eq!(full.sources.get("hosts.api.example.com.x"), &e2);
        assert_eq!(full.sources.get("hosts.c.example.com.w"), &doc);
    }

    #[test]
    fn a_path_is_a_leaf_through_any_split_of_its_dots() {
        let tree = json!({"a": {"b.c": 1, "b": {"c": {}}}, "a.b": {"c": 2}, "x.y": 3});
        let root = tree.as_object().unwrap();
        for leaf in ["a.b.c", "x.y"] {
            assert!(is_leaf(root, leaf), "{leaf}");
        }
        for not_leaf in ["a", "a.b", "x", "x.y.z", "", "a.b.c.d", "y"] {
            assert!(!is_leaf(root, not_leaf), "{not_leaf}");
        }
        // Many dots and no such fields: each dot is tried once per field that exists.
        assert!(!is_leaf(root, &"a.".repeat(10_000)));
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
