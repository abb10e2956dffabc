//! The file layer: real files in a temp dir, written the way editors and config-management
//! tools write them (a temp file renamed over the config). A bad file is rejected with an
//! error naming the layer and the file path, the last good snapshot keeps serving, and the
//! repaired file applies. Also: a slow writer's half-written file, rename storms, and removal
//! (a missing file is an empty layer).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordination::config::WatchState;
use coordination::provenance::Layer;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, ErrorKind};

use super::*;
use crate::support::Etcd;

/// Which of the two bound handles a case writes to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// `config.yaml`, the only source of the config (nothing in etcd under its prefix).
    Yaml,
    /// `config.json`, holding two defaulted fields over the etcd layer.
    Json,
}

struct Case {
    what: &'static str,
    target: Target,
    content: Vec<u8>,
    says: &'static str,
    quick: bool,
}

/// What the JSON file holds when good: fields with defaults, which etcd does not set.
const GOOD_JSON: &str = r#"{"optional": 7, "extra": {"a": 1}}"#;

const DEPTH: &str = "limit of 64 levels";

/// The YAML file's good content with `line` appended (a later line for a field replaces
/// nothing: it is a duplicate key, so cases use fields the seed does not hold).
fn yaml_with(line: &str) -> Vec<u8> {
    format!("{SEED_YAML}{line}\n").into_bytes()
}

fn corpus() -> Vec<Case> {
    use Target::{Json, Yaml};
    let c = |what, target, content: Vec<u8>, says| Case {
        what,
        target,
        content,
        says,
        quick: false,
    };
    let q = |what, target, content: Vec<u8>, says| Case {
        what,
        target,
        content,
        says,
        quick: true,
    };
    let seed = SEED_YAML.as_bytes();
    let over = coordination::config::DEFAULT_MAX_VALUE_BYTES + 1;
    vec![
        c(
            "truncated file",
            Yaml,
            b"port: 8080\nname: chat\nlimits: {max_conns: 10".to_vec(),
            "invalid YAML",
        ),
        c(
            "truncated in a quoted string",
            Yaml,
            b"port: 8080\nname: \"cha".to_vec(),
            "invalid YAML",
        ),
        c(
            "binary garbage",
            Yaml,
            vec![0x7f, b'E', b'L', b'F', 0x02, 0x01, 0x00, 0xff, 0xfe, 0x9c],
            "UTF-8",
        ),
        c(
            "invalid UTF-8",
            Yaml,
            [seed, b"optional: \xff\xfe\n"].concat(),
            "UTF-8",
        ),
        c(
            "UTF-16 file",
            Yaml,
            [0xff, 0xfe, b'p', 0, b'o', 0, b'r', 0, b't', 0].to_vec(),
            "UTF-8",
        ),
        c(
            "empty file is an empty layer: required fields missing",
            Yaml,
            Vec::new(),
            "missing field",
        ),
        c(
            "duplicate top-level key",
            Yaml,
            yaml_with("port: 9090"),
            "duplicate key `port`",
        ),
        c(
            "duplicate nested key",
            Yaml,
            yaml_with("extra:\n  a: 1\n  a: 2"),
            "duplicate key `a`",
        ),
        c(
            "NaN",
            Yaml,
            SEED_YAML.replace("ratio: 0.5", "ratio: .nan").into_bytes(),
            "not a finite number",
        ),
        c(
            "negative infinity",
            Yaml,
            SEED_YAML.replace("ratio: 0.5", "ratio: -.inf").into_bytes(),
            "not a finite number",
        ),
        c(
            "top level is a sequence",
            Yaml,
            b"- port: 8080\n- name: chat\n".to_vec(),
            "must be a mapping",
        ),
        c(
            "top level is a scalar",
            Yaml,
            b"just some words\n".to_vec(),
            "must be a mapping",
        ),
        c(
            "two documents",
            Yaml,
            [seed, b"---\nport: 1\n"].concat(),
            "more than one YAML document",
        ),
        c(
            "tab indentation",
            Yaml,
            SEED_YAML.replace("  max_conns", "\tmax_conns").into_bytes(),
            "invalid YAML",
        ),
        c(
            "custom tag",
            Yaml,
            SEED_YAML
                .replace("name: chat", "name: !custom chat")
                .into_bytes(),
            "is not supported",
        ),
        c(
            "sequence as a mapping key",
            Yaml,
            yaml_with("? [a]\n: 1"),
            "must be a scalar",
        ),
        c(
            "wrong type",
            Yaml,
            SEED_YAML.replace("port: 8080", "port: abc").into_bytes(),
            "invalid type",
        ),
        c(
            "null for a required field",
            Yaml,
            SEED_YAML.replace("port: 8080", "port: ~").into_bytes(),
            "invalid type: null",
        ),
        c(
            "schema minimum",
            Yaml,
            SEED_YAML.replace("port: 8080", "port: 0").into_bytes(),
            "minimum",
        ),
        c(
            "regex violation",
            Yaml,
            SEED_YAML.replace("name: chat", "name: UPPER").into_bytes(),
            "does not match",
        ),
        c(
            "unknown field",
            Yaml,
            yaml_with("bogus: 1"),
            "unknown field",
        ),
        c(
            "unknown enum variant",
            Yaml,
            SEED_YAML.replace("mode: fast", "mode: turbo").into_bytes(),
            "unknown variant",
        ),
        c(
            "validate() hook",
            Yaml,
            SEED_YAML
                .replace("timeout_ms: 250", "timeout_ms: 5")
                .into_bytes(),
            "validate()",
        ),
        c(
            "missing required field",
            Yaml,
            SEED_YAML.replace("name: chat\n", "").into_bytes(),
            "missing field `name`",
        ),
        c(
            "one level too deep",
            Yaml,
            yaml_with(&format!("extra: {}", flow_seqs(64))),
            DEPTH,
        ),
        q(
            "10,000 levels deep",
            Yaml,
            yaml_with(&format!("extra: {}", flow_maps(10_000))),
            DEPTH,
        ),
        q(
            "block mappings 100 deep",
            Yaml,
            yaml_with(&format!("extra:\n{}", indent(&block_maps(100)))),
            DEPTH,
        ),
        q(
            "alias bomb",
            Yaml,
            yaml_with(&format!("extra:\n{}", indent(&billion_laughs()))),
            "expands to more than",
        ),
        c(
            "over the size limit",
            Yaml,
            [seed, "#".repeat(over).as_bytes()].concat(),
            "over the limit of 262144 bytes",
        ),
        c(
            "JSON file that is YAML",
            Json,
            b"optional: 7\n".to_vec(),
            "invalid JSON",
        ),
        c(
            "JSON with a trailing comma",
            Json,
            br#"{"optional": 7,}"#.to_vec(),
            "invalid JSON",
        ),
        c(
            "JSON with a comment",
            Json,
            b"// settings\n{\"optional\": 7}".to_vec(),
            "invalid JSON",
        ),
        c(
            "JSON with single quotes",
            Json,
            b"{'optional': 7}".to_vec(),
            "invalid JSON",
        ),
        c(
            "JSON NaN literal",
            Json,
            br#"{"optional": NaN}"#.to_vec(),
            "invalid JSON",
        ),
        c(
            "JSON number out of range",
            Json,
            br#"{"extra": {"a": 1e999}}"#.to_vec(),
            "not a finite number",
        ),
        c(
            "truncated JSON",
            Json,
            br#"{"optional": 7, "extra": {"a"#.to_vec(),
            "invalid JSON",
        ),
        c(
            "JSON duplicate keys",
            Json,
            br#"{"optional": 7, "optional": 8}"#.to_vec(),
            "duplicate key",
        ),
        c(
            "JSON duplicate nested keys",
            Json,
            br#"{"extra": {"a": 1, "a": 2}}"#.to_vec(),
            "duplicate key",
        ),
        c(
            "JSON top level is an array",
            Json,
            b"[1, 2]".to_vec(),
            "must be a mapping",
        ),
        c(
            "JSON wrong type",
            Json,
            br#"{"extra": {"a": "x"}}"#.to_vec(),
            "invalid type",
        ),
        c(
            "JSON u8 overflow",
            Json,
            br#"{"optional": 300}"#.to_vec(),
            "invalid value",
        ),
        q(
            "JSON 10,000 deep",
            Json,
            format!(r#"{{"extra": {}}}"#, json_objects(10_000)).into_bytes(),
            DEPTH,
        ),
        c(
            "JSON invalid UTF-8",
            Json,
            b"{\"optional\": \"\xff\"}".to_vec(),
            "UTF-8",
        ),
    ]
}

/// Every line of `text` indented by two spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Cases in [`corpus`] plus the scenarios run after it (slow writer, two rename storms, two
/// removals).
pub(crate) fn case_count() -> usize {
    corpus().len() + 5
}

/// Replaces `path` the way editors do: write a temp file in the same directory, rename it over.
fn replace(path: &Path, content: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Bound {
    path: PathBuf,
    good: Vec<u8>,
    cfg: ConfigHandle<Corpus>,
    sub: Subscription<Corpus>,
}

impl Bound {
    async fn bind(
        coord: &coordination::Coordinator,
        path: PathBuf,
        good: &[u8],
        prefix: &str,
    ) -> Bound {
        replace(&path, good);
        let cfg: ConfigHandle<Corpus> = coord
            .config_with(
                ConfigOptions::new()
                    .with_prefix(prefix)
                    .with_file(&path)
                    .without_env(),
            )
            .await
            .unwrap();
        let sub = cfg.subscribe();
        Bound {
            path,
            good: good.to_vec(),
            cfg,
            sub,
        }
    }

    /// Waits for the next rejection of this file, with the error's checks.
    async fn rejected(&mut self, what: &str, says: &str) -> Arc<coordination::config::Rejection> {
        let serving = self.cfg.load_full();
        let rejection = match next(&mut self.sub).await {
            ConfigEvent::Rejected(r) => r,
            other => panic!("{what}: expected a rejection, got {other:?}"),
        };
        let e = &rejection.error;
        let shown = e.to_string();
        let path = self.path.display().to_string();
        assert_eq!(e.kind(), ErrorKind::Validation, "{what}: {shown}");
        assert_eq!(e.layer(), Some(Layer::File), "{what}: {shown}");
        assert_eq!(e.key(), Some(path.as_str()), "{what}: {shown}");
        assert_eq!(e.revision(), Some(serving.revision()), "{what}: {shown}");
        assert!(shown.contains(&path), "{what}: {shown}");
        assert!(
            shown.contains(says),
            "{what}: `{shown}` should say `{says}`"
        );
        assert!(Arc::ptr_eq(&self.cfg.load_full(), &serving), "{what}");
        assert_eq!(rejection.serving_revision, serving.revision());
        assert!(
            matches!(&rejection.cause, coordination::config::ReloadCause::File { path } if *path == self.path),
            "{what}: {:?}",
            rejection.cause
        );
        rejection
    }

    /// Waits for the next applied snapshot.
    async fn applied(&mut self, what: &str) -> Arc<coordination::Snapshot<Corpus>> {
        loop {
            match next(&mut self.sub).await {
                ConfigEvent::Applied(s) => return s,
                ConfigEvent::UnknownKeys(_) => {}
                other => panic!("{what}: expected an applied snapshot, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_file_is_rejected_and_the_repaired_file_applies() {
    crate::support::init_tracing();
    let etcd = Etcd::start().await;
    seed(&etcd);
    let coord = etcd.coordinator().await;
    let dir = tempfile::tempdir().unwrap();
    // The YAML handle reads everything from its file (its etcd prefix is empty); the JSON
    // handle's file sets two defaulted fields over the seeded etcd prefix.
    let mut yaml = Bound::bind(
        &coord,
        dir.path().join("config.yaml"),
        SEED_YAML.as_bytes(),
        "/apps/corpus-file",
    )
    .await;
    let mut json = Bound::bind(
        &coord,
        dir.path().join("config.json"),
        GOOD_JSON.as_bytes(),
        P,
    )
    .await;
    let yaml_good = yaml.cfg.load_full();
    let json_good = json.cfg.load_full();
    assert_eq!(yaml_good.port, 8080);
    assert_eq!(yaml_good.source("port").layer, Layer::File);
    assert_eq!(
        (json_good.optional, json_good.extra.get("a")),
        (Some(7), Some(&1))
    );

    let cases = corpus();
    println!("file corpus: {} cases + 5 scenarios", cases.len());
    assert!(cases.len() >= 35, "{} cases", cases.len());
    for (n, case) in cases.iter().enumerate() {
        let what = format!("case {n} ({}, {:?})", case.what, case.target);
        let (bound, good) = match case.target {
            Target::Yaml => (&mut yaml, &yaml_good),
            Target::Json => (&mut json, &json_good),
        };
        let started = Instant::now();
        replace(&bound.path, &case.content);
        bound.rejected(&what, case.says).await;
        let took = started.elapsed();
        if case.quick {
            // The file is read after the 50 ms debounce; the parse itself is milliseconds.
            assert!(took < QUICK, "{what}: rejected after {took:?}");
        }
        let content = bound.good.clone();
        replace(&bound.path, &content);
        let s = bound.applied(&what).await;
        assert_eq!(s.value(), good.value(), "{what}: repaired");
    }

    // A slow writer: the half-written file is rejected, the finished one applies.
    {
        let what = "slow writer";
        let mut f = std::fs::File::create(&yaml.path).unwrap();
        f.write_all(b"port: 8080\nlimits: {max_conns: 10").unwrap();
        f.flush().unwrap();
        yaml.rejected(what, "invalid YAML").await;
        f.write_all(b"0, timeout_ms: 250}\nname: chat\nratio: 0.5\nenabled: true\ntags: [blue, green]\nmode: fast\n")
            .unwrap();
        drop(f);
        let s = yaml.applied(what).await;
        assert_eq!(s.value(), yaml_good.value(), "{what}");
    }

    // A rename storm of valid versions: the handle converges on the last one and stays up.
    {
        for i in 0..300u16 {
            replace(
                &yaml.path,
                SEED_YAML
                    .replace("port: 8080", &format!("port: {}", 9000 + i))
                    .as_bytes(),
            );
        }
        let converged = eventually!(Duration::from_secs(10), yaml.cfg.load().port == 9299);
        assert!(
            converged,
            "rename storm: serving port {}",
            yaml.cfg.load().port
        );
        while let Some(event) = yaml.sub.try_next() {
            assert!(
                matches!(event, ConfigEvent::Applied(_)),
                "rename storm: {event:?}"
            );
        }
    }

    // A rename storm mixing bad and good versions, ending good: converges on the last one.
    {
        for i in 0..200u16 {
            let content = if i % 2 == 0 {
                b"port: [\n".to_vec()
            } else {
                SEED_YAML
                    .replace("port: 8080", &format!("port: {}", 10_000 + i))
                    .into_bytes()
            };
            replace(&yaml.path, &content);
        }
        replace(&yaml.path, SEED_YAML.as_bytes());
        let converged = eventually!(Duration::from_secs(10), {
            yaml.cfg.load().value() == yaml_good.value()
        });
        assert!(
            converged,
            "mixed storm: serving {:?}",
            yaml.cfg.load().value()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Some(event) = yaml.sub.try_next() {
            if let ConfigEvent::Rejected(r) = &event {
                assert_eq!(
                    r.error.key(),
                    Some(yaml.path.display().to_string().as_str())
                );
            }
        }
        assert_eq!(
            yaml.cfg.load().value(),
            yaml_good.value(),
            "mixed storm: stays on the last"
        );
    }

    // Removal: a missing file is an empty layer. The YAML handle then lacks required fields
    // (rejected, naming the file); the JSON handle falls back to etcd and the defaults.
    {
        std::fs::remove_file(&yaml.path).unwrap();
        yaml.rejected("removed YAML file", "missing field").await;
        replace(&yaml.path, SEED_YAML.as_bytes());
        let s = yaml.applied("restored YAML file").await;
        assert_eq!(s.value(), yaml_good.value());

        std::fs::remove_file(&json.path).unwrap();
        let s = json.applied("removed JSON file").await;
        assert_eq!((s.optional, s.extra.len(), s.port), (None, 0, 8080));
        replace(&json.path, GOOD_JSON.as_bytes());
        let s = json.applied("restored JSON file").await;
        assert_eq!(s.value(), json_good.value());
    }

    // Both handles are still up, live, and apply the next valid etcd change.
    let rev = etcd.put(&key("port"), "8081");
    let s = json.applied("etcd change after the file corpus").await;
    assert_eq!((s.revision(), s.port, s.optional), (rev, 8081, Some(7)));
    assert_eq!(json.cfg.status().state, WatchState::Live);
    assert_eq!(yaml.cfg.status().state, WatchState::Live);
    assert_eq!(yaml.cfg.load().value(), yaml_good.value());
}
