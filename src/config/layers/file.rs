//! The local-file layer (YAML or JSON) and the `notify` watch that reloads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::Notify;

use crate::config::source::{Layer, Source};
use crate::config::tree::LayerTree;
use crate::error::{Error, ErrorKind, Result};

/// Reads the file layer. A missing file is an empty layer (the file is optional); an unreadable
/// or unparsable file, or one whose top level is not a mapping, is an error naming the file.
/// `.json` files are parsed as JSON, anything else as YAML.
pub(crate) fn file_layer(path: &Path) -> Result<LayerTree> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(file = %shown, "config file not found; file layer is empty");
            return Ok(LayerTree::default());
        }
        Err(e) => {
            return Err(Error::new(ErrorKind::Io, "cannot read config file")
                .with_layer(Layer::File)
                .with_key(shown)
                .with_source(e))
        }
    };
    let invalid = |msg: String| {
        Error::new(ErrorKind::Validation, msg)
            .with_layer(Layer::File)
            .with_key(shown.clone())
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else if is_json {
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("invalid JSON: {e}")))?
    } else {
        serde_yaml::from_slice(&bytes).map_err(|e| invalid(format!("invalid YAML: {e}")))?
    };
    let source = Source {
        layer: Layer::File,
        origin: Some(shown.clone()),
        revision: None,
    };
    let mut tree = LayerTree::default();
    tree.insert(&[], value, &source)
        .map_err(|_| invalid("the top level of the file must be a mapping".into()))?;
    Ok(tree)
}

/// A `notify` watch on the directory holding the config file (editors and config-management
/// tools replace files by rename, which a watch on the file itself would miss). Events for other
/// files in the directory are ignored.
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
                    if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
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

fn watch_error(path: &Path, e: notify::Error) -> Error {
    Error::new(ErrorKind::Io, "cannot watch config file")
        .with_layer(Layer::File)
        .with_key(path.display().to_string())
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::merge;
    use serde_json::json;

    #[test]
    fn reads_yaml_and_json_and_tolerates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("c.yaml");
        std::fs::write(&yaml, "port: 1\ndatabase:\n  host: h\n").unwrap();
        let (v, s) = merge([&file_layer(&yaml).unwrap()]);
        assert_eq!(v, json!({"port": 1, "database": {"host": "h"}}));
        assert_eq!(s.get("database.host").layer, Layer::File);

        let json_path = dir.path().join("c.json");
        std::fs::write(&json_path, r#"{"port": 2}"#).unwrap();
        let (v, _) = merge([&file_layer(&json_path).unwrap()]);
        assert_eq!(v, json!({"port": 2}));

        let (v, _) = merge([&file_layer(&dir.path().join("none.yaml")).unwrap()]);
        assert_eq!(v, json!({}));
    }

    #[test]
    fn bad_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("c.yaml");
        std::fs::write(&yaml, "port: [1,\n").unwrap();
        let err = file_layer(&yaml).unwrap_err();
        assert_eq!(err.layer(), Some(Layer::File));
        assert!(err.key().unwrap().ends_with("c.yaml"));
        std::fs::write(&yaml, "- 1\n- 2\n").unwrap();
        assert!(file_layer(&yaml).unwrap_err().message().contains("mapping"));
    }
}
