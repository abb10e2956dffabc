//! Versioned history against real etcd: recording by several instances, publish, concurrent
//! publishes, rollback and convergence, retention, diffs with secrets, a 10,000-key prefix.
//! Changes by "other clients" are made with the `etcdctl` binary.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use coordination::{Config, ConfigOptions, CoordConfig, ErrorKind, Version, VersionSource};
use etcd_client::{Client, Txn, TxnOp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::{eventually_async, read_prefix_raw, Etcd};

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
    ConfigOptions::new().no_file().no_env()
}

async fn seed(etcd: &Etcd) -> i64 {
    etcd.put(&key("port"), "8080");
    etcd.put(&key("database/host"), "db1");
    etcd.put(&key("version"), "1.0")
}

async fn bind(etcd: &Etcd, options: ConfigOptions) -> Config<HistConfig> {
    etcd.coordinator()
        .await
        .config_with(options)
        .await
        .expect("bind")
}

/// Waits until the newest recorded version is at least `revision`; returns the history.
async fn history_reaching(cfg: &Config<HistConfig>, revision: i64) -> Vec<Version> {
    let ok = eventually_async(WAIT, || async {
        cfg.history()
            .await
            .is_ok_and(|h| h.last().is_some_and(|v| v.revision >= revision))
    })
    .await;
    assert!(ok, "history never reached revision {revision}");
    cfg.history().await.unwrap()
}

async fn converged(handles: &[&Config<HistConfig>], revision: i64) {
    for (i, cfg) in handles.iter().enumerate() {
        let ok = support::eventually(WAIT, || cfg.load().revision() >= revision).await;
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
    assert_eq!(bound[0].source, VersionSource::External);
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
        .all(|v| v.source == VersionSource::External && v.author.is_none()));

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

    let base = cfg.load().value().clone();
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
        let err = cfg.publish(&bad, "alice", "bad").await.unwrap_err();
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
        .publish(&good, "alice", "raise the pool")
        .await
        .unwrap()
        .expect("a new version");
    assert_eq!(published.source, VersionSource::Publish);
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
        cfg.publish(&good, "alice", "again")
            .await
            .unwrap()
            .is_none(),
        "publishing the same value writes nothing"
    );
}

/// The audit metadata travels in the publish's own transaction, so whichever instance records
/// the revision records it as a publish by its author.
#[tokio::test]
async fn a_publish_is_recorded_with_its_author_by_any_instance() {
    let etcd = Etcd::start().await;
    let rev = seed(&etcd).await;
    let silent = bind(&etcd, options().no_history()).await;
    let recorder = bind(&etcd, options()).await;
    history_reaching(&recorder, rev).await;
    let mut value = silent.load().value().clone();
    value.port = 7000;
    let published = silent
        .publish(&value, "grace", "from an instance that records nothing")
        .await
        .unwrap()
        .unwrap();
    let history = history_reaching(&recorder, published.revision).await;
    let last = history.last().unwrap();
    assert_eq!(last.revision, published.revision);
    assert_eq!(last.source, VersionSource::Publish);
    assert_eq!(last.author.as_deref(), Some("grace"));
    assert_eq!(
        last.comment.as_deref(),
        Some("from an instance that records nothing")
    );
}

#[tokio::test]
async fn concurrent_publishes_exactly_one_conflicts() {
    let etcd = Etcd::start().await;
    let rev = seed(&etcd).await;
    let one = bind(&etcd, options()).await;
    let two = bind(&etcd, options()).await;
    history_reaching(&two, rev).await;
    let mut a = one.load().value().clone();
    a.port = 1111;
    let mut b = two.load().value().clone();
    b.port = 2222;
    let (ra, rb) = tokio::join!(one.publish(&a, "a", ""), two.publish(&b, "b", ""));
    let (winner, loser, port) = match (ra, rb) {
        (Ok(Some(v)), Err(e)) => (v, e, "1111"),
        (Err(e), Ok(Some(v))) => (v, e, "2222"),
        other => panic!("expected exactly one conflict, got {other:?}"),
    };
    assert_eq!(loser.kind(), ErrorKind::Conflict, "{loser}");
    let value = etcd.etcdctl(&["get", "--print-value-only", &key("port")]);
    assert_eq!(String::from_utf8_lossy(&value.stdout).trim(), port);
    let history = history_reaching(&one, winner.revision).await;
    let publishes = history
        .iter()
        .filter(|v| v.source == VersionSource::Publish)
        .count();
    assert_eq!(publishes, 1);

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
    let mut changed = a.load().value().clone();
    changed.database.pool = 42;
    let last = a
        .publish(&changed, "carol", "tune")
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
    assert_eq!(restored.source, VersionSource::Rollback);
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
    let cfg = bind(&etcd, options().history_keep(3)).await;
    let first = history_reaching(&cfg, 1).await[0].revision;
    let mut last = 0;
    for port in 8001..8007 {
        last = etcd.put(&key("port"), &port.to_string());
        history_reaching(&cfg, last).await;
    }
    let ok = eventually_async(WAIT, || async {
        cfg.history().await.is_ok_and(|h| h.len() == 3)
    })
    .await;
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
    let cfg = bind(&etcd, options().history_max_age(Duration::from_secs(2))).await;
    history_reaching(&cfg, 1).await;
    etcd.put(&key("port"), "8001");
    let last = etcd.put(&key("port"), "8002");
    let history = history_reaching(&cfg, last).await;
    assert_eq!(history.len(), 3, "young versions stay: {history:?}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let newest = etcd.put(&key("port"), "8003");
    let ok = eventually_async(WAIT, || async {
        cfg.history()
            .await
            .is_ok_and(|h| h.iter().map(|v| v.revision).collect::<Vec<_>>() == [newest])
    })
    .await;
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
    let v1 = cfg.publish(&one, "erin", "v1").await.unwrap().unwrap();
    converged(&[&cfg], v1.revision).await;
    let mut two = one.clone();
    two.port = 7070;
    two.database.pool = 20;
    two.database.password = "second-password-value".into();
    two.api_token = "second-token-value".into();
    two.features.insert("beta".into(), true);
    let v2 = cfg.publish(&two, "erin", "v2").await.unwrap().unwrap();

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
    let cfg: Config<BigConfig> = etcd
        .coordinator()
        .await
        .config_with(ConfigOptions::new().no_file().no_env())
        .await
        .unwrap();
    let ok = eventually_async(WAIT, || async {
        cfg.history().await.is_ok_and(|h| h.len() == 1)
    })
    .await;
    assert!(ok);
    let v0 = cfg.history().await.unwrap()[0].clone();
    assert_eq!(v0.keys, 10_000);
    assert!(v0.chunks >= 1, "a big record is chunked: {v0:?}");
    assert_eq!(v0.base, None);

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
    let ok = eventually_async(WAIT, || async {
        cfg.history()
            .await
            .is_ok_and(|h| h.last().is_some_and(|v| v.revision == last))
    })
    .await;
    assert!(ok);
    let history = cfg.history().await.unwrap();
    let deltas: Vec<&Version> = history.iter().filter(|v| v.base.is_some()).collect();
    assert_eq!(
        deltas.iter().map(|v| v.revision).collect::<Vec<_>>(),
        vec![changed, last],
        "small changes to a big prefix are recorded as deltas"
    );
    let ok = support::eventually(WAIT, || cfg.load().revision() == last).await;
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
    let ok = support::eventually(WAIT, || cfg.load().revision() == restored.revision).await;
    assert!(ok);
    assert_eq!(cfg.load().routes.len(), 10_000);
    assert_eq!(cfg.load().routes["r00000"], "backend-0.internal:8080");
    let history = cfg.history().await.unwrap();
    let rollbacks: Vec<Option<(u32, u32)>> = history
        .iter()
        .filter(|v| v.source == VersionSource::Rollback)
        .map(|v| v.batch)
        .collect();
    assert_eq!(rollbacks, vec![Some((1, 2)), Some((2, 2))]);
    assert!(cfg
        .diff(v0.revision, restored.revision)
        .await
        .unwrap()
        .is_empty());
}
