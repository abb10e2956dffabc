//! Versioned history against real etcd: recording by several instances, publish, concurrent
//! publishes, rollback and convergence, retention, diffs with secrets, a 10,000-key prefix.
//! Changes by "other clients" are made with the `etcdctl` binary.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use coordination::history::{HistoryOptions, Version, VersionKind};
use coordination::{ConfigHandle, ConfigOptions, CoordConfig, ErrorKind};
use etcd_client::{Client, Txn, TxnOp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::{read_prefix_raw, Etcd};

const P: &str = "/apps/hist/config";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(
    prefix = "/apps/hist/config",
    secrets = "database.password",
    validate = "HistConfig::check"
)]
struct HistConfig {
    #[schemars(range(min = 1))]
    port: u16,
    database: Db,
    #[serde(default)]
    version: String,
    #[coord(secret)]
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z0-9-]*$"))]
    api_token: String,
    #[serde(default)]
    features: BTreeMap<String, bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Db {
    host: String,
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 100))]
    pool: u32,
    #[serde(default)]
    password: String,
}

fn default_pool() -> u32 {
    10
}

impl HistConfig {
    fn check(&self) -> Result<(), String> {
        if self.database.host == "localhost" {
            return Err("database.host must not be localhost".into());
        }
        Ok(())
    }
}

fn key(rel: &str) -> String {
    format!("{P}/{rel}")
}

fn record_key(revision: i64) -> String {
    format!("/__coordination/history{P}/versions/{revision:020}")
}

fn options() -> ConfigOptions {
    ConfigOptions::new().without_file().without_env()
}

async fn seed(etcd: &Etcd) -> i64 {
    etcd.put(&key("port"), "8080");
    etcd.put(&key("database/host"), "db1");
    etcd.put(&key("version"), "1.0")
}

async fn bind(etcd: &Etcd, options: ConfigOptions) -> ConfigHandle<HistConfig> {
    etcd.coordinator()
        .await
        .config_with(options)
        .await
        .expect("bind")
}

/// Waits until the newest recorded version is at least `revision`; returns the history.
async fn history_reaching(cfg: &ConfigHandle<HistConfig>, revision: i64) -> Vec<Version> {
    let ok = eventually!(WAIT, {
        cfg.history()
            .await
            .is_ok_and(|h| h.last().is_some_and(|v| v.revision >= revision))
    });
    assert!(ok, "history never reached revision {revision}");
    cfg.history().await.unwrap()
}

async fn converged(handles: &[&ConfigHandle<HistConfig>], revision: i64) {
    for (i, cfg) in handles.iter().enumerate() {
        let ok = eventually!(WAIT, cfg.load().revision() >= revision);
        assert!(ok, "handle {i} never reached revision {revision}");
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

async fn raw_prefix(etcd: &Etcd, prefix: &str) -> Vec<(String, String)> {
    read_prefix_raw(etcd, prefix)
        .await
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect()
}

#[tokio::test]
async fn three_handles_record_each_revision_once_and_etcdctl_writes_as_external() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let a = bind(&etcd, options()).await;
    let b = bind(&etcd, options()).await;
    let c = bind(&etcd, options()).await;
    let bound = history_reaching(&a, 1).await;
    assert_eq!(bound.len(), 1, "three binds record the current state once");
    assert_eq!(bound[0].kind, VersionKind::External);
    assert_eq!(bound[0].keys, 3);

    let r1 = etcd.put(&key("port"), "8081");
    let r2 = etcd.txn(&[
        &format!("put {} db2", key("database/host")),
        &format!("put {} true", key("features/beta")),
        &format!("del {}", key("version")),
    ]);
    let r3 = etcd.put(&key("database/pool"), "500"); // rejected by every handle, still recorded
    let r4 = etcd.del(&key("database/pool"));
    converged(&[&a, &b, &c], r4).await;
    let history = history_reaching(&c, r4).await;
    let revisions: Vec<i64> = history.iter().map(|v| v.revision).collect();
    assert_eq!(revisions, vec![bound[0].revision, r1, r2, r3, r4]);
    assert!(history
        .iter()
        .all(|v| v.kind == VersionKind::External && v.author.is_none()));

    // Exactly once: every record key was created once and never overwritten.
    let mut client = etcd.client().await;
    for revision in &revisions {
        let resp = client.get(record_key(*revision), None).await.unwrap();
        assert_eq!(resp.kvs()[0].version(), 1, "record {revision} written once");
    }

    // Plain JSON for etcdctl, holding the exact key set (deletions included).
    let out = etcd.etcdctl(&["get", "--print-value-only", &record_key(r2)]);
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["revision"], r2);
    assert_eq!(record["source"], "external");
    assert_eq!(
        record["kvs"],
        serde_json::json!([
            ["database/host", "db2"],
            ["features/beta", "true"],
            ["port", "8081"]
        ])
    );

    // The schema is published next to the config.
    let out = etcd.etcdctl(&[
        "get",
        "--print-value-only",
        "/__coordination/schema/apps/hist/config",
    ]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["port"].is_object(), "{schema}");
    assert_eq!(
        schema["x-coordination"]["secrets"],
        serde_json::json!(["database.password", "api_token"])
    );

    // The last applied snapshots are kept in memory (the rejected r3 is not one).
    let recent: Vec<i64> = a.recent().iter().map(|s| s.revision()).collect();
    assert_eq!(&recent[recent.len() - 3..], &[r1, r2, r4]);
}

#[tokio::test]
async fn publish_validates_first_and_writes_keys_that_read_back() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let legacy = etcd.put(&key("legacy/x"), "1");
    let cfg = bind(&etcd, options()).await;
    history_reaching(&cfg, legacy).await;
    let mut client = etcd.client().await;
    let before = current_revision(&mut client).await;

    let snapshot = cfg.load_full();
    let base = snapshot.value().clone();
    let mut pool = base.clone();
    pool.database.pool = 500;
    let mut host = base.clone();
    host.database.host = "localhost".into();
    let mut token = base.clone();
    token.api_token = "NOT A VALID TOKEN".into();
    for (bad, field) in [
        (pool, Some("database.pool")),
        (host, None),
        (token, Some("api_token")),
    ] {
        let err = cfg
            .publish_at(snapshot.revision(), &bad, "alice", "bad")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
        if let Some(field) = field {
            assert_eq!(err.field(), Some(field), "{err}");
        }
        assert!(
            !format!("{err:#} {err:?}").contains("NOT A VALID"),
            "{err:?}"
        );
    }
    assert_eq!(
        current_revision(&mut client).await,
        before,
        "an invalid publish writes nothing"
    );

    let mut good = base.clone();
    good.port = 9000;
    good.version = "1.10".into();
    good.database.pool = 20;
    good.features.insert("beta".into(), true);
    let published = cfg
        .publish_at(snapshot.revision(), &good, "alice", "raise the pool")
        .await
        .unwrap()
        .expect("a new version");
    assert_eq!(published.kind, VersionKind::Publish);
    assert_eq!(published.author.as_deref(), Some("alice"));
    assert_eq!(published.comment.as_deref(), Some("raise the pool"));
    converged(&[&cfg], published.revision).await;
    assert_eq!(cfg.load().value(), &good);
    assert_eq!(
        raw_prefix(&etcd, &format!("{P}/")).await,
        vec![
            (key("api_token"), "\"\"".to_string()),
            (key("database/host"), "db1".to_string()),
            (key("database/password"), "\"\"".to_string()),
            (key("database/pool"), "20".to_string()),
            (key("features/beta"), "true".to_string()),
            (key("port"), "9000".to_string()),
            (key("version"), "\"1.10\"".to_string()),
        ],
        "one key per leaf; `legacy/x` no longer belongs"
    );
    let history = history_reaching(&cfg, published.revision).await;
    assert_eq!(history.last(), Some(&published));
    assert!(
        cfg.overwrite(&good, "alice", "again")
            .await
            .unwrap()
            .is_none(),
        "publishing the same value writes nothing"
    );
}

/// `HistoryOptions::with_recent_snapshots(k)` bounds `recent()` to the last `k` applied snapshots,
/// also on a handle that records nothing (`record(false)`: no versions, no schema).
#[tokio::test]
async fn keep_snapshots_bounds_recent_also_on_a_handle_that_does_not_record() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let history = HistoryOptions::new()
        .with_recent_snapshots(2)
        .with_recording(false);
    let cfg = bind(&etcd, options().with_history(history)).await;
    let mut revisions = Vec::new();
    for port in 9000..9004 {
        revisions.push(etcd.put(&key("port"), &port.to_string()));
    }
    let last = *revisions.last().unwrap();
    let ok = eventually!(WAIT, { cfg.load().revision() >= last });
    assert!(ok, "never applied {last}");
    let recent: Vec<i64> = cfg.recent().iter().map(|s| s.revision()).collect();
    assert_eq!(recent, revisions[2..].to_vec());
    assert!(cfg.history().await.unwrap().is_empty());
    let out = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/__coordination/"]);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The audit metadata travels in the publish's own transaction, so whichever instance records
/// the revision records it as a publish by its author.
#[tokio::test]
async fn a_publish_is_recorded_with_its_author_by_any_instance() {
    let etcd = Etcd::start().await;
    let rev = seed(&etcd).await;
    let silent = bind(&etcd, options().without_history()).await;
    let recorder = bind(&etcd, options()).await;
    history_reaching(&recorder, rev).await;
    let mut draft = silent.draft();
    draft.port = 7000;
    let published = draft
        .publish("grace", "from an instance that records nothing")
        .await
        .unwrap()
        .unwrap();
    let history = history_reaching(&recorder, published.revision).await;
    let last = history.last().unwrap();
    assert_eq!(last.revision, published.revision);
    assert_eq!(last.kind, VersionKind::Publish);
    assert_eq!(last.author.as_deref(), Some("grace"));
    assert_eq!(
        last.comment.as_deref(),
        Some("from an instance that records nothing")
    );
}

/// Two handles publish drafts taken from the same snapshot: whatever the timing, exactly one
/// wins and the other conflicts (its draft never overwrites a change it did not see). Repeated
/// 100 times, each round on the state the previous one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_exactly_one_conflicts() {
    let etcd = Etcd::start().await;
    let rev = seed(&etcd).await;
    let one = bind(&etcd, options()).await;
    let two = bind(&etcd, options()).await;
    history_reaching(&two, rev).await;
    let mut client = etcd.client().await;
    let mut last = 0;
    for round in 0..100u16 {
        let (pa, pb) = (2000 + 2 * round, 2001 + 2 * round);
        let mut a = one.draft();
        a.port = pa;
        let mut b = two.draft();
        b.port = pb;
        let (ra, rb) = tokio::join!(a.publish("a", ""), b.publish("b", ""));
        let (winner, loser, port) = match (ra, rb) {
            (Ok(Some(v)), Err(e)) => (v, e, pa),
            (Err(e), Ok(Some(v))) => (v, e, pb),
            other => panic!("round {round}: expected exactly one conflict, got {other:?}"),
        };
        last = winner.revision;
        assert_eq!(loser.kind(), ErrorKind::Conflict, "round {round}: {loser}");
        let value = client.get(key("port"), None).await.unwrap();
        assert_eq!(
            value.kvs()[0].value_str().unwrap(),
            port.to_string(),
            "round {round}"
        );
        converged(&[&one, &two], winner.revision).await;
        assert_eq!(one.load().port, port);
        assert_eq!(two.load().port, port);
    }
    let history = history_reaching(&one, last).await;
    let recorded = history
        .iter()
        .filter(|v| v.kind == VersionKind::Publish)
        .count();
    assert_eq!(recorded, 100, "every winning publish is one version");

    // publish_at guards with the caller's own snapshot: a later change by anyone conflicts.
    let seen = one.load_full();
    let rev = etcd.put(&key("version"), "2.0");
    converged(&[&one], rev).await;
    let mut stale = seen.value().clone();
    stale.database.pool = 33;
    let err = one
        .publish_at(seen.revision(), &stale, "a", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let fresh = one.load_full();
    let mut current = fresh.value().clone();
    current.database.pool = 33;
    let v = one
        .publish_at(fresh.revision(), &current, "a", "")
        .await
        .unwrap()
        .unwrap();
    converged(&[&one], v.revision).await;
    assert_eq!(one.load().database.pool, 33);
    assert_eq!(one.load().version, "2.0");
}

/// `update` re-runs its closure on the fresh snapshot after a conflict, so concurrent
/// increments from two handles all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_are_retried_and_none_is_lost() {
    let etcd = Etcd::start().await;
    let rev = seed(&etcd).await;
    let one = bind(&etcd, options()).await;
    let two = bind(&etcd, options()).await;
    history_reaching(&two, rev).await;
    let start = one.load().database.pool;
    let bump = |cfg: ConfigHandle<HistConfig>, who: &'static str| async move {
        let mut last = 0;
        for _ in 0..5 {
            last = cfg
                .update(|c| c.database.pool += 1, who, "one more")
                .await
                .expect("update")
                .expect("a new version")
                .revision;
        }
        last
    };
    let (la, lb) = tokio::join!(bump(one.clone(), "a"), bump(two.clone(), "b"));
    let mut client = etcd.client().await;
    let value = client.get(key("database/pool"), None).await.unwrap();
    assert_eq!(
        value.kvs()[0].value_str().unwrap(),
        (start + 10).to_string()
    );
    converged(&[&one, &two], la.max(lb)).await;
    let ok = eventually!(WAIT, {
        one.load().database.pool == start + 10 && two.load().database.pool == start + 10
    });
    assert!(ok, "both handles see every increment");
}

#[tokio::test]
async fn rollback_restores_the_exact_key_set_and_every_handle_converges() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let handles = [
        bind(&etcd, options()).await,
        bind(&etcd, options()).await,
        bind(&etcd, options()).await,
    ];
    let [a, b, c] = &handles;
    let v0 = history_reaching(a, 1).await[0].clone();
    let original = raw_prefix(&etcd, &format!("{P}/")).await;
    let original_value = a.load().value().clone();

    etcd.put(&key("port"), "9090");
    etcd.put(&key("features/beta"), "true"); // a key added after v0: must disappear
    let deleted = etcd.del(&key("version"));
    converged(&[a], deleted).await;
    let last = a
        .update(|c| c.database.pool = 42, "carol", "tune")
        .await
        .unwrap()
        .expect("a new version")
        .revision;
    converged(&[a, b, c], last).await;
    assert_ne!(raw_prefix(&etcd, &format!("{P}/")).await, original);

    let restored = b
        .rollback_to(v0.revision, "bob", "undo everything")
        .await
        .unwrap()
        .expect("a new version");
    assert_eq!(restored.kind, VersionKind::Rollback);
    assert_eq!(restored.restored_from, Some(v0.revision));
    assert_eq!(restored.author.as_deref(), Some("bob"));
    assert_eq!(
        raw_prefix(&etcd, &format!("{P}/")).await,
        original,
        "exact keys and bytes of v0"
    );
    converged(&[a, b, c], restored.revision).await;
    for cfg in &handles {
        assert_eq!(cfg.load().value(), &original_value);
        assert_eq!(cfg.load().revision(), restored.revision);
    }
    let history = history_reaching(c, restored.revision).await;
    assert_eq!(history.last(), Some(&restored));
    assert!(a
        .diff(v0.revision, restored.revision)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn rollback_to_a_pruned_or_unknown_version_is_not_found() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let cfg = bind(
        &etcd,
        options().with_history(HistoryOptions::new().with_max_versions(3)),
    )
    .await;
    let first = history_reaching(&cfg, 1).await[0].revision;
    let mut last = 0;
    for port in 8001..8007 {
        last = etcd.put(&key("port"), &port.to_string());
        history_reaching(&cfg, last).await;
    }
    let ok = eventually!(WAIT, { cfg.history().await.is_ok_and(|h| h.len() == 3) });
    assert!(ok, "pruned to 3: {:?}", cfg.history().await);
    let history = cfg.history().await.unwrap();
    assert_eq!(history.last().unwrap().revision, last);

    for gone in [first, 999_999] {
        let err = cfg.rollback_to(gone, "dave", "").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        let err = cfg.diff(gone, last).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
    let oldest = history[0].revision;
    let restored = cfg.rollback_to(oldest, "dave", "").await.unwrap().unwrap();
    converged(&[&cfg], restored.revision).await;
    assert_eq!(cfg.load().port, 8004);
}

#[tokio::test]
async fn max_age_prunes_old_versions_but_always_keeps_the_newest() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let cfg = bind(
        &etcd,
        options().with_history(HistoryOptions::new().with_max_age(Duration::from_secs(2))),
    )
    .await;
    history_reaching(&cfg, 1).await;
    etcd.put(&key("port"), "8001");
    let last = etcd.put(&key("port"), "8002");
    let history = history_reaching(&cfg, last).await;
    assert_eq!(history.len(), 3, "young versions stay: {history:?}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let newest = etcd.put(&key("port"), "8003");
    let ok = eventually!(WAIT, {
        cfg.history()
            .await
            .is_ok_and(|h| h.iter().map(|v| v.revision).collect::<Vec<_>>() == [newest])
    });
    assert!(ok, "only the newest is left: {:?}", cfg.history().await);
}

#[tokio::test]
async fn diff_lists_exactly_the_changed_paths_with_secrets_masked() {
    let etcd = Etcd::start().await;
    let rev = seed(&etcd).await;
    let cfg = bind(&etcd, options()).await;
    history_reaching(&cfg, rev).await;
    let mut one = cfg.load().value().clone();
    one.database.password = "first-password-value".into();
    one.api_token = "first-token-value".into();
    let v1 = cfg.overwrite(&one, "erin", "v1").await.unwrap().unwrap();
    converged(&[&cfg], v1.revision).await;
    let v2 = cfg
        .update(
            |two| {
                two.port = 7070;
                two.database.pool = 20;
                two.database.password = "second-password-value".into();
                two.api_token = "second-token-value".into();
                two.features.insert("beta".into(), true);
            },
            "erin",
            "v2",
        )
        .await
        .unwrap()
        .unwrap();

    let changes = cfg.diff(v1.revision, v2.revision).await.unwrap();
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "api_token",
            "database.password",
            "database.pool",
            "features.beta",
            "port"
        ]
    );
    let by_path: BTreeMap<&str, _> = changes.iter().map(|c| (c.path.as_str(), c)).collect();
    for secret in ["api_token", "database.password"] {
        let c = by_path[secret];
        assert!(c.secret);
        assert_eq!(c.old, Some(serde_json::json!("***")));
        assert_eq!(c.new, Some(serde_json::json!("***")));
    }
    assert_eq!(by_path["database.pool"].old, Some(serde_json::json!(10)));
    assert_eq!(by_path["database.pool"].new, Some(serde_json::json!(20)));
    assert_eq!(by_path["features.beta"].old, None);
    assert_eq!(by_path["port"].to_string(), "port: 8080 -> 7070");
    let shown = format!(
        "{changes:?} {}",
        changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for value in [
        "first-password",
        "second-password",
        "first-token",
        "second-token",
    ] {
        assert!(!shown.contains(value), "secret leaked: {shown}");
    }
    let admin = cfg.history_admin().unwrap();
    let (_, doc) = admin.document(Some(v2.revision)).await.unwrap();
    assert_eq!(doc["database"]["password"], "***");
    assert_eq!(doc["api_token"], "***");
    assert_eq!(doc["port"], 7070);
    let listing = format!("{:?}", cfg.history().await.unwrap());
    assert!(!listing.contains("second-token"), "{listing}");
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/big/config")]
struct BigConfig {
    routes: BTreeMap<String, String>,
}

const BIG: &str = "/apps/big/config/";

fn route(i: usize) -> String {
    format!("{BIG}routes/r{i:05}")
}

async fn txn(client: &mut Client, ops: Vec<TxnOp>) -> i64 {
    let resp = client.txn(Txn::new().and_then(ops)).await.unwrap();
    resp.header().unwrap().revision()
}

#[tokio::test]
async fn a_10000_key_prefix_is_versioned_and_rolled_back() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    for start in (0..10_000).step_by(100) {
        let ops = (start..start + 100)
            .map(|i| TxnOp::put(route(i), format!("backend-{i}.internal:8080"), None))
            .collect();
        txn(&mut client, ops).await;
    }
    let original = raw_prefix(&etcd, BIG).await;
    assert_eq!(original.len(), 10_000);
    let cfg: ConfigHandle<BigConfig> = etcd
        .coordinator()
        .await
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    let ok = eventually!(WAIT, { cfg.history().await.is_ok_and(|h| h.len() == 1) });
    assert!(ok);
    let v0 = cfg.history().await.unwrap()[0].clone();
    assert_eq!(v0.keys, 10_000);
    assert!(v0.storage().chunks >= 1, "a big record is chunked: {v0:?}");
    assert_eq!(v0.storage().base, None);

    // 100 values changed, 60 keys deleted, 20 keys added: 180 writes to undo.
    let changed = txn(
        &mut client,
        (0..100)
            .map(|i| TxnOp::put(route(i), "changed", None))
            .collect(),
    )
    .await;
    let mut ops: Vec<TxnOp> = (9_000..9_060)
        .map(|i| TxnOp::delete(route(i), None))
        .collect();
    ops.extend((0..20).map(|i| TxnOp::put(format!("{BIG}routes/new{i:02}"), "new", None)));
    let last = txn(&mut client, ops).await;
    let ok = eventually!(WAIT, {
        cfg.history()
            .await
            .is_ok_and(|h| h.last().is_some_and(|v| v.revision == last))
    });
    assert!(ok);
    let history = cfg.history().await.unwrap();
    let deltas: Vec<&Version> = history
        .iter()
        .filter(|v| v.storage().base.is_some())
        .collect();
    assert_eq!(
        deltas.iter().map(|v| v.revision).collect::<Vec<_>>(),
        vec![changed, last],
        "small changes to a big prefix are recorded as deltas"
    );
    let ok = eventually!(WAIT, cfg.load().revision() == last);
    assert!(ok);

    let restored = cfg
        .rollback_to(v0.revision, "frank", "undo the bulk edit")
        .await
        .unwrap()
        .expect("a new version");
    assert_eq!(restored.restored_from, Some(v0.revision));
    assert_eq!(
        restored.batch,
        Some((2, 2)),
        "180 writes take two transactions"
    );
    assert_eq!(raw_prefix(&etcd, BIG).await, original);
    let ok = eventually!(WAIT, cfg.load().revision() == restored.revision);
    assert!(ok);
    assert_eq!(cfg.load().routes.len(), 10_000);
    assert_eq!(cfg.load().routes["r00000"], "backend-0.internal:8080");
    let history = cfg.history().await.unwrap();
    let rollbacks: Vec<Option<(u32, u32)>> = history
        .iter()
        .filter(|v| v.kind == VersionKind::Rollback)
        .map(|v| v.batch)
        .collect();
    assert_eq!(rollbacks, vec![Some((1, 2)), Some((2, 2))]);
    assert!(cfg
        .diff(v0.revision, restored.revision)
        .await
        .unwrap()
        .is_empty());
}

/// When `bind()` returns, the JSON Schema and the bind-time version (at the snapshot's own
/// revision) are in etcd, a change made right after is recorded as its own version, and
/// `recent()` ends with the snapshot `load()` returns as soon as it is swapped in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_returns_with_schema_and_version_recorded_and_later_revisions_their_own() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    let cfg: ConfigHandle<HistConfig> = coord.config_with(options()).await.unwrap();
    let bound = cfg.load().revision();
    let first = client.put(key("port"), "8081", None).await.unwrap();
    let first = first.header().unwrap().revision();
    let schema = client
        .get("/__coordination/schema/apps/hist/config", None)
        .await
        .unwrap();
    assert_eq!(schema.kvs().len(), 1, "the schema is published at bind");
    let record = client.get(record_key(bound), None).await.unwrap();
    assert_eq!(
        record.kvs().len(),
        1,
        "the bind-time version is the snapshot's revision {bound}"
    );

    let history = history_reaching(&cfg, first).await;
    let revisions: Vec<(i64, usize)> = history.iter().map(|v| (v.revision, v.keys)).collect();
    assert_eq!(revisions, vec![(bound, 3), (first, 3)]);
    let admin = cfg.history_admin().unwrap();
    let changes = admin.diff(Some(bound), Some(first)).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].to_string(), "port: 8080 -> 8081");

    // A second handle bound on the same state records nothing new.
    let other: ConfigHandle<HistConfig> = coord.config_with(options()).await.unwrap();
    assert_eq!(other.history().await.unwrap().len(), 2);

    // recent() catches up with load() at once, not when the recorder gets to it.
    for port in 8100..8120u16 {
        let put = client
            .put(key("port"), port.to_string(), None)
            .await
            .unwrap();
        let revision = put.header().unwrap().revision();
        let deadline = std::time::Instant::now() + WAIT;
        while cfg.load().revision() < revision {
            assert!(
                std::time::Instant::now() < deadline,
                "never applied {revision}"
            );
            std::hint::spin_loop();
        }
        let recent = cfg.recent();
        let last = recent.last().unwrap();
        assert_eq!(last.revision(), cfg.load().revision(), "port {port}");
        assert_eq!(last.port, port);
        let generations: Vec<u64> = recent.iter().map(|s| s.generation()).collect();
        assert!(
            generations.windows(2).all(|w| w[0] < w[1]),
            "{generations:?}"
        );
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/wide/config")]
struct WideConfig {
    port: u16,
    flags: BTreeMap<String, bool>,
}

const WIDE: &str = "/apps/wide/config/";

/// `publish_at` an old revision on a prefix with more keys than fit in the compares of one
/// transaction, from a handle that records no history: a key deleted after that revision is a
/// conflict, not re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_at_an_old_revision_conflicts_on_a_delete_without_history() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let mut ops = vec![TxnOp::put(format!("{WIDE}port"), "8080", None)];
    ops.extend((0..12).map(|i| TxnOp::put(format!("{WIDE}flags/f{i:02}"), "true", None)));
    txn(&mut client, ops).await;
    let cfg: ConfigHandle<WideConfig> = etcd
        .coordinator()
        .await
        .config_with(
            ConfigOptions::new()
                .without_file()
                .without_env()
                .without_history()
                .with_max_txn_ops(8),
        )
        .await
        .unwrap();
    let seen = cfg.load_full();
    let deleted = client
        .delete(format!("{WIDE}flags/f03"), None)
        .await
        .unwrap();
    let deleted = deleted.header().unwrap().revision();
    let ok = eventually!(WAIT, cfg.load().revision() >= deleted);
    assert!(ok);

    let mut stale = seen.value().clone();
    stale.port = 9999;
    stale.flags.insert("f03".into(), false);
    let err = cfg
        .publish_at(seen.revision(), &stale, "a", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let now = raw_prefix(&etcd, WIDE).await;
    assert_eq!(now.len(), 12, "nothing re-created: {now:?}");
    assert!(now.contains(&(format!("{WIDE}port"), "8080".to_string())));
    assert_eq!(
        current_revision(&mut client).await,
        deleted,
        "nothing written"
    );

    // A draft of the current snapshot publishes, over the key set as it is now.
    let mut draft = cfg.draft();
    let fresh = cfg.load_full();
    draft.port = 9998;
    assert_eq!(draft.base().revision(), fresh.revision());
    let v = draft.publish("a", "").await.unwrap().unwrap();
    assert_eq!(v.keys, 12);
}

/// A patch (`update`, drafts) writes only the fields that changed: fields that come from an
/// instance's file stay that instance's, where a whole-value `publish_at` copies them into etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_writes_only_the_changed_fields_and_leaves_file_values_alone() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hist.yaml");
    std::fs::write(&file, "database:\n  pool: 30\nfeatures:\n  local: true\n").unwrap();
    let with_file = bind(&etcd, ConfigOptions::new().with_file(&file).without_env()).await;
    let plain = bind(&etcd, options()).await;
    assert_eq!(with_file.load().database.pool, 30);
    assert_eq!(plain.load().database.pool, 10);
    let before = raw_prefix(&etcd, &format!("{P}/")).await;

    let v = with_file
        .update(|c| c.port = 9001, "alice", "move")
        .await
        .unwrap()
        .expect("a new version");
    let mut expected = before.clone();
    for (k, value) in &mut expected {
        if *k == key("port") {
            *value = "9001".into();
        }
    }
    assert_eq!(
        raw_prefix(&etcd, &format!("{P}/")).await,
        expected,
        "only `port` is written"
    );
    converged(&[&with_file, &plain], v.revision).await;
    assert_eq!(plain.load().port, 9001);
    assert_eq!(plain.load().database.pool, 10, "the default still applies");
    assert_eq!(with_file.load().database.pool, 30, "the file still applies");
    assert!(plain.load().features.is_empty());

    // Removing a map entry deletes its key; adding one writes one key.
    etcd.put(&key("features/old"), "true");
    let v = with_file
        .update(
            |c| {
                c.features.remove("old");
                c.features.insert("new".into(), false);
            },
            "alice",
            "flags",
        )
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<String> = raw_prefix(&etcd, &format!("{P}/"))
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("features"))
        .collect();
    assert_eq!(keys, vec![key("features/new")]);
    converged(&[&plain], v.revision).await;
    assert_eq!(
        plain.load().features,
        BTreeMap::from([("new".to_string(), false)])
    );

    // Nothing changed: nothing written.
    assert!(with_file
        .update(|c| c.port = 9001, "alice", "again")
        .await
        .unwrap()
        .is_none());

    // A whole-value publish writes every leaf, the file's values and defaults included.
    let snapshot = with_file.load_full();
    let mut whole = snapshot.value().clone();
    whole.port = 9002;
    let v = with_file
        .publish_at(snapshot.revision(), &whole, "alice", "whole")
        .await
        .unwrap()
        .unwrap();
    converged(&[&plain], v.revision).await;
    assert_eq!(
        plain.load().database.pool,
        30,
        "the file's value is now etcd's"
    );
    assert_eq!(plain.load().features.get("local"), Some(&true));

    // An invalid update writes nothing and names the field.
    let err = plain
        .update(|c| c.database.pool = 500, "alice", "too many")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(err.field(), Some("database.pool"));
}

/// `HistoryOptions::with_max_age(Duration::MAX)` keeps everything instead of wrapping to a negative age.
#[tokio::test]
async fn an_unbounded_max_age_prunes_nothing() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let cfg = bind(
        &etcd,
        options().with_history(HistoryOptions::new().with_max_age(Duration::MAX)),
    )
    .await;
    let bound = history_reaching(&cfg, 1).await[0].revision;
    let r1 = etcd.put(&key("port"), "8001");
    let r2 = etcd.put(&key("port"), "8002");
    history_reaching(&cfg, r2).await;
    // Pruning runs right after each record, before the next revision is recorded.
    let r3 = etcd.put(&key("port"), "8003");
    let history = history_reaching(&cfg, r3).await;
    let revisions: Vec<i64> = history.iter().map(|v| v.revision).collect();
    assert_eq!(&revisions[..3], &[bound, r1, r2], "{revisions:?}");
}

/// The prefix's changes as a `Stream` (feature `stream`) and through `next()`: a call dropped
/// while it waits loses nothing, and the change that comes after reaches the next call.
#[cfg(feature = "stream")]
#[tokio::test]
async fn prefix_changes_are_a_stream_and_a_dropped_call_loses_no_change() {
    use futures_util::StreamExt;
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let _cfg = bind(&etcd, options()).await;
    let coord = etcd.coordinator().await;
    let history = coordination::history::ConfigHistory::open(&coord, P)
        .await
        .unwrap();
    let mut changes = history.changes().await.unwrap();
    let read_at = changes.revision();
    let waited = tokio::time::timeout(Duration::from_millis(300), changes.next()).await;
    assert!(waited.is_err(), "no change yet: {waited:?}");

    let rev = etcd.put(&key("port"), "8081");
    let change = tokio::time::timeout(WAIT, StreamExt::next(&mut changes))
        .await
        .expect("a change within the wait")
        .expect("the stream goes on");
    assert!(rev > read_at);
    assert_eq!((change.revision, change.keys), (rev, vec![key("port")]));
    assert_eq!(change.changes.len(), 1, "{:?}", change.changes);
    assert_eq!(changes.revision(), rev);

    let rev = etcd.put(&key("version"), "1.1");
    let change = tokio::time::timeout(WAIT, changes.next())
        .await
        .expect("a change within the wait")
        .expect("the stream goes on");
    assert_eq!((change.revision, change.keys), (rev, vec![key("version")]));
}
