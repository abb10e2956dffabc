//! Secret values in history records ([`Sealing`]): which keys hold a secret (the
//! [`SecretPaths`] rule applied to the key's field path, and to the document a key holds), what
//! a record holds instead of such a value, and how it comes back.
//!
//! | a key whose value… | recorded without a secret key | recorded with one |
//! |---|---|---|
//! | is a secret field, or lies inside one | `{"secret":"omitted"}` | `{"secret":"xchacha20poly1305","key":id,"nonce":…,"data":…}` (the value's bytes) |
//! | is a document (JSON/YAML) with a secret field inside | the same, plus `"shown"`: the document with its secret leaves as `***` | the same, plus `"shown"` |
//! | is a document that cannot be parsed, or an array where a struct holding a secret belongs | as a secret field (nothing shown) | as a secret field |
//! | holds no secret | the value as it is | the value as it is |
//!
//! A rollback decrypts a sealed value (exact bytes; a missing key is an error naming its id);
//! without the value it keeps the current one (for a document: the recorded document with the
//! current value's secret leaves put back). Views ([`view`](Sealing::view)) never show a secret:
//! what they cannot read becomes [`UNREADABLE`], which every view masks and a diff reports as
//! "whether it changed is unknown".

use serde_json::Value;

use super::key::{KeyRing, OpenError, Sealed};
use super::record::{corrupt, Raw, SecretValue, Stored, B64};
use super::store::{Kvs, StoredKvs};
use crate::config::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::provenance::join_path as join;
use crate::secrets::{SecretPaths, MASK};

/// What a view of a version holds for a secret whose value it cannot read (not recorded, or
/// encrypted with a key it does not have), followed by `@<mod_revision>` where the record
/// names the key's. Views mask it like any secret value; a diff treats two equal ones (the
/// same write) as unchanged and reports any other with
/// [`FieldChange::unknown`](super::FieldChange::unknown).
pub(crate) const UNREADABLE: &str = "__coordination_secret_not_in_history__";

/// [`UNREADABLE`] for a value written at `rev`.
fn unreadable(rev: Option<i64>) -> String {
    match rev {
        Some(rev) => format!("{UNREADABLE}@{rev}"),
        None => UNREADABLE.to_string(),
    }
}

/// Binds a ciphertext to its prefix and key, so it cannot be moved to another key.
const AAD_TAG: &[u8] = b"coordination/history/secret/1\0";

/// How one writer or reader of a prefix's history treats secrets: the secret field paths, the
/// keys, and the string fields (to parse a document the way a reload does).
#[derive(Clone, Debug)]
pub(crate) struct Sealing {
    secrets: Vec<String>,
    keys: KeyRing,
    fields: StringFields,
}

/// How a value is recorded.
enum Form {
    /// As it is: it holds no secret.
    Plain,
    /// Left out or encrypted, nothing shown.
    Whole,
    /// A document left out or encrypted, shown with its secret leaves masked (JSON text).
    Shown(String),
}

/// The dotted field path a key relative to the prefix names (`database/password` →
/// `database.password`; empty segments are skipped, so `a//b/` is still `a.b`).
fn path_of(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

fn segments(path: &str) -> Vec<&str> {
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('.').collect()
    }
}

/// How the value of the key at `path` is recorded under `paths`.
fn form(paths: &SecretPaths<'_, String>, fields: &StringFields, path: &str, value: &[u8]) -> Form {
    if !paths.holds_secret(path) {
        return Form::Plain;
    }
    if paths.is_secret(path) {
        return Form::Whole;
    }
    match fields.parse_for(&segments(path), value) {
        Ok(doc) if !paths.mask_covers(path, &doc) => Form::Whole,
        Ok(doc) if !paths.has_secret(path, &doc) => Form::Plain,
        Ok(doc) => match serde_json::to_string(&paths.mask(path, &doc)) {
            Ok(text) => Form::Shown(text),
            Err(_) => Form::Whole,
        },
        Err(_) => Form::Whole,
    }
}

/// `shown` (a masked document at `path`) with each masked secret replaced by `take(path of
/// the secret)`, or left out where that is `None`.
fn fill(
    paths: &SecretPaths<'_, String>,
    path: &str,
    shown: &Value,
    take: &mut dyn FnMut(&str) -> Option<Value>,
) -> Option<Value> {
    if paths.is_secret(path) {
        return take(path);
    }
    match shown {
        Value::Object(map) if paths.has_secret_below(path) => Some(Value::Object(
            map.iter()
                .filter_map(|(k, v)| fill(paths, &join(path, k), v, take).map(|v| (k.clone(), v)))
                .collect(),
        )),
        Value::Array(items) if paths.has_secret_below(path) => Some(Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    fill(paths, &join(path, &i.to_string()), v, take).unwrap_or(Value::Null)
                })
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The value at `sub` inside `doc`, the document at `base`.
fn lookup<'v>(doc: &'v Value, base: &str, sub: &str) -> Option<&'v Value> {
    let rest = if base.is_empty() {
        sub
    } else {
        sub.strip_prefix(base)?.strip_prefix('.')?
    };
    segments(rest)
        .into_iter()
        .try_fold(doc, |node, segment| match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
            _ => None,
        })
}

/// `value` of the key `rel` as a reader shows it under `paths`: a secret field's value as
/// `***`, a document with its secret leaves masked (JSON), anything else as it is.
pub(crate) fn mask_value(
    paths: &SecretPaths<'_, String>,
    fields: &StringFields,
    rel: &[u8],
    value: &[u8],
) -> Vec<u8> {
    match form(paths, fields, &path_of(rel), value) {
        Form::Plain => value.to_vec(),
        Form::Whole => MASK.as_bytes().to_vec(),
        Form::Shown(text) => text.into_bytes(),
    }
}

/// `a` and `b` as one list, without repeats.
pub(crate) fn union(a: &[String], b: &[impl AsRef<str>]) -> Vec<String> {
    let mut out = a.to_vec();
    for s in b {
        if !out.iter().any(|o| o == s.as_ref()) {
            out.push(s.as_ref().to_string());
        }
    }
    out
}

impl Sealing {
    /// Secrets at `secrets`, encrypted with `keys` (left out when it has no write key);
    /// documents parsed with `fields`.
    pub(crate) fn new(secrets: Vec<String>, keys: KeyRing, fields: StringFields) -> Self {
        Sealing {
            secrets,
            keys,
            fields,
        }
    }

    /// No secret paths known, no keys.
    pub(crate) fn none() -> Self {
        Sealing::new(
            Vec::new(),
            KeyRing::default(),
            StringFields::new(Value::Bool(true)),
        )
    }

    /// The secret field paths records are written with.
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The keys.
    pub(crate) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The same with other keys.
    pub(crate) fn with_keys(mut self, keys: KeyRing) -> Self {
        self.keys = keys;
        self
    }

    fn aad(prefix: &str, rel: &[u8]) -> Vec<u8> {
        let mut aad = AAD_TAG.to_vec();
        aad.extend_from_slice(prefix.as_bytes());
        aad.push(0);
        aad.extend_from_slice(rel);
        aad
    }

    /// How a record holds `value` of the key `rel` (relative to `prefix`), whose
    /// `mod_revision` is `rev` where known.
    pub(crate) fn encode(
        &self,
        prefix: &str,
        rel: &[u8],
        value: &[u8],
        rev: Option<i64>,
    ) -> Stored {
        let shown = match form(
            &SecretPaths::new(&self.secrets),
            &self.fields,
            &path_of(rel),
            value,
        ) {
            Form::Plain => return Stored::Plain(Raw(value.to_vec())),
            Form::Whole => None,
            Form::Shown(text) => Some(text),
        };
        Stored::Secret(match self.keys.seal(value, &Self::aad(prefix, rel)) {
            Some(Sealed { key, nonce, data }) => SecretValue::Sealed {
                key,
                nonce: B64(nonce),
                data: B64(data),
                rev,
                shown,
            },
            None => SecretValue::Omitted { rev, shown },
        })
    }

    fn open(
        &self,
        prefix: &str,
        rel: &[u8],
        key: &str,
        nonce: &B64,
        data: &B64,
    ) -> std::result::Result<Vec<u8>, OpenError> {
        let sealed = Sealed {
            key: key.to_string(),
            nonce: nonce.0.clone(),
            data: data.0.clone(),
        };
        self.keys.open(&sealed, &Self::aad(prefix, rel))
    }

    /// The value a rollback to `version` (whose record names the secret paths `recorded`)
    /// writes for the key `rel`, given its current value; `None`: the key stays absent.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the key id when the value is encrypted with a key
    /// that is not configured; [`ErrorKind::Etcd`] when it does not decrypt (an altered
    /// record).
    pub(crate) fn restore(
        &self,
        prefix: &str,
        version: i64,
        recorded: &[String],
        rel: &[u8],
        stored: &Stored,
        current: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let secret = match stored {
            Stored::Plain(raw) => return Ok(Some(raw.0.clone())),
            Stored::Secret(secret) => secret,
        };
        let path = path_of(rel);
        let key_name = format!("{prefix}{}", String::from_utf8_lossy(rel));
        if let SecretValue::Sealed {
            key, nonce, data, ..
        } = secret
        {
            return match self.open(prefix, rel, key, nonce, data) {
                Ok(plain) => Ok(Some(plain)),
                Err(OpenError::MissingKey) => {
                    let given = self.keys.ids();
                    let given = if given.is_empty() {
                        "no key was given".to_string()
                    } else {
                        format!("the keys given are {}", given.join(", "))
                    };
                    Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "cannot restore version {version} of `{prefix}`: the secret value of `{key_name}` is encrypted with history key {key}, and {given}; add that key to read with (HistoryOptions::with_read_key, coordctl --history-read-key-file); nothing was written"
                        ),
                    )
                    .with_key(key_name)
                    .with_field(path)
                    .with_revision(version))
                }
                Err(OpenError::Damaged) => Err(corrupt(
                    version,
                    &format!(
                        "the secret value of `{key_name}` does not decrypt with history key {key}"
                    ),
                )
                .with_key(key_name)),
            };
        }
        // Not recorded: keep the current value (for a document, its secret leaves).
        let Some(shown) = secret.shown() else {
            return Ok(current.map(<[u8]>::to_vec));
        };
        let shown: Value = serde_json::from_str(shown)
            .map_err(|e| corrupt(version, &format!("`{key_name}`: bad shown document: {e}")))?;
        let all = union(recorded, &self.secrets);
        let paths = SecretPaths::new(&all);
        let now = current.and_then(|c| self.fields.parse_for(&segments(&path), c).ok());
        if let (Some(bytes), Some(doc)) = (current, &now) {
            if paths.mask(&path, doc) == shown {
                return Ok(Some(bytes.to_vec()));
            }
        }
        let merged = fill(&paths, &path, &shown, &mut |sub| {
            now.as_ref().and_then(|d| lookup(d, &path, sub)).cloned()
        });
        merged
            .map(|doc| {
                serde_json::to_vec(&doc)
                    .map_err(|e| Error::new(ErrorKind::Etcd, format!("encoding `{key_name}`: {e}")))
            })
            .transpose()
    }

    /// The key set a rollback to `version` writes, from the version's `stored` key set and the
    /// `current` one (full keys).
    ///
    /// # Errors
    /// As [`restore`](Self::restore).
    pub(crate) fn restore_state(
        &self,
        prefix: &str,
        version: i64,
        recorded: &[String],
        stored: &StoredKvs,
        current: &Kvs,
    ) -> Result<Kvs> {
        let mut out = Kvs::new();
        for (key, value) in stored {
            let rel = key.strip_prefix(prefix.as_bytes()).unwrap_or(key);
            let now = current.get(key).map(Vec::as_slice);
            if let Some(bytes) = self.restore(prefix, version, recorded, rel, value, now)? {
                out.insert(key.clone(), bytes);
            }
        }
        Ok(out)
    }

    /// The bytes a view of a version uses for the key `rel`: the value, or for a secret the
    /// record does not hold readably, [`UNREADABLE`] (inside the shown document, for a key
    /// holding one). With `decrypt`, sealed values this reader has the key for are decrypted
    /// (for a diff to compare them; every view masks them).
    pub(crate) fn view(
        &self,
        prefix: &str,
        recorded: &[String],
        rel: &[u8],
        stored: &Stored,
        decrypt: bool,
    ) -> Vec<u8> {
        let secret = match stored {
            Stored::Plain(raw) => return raw.0.clone(),
            Stored::Secret(secret) => secret,
        };
        if let (
            true,
            SecretValue::Sealed {
                key, nonce, data, ..
            },
        ) = (decrypt, secret)
        {
            match self.open(prefix, rel, key, nonce, data) {
                Ok(plain) => return plain,
                Err(OpenError::Damaged) => {
                    tracing::warn!(prefix, key = %String::from_utf8_lossy(rel), history_key = %key, "a secret value in the history does not decrypt; shown as unreadable")
                }
                Err(OpenError::MissingKey) => {}
            }
        }
        let placeholder = unreadable(secret.rev());
        let Some(shown) = secret.shown() else {
            return placeholder.into_bytes();
        };
        let Ok(shown) = serde_json::from_str::<Value>(shown) else {
            return placeholder.into_bytes();
        };
        let all = union(recorded, &self.secrets);
        let path = path_of(rel);
        fill(&SecretPaths::new(&all), &path, &shown, &mut |_| {
            Some(Value::String(placeholder.clone()))
        })
        .and_then(|doc| serde_json::to_vec(&doc).ok())
        .unwrap_or_else(|| placeholder.into_bytes())
    }

    /// A version's `stored` key set as views see it (see [`view`](Self::view)).
    pub(crate) fn view_state(
        &self,
        prefix: &str,
        recorded: &[String],
        stored: &StoredKvs,
        decrypt: bool,
    ) -> Kvs {
        stored
            .iter()
            .map(|(key, value)| {
                let rel = key.strip_prefix(prefix.as_bytes()).unwrap_or(key);
                (
                    key.clone(),
                    self.view(prefix, recorded, rel, value, decrypt),
                )
            })
            .collect()
    }

    /// Whether a record holding `stored` for the key `rel` holds what recording `plain` would:
    /// the same bytes, a sealed value that decrypts to them, or a left-out value whose shown
    /// document is the same (the left-out secret itself cannot be compared).
    fn same(&self, prefix: &str, rel: &[u8], stored: &Stored, plain: &[u8]) -> bool {
        match stored {
            Stored::Plain(raw) => raw.0 == plain,
            Stored::Secret(SecretValue::Sealed {
                key, nonce, data, ..
            }) => self
                .open(prefix, rel, key, nonce, data)
                .is_ok_and(|p| p == plain),
            Stored::Secret(SecretValue::Omitted { shown, .. }) => {
                match form(
                    &SecretPaths::new(&self.secrets),
                    &self.fields,
                    &path_of(rel),
                    plain,
                ) {
                    Form::Plain => false,
                    Form::Whole => shown.is_none(),
                    Form::Shown(text) => match (shown, serde_json::from_str::<Value>(&text)) {
                        (Some(s), Ok(now)) => {
                            serde_json::from_str::<Value>(s).is_ok_and(|s| s == now)
                        }
                        _ => false,
                    },
                }
            }
        }
    }

    /// Whether the record key set `stored` holds what recording `plain` would (see
    /// [`same`](Self::same)).
    pub(crate) fn same_state(&self, prefix: &str, stored: &StoredKvs, plain: &Kvs) -> bool {
        stored.len() == plain.len()
            && stored.iter().zip(plain).all(|((ks, vs), (kp, vp))| {
                ks == kp
                    && self.same(
                        prefix,
                        ks.strip_prefix(prefix.as_bytes()).unwrap_or(ks),
                        vs,
                        vp,
                    )
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::SecretKey;

    const PREFIX: &str = "/p/";

    fn sealing(keys: KeyRing) -> Sealing {
        Sealing::new(
            vec!["db.password".into(), "token".into()],
            keys,
            StringFields::new(json!({
                "type": "object",
                "properties": {"db": {"type": "object", "properties": {
                    "password": {"type": "string"}, "version": {"type": "string"}}}}
            })),
        )
    }

    fn ring(key: &SecretKey) -> KeyRing {
        let mut ring = KeyRing::default();
        ring.set_write(key.clone());
        ring
    }

    fn text(stored: &Stored) -> String {
        serde_json::to_string(stored).unwrap()
    }

    #[test]
    fn only_values_holding_a_secret_are_kept_out() {
        let s = sealing(KeyRing::default());
        assert_eq!(
            s.encode(PREFIX, b"db/host", b"db1", None),
            Stored::Plain(Raw(b"db1".to_vec()))
        );
        assert_eq!(
            text(&s.encode(PREFIX, b"db/password", b"hunter2", None)),
            r#"{"secret":"omitted"}"#
        );
        assert_eq!(
            text(&s.encode(PREFIX, b"token/a/b", b"x", None)),
            r#"{"secret":"omitted"}"#
        );
        // A document: its secret leaves are masked, the rest stays readable.
        let doc = s.encode(
            PREFIX,
            b"db",
            b"host: db1\npassword: hunter2\nversion: 1.10\n",
            Some(12),
        );
        assert_eq!(
            text(&doc),
            r#"{"secret":"omitted","rev":12,"shown":"{\"host\":\"db1\",\"password\":\"***\",\"version\":\"1.10\"}"}"#
        );
        // A document without the secret in it is recorded as it is.
        assert_eq!(
            s.encode(PREFIX, b"db", b"{\"host\": \"db1\"}", None),
            Stored::Plain(Raw(b"{\"host\": \"db1\"}".to_vec()))
        );
        // Unparseable, or a struct as a sequence: nothing is shown.
        assert_eq!(
            text(&s.encode(PREFIX, b"db", b"a: [1", None)),
            r#"{"secret":"omitted"}"#
        );
        assert_eq!(
            text(&s.encode(PREFIX, b"db", b"[db1, hunter2]", None)),
            r#"{"secret":"omitted"}"#
        );
        assert!(!text(&doc).contains("hunter2"));
    }

    #[test]
    fn sealed_values_restore_exactly_and_a_missing_key_is_named() {
        let a = SecretKey::from_bytes([1; 32]);
        let s = sealing(ring(&a));
        let doc = b"host: db1\npassword: hunter2 # yaml comment\n";
        let sealed = s.encode(PREFIX, b"db", doc, None);
        let shown = text(&sealed);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains(a.id()) && shown.contains("\\\"host\\\":\\\"db1\\\""),
            "{shown}"
        );
        let back = s.restore(PREFIX, 7, &[], b"db", &sealed, None).unwrap();
        assert_eq!(back.as_deref(), Some(&doc[..]));
        // Bound to its key: moved to another key it does not decrypt.
        let e = s
            .restore(PREFIX, 7, &[], b"other", &sealed, None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Etcd, "{e}");
        // Views never decrypt unless asked, and then only to compare.
        let view = s.view(PREFIX, &[], b"db", &sealed, false);
        let view: Value = serde_json::from_slice(&view).unwrap();
        assert_eq!(view, json!({"host": "db1", "password": UNREADABLE}));
        assert_eq!(s.view(PREFIX, &[], b"db", &sealed, true), doc);

        let b = SecretKey::from_bytes([2; 32]);
        let other = sealing(ring(&b));
        let e = other
            .restore(PREFIX, 7, &[], b"db", &sealed, Some(b"x"))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message().contains(a.id()) && e.message().contains(b.id()),
            "{e}"
        );
        assert_eq!(e.revision(), Some(7));
        assert_eq!(
            other.view(
                PREFIX,
                &[],
                b"db/password",
                &s.encode(PREFIX, b"db/password", b"pw", None),
                true
            ),
            UNREADABLE.as_bytes()
        );
    }

    #[test]
    fn without_the_value_a_rollback_keeps_the_current_secret() {
        let s = sealing(KeyRing::default());
        let whole = s.encode(PREFIX, b"db/password", b"old-pw", None);
        assert_eq!(
            s.restore(PREFIX, 3, &[], b"db/password", &whole, Some(b"new-pw"))
                .unwrap(),
            Some(b"new-pw".to_vec())
        );
        assert_eq!(
            s.restore(PREFIX, 3, &[], b"db/password", &whole, None)
                .unwrap(),
            None
        );
        // A document: the recorded fields, the current secret.
        let old = s.encode(
            PREFIX,
            b"db",
            b"{\"host\": \"db1\", \"password\": \"old-pw\"}",
            None,
        );
        let back = s
            .restore(
                PREFIX,
                3,
                &[],
                b"db",
                &old,
                Some(b"host: db2\npassword: new-pw\n"),
            )
            .unwrap()
            .unwrap();
        let back: Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(back, json!({"host": "db1", "password": "new-pw"}));
        // Unchanged but for the secret: the current bytes stay exactly.
        let current = b"host: db1\npassword: new-pw # keep\n";
        assert_eq!(
            s.restore(PREFIX, 3, &[], b"db", &old, Some(current))
                .unwrap()
                .as_deref(),
            Some(&current[..])
        );
        // No current secret: the recorded fields alone.
        let back = s
            .restore(PREFIX, 3, &[], b"db", &old, Some(b"host: db2"))
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&back).unwrap(),
            json!({"host": "db1"})
        );
    }

    #[test]
    fn a_record_is_the_same_as_a_state_when_recording_it_again_adds_nothing() {
        let key = SecretKey::from_bytes([3; 32]);
        for s in [sealing(KeyRing::default()), sealing(ring(&key))] {
            let stored = s.encode(
                PREFIX,
                b"db",
                b"{\"host\": \"db1\", \"password\": \"pw\"}",
                None,
            );
            let same = b"{\"host\": \"db1\", \"password\": \"pw\"}";
            assert!(s.same(PREFIX, b"db", &stored, same));
            assert!(!s.same(PREFIX, b"db", &stored, b"host: db2\npassword: pw"));
            let whole = s.encode(PREFIX, b"token", b"t1", None);
            assert!(s.same(PREFIX, b"token", &whole, b"t1"));
        }
        let sealed = sealing(ring(&key)).encode(PREFIX, b"token", b"t1", None);
        assert!(!sealing(ring(&key)).same(PREFIX, b"token", &sealed, b"t2"));
    }

    #[test]
    fn masked_values_show_no_secret() {
        let all = vec!["db.password".to_string()];
        let paths = SecretPaths::new(&all);
        let fields = StringFields::new(json!(true));
        assert_eq!(mask_value(&paths, &fields, b"db/password", b"pw"), b"***");
        assert_eq!(mask_value(&paths, &fields, b"db/host", b"h"), b"h");
        assert_eq!(
            mask_value(&paths, &fields, b"db", b"{password: pw, host: h}"),
            br#"{"host":"h","password":"***"}"#
        );
        assert_eq!(mask_value(&paths, &fields, b"db", b"password: [1"), b"***");
    }
}
