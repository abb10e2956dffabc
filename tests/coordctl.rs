//! `coordctl` end to end against real etcd, with a bound service handle converging on every
//! change the CLI makes.
#![cfg(feature = "cli")]

#[macro_use]
mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use coordination::{ConfigHandle, ConfigOptions, CoordConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::Etcd;

const P: &str = "/apps/cli/config";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/cli/config", secrets = "database.password")]
struct CliConfig {
    #[schemars(range(min = 1))]
    port: u16,
    database: Database,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Database {
    host: String,
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 100))]
    pool: u32,
    #[serde(default)]
    password: String,
}

fn default_pool() -> u32 {
    4
}

use support::coordctl::{command as coordctl_command, run as coordctl, start_watch};

fn ok(etcd: &Etcd, args: &[&str]) -> String {
    let out = coordctl(etcd, args);
    assert!(
        out.status.success(),
        "coordctl {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(etcd: &Etcd, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(etcd, &all)).expect("--json output is JSON")
}

fn revision_now(etcd: &Etcd) -> i64 {
    let out = etcd.etcdctl(&["get", "-w", "json", "/"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

async fn wait_for(cfg: &ConfigHandle<CliConfig>, what: &str, cond: impl Fn(&CliConfig) -> bool) {
    let ok = eventually!(WAIT, cond(cfg.load().value()));
    assert!(
        ok,
        "the service never saw: {what} (it has {:?})",
        cfg.load().value()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_end_to_end() {
    let etcd = Etcd::start().await;
    etcd.put(&format!("{P}/port"), "8080");
    etcd.put(&format!("{P}/database/host"), "db1");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<CliConfig> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    let ok_bound = eventually!(WAIT, { cfg.history().await.is_ok_and(|h| h.len() == 1) });
    assert!(ok_bound);
    let bound = cfg.history().await.unwrap()[0].revision;

    // The published schema.
    let schema = json(&etcd, &["config", "schema", P]);
    assert!(schema["properties"]["port"].is_object(), "{schema}");

    // apply: a whole file, validated, recorded with author and comment.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "port: 9000\ndatabase:\n  host: db2\n  pool: 20\n  password: s3cret-value\n",
    )
    .unwrap();
    let applied = json(
        &etcd,
        &[
            "config",
            "apply",
            P,
            "-f",
            good.to_str().unwrap(),
            "-m",
            "initial",
        ],
    );
    assert_eq!(applied["changed"], true, "{applied}");
    assert_eq!(applied["version"]["kind"], "publish");
    assert_eq!(applied["version"]["author"], "ops");
    let applied_rev = applied["version"]["revision"].as_i64().unwrap();
    wait_for(&cfg, "port 9000", |c| {
        c.port == 9000 && c.database.pool == 20
    })
    .await;

    // put: one field.
    let put = json(&etcd, &["config", "put", P, "database.pool", "30"]);
    let put_rev = put["version"]["revision"].as_i64().unwrap();
    wait_for(&cfg, "pool 30", |c| c.database.pool == 30).await;

    // Invalid input is refused with the field path, and nothing is written.
    let before = revision_now(&etcd);
    let out = coordctl(&etcd, &["config", "put", P, "database.pool", "500"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database.pool"), "{stderr}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "port: 0\ndatabase:\n  host: db3\n").unwrap();
    let out = coordctl(&etcd, &["config", "apply", P, "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`port`"), "{stderr}");
    let out = coordctl(
        &etcd,
        &[
            "config",
            "put",
            P,
            "database.password",
            "x",
            "--no-validate",
        ],
    );
    assert!(out.status.success(), "--no-validate writes");
    let out = coordctl(
        &etcd,
        &["config", "put", P, "database.password", "s3cret-value"],
    );
    assert!(out.status.success());
    let after = revision_now(&etcd);
    assert!(after > before);
    wait_for(&cfg, "password back", |c| {
        c.database.password == "s3cret-value"
    })
    .await;

    // history: a table by default, JSON for scripts (newest first).
    let table = ok(&etcd, &["config", "history", P]);
    assert!(table.starts_with("VERSION"), "{table}");
    assert!(table.contains("publish") && table.contains("ops") && table.contains("initial"));
    let history = json(&etcd, &["config", "history", P]);
    let revisions: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions.last(), Some(&bound));
    assert!(revisions.contains(&applied_rev) && revisions.contains(&put_rev));

    // diff: exactly the changed fields, secrets masked.
    let diff = json(
        &etcd,
        &[
            "config",
            "diff",
            P,
            &applied_rev.to_string(),
            &put_rev.to_string(),
        ],
    );
    assert_eq!(
        diff,
        serde_json::json!([{"path": "database.pool", "old": 20, "new": 30, "secret": false}])
    );
    let text = ok(&etcd, &["config", "diff", P, &bound.to_string(), "current"]);
    assert!(
        text.contains("database.password") && text.contains("***"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "secret leaked: {text}");
    let shown = ok(&etcd, &["config", "get", P]);
    assert!(
        shown.contains("***") && !shown.contains("s3cret"),
        "{shown}"
    );
    etcd.put(
        &format!("{P}/database"),
        r#"{"password": "doc-secret-value"}"#,
    );
    let keys = ok(&etcd, &["config", "get", P, "--keys"]);
    assert!(keys.contains("database/pool"), "{keys}");
    assert!(
        !keys.contains("s3cret") && !keys.contains("doc-secret"),
        "secret leaked: {keys}"
    );
    etcd.del(&format!("{P}/database"));
    let doc = json(&etcd, &["config", "get", P]);
    assert_eq!(doc["config"]["database"]["pool"], 30);

    // rollback: every instance converges on the old version.
    let rolled = json(
        &etcd,
        &["config", "rollback", P, &bound.to_string(), "-m", "back"],
    );
    assert_eq!(rolled["version"]["kind"], "rollback");
    assert_eq!(rolled["version"]["restored_from"], bound);
    wait_for(&cfg, "the bind-time config", |c| {
        c.port == 8080 && c.database.host == "db1" && c.database.password.is_empty()
    })
    .await;
    let out = coordctl(&etcd, &["config", "rollback", P, "999999"]);
    assert_eq!(out.status.code(), Some(5));

    // watch: prints the change another client makes.
    let mut watch = coordctl_command(&etcd, &["config", "watch", P, "--count", "1"]);
    let (watch, _) = start_watch(watch.stdout(Stdio::piped()));
    etcd.put(&format!("{P}/port"), "8181");
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("port: 8080 -> 8181"), "{printed}");
}

/// A reader that goes away (`coordctl … | head -1`) ends `coordctl` quietly with exit 0: no
/// panic, no backtrace, and a `watch` stops at its next line instead of running on. The read end
/// of its stdout is closed before it starts, so every write it makes fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_stops_quietly_when_its_reader_goes_away() {
    let etcd = Etcd::start().await;
    etcd.put(&format!("{P}/port"), "8080");
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    for args in [&["config", "get", P][..], &["--json", "config", "get", P]] {
        let out = coordctl_command(&etcd, args)
            .stdout(closed())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }

    let mut watch = coordctl_command(&etcd, &["config", "watch", P]);
    let (mut watch, mut stderr) = start_watch(watch.stdout(closed()));
    etcd.put(&format!("{P}/port"), "8181");
    let exited = eventually!(WAIT, watch.try_wait().unwrap().is_some());
    if !exited {
        let _ = watch.kill();
    }
    assert!(exited, "the watch ran on after its reader went away");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(watch.wait().unwrap().code(), Some(0), "{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
}

/// `coordctl lock ls` lists the holder (here `etcdctl lock`) and a waiter (a Rust guard) in
/// queue order; `coordctl lock release` force-releases the holder, and the waiter gets the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_lists_and_releases_locks() {
    let etcd = Etcd::start().await;
    let mut holder = etcd
        .etcdctl_command(&["lock", "jobs/cli"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl lock");
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let held_key = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    assert!(held_key.starts_with("jobs/cli/"), "{held_key}");

    let coord = etcd.coordinator().await;
    let waiter = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.lock("jobs/cli").await })
    };
    let listed = loop {
        let v = json(&etcd, &["lock", "ls", "jobs/cli"]);
        if v["entries"].as_array().is_some_and(|e| e.len() == 2) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries[0]["role"], "holder");
    assert_eq!(entries[0]["key"], held_key.as_str());
    assert_eq!(entries[1]["role"], "waiter");
    assert!(entries[0]["create_revision"].as_i64() < entries[1]["create_revision"].as_i64());
    let table = ok(&etcd, &["lock", "ls", "jobs/cli"]);
    assert!(
        table.contains("holder") && table.contains(&held_key),
        "{table}"
    );

    let released = ok(&etcd, &["lock", "release", "jobs/cli"]);
    assert!(released.contains(&held_key), "{released}");
    let guard = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter gets the lock after the release")
        .unwrap()
        .unwrap();
    assert_eq!(
        guard.fencing_token(),
        entries[1]["create_revision"].as_i64().unwrap()
    );
    guard.unlock().await.unwrap();
    assert!(ok(&etcd, &["lock", "ls", "jobs/cli"]).contains("free"));
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Right after `bind()` returns, the schema is published and the bound snapshot's revision is a
/// version `coordctl config diff` can use; `put` refuses field paths the schema does not know
/// (naming what it has there) unless `--allow-unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_sees_a_fresh_bind_and_refuses_unknown_fields() {
    let etcd = Etcd::start().await;
    etcd.put(&format!("{P}/port"), "8080");
    etcd.put(&format!("{P}/database/host"), "db1");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<CliConfig> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    let bound = cfg.load().revision().to_string();
    let schema = coordctl(&etcd, &["config", "schema", P]);
    assert!(
        schema.status.success(),
        "schema right after bind ({:?}): {}",
        schema.status.code(),
        String::from_utf8_lossy(&schema.stderr)
    );
    let diff = ok(&etcd, &["config", "diff", P, &bound, "current"]);
    assert_eq!(diff.trim(), "no changes");

    let before = revision_now(&etcd);
    for (path, names) in [
        ("nosuchfield", &["`database`", "`port`"][..]),
        (
            "database.poool",
            &["`database.poool`", "`host`", "`pool`"][..],
        ),
    ] {
        let out = coordctl(&etcd, &["config", "put", P, path, "1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{path}: {stderr}");
        assert!(stderr.contains(&format!("`{path}`")), "{stderr}");
        for name in names {
            assert!(stderr.contains(name), "{path}: {name} missing in {stderr}");
        }
    }
    assert_eq!(revision_now(&etcd), before, "nothing written");

    let out = json(
        &etcd,
        &["config", "put", P, "nosuchfield", "1", "--allow-unknown"],
    );
    assert_eq!(out["changed"], true, "{out}");
    let stored = etcd.etcdctl(&["get", "--print-value-only", &format!("{P}/nosuchfield")]);
    assert_eq!(String::from_utf8_lossy(&stored.stdout).trim(), "1");
    // A known field still works, and touches only its own key.
    let out = json(&etcd, &["config", "put", P, "database.pool", "7"]);
    assert_eq!(out["version"]["keys"], 4, "{out}");
    wait_for(&cfg, "pool 7", |c| c.database.pool == 7).await;
}

/// `coordctl registry drain SERVICE INSTANCE` asks a registered instance to drain: its
/// registration (here in the test process) drains itself and discovery stops serving it; an
/// instance that is not registered exits 5 (not found) and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_registry_drain_drains_a_registered_instance() {
    use coordination::registry::{Health, InstanceSpec};

    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let reg = coord
        .registry()
        .register(InstanceSpec::new("chat", "chat-1", "127.0.0.1:7101"))
        .await
        .unwrap();
    let mut status = reg.status_watch();
    let v = json(&etcd, &["registry", "drain", "chat", "chat-1"]);
    assert_eq!(v["id"], "chat-1");
    assert_eq!(v["requested_by"], "ops", "the author is who asked");
    assert_eq!(v["lease"], format!("{:x}", reg.lease_id()));
    let drained = tokio::time::timeout(
        WAIT,
        status.wait_for(|s| {
            s.health == Health::Draining && s.revision > v["revision"].as_i64().unwrap()
        }),
    )
    .await;
    assert!(
        matches!(drained, Ok(Some(_))),
        "the registration drained itself"
    );
    let found = coord.registry().discover("chat").await.unwrap();
    assert_eq!(found[0].health, Health::Draining);
    assert!(!found[0].is_serving());

    let before = revision_now(&etcd);
    let out = coordctl(&etcd, &["registry", "drain", "chat", "chat-9"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
    assert_eq!(
        revision_now(&etcd),
        before,
        "a refused drain writes nothing"
    );
    let printed = ok(&etcd, &["registry", "drain", "chat", "chat-1"]);
    assert!(printed.contains("asked chat/chat-1 to drain"), "{printed}");
    reg.deregister().await.unwrap();
}
