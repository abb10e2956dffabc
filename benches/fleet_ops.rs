//! Fleet operations benchmark: prints one table from one run, with raw etcd baselines measured
//! in the same run against the same etcd.
//!
//! 1. Receipt writes: etcd puts under the receipts prefix per processed revision per instance,
//!    counted by a raw watch, for 20 instances: revisions 100 ms apart (wider than the 20 ms
//!    coalescing window) and a burst of revisions back to back.
//! 2. `config wait` for 100 instances: put → every receipt shows the revision
//!    ([`Fleet::wait`]), p50/p99, next to put → watch event with one raw watcher.
//! 3. Rollout controller overhead per step: a rollout of 3 steps (1, 50%, 100%) with no bake
//!    over the 100 instances, controller tick 10 ms: time per step, next to `config wait` (the
//!    propagation a step needs anyway).
//!
//! Run with `cargo bench --bench fleet_ops`. It starts its own etcd on a free loopback port.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use coordination::fleet::{DriveOptions, Fleet, ReceiptOptions, RolloutPlan, Step};
use coordination::history::ConfigHistory;
use coordination::{ConfigHandle, ConfigOptions, CoordConfig, Coordinator};
use etcd_client::{EventType, WatchOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const P: &str = "/bench/fleet";
const WAIT_SAMPLES: usize = 30;
const ROLLOUTS: usize = 5;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/fleet")]
struct BenchConfig {
    value: u32,
    #[serde(default)]
    label: String,
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let k = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[k]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn bind_many(coord: &Coordinator, n: usize, tag: &str) -> Vec<ConfigHandle<BenchConfig>> {
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let mut options = ConfigOptions::new().without_sharing();
        if i > 0 {
            // One handle records history and publishes the schema the rollout checks.
            options = options.without_history();
        }
        let options = options.with_receipts(
            ReceiptOptions::new()
                .with_instance_id(format!("{tag}-{i:03}"))
                .without_labels_from_env(),
        );
        handles.push(BenchConfig::bind_with(coord, options).await.unwrap());
    }
    handles
}

/// Counts the puts under `prefix` while `work` runs (plus a settle time).
async fn count_puts<F: std::future::Future<Output = ()>>(
    client: &mut etcd_client::Client,
    prefix: &str,
    work: F,
) -> usize {
    let mut stream = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&count);
    let counter = tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let puts = resp
                .events()
                .iter()
                .filter(|e| e.event_type() == EventType::Put)
                .count();
            counted.fetch_add(puts, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    work.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    counter.abort();
    count.load(std::sync::atomic::Ordering::Relaxed)
}

struct Row {
    what: String,
    unit: &'static str,
    p50: String,
    p99: String,
    ratio: String,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let etcd = support::Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    client.put(format!("{P}/value"), "0", None).await.unwrap();
    let fleet = Fleet::open(&coord, P).unwrap();
    let mut rows = Vec::new();

    // 1. Receipt writes per revision per instance.
    let writers = bind_many(&coord, 20, "w").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revisions = 30usize;
    let mut put_client = client.clone();
    let spaced = count_puts(&mut client, fleet.instances_prefix(), async {
        for v in 0..revisions {
            put_client
                .put(format!("{P}/value"), (v + 1).to_string(), None)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut put_client = client.clone();
    let burst = count_puts(&mut client, fleet.instances_prefix(), async {
        for v in 0..revisions {
            put_client
                .put(format!("{P}/value"), (v + 1000).to_string(), None)
                .await
                .unwrap();
        }
    })
    .await;
    let per = |n: usize| n as f64 / (revisions * writers.len()) as f64;
    rows.push(Row {
        what: format!(
            "receipt writes, {revisions} revisions 100 ms apart, {} instances",
            writers.len()
        ),
        unit: "puts/rev/instance",
        p50: format!("{:.2}", per(spaced)),
        p99: "-".into(),
        ratio: format!("{spaced} puts"),
    });
    rows.push(Row {
        what: format!(
            "receipt writes, burst of {revisions} revisions, {} instances",
            writers.len()
        ),
        unit: "puts/rev/instance",
        p50: format!("{:.2}", per(burst)),
        p99: "-".into(),
        ratio: format!("{burst} puts"),
    });
    drop(writers);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. config wait for 100 instances, next to put → watch event.
    let fleet_handles = bind_many(&coord, 100, "f").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.instances().await.unwrap().list.len() < 100 {
        assert!(Instant::now() < deadline, "100 receipts within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = client.watch(format!("{P}/label"), None).await.unwrap();
    let mut raw = Vec::new();
    let mut waits = Vec::new();
    for i in 0..WAIT_SAMPLES {
        let t = Instant::now();
        client
            .put(format!("{P}/label"), format!("raw{i}"), None)
            .await
            .unwrap();
        events.message().await.unwrap();
        raw.push(ms(t.elapsed()));

        let t = Instant::now();
        let rev = client
            .put(format!("{P}/value"), (5000 + i).to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let report = fleet.wait(rev, Duration::from_secs(30)).await.unwrap();
        assert!(report.converged, "{} laggards", report.laggards.len());
        waits.push(ms(t.elapsed()));
    }
    let (raw50, raw99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
    let (w50, w99) = (percentile(&mut waits, 0.5), percentile(&mut waits, 0.99));
    rows.push(Row {
        what: "baseline: put → watch event, 1 raw watcher".into(),
        unit: "ms",
        p50: format!("{raw50:.2}"),
        p99: format!("{raw99:.2}"),
        ratio: "1.0×".into(),
    });
    rows.push(Row {
        what: "config wait: put → all 100 receipts show it".into(),
        unit: "ms",
        p50: format!("{w50:.2}"),
        p99: format!("{w99:.2}"),
        ratio: format!("{:.1}×", w50 / raw50),
    });

    // 3. Rollout controller overhead per step.
    let history = ConfigHistory::open(&coord, P).await.unwrap();
    let mut per_step = Vec::new();
    for r in 0..ROLLOUTS {
        let doc = serde_json::json!({"value": 9000 + r, "label": format!("rollout{r}")});
        let plan = RolloutPlan::new(doc)
            .with_steps(vec![Step::Count(1), Step::Percent(50), Step::Percent(100)])
            .with_bake(Duration::ZERO)
            .with_author("bench", "");
        let t = Instant::now();
        fleet.start_rollout(&history, plan).await.unwrap();
        let state = fleet
            .drive_rollout(
                &history,
                DriveOptions::new().with_tick(Duration::from_millis(10)),
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(
            state.status,
            coordination::fleet::RolloutStatus::Completed,
            "{state:?}"
        );
        let rev = state.published.unwrap();
        assert!(
            fleet
                .wait(rev, Duration::from_secs(30))
                .await
                .unwrap()
                .converged
        );
        per_step.push(ms(t.elapsed()) / state.steps.len() as f64);
    }
    let (s50, s99) = (
        percentile(&mut per_step, 0.5),
        percentile(&mut per_step, 0.99),
    );
    rows.push(Row {
        what: "rollout, 3 steps (1, 50%, 100%), no bake, 100 instances, tick 10 ms: per step"
            .into(),
        unit: "ms",
        p50: format!("{s50:.1}"),
        p99: format!("{s99:.1}"),
        ratio: format!("{:.1}× config wait", s50 / w50),
    });
    drop(fleet_handles);

    println!();
    println!(
        "fleet_ops benchmark (etcd on loopback, {} cores)",
        num_cores()
    );
    println!();
    println!("| measurement | unit | p50 | p99 | ratio |");
    println!("|---|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what, r.unit, r.p50, r.p99, r.ratio
        );
    }
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
