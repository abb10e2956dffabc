//! Lock benchmark: prints one table from one run.
//!
//! 1. Uncontended acquire + release latency (p50/p99), interleaved in rounds against the same
//!    etcd, next to the raw etcd Lock + Unlock RPCs:
//!    - `session.lock(..)` (lease shared by the session: one txn + one delete) vs the Lock RPC
//!      on the same kind of kept-alive lease (target: ≤ 1.1x);
//!    - `coord.lock(..)` (a lease of its own per acquisition: grant + txn + revoke) vs the Lock
//!      RPC with lease 0 (the server grants an unkept 60 s lease, left behind after Unlock)
//!      and vs grant + Lock + Unlock + revoke by hand.
//! 2. Contended throughput: 4 tasks, each with its own connection and session, acquiring and
//!    releasing one lock for a fixed time; ours vs the raw Lock/Unlock RPCs.
//!
//! Run with `cargo bench --bench lock`. It starts its own etcd on a free loopback port
//! (`LOCK_BENCH_ITERS` sets the samples per case, default 2000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordination::lock::SessionOptions;
use coordination::Coordinator;
use etcd_client::{Client, LockOptions};

const ROUND: usize = 100;
const CONTENDED_FOR: Duration = Duration::from_secs(4);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

type Case = (&'static str, Box<dyn FnMut() -> BoxFuture>);
type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

async fn run() {
    let iters: usize = std::env::var("LOCK_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let etcd = support::Etcd::start().await;
    let coord = etcd.coordinator().await;
    let session = coord
        .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let raw = coord.client();
    let raw_lease = session.lease_id();

    let mut cases: Vec<Case> = vec![
        ("raw Lock+Unlock RPC, kept lease", {
            let raw = raw.clone();
            Box::new(move || Box::pin(raw_lock(raw.clone(), "bench/a", raw_lease)))
        }),
        ("session.lock: acquire+unlock", {
            let session = session.clone();
            Box::new(move || {
                let session = session.clone();
                Box::pin(async move {
                    let guard = session.lock("bench/b").await.unwrap();
                    guard.unlock().await.unwrap();
                })
            })
        }),
        ("raw Lock+Unlock RPC, lease 0 (unkept)", {
            let raw = raw.clone();
            Box::new(move || Box::pin(raw_lock(raw.clone(), "bench/c", 0)))
        }),
        ("raw grant+Lock+Unlock+revoke", {
            let raw = raw.clone();
            Box::new(move || Box::pin(raw_grant_lock(raw.clone(), "bench/d")))
        }),
        ("coord.lock (own lease): acquire+unlock", {
            let coord = coord.clone();
            Box::new(move || {
                let coord = coord.clone();
                Box::pin(async move {
                    let guard = coord.lock("bench/e").await.unwrap();
                    guard.unlock().await.unwrap();
                })
            })
        }),
    ];

    // Warm up every path, then interleave rounds so that noise hits all cases alike.
    for (_, case) in cases.iter_mut() {
        for _ in 0..50 {
            case().await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iters); cases.len()];
    for _ in 0..iters.div_ceil(ROUND) {
        for (i, (_, case)) in cases.iter_mut().enumerate() {
            for _ in 0..ROUND {
                let start = Instant::now();
                case().await;
                samples[i].push(start.elapsed());
            }
        }
    }
    let stats: Vec<(f64, f64)> = samples.iter_mut().map(|s| percentiles(s)).collect();

    println!();
    println!("uncontended acquire + release ({iters} samples each, ms)");
    println!(
        "| {:<42} | {:>7} | {:>7} | {:>10} | {:>10} |",
        "case", "p50", "p99", "p50 ratio", "p99 ratio"
    );
    println!(
        "|{:-<44}|{:->9}|{:->9}|{:->12}|{:->12}|",
        "", "", "", "", ""
    );
    let baseline = [0, 0, 2, 2, 2];
    for (i, (name, _)) in cases.iter().enumerate() {
        let (p50, p99) = stats[i];
        let (b50, b99) = stats[baseline[i]];
        let ratio = |a: f64, b: f64| {
            if i == baseline[i] {
                "baseline".to_string()
            } else {
                format!("{:.2}x", a / b)
            }
        };
        println!(
            "| {name:<42} | {p50:>7.3} | {p99:>7.3} | {:>10} | {:>10} |",
            ratio(p50, b50),
            ratio(p99, b99)
        );
    }
    println!("(ratios: session.lock vs the kept-lease RPC; the rest vs the lease-0 RPC)");

    println!();
    println!(
        "contended: 4 tasks, one lock, {} s each (own connection and session per task)",
        CONTENDED_FOR.as_secs()
    );
    let ours = contended(&etcd, false).await;
    let rpc = contended(&etcd, true).await;
    println!(
        "| {:<42} | {:>12} | {:>10} |",
        "case", "acquires/s", "ratio"
    );
    println!("|{:-<44}|{:->14}|{:->12}|", "", "", "");
    println!(
        "| {:<42} | {rpc:>12.0} | {:>10} |",
        "raw Lock+Unlock RPC, kept lease", "baseline"
    );
    println!(
        "| {:<42} | {ours:>12.0} | {:>9.2}x |",
        "session.lock: acquire+unlock",
        ours / rpc
    );
    drop(session);
}

async fn raw_lock(mut client: Client, name: &str, lease: i64) {
    let options = (lease != 0).then(|| LockOptions::new().with_lease(lease));
    let resp = client.lock(name, options).await.unwrap();
    client.unlock(resp.key()).await.unwrap();
}

async fn raw_grant_lock(mut client: Client, name: &str) {
    let lease = client.lease_grant(10, None).await.unwrap().id();
    raw_lock(client.clone(), name, lease).await;
    client.lease_revoke(lease).await.unwrap();
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99))
}

/// Acquisitions per second by 4 tasks on one lock name.
async fn contended(etcd: &support::Etcd, raw_rpc: bool) -> f64 {
    let name = if raw_rpc {
        "bench/contended-rpc"
    } else {
        "bench/contended"
    };
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let coord: Coordinator = etcd.coordinator().await;
        let session = coord
            .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(30)))
            .await
            .unwrap();
        let (stop, count) = (stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = coord.client();
            while !stop.load(Ordering::Relaxed) {
                if raw_rpc {
                    let options = LockOptions::new().with_lease(session.lease_id());
                    let resp = client.lock(name, Some(options)).await.unwrap();
                    client.unlock(resp.key()).await.unwrap();
                } else {
                    let guard = session.lock(name).await.unwrap();
                    guard.unlock().await.unwrap();
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(CONTENDED_FOR).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for task in tasks {
        task.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}
