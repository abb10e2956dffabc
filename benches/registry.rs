//! Registry benchmark: prints one table from one run.
//!
//! 1. `LiveSet::pick()` cost per balancer, with 1 and 2 threads picking from one shared live
//!    view (10 instances registered in a real etcd, 3 zones, mixed weights). Each thread does
//!    ROUNDS batches of PICKS picks; p50/p99 are over the per-batch ns/op.
//! 2. Latency: register (lease grant + txn) → the instance visible in a live view, and
//!    deregister → gone from it, next to raw etcd put → watch event, interleaved in the same run
//!    against the same etcd.
//!
//! Run with `cargo bench --bench registry`. It starts its own etcd on a free loopback port.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use coordination::registry::{Balancer, InstanceSpec, LiveSet, Registration};
use etcd_client::{EventType, WatchOptions};

const PICKS: usize = 100_000;
const ROUNDS: usize = 40;
const LATENCY_SAMPLES: usize = 300;

fn percentile<T: Copy + PartialOrd>(values: &mut [T], p: f64) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let k = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[k]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Per-batch ns/op of `threads` threads each picking ROUNDS × PICKS times with `balancer`.
fn pick_cost(set: &LiveSet, threads: usize, balancer: Balancer<'_>, keys: &[Vec<u8>]) -> Vec<f64> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut costs = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        let start = Instant::now();
                        let mut acc = 0usize;
                        for i in 0..PICKS {
                            let b = match balancer {
                                Balancer::ConsistentHash(_) => {
                                    Balancer::ConsistentHash(&keys[i % keys.len()])
                                }
                                other => other,
                            };
                            acc = acc.wrapping_add(set.pick(&b).map_or(0, |x| x.weight() as usize));
                        }
                        black_box(acc);
                        costs.push(start.elapsed().as_nanos() as f64 / PICKS as f64);
                    }
                    costs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

struct Row {
    what: String,
    unit: &'static str,
    p50: f64,
    p99: f64,
    ratio: String,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        let etcd = support::Etcd::start().await;
        let coord = etcd.coordinator().await;
        let registry = coord.registry();

        // ---- 1. pick() cost ----
        let mut pool: Vec<Registration> = Vec::new();
        for i in 0..10u32 {
            let spec = InstanceSpec::new("pool", format!("node-{i}"), format!("10.0.0.{i}:50051"))
                .with_weight(100 * (1 + i % 3))
                .with_zone(format!("z{}", i % 3));
            pool.push(
                registry
                    .register(spec)
                    .with_lease_ttl(Duration::from_secs(30))
                    .await
                    .unwrap(),
            );
        }
        let set = registry.live("pool").await.unwrap();
        set.wait_for(|s| s.serving().len() == 10).await.unwrap();
        let keys: Vec<Vec<u8>> = (0..1024)
            .map(|k| format!("user-{k}").into_bytes())
            .collect();
        let balancers = [
            ("RoundRobin", Balancer::RoundRobin),
            ("Random", Balancer::Random),
            ("WeightedRoundRobin", Balancer::WeightedRoundRobin),
            ("ZoneAffinity(z1)", Balancer::ZoneAffinity("z1")),
            ("ConsistentHash(key)", Balancer::ConsistentHash(b"")),
        ];
        let pick_rows = tokio::task::block_in_place(|| {
            let mut out = Vec::new();
            for (name, balancer) in balancers {
                let mut one = pick_cost(&set, 1, balancer, &keys);
                let mut two = pick_cost(&set, 2, balancer, &keys);
                let p50_one = percentile(&mut one, 0.5);
                let p50_two = percentile(&mut two, 0.5);
                out.push(Row {
                    what: format!("pick {name}, 1 thread"),
                    unit: "ns/op",
                    p50: p50_one,
                    p99: percentile(&mut one, 0.99),
                    ratio: "1.00".into(),
                });
                out.push(Row {
                    what: format!("pick {name}, 2 threads"),
                    unit: "ns/op",
                    p50: p50_two,
                    p99: percentile(&mut two, 0.99),
                    ratio: format!("{:.2}", p50_two / p50_one),
                });
            }
            out
        });
        rows.extend(pick_rows);
        drop(set);
        drop(pool);

        // ---- 2. latency, interleaved ----
        let live = registry.live("lat").await.unwrap();
        let mut raw = etcd.client().await;
        let mut stream = raw
            .watch("/bench/raw/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let mut put_watch = Vec::new();
        let mut register_only = Vec::new();
        let mut register_visible = Vec::new();
        let mut deregister_gone = Vec::new();
        for i in 0..LATENCY_SAMPLES + 20 {
            let warm = i < 20;
            // raw put -> watch event
            let key = format!("/bench/raw/{}", i % 16);
            let start = Instant::now();
            raw.put(key.as_str(), format!("v{i}"), None).await.unwrap();
            loop {
                let resp = stream.message().await.unwrap().unwrap();
                if resp.events().iter().any(|e| {
                    e.event_type() == EventType::Put && e.kv().unwrap().key() == key.as_bytes()
                }) {
                    break;
                }
            }
            let d_put = start.elapsed();

            // register -> visible in the live view
            let id = format!("lat-{i}");
            let start = Instant::now();
            let reg = registry
                .register(InstanceSpec::new("lat", id.as_str(), "10.0.0.1:1"))
                .with_lease_ttl(Duration::from_secs(10))
                .await
                .unwrap();
            let d_reg = start.elapsed();
            live.wait_for(|s| s.contains(&id)).await.unwrap();
            let d_vis = start.elapsed();

            // deregister -> gone from the live view
            let start = Instant::now();
            reg.deregister().await.unwrap();
            live.wait_for(|s| !s.contains(&id)).await.unwrap();
            let d_gone = start.elapsed();
            if !warm {
                put_watch.push(ms(d_put));
                register_only.push(ms(d_reg));
                register_visible.push(ms(d_vis));
                deregister_gone.push(ms(d_gone));
            }
        }
        let base = percentile(&mut put_watch, 0.5);
        for (what, samples) in [
            ("raw put -> watch event", &mut put_watch),
            ("register() returns (lease grant + txn)", &mut register_only),
            ("register -> visible in live view", &mut register_visible),
            ("deregister -> gone from live view", &mut deregister_gone),
        ] {
            let p50 = percentile(samples, 0.5);
            rows.push(Row {
                what: what.into(),
                unit: "ms",
                p50,
                p99: percentile(samples, 0.99),
                ratio: format!("{:.2}", p50 / base),
            });
        }
    });

    println!();
    println!(
        "registry benchmark ({} picks x {} rounds per thread; {} latency samples; {} CPUs)",
        PICKS,
        ROUNDS,
        LATENCY_SAMPLES,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "ratio: pick rows = 2-thread p50 / 1-thread p50; latency rows = p50 / raw put->watch p50"
    );
    println!();
    println!("| measurement | unit | p50 | p99 | ratio |");
    println!("|---|---|---:|---:|---:|");
    for row in rows {
        let (p50, p99) = if row.unit == "ms" {
            (format!("{:.2}", row.p50), format!("{:.2}", row.p99))
        } else {
            (format!("{:.1}", row.p50), format!("{:.1}", row.p99))
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.what, row.unit, p50, p99, row.ratio
        );
    }
}
