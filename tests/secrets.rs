//! Secret values never reach a rejection, a log line, a publish error or `coordctl`'s output,
//! even when the error is about an object that holds a secret; and a bad candidate is
//! reported with every violation at once, against a real etcd.

#[macro_use]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use coordination::config::Rejection;
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
async fn next_rejected_or_applied(
    sub: &mut coordination::config::Subscription<Vault>,
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
