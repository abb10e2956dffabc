//! Promotion between environments: the typed diff of prefix A against prefix B becomes a
//! proposal on B (or a publish, where B's policy needs no approval), recorded with A's prefix
//! and revision.
//!
//! Environments are a prefix convention: `/env/staging/apps/chat/config` is promoted to
//! `/env/prod/apps/chat/config` (or namespaces: `/staging` and `/prod` with the same prefix).

use serde::Serialize;
use serde_json::Value;

use super::audit::Promotion;
use super::control::ChangeControl;
use super::proposal::{at, Candidate, Proposal, SetField};
use crate::error::{Error, ErrorKind, Result};
use crate::history::{ConfigHistory, FieldChange, Version};
use crate::secrets::SecretPaths;

/// What [`ChangeControl::promote`] did.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Promoted {
    /// The source prefix and the revision it was read at.
    pub from: Promotion,
    /// The fields of the target that change (secrets masked); empty: nothing to promote.
    pub diff: Vec<FieldChange>,
    /// The proposal made on the target (its policy needs approvals), or the one applied.
    pub proposal: Option<Proposal>,
    /// The version written, when the target's policy let the promotion publish directly.
    pub version: Option<Version>,
}

/// The leaves of `doc` as `(dotted path, value)`; arrays and empty objects are leaves.
fn leaves(path: &str, doc: &Value, out: &mut Vec<(String, Value)>) {
    match doc {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(&child, v, out);
            }
        }
        other => out.push((path.to_string(), other.clone())),
    }
}

fn selected(path: &str, only: &[String]) -> bool {
    only.is_empty()
        || only
            .iter()
            .any(|o| path == o || path.starts_with(&format!("{o}.")))
}

impl ChangeControl {
    /// Promotes `from` (another prefix, e.g. staging's) to this prefix: every field of `from`'s
    /// etcd document that differs here is set, and (without `only`) every field set here but
    /// not there is removed; `only` (dotted paths) limits both to those fields and what is
    /// below them. Secret fields are never promoted: each environment keeps its own.
    ///
    /// The change is checked against this prefix's published schema and becomes a proposal
    /// here (author: the actor, comment `comment`), recorded with `from`'s prefix and revision;
    /// where this prefix's policy needs no approval it is applied at once.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] if the result does not pass this prefix's schema;
    /// [`ErrorKind::InvalidArgument`] for the same prefix twice; as
    /// [`ChangeControl::apply`] when applied; etcd errors.
    ///
    /// # Cancel safety
    /// As [`ChangeControl::propose_document`] and [`ChangeControl::apply`].
    pub async fn promote(
        &self,
        from: &ConfigHistory,
        only: &[String],
        comment: &str,
    ) -> Result<Promoted> {
        if from.prefix() == self.history().prefix() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("promoting `{}` onto itself", from.prefix()),
            ));
        }
        let (source_revision, source_kvs, _) = from.current().await?;
        let (_, target_kvs, _) = self.history().current().await?;
        let source = from.document_of(&source_kvs);
        let target = self.history().document_of(&target_kvs);
        let mut secrets: Vec<String> = from.secrets().to_vec();
        secrets.extend(self.history().secrets().iter().cloned());
        let secret = SecretPaths::new(&secrets);
        let mut fields = Vec::new();
        let mut have = Vec::new();
        leaves("", &source, &mut have);
        for (path, value) in &have {
            if path.is_empty() || secret.holds_secret(path) || !selected(path, only) {
                continue;
            }
            if at(&target, path) != Some(value) {
                fields.push(SetField {
                    path: path.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        let mut here = Vec::new();
        leaves("", &target, &mut here);
        for (path, _) in &here {
            if path.is_empty() || secret.holds_secret(path) || !selected(path, only) {
                continue;
            }
            if at(&source, path).is_none() {
                fields.push(SetField {
                    path: path.clone(),
                    value: None,
                });
            }
        }
        let origin = Promotion::new(
            from.prefix()
                .strip_prefix(self.coordinator().namespace())
                .unwrap_or(from.prefix())
                .trim_end_matches('/'),
            source_revision,
        );
        if fields.is_empty() {
            return Ok(Promoted {
                from: origin,
                diff: Vec::new(),
                proposal: None,
                version: None,
            });
        }
        let proposal = self
            .propose(Candidate::Fields { fields }, comment, Some(origin.clone()))
            .await?;
        let diff = proposal.diff.clone();
        let needs = self.policy().await?.map_or(0, |p| p.approvals);
        if needs > 0 {
            return Ok(Promoted {
                from: origin,
                diff,
                proposal: Some(proposal),
                version: None,
            });
        }
        let version = self.apply(&proposal.id).await?;
        let proposal = self.proposal(&proposal.id).await?;
        Ok(Promoted {
            from: origin,
            diff,
            proposal: Some(proposal),
            version,
        })
    }
}
