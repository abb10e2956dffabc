//! The last-known-good cache: the etcd layer of the last applied revision, kept in a local file
//! so a service can start (stale) while etcd is unreachable.
//!
//! Format (JSON, mode 0600, replaced atomically: temp file, fsync, rename, fsync of the
//! directory):
//! `{"format": "coordination-lkg/1", "prefix": "/apps/chat/config/", "revision": 42,
//!   "written_at_ms": 1763700000000, "keys": [{"key": "…", "value": "…", "mod_revision": 40}]}`.
//! Keys holding secret fields (`CoordConfig::SECRETS`), or documents with a secret inside, are
//! left out: on a cold start those fields come from the file or environment layers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The format tag; a file with another tag is ignored.
pub(crate) const FORMAT: &str = "coordination-lkg/1";

/// The cache file's contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CacheFile {
    pub(crate) format: String,
    pub(crate) prefix: String,
    pub(crate) revision: i64,
    pub(crate) written_at_ms: u64,
    pub(crate) keys: Vec<CachedKey>,
}

/// One etcd key of the cached layer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CachedKey {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) mod_revision: i64,
}

impl CacheFile {
    pub(crate) fn new(prefix: &str, revision: i64, keys: Vec<CachedKey>) -> Self {
        CacheFile {
            format: FORMAT.to_string(),
            prefix: prefix.to_string(),
            revision,
            written_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            keys,
        }
    }
}

/// Reads the cache for `prefix`. A missing file is `None`; a corrupt file, one of another
/// format or one written for another prefix is `None` with a warning — never an error.
pub(crate) fn load(path: &Path, prefix: &str) -> Option<CacheFile> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "cannot read the last-known-good cache; ignoring it");
            return None;
        }
    };
    let cache: CacheFile = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "corrupt last-known-good cache; ignoring it");
            return None;
        }
    };
    if cache.format != FORMAT {
        tracing::warn!(cache = %path.display(), format = %cache.format, "last-known-good cache has an unknown format; ignoring it");
        return None;
    }
    if cache.prefix != prefix {
        tracing::warn!(cache = %path.display(), cached_prefix = %cache.prefix, prefix, "last-known-good cache belongs to another prefix; ignoring it");
        return None;
    }
    if cache.keys.iter().any(|k| !k.key.starts_with(prefix)) {
        tracing::warn!(cache = %path.display(), "last-known-good cache holds keys outside its prefix; ignoring it");
        return None;
    }
    Some(cache)
}

/// Writes the cache atomically with mode 0600: a new temp file with a random name in the
/// target's directory, created exclusively (`O_EXCL`, so a planted file or symlink is never
/// opened), written and fsynced, renamed over the target, then the directory fsynced.
pub(crate) fn write(path: &Path, cache: &CacheFile) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cache".into());
    let bytes = serde_json::to_vec(cache).map_err(std::io::Error::other)?;
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(&dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the newest cache state in the background; a slow disk never delays a reload, and
/// states superseded before they were written are skipped.
pub(crate) struct CacheWriter {
    tx: watch::Sender<Option<Arc<CacheFile>>>,
}

impl CacheWriter {
    /// Starts the writer task for `path`; it ends when the writer is dropped.
    pub(crate) fn spawn(path: PathBuf) -> Self {
        let (tx, mut rx) = watch::channel::<Option<Arc<CacheFile>>>(None);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(cache) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                let result = tokio::task::spawn_blocking(move || write(&path, &cache)).await;
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot write the last-known-good cache")
                    }
                    Err(e) => tracing::warn!(error = %e, "cache writer task failed"),
                }
            }
        });
        CacheWriter { tx }
    }

    /// Queues `cache` to be written (replacing any state not yet written).
    pub(crate) fn store(&self, cache: CacheFile) {
        self.tx.send_replace(Some(Arc::new(cache)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_mode_0600_and_foreign_or_corrupt_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lkg.json");
        let cache = CacheFile::new(
            "/p/",
            7,
            vec![CachedKey {
                key: "/p/port".into(),
                value: "8080".into(),
                mod_revision: 5,
            }],
        );
        write(&path, &cache).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = load(&path, "/p/").unwrap();
        assert_eq!(back.revision, 7);
        assert_eq!(back.keys[0].value, "8080");
        assert!(
            load(&path, "/other/").is_none(),
            "foreign prefix is ignored"
        );
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path, "/p/").is_none(), "corrupt file is ignored");
        assert!(load(&dir.path().join("missing"), "/p/").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn planted_temp_files_and_symlinks_are_never_written_through() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let path = dir.path().join("lkg.json");
        // What an attacker could plant: the names a writer might pick, as a symlink to a file
        // they want overwritten and as a world-writable file.
        let pid = std::process::id();
        std::os::unix::fs::symlink(&victim, dir.path().join(format!(".lkg.json.tmp-{pid}")))
            .unwrap();
        let planted = dir.path().join(".lkg.json.tmp");
        std::fs::write(&planted, b"").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
        let cache = CacheFile::new("/p/", 3, Vec::new());
        for _ in 0..3 {
            write(&path, &cache).unwrap();
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path, "/p/").unwrap().revision, 3);
        // No temp files are left behind.
        let planted_link = format!(".lkg.json.tmp-{pid}");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !["victim", "lkg.json", ".lkg.json.tmp", planted_link.as_str()]
                    .contains(&n.as_str())
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
