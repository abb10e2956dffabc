//! Fleet benchmark: prints one table from one run.
//!
//! 1. **A fleet of bound handles**: `FLEET_HANDLES` (default 1000) real handles of one prefix,
//!    each its own watcher (`ConfigOptions::without_sharing`, history off), spread over
//!    `FLEET_PROCS` (default 4) worker processes (re-runs of this binary). Once connected
//!    straight to etcd, once through `etcd grpc-proxy start`, which coalesces identical
//!    watches. For each: put → all handles applied (p50, p99 over `FLEET_PUTS` puts, default
//!    200) and the watchers etcd itself holds (`etcd_debugging_mvcc_watcher_total` on its own
//!    `/metrics`), next to the raw baseline of the same setup: a raw put → watch event of one
//!    watcher, interleaved with the fleet's puts.
//! 2. **History cost**: etcd transactions per config revision with 1, 10 and 100 bound
//!    instances (handles without sharing, history on, in this process; `FLEET_HISTORY_INSTANCES`,
//!    `FLEET_HISTORY_PUTS`, default 50 puts), counted from etcd's `grpc_server_handled_total`
//!    for `Txn`; the ideal is one record per revision.
//!
//! Run with `cargo bench --bench fleet`. It starts its own etcd and grpc-proxy on free loopback
//! ports.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coordination::history::HistoryOptions;
use coordination::{
    ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, Coordinator, CoordinatorOptions,
};
use etcd_client::{Client, GetOptions, WatchOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::{Etcd, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/fleet")]
struct FleetConfig {
    #[serde(default)]
    n: u64,
    #[serde(default)]
    name: String,
}

const ROLE: &str = "FLEET_ROLE";
const ENDPOINT: &str = "FLEET_ENDPOINT";
const COUNT: &str = "FLEET_COUNT";
const FLEET_PREFIX: &str = "/bench/fleet";
const RAW_KEY: &str = "/bench/raw/n";
const WAIT: Duration = Duration::from_secs(120);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn fleet_options() -> ConfigOptions {
    ConfigOptions::new()
        .without_file()
        .without_env()
        .without_history()
        .without_sharing()
}

/// Binds `count` handles, 25 at a time.
async fn bind_many<T: CoordConfig>(
    coord: &Coordinator,
    count: usize,
    options: ConfigOptions,
) -> Vec<ConfigHandle<T>> {
    let mut handles = Vec::with_capacity(count);
    while handles.len() < count {
        let mut binds = tokio::task::JoinSet::new();
        for _ in 0..(count - handles.len()).min(25) {
            let coord = coord.clone();
            let options = options.clone();
            binds.spawn(async move { coord.config_with::<T>(options).await });
        }
        while let Some(bound) = binds.join_next().await {
            handles.push(bound.unwrap().expect("bind"));
        }
    }
    handles
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var(ROLE).as_deref() == Ok("handles") {
        rt.block_on(worker());
    } else {
        rt.block_on(run());
    }
}

/// A worker process: binds `FLEET_COUNT` handles without sharing, prints `@@ ready`, then
/// `@@ applied <revision> <unix ns>` each time the oldest revision applied by all of them
/// moves on; exits when stdin closes.
async fn worker() {
    if let Ok(filter) = std::env::var("FLEET_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let endpoint = std::env::var(ENDPOINT).unwrap();
    let count: usize = std::env::var(COUNT).unwrap().parse().unwrap();
    let coord = Coordinator::connect(CoordinatorOptions::new([endpoint]))
        .await
        .unwrap();
    let handles: Vec<ConfigHandle<FleetConfig>> = bind_many(&coord, count, fleet_options()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, i64)>();
    let mut latest: Vec<i64> = handles.iter().map(|h| h.load().revision()).collect();
    for (i, handle) in handles.iter().enumerate() {
        let mut sub = handle.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = sub.next().await {
                if let ConfigEvent::Applied(snapshot) = event {
                    if tx.send((i, snapshot.revision())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    println!("@@ ready {count}");
    std::io::stdout().flush().unwrap();
    let mut stdin_closed = tokio::task::spawn_blocking(|| {
        for line in std::io::stdin().lines() {
            if line.is_err() {
                break;
            }
        }
    });
    let mut all = latest.iter().copied().min().unwrap_or(0);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => break,
            message = rx.recv() => {
                let Some((i, revision)) = message else { break };
                latest[i] = latest[i].max(revision);
                let min = latest.iter().copied().min().unwrap_or(0);
                if min > all {
                    all = min;
                    println!("@@ applied {all} {}", unix_ns());
                    std::io::stdout().flush().unwrap();
                }
            }
        }
    }
    drop(handles);
}

/// `GET /metrics` (HTTP/1.0, so the body is not chunked) from an etcd client URL: the sum of `name`'s samples whose labels include
/// every one of `labels`.
async fn etcd_metric(port: u16, name: &str, labels: &[&str]) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    if std::env::var("FLEET_DEBUG_METRICS").is_ok() {
        for line in response.lines().filter(|l| l.contains(name)) {
            eprintln!("metrics: {line}");
        }
    }
    response
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && labels.iter().all(|l| series.contains(l)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

struct Fleet {
    setup: &'static str,
    handles: usize,
    procs: usize,
    watchers: f64,
    streams: f64,
    raw: Vec<Duration>,
    fleet: Vec<Duration>,
    bind: Duration,
}

/// Binds the fleet through `endpoint`, then interleaves raw put → watch and put → all applied.
async fn fleet(
    setup: &'static str,
    etcd: &Etcd,
    endpoint: &str,
    handles: usize,
    procs: usize,
    puts: usize,
) -> Fleet {
    let mut client = Client::connect([endpoint.to_string()], None).await.unwrap();
    let bind_started = Instant::now();
    let mut workers: Vec<Proc> = (0..procs)
        .map(|i| {
            let share = handles / procs + usize::from(i < handles % procs);
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.env(ROLE, "handles")
                .env(ENDPOINT, endpoint)
                .env(COUNT, share.to_string());
            Proc::spawn(cmd, &format!("fleet worker {i}"))
        })
        .collect();
    for worker in &mut workers {
        let line = worker.tagged(WAIT).await;
        assert!(line.starts_with("ready"), "{line}");
    }
    let bind = bind_started.elapsed();
    let etcd_port = port_of(&etcd.endpoint());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watchers = etcd_metric(etcd_port, "etcd_debugging_mvcc_watcher_total", &[]).await;
    let streams = etcd_metric(etcd_port, "etcd_debugging_mvcc_watch_stream_total", &[]).await;

    let mut raw_watch = client
        .watch(RAW_KEY, Some(WatchOptions::new()))
        .await
        .unwrap();
    let mut raw = Vec::with_capacity(puts);
    let mut fleet = Vec::with_capacity(puts);
    let key = format!("{FLEET_PREFIX}/n");
    for i in 0..puts {
        // Raw baseline: one watcher, same setup.
        let started = Instant::now();
        client.put(RAW_KEY, i.to_string(), None).await.unwrap();
        loop {
            let resp = raw_watch.message().await.unwrap().expect("raw watch open");
            if !resp.events().is_empty() {
                break;
            }
        }
        raw.push(started.elapsed());

        // The fleet: put → the last of all handles applied it.
        let t0 = unix_ns();
        let revision = client
            .put(key.as_str(), (i + 1).to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let mut last = t0;
        for worker in &mut workers {
            loop {
                let line = worker.tagged(WAIT).await;
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.first() != Some(&"applied") {
                    continue;
                }
                let at: i64 = f[1].parse().unwrap();
                if at >= revision {
                    last = last.max(f[2].parse().unwrap());
                    break;
                }
            }
        }
        let took = Duration::from_nanos((last - t0) as u64);
        if took > Duration::from_secs(1) {
            eprintln!("{setup}: put {i} (revision {revision}) reached all handles after {took:?}");
        }
        fleet.push(took);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(workers);
    // Let etcd drop the closed watchers before the next setup counts its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Fleet {
        setup,
        handles,
        procs,
        watchers,
        streams,
        raw,
        fleet,
        bind,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/recorded")]
struct Recorded {
    #[serde(default)]
    n: u64,
}

/// Binds `instances` handles with history on (without sharing) on a fresh prefix, then counts
/// etcd's `Txn` requests over `puts` config revisions. Returns (Txn per revision, versions
/// recorded per revision).
async fn history_cost(etcd: &Etcd, instances: usize, puts: usize) -> (f64, f64) {
    let prefix = format!("/bench/recorded-{instances}");
    let versions = format!("/__coordination/history{prefix}/versions/");
    let mut client = etcd.client().await;
    client.put(format!("{prefix}/n"), "0", None).await.unwrap();
    let coord = etcd.coordinator().await;
    let options = ConfigOptions::new()
        .with_prefix(prefix.clone())
        .without_file()
        .without_env()
        .without_sharing()
        .with_history(HistoryOptions::new().with_max_versions(puts * 2 + 10));
    let handles: Vec<ConfigHandle<Recorded>> = bind_many(&coord, instances, options).await;
    let count = |client: &mut Client| {
        let mut client = client.clone();
        let versions = versions.clone();
        async move {
            client
                .get(
                    versions,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .unwrap()
                .count()
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let port = port_of(&etcd.endpoint());
    const TXN: &[&str] = &[r#"grpc_method="Txn""#];
    let before = etcd_metric(port, "grpc_server_handled_total", TXN).await;
    let recorded_before = count(&mut client).await;
    let mut last = 0;
    for i in 0..puts {
        last = client
            .put(format!("{prefix}/n"), (i + 1).to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_key = format!("{versions}{last:020}");
    let deadline = Instant::now() + WAIT;
    while client
        .get(last_key.as_str(), None)
        .await
        .unwrap()
        .kvs()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "revision {last} never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let txns = etcd_metric(port, "grpc_server_handled_total", TXN).await - before;
    let recorded = count(&mut client).await - recorded_before;
    drop(handles);
    (txns / puts as f64, recorded as f64 / puts as f64)
}

async fn run() {
    let handles = env_usize("FLEET_HANDLES", 1000);
    let procs = env_usize("FLEET_PROCS", 4).max(1);
    let puts = env_usize("FLEET_PUTS", 200).max(1);
    let history_puts = env_usize("FLEET_HISTORY_PUTS", 50).max(1);
    let instances: Vec<usize> = std::env::var("FLEET_HISTORY_INSTANCES")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client
        .put(format!("{FLEET_PREFIX}/n"), "0", None)
        .await
        .unwrap();
    client.put(RAW_KEY, "0", None).await.unwrap();
    let proxy = support::grpc_proxy::GrpcProxy::start(&etcd).await;
    let proxy_endpoint = proxy.endpoint();

    let started = Instant::now();
    let direct = fleet(
        "straight to etcd",
        &etcd,
        &etcd.endpoint(),
        handles,
        procs,
        puts,
    )
    .await;
    let proxied = fleet(
        "through etcd grpc-proxy",
        &etcd,
        &proxy_endpoint,
        handles,
        procs,
        puts,
    )
    .await;
    drop(proxy);
    let mut costs = Vec::new();
    for n in &instances {
        costs.push((*n, history_cost(&etcd, *n, history_puts).await));
    }

    println!();
    println!(
        "fleet benchmark ({} CPUs; {handles} handles without sharing in {procs} processes, history off; {puts} puts per setup, each waiting for the last handle; ms)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("ratio: fleet p50 / raw put → watch p50 of the same setup");
    println!();
    println!("| measurement | setup | p50 | p99 | etcd watchers | etcd watch streams | ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for f in [&direct, &proxied] {
        let mut raw = f.raw.clone();
        raw.sort();
        let mut fleet = f.fleet.clone();
        fleet.sort();
        println!(
            "| raw put → watch event, 1 watcher | {} | {:.2} | {:.2} | | | 1.00 |",
            f.setup,
            ms(percentile(&raw, 0.5)),
            ms(percentile(&raw, 0.99)),
        );
        println!(
            "| put → all {} handles applied ({} processes; bind {:.1} s) | {} | {:.2} | {:.2} | {} | {} | {:.2}x |",
            f.handles,
            f.procs,
            f.bind.as_secs_f64(),
            f.setup,
            ms(percentile(&fleet, 0.5)),
            ms(percentile(&fleet, 0.99)),
            f.watchers,
            f.streams,
            ms(percentile(&fleet, 0.5)) / ms(percentile(&raw, 0.5)),
        );
    }
    for (n, (txns, recorded)) in &costs {
        println!(
            "| history: etcd Txn per config revision ({history_puts} puts; {recorded:.2} versions recorded per revision) | {n} instances, history on | {txns:.2} | | | | {:.2}x ideal |",
            txns / 1.0
        );
    }
    println!();
    println!("total {:.0} s", started.elapsed().as_secs_f64());
}
