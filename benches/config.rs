//! Config benchmark: prints one table from one run.
//!
//! 1. Read cost: `cfg.load()` field read vs raw `ArcSwap::load` vs `RwLock<Arc<T>>` read+clone,
//!    with 1 and 2 reader threads while a writer replaces the value every 1 ms (for `cfg`, the
//!    writer is a real etcd put every 1 ms, so every reload goes through the watch).
//! 2. Reload latency: put → new snapshot visible (via `subscribe()`), next to raw etcd
//!    put → watch event, interleaved in the same run against the same etcd.
//!
//! Run with `cargo bench --bench config`. It starts its own etcd on a free loopback port.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/config")]
struct BenchConfig {
    port: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    limits: Limits,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
struct Limits {
    #[serde(default)]
    max_conns: u32,
    #[serde(default)]
    timeout_ms: u32,
}

fn value(port: u64) -> BenchConfig {
    BenchConfig {
        port,
        name: "bench".into(),
        limits: Limits::default(),
    }
}

const READS: u64 = 5_000_000;
const ROUNDS: usize = 7;

/// ns per read for `readers` threads each doing READS reads of `read()`.
fn per_read(readers: usize, read: impl Fn() -> u64 + Sync) -> f64 {
    per_read_with(readers, || &read)
}

/// Like `per_read`, with per-thread reader state made by `make` on each thread.
fn per_read_with<F: FnMut() -> u64>(readers: usize, make: impl Fn() -> F + Sync) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..readers {
            s.spawn(|| {
                let mut read = make();
                let mut acc = 0u64;
                for _ in 0..READS {
                    acc = acc.wrapping_add(read());
                }
                black_box(acc);
            });
        }
    });
    start.elapsed().as_nanos() as f64 / READS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut etcd = rt.block_on(support::Etcd::start());
    let mut client = rt.block_on(etcd.client());
    rt.block_on(client.put("/bench/config/port", "1", None))
        .unwrap();
    let coord = rt.block_on(etcd.coordinator());
    // The reload path alone (no history recorder), and a second handle with the default
    // history recording on, to show what recording each revision costs.
    let cfg: ConfigHandle<BenchConfig> = rt
        .block_on(
            coord.config_with(
                ConfigOptions::new()
                    .without_file()
                    .without_env()
                    .without_history(),
            ),
        )
        .unwrap();
    rt.block_on(client.put("/bench/hist/port", "1", None))
        .unwrap();
    let cfg_hist: ConfigHandle<BenchConfig> = rt
        .block_on(
            coord.config_with(
                ConfigOptions::new()
                    .with_prefix("/bench/hist")
                    .without_file()
                    .without_env(),
            ),
        )
        .unwrap();

    println!(
        "machine: {} CPUs ({}), one run",
        num_cpus(),
        std::env::consts::ARCH
    );
    println!();
    println!("## Read cost (ns per read; median of {ROUNDS} rounds of {READS} reads per thread)");
    println!();
    println!("| readers | writer every 1 ms | cfg.load().port | ArcSwap::load | cfg.local_cache().load() | RwLock<Arc<T>> read+clone | cfg / ArcSwap |");
    println!("|---|---|---|---|---|---|---|");
    for readers in [1usize, 2] {
        let raw = Arc::new(ArcSwap::from_pointee(value(1)));
        let locked = Arc::new(RwLock::new(Arc::new(value(1))));
        let stop = Arc::new(AtomicBool::new(false));
        // Writers: raw and locked are replaced in-process; cfg through etcd puts.
        let writer = {
            let (raw, locked, stop) = (Arc::clone(&raw), Arc::clone(&locked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 2;
                while !stop.load(Ordering::Relaxed) {
                    raw.store(Arc::new(value(i)));
                    *locked.write().unwrap() = Arc::new(value(i));
                    i += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let etcd_writer = {
            let stop = Arc::clone(&stop);
            let mut client = client.clone();
            rt.spawn(async move {
                let mut i = 2u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.put("/bench/config/port", i.to_string(), None).await;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let (mut c, mut a, mut k, mut l) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            c.push(per_read(readers, || cfg.load().port));
            a.push(per_read(readers, || raw.load().port));
            k.push(per_read_with(readers, || {
                let mut cache = cfg.local_cache();
                move || cache.load().port
            }));
            l.push(per_read(readers, || {
                let snap = Arc::clone(&locked.read().unwrap());
                snap.port
            }));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        rt.block_on(etcd_writer).unwrap();
        let (c, a, k, l) = (median(c), median(a), median(k), median(l));
        println!(
            "| {readers} | yes | {c:.2} | {a:.2} | {k:.2} | {l:.2} | {:.2}x |",
            c / a
        );
    }

    // Reload latency.
    const PUTS: usize = 400;
    let (mut raw_lat, mut cfg_lat, mut hist_lat) = (
        Vec::with_capacity(PUTS),
        Vec::with_capacity(PUTS),
        Vec::with_capacity(PUTS),
    );
    rt.block_on(async {
        let mut watch = client
            .watch(
                "/bench/raw/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        // Skip the `created` response.
        watch.message().await.unwrap();
        let mut sub = cfg.subscribe();
        let mut sub_hist = cfg_hist.subscribe();
        // Drain events left from the read benchmark.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while sub.try_next().is_some() {}
        let base = cfg.load().port + 1_000_000;
        for i in 0..PUTS as u64 {
            // Rotate the order so no path always follows another's write (or the recorder's).
            for path in [0, 1, 2].map(|k| (k + i) % 3) {
                let t0 = Instant::now();
                match path {
                    0 => {
                        // Raw: put, then wait for the watch event.
                        client
                            .put("/bench/raw/port", i.to_string(), None)
                            .await
                            .unwrap();
                        loop {
                            let resp = watch.message().await.unwrap().unwrap();
                            if !resp.events().is_empty() {
                                break;
                            }
                        }
                        raw_lat.push(t0.elapsed());
                    }
                    _ => {
                        // Config: put, then wait for the snapshot carrying it.
                        let (key, want, sub) = if path == 1 {
                            ("/bench/config/port", base + i, &mut sub)
                        } else {
                            ("/bench/hist/port", 1_000 + i, &mut sub_hist)
                        };
                        client.put(key, want.to_string(), None).await.unwrap();
                        loop {
                            match sub.next().await {
                                Some(ConfigEvent::Applied(s)) if s.port == want => break,
                                Some(_) => continue,
                                None => panic!("subscription closed"),
                            }
                        }
                        if path == 1 {
                            cfg_lat.push(t0.elapsed());
                        } else {
                            hist_lat.push(t0.elapsed());
                        }
                    }
                }
                // Let background writes (the history recorder's) settle between samples.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    raw_lat.sort();
    cfg_lat.sort();
    hist_lat.sort();
    let (h50, h99) = (percentile(&hist_lat, 0.50), percentile(&hist_lat, 0.99));
    let (r50, r99) = (percentile(&raw_lat, 0.50), percentile(&raw_lat, 0.99));
    let (c50, c99) = (percentile(&cfg_lat, 0.50), percentile(&cfg_lat, 0.99));
    println!();
    println!("## Reload latency ({PUTS} puts each, interleaved; µs; each put waits for its event)");
    println!();
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| raw etcd put → watch event | {:.0} | {:.0} |",
        us(r50),
        us(r99)
    );
    println!(
        "| put → new snapshot visible, history off | {:.0} | {:.0} |",
        us(c50),
        us(c99)
    );
    println!(
        "| difference (target: p50 ≤ +50, p99 ≤ +200) | {:+.0} | {:+.0} |",
        us(c50) - us(r50),
        us(c99) - us(r99)
    );
    println!(
        "| ratio | {:.2}x | {:.2}x |",
        us(c50) / us(r50),
        us(c99) / us(r99)
    );
    println!(
        "| put → new snapshot visible, history on (default) | {:.0} ({:.2}x) | {:.0} ({:.2}x) |",
        us(h50),
        us(h50) / us(r50),
        us(h99),
        us(h99) / us(r99)
    );

    // load() while etcd is killed and restarted: what a request path sees during an outage.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let cfg = cfg.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut samples = Vec::with_capacity(1 << 20);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                black_box(cfg.load().port);
                let took = t.elapsed();
                // Keep every 64th sample and every slow one.
                if n % 64 == 0 || took > Duration::from_micros(100) {
                    samples.push(took);
                }
                n += 1;
            }
            (n, samples)
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        etcd.kill();
        std::thread::sleep(Duration::from_millis(300));
        rt.block_on(etcd.restart());
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, mut samples) = reader.join().unwrap();
    samples.sort();
    let over_1ms = samples
        .iter()
        .filter(|d| **d > Duration::from_millis(1))
        .count();
    println!();
    println!("## load() while etcd is killed and restarted 5 times ({reads} reads)");
    println!();
    println!("| p50 | p99.99 (of sampled) | max | reads over 1 ms |");
    println!("|---|---|---|---|");
    println!(
        "| {:.0} ns | {:.0} ns | {:.0} µs | {over_1ms} |",
        percentile(&samples, 0.5).as_nanos(),
        percentile(&samples, 0.9999).as_nanos(),
        us(*samples.last().unwrap())
    );
    drop(cfg_hist);
    drop(cfg);
    drop(etcd);
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
