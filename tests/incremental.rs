//! Incremental reloads: a reload caused by an etcd revision updates the merged tree, the
//! provenance and the value only where the revision's keys are, and must give exactly what a
//! full rebuild gives. A property test drives two handles of one prefix through random puts and
//! deletes (scalars, sub-documents, deeper keys, several keys in one transaction): one reloads
//! incrementally (the default), one with `with_full_reload()`; after every revision both must
//! have applied the same value with the same provenance and unknown keys, or rejected it with
//! the same error. Both have the same file and environment layers around the etcd layer. At
//! the end of each case, binds in one page and in pages of a few keys (read as two parts at
//! once) must agree.
//! Every test runs its own etcd.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use coordination::config::{ConfigMap, Rejection};
use coordination::provenance::Layer;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, Rebuild, Snapshot};
use etcd_client::{Txn, TxnOp};
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/prop/config", validate = "Cfg::check")]
struct Cfg {
    #[serde(default)]
    #[schemars(range(max = 200))]
    port: u16,
    #[serde(default)]
    db: Option<Db>,
    #[serde(default)]
    items: ConfigMap<Item>,
    #[serde(default)]
    #[schemars(length(max = 2))]
    tags: Vec<String>,
    #[serde(default)]
    limits: Limits,
}

impl Cfg {
    /// A cross-field rule, so `validate()` sees the whole value.
    fn check(&self) -> Result<(), String> {
        if self.port == 13 && self.items.contains_key("c") {
            return Err("port 13 cannot serve item `c`".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Db {
    host: String,
    #[schemars(range(min = 1))]
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Item {
    #[schemars(range(max = 10))]
    weight: u8,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Rebuild)]
struct Limits {
    #[serde(default)]
    #[schemars(range(max = 100))]
    max: u32,
    #[serde(default)]
    names: BTreeMap<String, u8>,
}

/// Keys below the prefix (`""` is the root document), each with the values usually put there:
/// mostly good, some out of the schema's range, of the wrong shape or failing `validate()`.
const KEYS: &[(&str, &[&str])] = &[
    ("port", &["5", "13", "300", "abc"]),
    ("db", &["{host: h, port: 5}", "{host: h}", "null", "{}"]),
    ("db/host", &["h2", "x"]),
    ("db/port", &["7", "0"]),
    ("db/typo", &["1"]),
    (
        "items",
        &["{a: {weight: 1}, b: {weight: 4}}", "{c: {weight: 1}}", "{}"],
    ),
    (
        "items/a",
        &["{weight: 3}", "{weight: 2, label: x}", "{weight: 30}"],
    ),
    (
        "items/b",
        &["{weight: 3}", "{weight: 5, label: y}", "{weight: 30}"],
    ),
    ("items/c", &["{weight: 3}", "{weight: 2, typo: 1}"]),
    ("items/a/weight", &["4", "11"]),
    ("items/b/label", &["lbl"]),
    ("tags", &["[a, b]", "[a, b, c]", "[]"]),
    ("limits", &["{max: 7, names: {k: 1}}", "{}"]),
    ("limits/max", &["50", "101"]),
    ("limits/names", &["{k: 2, j: 3}", "{}"]),
    ("limits/names/k", &["9"]),
    ("typo", &["1"]),
    (
        "",
        &[
            "{port: 8, db: {host: r, port: 2}}",
            "{items: {a: {weight: 9}}, typo: 1}",
            "{}",
        ],
    ),
];

/// Any key may also get one of these: shapes that fit no field or are not YAML.
const ODD_VALUES: &[&str] = &["5", "{weight: 3}", "[a, b]", "null", "{}", "{: bad"];

/// A put (`Some`) or delete (`None`) of one key: the value is the key's own (by index) or,
/// with `Some(odd)`, an odd one.
type Op = (usize, Option<(Option<usize>, usize)>);

/// One step: a transaction, at most one op per key.
type Step = Vec<Op>;

fn value_of(key: usize, choice: (Option<usize>, usize)) -> &'static str {
    match choice {
        (Some(odd), _) => ODD_VALUES[odd],
        (None, i) => KEYS[key].1[i % KEYS[key].1.len()],
    }
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let value = (prop::option::weighted(0.08, 0..ODD_VALUES.len()), 0..8usize);
    let op = (0..KEYS.len(), prop::option::weighted(0.6, value));
    prop::collection::vec(prop::collection::vec(op, 1..4), 1..16)
}

/// The file layer under the etcd layer: a document etcd keys go below or replace (`db`), a map
/// entry etcd never writes (`items.z`), a field etcd overrides (`port`).
const FILE: &str = "port: 3\ndb:\n  host: f\n  port: 9\nitems:\n  z:\n    weight: 2\n";

fn file_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "coordination-incremental-{}.yaml",
        std::process::id()
    ))
}

fn options(prefix: &str) -> ConfigOptions {
    let file = file_path();
    if !file.exists() {
        std::fs::write(&file, FILE).unwrap();
    }
    ConfigOptions::new()
        .with_prefix(prefix)
        .with_file(file)
        // The environment over etcd: one field of a sub-document etcd also writes.
        .with_env_prefix("PROP_")
        .with_env_vars([("PROP_DB__HOST", "envhost")])
        .without_history()
        .without_sharing()
}

/// What one handle made of one revision.
enum Outcome<T> {
    Applied(Arc<Snapshot<T>>),
    Rejected(Arc<Rejection>),
}

/// The handle's event for `revision` (skipping status and unknown-key events).
async fn outcome<T: CoordConfig>(
    events: &mut coordination::config::Subscription<T>,
    revision: i64,
) -> Outcome<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no event for revision {revision} within 10 s"))
            .expect("subscription open");
        match event {
            ConfigEvent::Applied(s) if s.revision() == revision => return Outcome::Applied(s),
            ConfigEvent::Rejected(r) if r.error.revision() == Some(revision) => {
                return Outcome::Rejected(r)
            }
            _ => {}
        }
    }
}

/// Both snapshots hold the same value, revision, provenance and unknown keys.
fn same_snapshot(a: &Snapshot<Cfg>, b: &Snapshot<Cfg>) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.value(), b.value());
    prop_assert_eq!(a.revision(), b.revision());
    prop_assert_eq!(support::provenance(a), support::provenance(b));
    prop_assert_eq!(a.unknown_keys(), b.unknown_keys());
    Ok(())
}

async fn run_case(
    coord: &coordination::Coordinator,
    client: &mut etcd_client::Client,
    case: u64,
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    let prefix = format!("/prop/{case}");
    let incremental = Cfg::bind_with(coord, options(&prefix)).await.unwrap();
    let full = Cfg::bind_with(coord, options(&prefix).with_full_reload())
        .await
        .unwrap();
    let mut inc_events = incremental.subscribe();
    let mut full_events = full.subscribe();
    let mut present = BTreeSet::new();
    for step in steps {
        let mut seen = BTreeSet::new();
        let mut ops = Vec::new();
        for (key, value) in step {
            if !seen.insert(key) {
                continue;
            }
            let full_key = format!("{prefix}/{}", KEYS[key].0);
            match value {
                Some(v) => {
                    present.insert(key);
                    ops.push(TxnOp::put(full_key, value_of(key, v), None));
                }
                None if present.remove(&key) => ops.push(TxnOp::delete(full_key, None)),
                None => {}
            }
        }
        if ops.is_empty() {
            continue;
        }
        let revision = client
            .txn(Txn::new().and_then(ops))
            .await
            .expect("txn")
            .header()
            .expect("header")
            .revision();
        let a = outcome(&mut inc_events, revision).await;
        let b = outcome(&mut full_events, revision).await;
        match (a, b) {
            (Outcome::Applied(a), Outcome::Applied(b)) => same_snapshot(&a, &b)?,
            (Outcome::Rejected(a), Outcome::Rejected(b)) => {
                prop_assert_eq!(a.error.to_string(), b.error.to_string());
                prop_assert_eq!(a.error.key(), b.error.key());
                prop_assert_eq!(a.error.field(), b.error.field());
                prop_assert_eq!(a.error.layer(), b.error.layer());
                prop_assert_eq!(a.serving_revision, b.serving_revision);
            }
            (Outcome::Applied(a), Outcome::Rejected(b)) => {
                return Err(TestCaseError::fail(format!(
                    "revision {revision}: incremental applied {:?}, full rejected: {:#}",
                    a.value(),
                    b.error
                )))
            }
            (Outcome::Rejected(a), Outcome::Applied(b)) => {
                return Err(TestCaseError::fail(format!(
                    "revision {revision}: incremental rejected ({:#}), full applied {:?}",
                    a.error,
                    b.value()
                )))
            }
        }
        same_snapshot(&incremental.load_full(), &full.load_full())?;
    }
    // And a bind from scratch agrees with what the incremental handle serves, when the
    // prefix as it is now is valid; a bind in pages of 1 to 3 keys (a read of many pages,
    // split in two parts read at once) agrees with the bind in one page, bad keys included.
    let fresh = Cfg::bind_with(coord, options(&prefix)).await;
    let paged = Cfg::bind_with(
        coord,
        options(&prefix)
            .with_page_size(1 + case as u32 % 3)
            .without_sharing(),
    )
    .await;
    match (&fresh, &paged) {
        (Ok(fresh), Ok(paged)) if fresh.load_full().revision() == paged.load_full().revision() => {
            same_snapshot(&fresh.load_full(), &paged.load_full())?
        }
        (Err(a), Err(b)) => {
            prop_assert_eq!(a.to_string(), b.to_string());
            prop_assert_eq!(a.key(), b.key());
        }
        (Ok(_), Ok(_)) => {}
        (a, b) => {
            return Err(TestCaseError::fail(format!(
                "a bind in one page gave {:?}, in small pages {:?}",
                a.as_ref().map(|h| h.load_full().value().clone()),
                b.as_ref().map(|h| h.load_full().value().clone()),
            )))
        }
    }
    if let Ok(fresh) = fresh {
        let now = fresh.load_full();
        let served = incremental.load_full();
        if now.revision() == served.revision() {
            same_snapshot(&served, &now)?;
        }
    }
    Ok(())
}

#[test]
fn incremental_reload_equals_a_full_rebuild() {
    support::init_tracing();
    let rt = support::runtime();
    let etcd = rt.block_on(Etcd::start());
    let coord = rt.block_on(etcd.coordinator());
    let client = rt.block_on(etcd.client());
    let mut runner = support::prop_runner(40, 200);
    let case = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&steps(), |steps| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut client = client.clone();
        rt.block_on(run_case(&coord, &mut client, case, steps))
    });
    let _ = std::fs::remove_file(file_path());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The type of the 10k-key tests: one map entry per key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/big/config")]
struct Big {
    #[serde(default)]
    items: ConfigMap<Item>,
}

/// Puts `n` keys `<prefix>/items/kNNNNN` = `{weight: 1}` in transactions of 100.
async fn fill(client: &mut etcd_client::Client, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|i| TxnOp::put(format!("{prefix}/items/k{i:05}"), "{weight: 1}", None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.expect("fill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_key_among_10k_is_rejected_by_layer_key_and_revision() {
    support::init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    let prefix = "/apps/big/config";
    fill(&mut client, prefix, 10_000).await;
    let handle: ConfigHandle<Big> = Big::bind_with(&coord, ConfigOptions::new().without_history())
        .await
        .unwrap();
    assert_eq!(handle.load().items.len(), 10_000);
    let mut events = handle.subscribe();

    // A good change: applied, and every other entry is the same allocation as before.
    let before = handle.load_full();
    let good = client
        .put(format!("{prefix}/items/k00042"), "{weight: 7}", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let Outcome::Applied(after) = outcome(&mut events, good).await else {
        panic!("a good change was rejected")
    };
    assert_eq!(after.items.get("k00042").unwrap().weight, 7);
    assert!(Arc::ptr_eq(
        before.items.get_arc("k00041").unwrap(),
        after.items.get_arc("k00041").unwrap()
    ));
    assert_eq!(after.source("items.k00042.weight").revision, Some(good));
    assert_eq!(
        after.source("items.k00041.weight").origin.key().as_deref(),
        Some(format!("{prefix}/items/k00041").as_str())
    );

    // A bad value in one entry (out of the schema's range): rejected, naming it.
    let bad_key = format!("{prefix}/items/k09999");
    let bad = client
        .put(bad_key.clone(), "{weight: 99}", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let Outcome::Rejected(rejection) = outcome(&mut events, bad).await else {
        panic!("a bad value was applied")
    };
    assert_eq!(rejection.error.layer(), Some(Layer::Etcd));
    assert_eq!(rejection.error.key(), Some(bad_key.as_str()));
    assert_eq!(rejection.error.revision(), Some(bad));
    assert_eq!(rejection.error.field(), Some("items.k09999.weight"));
    assert_eq!(rejection.serving_revision, good);
    assert_eq!(
        handle.load().revision(),
        good,
        "the last good snapshot serves"
    );
    assert_eq!(handle.load().items.get("k09999").unwrap().weight, 1);

    // A value that is not YAML at all: rejected the same way.
    let broken = client
        .put(format!("{prefix}/items/k00007"), "{weight: ", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let Outcome::Rejected(rejection) = outcome(&mut events, broken).await else {
        panic!("invalid YAML was applied")
    };
    assert_eq!(
        rejection.error.key(),
        Some(format!("{prefix}/items/k00007").as_str())
    );
    assert_eq!(rejection.error.revision(), Some(broken));
    assert_eq!(handle.load().revision(), good);

    // Fixing both keys makes the next revision apply again, with both fixes in it.
    client
        .put(format!("{prefix}/items/k00007"), "{weight: 2}", None)
        .await
        .unwrap();
    let fixed = client
        .put(bad_key.clone(), "{weight: 3}", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let Outcome::Applied(now) = outcome(&mut events, fixed).await else {
        panic!("the fixed prefix was rejected")
    };
    assert_eq!(now.items.get("k09999").unwrap().weight, 3);
    assert_eq!(now.items.get("k00007").unwrap().weight, 2);
    assert_eq!(now.items.get("k00042").unwrap().weight, 7);
    assert_eq!(now.items.len(), 10_000);
}
