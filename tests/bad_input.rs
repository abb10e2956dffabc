//! The bad-input corpus: bad values, keys, files, variables and command lines for every layer
//! and for `coordctl`. A bad push never takes a fleet down: each input is refused with a clear
//! error naming the layer, the key (etcd key, file path or variable name) and, where there is
//! one, the revision; the last good snapshot keeps serving; the process stays up; and the
//! following valid change is applied.
//!
//! One test per layer, each with its own etcd: [`etcd_layer`] (puts, raw bytes, transactions,
//! deep keys and values, alias bombs, tags, documents, sizes), [`file_layer`] (real files in a
//! temp dir, rename storms, removal), [`env_layer`] (bind in this process and in child
//! processes with non-UTF-8 environments) and [`coordctl_cli`] (the binary against the harness
//! etcd, with a bound handle watching). [`corpus_covers_every_layer`] counts the cases.

#[macro_use]
mod support;

#[path = "bad_input/env_layer.rs"]
mod env_layer;
#[path = "bad_input/etcd_layer.rs"]
mod etcd_layer;
#[path = "bad_input/file_layer.rs"]
mod file_layer;

#[cfg(feature = "cli")]
#[path = "bad_input/coordctl_cli.rs"]
mod coordctl_cli;

use std::collections::BTreeMap;
use std::time::Duration;

use coordination::config::Subscription;
use coordination::{ConfigEvent, CoordConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The etcd prefix the corpus type is bound to.
pub(crate) const P: &str = "/apps/corpus";

/// How long a deep value, deep key or alias bomb may take to be refused, write to rejection.
/// The parser stops at the first event past a limit (milliseconds); this bound is generous so
/// that a loaded machine does not fail the test, and still far from the seconds or the stack
/// overflow an unbounded parser would take.
pub(crate) const QUICK: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/corpus", validate = "Corpus::check")]
#[serde(deny_unknown_fields)]
pub(crate) struct Corpus {
    #[schemars(range(min = 1))]
    pub(crate) port: u16,
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    pub(crate) name: String,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(crate) ratio: f64,
    pub(crate) enabled: bool,
    #[schemars(length(max = 3))]
    pub(crate) tags: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) mode: Mode,
    #[serde(default)]
    pub(crate) extra: BTreeMap<String, u32>,
    #[serde(default)]
    pub(crate) optional: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    #[schemars(range(min = 1, max = 10_000))]
    pub(crate) max_conns: u32,
    pub(crate) timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Fast,
    Safe,
}

impl Corpus {
    fn check(&self) -> Result<(), String> {
        if self.enabled && self.limits.timeout_ms < 10 {
            return Err("limits.timeout_ms must be at least 10 ms when enabled".into());
        }
        Ok(())
    }
}

/// The good etcd state every etcd case starts from and is repaired back to.
pub(crate) const SEED: &[(&str, &str)] = &[
    ("port", "8080"),
    ("name", "chat"),
    ("ratio", "0.5"),
    ("enabled", "true"),
    ("tags", "[blue, green]"),
    ("limits/max_conns", "100"),
    ("limits/timeout_ms", "250"),
    ("mode", "fast"),
];

/// The same good state as one YAML document (the file layer and `coordctl apply`).
pub(crate) const SEED_YAML: &str = "port: 8080\nname: chat\nratio: 0.5\nenabled: true\n\
tags: [blue, green]\nlimits:\n  max_conns: 100\n  timeout_ms: 250\nmode: fast\n";

/// The full etcd key of `rel` below the prefix.
pub(crate) fn key(rel: &str) -> String {
    format!("{P}/{rel}")
}

/// Writes [`SEED`] under the prefix.
pub(crate) fn seed(etcd: &support::Etcd) {
    for (rel, value) in SEED {
        etcd.put(&key(rel), value);
    }
}

/// The next event, within 10 s.
pub(crate) async fn next(sub: &mut Subscription<Corpus>) -> ConfigEvent<Corpus> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event within 10 s")
        .expect("subscription open")
}

// ---- Generators of bad text, shared by the layers ----

/// `{a: {a: … 1 …}}`, `n` levels of flow mappings.
pub(crate) fn flow_maps(n: usize) -> String {
    format!("{}1{}", "{a: ".repeat(n), "}".repeat(n))
}

/// `[[[ … ]]]`, `n` levels of flow sequences.
pub(crate) fn flow_seqs(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// `{"a":{"a":… 1 …}}`, `n` levels of compact JSON objects.
pub(crate) fn json_objects(n: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n))
}

/// `- - - … x`, `n` levels of compact block sequences on one line.
pub(crate) fn compact_seqs(n: usize) -> String {
    format!("{}x", "- ".repeat(n))
}

/// `a:\n  a:\n    …`, `n` levels of indented block mappings.
pub(crate) fn block_maps(n: usize) -> String {
    let mut s = String::new();
    for level in 0..n {
        s.push_str(&"  ".repeat(level));
        s.push_str("a:\n");
    }
    s.push_str(&"  ".repeat(n));
    s.push_str("1\n");
    s
}

/// The billion-laughs alias bomb: nine levels of nine aliases of the level below (9^9 nodes).
pub(crate) fn billion_laughs() -> String {
    let mut s = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..=9 {
        let prev = format!("*l{}", level - 1);
        let items = [prev.as_str(); 9].join(", ");
        s.push_str(&format!("l{level}: &l{level} [{items}]\n"));
    }
    s
}

/// One wide anchor (a 100-item sequence) aliased `uses` times.
pub(crate) fn wide_anchor(uses: usize) -> String {
    let items: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    format!(
        "w: &w [{}]\nuse: [{}]\n",
        items.join(", "),
        vec!["*w"; uses].join(", ")
    )
}

/// A chain of `n` anchors, each a sequence holding an alias of the one before: shallow text,
/// `n` levels once expanded.
pub(crate) fn alias_chain(n: usize) -> String {
    let mut s = String::from("c0: &c0 [1]\n");
    for level in 1..n {
        s.push_str(&format!("c{level}: &c{level} [*c{}]\n", level - 1));
    }
    s
}

/// What one layer's corpus holds, for the totals.
pub(crate) struct Count {
    pub(crate) layer: &'static str,
    pub(crate) cases: usize,
}

/// Every layer's case table is built (without running) and counted: at least 150 cases in
/// all, every layer represented.
#[test]
fn corpus_covers_every_layer() {
    #[cfg_attr(not(feature = "cli"), allow(unused_mut))]
    let mut counts = vec![
        Count {
            layer: "etcd (puts, raw bytes, transactions)",
            cases: etcd_layer::corpus().len(),
        },
        Count {
            layer: "file",
            cases: file_layer::case_count(),
        },
        Count {
            layer: "environment",
            cases: env_layer::case_count(),
        },
    ];
    #[cfg(feature = "cli")]
    counts.push(Count {
        layer: "coordctl",
        cases: coordctl_cli::corpus(std::path::Path::new("/nonexistent")).len(),
    });
    let total: usize = counts.iter().map(|c| c.cases).sum();
    for c in &counts {
        println!("bad-input corpus: {:>4} cases: {}", c.cases, c.layer);
        assert!(
            c.cases >= 10,
            "layer {} has only {} cases",
            c.layer,
            c.cases
        );
    }
    println!("bad-input corpus: {total:>4} cases in all");
    #[cfg(feature = "cli")]
    assert!(total >= 150, "{total} cases");
    #[cfg(not(feature = "cli"))]
    assert!(total >= 110, "{total} cases");
}
