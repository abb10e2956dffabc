//! The etcd layer: bad values and keys written to a live prefix with the `etcdctl` binary
//! where an operator could type them, and with the client for raw bytes, large values and
//! transactions. Each is rejected with an error naming the etcd key and the revision, the last
//! good snapshot keeps serving, and the repair that follows (a put, a delete or a transaction)
//! is applied.

use std::sync::Arc;
use std::time::Instant;

use coordination::provenance::Layer;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, ErrorKind, Snapshot};
use etcd_client::{Txn, TxnOp};

use super::*;
use crate::support::Etcd;

/// One operation of a transaction.
pub(crate) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

pub(crate) enum Write {
    /// `etcdctl put <prefix>/<rel> <value>` (through the client when the value is too long
    /// for a command-line argument).
    Put(String, String),
    /// A put of raw bytes through the client (etcdctl cannot type them).
    PutBytes(Vec<u8>, Vec<u8>),
    /// `etcdctl del <prefix>/<rel>`.
    Del(String),
    /// One transaction; `blame` is the key the error must name (relative), or the keys of
    /// the transaction when the error concerns the whole document (a missing field, the
    /// `validate()` hook), in etcd's order.
    Txn { ops: Vec<Op>, blame: Vec<String> },
}

pub(crate) struct Case {
    what: &'static str,
    write: Write,
    /// Words the error message must contain.
    says: &'static str,
    /// Whether the rejection must arrive within [`QUICK`] (deep and explosive inputs).
    quick: bool,
}

fn put(rel: &str, value: impl Into<String>) -> Write {
    Write::Put(rel.to_string(), value.into())
}

fn raw(rel: &str, value: impl Into<Vec<u8>>) -> Write {
    Write::PutBytes(key(rel).into_bytes(), value.into())
}

fn op_put(rel: &str, value: impl Into<Vec<u8>>) -> Op {
    Op::Put(key(rel).into_bytes(), value.into())
}

fn op_del(rel: &str) -> Op {
    Op::Del(key(rel).into_bytes())
}

fn txn(blame: &[&str], ops: Vec<Op>) -> Write {
    Write::Txn {
        ops,
        blame: blame.iter().map(|b| b.to_string()).collect(),
    }
}

/// A key `segments` levels below the prefix (`a/a/…/a`).
fn deep_key(segments: usize) -> String {
    vec!["a"; segments].join("/")
}

const DEPTH: &str = "limit of 64 levels";
const NODES: &str = "expands to more than";
const TAG: &str = "is not supported";
const DOCS: &str = "more than one YAML document";

pub(crate) fn corpus() -> Vec<Case> {
    let c = |what, write, says| Case {
        what,
        write,
        says,
        quick: false,
    };
    let q = |what, write, says| Case {
        what,
        write,
        says,
        quick: true,
    };
    let over = DEFAULT_LIMIT + 1;
    vec![
        // ---- Wrong types and schema constraints ----
        c(
            "wrong type: word for u16",
            put("port", "abc"),
            "invalid type",
        ),
        c("negative for u16", put("port", "-1"), "invalid value"),
        c("out of u16 range", put("port", "70000"), "invalid value"),
        c("schema minimum", put("port", "0"), "minimum"),
        c("float for u16", put("port", "1.5"), "invalid type"),
        c("sequence for u16", put("port", "[1]"), "invalid type"),
        c("mapping for u16", put("port", "{a: 1}"), "invalid type"),
        c("empty value is null", put("port", ""), "invalid type: null"),
        c(
            "explicit null for u16",
            put("port", "~"),
            "invalid type: null",
        ),
        c("bool for u16", put("port", "true"), "invalid type"),
        c(
            "hex integer out of u16 range",
            put("port", "0x10000"),
            "invalid value",
        ),
        c(
            "quoted number for u16",
            put("port", "\"8080\""),
            "invalid type",
        ),
        c("invalid YAML", put("port", "{a: ["), "invalid YAML"),
        c(
            "empty string for name",
            put("name", "\"\""),
            "shorter than 1",
        ),
        c("regex violation", put("name", "UPPER"), "does not match"),
        c("too long", put("name", "a".repeat(40)), "longer than 32"),
        c("sequence for string", put("name", "[a, b]"), "invalid type"),
        c("mapping for string", put("name", "{x: 1}"), "invalid type"),
        c("unclosed quote", put("name", "\"chat"), "invalid YAML"),
        c(
            "tab-indented block",
            put("limits", "max_conns: 1\n\ttimeout_ms: 2"),
            "invalid YAML",
        ),
        c("above schema maximum", put("ratio", "1.5"), "maximum"),
        c("below schema minimum", put("ratio", "-0.1"), "minimum"),
        c("word for f64", put("ratio", "high"), "invalid type"),
        c("NaN for f64", put("ratio", ".nan"), "not a finite number"),
        c(
            "infinity for f64",
            put("ratio", ".inf"),
            "not a finite number",
        ),
        c(
            "negative infinity for f64",
            put("ratio", "-.Inf"),
            "not a finite number",
        ),
        c(
            "float overflowing to infinity",
            put("ratio", "1e999"),
            "invalid",
        ),
        c(
            "yes is not a bool in YAML 1.2",
            put("enabled", "yes"),
            "invalid type",
        ),
        c("integer for bool", put("enabled", "2"), "invalid type"),
        c("scalar for sequence", put("tags", "a"), "invalid type"),
        c("too many items", put("tags", "[a, b, c, d]"), "more than 3"),
        c(
            "nested sequence item",
            put("tags", "[a, [b]]"),
            "invalid type",
        ),
        c(
            "sequence for struct (keys below it)",
            put("limits", "[1, 2]"),
            "not an object",
        ),
        c(
            "nested schema minimum",
            put("limits/max_conns", "0"),
            "minimum",
        ),
        c(
            "nested schema maximum",
            put("limits/max_conns", "10001"),
            "maximum",
        ),
        c(
            "u32 overflow",
            put("limits/max_conns", "99999999999"),
            "invalid value",
        ),
        c(
            "validate() hook",
            put("limits/timeout_ms", "5"),
            "validate()",
        ),
        c(
            "negative for u64",
            put("limits/timeout_ms", "-5"),
            "invalid value",
        ),
        c(
            "u64 overflow",
            put("limits/timeout_ms", "18446744073709551616"),
            "invalid type",
        ),
        c(
            "unknown enum variant",
            put("mode", "turbo"),
            "unknown variant",
        ),
        c("number for enum", put("mode", "1"), "unknown variant `1`"),
        c(
            "enum in the wrong case",
            put("mode", "FAST"),
            "unknown variant",
        ),
        c("wrong map value type", put("extra/a", "x"), "invalid type"),
        c("sequence for map", put("extra", "[1]"), "invalid type"),
        c(
            "u8 overflow in Option",
            put("optional", "300"),
            "invalid value",
        ),
        c(
            "missing required field by deletion",
            Write::Del("name".into()),
            "missing field `name`",
        ),
        c(
            "missing nested field by deletion",
            Write::Del("limits/timeout_ms".into()),
            "missing field `timeout_ms`",
        ),
        // ---- Documents ----
        c(
            "invalid JSON document",
            put("limits", r#"{"max_conns": 5"#),
            "invalid YAML/JSON",
        ),
        c(
            "JSON with a missing comma",
            put("tags", r#"["a" "b"]"#),
            "invalid YAML",
        ),
        c(
            "YAML with two documents",
            put("limits", "max_conns: 1\n---\ntimeout_ms: 2\n"),
            DOCS,
        ),
        c(
            "two explicit documents",
            put("port", "--- 1\n--- 2\n"),
            DOCS,
        ),
        c(
            "a document after the end marker",
            put("name", "chat\n...\n---\nother\n"),
            DOCS,
        ),
        c(
            "duplicate keys in a document",
            put("limits", "{max_conns: 1, max_conns: 2}"),
            "duplicate",
        ),
        c(
            "duplicate keys in a JSON document",
            put("limits", r#"{"timeout_ms": 20, "timeout_ms": 30}"#),
            "duplicate",
        ),
        c(
            "duplicate keys nested in a document",
            put("extra", "{a: 1, b: {c: 1, c: 2}}"),
            "duplicate key `c`",
        ),
        c(
            "sequence as a mapping key",
            put("extra", "{[a]: 1}"),
            "must be a scalar",
        ),
        c(
            "unknown field in a document",
            put("limits", "{bogus: 1}"),
            "unknown field",
        ),
        c("unknown field", put("limits/max_con", "5"), "unknown field"),
        c(
            "scalar document over keys below it",
            put("limits", "5"),
            "not an object",
        ),
        c("key below a scalar", put("port/x", "1"), "not an object"),
        // ---- Root documents (`<prefix>/`) ----
        c(
            "scalar root document",
            put("", "5"),
            "root document must be a mapping",
        ),
        c(
            "sequence root document",
            put("", "[1, 2]"),
            "root document must be a mapping",
        ),
        c(
            "string root document",
            put("", "just words"),
            "root document must be a mapping",
        ),
        c(
            "invalid YAML root document",
            put("", "{a: ["),
            "invalid YAML",
        ),
        c(
            "root document with an unknown field",
            put("", "bogus: 1"),
            "unknown field",
        ),
        c(
            "root document with a bad value",
            put("", "optional: 300"),
            "invalid value",
        ),
        c(
            "root document with two documents",
            put("", "optional: 1\n---\noptional: 2\n"),
            DOCS,
        ),
        c(
            "root document blocking keys below it",
            put("", "limits: 5"),
            "not an object",
        ),
        q(
            "root document 10,000 deep",
            put("", flow_maps(10_000)),
            DEPTH,
        ),
        q("root document alias bomb", put("", billion_laughs()), NODES),
        // ---- Keys ----
        c("key with a space", put("por t", "1"), "unknown field"),
        c("key with non-ASCII", put("pört", "1"), "unknown field"),
        c("key in the wrong case", put("Port", "1"), "unknown field"),
        c(
            "dotted key",
            put("bogus.field", "1"),
            "unknown field `bogus.field`",
        ),
        c(
            "key with an empty segment",
            put("limits//max_conns", "1"),
            "empty path segment",
        ),
        c(
            "key with a trailing slash",
            put("limits/", "1"),
            "empty path segment",
        ),
        c("key of slashes only", put("//", "1"), "empty path segment"),
        c(
            "key 65 segments deep",
            put(&deep_key(65), "1"),
            "65 path segments",
        ),
        q(
            "key 10,000 segments deep",
            put(&deep_key(10_000), "1"),
            "10000 path segments",
        ),
        q(
            "deep key with a document taking it past the limit",
            put(&format!("extra/{}", deep_key(60)), flow_maps(5)),
            DEPTH,
        ),
        // ---- Deep values ----
        c(
            "value one level past the limit",
            put("extra", flow_seqs(64)),
            DEPTH,
        ),
        q(
            "flow mappings 1,000 deep",
            put("extra", flow_maps(1_000)),
            DEPTH,
        ),
        q(
            "flow mappings 10,000 deep",
            put("extra", flow_maps(10_000)),
            DEPTH,
        ),
        q(
            "flow mappings 40,000 deep",
            put("extra", flow_maps(40_000)),
            DEPTH,
        ),
        q(
            "flow sequences 1,000 deep",
            put("extra", flow_seqs(1_000)),
            DEPTH,
        ),
        q(
            "flow sequences 10,000 deep",
            put("extra", flow_seqs(10_000)),
            DEPTH,
        ),
        q(
            "flow sequences 40,000 deep",
            put("tags", flow_seqs(40_000)),
            DEPTH,
        ),
        q(
            "JSON objects 1,000 deep",
            put("limits", json_objects(1_000)),
            DEPTH,
        ),
        q(
            "JSON objects 10,000 deep",
            put("limits", json_objects(10_000)),
            DEPTH,
        ),
        q(
            "JSON objects 40,000 deep",
            put("limits", json_objects(40_000)),
            DEPTH,
        ),
        q(
            "compact sequences 1,000 deep",
            put("tags", compact_seqs(1_000)),
            DEPTH,
        ),
        q(
            "compact sequences 10,000 deep",
            put("tags", compact_seqs(10_000)),
            DEPTH,
        ),
        q(
            "compact sequences 40,000 deep",
            put("tags", compact_seqs(40_000)),
            DEPTH,
        ),
        q(
            "block mappings 100 deep",
            put("extra", block_maps(100)),
            DEPTH,
        ),
        q(
            "mixed sequences and mappings 10,000 deep",
            put(
                "extra",
                format!("{}{}", "[{a: ".repeat(5_000), "}]".repeat(5_000)),
            ),
            DEPTH,
        ),
        q(
            "unclosed sequences 40,000 deep",
            put("extra", "[".repeat(40_000)),
            "invalid YAML",
        ),
        // ---- Alias bombs ----
        q("billion laughs", put("extra", billion_laughs()), NODES),
        q(
            "one wide anchor used 5,000 times",
            put("tags", wide_anchor(5_000)),
            NODES,
        ),
        q(
            "alias chain 100 levels deep",
            put("extra", alias_chain(100)),
            DEPTH,
        ),
        c(
            "alias of an undefined anchor",
            put("tags", "[*nope]"),
            "invalid YAML",
        ),
        // ---- Tags ----
        c("custom tag", put("name", "!custom x"), TAG),
        c("custom tag on a sequence", put("tags", "!list [a]"), TAG),
        c(
            "custom tag on a mapping",
            put("limits", "!obj {max_conns: 1, timeout_ms: 20}"),
            TAG,
        ),
        c("binary tag", put("name", "!!binary aGVsbG8="), TAG),
        c("set tag", put("tags", "!!set {a: null}"), TAG),
        c("timestamp tag", put("name", "!!timestamp 2001-12-14"), TAG),
        c(
            "python object tag",
            put("name", "!!python/object/apply:os.system [id]"),
            TAG,
        ),
        c(
            "verbatim foreign tag",
            put("port", "!<tag:example.com,2000:port> 1"),
            TAG,
        ),
        c(
            "core int tag on a word",
            put("port", "!!int abc"),
            "not a valid !!int",
        ),
        // ---- Bytes and sizes ----
        c(
            "invalid UTF-8 value",
            Write::PutBytes(key("name").into_bytes(), vec![0xff, 0xfe, 0x00]),
            "UTF-8",
        ),
        c(
            "invalid UTF-8 key",
            Write::PutBytes(
                [format!("{P}/").as_bytes(), &[0xc3, 0x28]].concat(),
                b"1".to_vec(),
            ),
            "UTF-8",
        ),
        c(
            "binary garbage",
            raw("ratio", vec![0x00, 0x9f, 0x92, 0x96, 0xff]),
            "UTF-8",
        ),
        c(
            "UTF-16 text",
            raw("port", vec![0xff, 0xfe, b'8', 0, b'0', 0]),
            "UTF-8",
        ),
        c(
            "lone continuation byte",
            raw("name", vec![b'c', 0x80]),
            "UTF-8",
        ),
        c("overlong encoding", raw("name", vec![0xc0, 0xaf]), "UTF-8"),
        c(
            "encoded surrogate",
            raw("name", vec![0xed, 0xa0, 0x80]),
            "UTF-8",
        ),
        c(
            "key of 0xff bytes",
            Write::PutBytes(
                [format!("{P}/").as_bytes(), &[0xff; 8]].concat(),
                b"1".to_vec(),
            ),
            "UTF-8",
        ),
        c("key with a NUL byte", raw("por\0t", "1"), "unknown field"),
        c(
            "control character in a value (read as text, refused by the schema)",
            raw("name", "ch\x07at"),
            "does not match",
        ),
        c(
            "value one byte over the limit",
            raw("name", "x".repeat(over)),
            "over the limit of 262144 bytes",
        ),
        c(
            "1 MiB value",
            raw("extra", vec![b'a'; 1 << 20]),
            "over the limit",
        ),
        c(
            "root document over the limit",
            raw("", format!("port: 1\n{}", "#".repeat(over))),
            "over the limit",
        ),
        // ---- Transactions: one revision, rejected as a whole ----
        c(
            "txn: one bad and two good puts",
            txn(
                &["port"],
                vec![
                    op_put("port", "abc"),
                    op_put("name", "other"),
                    op_put("ratio", "0.25"),
                ],
            ),
            "invalid type",
        ),
        c(
            "txn: bad put in the middle",
            txn(
                &["limits/max_conns"],
                vec![
                    op_put("name", "other"),
                    op_put("limits/max_conns", "0"),
                    op_put("ratio", "0.3"),
                ],
            ),
            "minimum",
        ),
        c(
            "txn: bad put last",
            txn(
                &["mode"],
                vec![
                    op_put("port", "9000"),
                    op_put("name", "other"),
                    op_put("mode", "turbo"),
                ],
            ),
            "unknown variant",
        ),
        c(
            "txn: deep key among good puts",
            txn(
                &[&deep_key(10_000)],
                vec![
                    op_put("port", "9000"),
                    op_put(&deep_key(10_000), "1"),
                    op_put("name", "other"),
                ],
            ),
            "10000 path segments",
        ),
        c(
            "txn: deep value among good puts",
            txn(
                &["extra"],
                vec![
                    op_put("port", "9000"),
                    op_put("extra", flow_seqs(40_000)),
                    op_put("name", "other"),
                ],
            ),
            DEPTH,
        ),
        c(
            "txn: alias bomb among good puts",
            txn(
                &["tags"],
                vec![
                    op_put("tags", wide_anchor(5_000)),
                    op_put("port", "9000"),
                    op_put("name", "other"),
                ],
            ),
            NODES,
        ),
        c(
            "txn: invalid UTF-8 among good puts",
            txn(
                &["name"],
                vec![
                    op_put("port", "9000"),
                    op_put("name", vec![0xff]),
                    op_put("ratio", "0.3"),
                ],
            ),
            "UTF-8",
        ),
        c(
            "txn: huge value among good puts",
            txn(
                &["extra/a"],
                vec![
                    op_put("port", "9000"),
                    op_put("extra/a", vec![b'1'; over]),
                    op_put("name", "other"),
                ],
            ),
            "over the limit",
        ),
        c(
            "txn: unknown field among good puts",
            txn(
                &["bogus"],
                vec![
                    op_put("bogus", "1"),
                    op_put("port", "9000"),
                    op_put("name", "other"),
                ],
            ),
            "unknown field",
        ),
        c(
            "txn: custom tag among good puts",
            txn(
                &["name"],
                vec![op_put("name", "!custom x"), op_put("port", "9000")],
            ),
            TAG,
        ),
        c(
            "txn: delete of a required field with a good put",
            txn(
                &["name", "port"],
                vec![op_del("name"), op_put("port", "9000")],
            ),
            "missing field `name`",
        ),
        c(
            "txn: delete of an absent key and a bad put",
            txn(
                &["limits/max_conns"],
                vec![
                    op_del("optional"),
                    op_put("limits/max_conns", "x"),
                    op_put("port", "9000"),
                ],
            ),
            "invalid type",
        ),
        c(
            "txn: delete of a whole object",
            txn(
                &["limits/max_conns", "limits/timeout_ms"],
                vec![op_del("limits/max_conns"), op_del("limits/timeout_ms")],
            ),
            "missing field `limits`",
        ),
        c(
            "txn: every put bad",
            txn(
                &["port"],
                vec![
                    op_put("port", "abc"),
                    op_put("name", "UPPER"),
                    op_put("ratio", "2"),
                ],
            ),
            "invalid type",
        ),
        c(
            "txn: scalar document and a key below it",
            txn(
                &["limits/max_conns"],
                vec![op_put("limits", "5"), op_put("limits/max_conns", "100")],
            ),
            "not an object",
        ),
        c(
            "txn: bad root document with good keys",
            txn(&[""], vec![op_put("", "[1]"), op_put("port", "9000")]),
            "root document must be a mapping",
        ),
        c(
            "txn: validate() hook across two keys",
            txn(
                &["limits/timeout_ms", "enabled"],
                vec![op_put("limits/timeout_ms", "5"), op_put("enabled", "true")],
            ),
            "validate()",
        ),
        c(
            "txn: 100 good puts and one bad",
            txn(
                &["port"],
                (0..100)
                    .map(|i| op_put(&format!("extra/k{i}"), i.to_string()))
                    .chain([op_put("port", "abc")])
                    .collect(),
            ),
            "invalid type",
        ),
    ]
}

/// The default [`ConfigOptions::with_max_value_bytes`] (256 KiB), which the handle here uses.
const DEFAULT_LIMIT: usize = coordination::config::DEFAULT_MAX_VALUE_BYTES;

/// The relative key of a full key, lossily decoded.
fn rel_of(full: &[u8]) -> String {
    String::from_utf8_lossy(&full[P.len() + 1..]).into_owned()
}

/// The operation that puts a key back as [`SEED`] has it (or deletes it).
fn repair_op(full: &[u8]) -> Op {
    let rel = rel_of(full);
    match SEED.iter().find(|(k, _)| *k == rel) {
        Some((_, v)) => Op::Put(full.to_vec(), v.as_bytes().to_vec()),
        None => Op::Del(full.to_vec()),
    }
}

fn txn_op(op: &Op) -> TxnOp {
    match op {
        Op::Put(k, v) => TxnOp::put(k.clone(), v.clone(), None),
        Op::Del(k) => TxnOp::delete(k.clone(), None),
    }
}

/// Writes `ops` as one transaction and returns its revision.
async fn write_txn(client: &mut etcd_client::Client, ops: &[Op]) -> i64 {
    let resp = client
        .txn(Txn::new().and_then(ops.iter().map(txn_op).collect::<Vec<_>>()))
        .await
        .expect("txn");
    assert!(resp.succeeded());
    resp.header().unwrap().revision()
}

/// Longest value `etcdctl put` gets as an argument (one argument may not exceed 128 KiB).
const ARG_MAX: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_etcd_write_is_rejected_and_the_next_valid_change_applies() {
    crate::support::init_tracing();
    let etcd = Etcd::start().await;
    seed(&etcd);
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Corpus> = coord
        .config_with(ConfigOptions::new().without_env())
        .await
        .unwrap();
    let good: Arc<Snapshot<Corpus>> = cfg.load_full();
    assert_eq!(good.limits.max_conns, 100);
    let mut client = etcd.client().await;
    let mut sub = cfg.subscribe();
    let cases = corpus();
    let txns = cases
        .iter()
        .filter(|c| matches!(c.write, Write::Txn { .. }))
        .count();
    println!(
        "etcd corpus: {} cases ({txns} transactions, {} timed)",
        cases.len(),
        cases.iter().filter(|c| c.quick).count()
    );
    assert!(cases.len() >= 120, "{} cases", cases.len());
    assert!(txns >= 15, "{txns} transactions");
    let mut slowest = (std::time::Duration::ZERO, "");

    for (n, case) in cases.iter().enumerate() {
        let what = case.what;
        let serving = cfg.load_full();
        let started = Instant::now();
        // Write the bad input; note the keys it touched and the key the error must name.
        let (bad_key, touched, revision) = match &case.write {
            Write::Put(rel, value) if value.len() <= ARG_MAX => {
                let k = key(rel);
                (k.clone(), vec![k.clone().into_bytes()], etcd.put(&k, value))
            }
            Write::Put(rel, value) => {
                let k = key(rel);
                let resp = client.put(k.clone(), value.clone(), None).await.unwrap();
                let rev = resp.header().unwrap().revision();
                (k.clone(), vec![k.into_bytes()], rev)
            }
            Write::Del(rel) => {
                let k = key(rel);
                (k.clone(), vec![k.clone().into_bytes()], etcd.del(&k))
            }
            Write::PutBytes(k, v) => {
                let resp = client.put(k.clone(), v.clone(), None).await.unwrap();
                (
                    String::from_utf8_lossy(k).into_owned(),
                    vec![k.clone()],
                    resp.header().unwrap().revision(),
                )
            }
            Write::Txn { ops, blame } => {
                let touched = ops
                    .iter()
                    .map(|op| match op {
                        Op::Put(k, _) | Op::Del(k) => k.clone(),
                    })
                    .collect();
                let blamed: Vec<String> = blame.iter().map(|b| key(b)).collect();
                (
                    blamed.join(", "),
                    touched,
                    write_txn(&mut client, ops).await,
                )
            }
        };
        let rejection = match next(&mut sub).await {
            ConfigEvent::Rejected(r) => r,
            other => panic!("case {n} ({what}): expected a rejection, got {other:?}"),
        };
        let took = started.elapsed();
        if case.quick {
            assert!(took < QUICK, "case {n} ({what}): rejected after {took:?}");
            if took > slowest.0 {
                slowest = (took, what);
            }
        }
        let e = &rejection.error;
        let shown = e.to_string();
        assert_eq!(
            e.kind(),
            ErrorKind::Validation,
            "case {n} ({what}): {shown}"
        );
        assert_eq!(e.revision(), Some(revision), "case {n} ({what}): {shown}");
        assert_eq!(
            e.key(),
            Some(bad_key.as_str()),
            "case {n} ({what}): {shown}"
        );
        assert_eq!(e.layer(), Some(Layer::Etcd), "case {n} ({what}): {shown}");
        assert!(
            shown.contains(case.says),
            "case {n} ({what}): `{shown}` should say `{}`",
            case.says
        );
        assert!(
            shown.contains(&format!("revision {revision}")),
            "case {n} ({what}): {shown}"
        );
        // The last good snapshot keeps serving: none of a transaction's good writes applied.
        assert!(Arc::ptr_eq(&cfg.load_full(), &serving), "case {n} ({what})");
        assert_eq!(rejection.serving_revision, serving.revision());

        // Repair: put back the seed value of every key touched, or remove it; a transaction
        // is repaired by one transaction.
        let mut repair: Vec<Op> = Vec::new();
        for k in &touched {
            if !repair
                .iter()
                .any(|op| matches!(op, Op::Put(r, _) | Op::Del(r) if r == k))
            {
                repair.push(repair_op(k));
            }
        }
        let repair_rev = match repair.as_slice() {
            [Op::Put(k, v)] => client
                .put(k.clone(), v.clone(), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
            [Op::Del(k)] => client
                .delete(k.clone(), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision(),
            ops => write_txn(&mut client, ops).await,
        };
        match next(&mut sub).await {
            ConfigEvent::Applied(s) => {
                assert_eq!(s.revision(), repair_rev, "case {n} ({what})");
                assert_eq!(s.value(), good.value(), "case {n} ({what}): repaired state");
            }
            other => panic!("case {n} ({what}): repair not applied: {other:?}"),
        }
    }
    println!(
        "etcd corpus: slowest timed rejection {:?} ({})",
        slowest.0, slowest.1
    );
    assert_eq!(cfg.load().value(), good.value());
    assert!(cfg.status().state == coordination::config::WatchState::Live);
}
