//! What a version records about change control: the proposal it applied and who approved it,
//! a break-glass reason, a promotion's source.

use serde::{Deserialize, Serialize};

/// Change-control facts of one version, in [`Version::change`](crate::history::Version::change)
/// and in the record's JSON as `"change": {…}` (fields left out when empty; records written
/// before change control have none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangeRecord {
    /// The id of the proposal this version applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    /// Who approved that proposal (the approvals the policy counted), in approval order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Who applied it (the author is the proposal's author).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
    /// The reason given for a write past the policy (`--break-glass --reason …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// For a promotion: the prefix and revision it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<Promotion>,
}

/// Where a promoted change came from: the source prefix (as given, e.g.
/// `/env/staging/apps/chat/config`) and the etcd revision it was read at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Promotion {
    /// The source prefix.
    pub prefix: String,
    /// The etcd revision the source was read at.
    pub revision: i64,
}

impl Promotion {
    /// A promotion from `prefix` as read at `revision`.
    pub fn new(prefix: impl Into<String>, revision: i64) -> Self {
        Promotion {
            prefix: prefix.into(),
            revision,
        }
    }
}
