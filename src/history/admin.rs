//! [`ConfigHistory`]: the untyped history API for tools (and `coordctl`), driven by the JSON
//! Schema published next to the config instead of the Rust type.

use std::sync::Arc;

use serde_json::Value;

use super::diff::{self, FieldChange};
use super::fields;
use super::key::{KeyRing, SecretKey};
use super::keys::Keys;
use super::layout::is_segment;
use super::options::{DEFAULT_MAX_TXN_OPS, MIN_TXN_OPS};
use super::patch::{self, FieldPatch};
use super::publish::target_for;
use super::record::{Meta, Version, VersionKind};
use super::schema::{self, SchemaCheck};
use super::sealing::{mask_value, union, Sealing};
use super::store::{revs_of, Kvs, Revs, Store};
use super::watch::PrefixChanges;
use super::write::{write_guarded, Recording};
use crate::config::{StringFields, DEFAULT_MAX_VALUE_BYTES};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::read_prefix;
use crate::secrets::SecretPaths;

/// Keys per page when reading the current prefix.
const PAGE: i64 = 1000;

/// The history of one config prefix, without its Rust type: list versions, read any version's
/// document, diff, and publish or roll back with the same guarded, recorded writes as
/// [`ConfigHandle::publish_at`](crate::ConfigHandle::publish_at) and
/// [`ConfigHandle::rollback_to`](crate::ConfigHandle::rollback_to).
///
/// Values are checked against the JSON Schema that bound instances publish at
/// `/__coordination/schema/<prefix>`. Secret fields show as `***` in documents, key listings
/// and diffs: those the published schema names and those recorded with the versions (so they
/// are masked even where no schema is published). History records never hold a secret value
/// in plaintext; give the history's secret key ([`with_secret_key`](Self::with_secret_key))
/// for a rollback to restore encrypted secrets, and for the versions this writes to hold them
/// encrypted rather than not at all. Get one with [`ConfigHistory::open`], or from a typed
/// handle with [`ConfigHandle::history_admin`](crate::ConfigHandle::history_admin). Cheap to
/// clone.
#[derive(Clone)]
pub struct ConfigHistory {
    store: Store,
    schema: Option<Value>,
    check: Option<Arc<SchemaCheck>>,
    secrets: Vec<String>,
    fields: StringFields,
    max_txn_ops: usize,
    validate: bool,
    allow_unknown: bool,
    break_glass: Option<String>,
    /// The fleet the publish gate reads (set by [`open`](Self::open)).
    fleet: Option<crate::fleet::Fleet>,
    /// Write over the gate's refusal, recording it.
    force_gate: bool,
}

impl std::fmt::Debug for ConfigHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigHistory")
            .field("prefix", &self.store.keys().prefix())
            .field("schema", &self.schema.is_some())
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl ConfigHistory {
    /// The history of `prefix` (as in `#[coord(prefix = "/apps/chat/config")]`, no trailing
    /// `/`; the coordinator's namespace is put in front). Reads the published JSON Schema if
    /// there is one, and the secret field paths recorded with the newest version.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty prefix; [`ErrorKind::Validation`] if the
    /// published schema is not a valid JSON Schema; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn open(coord: &Coordinator, prefix: &str) -> Result<Self> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "empty etcd prefix"));
        }
        let slash = if prefix.starts_with('/') { "" } else { "/" };
        let full = format!("{}{slash}{prefix}/", coord.namespace());
        let keys = Keys::new(coord.namespace(), &full);
        let doc = schema::read(&coord.client(), keys.schema()).await?;
        let store = Store::new(coord.etcd().clone(), keys);
        // Secrets recorded with the newest version are masked even without a schema; a user
        // who may not read the history just does without them.
        let recorded = match store.latest().await {
            Ok(latest) => latest.map(|h| h.secrets).unwrap_or_default(),
            Err(e) if e.is_permission_denied() => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut history = Self::from_parts(store, doc, &recorded, DEFAULT_MAX_TXN_OPS)?;
        history.fleet = Some(crate::fleet::Fleet::open(coord, prefix)?);
        Ok(history)
    }

    /// Writes ([`apply`](Self::apply), [`put`](Self::put), [`rollback_to`](Self::rollback_to))
    /// even when the fleet gate refuses them; the refusal is recorded with the version
    /// ([`Version::gate_overridden`]) and logged at `warn`.
    ///
    /// The gate: a candidate is checked against the JSON Schema of every type the live
    /// instances run (by the schema hash in their receipts, see [`fleet`](crate::fleet)), and
    /// refused with [`ErrorKind::Validation`] naming them ("3 instances running schema a1b2c3
    /// (chat 1.4.2) would reject `pool.max`: …") if one would reject it.
    #[must_use]
    pub fn with_gate_forced(mut self) -> Self {
        self.force_gate = true;
        self
    }

    /// The fleet gate over `target` (full keys): `Ok(None)` if every running schema accepts
    /// it; `Ok(Some(refusal))` if one refuses and the gate is forced; the refusal otherwise.
    pub(crate) async fn gate(&self, target: &Kvs) -> Result<Option<String>> {
        Ok(self.gate_fields(target).await?.map(|(text, _)| text))
    }

    /// As [`gate`](Self::gate), with the fields of an overridden refusal.
    async fn gate_fields(&self, target: &Kvs) -> Result<Option<(String, Vec<String>)>> {
        let Some(fleet) = &self.fleet else {
            return Ok(None);
        };
        let doc = diff::document(self.prefix(), target, &self.fields);
        let findings = fleet.gate(&doc).await?;
        if findings.is_empty() {
            return Ok(None);
        }
        let refusal = crate::fleet::gate_refusal(&findings);
        if self.force_gate {
            tracing::warn!(prefix = %self.prefix(), refusal = %refusal, "writing over the fleet gate's refusal (forced)");
            let fields = findings.iter().filter_map(|f| f.field.clone()).collect();
            return Ok(Some((refusal.message().to_string(), fields)));
        }
        Err(refusal)
    }

    /// The fleet of this prefix: the live instances' receipts
    /// ([`Fleet::instances`](crate::fleet::Fleet::instances)), waiting for a revision, the
    /// publish gate and staged rollouts. `None` for a history made from a typed handle's
    /// history part; [`open`](Self::open) always sets it.
    pub fn fleet(&self) -> Option<&crate::fleet::Fleet> {
        self.fleet.as_ref()
    }

    /// The full keys a whole document becomes (as [`apply`](Self::apply) writes them).
    pub(crate) fn target_of(&self, document: &Value) -> Result<Kvs> {
        target_for(
            self.prefix(),
            document,
            &self.fields,
            DEFAULT_MAX_VALUE_BYTES,
            &self.secrets,
        )
    }

    /// Publishes `target` (full keys) as a version of `kind`, if the prefix's newest
    /// `mod_revision` is still at most `base` (`None`: no such guard); the fleet gate is not
    /// run again. Guarded and recorded like [`apply`](Self::apply).
    pub(crate) async fn publish_release(
        &self,
        target: &Kvs,
        base: Option<i64>,
        mut meta: Meta,
        gate_overridden: Option<String>,
    ) -> Result<Option<Version>> {
        let now = self.current().await?;
        if let Some(base) = base {
            if let Some(newest) = now.2.values().max().filter(|r| **r > base) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "`{}` changed at revision {newest}, after the rollout started (revision {base}): not published over it",
                        self.prefix()
                    ),
                )
                .with_revision(*newest));
            }
        }
        meta.gate_overridden = gate_overridden;
        self.write_over(&now, target, meta).await
    }

    /// From the history `store` (its keys are kept), the published schema `doc` and the secret
    /// paths recorded with the newest version.
    pub(crate) fn from_parts(
        store: Store,
        doc: Option<Value>,
        recorded: &[String],
        max_txn_ops: usize,
    ) -> Result<Self> {
        let check = doc
            .as_ref()
            .map(SchemaCheck::new)
            .transpose()?
            .map(Arc::new);
        let published = doc.as_ref().map(schema::secrets_of).unwrap_or_default();
        let secrets = union(&published, recorded);
        let fields = StringFields::new(doc.clone().unwrap_or_else(|| serde_json::json!({})));
        let sealing = Sealing::new(
            secrets.clone(),
            store.sealing().keys().clone(),
            fields.clone(),
        );
        let store = store.with_sealing(sealing);
        Ok(ConfigHistory {
            store,
            schema: doc,
            check,
            secrets,
            fields,
            max_txn_ops,
            validate: true,
            allow_unknown: false,
            break_glass: None,
            fleet: None,
            force_gate: false,
        })
    }

    /// The etcd server's `--max-txn-ops` (default 128): changes of more keys are written in
    /// several guarded batches.
    #[must_use]
    pub fn with_max_txn_ops(mut self, ops: usize) -> Self {
        self.max_txn_ops = ops.max(MIN_TXN_OPS);
        self
    }

    /// Writes [`apply`](Self::apply) and [`put`](Self::put) without checking the published
    /// schema (e.g. to seed a prefix before any instance has bound it).
    #[must_use]
    pub fn without_validation(mut self) -> Self {
        self.validate = false;
        self
    }

    /// Encrypts the secret values in the versions this writes ([`apply`](Self::apply),
    /// [`put`](Self::put), [`rollback_to`](Self::rollback_to)) with `key`, and decrypts
    /// those encrypted with it for [`rollback_to`](Self::rollback_to) (and, to compare them,
    /// for [`diff`](Self::diff), which still shows them as `***`). Without a key, versions this
    /// writes leave secret values out, as a handle without one does (see
    /// [`HistoryOptions::with_secret_key`](crate::history::HistoryOptions::with_secret_key)).
    #[must_use]
    pub fn with_secret_key(self, key: SecretKey) -> Self {
        self.with_keys(|ring| ring.set_write(key))
    }

    /// Also decrypts secret values encrypted with `key` (an older key after a rotation).
    #[must_use]
    pub fn with_read_key(self, key: SecretKey) -> Self {
        self.with_keys(|ring| ring.add_read(key))
    }

    fn with_keys(mut self, change: impl FnOnce(&mut KeyRing)) -> Self {
        let mut ring = self.store.sealing().keys().clone();
        change(&mut ring);
        let sealing = self.store.sealing().clone().with_keys(ring);
        self.store = self.store.with_sealing(sealing);
        self
    }

    /// Lets [`put`](Self::put) write a field path the published schema does not know (by
    /// default refused: the service would ignore such a key, or reject it). Values are still
    /// checked against the schema.
    #[must_use]
    pub fn with_unknown_fields_allowed(mut self) -> Self {
        self.allow_unknown = true;
        self
    }

    /// The full prefix (namespace included, ending with `/`).
    pub fn prefix(&self) -> &str {
        self.store.keys().prefix()
    }

    /// The key the JSON Schema is published at.
    pub fn schema_key(&self) -> &str {
        self.store.keys().schema()
    }

    /// The published JSON Schema (with its `x-coordination` annotation), if any.
    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_ref()
    }

    /// The secret field paths: those the published schema names and those recorded with the
    /// newest version when this was opened (a reader of one version also masks the paths
    /// recorded with that version).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The secret paths for a view of a version whose record names `recorded`.
    fn secrets_with(&self, recorded: &[String]) -> Vec<String> {
        union(&self.secrets, recorded)
    }

    /// Every recorded version, oldest first.
    ///
    /// # Errors
    /// etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn versions(&self) -> Result<Vec<Version>> {
        let (_, heads) = self.store.list(None).await?;
        Ok(heads.into_iter().map(|(h, _)| h.version()).collect())
    }

    /// One version's metadata.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a pruned or unknown version; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn version(&self, revision: i64) -> Result<Version> {
        match self.store.head_at(revision, None).await? {
            Some((head, _)) => Ok(head.version()),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "version {revision} of `{}` not found: pruned, or never recorded",
                    self.prefix()
                ),
            )
            .with_revision(revision)),
        }
    }

    /// The prefix now: its revision and key set.
    pub(crate) async fn current(&self) -> Result<(i64, Kvs, Revs)> {
        let (revision, kvs) = read_prefix(self.store.etcd(), self.prefix(), PAGE).await?;
        let revs = revs_of(&kvs);
        Ok((
            revision,
            kvs.into_iter().map(|kv| kv.into_key_value()).collect(),
            revs,
        ))
    }

    /// The key set at version `at` (`None`: now) as views see it, its revision, and the secret
    /// paths to mask it with. With `decrypt`, sealed secrets are decrypted where this has the
    /// key (for a diff to compare them).
    async fn view(&self, at: Option<i64>, decrypt: bool) -> Result<(i64, Kvs, Vec<String>)> {
        match at {
            Some(revision) => {
                let (head, kvs) = self.store.view_at(revision, decrypt).await?;
                Ok((head.revision, kvs, self.secrets_with(&head.secrets)))
            }
            None => {
                let (revision, kvs, _) = self.current().await?;
                Ok((revision, kvs, self.secrets.clone()))
            }
        }
    }

    /// The etcd layer's document at version `at` (`None`: the prefix now), as instances read
    /// it, with secret fields shown as `***`; and the revision it is from.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a pruned or unknown version; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn document(&self, at: Option<i64>) -> Result<(i64, Value)> {
        let (revision, kvs, secrets) = self.view(at, false).await?;
        let doc = diff::document(self.prefix(), &kvs, &self.fields);
        Ok((revision, SecretPaths::new(&secrets).mask("", &doc)))
    }

    /// Whether the value of `key` (relative to the prefix, as [`kvs`](Self::kvs) returns it:
    /// `database/password`) is, lies inside or holds a secret field (of
    /// [`secrets`](Self::secrets)), so that showing it could show a secret.
    pub fn key_holds_secret(&self, key: &str) -> bool {
        let path = key.trim_matches('/').replace('/', ".");
        SecretPaths::new(&self.secrets).holds_secret(&path)
    }

    /// The key/value set at version `at` (`None`: now), keys relative to the prefix, in key
    /// order, and its revision. Values are byte for byte, except that a value holding a secret
    /// is masked: a secret field's value is `***`, and a document with a secret field inside is
    /// that document as JSON with the secret shown as `***` (`***` alone where it cannot be
    /// parsed). A version's secrets are never decrypted here; only
    /// [`rollback_to`](Self::rollback_to) does.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a pruned or unknown version; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn kvs(&self, at: Option<i64>) -> Result<(i64, Vec<(String, Vec<u8>)>)> {
        let (revision, kvs, secrets) = self.view(at, false).await?;
        let paths = SecretPaths::new(&secrets);
        let keys = self.store.keys();
        Ok((
            revision,
            kvs.into_iter()
                .map(|(k, v)| {
                    let rel = keys.relative(&k);
                    let shown = mask_value(&paths, &self.fields, rel, &v);
                    (String::from_utf8_lossy(rel).into_owned(), shown)
                })
                .collect(),
        ))
    }

    /// The fields changed from `from` to `to` (versions; `None`: the prefix now), in path
    /// order, secrets masked. A secret is compared by value where the history holds it
    /// readably (decrypted in memory with this reader's keys, never shown); otherwise it is
    /// listed with [`FieldChange::unknown`] set.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a pruned or unknown version; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn diff(&self, from: Option<i64>, to: Option<i64>) -> Result<Vec<FieldChange>> {
        let (_, a, sa) = self.view(from, true).await?;
        let (_, b, sb) = self.view(to, true).await?;
        let a = diff::document(self.prefix(), &a, &self.fields);
        let b = diff::document(self.prefix(), &b, &self.fields);
        Ok(diff::diff(&a, &b, &union(&sa, &sb)))
    }

    /// Parses a document (YAML or JSON text, e.g. a file for [`apply`](Self::apply)) with the
    /// same rules as a bound handle's layers: one document, no duplicate keys, no `.nan`/`.inf`,
    /// only YAML's core tags, the depth limit (64 levels) and a node budget for aliases, and the
    /// text of string fields (by the published schema) kept as written.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] saying what is wrong and where (line and column).
    pub fn parse_document(&self, text: &[u8]) -> Result<Value> {
        self.fields
            .parse_for(&[], text)
            .map_err(|message| Error::new(ErrorKind::Validation, message))
    }

    /// Checks a whole document against the published schema.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] naming the field (message hidden for secret fields);
    /// [`ErrorKind::NotFound`] if no schema is published.
    pub fn validate(&self, document: &Value) -> Result<()> {
        self.check_doc(document, false)
    }

    pub(crate) fn check_doc(&self, document: &Value, partial: bool) -> Result<()> {
        if !self.validate {
            return Ok(());
        }
        match &self.check {
            Some(check) => check.check(document, partial, &self.secrets),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no JSON Schema is published at `{}`: bind the service once, or skip validation",
                    self.schema_key()
                ),
            )
            .with_key(self.schema_key())),
        }
    }

    /// The published schema's check of `document`, then the fleet gate over the keys it
    /// becomes (`target`). Where the published schema refuses, the gate's refusal is returned
    /// instead when it has one (it names the instances; the published schema is one of the
    /// running ones, the last to bind), and a forced gate that overrode the same field lets
    /// the write go on. Returns the keys and the overridden refusal, if any.
    pub(crate) async fn checked(
        &self,
        document: &Value,
        partial: bool,
        target: impl FnOnce() -> Result<Kvs>,
    ) -> Result<(Kvs, Option<String>)> {
        match self.check_doc(document, partial) {
            Ok(()) => {
                let target = target()?;
                let gate = self.gate(&target).await?;
                Ok((target, gate))
            }
            Err(refused) => {
                let Ok(target) = target() else {
                    return Err(refused);
                };
                match self.gate_fields(&target).await {
                    Err(gate) if gate.kind() == ErrorKind::Validation => Err(gate),
                    Ok(Some((text, fields)))
                        if refused
                            .field()
                            .is_some_and(|f| fields.iter().any(|g| g == f)) =>
                    {
                        Ok((target, Some(text)))
                    }
                    _ => Err(refused),
                }
            }
        }
    }

    fn recording(&self) -> Recording {
        Recording {
            max_txn_ops: self.max_txn_ops,
            record: true,
            prune: None,
        }
    }

    /// Writes `target` over the prefix as read now (`revision`, `current`, `revs`), guarded
    /// by that read, and records it with `meta`.
    pub(crate) async fn write_over(
        &self,
        (revision, current, revs): &(i64, Kvs, Revs),
        target: &Kvs,
        meta: Meta,
    ) -> Result<Option<Version>> {
        let seen = self.store.key_set(current, revs);
        write_guarded(
            &self.store,
            *revision,
            seen,
            target,
            meta,
            None,
            self.recording(),
        )
        .await
    }

    /// Publishes a whole document (e.g. a YAML file's content): checks it against the published
    /// schema (required fields included), writes one key per leaf field and deletes every
    /// other key under the prefix, guarded and recorded like
    /// [`ConfigHandle::publish_at`](crate::ConfigHandle::publish_at). `None` if nothing changed.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] naming the field, or the fleet gate's refusal naming the
    /// instances whose schema would reject it (see [`with_gate_forced`](Self::with_gate_forced));
    /// [`ErrorKind::NotFound`] if no schema is published; [`ErrorKind::Conflict`] if the prefix
    /// changed during the call; etcd errors.
    ///
    /// # Cancel safety
    /// Dropping the future after the write was sent leaves its outcome unknown: the change is one
    /// etcd transaction (or, over the transaction limit, a sequence of guarded batches) that may
    /// or may not have committed. Read the history or the handle's snapshot to find out; a retry
    /// is guarded by the revision, so it cannot apply the change twice.
    pub async fn apply(
        &self,
        document: &Value,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        let (target, gate_overridden) = self
            .checked(document, false, || {
                target_for(
                    self.prefix(),
                    document,
                    &self.fields,
                    DEFAULT_MAX_VALUE_BYTES,
                    &self.secrets,
                )
            })
            .await?;
        let now = self.current().await?;
        let mut meta = self.meta(VersionKind::Publish, author, comment);
        meta.gate_overridden = gate_overridden;
        self.write_over(&now, &target, meta).await
    }

    /// Sets one field: `path` is dotted (`database.pool`), `raw` is read like an etcd value
    /// (YAML; text kept for string fields; a document sets a whole object). This is a patch:
    /// the keys at or below that path are replaced and no other key is touched, so fields other
    /// keys (or the instances' files and defaults) set stay as they are; unlike
    /// [`apply`](Self::apply), which makes the prefix hold exactly one whole document. The
    /// resulting etcd document is checked against the published schema (fields other layers may
    /// supply can be missing), and `path` must be a field the schema knows (unless
    /// [`allow_unknown_fields`](Self::with_unknown_fields_allowed) or
    /// [`skip_validation`](Self::without_validation)). Guarded and recorded as a `publish`. `None`
    /// if nothing changed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad path, or one the published schema does not know
    /// (the message names the fields it has there); [`ErrorKind::Validation`] naming the
    /// field; [`ErrorKind::NotFound`] if no schema is published; [`ErrorKind::Conflict`] if
    /// the prefix changed during the call; etcd errors.
    ///
    /// # Cancel safety
    /// Dropping the future after the write was sent leaves its outcome unknown: the change is one
    /// etcd transaction (or, over the transaction limit, a sequence of guarded batches) that may
    /// or may not have committed. Read the history or the handle's snapshot to find out; a retry
    /// is guarded by the revision, so it cannot apply the change twice.
    pub async fn put(
        &self,
        path: &str,
        raw: &str,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        let segments: Vec<&str> = path.split('.').collect();
        if path.is_empty() || !segments.iter().all(|s| is_segment(s)) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("`{path}` is not a dotted field path like `database.pool`"),
            ));
        }
        if self.validate && !self.allow_unknown {
            if let Some(doc) = &self.schema {
                fields::check_known(doc, &segments).map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!(
                            "{} (the service would not read it; pass --allow-unknown / allow_unknown_fields to write it anyway)",
                            e.message()
                        ),
                    )
                    .with_field(path)
                })?;
            }
        }
        let hidden = SecretPaths::new(&self.secrets).is_secret(path);
        let value = self
            .fields
            .parse_for(&segments, raw.as_bytes())
            .map_err(|message| {
                let message = if hidden {
                    format!("invalid value for secret field `{path}` (value *** not shown)")
                } else {
                    message
                };
                Error::new(ErrorKind::Validation, message).with_field(path)
            })?;
        let now = self.current().await?;
        let change = FieldPatch {
            path: segments.iter().map(|s| s.to_string()).collect(),
            value: Some(value),
        };
        let target = patch::apply(
            self.prefix(),
            &now.1,
            &[change],
            &self.fields,
            DEFAULT_MAX_VALUE_BYTES,
            &self.secrets,
        )?;
        let mut meta = self.meta(VersionKind::Publish, author, comment);
        let doc = diff::document(self.prefix(), &target, &self.fields);
        let (target, gate) = self.checked(&doc, true, || Ok(target)).await?;
        meta.gate_overridden = gate;
        self.write_over(&now, &target, meta).await
    }

    /// Restores version `version`'s exact key set, guarded and recorded like
    /// [`ConfigHandle::rollback_to`](crate::ConfigHandle::rollback_to), secrets as it describes:
    /// decrypted with this reader's keys, or, where the version does not hold them, kept at
    /// their current values. `None` if nothing changed.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a pruned or unknown version; [`ErrorKind::InvalidArgument`]
    /// naming the key id when a secret is encrypted with a key this reader was not given
    /// (nothing is written); [`ErrorKind::Validation`] for the fleet gate's refusal (see
    /// [`with_gate_forced`](Self::with_gate_forced)); [`ErrorKind::Conflict`] if the prefix changed during the call;
    /// etcd errors.
    ///
    /// # Cancel safety
    /// Dropping the future after the write was sent leaves its outcome unknown: the change is one
    /// etcd transaction (or, over the transaction limit, a sequence of guarded batches) that may
    /// or may not have committed. Read the history or the handle's snapshot to find out; a retry
    /// is guarded by the revision, so it cannot apply the change twice.
    pub async fn rollback_to(
        &self,
        version: i64,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        let now = self.current().await?;
        let target = self.store.restore_at(version, &now.1).await?;
        let mut meta = self.meta(VersionKind::Rollback, author, comment);
        meta.restored_from = Some(version);
        meta.gate_overridden = self.gate(&target).await?;
        self.write_over(&now, &target, meta).await
    }

    /// Refuses with [`ErrorKind::Conflict`] unless the prefix as read now (`now`) is exactly as
    /// it was at revision `seen` (the revision a page showed): no key under it was put after
    /// `seen`, and the keys at `seen` are the keys now. A compacted `seen` is a conflict too.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    async fn unchanged_since(&self, seen: i64, now: &(i64, Kvs, Revs)) -> Result<()> {
        let conflict = |why: String| {
            Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "`{}` changed since revision {seen} (the one shown): {why}; reload and try again",
                    self.prefix()
                ),
            )
            .with_revision(seen))
        };
        if let Some((key, rev)) = now.2.iter().find(|(_, rev)| **rev > seen) {
            return conflict(format!(
                "`{}` was written at revision {rev}",
                String::from_utf8_lossy(key)
            ));
        }
        let end = self.store.keys().prefix_end();
        let then = match crate::etcd::read_range(
            self.store.etcd(),
            self.prefix().as_bytes().to_vec(),
            end,
            PAGE,
            Some(seen),
        )
        .await
        {
            Ok((_, kvs)) => kvs,
            Err(e) if e.kind() == ErrorKind::Compacted => {
                return conflict("that revision was compacted".into())
            }
            Err(e) => return Err(e),
        };
        let then: Vec<&[u8]> = then.iter().map(|kv| kv.key()).collect();
        let keys: Vec<&[u8]> = now.1.keys().map(Vec::as_slice).collect();
        if then != keys {
            return conflict("keys were deleted".into());
        }
        Ok(())
    }

    /// [`apply`](Self::apply) of a document edited from a masked view (schema, then the fleet
    /// gate), compare-and-swap on the revision `seen` it was read at: a secret field whose
    /// value is `***` keeps its current value. The console's publish.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    pub(crate) async fn apply_seen(
        &self,
        seen: i64,
        document: &Value,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        let now = self.current().await?;
        self.unchanged_since(seen, &now).await?;
        let current = diff::document(self.prefix(), &now.1, &self.fields);
        let mut document = document.clone();
        for path in &self.secrets {
            keep_masked(&mut document, &current, path);
        }
        let (target, gate_overridden) = self
            .checked(&document, false, || {
                target_for(
                    self.prefix(),
                    &document,
                    &self.fields,
                    DEFAULT_MAX_VALUE_BYTES,
                    &self.secrets,
                )
            })
            .await?;
        let mut meta = Meta::new(VersionKind::Publish, author, comment);
        meta.gate_overridden = gate_overridden;
        self.write_over(&now, &target, meta).await
    }

    /// [`rollback_to`](Self::rollback_to) (the fleet gate included), compare-and-swap on the
    /// revision `seen` the confirmation showed. The console's rollback.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    pub(crate) async fn rollback_seen(
        &self,
        seen: i64,
        version: i64,
        author: &str,
        comment: &str,
    ) -> Result<Option<Version>> {
        let now = self.current().await?;
        self.unchanged_since(seen, &now).await?;
        let target = self.store.restore_at(version, &now.1).await?;
        let mut meta = Meta::new(VersionKind::Rollback, author, comment);
        meta.restored_from = Some(version);
        meta.gate_overridden = self.gate(&target).await?;
        self.write_over(&now, &target, meta).await
    }

    /// The fields publishing `document` would change in the etcd layer's document now,
    /// secrets masked (a secret left at `***` is unchanged).
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    pub(crate) async fn preview(&self, document: &Value) -> Result<Vec<FieldChange>> {
        let (_, current) = self.document(None).await?;
        Ok(diff::diff(&current, document, &self.secrets))
    }

    /// A stream of the prefix's changes from now on, one item per etcd revision, with the
    /// changed fields (secrets masked). It heals itself through etcd restarts, compaction and
    /// restores (see [`PrefixChanges`]).
    ///
    /// # Errors
    /// etcd errors of the first read.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; dropping the future leaves nothing behind.
    pub async fn changes(&self) -> Result<PrefixChanges> {
        PrefixChanges::open(
            self.store.etcd().clone(),
            self.store.keys().clone(),
            self.fields.clone(),
            self.secrets.clone(),
        )
        .await
    }
}

/// What change control ([`crate::change`]) uses.
impl ConfigHistory {
    /// Writes [`apply`](Self::apply), [`put`](Self::put) and [`rollback_to`](Self::rollback_to)
    /// past the prefix's change-control policy (no approved proposal, outside the change
    /// windows), recording `reason` in the version and logging the write at `warn`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty (or blank) reason.
    pub fn with_break_glass(mut self, reason: &str) -> Result<Self> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "breaking glass needs a reason: it is recorded in the history",
            ));
        }
        self.break_glass = Some(reason.to_string());
        Ok(self)
    }

    /// Checks the change windows of the prefix's policy by `clock` instead of the system clock
    /// (tests, dry runs).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn crate::change::Clock>) -> Self {
        self.store = self.store.clone().with_clock(clock);
        self
    }

    /// The environment variable prefix the published schema names (`CHAT_`), if the service
    /// reads an environment layer.
    pub fn env_prefix(&self) -> Option<String> {
        self.schema.as_ref().and_then(schema::env_prefix_of)
    }

    /// The key the prefix's change-control policy is stored at.
    pub fn policy_key(&self) -> &str {
        self.store.keys().policy()
    }

    /// The record metadata of a write by `author`, with the break-glass reason if set.
    pub(crate) fn meta(&self, kind: VersionKind, author: &str, comment: &str) -> Meta {
        let mut meta = Meta::new(kind, author, comment);
        if let Some(reason) = &self.break_glass {
            meta.change = Some(Box::new(crate::change::ChangeRecord {
                break_glass: Some(reason.clone()),
                ..Default::default()
            }));
        }
        meta
    }

    pub(crate) fn fields(&self) -> &StringFields {
        &self.fields
    }

    pub(crate) fn keyring(&self) -> &KeyRing {
        self.store.sealing().keys()
    }

    /// Whether writes are checked against the published schema.
    pub(crate) fn validates(&self) -> bool {
        self.validate
    }

    /// The key set a whole `document` is written as.
    pub(crate) fn target_document(&self, document: &Value) -> Result<Kvs> {
        target_for(
            self.prefix(),
            document,
            &self.fields,
            DEFAULT_MAX_VALUE_BYTES,
            &self.secrets,
        )
    }

    /// `base` with `patches` applied.
    pub(crate) fn target_patched(&self, base: &Kvs, patches: &[FieldPatch]) -> Result<Kvs> {
        patch::apply(
            self.prefix(),
            base,
            patches,
            &self.fields,
            DEFAULT_MAX_VALUE_BYTES,
            &self.secrets,
        )
    }

    /// The etcd layer's document of a key set, unmasked.
    pub(crate) fn document_of(&self, kvs: &Kvs) -> Value {
        diff::document(self.prefix(), kvs, &self.fields)
    }

    /// The prefix now, failing with [`ErrorKind::Conflict`] if it changed after `base`
    /// (a put or a delete under the prefix; a base etcd has compacted counts as changed).
    pub(crate) async fn current_since(&self, base: i64) -> Result<(i64, Kvs, Revs)> {
        let now = self.current().await?;
        let conflict = |why: &str| {
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "`{}` changed after revision {base}, the proposal's base ({why}): nothing was written; rebase the proposal (`coordctl config proposal rebase ID`) and have it approved again",
                    self.prefix()
                ),
            )
            .with_revision(base)
        };
        if now.2.values().any(|&rev| rev > base) {
            return Err(conflict("a key was written since"));
        }
        if now.0 != base {
            let keys = self.store.keys();
            let at_base = crate::etcd::read_range(
                self.store.etcd(),
                keys.prefix().as_bytes().to_vec(),
                keys.prefix_end(),
                PAGE,
                Some(base),
            )
            .await;
            let at_base: Kvs = match at_base {
                Ok((_, kvs)) => kvs.into_iter().map(|kv| kv.into_key_value()).collect(),
                Err(e) if e.kind() == ErrorKind::Compacted => {
                    return Err(conflict("etcd has compacted it"))
                }
                Err(e) => return Err(e),
            };
            if at_base != now.1 {
                return Err(conflict("a key was deleted since"));
            }
        }
        Ok(now)
    }
}

/// Where `document` holds `***` at the dotted `path`, puts `current`'s value there (or removes
/// the field when `current` has none): an edited masked view keeps the secret it did not see.
#[cfg_attr(not(feature = "console"), allow(dead_code))]
fn keep_masked(document: &mut Value, current: &Value, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut doc = document;
    let mut cur = Some(current);
    for part in parts {
        match doc.get_mut(part) {
            Some(next) => doc = next,
            None => return,
        }
        cur = cur.and_then(|c| c.get(part));
    }
    let Some(map) = doc.as_object_mut() else {
        return;
    };
    if map.get(last).and_then(Value::as_str) != Some(crate::secrets::MASK) {
        return;
    }
    match cur.and_then(|c| c.get(last)) {
        Some(value) => {
            map.insert(last.to_string(), value.clone());
        }
        None => {
            map.remove(last);
        }
    }
}

#[cfg(test)]
mod keep_masked_tests {
    use super::keep_masked;
    use serde_json::json;

    #[test]
    fn a_masked_secret_keeps_its_current_value() {
        let current = json!({"db": {"password": "s3cret", "pool": 4}});
        let mut edited = json!({"db": {"password": "***", "pool": 5}});
        keep_masked(&mut edited, &current, "db.password");
        assert_eq!(edited, json!({"db": {"password": "s3cret", "pool": 5}}));
        let mut changed = json!({"db": {"password": "new", "pool": 5}});
        keep_masked(&mut changed, &current, "db.password");
        assert_eq!(changed["db"]["password"], "new");
        let mut absent = json!({"db": {"password": "***"}});
        keep_masked(&mut absent, &json!({}), "db.password");
        assert_eq!(absent, json!({"db": {}}));
    }
}
