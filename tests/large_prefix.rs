//! A prefix of many pages is read as two parts at once (etcd serves each range request on one
//! core), split at a key found from etcd's counts at the read's revision. A property test binds
//! random key sets (names of random length and alphabet, some sharing long prefixes) in pages
//! of a few keys and in one page: both must give the same value with the same provenance, and
//! most reads of many pages must have been split with at least a quarter of the keys on each
//! side. A compaction while a split read is under way fails the bind with `Compacted`, as it
//! fails a read in one sequence; the re-read of a handle that comes back to a compacted watch
//! is split too and applies exactly the current keys. Every test runs its own etcd.

#[macro_use]
mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use coordination::config::{ConfigMap, ReloadCause, WatchState};
use coordination::{ConfigEvent, ConfigOptions, CoordConfig};
use etcd_client::{Txn, TxnOp};
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/large/config")]
struct Cfg {
    #[serde(default)]
    items: ConfigMap<Item>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Item {
    weight: u32,
}

/// One split read as the crate reports it (its `reading as two parts` debug event).
#[derive(Clone, Debug, Default)]
struct SplitSeen {
    range: String,
    below: i64,
    above: i64,
}

/// Records the split reads of every thread.
#[derive(Clone, Default)]
struct Splits(Arc<Mutex<Vec<SplitSeen>>>);

impl Splits {
    /// The splits of reads of `prefix` (ends with `/`) so far.
    fn of(&self, prefix: &str) -> Vec<SplitSeen> {
        let wanted = format!("the prefix `{prefix}`");
        let seen = self.0.lock().unwrap();
        seen.iter().filter(|s| s.range == wanted).cloned().collect()
    }
}

impl tracing::field::Visit for SplitSeen {
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        match field.name() {
            "below" => self.below = value,
            "above" => self.above = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "range" {
            self.range = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Splits {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = String::new();
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{v:?}");
                }
            }
        }
        event.record(&mut Message(&mut message));
        if message == "reading as two parts" {
            let mut seen = SplitSeen::default();
            event.record(&mut seen);
            self.0.lock().unwrap().push(seen);
        }
    }
}

/// The capture of split reads, installed once for the whole test binary (the reads run on the
/// runtime's worker threads).
fn splits() -> Splits {
    static SPLITS: OnceLock<Splits> = OnceLock::new();
    SPLITS
        .get_or_init(|| {
            let splits = Splits::default();
            let subscriber = tracing_subscriber::registry().with(splits.clone());
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            splits
        })
        .clone()
}

fn options(prefix: &str, page: u32) -> ConfigOptions {
    ConfigOptions::new()
        .with_prefix(prefix)
        .without_file()
        .without_env()
        .without_history()
        .without_receipts()
        .without_sharing()
        .with_page_size(page)
}

/// Writes `names` as items under `prefix`, at most 100 keys per transaction; returns the
/// revision of the last.
async fn write_items(client: &mut etcd_client::Client, prefix: &str, names: &[String]) -> i64 {
    let mut revision = 0;
    for (chunk_at, chunk) in names.chunks(100).enumerate() {
        let ops = chunk
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let weight = chunk_at * 100 + i;
                TxnOp::put(
                    format!("{prefix}/items/{name}"),
                    format!("{{weight: {weight}}}"),
                    None,
                )
            })
            .collect::<Vec<_>>();
        let resp = client.txn(Txn::new().and_then(ops)).await.expect("txn");
        revision = resp.header().expect("header").revision();
    }
    revision
}

/// Item names: short and long, of few and many distinct bytes, some with a long shared part.
fn names() -> impl Strategy<Value = Vec<String>> {
    let name = prop_oneof![
        "[a-z]{1,3}",
        "[0-9]{1,8}",
        "[a-zA-Z0-9_.-]{1,24}",
        ("[a-c]{1,2}", 0..5000u32).prop_map(|(p, n)| format!("{p}-{n:05}")),
        (0..3000u32).prop_map(|n| format!("service-with-a-long-shared-name-{n}")),
    ];
    proptest::collection::btree_set(name, 20..400).prop_map(|set| set.into_iter().collect())
}

/// Whether a read of `keys` keys in pages of `page` is long enough to be split.
fn splits_expected(keys: usize, page: u32) -> bool {
    keys >= page as usize * 6
}

/// One case: the items bound in pages of `page` keys and in one page agree; returns whether
/// the read in small pages was split (each part with at least a quarter of the keys after the
/// first page).
async fn run_case(
    coord: &coordination::Coordinator,
    client: &mut etcd_client::Client,
    case: u64,
    names: Vec<String>,
    page: u32,
) -> Result<bool, TestCaseError> {
    let prefix = format!("/large/{case}");
    let revision = write_items(client, &prefix, &names).await;
    let paged = Cfg::bind_with(coord, options(&prefix, page)).await.unwrap();
    let whole = Cfg::bind_with(coord, options(&prefix, 10_000))
        .await
        .unwrap();
    let (a, b) = (paged.load_full(), whole.load_full());
    prop_assert_eq!(a.revision(), revision);
    prop_assert_eq!(b.revision(), revision);
    prop_assert_eq!(a.value(), b.value());
    prop_assert_eq!(a.value().items.len(), names.len());
    prop_assert_eq!(support::provenance(&a), support::provenance(&b));
    let seen = splits().of(&format!("{prefix}/"));
    prop_assert!(seen.len() <= 1, "one bind split once at most: {seen:?}");
    let rest = names.len() as i64 - i64::from(page);
    for split in &seen {
        prop_assert_eq!(split.below + split.above, rest, "{:?}", split);
        prop_assert!(
            split.below * 4 >= rest && split.above * 4 >= rest,
            "{split:?}"
        );
    }
    Ok(!seen.is_empty())
}

#[test]
fn binds_in_small_pages_read_as_two_parts_equal_a_bind_in_one_page() {
    let splits = splits();
    let rt = support::runtime();
    let etcd = rt.block_on(Etcd::start());
    let coord = rt.block_on(etcd.coordinator());
    let client = rt.block_on(etcd.client());
    let mut runner = support::prop_runner(40, 100);
    let case = std::sync::atomic::AtomicU64::new(0);
    // (cases long enough to be split, of which split)
    let counted = Mutex::new((0, 0));
    let result = runner.run(&(names(), 1..20u32), |(names, page)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut client = client.clone();
        let expected = splits_expected(names.len(), page);
        let split = rt.block_on(run_case(&coord, &mut client, case, names, page))?;
        if expected {
            let mut counted = counted.lock().unwrap();
            counted.0 += 1;
            counted.1 += usize::from(split);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (long, split) = *counted.lock().unwrap();
    assert!(
        long > 0 && split * 10 >= long * 8,
        "{split} of {long} reads of many pages were split ({} splits seen in all)",
        splits.0.lock().unwrap().len()
    );
}

/// `items` holds exactly `names`, each with its index as written by [`write_items`].
fn assert_items(items: &ConfigMap<Item>, names: &[String]) {
    assert_eq!(items.len(), names.len());
    for (i, name) in names.iter().enumerate() {
        let item = items
            .get(name)
            .unwrap_or_else(|| panic!("no item `{name}`"));
        assert_eq!(item.weight, i as u32, "{name}");
    }
}

/// An etcd with `n` items `k000000`, `k000001`, … under `prefix`: the etcd, a coordinator, a
/// client, the names and the revision of the last write.
async fn numbered(
    prefix: &str,
    n: usize,
) -> (
    Etcd,
    coordination::Coordinator,
    etcd_client::Client,
    Vec<String>,
    i64,
) {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut client = etcd.client().await;
    let names: Vec<String> = (0..n).map(|i| format!("k{i:06}")).collect();
    let revision = write_items(&mut client, prefix, &names).await;
    (etcd, coord, client, names, revision)
}

#[test]
fn a_bind_of_many_pages_reads_two_parts_of_at_least_a_quarter_each() {
    let splits = splits();
    let rt = support::runtime();
    rt.block_on(async {
        let (_etcd, coord, _client, names, revision) = numbered("/many", 2000).await;
        let cfg = Cfg::bind_with(&coord, options("/many", 100)).await.unwrap();
        let snapshot = cfg.load_full();
        assert_eq!(snapshot.revision(), revision);
        assert_items(&snapshot.value().items, &names);
        let seen = splits.of("/many/");
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].below + seen[0].above, 1900, "{:?}", seen[0]);
        assert!(
            seen[0].below >= 475 && seen[0].above >= 475,
            "{:?}",
            seen[0]
        );
    });
}

#[test]
fn a_compaction_during_a_split_read_fails_the_bind_with_compacted_naming_the_prefix() {
    let splits = splits();
    let rt = support::runtime();
    rt.block_on(async {
        let (_etcd, coord, mut client, _, _) = numbered("/compacted", 20_000).await;
        // In pages of 5 keys, the read takes 4,000 requests: the compaction comes while it
        // is under way, after the first page fixed its revision.
        let bind = tokio::spawn({
            let coord = coord.clone();
            async move { Cfg::bind_with(&coord, options("/compacted", 5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = client
            .put("/elsewhere", "x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client.compact(now, None).await.unwrap();
        let error = match bind.await.unwrap() {
            Ok(_) => panic!("the read of 4,000 pages ended within 50 ms"),
            Err(error) => error,
        };
        assert_eq!(
            error.kind(),
            coordination::ErrorKind::Compacted,
            "{error:#}"
        );
        assert!(error.to_string().contains("/compacted/"), "{error:#}");
        assert_eq!(splits.of("/compacted/").len(), 1, "the read was split");
        // The next bind reads the prefix at a revision that is kept.
        let cfg = Cfg::bind_with(&coord, options("/compacted", 1000))
            .await
            .unwrap();
        assert_eq!(cfg.load().items.len(), 20_000);
    });
}

#[test]
fn a_resync_after_a_compaction_rereads_a_prefix_of_many_pages_as_two_parts() {
    let splits = splits();
    let rt = support::runtime();
    rt.block_on(async {
        let (etcd, _, mut client, names, _) = numbered("/resync", 300).await;
        let proxy = support::proxy::Proxy::to(&etcd).await;
        let coord = proxy.coordinator().await;
        let options = options("/resync", 10).with_max_backoff(Duration::from_millis(200));
        let cfg = Cfg::bind_with(&coord, options).await.unwrap();
        let mut events = cfg.subscribe();
        proxy.cut();
        assert!(eventually!(
            Duration::from_secs(10),
            cfg.status().state == WatchState::Reconnecting
        ));
        // Every item changes while the handle is cut off, and the changes are compacted: the
        // watch cannot resume, so the handle re-reads the prefix (30 pages of 10).
        let renamed: Vec<String> = names.iter().map(|n| format!("{n}-new")).collect();
        let mut last = write_items(&mut client, "/resync", &renamed).await;
        for chunk in names.chunks(100) {
            let ops = chunk
                .iter()
                .map(|name| TxnOp::delete(format!("/resync/items/{name}"), None))
                .collect::<Vec<_>>();
            let resp = client.txn(Txn::new().and_then(ops)).await.expect("txn");
            last = resp.header().expect("header").revision();
        }
        client.compact(last, None).await.unwrap();
        proxy.restore();
        let snapshot = loop {
            match tokio::time::timeout(Duration::from_secs(20), events.next()).await {
                Ok(Some(ConfigEvent::Applied(s))) => break s,
                Ok(Some(_)) => continue,
                other => panic!("no resync: {other:?}"),
            }
        };
        assert!(
            matches!(snapshot.cause(), ReloadCause::Resync { .. }),
            "{:?}",
            snapshot.cause()
        );
        assert_items(&snapshot.value().items, &renamed);
        // The bind's read and the resync's were both split.
        assert_eq!(
            splits.of("/resync/").len(),
            2,
            "{:?}",
            splits.of("/resync/")
        );
    });
}
