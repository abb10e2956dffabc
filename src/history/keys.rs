//! Where a prefix's history lives in etcd.
//!
//! For the bound prefix `<ns>/apps/chat/config/` (namespace `<ns>`, possibly empty):
//!
//! | key | what |
//! |---|---|
//! | `<ns>/__coordination/history/apps/chat/config/versions/<revision:020>` | one version's record (JSON) |
//! | `<ns>/__coordination/history/apps/chat/config/chunks/<revision:020>/<id>/<n:04>` | the content of a big record, in chunks (JSON arrays) |
//! | `<ns>/__coordination/history/apps/chat/config/intent` | audit metadata of the last publish/rollback, written in its transaction |
//! | `<ns>/__coordination/history/apps/chat/config/recorder/<lease:x>` | a candidate for the recorder seat (an election; the lowest `create_revision` records) |
//! | `<ns>/__coordination/schema/apps/chat/config` | the bound type's JSON Schema |
//! | `<ns>/__coordination/policy/apps/chat/config` | the prefix's change-control policy (see [`change`](crate::change)) |

use crate::etcd::prefix_end;

/// The reserved top-level segment for the crate's own keys.
pub(crate) const RESERVED: &str = "/__coordination/";

/// Digits in a zero-padded revision (an `i64` has at most 19).
const PAD: usize = 20;

/// The history and schema keys of one bound prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    reserved: String,
    root: String,
    versions: String,
    chunks: String,
    intent: String,
    schema: String,
    recorder: String,
    policy: String,
}

impl Keys {
    /// `namespace` is the coordinator's (no trailing `/`, may be empty); `prefix` is the full
    /// bound prefix, namespace included, ending with `/`.
    pub(crate) fn new(namespace: &str, prefix: &str) -> Self {
        let relative = prefix.strip_prefix(namespace).unwrap_or(prefix);
        let relative = relative.trim_end_matches('/');
        let relative = if relative.starts_with('/') {
            relative.to_string()
        } else {
            format!("/{relative}")
        };
        let root = format!("{namespace}/__coordination/history{relative}/");
        Keys {
            prefix: prefix.to_string(),
            reserved: format!("{namespace}{RESERVED}"),
            root: root.clone(),
            versions: format!("{root}versions/"),
            chunks: format!("{root}chunks/"),
            intent: format!("{root}intent"),
            schema: format!("{namespace}/__coordination/schema{relative}"),
            recorder: format!("/__coordination/history{relative}/recorder"),
            policy: format!("{namespace}/__coordination/policy{relative}"),
        }
    }

    /// Whether the bound prefix is inside the reserved namespace (history is not recorded for
    /// it: its own records would change it).
    pub(crate) fn is_reserved(namespace: &str, prefix: &str) -> bool {
        prefix
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.starts_with(RESERVED))
    }

    /// The full bound prefix (namespace included, ending with `/`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The end of the bound prefix's key range.
    pub(crate) fn prefix_end(&self) -> Vec<u8> {
        prefix_end(self.prefix.as_bytes())
    }

    /// The name of the recorder election, relative to the namespace (as
    /// [`Coordinator::election`](crate::Coordinator::election) takes it): its candidates' keys
    /// are `<root>recorder/<lease:x>`.
    pub(crate) fn recorder_election(&self) -> &str {
        &self.recorder
    }

    /// The crate's own keys in this namespace: `<ns>/__coordination/`.
    pub(crate) fn reserved(&self) -> &str {
        &self.reserved
    }

    /// Everything recorded for the bound prefix: records, chunks, the intent (ends with `/`).
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// How a permission error names the history keys: ``the prefix `<root>` ``.
    pub(crate) fn root_label(&self) -> String {
        format!("the prefix `{}`", self.root)
    }

    /// The directory of version records (ends with `/`).
    pub(crate) fn versions(&self) -> &str {
        &self.versions
    }

    /// The end of the version records' key range.
    pub(crate) fn versions_end(&self) -> Vec<u8> {
        prefix_end(self.versions.as_bytes())
    }

    /// The record key of `revision`.
    pub(crate) fn version(&self, revision: i64) -> String {
        format!("{}{revision:0PAD$}", self.versions)
    }

    /// The revision of a record key, or `None` for anything else found under the directory
    /// (e.g. the history of a nested prefix).
    pub(crate) fn parse_version(&self, key: &[u8]) -> Option<i64> {
        let rest = key.strip_prefix(self.versions.as_bytes())?;
        if rest.len() != PAD || !rest.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(rest).ok()?.parse().ok()
    }

    /// All chunks of every attempt to write `revision`'s record (ends with `/`).
    pub(crate) fn chunk_revision_dir(&self, revision: i64) -> String {
        format!("{}{revision:0PAD$}/", self.chunks)
    }

    /// The chunks of one attempt `id` (ends with `/`).
    pub(crate) fn chunk_dir(&self, revision: i64, id: &str) -> String {
        format!("{}{id}/", self.chunk_revision_dir(revision))
    }

    /// Chunk number `n` of attempt `id`.
    pub(crate) fn chunk(&self, revision: i64, id: &str, n: u32) -> String {
        format!("{}{n:04}", self.chunk_dir(revision, id))
    }

    /// The audit intent key.
    pub(crate) fn intent(&self) -> &str {
        &self.intent
    }

    /// The key the change-control policy is stored at.
    pub(crate) fn policy(&self) -> &str {
        &self.policy
    }

    /// The published JSON Schema key.
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// `key` relative to the bound prefix (the whole key if it is not under it).
    pub(crate) fn relative<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        key.strip_prefix(self.prefix.as_bytes()).unwrap_or(key)
    }

    /// The full key for a key relative to the bound prefix.
    pub(crate) fn absolute(&self, relative: &[u8]) -> Vec<u8> {
        let mut key = self.prefix.as_bytes().to_vec();
        key.extend_from_slice(relative);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sits_next_to_the_config_inside_the_namespace() {
        let k = Keys::new("", "/apps/chat/config/");
        assert_eq!(
            k.version(42),
            "/__coordination/history/apps/chat/config/versions/00000000000000000042"
        );
        assert_eq!(
            k.chunk(42, "ab", 3),
            "/__coordination/history/apps/chat/config/chunks/00000000000000000042/ab/0003"
        );
        assert_eq!(
            k.intent(),
            "/__coordination/history/apps/chat/config/intent"
        );
        assert_eq!(k.schema(), "/__coordination/schema/apps/chat/config");
        let n = Keys::new("/tenant", "/tenant/apps/chat/config/");
        assert_eq!(n.schema(), "/tenant/__coordination/schema/apps/chat/config");
        assert_eq!(n.prefix(), "/tenant/apps/chat/config/");
    }

    #[test]
    fn only_padded_revisions_are_records() {
        let k = Keys::new("", "/a/");
        assert_eq!(k.parse_version(k.version(7).as_bytes()), Some(7));
        let nested = format!("{}b/versions/{:020}", k.versions(), 7);
        assert_eq!(k.parse_version(nested.as_bytes()), None);
        assert_eq!(k.parse_version(b"/x"), None);
        assert!(Keys::is_reserved("", "/__coordination/history/a/"));
        assert!(!Keys::is_reserved("", "/apps/a/"));
    }
}
