//! Fleet operations against real etcd with instances in separate OS processes (re-runs of this
//! test binary as workers, five per test, with different labels): receipts, `config instances`
//! and `config wait`, the publish gate against an older schema still running, and staged
//! rollouts that complete, revert on a canary's rejection or its unhealthy report, survive a
//! SIGKILLed controller, and never reach instances outside the cohort.
#![cfg(feature = "cli")]

#[macro_use]
mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coordination::fleet::{Fleet, Health, ReceiptOptions, RolloutState, RolloutStatus};
use coordination::{ConfigEvent, ConfigOptions, CoordConfig, Coordinator, CoordinatorOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::{Etcd, Proc};

const ROLE: &str = "FLEET_TEST_ROLE";
const ENDPOINT: &str = "FLEET_TEST_ENDPOINT";
const PREFIX: &str = "FLEET_TEST_PREFIX";
const ID: &str = "FLEET_TEST_ID";
/// The receipts' lease TTL in the workers.
const TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(30);

/// At most two of these tests (each five workers and an etcd) at a time on a small machine.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The service's config: `pool.max` above 500 is refused by `validate()` (the schema allows it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/fleet/config", validate = "FleetConfig::check")]
struct FleetConfig {
    greeting: String,
    pool: Pool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Pool {
    #[schemars(range(min = 1))]
    max: u32,
}

impl FleetConfig {
    fn check(&self) -> Result<(), String> {
        if self.pool.max > 500 {
            return Err(format!(
                "pool.max {} would exhaust the database (at most 500)",
                self.pool.max
            ));
        }
        Ok(())
    }
}

/// The same config as an older binary knew it: `pool.max` at most 100 in its schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/fleet/config")]
struct OldFleetConfig {
    greeting: String,
    pool: OldPool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct OldPool {
    #[schemars(range(min = 1, max = 100))]
    max: u32,
}

/// Prints what the handle does, one `@@` line per event; reads `unhealthy REASON` and
/// `healthy` from stdin.
async fn serve<T: CoordConfig>(coord: &Coordinator, prefix: &str, id: &str) {
    let options = ConfigOptions::new().with_prefix(prefix).with_receipts(
        ReceiptOptions::new()
            .with_instance_id(id)
            .with_lease_ttl(TTL),
    );
    let cfg = T::bind_with(coord, options).await.expect("bind");
    let mut events = cfg.subscribe();
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let value = serde_json::to_string(&**cfg.load()).unwrap();
    println!("@@ ready {} {value}", cfg.load().revision());
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(ConfigEvent::Applied(s)) => {
                    println!("@@ applied {} {}", s.revision(), serde_json::to_string(&**s).unwrap());
                }
                Some(ConfigEvent::Rejected(r)) => println!("@@ rejected {}", r.error),
                Some(_) => {}
                None => break,
            },
            Some(line) = commands.recv() => {
                match line.split_once(' ') {
                    Some(("unhealthy", why)) => cfg.report_health(Health::Unhealthy(why.to_string())),
                    _ => cfg.report_health(Health::Healthy),
                }
                println!("@@ health {line}");
            }
        }
    }
}

/// The worker: a bound instance until killed. Does nothing when run as a normal test.
#[tokio::test]
async fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let coord = Coordinator::connect(CoordinatorOptions::new([std::env::var(ENDPOINT).unwrap()]))
        .await
        .unwrap();
    let prefix = std::env::var(PREFIX).unwrap();
    let id = std::env::var(ID).unwrap();
    match role.as_str() {
        "old" => serve::<OldFleetConfig>(&coord, &prefix, &id).await,
        _ => serve::<FleetConfig>(&coord, &prefix, &id).await,
    }
}

/// One instance process and every `@@` line it printed.
struct Instance {
    id: String,
    proc: Option<Proc>,
    lines: Vec<String>,
}

/// Five instances with labels: i0 the canary in eu-1a, i1 eu-1a, i2 and i3 eu-1b, i4 us-1.
struct Fleet5 {
    instances: Vec<Instance>,
}

const LABELS: [&str; 5] = [
    "zone=eu-1a,tier=canary",
    "zone=eu-1a,tier=main",
    "zone=eu-1b,tier=main",
    "zone=eu-1b,tier=main",
    "zone=us-1,tier=main",
];

impl Fleet5 {
    /// Starts five instances of `roles[i]` (`new` or `old`) and waits until each is bound.
    async fn start(etcd: &Etcd, prefix: &str, roles: [&str; 5]) -> Fleet5 {
        let mut instances: Vec<Instance> = (0..5)
            .map(|i| {
                let id = format!("i{i}");
                let proc = Proc::worker(
                    "worker",
                    &[
                        (ROLE, roles[i].to_string()),
                        (ENDPOINT, etcd.endpoint()),
                        (PREFIX, prefix.to_string()),
                        (ID, id.clone()),
                        ("COORD_LABELS", LABELS[i].to_string()),
                    ],
                    &id,
                );
                Instance {
                    id,
                    proc: Some(proc),
                    lines: Vec::new(),
                }
            })
            .collect();
        for i in &mut instances {
            let line = i.proc.as_mut().unwrap().tagged(WAIT).await;
            assert!(line.starts_with("ready "), "{}: {line}", i.id);
            i.lines.push(line);
        }
        Fleet5 { instances }
    }

    /// Reads every line printed so far.
    async fn pump(&mut self) {
        for i in &mut self.instances {
            if let Some(p) = i.proc.as_mut() {
                while let Some(line) = p.try_tagged(Duration::from_millis(1)).await {
                    i.lines.push(line);
                }
            }
        }
    }

    /// Whether instance `i` printed a line containing `text`.
    async fn saw(&mut self, i: usize, text: &str) -> bool {
        self.pump().await;
        self.instances[i].lines.iter().any(|l| l.contains(text))
    }

    /// The value instance `i` serves now, by its last `ready`/`applied` line.
    async fn serving(&mut self, i: usize) -> Value {
        self.pump().await;
        let line = self.instances[i]
            .lines
            .iter()
            .rev()
            .find(|l| l.starts_with("applied ") || l.starts_with("ready "))
            .unwrap()
            .clone();
        let json = line.splitn(3, ' ').nth(2).unwrap();
        serde_json::from_str(json).unwrap()
    }

    fn send(&mut self, i: usize, line: &str) {
        self.instances[i].proc.as_mut().unwrap().send(line);
    }

    fn kill(&mut self, i: usize) {
        self.instances[i].proc.take().unwrap().signal("KILL");
    }
}

use support::coordctl::{command as coordctl_command, run as coordctl};

use support::coordctl::text;

/// Seeds the prefix: greeting `hello`, pool.max 10.
fn seed(etcd: &Etcd, prefix: &str) -> i64 {
    etcd.put(&format!("{prefix}/greeting"), "hello");
    etcd.put(&format!("{prefix}/pool/max"), "10")
}

/// A release file in a temp dir.
fn release(dir: &tempfile::TempDir, name: &str, greeting: &str, max: u32) -> String {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        format!("greeting: {greeting}\npool:\n  max: {max}\n"),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

async fn fleet(etcd: &Etcd, prefix: &str) -> Fleet {
    Fleet::open(&etcd.coordinator().await, prefix).unwrap()
}

async fn live(fleet: &Fleet) -> usize {
    fleet.instances().await.map_or(0, |i| i.list.len())
}

async fn state(fleet: &Fleet) -> RolloutState {
    fleet.rollout().await.unwrap().expect("a rollout")
}

/// Whether a rollout is baking a step.
async fn baking(fleet: &Fleet) -> bool {
    fleet
        .rollout()
        .await
        .unwrap()
        .is_some_and(|s| matches!(s.phase, coordination::fleet::Phase::Baking { .. }))
}

/// Waits for coordctl to exit; its status, stdout and stderr.
fn wait_output(mut cmd: Command) -> std::process::Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn coordctl")
}

async fn finished(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let join = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, join).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            support::signal_pid(pid, "KILL");
            panic!("coordctl did not finish within {limit:?}");
        }
    }
}

#[tokio::test]
async fn rollout_walks_one_then_forty_percent_then_publishes_and_every_instance_converges() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/walk";
    seed(&etcd, p);
    let mut fleet5 = Fleet5::start(&etcd, p, ["new"; 5]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));

    let dir = tempfile::tempdir().unwrap();
    let file = release(&dir, "good.yaml", "hi", 20);
    let started = Instant::now();
    let child = wait_output(coordctl_command(
        &etcd,
        &[
            "config",
            "rollout",
            "start",
            p,
            "-f",
            &file,
            "--steps",
            "1,40%,100%",
            "--bake",
            "1s",
            "-m",
            "raise the pool",
        ],
    ));
    let out = finished(child, WAIT).await;
    assert!(out.status.success(), "{}", text(&out));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "two bakes of 1 s each, took {took:?}"
    );

    let s = state(&fleet).await;
    assert_eq!(s.status, RolloutStatus::Completed, "{s:?}");
    let published = s.published.expect("published as a version");
    let whats: Vec<&str> = s.transitions.iter().map(|t| t.what.as_str()).collect();
    assert!(whats[0].starts_with("start: steps 1,40%,100%"), "{whats:?}");
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("step 0 (1) applied by all 1 cohort instances")),
        "{whats:?}"
    );
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("step 1 (40%) applied by all 2 cohort instances")),
        "{whats:?}"
    );
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("completed: published as version")),
        "{whats:?}"
    );
    assert_eq!(s.cohort.len(), 2, "40% of 5 is 2");

    // Every instance converges on the published version, and says so in its receipt.
    for i in 0..5 {
        assert!(
            eventually!(WAIT, fleet5.serving(i).await["greeting"] == "hi"),
            "instance {i}"
        );
    }
    let out = coordctl(
        &etcd,
        &[
            "config",
            "wait",
            p,
            "--revision",
            &published.to_string(),
            "--timeout",
            "10s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let view = fleet.instances().await.unwrap();
    assert!(view
        .list
        .iter()
        .all(|i| i.receipt.revision >= published && i.receipt.rollout.is_none()));

    // The history holds the release as a version of source `rollout`, with author and comment.
    let out = coordctl(&etcd, &["--json", "config", "history", p]);
    let versions: Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["revision"] == published)
        .unwrap_or_else(|| panic!("version {published} in {versions}"));
    assert_eq!(v["kind"], "rollout");
    assert_eq!(v["author"], "ops");
    assert!(
        v["comment"].as_str().unwrap().contains("raise the pool"),
        "{v}"
    );
}

#[tokio::test]
async fn a_value_the_canarys_validate_rejects_reverts_within_one_bake_and_others_never_apply_it() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/reject";
    seed(&etcd, p);
    let mut fleet5 = Fleet5::start(&etcd, p, ["new"; 5]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));

    let dir = tempfile::tempdir().unwrap();
    let file = release(&dir, "bad.yaml", "too-big", 900);
    let bake = Duration::from_secs(3);
    let started = Instant::now();
    let child = wait_output(coordctl_command(
        &etcd,
        &[
            "config",
            "rollout",
            "start",
            p,
            "-f",
            &file,
            "--steps",
            "1,100%",
            "--bake",
            "3s",
            "--selector",
            "tier=canary",
        ],
    ));
    let out = finished(child, WAIT).await;
    assert_eq!(out.status.code(), Some(7), "reverted: {}", text(&out));
    assert!(
        started.elapsed() < bake + Duration::from_secs(2),
        "reverted within one bake, took {:?}",
        started.elapsed()
    );
    let s = state(&fleet).await;
    assert_eq!(s.status, RolloutStatus::Aborted);
    assert_eq!(s.cohort, vec!["i0"]);
    let reason = s.reason.clone().unwrap();
    assert!(
        reason.contains("cohort instance i0 rejected the staged values")
            && reason.contains("would exhaust the database"),
        "{reason}"
    );
    assert!(fleet5.saw(0, "rejected").await);
    // Nobody serves the staged value; the canary still serves the fleet's.
    for i in 0..5 {
        assert!(
            !fleet5.saw(i, "too-big").await,
            "instance {i} applied the staged value"
        );
        assert_eq!(fleet5.serving(i).await["pool"]["max"], 10);
    }
    // The canary's receipt drops the rollout once it is reverted.
    assert!(eventually!(
        WAIT,
        fleet
            .instances()
            .await
            .unwrap()
            .get("i0")
            .is_some_and(|i| i.receipt.rollout.is_none())
    ));
    let out = coordctl(&etcd, &["config", "rollout", "status", p]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("aborted") && shown.contains("reason: cohort instance i0"),
        "{shown}"
    );
}

#[tokio::test]
async fn staged_values_never_reach_instances_outside_the_cohort() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/cohort";
    seed(&etcd, p);
    let mut fleet5 = Fleet5::start(&etcd, p, ["new"; 5]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));

    // Stage a valid value for eu-1b only (i2, i3; 40% of two is one), detached: no controller.
    let dir = tempfile::tempdir().unwrap();
    let file = release(&dir, "staged.yaml", "staged-only", 30);
    let out = coordctl(
        &etcd,
        &[
            "config",
            "rollout",
            "start",
            p,
            "-f",
            &file,
            "--steps",
            "40%,100%",
            "--bake",
            "60s",
            "--selector",
            "zone=eu-1b",
            "--detach",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = state(&fleet).await;
    assert_eq!(s.cohort.len(), 1);
    let canary: usize = s.cohort[0][1..].parse().unwrap();
    assert!(canary == 2 || canary == 3, "{:?}", s.cohort);
    assert!(
        eventually!(
            WAIT,
            fleet5.serving(canary).await["greeting"] == "staged-only"
        ),
        "the cohort instance applies the staged values"
    );
    // Its receipt says so, with the snapshot's provenance left to the staged key.
    assert!(eventually!(
        WAIT,
        fleet
            .instances()
            .await
            .unwrap()
            .get(&format!("i{canary}"))
            .is_some_and(|i| i.receipt.serves_rollout(&s.id, 0))
    ));
    // A change to the fleet's own config meanwhile reaches everyone; the cohort keeps the
    // staged greeting over it.
    etcd.put(&format!("{p}/pool/max"), "11");
    for i in 0..5 {
        assert!(eventually!(
            WAIT,
            fleet5.serving(i).await["pool"]["max"] != 10
        ));
    }
    assert_eq!(fleet5.serving(canary).await["greeting"], "staged-only");
    assert_eq!(fleet5.serving(canary).await["pool"]["max"], 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in (0..5).filter(|i| *i != canary) {
        assert!(
            !fleet5.saw(i, "staged-only").await,
            "instance {i} saw the staged values"
        );
        assert_eq!(fleet5.serving(i).await["pool"]["max"], 11);
    }

    // Abort: the cohort drops the staged values and serves the fleet's version again.
    let out = coordctl(
        &etcd,
        &["config", "rollout", "abort", p, "--reason", "enough"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(eventually!(
        WAIT,
        fleet5.serving(canary).await["greeting"] == "hello"
    ));
    assert_eq!(fleet5.serving(canary).await["pool"]["max"], 11);
    for i in (0..5).filter(|i| *i != canary) {
        assert!(
            !fleet5.saw(i, "staged-only").await,
            "instance {i} saw the staged values"
        );
    }
    let s = state(&fleet).await;
    assert_eq!(s.reason.as_deref(), Some("enough"));
    assert_eq!(s.transitions.last().unwrap().author, "ops");
}

#[tokio::test]
async fn a_canary_reporting_unhealthy_during_the_bake_reverts_the_rollout() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/unhealthy";
    seed(&etcd, p);
    let mut fleet5 = Fleet5::start(&etcd, p, ["new"; 5]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));

    let dir = tempfile::tempdir().unwrap();
    let file = release(&dir, "slow.yaml", "slow", 40);
    let child = wait_output(coordctl_command(
        &etcd,
        &[
            "config",
            "rollout",
            "start",
            p,
            "-f",
            &file,
            "--steps",
            "1,100%",
            "--bake",
            "20s",
            "--selector",
            "tier=canary",
        ],
    ));
    // The canary applies the staged values and the step starts baking...
    assert!(eventually!(
        WAIT,
        fleet5.serving(0).await["greeting"] == "slow"
    ));
    assert!(eventually!(WAIT, baking(&fleet).await));
    // ...then reports itself unhealthy (its own error-rate check).
    fleet5.send(0, "unhealthy error rate 12% over 1 min");
    let out = finished(child, Duration::from_secs(10)).await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let s = state(&fleet).await;
    assert_eq!(s.status, RolloutStatus::Aborted);
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("cohort instance i0 reports itself unhealthy: error rate 12%"),
        "{s:?}"
    );
    assert!(eventually!(
        WAIT,
        fleet5.serving(0).await["greeting"] == "hello"
    ));
    for i in 1..5 {
        assert!(!fleet5.saw(i, "slow").await);
    }
    // Nothing was published.
    let (_, doc) = coordination::history::ConfigHistory::open(&etcd.coordinator().await, p)
        .await
        .unwrap()
        .document(None)
        .await
        .unwrap();
    assert_eq!(doc["greeting"], "hello");
}

#[tokio::test]
async fn a_controller_sigkilled_mid_rollout_is_resumed_by_another() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/resume";
    seed(&etcd, p);
    let mut fleet5 = Fleet5::start(&etcd, p, ["new"; 5]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));

    let dir = tempfile::tempdir().unwrap();
    let file = release(&dir, "next.yaml", "next", 25);
    let mut first = Proc::spawn(
        coordctl_command(
            &etcd,
            &[
                "config",
                "rollout",
                "start",
                p,
                "-f",
                &file,
                "--steps",
                "1,40%,100%",
                "--bake",
                "2s",
                "--lock-ttl",
                "2s",
            ],
        ),
        "first controller",
    );
    // Kill it while step 0 bakes.
    assert!(eventually!(WAIT, baking(&fleet).await));
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;
    let killed_at = state(&fleet).await;
    assert_eq!(killed_at.status, RolloutStatus::Running);
    assert_eq!(killed_at.step, 0);

    let out = finished(
        wait_output(coordctl_command(
            &etcd,
            &["config", "rollout", "resume", p, "--lock-ttl", "2s"],
        )),
        WAIT,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let s = state(&fleet).await;
    assert_eq!(s.status, RolloutStatus::Completed, "{s:?}");
    let controllers: Vec<&str> = s
        .transitions
        .iter()
        .map(|t| t.what.as_str())
        .filter(|w| w.starts_with("controller (fencing token"))
        .collect();
    assert_eq!(controllers.len(), 2, "{controllers:?}");
    assert!(controllers[0].ends_with("drives from step 0"));
    assert!(
        controllers[1].ends_with("drives from step 0"),
        "resumed from the recorded step"
    );
    assert_ne!(
        controllers[0], controllers[1],
        "another lock, another fencing token"
    );
    for i in 0..5 {
        assert!(eventually!(
            WAIT,
            fleet5.serving(i).await["greeting"] == "next"
        ));
    }
}

#[tokio::test]
async fn the_gate_refuses_a_version_an_older_schema_still_running_would_reject() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/gate";
    seed(&etcd, p);
    let _fleet5 = Fleet5::start(&etcd, p, ["new", "new", "new", "old", "old"]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));
    let view = fleet.instances().await.unwrap();
    let old_hash = view.get("i3").unwrap().receipt.schema_hash.clone();
    assert_ne!(old_hash, view.get("i0").unwrap().receipt.schema_hash);
    let app = view.get("i3").unwrap().receipt.app.clone().unwrap();
    assert_eq!(
        (app.name.as_str(), app.version.as_str()),
        ("coordination", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir().unwrap();
    let file = release(&dir, "big.yaml", "hello", 300);
    let expected = format!(
        "2 instances running schema {old_hash} (coordination {}) would reject `pool.max`",
        env!("CARGO_PKG_VERSION")
    );
    let out = coordctl(&etcd, &["config", "apply", p, "-f", &file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&expected) && err.contains("[i3, i4]"), "{err}");
    let out = coordctl(&etcd, &["config", "put", p, "pool.max", "300"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = coordctl(
        &etcd,
        &["config", "rollout", "start", p, "-f", &file, "--detach"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&expected));
    assert!(fleet.rollout().await.unwrap().is_none(), "nothing staged");

    // A value every running schema accepts passes.
    let out = coordctl(&etcd, &["config", "put", p, "pool.max", "90"]);
    assert!(out.status.success(), "{}", text(&out));

    // --force writes it and records the refusal in the history.
    let out = coordctl(
        &etcd,
        &["--json", "config", "apply", p, "-f", &file, "--force"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let written: Value = serde_json::from_slice(&out.stdout).unwrap();
    let overridden = written["version"]["gate_overridden"].as_str().unwrap();
    assert!(overridden.contains(&expected), "{overridden}");
    let out = coordctl(&etcd, &["--json", "config", "history", p]);
    let versions: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(versions
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["gate_overridden"]
            .as_str()
            .is_some_and(|g| g.contains(&old_hash))));
}

#[tokio::test]
async fn a_sigkilled_instance_leaves_the_instances_table_within_ttl_plus_one_second() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/crash";
    seed(&etcd, p);
    let mut fleet5 = Fleet5::start(&etcd, p, ["new"; 5]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));
    let out = coordctl(&etcd, &["--json", "config", "instances", p]);
    let table: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(table["list"].as_array().unwrap().len(), 5, "{table}");
    assert_eq!(table["list"][0]["labels"]["tier"], "canary");

    let killed = Instant::now();
    fleet5.kill(4);
    assert!(eventually!(WAIT, live(&fleet).await == 4));
    let gone = killed.elapsed();
    assert!(
        gone <= TTL + Duration::from_secs(1),
        "the receipt outlived its instance by {gone:?} (TTL {TTL:?})"
    );
    let out = coordctl(&etcd, &["config", "instances", p]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("4 live instances") && !shown.contains("i4 "),
        "{shown}"
    );
}

#[tokio::test]
async fn config_wait_exits_zero_on_convergence_and_lists_a_rejecting_instance_otherwise() {
    let _slot = SLOTS.acquire().await.unwrap();
    let etcd = Etcd::start().await;
    let p = "/apps/fleet/wait";
    seed(&etcd, p);
    let _fleet5 = Fleet5::start(&etcd, p, ["new", "new", "new", "new", "old"]).await;
    let fleet = fleet(&etcd, p).await;
    assert!(eventually!(WAIT, live(&fleet).await == 5));

    let good = etcd.put(&format!("{p}/pool/max"), "50");
    let out = coordctl(
        &etcd,
        &[
            "config",
            "wait",
            p,
            "--revision",
            &good.to_string(),
            "--timeout",
            "10s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all 5 live instances serve revision"));

    // 200 is over the older schema's maximum: i4 rejects it, the others apply it.
    let bad = etcd.put(&format!("{p}/pool/max"), "200");
    let started = Instant::now();
    let out = coordctl(
        &etcd,
        &[
            "config",
            "wait",
            p,
            "--revision",
            &bad.to_string(),
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "returns once the rejection is in"
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("i4 serves revision {good}: rejected revision {bad}: `pool.max` from etcd `{p}/pool/max`")),
        "{shown}"
    );
    let out = coordctl(&etcd, &["config", "instances", p]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!(
            "1 of 5 instances rejected revision {bad}: `pool.max`"
        )),
        "{table}"
    );
    let counts = fleet.instances().await.unwrap().by_revision();
    assert_eq!(counts.get(&bad), Some(&4), "{counts:?}");
    assert_eq!(counts.get(&good), Some(&1), "{counts:?}");
}
