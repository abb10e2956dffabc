//! Change control end to end against real etcd, through the real `coordctl` binary where the
//! feature is a CLI: proposals reviewed and approved before they apply, rebase after a
//! conflict, the policy refusing direct publishes (and `--break-glass`), change windows with an
//! injected clock, promotion between environments, templates and reference docs from the
//! published schema.
#![cfg(feature = "cli")]

#[macro_use]
mod support;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use coordination::change::{ChangeControl, FixedClock, Policy};
use coordination::{ConfigHandle, ConfigOptions, CoordConfig, ErrorKind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::Etcd;

const P: &str = "/apps/cc/config";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/cc/config", secrets = "database.password")]
struct CcConfig {
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

/// The quickstart's type (`examples/quickstart.rs`), with its doc comments.
mod quickstart {
    use super::*;

    /// The chat service's configuration.
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
    #[coord(
        prefix = "/apps/chat/config",
        file = "examples/config/chat.yaml",
        env_prefix = "CHAT_"
    )]
    pub(super) struct ChatConfig {
        /// TCP port the service listens on.
        #[schemars(range(min = 1))]
        pub(super) port: u16,
        /// Feature switches.
        #[serde(default)]
        pub(super) features: Features,
        /// The database connection.
        pub(super) database: Database,
    }

    /// Feature switches.
    #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
    pub(super) struct Features {
        /// The greeting shown to new users (empty: none).
        #[serde(default)]
        pub(super) greeting: String,
    }

    /// The database connection.
    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
    pub(super) struct Database {
        /// Database host name.
        pub(super) host: String,
        /// Connections in the pool.
        #[serde(default = "default_pool")]
        #[schemars(range(min = 1, max = 100))]
        pub(super) pool: u32,
    }

    fn default_pool() -> u32 {
        4
    }
}

fn coordctl_env(etcd: &Etcd, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = support::coordctl::command(etcd, args);
    cmd.env_remove("COORDCTL_AUTHOR")
        .env_remove("COORDCTL_NOW")
        .env("USER", "nobody")
        .envs(env.iter().copied());
    cmd.output().expect("run coordctl")
}

fn coordctl(etcd: &Etcd, args: &[&str]) -> Output {
    coordctl_env(etcd, &[], args)
}

use support::coordctl::text;

fn ok(etcd: &Etcd, args: &[&str]) -> String {
    let out = coordctl(etcd, args);
    assert!(out.status.success(), "coordctl {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn json(etcd: &Etcd, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(etcd, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Asserts the exit code and that stderr says `needle`.
fn refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "no `{needle}` in {}",
        text(out)
    );
}

/// A bound service on [`P`] (it publishes the schema), with port 8080, db1, pool 4.
async fn service(etcd: &Etcd) -> ConfigHandle<CcConfig> {
    etcd.put(&format!("{P}/port"), "8080");
    etcd.put(&format!("{P}/database/host"), "db1");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<CcConfig> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    assert!(eventually!(WAIT, {
        cfg.history().await.is_ok_and(|h| !h.is_empty())
    }));
    cfg
}

async fn wait_for(cfg: &ConfigHandle<CcConfig>, what: &str, cond: impl Fn(&CcConfig) -> bool) {
    let seen = eventually!(WAIT, cond(cfg.load().value()));
    assert!(
        seen,
        "the service never saw {what}: {:?}",
        cfg.load().value()
    );
}

fn set_policy(etcd: &Etcd, prefix: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, yaml).unwrap();
    ok(
        etcd,
        &[
            "config",
            "policy",
            prefix,
            "--set",
            "-f",
            file.to_str().unwrap(),
        ],
    );
}

fn propose(etcd: &Etcd, author: &str, set: &str, comment: &str) -> String {
    let p = json(
        etcd,
        &[
            "config", "propose", P, "--set", set, "--author", author, "-m", comment,
        ],
    );
    p["id"].as_str().unwrap().to_string()
}

fn newest(etcd: &Etcd, prefix: &str) -> Value {
    json(etcd, &["config", "history", prefix])[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_approved_by_a_second_user_applies_and_history_shows_both() {
    let etcd = Etcd::start().await;
    let cfg = service(&etcd).await;
    set_policy(&etcd, P, "approvals: 1\n");
    let shown = json(&etcd, &["config", "policy", P]);
    assert_eq!(shown["policy"]["approvals"], 1, "{shown}");
    assert_eq!(shown["policy"]["self_approval"], false, "{shown}");

    // The proposal: validated like a publish, stored with its diff; nothing changes.
    let out = coordctl(
        &etcd,
        &[
            "config",
            "propose",
            P,
            "--set",
            "database.pool=500",
            "--author",
            "alice",
        ],
    );
    refused(&out, 3, "database.pool");
    let before = json(&etcd, &["config", "get", P]);
    let id = propose(&etcd, "alice", "database.pool=20", "more connections");
    let p = json(&etcd, &["config", "proposal", "show", &id]);
    assert_eq!(p["state"], "open");
    assert_eq!(p["author"], "alice");
    assert_eq!(p["comment"], "more connections");
    assert_eq!(p["diff"][0]["path"], "database.pool", "{p}");
    // The etcd layer had no pool key (the service used its default).
    assert!(p["diff"][0]["old"].is_null(), "{p}");
    assert_eq!(p["diff"][0]["new"], 20);
    assert!(p["base_revision"].as_i64().unwrap() > 0);
    let shown = ok(&etcd, &["config", "proposal", "show", &id]);
    assert!(
        shown.contains("database.pool") && shown.contains("20"),
        "{shown}"
    );
    assert_eq!(
        json(&etcd, &["config", "get", P])["config"],
        before["config"],
        "a proposal changes nothing"
    );
    assert_eq!(cfg.load().database.pool, 4);
    let list = json(&etcd, &["config", "proposals", P]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());

    // Not approved yet: apply is refused.
    refused(
        &coordctl(&etcd, &["config", "apply", &id, "--author", "carol"]),
        6,
        "needs 1 approval",
    );
    // The author may not approve their own change under the default policy.
    refused(
        &coordctl(&etcd, &["config", "approve", &id, "--author", "alice"]),
        6,
        "does not let authors approve",
    );
    // A second user may; the global flag works before the command too.
    let approved = json(&etcd, &["--author", "bob", "config", "approve", &id]);
    assert_eq!(approved["approvals"][0]["by"], "bob", "{approved}");
    refused(
        &coordctl(
            &etcd,
            &["config", "proposal", "approve", &id, "--author", "bob"],
        ),
        3,
        "already approved",
    );

    let applied = json(&etcd, &["config", "apply", &id, "--author", "carol"]);
    assert_eq!(applied["changed"], true, "{applied}");
    wait_for(&cfg, "pool 20", |c| c.database.pool == 20).await;

    // History: author, approvers, proposal id, who applied.
    let v = newest(&etcd, P);
    assert_eq!(v["author"], "alice", "{v}");
    assert_eq!(v["comment"], "more connections");
    assert_eq!(v["change"]["proposal"], id.as_str(), "{v}");
    assert_eq!(v["change"]["approvers"], serde_json::json!(["bob"]));
    assert_eq!(v["change"]["applied_by"], "carol");
    let table = ok(&etcd, &["config", "history", P]);
    assert!(
        table.contains(&format!("[proposal {id}, approved by bob]")),
        "{table}"
    );
    // The typed handle's history reads the same record.
    let versions = cfg.history().await.unwrap();
    let last = versions.last().unwrap();
    let change = last.change.as_ref().expect("change control recorded");
    assert_eq!(change.proposal.as_deref(), Some(id.as_str()));
    assert_eq!(change.approvers, vec!["bob".to_string()]);

    let p = json(&etcd, &["config", "proposal", "show", &id]);
    assert_eq!(p["state"], "applied");
    assert_eq!(p["applied"]["by"], "carol");
    refused(
        &coordctl(&etcd, &["config", "apply", &id]),
        4,
        "already applied",
    );
    // A rejected proposal cannot apply.
    let other = propose(&etcd, "alice", "database.pool=30", "even more");
    let r = json(
        &etcd,
        &[
            "config", "reject", &other, "--reason", "too many", "--author", "bob",
        ],
    );
    assert_eq!(r["state"], "rejected");
    assert_eq!(r["rejection"]["reason"], "too many");
    refused(
        &coordctl(&etcd, &["config", "apply", &other]),
        3,
        "rejected",
    );
    assert_eq!(cfg.load().database.pool, 20);
}

/// Decided proposals are pruned by age on request; open ones always stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_proposals_older_than_an_age_are_pruned_and_open_ones_kept() {
    let etcd = Etcd::start().await;
    let _cfg = service(&etcd).await;
    let open = propose(&etcd, "alice", "database.pool=10", "stays open");
    let rejected: Vec<String> = ["database.pool=11", "database.pool=12"]
        .iter()
        .map(|set| {
            let id = propose(&etcd, "alice", set, "to reject");
            ok(
                &etcd,
                &["config", "reject", &id, "--reason", "no", "--author", "bob"],
            );
            id
        })
        .collect();
    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };

    let args = ["config", "proposals", P, "--prune-decided-older-than", "1h"];
    let out = coordctl(&etcd, &[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pruned 0 decided proposal(s)"));
    let kept: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&kept).len(), 3, "decided within the hour: kept");

    let args = ["config", "proposals", P, "--prune-decided-older-than", "0s"];
    let out = coordctl(&etcd, &[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pruned 2 decided proposal(s)"), "{stderr}");
    assert!(
        rejected.iter().all(|id| stderr.contains(id.as_str())),
        "{stderr}"
    );
    let left: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&left), vec![open.clone()]);
    assert_eq!(
        json(&etcd, &["config", "proposal", "show", &open])["state"],
        "open"
    );
    refused(
        &coordctl(&etcd, &["config", "proposal", "show", &rejected[0]]),
        5,
        "no proposal",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_after_an_unrelated_change_conflicts_and_rebase_fixes_it() {
    let etcd = Etcd::start().await;
    let cfg = service(&etcd).await;
    set_policy(&etcd, P, "approvals: 1\n");
    let id = propose(&etcd, "alice", "database.pool=20", "more connections");
    ok(&etcd, &["config", "approve", &id, "--author", "bob"]);
    let base = json(&etcd, &["config", "proposal", "show", &id])["base_revision"]
        .as_i64()
        .unwrap();

    // Someone changes another field meanwhile.
    etcd.put(&format!("{P}/port"), "9001");
    wait_for(&cfg, "port 9001", |c| c.port == 9001).await;
    let out = coordctl(&etcd, &["config", "apply", &id, "--author", "bob"]);
    refused(&out, 4, &format!("changed after revision {base}"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rebase"),
        "{}",
        text(&out)
    );
    assert_eq!(cfg.load().database.pool, 4, "nothing was written");

    // Rebase: a new base, the diff recomputed, approvals dropped.
    let rebased = json(
        &etcd,
        &["config", "proposal", "rebase", &id, "--author", "alice"],
    );
    assert!(
        rebased["base_revision"].as_i64().unwrap() > base,
        "{rebased}"
    );
    assert_eq!(rebased["rebased_from"], serde_json::json!([base]));
    assert_eq!(rebased["approvals"], serde_json::json!([]));
    assert_eq!(rebased["diff"][0]["path"], "database.pool");
    refused(&coordctl(&etcd, &["config", "apply", &id]), 6, "approval");
    ok(
        &etcd,
        &["config", "proposal", "approve", &id, "--author", "bob"],
    );
    ok(
        &etcd,
        &["config", "proposal", "apply", &id, "--author", "bob"],
    );
    wait_for(&cfg, "pool 20 and port 9001", |c| {
        c.database.pool == 20 && c.port == 9001
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_publish_on_a_policed_prefix_is_refused_and_break_glass_is_recorded() {
    support::init_tracing();
    let etcd = Etcd::start().await;
    let cfg = service(&etcd).await;
    set_policy(&etcd, P, "approvals: 1\n");

    refused(
        &coordctl(&etcd, &["config", "put", P, "port", "9100"]),
        6,
        "needs 1 approval",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "port: 9100\ndatabase:\n  host: db1\n").unwrap();
    refused(
        &coordctl(&etcd, &["config", "apply", P, "-f", file.to_str().unwrap()]),
        6,
        "break glass",
    );
    // The typed handle is refused the same way: the crate enforces it for every write.
    let e = cfg
        .update(|c| c.port = 9100, "svc", "direct")
        .await
        .expect_err("refused by the policy");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e:#}");
    assert_eq!(cfg.load().port, 8080);
    // --break-glass needs a reason.
    let out = coordctl(
        &etcd,
        &["config", "put", P, "port", "9100", "--break-glass"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let put = json(
        &etcd,
        &[
            "config",
            "put",
            P,
            "port",
            "9100",
            "--author",
            "oncall",
            "--break-glass",
            "--reason",
            "incident 7: port clash",
        ],
    );
    assert_eq!(put["changed"], true);
    wait_for(&cfg, "port 9100", |c| c.port == 9100).await;
    let v = newest(&etcd, P);
    assert_eq!(v["author"], "oncall");
    assert_eq!(v["change"]["break_glass"], "incident 7: port clash", "{v}");
    let table = ok(&etcd, &["config", "history", P]);
    assert!(
        table.contains("[break-glass: incident 7: port clash]"),
        "{table}"
    );
    // The policy removed, direct publishes work again.
    ok(&etcd, &["config", "policy", P, "--clear"]);
    ok(&etcd, &["config", "put", P, "port", "9200"]);
    wait_for(&cfg, "port 9200", |c| c.port == 9200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_window_blocks_outside_its_hours() {
    let etcd = Etcd::start().await;
    let cfg = service(&etcd).await;
    set_policy(
        &etcd,
        P,
        "time_zone: Europe/Berlin\nwindows:\n  - {days: [mon-fri], hours: \"09-17\"}\n",
    );
    // Saturday 2026-03-07 11:00 in Berlin: closed.
    let saturday = [("COORDCTL_NOW", "2026-03-07T10:00:00Z")];
    refused(
        &coordctl_env(&etcd, &saturday, &["config", "put", P, "port", "9001"]),
        6,
        "outside the change windows",
    );
    // Monday 2026-03-02 17:30 in Berlin (16:30 UTC): closed, the end hour excluded.
    let evening = [("COORDCTL_NOW", "2026-03-02T16:30:00Z")];
    refused(
        &coordctl_env(&etcd, &evening, &["config", "put", P, "port", "9001"]),
        6,
        "17:30",
    );
    // Monday 09:30 in Berlin (08:30 UTC): open.
    let monday = [("COORDCTL_NOW", "2026-03-02T08:30:00Z")];
    let out = coordctl_env(
        &etcd,
        &monday,
        &["config", "put", P, "port", "9001", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for(&cfg, "port 9001", |c| c.port == 9001).await;
    // Rollback keeps to the windows too, and breaks glass with a reason.
    let first = json(&etcd, &["config", "history", P])
        .as_array()
        .unwrap()
        .last()
        .unwrap()["revision"]
        .as_i64()
        .unwrap()
        .to_string();
    refused(
        &coordctl_env(&etcd, &saturday, &["config", "rollback", P, &first]),
        6,
        "outside the change windows",
    );
    let out = coordctl_env(
        &etcd,
        &saturday,
        &[
            "config",
            "rollback",
            P,
            &first,
            "--break-glass",
            "--reason",
            "weekend outage",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for(&cfg, "port 8080", |c| c.port == 8080).await;
    assert_eq!(newest(&etcd, P)["change"]["break_glass"], "weekend outage");

    // Through the library with an injected clock: an approved proposal waits for the window.
    let coord = etcd.coordinator().await;
    let alice = ChangeControl::open(&coord, P)
        .await
        .unwrap()
        .with_actor("alice")
        .unwrap();
    let bob = ChangeControl::open(&coord, P)
        .await
        .unwrap()
        .with_actor("bob")
        .unwrap();
    alice
        .set_policy(Some(&Policy::parse(
            "approvals: 1\ntime_zone: Europe/Berlin\nwindows:\n  - {days: [mon-fri], hours: \"09-17\"}\n",
        ).unwrap()))
        .await
        .unwrap();
    let p = alice
        .propose_fields(&[("database.pool".into(), "12".into())], "window")
        .await
        .unwrap();
    bob.approve(&p.id).await.unwrap();
    let closed = bob
        .clone()
        .with_clock(Arc::new(FixedClock::parse("2026-03-07T10:00:00Z").unwrap()));
    let e = closed.apply(&p.id).await.expect_err("outside the window");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e:#}");
    let open = bob.with_clock(Arc::new(FixedClock::parse("2026-03-02T08:30:00Z").unwrap()));
    open.apply(&p.id).await.unwrap().expect("a version");
    wait_for(&cfg, "pool 12", |c| c.database.pool == 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_at_once_both_count() {
    let etcd = Etcd::start().await;
    let _cfg = service(&etcd).await;
    let coord = etcd.coordinator().await;
    let alice = ChangeControl::open(&coord, P)
        .await
        .unwrap()
        .with_actor("alice")
        .unwrap();
    alice
        .set_policy(Some(
            &Policy::parse("approvals: 2\napprovers: [bob, carol]\n").unwrap(),
        ))
        .await
        .unwrap();
    let p = alice
        .propose_fields(&[("port".into(), "9300".into())], "two approvals")
        .await
        .unwrap();
    let e = ChangeControl::open(&coord, P)
        .await
        .unwrap()
        .with_actor("dave")
        .unwrap()
        .approve(&p.id)
        .await
        .expect_err("dave is not an approver");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e:#}");
    let mut tasks = Vec::new();
    for who in ["bob", "carol"] {
        let c = ChangeControl::open(&coord, P)
            .await
            .unwrap()
            .with_actor(who)
            .unwrap();
        let id = p.id.clone();
        tasks.push(tokio::spawn(async move { c.approve(&id).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let p = alice.proposal(&p.id).await.unwrap();
    let mut by: Vec<&str> = p.approvals.iter().map(|a| a.by.as_str()).collect();
    by.sort();
    assert_eq!(by, vec!["bob", "carol"]);
    let v = alice.apply(&p.id).await.unwrap().expect("a version");
    let mut approvers = v.change.clone().unwrap().approvers;
    approvers.sort();
    assert_eq!(approvers, vec!["bob".to_string(), "carol".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_staging_to_prod_with_the_diff_and_the_validation() {
    let etcd = Etcd::start().await;
    let staging = "/env/staging/apps/cc/config";
    let prod = "/env/prod/apps/cc/config";
    let coord = etcd.coordinator().await;
    let mut handles = Vec::new();
    for (prefix, port, pool) in [(staging, "8081", "30"), (prod, "8080", "4")] {
        etcd.put(&format!("{prefix}/port"), port);
        etcd.put(&format!("{prefix}/database/host"), "db1");
        etcd.put(&format!("{prefix}/database/pool"), pool);
        let cfg: ConfigHandle<CcConfig> = coord
            .config_with(
                ConfigOptions::new()
                    .with_prefix(prefix)
                    .without_file()
                    .without_env(),
            )
            .await
            .unwrap();
        assert!(eventually!(
            WAIT,
            cfg.history().await.is_ok_and(|h| !h.is_empty())
        ));
        handles.push(cfg);
    }
    let prod_cfg = &handles[1];
    set_policy(&etcd, prod, "approvals: 1\n");

    // Only the pool: the diff names it alone, and a proposal waits on prod.
    let promoted = json(
        &etcd,
        &[
            "config",
            "promote",
            "--from",
            staging,
            "--to",
            prod,
            "--only",
            "database.pool",
            "--author",
            "alice",
            "-m",
            "bigger pool",
        ],
    );
    let diff = promoted["diff"].as_array().unwrap();
    assert_eq!(diff.len(), 1, "{promoted}");
    assert_eq!(diff[0]["path"], "database.pool");
    assert_eq!(diff[0]["old"], 4);
    assert_eq!(diff[0]["new"], 30);
    let id = promoted["proposal"]["id"].as_str().unwrap().to_string();
    assert!(promoted["version"].is_null());
    let source_revision = promoted["from"]["revision"].as_i64().unwrap();
    assert_eq!(promoted["from"]["prefix"], staging);
    assert_eq!(
        prod_cfg.load().database.pool,
        4,
        "nothing applied before approval"
    );
    ok(&etcd, &["config", "approve", &id, "--author", "bob"]);
    ok(&etcd, &["config", "apply", &id, "--author", "bob"]);
    let seen = eventually!(WAIT, prod_cfg.load().database.pool == 30);
    assert!(seen);
    assert_eq!(prod_cfg.load().port, 8080, "--only left the port alone");
    let v = newest(&etcd, prod);
    assert_eq!(v["change"]["promoted_from"]["prefix"], staging, "{v}");
    assert_eq!(v["change"]["promoted_from"]["revision"], source_revision);
    assert_eq!(v["change"]["proposal"], id.as_str());
    let table = ok(&etcd, &["config", "history", prod]);
    assert!(
        table.contains(&format!("[promoted from {staging}@{source_revision}]")),
        "{table}"
    );

    // Validation against prod's schema: a bad value in staging is not promoted.
    etcd.put(&format!("{staging}/database/pool"), "500");
    refused(
        &coordctl(
            &etcd,
            &[
                "config", "promote", "--from", staging, "--to", prod, "--author", "alice",
            ],
        ),
        3,
        "database.pool",
    );
    // Without a policy on the target, a promotion publishes at once.
    etcd.put(&format!("{staging}/database/pool"), "40");
    ok(&etcd, &["config", "policy", prod, "--clear"]);
    let promoted = json(
        &etcd,
        &[
            "config", "promote", "--from", staging, "--to", prod, "--author", "alice",
        ],
    );
    let paths: Vec<&str> = promoted["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["database.pool", "port"], "{promoted}");
    assert!(
        promoted["version"]["revision"].as_i64().is_some(),
        "{promoted}"
    );
    let seen = eventually!(
        WAIT,
        prod_cfg.load().database.pool == 40 && prod_cfg.load().port == 8081
    );
    assert!(seen, "{:?}", prod_cfg.load().value());
}

async fn quickstart_service(etcd: &Etcd) -> ConfigHandle<quickstart::ChatConfig> {
    let prefix = "/apps/chat/config";
    etcd.put(&format!("{prefix}/port"), "8080");
    etcd.put(&format!("{prefix}/database/host"), "db1");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<quickstart::ChatConfig> = coord
        .config_with(
            ConfigOptions::new()
                .without_file()
                .with_env_vars(Vec::<(String, String)>::new()),
        )
        .await
        .unwrap();
    assert!(eventually!(
        WAIT,
        cfg.history().await.is_ok_and(|h| !h.is_empty())
    ));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_for_the_quickstart_type_round_trips_through_apply_unchanged() {
    let etcd = Etcd::start().await;
    let cfg = quickstart_service(&etcd).await;
    let prefix = "/apps/chat/config";
    let template = ok(&etcd, &["config", "template", prefix]);
    // Every field, with its doc comment, type, default and constraints.
    for needle in [
        "# TCP port the service listens on.",
        "# integer, required, >= 1",
        "port: 8080",
        "# The greeting shown to new users (empty: none).",
        "greeting: \"\"",
        "# Database host name.",
        "host: \"db1\"",
        "# Connections in the pool.",
        "default 4",
        "<= 100",
        "pool: 4",
    ] {
        assert!(template.contains(needle), "no `{needle}` in\n{template}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.yaml");
    std::fs::write(&file, &template).unwrap();
    let applied = json(
        &etcd,
        &["config", "apply", prefix, "-f", file.to_str().unwrap()],
    );
    assert_eq!(applied["changed"], true, "{applied}");
    // The prefix now holds exactly the template's document, and the service loads it.
    let written: Value = serde_yaml::from_str(&template).unwrap();
    let got = json(&etcd, &["config", "get", prefix]);
    assert_eq!(got["config"], written, "{got}");
    let seen = eventually!(WAIT, cfg.history().await.is_ok_and(|h| h.len() >= 2));
    assert!(seen);
    assert_eq!(cfg.load().database.pool, 4);
    // The template of that is the same text, and applying it again changes nothing.
    assert_eq!(ok(&etcd, &["config", "template", prefix]), template);
    let again = json(
        &etcd,
        &["config", "apply", prefix, "-f", file.to_str().unwrap()],
    );
    assert_eq!(again["changed"], false, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_table_lists_every_field_with_its_key_and_env_variable() {
    let etcd = Etcd::start().await;
    let _cfg = quickstart_service(&etcd).await;
    let docs = ok(
        &etcd,
        &[
            "config",
            "docs",
            "/apps/chat/config",
            "--format",
            "markdown",
        ],
    );
    assert!(
        docs.contains("| field | type | default | constraints | description | secret | etcd key | env variable |"),
        "{docs}"
    );
    let rows: Vec<&str> = docs.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(rows.len(), 4, "{docs}");
    for (field, key, env) in [
        ("port", "/apps/chat/config/port", "CHAT_PORT"),
        (
            "features.greeting",
            "/apps/chat/config/features/greeting",
            "CHAT_FEATURES__GREETING",
        ),
        (
            "database.host",
            "/apps/chat/config/database/host",
            "CHAT_DATABASE__HOST",
        ),
        (
            "database.pool",
            "/apps/chat/config/database/pool",
            "CHAT_DATABASE__POOL",
        ),
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| `{field}` |")))
            .unwrap_or_else(|| panic!("no row for {field} in\n{docs}"));
        assert!(row.contains(&format!("`{key}`")), "{row}");
        assert!(row.contains(&format!("`{env}`")), "{row}");
    }
    let pool = rows
        .iter()
        .find(|r| r.starts_with("| `database.pool` |"))
        .unwrap();
    assert!(
        pool.contains("`4`") && pool.contains(">= 1") && pool.contains("<= 100"),
        "{pool}"
    );
    assert!(pool.contains("Connections in the pool."), "{pool}");
    // JSON for tools: the same fields, secret or not.
    let fields = json(
        &etcd,
        &["config", "docs", "/apps/chat/config", "--format", "json"],
    );
    assert_eq!(fields.as_array().unwrap().len(), 4);
    assert!(fields
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["secret"] == false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_is_proposed_only_encrypted() {
    let etcd = Etcd::start().await;
    let cfg = service(&etcd).await;
    set_policy(&etcd, P, "approvals: 1\n");
    let out = coordctl(
        &etcd,
        &[
            "config",
            "propose",
            P,
            "--set",
            "database.password=hunter2",
            "--author",
            "alice",
        ],
    );
    refused(&out, 3, "history secret key");
    let key = "11".repeat(32);
    let with_key = [("COORD_HISTORY_KEY", key.as_str())];
    let out = coordctl_env(
        &etcd,
        &with_key,
        &[
            "config",
            "propose",
            P,
            "--set",
            "database.password=hunter2",
            "--author",
            "alice",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = p["id"].as_str().unwrap();
    assert_eq!(p["diff"][0]["path"], "database.password");
    assert_eq!(p["diff"][0]["new"], "***");
    let raw = etcd.etcdctl(&[
        "get",
        "--print-value-only",
        &format!("/__coordination/proposals/{id}"),
    ]);
    assert!(
        !String::from_utf8_lossy(&raw.stdout).contains("hunter2"),
        "the proposal holds it encrypted"
    );
    ok(&etcd, &["config", "approve", id, "--author", "bob"]);
    // Applying needs the key.
    refused(&coordctl(&etcd, &["config", "apply", id]), 3, "history key");
    let out = coordctl_env(&etcd, &with_key, &["config", "apply", id]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(&cfg, "the new password", |c| {
        c.database.password == "hunter2"
    })
    .await;
}

/// Logs written into a buffer.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On a current-thread runtime the write runs on the test's thread, so the subscriber set as
/// its default sees the warning (a global one is set first so that no callsite is cached as
/// uninteresting by another thread).
#[tokio::test]
async fn a_break_glass_write_logs_at_warn_with_its_reason() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    let logs = Logs::default();
    let writer = logs.clone();
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish(),
    );
    let etcd = Etcd::start().await;
    let _cfg = service(&etcd).await;
    let coord = etcd.coordinator().await;
    let control = ChangeControl::open(&coord, P).await.unwrap();
    control
        .set_policy(Some(&Policy::requiring(1)))
        .await
        .unwrap();
    let history = coordination::history::ConfigHistory::open(&coord, P)
        .await
        .unwrap();
    let e = history
        .put("port", "9100", "oncall", "")
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e:#}");
    assert!(
        history.clone().with_break_glass("  ").is_err(),
        "a reason is required"
    );
    let v = history
        .with_break_glass("disk full on db1")
        .unwrap()
        .put("port", "9100", "oncall", "")
        .await
        .unwrap()
        .expect("a version");
    assert_eq!(
        v.change.as_ref().and_then(|c| c.break_glass.as_deref()),
        Some("disk full on db1")
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("break-glass"))
        .unwrap_or_else(|| panic!("no break-glass warning in:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("disk full on db1") && line.contains("oncall"),
        "{line}"
    );
    assert!(line.contains(&format!("{P}/")), "{line}");
}

/// Against etcd with TLS and auth: the documented proposer and approver roles, and the etcd
/// user as the identity that counts.
mod secured {
    use super::*;
    use support::tls::{SecureEtcd, ROOT_PASSWORD};

    /// The `etcdctl` lines of the ```sh block of `docs/security.md` that adds `role`, every
    /// `"$PASSWORD"` replaced by `pw`.
    fn documented_role(role: &str) -> Vec<Vec<String>> {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md"))
            .expect("docs/security.md");
        let block = doc
            .split("```sh\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap_or(""))
            .find(|block| block.contains(&format!("etcdctl role add {role}\n")))
            .unwrap_or_else(|| panic!("no block adds role {role}"));
        block
            .lines()
            .filter_map(|line| line.strip_prefix("etcdctl "))
            .map(|line| {
                line.split_whitespace()
                    .map(|arg| match arg.split_once("=\"$") {
                        Some((flag, _)) => format!("{flag}=pw"),
                        None => arg.to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    fn ctl(etcd: &SecureEtcd, user: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
        cmd.arg("--endpoints")
            .arg(etcd.endpoint())
            .args(etcd.tls_args())
            .arg(format!("--user={user}"))
            .env_remove("ETCD_USER")
            .env_remove("ETCD_PASSWORD")
            .env_remove("COORDCTL_AUTHOR")
            .env_remove("COORDCTL_NOW")
            .args(args)
            .stdin(Stdio::null());
        cmd.output().expect("run coordctl")
    }

    fn ctl_json(etcd: &SecureEtcd, user: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = ctl(etcd, user, &all);
        assert!(out.status.success(), "coordctl {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
    #[coord(prefix = "/apps/chat/config")]
    struct ChatConfig {
        port: u16,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_etcd_user_is_the_author_and_approver_and_the_documented_roles_split_the_work() {
        let etcd = SecureEtcd::start().await;
        let p = "/apps/chat/config";
        etcd.put(&format!("{p}/port"), "8080");
        let root = format!("root:{ROOT_PASSWORD}");
        let coord = coordination::Coordinator::connect(etcd.root_options())
            .await
            .unwrap();
        let cfg = ChatConfig::bind(&coord).await.expect("bind as root");
        assert_eq!(coord.user(), Some("root"));
        for role in ["config-proposer", "config-approver"] {
            let lines = documented_role(role);
            assert!(lines.len() >= 6, "{lines:?}");
            for args in lines {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                etcd.etcdctl(&args);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "approvals: 1\n").unwrap();
        let out = ctl(
            &etcd,
            &root,
            &["config", "policy", p, "--set", "-f", file.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", text(&out));

        // dana proposes; the author is her etcd user, and she may not claim to be bob.
        let proposal = ctl_json(
            &etcd,
            "dana:pw",
            &["config", "propose", p, "--set", "port=9000", "-m", "move"],
        );
        assert_eq!(proposal["author"], "dana", "{proposal}");
        let id = proposal["id"].as_str().unwrap();
        refused(
            &ctl(
                &etcd,
                "dana:pw",
                &["config", "approve", id, "--author", "bob"],
            ),
            3,
            "authenticated as etcd user `dana`",
        );
        refused(
            &ctl(&etcd, "dana:pw", &["config", "approve", id]),
            6,
            "does not let authors approve",
        );
        // Her role writes proposals only: not the config, not even breaking glass.
        let out = ctl(
            &etcd,
            "dana:pw",
            &[
                "config",
                "put",
                p,
                "port",
                "9001",
                "--break-glass",
                "--reason",
                "try",
            ],
        );
        refused(&out, 1, "permission");
        let raw = etcd.etcdctl_raw_as(Some("dana:pw"), &["put", &format!("{p}/port"), "1"]);
        assert!(!raw.status.success(), "RBAC keeps a raw etcdctl put out");
        refused(
            &ctl(&etcd, "dana:pw", &["config", "apply", id]),
            6,
            "needs 1 approval",
        );

        // bob approves and applies, as his etcd user.
        let approved = ctl_json(&etcd, "bob:pw", &["config", "approve", id]);
        assert_eq!(approved["approvals"][0]["by"], "bob");
        let out = ctl(&etcd, "dana:pw", &["config", "apply", id]);
        refused(&out, 1, "permission");
        let applied = ctl_json(&etcd, "bob:pw", &["config", "apply", id]);
        assert_eq!(applied["changed"], true, "{applied}");
        assert!(eventually!(WAIT, cfg.load().port == 9000));
        let v = ctl_json(&etcd, "bob:pw", &["config", "history", p])[0].clone();
        assert_eq!(v["author"], "dana", "{v}");
        assert_eq!(v["change"]["approvers"], serde_json::json!(["bob"]));
        assert_eq!(v["change"]["applied_by"], "bob");
        assert_eq!(v["change"]["proposal"], id);
    }
}
