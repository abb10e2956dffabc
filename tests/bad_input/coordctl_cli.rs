//! `coordctl` given bad arguments and bad input, against the harness etcd with a bound handle
//! watching the prefix. Every case exits non-zero with a clear message on stderr naming what was
//! wrong, never panics, and writes nothing to etcd (the revision is unchanged); the handle keeps
//! serving, and a following valid `coordctl config put` is applied.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coordination::{ConfigEvent, ConfigHandle, ConfigOptions};

use super::*;
use crate::support::{free_port, Etcd};

pub(crate) struct Case {
    what: &'static str,
    args: Vec<String>,
    /// The exit code: 1 etcd or I/O failure, 2 bad usage, 3 invalid input, 5 not found.
    code: i32,
    /// Words stderr must contain.
    says: String,
}

/// The files the `apply` cases read, created in `dir` by [`write_files`].
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let with = |line: &str| format!("{SEED_YAML}{line}\n").into_bytes();
    let replace = |from: &str, to: &str| SEED_YAML.replace(from, to).into_bytes();
    vec![
        ("invalid.yaml", b"port: [1,\n".to_vec()),
        (
            "binary.yaml",
            vec![0x7f, b'E', b'L', b'F', 0xff, 0xfe, 0x00],
        ),
        ("schema.yaml", replace("port: 8080", "port: 0")),
        ("missing-field.yaml", replace("name: chat\n", "")),
        ("wrong-type.yaml", replace("port: 8080", "port: abc")),
        ("regex.yaml", replace("name: chat", "name: UPPER")),
        ("enum.yaml", replace("mode: fast", "mode: turbo")),
        ("too-many.yaml", replace("[blue, green]", "[a, b, c, d]")),
        ("nan.yaml", replace("ratio: 0.5", "ratio: .nan")),
        ("deep.yaml", with(&format!("extra: {}", flow_maps(10_000)))),
        ("deep100.yaml", with(&format!("extra: {}", flow_maps(100)))),
        (
            "deep-seq.yaml",
            with(&format!("tags: {}", flow_seqs(40_000))),
        ),
        (
            "bomb.yaml",
            with(&format!(
                "extra:\n  {}",
                billion_laughs().replace('\n', "\n  ")
            )),
        ),
        (
            "wide.yaml",
            with(&format!(
                "extra:\n  {}",
                wide_anchor(5_000).replace('\n', "\n  ")
            )),
        ),
        ("two-docs.yaml", with("---\nport: 1")),
        ("dup-keys.yaml", with("port: 9090")),
        ("sequence.yaml", b"- 1\n- 2\n".to_vec()),
        ("empty.yaml", Vec::new()),
        ("tag.yaml", replace("name: chat", "name: !custom chat")),
        ("tabs.yaml", replace("  max_conns", "\tmax_conns")),
    ]
}

fn write_files(dir: &Path) {
    for (name, content) in files() {
        std::fs::write(dir.join(name), content).unwrap();
    }
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
}

/// The case table; `dir` holds the files of [`files`].
pub(crate) fn corpus(dir: &Path) -> Vec<Case> {
    let file = |name: &str| dir.join(name).display().to_string();
    let case = |what, args: &[&str], code, says: &str| Case {
        what,
        args: args.iter().map(|a| a.to_string()).collect(),
        code,
        says: says.to_string(),
    };
    let apply = |what, name: &str, code, says: &str| {
        let path = file(name);
        case(what, &["config", "apply", P, "-f", &path], code, says)
    };
    let put = |what, field: &str, value: &str, code, says: &str| {
        case(what, &["config", "put", P, field, value], code, says)
    };
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let deep = flow_maps(10_000);
    let bomb = billion_laughs();
    vec![
        // ---- Bad usage ----
        case("no arguments", &[], 2, "Usage"),
        case(
            "unknown command",
            &["frobnicate"],
            2,
            "unrecognized subcommand 'frobnicate'",
        ),
        case(
            "unknown config subcommand",
            &["config", "frobnicate", P],
            2,
            "unrecognized subcommand 'frobnicate'",
        ),
        case(
            "unknown flag",
            &["config", "get", P, "--frobnicate"],
            2,
            "--frobnicate",
        ),
        case("put without arguments", &["config", "put"], 2, "required"),
        case(
            "put without a value",
            &["config", "put", P, "port"],
            2,
            "<VALUE>",
        ),
        case("apply without a file", &["config", "apply", P], 2, "--file"),
        case(
            "diff with one version",
            &["config", "diff", P, "1"],
            2,
            "<TO>",
        ),
        case(
            "diff with a word for a version",
            &["config", "diff", P, "abc", "current"],
            3,
            "`abc` is not a version",
        ),
        case(
            "diff with a fraction for a version",
            &["config", "diff", P, "current", "1.5"],
            3,
            "`1.5` is not a version",
        ),
        case(
            "diff with a negative version",
            &["config", "diff", P, "-1", "current"],
            2,
            "'-1'",
        ),
        case(
            "rollback with a word for a version",
            &["config", "rollback", P, "abc"],
            2,
            "invalid value 'abc'",
        ),
        case(
            "rollback with a negative version",
            &["config", "rollback", P, "-5"],
            2,
            "'-5'",
        ),
        case(
            "rollback with a fraction",
            &["config", "rollback", P, "1.5"],
            2,
            "invalid value '1.5'",
        ),
        case(
            "rollback with an overflowing version",
            &["config", "rollback", P, "99999999999999999999"],
            2,
            "invalid value '99999999999999999999'",
        ),
        case(
            "rollback to a version that does not exist",
            &["config", "rollback", P, "999999"],
            5,
            "999999",
        ),
        case(
            "get at a word for a version",
            &["config", "get", P, "--version", "abc"],
            2,
            "invalid value 'abc'",
        ),
        case(
            "watch with a negative count",
            &["config", "watch", P, "--count", "-1"],
            2,
            "'-1'",
        ),
        case(
            "user without a password",
            &["--user", "ops", "config", "get", P],
            2,
            "no password for etcd user",
        ),
        case(
            "non-numeric --max-txn-ops",
            &["--max-txn-ops", "abc", "config", "get", P],
            2,
            "invalid value 'abc'",
        ),
        case(
            "history without a prefix",
            &["config", "history"],
            2,
            "<PREFIX>",
        ),
        case(
            "schema of a prefix without one",
            &["config", "schema", "/apps/unbound"],
            5,
            "no JSON Schema is published",
        ),
        case("lock ls without a name", &["lock", "ls"], 2, "<NAME>"),
        case(
            "unreachable endpoint",
            &["--endpoints", &unreachable, "config", "get", P],
            1,
            &unreachable[7..],
        ),
        // ---- apply -f ----
        apply("apply of a missing file", "missing.yaml", 1, "missing.yaml"),
        apply("apply of a directory", "a-directory", 1, "a-directory"),
        apply("apply of invalid YAML", "invalid.yaml", 3, "invalid YAML"),
        apply(
            "apply of binary garbage",
            "binary.yaml",
            3,
            "not valid UTF-8",
        ),
        apply(
            "apply of duplicate keys",
            "dup-keys.yaml",
            3,
            "duplicate key `port`",
        ),
        apply(
            "apply of mappings 10,000 deep",
            "deep.yaml",
            3,
            "limit of 64 levels",
        ),
        apply(
            "apply of sequences 40,000 deep",
            "deep-seq.yaml",
            3,
            "limit of 64 levels",
        ),
        apply(
            "apply of one anchor aliased 5,000 times",
            "wide.yaml",
            3,
            "expands to more than",
        ),
        apply("apply of a schema violation", "schema.yaml", 3, "port"),
        apply(
            "apply without a required field",
            "missing-field.yaml",
            3,
            "name",
        ),
        apply("apply of a wrong type", "wrong-type.yaml", 3, "port"),
        apply("apply of a regex violation", "regex.yaml", 3, "name"),
        apply("apply of an unknown enum variant", "enum.yaml", 3, "mode"),
        apply("apply of too many items", "too-many.yaml", 3, "tags"),
        apply("apply of NaN", "nan.yaml", 3, "ratio"),
        apply("apply of a document 100 deep", "deep100.yaml", 3, "extra"),
        apply("apply of an alias bomb", "bomb.yaml", 3, "bomb.yaml"),
        apply(
            "apply of two documents",
            "two-docs.yaml",
            3,
            "two-docs.yaml",
        ),
        apply(
            "apply of a top-level sequence",
            "sequence.yaml",
            3,
            "schema",
        ),
        apply("apply of an empty file", "empty.yaml", 3, "schema"),
        apply("apply of a custom tag", "tag.yaml", 3, "tag.yaml"),
        apply("apply of tab indentation", "tabs.yaml", 3, "tabs.yaml"),
        case(
            "apply to an unreachable endpoint",
            &[
                "--endpoints",
                &unreachable,
                "config",
                "apply",
                P,
                "-f",
                &file("schema.yaml"),
            ],
            1,
            &unreachable[7..],
        ),
        // ---- put ----
        put("put below the schema minimum", "port", "0", 3, "port"),
        put("put of a word for a number", "port", "abc", 3, "port"),
        put("put out of range", "port", "70000", 3, "port"),
        put("put of NaN", "ratio", ".nan", 3, "not a finite number"),
        put("put of a fraction for an integer", "port", "1.5", 3, "port"),
        put("put of null for a required field", "port", "~", 3, "port"),
        put("put of an overflowing u8", "optional", "300", 3, "optional"),
        put("put above the schema maximum", "ratio", "2", 3, "ratio"),
        put(
            "put of a nested schema violation",
            "limits.max_conns",
            "0",
            3,
            "limits.max_conns",
        ),
        put("put of a regex violation", "name", "UPPER", 3, "name"),
        put("put of an unknown enum variant", "mode", "turbo", 3, "mode"),
        put("put of too many items", "tags", "[a, b, c, d]", 3, "tags"),
        put(
            "put of invalid YAML",
            "limits",
            "{max_conns: [",
            3,
            "invalid YAML",
        ),
        put(
            "put of duplicate keys",
            "limits",
            "{max_conns: 1, max_conns: 2}",
            3,
            "duplicate key",
        ),
        put(
            "put of a custom tag",
            "name",
            "!custom x",
            3,
            "is not supported",
        ),
        put(
            "put of a value 10,000 deep",
            "extra",
            &deep,
            3,
            "limit of 64 levels",
        ),
        put(
            "put of an alias bomb",
            "extra",
            &bomb,
            3,
            "expands to more than",
        ),
        put(
            "put to an empty segment",
            "limits..max_conns",
            "1",
            3,
            "limits..max_conns",
        ),
        put(
            "put to an empty path",
            "",
            "1",
            3,
            "is not a dotted field path",
        ),
        case(
            "put to a prefix without a schema",
            &["config", "put", "/apps/unbound", "port", "1"],
            5,
            "no JSON Schema is published",
        ),
    ]
}

fn coordctl(etcd: &Etcd, args: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
    if !args.iter().any(|a| a == "--endpoints") {
        cmd.arg("--endpoints").arg(etcd.endpoint());
    }
    cmd.args(args)
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("ETCD_USER")
        .env_remove("ETCD_PASSWORD")
        .env("COORDCTL_AUTHOR", "ops")
        .stdin(Stdio::null())
        .output()
        .expect("run coordctl")
}

/// The revision of etcd now (any write anywhere moves it).
async fn revision_now(client: &mut etcd_client::Client) -> i64 {
    client
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_refuses_bad_input_and_writes_nothing() {
    crate::support::init_tracing();
    let etcd = Etcd::start().await;
    seed(&etcd);
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Corpus> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    // The handle publishes the schema coordctl validates against.
    let published = eventually!(Duration::from_secs(20), {
        cfg.history().await.is_ok_and(|h| !h.is_empty())
    });
    assert!(published);
    let good = cfg.load_full();
    let mut sub = cfg.subscribe();
    let mut client = etcd.client().await;
    let before = crate::support::read_prefix_raw(&etcd, P).await;

    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    write_files(&dir);
    let cases = corpus(&dir);
    println!("coordctl corpus: {} cases", cases.len());
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (n, case) in cases.iter().enumerate() {
        let what = format!("case {n} ({})", case.what);
        let revision = revision_now(&mut client).await;
        let started = Instant::now();
        let out = coordctl(&etcd, &case.args);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(case.code), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(
            stderr.contains(&case.says),
            "{what}: `{stderr}` should say `{}`",
            case.says
        );
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}");
        // Nothing written, anywhere in etcd.
        assert_eq!(
            revision_now(&mut client).await,
            revision,
            "{what}: etcd was written"
        );
        assert!(sub.try_next().is_none(), "{what}: the handle saw a change");
    }
    assert_eq!(crate::support::read_prefix_raw(&etcd, P).await, before);
    assert!(std::sync::Arc::ptr_eq(&cfg.load_full(), &good));

    // A following valid change is applied.
    let out = coordctl(
        &etcd,
        &["config", "put", P, "port", "8081"].map(String::from),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match next(&mut sub).await {
        ConfigEvent::Applied(s) => assert_eq!(s.port, 8081),
        other => panic!("valid put not applied: {other:?}"),
    }
}
