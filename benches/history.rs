//! History benchmark: prints one table from one run.
//!
//! 1. Record cost per applied revision: etcd put → snapshot applied with history off (the
//!    baseline) and on (3 instances), put → version recorded (1 and 3 instances racing to
//!    create it), and the etcd writes each config revision costs.
//! 2. Rollback time for a 10-key prefix and a 10,000-key prefix (10 keys differing, and all
//!    10,000 differing: 79 guarded transactions): until `rollback_to` returns and until the
//!    instance has applied the restored snapshot.
//!
//! Run with `cargo bench --bench history`. It starts its own etcd on a free loopback port.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coordination::history::HistoryOptions;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, Coordinator};
use etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/hist")]
struct Small {
    port: u64,
    #[serde(default)]
    name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/map")]
struct Map {
    #[serde(default)]
    routes: BTreeMap<String, String>,
}

const REVISIONS: usize = 200;

fn options() -> ConfigOptions {
    ConfigOptions::new().without_file().without_env()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Row {
    what: String,
    n: usize,
    p50: f64,
    p90: f64,
    max: f64,
    note: String,
}

fn row(what: &str, mut samples: Vec<Duration>, note: String) -> Row {
    samples.sort();
    let at = |p: f64| ms(samples[((samples.len() as f64 - 1.0) * p).round() as usize]);
    Row {
        what: what.to_string(),
        n: samples.len(),
        p50: at(0.5),
        p90: at(0.9),
        max: at(1.0),
        note,
    }
}

async fn bind<T: CoordConfig>(coord: &Coordinator, options: ConfigOptions) -> ConfigHandle<T> {
    coord.config_with(options).await.expect("bind")
}

async fn applied<T: CoordConfig>(sub: &mut coordination::config::Subscription<T>, revision: i64) {
    loop {
        match sub.next().await {
            Some(ConfigEvent::Applied(s)) if s.revision() >= revision => return,
            Some(_) => {}
            None => panic!("subscription closed"),
        }
    }
}

async fn current_revision(client: &mut Client) -> i64 {
    client
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Put → applied latencies for `REVISIONS` puts to `key`, waiting on every handle.
async fn put_to_applied<T: CoordConfig>(
    client: &mut Client,
    handles: &[ConfigHandle<T>],
    key: &str,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(REVISIONS);
    for i in 0..REVISIONS {
        let mut subs: Vec<_> = handles.iter().map(ConfigHandle::subscribe).collect();
        let start = Instant::now();
        let rev = client
            .put(key, (10_000 + i).to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        for sub in &mut subs {
            applied(sub, rev).await;
        }
        out.push(start.elapsed());
    }
    out
}

/// Put → record-created latencies, observed with a watch on the history directory.
async fn put_to_recorded(client: &mut Client, key: &str, versions_dir: &str) -> Vec<Duration> {
    let mut stream = client
        .watch(versions_dir, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut out = Vec::with_capacity(REVISIONS);
    for i in 0..REVISIONS {
        let start = Instant::now();
        let rev = client
            .put(key, (20_000 + i).to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let wanted = format!("{versions_dir}{rev:020}");
        'wait: loop {
            let resp = stream.message().await.unwrap().expect("watch open");
            for event in resp.events() {
                let created = event.event_type() == EventType::Put
                    && event.kv().is_some_and(|kv| kv.key() == wanted.as_bytes());
                if created {
                    break 'wait;
                }
            }
        }
        out.push(start.elapsed());
    }
    out
}

#[derive(Default, Debug)]
struct Writes {
    records: usize,
    prunes: usize,
    other: usize,
}

/// Classifies every etcd revision in `(before, after]` by what it wrote (replayed with a watch).
async fn classify_writes(client: &mut Client, before: i64, after: i64) -> Writes {
    let mut stream = client
        .watch(
            "/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(before + 1),
            ),
        )
        .await
        .unwrap();
    let mut by_revision: BTreeMap<i64, Vec<(EventType, String)>> = BTreeMap::new();
    while by_revision.keys().next_back().copied().unwrap_or(0) < after {
        let resp = stream.message().await.unwrap().expect("watch open");
        for event in resp.events() {
            if let Some(kv) = event.kv() {
                by_revision.entry(kv.mod_revision()).or_default().push((
                    event.event_type(),
                    String::from_utf8_lossy(kv.key()).into_owned(),
                ));
            }
        }
    }
    let mut writes = Writes::default();
    for (revision, events) in by_revision.range(..=after) {
        let history = events.iter().all(|(_, k)| k.contains("/versions/"));
        match events.first() {
            Some((_, k)) if k.starts_with("/bench/hist/") => {}
            Some((EventType::Put, _)) if history => {
                writes.records += 1;
            }
            Some((EventType::Delete, _)) if history => writes.prunes += 1,
            _ => {
                writes.other += 1;
                eprintln!("revision {revision}: {events:?}");
            }
        }
    }
    writes
}

async fn write_keys(client: &mut Client, keys: &[(String, String)]) -> i64 {
    let mut last = 0;
    for chunk in keys.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        last = client
            .txn(Txn::new().and_then(ops))
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    last
}

/// Rollback timings for a map of `size` keys of which `changed` differ from the target version.
async fn rollback_rows(
    client: &mut Client,
    coord: &Coordinator,
    size: usize,
    changed: usize,
    rounds: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let prefix = format!("/bench/map{size}x{changed}");
    let key = |i: usize| format!("{prefix}/routes/r{i:05}");
    let original: Vec<(String, String)> = (0..size)
        .map(|i| (key(i), format!("backend-{i}.internal:8080")))
        .collect();
    write_keys(client, &original).await;
    let cfg: ConfigHandle<Map> = bind(
        coord,
        options()
            .with_prefix(prefix.clone())
            .with_history(HistoryOptions::new().with_max_versions(1000)),
    )
    .await;
    let target = loop {
        if let Some(v) = cfg.history().await.unwrap().last() {
            break v.revision;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (mut returned, mut converged) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let edits: Vec<(String, String)> = (0..changed)
            .map(|i| (key(i * (size / changed)), format!("edited-{round}")))
            .collect();
        let rev = write_keys(client, &edits).await;
        while cfg.load().revision() < rev {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut sub = cfg.subscribe();
        let start = Instant::now();
        let version = cfg
            .rollback_to(target, "bench", "")
            .await
            .unwrap()
            .expect("something to restore");
        returned.push(start.elapsed());
        applied(&mut sub, version.revision).await;
        converged.push(start.elapsed());
    }
    (returned, converged)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let etcd = support::Etcd::start().await;
    let mut client = etcd.client().await;
    client.put("/bench/off/port", "1", None).await.unwrap();
    client.put("/bench/hist/port", "1", None).await.unwrap();
    let coords = [
        etcd.coordinator().await,
        etcd.coordinator().await,
        etcd.coordinator().await,
    ];
    let mut rows = Vec::new();

    // 1. Baselines: history off, 1 and 3 instances.
    let off: Vec<ConfigHandle<Small>> = vec![
        bind(
            &coords[0],
            options().with_prefix("/bench/off").without_history(),
        )
        .await,
        bind(
            &coords[1],
            options().with_prefix("/bench/off").without_history(),
        )
        .await,
        bind(
            &coords[2],
            options().with_prefix("/bench/off").without_history(),
        )
        .await,
    ];
    let base1 = put_to_applied(&mut client, &off[..1], "/bench/off/port").await;
    let base1_p50 = row("", base1.clone(), String::new()).p50;
    rows.push(row(
        "put → snapshot applied, 1 instance, history off",
        base1,
        "baseline A".into(),
    ));
    let base3 = put_to_applied(&mut client, &off, "/bench/off/port").await;
    let base3_p50 = row("", base3.clone(), String::new()).p50;
    rows.push(row(
        "put → snapshot applied on all 3 instances, history off",
        base3,
        "baseline B".into(),
    ));
    drop(off);

    // 2. One instance with history.
    let one: ConfigHandle<Small> = bind(&coords[0], options()).await;
    let versions_dir = "/__coordination/history/bench/hist/versions/";
    let recorded_one = put_to_recorded(&mut client, "/bench/hist/port", versions_dir).await;
    let r = row(
        "put → version recorded, 1 instance",
        recorded_one,
        String::new(),
    );
    let ratio = r.p50 / base1_p50;
    rows.push(Row {
        note: format!("{ratio:.2}x A"),
        ..r
    });

    // 3. Three instances racing to record each revision.
    let two: ConfigHandle<Small> = bind(&coords[1], options()).await;
    let three: ConfigHandle<Small> = bind(&coords[2], options()).await;
    let handles = [one.clone(), two.clone(), three.clone()];
    let applied3 = put_to_applied(&mut client, &handles, "/bench/hist/port").await;
    let r = row(
        "put → snapshot applied on all 3 instances, history on",
        applied3,
        String::new(),
    );
    let ratio = r.p50 / base3_p50;
    rows.push(Row {
        note: format!("{ratio:.2}x B (reloads do not wait for recording)"),
        ..r
    });
    // Let the recorders finish the revisions above before counting writes.
    let last = current_revision(&mut client).await;
    while one
        .history()
        .await
        .unwrap()
        .last()
        .is_none_or(|v| v.revision < last - 1)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = current_revision(&mut client).await;
    let recorded_three = put_to_recorded(&mut client, "/bench/hist/port", versions_dir).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = current_revision(&mut client).await;
    let r = row(
        "put → version recorded, 3 instances",
        recorded_three,
        String::new(),
    );
    let ratio = r.p50 / base1_p50;
    let writes = classify_writes(&mut client, before, after).await;
    let per = |n: usize| n as f64 / REVISIONS as f64;
    rows.push(Row {
        note: format!(
            "{ratio:.2}x A; per config revision: {:.2} record writes, {:.2} pruning txns, {:.2} other (retention: {} versions)",
            per(writes.records),
            per(writes.prunes),
            per(writes.other),
            one.history().await.unwrap().len()
        ),
        ..r
    });
    drop(handles);
    drop((one, two, three));

    // 4. Rollbacks.
    for (size, changed, rounds, label) in [
        (10, 10, 20, "rollback, 10-key prefix, all 10 keys differ"),
        (
            10_000,
            10,
            10,
            "rollback, 10,000-key prefix, 10 keys differ",
        ),
        (
            10_000,
            10_000,
            3,
            "rollback, 10,000-key prefix, all 10,000 differ (79 txns)",
        ),
    ] {
        let (returned, converged) =
            rollback_rows(&mut client, &coords[0], size, changed, rounds).await;
        rows.push(row(
            &format!("{label}: call returns"),
            returned,
            String::new(),
        ));
        rows.push(row(
            &format!("{label}: instance applied it"),
            converged,
            String::new(),
        ));
    }

    println!(
        "machine: {} CPUs ({}), etcd 3.4 on loopback, one run",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    println!();
    println!("| what | n | p50 ms | p90 ms | max ms | note |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} |",
            r.what, r.n, r.p50, r.p90, r.max, r.note
        );
    }
}
