//! Typed config bound to an etcd prefix: layers, hot reload, atomic transactions, validation.
//! Every test runs its own etcd; changes are made with the `etcdctl` binary where an operator
//! would use it.

#[macro_use]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordination::config::{Rejection, ReloadCause};
use coordination::provenance::{Layer, Origin, Source};
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, ErrorKind, Snapshot};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;

const P: &str = "/apps/chat/config";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(
    prefix = "/apps/chat/config",
    env_prefix = "CHAT_",
    validate = "ChatConfig::check"
)]
struct ChatConfig {
    #[schemars(range(min = 1))]
    port: u16,
    #[serde(default)]
    features: Features,
    database: Database,
    #[serde(default)]
    pair: Pair,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Features {
    #[serde(default)]
    chat: bool,
    #[serde(default = "default_greeting")]
    #[schemars(length(min = 1, max = 16))]
    greeting: String,
    #[serde(default)]
    version: String,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            chat: false,
            greeting: default_greeting(),
            version: String::new(),
        }
    }
}

fn default_greeting() -> String {
    "hello".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Database {
    host: String,
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 100))]
    pool: u32,
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z]+$"))]
    user: String,
}

fn default_pool() -> u32 {
    10
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Pair {
    left: i64,
    right: i64,
}

impl ChatConfig {
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

fn options() -> ConfigOptions {
    ConfigOptions::new()
        .without_file()
        .with_env_vars(Vec::<(String, String)>::new())
}

async fn seed(etcd: &Etcd) -> i64 {
    etcd.put(&key("port"), "8080");
    etcd.put(&key("database/host"), "db1")
}

async fn next_event(
    sub: &mut coordination::config::Subscription<ChatConfig>,
) -> ConfigEvent<ChatConfig> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event within 10 s")
        .expect("subscription open")
}

async fn next_applied(
    sub: &mut coordination::config::Subscription<ChatConfig>,
) -> Arc<Snapshot<ChatConfig>> {
    match next_event(sub).await {
        ConfigEvent::Applied(s) => s,
        other => panic!("expected an applied snapshot, got {other:?}"),
    }
}

async fn next_rejected(sub: &mut coordination::config::Subscription<ChatConfig>) -> Arc<Rejection> {
    match next_event(sub).await {
        ConfigEvent::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn initial_load_merges_layers_by_precedence_with_provenance() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.yaml");
    std::fs::write(
        &file,
        "port: 1000\ndatabase:\n  host: file-host\n  user: fileuser\nfeatures:\n  chat: true\n",
    )
    .unwrap();
    let doc_rev = etcd.put(&key("database"), r#"{"host": "doc-host", "pool": 20}"#);
    let host_rev = etcd.put(&key("database/host"), "etcd-host");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord
        .config_with(
            ConfigOptions::new()
                .with_file(&file)
                .with_env_vars([("CHAT_PORT", "9090"), ("OTHER_PORT", "1")]),
        )
        .await
        .unwrap();
    let snap = cfg.load();
    assert_eq!(snap.port, 9090, "env beats file");
    assert_eq!(
        snap.database.host, "etcd-host",
        "deeper etcd key beats the document"
    );
    assert_eq!(snap.database.pool, 20, "etcd document beats default");
    assert_eq!(snap.database.user, "fileuser", "file beats default");
    assert!(snap.features.chat);
    assert_eq!(snap.features.greeting, "hello", "serde default");
    assert_eq!(snap.revision(), host_rev);
    assert_eq!(snap.generation(), 1);
    assert_eq!(snap.cause(), &ReloadCause::Initial);

    let port = snap.source("port");
    assert_eq!(port.layer, Layer::Env);
    assert_eq!(port.origin, Origin::Env("CHAT_PORT".into()));
    assert_eq!(port.origin.key().as_deref(), Some("CHAT_PORT"));
    let host = snap.source("database.host");
    assert_eq!(host.layer, Layer::Etcd);
    assert_eq!(
        host.origin,
        Origin::Etcd {
            key: key("database/host"),
            mod_revision: host_rev
        }
    );
    assert_eq!(host.revision, Some(host_rev));
    assert_eq!(
        host.to_string(),
        format!("etcd `{}` @{host_rev}", key("database/host"))
    );
    assert_eq!(
        snap.source("database.pool").origin,
        Origin::Etcd {
            key: key("database"),
            mod_revision: doc_rev
        }
    );
    let user = snap.source("database.user");
    assert_eq!(
        (user.layer, &user.origin),
        (Layer::File, &Origin::File(file.clone()))
    );
    assert_eq!(user.revision, None);
    assert_eq!(snap.source("features.greeting"), &Source::DEFAULT);
    assert_eq!(snap.source("features.greeting").origin, Origin::Default);
    assert_eq!(cfg.prefix(), format!("{P}/"));
}

#[tokio::test]
async fn etcdctl_put_hot_reloads_with_its_revision() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    assert_eq!(cfg.load().port, 8080);
    let mut sub = cfg.subscribe();
    let rev = etcd.put(&key("port"), "8081");
    let snap = next_applied(&mut sub).await;
    assert_eq!(snap.port, 8081);
    assert_eq!(snap.revision(), rev);
    assert_eq!(
        snap.cause(),
        &ReloadCause::Etcd {
            revision: rev,
            keys: vec![key("port")]
        }
    );
    assert_eq!(cfg.load().revision(), rev);
    assert_eq!(cfg.load().generation(), 2);
    // A string field keeps the text etcdctl wrote, even when YAML would read a number.
    etcd.put(&key("features/version"), "1.10");
    assert_eq!(next_applied(&mut sub).await.features.version, "1.10");
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/edge/config")]
struct EdgeConfig {
    #[serde(default)]
    port: u16,
    #[serde(default)]
    hosts: coordination::config::ConfigMap<Host>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Host {
    weight: u32,
}

#[tokio::test]
async fn a_map_key_holding_dots_reports_its_etcd_key_beside_a_file_and_after_a_reload() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.yaml");
    std::fs::write(&file, "port: 80\nhosts:\n  b.example.com:\n    weight: 1\n").unwrap();
    let host_key = "/apps/edge/config/hosts/api.example.com";
    let rev = etcd.put(host_key, "weight: 5");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<EdgeConfig> = coord
        .config_with(ConfigOptions::new().with_file(&file).without_env())
        .await
        .unwrap();
    let snap = cfg.load();
    assert_eq!(snap.hosts.get("api.example.com").unwrap().weight, 5);
    let etcd_source = |mod_revision| Origin::Etcd {
        key: host_key.to_string(),
        mod_revision,
    };
    assert_eq!(
        snap.source("hosts.api.example.com.weight").origin,
        etcd_source(rev)
    );
    assert_eq!(
        snap.source("hosts.b.example.com.weight").origin,
        Origin::File(file.clone())
    );

    let mut sub = cfg.subscribe();
    let rev = etcd.put(host_key, "weight: 6");
    let event = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    let Ok(Some(ConfigEvent::Applied(snap))) = event else {
        panic!("expected an applied snapshot within 10 s, got {event:?}");
    };
    assert_eq!(snap.hosts.get("api.example.com").unwrap().weight, 6);
    assert_eq!(
        snap.source("hosts.api.example.com.weight").origin,
        etcd_source(rev)
    );
}

#[tokio::test]
async fn bind_through_the_derive_and_namespace() {
    let etcd = Etcd::start().await;
    etcd.put("/tenant-a/apps/chat/config/port", "7000");
    etcd.put("/tenant-a/apps/chat/config/database", "host: ns-host");
    let coord = coordination::Coordinator::connect(
        coordination::CoordinatorOptions::new([etcd.endpoint()]).with_namespace("/tenant-a"),
    )
    .await
    .unwrap();
    let cfg = ChatConfig::bind(&coord).await.unwrap();
    assert_eq!(cfg.load().port, 7000);
    assert_eq!(cfg.load().database.host, "ns-host");
    assert_eq!(cfg.prefix(), "/tenant-a/apps/chat/config/");
}

#[tokio::test]
async fn multi_key_transaction_is_one_snapshot() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    let mut sub = cfg.subscribe();

    // One etcdctl txn that changes three keys arrives as one snapshot.
    let rev = etcd.txn(&[
        &format!("put {} 9000", key("port")),
        &format!("put {} db2", key("database/host")),
        &format!("put {} 50", key("database/pool")),
    ]);
    let snap = next_applied(&mut sub).await;
    assert_eq!(snap.revision(), rev);
    assert_eq!(
        (snap.port, snap.database.host.as_str(), snap.database.pool),
        (9000, "db2", 50)
    );
    match snap.cause() {
        ReloadCause::Etcd { keys, .. } => assert_eq!(keys.len(), 3),
        other => panic!("unexpected change {other:?}"),
    }

    // 1000 transactions that keep pair.left == pair.right; a reader thread checks the invariant
    // on every load() while they are applied.
    let stop = Arc::new(AtomicBool::new(false));
    let loads = Arc::new(AtomicU64::new(0));
    let reader = {
        let cfg = cfg.clone();
        let stop = Arc::clone(&stop);
        let loads = Arc::clone(&loads);
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let snap = cfg.load();
                assert_eq!(
                    snap.pair.left,
                    snap.pair.right,
                    "half-applied txn at {}",
                    snap.revision()
                );
                assert!(snap.pair.left >= last, "went backwards");
                last = snap.pair.left;
                loads.fetch_add(1, Ordering::Relaxed);
            }
            last
        })
    };
    let mut client = etcd.client().await;
    for i in 1..=1000i64 {
        let v = i.to_string();
        client
            .txn(etcd_client::Txn::new().and_then([
                etcd_client::TxnOp::put(key("pair/left"), v.clone(), None),
                etcd_client::TxnOp::put(key("pair/right"), v, None),
            ]))
            .await
            .unwrap();
    }
    let mut applied = 0;
    loop {
        let snap = next_applied(&mut sub).await;
        applied += 1;
        match snap.cause() {
            ReloadCause::Etcd { keys, .. } => {
                assert_eq!(keys.len(), 2, "both keys in one snapshot")
            }
            other => panic!("unexpected change {other:?}"),
        }
        if snap.pair.left == 1000 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let last = reader
        .join()
        .expect("reader saw no half-applied transaction");
    assert_eq!(applied, 1000, "one snapshot per transaction");
    assert!(last <= 1000);
    assert!(loads.load(Ordering::Relaxed) > 1000);
}

#[tokio::test]
async fn deleting_a_key_falls_back_to_the_next_layer() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.json");
    std::fs::write(&file, r#"{"database": {"host": "file-host", "pool": 5}}"#).unwrap();
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> =
        coord.config_with(options().with_file(&file)).await.unwrap();
    assert_eq!(cfg.load().database.host, "db1");
    let mut sub = cfg.subscribe();

    let rev = etcd.del(&key("database/host"));
    let snap = next_applied(&mut sub).await;
    assert_eq!(snap.revision(), rev);
    assert_eq!(snap.database.host, "file-host");
    assert_eq!(snap.source("database.host").layer, Layer::File);

    etcd.put(&key("features/greeting"), "hi");
    assert_eq!(next_applied(&mut sub).await.features.greeting, "hi");
    etcd.del(&key("features/greeting"));
    let snap = next_applied(&mut sub).await;
    assert_eq!(snap.features.greeting, "hello");
    assert_eq!(snap.source("features.greeting").layer, Layer::Default);
}

#[tokio::test]
async fn file_edits_reload_including_rename_replace() {
    let etcd = Etcd::start().await;
    etcd.put(&key("database/host"), "db1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.yaml");
    std::fs::write(&file, "port: 1000\n").unwrap();
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord
        .config_with(
            options()
                .with_file(&file)
                .with_file_debounce(Duration::from_millis(20)),
        )
        .await
        .unwrap();
    assert_eq!(cfg.load().port, 1000);
    let mut sub = cfg.subscribe();

    std::fs::write(&file, "port: 1001\n").unwrap();
    let snap = next_applied(&mut sub).await;
    assert_eq!(snap.port, 1001);
    assert_eq!(snap.cause(), &ReloadCause::File { path: file.clone() });

    write_atomically(&file, "port: 1002\n");
    assert_eq!(next_applied(&mut sub).await.port, 1002);

    // A broken file is rejected naming the file; the last good value keeps serving.
    write_atomically(&file, "port: [1002\n");
    let rejection = next_rejected(&mut sub).await;
    assert_eq!(rejection.error.layer(), Some(Layer::File));
    assert!(rejection.error.key().unwrap().ends_with("chat.yaml"));
    assert_eq!(cfg.load().port, 1002);
    write_atomically(&file, "port: 1003\n");
    assert_eq!(next_applied(&mut sub).await.port, 1003);
}

/// Each kind of bad input: rejected with an error naming the key and revision, the last good
/// snapshot keeps serving, and the next valid change applies.
#[tokio::test]
async fn bad_input_is_rejected_and_the_last_good_snapshot_keeps_serving() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    let mut sub = cfg.subscribe();

    let cases: &[(&str, &str, &str, &str)] = &[
        // (key, bad value, expected field, expected words in the message)
        ("database", "{host: [unclosed", "", "invalid YAML"),
        ("port", "not-a-number", "port", "invalid type"),
        ("port", "70000", "port", "invalid value"),
        ("port", "0", "port", "minimum"),
        ("database/pool", "500", "database.pool", "maximum"),
        (
            "features/greeting",
            "this greeting is far too long",
            "features.greeting",
            "longer",
        ),
        (
            "database/user",
            "Not-Lower",
            "database.user",
            "does not match",
        ),
        ("database/host", "localhost", "", "validate()"),
        ("port/x", "1", "port.x", "not an object"),
    ];
    for (rel, bad, field, words) in cases {
        let k = key(rel);
        let good = cfg.load_full();
        let rev = etcd.put(&k, bad);
        let rejection = next_rejected(&mut sub).await;
        let e = &rejection.error;
        assert_eq!(e.kind(), ErrorKind::Validation, "{e}");
        assert_eq!(e.revision(), Some(rev), "{e}");
        assert_eq!(e.key(), Some(k.as_str()), "{e}");
        assert_eq!(e.layer(), Some(Layer::Etcd), "{e}");
        if !field.is_empty() {
            assert_eq!(e.field(), Some(*field), "{e}");
        }
        assert!(e.to_string().contains(words), "`{e}` should say `{words}`");
        assert!(e.to_string().contains(&k), "`{e}` should name the key");
        assert!(e.to_string().contains(&format!("revision {rev}")), "{e}");
        assert_eq!(rejection.serving_revision, good.revision());
        // Still serving the last good snapshot.
        assert!(Arc::ptr_eq(&cfg.load_full(), &good));
        // Repair: put back a good value (or remove the bad key) and see it apply.
        match *rel {
            "port/x" => {
                etcd.del(&k);
            }
            "database" => {
                etcd.del(&k);
            }
            "port" => {
                etcd.put(&k, "8080");
            }
            "database/pool" => {
                etcd.del(&k);
            }
            "features/greeting" => {
                etcd.del(&k);
            }
            "database/user" => {
                etcd.del(&k);
            }
            "database/host" => {
                etcd.put(&k, "db1");
            }
            other => panic!("no repair for {other}"),
        }
        let repaired = next_applied(&mut sub).await;
        assert_eq!(repaired.port, 8080);
        assert_eq!(repaired.database.host, "db1");
    }

    // A missing required field, by deleting its key: the error names the deleted key.
    let rev = etcd.del(&key("database/host"));
    let rejection = next_rejected(&mut sub).await;
    assert_eq!(rejection.error.field(), Some("database"));
    assert_eq!(rejection.error.key(), Some(key("database/host").as_str()));
    assert_eq!(rejection.error.revision(), Some(rev));
    assert!(rejection.error.to_string().contains("missing field"));
    assert_eq!(cfg.load().database.host, "db1");
}

#[tokio::test]
async fn subscribers_see_applied_and_rejected_events_in_revision_order() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    let mut first = cfg.subscribe();
    let mut second = cfg.subscribe();
    let values = ["8081", "bad", "8082", "0", "8083"];
    let mut revisions = Vec::new();
    for v in values {
        revisions.push(etcd.put(&key("port"), v));
    }
    for sub in [&mut first, &mut second] {
        let mut seen = Vec::new();
        for _ in values {
            let (kind, rev) = match next_event(sub).await {
                ConfigEvent::Applied(s) => ("applied", s.revision()),
                ConfigEvent::Rejected(r) => ("rejected", r.error.revision().unwrap()),
                other => panic!("unexpected {other:?}"),
            };
            seen.push((kind, rev));
        }
        let expected: Vec<(&str, i64)> = ["applied", "rejected", "applied", "rejected", "applied"]
            .into_iter()
            .zip(revisions.iter().copied())
            .collect();
        assert_eq!(seen, expected);
    }
    assert_eq!(cfg.load().port, 8083);
}

#[tokio::test]
async fn bind_fails_on_invalid_config_with_the_same_error() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let rev = etcd.put(&key("port"), "zero");
    let coord = etcd.coordinator().await;
    let err = coord
        .config_with::<ChatConfig>(options())
        .await
        .expect_err("invalid config must fail bind");
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert_eq!(err.field(), Some("port"));
    assert_eq!(err.key(), Some(key("port").as_str()));
    assert_eq!(err.revision(), Some(rev));
    assert_eq!(err.layer(), Some(Layer::Etcd));
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/big/config")]
struct BigConfig {
    entries: std::collections::BTreeMap<String, u32>,
}

#[tokio::test]
async fn large_prefix_is_read_in_pages_at_one_revision() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    for i in 0..25 {
        client
            .put(
                format!("/apps/big/config/entries/k{i:02}"),
                i.to_string(),
                None,
            )
            .await
            .unwrap();
    }
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<BigConfig> = coord
        .config_with(ConfigOptions::new().with_page_size(4))
        .await
        .unwrap();
    let snap = cfg.load();
    assert_eq!(snap.entries.len(), 25);
    assert_eq!(snap.entries["k24"], 24);
    assert_eq!(snap.sources().len(), 25);
}

#[tokio::test]
async fn connect_to_a_dead_endpoint_fails_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = coordination::Coordinator::connect(
        coordination::CoordinatorOptions::new([format!("http://127.0.0.1:{port}")])
            .with_connect_timeout(Duration::from_millis(500))
            .with_request_timeout(Duration::from_millis(500)),
    )
    .await
    .expect_err("nothing listens there");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Connection | ErrorKind::Unavailable | ErrorKind::Timeout
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/secret/config", secrets = "database.password")]
struct SecretConfig {
    #[coord(secret)]
    #[schemars(length(min = 8))]
    api_token: String,
    database: SecretDb,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct SecretDb {
    password: u32,
}

#[tokio::test]
async fn errors_about_secret_fields_do_not_show_the_value() {
    assert_eq!(SecretConfig::SECRETS, &["database.password", "api_token"]);
    let etcd = Etcd::start().await;
    etcd.put("/apps/secret/config/api_token", "long-enough-token");
    etcd.put("/apps/secret/config/database/password", "1234");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<SecretConfig> = coord.config_with(ConfigOptions::new()).await.unwrap();
    let mut sub = cfg.subscribe();
    for (key, bad) in [
        ("/apps/secret/config/api_token", "hunter2"),
        ("/apps/secret/config/database/password", "sw0rdfish"),
    ] {
        let rev = etcd.put(key, bad);
        let rejection = match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(ConfigEvent::Rejected(r))) => r,
            other => panic!("expected a rejection, got {other:?}"),
        };
        let shown = format!("{:#} {:?}", rejection.error, rejection.error);
        assert!(!shown.contains(bad), "secret leaked: {shown}");
        assert!(shown.contains("***"), "{shown}");
        assert_eq!(rejection.error.key(), Some(key));
        assert_eq!(rejection.error.revision(), Some(rev));
    }
    assert_eq!(cfg.load().api_token, "long-enough-token");
}

#[tokio::test]
async fn authenticated_coordinator_binds_and_bad_credentials_fail_clearly() {
    let etcd = Etcd::start().await;
    etcd.put(&key("port"), "8080");
    etcd.put(&key("database/host"), "db1");
    etcd.etcdctl(&["user", "add", "root:s3cret"]);
    etcd.etcdctl(&["auth", "enable"]);

    let err = coordination::Coordinator::connect(
        coordination::CoordinatorOptions::new([etcd.endpoint()]).with_user("root", "wrong"),
    )
    .await
    .expect_err("wrong password");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");

    let coord = coordination::Coordinator::connect(
        coordination::CoordinatorOptions::new([etcd.endpoint()]).with_user("root", "s3cret"),
    )
    .await
    .unwrap();
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    assert_eq!(cfg.load().port, 8080);
    let mut sub = cfg.subscribe();
    etcd.etcdctl(&["--user", "root:s3cret", "put", &key("port"), "8181"]);
    assert_eq!(next_applied(&mut sub).await.port, 8181);
}

/// Fails if an event arrives within `quiet`.
async fn assert_quiet(
    sub: &mut coordination::config::Subscription<ChatConfig>,
    quiet: Duration,
    after: &str,
) {
    if let Ok(event) = tokio::time::timeout(quiet, sub.next()).await {
        panic!("expected no event for {quiet:?} after {after}, got {event:?}");
    }
}

/// One reload per write and per rename-replace, none for reads, touches or a rewrite of the
/// same bytes, and silence once an edit has settled (the watch used to see its own reads and
/// reload about 19 times a second, forever).
#[tokio::test]
async fn file_watch_reloads_once_per_change_and_is_quiet_after() {
    let etcd = Etcd::start().await;
    etcd.put(&key("database/host"), "db1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.yaml");
    std::fs::write(&file, "port: 1000\n").unwrap();
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord
        .config_with(
            options()
                .with_file(&file)
                .with_file_debounce(Duration::from_millis(20)),
        )
        .await
        .unwrap();
    let mut sub = cfg.subscribe();

    std::fs::write(&file, "port: 1001\n").unwrap();
    assert_eq!(next_applied(&mut sub).await.port, 1001);
    assert_quiet(&mut sub, Duration::from_secs(5), "a write").await;
    assert_eq!(cfg.load().generation(), 2);

    write_atomically(&file, "port: 1002\n");
    assert_eq!(next_applied(&mut sub).await.port, 1002);
    assert_quiet(&mut sub, Duration::from_secs(1), "a rename-replace").await;

    // Reads, metadata changes and the same bytes written again change nothing.
    for _ in 0..5 {
        let _ = std::fs::read(&file).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(&file, "port: 1002\n").unwrap();
    write_atomically(&file, "port: 1002\n");
    assert_quiet(
        &mut sub,
        Duration::from_secs(1),
        "reads, chmod and same-bytes writes",
    )
    .await;

    // A bad file is reported once, not at every event, and the last good value serves.
    std::fs::write(&file, "port: [1002\n").unwrap();
    let rejection = next_rejected(&mut sub).await;
    assert_eq!(rejection.error.layer(), Some(Layer::File));
    assert_quiet(&mut sub, Duration::from_secs(2), "a bad write").await;
    assert_eq!(cfg.load().port, 1002);

    std::fs::write(&file, "port: 1003\n").unwrap();
    assert_eq!(next_applied(&mut sub).await.port, 1003);
    assert_quiet(&mut sub, Duration::from_secs(1), "the repair").await;
    assert_eq!(cfg.load().generation(), 4);
}

/// A key that names no field is reported on the snapshot and as an event, naming its key and
/// revision (serde alone would drop it silently); `UnknownKeys::Reject` turns it into a
/// rejection.
#[tokio::test]
async fn unknown_keys_are_reported_or_rejected() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.yaml");
    std::fs::write(&file, "prot: 1\n").unwrap();
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> =
        coord.config_with(options().with_file(&file)).await.unwrap();
    let at_bind = cfg.load_full();
    assert_eq!(
        at_bind.unknown_keys().len(),
        1,
        "{:?}",
        at_bind.unknown_keys()
    );
    assert_eq!(at_bind.unknown_keys()[0].path, "prot");
    assert_eq!(at_bind.unknown_keys()[0].source.layer, Layer::File);
    let mut sub = cfg.subscribe();

    let typo = key("database/hots");
    let rev = etcd.put(&typo, "db9");
    let applied = next_applied(&mut sub).await;
    assert_eq!(applied.revision(), rev);
    assert_eq!(applied.database.host, "db1", "the typo had no effect");
    let reported = match next_event(&mut sub).await {
        ConfigEvent::UnknownKeys(keys) => keys,
        other => panic!("expected the unknown keys, got {other:?}"),
    };
    let hots = reported
        .iter()
        .find(|k| k.path == "database.hots")
        .expect("the typo is reported");
    assert_eq!(hots.source.layer, Layer::Etcd);
    assert_eq!(hots.source.origin.key().as_deref(), Some(typo.as_str()));
    assert_eq!(hots.source.revision, Some(rev));
    assert!(hots.known.iter().any(|k| k == "host"), "{hots}");
    assert!(hots.to_string().contains(&typo), "{hots}");
    assert_eq!(cfg.load().unknown_keys(), &reported[..]);

    // An unrelated change keeps the same unknown keys: no second report.
    etcd.put(&key("port"), "8081");
    assert_eq!(next_applied(&mut sub).await.port, 8081);
    assert_quiet(&mut sub, Duration::from_millis(500), "an unrelated change").await;

    // Rejecting them instead.
    let strict = || options().with_unknown_keys(coordination::config::UnknownKeys::Reject);
    let refused = coord
        .config_with::<ChatConfig>(strict())
        .await
        .expect_err("bind refuses the typo already in etcd");
    assert_eq!(refused.key(), Some(typo.as_str()), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("unknown field `database.hots`"),
        "{refused}"
    );
    etcd.del(&typo);
    let strict: ConfigHandle<ChatConfig> = coord.config_with(strict()).await.unwrap();
    let mut strict_sub = strict.subscribe();
    let rev = etcd.put(&key("features/chatt"), "true");
    let rejection = match tokio::time::timeout(Duration::from_secs(10), strict_sub.next())
        .await
        .unwrap()
        .unwrap()
    {
        ConfigEvent::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    };
    let e = &rejection.error;
    assert_eq!(e.kind(), ErrorKind::Validation);
    assert_eq!(e.key(), Some(key("features/chatt").as_str()), "{e}");
    assert_eq!(e.revision(), Some(rev), "{e}");
    assert!(
        e.to_string().contains("unknown field `features.chatt`"),
        "{e}"
    );
}

/// A key 10,000 segments deep used to overflow the stack of every bound process (and of `bind`
/// while it stayed in etcd). It is rejected like any bad value, naming key and revision.
#[tokio::test]
async fn a_key_ten_thousand_segments_deep_is_rejected_not_a_crash() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    let mut sub = cfg.subscribe();
    let serving = cfg.load_full();
    let deep = format!("{P}/{}", vec!["a"; 10_000].join("/"));
    let mut client = etcd.client().await;
    let rev = client
        .put(deep.as_str(), "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let rejection = next_rejected(&mut sub).await;
    let e = &rejection.error;
    assert_eq!(e.key(), Some(deep.as_str()));
    assert_eq!(e.revision(), Some(rev));
    assert_eq!(e.layer(), Some(Layer::Etcd));
    assert!(e.to_string().contains("10000 path segments"), "{e}");
    assert!(Arc::ptr_eq(&cfg.load_full(), &serving));

    // While it is in etcd, a new bind (not sharing the live handle) fails with the same error
    // instead of aborting.
    let err = coord
        .config_with::<ChatConfig>(options().without_sharing())
        .await
        .expect_err("bind reports the deep key");
    assert_eq!(err.key(), Some(deep.as_str()), "{err}");

    let rev = client
        .delete(deep.as_str(), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(next_applied(&mut sub).await.revision(), rev);
    let rev = etcd.put(&key("port"), "9000");
    let applied = next_applied(&mut sub).await;
    assert_eq!((applied.revision(), applied.port), (rev, 9000));
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/big")]
struct Big {
    #[serde(default)]
    blobs: std::collections::BTreeMap<String, String>,
}

/// 20 keys of 250 KB are 5 MB, over the client's 4 MiB decode limit for one page of 1000 keys:
/// the read pages by bytes too, so bind, reloads and `ConfigHistory` reads work (bind used to
/// fail with an etcd error and no fallback).
#[tokio::test]
async fn a_prefix_larger_than_one_message_binds_and_reads() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let blob = "x".repeat(250_000);
    for i in 0..20 {
        client
            .put(format!("/apps/big/blobs/b{i:02}"), blob.as_str(), None)
            .await
            .unwrap();
    }
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Big> = coord.config_with(options()).await.unwrap();
    assert_eq!(cfg.load().blobs.len(), 20);
    assert!(cfg.load().blobs.values().all(|b| b.len() == 250_000));
    let history = coordination::history::ConfigHistory::open(&coord, "/apps/big")
        .await
        .unwrap();
    let (_, kvs) = history.kvs(None).await.unwrap();
    assert_eq!(kvs.len(), 20);
}

/// A view of one part: it loads only that part, and its subscription reports only the reloads
/// that change the part, with the paths that changed inside it.
#[tokio::test]
async fn a_view_reports_only_changes_of_its_part() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    let db = cfg.map(|c| &c.database);
    let pool = db.map(|d| &d.pool);
    assert_eq!(db.load().host, "db1");
    assert_eq!(*pool.load(), 10);
    let mut changes = db.subscribe();
    let mut pool_changes = pool.subscribe();

    // A change outside the part is not reported.
    etcd.put(&key("port"), "9090");
    let outside = tokio::time::timeout(Duration::from_millis(500), changes.next()).await;
    assert!(outside.is_err(), "a port change reached the database view");
    assert_eq!(cfg.load().port, 9090);

    // Two fields of the part in one transaction: one change with both paths.
    let revision = etcd.txn(&[
        &format!("put {} db2", key("database/host")),
        &format!("put {} 20", key("database/pool")),
    ]);
    let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.revision(), revision);
    assert_eq!(change.paths(), ["host", "pool"]);
    assert_eq!(change.value().host, "db2");
    assert_eq!(db.load().pool, 20);
    assert_eq!(db.load().revision(), revision);
    let pool_change = tokio::time::timeout(Duration::from_secs(10), pool_changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*pool_change.value(), 20);
    assert_eq!(pool_change.paths(), [""]);
}

/// A fixed config needs no etcd: it serves its value, checks every value pushed into it as a
/// reload would (a bad one is rejected and the last good one keeps serving), reaches
/// subscribers and views, and refuses what needs etcd.
#[tokio::test]
async fn a_fixed_config_serves_and_checks_values_without_etcd() {
    let value = |port: u16, pool: u32| ChatConfig {
        port,
        features: Features::default(),
        database: Database {
            host: "db1".into(),
            pool,
            user: "app".into(),
        },
        pair: Pair::default(),
    };
    assert_eq!(
        ConfigHandle::fixed(value(0, 10)).unwrap_err().kind(),
        ErrorKind::Validation,
        "port 0 breaks the schema's minimum"
    );
    let cfg = ConfigHandle::fixed(value(8080, 10)).unwrap();
    assert_eq!(cfg.load().port, 8080);
    assert_eq!(cfg.status().state, coordination::config::WatchState::Fixed);
    let db = cfg.map(|c| &c.database);
    let mut sub = cfg.subscribe();
    let mut db_changes = db.subscribe();

    cfg.set_fixed(value(8080, 20)).unwrap();
    let applied = next_applied(&mut sub).await;
    assert_eq!(applied.database.pool, 20);
    assert!(matches!(applied.cause(), ReloadCause::Fixed));
    let change = db_changes.next().await.unwrap();
    assert_eq!(change.paths(), ["pool"]);

    let err = cfg.set_fixed(value(8080, 1000)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    let rejected = next_rejected(&mut sub).await;
    assert!(matches!(rejected.cause, ReloadCause::Fixed));
    assert_eq!(
        cfg.load().database.pool,
        20,
        "the last good value keeps serving"
    );

    assert_eq!(
        cfg.history().await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

/// The watchers etcd holds (`etcd_debugging_mvcc_watcher_total` from its `/metrics`).
fn etcd_watchers(etcd: &Etcd) -> f64 {
    use std::io::{Read, Write};
    let addr = etcd.endpoint().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("etcd_debugging_mvcc_watcher_total in /metrics")
}

/// A hundred binds of one type and prefix with equal options share one handle: one watch in
/// etcd, one snapshot for all. `without_sharing` makes a handle of its own.
#[tokio::test]
async fn binds_with_equal_options_share_one_watch_and_snapshot() {
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let before = etcd_watchers(&etcd);
    let mut handles = Vec::new();
    let first: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    handles.push(first);
    // One handle's watches: its prefix, its receipt's rollout state, its recorder candidacy
    // (the last two are opened by background tasks).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let one = etcd_watchers(&etcd) - before;
    for _ in 1..100 {
        let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
        handles.push(cfg);
    }
    etcd.put(&key("port"), "9191");
    for cfg in &handles {
        assert!(eventually!(
            Duration::from_secs(10),
            cfg.load().port == 9191
        ));
    }
    let first = handles[0].load_full();
    assert!(handles.iter().all(|h| Arc::ptr_eq(&h.load_full(), &first)));
    let shared_watchers = etcd_watchers(&etcd) - before;
    assert!(
        shared_watchers <= one && one <= 4.0,
        "{shared_watchers} watchers for 100 binds of one prefix, {one} for one bind"
    );

    let own: ConfigHandle<ChatConfig> = coord
        .config_with(options().without_sharing())
        .await
        .unwrap();
    assert!(eventually!(Duration::from_secs(5), own.load().port == 9191));
    assert!(!Arc::ptr_eq(&own.load_full(), &handles[0].load_full()));
    assert!(eventually!(
        Duration::from_secs(5),
        etcd_watchers(&etcd) - before >= shared_watchers + 1.0
    ));
    // Other options: another handle.
    let other: ConfigHandle<ChatConfig> = coord
        .config_with(options().with_event_capacity(7))
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&other.load_full(), &handles[0].load_full()));
}

/// With the `stream` feature a subscription and a view's subscription are `Stream`s.
#[cfg(feature = "stream")]
#[tokio::test]
async fn subscriptions_are_streams() {
    use futures_util::StreamExt;
    let etcd = Etcd::start().await;
    seed(&etcd).await;
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<ChatConfig> = coord.config_with(options()).await.unwrap();
    let mut events = cfg.subscribe();
    let mut pool = cfg.map(|c| &c.database).subscribe();
    let revision = etcd.put(&key("database/pool"), "30");
    let applied = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(ConfigEvent::Applied(s)) = events.next().await {
                break s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(applied.revision(), revision);
    let change = tokio::time::timeout(Duration::from_secs(10), StreamExt::next(&mut pool))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.paths(), ["pool"]);
    // try_next finds nothing more queued.
    assert!(cfg.subscribe().try_next().is_none());
}
