//! Load balancing over a live view fed by real etcd: weighted shares, exact round robin,
//! random, zone affinity with fallback, and consistent hashing's bounded movement.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use coordination::registry::{Balancer, Health, InstanceSpec, LiveSet, Registration, Registry};
use support::{init_tracing, Etcd};

const PICKS: usize = 10_000;
const TTL: Duration = Duration::from_secs(5);

async fn register(
    registry: &Registry,
    service: &str,
    id: &str,
    weight: u32,
    zone: &str,
) -> Registration {
    registry
        .register(
            InstanceSpec::new(service, id, format!("{id}.local:50051"))
                .with_weight(weight)
                .with_zone(zone),
        )
        .with_lease_ttl(TTL)
        .await
        .expect("register")
}

async fn wait_len(set: &LiveSet, instances: usize, serving: usize) {
    tokio::time::timeout(
        Duration::from_secs(10),
        set.wait_for(|s| s.len() == instances && s.serving().len() == serving),
    )
    .await
    .expect("the live view follows within 10 s")
    .unwrap();
}

fn counts(set: &LiveSet, balancer: Balancer<'_>, picks: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..picks {
        let instance = set.pick(&balancer).expect("a serving instance");
        *counts.entry(instance.id().to_string()).or_default() += 1;
    }
    counts
}

#[track_caller]
fn assert_share(counts: &HashMap<String, usize>, id: &str, expected: f64) {
    let total: usize = counts.values().sum();
    let share = counts.get(id).copied().unwrap_or(0) as f64 / total as f64;
    assert!(
        (share - expected).abs() <= 0.03,
        "{id}: share {share:.4}, expected {expected:.4} ± 0.03 ({counts:?})"
    );
}

#[tokio::test]
async fn balancers_respect_weights_health_and_zones() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let a = register(&registry, "pool", "a", 100, "z1").await;
    let _b = register(&registry, "pool", "b", 300, "z1").await;
    let _c = register(&registry, "pool", "c", 600, "z2").await;
    let _zero = register(&registry, "pool", "zero", 0, "z1").await;
    let drain = register(&registry, "pool", "drain", 100, "z3").await;
    drain.set_health(Health::Draining).await.unwrap();
    let set = registry.live("pool").await.unwrap();
    wait_len(&set, 5, 3).await;

    // Smooth weighted round robin: shares follow the weights; weight 0 and draining get nothing.
    let weighted = counts(&set, Balancer::WeightedRoundRobin, PICKS);
    assert_share(&weighted, "a", 0.1);
    assert_share(&weighted, "b", 0.3);
    assert_share(&weighted, "c", 0.6);
    assert!(!weighted.contains_key("zero") && !weighted.contains_key("drain"));

    // Round robin: exact, in a fixed cycle.
    let sequence: Vec<String> = (0..9_999)
        .map(|_| set.pick(&Balancer::RoundRobin).unwrap().id().to_string())
        .collect();
    let mut rr: HashMap<&str, usize> = HashMap::new();
    for id in &sequence {
        *rr.entry(id).or_default() += 1;
    }
    assert_eq!(rr.len(), 3, "{rr:?}");
    assert!(rr.values().all(|&n| n == 3_333), "{rr:?}");
    assert!(sequence
        .windows(4)
        .all(|w| w[0] == w[3] && w[0] != w[1] && w[1] != w[2] && w[0] != w[2]));

    // Random: uniform over the serving instances.
    let random = counts(&set, Balancer::Random, PICKS);
    for id in ["a", "b", "c"] {
        assert_share(&random, id, 1.0 / 3.0);
    }
    assert_eq!(random.len(), 3);

    // Zone affinity: weighted inside the zone; a zone with nothing serving falls back to all.
    let z1 = counts(&set, Balancer::ZoneAffinity("z1"), PICKS);
    assert_eq!(z1.len(), 2, "{z1:?}");
    assert_share(&z1, "a", 0.25);
    assert_share(&z1, "b", 0.75);
    let z2 = counts(&set, Balancer::ZoneAffinity("z2"), 100);
    assert_eq!(z2.get("c"), Some(&100));
    for zone in ["z3", "nowhere"] {
        let fallback = counts(&set, Balancer::ZoneAffinity(zone), PICKS);
        assert_share(&fallback, "a", 0.1);
        assert_share(&fallback, "c", 0.6);
    }

    // A weight change reaches the view and the shares follow.
    a.set_weight(600).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        set.wait_for(|s| s.get("a").is_some_and(|i| i.weight() == 600)),
    )
    .await
    .unwrap()
    .unwrap();
    let weighted = counts(&set, Balancer::WeightedRoundRobin, PICKS);
    assert_share(&weighted, "a", 600.0 / 1500.0);
    assert_share(&weighted, "b", 300.0 / 1500.0);
    assert_share(&weighted, "c", 600.0 / 1500.0);

    // Draining takes an instance out of every policy; healthy brings it back.
    a.set_health(Health::Draining).await.unwrap();
    wait_len(&set, 5, 2).await;
    for balancer in [
        Balancer::RoundRobin,
        Balancer::Random,
        Balancer::WeightedRoundRobin,
        Balancer::ZoneAffinity("z1"),
        Balancer::ConsistentHash(b"user-1"),
    ] {
        assert!(
            !counts(&set, balancer, 200).contains_key("a"),
            "{balancer:?}"
        );
    }
}

fn owners(set: &LiveSet, keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| {
            let key = format!("user-{k}");
            set.pick(&Balancer::ConsistentHash(key.as_bytes()))
                .unwrap()
                .id()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn consistent_hashing_moves_few_keys_when_an_instance_leaves_or_joins() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let n = 10;
    let mut registrations = Vec::new();
    for i in 0..n {
        registrations.push(register(&registry, "ring", &format!("node-{i}"), 100, "z").await);
    }
    let set = registry.live("ring").await.unwrap();
    wait_len(&set, n, n).await;
    let before = owners(&set, PICKS);
    let mut load: HashMap<&str, usize> = HashMap::new();
    for owner in &before {
        *load.entry(owner).or_default() += 1;
    }
    assert_eq!(load.len(), n, "every node owns keys");

    // Every client maps a key to the same instance.
    let other = etcd
        .coordinator()
        .await
        .registry()
        .live("ring")
        .await
        .unwrap();
    assert_eq!(owners(&other, PICKS), before);

    // One of n leaves: only its keys move, at most 1/n + 5% of all.
    let leaving = registrations.remove(3);
    leaving.deregister().await.unwrap();
    wait_len(&set, n - 1, n - 1).await;
    let after = owners(&set, PICKS);
    let moved: Vec<usize> = (0..PICKS).filter(|&k| before[k] != after[k]).collect();
    assert!(
        moved.iter().all(|&k| before[k] == "node-3"),
        "only the departed node's keys move"
    );
    let bound = PICKS as f64 * (1.0 / n as f64 + 0.05);
    assert!(
        moved.len() as f64 <= bound,
        "moved {} of {PICKS} keys (bound {bound})",
        moved.len()
    );

    // One joins: at most 1/(n) + 5% move, all of them to the newcomer.
    let _joined = register(&registry, "ring", "node-new", 100, "z").await;
    wait_len(&set, n, n).await;
    let joined = owners(&set, PICKS);
    let moved: Vec<usize> = (0..PICKS).filter(|&k| after[k] != joined[k]).collect();
    assert!(
        moved.iter().all(|&k| joined[k] == "node-new"),
        "only keys to the newcomer move"
    );
    let bound = PICKS as f64 * (1.0 / n as f64 + 0.05);
    assert!(
        moved.len() as f64 <= bound,
        "moved {} of {PICKS} keys (bound {bound})",
        moved.len()
    );
}
