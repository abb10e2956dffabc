//! [`LiveSet`]: a service's instances as an immutable [`LiveInstances`] view in an `ArcSwap`,
//! kept current by the registry watch, with lock-free load-balanced picks, and
//! [`LiveUpdates`] to follow the views.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::balancer::{build_ring, random_below, ring_lookup, smooth_wrr_sequence, Balancer};
use super::changes::Changes;
use super::instance::{validate_segment, Instance};
use super::watch::Follower;
use super::Registry;
use crate::error::{Error, ErrorKind, Result};

/// One immutable view of a service: every instance (by id) with the balancing tables for the
/// serving ones (healthy, weight > 0). From [`LiveSet::current`], [`LiveSet::wait_for`] and
/// [`LiveUpdates`].
pub struct LiveInstances {
    service: String,
    revision: i64,
    all: Vec<Arc<Instance>>,
    serving: Vec<Arc<Instance>>,
    /// Smooth weighted round-robin cycle (indices into `serving`).
    wrr: Vec<u32>,
    /// Per zone, sorted by zone name: the weighted cycle of its serving instances (indices
    /// into `serving`). A sorted `Vec` because a binary search over a few names beats hashing.
    zones: Vec<(String, ZoneGroup)>,
    /// Consistent-hash ring: (point, index into `serving`), sorted.
    ring: Vec<(u64, u32)>,
    rr_next: AtomicUsize,
    wrr_next: AtomicUsize,
}

struct ZoneGroup {
    wrr: Vec<u32>,
    next: AtomicUsize,
}

impl fmt::Debug for LiveInstances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self
            .all
            .iter()
            .map(|i| format!("{}({})", i.id(), i.health))
            .collect();
        f.debug_struct("LiveInstances")
            .field("service", &self.service)
            .field("revision", &self.revision)
            .field("instances", &ids)
            .field("serving", &self.serving.len())
            .finish()
    }
}

impl LiveInstances {
    /// Builds the view and its tables; counters continue from `previous` so that a change
    /// does not restart every round robin at the first instance.
    pub(crate) fn build(
        service: &str,
        revision: i64,
        instances: impl IntoIterator<Item = Arc<Instance>>,
        previous: Option<&LiveInstances>,
    ) -> Self {
        let mut all: Vec<Arc<Instance>> = instances.into_iter().collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all.dedup_by(|a, b| a.id() == b.id());
        let serving: Vec<Arc<Instance>> = all.iter().filter(|i| i.is_serving()).cloned().collect();
        let weights: Vec<u32> = serving.iter().map(|i| i.weight()).collect();
        let wrr = smooth_wrr_sequence(&weights);
        let mut by_zone: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, instance) in serving.iter().enumerate() {
            if let Some(zone) = instance.zone() {
                by_zone.entry(zone).or_default().push(index);
            }
        }
        let mut zones: Vec<(String, ZoneGroup)> = by_zone
            .into_iter()
            .map(|(zone, members)| {
                let weights: Vec<u32> = members.iter().map(|&i| serving[i].weight()).collect();
                let wrr = smooth_wrr_sequence(&weights)
                    .into_iter()
                    .map(|k| members[k as usize] as u32)
                    .collect();
                let next = previous
                    .and_then(|p| p.zone(zone))
                    .map_or(0, |g| g.next.load(Ordering::Relaxed));
                (
                    zone.to_string(),
                    ZoneGroup {
                        wrr,
                        next: AtomicUsize::new(next),
                    },
                )
            })
            .collect();
        zones.sort_by(|a, b| a.0.cmp(&b.0));
        let ring = build_ring(serving.iter().map(|i| i.id()));
        let carry = |f: fn(&LiveInstances) -> &AtomicUsize| {
            AtomicUsize::new(previous.map_or(0, |p| f(p).load(Ordering::Relaxed)))
        };
        LiveInstances {
            service: service.to_string(),
            revision,
            rr_next: carry(|p| &p.rr_next),
            wrr_next: carry(|p| &p.wrr_next),
            all,
            serving,
            wrr,
            zones,
            ring,
        }
    }

    /// Chooses a serving instance by `balancer`; `None` if none is serving. Lock-free: at most
    /// one atomic increment or a binary search.
    pub fn pick(&self, balancer: &Balancer<'_>) -> Option<&Arc<Instance>> {
        let n = self.serving.len();
        if n == 0 {
            return None;
        }
        let index = match *balancer {
            Balancer::RoundRobin => self.rr_next.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Random => random_below(n),
            Balancer::WeightedRoundRobin => self.weighted(),
            Balancer::ZoneAffinity(zone) => match self.zone(zone) {
                Some(group) => {
                    let k = group.next.fetch_add(1, Ordering::Relaxed) % group.wrr.len();
                    group.wrr[k] as usize
                }
                None => self.weighted(),
            },
            Balancer::ConsistentHash(key) => ring_lookup(&self.ring, key)? as usize,
        };
        self.serving.get(index)
    }

    fn zone(&self, zone: &str) -> Option<&ZoneGroup> {
        self.zones
            .binary_search_by(|(name, _)| name.as_str().cmp(zone))
            .ok()
            .map(|k| &self.zones[k].1)
    }

    fn weighted(&self) -> usize {
        let k = self.wrr_next.fetch_add(1, Ordering::Relaxed) % self.wrr.len();
        self.wrr[k] as usize
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The etcd revision this view reflects (`0` for a view built by hand).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Every registered instance, serving or not, sorted by id (each id once).
    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.all
    }

    /// The instances that get traffic (healthy, weight > 0), sorted by id.
    pub fn serving(&self) -> &[Arc<Instance>] {
        &self.serving
    }

    /// The instance with this id, serving or not.
    pub fn get(&self, id: &str) -> Option<&Arc<Instance>> {
        self.all
            .binary_search_by(|i| i.id().cmp(id))
            .ok()
            .map(|k| &self.all[k])
    }

    /// `true` if an instance with this id is registered (serving or not).
    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The number of registered instances (serving or not).
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// `true` if no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A service's instances, kept current by a background watch, with lock-free
/// [`pick`](Self::pick)s. From [`Registry::live`]. Cheap to clone; the watch stops when the
/// last clone (and the last [`LiveUpdates`]) is dropped.
///
/// The view follows every change in revision order (one new [`LiveInstances`] per etcd watch
/// response), heals like [`RegistryWatch`](crate::registry::RegistryWatch) (re-opens after etcd
/// restarts, re-reads after compaction) and keeps serving the last known instances while etcd
/// is unreachable. It never shows an id twice and drops an instance as soon as its key is
/// deleted or its lease expires.
///
/// Read it with [`current`](Self::current) and [`pick`](Self::pick); wait for a condition with
/// [`wait_for`](Self::wait_for); follow each new view with [`updates`](Self::updates).
#[derive(Clone)]
pub struct LiveSet {
    inner: Arc<LiveInner>,
}

struct LiveInner {
    current: Arc<ArcSwap<LiveInstances>>,
    /// The same views as `current`, for waiting; the sender is gone for a fixed view.
    changes: watch::Receiver<Arc<LiveInstances>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for LiveInner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl fmt::Debug for LiveSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LiveSet")
            .field(&**self.inner.current.load())
            .finish()
    }
}

impl LiveSet {
    /// A fixed view of `instances` that never changes (for static endpoint lists and tests).
    /// Revisions are `0`; [`wait_for`](Self::wait_for) fails unless the condition already
    /// holds, and [`updates`](Self::updates) ends at once.
    pub fn from_instances(
        service: impl Into<String>,
        instances: impl IntoIterator<Item = Instance>,
    ) -> Self {
        let service = service.into();
        let view = Arc::new(LiveInstances::build(
            &service,
            0,
            instances.into_iter().map(Arc::new),
            None,
        ));
        let (_tx, changes) = watch::channel(Arc::clone(&view));
        LiveSet {
            inner: Arc::new(LiveInner {
                current: Arc::new(ArcSwap::new(view)),
                changes,
                task: None,
            }),
        }
    }

    /// Chooses a serving instance by `balancer` from the current view; `None` if none is
    /// serving. Lock-free and allocation-free: an `ArcSwap` load, at most one atomic increment
    /// or a binary search, and an `Arc` clone.
    pub fn pick(&self, balancer: &Balancer<'_>) -> Option<Arc<Instance>> {
        self.inner.current.load().pick(balancer).cloned()
    }

    /// The current view (every instance with its health, the serving ones, the revision).
    pub fn current(&self) -> Arc<LiveInstances> {
        self.inner.current.load_full()
    }

    /// The etcd revision of the current view.
    pub fn revision(&self) -> i64 {
        self.inner.current.load().revision()
    }

    /// Waits until `condition` holds for the current view and returns that view (at once if
    /// it already holds).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] if the view can no longer change (a fixed view, or the runtime is
    /// shutting down) and the condition does not hold.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes the view.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&LiveInstances) -> bool,
    ) -> Result<Arc<LiveInstances>> {
        let mut changes = self.inner.changes.clone();
        let result = changes.wait_for(|view| condition(view)).await;
        match result {
            Ok(view) => Ok(Arc::clone(&view)),
            Err(_) => Err(Error::new(
                ErrorKind::Closed,
                format!(
                    "live view of `{}` no longer changes and the condition does not hold",
                    self.current().service()
                ),
            )),
        }
    }

    /// The views that follow this call, one [`LiveUpdates::next`] at a time (or, with the
    /// `stream` feature, as a `futures_core::Stream`). The updates keep the view's watch
    /// running while they live.
    pub fn updates(&self) -> LiveUpdates {
        let mut changes = self.inner.changes.clone();
        changes.borrow_and_update();
        LiveUpdates {
            _set: self.clone(),
            changes: Changes::new(changes),
        }
    }
}

/// The views a [`LiveSet`] moves to, from [`LiveSet::updates`].
///
/// [`next`](Self::next) returns the view after the next change (after the last view it
/// returned, or after `updates()` was called). Views produced faster than they are read
/// coalesce: `next` returns the latest, so a slow reader skips views but never falls behind.
/// With the `stream` feature it is also a `futures_core::Stream` of `Arc<LiveInstances>`.
#[derive(Debug)]
pub struct LiveUpdates {
    /// Keeps the watch task running.
    _set: LiveSet,
    changes: Changes<Arc<LiveInstances>>,
}

impl LiveUpdates {
    /// Waits for the next change of the view and returns the view after it; `None` if the view
    /// can no longer change (a fixed view from [`LiveSet::from_instances`], or the runtime is
    /// shutting down).
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped call loses no change; the next call returns it.
    pub async fn next(&mut self) -> Option<Arc<LiveInstances>> {
        self.changes.next().await
    }
}

#[cfg(feature = "stream")]
impl futures_core::Stream for LiveUpdates {
    type Item = Arc<LiveInstances>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Arc<LiveInstances>>> {
        self.get_mut().changes.poll_next(cx)
    }
}

impl Registry {
    /// A live, load-balanced view of `service`: reads every instance now (linearizable, at one
    /// revision), then follows the watch from that revision + 1 in the background.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty service name or one containing `/`; the etcd
    /// error kinds if the first read fails (later failures are healed in the background).
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is started until the first read succeeded.
    pub async fn live(&self, service: &str) -> Result<LiveSet> {
        validate_segment("service name", service)?;
        let mut follower = Follower::new(self, service);
        follower.resync().await?;
        let first = LiveInstances::build(
            service,
            follower.revision,
            follower.instances.values().cloned(),
            None,
        );
        let gauges = InstanceGauges::new(service);
        gauges.set(&first);
        let first = Arc::new(first);
        let current = Arc::new(ArcSwap::new(Arc::clone(&first)));
        let (tx, changes) = watch::channel(first);
        let task = tokio::spawn({
            let current = Arc::clone(&current);
            let service = service.to_string();
            async move {
                loop {
                    let batch = follower.next_batch().await;
                    let next = {
                        let previous = current.load();
                        LiveInstances::build(
                            &service,
                            follower.revision,
                            follower.instances.values().cloned(),
                            Some(&previous),
                        )
                    };
                    tracing::debug!(
                        service = %service,
                        revision = next.revision(),
                        changes = batch.len(),
                        instances = next.len(),
                        serving = next.serving().len(),
                        "live view updated"
                    );
                    gauges.set(&next);
                    let next = Arc::new(next);
                    current.store(Arc::clone(&next));
                    tx.send_replace(next);
                }
            }
        });
        Ok(LiveSet {
            inner: Arc::new(LiveInner {
                current,
                changes,
                task: Some(task),
            }),
        })
    }
}

/// `coordination_registry_instances{service, health}` of one live view: every health is
/// reported, at 0 when no instance has it, so an alert on "no healthy instance" sees the zero.
struct InstanceGauges {
    healthy: metrics::Gauge,
    unhealthy: metrics::Gauge,
    draining: metrics::Gauge,
}

impl InstanceGauges {
    fn new(service: &str) -> Self {
        let gauge = |health: &'static str| {
            metrics::gauge!(
                crate::telemetry::REGISTRY_INSTANCES,
                "service" => service.to_string(),
                "health" => health
            )
        };
        InstanceGauges {
            healthy: gauge("healthy"),
            unhealthy: gauge("unhealthy"),
            draining: gauge("draining"),
        }
    }

    fn set(&self, view: &LiveInstances) {
        let count = |health: super::instance::Health| {
            view.instances()
                .iter()
                .filter(|i| i.health == health)
                .count() as f64
        };
        self.healthy.set(count(super::instance::Health::Healthy));
        self.unhealthy
            .set(count(super::instance::Health::Unhealthy));
        self.draining.set(count(super::instance::Health::Draining));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Health, InstanceSpec};

    fn inst(id: &str, weight: u32, zone: Option<&str>, health: Health) -> Instance {
        let mut spec = InstanceSpec::new("svc", id, format!("{id}:1")).with_weight(weight);
        spec.zone = zone.map(str::to_string);
        Instance::new(spec, health)
    }

    #[test]
    fn picks_only_serving_instances() {
        let set = LiveSet::from_instances(
            "svc",
            [
                inst("a", 100, None, Health::Healthy),
                inst("b", 0, None, Health::Healthy),
                inst("c", 100, None, Health::Draining),
                inst("d", 100, None, Health::Unhealthy),
            ],
        );
        for balancer in [
            Balancer::RoundRobin,
            Balancer::Random,
            Balancer::WeightedRoundRobin,
            Balancer::ZoneAffinity("x"),
            Balancer::ConsistentHash(b"k"),
        ] {
            for _ in 0..20 {
                assert_eq!(set.pick(&balancer).unwrap().id(), "a");
            }
        }
        assert_eq!(set.current().len(), 4);
        assert_eq!(set.current().serving().len(), 1);
    }

    #[test]
    fn empty_view_picks_nothing() {
        let set = LiveSet::from_instances("svc", [inst("a", 100, None, Health::Draining)]);
        assert!(set.pick(&Balancer::RoundRobin).is_none());
        assert!(set.pick(&Balancer::ConsistentHash(b"x")).is_none());
    }

    #[test]
    fn zone_affinity_prefers_the_zone_and_falls_back() {
        let set = LiveSet::from_instances(
            "svc",
            [
                inst("a", 100, Some("z1"), Health::Healthy),
                inst("b", 100, Some("z2"), Health::Healthy),
                inst("c", 300, Some("z2"), Health::Healthy),
                inst("d", 100, Some("z3"), Health::Draining),
            ],
        );
        for _ in 0..10 {
            assert_eq!(set.pick(&Balancer::ZoneAffinity("z1")).unwrap().id(), "a");
        }
        let mut c = 0;
        for _ in 0..400 {
            let id = set
                .pick(&Balancer::ZoneAffinity("z2"))
                .unwrap()
                .id()
                .to_string();
            assert!(id == "b" || id == "c");
            c += usize::from(id == "c");
        }
        assert_eq!(c, 300);
        // z3 has only a draining instance: fall back to all serving, weighted.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            seen.insert(
                set.pick(&Balancer::ZoneAffinity("z3"))
                    .unwrap()
                    .id()
                    .to_string(),
            );
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn duplicate_ids_are_kept_once() {
        let set = LiveSet::from_instances(
            "svc",
            [
                inst("a", 100, None, Health::Healthy),
                inst("a", 100, None, Health::Healthy),
            ],
        );
        assert_eq!(set.current().len(), 1);
    }
}
