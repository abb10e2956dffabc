//! Incremental deserialization: rebuilding a typed value from the previous one and the field
//! paths a change touched, sharing everything else ([`Rebuild`], [`ChangedPaths`],
//! [`ConfigMap`]).
//!
//! A reload that changed one key of a 10,000-key prefix re-deserializes only the part of the
//! value at that key; the rest is cloned from the previous snapshot's value (for a
//! [`ConfigMap`], shared: cloning it copies no entry). [`docs::incremental`](crate::docs::incremental)
//! says how correctness is kept.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::chunks::Chunks;

/// The field paths a change touched, relative to the value being rebuilt: each path is a list of
/// document field names (serde names), e.g. `["database", "host"]`. An empty path means the
/// whole value changed.
#[derive(Clone, Debug, Default)]
pub struct ChangedPaths<'a> {
    paths: Vec<&'a [String]>,
}

impl<'a> ChangedPaths<'a> {
    /// The changed paths `paths` (each a list of field names from the value's root).
    pub fn new(paths: impl IntoIterator<Item = &'a [String]>) -> Self {
        ChangedPaths {
            paths: paths.into_iter().collect(),
        }
    }

    /// True when the value as a whole changed (some path is empty): rebuild it from its
    /// document in full.
    pub fn is_whole(&self) -> bool {
        self.paths.iter().any(|p| p.is_empty())
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Whether a path starts with field `name` (something at or below that field changed).
    pub fn touches(&self, name: &str) -> bool {
        self.paths
            .iter()
            .any(|p| p.first().map(String::as_str) == Some(name))
    }

    /// The paths below field `name`, relative to it (`["db", "host"]` → `["host"]` for
    /// `below("db")`); a path that is exactly `[name]` becomes the empty path (the field
    /// changed as a whole).
    #[must_use]
    pub fn below(&self, name: &str) -> ChangedPaths<'a> {
        ChangedPaths {
            paths: self
                .paths
                .iter()
                .filter(|p| p.first().map(String::as_str) == Some(name))
                .map(|p| &p[1..])
                .collect(),
        }
    }

    /// The distinct first segments of the paths (the fields that changed), in path order.
    pub fn fields(&self) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = self
            .paths
            .iter()
            .filter_map(|p| p.first().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A value that can be rebuilt from its previous value and the paths that changed in its
/// document, instead of deserialized in full.
///
/// `#[derive(CoordConfig)]` implements it for the config struct (and `#[derive(Rebuild)]` for
/// nested structs): a changed field is rebuilt (through its own `Rebuild` impl where it has
/// one, by deserializing the field otherwise), an unchanged field is cloned from the previous
/// value (deserialized from the document when it is not `Clone`). [`ConfigMap`] rebuilds only
/// its changed entries.
///
/// # Contract
/// `rebuild(previous, doc, changed)` must return what `Self::deserialize(doc)` returns, given
/// that `previous` was deserialized from a document that differs from `doc` only at the
/// `changed` paths. An `Err` is never shown as such: the reload then deserializes the whole
/// document, whose error (or success) is the one that counts, so returning an error is always
/// a safe way to decline.
pub trait Rebuild: DeserializeOwned {
    /// Rebuilds from `previous` and the document `doc` (the whole new document of this value).
    ///
    /// # Errors
    /// Any error makes the caller fall back to a full deserialization of `doc`.
    fn rebuild(
        previous: &Self,
        doc: &Value,
        changed: &ChangedPaths<'_>,
    ) -> Result<Self, serde_json::Error>;
}

/// An error that only asks the caller to deserialize in full.
pub(crate) fn decline() -> serde_json::Error {
    serde::de::Error::custom("incremental rebuild declined")
}

/// Selects, in generated code, how a field is rebuilt: through [`Rebuild`] where the field's
/// type implements it, by deserializing it otherwise (auto-ref specialization: call methods on
/// `&&Probe::<T>::new()`).
#[doc(hidden)]
pub struct Probe<T>(PhantomData<fn() -> T>);

impl<T> Probe<T> {
    #[doc(hidden)]
    pub fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T> Default for Probe<T> {
    fn default() -> Self {
        Probe::new()
    }
}

impl<T> fmt::Debug for Probe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

/// Rebuilds a changed field through its [`Rebuild`] impl.
#[doc(hidden)]
pub trait ViaRebuild<T> {
    #[doc(hidden)]
    fn rebuild_field(
        &self,
        previous: &T,
        doc: &Value,
        changed: &ChangedPaths<'_>,
    ) -> Result<T, serde_json::Error>;
}

impl<T: Rebuild> ViaRebuild<T> for &Probe<T> {
    fn rebuild_field(
        &self,
        previous: &T,
        doc: &Value,
        changed: &ChangedPaths<'_>,
    ) -> Result<T, serde_json::Error> {
        T::rebuild(previous, doc, changed)
    }
}

/// Rebuilds a changed field by deserializing it.
#[doc(hidden)]
pub trait ViaDeserialize<T> {
    #[doc(hidden)]
    fn rebuild_field(
        &self,
        previous: &T,
        doc: &Value,
        changed: &ChangedPaths<'_>,
    ) -> Result<T, serde_json::Error>;
}

impl<T: DeserializeOwned> ViaDeserialize<T> for Probe<T> {
    fn rebuild_field(
        &self,
        _previous: &T,
        doc: &Value,
        _changed: &ChangedPaths<'_>,
    ) -> Result<T, serde_json::Error> {
        T::deserialize(doc)
    }
}

/// Keeps an unchanged field by cloning it.
#[doc(hidden)]
pub trait KeepClone<T> {
    #[doc(hidden)]
    fn keep_field(&self, previous: &T, doc: Option<&Value>) -> Result<T, serde_json::Error>;
}

impl<T: Clone> KeepClone<T> for &Probe<T> {
    fn keep_field(&self, previous: &T, _doc: Option<&Value>) -> Result<T, serde_json::Error> {
        Ok(previous.clone())
    }
}

/// Keeps an unchanged field that is not `Clone` by deserializing it again.
#[doc(hidden)]
pub trait KeepDeserialize<T> {
    #[doc(hidden)]
    fn keep_field(&self, previous: &T, doc: Option<&Value>) -> Result<T, serde_json::Error>;
}

impl<T: DeserializeOwned> KeepDeserialize<T> for Probe<T> {
    fn keep_field(&self, _previous: &T, doc: Option<&Value>) -> Result<T, serde_json::Error> {
        match doc {
            Some(doc) => T::deserialize(doc),
            None => Err(decline()),
        }
    }
}

/// A map from string keys to values whose entries are shared between snapshots: a persistent
/// ordered map of `Arc`ed values, kept in sorted chunks of up to 128 entries that snapshots
/// share.
///
/// Use it for big keyed collections in a config type (`items: ConfigMap<Item>` for keys
/// `<prefix>/items/<name>`): a reload that changed one entry deserializes that entry only, and
/// the new snapshot shares every other entry (and most of the map's nodes) with the one before,
/// so memory does not grow with the number of snapshots kept (a changed entry copies its chunk
/// and the list of chunks, one pointer per 64 entries or so). In the document and the JSON
/// Schema it is a map like `BTreeMap<String, V>`; it iterates in key order. Lookups, inserts and
/// removes take O(log n) comparisons; deserializing a map whose keys arrive in order (as from a
/// bound document) builds it in one pass.
pub struct ConfigMap<V> {
    entries: Chunks<V>,
}

impl<V> ConfigMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        ConfigMap {
            entries: Chunks::new(),
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|v| &**v)
    }

    /// The value at `key` as its shared `Arc` (the same allocation in every snapshot that did
    /// not change the entry).
    pub fn get_arc(&self, key: &str) -> Option<&Arc<V>> {
        self.entries.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.get(key).is_some()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| &**k)
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, value: V) -> Option<Arc<V>> {
        self.entries.insert(key.into(), Arc::new(value))
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Arc<V>> {
        self.entries.remove(key)
    }
}

impl<V> Clone for ConfigMap<V> {
    /// Shares the map: no entry is copied.
    fn clone(&self) -> Self {
        ConfigMap {
            entries: self.entries.clone(),
        }
    }
}

impl<V> Default for ConfigMap<V> {
    fn default() -> Self {
        ConfigMap::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for ConfigMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for ConfigMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.ptr_eq(&other.entries)
            || self.len() == other.len()
                && self
                    .entries
                    .iter()
                    .zip(other.entries.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && (Arc::ptr_eq(va, vb) || va == vb))
    }
}

impl<V: Eq> Eq for ConfigMap<V> {}

impl<K: Borrow<str>, V> FromIterator<(K, V)> for ConfigMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        ConfigMap {
            entries: Chunks::from_entries(
                iter.into_iter()
                    .map(|(k, v)| (Arc::from(k.borrow()), Arc::new(v)))
                    .collect(),
            ),
        }
    }
}

impl<V: Serialize> Serialize for ConfigMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for ConfigMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = ConfigMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Sized by the hint up to 1 MiB of entries, as serde sizes its own collections
                // (a hint is not checked against what follows).
                let most = (1 << 20) / std::mem::size_of::<(Arc<str>, Arc<V>)>();
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(most));
                while let Some(k) = map.next_key_seed(SharedKey)? {
                    entries.push((k, Arc::new(map.next_value::<V>()?)));
                }
                Ok(ConfigMap {
                    entries: Chunks::from_entries(entries),
                })
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Deserializes a map key straight into the `Arc<str>` the map keeps (one allocation, where
/// a `String` and then an `Arc` would be two).
struct SharedKey;

impl<'de> serde::de::DeserializeSeed<'de> for SharedKey {
    type Value = Arc<str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Arc<str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for SharedKey {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Arc<str>, E> {
        Ok(Arc::from(key))
    }
}

impl<V: JsonSchema> JsonSchema for ConfigMap<V> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, V> as JsonSchema>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, V> as JsonSchema>::schema_id()
    }

    fn inline_schema() -> bool {
        <BTreeMap<String, V> as JsonSchema>::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, V> as JsonSchema>::json_schema(generator)
    }
}

impl<V: DeserializeOwned> Rebuild for ConfigMap<V> {
    /// Deserializes the changed entries only (an entry whose key is gone is removed); the others
    /// are shared with `previous`.
    fn rebuild(
        previous: &Self,
        doc: &Value,
        changed: &ChangedPaths<'_>,
    ) -> Result<Self, serde_json::Error> {
        let Value::Object(map) = doc else {
            return Self::deserialize(doc);
        };
        if changed.is_whole() {
            return Self::deserialize(doc);
        }
        let mut entries = previous.entries.clone();
        for key in changed.fields() {
            match map.get(key) {
                Some(value) => {
                    entries.insert(Arc::from(key), Arc::new(V::deserialize(value)?));
                }
                None => {
                    entries.remove(key);
                }
            }
        }
        if entries.len() != map.len() {
            // The previous value was not made from the previous document: decline.
            return Err(decline());
        }
        Ok(ConfigMap { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_map_rebuilds_changed_entries_and_shares_the_rest() {
        let doc = json!({"a": 1, "b": 2, "c": 3});
        let before: ConfigMap<u32> = serde_json::from_value(doc).unwrap();
        let after_doc = json!({"a": 1, "b": 20, "d": 4});
        let paths = [
            vec!["b".to_string()],
            vec!["c".into()],
            vec!["d".into(), "x".into()],
        ];
        let changed = ChangedPaths::new(paths.iter().map(Vec::as_slice));
        let after = ConfigMap::rebuild(&before, &after_doc, &changed).unwrap();
        let full: ConfigMap<u32> = serde_json::from_value(after_doc).unwrap();
        assert_eq!(after, full);
        assert!(Arc::ptr_eq(
            before.get_arc("a").unwrap(),
            after.get_arc("a").unwrap()
        ));
        assert_eq!(
            serde_json::to_value(&after).unwrap(),
            json!({"a": 1, "b": 20, "d": 4})
        );
    }

    #[test]
    fn changed_paths_group_by_field() {
        let paths = [
            vec!["db".to_string(), "host".into()],
            vec!["db".into()],
            vec!["port".into()],
        ];
        let c = ChangedPaths::new(paths.iter().map(Vec::as_slice));
        assert_eq!(c.fields(), ["db", "port"]);
        assert!(c.touches("db") && !c.touches("x"));
        assert!(c.below("db").is_whole());
        assert!(!c.below("db").is_empty());
        assert!(c.below("x").is_empty());
        assert!(!c.is_whole());
    }
}
