//! The bad-input corpus: over 40 kinds of bad values and keys written to a live prefix (with
//! the `etcdctl` binary where an operator could type it, the client for raw bytes). Each one is
//! rejected with an error naming the key and the revision, the last good snapshot keeps
//! serving, the process stays up, and the following valid change is applied.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coordination::{
    Config, ConfigEvent, ConfigOptions, CoordConfig, ErrorKind, Layer, Snapshot, Subscription,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;

const P: &str = "/apps/corpus";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/corpus", validate = "Corpus::check")]
#[serde(deny_unknown_fields)]
struct Corpus {
    #[schemars(range(min = 1))]
    port: u16,
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    name: String,
    #[schemars(range(min = 0.0, max = 1.0))]
    ratio: f64,
    enabled: bool,
    #[schemars(length(max = 3))]
    tags: Vec<String>,
    limits: Limits,
    mode: Mode,
    #[serde(default)]
    extra: BTreeMap<String, u32>,
    #[serde(default)]
    optional: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[schemars(range(min = 1, max = 10_000))]
    max_conns: u32,
    timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
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

/// The good state every case starts from and is repaired back to.
const SEED: &[(&str, &str)] = &[
    ("port", "8080"),
    ("name", "chat"),
    ("ratio", "0.5"),
    ("enabled", "true"),
    ("tags", "[blue, green]"),
    ("limits/max_conns", "100"),
    ("limits/timeout_ms", "250"),
    ("mode", "fast"),
];

enum Write {
    /// `etcdctl put <prefix>/<rel> <value>`.
    Put(&'static str, String),
    /// A put of raw bytes through the client (etcdctl cannot type them).
    PutBytes(Vec<u8>, Vec<u8>),
    /// `etcdctl del <prefix>/<rel>`.
    Del(&'static str),
}

struct Case {
    what: &'static str,
    write: Write,
    /// Words the error message must contain.
    says: &'static str,
}

fn put(rel: &'static str, value: impl Into<String>) -> Write {
    Write::Put(rel, value.into())
}

fn corpus() -> Vec<Case> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let case = |what, write, says| Case { what, write, says };
    vec![
        case(
            "wrong type: word for u16",
            put("port", "abc"),
            "invalid type",
        ),
        case("negative for u16", put("port", "-1"), "invalid value"),
        case("out of u16 range", put("port", "70000"), "invalid value"),
        case("schema minimum", put("port", "0"), "minimum"),
        case("float for u16", put("port", "1.5"), "invalid type"),
        case("sequence for u16", put("port", "[1]"), "invalid type"),
        case("mapping for u16", put("port", "{a: 1}"), "invalid type"),
        case("empty value is null", put("port", ""), "invalid type: null"),
        case("bool for u16", put("port", "true"), "invalid type"),
        case("invalid YAML", put("port", "{a: ["), "invalid YAML"),
        case(
            "empty string for name",
            put("name", "\"\""),
            "shorter than 1",
        ),
        case("regex violation", put("name", "UPPER"), "does not match"),
        case("too long", put("name", "a".repeat(40)), "longer than 32"),
        case("sequence for string", put("name", "[a, b]"), "invalid type"),
        case("mapping for string", put("name", "{x: 1}"), "invalid type"),
        case("above schema maximum", put("ratio", "1.5"), "maximum"),
        case("below schema minimum", put("ratio", "-0.1"), "minimum"),
        case("word for f64", put("ratio", "high"), "invalid type"),
        case("NaN for f64", put("ratio", ".nan"), "invalid"),
        case(
            "yes is not a bool in YAML 1.2",
            put("enabled", "yes"),
            "invalid type",
        ),
        case("integer for bool", put("enabled", "2"), "invalid type"),
        case("scalar for sequence", put("tags", "a"), "invalid type"),
        case("too many items", put("tags", "[a, b, c, d]"), "more than 3"),
        case(
            "nested sequence item",
            put("tags", "[a, [b]]"),
            "invalid type",
        ),
        case(
            "sequence for struct (keys below it)",
            put("limits", "[1, 2]"),
            "not an object",
        ),
        case(
            "nested schema minimum",
            put("limits/max_conns", "0"),
            "minimum",
        ),
        case(
            "u32 overflow",
            put("limits/max_conns", "99999999999"),
            "invalid value",
        ),
        case(
            "validate() hook",
            put("limits/timeout_ms", "5"),
            "validate()",
        ),
        case(
            "negative for u64",
            put("limits/timeout_ms", "-5"),
            "invalid value",
        ),
        case(
            "unknown enum variant",
            put("mode", "turbo"),
            "unknown variant",
        ),
        case("number for enum", put("mode", "1"), "unknown variant `1`"),
        case("wrong map value type", put("extra/a", "x"), "invalid type"),
        case("sequence for map", put("extra", "[1]"), "invalid type"),
        case(
            "u8 overflow in Option",
            put("optional", "300"),
            "invalid value",
        ),
        case(
            "invalid JSON document",
            put("limits", r#"{"max_conns": 5"#),
            "invalid YAML/JSON",
        ),
        case(
            "YAML with two documents",
            put("limits", "max_conns: 1\n---\ntimeout_ms: 2\n"),
            "invalid YAML",
        ),
        case(
            "duplicate keys in a document",
            put("limits", "{max_conns: 1, max_conns: 2}"),
            "duplicate",
        ),
        case("unknown field", put("limits/max_con", "5"), "unknown field"),
        case("nested 10,000 deep", put("extra", deep), "invalid YAML"),
        case("key with a space", put("por t", "1"), "unknown field"),
        case("key with non-ASCII", put("pört", "1"), "unknown field"),
        case(
            "key with an empty segment",
            put("limits//max_conns", "1"),
            "empty path segment",
        ),
        case(
            "key with a trailing slash",
            put("limits/", "1"),
            "empty path segment",
        ),
        case("key below a scalar", put("port/x", "1"), "not an object"),
        case(
            "scalar root document",
            put("", "5"),
            "root document must be a mapping",
        ),
        case(
            "missing required field by deletion",
            Write::Del("name"),
            "missing field `name`",
        ),
        case(
            "invalid UTF-8 value",
            Write::PutBytes(format!("{P}/name").into_bytes(), vec![0xff, 0xfe, 0x00]),
            "UTF-8",
        ),
        case(
            "invalid UTF-8 key",
            Write::PutBytes(
                [format!("{P}/").as_bytes(), &[0xc3, 0x28]].concat(),
                b"1".to_vec(),
            ),
            "UTF-8",
        ),
        case(
            "binary garbage",
            Write::PutBytes(
                format!("{P}/ratio").into_bytes(),
                vec![0x00, 0x9f, 0x92, 0x96, 0xff],
            ),
            "UTF-8",
        ),
        case(
            "value over the per-key size limit",
            put("name", "x".repeat(40_000)),
            "over the limit of 32768 bytes",
        ),
    ]
}

fn key(rel: &str) -> String {
    format!("{P}/{rel}")
}

async fn next(sub: &mut Subscription<Corpus>) -> ConfigEvent<Corpus> {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("an event within 10 s")
        .expect("subscription open")
}

#[tokio::test]
async fn every_bad_input_is_rejected_and_the_next_valid_change_applies() {
    let etcd = Etcd::start().await;
    for (rel, value) in SEED {
        etcd.put(&key(rel), value);
    }
    let coord = etcd.coordinator().await;
    let cfg: Config<Corpus> = coord
        .config_with(ConfigOptions::new().max_value_bytes(32 * 1024))
        .await
        .unwrap();
    let good: Arc<Snapshot<Corpus>> = cfg.load_full();
    assert_eq!(good.limits.max_conns, 100);
    let mut client = etcd.client().await;
    let mut sub = cfg.subscribe();
    let cases = corpus();
    assert!(cases.len() >= 40, "{} cases", cases.len());

    for (n, case) in cases.iter().enumerate() {
        let serving = cfg.load_full();
        // Write the bad input.
        let (bad_key, revision) = match &case.write {
            Write::Put(rel, value) => (key(rel), etcd.put(&key(rel), value)),
            Write::Del(rel) => (key(rel), etcd.del(&key(rel))),
            Write::PutBytes(k, v) => {
                let resp = client.put(k.clone(), v.clone(), None).await.unwrap();
                (
                    String::from_utf8_lossy(k).into_owned(),
                    resp.header().unwrap().revision(),
                )
            }
        };
        let rejection = match next(&mut sub).await {
            ConfigEvent::Rejected(r) => r,
            other => panic!(
                "case {n} ({}): expected a rejection, got {other:?}",
                case.what
            ),
        };
        let e = &rejection.error;
        let shown = e.to_string();
        assert_eq!(
            e.kind(),
            ErrorKind::Validation,
            "case {n} ({}): {shown}",
            case.what
        );
        assert_eq!(
            e.revision(),
            Some(revision),
            "case {n} ({}): {shown}",
            case.what
        );
        assert_eq!(
            e.key(),
            Some(bad_key.as_str()),
            "case {n} ({}): {shown}",
            case.what
        );
        assert_eq!(
            e.layer(),
            Some(Layer::Etcd),
            "case {n} ({}): {shown}",
            case.what
        );
        assert!(
            shown.contains(case.says),
            "case {n} ({}): `{shown}` should say `{}`",
            case.what,
            case.says
        );
        assert!(
            shown.contains(&format!("revision {revision}")),
            "case {n}: {shown}"
        );
        // The last good snapshot keeps serving.
        assert!(
            Arc::ptr_eq(&cfg.load_full(), &serving),
            "case {n} ({})",
            case.what
        );
        assert_eq!(rejection.serving_revision, serving.revision());

        // Repair: put back the seed value, or remove the key.
        let repair_rev = match &case.write {
            Write::Put(rel, _) | Write::Del(rel) => match SEED.iter().find(|(k, _)| k == rel) {
                Some((_, v)) => etcd.put(&key(rel), v),
                None => etcd.del(&key(rel)),
            },
            Write::PutBytes(k, _) => {
                let rel = String::from_utf8_lossy(&k[P.len() + 1..]).into_owned();
                match SEED.iter().find(|(s, _)| *s == rel) {
                    Some((_, v)) => etcd.put(&key(&rel), v),
                    None => client
                        .delete(k.clone(), None)
                        .await
                        .unwrap()
                        .header()
                        .unwrap()
                        .revision(),
                }
            }
        };
        match next(&mut sub).await {
            ConfigEvent::Applied(s) => {
                assert_eq!(s.revision(), repair_rev, "case {n} ({})", case.what);
                assert_eq!(
                    s.value(),
                    good.value(),
                    "case {n} ({}): repaired state",
                    case.what
                );
            }
            other => panic!("case {n} ({}): repair not applied: {other:?}", case.what),
        }
    }
    assert_eq!(cfg.load().value(), good.value());
}
