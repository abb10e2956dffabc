//! The local-file layer (YAML or JSON) and the `notify` watch that reloads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::io::Read;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::config::tree::LayerTree;
use crate::config::value::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::provenance::{Origin, Source};

/// What the config file held when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileContent {
    /// No file at the path (the file is optional: an empty layer).
    Missing,
    /// The file's bytes.
    Bytes(Vec<u8>),
}

/// Reads the config file, at most `max_bytes` of it: a larger file is an error naming it, and so
/// is one that cannot be read (a missing file is [`FileContent::Missing`]).
pub(crate) fn read_file(path: &Path, max_bytes: usize) -> Result<FileContent> {
    let origin = Origin::File(path.to_path_buf());
    let io_error = |e: std::io::Error| {
        Error::new(ErrorKind::Io, "cannot read config file")
            .with_origin(&origin)
            .with_source(e)
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileContent::Missing),
        Err(e) => return Err(io_error(e)),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() > max_bytes {
        return Err(Error::new(
            ErrorKind::Validation,
            format!("file is over the limit of {max_bytes} bytes"),
        )
        .with_origin(&origin));
    }
    Ok(FileContent::Bytes(bytes))
}

/// The file layer from what the file held. Parsed with the same rules as etcd values (duplicate
/// keys, non-finite numbers, string fields kept as written, the depth limit); `.json` files must
/// be JSON, anything else is YAML. A top level that is not a mapping is an error naming the file.
pub(crate) fn file_layer(
    path: &Path,
    content: &FileContent,
    fields: &StringFields,
) -> Result<LayerTree> {
    let bytes = match content {
        FileContent::Missing => {
            tracing::debug!(file = %path.display(), "config file not found; file layer is empty");
            return Ok(LayerTree::default());
        }
        FileContent::Bytes(bytes) => bytes,
    };
    let source = Source::new(Origin::File(path.to_path_buf()));
    let invalid = |msg: String| Error::new(ErrorKind::Validation, msg).with_origin(&source.origin);
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(invalid(format!("invalid JSON: {e}")));
        }
    }
    let value = fields.parse_for(&[], bytes).map_err(invalid)?;
    let mut tree = LayerTree::default();
    tree.insert(&[], value, &source)
        .map_err(|_| invalid("the top level of the file must be a mapping".into()))?;
    Ok(tree)
}

/// A `notify` watch on the directory holding the config file (editors and config-management
/// tools replace files by rename, which a watch on the file itself would miss). Events for other
/// files in the directory are ignored, and so are events that cannot change the file's content:
/// opens, reads and closes after reading (the reload's own read among them) and metadata
/// changes.
pub(crate) struct FileWatch {
    _watcher: RecommendedWatcher,
    signal: Arc<Notify>,
}

impl FileWatch {
    /// Starts watching `path`'s directory.
    pub(crate) fn new(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_os_string());
        let signal = Arc::new(Notify::new());
        let tx = Arc::clone(&signal);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    if can_change_content(&event.kind)
                        && event.paths.iter().any(|p| p.file_name() == name.as_deref())
                    {
                        tx.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "config file watch error"),
            })
            .map_err(|e| watch_error(path, e))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(path, e))?;
        Ok(FileWatch {
            _watcher: watcher,
            signal,
        })
    }

    /// Resolves at the next change to the file (changes since the last call are not lost).
    pub(crate) async fn changed(&self) {
        self.signal.notified().await;
    }
}

/// Writes, creations, removals and renames; a close after writing (the end of a write). Not
/// opens, reads, closes after reading or metadata (`chmod`, `touch`).
fn can_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Other => false,
    }
}

fn watch_error(path: &Path, e: notify::Error) -> Error {
    Error::new(ErrorKind::Io, "cannot watch config file")
        .with_origin(&Origin::File(path.to_path_buf()))
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::merge;
    use crate::provenance::Layer;
    use serde_json::json;

    fn layer(path: &Path) -> Result<LayerTree> {
        let content = read_file(path, 1024)?;
        file_layer(path, &content, &StringFields::new(json!({})))
    }

    #[test]
    fn reads_yaml_and_json_and_tolerates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("c.yaml");
        std::fs::write(&yaml, "port: 1\ndatabase:\n  host: h\n").unwrap();
        let (v, s) = merge([&layer(&yaml).unwrap()]);
        assert_eq!(v, json!({"port": 1, "database": {"host": "h"}}));
        assert_eq!(s.get("database.host").layer, Layer::File);

        let json_path = dir.path().join("c.json");
        std::fs::write(&json_path, r#"{"port": 2}"#).unwrap();
        let (v, _) = merge([&layer(&json_path).unwrap()]);
        assert_eq!(v, json!({"port": 2}));

        let (v, _) = merge([&layer(&dir.path().join("none.yaml")).unwrap()]);
        assert_eq!(v, json!({}));
    }

    #[test]
    fn bad_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("c.yaml");
        std::fs::write(&yaml, "port: [1,\n").unwrap();
        let err = layer(&yaml).unwrap_err();
        assert_eq!(err.layer(), Some(Layer::File));
        assert!(err.key().unwrap().ends_with("c.yaml"));
        std::fs::write(&yaml, "- 1\n- 2\n").unwrap();
        assert!(layer(&yaml).unwrap_err().message().contains("mapping"));
    }

    #[test]
    fn same_rules_as_etcd_values() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("c.yaml");
        std::fs::write(&yaml, "label: a\nlabel: b\n").unwrap();
        assert!(layer(&yaml)
            .unwrap_err()
            .message()
            .contains("duplicate key `label`"));
        std::fs::write(&yaml, "db:\n  host: a\n  host: b\n").unwrap();
        assert!(layer(&yaml)
            .unwrap_err()
            .message()
            .contains("duplicate key `host`"));
        std::fs::write(&yaml, "ratio: .nan\n").unwrap();
        assert!(layer(&yaml)
            .unwrap_err()
            .message()
            .contains("not a finite number"));
        let json_path = dir.path().join("c.json");
        std::fs::write(&json_path, r#"{"a": 1, "a": 2}"#).unwrap();
        assert!(layer(&json_path)
            .unwrap_err()
            .message()
            .contains("duplicate key"));
        std::fs::write(&json_path, "a: 1\n").unwrap();
        assert!(layer(&json_path)
            .unwrap_err()
            .message()
            .contains("invalid JSON"));
        std::fs::write(&yaml, "x".repeat(2000)).unwrap();
        let err = layer(&yaml).unwrap_err();
        assert!(
            err.message().contains("over the limit of 1024 bytes"),
            "{err}"
        );
        let deep = format!("a: {}1{}\n", "[".repeat(70), "]".repeat(70));
        std::fs::write(&yaml, deep).unwrap();
        assert!(layer(&yaml)
            .unwrap_err()
            .message()
            .contains("limit of 64 levels"));
    }
}
