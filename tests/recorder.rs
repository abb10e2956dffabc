//! The recorder seat against a real etcd, with handles in separate OS processes: one process
//! records a prefix's history, a standby in another process takes over when it is SIGKILLed
//! and records every revision made meanwhile (none missing, none twice) — or, when etcd
//! compacted them first, one version of the state they led to — and three bound processes cost
//! etcd one history write per config revision. Workers are re-runs of this
//! binary (the `worker` test, which does nothing unless `COORD_RECORDER_ROLE` is set).

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use coordination::history::HistoryOptions;
use coordination::{ConfigHandle, ConfigOptions, CoordConfig, Coordinator, CoordinatorOptions};
use etcd_client::{Client, GetOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::{Etcd, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLE: &str = "COORD_RECORDER_ROLE";
const ENDPOINT: &str = "COORD_RECORDER_ENDPOINT";
/// The recorder seat's lease TTL in these tests.
const TTL: Duration = Duration::from_secs(2);
const P: &str = "/apps/fail/config";
const VERSIONS: &str = "/__coordination/history/apps/fail/config/versions/";
const ELECTION: &str = "/__coordination/history/apps/fail/config/recorder";
const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/fail/config")]
struct FailConfig {
    #[serde(default)]
    n: u64,
}

fn options() -> ConfigOptions {
    ConfigOptions::new()
        .without_file()
        .without_env()
        .with_history(
            HistoryOptions::new()
                .with_recorder_ttl(TTL)
                .with_max_versions(1000),
        )
}

/// Worker entry point: a no-op in a normal test run; in a child process it binds the prefix
/// with history on, says so with its pid, and serves until its stdin closes (or it is killed).
#[tokio::test]
async fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "bound");
    let endpoint = std::env::var(ENDPOINT).unwrap();
    let coord = Coordinator::connect(CoordinatorOptions::new([endpoint]))
        .await
        .unwrap();
    let cfg: ConfigHandle<FailConfig> = coord.config_with(options()).await.unwrap();
    println!("@@ bound {} {}", std::process::id(), cfg.load().revision());
    let _ = tokio::task::spawn_blocking(|| {
        for line in std::io::stdin().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await;
    drop(cfg);
}

/// Starts `n` bound worker processes and waits until each has bound.
async fn bound_workers(etcd: &Etcd, n: usize) -> Vec<Proc> {
    let mut workers = Vec::new();
    for i in 0..n {
        let mut worker = Proc::worker(
            "worker",
            &[(ROLE, "bound".into()), (ENDPOINT, etcd.endpoint())],
            &format!("worker {i}"),
        );
        let line = worker.tagged(WAIT).await;
        assert!(line.starts_with("bound "), "worker {i}: {line}");
        workers.push(worker);
    }
    workers
}

/// The pid in the recorder seat's leader value (`pid N`), once somebody leads.
async fn recorder_pid(coord: &Coordinator, not: Option<u32>, limit: Duration) -> u32 {
    let election = coord.election(ELECTION);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(leader)) = election.leader().await {
            let pid = leader
                .value_str()
                .and_then(|v| v.strip_prefix("pid "))
                .and_then(|p| p.parse().ok())
                .expect("the seat's value is `pid N`");
            if Some(pid) != not {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new recorder within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every recorded revision, with how often its record key was written (its `version`).
async fn recorded(client: &mut Client) -> Vec<(i64, i64)> {
    let resp = client
        .get(VERSIONS, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            let rev = std::str::from_utf8(&kv.key()[VERSIONS.len()..])
                .unwrap()
                .parse()
                .unwrap();
            (rev, kv.version())
        })
        .collect()
}

async fn put(client: &mut Client, n: u64) -> i64 {
    client
        .put(format!("{P}/n"), n.to_string(), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Waits until a version at `revision` or later is recorded.
async fn recorded_up_to(client: &mut Client, revision: i64) -> Vec<(i64, i64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let versions = recorded(client).await;
        if versions.last().is_some_and(|(r, _)| *r >= revision) {
            return versions;
        }
        assert!(
            Instant::now() < deadline,
            "revision {revision} never recorded; recorded: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_recorder_is_replaced_and_no_revision_is_missing_or_recorded_twice() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    put(&mut client, 0).await;
    let workers = bound_workers(&etcd, 2).await;
    let pids: Vec<u32> = workers.iter().map(Proc::pid).collect();
    let first = recorder_pid(&coord, None, WAIT).await;
    let victim = pids
        .iter()
        .position(|p| *p == first)
        .expect("a worker records");
    let bound = recorded(&mut client).await;
    assert_eq!(
        bound.len(),
        1,
        "the bind recorded the state once: {bound:?}"
    );

    // A stream of writes; the recorder process is SIGKILLed a third of the way in.
    let mut stream = Vec::new();
    let mut takeover = None;
    for n in 1..=240u64 {
        stream.push(put(&mut client, n).await);
        if n == 80 {
            workers[victim].signal("KILL");
            let killed_at = Instant::now();
            let coord = coord.clone();
            takeover = Some(tokio::spawn(async move {
                let pid = recorder_pid(&coord, Some(first), TTL + Duration::from_secs(5)).await;
                (pid, killed_at.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let (second, handover) = takeover.unwrap().await.unwrap();
    assert_eq!(second, pids[1 - victim], "the standby process took over");
    assert!(
        handover <= TTL + Duration::from_secs(1),
        "the standby took over {handover:?} after the kill (lease TTL {TTL:?})"
    );

    let last = *stream.last().unwrap();
    let versions = recorded_up_to(&mut client, last).await;
    let revisions: BTreeSet<i64> = versions.iter().map(|(r, _)| *r).collect();
    let missing: Vec<i64> = stream
        .iter()
        .filter(|r| !revisions.contains(r))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "revisions missing from history: {missing:?}"
    );
    let twice: Vec<&(i64, i64)> = versions.iter().filter(|(_, v)| *v != 1).collect();
    assert!(
        twice.is_empty(),
        "record keys written more than once: {twice:?}"
    );
    let expected: BTreeSet<i64> = bound
        .iter()
        .map(|(r, _)| *r)
        .chain(stream.iter().copied())
        .collect();
    assert_eq!(
        revisions, expected,
        "exactly the bind-time version and one version per revision of the stream"
    );
    // The first put after the kill was recorded late, by the successor's replay: its record
    // was created after many later puts.
    let after_kill = stream[80];
    let resp = client
        .get(format!("{VERSIONS}{after_kill:020}"), None)
        .await
        .unwrap();
    let recorded_at = resp.kvs()[0].create_revision();
    let later_puts = stream.iter().filter(|r| **r < recorded_at).count() - 81;
    assert!(
        later_puts >= 20,
        "revision {after_kill} (the first put after the kill) was recorded at {recorded_at}, \
         only {later_puts} puts later: not by a successor that took over"
    );
    eprintln!(
        "revision {after_kill} recorded {later_puts} puts later, at revision {recorded_at}, by the successor"
    );
    eprintln!(
        "recorder {first} killed after 80 of 240 puts; {second} leads {handover:?} after the kill \
         (lease TTL {TTL:?}); {} versions, none missing, none twice",
        versions.len()
    );
}

/// `GET /metrics` (HTTP/1.0, so the body is not chunked) from etcd's client URL: the sum of `name`'s samples whose labels include
/// every one of `labels`.
async fn etcd_metric(etcd: &Etcd, name: &str, labels: &[&str]) -> f64 {
    let port: u16 = etcd.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bound_processes_cost_one_history_write_per_config_revision() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    put(&mut client, 0).await;
    let _workers = bound_workers(&etcd, 3).await;
    recorder_pid(&coord, None, WAIT).await;
    let before = recorded_up_to(&mut client, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    const TXN: &[&str] = &[r#"grpc_method="Txn""#];
    let txns_before = etcd_metric(&etcd, "grpc_server_handled_total", TXN).await;
    let puts = 60u64;
    let mut last = 0;
    for n in 1..=puts {
        last = put(&mut client, n).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = recorded_up_to(&mut client, last).await;
    // Give any instance that would record too the time to do so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let txns = etcd_metric(&etcd, "grpc_server_handled_total", TXN).await - txns_before;
    let per_revision = txns / puts as f64;
    eprintln!("3 bound processes: {txns} Txn requests for {puts} config revisions ({per_revision:.2} per revision)");
    assert_eq!(
        after.len() - before.len(),
        puts as usize,
        "every revision recorded once"
    );
    assert!(
        per_revision <= 1.1,
        "history cost {per_revision:.2} etcd transactions per config revision with 3 processes bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_records_the_state_once_when_the_missed_revisions_were_compacted() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    put(&mut client, 0).await;
    let workers = bound_workers(&etcd, 2).await;
    let first = recorder_pid(&coord, None, WAIT).await;
    let victim = workers.iter().position(|w| w.pid() == first).unwrap();
    let bound = recorded(&mut client).await;
    assert_eq!(bound.len(), 1, "{bound:?}");

    // The recorder dies; 20 revisions are made and compacted away before anyone records them.
    workers[victim].signal("KILL");
    let mut stream = Vec::new();
    for n in 1..=20u64 {
        stream.push(put(&mut client, n).await);
    }
    let last = *stream.last().unwrap();
    client.compact(last, None).await.unwrap();

    let second = recorder_pid(&coord, Some(first), TTL + Duration::from_secs(5)).await;
    assert_eq!(second, workers[1 - victim].pid());
    let versions = recorded_up_to(&mut client, last).await;
    let after_bind: Vec<i64> = versions
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| *r > bound[0].0)
        .collect();
    assert_eq!(
        after_bind,
        vec![last],
        "one version for the compacted revisions, holding the state they led to"
    );
    let out = etcd.etcdctl(&[
        "get",
        "--print-value-only",
        &format!("{VERSIONS}{last:020}"),
    ]);
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["source"], "external");
    assert_eq!(record["kvs"], serde_json::json!([["n", "20"]]));
}
