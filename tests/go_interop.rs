//! Interop with etcd's own Go client and grpc-go, checked with real Go programs: Go's
//! `concurrency.Mutex` and our lock exclude each other and agree on fencing tokens, Go's
//! `Election.Observe` follows our election and we follow Go's campaign, Go's endpoints manager
//! lists our registrations, and grpc-go clients dialing `etcd:///…` with `pick_first` and
//! `round_robin` reach every registered instance. Also: a waiter under `etcdctl lock` gets its
//! real fencing token from its key, not from `ETCD_LOCK_REV`.
//!
//! The Go program is `tests/go/probe/main.go`, built once per test binary in GOPATH mode against
//! the Go sources Debian installs under `/usr/share/gocode` (packages `golang-go`,
//! `golang-etcd-server-dev`, `golang-google-grpc-dev`; `scripts/lib.sh` installs them). The
//! binary is cached under `target/` by a hash of its source, so reruns skip the ~30 s build.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coordination::lock::Fence;
use coordination::registry::{Health, InstanceSpec, Registration};
use coordination::ErrorKind;
use etcd_client::TxnOp;
use serde_json::{json, Value};
use support::{read_prefix_raw, Etcd, Proc};

const PROBE_SOURCE: &str = include_str!("go/probe/main.go");
/// Where Debian puts Go library sources.
const GOCODE: &str = "/usr/share/gocode";
const GO_BUILD_LIMIT: Duration = Duration::from_secs(300);
const TTL: Duration = Duration::from_secs(10);

// ---- building and running the Go program ----

/// The built probe binary: `target/<profile>/go-interop/probe-<source hash>/probe`, built on
/// first use in this test binary and reused across runs while the source is unchanged.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(build_probe)
}

fn build_probe() -> PathBuf {
    // The test binary is target/<profile>/deps/go_interop-…; keep the cache beside deps/.
    let exe = std::env::current_exe().expect("current test binary");
    let root = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary inside target/<profile>/deps")
        .join("go-interop");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    PROBE_SOURCE.hash(&mut hasher);
    let dir = root.join(format!("probe-{:016x}", hasher.finish()));
    let binary = dir.join("probe");
    if binary.exists() {
        return binary;
    }
    std::fs::create_dir_all(&root).expect("create the Go build directory");
    let work = tempfile::tempdir_in(&root).expect("temp dir for the Go build");
    let src = work.path().join("gopath/src/probe");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.go"), PROBE_SOURCE).unwrap();
    let log_path = work.path().join("build.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let mut child = Command::new("go")
        .args(["build", "-o"])
        .arg(work.path().join("probe"))
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:{GOCODE}", work.path().join("gopath").display()),
        )
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOCACHE", root.join("cache"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `go` ({e}): install golang-go, golang-etcd-server-dev and \
                 golang-google-grpc-dev (scripts/lib.sh does)"
            )
        });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > GO_BUILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("go build of the probe took over {GO_BUILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "go build of tests/go/probe failed (are golang-etcd-server-dev and golang-google-grpc-dev \
         installed?):\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    eprintln!("built the Go probe in {:?}", started.elapsed());
    std::fs::create_dir_all(&dir).unwrap();
    // A concurrent build of the same source may have won; either binary is the same program.
    if std::fs::rename(work.path().join("probe"), &binary).is_err() {
        assert!(binary.exists(), "could not install the Go probe");
    }
    binary
}

/// Runs `probe <etcd endpoint> <args…>`; killed when dropped.
fn go(etcd: &Etcd, args: &[&str], label: &str) -> Proc {
    let mut cmd = Command::new(probe());
    cmd.arg(etcd.endpoint()).args(args);
    Proc::spawn(cmd, label)
}

/// The next `@@ {json}` line of a probe, which must be the event `kind`.
async fn event(proc: &mut Proc, kind: &str, limit: Duration) -> Value {
    let line = proc.tagged(limit).await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["event"], kind, "unexpected probe output {v}");
    v
}

/// As [`event`], `None` if nothing arrives within `limit`.
async fn try_event(proc: &mut Proc, limit: Duration) -> Option<Value> {
    let line = proc.try_tagged(limit).await?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}")))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

// ---- locks ----

#[tokio::test]
async fn go_mutex_holder_excludes_us_and_we_get_it_after() {
    probe();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut go_lock = go(&etcd, &["mutex", "jobs"], "go mutex");
    let locked = event(&mut go_lock, "locked", Duration::from_secs(10)).await;
    let go_key = locked["key"].as_str().unwrap().to_string();
    let go_token = int(&locked["create_revision"]);
    assert!(go_key.starts_with("jobs/"), "{go_key}");
    assert_eq!(
        int(&locked["header_revision"]),
        go_token,
        "uncontended: the Mutex's header revision is its key's create_revision"
    );

    assert!(coord.lock("jobs").try_acquire().await.unwrap().is_none());
    let status = coord.lock_status("jobs").await.unwrap();
    let holder = status.holder.expect("Go holds the lock");
    assert_eq!(holder.key, go_key);
    assert_eq!(holder.create_revision, go_token, "same fencing token");

    let waiter = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.lock("jobs").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "we wait while Go holds");

    go_lock.send("unlock");
    event(&mut go_lock, "unlocked", Duration::from_secs(5)).await;
    let guard = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("we get the lock once Go unlocks")
        .unwrap()
        .unwrap();
    assert!(guard.fencing_token() > go_token);
    let status = coord.lock_status("jobs").await.unwrap();
    assert_eq!(
        status.holder.unwrap().create_revision,
        guard.fencing_token()
    );
    assert!(go_lock.wait_exit(Duration::from_secs(5)).await.success());
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn our_holder_excludes_go_mutex_and_both_agree_on_its_token() {
    probe();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let guard = coord.lock("jobs").await.unwrap();
    let mut go_lock = go(&etcd, &["mutex", "jobs"], "go mutex");
    assert_eq!(
        try_event(&mut go_lock, Duration::from_millis(1500)).await,
        None,
        "Go waits while we hold"
    );
    let status = coord.lock_status("jobs").await.unwrap();
    assert_eq!(status.holder.unwrap().key, guard.key());
    assert_eq!(status.waiters.len(), 1, "Go queued behind us");
    let queued = status.waiters[0].clone();

    let our_token = guard.fencing_token();
    guard.unlock().await.unwrap();
    let locked = event(&mut go_lock, "locked", Duration::from_secs(5)).await;
    assert_eq!(locked["key"], queued.key.as_str());
    let go_token = int(&locked["create_revision"]);
    assert_eq!(
        go_token, queued.create_revision,
        "Go's key create_revision is the token we saw it queue with"
    );
    assert!(go_token > our_token);
    let header = int(&locked["header_revision"]);
    assert!(
        header > go_token,
        "a waiter's Mutex header revision ({header}) is not its token ({go_token})"
    );
    let status = coord.lock_status("jobs").await.unwrap();
    let holder = status.holder.unwrap();
    assert_eq!(
        (holder.key.as_str(), holder.create_revision),
        (queued.key.as_str(), go_token)
    );

    // Go still holds: we are excluded until it unlocks.
    assert!(coord.lock("jobs").try_acquire().await.unwrap().is_none());
    go_lock.send("unlock");
    event(&mut go_lock, "unlocked", Duration::from_secs(5)).await;
    let again = coord
        .lock("jobs")
        .with_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(again.fencing_token() > go_token);
    again.unlock().await.unwrap();
}

#[tokio::test]
async fn etcdctl_lock_waiter_gets_its_token_from_its_key_not_from_etcd_lock_rev() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let guard = coord.lock("fenced").await.unwrap();

    // What docs/lock-safety.md tells a child of `etcdctl lock` to do: read its key.
    let script = format!(
        r#"echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV $(etcdctl get "$ETCD_LOCK_KEY" -w json)"; while [ ! -e '{}' ]; do sleep 0.02; done"#,
        release.display()
    );
    // The endpoints go in the environment, so the child's etcdctl finds the same etcd (etcdctl
    // refuses a flag and its variable together).
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", etcd.endpoint())
        .args(["lock", "fenced", "--", "sh", "-c", &script]);
    let mut etcdctl = Proc::spawn(cmd, "etcdctl lock");
    assert_eq!(
        etcdctl.try_line(Duration::from_millis(1000)).await,
        None,
        "etcdctl waits while we hold"
    );
    let status = coord.lock_status("fenced").await.unwrap();
    assert_eq!(status.waiters.len(), 1);
    let queued = status.waiters[0].clone();

    // Writes while it waits move the revision on, as any busy cluster does.
    etcd.put("/unrelated/a", "1");
    etcd.put("/unrelated/b", "2");
    guard.unlock().await.unwrap();

    let line = etcdctl
        .try_line(Duration::from_secs(5))
        .await
        .expect("etcdctl gets the lock once we release");
    let mut parts = line.splitn(3, ' ');
    let (key, lock_rev, get) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().parse::<i64>().unwrap(),
        parts.next().expect("etcdctl get output"),
    );
    let get: Value = serde_json::from_str(get).unwrap_or_else(|e| panic!("{get}: {e}"));
    let child_token = int(&get["kvs"][0]["create_revision"]);

    let holder = coord.lock_status("fenced").await.unwrap().holder.unwrap();
    assert_eq!(holder.key, key);
    assert_eq!(
        child_token, holder.create_revision,
        "the child's real token is our view of its key's create_revision"
    );
    assert_eq!(child_token, queued.create_revision);
    assert!(
        lock_rev > child_token,
        "ETCD_LOCK_REV ({lock_rev}) is later than the waiter's token ({child_token})"
    );
    eprintln!("etcdctl lock waiter: ETCD_LOCK_REV {lock_rev}, create_revision {child_token}");

    // Fenced with the real token a write goes through; with ETCD_LOCK_REV it is refused.
    coord
        .kv_txn_fenced(Fence::new(key.as_str(), child_token))
        .and_then([TxnOp::put("/fenced/state", "by etcdctl's child", None)])
        .commit()
        .await
        .expect("fenced write with the real token");
    let err = coord
        .kv_txn_fenced(Fence::new(key.as_str(), lock_rev))
        .and_then([TxnOp::put("/fenced/state", "never", None)])
        .commit()
        .await
        .expect_err("ETCD_LOCK_REV does not fence");
    assert_eq!(err.kind(), ErrorKind::Conflict);

    std::fs::write(&release, "").unwrap();
    assert!(etcdctl.wait_exit(Duration::from_secs(5)).await.success());
}

// ---- elections ----

/// Our observer's next leader that satisfies `want`, within 5 s.
async fn observed(
    observer: &mut coordination::lock::Observer,
    want: impl Fn(&coordination::lock::LeaderInfo) -> bool,
) -> coordination::lock::LeaderInfo {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let leader = observer.next().await.expect("observer open");
            if want(&leader) {
                return leader;
            }
        }
    })
    .await
    .expect("our observer saw the leader")
}

#[tokio::test]
async fn go_observes_our_election_and_we_observe_go_campaigns() {
    probe();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let election = coord.election("leaders");
    let mut go_observer = go(&etcd, &["observe", "leaders"], "go observer");

    // Ours leads: Go's Observe reports our key, value and token, then our proclaim.
    let ours = election.campaign("rust-1").await.unwrap();
    let seen = event(&mut go_observer, "leader", Duration::from_secs(5)).await;
    assert_eq!(seen["key"], ours.key());
    assert_eq!(seen["value"], "rust-1");
    assert_eq!(int(&seen["create_revision"]), ours.fencing_token());
    ours.proclaim("rust-2").await.unwrap();
    let seen = event(&mut go_observer, "leader", Duration::from_secs(5)).await;
    assert_eq!(
        (seen["key"].as_str(), seen["value"].as_str()),
        (Some(ours.key()), Some("rust-2"))
    );

    // Go campaigns behind us, waits, and leads once we resign.
    let mut observer = election.observe().unwrap();
    observed(&mut observer, |l| l.value_str() == Some("rust-2")).await;
    let mut go_candidate = go(&etcd, &["campaign", "leaders", "go-1"], "go candidate");
    assert_eq!(
        try_event(&mut go_candidate, Duration::from_millis(1000)).await,
        None,
        "Go waits while we lead"
    );
    let our_token = ours.fencing_token();
    ours.resign().await.unwrap();
    let elected = event(&mut go_candidate, "elected", Duration::from_secs(5)).await;
    let go_key = elected["key"].as_str().unwrap().to_string();
    let go_token = int(&elected["create_revision"]);
    assert_eq!(
        int(&elected["rev"]),
        go_token,
        "Election.Rev() is the token"
    );
    assert!(go_token > our_token);

    let leader = observed(&mut observer, |l| l.key == go_key).await;
    assert_eq!(leader.value_str(), Some("go-1"));
    assert_eq!(leader.create_revision, go_token);
    assert_eq!(election.leader().await.unwrap().unwrap().key, go_key);
    let seen = event(&mut go_observer, "leader", Duration::from_secs(5)).await;
    assert_eq!(
        (seen["key"].as_str(), seen["value"].as_str()),
        (Some(go_key.as_str()), Some("go-1"))
    );

    go_candidate.send("proclaim go-2");
    event(&mut go_candidate, "proclaimed", Duration::from_secs(5)).await;
    let leader = observed(&mut observer, |l| l.value_str() == Some("go-2")).await;
    assert_eq!(leader.key, go_key);

    // We campaign behind Go and lead once it resigns.
    let ours_again = {
        let election = election.clone();
        tokio::spawn(async move { election.campaign("rust-3").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ours_again.is_finished(), "we wait while Go leads");
    go_candidate.send("resign");
    event(&mut go_candidate, "resigned", Duration::from_secs(5)).await;
    let ours_again = tokio::time::timeout(Duration::from_secs(5), ours_again)
        .await
        .expect("we lead once Go resigns")
        .unwrap()
        .unwrap();
    assert!(ours_again.fencing_token() > go_token);
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let seen = event(&mut go_observer, "leader", Duration::from_secs(5)).await;
            if seen["key"] == ours_again.key() {
                return seen;
            }
        }
    })
    .await
    .expect("Go observes our new leadership");
    assert_eq!(seen["value"], "rust-3");
    assert_eq!(int(&seen["create_revision"]), ours_again.fencing_token());
    ours_again.resign().await.unwrap();
}

// ---- registry ----

fn instance(service: &str, id: &str, addr: &str) -> InstanceSpec {
    InstanceSpec::new(service, id, addr)
        .with_zone("eu-1a")
        .with_version("1.4.2")
        .with_metadata(json!({"proto": "v2", "shard": 3}))
}

/// `resolver_target` without the `etcd:///` scheme: the key prefix Go's resolver reads.
fn go_target(target: &str) -> &str {
    target.strip_prefix("etcd:///").expect("an etcd:/// target")
}

#[tokio::test]
async fn go_endpoints_manager_lists_our_registrations() {
    probe();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let target = registry.resolver_target("chat");
    assert_eq!(target, "etcd:////services/chat/");
    let mut regs: Vec<Registration> = Vec::new();
    for (service, id, addr) in [
        ("chat", "chat-1", "127.0.0.1:7001"),
        ("chat", "chat-2", "127.0.0.1:7002"),
        ("chat", "chat-3", "127.0.0.1:7003"),
        ("chatty", "chatty-1", "127.0.0.1:7101"),
    ] {
        let reg = registry
            .register(instance(service, id, addr))
            .with_lease_ttl(TTL);
        regs.push(reg.await.unwrap());
    }
    regs[2].set_health(Health::Draining).await.unwrap();
    let endpoint = |addr: &str| json!({"Addr": addr, "Metadata": null});

    let mut go_em = go(&etcd, &["endpoints"], "go endpoints");
    go_em.send(&format!("list {}", go_target(&target)));
    let list = event(&mut go_em, "list", Duration::from_secs(10)).await;
    assert_eq!(
        list["endpoints"],
        json!({
            "/services/chat/chat-1": endpoint("127.0.0.1:7001"),
            "/services/chat/chat-2": endpoint("127.0.0.1:7002"),
        }),
        "exactly the serving instances of chat, addresses only"
    );

    // Without the trailing `/` Go reads a plain prefix: chatty's instances come along.
    go_em.send("list /services/chat");
    let list = event(&mut go_em, "list", Duration::from_secs(10)).await;
    let keys: Vec<&String> = list["endpoints"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "/services/chat/chat-1",
            "/services/chat/chat-2",
            "/services/chatty/chatty-1"
        ]
    );

    // An endpoint a Go service adds for the same address is byte-identical to ours.
    go_em.send("add /services/chat /services/chat/go-1 127.0.0.1:7001");
    event(&mut go_em, "added", Duration::from_secs(10)).await;
    let raw: BTreeMap<String, String> = read_prefix_raw(&etcd, "/services/chat/")
        .await
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(raw["/services/chat/go-1"], raw["/services/chat/chat-1"]);
}

/// The set of instances that answered `n` calls of a grpc-go client (panics on call errors).
async fn calls(client: &mut Proc, n: usize) -> BTreeMap<String, i64> {
    client.send(&format!("calls {n}"));
    let out = event(client, "calls", Duration::from_secs(30)).await;
    assert_eq!(out["errors"], json!({}), "calls failed: {out}");
    out["hits"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), int(v)))
        .collect()
}

/// Repeats `calls(n)` until `want` holds for the instances that answered (at most 10 s).
async fn calls_until(
    client: &mut Proc,
    n: usize,
    what: &str,
    want: impl Fn(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hit: BTreeSet<String> = calls(client, n).await.into_keys().collect();
        assert!(!hit.contains("chatty-1"), "a chat client reached chatty");
        if want(&hit) {
            return hit;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last calls reached {hit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Starts gRPC servers for `ids` (one Go process) and returns it with their addresses.
async fn grpc_servers(etcd: &Etcd, ids: &[&str]) -> (Proc, BTreeMap<String, String>) {
    let mut args = vec!["serve"];
    args.extend_from_slice(ids);
    let mut servers = go(etcd, &args, "go grpc servers");
    let serving = event(&mut servers, "serving", Duration::from_secs(10)).await;
    let addrs = serving["addrs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (servers, addrs)
}

#[tokio::test]
async fn grpc_go_pick_first_and_round_robin_reach_every_registered_instance() {
    probe();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let (_servers, addrs) = grpc_servers(&etcd, &["chat-1", "chat-2", "chat-3", "chatty-1"]).await;
    let mut regs = BTreeMap::new();
    for (id, addr) in &addrs {
        let service = id.split('-').next().unwrap();
        let reg = registry
            .register(instance(service, id, addr))
            .with_lease_ttl(TTL)
            .await
            .unwrap();
        regs.insert(id.clone(), reg);
    }
    let all = set(&["chat-1", "chat-2", "chat-3"]);
    let target = registry.resolver_target("chat");

    // round_robin: every instance answers, a draining one stops answering and comes back.
    let mut rr = go(&etcd, &["client", &target, "round_robin"], "go round_robin");
    event(&mut rr, "dialed", Duration::from_secs(10)).await;
    calls_until(&mut rr, 30, "round_robin reaches all", |hit| *hit == all).await;
    regs["chat-2"].set_health(Health::Draining).await.unwrap();
    calls_until(&mut rr, 30, "round_robin leaves chat-2", |hit| {
        *hit == set(&["chat-1", "chat-3"])
    })
    .await;
    regs["chat-2"].set_health(Health::Healthy).await.unwrap();
    calls_until(&mut rr, 30, "round_robin gets chat-2 back", |hit| {
        *hit == all
    })
    .await;
    let spread = calls(&mut rr, 30).await;
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "round_robin spreads evenly"
    );

    // pick_first: one instance at a time; draining it moves the client on, until every
    // instance has served it.
    let mut pf = go(&etcd, &["client", &target, "pick_first"], "go pick_first");
    event(&mut pf, "dialed", Duration::from_secs(10)).await;
    let mut served = BTreeSet::new();
    let mut drained = Vec::new();
    loop {
        let hit = calls_until(
            &mut pf,
            5,
            "pick_first settles on one new instance",
            |hit| hit.len() == 1 && !served.contains(hit.first().unwrap()),
        )
        .await;
        let id = hit.into_iter().next().unwrap();
        assert!(all.contains(&id), "{id} is not a chat instance");
        served.insert(id.clone());
        if served.len() == all.len() {
            break;
        }
        regs[&id].set_health(Health::Draining).await.unwrap();
        drained.push(id);
    }
    assert_eq!(served, all);
    for id in drained {
        regs[&id].set_health(Health::Healthy).await.unwrap();
    }
    // Both clients are still alive and answering: no balancer choked on our resolver values.
    calls_until(&mut rr, 30, "round_robin after the churn", |hit| {
        *hit == all
    })
    .await;
    assert_eq!(calls(&mut pf, 5).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_metadata_panics_grpc_go_round_robin() {
    // Why the resolver value carries no metadata: the format this crate used to write (our
    // fields as a JSON object in `Metadata`) crashes a Go client using round_robin.
    probe();
    let etcd = Etcd::start().await;
    let (_servers, addrs) = grpc_servers(&etcd, &["legacy-1"]).await;
    etcd.put(
        "/services/legacy/legacy-1",
        &json!({"Op": 0, "Addr": addrs["legacy-1"], "Metadata": {"id": "legacy-1", "weight": 100}})
            .to_string(),
    );
    let run = |policy: &str| {
        let mut child = Command::new(probe())
            .args([
                &etcd.endpoint(),
                "client",
                "etcd:////services/legacy/",
                policy,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        // Three calls (2 s limit each), then end of input: the client exits by itself.
        writeln!(child.stdin.take().unwrap(), "calls 3").unwrap();
        child.wait_with_output().unwrap()
    };
    let rr = tokio::task::block_in_place(|| run("round_robin"));
    let stderr = String::from_utf8_lossy(&rr.stderr);
    assert!(!rr.status.success(), "round_robin survived an object");
    assert!(
        stderr.contains("hash of unhashable type map[string]interface {}"),
        "{stderr}"
    );
    let pf = tokio::task::block_in_place(|| run("pick_first"));
    assert!(
        pf.status.success(),
        "{}",
        String::from_utf8_lossy(&pf.stderr)
    );
    assert!(String::from_utf8_lossy(&pf.stdout).contains(r#""hits":{"legacy-1":3}"#));
}
