//! Scale benchmark: big prefixes and many handles. Prints one table per run, every figure next
//! to its raw etcd baseline from the same run.
//!
//! 1. Reload of one changed key in a prefix of 10k and 100k keys (incremental, the default;
//!    and, at 10k, with `with_full_reload()` as the before figure) vs raw put → watch event.
//! 2. Cold bind of 10k keys vs a raw paged get of the same prefix (pages sent one after
//!    another, the target's baseline), with a raw get of the two halves at once beside it (what
//!    etcd gives a reader on two of its cores); a bind of 100k keys; and how long the first
//!    `sources()` call right after each bind waits for the provenance.
//! 3. RSS of a 10k-key handle right after bind and after 1,000 changes (measured in a child
//!    process running this binary, so the other sections do not count).
//! 4. put → applied on all of 100 handles of one prefix vs on one handle.
//! 5. Reload latency of a small config, history on, over interleaved puts.
//!
//! Sizes by environment variable (defaults in brackets): `SCALE_KEYS` [10000],
//! `SCALE_BIG_KEYS` [100000; 0 skips], `SCALE_PUTS` [1000], `SCALE_BIG_PUTS` [300],
//! `SCALE_FULL_PUTS` [100], `SCALE_CHANGES` [1000], `SCALE_HANDLES` [100],
//! `SCALE_FANOUT_PUTS` [200], `SCALE_LATENCY_PUTS` [1000], `SCALE_BIND_RUNS` [5: cold binds
//! measured, each after a raw paged get and a two-part one]. `SCALE_ONLY=cold` runs only the cold-bind row (at
//! `SCALE_KEYS`) and prints its table. Quick run:
//! `SCALE_KEYS=2000 SCALE_BIG_KEYS=0 SCALE_PUTS=200 SCALE_CHANGES=200 SCALE_LATENCY_PUTS=200 cargo bench --bench scale`.
//!
//! Run with `cargo bench --bench scale`. It starts its own etcd on a free loopback port.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use coordination::config::ConfigMap;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, Coordinator};
use etcd_client::{Client, GetOptions, KvClient, Txn, TxnOp, WatchOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/scale")]
struct Fleet {
    #[serde(default)]
    port: u32,
    #[serde(default)]
    items: ConfigMap<Item>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Item {
    #[schemars(range(max = 1_000_000_000))]
    weight: u32,
    #[serde(default)]
    label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/small")]
struct Small {
    port: u64,
    #[serde(default)]
    name: String,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An item's value: about 256 bytes.
fn item(weight: u64) -> String {
    format!("{{weight: {weight}, label: {}}}", "x".repeat(230))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Puts `n` items under `prefix/items/` in transactions of 100 keys.
async fn fill(client: &mut Client, prefix: &str, n: usize) {
    let keys: Vec<usize> = (0..n).collect();
    for chunk in keys.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|i| TxnOp::put(format!("{prefix}/items/k{i:06}"), item(1), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.expect("fill");
    }
}

/// A raw paged read of `prefix` (1000 keys per page, pinned to the first page's revision), as
/// a client that sends its pages one after another reads it; returns the number of keys.
async fn raw_paged_get(client: &mut Client, prefix: &str) -> usize {
    let end = prefix_end(prefix);
    let mut kv = client.kv_client();
    raw_pages(&mut kv, prefix.as_bytes().to_vec(), &end, 0, usize::MAX)
        .await
        .0
}

/// A raw read of `prefix` as two parts at once, split at `mid` (a key the caller knows is near
/// the middle): the first page fixes the revision, then the rest below `mid` and everything
/// from `mid` are read concurrently at that revision, 1000 keys per page. The figure of what
/// etcd gives a client that reads on two of its cores; returns the number of keys.
async fn raw_two_part_get(client: &Client, prefix: &str, mid: &str) -> usize {
    let end = prefix_end(prefix);
    let mut low = client.kv_client();
    let mut high = client.kv_client();
    let mid = mid.as_bytes().to_vec();
    let (first, revision, from) = raw_pages(&mut low, prefix.as_bytes().to_vec(), &mid, 0, 1).await;
    let Some(from) = from else { return first };
    let (a, b) = tokio::join!(
        raw_pages(&mut low, from, &mid, revision, usize::MAX),
        raw_pages(&mut high, mid.clone(), &end, revision, usize::MAX)
    );
    first + a.0 + b.0
}

/// The end of the range of keys under `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut e = prefix.as_bytes().to_vec();
    *e.last_mut().unwrap() += 1;
    e
}

/// Up to `pages` pages of 1000 keys of `[from, end)` at `revision` (0: the current one);
/// returns the keys read, the revision, and where the next page would start (`None` at the
/// end).
async fn raw_pages(
    client: &mut KvClient,
    mut from: Vec<u8>,
    end: &[u8],
    mut revision: i64,
    pages: usize,
) -> (usize, i64, Option<Vec<u8>>) {
    let mut count = 0;
    for _ in 0..pages {
        let mut options = GetOptions::new().with_range(end.to_vec()).with_limit(1000);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = client.get(from.clone(), Some(options)).await.expect("get");
        if revision == 0 {
            revision = resp.header().unwrap().revision();
        }
        count += resp.kvs().len();
        let Some(last) = resp.kvs().last() else {
            return (count, revision, None);
        };
        if !resp.more() {
            return (count, revision, None);
        }
        from = last.key().to_vec();
        from.push(0);
    }
    (count, revision, Some(from))
}

/// The raw baseline: a watch on `/bench/raw/`.
struct Raw {
    client: Client,
    watch: etcd_client::WatchStream,
    i: u64,
}

impl Raw {
    async fn new(client: &Client) -> Raw {
        let mut client = client.clone();
        let mut watch = client
            .watch("/bench/raw/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        watch.message().await.unwrap(); // `created`
        Raw {
            client,
            watch,
            i: 0,
        }
    }

    /// put → watch event.
    async fn sample(&mut self) -> Duration {
        self.i += 1;
        let t0 = Instant::now();
        self.client
            .put("/bench/raw/x", item(self.i), None)
            .await
            .unwrap();
        loop {
            let resp = self.watch.message().await.unwrap().unwrap();
            if !resp.events().is_empty() {
                break;
            }
        }
        t0.elapsed()
    }
}

/// put of one item → the handle's snapshot of that revision.
async fn reload_sample(
    client: &mut Client,
    sub: &mut coordination::config::Subscription<Fleet>,
    key: &str,
    weight: u64,
) -> Duration {
    let t0 = Instant::now();
    let revision = client
        .put(key, item(weight), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    loop {
        match sub.next().await {
            Some(ConfigEvent::Applied(s)) if s.revision() >= revision => break,
            Some(ConfigEvent::Rejected(r)) => panic!("rejected: {:#}", r.error),
            Some(_) => continue,
            None => panic!("subscription closed"),
        }
    }
    t0.elapsed()
}

/// Row of a latency table: `n` interleaved puts, one config path vs raw.
struct Latency {
    raw: Vec<Duration>,
    cfg: Vec<Duration>,
}

impl Latency {
    fn row(&mut self, label: &str) -> String {
        self.raw.sort();
        self.cfg.sort();
        let (r50, r99) = (percentile(&self.raw, 0.5), percentile(&self.raw, 0.99));
        let (c50, c99) = (percentile(&self.cfg, 0.5), percentile(&self.cfg, 0.99));
        format!(
            "| {label} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:+.0} | {:+.0} | {:.2}x |",
            self.cfg.len(),
            us(c50),
            us(c99),
            us(r50),
            us(r99),
            us(c50) - us(r50),
            us(c99) - us(r99),
            us(c50) / us(r50)
        )
    }
}

/// Interleaved put → snapshot (on `handle`, changing key `items/k…` in turn) and raw samples.
async fn reload_vs_raw(
    client: &mut Client,
    raw: &mut Raw,
    handle: &ConfigHandle<Fleet>,
    prefix: &str,
    keys: usize,
    puts: usize,
) -> Latency {
    let mut sub = handle.subscribe();
    let mut out = Latency {
        raw: Vec::with_capacity(puts),
        cfg: Vec::with_capacity(puts),
    };
    for i in 0..puts {
        let key = format!("{prefix}/items/k{:06}", (i * 7919) % keys);
        let weight = 1_000 + i as u64;
        if i % 2 == 0 {
            out.raw.push(raw.sample().await);
            out.cfg
                .push(reload_sample(client, &mut sub, &key, weight).await);
        } else {
            out.cfg
                .push(reload_sample(client, &mut sub, &key, weight).await);
            out.raw.push(raw.sample().await);
        }
        // Let background work (the history recorder) settle between samples.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child process of section 3: binds `SCALE_KEYS` keys, makes `SCALE_CHANGES` changes and
/// prints `rss <after bind KiB> <after changes KiB> <snapshots kept>`.
fn rss_child(endpoint: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = env("SCALE_KEYS", 10_000);
    let changes = env("SCALE_CHANGES", 1_000);
    rt.block_on(async {
        let coord = Coordinator::connect(coordination::CoordinatorOptions::new([endpoint.clone()]))
            .await
            .unwrap();
        let mut client = Client::connect([endpoint], None).await.unwrap();
        let prefix = "/bench/rss";
        let handle: ConfigHandle<Fleet> = coord
            .config_with(ConfigOptions::new().with_prefix(prefix))
            .await
            .unwrap();
        assert_eq!(handle.load().items.len(), keys);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_bind = rss_kib();
        let mut sub = handle.subscribe();
        for i in 0..changes {
            let key = format!("{prefix}/items/k{:06}", (i * 7919) % keys);
            reload_sample(&mut client, &mut sub, &key, 2_000 + i as u64).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib();
        let kept = handle.recent().len();
        println!("rss {after_bind} {after} {kept}");
    });
}

fn main() {
    if let Ok(endpoint) = std::env::var("SCALE_RSS_CHILD") {
        return rss_child(endpoint);
    }
    let keys = env("SCALE_KEYS", 10_000);
    let big_keys = env("SCALE_BIG_KEYS", 100_000);
    let puts = env("SCALE_PUTS", 1_000);
    let big_puts = env("SCALE_BIG_PUTS", 300);
    let full_puts = env("SCALE_FULL_PUTS", 100);
    let changes = env("SCALE_CHANGES", 1_000);
    let handles = env("SCALE_HANDLES", 100);
    let fanout_puts = env("SCALE_FANOUT_PUTS", 200);
    let latency_puts = env("SCALE_LATENCY_PUTS", 1_000);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let etcd = rt.block_on(support::Etcd::start());
    let mut client = rt.block_on(etcd.client());
    let coord = rt.block_on(etcd.coordinator());
    let mut raw = rt.block_on(Raw::new(&client));

    println!(
        "machine: {} CPUs ({}), one run; keys of about 256 bytes",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::env::consts::ARCH
    );

    // 1 + 2 at the usual size.
    let prefix = "/bench/scale";
    rt.block_on(fill(&mut client, prefix, keys));
    let only_cold = std::env::var("SCALE_ONLY").is_ok_and(|v| v == "cold");
    let bind_runs = env("SCALE_BIND_RUNS", 5).max(1);
    let mut raw_get = Vec::new();
    let mut raw_two = Vec::new();
    let mut binds = Vec::new();
    let mut provenance = Vec::new();
    for _ in 0..bind_runs {
        let t = Instant::now();
        let n = rt.block_on(raw_paged_get(&mut client, &format!("{prefix}/")));
        raw_get.push(t.elapsed());
        assert_eq!(n, keys);
        let t = Instant::now();
        let mid = format!("{prefix}/items/k{:06}", keys / 2);
        let n = rt.block_on(raw_two_part_get(&client, &format!("{prefix}/"), &mid));
        raw_two.push(t.elapsed());
        assert_eq!(n, keys);
        let t = Instant::now();
        let h: ConfigHandle<Fleet> = rt
            .block_on(
                coord.config_with(
                    ConfigOptions::new()
                        .without_history()
                        .without_sharing()
                        .without_file()
                        .without_env(),
                ),
            )
            .unwrap();
        binds.push(t.elapsed());
        assert_eq!(h.load().items.len(), keys);
        // The snapshot serves before its provenance is worked out (on the background thread):
        // how long the first question about it waits.
        let t = Instant::now();
        assert!(h.load().sources().len() >= keys);
        provenance.push(t.elapsed());
        // The handle's task frees its state on a worker thread after the drop: let that
        // finish so it does not slow the next raw get (which would flatter the ratio).
        drop(h);
        std::thread::sleep(Duration::from_millis(300));
    }
    let ratios: Vec<f64> = raw_get
        .iter()
        .zip(&binds)
        .map(|(r, b)| ms(*b) / ms(*r))
        .collect();
    let (raw_get, bind, provenance) = (median(raw_get), median(binds), median(provenance));
    let raw_two = median(raw_two);
    if only_cold {
        println!();
        println!("## Cold bind (ms; median of {bind_runs} at {keys} keys)");
        println!();
        println!(
            "| keys | bind | raw paged get | ratio (target ≤ 1.3x) | ratio of each pair | raw get in two parts at once | bind / two-part get | first sources() after the bind |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {keys} | {:.1} | {:.1} | {:.2}x | {} | {:.1} | {:.2}x | {:.1} |",
            ms(bind),
            ms(raw_get),
            ms(bind) / ms(raw_get),
            each.join(", "),
            ms(raw_two),
            ms(bind) / ms(raw_two),
            ms(provenance)
        );
        return;
    }

    let handle: ConfigHandle<Fleet> = rt
        .block_on(coord.config_with(ConfigOptions::new().without_sharing()))
        .unwrap();
    let mut inc = rt.block_on(reload_vs_raw(
        &mut client,
        &mut raw,
        &handle,
        prefix,
        keys,
        puts,
    ));
    drop(handle);
    let quiet: ConfigHandle<Fleet> = rt
        .block_on(coord.config_with(ConfigOptions::new().without_history().without_sharing()))
        .unwrap();
    let mut inc_quiet = rt.block_on(reload_vs_raw(
        &mut client,
        &mut raw,
        &quiet,
        prefix,
        keys,
        puts,
    ));
    drop(quiet);
    let full_handle: ConfigHandle<Fleet> = rt
        .block_on(
            coord.config_with(
                ConfigOptions::new()
                    .with_full_reload()
                    .without_history()
                    .without_sharing(),
            ),
        )
        .unwrap();
    let mut full = rt.block_on(reload_vs_raw(
        &mut client,
        &mut raw,
        &full_handle,
        prefix,
        keys,
        full_puts,
    ));
    drop(full_handle);

    // 1 + 2 at the big size.
    let mut big = None;
    if big_keys > 0 {
        let big_prefix = "/bench/big";
        rt.block_on(fill(&mut client, big_prefix, big_keys));
        let t = Instant::now();
        let n = rt.block_on(raw_paged_get(&mut client, &format!("{big_prefix}/")));
        let raw_big = t.elapsed();
        assert_eq!(n, big_keys);
        let t = Instant::now();
        let bound: coordination::Result<ConfigHandle<Fleet>> = rt.block_on(
            coord.config_with(
                ConfigOptions::new()
                    .with_prefix(big_prefix)
                    .without_sharing(),
            ),
        );
        let bind_big = t.elapsed();
        let row = match bound {
            Ok(h) => {
                assert_eq!(h.load().items.len(), big_keys);
                let t = Instant::now();
                assert!(h.load().sources().len() >= big_keys);
                let sources_big = t.elapsed();
                let lat = rt.block_on(reload_vs_raw(
                    &mut client,
                    &mut raw,
                    &h,
                    big_prefix,
                    big_keys,
                    big_puts,
                ));
                Ok((lat, sources_big))
            }
            Err(e) => Err(format!("{e:#}")),
        };
        big = Some((raw_big, bind_big, row));
    }

    // 3: RSS in a child process.
    rt.block_on(fill(&mut client, "/bench/rss", keys));
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SCALE_RSS_CHILD", etcd.endpoint())
        .output()
        .expect("run the RSS child");
    let rss_line = String::from_utf8_lossy(&child.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("rss ").map(str::to_string))
        .unwrap_or_else(|| {
            panic!(
                "RSS child failed: {}",
                String::from_utf8_lossy(&child.stderr)
            )
        });
    let rss: Vec<u64> = rss_line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();

    // 4: one handle vs N sharing handles, history on; put → applied on all.
    let (one, many) = rt.block_on(async {
        let mut client = client.clone();
        client.put("/bench/one/port", "1", None).await.unwrap();
        client.put("/bench/many/port", "1", None).await.unwrap();
        let one: ConfigHandle<Small> = coord
            .config_with(ConfigOptions::new().with_prefix("/bench/one"))
            .await
            .unwrap();
        let mut many: Vec<ConfigHandle<Small>> = Vec::new();
        for _ in 0..handles {
            many.push(
                coord
                    .config_with(ConfigOptions::new().with_prefix("/bench/many"))
                    .await
                    .unwrap(),
            );
        }
        let mut one_sub = vec![one.subscribe()];
        let mut many_subs: Vec<_> = many.iter().map(|h| h.subscribe()).collect();
        let (mut t_one, mut t_many) = (Vec::new(), Vec::new());
        for i in 0..fanout_puts {
            for (which, key, subs) in [
                (0, "/bench/one/port", &mut one_sub),
                (1, "/bench/many/port", &mut many_subs),
            ] {
                let want = 10 + i as u64;
                let t0 = Instant::now();
                client.put(key, want.to_string(), None).await.unwrap();
                for sub in subs.iter_mut() {
                    loop {
                        match sub.next().await {
                            Some(ConfigEvent::Applied(s)) if s.port == want => break,
                            Some(_) => continue,
                            None => panic!("closed"),
                        }
                    }
                }
                if which == 0 {
                    t_one.push(t0.elapsed());
                } else {
                    t_many.push(t0.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        t_one.sort();
        t_many.sort();
        (t_one, t_many)
    });

    // 5: reload latency of a small config, history on.
    let mut small = rt.block_on(async {
        let mut client = client.clone();
        client.put("/bench/small/port", "1", None).await.unwrap();
        let cfg: ConfigHandle<Small> = coord.config_with(ConfigOptions::new()).await.unwrap();
        let mut sub = cfg.subscribe();
        let mut out = Latency {
            raw: Vec::new(),
            cfg: Vec::new(),
        };
        for i in 0..latency_puts {
            let want = 100 + i as u64;
            let sample_cfg = async {
                let t0 = Instant::now();
                client
                    .put("/bench/small/port", want.to_string(), None)
                    .await
                    .unwrap();
                loop {
                    match sub.next().await {
                        Some(ConfigEvent::Applied(s)) if s.port == want => break,
                        Some(_) => continue,
                        None => panic!("closed"),
                    }
                }
                t0.elapsed()
            };
            if i % 2 == 0 {
                out.raw.push(raw.sample().await);
                out.cfg.push(sample_cfg.await);
            } else {
                out.cfg.push(sample_cfg.await);
                out.raw.push(raw.sample().await);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out
    });

    println!();
    println!("## Reload of one changed key (put → snapshot of that revision; µs; interleaved with raw put → watch)");
    println!();
    println!("| handle | puts | p50 | p99 | raw p50 | raw p99 | Δp50 | Δp99 | p50 ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "{}",
        inc.row(&format!(
            "{keys} keys, incremental, history on (target Δp50 ≤ +200)"
        ))
    );
    println!(
        "{}",
        inc_quiet.row(&format!("{keys} keys, incremental, history off"))
    );
    println!(
        "{}",
        full.row(&format!(
            "{keys} keys, with_full_reload(), history off (before)"
        ))
    );
    if let Some((_, _, Ok((lat, _)))) = &mut big {
        println!(
            "{}",
            lat.row(&format!(
                "{big_keys} keys, incremental, history on (target Δp50 ≤ +1000)"
            ))
        );
    }
    println!();
    println!("## Cold bind (ms; median of {bind_runs} at {keys} keys)");
    println!();
    println!(
        "| keys | bind | raw paged get | ratio (target ≤ 1.3x) | raw get in two parts at once | bind / two-part get | first sources() after the bind |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {keys} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.2}x | {:.1} |",
        ms(bind),
        ms(raw_get),
        ms(bind) / ms(raw_get),
        ms(raw_two),
        ms(bind) / ms(raw_two),
        ms(provenance)
    );
    if let Some((raw_big, bind_big, row)) = &big {
        match row {
            Ok((_, sources_big)) => println!(
                "| {big_keys} (history on, once) | {:.1} | {:.1} | {:.2}x | | | {:.1} |",
                ms(*bind_big),
                ms(*raw_big),
                ms(*bind_big) / ms(*raw_big),
                ms(*sources_big)
            ),
            Err(e) => println!("| {big_keys} | failed: {e} | {:.1} | | | | |", ms(*raw_big)),
        }
    }
    println!();
    println!("## Memory of a {keys}-key handle, history on (child process; KiB)");
    println!();
    println!(
        "| RSS after bind | RSS after {changes} changes | ratio (target ≤ 2x) | snapshots kept |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {:.2}x | {} |",
        rss[0],
        rss[1],
        rss[1] as f64 / rss[0] as f64,
        rss[2]
    );
    println!();
    println!("## {handles} handles of one prefix vs one handle (put → applied on all; µs; history on; {fanout_puts} puts)");
    println!();
    println!("| handles | p50 | p99 | p50 ratio (target ≤ 1.2x) |");
    println!("|---|---|---|---|");
    let (o50, o99) = (percentile(&one, 0.5), percentile(&one, 0.99));
    let (m50, m99) = (percentile(&many, 0.5), percentile(&many, 0.99));
    println!("| 1 | {:.0} | {:.0} | |", us(o50), us(o99));
    println!(
        "| {handles} | {:.0} | {:.0} | {:.2}x |",
        us(m50),
        us(m99),
        us(m50) / us(o50)
    );
    println!();
    println!("## Reload latency of a small config, history on (µs; interleaved with raw)");
    println!();
    println!("| path | puts | p50 | p99 | raw p50 | raw p99 | Δp50 | Δp99 | p50 ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "{}",
        small.row("put → snapshot (target Δp50 ≤ +50, Δp99 ≤ +200)")
    );
    let d50 = us(percentile(&small.cfg, 0.5)) - us(percentile(&small.raw, 0.5));
    let d99 = us(percentile(&small.cfg, 0.99)) - us(percentile(&small.raw, 0.99));
    println!();
    println!(
        "reload latency target met this run: {}",
        if d50 <= 50.0 && d99 <= 200.0 {
            "yes"
        } else {
            "no"
        }
    );
    drop(etcd);
}
