//! A prefix's change-control policy: approvals needed, who counts, change windows. Stored as
//! JSON at `<ns>/__coordination/policy/<prefix>` (next to the schema and the history).

use std::time::SystemTime;

use etcd_client::{Compare, CompareOp};
use serde::{Deserialize, Serialize};

use super::window::{in_windows, time_zone, ChangeWindow};
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::Etcd;

/// The change-control policy of one prefix. In YAML (`coordctl config policy PREFIX --set -f
/// policy.yaml`):
///
/// ```yaml
/// approvals: 1            # approvals a proposal needs before it applies (0: none)
/// self_approval: false    # may the author approve their own change (default no)
/// approvers: [bob, carol] # who counts (etcd user names when auth is on); empty: anyone
/// time_zone: Europe/Berlin
/// windows:                # outside these, publish and rollback need --break-glass
///   - {days: [mon-thu], hours: "09-17"}
/// ```
///
/// With `approvals` above 0, a publish that does not apply an approved proposal (a plain
/// `put`, `apply`, [`ConfigHandle::update`](crate::ConfigHandle::update)) is refused with
/// [`ErrorKind::Refused`] unless it breaks glass. Rollbacks need no approval but keep to the
/// windows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// Approvals a proposal needs before it applies; above 0, direct publishes are refused.
    #[serde(default)]
    pub approvals: u32,
    /// Whether an author's own approval counts (default `false`).
    #[serde(default)]
    pub self_approval: bool,
    /// The names whose approval counts (etcd user names when auth is on); empty: anyone's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// The IANA time zone the windows are in (`Europe/Berlin`); required with windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Change windows; empty: changes at any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<ChangeWindow>,
}

impl Policy {
    /// A policy needing `approvals` approvals, no windows.
    pub fn requiring(approvals: u32) -> Self {
        Policy {
            approvals,
            ..Policy::default()
        }
    }

    /// Adds change windows in time zone `zone`.
    #[must_use]
    pub fn with_windows(mut self, zone: &str, windows: Vec<ChangeWindow>) -> Self {
        self.time_zone = Some(zone.to_string());
        self.windows = windows;
        self
    }

    /// Parses a policy from YAML or JSON text, and [`check`](Self::check)s it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming what does not parse (unknown fields included).
    pub fn parse(text: &str) -> Result<Self> {
        let policy: Policy = serde_yaml::from_str(text).map_err(|e| {
            Error::new(ErrorKind::InvalidArgument, format!("bad policy: {e}")).with_source(e)
        })?;
        policy.check()?;
        Ok(policy)
    }

    /// Checks the windows and the time zone.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for windows without a time zone, a zone the system's tz
    /// database does not know, or a window that does not parse.
    pub fn check(&self) -> Result<()> {
        for w in &self.windows {
            w.check()?;
        }
        match (&self.time_zone, self.windows.is_empty()) {
            (Some(zone), _) => time_zone(zone).map(|_| ()),
            (None, true) => Ok(()),
            (None, false) => Err(Error::new(
                ErrorKind::InvalidArgument,
                "change windows need a time_zone (an IANA name such as Europe/Berlin)",
            )),
        }
    }

    /// Whether `who` may approve a change by `author`; `Err` says why not.
    pub(crate) fn may_approve(&self, who: &str, author: &str) -> std::result::Result<(), String> {
        if who == author && !self.self_approval {
            return Err(format!(
                "`{who}` is the proposal's author, and the policy does not let authors approve their own change"
            ));
        }
        if !self.approvers.is_empty() && !self.approvers.iter().any(|a| a == who) {
            return Err(format!(
                "`{who}` is not an approver under the policy (approvers: {})",
                self.approvers.join(", ")
            ));
        }
        Ok(())
    }

    /// The approvers (from `approvals`, in order) this policy counts for a change by `author`.
    pub(crate) fn counted<'a>(
        &self,
        author: &str,
        approvals: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for who in approvals {
            if self.may_approve(who, author).is_ok() && !out.iter().any(|o| o == who) {
                out.push(who.to_string());
            }
        }
        out
    }

    /// Whether `now` is inside a change window (always, without windows), and the local time
    /// there for messages.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad time zone.
    pub fn window_open(&self, now: SystemTime) -> Result<(bool, String)> {
        if self.windows.is_empty() {
            return Ok((true, String::new()));
        }
        let zone = time_zone(self.time_zone.as_deref().unwrap_or("UTC"))?;
        in_windows(&self.windows, &zone, now)
    }

    /// The windows as text (`mon-thu 09-17 Europe/Berlin`).
    pub(crate) fn windows_text(&self) -> String {
        let list: Vec<String> = self.windows.iter().map(ToString::to_string).collect();
        format!(
            "{} ({})",
            list.join("; "),
            self.time_zone.as_deref().unwrap_or("UTC")
        )
    }
}

/// The policy at `key` and its `mod_revision` (0: none).
///
/// # Errors
/// [`ErrorKind::Auth`] naming the key when the user may not read it; [`ErrorKind::Validation`]
/// for a stored policy that does not parse; etcd errors.
pub(crate) async fn read(etcd: &Etcd, key: &str) -> Result<(Option<Policy>, i64)> {
    let resp = etcd.kv().get(key, None).await.map_err(|e| {
        Error::etcd(format_args!("reading the change-control policy `{key}`"), e).needs(
            Permission::Read,
            &format!("the key `{key}`"),
            key,
        )
    })?;
    let Some(kv) = resp.kvs().first() else {
        return Ok((None, 0));
    };
    let policy: Policy = serde_json::from_slice(kv.value()).map_err(|e| {
        Error::new(
            ErrorKind::Validation,
            format!("the change-control policy at `{key}` does not parse: {e}"),
        )
        .with_key(key)
        .with_revision(kv.mod_revision())
    })?;
    Ok((Some(policy), kv.mod_revision()))
}

/// Stores `policy` at `key` (after [`Policy::check`]); `None` deletes it.
pub(crate) async fn write(etcd: &Etcd, key: &str, policy: Option<&Policy>) -> Result<i64> {
    let mut kv = etcd.kv();
    let revision = match policy {
        Some(policy) => {
            policy.check()?;
            let text = serde_json::to_vec(policy).map_err(|e| {
                Error::new(ErrorKind::Etcd, format!("encoding the policy: {e}")).with_source(e)
            })?;
            kv.put(key, text, None)
                .await
                .map(|r| r.header().map_or(0, |h| h.revision()))
        }
        None => kv
            .delete(key, None)
            .await
            .map(|r| r.header().map_or(0, |h| h.revision())),
    };
    revision.map_err(|e| {
        Error::etcd(format_args!("writing the change-control policy `{key}`"), e).needs(
            Permission::ReadWrite,
            &format!("the key `{key}`"),
            key,
        )
    })
}

/// The compare that the policy at `key` is still the one read (`mod_revision`; 0 for none).
pub(crate) fn unchanged(key: &str, mod_revision: i64) -> Compare {
    Compare::mod_revision(key, CompareOp::Equal, mod_revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_from_yaml_and_count_approvers() {
        let p = Policy::parse(
            "approvals: 1\napprovers: [bob, carol]\ntime_zone: Europe/Berlin\nwindows:\n  - {days: [mon-thu], hours: \"09-17\"}\n",
        )
        .unwrap();
        assert_eq!(p.approvals, 1);
        assert!(p.may_approve("alice", "alice").is_err());
        assert!(p.may_approve("mallory", "alice").is_err());
        assert!(p.may_approve("bob", "alice").is_ok());
        assert_eq!(
            p.counted("alice", ["alice", "bob", "bob", "dave", "carol"]),
            vec!["bob", "carol"]
        );
        assert!(Policy::parse("approvals: 1\nunknown: 2\n").is_err());
        assert!(Policy::parse("windows:\n  - {days: [mon], hours: \"09-17\"}\n").is_err());
        let open = Policy::requiring(2);
        assert!(open.may_approve("anyone", "alice").is_ok());
        assert!(Policy {
            self_approval: true,
            ..Policy::requiring(1)
        }
        .may_approve("alice", "alice")
        .is_ok());
    }
}
