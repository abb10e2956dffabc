//! The etcd substrate under every feature, seen through each of its users: an etcd restored
//! from an older snapshot (its revision goes backwards) is noticed and followed by the config
//! handle, the registry live view, `coordctl config watch` and an election observer alike, and
//! each then applies the writes made after the restore. Handles connected through
//! `etcd grpc-proxy` (which coalesces their watches) follow every write without re-opening or
//! re-reading. (Restarts, pauses, compaction, leader
//! loss and oversized catch-ups are in `faults.rs`.)

#[macro_use]
mod support;

use std::time::Duration;

use coordination::config::{ReloadCause, ResyncReason, WatchState};
use coordination::registry::InstanceSpec;
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/substrate")]
struct SubConfig {
    counter: u64,
}

const COUNTER: &str = "/apps/substrate/counter";

/// Waits up to `limit` for an applied snapshot that `pick` accepts.
async fn applied<T: CoordConfig + std::fmt::Debug>(
    sub: &mut coordination::config::Subscription<T>,
    limit: Duration,
    mut pick: impl FnMut(&coordination::Snapshot<T>) -> bool,
) -> std::sync::Arc<coordination::Snapshot<T>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(ConfigEvent::Applied(s))) if pick(&s) => return s,
            Ok(Some(_)) => continue,
            other => panic!("no such snapshot within {limit:?}: {other:?}"),
        }
    }
}

/// snapshot save at counter 1, then 2 and 3, then the old snapshot restored: the handle
/// resyncs to counter 1 with reason `Restored` (its status says so too) and applies the next
/// write, whose revision is below the ones it had seen.
#[tokio::test]
async fn config_follows_etcd_restored_from_an_older_snapshot() {
    let mut etcd = Etcd::start().await;
    etcd.put(COUNTER, "1");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<SubConfig> = coord
        .config_with(ConfigOptions::new().without_history())
        .await
        .unwrap();
    let mut sub = cfg.subscribe();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    etcd.snapshot_save(&file);
    etcd.put(COUNTER, "2");
    let seen = etcd.put(COUNTER, "3");
    applied(&mut sub, Duration::from_secs(10), |s| s.counter == 3).await;

    etcd.restore_snapshot(&file).await;
    let snap = applied(&mut sub, Duration::from_secs(20), |s| s.counter == 1).await;
    match snap.cause() {
        ReloadCause::Resync {
            reason: ResyncReason::Restored { previous_revision },
            ..
        } => assert_eq!(*previous_revision, seen),
        other => panic!("expected a resync after the restore, got {other:?}"),
    }
    assert!(snap.revision() < seen, "{} >= {seen}", snap.revision());

    let next = etcd.put(COUNTER, "4");
    assert!(
        next <= seen,
        "the restored cluster's revisions restart lower"
    );
    let snap = applied(&mut sub, Duration::from_secs(10), |s| s.counter == 4).await;
    assert_eq!(snap.revision(), next);
    assert!(eventually!(
        Duration::from_secs(5),
        cfg.status().state == WatchState::Live
    ));
    let status = cfg.status();
    assert!(
        matches!(status.last_resync, Some((ResyncReason::Restored { .. }, _))),
        "{:?}",
        status.last_resync
    );
    assert_eq!(status.revision, next);
}

/// A registry live view after a restore: an instance registered after the restore appears,
/// although its revision is below the ones the view had seen.
#[tokio::test]
async fn registry_live_view_follows_a_restore() {
    let mut etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let _a = registry
        .register(InstanceSpec::new("sub", "a", "127.0.0.1:1"))
        .await
        .unwrap();
    let live = registry.live("sub").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    etcd.snapshot_save(&file);
    for i in 0..5 {
        etcd.put(&format!("/unrelated/{i}"), "x");
    }
    let seen = etcd.put("/unrelated/last", "x");

    etcd.restore_snapshot(&file).await;
    let _c = loop {
        // The registration may race the client's reconnection; retry until etcd answers.
        match registry
            .register(InstanceSpec::new("sub", "c", "127.0.0.1:3"))
            .await
        {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(
        eventually!(
            Duration::from_secs(20),
            live.current().instances().iter().any(|i| i.id() == "c")
        ),
        "the live view missed a registration made after the restore"
    );
    assert!(live.revision() < seen, "{} >= {seen}", live.revision());
}

/// `coordctl config watch` prints the resync a restore causes, then the next change.
#[cfg(feature = "cli")]
#[tokio::test]
async fn coordctl_config_watch_follows_a_restore() {
    let mut etcd = Etcd::start().await;
    etcd.put(COUNTER, "1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    etcd.snapshot_save(&file);
    etcd.put(COUNTER, "2");

    use std::process::Stdio;
    let mut watch = support::coordctl::command(
        &etcd,
        &["config", "watch", "/apps/substrate", "--count", "2"],
    );
    let (mut watch, _stderr) = support::coordctl::start_watch(watch.stdout(Stdio::piped()));

    etcd.restore_snapshot(&file).await;
    // After the restore the watch reports counter 2 -> 1 (a resync), then 1 -> 5.
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.put(COUNTER, "5");
    let waited = std::time::Instant::now();
    while watch.try_wait().unwrap().is_none() {
        if waited.elapsed() > Duration::from_secs(20) {
            let _ = watch.kill();
            let out = watch.wait_with_output().unwrap();
            panic!(
                "coordctl config watch did not follow the restore: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("counter: 2 -> 1"), "{printed}");
    assert!(printed.contains("counter: 1 -> 5"), "{printed}");
}

/// An election observer after a restore: the leader's value goes back to what the snapshot
/// held, and a proclaim made after the restore reaches the observer.
#[tokio::test]
async fn election_observer_follows_a_restore() {
    let mut etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let election = coord.election("sub-leader");
    let leader = election.campaign("v1").await.unwrap();
    let mut observer = election.observe().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.value, b"v1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    etcd.snapshot_save(&file);
    leader.proclaim("v2").await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.value, b"v2");

    etcd.restore_snapshot(&file).await;
    let back = tokio::time::timeout(Duration::from_secs(20), observer.next())
        .await
        .expect("the observer did not notice the restore")
        .unwrap();
    assert_eq!(back.value, b"v1");
    // The leader key came back with the snapshot (same create_revision): proclaim works.
    let mut proclaimed = false;
    for _ in 0..50 {
        if leader.proclaim("v3").await.is_ok() {
            proclaimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(proclaimed);
    let third = tokio::time::timeout(Duration::from_secs(10), observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.value, b"v3");
    assert!(third.mod_revision <= second.mod_revision);
}

/// A backlog after a partition: 50 revisions written while the handle was cut off. The status
/// turns Live only after the last of them is applied, and its revision is the last one.
#[tokio::test]
async fn status_turns_live_only_after_the_backlog_is_applied() {
    let etcd = Etcd::start().await;
    etcd.put(COUNTER, "0");
    let proxy = support::proxy::Proxy::to(&etcd).await;
    let coord = coordination::Coordinator::connect_lazy(coordination::CoordinatorOptions::new([
        proxy.endpoint(),
    ]))
    .await
    .unwrap();
    let cfg: ConfigHandle<SubConfig> = coord
        .config_with(
            ConfigOptions::new()
                .without_history()
                .with_max_backoff(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let mut sub = cfg.subscribe();
    proxy.cut();
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.status().state == WatchState::Reconnecting
    ));
    let mut client = etcd.client().await;
    let mut last = 0;
    for i in 1..=50 {
        last = client
            .put(COUNTER, i.to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {}
    proxy.restore();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut applied = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(ConfigEvent::Applied(s))) => applied.push(s.counter),
            Ok(Some(ConfigEvent::Status(status))) if status.state == WatchState::Live => {
                assert_eq!(
                    cfg.load().counter,
                    50,
                    "Live before the backlog was applied (applied so far: {applied:?})"
                );
                assert_eq!(status.revision, last);
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("never live again: {other:?}"),
        }
    }
    // Each revision of the backlog was applied once, in order.
    assert_eq!(applied, (1..=50).collect::<Vec<u64>>());
}

/// Through `etcd grpc-proxy`, handles without sharing (one watch each, coalesced by the proxy
/// into one on etcd) apply every put, and none re-opens its watch or re-reads the prefix: the
/// proxy's made-up `created` answers (no raft term, no cluster id) are not taken for a lagging
/// member or a restored cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_through_grpc_proxy_follow_every_put_without_reopening() {
    let etcd = Etcd::start().await;
    etcd.put(COUNTER, "0");
    let proxy = support::grpc_proxy::GrpcProxy::start(&etcd).await;
    let coord = proxy.coordinator().await;
    let options = ConfigOptions::new()
        .without_file()
        .without_env()
        .without_history()
        .without_sharing();
    let mut handles: Vec<ConfigHandle<SubConfig>> = Vec::new();
    for _ in 0..20 {
        handles.push(coord.config_with(options.clone()).await.unwrap());
    }
    let mut subs: Vec<_> = handles.iter().map(ConfigHandle::subscribe).collect();
    for n in 1..=10u64 {
        let revision = etcd.put(COUNTER, &n.to_string());
        for sub in &mut subs {
            applied(sub, Duration::from_secs(20), |s| s.revision() >= revision).await;
        }
    }
    for (i, cfg) in handles.iter().enumerate() {
        let status = cfg.status();
        assert_eq!(cfg.load().counter, 10, "handle {i}");
        assert_eq!(status.state, WatchState::Live, "handle {i}: {status:?}");
        assert_eq!(
            status.watch_opens, 1,
            "handle {i} re-opened its watch: {status:?}"
        );
        assert!(
            status
                .last_resync
                .is_none_or(|(reason, _)| reason == ResyncReason::Initial),
            "handle {i} re-read the prefix: {status:?}"
        );
    }
}
