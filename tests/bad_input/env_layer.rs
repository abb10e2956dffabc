//! The environment layer, read once at bind. A bad variable of the layer's prefix fails the
//! bind with a validation error naming the layer and the variable (there is no older snapshot
//! to keep serving); variables of other prefixes are ignored whatever their bytes; and the
//! process never panics. UTF-8 cases bind in this process with
//! [`ConfigOptions::with_env_vars`]; the rest bind in a child process (this test binary re-run as
//! the `bind_worker` test, which does nothing unless `BAD_INPUT_ENV_ETCD` is set) whose real
//! environment holds the bytes, non-UTF-8 names and values included.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use coordination::provenance::Layer;
use coordination::{ConfigHandle, ConfigOptions, ErrorKind};
use serde_json::{json, Value};

use super::*;
use crate::support::Etcd;

const PREFIX: &str = "CHAT_";
const DEPTH: &str = "limit of 64";

/// A bind with these variables (in this process) must fail naming `blame`.
struct Case {
    what: &'static str,
    vars: Vec<(String, String)>,
    blame: String,
    says: &'static str,
    quick: bool,
}

/// A variable name `segments` levels deep: `CHAT_A__A__…__A`.
fn deep_name(segments: usize) -> String {
    format!("{PREFIX}{}", vec!["A"; segments].join("__"))
}

fn corpus() -> Vec<Case> {
    let one = |what, name: &str, value: &str, says, quick| Case {
        what,
        vars: vec![(name.to_string(), value.to_string())],
        blame: name.to_string(),
        says,
        quick,
    };
    let c = |what, name: &str, value: &str, says| one(what, name, value, says, false);
    let q = |what, name: &str, value: &str, says| one(what, name, value, says, true);
    vec![
        c("word for u16", "CHAT_PORT", "abc", "invalid type"),
        c("schema minimum", "CHAT_PORT", "0", "minimum"),
        c("out of u16 range", "CHAT_PORT", "70000", "invalid value"),
        c("negative for u16", "CHAT_PORT", "-1", "invalid value"),
        c("empty value is null", "CHAT_PORT", "", "invalid type: null"),
        c(
            "quoted number for u16",
            "CHAT_PORT",
            "\"8080\"",
            "invalid type",
        ),
        c("regex violation", "CHAT_NAME", "UPPER", "does not match"),
        c("sequence for string", "CHAT_NAME", "[a, b]", "invalid type"),
        c("NaN", "CHAT_RATIO", ".nan", "not a finite number"),
        c("schema maximum", "CHAT_RATIO", "2", "maximum"),
        c("yes is not a bool", "CHAT_ENABLED", "yes", "invalid type"),
        c("too many items", "CHAT_TAGS", "[a, b, c, d]", "more than 3"),
        c("invalid YAML", "CHAT_TAGS", "{a: [", "invalid YAML"),
        c(
            "nested schema minimum",
            "CHAT_LIMITS__MAX_CONNS",
            "0",
            "minimum",
        ),
        c(
            "nested wrong type",
            "CHAT_LIMITS__MAX_CONNS",
            "x",
            "invalid type",
        ),
        c("scalar over an object", "CHAT_LIMITS", "5", "invalid type"),
        c(
            "unknown enum variant",
            "CHAT_MODE",
            "turbo",
            "unknown variant",
        ),
        c("unknown field", "CHAT_BOGUS", "1", "unknown field"),
        c(
            "unknown nested field",
            "CHAT_LIMITS__BOGUS",
            "1",
            "unknown field",
        ),
        c(
            "map value of the wrong type",
            "CHAT_EXTRA__A",
            "x",
            "invalid type",
        ),
        c("u8 overflow", "CHAT_OPTIONAL", "300", "invalid value"),
        c(
            "empty segment",
            "CHAT_LIMITS____MAX_CONNS",
            "1",
            "empty field name",
        ),
        c("leading separator", "CHAT___PORT", "1", "empty field name"),
        c("trailing separator", "CHAT_PORT__", "1", "empty field name"),
        c("custom tag", "CHAT_NAME", "!custom x", "is not supported"),
        c(
            "duplicate keys",
            "CHAT_LIMITS",
            "{max_conns: 1, max_conns: 2}",
            "duplicate key",
        ),
        c(
            "two documents",
            "CHAT_LIMITS",
            "max_conns: 1\n---\ntimeout_ms: 2",
            "more than one YAML document",
        ),
        c(
            "sequence as a mapping key",
            "CHAT_EXTRA",
            "{[a]: 1}",
            "must be a scalar",
        ),
        c(
            "65 segments deep",
            &deep_name(65),
            "1",
            "65 segments, over the limit of 64",
        ),
        q(
            "10,000 segments deep",
            &deep_name(10_000),
            "1",
            "10000 segments, over the limit of 64",
        ),
        q("value 10,000 deep", "CHAT_EXTRA", &flow_maps(10_000), DEPTH),
        q(
            "value 40,000 deep",
            "CHAT_TAGS",
            &compact_seqs(40_000),
            DEPTH,
        ),
        q(
            "alias bomb",
            "CHAT_EXTRA",
            &billion_laughs(),
            "expands to more than",
        ),
        Case {
            what: "scalar with a variable below it",
            vars: vec![
                ("CHAT_LIMITS".into(), "5".into()),
                ("CHAT_LIMITS__MAX_CONNS".into(), "1".into()),
            ],
            blame: "CHAT_LIMITS__MAX_CONNS".into(),
            says: "not an object",
            quick: false,
        },
        Case {
            what: "bad variable among good ones",
            vars: vec![
                ("CHAT_PORT".into(), "9000".into()),
                ("CHAT_NAME".into(), "UPPER".into()),
                ("CHAT_RATIO".into(), "0.1".into()),
            ],
            blame: "CHAT_NAME".into(),
            says: "does not match",
            quick: false,
        },
    ]
}

/// A bind in a child process with these exact environment bytes (and nothing else).
struct ChildCase {
    what: &'static str,
    vars: Vec<(Vec<u8>, Vec<u8>)>,
    /// `None`: the bind succeeds and serves `port`; `Some((variable, words))`: it fails naming
    /// the variable.
    expect: Result<u16, (String, &'static str)>,
}

fn child_corpus() -> Vec<ChildCase> {
    let var = |k: &[u8], v: &[u8]| (k.to_vec(), v.to_vec());
    let fail = |blame: &str, says| Err((blame.to_string(), says));
    vec![
        ChildCase {
            what: "bad value of the prefix",
            vars: vec![var(b"CHAT_PORT", b"abc")],
            expect: fail("CHAT_PORT", "invalid type"),
        },
        ChildCase {
            what: "non-UTF-8 name of another prefix",
            vars: vec![var(b"OTHER_\xff", b"1")],
            expect: Ok(8080),
        },
        ChildCase {
            what: "non-UTF-8 value of another variable",
            vars: vec![var(b"LANG", b"\xff\xfe")],
            expect: Ok(8080),
        },
        ChildCase {
            what: "non-UTF-8 name and value of another prefix",
            vars: vec![var(b"\xfe\xff", b"\xfd")],
            expect: Ok(8080),
        },
        ChildCase {
            what: "non-UTF-8 neighbours of a good variable",
            vars: vec![
                var(b"OTHER_\xff", b"\xfe"),
                var(b"CHAT_PORT", b"9000"),
                var(b"CHATTY_\xff", b"1"),
            ],
            expect: Ok(9000),
        },
        ChildCase {
            what: "non-UTF-8 value of the prefix",
            vars: vec![var(b"CHAT_NAME", b"\xfex")],
            expect: fail("CHAT_NAME", "value is not valid UTF-8"),
        },
        ChildCase {
            what: "non-UTF-8 name of the prefix",
            vars: vec![var(b"CHAT_\xff", b"1")],
            expect: fail("CHAT_\u{fffd}", "name is not valid UTF-8"),
        },
        ChildCase {
            what: "non-UTF-8 nested name of the prefix",
            vars: vec![var(b"CHAT_LIMITS__\xc3\x28", b"1")],
            expect: fail("CHAT_LIMITS__\u{fffd}(", "name is not valid UTF-8"),
        },
        ChildCase {
            what: "10,000 segments deep",
            vars: vec![(deep_name(10_000).into_bytes(), b"1".to_vec())],
            expect: Err((deep_name(10_000), "10000 segments, over the limit of 64")),
        },
        ChildCase {
            what: "value 40,000 deep",
            vars: vec![var(b"CHAT_EXTRA", flow_seqs(40_000).as_bytes())],
            expect: fail("CHAT_EXTRA", DEPTH),
        },
        ChildCase {
            what: "alias bomb",
            vars: vec![var(b"CHAT_EXTRA", billion_laughs().as_bytes())],
            expect: fail("CHAT_EXTRA", "expands to more than"),
        },
        ChildCase {
            what: "empty segment",
            vars: vec![var(b"CHAT_A____B", b"1")],
            expect: fail("CHAT_A____B", "empty field name"),
        },
    ]
}

pub(crate) fn case_count() -> usize {
    corpus().len() + child_corpus().len()
}

fn options() -> ConfigOptions {
    ConfigOptions::new().with_env_prefix(PREFIX).without_file()
}

/// Binds with the process environment and prints the outcome as one `@@ <json>` line. Does
/// nothing unless `BAD_INPUT_ENV_ETCD` (the etcd endpoint) is set: it is the child process of
/// [`a_bad_variable_fails_the_bind_naming_it`].
#[tokio::test]
async fn bind_worker() {
    let Ok(endpoint) = std::env::var("BAD_INPUT_ENV_ETCD") else {
        return;
    };
    let coord =
        coordination::Coordinator::connect(coordination::CoordinatorOptions::new([endpoint]))
            .await
            .expect("worker connect");
    let outcome = match coord.config_with::<Corpus>(options()).await {
        Ok(cfg) => json!({"ok": true, "port": cfg.load().port}),
        Err(e) => json!({
            "ok": false,
            "kind": format!("{:?}", e.kind()),
            "layer": e.layer().map(|l| format!("{l:?}")),
            "key": e.key(),
            "message": e.to_string(),
        }),
    };
    println!("@@ {outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_variable_fails_the_bind_naming_it() {
    crate::support::init_tracing();
    let etcd = Etcd::start().await;
    seed(&etcd);
    let coord = etcd.coordinator().await;

    let cases = corpus();
    let children = child_corpus();
    println!(
        "environment corpus: {} in-process binds, {} child processes",
        cases.len(),
        children.len()
    );
    assert!(cases.len() + children.len() >= 45);

    // In this process: every bad variable fails the bind, naming itself.
    for (n, case) in cases.iter().enumerate() {
        let what = format!("case {n} ({})", case.what);
        let started = Instant::now();
        let bound: coordination::Result<ConfigHandle<Corpus>> = coord
            .config_with(options().with_env_vars(case.vars.clone()))
            .await;
        let took = started.elapsed();
        let e = match bound {
            Ok(cfg) => panic!("{what}: bound with {:?}", cfg.load().value()),
            Err(e) => e,
        };
        let shown = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Validation, "{what}: {shown}");
        assert_eq!(e.layer(), Some(Layer::Env), "{what}: {shown}");
        assert_eq!(e.key(), Some(case.blame.as_str()), "{what}: {shown}");
        assert!(
            shown.contains(case.says),
            "{what}: `{shown}` should say `{}`",
            case.says
        );
        if case.quick {
            assert!(took < QUICK, "{what}: refused after {took:?}");
        }
    }
    // The process is up, and a good environment binds and wins over etcd.
    let cfg: ConfigHandle<Corpus> = coord
        .config_with(
            options().with_env_vars([("CHAT_PORT", "9000"), ("CHAT_LIMITS__MAX_CONNS", "7")]),
        )
        .await
        .unwrap();
    assert_eq!((cfg.load().port, cfg.load().limits.max_conns), (9000, 7));
    assert_eq!(cfg.load().source("port").layer, Layer::Env);
    assert_eq!(
        cfg.load().source("port").origin.key().as_deref(),
        Some("CHAT_PORT")
    );

    // In child processes, from their real environment.
    let exe = std::env::current_exe().unwrap();
    let spawned: Vec<_> = children
        .iter()
        .map(|case| {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "--exact",
                "env_layer::bind_worker",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env_clear()
            .env("BAD_INPUT_ENV_ETCD", etcd.endpoint())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            for (k, v) in &case.vars {
                cmd.env(OsString::from_vec(k.clone()), OsString::from_vec(v.clone()));
            }
            cmd.spawn().expect("re-run the test binary")
        })
        .collect();
    for (case, child) in children.iter().zip(spawned) {
        let what = case.what;
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{what}: worker exited with {:?}: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        let line = stdout
            .lines()
            .find_map(|l| l.find("@@ ").map(|at| &l[at + 3..]))
            .unwrap_or_else(|| panic!("{what}: no outcome line in {stdout}"));
        let got: Value = serde_json::from_str(line).unwrap();
        match &case.expect {
            Ok(port) => {
                assert_eq!(got["ok"], true, "{what}: {got}");
                assert_eq!(got["port"], *port, "{what}: {got}");
            }
            Err((blame, says)) => {
                assert_eq!(got["ok"], false, "{what}: {got}");
                assert_eq!(got["kind"], "Validation", "{what}: {got}");
                assert_eq!(got["layer"], "Env", "{what}: {got}");
                assert_eq!(got["key"], blame.as_str(), "{what}: {got}");
                let message = got["message"].as_str().unwrap();
                assert!(
                    message.contains(says),
                    "{what}: `{message}` should say `{says}`"
                );
            }
        }
    }
}
