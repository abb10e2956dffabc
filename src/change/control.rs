//! [`ChangeControl`]: proposals, review and approval on one prefix, over [`ConfigHistory`].

use std::sync::Arc;

use serde_json::Value;

use super::audit::Promotion;
use super::policy::{self, Policy};
use super::proposal::{
    self, Applied, Approval, Candidate, Proposal, ProposalState, Rejection, SetField,
};
use super::window::Clock;
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::history::{
    check_known, diff_documents, ConfigHistory, FieldChange, FieldPatch, Kvs, Version, VersionKind,
};
use crate::secrets::SecretPaths;

/// Change control on one config prefix: propose a change (validated like a publish, stored
/// for review, nothing the instances see), approve or reject it, apply it as a publish
/// guarded by its base revision, rebase it; the prefix's [`Policy`]; promotion from another
/// prefix ([`promote`](Self::promote)).
///
/// Who acts is the etcd user the coordinator authenticated as when auth is on
/// ([`Coordinator::user`]); a different [`with_actor`](Self::with_actor) name is refused.
/// Without auth it is the name given (by default `$USER`).
///
/// Proposals live at `<ns>/__coordination/proposals/<id>`, so an id alone finds one
/// ([`find_proposal`](Self::find_proposal)). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChangeControl {
    coord: Coordinator,
    history: ConfigHistory,
    prefix: String,
    actor: String,
}

fn now_text() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl ChangeControl {
    /// Change control on `prefix` (as for [`ConfigHistory::open`]), acting as the etcd user
    /// (or `$USER` without auth).
    ///
    /// # Errors
    /// As [`ConfigHistory::open`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn open(coord: &Coordinator, prefix: &str) -> Result<Self> {
        let history = ConfigHistory::open(coord, prefix).await?;
        Ok(Self::with_history(coord, prefix, history))
    }

    /// Change control over an opened `history` of `prefix` (keys, validation and transaction
    /// size as set on it).
    pub fn with_history(coord: &Coordinator, prefix: &str, history: ConfigHistory) -> Self {
        let actor = coord
            .user()
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_string());
        ChangeControl {
            coord: coord.clone(),
            history,
            prefix: prefix.trim_end_matches('/').to_string(),
            actor,
        }
    }

    /// The proposal `id` and the prefix it is for (its [`Proposal::prefix`]).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for no such proposal; [`ErrorKind::InvalidArgument`] for a
    /// malformed id; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn find_proposal(coord: &Coordinator, id: &str) -> Result<Proposal> {
        Ok(proposal::read(coord.etcd(), coord.namespace(), id).await?.0)
    }

    /// Acts as `name` (author, approver, rejecter). With etcd auth on, `name` must be the
    /// authenticated user: change control counts etcd users, not claimed names.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty name, or one that differs from the
    /// authenticated etcd user.
    pub fn with_actor(mut self, name: &str) -> Result<Self> {
        if name.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an empty author name",
            ));
        }
        if let Some(user) = self.coord.user() {
            if user != name {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "authenticated as etcd user `{user}`, but the author given is `{name}`: with auth on, change control counts the etcd user (drop --author or log in as `{name}`)"
                    ),
                ));
            }
        }
        self.actor = name.to_string();
        Ok(self)
    }

    /// Checks change windows by `clock` (tests, dry runs) instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.history = self.history.with_clock(clock);
        self
    }

    /// Who acts.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The prefix, as given.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The history this writes through.
    pub fn history(&self) -> &ConfigHistory {
        &self.history
    }

    /// The prefix's policy (`None`: none set, every change may be published directly).
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] when the policy key may not be read; [`ErrorKind::Validation`] for a
    /// stored policy that does not parse; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn policy(&self) -> Result<Option<Policy>> {
        Ok(policy::read(self.coord.etcd(), self.history.policy_key())
            .await?
            .0)
    }

    /// Stores `policy` for the prefix (`None` removes it). Who may do this is up to etcd RBAC
    /// on the policy key (see the security guide).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a policy that does not [check](Policy::check); etcd
    /// errors.
    ///
    /// # Cancel safety
    /// One put or delete: dropped, it may or may not have been written.
    pub async fn set_policy(&self, policy: Option<&Policy>) -> Result<()> {
        policy::write(self.coord.etcd(), self.history.policy_key(), policy).await?;
        Ok(())
    }

    /// Proposes a whole document (as [`ConfigHistory::apply`] publishes it), checked against
    /// the published schema now.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] naming the field; [`ErrorKind::NotFound`] if no schema is
    /// published; [`ErrorKind::InvalidArgument`] for a changed secret without a history key
    /// (a proposal holds secrets only encrypted); etcd errors.
    ///
    /// # Cancel safety
    /// One create-if-absent write at the end: dropped, the proposal may or may not exist.
    pub async fn propose_document(&self, document: &Value, comment: &str) -> Result<Proposal> {
        self.history.check_doc(document, false)?;
        self.propose(
            Candidate::Document {
                document: document.clone(),
            },
            comment,
            None,
        )
        .await
    }

    /// Proposes setting fields (as [`ConfigHistory::put`] does, a patch: `(dotted path, raw
    /// value)` pairs, values read like etcd values).
    ///
    /// # Errors
    /// As [`ConfigHistory::put`]; as [`propose_document`](Self::propose_document).
    ///
    /// # Cancel safety
    /// As [`propose_document`](Self::propose_document).
    pub async fn propose_fields(
        &self,
        fields: &[(String, String)],
        comment: &str,
    ) -> Result<Proposal> {
        if fields.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "no fields to set (give path=value)",
            ));
        }
        let mut set = Vec::new();
        for (path, raw) in fields {
            let segments: Vec<&str> = path.split('.').collect();
            if path.is_empty() || segments.iter().any(|s| s.is_empty()) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("`{path}` is not a dotted field path like `database.pool`"),
                ));
            }
            if self.history.validates() {
                if let Some(schema) = self.history.schema() {
                    check_known(schema, &segments).map_err(|e| e.with_field(path.clone()))?;
                }
            }
            let hidden = SecretPaths::new(self.history.secrets()).is_secret(path);
            let value = self
                .history
                .fields()
                .parse_for(&segments, raw.as_bytes())
                .map_err(|message| {
                    let message = if hidden {
                        format!("invalid value for secret field `{path}` (value *** not shown)")
                    } else {
                        message
                    };
                    Error::new(ErrorKind::Validation, message).with_field(path.clone())
                })?;
            set.push(SetField {
                path: path.clone(),
                value: Some(value),
            });
        }
        self.propose(Candidate::Fields { fields: set }, comment, None)
            .await
    }

    /// Stores a proposal of `candidate` (plaintext secrets) against the prefix now.
    pub(crate) async fn propose(
        &self,
        candidate: Candidate,
        comment: &str,
        promoted_from: Option<Promotion>,
    ) -> Result<Proposal> {
        let (revision, kvs, _) = self.history.current().await?;
        let (diff, stored) = self.evaluate(&candidate, &kvs, true)?;
        let mut p = Proposal {
            id: proposal::new_id(),
            prefix: self.prefix.clone(),
            base_revision: revision,
            author: self.actor.clone(),
            comment: comment.to_string(),
            time: now_text(),
            state: ProposalState::Open,
            diff,
            approvals: Vec::new(),
            rejection: None,
            applied: None,
            promoted_from,
            rebased_from: Vec::new(),
            candidate: stored,
        };
        if p.diff.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "`{}` already holds this at revision {revision}: nothing to propose",
                    self.history.prefix()
                ),
            ));
        }
        proposal::create(self.coord.etcd(), self.coord.namespace(), &mut p).await?;
        tracing::info!(prefix = %self.prefix, id = %p.id, author = %p.author, base = revision, "change proposed");
        Ok(p)
    }

    /// The target key set of `candidate` over `base`, validated; with `plain`, `candidate`
    /// holds plaintext secrets (a new proposal): returns the masked diff and the candidate as
    /// stored. Otherwise `candidate` is as stored, and the stored form comes back unchanged.
    fn evaluate(
        &self,
        candidate: &Candidate,
        base: &Kvs,
        plain: bool,
    ) -> Result<(Vec<FieldChange>, Candidate)> {
        let target = self.target(candidate, base, plain)?;
        let base_doc = self.history.document_of(base);
        let target_doc = self.history.document_of(&target);
        let diff = diff_documents(&base_doc, &target_doc, self.history.secrets());
        let stored = if plain {
            self.seal(candidate, &base_doc)?
        } else {
            candidate.clone()
        };
        Ok((diff, stored))
    }

    fn seal(&self, candidate: &Candidate, base_doc: &Value) -> Result<Candidate> {
        let paths = SecretPaths::new(self.history.secrets());
        let ring = self.history.keyring();
        let prefix = self.history.prefix();
        Ok(match candidate {
            Candidate::Document { document } => Candidate::Document {
                document: proposal::seal(document, "", base_doc, &paths, ring, prefix)?,
            },
            Candidate::Fields { fields } => Candidate::Fields {
                fields: fields
                    .iter()
                    .map(|f| {
                        Ok(SetField {
                            path: f.path.clone(),
                            value: f
                                .value
                                .as_ref()
                                .map(|v| proposal::seal(v, &f.path, base_doc, &paths, ring, prefix))
                                .transpose()?,
                        })
                    })
                    .collect::<Result<_>>()?,
            },
        })
    }

    /// The key set `candidate` makes of `base`, checked against the schema.
    fn target(&self, candidate: &Candidate, base: &Kvs, plain: bool) -> Result<Kvs> {
        let ring = self.history.keyring();
        let prefix = self.history.prefix();
        let base_doc = self.history.document_of(base);
        let open = |v: &Value, path: &str| {
            if plain {
                Ok(v.clone())
            } else {
                proposal::unseal(v, path, &base_doc, ring, prefix)
            }
        };
        match candidate {
            Candidate::Document { document } => {
                let document = open(document, "")?;
                self.history.check_doc(&document, false)?;
                self.history.target_document(&document)
            }
            Candidate::Fields { fields } => {
                let patches = fields
                    .iter()
                    .map(|f| {
                        Ok(FieldPatch {
                            path: f.path.split('.').map(str::to_string).collect(),
                            value: f.value.as_ref().map(|v| open(v, &f.path)).transpose()?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let target = self.history.target_patched(base, &patches)?;
                self.history
                    .check_doc(&self.history.document_of(&target), true)?;
                Ok(target)
            }
        }
    }

    /// Every proposal for this prefix, oldest first.
    ///
    /// # Errors
    /// etcd errors ([`ErrorKind::Auth`] naming the proposals prefix without read on it).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn proposals(&self) -> Result<Vec<Proposal>> {
        proposal::list(self.coord.etcd(), self.coord.namespace(), &self.prefix).await
    }

    /// Deletes this prefix's decided proposals (rejected or applied) whose decision is older
    /// than `older_than` (by the system clock, which stamped it); open ones are always kept.
    /// An applied change stays in the history with its author, approvers and proposal id;
    /// what goes is the proposal's own record (its comment, a rejection's reason). Returns the
    /// ids deleted, oldest first.
    ///
    /// # Errors
    /// etcd errors ([`ErrorKind::Auth`] naming the proposals prefix without read-write on it);
    /// [`ErrorKind::Validation`] for a stored proposal that does not parse (nothing is
    /// deleted then).
    ///
    /// # Cancel safety
    /// Each proposal is one guarded delete (skipped if it changed since it was read): dropped,
    /// some of them may be deleted.
    pub async fn prune_proposals(&self, older_than: std::time::Duration) -> Result<Vec<String>> {
        let now = jiff::Timestamp::now();
        let older_than =
            jiff::SignedDuration::try_from(older_than).unwrap_or(jiff::SignedDuration::MAX);
        let cutoff = now.checked_sub(older_than).unwrap_or(jiff::Timestamp::MIN);
        let (etcd, namespace) = (self.coord.etcd(), self.coord.namespace());
        let mut pruned = Vec::new();
        for (p, revision) in proposal::list_revisions(etcd, namespace, &self.prefix).await? {
            let decided = match p.state {
                ProposalState::Open => None,
                ProposalState::Rejected => p.rejection.as_ref().map(|r| r.time.as_str()),
                ProposalState::Applied => p.applied.as_ref().map(|a| a.time.as_str()),
            };
            // A decision whose time does not read counts as old: it is decided either way.
            let old = decided.is_some_and(|time| {
                time.parse::<jiff::Timestamp>()
                    .map_or(true, |at| at <= cutoff)
            });
            if old && proposal::delete_unchanged(etcd, namespace, &p.id, revision).await? {
                pruned.push(p.id);
            }
        }
        Ok(pruned)
    }

    /// The proposal `id`, checked to be for this prefix.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`]; [`ErrorKind::InvalidArgument`] for a proposal of another
    /// prefix; etcd errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn proposal(&self, id: &str) -> Result<Proposal> {
        let (p, _) = proposal::read(self.coord.etcd(), self.coord.namespace(), id).await?;
        self.mine(&p)?;
        Ok(p)
    }

    fn mine(&self, p: &Proposal) -> Result<()> {
        if p.prefix == self.prefix {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "proposal `{}` is for `{}`, not `{}`",
                    p.id, p.prefix, self.prefix
                ),
            ))
        }
    }

    fn open_state(p: &Proposal) -> Result<()> {
        match p.state {
            ProposalState::Open => Ok(()),
            ProposalState::Rejected => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "proposal `{}` was rejected by {}: {}",
                    p.id,
                    p.rejection.as_ref().map_or("-", |r| r.by.as_str()),
                    p.rejection.as_ref().map_or("", |r| r.reason.as_str())
                ),
            )),
            ProposalState::Applied => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "proposal `{}` is already applied (version {})",
                    p.id,
                    p.applied
                        .as_ref()
                        .and_then(|a| a.revision)
                        .map_or("-".to_string(), |r| r.to_string())
                ),
            )),
        }
    }

    /// Approves proposal `id` as [`actor`](Self::actor).
    ///
    /// # Errors
    /// [`ErrorKind::Refused`] when the policy does not count the actor (the author approving
    /// their own change by default; someone not among its approvers);
    /// [`ErrorKind::InvalidArgument`] for a rejected proposal, or one already approved by the
    /// actor; [`ErrorKind::Conflict`] for an applied one; etcd errors.
    ///
    /// # Cancel safety
    /// Each attempt is one guarded write: dropped, the approval may or may not be stored.
    pub async fn approve(&self, id: &str) -> Result<Proposal> {
        let policy = self.policy().await?.unwrap_or_default();
        let who = self.actor.clone();
        let p = proposal::update(self.coord.etcd(), self.coord.namespace(), id, |p| {
            self.mine(p)?;
            Self::open_state(p)?;
            policy.may_approve(&who, &p.author).map_err(|why| {
                Error::new(
                    ErrorKind::Refused,
                    format!("approval of `{id}` refused: {why}"),
                )
            })?;
            if p.approvals.iter().any(|a| a.by == who) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("`{who}` has already approved `{id}`"),
                ));
            }
            p.approvals.push(Approval {
                by: who.clone(),
                time: now_text(),
            });
            Ok(())
        })
        .await?;
        tracing::info!(prefix = %self.prefix, id, by = %who, "proposal approved");
        Ok(p)
    }

    /// Rejects proposal `id` with `reason`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty reason or a proposal already rejected;
    /// [`ErrorKind::Conflict`] for an applied one; etcd errors.
    ///
    /// # Cancel safety
    /// As [`approve`](Self::approve).
    pub async fn reject(&self, id: &str, reason: &str) -> Result<Proposal> {
        if reason.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a rejection needs a reason",
            ));
        }
        proposal::update(self.coord.etcd(), self.coord.namespace(), id, |p| {
            self.mine(p)?;
            Self::open_state(p)?;
            p.state = ProposalState::Rejected;
            p.rejection = Some(Rejection {
                by: self.actor.clone(),
                reason: reason.to_string(),
                time: now_text(),
            });
            Ok(())
        })
        .await
    }

    /// Applies proposal `id`: a publish guarded by its base revision, recorded with the
    /// proposal's author and comment, the approvers the policy counted, the proposal id and
    /// who applied it ([`Version::change`]). `None` if the prefix already held the change.
    ///
    /// # Errors
    /// [`ErrorKind::Refused`] without enough counted approvals, or outside the change
    /// windows; [`ErrorKind::Conflict`] if the prefix changed after the base revision (rebase
    /// it), or for a proposal already applied; [`ErrorKind::InvalidArgument`] for a rejected
    /// one; [`ErrorKind::Validation`] if it no longer passes the published schema; etcd errors.
    ///
    /// # Cancel safety
    /// As [`ConfigHistory::apply`]; the proposal is marked applied in a second write after the
    /// publish.
    pub async fn apply(&self, id: &str) -> Result<Option<Version>> {
        let (p, _) = proposal::read(self.coord.etcd(), self.coord.namespace(), id).await?;
        self.mine(&p)?;
        Self::open_state(&p)?;
        let policy = self.policy().await?.unwrap_or_default();
        let approvers = policy.counted(&p.author, p.approvals.iter().map(|a| a.by.as_str()));
        if (approvers.len() as u32) < policy.approvals {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "proposal `{id}` needs {} approval(s) under the policy and has {} counted ({}): nothing was written",
                    policy.approvals,
                    approvers.len(),
                    if p.approvals.is_empty() {
                        "none yet".to_string()
                    } else {
                        p.approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>().join(", ")
                    }
                ),
            ));
        }
        let now = self.history.current_since(p.base_revision).await?;
        let target = self.target(&p.candidate, &now.1, false)?;
        let mut meta = self
            .history
            .meta(VersionKind::Publish, &p.author, &p.comment);
        let mut record = meta.change.take().unwrap_or_default();
        record.proposal = Some(p.id.clone());
        record.approvers = approvers;
        record.applied_by = Some(self.actor.clone());
        record.promoted_from = p.promoted_from.clone();
        meta.change = Some(record);
        let written = self.history.write_over(&now, &target, meta).await?;
        let revision = written.as_ref().map(|v| v.revision);
        proposal::update(self.coord.etcd(), self.coord.namespace(), id, |q| {
            q.state = ProposalState::Applied;
            q.applied = Some(Applied {
                by: self.actor.clone(),
                revision,
                time: now_text(),
            });
            Ok(())
        })
        .await?;
        tracing::info!(prefix = %self.prefix, id, by = %self.actor, version = ?revision, "proposal applied");
        Ok(written)
    }

    /// Rebases proposal `id` on the prefix now: recomputes the diff on the current revision
    /// (checking the change against the published schema again) and drops earlier approvals.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] if the change no longer passes; [`ErrorKind::InvalidArgument`]
    /// for a rejected proposal; [`ErrorKind::Conflict`] for an applied one; etcd errors.
    ///
    /// # Cancel safety
    /// As [`approve`](Self::approve).
    pub async fn rebase(&self, id: &str) -> Result<Proposal> {
        let (revision, kvs, _) = self.history.current().await?;
        proposal::update(self.coord.etcd(), self.coord.namespace(), id, |p| {
            self.mine(p)?;
            Self::open_state(p)?;
            let (diff, _) = self.evaluate(&p.candidate, &kvs, false)?;
            if p.base_revision != revision {
                p.rebased_from.push(p.base_revision);
            }
            p.base_revision = revision;
            p.diff = diff;
            p.approvals.clear();
            p.time = now_text();
            Ok(())
        })
        .await
    }

    /// The coordinator this acts through.
    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coord
    }
}
