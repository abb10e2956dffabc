//! Cohort selection: which instances serve a rollout's staged values at a step. A label
//! [`Selector`] narrows the fleet; the instances it matches are ranked by a stable hash of
//! their id (SHA-256), and a step takes the first of them. The rank depends only on the id, so
//! a restarted instance (same id) keeps its place, IPs play no part, and each step's cohort
//! holds the previous one.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::receipt::{parse_labels, Receipt};
use super::state::Step;
use crate::error::{Error, ErrorKind, Result};

/// Label equality constraints, all of which an instance must meet: `zone=eu-1a,tier=canary`.
/// The empty selector matches every instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub BTreeMap<String, String>);

impl Selector {
    /// Parses `name=value,name=value`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an entry that is not `name=value`.
    pub fn parse(text: &str) -> Result<Self> {
        parse_labels(text)
            .map(Selector)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("selector: {e}")))
    }

    /// Whether `labels` meet every constraint.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// The stable rank of an instance id.
pub(crate) fn rank(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The cohort of `step` among the live `instances`: the previous cohort's members that are
/// still live and matching, plus the best-ranked matching instances up to the step's size.
/// Sorted by id.
pub(crate) fn select(
    instances: &[Receipt],
    selector: &Selector,
    step: Step,
    previous: &[String],
) -> Vec<String> {
    let mut matching: Vec<&Receipt> = instances
        .iter()
        .filter(|r| selector.matches(&r.labels))
        .collect();
    matching.sort_by_key(|r| rank(&r.instance));
    let size = step.size(matching.len());
    let mut cohort: Vec<String> = matching
        .iter()
        .take(size)
        .map(|r| r.instance.clone())
        .collect();
    for id in previous {
        if !cohort.contains(id) && matching.iter().any(|r| &r.instance == id) {
            cohort.push(id.clone());
        }
    }
    cohort.sort();
    cohort
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::receipt::{Health, InstanceStatus};

    fn receipt(id: &str, zone: &str) -> Receipt {
        Receipt {
            instance: id.into(),
            labels: BTreeMap::from([("zone".into(), zone.into())]),
            app: None,
            schema_hash: String::new(),
            revision: 1,
            processed: 1,
            serving_since_unix_ms: 0,
            status: InstanceStatus::Live,
            health: Health::Healthy,
            rejection: None,
            rollout: None,
            updated_unix_ms: 0,
            writes: 1,
        }
    }

    #[test]
    fn cohorts_grow_stably_and_respect_the_selector() {
        let fleet: Vec<Receipt> = (0..10)
            .map(|i| receipt(&format!("i{i}"), if i < 6 { "a" } else { "b" }))
            .collect();
        let all = Selector::default();
        let one = select(&fleet, &all, Step::Count(1), &[]);
        assert_eq!(one.len(), 1);
        let half = select(&fleet, &all, Step::Percent(50), &one);
        assert_eq!(half.len(), 5);
        assert!(half.contains(&one[0]));
        // The order of the input does not matter.
        let mut reversed = fleet.clone();
        reversed.reverse();
        assert_eq!(select(&reversed, &all, Step::Percent(50), &[]), half);
        let zone_b = Selector::parse("zone=b").unwrap();
        let b = select(&fleet, &zone_b, Step::Percent(100), &[]);
        assert_eq!(b, vec!["i6", "i7", "i8", "i9"]);
        assert_eq!(zone_b.to_string(), "zone=b");
    }
}
