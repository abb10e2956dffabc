//! The record format: one plain JSON document per version, readable with `etcdctl get`.
//!
//! ```json
//! {"format":2,"prefix":"/apps/chat/config/","revision":42,
//!  "time":"2025-01-01T12:00:00.123Z","unix_ms":1735732800123,
//!  "source":"publish","author":"alice","comment":"raise the pool",
//!  "keys":3,"bytes":61,"kind":"full","checkpoint":42,"chain_bytes":0,
//!  "secrets":["database.password"],
//!  "kvs":[["database/host","db1"],["database/password",{"secret":"omitted"}],["port","8080"]]}
//! ```
//!
//! Keys are relative to the prefix. A key or value that is not UTF-8 is written as
//! `{"hex":"…"}`. `secrets` are the secret field paths the writer knew; the value of a key that
//! holds a secret is never in the record as it is (see [`sealing`](super::sealing)):
//! `{"secret":"omitted"}` without a secret key, `{"secret":"xchacha20poly1305","key":…,
//! "nonce":…,"data":…}` with one, each with `"shown"` (the document with its secret leaves
//! masked) for a key holding a document. Format 1 (before secrets were kept out) has neither:
//! its values are read as they are. `kind` is `full` (`kvs`: the whole key/value set) or `delta` (`ops`: the
//! writes since version `base`, e.g. `{"put":"port","value":"9090"}`, `{"del":"legacy"}`). When
//! the content is over 32 KiB it is not inline: `chunks: {"id": …, "count": n}` names the
//! chunk keys that hold it as JSON arrays.
//!
//! Also the encoding between the prefix's key set (full etcd keys) and a record's content
//! ([`Content`], [`absolute_kvs`]), and the errors of reading and writing records.

use std::fmt;
use std::time::SystemTime;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys::Keys;
use super::sealing::Sealing;
use super::store::{Kvs, Revs, StoredKvs};
use super::time::{now_ms, rfc3339};
use crate::config::RawOp;
use crate::error::{Error, ErrorKind, Result};

/// The current record format: 2 added `secrets` and the secret value forms.
pub(crate) const FORMAT: u32 = 2;

/// Where a version came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum VersionKind {
    /// Written by [`ConfigHandle::update`](crate::ConfigHandle::update), a [`Draft`](crate::history::Draft),
    /// [`ConfigHandle::publish_at`](crate::ConfigHandle::publish_at), [`ConfigHandle::overwrite`](crate::ConfigHandle::overwrite)
    /// or `coordctl config put|apply`.
    Publish,
    /// Written by [`ConfigHandle::rollback_to`](crate::ConfigHandle::rollback_to) or `coordctl config rollback`.
    Rollback,
    /// Written by any other client (`etcdctl`, another library), or found at bind.
    #[default]
    External,
    /// Published by a staged rollout's last step ([`fleet`](crate::fleet), `coordctl config
    /// rollout`).
    Rollout,
}

impl fmt::Display for VersionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VersionKind::Publish => "publish",
            VersionKind::Rollback => "rollback",
            VersionKind::External => "external",
            VersionKind::Rollout => "rollout",
        })
    }
}

/// One version of a config prefix, as listed by [`ConfigHandle::history`](crate::ConfigHandle::history)
/// and [`ConfigHistory::versions`](crate::history::ConfigHistory::versions): audit metadata only, no
/// values (see [`ConfigHistory::document`](crate::history::ConfigHistory::document) for those).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Version {
    /// The etcd revision of the version (the version's id): the prefix was exactly as recorded
    /// at this revision.
    pub revision: i64,
    /// When it was recorded (ms precision), by the clock of the instance (or tool) that wrote
    /// the record. In JSON: RFC 3339 UTC with ms (`2025-01-01T12:00:00.123Z`).
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// Publish, rollback or external.
    pub kind: VersionKind,
    /// Who made the change (`None` for external changes).
    pub author: Option<String>,
    /// Why (`None` for external changes).
    pub comment: Option<String>,
    /// For a rollback: the version it restored.
    pub restored_from: Option<i64>,
    /// For a publish or rollback too large for one etcd transaction: `(n, of)`, this version
    /// being batch `n` of `of` (the last batch carries the complete change).
    pub batch: Option<(u32, u32)>,
    /// Number of keys under the prefix at this version.
    pub keys: usize,
    /// The fleet gate's refusal this version was written over (`--force`,
    /// [`ConfigHistory::with_gate_forced`](crate::history::ConfigHistory::with_gate_forced)).
    pub gate_overridden: Option<String>,
    storage: VersionStorage,
}

/// How a [`Version`]'s record is stored in etcd, from [`Version::storage`]: for operators
/// looking at the history's cost; see `docs/history.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VersionStorage {
    /// Total size of the version's keys and values, in bytes (keys relative to the prefix).
    pub bytes: u64,
    /// `None` when the record holds the whole key/value set, `Some(b)` when it holds only the
    /// writes since version `b` (big prefixes).
    pub base: Option<i64>,
    /// Number of chunk keys holding the record's content (0: inline in the record).
    pub chunks: u32,
}

impl Version {
    /// How the record is stored (size, delta base, chunks).
    pub fn storage(&self) -> &VersionStorage {
        &self.storage
    }

    /// [`time`](Self::time) as RFC 3339 UTC with ms (`2025-01-01T12:00:00.123Z`).
    pub fn time_rfc3339(&self) -> String {
        super::time::rfc3339(super::time::to_ms(self.time))
    }
}

fn serialize_time<S: serde::Serializer>(
    time: &SystemTime,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&super::time::rfc3339(super::time::to_ms(*time)))
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} ({}, {}",
            self.revision,
            self.time_rfc3339(),
            self.kind
        )?;
        if let Some(author) = &self.author {
            write!(f, " by {author}")?;
        }
        if let Some(from) = self.restored_from {
            write!(f, ", restores {from}")?;
        }
        if let Some((n, of)) = self.batch {
            write!(f, ", batch {n}/{of}")?;
        }
        write!(f, ", {} keys)", self.keys)?;
        if let Some(comment) = &self.comment {
            write!(f, ": {comment}")?;
        }
        Ok(())
    }
}

/// Bytes in a record: a JSON string when UTF-8, else `{"hex": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Raw(pub(crate) Vec<u8>);

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("hex", &to_hex(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Stored::deserialize(d)? {
            Stored::Plain(raw) => Ok(raw),
            Stored::Secret(_) => Err(D::Error::custom("a secret value where bytes belong")),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(text.get(i..i + 2).unwrap_or(""), 16)
                .map_err(|e| format!("bad hex: {e}"))
        })
        .collect()
}

/// A value in a record: the bytes ([`Raw`]), or, for a key holding a secret, what is recorded
/// instead ([`SecretValue`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The value byte for byte.
    Plain(Raw),
    /// A value holding a secret: left out, or encrypted.
    Secret(SecretValue),
}

/// What a record holds for a value with a secret in it, tagged by `secret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "secret", rename_all = "lowercase")]
pub(crate) enum SecretValue {
    /// `{"secret": "omitted"}`: recorded without a secret key, so the value is not recorded.
    Omitted {
        /// The key's `mod_revision`, where the writer knew it: two versions with the same one
        /// hold the same value (so a diff can tell an unchanged secret from one that may have
        /// changed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<i64>,
        /// For a key holding a document: the document with its secret leaves shown as `***`
        /// (JSON text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shown: Option<String>,
    },
    /// `{"secret": "xchacha20poly1305", "key": id, "nonce": b64, "data": b64}`: the value's
    /// bytes encrypted with the history key `key`.
    #[serde(rename = "xchacha20poly1305")]
    Sealed {
        /// The key's id ([`SecretKey::id`](super::SecretKey::id)).
        key: String,
        /// The 24-byte nonce, base64.
        nonce: B64,
        /// The ciphertext with its tag, base64.
        data: B64,
        /// As for `Omitted`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<i64>,
        /// As for `Omitted`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shown: Option<String>,
    },
}

impl SecretValue {
    /// The masked document, for a key holding one.
    pub(crate) fn shown(&self) -> Option<&str> {
        match self {
            SecretValue::Omitted { shown, .. } | SecretValue::Sealed { shown, .. } => {
                shown.as_deref()
            }
        }
    }

    /// The key's `mod_revision` when recorded, if known.
    pub(crate) fn rev(&self) -> Option<i64> {
        match self {
            SecretValue::Omitted { rev, .. } | SecretValue::Sealed { rev, .. } => *rev,
        }
    }
}

/// Bytes as standard base64 text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct B64(pub(crate) Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(B64)
            .map_err(D::Error::custom)
    }
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::Plain(raw) => raw.serialize(s),
            Stored::Secret(secret) => secret.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Hex { hex: String },
            Secret(SecretValue),
        }
        match Repr::deserialize(d)? {
            Repr::Text(text) => Ok(Stored::Plain(Raw(text.into_bytes()))),
            Repr::Hex { hex } => from_hex(&hex)
                .map(|b| Stored::Plain(Raw(b)))
                .map_err(D::Error::custom),
            Repr::Secret(secret) => Ok(Stored::Secret(secret)),
        }
    }
}

/// One write of a delta record, keys relative to the prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Op {
    /// `{"put": key, "value": value}`.
    Put {
        /// The key.
        put: Raw,
        /// Its new value.
        value: Stored,
    },
    /// `{"del": key}`.
    Del {
        /// The deleted key.
        del: Raw,
    },
}

/// Who, why and how: shared by the record and the intent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub(crate) source: VersionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restored_from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) batch: Option<[u32; 2]>,
    /// The fleet gate's refusal the write overrode (`--force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gate_overridden: Option<String>,
}

impl Meta {
    /// A change made through this crate.
    pub(crate) fn new(source: VersionKind, author: &str, comment: &str) -> Self {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Meta {
            source,
            author: text(author),
            comment: text(comment),
            restored_from: None,
            batch: None,
            gate_overridden: None,
        }
    }
}

/// The audit metadata a publish or rollback writes in its own transaction, at
/// `…/history/<prefix>/intent`: whoever records that revision takes the metadata from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Intent {
    #[serde(flatten)]
    pub(crate) meta: Meta,
    pub(crate) time: String,
    pub(crate) unix_ms: i64,
}

impl Intent {
    pub(crate) fn now(meta: Meta) -> Self {
        let unix_ms = now_ms();
        Intent {
            meta,
            time: rfc3339(unix_ms),
            unix_ms,
        }
    }
}

/// Whether a record holds the whole key set or the writes since its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Full,
    Delta,
}

/// Where a record's content is when it is not inline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkRef {
    pub(crate) id: String,
    pub(crate) count: u32,
}

/// A version record as stored at `…/versions/<revision:020>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) format: u32,
    pub(crate) prefix: String,
    pub(crate) revision: i64,
    pub(crate) time: String,
    pub(crate) unix_ms: i64,
    #[serde(flatten)]
    pub(crate) meta: Meta,
    pub(crate) keys: usize,
    pub(crate) bytes: u64,
    pub(crate) kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) base: Option<i64>,
    /// The full record this delta chain started from, when written (a hint for reading).
    pub(crate) checkpoint: i64,
    /// Delta bytes written since that full record (decides when the next one is full).
    #[serde(default)]
    pub(crate) chain_bytes: u64,
    /// The secret field paths the writer knew (format 2; empty in format 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kvs: Option<Vec<(Raw, Stored)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ops: Option<Vec<Op>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chunks: Option<ChunkRef>,
}

impl Head {
    /// The public listing entry.
    pub(crate) fn version(&self) -> Version {
        Version {
            revision: self.revision,
            time: super::time::from_ms(self.unix_ms),
            kind: self.meta.source,
            author: self.meta.author.clone(),
            comment: self.meta.comment.clone(),
            restored_from: self.meta.restored_from,
            batch: self.meta.batch.map(|[n, of]| (n, of)),
            keys: self.keys,
            gate_overridden: self.meta.gate_overridden.clone(),
            storage: VersionStorage {
                bytes: self.bytes,
                base: match self.kind {
                    Kind::Full => None,
                    Kind::Delta => self.base,
                },
                chunks: self.chunks.as_ref().map_or(0, |c| c.count),
            },
        }
    }

    /// Drops the inline content (for listings).
    pub(crate) fn without_content(mut self) -> Self {
        self.kvs = None;
        self.ops = None;
        self
    }

    /// Holds `content` inline.
    pub(crate) fn set_inline(&mut self, content: Content) {
        match content {
            Content::Full(kvs) => self.kvs = Some(kvs),
            Content::Delta(ops) => self.ops = Some(ops),
        }
    }

    /// The inline content (empty if the record has none).
    pub(crate) fn inline_content(&self) -> Content {
        match self.kind {
            Kind::Full => Content::Full(self.kvs.clone().unwrap_or_default()),
            Kind::Delta => Content::Delta(self.ops.clone().unwrap_or_default()),
        }
    }
}

/// A record's content, keys relative to the prefix.
pub(crate) enum Content {
    /// The whole key set.
    Full(Vec<(Raw, Stored)>),
    /// The writes since the base version.
    Delta(Vec<Op>),
}

impl Content {
    /// The key set `state` (full keys; `revs` their `mod_revision`s, where known) as a full
    /// record holds it, secrets kept out as `sealing` says.
    pub(crate) fn full(keys: &Keys, state: &Kvs, revs: &Revs, sealing: &Sealing) -> Self {
        Content::Full(
            state
                .iter()
                .map(|(k, v)| {
                    let rel = keys.relative(k);
                    let rev = revs.get(k).copied();
                    (
                        Raw(rel.to_vec()),
                        sealing.encode(keys.prefix(), rel, v, rev),
                    )
                })
                .collect(),
        )
    }

    /// A key set as read back from records (full keys), as a full record holds it.
    pub(crate) fn stored(keys: &Keys, state: &StoredKvs) -> Self {
        Content::Full(
            state
                .iter()
                .map(|(k, v)| (Raw(keys.relative(k).to_vec()), v.clone()))
                .collect(),
        )
    }

    /// The writes `ops` (full keys) of `revision` as a delta record holds them, secrets kept
    /// out as `sealing` says.
    pub(crate) fn delta(keys: &Keys, ops: &[RawOp], revision: i64, sealing: &Sealing) -> Self {
        Content::Delta(
            ops.iter()
                .map(|op| match op {
                    RawOp::Put(k, v) => Op::Put {
                        put: Raw(keys.relative(k).to_vec()),
                        value: sealing.encode(keys.prefix(), keys.relative(k), v, Some(revision)),
                    },
                    RawOp::Delete(k) => Op::Del {
                        del: Raw(keys.relative(k).to_vec()),
                    },
                })
                .collect(),
        )
    }

    /// Its size as JSON, in bytes.
    pub(crate) fn json_len(&self) -> Result<usize> {
        let len = match self {
            Content::Full(kvs) => serde_json::to_vec(kvs),
            Content::Delta(ops) => serde_json::to_vec(ops),
        }
        .map_err(encode_error)?
        .len();
        Ok(len)
    }
}

/// A full record's key set with full keys again.
pub(crate) fn absolute_kvs(keys: &Keys, kvs: Vec<(Raw, Stored)>) -> StoredKvs {
    kvs.into_iter()
        .map(|(k, v)| (keys.absolute(&k.0), v))
        .collect()
}

/// Decodes a version record.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Head> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(ErrorKind::Etcd, format!("unreadable history record: {e}")).with_source(e)
    })
}

/// The record of `revision` cannot be read back as it says.
pub(crate) fn corrupt(revision: i64, what: &str) -> Error {
    Error::new(
        ErrorKind::Etcd,
        format!("history record of version {revision} is damaged: {what}"),
    )
    .with_revision(revision)
}

/// A record (or its content) could not be encoded as JSON.
pub(crate) fn encode_error(e: serde_json::Error) -> Error {
    Error::new(ErrorKind::Etcd, format!("encoding a history record: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_are_text_or_hex() {
        let v = serde_json::to_string(&(Raw(b"port".to_vec()), Raw(vec![0xff, 0x00]))).unwrap();
        assert_eq!(v, r#"["port",{"hex":"ff00"}]"#);
        let back: (Raw, Raw) = serde_json::from_str(&v).unwrap();
        assert_eq!(back.1 .0, vec![0xff, 0x00]);
    }

    #[test]
    fn secret_values_are_tagged_objects_and_plain_values_stay_text() {
        let values = vec![
            Stored::Plain(Raw(b"db1".to_vec())),
            Stored::Plain(Raw(vec![0xff])),
            Stored::Secret(SecretValue::Omitted {
                rev: None,
                shown: None,
            }),
            Stored::Secret(SecretValue::Omitted {
                rev: Some(7),
                shown: Some(r#"{"password":"***"}"#.into()),
            }),
            Stored::Secret(SecretValue::Sealed {
                key: "00112233aabbccdd".into(),
                nonce: B64(vec![1, 2, 3]),
                data: B64(vec![4, 5]),
                rev: None,
                shown: None,
            }),
        ];
        let text = serde_json::to_string(&values).unwrap();
        assert_eq!(
            text,
            r#"["db1",{"hex":"ff"},{"secret":"omitted"},{"secret":"omitted","rev":7,"shown":"{\"password\":\"***\"}"},{"secret":"xchacha20poly1305","key":"00112233aabbccdd","nonce":"AQID","data":"BAU="}]"#
        );
        assert_eq!(serde_json::from_str::<Vec<Stored>>(&text).unwrap(), values);
        assert!(serde_json::from_str::<Stored>(r#"{"secret":"rot13"}"#).is_err());
    }

    #[test]
    fn ops_are_readable_objects() {
        let ops = vec![
            Op::Put {
                put: Raw(b"port".to_vec()),
                value: Stored::Plain(Raw(b"9090".to_vec())),
            },
            Op::Del {
                del: Raw(b"legacy".to_vec()),
            },
        ];
        let text = serde_json::to_string(&ops).unwrap();
        assert_eq!(text, r#"[{"put":"port","value":"9090"},{"del":"legacy"}]"#);
        assert_eq!(serde_json::from_str::<Vec<Op>>(&text).unwrap(), ops);
    }

    #[test]
    fn meta_is_flattened_and_sparse() {
        let intent = Intent {
            meta: Meta::new(VersionKind::Rollback, "alice", ""),
            time: "t".into(),
            unix_ms: 1,
        };
        let text = serde_json::to_string(&intent).unwrap();
        assert_eq!(
            text,
            r#"{"source":"rollback","author":"alice","time":"t","unix_ms":1}"#
        );
    }
}
