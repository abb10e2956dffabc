//! The metrics of one prefix's history store, labelled with the prefix (see
//! `docs/observability.md`). Made once per store; cloned with it.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};

use super::record::VersionKind;
use super::store::Outcome;
use crate::error::{ErrorKind, Result};
use crate::telemetry as t;

/// The `outcome` label of `coordination_history_records_total`, in [`record_index`] order.
const RECORD_OUTCOMES: [&str; 4] = ["created", "existing", "superseded", "failed"];

/// The `operation` label of `coordination_history_writes_total`.
const OPERATIONS: [&str; 2] = ["publish", "rollback"];

/// The `outcome` label of `coordination_history_writes_total`, in [`write_index`] order.
const WRITE_OUTCOMES: [&str; 4] = ["written", "unchanged", "conflict", "failed"];

fn record_index(outcome: &Result<Outcome>) -> usize {
    match outcome {
        Ok(Outcome::Created(_)) => 0,
        Ok(Outcome::Existing(_)) => 1,
        Ok(Outcome::Superseded) => 2,
        Err(_) => 3,
    }
}

fn write_index<V>(outcome: &Result<Option<V>>) -> usize {
    match outcome {
        Ok(Some(_)) => 0,
        Ok(None) => 1,
        Err(e) if e.kind() == ErrorKind::Conflict => 2,
        Err(_) => 3,
    }
}

/// A history store's counters, gauge and histogram, shared by the store's clones.
#[derive(Clone)]
pub(crate) struct HistoryMetrics(Arc<Inner>);

struct Inner {
    record_seconds: Histogram,
    records: [Counter; 4],
    pruned: Counter,
    versions: Gauge,
    /// `[operation][outcome]`, all made up front: a conflict is rare, and a series that exists
    /// before its first increment lets `increase()` see that first one.
    writes: [[Counter; 4]; 2],
}

impl HistoryMetrics {
    /// The handles for the history of `prefix` (the full prefix).
    pub(crate) fn new(prefix: &str) -> Self {
        let labels = vec![Label::new("prefix", prefix.to_string())];
        let with = |name: &'static str, more: &[(&'static str, &'static str)]| {
            let mut labels = labels.clone();
            labels.extend(more.iter().map(|&(k, v)| Label::from_static_parts(k, v)));
            metrics::counter!(name, labels)
        };
        HistoryMetrics(Arc::new(Inner {
            record_seconds: metrics::histogram!(t::HISTORY_RECORD_SECONDS, labels.clone()),
            records: RECORD_OUTCOMES.map(|o| with(t::HISTORY_RECORDS, &[("outcome", o)])),
            pruned: with(t::HISTORY_PRUNED, &[]),
            versions: metrics::gauge!(t::HISTORY_VERSIONS, labels.clone()),
            writes: OPERATIONS.map(|op| {
                WRITE_OUTCOMES
                    .map(|o| with(t::HISTORY_WRITES, &[("operation", op), ("outcome", o)]))
            }),
        }))
    }

    /// One record attempt took `elapsed` and ended with `outcome`.
    pub(crate) fn recorded(&self, elapsed: Duration, outcome: &Result<Outcome>) {
        self.0.record_seconds.record(elapsed);
        self.0.records[record_index(outcome)].increment(1);
    }

    /// The history held `count` versions, of which this process then pruned `pruned`.
    pub(crate) fn counted(&self, count: usize, pruned: usize) {
        #[allow(clippy::cast_precision_loss)]
        self.0.versions.set(count.saturating_sub(pruned) as f64);
        self.0.pruned.increment(pruned as u64);
    }

    /// A guarded write of `kind` (publish or rollback) ended with `outcome`.
    pub(crate) fn wrote<V>(&self, kind: VersionKind, outcome: &Result<Option<V>>) {
        self.count_write(kind, write_index(outcome));
    }

    /// A write of `kind` found the prefix changed before it sent its transaction.
    pub(crate) fn conflicted(&self, kind: VersionKind) {
        self.count_write(kind, 2);
    }

    fn count_write(&self, kind: VersionKind, outcome: usize) {
        let op = match kind {
            VersionKind::Rollback => 1,
            VersionKind::Publish | VersionKind::External | VersionKind::Rollout => 0,
        };
        self.0.writes[op][outcome].increment(1);
    }
}

impl std::fmt::Debug for HistoryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryMetrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::telemetry::testing::{value, Recorded};

    const P: &str = "prefix=/apps/chat/config/";

    #[test]
    fn writes_are_counted_by_operation_and_outcome_from_zero() {
        let recorded = Recorded::new();
        let metrics = recorded.with(|| HistoryMetrics::new("/apps/chat/config/"));
        let conflict = Error::new(ErrorKind::Conflict, "changed since");
        metrics.wrote(VersionKind::Publish, &Ok(Some(())));
        metrics.wrote(VersionKind::Publish, &Ok(None::<()>));
        metrics.wrote::<()>(VersionKind::Publish, &Err(conflict.clone()));
        metrics.conflicted(VersionKind::Publish);
        metrics.wrote::<()>(
            VersionKind::Rollback,
            &Err(Error::new(ErrorKind::Timeout, "slow")),
        );
        metrics.counted(12, 2);
        let series = recorded.series();
        let writes = |op: &str, outcome: &str| {
            let (op, outcome) = (format!("operation={op}"), format!("outcome={outcome}"));
            value(&series, t::HISTORY_WRITES, &[P, &op, &outcome])
        };
        assert_eq!(writes("publish", "written"), Some(1.0));
        assert_eq!(writes("publish", "unchanged"), Some(1.0));
        assert_eq!(writes("publish", "conflict"), Some(2.0));
        assert_eq!(writes("publish", "failed"), Some(0.0));
        assert_eq!(writes("rollback", "failed"), Some(1.0));
        assert_eq!(writes("rollback", "written"), Some(0.0));
        assert_eq!(value(&series, t::HISTORY_VERSIONS, &[P]), Some(10.0));
        assert_eq!(value(&series, t::HISTORY_PRUNED, &[P]), Some(2.0));
        assert_eq!(
            value(&series, t::HISTORY_RECORDS, &[P, "outcome=failed"]),
            Some(0.0)
        );
    }
}
