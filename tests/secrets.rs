//! Secret values never reach a rejection, a log line, a publish error or `coordctl`'s output,
//! even when the error is about an object that holds a secret; and a bad candidate is
//! reported with every violation at once, against a real etcd. No secret rests in plaintext
//! under `/__coordination/` (history records, with or without a history key) or in the
//! last-known-good cache.

#[macro_use]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use coordination::config::Rejection;
use coordination::history::{HistoryOptions, SecretKey};
use coordination::provenance::Layer;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, ErrorKind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;

const P: &str = "/apps/vault/config";
const PASSWORD: &str = "hunter2-correct-horse";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/vault/config", secrets = "db.password")]
struct Vault {
    #[serde(default)]
    db: Option<Db>,
    #[schemars(length(min = 1, max = 16), regex(pattern = r"^[a-z]+$"))]
    name: String,
    #[serde(default)]
    #[schemars(length(max = 3))]
    tags: Vec<String>,
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Db {
    host: String,
    #[schemars(range(min = 1024))]
    port: u16,
    #[schemars(length(min = 8))]
    password: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Item {
    #[schemars(range(max = 10))]
    weight: u8,
}

fn key(rel: &str) -> String {
    format!("{P}/{rel}")
}

/// Everything the crate logs in this test binary (a global subscriber, as the reload runs on
/// the runtime's worker threads).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink;
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("coordination=debug")
            .with_ansi(false)
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        Mutex::new(Vec::new())
    })
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

async fn seed_and_bind(etcd: &Etcd) -> ConfigHandle<Vault> {
    etcd.put(&key("db/host"), "db1");
    etcd.put(&key("db/port"), "5432");
    etcd.put(&key("db/password"), PASSWORD);
    etcd.put(&key("name"), "vault");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Vault> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    assert_eq!(cfg.load().db.as_ref().unwrap().password, PASSWORD);
    cfg
}

async fn next_rejected(sub: &mut coordination::config::Subscription<Vault>) -> Arc<Rejection> {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(ConfigEvent::Rejected(r))) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Every way the rejection can be shown: `{}`, `{:#}`, `{:?}` of the error and of the event.
fn every_rendering(rejection: &Arc<Rejection>) -> String {
    let event = ConfigEvent::<Vault>::Rejected(Arc::clone(rejection));
    format!(
        "{}\n{:#}\n{:?}\n{event:?}",
        rejection.error, rejection.error, rejection.error
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_inside_an_object_holding_a_secret_does_not_show_the_secret() {
    logs();
    let etcd = Etcd::start().await;
    let cfg = seed_and_bind(&etcd).await;
    let mut sub = cfg.subscribe();

    // `db.port` out of range: the schema error is about `Option<Db>`, whose value holds the
    // password.
    let rev = etcd.put(&key("db/port"), "80");
    let rejection = next_rejected(&mut sub).await;
    let shown = every_rendering(&rejection);
    assert!(!shown.contains(PASSWORD), "secret leaked: {shown}");
    let e = &rejection.error;
    assert_eq!(e.kind(), ErrorKind::Validation);
    assert_eq!(e.field(), Some("db.port"), "{e}");
    assert_eq!(e.key(), Some(key("db/port").as_str()), "{e}");
    assert_eq!(e.layer(), Some(Layer::Etcd), "{e}");
    assert_eq!(e.revision(), Some(rev), "{e}");
    // The constraint and the (non-secret) bad value are still there.
    assert!(
        e.message().contains("80 is less than the minimum of 1024"),
        "{e}"
    );
    etcd.put(&key("db/port"), "5432");

    // A violation of the secret field itself: the constraint is kept, the value is not.
    let rev = etcd.put(&key("db/password"), "short7!");
    let rejection = loop {
        let r = next_rejected_or_applied(&mut sub).await;
        if let Some(r) = r {
            break r;
        }
    };
    let shown = every_rendering(&rejection);
    assert!(!shown.contains("short7!"), "secret leaked: {shown}");
    assert!(!shown.contains(PASSWORD), "secret leaked: {shown}");
    assert_eq!(rejection.error.field(), Some("db.password"));
    assert_eq!(rejection.error.revision(), Some(rev));
    assert!(
        rejection
            .error
            .message()
            .contains("*** is shorter than 8 characters"),
        "{}",
        rejection.error
    );

    // The warning logged for each rejection names the field but not the secret.
    let log = logged();
    assert!(log.contains("rejected config change"), "{log}");
    assert!(log.contains("db.port"), "{log}");
    assert!(!log.contains(PASSWORD), "secret leaked into the log: {log}");
    assert!(
        !log.contains("short7!"),
        "secret leaked into the log: {log}"
    );
    assert_eq!(cfg.load().db.as_ref().unwrap().password, PASSWORD);
}

/// The next rejection, skipping applied snapshots.
async fn next_rejected_or_applied<T: CoordConfig + std::fmt::Debug>(
    sub: &mut coordination::config::Subscription<T>,
) -> Option<Arc<Rejection>> {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(ConfigEvent::Rejected(r))) => Some(r),
        Ok(Some(ConfigEvent::Applied(_) | ConfigEvent::Status(_))) => None,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_a_bad_value_does_not_show_the_secret() {
    let etcd = Etcd::start().await;
    let cfg = seed_and_bind(&etcd).await;
    let mut bad = cfg.load().value().clone();
    bad.db.as_mut().unwrap().port = 80;
    let e = cfg.overwrite(&bad, "ops", "bad port").await.unwrap_err();
    let shown = format!("{e} {e:#} {e:?}");
    assert!(!shown.contains(PASSWORD), "secret leaked: {shown}");
    assert_eq!(e.kind(), ErrorKind::Validation);
    assert_eq!(e.field(), Some("db.port"), "{e}");
    assert!(
        e.message().contains("80 is less than the minimum of 1024"),
        "{e}"
    );
    // Nothing was written.
    assert_eq!(
        support::read_prefix_raw(&etcd, P)
            .await
            .into_iter()
            .find(|(k, _, _)| k == &key("db/port"))
            .map(|(_, v, _)| v),
        Some("5432".to_string())
    );
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_put_of_a_bad_value_does_not_show_the_secret() {
    let etcd = Etcd::start().await;
    let cfg = seed_and_bind(&etcd).await;
    // The bound handle publishes the schema `coordctl` validates against.
    let published = eventually!(Duration::from_secs(20), {
        cfg.history().await.is_ok_and(|h| !h.is_empty())
    });
    assert!(published);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coordctl"))
        .arg("--endpoints")
        .arg(etcd.endpoint())
        .args(["config", "put", P, "db.port", "80"])
        .env_remove("ETCD_ENDPOINTS")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run coordctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    // The published-schema check names the object that fails (`db`), shown masked.
    assert!(stderr.contains("field `db`"), "{stderr}");
    assert!(stderr.contains("***"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "secret leaked: {stderr}");
    assert!(!stdout.contains(PASSWORD), "secret leaked: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rejection_lists_every_violation_of_a_transaction() {
    let etcd = Etcd::start().await;
    let cfg = seed_and_bind(&etcd).await;
    let mut sub = cfg.subscribe();
    let good = cfg.load_full();

    // One transaction breaks three fields.
    let rev = etcd.txn(&[
        &format!("put {} \"NOT lower\"", key("name")),
        &format!("put {} \"[a, b, c, d]\"", key("tags")),
        &format!("put {} 80", key("db/port")),
    ]);
    let rejection = next_rejected(&mut sub).await;
    let e = &rejection.error;
    let message = e.message();
    assert!(message.starts_with("3 problems: "), "{e}");
    let listed: Vec<&str> = ["name", "tags", "db.port"]
        .into_iter()
        .filter(|field| {
            message.contains(&format!(
                "`{field}` (key `{}`)",
                key(&field.replace('.', "/"))
            ))
        })
        .collect();
    assert_eq!(listed.len(), 3, "each violation named with its key: {e}");
    assert!(message.contains("does not match"), "{e}");
    assert!(message.contains("has more than 3 items"), "{e}");
    assert!(message.contains("less than the minimum of 1024"), "{e}");
    // The provenance is the first violation's.
    let first = message["3 problems: `".len()..].split('`').next().unwrap();
    assert_eq!(e.field(), Some(first), "{e}");
    assert_eq!(e.key(), Some(key(&first.replace('.', "/")).as_str()), "{e}");
    assert_eq!(e.revision(), Some(rev), "{e}");
    assert!(!every_rendering(&rejection).contains(PASSWORD));
    assert!(Arc::ptr_eq(&cfg.load_full(), &good));

    // Fixing all three in one more transaction applies.
    etcd.txn(&[
        &format!("put {} vault", key("name")),
        &format!("del {}", key("tags")),
        &format!("put {} 5432", key("db/port")),
    ]);
    let applied = eventually!(Duration::from_secs(10), cfg.load().revision() > rev);
    assert!(applied, "the repair was not applied");

    // A document with many violations: the message lists the first 20 and counts the rest.
    let items: Vec<String> = (0..25).map(|_| "{weight: 99}".to_string()).collect();
    etcd.put(&key("items"), &format!("[{}]", items.join(", ")));
    let rejection = loop {
        if let Some(r) = next_rejected_or_applied(&mut sub).await {
            break r;
        }
    };
    let message = rejection.error.message();
    assert!(message.starts_with("25 problems: "), "{message}");
    assert_eq!(
        message.matches("greater than the maximum of 10").count(),
        20,
        "{message}"
    );
    assert!(message.ends_with("; and 5 more"), "{message}");
    assert_eq!(rejection.error.field(), Some("items.0.weight"));
}

// ---- Secrets at rest: history records, the last-known-good cache, debug logs ----

const AR: &str = "/apps/atrest/config";
const WAIT: Duration = Duration::from_secs(20);
/// A history key as `openssl rand -hex 32` prints one.
const KEY_A: &str = "5f1b0e8c2a7d4e6f9a0b1c2d3e4f50617283940a1b2c3d4e5f60718293a4b5c6";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/atrest/config", secrets = "db.password")]
struct AtRest {
    #[schemars(range(min = 1))]
    port: u16,
    #[serde(default)]
    db: AtRestDb,
    #[coord(secret)]
    #[serde(default)]
    token: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
struct AtRestDb {
    #[serde(default)]
    host: String,
    #[serde(default)]
    password: String,
}

fn ar(rel: &str) -> String {
    format!("{AR}/{rel}")
}

fn at_rest_record(revision: i64) -> String {
    format!("/__coordination/history{AR}/versions/{revision:020}")
}

/// Seeds the prefix with a password and a token.
fn seed_at_rest(etcd: &Etcd, password: &str, token: &str) {
    etcd.put(&ar("port"), "8080");
    etcd.put(&ar("db/host"), "db1");
    etcd.put(&ar("db/password"), password);
    etcd.put(&ar("token"), token);
}

async fn bind_with(etcd: &Etcd, options: ConfigOptions) -> ConfigHandle<AtRest> {
    etcd.coordinator()
        .await
        .config_with(options.without_file().without_env())
        .await
        .expect("bind")
}

async fn bind_at_rest(etcd: &Etcd, history: HistoryOptions) -> ConfigHandle<AtRest> {
    bind_with(etcd, ConfigOptions::new().with_history(history)).await
}

/// Seeds the prefix, binds with `history` and waits until the bound version is recorded.
async fn start_at_rest(
    etcd: &Etcd,
    history: HistoryOptions,
    password: &str,
    token: &str,
) -> (ConfigHandle<AtRest>, i64) {
    seed_at_rest(etcd, password, token);
    let cfg = bind_at_rest(etcd, history).await;
    let v0 = cfg.load().revision();
    settled(&cfg, v0).await;
    (cfg, v0)
}

/// Publishes port 9090 with a new password and token through `update`; the new version,
/// recorded.
async fn rotate(cfg: &ConfigHandle<AtRest>, password: &str, token: &str) -> i64 {
    let v = cfg
        .update(
            |c| {
                c.port = 9090;
                c.db.password = password.into();
                c.token = token.into();
            },
            "ops",
            "rotate",
        )
        .await
        .unwrap()
        .expect("a new version")
        .revision;
    settled(cfg, v).await;
    v
}

/// Waits until `cfg` has applied `revision` and its history has recorded it.
async fn settled(cfg: &ConfigHandle<AtRest>, revision: i64) {
    let applied = eventually!(WAIT, cfg.load().revision() >= revision);
    assert!(applied, "revision {revision} never applied");
    let recorded = eventually!(WAIT, {
        cfg.history()
            .await
            .is_ok_and(|h| h.last().is_some_and(|v| v.revision >= revision))
    });
    assert!(recorded, "revision {revision} never recorded");
}

async fn wait_for(cfg: &ConfigHandle<AtRest>, what: &str, cond: impl Fn(&AtRest) -> bool) {
    let ok = eventually!(WAIT, cond(cfg.load().value()));
    assert!(ok, "never saw {what}: {:?}", cfg.load().value());
}

/// Everything etcd holds under `/__coordination/`, as `etcdctl get --prefix` prints it.
fn coordination_keys(etcd: &Etcd) -> String {
    let out = etcd.etcdctl(&["get", "--prefix", "/__coordination/"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_not_at_rest(etcd: &Etcd, secrets: &[&str]) {
    let dump = coordination_keys(etcd);
    assert!(dump.contains("/versions/"), "no records: {dump}");
    for secret in secrets {
        assert!(
            !dump.contains(secret),
            "`{secret}` rests in plaintext under /__coordination/:\n{dump}"
        );
    }
}

fn record_json(etcd: &Etcd, revision: i64) -> serde_json::Value {
    let out = etcd.etcdctl(&["get", "--print-value-only", &at_rest_record(revision)]);
    serde_json::from_slice(&out.stdout).expect("a JSON record")
}

/// The value of `key` in etcd now, byte for byte.
async fn raw_value(etcd: &Etcd, key: &str) -> Option<String> {
    support::read_prefix_raw(etcd, AR)
        .await
        .into_iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, v, _)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_no_secret_is_recorded_and_a_rollback_keeps_the_current_one() {
    logs();
    let secrets = [
        "nokey-pw-one",
        "nokey-tok-one",
        "nokey-pw-two",
        "nokey-tok-two",
        "nokey-pw-three",
        "nokey-pw-doc-four",
        "nokey-pw-doc-five",
    ];
    let etcd = Etcd::start().await;
    let (cfg, v0) = start_at_rest(&etcd, HistoryOptions::new(), secrets[0], secrets[1]).await;
    let v1 = rotate(&cfg, secrets[2], secrets[3]).await;
    let v2 = etcd.put(&ar("db/password"), secrets[4]);
    settled(&cfg, v2).await;

    // The record keeps the key set and the secret paths, not the values.
    let record = record_json(&etcd, v1);
    assert_eq!(record["format"], 2, "{record}");
    assert_eq!(
        record["secrets"],
        serde_json::json!(["db.password", "token"]),
        "{record}"
    );
    let kvs: std::collections::BTreeMap<String, serde_json::Value> = record["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| (kv[0].as_str().unwrap().to_string(), kv[1].clone()))
        .collect();
    // Each left-out value names the write it came from (its mod_revision), not the value.
    assert_eq!(
        kvs["db/password"],
        serde_json::json!({"secret": "omitted", "rev": v1})
    );
    assert_eq!(
        kvs["token"],
        serde_json::json!({"secret": "omitted", "rev": v1})
    );
    assert_eq!(kvs["port"], "9090");

    // A diff cannot tell whether a secret that was not recorded changed, and says so.
    let changes = cfg.diff(v0, v1).await.unwrap();
    let by_path: std::collections::BTreeMap<&str, _> =
        changes.iter().map(|c| (c.path.as_str(), c)).collect();
    assert_eq!(
        by_path.keys().copied().collect::<Vec<_>>(),
        ["db.password", "port", "token"]
    );
    for path in ["db.password", "token"] {
        let c = by_path[path];
        assert!(c.secret && c.unknown, "{c:?}");
        assert_eq!(c.old, Some(serde_json::json!("***")));
        assert!(c.to_string().contains("unknown"), "{c}");
    }
    assert!(!by_path["port"].unknown);
    assert_eq!(by_path["port"].to_string(), "port: 8080 -> 9090");

    // A rollback restores the rest and keeps each secret's current value.
    let back = cfg.rollback_to(v0, "ops", "back").await.unwrap().unwrap();
    wait_for(&cfg, "port 8080", |c| c.port == 8080).await;
    assert_eq!(cfg.load().db.password, secrets[4]);
    assert_eq!(cfg.load().token, secrets[3]);
    // The secrets were not written by it, and its diff says exactly that.
    settled(&cfg, back.revision).await;
    let changes = cfg.diff(v2, back.revision).await.unwrap();
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["port"], "{changes:?}");

    // A key holding a document: recorded with its secret masked, the rest readable.
    etcd.del(&ar("db/password"));
    etcd.del(&ar("db/host"));
    let v4 = etcd.put(&ar("db"), &format!("host: db2\npassword: {}\n", secrets[5]));
    settled(&cfg, v4).await;
    let v5 = etcd.put(&ar("db"), &format!("host: db3\npassword: {}\n", secrets[6]));
    settled(&cfg, v5).await;
    let admin = cfg.history_admin().unwrap();
    let (_, doc) = admin.document(Some(v4)).await.unwrap();
    assert_eq!(
        doc["db"],
        serde_json::json!({"host": "db2", "password": "***"})
    );
    let (_, kvs) = admin.kvs(Some(v4)).await.unwrap();
    let db = kvs.iter().find(|(k, _)| k == "db").unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&db.1).unwrap(),
        serde_json::json!({"host": "db2", "password": "***"})
    );
    let changes = cfg.diff(v4, v5).await.unwrap();
    let paths: Vec<(&str, bool)> = changes
        .iter()
        .map(|c| (c.path.as_str(), c.unknown))
        .collect();
    // The token was not written in between: not listed. The document was: its secret may or
    // may not have changed.
    assert_eq!(paths, [("db.host", false), ("db.password", true)]);

    // Back to v4: the document's host comes back, its password is the current one.
    cfg.rollback_to(v4, "ops", "host back")
        .await
        .unwrap()
        .unwrap();
    wait_for(&cfg, "host db2", |c| c.db.host == "db2").await;
    assert_eq!(cfg.load().db.password, secrets[6]);

    assert_not_at_rest(&etcd, &secrets);
    let dump = coordination_keys(&etcd);
    assert!(dump.contains("\"omitted\""), "{dump}");
    assert!(
        dump.contains("db2"),
        "the document's other fields are recorded: {dump}"
    );
    let log = logged();
    for secret in secrets {
        assert!(!log.contains(secret), "`{secret}` was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_a_rollback_restores_every_secret_exactly_and_none_rests_in_plaintext() {
    logs();
    let secrets = [
        "keyed-pw-one",
        "keyed-tok-one",
        "keyed-pw-two",
        "keyed-tok-two",
        "keyed-pw-doc-three",
        "keyed-tok-five",
    ];
    let etcd = Etcd::start().await;
    let a = SecretKey::parse(KEY_A).unwrap();
    // Key B as base64 in a file, as `openssl rand -base64 32 > b.key` writes it.
    let dir = tempfile::tempdir().unwrap();
    let b_file = dir.path().join("b.key");
    std::fs::write(&b_file, "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=\n").unwrap();
    let b = SecretKey::from_file(&b_file).unwrap();
    assert_ne!(a.id(), b.id());

    let history = HistoryOptions::new().with_secret_key(a.clone());
    let (cfg, v0) = start_at_rest(&etcd, history, secrets[0], secrets[1]).await;
    let v1 = rotate(&cfg, secrets[2], secrets[3]).await;
    // A document, comments and spacing included, to come back byte for byte.
    etcd.del(&ar("db/password"));
    etcd.del(&ar("db/host"));
    let doc = format!("host: db2\npassword:   {}   # set by hand\n", secrets[4]);
    let v2 = etcd.put(&ar("db"), &doc);
    settled(&cfg, v2).await;
    let record = record_json(&etcd, v2);
    let sealed = record["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv[0] == "db")
        .map(|kv| kv[1].clone())
        .unwrap();
    assert_eq!(sealed["secret"], "xchacha20poly1305", "{sealed}");
    assert_eq!(sealed["key"], a.id(), "{sealed}");
    let shown: serde_json::Value = serde_json::from_str(sealed["shown"].as_str().unwrap()).unwrap();
    assert_eq!(shown, serde_json::json!({"host": "db2", "password": "***"}));

    // With the key a diff compares the secrets (still masked).
    let changes = cfg.diff(v0, v1).await.unwrap();
    let pw = changes.iter().find(|c| c.path == "db.password").unwrap();
    assert!(pw.secret && !pw.unknown, "{pw:?}");
    assert_eq!(pw.new, Some(serde_json::json!("***")));

    // The raw readers never show a decrypted secret, key or not.
    let admin = cfg.history_admin().unwrap();
    let (_, kvs) = admin.kvs(Some(v1)).await.unwrap();
    let shown: std::collections::BTreeMap<String, String> = kvs
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(shown["db/password"], "***");
    assert_eq!(shown["token"], "***");
    assert_eq!(shown["db/host"], "db1");
    let (_, document) = admin.document(Some(v2)).await.unwrap();
    assert_eq!(document["db"]["password"], "***");

    // Rollbacks decrypt and restore the exact bytes.
    cfg.rollback_to(v1, "ops", "to v1").await.unwrap().unwrap();
    wait_for(&cfg, "v1's secrets", |c| c.db.password == secrets[2]).await;
    assert_eq!(
        raw_value(&etcd, &ar("db/password")).await.as_deref(),
        Some(secrets[2])
    );
    assert_eq!(
        raw_value(&etcd, &ar("token")).await.as_deref(),
        Some(secrets[3])
    );
    assert_eq!(raw_value(&etcd, &ar("db")).await, None);
    let v2_back = cfg.rollback_to(v2, "ops", "to v2").await.unwrap().unwrap();
    settled(&cfg, v2_back.revision).await;
    assert_eq!(
        raw_value(&etcd, &ar("db")).await.as_deref(),
        Some(doc.as_str())
    );
    assert_eq!(cfg.load().db.password, secrets[4]);
    drop(cfg);

    // Rotation: write with B, keep A to read the older records.
    let cfg = bind_at_rest(
        &etcd,
        HistoryOptions::new()
            .with_secret_key(b.clone())
            .with_read_key(a.clone()),
    )
    .await;
    let v3 = cfg
        .update(|c| c.token = secrets[5].into(), "ops", "new token")
        .await
        .unwrap()
        .unwrap()
        .revision;
    settled(&cfg, v3).await;
    let record = record_json(&etcd, v3);
    let token = record["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv[0] == "token")
        .map(|kv| kv[1].clone())
        .unwrap();
    assert_eq!(token["key"], b.id(), "new records use the new key: {token}");
    cfg.rollback_to(v1, "ops", "a version encrypted with A")
        .await
        .unwrap()
        .unwrap();
    wait_for(&cfg, "v1 again", |c| c.token == secrets[3]).await;
    assert_eq!(
        raw_value(&etcd, &ar("db/password")).await.as_deref(),
        Some(secrets[2])
    );
    let back = cfg
        .rollback_to(v3, "ops", "a version encrypted with B")
        .await
        .unwrap()
        .unwrap();
    settled(&cfg, back.revision).await;
    assert_eq!(cfg.load().token, secrets[5]);
    drop(cfg);

    // Without key A, a version encrypted with it cannot be restored: a clear error naming the
    // key, and nothing written.
    let cfg = bind_at_rest(&etcd, HistoryOptions::new().with_secret_key(b.clone())).await;
    let mut client = etcd.client().await;
    let revision_now = |resp: etcd_client::GetResponse| resp.header().unwrap().revision();
    let before = revision_now(client.get("/", None).await.unwrap());
    let e = cfg.rollback_to(v1, "ops", "").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains(a.id()), "names the missing key: {e}");
    assert!(e.message().contains("nothing was written"), "{e}");
    assert_eq!(e.revision(), Some(v1));
    let untyped = coordination::history::ConfigHistory::open(&etcd.coordinator().await, AR)
        .await
        .unwrap();
    let e = untyped.rollback_to(v1, "ops", "").await.unwrap_err();
    assert!(e.message().contains(a.id()), "{e}");
    assert!(e.message().contains("no key was given"), "{e}");
    assert_eq!(revision_now(client.get("/", None).await.unwrap()), before);
    assert_eq!(cfg.load().token, secrets[5]);

    assert_not_at_rest(&etcd, &secrets);
    let dump = coordination_keys(&etcd);
    assert!(dump.contains(a.id()) && dump.contains(b.id()), "{dump}");
    let log = logged();
    for secret in secrets {
        assert!(!log.contains(secret), "`{secret}` was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_known_good_cache_leaves_out_secret_keys_and_documents_with_a_secret() {
    let etcd = Etcd::start().await;
    seed_at_rest(&etcd, "cache-pw-one", "cache-tok-one");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("atrest.lkg.json");
    let cfg = bind_with(&etcd, ConfigOptions::new().with_cache_file(&cache)).await;
    let cached_at = |revision: i64| {
        std::fs::read(&cache).ok().and_then(|bytes| {
            let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            (doc["revision"].as_i64()? >= revision).then_some(doc)
        })
    };
    let written = eventually!(WAIT, cached_at(cfg.load().revision()).is_some());
    assert!(written, "cache not written");
    let keys = |doc: &serde_json::Value| -> Vec<String> {
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_string())
            .collect()
    };
    let doc = cached_at(0).unwrap();
    assert_eq!(keys(&doc), [ar("db/host"), ar("port")], "{doc}");

    // A key holding a document with the secret inside is left out too.
    etcd.del(&ar("db/password"));
    let rev = etcd.put(&ar("db"), "{host: db2, password: cache-pw-doc}");
    wait_for(&cfg, "the document's password", |c| {
        c.db.password == "cache-pw-doc"
    })
    .await;
    let written = eventually!(WAIT, cached_at(rev).is_some());
    assert!(written, "cache not rewritten");
    let doc = cached_at(rev).unwrap();
    assert_eq!(keys(&doc), [ar("db/host"), ar("port")], "{doc}");
    let text = std::fs::read_to_string(&cache).unwrap();
    for secret in ["cache-pw-one", "cache-tok-one", "cache-pw-doc"] {
        assert!(!text.contains(secret), "`{secret}` in the cache: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_debug_log_across_bind_reload_reject_publish_and_rollback() {
    logs();
    let secrets = [
        "logged-pw-one",
        "logged-tok-one",
        "logged-pw-two",
        "logged-pw-three",
        "logged-pw-four",
    ];
    let etcd = Etcd::start().await;
    let history = HistoryOptions::new().with_secret_key(SecretKey::parse(KEY_A).unwrap());
    let (cfg, v0) = start_at_rest(&etcd, history, secrets[0], secrets[1]).await;
    let mut sub = cfg.subscribe();
    // Reload.
    let rev = etcd.put(&ar("db/password"), secrets[2]);
    settled(&cfg, rev).await;
    // Reject: a new password in the same transaction as a bad port.
    let rejected = etcd.txn(&[
        &format!("put {} {}", ar("db/password"), secrets[3]),
        &format!("put {} 0", ar("port")),
    ]);
    let rejection = loop {
        if let Some(r) = next_rejected_or_applied(&mut sub).await {
            break r;
        }
    };
    assert_eq!(rejection.error.revision(), Some(rejected));
    let fixed = etcd.put(&ar("port"), "8080");
    settled(&cfg, fixed).await;
    // Publish.
    let v = cfg
        .update(|c| c.db.password = secrets[4].into(), "ops", "publish")
        .await
        .unwrap()
        .unwrap();
    settled(&cfg, v.revision).await;
    // Rollback (decrypting the old secret).
    let back = cfg
        .rollback_to(v0, "ops", "rollback")
        .await
        .unwrap()
        .unwrap();
    settled(&cfg, back.revision).await;
    assert_eq!(cfg.load().db.password, secrets[0]);
    // A diff with the key compares the secrets in memory.
    assert!(!cfg.diff(v0, v.revision).await.unwrap().is_empty());

    let log = logged();
    assert!(log.contains("rejected config change"), "{log}");
    assert!(
        log.contains("recorded version"),
        "debug lines are captured: {log}"
    );
    assert!(log.contains("applied config snapshot"), "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "`{secret}` was logged:\n{log}");
    }
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_masks_recorded_secrets_without_a_schema_and_restores_with_the_history_key() {
    let secrets = ["cli-pw-one", "cli-tok-one", "cli-pw-two", "cli-tok-two"];
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("history.key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    let a = SecretKey::from_file(&key_file).unwrap();
    let history = HistoryOptions::new().with_secret_key(a.clone());
    let (cfg, v0) = start_at_rest(&etcd, history, secrets[0], secrets[1]).await;
    let v1 = rotate(&cfg, secrets[2], secrets[3]).await;
    let coordctl = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coordctl"));
        cmd.arg("--endpoints")
            .arg(etcd.endpoint())
            .args(args)
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("COORD_HISTORY_KEY")
            .env_remove("COORD_HISTORY_KEY_FILE")
            .stdin(std::process::Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("run coordctl")
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // No published schema: the secret paths recorded with the versions still mask.
    etcd.del("/__coordination/schema/apps/atrest/config");
    for args in [
        vec!["config", "get", AR],
        vec!["config", "get", AR, "--keys"],
        vec!["--json", "config", "get", AR, "--keys"],
        vec!["config", "get", AR, "--keys", "--version", &v0.to_string()],
    ] {
        let out = coordctl(&[], &args);
        let shown = text(&out);
        assert!(out.status.success(), "{args:?}: {shown}");
        assert!(shown.contains("***"), "{args:?}: {shown}");
        for secret in secrets {
            assert!(
                !shown.contains(secret),
                "{args:?} shows `{secret}`: {shown}"
            );
        }
    }

    // Without the key a diff cannot compare the secrets, and says so; with it, it can.
    let v0s = v0.to_string();
    let v1s = v1.to_string();
    let out = coordctl(&[], &["config", "diff", AR, &v0s, &v1s]);
    let shown = text(&out);
    assert!(
        shown.contains("***?") && shown.contains("unknown"),
        "{shown}"
    );
    let out = coordctl(
        &[("COORD_HISTORY_KEY", KEY_A)],
        &["config", "diff", AR, &v0s, &v1s],
    );
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("db.password") && !shown.contains("***?"),
        "{shown}"
    );

    // A rollback without the key fails naming it, and writes nothing.
    let out = coordctl(&[], &["config", "rollback", AR, &v0s]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(shown.contains(a.id()), "names the key: {shown}");
    assert_eq!(cfg.load().db.password, secrets[2]);
    // With it, the secrets come back exactly.
    let key_path = key_file.to_str().unwrap();
    let out = coordctl(
        &[],
        &[
            "--history-key-file",
            key_path,
            "config",
            "rollback",
            AR,
            &v0s,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for(&cfg, "v0's secrets", |c| {
        c.db.password == secrets[0] && c.token == secrets[1]
    })
    .await;
    // A bad key file is bad usage, and its text is not shown.
    std::fs::write(dir.path().join("bad.key"), "not-a-key-at-all").unwrap();
    let bad = dir.path().join("bad.key");
    let out = coordctl(
        &[],
        &[
            "--history-key-file",
            bad.to_str().unwrap(),
            "config",
            "history",
            AR,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("not-a-key-at-all"), "{}", text(&out));

    assert_not_at_rest(&etcd, &secrets);
}
