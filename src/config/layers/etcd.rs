//! The etcd layer: the keys under the bound prefix, as of one revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use smallvec::SmallVec;

use crate::config::tree::{Blocked, EtcdTree, KeyedTree, LayerTree};
use crate::config::value::{Lookups, StringFields};
use crate::error::{Error, ErrorKind, Result};
use crate::provenance::{Origin, Source};

/// The fewest keys [`EtcdLayer::put_all`] parses on several threads (below it, starting the
/// threads costs more than it saves).
const PARALLEL_PARSE_MIN: usize = 512;

/// The keys under a prefix with their parsed values. Parsing happens once per write, so a
/// rebuild after a change re-parses only the keys that changed; the exception is the values of
/// a read of the whole prefix, which are moved into the tree built with it (not copied) and
/// parsed again if a later full rebuild needs them.
///
/// Key `<prefix>/a/b` is field path `a.b`; key `<prefix>/` (nothing after the slash) holds a
/// document for the root. A bad value (invalid YAML, too large, a key that cannot name a field)
/// is kept as an error and reported by [`EtcdLayer::tree`] for as long as it is in etcd.
#[derive(Debug)]
pub(crate) struct EtcdLayer {
    prefix: String,
    max_value_bytes: usize,
    entries: BTreeMap<String, Entry>,
    /// The entries of a read of the whole prefix not yet put into `entries` (which is empty
    /// while there are any), in key order: the bind hands the layer over with them, and
    /// [`settle`](Self::settle) makes the map once the handle serves.
    unsettled: Vec<(String, Entry)>,
    /// How many entries hold a bad value (their `value` is an error).
    bad: usize,
    /// The bytes of every key and raw value.
    bytes: usize,
    /// How many entries there are of each depth (the `/`s in the key): a lookup of a key at a
    /// depth no entry has is skipped.
    depths: Vec<usize>,
}

/// The tree [`EtcdLayer::load_page`] builds with a read of the whole prefix.
#[derive(Debug)]
pub(crate) struct Loading {
    /// The tree so far; `None` once a value could not be inserted.
    tree: Option<KeyedTree>,
    /// The last key loaded (pages come in key order).
    last: Option<Vec<u8>>,
    /// The entries loaded, in key order while `sorted`: recorded into the layer at the end,
    /// where a map built from sorted entries costs no key comparisons.
    entries: Vec<(String, Entry)>,
    sorted: bool,
}

impl Loading {
    /// Nothing loaded yet, for the keys under `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        Loading {
            tree: Some(KeyedTree::new(prefix)),
            last: None,
            entries: Vec::new(),
            sorted: true,
        }
    }

    /// Makes room for `additional` more keys (a hint: it only spares the copies of growing).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
        if let Some(tree) = &mut self.tree {
            tree.reserve(additional);
        }
    }
}

/// A page of a read of the whole prefix with each key as text and its parsed value, or why it
/// is bad: see [`EtcdLayer::parse_page`].
#[derive(Debug)]
pub(crate) struct ParsedPage {
    kvs: Vec<ReadKv>,
    values: Vec<(String, Result<Value, String>)>,
}

/// A key's path: its segments below the prefix (held in place up to 4 deep, the usual depth).
type Segments<'k> = SmallVec<[&'k str; 4]>;

/// A key as text and its parsed value with the key's path, or why it is bad.
type Parsed<'k> = (String, Result<(Value, Segments<'k>), String>);

/// One key of a read of the whole prefix: the full etcd key, its value and `mod_revision`. The
/// value's bytes are shared, not copied, by the layer that records it.
pub(crate) type ReadKv = (Vec<u8>, Bytes, i64);

/// The keys of a page as [`EtcdLayer::parse_all`] takes them.
fn borrowed(page: &[ReadKv]) -> Vec<(&[u8], &[u8], i64)> {
    page.iter()
        .map(|(key, value, mod_revision)| (key.as_slice(), &value[..], *mod_revision))
        .collect()
}

/// `kvs` as a read hands them over.
#[cfg(test)]
fn read_kvs(kvs: &[(&[u8], &[u8], i64)]) -> Vec<ReadKv> {
    kvs.iter()
        .map(|&(key, value, mod_revision)| {
            (key.to_vec(), Bytes::copy_from_slice(value), mod_revision)
        })
        .collect()
}

#[derive(Debug)]
struct Entry {
    mod_revision: i64,
    depth: usize,
    /// The value as etcd holds it; shared with the read that brought it in, if any.
    raw: Bytes,
    /// The parsed value, or why it is bad. `Ok(None)` once the value has been moved into the
    /// tree built with the read ([`load_page`](EtcdLayer::load_page)): it is parsed again from
    /// `raw` when a later tree needs it.
    value: Result<Option<Value>, String>,
}

impl EtcdLayer {
    /// An empty layer for `prefix`, which ends with `/`.
    pub(crate) fn new(prefix: String, max_value_bytes: usize) -> Self {
        debug_assert!(prefix.ends_with('/'));
        EtcdLayer {
            prefix,
            max_value_bytes,
            entries: BTreeMap::new(),
            unsettled: Vec::new(),
            bad: 0,
            bytes: 0,
            depths: Vec::new(),
        }
    }

    /// Puts the entries of the read of the whole prefix into the map of entries, if that was
    /// left to do (see [`loaded_tree`](Self::loaded_tree)). Every change to the layer settles
    /// it first, as does every tree made from the layer; the reload task settles it as it
    /// starts.
    pub(crate) fn settle(&mut self) {
        if !self.unsettled.is_empty() {
            // In key order: a map built from sorted entries compares no keys.
            self.entries = std::mem::take(&mut self.unsettled).into_iter().collect();
        }
    }

    /// The prefix the layer's keys are under (ends with `/`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Records a put of `key` (a full etcd key under the prefix) at `mod_revision`.
    pub(crate) fn put(&mut self, key: &[u8], raw: &[u8], mod_revision: i64, fields: &StringFields) {
        let (key, value) = self.parse(key, raw, fields, &mut Lookups::default());
        self.put_parsed(key, raw, mod_revision, value.map(|(v, _)| Some(v)));
    }

    /// Records the puts of `kvs` (full etcd keys with their values and `mod_revision`s) in
    /// order, as [`put`](Self::put) would one by one. Parsing is the costly part of a read of
    /// the whole prefix and each value parses on its own, so a large batch is parsed on up to
    /// 4 threads (as many as the machine has cores) before the entries are recorded in order.
    pub(crate) fn put_all(&mut self, kvs: &[(&[u8], &[u8], i64)], fields: &StringFields) {
        let parsed = self.parse_all(kvs, fields);
        for (&(_, raw, mod_revision), (key, value)) in kvs.iter().zip(parsed) {
            self.put_parsed(key, raw, mod_revision, value.map(|(v, _)| Some(v)));
        }
    }

    /// Records the puts of `kvs` into an empty layer, as [`put_all`](Self::put_all) does, and
    /// returns the layer's tree, as [`tree`](Self::tree) would: each parsed value is moved into
    /// the tree instead of kept beside its raw text (the costly copy of a large read), and is
    /// parsed again from that text when a later tree needs it.
    ///
    /// # Errors
    /// As [`tree`](Self::tree); the layer holds every key either way.
    #[cfg(test)]
    pub(crate) fn put_all_into_tree(
        &mut self,
        kvs: &[(&[u8], &[u8], i64)],
        fields: &StringFields,
    ) -> Result<LayerTree> {
        let mut load = Loading::new(&self.prefix);
        self.load_page(&read_kvs(kvs), fields, &mut load);
        self.loaded_tree(load, fields).map(EtcdTree::into_layer)
    }

    /// Records one page of a read of the whole prefix into an empty layer (pages in key order)
    /// and inserts its parsed values into the tree `load` builds with the read (with the source
    /// of each key, see [`KeyedTree`]), which [`loaded_tree`](Self::loaded_tree) returns once
    /// every page is in.
    ///
    /// Key order inserts a key before every key below it (its key is a prefix of theirs), as
    /// the shallow-first order of [`tree`](Self::tree) does, and inserts of unrelated paths
    /// commute, so the tree is the same. At the first bad or blocked value (or a key out of
    /// order) the tree is dropped: `loaded_tree` then builds it the ordinary way, which names
    /// the key to blame.
    pub(crate) fn load_page(&self, page: &[ReadKv], fields: &StringFields, load: &mut Loading) {
        debug_assert!(self.entries.is_empty(), "the layer is filled at the end");
        let parsed = self.parse_all(&borrowed(page), fields);
        for (kv, (key, value)) in page.iter().zip(parsed) {
            Self::load_one(kv, key, value, load);
        }
    }

    /// Parses the values of one page of a read of the whole prefix, as
    /// [`load_page`](Self::load_page) does, without putting them into a tree yet: for a page
    /// of the upper part of a split read, parsed as it arrives while the lower part is still
    /// being read, and loaded with [`load_parsed`](Self::load_parsed) once that part is in.
    pub(crate) fn parse_page(&self, kvs: Vec<ReadKv>, fields: &StringFields) -> ParsedPage {
        let refs = borrowed(&kvs);
        let values = self
            .parse_all(&refs, fields)
            .into_iter()
            .map(|(key, value)| (key, value.map(|(value, _)| value)))
            .collect();
        drop(refs);
        ParsedPage { kvs, values }
    }

    /// Loads a page parsed by [`parse_page`](Self::parse_page), as
    /// [`load_page`](Self::load_page) would have loaded it, and returns its keys.
    pub(crate) fn load_parsed(&self, page: ParsedPage, load: &mut Loading) -> Vec<ReadKv> {
        for (kv, (key, value)) in page.kvs.iter().zip(page.values) {
            // A value parsed means its key is UTF-8 with a valid path.
            let value = value.and_then(|value| {
                let text = std::str::from_utf8(&kv.0).map_err(|e| e.to_string())?;
                Ok((value, self.segments(text)?))
            });
            Self::load_one(kv, key, value, load);
        }
        page.kvs
    }

    /// Records one key of a read of the whole prefix in `load` and inserts its parsed value
    /// into the tree `load` builds (see [`load_page`](Self::load_page)).
    fn load_one(
        (raw_key, raw, mod_revision): &ReadKv,
        key: String,
        value: Result<(Value, Segments<'_>), String>,
        load: &mut Loading,
    ) {
        let tree = &mut load.tree;
        if load
            .last
            .as_deref()
            .is_some_and(|last| raw_key.as_slice() <= last)
        {
            *tree = None;
        }
        let mod_revision = *mod_revision;
        let (kept, value) = match value {
            Ok(parsed) => (Ok(None), Some(parsed)),
            Err(msg) => (Err(msg), None),
        };
        let source = tree.as_ref().and(value.as_ref()).map(|_| {
            Arc::new(Source::new(Origin::Etcd {
                key: key.clone(),
                mod_revision,
            }))
        });
        // Keys that are not valid UTF-8 may read as the same text: such a key is bad anyway.
        if load.sorted && load.entries.last().is_some_and(|(last, _)| key <= *last) {
            load.sorted = false;
            *tree = None;
        }
        let entry = Entry {
            mod_revision,
            depth: key.matches('/').count(),
            raw: raw.clone(),
            value: kept,
        };
        load.entries.push((key, entry));
        let inserted = match (tree.as_mut(), value, source) {
            (Some(t), Some((value, path)), Some(source)) => t.insert(&path, value, &source).is_ok(),
            _ => false,
        };
        if !inserted {
            *tree = None;
        }
        // Kept for the order check of the next key, in a buffer reused from key to key.
        match &mut load.last {
            Some(last) => {
                last.clear();
                last.extend_from_slice(raw_key);
            }
            None => load.last = Some(raw_key.clone()),
        }
    }

    /// The tree built by [`load_page`](Self::load_page), or (where a value was bad or blocked)
    /// the layer's tree built the ordinary way.
    ///
    /// # Errors
    /// As [`tree`](Self::tree).
    pub(crate) fn loaded_tree(&mut self, load: Loading, fields: &StringFields) -> Result<EtcdTree> {
        if load.sorted {
            for (key, entry) in &load.entries {
                self.count(key, entry);
            }
            // The map is not needed for the bound snapshot (made from the tree): it is made
            // once the handle serves.
            self.unsettled = load.entries;
        } else {
            for (key, entry) in load.entries {
                self.record(key, entry);
            }
        }
        match load.tree {
            Some(tree) if self.bad == 0 => Ok(EtcdTree::Keys(tree)),
            _ => self.tree(fields).map(EtcdTree::Leaves),
        }
    }

    /// Every key of `kvs` as [`parse`](Self::parse) gives it, in order; a large batch is
    /// parsed in parts on up to 4 threads (as many as the machine has cores): the calling
    /// thread parses the first part while threads started for the others parse theirs.
    fn parse_all<'k>(
        &self,
        kvs: &[(&'k [u8], &[u8], i64)],
        fields: &StringFields,
    ) -> Vec<Parsed<'k>> {
        let parse_part = |part: &[(&'k [u8], &[u8], i64)]| {
            let mut lookups = Lookups::default();
            part.iter()
                .map(|&(key, raw, _)| self.parse(key, raw, fields, &mut lookups))
                .collect::<Vec<_>>()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        if threads < 2 || kvs.len() < PARALLEL_PARSE_MIN {
            return parse_part(kvs);
        }
        let (first, rest) = kvs.split_at(kvs.len().div_ceil(threads));
        std::thread::scope(|scope| {
            let others: Vec<_> = rest
                .chunks(first.len())
                .map(|part| scope.spawn(move || parse_part(part)))
                .collect();
            let mut parsed = parse_part(first);
            parsed.reserve(rest.len());
            for other in others {
                match other.join() {
                    Ok(part) => parsed.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            parsed
        })
    }

    /// The key as text and its parsed value with the key's path (segments below the prefix), or
    /// why it is bad; `lookups` remembers schema lookups from the key parsed before.
    fn parse<'a, 'k>(
        &self,
        key: &'k [u8],
        raw: &[u8],
        fields: &'a StringFields,
        lookups: &mut Lookups<'a>,
    ) -> Parsed<'k> {
        match std::str::from_utf8(key) {
            Ok(k) => {
                let value = match self.segments(k) {
                    Err(msg) => Err(msg),
                    Ok(path) if path.len() > fields.max_depth() => Err(format!(
                        "key has {} path segments below the prefix, over the limit of {}",
                        path.len(),
                        fields.max_depth()
                    )),
                    Ok(_) if raw.len() > self.max_value_bytes => Err(format!(
                        "value is {} bytes, over the limit of {} bytes per key",
                        raw.len(),
                        self.max_value_bytes
                    )),
                    Ok(path) => fields.parse_with(&path, raw, lookups).map(|v| (v, path)),
                };
                (k.to_string(), value)
            }
            Err(_) => (
                String::from_utf8_lossy(key).into_owned(),
                Err("key is not valid UTF-8".to_string()),
            ),
        }
    }

    /// Records one key's value (`raw`, parsed as `value`).
    fn put_parsed(
        &mut self,
        key: String,
        raw: &[u8],
        mod_revision: i64,
        value: Result<Option<Value>, String>,
    ) {
        let entry = Entry {
            mod_revision,
            depth: key.matches('/').count(),
            raw: Bytes::copy_from_slice(raw),
            value,
        };
        self.record(key, entry);
    }

    fn record(&mut self, key: String, entry: Entry) {
        self.settle();
        self.count(&key, &entry);
        let key_len = key.len();
        if let Some(old) = self.entries.insert(key, entry) {
            self.forget(&old, key_len);
        }
    }

    /// Records a delete of `key`.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.settle();
        let key = String::from_utf8_lossy(key);
        if let Some(old) = self.entries.remove(key.as_ref()) {
            self.forget(&old, key.len());
        }
    }

    /// Counts an entry in as recorded.
    fn count(&mut self, key: &str, entry: &Entry) {
        self.bad += usize::from(entry.value.is_err());
        self.bytes += key.len() + entry.raw.len();
        if self.depths.len() <= entry.depth {
            self.depths.resize(entry.depth + 1, 0);
        }
        self.depths[entry.depth] += 1;
    }

    /// Counts a recorded entry out (it was replaced or deleted).
    fn forget(&mut self, old: &Entry, key_len: usize) {
        self.bad -= usize::from(old.value.is_err());
        self.bytes = self.bytes.saturating_sub(key_len + old.raw.len());
        self.depths[old.depth] -= 1;
    }

    /// Forgets every key (before a full re-read).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.unsettled.clear();
        self.bad = 0;
        self.bytes = 0;
        self.depths.clear();
    }

    /// Whether some key holds a bad value (one that [`tree`](Self::tree) reports).
    pub(crate) fn has_bad(&self) -> bool {
        self.bad > 0
    }

    /// The bytes of every key and raw value under the prefix.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The field path (segments) that `key` names, if it names one.
    pub(crate) fn path_of(&self, key: &str) -> Option<Vec<String>> {
        self.segments(key)
            .ok()
            .map(|s| s.into_iter().map(str::to_string).collect())
    }

    /// The layer's tree as far as the field at `path` (not empty) is concerned: the keys at and
    /// above `path` and the keys below it, inserted as [`tree`](Self::tree) inserts them. At
    /// and below `path` it equals the whole layer's tree. `None` if one of those keys is bad or
    /// blocked (the whole tree then reports it).
    pub(crate) fn subtree(&mut self, path: &[String], fields: &StringFields) -> Option<LayerTree> {
        self.settle();
        let mut keys: Vec<(&String, &Entry)> = Vec::new();
        for n in 0..=path.len() {
            // The prefix ends with `/`: the key of the root and of a top-level field have the
            // prefix's depth, each segment past the first one more.
            let depth = self.prefix.matches('/').count() + n.saturating_sub(1);
            if self.depths.get(depth).is_none_or(|&count| count == 0) {
                continue;
            }
            let key = format!("{}{}", self.prefix, path[..n].join("/"));
            if let Some(found) = self.entries.get_key_value(&key) {
                keys.push(found);
            }
        }
        let below = format!("{}{}/", self.prefix, path.join("/"));
        keys.extend(
            self.entries
                .range(below.clone()..)
                .take_while(|(k, _)| k.starts_with(&below)),
        );
        keys.sort_by(|a, b| a.1.depth.cmp(&b.1.depth).then_with(|| a.0.cmp(b.0)));
        let mut tree = LayerTree::default();
        let mut lookups = Lookups::default();
        for (key, entry) in keys {
            let value = self.value_of(key, entry, fields, &mut lookups).ok()?;
            let segments = self.segments(key).ok()?;
            let source = Arc::new(Source::new(Origin::Etcd {
                key: key.clone(),
                mod_revision: entry.mod_revision,
            }));
            tree.insert_shared(&segments, value, &source).ok()?;
        }
        Some(tree)
    }

    /// The number of keys under the prefix.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.unsettled.len()
    }

    /// Every key with its raw value and `mod_revision`, in key order.
    pub(crate) fn raw_entries(&self) -> impl Iterator<Item = (&str, &[u8], i64)> {
        // One of the two is empty; each is in key order.
        let unsettled = self.unsettled.iter().map(|(k, e)| (k, e));
        self.entries
            .iter()
            .chain(unsettled)
            .map(|(k, e)| (k.as_str(), &e.raw[..], e.mod_revision))
    }

    /// The dotted field path a key under the prefix names (`<prefix>/a/b` → `a.b`), if any.
    pub(crate) fn field_path(&self, key: &str) -> Option<String> {
        self.segments(key).ok().map(|s| s.join("."))
    }

    /// The keys and their `mod_revision`s, in key order.
    pub(crate) fn revisions(&self) -> impl Iterator<Item = (&str, i64)> {
        let unsettled = self.unsettled.iter().map(|(k, e)| (k, e));
        self.entries
            .iter()
            .chain(unsettled)
            .map(|(k, e)| (k.as_str(), e.mod_revision))
    }

    fn segments<'k>(&self, key: &'k str) -> Result<Segments<'k>, String> {
        let rel = key
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| format!("key is not under the prefix `{}`", self.prefix))?;
        if rel.is_empty() {
            return Ok(Segments::new());
        }
        let segments: Segments<'_> = rel.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err("key has an empty path segment (`//` or a trailing `/`)".to_string());
        }
        Ok(segments)
    }

    /// The error for `key` (at `path`) meeting a non-object at field `at`. Names whichever of
    /// the two keys was written last: that write made the conflict.
    fn blocked(&self, key: &str, entry: &Entry, path: &[&str], at: &str) -> Error {
        let origin = |key: &str, mod_revision: i64| Origin::Etcd {
            key: key.to_string(),
            mod_revision,
        };
        if at.is_empty() {
            return Error::new(ErrorKind::Validation, "the root document must be a mapping")
                .with_origin(&origin(key, entry.mod_revision))
                .with_field("");
        }
        let at_segments: Vec<&str> = at.split('.').collect();
        // The key holding the non-object: the key of field `at` or of a field above it, down to
        // the root document (`<prefix>/`, n = 0), whose mapping may set `at` itself.
        let blocker = (0..=at_segments.len()).rev().find_map(|n| {
            let candidate = format!("{}{}", self.prefix, at_segments[..n].join("/"));
            self.entries
                .get_key_value(&candidate)
                .map(|(k, e)| (k.clone(), e.mod_revision))
        });
        let (culprit, field) = match &blocker {
            Some((blocker_key, rev)) if *rev > entry.mod_revision => {
                (origin(blocker_key, *rev), at.to_string())
            }
            _ => (origin(key, entry.mod_revision), path.join(".")),
        };
        let other = blocker.map(|(k, _)| k).unwrap_or_else(|| key.to_string());
        let message = if culprit.key().as_deref() == Some(key) {
            format!("field `{at}` holds a value that is not an object (key `{other}`), so this key cannot set a field below it")
        } else {
            format!("this key sets field `{at}` to a value that is not an object, but key `{key}` sets a field below it")
        };
        Error::new(ErrorKind::Validation, message)
            .with_origin(&culprit)
            .with_field(field)
    }

    /// An entry's parsed value (a copy, or parsed again from its raw text where the value was
    /// moved into the tree built with the read), or why it is bad.
    fn value_of<'a>(
        &self,
        key: &str,
        entry: &Entry,
        fields: &'a StringFields,
        lookups: &mut Lookups<'a>,
    ) -> Result<Value, String> {
        match &entry.value {
            Ok(Some(value)) => Ok(value.clone()),
            Ok(None) => self
                .parse(key.as_bytes(), &entry.raw, fields, lookups)
                .1
                .map(|(v, _)| v),
            Err(msg) => Err(msg.clone()),
        }
    }

    /// The layer as a tree, or the first bad key (in key order, shallow keys first). `fields`
    /// is the parser the values were recorded with.
    pub(crate) fn tree(&mut self, fields: &StringFields) -> Result<LayerTree> {
        self.settle();
        // The entries come in key order, so a stable sort by depth alone orders them by
        // (depth, key) without comparing keys.
        let mut ordered: Vec<(&String, &Entry)> = self.entries.iter().collect();
        ordered.sort_by_key(|(_, entry)| entry.depth);
        let mut tree = LayerTree::default();
        let mut lookups = Lookups::default();
        for (key, entry) in ordered {
            let source = Arc::new(Source::new(Origin::Etcd {
                key: key.clone(),
                mod_revision: entry.mod_revision,
            }));
            let bad =
                |msg: String| Error::new(ErrorKind::Validation, msg).with_origin(&source.origin);
            let value = self
                .value_of(key, entry, fields, &mut lookups)
                .map_err(bad)?;
            let path = self.segments(key).map_err(bad)?;
            tree.insert_shared(&path, value, &source)
                .map_err(|Blocked(at)| self.blocked(key, entry, &path, &at))?;
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::{merge, Merged};
    use serde_json::json;

    fn layer() -> (EtcdLayer, StringFields) {
        (
            EtcdLayer::new("/p/".into(), 1024),
            StringFields::new(json!({})),
        )
    }

    #[test]
    fn keys_split_into_segments() {
        let (l, _) = layer();
        for depth in [0, 1, 15, 16, 17, 40] {
            let segments: Vec<String> = (0..depth).map(|i| format!("s{i}")).collect();
            let key = format!("/p/{}", segments.join("/"));
            assert_eq!(l.segments(&key).unwrap()[..], segments, "{depth} segments");
        }
        assert!(l
            .segments("/p/a//b")
            .unwrap_err()
            .contains("empty path segment"));
        assert!(l
            .segments("/p/a/")
            .unwrap_err()
            .contains("empty path segment"));
        assert!(l
            .segments("/q/a")
            .unwrap_err()
            .contains("not under the prefix"));
    }

    #[test]
    fn keys_become_field_paths_and_deeper_keys_win() {
        let (mut l, f) = layer();
        l.put(b"/p/database", b"{host: a, port: 1}", 2, &f);
        l.put(b"/p/database/host", b"b", 3, &f);
        l.put(b"/p/port", b"8080", 4, &f);
        let (v, s) = merge([&l.tree(&f).unwrap()]);
        assert_eq!(
            v,
            json!({"database": {"host": "b", "port": 1}, "port": 8080})
        );
        assert_eq!(s.get("database.host").revision, Some(3));
        l.delete(b"/p/database/host");
        let (v, _) = merge([&l.tree(&f).unwrap()]);
        assert_eq!(v["database"]["host"], json!("a"));
    }

    #[test]
    fn put_all_on_threads_equals_puts_one_by_one() {
        let f = StringFields::new(json!({}));
        let keys: Vec<(String, String, i64)> = (0..3 * PARALLEL_PARSE_MIN)
            .map(|i| {
                let value = match i % 5 {
                    0 => format!("{{weight: {i}, label: x}}"),
                    1 => format!("{i}"),
                    2 => "[1, 2".to_string(),
                    3 => format!("{{\"a\": {i}}}"),
                    _ => "plain text".to_string(),
                };
                (format!("/p/items/k{i:06}"), value, i as i64 + 2)
            })
            .collect();
        let batch: Vec<(&[u8], &[u8], i64)> = keys
            .iter()
            .map(|(k, v, r)| (k.as_bytes(), v.as_bytes(), *r))
            .collect();
        let mut one_by_one = EtcdLayer::new("/p/".into(), 1024);
        for &(k, v, r) in &batch {
            one_by_one.put(k, v, r, &f);
        }
        let mut all = EtcdLayer::new("/p/".into(), 1024);
        all.put_all(&batch, &f);
        assert_eq!(all.len(), one_by_one.len());
        assert_eq!(all.bytes(), one_by_one.bytes());
        assert_eq!(all.bad, one_by_one.bad);
        for ((ka, a), (kb, b)) in all.entries.iter().zip(&one_by_one.entries) {
            assert_eq!(ka, kb);
            assert_eq!(a.value, b.value, "{ka}");
            assert_eq!((a.mod_revision, a.depth), (b.mod_revision, b.depth));
        }
        assert_eq!(
            all.tree(&f).unwrap_err().to_string(),
            one_by_one.tree(&f).unwrap_err().to_string()
        );
    }

    #[test]
    fn the_tree_built_with_a_read_equals_the_tree_built_after_it() {
        let f = StringFields::new(json!({}));
        // A root document that deeper keys override, items with and without a key below them,
        // documents and JSON: in key order, as a read returns them.
        let mut keys: Vec<(String, String)> = vec![(
            "/p/".to_string(),
            "{port: 1, items: {k000000: {weight: 7, extra: true}}}".to_string(),
        )];
        keys.extend((0..2 * PARALLEL_PARSE_MIN).map(|i| match i % 4 {
            0 => (
                format!("/p/items/k{i:06}"),
                format!("{{weight: {i}, label: x}}"),
            ),
            1 => (format!("/p/items/k{:06}/label", i - 1), format!("l{i}")),
            2 => (format!("/p/n{i:06}"), "a: [1, {b: 2}]".to_string()),
            _ => (format!("/p/s{i:06}"), format!("{{\"a\": {i}}}")),
        }));
        keys.sort();
        let batch: Vec<(&[u8], &[u8], i64)> = keys
            .iter()
            .zip(2..)
            .map(|((k, v), r)| (k.as_bytes(), v.as_bytes(), r))
            .collect();
        let mut kept = EtcdLayer::new("/p/".into(), 1024);
        kept.put_all(&batch, &f);
        let want = merge([&kept.tree(&f).unwrap()]);

        // Two pages, as the bind's read hands them over: the tree is built with them.
        let mut moved = EtcdLayer::new("/p/".into(), 1024);
        let mut load = Loading::new("/p/");
        let (first, second) = batch.split_at(batch.len() / 2);
        moved.load_page(&read_kvs(first), &f, &mut load);
        moved.load_page(&read_kvs(second), &f, &mut load);
        assert!(load.tree.is_some() && load.sorted, "built with the read");
        let built = moved.loaded_tree(load, &f).unwrap();
        assert!(
            matches!(built, EtcdTree::Keys(_)),
            "with the source of every key"
        );
        // The sources the merge works out in the background equal those built key by key.
        let merged = Merged::full(&LayerTree::default(), built, &[]);
        assert_eq!((Value::clone(&merged.root), merged.sources), want);
        assert_eq!(
            (moved.len(), moved.bytes(), moved.bad),
            (kept.len(), kept.bytes(), kept.bad)
        );
        // The map of entries is made later (`settle`); until then the layer reads the same.
        assert!(moved.entries.is_empty() && !moved.unsettled.is_empty());
        assert!(moved.raw_entries().eq(kept.raw_entries()));
        assert!(moved.revisions().eq(kept.revisions()));
        // The moved values are parsed again for a later tree, and for a subtree.
        assert_eq!(merge([&moved.tree(&f).unwrap()]), want);
        assert!(moved.unsettled.is_empty(), "a tree settles the layer");
        assert!(moved.raw_entries().eq(kept.raw_entries()));
        let path = vec!["items".to_string(), "k000004".to_string()];
        assert_eq!(
            merge([&moved.subtree(&path, &f).unwrap()]),
            merge([&kept.subtree(&path, &f).unwrap()])
        );

        // Keys out of order: the tree is built the ordinary way, with the same result.
        let mut shuffled = batch.clone();
        shuffled.reverse();
        let mut load = Loading::new("/p/");
        let mut reversed = EtcdLayer::new("/p/".into(), 1024);
        reversed.load_page(&read_kvs(&shuffled), &f, &mut load);
        assert!(load.tree.is_none());
        let ordinary = reversed.loaded_tree(load, &f).unwrap();
        assert!(matches!(ordinary, EtcdTree::Leaves(_)));
        assert_eq!(merge([&ordinary.into_layer()]), want);

        // A bad key: the same error as the tree built after the read.
        let bad: Vec<(&[u8], &[u8], i64)> = vec![
            (b"/p/port", b"8080", 2),
            (b"/p/port/x", b"1", 3),
            (b"/p/z", b"[1, 2", 4),
        ];
        let mut kept = EtcdLayer::new("/p/".into(), 1024);
        kept.put_all(&bad, &f);
        let mut moved = EtcdLayer::new("/p/".into(), 1024);
        assert_eq!(
            moved.put_all_into_tree(&bad, &f).unwrap_err().to_string(),
            kept.tree(&f).unwrap_err().to_string()
        );
    }

    #[test]
    fn bad_keys_are_reported_by_name() {
        let (mut l, f) = layer();
        l.put(b"/p/port", b"8080", 2, &f);
        l.put(b"/p/port/x", b"1", 3, &f);
        let err = l.tree(&f).unwrap_err();
        assert_eq!(err.key(), Some("/p/port/x"));
        assert!(err.message().contains("`port`"), "{err}");

        let (mut l, f) = layer();
        l.put(b"/p/big", &[b'a'; 2048], 2, &f);
        let err = l.tree(&f).unwrap_err();
        assert!(err.message().contains("2048 bytes"), "{err}");

        let (mut l, f) = layer();
        let deep = format!("/p/{}", vec!["a"; 10_000].join("/"));
        l.put(deep.as_bytes(), b"1", 2, &f);
        let err = l.tree(&f).unwrap_err();
        assert!(err.message().contains("10000 path segments"), "{err}");
        assert_eq!(err.key(), Some(deep.as_str()));

        // A root document blocking an older key below it: the document is named, not the key.
        let (mut l, f) = layer();
        l.put(b"/p/limits/max", b"1", 2, &f);
        l.put(b"/p/", b"limits: 5", 3, &f);
        let err = l.tree(&f).unwrap_err();
        assert_eq!(err.key(), Some("/p/"), "{err}");
        assert!(err.message().contains("`/p/limits/max`"), "{err}");
        // And an older root document blocking a newer key: the key is named, with the document.
        let (mut l, f) = layer();
        l.put(b"/p/", b"limits: 5", 2, &f);
        l.put(b"/p/limits/max", b"1", 3, &f);
        let err = l.tree(&f).unwrap_err();
        assert_eq!(err.key(), Some("/p/limits/max"), "{err}");
        assert!(err.message().contains("(key `/p/`)"), "{err}");

        let (mut l, f) = layer();
        l.put(b"/p/a//b", b"1", 2, &f);
        assert!(l
            .tree(&f)
            .unwrap_err()
            .message()
            .contains("empty path segment"));
    }
}
