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
/// The `tracing` target of the lock and election spans (`acquire`, `campaign`).
pub(crate) const LOCK_TARGET: &str = "coordination::lock";
/// The `tracing` target of the registry spans (`register`).
pub(crate) const REGISTRY_TARGET: &str = "coordination::registry";

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

pub(crate) const LOCK_ACQUIRE_SECONDS: &str = "coordination_lock_acquire_wait_seconds";
pub(crate) const LOCK_HOLD_SECONDS: &str = "coordination_lock_hold_seconds";
pub(crate) const LOCK_KEY_DELETED: &str = "coordination_lock_key_deleted_total";
pub(crate) const ELECTION_LEADER_CHANGES: &str = "coordination_election_leader_changes_total";
pub(crate) const REGISTRY_INSTANCES: &str = "coordination_registry_instances";
pub(crate) const REGISTRY_REREGISTRATIONS: &str = "coordination_registry_reregistrations_total";
pub(crate) const REGISTRY_CHECK_FAILURES: &str =
    "coordination_registry_health_check_failures_total";

pub(crate) const HISTORY_RECORD_SECONDS: &str = "coordination_history_record_duration_seconds";
pub(crate) const HISTORY_RECORDS: &str = "coordination_history_records_total";
pub(crate) const HISTORY_PRUNED: &str = "coordination_history_pruned_total";
pub(crate) const HISTORY_VERSIONS: &str = "coordination_history_versions";
pub(crate) const HISTORY_WRITES: &str = "coordination_history_writes_total";

/// Sends every metric's unit and description to the installed recorder (the exporter shows
/// them as `# HELP` lines). Called at connect; cheap, and harmless to repeat.
pub(crate) fn describe() {
    describe_histogram!(
        LOCK_ACQUIRE_SECONDS,
        Unit::Seconds,
        "Time from asking for a lock to holding it, by lock name."
    );
    describe_histogram!(
        LOCK_HOLD_SECONDS,
        Unit::Seconds,
        "Time a lock was held, from acquisition to release, by lock name."
    );
    describe_counter!(
        LOCK_KEY_DELETED,
        Unit::Count,
        "Held lock and leader keys deleted under their holder (force-released, `etcdctl del`)."
    );
    describe_counter!(
        ELECTION_LEADER_CHANGES,
        Unit::Count,
        "New leaders an election observer saw, by election name."
    );
    describe_gauge!(
        REGISTRY_INSTANCES,
        "Instances of a service in this process's live view, by health."
    );
    describe_counter!(
        REGISTRY_REREGISTRATIONS,
        Unit::Count,
        "Registrations made again on a new lease after the old one was lost, by service."
    );
    describe_counter!(
        REGISTRY_CHECK_FAILURES,
        Unit::Count,
        "Failed health-check probes of this process's registrations, by service."
    );
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
        ErrorKind::Refused => "refused",
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

/// Reading back what the crate recorded, for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    /// A recorder of its own: handles made inside [`Recorded::with`] record into it.
    pub(crate) struct Recorded {
        recorder: DebuggingRecorder,
        snapshotter: Snapshotter,
    }

    /// One series: its name, its labels as `k=v` sorted, and its value (gauges and counters
    /// as `f64`; histograms as their number of samples).
    pub(crate) type Series = (String, Vec<String>, f64);

    impl Recorded {
        pub(crate) fn new() -> Self {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            Recorded {
                recorder,
                snapshotter,
            }
        }

        /// Runs `f` with this recorder installed for the current thread.
        pub(crate) fn with<R>(&self, f: impl FnOnce() -> R) -> R {
            metrics::with_local_recorder(&self.recorder, f)
        }

        /// Every series, in name and label order. Reading resets them (counters and gauges to
        /// 0, histograms to no samples): read once, after what is being tested.
        pub(crate) fn series(&self) -> Vec<Series> {
            let mut all: Vec<Series> = self
                .snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let key = key.key();
                    let mut labels: Vec<String> = key
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    labels.sort();
                    #[allow(clippy::cast_precision_loss)]
                    let value = match value {
                        DebugValue::Counter(n) => n as f64,
                        DebugValue::Gauge(g) => g.into_inner(),
                        DebugValue::Histogram(samples) => samples.len() as f64,
                    };
                    (key.name().to_string(), labels, value)
                })
                .collect();
            all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            all
        }
    }

    /// The value of the series `name` whose labels are exactly `labels` (`k=v`, any order).
    pub(crate) fn value(series: &[Series], name: &str, labels: &[&str]) -> Option<f64> {
        let mut wanted: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        wanted.sort();
        series
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{value, Recorded};
    use super::*;

    #[test]
    fn by_reason_makes_a_series_only_for_reasons_that_happened() {
        let recorded = Recorded::new();
        let mut reopens = recorded.with(|| {
            ByReason::new(
                ETCD_WATCH_REOPENS,
                vec![Label::from_static_parts("subsystem", "config")],
            )
        });
        assert!(recorded.series().is_empty());
        recorded.with(|| {
            reopens.increment(kind_label(ErrorKind::Unavailable));
            reopens.increment(kind_label(ErrorKind::Unavailable));
            reopens.increment(kind_label(ErrorKind::Timeout));
        });
        assert_eq!(
            recorded.series(),
            [
                (
                    ETCD_WATCH_REOPENS.to_string(),
                    vec!["reason=timeout".to_string(), "subsystem=config".to_string()],
                    1.0
                ),
                (
                    ETCD_WATCH_REOPENS.to_string(),
                    vec![
                        "reason=unavailable".to_string(),
                        "subsystem=config".to_string()
                    ],
                    2.0
                ),
            ]
        );
    }

    #[test]
    fn resync_counters_exist_at_zero_for_every_reason() {
        let recorded = Recorded::new();
        let counters = recorded.with(|| resync_counters(CONFIG_RESYNCS, &[]));
        counters[resync_index(ResyncReason::Compacted {
            compact_revision: 7,
        })]
        .increment(1);
        let series = recorded.series();
        for reason in RESYNC_REASONS {
            let expected = if reason == "compacted" { 1.0 } else { 0.0 };
            let label = format!("reason={reason}");
            assert_eq!(
                value(&series, CONFIG_RESYNCS, &[&label]),
                Some(expected),
                "{reason}"
            );
        }
    }

    #[test]
    fn every_name_has_the_crate_prefix_and_its_type_suffix() {
        let counters = [
            CONFIG_APPLIED,
            CONFIG_REJECTED,
            CONFIG_WATCH_OPENS,
            CONFIG_WATCH_REOPENS,
            CONFIG_RESYNCS,
            CONFIG_SUBSCRIBER_LAGGED,
            ETCD_WATCH_OPENS,
            ETCD_WATCH_REOPENS,
            ETCD_WATCH_RESYNCS,
            ETCD_LEASE_LOST,
            HISTORY_RECORDS,
            HISTORY_PRUNED,
            HISTORY_WRITES,
        ];
        for name in counters {
            assert!(
                name.starts_with("coordination_") && name.ends_with("_total"),
                "{name}"
            );
        }
        for name in [
            CONFIG_APPLIED_AT,
            CONFIG_CONFIRMED_AT,
            CONFIG_RELOAD_SECONDS,
            HISTORY_RECORD_SECONDS,
        ] {
            assert!(
                name.starts_with("coordination_") && name.ends_with("_seconds"),
                "{name}"
            );
        }
        for name in [CONFIG_REVISION, HISTORY_VERSIONS] {
            assert!(name.starts_with("coordination_"), "{name}");
        }
    }
}
