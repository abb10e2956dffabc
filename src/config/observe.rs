//! The metrics of one bound handle, labelled with its prefix (see `docs/observability.md`).
//! Made once at bind; recording is then an atomic operation, with no label built per event.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};

use crate::error::ErrorKind;
use crate::etcd::follow::ResyncReason;
use crate::provenance::Layer;
use crate::telemetry::{self as t, ByReason};

/// The `layer` label of a rejection, in [`layer_index`] order.
const LAYERS: [&str; 5] = ["default", "file", "etcd", "env", "unknown"];

fn layer_index(layer: Option<Layer>) -> usize {
    match layer {
        Some(Layer::Default) => 0,
        Some(Layer::File) => 1,
        Some(Layer::Etcd) => 2,
        Some(Layer::Env) => 3,
        None => 4,
    }
}

/// A handle's counters, gauges and histogram.
pub(crate) struct ConfigMetrics {
    applied: Counter,
    /// By layer of the rejected value, all made up front (so the first rejection is an
    /// increase from zero, which `increase()` sees).
    rejected: [Counter; 5],
    revision: Gauge,
    applied_at: Gauge,
    /// Given to the follower, which sets it whenever etcd confirms the handle is current.
    pub(super) confirmed_at: Gauge,
    watch_opens: Counter,
    reopens: ByReason,
    resyncs: [Counter; 4],
    reload_seconds: Histogram,
    /// Shared with every [`Subscription`](super::Subscription) of the handle.
    pub(super) lagged: Counter,
}

impl ConfigMetrics {
    /// The handles for `prefix` (the full prefix, as in `ConfigHandle::prefix`).
    pub(super) fn new(prefix: &str) -> Self {
        let labels = vec![Label::new("prefix", prefix.to_string())];
        let with = |name: &'static str| metrics::counter!(name, labels.clone());
        let rejected = LAYERS.map(|layer| {
            let mut labels = labels.clone();
            labels.push(Label::from_static_parts("layer", layer));
            metrics::counter!(t::CONFIG_REJECTED, labels)
        });
        ConfigMetrics {
            applied: with(t::CONFIG_APPLIED),
            rejected,
            revision: metrics::gauge!(t::CONFIG_REVISION, labels.clone()),
            applied_at: metrics::gauge!(t::CONFIG_APPLIED_AT, labels.clone()),
            confirmed_at: metrics::gauge!(t::CONFIG_CONFIRMED_AT, labels.clone()),
            watch_opens: with(t::CONFIG_WATCH_OPENS),
            reopens: ByReason::new(t::CONFIG_WATCH_REOPENS, labels.clone()),
            resyncs: t::resync_counters(t::CONFIG_RESYNCS, &labels),
            reload_seconds: metrics::histogram!(t::CONFIG_RELOAD_SECONDS, labels.clone()),
            lagged: with(t::CONFIG_SUBSCRIBER_LAGGED),
        }
    }

    /// A snapshot of `revision` was swapped in.
    pub(super) fn applied(&self, revision: i64) {
        self.applied.increment(1);
        #[allow(clippy::cast_precision_loss)]
        self.revision.set(revision as f64);
        self.applied_at.set(t::unix_now());
    }

    /// A change was rejected; `layer` is the bad value's, where known.
    pub(super) fn rejected(&self, layer: Option<Layer>) {
        self.rejected[layer_index(layer)].increment(1);
    }

    /// etcd confirmed the handle is current (a read of the prefix at bind).
    pub(super) fn confirmed(&self) {
        self.confirmed_at.set(t::unix_now());
    }

    /// One change took `elapsed` to build and swap in or reject.
    pub(super) fn reloaded(&self, elapsed: Duration) {
        self.reload_seconds.record(elapsed);
    }

    /// The follower opened `more` watches since the last call.
    pub(super) fn watches_opened(&self, more: u64) {
        self.watch_opens.increment(more);
    }

    /// The read or watch failed with `kind`; a re-open follows.
    pub(super) fn interrupted(&mut self, kind: ErrorKind) {
        self.reopens.increment(t::kind_label(kind));
    }

    /// The prefix was read again for `reason`.
    pub(super) fn resynced(&self, reason: ResyncReason) {
        self.resyncs[t::resync_index(reason)].increment(1);
    }
}

impl Drop for ConfigMetrics {
    /// The series stay in the exporter after the handle is gone; a NaN confirmation time
    /// compares false, so a staleness rule (`time() - … > N`) ignores a dropped handle.
    fn drop(&mut self) {
        self.confirmed_at.set(f64::NAN);
    }
}

impl std::fmt::Debug for ConfigMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMetrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::testing::{value, Recorded};

    const P: &str = "prefix=/apps/chat/config/";

    #[test]
    fn rejections_are_counted_by_layer_from_zero() {
        let recorded = Recorded::new();
        let metrics = recorded.with(|| ConfigMetrics::new("/apps/chat/config/"));
        metrics.rejected(Some(Layer::Etcd));
        metrics.rejected(Some(Layer::Etcd));
        metrics.rejected(None);
        let series = recorded.series();
        let rejected =
            |layer: &str| value(&series, t::CONFIG_REJECTED, &[P, &format!("layer={layer}")]);
        assert_eq!(rejected("etcd"), Some(2.0));
        assert_eq!(rejected("unknown"), Some(1.0));
        for layer in ["default", "file", "env"] {
            assert_eq!(rejected(layer), Some(0.0), "{layer}");
        }
    }

    #[test]
    fn an_applied_snapshot_sets_the_revision_and_the_time() {
        let recorded = Recorded::new();
        let metrics = recorded.with(|| ConfigMetrics::new("/apps/chat/config/"));
        let before = t::unix_now();
        metrics.applied(42);
        let after = t::unix_now();
        let series = recorded.series();
        assert_eq!(value(&series, t::CONFIG_APPLIED, &[P]), Some(1.0));
        assert_eq!(value(&series, t::CONFIG_REVISION, &[P]), Some(42.0));
        let at = value(&series, t::CONFIG_APPLIED_AT, &[P]).unwrap();
        assert!(at >= before && at <= after, "{at}");
        // Never confirmed: a cold start reads 0.
        assert_eq!(value(&series, t::CONFIG_CONFIRMED_AT, &[P]), Some(0.0));
    }

    #[test]
    fn a_dropped_handle_is_never_confirmed_again() {
        let recorded = Recorded::new();
        let metrics = recorded.with(|| ConfigMetrics::new("/apps/chat/config/"));
        metrics.confirmed();
        drop(metrics);
        let series = recorded.series();
        assert!(value(&series, t::CONFIG_CONFIRMED_AT, &[P])
            .unwrap()
            .is_nan());
    }
}
