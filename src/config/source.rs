//! Layers and per-value provenance: which layer and which key every value came from.

use std::collections::BTreeMap;
use std::fmt;

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
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The layer that supplied the value.
    pub layer: Layer,
    /// The etcd key, file path or environment variable name; `None` for [`Layer::Default`].
    pub origin: Option<String>,
    /// For [`Layer::Etcd`], the key's `mod_revision` (the revision of its last write).
    pub revision: Option<i64>,
}

impl Source {
    /// The source of values the layers did not supply: the type's serde defaults.
    pub const DEFAULT: Source = Source {
        layer: Layer::Default,
        origin: None,
        revision: None,
    };
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.layer.as_str())?;
        if let Some(origin) = &self.origin {
            write!(f, " `{origin}`")?;
        }
        if let Some(revision) = self.revision {
            write!(f, " @{revision}")?;
        }
        Ok(())
    }
}

/// The provenance of every value in a snapshot: leaf field path (dotted, `database.pool.max`)
/// to the [`Source`] that supplied it.
///
/// Arrays are leaves (a higher layer replaces an array whole), so `servers.0` resolves to the
/// source of `servers`. Paths not listed came from [`Layer::Default`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    leaves: BTreeMap<String, Source>,
}

impl Sources {
    pub(crate) fn from_map(leaves: BTreeMap<String, Source>) -> Self {
        Sources { leaves }
    }

    /// The source of the value at `path` (dotted). Looks up the path itself, then its closest
    /// recorded ancestor (for array elements and sub-documents); [`Source::DEFAULT`] otherwise.
    pub fn get(&self, path: &str) -> &Source {
        self.find(path).unwrap_or(&Source::DEFAULT)
    }

    /// Like [`get`](Self::get) but `None` where the value is a default.
    pub fn find(&self, path: &str) -> Option<&Source> {
        let mut candidate = path;
        loop {
            if let Some(source) = self.leaves.get(candidate) {
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
        let below = format!("{path}.");
        self.leaves
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .map(|(_, s)| s)
            .next()
    }

    /// Every leaf path with its source, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Source)> {
        self.leaves.iter().map(|(p, s)| (p.as_str(), s))
    }

    /// The number of leaf values that came from a layer other than the defaults.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// True when every value is a default.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(key: &str) -> Source {
        Source {
            layer: Layer::Etcd,
            origin: Some(key.into()),
            revision: Some(3),
        }
    }

    #[test]
    fn lookup_falls_back_to_closest_ancestor_then_default() {
        let mut m = BTreeMap::new();
        m.insert("servers".to_string(), etcd("/p/servers"));
        m.insert("database.host".to_string(), etcd("/p/database/host"));
        let s = Sources::from_map(m);
        assert_eq!(s.get("servers.0").origin.as_deref(), Some("/p/servers"));
        assert_eq!(
            s.get("database.host").origin.as_deref(),
            Some("/p/database/host")
        );
        assert_eq!(s.get("database.port"), &Source::DEFAULT);
        assert_eq!(
            s.find_within("database").and_then(|s| s.origin.as_deref()),
            Some("/p/database/host")
        );
    }

    #[test]
    fn layers_order_by_precedence() {
        assert!(Layer::Default < Layer::File);
        assert!(Layer::File < Layer::Etcd);
        assert!(Layer::Etcd < Layer::Env);
    }
}
