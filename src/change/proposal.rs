//! Proposals: a change to a prefix stored for review at `<ns>/__coordination/proposals/<id>`,
//! with its base revision, the typed diff against it (secrets masked), author, comment and
//! time, approvals, and its end (rejected or applied). Every change to a proposal is a
//! transaction guarded by its `mod_revision`, retried on a fresh read, so two approvers cannot
//! lose each other's approval.

use std::fmt;

use base64::Engine as _;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::Promotion;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::{read_prefix, Etcd};
use crate::history::{FieldChange, KeyRing, Sealed};
use crate::secrets::SecretPaths;

/// Where a proposal is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProposalState {
    /// Waiting for approvals, or approved and not yet applied.
    Open,
    /// Rejected (see [`Proposal::rejection`]); it can no longer apply.
    Rejected,
    /// Applied (see [`Proposal::applied`]).
    Applied,
}

impl fmt::Display for ProposalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProposalState::Open => "open",
            ProposalState::Rejected => "rejected",
            ProposalState::Applied => "applied",
        })
    }
}

/// One approval: who and when (RFC 3339 UTC with ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Approval {
    /// The approver (the etcd user when auth is on).
    pub by: String,
    /// When, RFC 3339 UTC with ms.
    pub time: String,
}

/// A rejection: who, why, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rejection {
    /// Who rejected it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When, RFC 3339 UTC with ms.
    pub time: String,
}

/// How a proposal was applied: by whom, as which version, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Applied {
    /// Who applied it.
    pub by: String,
    /// The version (etcd revision) written; `None` if the prefix already held the change.
    pub revision: Option<i64>,
    /// When, RFC 3339 UTC with ms.
    pub time: String,
}

/// A proposed change to one config prefix, as stored in etcd (JSON) and listed by
/// [`ChangeControl::proposals`](super::ChangeControl::proposals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Proposal {
    /// The id (`cr-` and 12 hex digits): the key is `<ns>/__coordination/proposals/<id>`.
    pub id: String,
    /// The config prefix, as given (no namespace, no trailing `/`), e.g. `/apps/chat/config`.
    pub prefix: String,
    /// The etcd revision the change was computed against: applying it is a publish guarded
    /// by this revision, which fails with [`ErrorKind::Conflict`] if the prefix changed since.
    pub base_revision: i64,
    /// Who proposed it.
    pub author: String,
    /// Why.
    pub comment: String,
    /// When it was proposed (or last rebased), RFC 3339 UTC with ms.
    pub time: String,
    /// Open, rejected or applied.
    pub state: ProposalState,
    /// The changed fields against the base revision, secrets masked.
    pub diff: Vec<FieldChange>,
    /// Approvals so far (a rebase drops them).
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// Set once rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// Set once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// For a promotion: where the change came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<Promotion>,
    /// Earlier base revisions, oldest first (one per rebase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebased_from: Vec<i64>,
    /// What applying it writes.
    pub(crate) candidate: Candidate,
}

/// What a proposal writes: a whole document (as `apply -f`) or field patches (as `put`, and a
/// promotion). Secret values are never stored in plaintext: one unchanged from the base is
/// `{"$coordination": "keep"}` (taken from the prefix when applied), a new one is encrypted
/// with the history key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Candidate {
    Document { document: Value },
    Fields { fields: Vec<SetField> },
}

/// One field patch: `value` `None` deletes the field's keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SetField {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) value: Option<Value>,
}

/// The marker key of a secret placeholder in a stored candidate.
const MARK: &str = "$coordination";

fn aad(prefix: &str, path: &str) -> Vec<u8> {
    let mut aad = b"coordination proposal secret\0".to_vec();
    aad.extend_from_slice(prefix.as_bytes());
    aad.push(0);
    aad.extend_from_slice(path.as_bytes());
    aad
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The value at dotted `path` of `doc`.
pub(crate) fn at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(doc);
    }
    path.split('.').try_fold(doc, |node, key| node.get(key))
}

/// `value` (at `path`) as stored: secrets kept out (see [`Candidate`]).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] naming the field for a changed secret without a history key.
pub(crate) fn seal(
    value: &Value,
    path: &str,
    base: &Value,
    secrets: &SecretPaths<'_, String>,
    ring: &KeyRing,
    prefix: &str,
) -> Result<Value> {
    if secrets.is_secret(path) {
        if at(base, path) == Some(value) {
            return Ok(json!({ MARK: "keep" }));
        }
        let plain = serde_json::to_vec(value).unwrap_or_default();
        let Some(sealed) = ring.seal(&plain, &aad(prefix, path)) else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the change sets secret field `{path}`: a proposal keeps it only encrypted, so give the history secret key (--history-key-file, or COORD_HISTORY_KEY)"
                ),
            )
            .with_field(path));
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        return Ok(json!({
            MARK: "sealed",
            "key": sealed.key,
            "nonce": b64.encode(&sealed.nonce),
            "data": b64.encode(&sealed.data),
        }));
    }
    match value {
        Value::Object(map) if secrets.has_secret_below(path) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(
                    k.clone(),
                    seal(v, &join(path, k), base, secrets, ring, prefix)?,
                );
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// A stored `value` (at `path`) with its secrets back: kept ones from `current`, encrypted
/// ones decrypted with `ring`.
///
/// # Errors
/// [`ErrorKind::Conflict`] when a kept secret is no longer in the prefix;
/// [`ErrorKind::InvalidArgument`] naming the key id when the value was encrypted with a key
/// `ring` does not hold, or does not decrypt.
pub(crate) fn unseal(
    value: &Value,
    path: &str,
    current: &Value,
    ring: &KeyRing,
    prefix: &str,
) -> Result<Value> {
    let Value::Object(map) = value else {
        return Ok(value.clone());
    };
    match map.get(MARK).and_then(Value::as_str) {
        Some("keep") => at(current, path).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                format!("secret field `{path}` the proposal keeps is no longer set: rebase the proposal"),
            )
            .with_field(path)
        }),
        Some("sealed") => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let text = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("");
            let key = text("key").to_string();
            let damaged = || {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("secret field `{path}` of the proposal does not decrypt with history key `{key}`"),
                )
                .with_field(path)
            };
            let sealed = Sealed {
                key: key.clone(),
                nonce: b64.decode(text("nonce")).map_err(|_| damaged())?,
                data: b64.decode(text("data")).map_err(|_| damaged())?,
            };
            let plain = ring.open(&sealed, &aad(prefix, path)).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("secret field `{path}` of the proposal is encrypted with history key `{key}`: give that key (--history-key-file) to apply it"),
                )
                .with_field(path)
            })?;
            serde_json::from_slice(&plain).map_err(|_| damaged())
        }
        _ => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), unseal(v, &join(path, k), current, ring, prefix)?);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Where proposals live: `<ns>/__coordination/proposals/`.
pub(crate) fn root(namespace: &str) -> String {
    format!("{namespace}/__coordination/proposals/")
}

/// Checks the shape of a proposal id.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for anything but 1 to 64 of `[a-z0-9-]`.
pub(crate) fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("`{id}` is not a proposal id (like cr-0123456789ab)"),
        ))
    }
}

/// A fresh id: `cr-` and 12 hex digits of randomness.
pub(crate) fn new_id() -> String {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; 6];
    chacha20poly1305::aead::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cr-{hex}")
}

fn parse(key: &str, bytes: &[u8], revision: i64) -> Result<Proposal> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Validation,
            format!("proposal `{key}` does not parse: {e}"),
        )
        .with_key(key)
        .with_revision(revision)
    })
}

fn encode(p: &Proposal) -> Result<Vec<u8>> {
    serde_json::to_vec(p).map_err(|e| {
        Error::new(
            ErrorKind::Etcd,
            format!("encoding proposal `{}`: {e}", p.id),
        )
        .with_source(e)
    })
}

fn access(e: etcd_client::Error, what: &str, key: &str, permission: Permission) -> Error {
    Error::etcd(format_args!("{what} `{key}`"), e).needs(
        permission,
        &format!("the key `{key}`"),
        key,
    )
}

/// The proposal `id` and its `mod_revision`.
///
/// # Errors
/// [`ErrorKind::NotFound`] for no such proposal; etcd errors.
pub(crate) async fn read(etcd: &Etcd, namespace: &str, id: &str) -> Result<(Proposal, i64)> {
    check_id(id)?;
    let key = format!("{}{id}", root(namespace));
    let resp = etcd
        .kv()
        .get(key.as_str(), None)
        .await
        .map_err(|e| access(e, "reading proposal", &key, Permission::Read))?;
    let Some(kv) = resp.kvs().first() else {
        return Err(Error::new(ErrorKind::NotFound, format!("no proposal `{id}`")).with_key(key));
    };
    Ok((
        parse(&key, kv.value(), kv.mod_revision())?,
        kv.mod_revision(),
    ))
}

/// Stores a new proposal (create-if-absent; a fresh id on the rare collision).
pub(crate) async fn create(etcd: &Etcd, namespace: &str, proposal: &mut Proposal) -> Result<()> {
    for _ in 0..5 {
        let key = format!("{}{}", root(namespace), proposal.id);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), encode(proposal)?, None)]);
        let resp = etcd
            .kv()
            .txn(txn)
            .await
            .map_err(|e| access(e, "writing proposal", &key, Permission::ReadWrite))?;
        if resp.succeeded() {
            return Ok(());
        }
        proposal.id = new_id();
    }
    Err(Error::new(
        ErrorKind::Conflict,
        "could not find a free proposal id",
    ))
}

/// Changes proposal `id` with `change` (on a fresh read each attempt), guarded by the
/// `mod_revision` it read; retried up to 10 times on a concurrent change.
pub(crate) async fn update(
    etcd: &Etcd,
    namespace: &str,
    id: &str,
    mut change: impl FnMut(&mut Proposal) -> Result<()>,
) -> Result<Proposal> {
    let key = format!("{}{id}", root(namespace));
    for _ in 0..10 {
        let (mut proposal, revision) = read(etcd, namespace, id).await?;
        change(&mut proposal)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key.as_str(), encode(&proposal)?, None)]);
        let resp = etcd
            .kv()
            .txn(txn)
            .await
            .map_err(|e| access(e, "writing proposal", &key, Permission::ReadWrite))?;
        if resp.succeeded() {
            return Ok(proposal);
        }
    }
    Err(Error::new(
        ErrorKind::Conflict,
        format!("proposal `{id}` kept changing during 10 attempts: try again"),
    )
    .with_key(key))
}

/// Every proposal for `prefix` (as given), oldest first.
pub(crate) async fn list(etcd: &Etcd, namespace: &str, prefix: &str) -> Result<Vec<Proposal>> {
    Ok(list_revisions(etcd, namespace, prefix)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

/// Deletes proposal `id` if its `mod_revision` is still `revision`; false if it changed (or went)
/// since.
pub(crate) async fn delete_unchanged(
    etcd: &Etcd,
    namespace: &str,
    id: &str,
    revision: i64,
) -> Result<bool> {
    let key = format!("{}{id}", root(namespace));
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            revision,
        )])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    let resp = etcd
        .kv()
        .txn(txn)
        .await
        .map_err(|e| access(e, "deleting proposal", &key, Permission::ReadWrite))?;
    Ok(resp.succeeded())
}

/// Every proposal for `prefix` (as given) with its `mod_revision`, oldest first.
pub(crate) async fn list_revisions(
    etcd: &Etcd,
    namespace: &str,
    prefix: &str,
) -> Result<Vec<(Proposal, i64)>> {
    let root = root(namespace);
    let (_, kvs) = read_prefix(etcd, &root, 1000).await.map_err(|e| {
        let key = root.clone();
        e.needs(Permission::Read, &format!("the prefix `{key}`"), &key)
    })?;
    let mut out = Vec::new();
    for kv in kvs {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let p = parse(&key, kv.value(), kv.mod_revision())?;
        if p.prefix == prefix {
            out.push((kv.create_revision(), p, kv.mod_revision()));
        }
    }
    out.sort_by_key(|(rev, _, _)| *rev);
    Ok(out.into_iter().map(|(_, p, m)| (p, m)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::SecretKey;

    #[test]
    fn secrets_are_kept_or_sealed_never_plain() {
        let secrets = vec!["db.password".to_string()];
        let paths = SecretPaths::new(&secrets);
        let base = json!({"db": {"host": "a", "password": "old"}});
        let none = KeyRing::default();
        let same = json!({"host": "b", "password": "old"});
        let stored = seal(&same, "db", &base, &paths, &none, "/p/").unwrap();
        assert_eq!(stored, json!({"host": "b", "password": {MARK: "keep"}}));
        assert_eq!(unseal(&stored, "db", &base, &none, "/p/").unwrap(), same);
        let changed = json!({"host": "b", "password": "new"});
        let e = seal(&changed, "db", &base, &paths, &none, "/p/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let mut ring = KeyRing::default();
        ring.set_write(SecretKey::from_bytes([7; 32]));
        let stored = seal(&changed, "db", &base, &paths, &ring, "/p/").unwrap();
        assert!(!stored.to_string().contains("new"), "{stored}");
        assert_eq!(unseal(&stored, "db", &base, &ring, "/p/").unwrap(), changed);
        assert!(unseal(&stored, "db", &base, &none, "/p/").is_err());
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id(&new_id()).is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
    }
}
