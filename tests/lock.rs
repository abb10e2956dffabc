//! Distributed lock against a real etcd: mutual exclusion across OS processes with fenced
//! writes, FIFO, interop with `etcdctl lock`, process pauses past the TTL, etcd restarts,
//! cleanup of waiter keys, re-entrancy and administration, and the session's lease contract
//! (kept through a restart, lost when cut off longer than its TTL). Multi-process tests re-run this
//! binary as workers (the `worker` test, which does nothing unless `COORD_LOCK_ROLE` is set).

#[macro_use]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordination::lock::{LockGuard, LostReason, Session, SessionOptions};
use coordination::{Coordinator, CoordinatorOptions, ErrorKind};
use etcd_client::TxnOp;
use support::proxy::Proxy;
use support::{Etcd, Proc};

const ROLE: &str = "COORD_LOCK_ROLE";
const ENDPOINT: &str = "COORD_LOCK_ENDPOINT";
const NAME: &str = "COORD_LOCK_NAME";

const COUNTER: &str = "/jobs/counter";
const STALE: &str = "/jobs/stale";

/// Worker entry point: a no-op in a normal test run; in a child process started by another
/// test it plays the role named by `COORD_LOCK_ROLE`.
#[tokio::test]
async fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let endpoint = std::env::var(ENDPOINT).expect("endpoint");
    let name = std::env::var(NAME).expect("lock name");
    let coord = Coordinator::connect(CoordinatorOptions::new([endpoint]))
        .await
        .expect("worker connect");
    match role.as_str() {
        "counter" => counter_worker(&coord, &name).await,
        "paused-holder" => paused_holder_worker(&coord, &name).await,
        other => panic!("unknown role {other}"),
    }
}

/// Increments `COUNTER` `COORD_LOCK_ITER` times, each time under the lock with a fenced
/// read-modify-write, then tries a write with the fence of the tenure it just ended.
async fn counter_worker(coord: &Coordinator, name: &str) {
    let iterations: usize = std::env::var("COORD_LOCK_ITER").unwrap().parse().unwrap();
    let shared_session = std::env::var("COORD_LOCK_MODE").unwrap() == "session";
    let session = if shared_session {
        Some(
            Session::open(
                coord,
                SessionOptions::new().with_lease_ttl(Duration::from_secs(10)),
            )
            .await
            .unwrap(),
        )
    } else {
        None
    };
    let mut client = coord.client();
    let (mut committed, mut rejected, mut stale_committed, mut stale_rejected) = (0, 0, 0, 0);
    let mut last_token = 0;
    let mut tokens_increase = true;
    for _ in 0..iterations {
        let guard = match &session {
            Some(session) => session.lock(name).await,
            None => coord.lock(name).await,
        }
        .expect("acquire");
        tokens_increase &= guard.fencing_token() > last_token;
        last_token = guard.fencing_token();
        let current = client.get(COUNTER, None).await.unwrap();
        let value: i64 = current
            .kvs()
            .first()
            .map_or(0, |kv| kv.value_str().unwrap().parse().unwrap());
        let write = coord
            .kv_txn_fenced(&guard)
            .and_then([TxnOp::put(COUNTER, (value + 1).to_string(), None)])
            .commit()
            .await;
        match write {
            Ok(_) => committed += 1,
            Err(e) => {
                eprintln!("holder's fenced write failed: {e}");
                rejected += 1;
            }
        }
        let fence = guard.fence();
        guard.unlock().await.expect("unlock");
        // The tenure is over: its fence must not let anything through any more.
        match coord
            .kv_txn_fenced(fence)
            .and_then([TxnOp::put(STALE, "written by a former holder", None)])
            .commit()
            .await
        {
            Ok(_) => stale_committed += 1,
            Err(e) if e.kind() == ErrorKind::Conflict => stale_rejected += 1,
            Err(e) => panic!("stale fenced write failed with {e}"),
        }
    }
    println!("@@ done {committed} {rejected} {stale_committed} {stale_rejected} {tokens_increase}");
}

/// Takes the lock with a 3 s TTL, reports it, then (after being stopped and resumed by the
/// test) reports whether it noticed the loss and whether its fenced write got through.
async fn paused_holder_worker(coord: &Coordinator, name: &str) {
    let guard = coord
        .lock(name)
        .with_lease_ttl(Duration::from_secs(3))
        .await
        .unwrap();
    println!("@@ held {} {}", guard.key(), guard.fencing_token());
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(line.trim(), "check");
    // Checked before anything else runs: the deadline alone says the lock is lost.
    let lost_at_once = guard.is_lost();
    let reason = tokio::time::timeout(Duration::from_secs(1), guard.lost())
        .await
        .ok();
    let write = coord
        .kv_txn_fenced(&guard)
        .and_then([TxnOp::put(COUNTER, "paused holder", None)])
        .commit()
        .await;
    let outcome = match write {
        Ok(_) => "committed".to_string(),
        Err(e) => format!("{:?}", e.kind()),
    };
    println!("@@ resumed {lost_at_once} {reason:?} {outcome}");
}

async fn get_value(etcd: &Etcd, key: &str) -> Option<String> {
    let mut client = etcd.client().await;
    let resp = client.get(key, None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_string())
}

async fn count_prefix(etcd: &Etcd, prefix: &str) -> usize {
    let mut client = etcd.client().await;
    let resp = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs().len()
}

async fn wait_for_waiters(coord: &Coordinator, name: &str, n: usize) {
    let queued = eventually!(Duration::from_secs(5), {
        coord.lock_status(name).await.unwrap().waiters.len() == n
    });
    assert!(queued, "{n} waiters queued on `{name}`");
}

async fn wait_for_keys(etcd: &Etcd, prefix: &str, n: usize) {
    let done = eventually!(Duration::from_secs(5), {
        count_prefix(etcd, prefix).await == n
    });
    assert!(done, "{n} keys under `{prefix}`");
}

#[tokio::test]
async fn four_processes_increment_a_fenced_counter_exactly() {
    let etcd = Etcd::start().await;
    let name = "jobs/counter-lock";
    let mut workers: Vec<Proc> = (0..4)
        .map(|i| {
            let mode = if i % 2 == 0 {
                "session"
            } else {
                "lease-per-lock"
            };
            Proc::worker(
                "worker",
                &[
                    (ROLE, "counter".into()),
                    (ENDPOINT, etcd.endpoint()),
                    (NAME, name.into()),
                    ("COORD_LOCK_ITER", "200".into()),
                    ("COORD_LOCK_MODE", mode.into()),
                ],
                &format!("counter worker {i} ({mode})"),
            )
        })
        .collect();
    for (i, worker) in workers.iter_mut().enumerate() {
        let line = worker.tagged(Duration::from_secs(150)).await;
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields,
            ["done", "200", "0", "0", "200", "true"],
            "worker {i}: every fenced write by the holder commits, none by a former holder, \
             tokens increase"
        );
    }
    assert_eq!(get_value(&etcd, COUNTER).await.as_deref(), Some("800"));
    assert_eq!(get_value(&etcd, STALE).await, None);
    assert_eq!(count_prefix(&etcd, "jobs/counter-lock/").await, 0);
}

#[tokio::test]
async fn waiters_acquire_in_arrival_order_with_increasing_tokens() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let holder = coord.lock("fifo").await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (waiter, order) = (coord.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = waiter.lock("fifo").await.unwrap();
            order.lock().unwrap().push((i, guard.fencing_token()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            guard.unlock().await.unwrap();
        }));
        wait_for_waiters(&coord, "fifo", i + 1).await;
    }
    let status = coord.lock_status("fifo").await.unwrap();
    assert_eq!(status.holder.as_ref().unwrap().key, holder.key());
    let holder_token = holder.fencing_token();
    holder.unlock().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let arrivals: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(arrivals, vec![0, 1, 2, 3, 4]);
    let mut last = holder_token;
    for (_, token) in order {
        assert!(token > last, "tokens strictly increase");
        last = token;
    }
}

/// `etcdctl lock NAME -- sh -c 'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV"; …'`: prints the key and
/// revision once it holds the lock, then (with `release_when`) holds until that file exists
/// (etcdctl gives the command no stdin).
fn etcdctl_lock(etcd: &Etcd, name: &str, release_when: Option<&std::path::Path>) -> Proc {
    let mut script = r#"echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV""#.to_string();
    if let Some(path) = release_when {
        script += &format!("; while [ ! -e '{}' ]; do sleep 0.02; done", path.display());
    }
    Proc::spawn(
        etcd.etcdctl_command(&["lock", name, "--", "sh", "-c", &script]),
        "etcdctl lock",
    )
}

#[tokio::test]
async fn etcdctl_holder_excludes_us_and_we_get_it_after() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let mut etcdctl = etcdctl_lock(&etcd, "interop", Some(&release));
    let line = etcdctl
        .try_line(Duration::from_secs(10))
        .await
        .expect("etcdctl got the lock");
    let (etcdctl_key, etcdctl_rev) = line.split_once(' ').unwrap();
    let etcdctl_rev: i64 = etcdctl_rev.parse().unwrap();
    assert!(etcdctl_key.starts_with("interop/"));

    assert!(coord.lock("interop").try_acquire().await.unwrap().is_none());
    let status = coord.lock_status("interop").await.unwrap();
    let holder = status.holder.unwrap();
    assert_eq!(holder.key, etcdctl_key);
    assert_eq!(
        holder.create_revision, etcdctl_rev,
        "a holder that found the lock free: ETCD_LOCK_REV equals its key's create_revision"
    );
    assert!(status.waiters.is_empty(), "try_acquire left no key");

    let waiter = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.lock("interop").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "we wait while etcdctl holds");

    std::fs::write(&release, "").unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("we get the lock once etcdctl releases")
        .unwrap()
        .unwrap();
    assert!(guard.fencing_token() > etcdctl_rev);
    assert!(etcdctl.wait_exit(Duration::from_secs(5)).await.success());
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn our_holder_excludes_etcdctl_and_it_gets_it_after() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let guard = coord.lock("interop").await.unwrap();
    let mut etcdctl = etcdctl_lock(&etcd, "interop", None);
    assert_eq!(
        etcdctl.try_line(Duration::from_millis(1500)).await,
        None,
        "etcdctl waits while we hold"
    );
    let status = coord.lock_status("interop").await.unwrap();
    assert_eq!(status.holder.unwrap().key, guard.key());
    assert_eq!(status.waiters.len(), 1, "etcdctl queued behind us");
    let token = guard.fencing_token();
    guard.unlock().await.unwrap();
    let line = etcdctl
        .try_line(Duration::from_secs(5))
        .await
        .expect("etcdctl gets the lock once we release");
    let (key, rev) = line.split_once(' ').unwrap();
    assert!(key.starts_with("interop/"));
    assert!(rev.parse::<i64>().unwrap() > token);
    assert!(etcdctl.wait_exit(Duration::from_secs(5)).await.success());
}

#[tokio::test]
async fn paused_holder_loses_the_lock_and_its_fenced_write_is_rejected() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut holder = Proc::worker(
        "worker",
        &[
            (ROLE, "paused-holder".into()),
            (ENDPOINT, etcd.endpoint()),
            (NAME, "paused".into()),
        ],
        "paused holder",
    );
    let line = holder.tagged(Duration::from_secs(20)).await;
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "held");
    let first_token: i64 = fields[2].parse().unwrap();

    holder.signal("STOP");
    let stopped = Instant::now();
    let guard = coord
        .lock("paused")
        .with_timeout(Duration::from_secs(20))
        .await
        .expect("the lock is free once the paused holder's lease expires");
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "we got it by lease expiry, not earlier"
    );
    assert!(guard.fencing_token() > first_token);
    coord
        .kv_txn_fenced(&guard)
        .and_then([TxnOp::put(COUNTER, "new holder", None)])
        .commit()
        .await
        .expect("the new holder's fenced write commits");

    holder.signal("CONT");
    holder.send("check");
    let line = holder.tagged(Duration::from_secs(10)).await;
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "resumed");
    assert_eq!(
        fields[1], "true",
        "lost() had fired when the holder resumed"
    );
    assert!(fields[2].starts_with("Some("), "lost() resolved: {line}");
    assert_eq!(
        fields[3], "Conflict",
        "the former holder's fenced write is rejected"
    );
    assert_eq!(
        get_value(&etcd, COUNTER).await.as_deref(),
        Some("new holder")
    );
    assert!(!guard.is_lost());
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn etcd_restart_keeps_one_holder_and_waiters_still_acquire() {
    let mut etcd = Etcd::start().await;
    let a = etcd.coordinator().await;
    let holders = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));

    let first = a.lock("restart").await.unwrap();
    holders.fetch_add(1, Ordering::SeqCst);
    assert!(!first.is_lost()); // starts the key watch, which must survive the restart

    let mut waiters = Vec::new();
    for i in 0..2 {
        let coord = etcd.coordinator().await;
        let (holders, overlaps) = (holders.clone(), overlaps.clone());
        waiters.push(tokio::spawn(async move {
            let guard = coord.lock("restart").await.unwrap();
            if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let token = guard.fencing_token();
            coord
                .kv_txn_fenced(&guard)
                .and_then([TxnOp::put(COUNTER, format!("waiter {i}"), None)])
                .commit()
                .await
                .expect("fenced write of the new holder");
            tokio::time::sleep(Duration::from_millis(100)).await;
            holders.fetch_sub(1, Ordering::SeqCst);
            guard.unlock().await.unwrap();
            token
        }));
        wait_for_waiters(&a, "restart", i + 1).await;
    }

    etcd.restart().await;

    // The holder's lease survived (keepalive re-opened) and nobody else got the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!first.is_lost(), "holder kept the lock through the restart");
    tokio::select! {
        reason = first.lost() => panic!("holder lost the lock: {reason}"),
        () = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    assert!(waiters.iter().all(|w| !w.is_finished()));
    let status = a.lock_status("restart").await.unwrap();
    assert_eq!(status.holder.unwrap().key, first.key());
    assert_eq!(status.waiters.len(), 2);
    a.kv_txn_fenced(&first)
        .and_then([TxnOp::put(COUNTER, "first", None)])
        .commit()
        .await
        .expect("holder's fenced write after the restart");

    let first_token = first.fencing_token();
    holders.fetch_sub(1, Ordering::SeqCst);
    first.unlock().await.unwrap();
    let mut last = first_token;
    for waiter in waiters {
        let token = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("waiter acquires after the restart")
            .unwrap();
        assert!(token > last, "waiters acquire in order");
        last = token;
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "never two holders");
    assert_eq!(get_value(&etcd, COUNTER).await.as_deref(), Some("waiter 1"));
}

#[tokio::test]
async fn try_acquire_and_timeouts_leave_no_waiter_key_and_drop_frees_fast() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let holder = coord.lock("cleanup").await.unwrap();
    let session = coord
        .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(10)))
        .await
        .unwrap();

    assert!(coord.lock("cleanup").try_acquire().await.unwrap().is_none());
    assert!(session
        .lock("cleanup")
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        count_prefix(&etcd, "cleanup/").await,
        1,
        "only the holder's key"
    );

    for builder in [coord.lock("cleanup"), session.lock("cleanup")] {
        let started = Instant::now();
        let err = builder
            .with_timeout(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            count_prefix(&etcd, "cleanup/").await,
            1,
            "waiter key removed"
        );
    }
    assert!(!session.is_lost(), "the shared session is still usable");

    // An acquisition abandoned mid-wait removes its key in the background.
    let abandoned = tokio::time::timeout(Duration::from_millis(300), session.lock("cleanup")).await;
    assert!(abandoned.is_err());
    wait_for_keys(&etcd, "cleanup/", 1).await;

    // Dropping the holder frees the lock in about one round trip, not a TTL.
    let waiter = {
        let session = session.clone();
        tokio::spawn(async move { session.lock("cleanup").await.unwrap() })
    };
    wait_for_keys(&etcd, "cleanup/", 2).await;
    let holder_lease = holder.lease_id();
    let dropped = Instant::now();
    drop(holder);
    let guard = waiter.await.unwrap();
    let took = dropped.elapsed();
    assert!(took < Duration::from_secs(1), "freed in {took:?}");
    // The lock's own lease was revoked, not left to expire.
    let mut client = etcd.client().await;
    let ttl = client
        .lease_time_to_live(holder_lease, None)
        .await
        .unwrap()
        .ttl();
    assert_eq!(ttl, -1, "dropped guard's lease revoked");
    guard.unlock().await.unwrap();
    assert_eq!(count_prefix(&etcd, "cleanup/").await, 0);
}

#[tokio::test]
async fn same_session_reacquires_with_the_same_key_and_token() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let session = coord
        .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let outer = session.lock("reentrant").await.unwrap();
    let inner = session
        .lock("reentrant")
        .try_acquire()
        .await
        .unwrap()
        .expect("re-entrant");
    assert_eq!(inner.key(), outer.key());
    assert_eq!(inner.fencing_token(), outer.fencing_token());
    assert!(coord
        .lock("reentrant")
        .try_acquire()
        .await
        .unwrap()
        .is_none());

    inner.unlock().await.unwrap();
    let status = coord.lock_status("reentrant").await.unwrap();
    assert_eq!(
        status.holder.unwrap().key,
        outer.key(),
        "still held after the inner unlock"
    );
    coord
        .kv_txn_fenced(&outer)
        .and_then([TxnOp::put(COUNTER, "outer", None)])
        .commit()
        .await
        .unwrap();

    outer.unlock().await.unwrap();
    let other = coord.lock("reentrant").try_acquire().await.unwrap();
    assert!(other.is_some(), "free after the last unlock");
}

/// An `unlock()` or `resign()` whose future is dropped before etcd answered still releases:
/// the release runs in a task of its own, so the key does not stay behind on a session that
/// lives on (which would hold the lock until the session closes).
#[tokio::test]
async fn an_unlock_or_resign_dropped_midway_still_releases() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let session = coord.session(SessionOptions::new()).await.unwrap();

    let guard = session.lock("dropped-unlock").await.unwrap();
    // Poll the unlock once (it sends nothing before its first poll), then drop it.
    let _ = tokio::time::timeout(Duration::ZERO, guard.unlock()).await;
    wait_for_keys(&etcd, "dropped-unlock/", 0).await;
    let other = coord
        .lock("dropped-unlock")
        .try_acquire()
        .await
        .unwrap()
        .expect("free after the dropped unlock");
    other.unlock().await.unwrap();

    let leadership = session
        .election("dropped-resign")
        .campaign("a")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::ZERO, leadership.resign()).await;
    wait_for_keys(&etcd, "dropped-resign/", 0).await;
    assert_eq!(
        coord.election("dropped-resign").leader().await.unwrap(),
        None
    );
    assert!(!session.is_lost(), "the session lives on");
    assert!(session.remaining_ttl().await.unwrap() > Duration::ZERO);
}

#[tokio::test]
async fn admin_lists_queue_and_force_release_fires_lost() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let holder = coord
        .lock("admin")
        .with_lease_ttl(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!holder.is_lost());
    let remaining = holder.remaining_ttl().await.unwrap();
    assert!(remaining > Duration::from_secs(5) && remaining <= Duration::from_secs(10));
    let before = holder.valid_until();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(holder.renew().await.unwrap(), Duration::from_secs(10));
    assert!(holder.valid_until() > before, "renew moves the deadline");

    let waiter = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.lock("admin").await.unwrap() })
    };
    wait_for_waiters(&coord, "admin", 1).await;
    let status = coord.lock_status("admin").await.unwrap();
    let top = status.holder.clone().unwrap();
    assert_eq!(top.key, holder.key());
    assert_eq!(top.lease, holder.lease_id());
    assert_eq!(top.create_revision, holder.fencing_token());
    assert!(top.remaining_ttl.unwrap() > Duration::from_secs(5));
    assert!(status.waiters[0].create_revision > top.create_revision);
    assert_eq!(status.prefix, "admin/");

    let released = coord.force_unlock("admin").await.unwrap().unwrap();
    assert_eq!(released.key, holder.key());
    let reason = tokio::time::timeout(Duration::from_secs(5), holder.lost())
        .await
        .expect("lost() fires after force-release");
    assert_eq!(reason, LostReason::KeyDeleted);
    let err = coord
        .kv_txn_fenced(&holder)
        .and_then([TxnOp::put(COUNTER, "after force-release", None)])
        .commit()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let next = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(next.fencing_token() > holder.fencing_token());
    holder.unlock().await.unwrap(); // releasing a lost guard is harmless
    assert_eq!(
        coord
            .lock_status("admin")
            .await
            .unwrap()
            .holder
            .unwrap()
            .key,
        next.key()
    );

    // Revoking the holder's lease from outside also fires lost().
    let lease = format!("{:x}", next.lease_id());
    etcd.etcdctl(&["lease", "revoke", &lease]);
    let reason = tokio::time::timeout(Duration::from_secs(5), next.lost())
        .await
        .expect("lost() fires after the lease is revoked");
    assert!(
        matches!(reason, LostReason::LeaseExpired | LostReason::KeyDeleted),
        "{reason:?}"
    );
    drop(next);
    assert_eq!(coord.force_unlock("admin").await.unwrap(), None);
    assert_eq!(
        coord.lock("").try_acquire().await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[tokio::test]
async fn fenced_txn_runs_own_compares_only_while_the_lock_holds() {
    use etcd_client::{Compare, CompareOp, Txn, TxnOpResponse};
    const STATE: &str = "/jobs/state";
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    etcd.put(STATE, "idle");
    let guard = coord.lock("fenced").await.unwrap();
    let start = || {
        coord
            .kv_txn_fenced(&guard)
            .when([Compare::value(STATE, CompareOp::Equal, "idle")])
            .and_then([TxnOp::put(STATE, "running", None)])
            .or_else([TxnOp::get(STATE, None)])
    };
    let first = start().commit().await.unwrap();
    assert!(first.succeeded());
    assert_eq!(get_value(&etcd, STATE).await.as_deref(), Some("running"));
    let second = start().commit().await.unwrap();
    assert!(!second.succeeded(), "own compare failed, inside the fence");
    match &second.op_responses()[..] {
        [TxnOpResponse::Get(get)] => assert_eq!(get.kvs()[0].value(), b"running"),
        other => panic!("expected the or_else get, got {other:?}"),
    }

    // The fence's compare in a hand-made transaction.
    let mut client = coord.client();
    let txn = Txn::new()
        .when([guard.fence().compare()])
        .and_then([TxnOp::put(STATE, "by hand", None)]);
    assert!(client.txn(txn.clone()).await.unwrap().succeeded());

    let fence = guard.fence();
    guard.unlock().await.unwrap();
    assert!(!client.txn(txn).await.unwrap().succeeded());
    etcd.put(STATE, "idle");
    let err = coord
        .kv_txn_fenced(fence)
        .when([Compare::value(STATE, CompareOp::Equal, "idle")])
        .and_then([TxnOp::put(STATE, "running", None)])
        .or_else([TxnOp::put(STATE, "or-else ran", None)])
        .commit()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        get_value(&etcd, STATE).await.as_deref(),
        Some("idle"),
        "neither branch ran"
    );
}

#[tokio::test]
async fn namespaced_locks_live_under_the_namespace() {
    let etcd = Etcd::start().await;
    let plain = etcd.coordinator().await;
    let tenant =
        Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_namespace("/tenant"))
            .await
            .unwrap();
    let guard = tenant.lock("jobs/x").await.unwrap();
    assert!(
        guard.key().starts_with("/tenant/jobs/x/"),
        "{}",
        guard.key()
    );
    assert!(plain
        .lock("/tenant/jobs/x")
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert!(plain.lock("jobs/x").try_acquire().await.unwrap().is_some());
    let status = plain.lock_status("/tenant/jobs/x").await.unwrap();
    assert_eq!(status.holder.unwrap().key, guard.key());
}

/// `LockGuard` is usable across tasks.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<LockGuard>();
    is::<Session>();
}

/// Whether `key` exists (a raw etcd read).
async fn key_exists(etcd: &Etcd, key: &str) -> bool {
    let mut client = etcd.client().await;
    !client.get(key, None).await.unwrap().kvs().is_empty()
}

/// `jobs` and the nested `jobs/rebalance` and `jobs/backfill` (whose first letter is a hex
/// digit) are different locks: each is acquired while the others are held, the queue of `jobs`
/// lists only its own keys, and force-releasing `jobs` never hits a nested lock's holder.
#[tokio::test]
async fn nested_lock_names_do_not_act_on_each_other() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let rebalance = coord
        .lock("jobs/rebalance")
        .with_timeout(Duration::from_secs(3))
        .await
        .expect("jobs/rebalance is free");
    let backfill = coord
        .lock("jobs/backfill")
        .with_timeout(Duration::from_secs(3))
        .await
        .expect("jobs/backfill is free");
    // Both nested keys are older than any key of `jobs`: a prefix rule would queue behind them.
    let jobs = coord
        .lock("jobs")
        .try_acquire()
        .await
        .unwrap()
        .expect("`jobs` is free although nested locks are held");
    let jobs_timed = coord
        .lock("jobs")
        .with_timeout(Duration::from_millis(300))
        .await;
    assert_eq!(
        jobs_timed.unwrap_err().kind(),
        ErrorKind::Timeout,
        "`jobs` itself still excludes"
    );
    let nested_after = coord
        .lock("jobs/rebalance/eu")
        .with_timeout(Duration::from_secs(3))
        .await
        .expect("a lock nested under a held nested lock is free");
    assert_eq!(count_prefix(&etcd, "jobs/").await, 4);

    let status = coord.lock_status("jobs").await.unwrap();
    assert_eq!(status.holder.as_ref().unwrap().key, jobs.key());
    assert!(status.waiters.is_empty(), "{:?}", status.waiters);
    let status = coord.lock_status("jobs/rebalance").await.unwrap();
    assert_eq!(status.holder.as_ref().unwrap().key, rebalance.key());
    assert!(status.waiters.is_empty(), "{:?}", status.waiters);

    // A waiter on `jobs` queues behind `jobs`'s holder only.
    let waiter = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.lock("jobs").await.unwrap() })
    };
    wait_for_waiters(&coord, "jobs", 1).await;
    let status = coord.lock_status("jobs").await.unwrap();
    let listed: Vec<&str> = status
        .holder
        .iter()
        .chain(&status.waiters)
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], jobs.key());
    for key in &listed {
        let child = key.strip_prefix("jobs/").unwrap();
        assert!(
            !child.contains('/'),
            "only direct children listed: {listed:?}"
        );
    }

    let released = coord.force_unlock("jobs").await.unwrap().unwrap();
    assert_eq!(released.key, jobs.key());
    assert_eq!(released.create_revision, jobs.fencing_token());
    let next = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter of `jobs` gets it")
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), jobs.lost())
            .await
            .unwrap(),
        LostReason::KeyDeleted
    );
    let released = coord.force_unlock("jobs").await.unwrap().unwrap();
    assert_eq!(released.key, next.key());
    assert_eq!(
        coord.force_unlock("jobs").await.unwrap(),
        None,
        "`jobs` is free; nested holders are not its holders"
    );
    for guard in [&rebalance, &backfill, &nested_after] {
        assert!(key_exists(&etcd, guard.key()).await, "{} kept", guard.key());
        assert!(!guard.is_lost(), "{} still held", guard.key());
    }
    assert!(coord.lock_status("jobs").await.unwrap().holder.is_none());
    rebalance.unlock().await.unwrap();
    backfill.unlock().await.unwrap();
    nested_after.unlock().await.unwrap();
}

/// The `coordctl lock release jobs` binary releases `jobs`'s holder and leaves the older
/// holder of `jobs/rebalance` alone.
#[cfg(feature = "cli")]
#[tokio::test]
async fn coordctl_release_leaves_nested_locks_held() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let rebalance = coord.lock("jobs/rebalance").await.unwrap();
    let jobs = coord
        .lock("jobs")
        .with_timeout(Duration::from_secs(3))
        .await
        .unwrap();
    let coordctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coordctl"))
            .arg("--endpoints")
            .arg(etcd.endpoint())
            .args(args)
            .env_remove("ETCD_ENDPOINTS")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run coordctl");
        assert!(
            out.status.success(),
            "coordctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = coordctl(&["lock", "ls", "jobs"]);
    assert!(listed.contains(jobs.key()), "{listed}");
    assert!(!listed.contains(rebalance.key()), "{listed}");

    let out = coordctl(&["lock", "release", "jobs"]);
    assert!(out.contains(jobs.key()), "{out}");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), jobs.lost())
            .await
            .unwrap(),
        LostReason::KeyDeleted
    );
    assert!(key_exists(&etcd, rebalance.key()).await);
    assert!(!rebalance.is_lost());
    let out = coordctl(&["lock", "release", "jobs"]);
    assert!(out.contains("nothing to release"), "{out}");
    assert!(key_exists(&etcd, rebalance.key()).await);
    let status = coord.lock_status("jobs/rebalance").await.unwrap();
    assert_eq!(status.holder.unwrap().key, rebalance.key());
}

/// A guard watches its key from the moment it is acquired: the first `is_lost()` made after
/// a force-release, a raw delete or a lease revoke already says lost.
#[tokio::test]
async fn first_is_lost_after_a_release_already_says_lost() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let other = etcd.coordinator().await;

    // Force-release from another coordinator.
    let guard = coord.lock("first-lost/a").await.unwrap();
    other.force_unlock("first-lost/a").await.unwrap().unwrap();
    assert!(!key_exists(&etcd, guard.key()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(guard.is_lost(), "first is_lost() after force_unlock");
    assert_eq!(guard.lost_reason(), Some(LostReason::KeyDeleted));

    // `etcdctl del` of the key.
    let guard = coord.lock("first-lost/b").await.unwrap();
    etcd.del(guard.key());
    assert!(!key_exists(&etcd, guard.key()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(guard.is_lost(), "first is_lost() after etcdctl del");

    // Revoking the lease (with a TTL long enough that no keepalive runs meanwhile).
    let guard = coord
        .lock("first-lost/c")
        .with_lease_ttl(Duration::from_secs(30))
        .await
        .unwrap();
    etcd.etcdctl(&["lease", "revoke", &format!("{:x}", guard.lease_id())]);
    assert!(!key_exists(&etcd, guard.key()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        guard.is_lost(),
        "first is_lost() after the lease was revoked"
    );

    // `lost()` called for the first time after the delete resolves at once.
    let guard = coord.lock("first-lost/d").await.unwrap();
    etcd.del(guard.key());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reason = tokio::time::timeout(Duration::from_millis(50), guard.lost())
        .await
        .expect("lost() resolves at once");
    assert_eq!(reason, LostReason::KeyDeleted);

    // A held guard is not reported lost.
    let held = coord.lock("first-lost/e").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_lost());
}

async fn lease_exists(etcd: &Etcd, lease: i64) -> bool {
    let mut client = etcd.client().await;
    client.lease_time_to_live(lease, None).await.unwrap().ttl() >= 0
}

/// The lease contract through an etcd restart: the keepalive stream is re-opened on the same
/// lease (etcd re-extends leases when it starts), the session is never lost, and
/// `valid_until` moves forward with a keepalive sent after the restart.
#[tokio::test]
async fn a_session_keeps_its_lease_through_an_etcd_restart() {
    let mut etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let session = coord
        .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let lease = session.lease_id();
    let before = session.valid_until();

    etcd.restart().await;
    let restarted = Instant::now();
    assert!(
        !session.is_lost(),
        "lost during the restart: {:?}",
        session.lost_reason()
    );

    // `valid_until` = send time of the last confirmed keepalive + TTL - margin: once it is past
    // `restarted + TTL - margin`, a keepalive sent after the restart was answered.
    let window = session.granted_ttl() - session.margin();
    let confirmed = async {
        while session.valid_until() < restarted + window {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        reason = session.lost() => panic!("session lost after the restart: {reason}"),
        () = confirmed => {}
    }
    assert_eq!(session.lease_id(), lease, "the same lease");
    assert!(session.valid_until() > before);
    assert!(!session.is_lost());
    assert!(lease_exists(&etcd, lease).await);
    assert!(session.remaining_ttl().await.unwrap() > Duration::ZERO);
    let guard = session.lock("restarted").await.unwrap();
    assert_eq!(guard.lease_id(), lease);
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    assert!(!lease_exists(&etcd, lease).await, "close revokes the lease");
}

/// Cut off from etcd (a TCP proxy resets every connection) for longer than the TTL: the
/// session is lost as unconfirmed once the proven window has passed, before etcd can have
/// expired the lease, and stays lost after the network is back; the lease is gone.
#[tokio::test]
async fn a_session_cut_off_longer_than_its_ttl_is_lost_and_its_lease_is_gone() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::to(&etcd).await;
    let coord = proxy.coordinator().await;
    let session = coord
        .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let lease = session.lease_id();
    let guard = session.lock("cut-off").await.unwrap();

    proxy.cut();
    // An answer already on its way when the connections were reset may still land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let proven = session.valid_until();
    let reason = tokio::time::timeout(session.granted_ttl() * 2, session.lost())
        .await
        .expect("lost within two TTLs");
    let noticed = Instant::now();
    assert_eq!(reason, LostReason::Unconfirmed);
    assert!(noticed >= proven, "not lost while the lease was proven");
    assert!(
        noticed < proven + session.margin(),
        "lost before etcd can have expired the lease ({} ms after the window)",
        (noticed - proven).as_millis()
    );
    assert_eq!(guard.lost_reason(), Some(LostReason::Unconfirmed));

    // etcd sees no keepalive either: the lease expires, and the lock key with it.
    let gone = eventually!(
        session.granted_ttl() + Duration::from_secs(3),
        {
            let etcd = &etcd;
            async move { !lease_exists(etcd, lease).await }
        }
        .await
    );
    assert!(gone, "the lease is gone");
    assert_eq!(count_prefix(&etcd, "cut-off/").await, 0);

    // Lost is final: the network coming back does not revive the session.
    proxy.restore();
    let err = session.renew().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(session.lost_reason(), Some(LostReason::Unconfirmed));
    let err = session.lock("cut-off").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}
