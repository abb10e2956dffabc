//! Provenance: which layer, and which file, etcd key or environment variable, a configuration
//! value came from. A snapshot records it for every value ([`Source`], [`Sources`]); an error
//! carries it for the bad value ([`Provenance`]). Both are built from one [`Origin`].

use std::borrow::Cow;
use std::fmt;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// A configuration layer. Higher layers override lower ones, field by field:
/// `Default < File < Etcd < Env` (the derived `Ord` follows that precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// The value came from `#[serde(default)]` / `Default` in the type itself.
    Default,
    /// A local YAML or JSON file (`#[coord(file = "…")]`).
    File,
    /// A key under the bound etcd prefix.
    Etcd,
    /// An environment variable (`#[coord(env_prefix = "…")]`).
    Env,
}

impl Layer {
    /// The lowercase name used in messages: `default`, `file`, `etcd`, `env`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Default => "default",
            Layer::File => "file",
            Layer::Etcd => "etcd",
            Layer::Env => "env",
        }
    }

    /// What an origin key in this layer is called in error messages: `file`, `variable`, `key`.
    fn key_noun(self) -> &'static str {
        match self {
            Layer::File => "file",
            Layer::Env => "variable",
            Layer::Default | Layer::Etcd => "key",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where inside its layer a value came from: one variant per [`Layer`].
///
/// `Display` prints the layer, the key in backticks and, for etcd, `@` and the `mod_revision`:
/// ``etcd `/apps/chat/config/port` @42``, ``file `config/chat.yaml` ``, ``env `CHAT_PORT` ``,
/// `default`. [`key`](Origin::key) gives the key alone as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The type's serde defaults ([`Layer::Default`]): there is no key.
    Default,
    /// The config file ([`Layer::File`]), by its path as configured (`#[coord(file = "…")]` or
    /// the options), not canonicalized.
    File(PathBuf),
    /// A key under the bound etcd prefix ([`Layer::Etcd`]).
    Etcd {
        /// The full etcd key, prefix included, e.g. `/apps/chat/config/database/host`. A key
        /// that is not valid UTF-8 is shown lossily (`U+FFFD` for the bad bytes).
        key: String,
        /// The key's `mod_revision`: the etcd revision of its last write.
        mod_revision: i64,
    },
    /// An environment variable ([`Layer::Env`]), by its full name, e.g. `CHAT_DATABASE__HOST`.
    Env(String),
}

impl Origin {
    /// The layer this origin belongs to.
    pub const fn layer(&self) -> Layer {
        match self {
            Origin::Default => Layer::Default,
            Origin::File(_) => Layer::File,
            Origin::Etcd { .. } => Layer::Etcd,
            Origin::Env(_) => Layer::Env,
        }
    }

    /// The key as a string: the file path (lossily converted if it is not UTF-8), the etcd key
    /// or the variable name; `None` for [`Origin::Default`]. This is the string
    /// [`Error::key`](crate::Error::key) reports for an error about the same value.
    pub fn key(&self) -> Option<Cow<'_, str>> {
        match self {
            Origin::Default => None,
            Origin::File(path) => Some(path.to_string_lossy()),
            Origin::Etcd { key, .. } => Some(Cow::Borrowed(key)),
            Origin::Env(name) => Some(Cow::Borrowed(name)),
        }
    }

    /// For [`Origin::Etcd`], the key's `mod_revision`; `None` for the other layers.
    pub const fn mod_revision(&self) -> Option<i64> {
        match self {
            Origin::Etcd { mod_revision, .. } => Some(*mod_revision),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.layer().as_str())?;
        if let Some(key) = self.key() {
            write!(f, " `{key}`")?;
        }
        if let Some(revision) = self.mod_revision() {
            write!(f, " @{revision}")?;
        }
        Ok(())
    }
}

/// Where one value of a snapshot came from (see [`Snapshot::source`](crate::Snapshot::source)).
///
/// `layer` and `revision` are always `origin`'s [`layer`](Origin::layer) and
/// [`mod_revision`](Origin::mod_revision), kept as fields for direct reading; a `Source` is
/// made from its origin with [`Source::new`] (or `From<Origin>`). `Display` is the origin's,
/// e.g. ``etcd `/apps/chat/config/port` @42``.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Source {
    /// The layer that supplied the value.
    pub layer: Layer,
    /// The file, etcd key or environment variable that supplied it ([`Origin::Default`] for
    /// the type's defaults). [`Origin::key`] gives it as a string.
    pub origin: Origin,
    /// For [`Layer::Etcd`], the key's `mod_revision` (the revision of its last write); `None`
    /// for the other layers.
    pub revision: Option<i64>,
}

impl Source {
    /// The source of values the layers did not supply: the type's serde defaults.
    // Spelled out (not `Source::new`) so that `&Source::DEFAULT` is promoted to `'static`.
    pub const DEFAULT: Source = Source {
        layer: Layer::Default,
        origin: Origin::Default,
        revision: None,
    };

    /// The source of a value that came from `origin`.
    pub const fn new(origin: Origin) -> Source {
        Source {
            layer: origin.layer(),
            revision: origin.mod_revision(),
            origin,
        }
    }
}

impl From<Origin> for Source {
    fn from(origin: Origin) -> Self {
        Source::new(origin)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origin.fmt(f)
    }
}

/// The provenance of every value in a snapshot: leaf field path (dotted, `database.pool.max`)
/// to the [`Source`] that supplied it.
///
/// Arrays are leaves (a higher layer replaces an array whole), so `servers.0` resolves to the
/// source of `servers`. Paths not listed came from [`Layer::Default`].
///
/// A persistent map: cloning it is O(1) and a reload that changed one key updates only the
/// paths at that key, so consecutive snapshots share almost all of their provenance.
///
/// After a bind that read the whole prefix, the map is computed on a background thread started
/// as the bind returns (about 10 ms for 10,000 keys on 2 cores), so the bind does not wait for
/// it; a method called before it is done computes it at once or waits for that thread, so
/// every method returns the whole map, never a partial one.
#[derive(Clone, Default)]
pub struct Sources {
    leaves: Held,
}

/// Leaf paths (dotted) with their sources: the map inside [`Sources`], which a layer's tree
/// builds as it goes, so the merged sources take it whole.
pub(crate) type Leaves = imbl::OrdMap<Arc<str>, Arc<Source>>;

/// How [`Sources`] holds its map.
#[derive(Clone)]
enum Held {
    Ready(Leaves),
    Deferred(Arc<Deferred>),
}

impl Default for Held {
    fn default() -> Self {
        Held::Ready(Leaves::new())
    }
}

/// A map computed once, by whichever comes first: the thread started for it or a caller.
struct Deferred {
    leaves: OnceLock<Leaves>,
    compute: Mutex<Option<Box<dyn FnOnce() -> Leaves + Send>>>,
}

impl Deferred {
    /// The map, computed here if no one has yet. A computation that panics (a defect, never
    /// bad input) is logged and leaves an empty map, every value then reporting
    /// [`Source::DEFAULT`]: the snapshot and the reload task that settles it keep working.
    fn force(&self) -> &Leaves {
        self.leaves.get_or_init(|| {
            let compute = self
                .compute
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let computed = compute
                .map(|compute| std::panic::catch_unwind(std::panic::AssertUnwindSafe(compute)));
            match computed {
                Some(Ok(leaves)) => leaves,
                Some(Err(_)) | None => {
                    tracing::error!(
                        target: crate::telemetry::CONFIG_TARGET,
                        "working out a snapshot's provenance panicked; its values report no source"
                    );
                    Leaves::new()
                }
            }
        })
    }
}

impl Sources {
    pub(crate) fn from_map(leaves: Leaves) -> Self {
        Sources {
            leaves: Held::Ready(leaves),
        }
    }

    /// Sources whose map `compute` makes when it is first needed, or on the background thread
    /// [`compute_in_background`](Self::compute_in_background) hands it to. `compute` runs
    /// exactly once.
    pub(crate) fn deferred(compute: impl FnOnce() -> Leaves + Send + 'static) -> Self {
        Sources {
            leaves: Held::Deferred(Arc::new(Deferred {
                leaves: OnceLock::new(),
                compute: Mutex::new(Some(Box::new(compute))),
            })),
        }
    }

    /// Has the crate's background thread compute a deferred map, so that it is ready when it
    /// is asked for. Does nothing if the map is computed. Whoever asks first computes it: a caller
    /// never waits behind the background thread's queue, only for a computation under way.
    pub(crate) fn compute_in_background(&self) {
        if let Held::Deferred(deferred) = &self.leaves {
            if deferred.leaves.get().is_none() {
                let deferred = Arc::clone(deferred);
                crate::background::spawn(move || {
                    deferred.force();
                });
            }
        }
    }

    fn leaves(&self) -> &Leaves {
        match &self.leaves {
            Held::Ready(leaves) => leaves,
            Held::Deferred(deferred) => deferred.force(),
        }
    }

    fn leaves_mut(&mut self) -> &mut Leaves {
        if let Held::Deferred(deferred) = &self.leaves {
            self.leaves = Held::Ready(deferred.force().clone());
        }
        match &mut self.leaves {
            Held::Ready(leaves) => leaves,
            Held::Deferred(_) => unreachable!("made ready above"),
        }
    }

    /// The number of recorded paths if the map is computed (without computing it).
    pub(crate) fn len_if_ready(&self) -> Option<usize> {
        match &self.leaves {
            Held::Ready(leaves) => Some(leaves.len()),
            Held::Deferred(deferred) => deferred.leaves.get().map(imbl::OrdMap::len),
        }
    }

    /// Waits until the map is computed (computing it here if its thread has not started).
    /// Whoever changes the tree the map was computed from calls this first: afterwards
    /// nothing else holds that tree.
    pub(crate) fn settle(&mut self) {
        self.leaves_mut();
    }

    /// The source of the value at `path` (dotted). Looks up the path itself, then its closest
    /// recorded ancestor (for array elements and sub-documents); [`Source::DEFAULT`] otherwise.
    pub fn get(&self, path: &str) -> &Source {
        self.find(path).unwrap_or(&Source::DEFAULT)
    }

    /// Like [`get`](Self::get) but `None` where the value is a default.
    pub fn find(&self, path: &str) -> Option<&Source> {
        let leaves = self.leaves();
        let mut candidate = path;
        loop {
            if let Some(source) = leaves.get(candidate) {
                return Some(source);
            }
            match candidate.rfind('.') {
                Some(i) => candidate = &candidate[..i],
                None => return None,
            }
        }
    }

    /// The first recorded source at or below `path` (for errors about a missing or invalid
    /// object, where the leaf itself is not the culprit).
    pub(crate) fn find_within(&self, path: &str) -> Option<&Source> {
        if let Some(found) = self.find(path) {
            return Some(found);
        }
        self.below(path).map(|(_, s)| s).next()
    }

    /// The recorded paths strictly below `path` (`path.…`), in order.
    fn below<'s>(&'s self, path: &str) -> impl Iterator<Item = (&'s str, &'s Source)> + 's {
        let from = format!("{path}.");
        // `/` follows `.` in byte order: `path/` bounds everything that starts with `path.`.
        let to = format!("{path}/");
        self.leaves()
            .range::<_, str>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
            .map(|(p, s)| (&**p, &**s))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Forgets the sources at `path` and below it.
    pub(crate) fn remove_within(&mut self, path: &str) {
        let doomed: Vec<Arc<str>> = self.below(path).map(|(p, _)| Arc::from(p)).collect();
        let leaves = self.leaves_mut();
        for p in doomed {
            leaves.remove(&*p);
        }
        leaves.remove(path);
    }

    /// Forgets the source recorded at exactly `path`, if any.
    pub(crate) fn remove(&mut self, path: &str) {
        self.leaves_mut().remove(path);
    }

    /// Records `source` for the leaf at `path`.
    pub(crate) fn insert(&mut self, path: Arc<str>, source: Arc<Source>) {
        self.leaves_mut().insert(path, source);
    }

    /// Every leaf path with its source, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Source)> {
        self.leaves().iter().map(|(p, s)| (&**p, &**s))
    }

    /// The number of leaf values that came from a layer other than the defaults.
    pub fn len(&self) -> usize {
        self.leaves().len()
    }

    /// True when every value is a default.
    pub fn is_empty(&self) -> bool {
        self.leaves().is_empty()
    }
}

impl PartialEq for Sources {
    fn eq(&self, other: &Self) -> bool {
        self.leaves() == other.leaves()
    }
}

impl Eq for Sources {}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("leaves", self.leaves())
            .finish()
    }
}

/// The dotted path of field `child` of the field at `parent` (`""` is the root).
pub(crate) fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// Where a bad value came from, as an [`Error`](crate::Error) reports it: its layer, its field
/// path, its key (etcd key, file path or environment variable) and the etcd revision being
/// applied.
///
/// For a value from a layer, `layer` and `key` are its [`Origin`]'s [`layer`](Origin::layer)
/// and [`key`](Origin::key) ([`Error::with_origin`](crate::Error::with_origin) sets both), so
/// an error names a value the way its snapshot's [`Source`] does. `key` can also be a key that
/// belongs to no layer (a history record, the published JSON Schema) with `layer` unset, or,
/// when a change touched several etcd keys and the error points at none of them (a
/// `validate()` failure), those keys joined with `, `.
///
/// Every part is optional: an error reading a file has no revision, a connection error has
/// no field. `Display` prints the parts that are known, e.g.
/// `field `port`, layer etcd, key `/apps/chat/config/port`, revision 42`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The configuration layer the bad value was read from.
    pub layer: Option<Layer>,
    /// Dotted field path in the config struct, e.g. `database.pool.max` (`""` is the root).
    pub field: Option<String>,
    /// The origin inside the layer as a string: the etcd key, the file path or the
    /// environment variable name (see [`Origin::key`]).
    pub key: Option<String>,
    /// The etcd revision being read or applied when the error occurred.
    pub revision: Option<i64>,
}

impl Provenance {
    /// True when no part is known.
    pub(crate) fn is_empty(&self) -> bool {
        self.layer.is_none()
            && self.field.is_none()
            && self.key.is_none()
            && self.revision.is_none()
    }

    /// Sets the layer and key to `origin`'s (no key for [`Origin::Default`]). The revision is
    /// left alone: it is the revision being applied, not the key's `mod_revision`.
    pub(crate) fn set_origin(&mut self, origin: &Origin) {
        self.layer = Some(origin.layer());
        self.key = origin.key().map(Cow::into_owned);
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(field) = &self.field {
            let shown = if field.is_empty() { "(root)" } else { field };
            write!(f, "field `{shown}`")?;
            sep = ", ";
        }
        if let Some(layer) = self.layer {
            write!(f, "{sep}layer {layer}")?;
            sep = ", ";
        }
        if let Some(key) = &self.key {
            let what = self.layer.map_or("key", Layer::key_noun);
            write!(f, "{sep}{what} `{key}`")?;
            sep = ", ";
        }
        if let Some(revision) = self.revision {
            write!(f, "{sep}revision {revision}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(key: &str) -> Source {
        Source::new(Origin::Etcd {
            key: key.into(),
            mod_revision: 3,
        })
    }

    #[test]
    fn a_provenance_computation_that_panics_leaves_sources_that_still_answer() {
        let sources = Sources::deferred(|| panic!("a defect in the computation"));
        let copy = sources.clone();
        sources.compute_in_background();
        for s in [&sources, &copy] {
            assert_eq!(s.get("port"), &Source::DEFAULT);
            assert_eq!(s.len(), 0);
        }
        let mut settled = sources;
        settled.settle();
        assert_eq!(settled.len_if_ready(), Some(0));
    }

    #[test]
    fn lookup_falls_back_to_closest_ancestor_then_default() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("servers".to_string(), etcd("/p/servers"));
        m.insert("database.host".to_string(), etcd("/p/database/host"));
        let s = Sources::from_map(
            m.into_iter()
                .map(|(p, s)| (Arc::from(p), Arc::new(s)))
                .collect(),
        );
        assert_eq!(
            s.get("servers.0").origin.key().as_deref(),
            Some("/p/servers")
        );
        assert_eq!(
            s.get("database.host").origin.key().as_deref(),
            Some("/p/database/host")
        );
        assert_eq!(s.get("database.port"), &Source::DEFAULT);
        assert_eq!(
            s.find_within("database")
                .and_then(|s| s.origin.key())
                .as_deref(),
            Some("/p/database/host")
        );
    }

    #[test]
    fn layers_order_by_precedence() {
        assert!(Layer::Default < Layer::File);
        assert!(Layer::File < Layer::Etcd);
        assert!(Layer::Etcd < Layer::Env);
    }

    #[test]
    fn source_takes_layer_and_revision_from_its_origin() {
        let s = etcd("/p/port");
        assert_eq!((s.layer, s.revision), (Layer::Etcd, Some(3)));
        let s = Source::from(Origin::File("config/chat.yaml".into()));
        assert_eq!((s.layer, s.revision), (Layer::File, None));
        let s = Source::new(Origin::Env("CHAT_PORT".into()));
        assert_eq!((s.layer, s.revision), (Layer::Env, None));
        assert_eq!(Source::DEFAULT, Source::new(Origin::Default));
        assert_eq!(Source::DEFAULT.origin.key(), None);
    }

    #[test]
    fn display_names_layer_key_and_mod_revision() {
        assert_eq!(etcd("/p/port").to_string(), "etcd `/p/port` @3");
        let file = Origin::File("config/chat.yaml".into());
        assert_eq!(file.to_string(), "file `config/chat.yaml`");
        assert_eq!(
            Origin::Env("CHAT_PORT".into()).to_string(),
            "env `CHAT_PORT`"
        );
        assert_eq!(Source::DEFAULT.to_string(), "default");
    }

    #[test]
    fn provenance_from_origin_matches_the_source_key() {
        for origin in [
            Origin::File("config/chat.yaml".into()),
            Origin::Etcd {
                key: "/p/port".into(),
                mod_revision: 9,
            },
            Origin::Env("CHAT_PORT".into()),
        ] {
            let mut p = Provenance {
                revision: Some(12),
                ..Provenance::default()
            };
            p.set_origin(&origin);
            assert_eq!(p.layer, Some(origin.layer()));
            assert_eq!(p.key.as_deref(), origin.key().as_deref());
            assert_eq!(p.revision, Some(12), "the applied revision is kept");
        }
        let mut p = Provenance::default();
        p.set_origin(&Origin::Default);
        assert_eq!((p.layer, p.key), (Some(Layer::Default), None));
    }
}
