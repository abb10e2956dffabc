//! Metric names, their descriptions and the label values the crate records through the
//! `metrics` facade (the application installs the recorder and picks the exporter), and the
//! `tracing` targets of its spans. The table users read is `docs/observability.md`; a name
//! changed here must change there and in `docs/alerts.yml`.
//!
//! Handles (`Counter`, `Gauge`, `Histogram`) are made once per handle, follower, lease or
//! history store and kept: recording is then an atomic operation on the installed recorder's
//! storage, with no label formatting or allocation per event. A handle is bound to the
//! recorder installed when it was made, so the recorder must be installed before
//! [`Coordinator::connect`](crate::Coordinator::connect).

use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Label, Unit};

use crate::error::ErrorKind;
use crate::etcd::follow::ResyncReason;

/// The `tracing` target of the config spans (`bind`, `reload`, `resync`).
pub(crate) const CONFIG_TARGET: &str = "coordination::config";
/// The `tracing` target of the history spans (`publish`, `rollback`, `record`).
pub(crate) const HISTORY_TARGET: &str = "coordination::history";

pub(crate) const CONFIG_APPLIED: &str = "coordination_config_applied_total";
pub(crate) const CONFIG_REJECTED: &str = "coordination_config_rejected_total";
pub(crate) const CONFIG_REVISION: &str = "coordination_config_revision";
pub(crate) const CONFIG_APPLIED_AT: &str = "coordination_config_applied_timestamp_seconds";
pub(crate) const CONFIG_CONFIRMED_AT: &str = "coordination_config_confirmed_timestamp_seconds";
pub(crate) const CONFIG_WATCH_OPENS: &str = "coordination_config_watch_opens_total";
pub(crate) const CONFIG_WATCH_REOPENS: &str = "coordination_config_watch_reopens_total";
pub(crate) const CONFIG_RESYNCS: &str = "coordination_config_resyncs_total";
pub(crate) const CONFIG_RELOAD_SECONDS: &str = "coordination_config_reload_duration_seconds";
pub(crate) const CONFIG_SUBSCRIBER_LAGGED: &str = "coordination_config_subscriber_lagged_total";

pub(crate) const ETCD_WATCH_OPENS: &str = "coordination_etcd_watch_opens_total";
pub(crate) const ETCD_WATCH_REOPENS: &str = "coordination_etcd_watch_reopens_total";
pub(crate) const ETCD_WATCH_RESYNCS: &str = "coordination_etcd_watch_resyncs_total";
pub(crate) const ETCD_LEASE_LOST: &str = "coordination_etcd_lease_lost_total";

pub(crate) const HISTORY_RECORD_SECONDS: &str = "coordination_history_record_duration_seconds";
pub(crate) const HISTORY_RECORDS: &str = "coordination_history_records_total";
pub(crate) const HISTORY_PRUNED: &str = "coordination_history_pruned_total";
pub(crate) const HISTORY_VERSIONS: &str = "coordination_history_versions";
pub(crate) const HISTORY_WRITES: &str = "coordination_history_writes_total";

/// Sends every metric's unit and description to the installed recorder (the exporter shows
/// them as `# HELP` lines). Called at connect; cheap, and harmless to repeat.
pub(crate) fn describe() {
    describe_counter!(
        CONFIG_APPLIED,
        Unit::Count,
        "Snapshots swapped in (the one made at bind included)."
    );
    describe_counter!(
        CONFIG_REJECTED,
        Unit::Count,
        "Changes rejected (parse, schema, validate()); the last good snapshot keeps serving."
    );
    describe_gauge!(
        CONFIG_REVISION,
        "etcd revision of the snapshot being served."
    );
    describe_gauge!(
        CONFIG_APPLIED_AT,
        Unit::Seconds,
        "Unix time at which the serving snapshot was swapped in."
    );
    describe_gauge!(
        CONFIG_CONFIRMED_AT,
        Unit::Seconds,
        "Unix time at which etcd last confirmed the handle is current (0: never, a cold start)."
    );
    describe_counter!(
        CONFIG_WATCH_OPENS,
        Unit::Count,
        "etcd watches opened for the prefix, the first included."
    );
    describe_counter!(
        CONFIG_WATCH_REOPENS,
        Unit::Count,
        "Failures of the prefix's read or watch, each followed by a re-open after a backoff."
    );
    describe_counter!(
        CONFIG_RESYNCS,
        Unit::Count,
        "Times the prefix was read again instead of followed by events."
    );
    describe_histogram!(
        CONFIG_RELOAD_SECONDS,
        Unit::Seconds,
        "Time to merge, deserialize, check and swap in (or reject) one change."
    );
    describe_counter!(
        CONFIG_SUBSCRIBER_LAGGED,
        Unit::Count,
        "Lagged events delivered to subscriptions that fell behind."
    );
    describe_counter!(
        ETCD_WATCH_OPENS,
        Unit::Count,
        "etcd watches opened by the crate's followers."
    );
    describe_counter!(
        ETCD_WATCH_REOPENS,
        Unit::Count,
        "Failures of a follower's read or watch, each followed by a re-open after a backoff."
    );
    describe_counter!(
        ETCD_WATCH_RESYNCS,
        Unit::Count,
        "Times a follower read its range again instead of following events."
    );
    describe_counter!(
        ETCD_LEASE_LOST,
        Unit::Count,
        "Leases (lock sessions, registrations) lost: expired, revoked elsewhere or unconfirmed."
    );
    describe_histogram!(
        HISTORY_RECORD_SECONDS,
        Unit::Seconds,
        "Time to record one version (create-if-absent transaction and chunks)."
    );
    describe_counter!(
        HISTORY_RECORDS,
        Unit::Count,
        "Version records attempted by this process, by outcome."
    );
    describe_counter!(
        HISTORY_PRUNED,
        Unit::Count,
        "Versions deleted by this process's pruning."
    );
    describe_gauge!(
        HISTORY_VERSIONS,
        "Versions kept in etcd, as last counted by this process (after a version it recorded)."
    );
    describe_counter!(
        HISTORY_WRITES,
        Unit::Count,
        "Guarded publish and rollback writes, by outcome."
    );
}

/// The current Unix time in seconds, for the `_timestamp_seconds` gauges.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `reason` label of a read or watch failure: its error kind.
pub(crate) fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connection => "connection",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Auth => "auth",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Compacted => "compacted",
        ErrorKind::Validation => "validation",
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::Io => "io",
        ErrorKind::Closed => "closed",
        ErrorKind::Etcd => "etcd",
    }
}

/// Every `reason` label of a resync, in [`resync_index`] order.
pub(crate) const RESYNC_REASONS: [&str; 4] = ["initial", "compacted", "too_large", "restored"];

/// The position of `reason`'s label in [`RESYNC_REASONS`].
pub(crate) fn resync_index(reason: ResyncReason) -> usize {
    match reason {
        ResyncReason::Initial => 0,
        ResyncReason::Compacted { .. } => 1,
        ResyncReason::TooLarge => 2,
        ResyncReason::Restored { .. } => 3,
    }
}

/// Counters of one name and fixed labels, one per `reason` value, made the first time that
/// reason occurs (so only reasons that happened are exported) and kept.
pub(crate) struct ByReason {
    name: &'static str,
    labels: Vec<Label>,
    made: Vec<(&'static str, Counter)>,
}

impl ByReason {
    pub(crate) fn new(name: &'static str, labels: Vec<Label>) -> Self {
        ByReason {
            name,
            labels,
            made: Vec::new(),
        }
    }

    /// Adds one to the counter of `reason`.
    pub(crate) fn increment(&mut self, reason: &'static str) {
        if let Some((_, counter)) = self.made.iter().find(|(r, _)| *r == reason) {
            counter.increment(1);
            return;
        }
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts("reason", reason));
        let counter = metrics::counter!(self.name, labels);
        counter.increment(1);
        self.made.push((reason, counter));
    }
}

/// One counter per resync reason, all made (at zero) up front: a resync is rare, and a series
/// that exists before its first increment lets `increase()` see that first one.
pub(crate) fn resync_counters(name: &'static str, labels: &[Label]) -> [Counter; 4] {
    RESYNC_REASONS.map(|reason| {
        let mut labels = labels.to_vec();
        labels.push(Label::from_static_parts("reason", reason));
        metrics::counter!(name, labels)
    })
}

impl std::fmt::Debug for ByReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByReason")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
