//! How long a bound handle takes to reject pathological values: deeply nested mappings, JSON
//! objects and sequences, compact block sequences, wide aliases and alias bombs, at 1k, 10k and
//! 40k levels and at the per-key size limit (256 KiB).
//!
//! Each value is put under a bound prefix and timed from the put to the `Rejected` event, next
//! to a raw baseline from the same run: the same bytes put to a key outside the prefix and
//! timed to a raw etcd watch event. The difference is what the handle spends rejecting. For
//! reference, the last column is `serde_yaml::from_str` alone on the same text, the parser used
//! before (run once, and only where it finishes in seconds). Target: every case rejected within
//! 50 ms of its put.
//!
//! Run with `cargo bench --bench bad_input`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use coordination::config::DEFAULT_MAX_VALUE_BYTES;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig};
use etcd_client::{EventType, WatchOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const P: &str = "/bench/bad";
const ROUNDS: usize = 5;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/bench/bad")]
struct Target {
    port: u16,
    #[serde(default)]
    doc: Option<serde_json::Value>,
}

struct Case {
    shape: &'static str,
    size: String,
    text: String,
    /// Whether to time `serde_yaml` on it too (it takes seconds to minutes on the deepest).
    reference: bool,
}

fn levels_within(bytes_per_level: usize) -> usize {
    (DEFAULT_MAX_VALUE_BYTES - 16) / bytes_per_level
}

/// A shape of nesting: its name, bytes per level, and the text for a depth.
type Shape = (&'static str, usize, fn(usize) -> String);

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let shapes: [Shape; 4] = [
        ("nested YAML mappings {a: {a: …}}", 5, |d| {
            format!("{}1{}", "{a: ".repeat(d), "}".repeat(d))
        }),
        ("nested JSON objects {\"a\":{…}}", 6, |d| {
            format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d))
        }),
        ("nested sequences [[[…]]]", 2, |d| {
            format!("{}{}", "[".repeat(d), "]".repeat(d))
        }),
        ("compact block sequences - - - x", 2, |d| {
            format!("{}x\n", "- ".repeat(d))
        }),
    ];
    for (shape, per_level, make) in shapes {
        let limit = levels_within(per_level);
        for depth in [1_000, 10_000, 40_000, limit] {
            let size = if depth == limit {
                format!("{depth} deep (size limit)")
            } else {
                format!("{depth} deep")
            };
            out.push(Case {
                shape,
                size,
                text: make(depth),
                reference: depth <= 10_000,
            });
        }
    }
    // One anchor of n items, referenced n times: n² nodes from about 5n bytes.
    let wide = |n: usize| {
        let items = vec!["x"; n].join(",");
        let aliases = vec!["*a"; n].join(",");
        format!("a: &a [{items}]\nb: [{aliases}]\n")
    };
    let limit = levels_within(5);
    for n in [1_000, 10_000, 40_000, limit] {
        let size = if n == limit {
            format!("{n} × {n} (size limit)")
        } else {
            format!("{n} × {n}")
        };
        out.push(Case {
            shape: "wide alias: n aliases of an n-item anchor",
            size,
            text: wide(n),
            reference: n <= 1_000,
        });
    }
    // Billion laughs: each level is ten aliases of the one below.
    for levels in [9, 30] {
        let mut text = String::from("l0: &l0 [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 1..levels {
            let refs = vec![format!("*l{}", i - 1); 10].join(",");
            text.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        out.push(Case {
            shape: "alias bomb (billion laughs)",
            size: format!("{levels} levels of 10"),
            text,
            reference: true,
        });
    }
    out
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    etcd.put(&format!("{P}/port"), "8080");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Target> = coord
        .config_with(
            ConfigOptions::new()
                .without_file()
                .without_env()
                .without_history(),
        )
        .await
        .expect("bind");
    let mut sub = cfg.subscribe();
    let mut client = etcd.client().await;
    let mut raw = client
        .watch("/bench/raw/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let bad_key = format!("{P}/doc");

    println!("bad-input rejection (release; {ROUNDS} rounds per case; ms)");
    println!("put → rejected: put of the value under the bound prefix until its Rejected event; raw: the same bytes put outside it until a raw watch event");
    println!();
    println!("| input | size | bytes | put → rejected p50 | raw put → watch p50 | difference | ≤ 50 ms | serde_yaml alone |");
    println!("|---|---|---:|---:|---:|---:|---|---:|");
    for case in cases() {
        let mut rejected = Vec::new();
        let mut baseline = Vec::new();
        let mut message = String::new();
        for _ in 0..ROUNDS {
            // Raw baseline: the same bytes, outside the prefix.
            let start = Instant::now();
            client
                .put("/bench/raw/x", case.text.as_str(), None)
                .await
                .unwrap();
            loop {
                let resp = raw.message().await.unwrap().unwrap();
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Put)
                {
                    break;
                }
            }
            baseline.push(start.elapsed().as_secs_f64() * 1e3);

            let start = Instant::now();
            client
                .put(bad_key.as_str(), case.text.as_str(), None)
                .await
                .unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(60), sub.next())
                    .await
                    .expect("a rejection within 60 s")
                {
                    Some(ConfigEvent::Rejected(r)) => {
                        message = r.error.message().chars().take(60).collect();
                        break;
                    }
                    Some(ConfigEvent::Applied(_)) => panic!("{}: applied", case.shape),
                    _ => {}
                }
            }
            rejected.push(start.elapsed().as_secs_f64() * 1e3);
            client.delete(bad_key.as_str(), None).await.unwrap();
            loop {
                if let Some(ConfigEvent::Applied(_)) = sub.next().await {
                    break;
                }
            }
        }
        let reference = if case.reference {
            let start = Instant::now();
            let parsed = serde_yaml::from_str::<serde_json::Value>(&case.text);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            format!("{ms:.1}{}", if parsed.is_ok() { " (accepted)" } else { "" })
        } else {
            "not run (seconds)".to_string()
        };
        let (r, b) = (p50(rejected), p50(baseline));
        println!(
            "| {} | {} | {} | {r:.2} | {b:.2} | {:+.2} | {} | {reference} |",
            case.shape,
            case.size,
            case.text.len(),
            r - b,
            if r <= 50.0 { "yes" } else { "**no**" },
        );
        eprintln!("  {}: {message}", case.shape);
    }
}
