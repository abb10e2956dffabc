//! Reload that heals itself: etcd killed and restarted, paused (SIGSTOP), compacted while the
//! client is cut off, a cluster losing its leader, cold start without etcd, and a corrupt cache.
//! Real etcd processes throughout; partitions are made with a loopback TCP proxy.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordination::config::{ReloadCause, ResyncReason, WatchState};
use coordination::provenance::Layer;
use coordination::{
    ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, Coordinator, CoordinatorOptions,
    ErrorKind,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::cluster::Cluster;
use support::proxy::Proxy;
use support::Etcd;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/faults")]
struct FaultConfig {
    counter: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    #[coord(secret)]
    token: String,
}

const COUNTER: &str = "/apps/faults/counter";

async fn coordinator(endpoints: Vec<String>) -> Coordinator {
    Coordinator::connect_lazy(CoordinatorOptions::new(endpoints))
        .await
        .unwrap()
}

/// Puts until etcd accepts (it may be down or electing a leader); returns the revision.
async fn put_retrying(client: &mut etcd_client::Client, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(2), client.put(key, value, None)).await {
            Ok(Ok(resp)) => return resp.header().unwrap().revision(),
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "etcd did not accept a put in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Every revision at which a key under `prefix` changed, from etcd's own history.
async fn prefix_revisions(client: &mut etcd_client::Client, prefix: &str, upto: i64) -> Vec<i64> {
    let mut stream = client
        .watch(
            prefix,
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(1),
            ),
        )
        .await
        .unwrap();
    let mut revisions = BTreeSet::new();
    loop {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("history replay")
            .unwrap()
            .unwrap();
        for e in resp.events() {
            revisions.insert(e.kv().unwrap().mod_revision());
        }
        if revisions.last().is_some_and(|r| *r >= upto) {
            return revisions.into_iter().collect();
        }
    }
}

/// etcd SIGKILLed and restarted 10 times while a writer makes 500 updates: the final snapshot
/// equals etcd's final state, revisions were applied in strictly increasing order, and none
/// that changed the prefix was skipped. `load()` stays fast throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_ten_kills_and_restarts_during_500_updates() {
    let mut etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put_retrying(&mut client, COUNTER, "0").await;
    let coord = coordinator(vec![etcd.endpoint()]).await;
    let cfg: ConfigHandle<FaultConfig> = coord
        .config_with(ConfigOptions::new().with_max_backoff(Duration::from_millis(300)))
        .await
        .unwrap();

    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let collector = {
        let mut sub = cfg.subscribe();
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(event) = sub.next().await {
                match event {
                    ConfigEvent::Applied(s) => seen.lock().unwrap().push(s.revision()),
                    ConfigEvent::Rejected(r) => {
                        panic!("no update here is invalid: {}", r.error)
                    }
                    ConfigEvent::Lagged { missed } => panic!("subscriber lagged by {missed}"),
                    _ => {}
                }
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let cfg = cfg.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let (mut reads, mut over_1ms) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let v = cfg.load().counter;
                let took = t.elapsed();
                worst = worst.max(took);
                over_1ms += u64::from(took > Duration::from_millis(1));
                std::hint::black_box(v);
                reads += 1;
            }
            (worst, reads, over_1ms)
        })
    };

    let writer = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 1..=500u64 {
                last = put_retrying(&mut client, COUNTER, &i.to_string()).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            last
        })
    };
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(150 + 40 * round)).await;
        etcd.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        etcd.restart().await;
    }
    let last = writer.await.unwrap();
    assert!(
        eventually!(Duration::from_secs(30), cfg.load().counter == 500),
        "final value not applied; serving {} at revision {}",
        cfg.load().counter,
        cfg.load().revision()
    );
    stop.store(true, Ordering::Relaxed);
    let (worst, reads, over_1ms) = reader.join().unwrap();
    assert_eq!(
        cfg.load().revision(),
        last,
        "final snapshot is etcd's final state"
    );
    // The last restart may come after the last update: wait for the watch to be back.
    assert!(
        eventually!(
            Duration::from_secs(10),
            cfg.status().state == WatchState::Live
        ),
        "{:?}",
        cfg.status()
    );

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "revisions applied out of order: {seen:?}"
    );
    let all = prefix_revisions(&mut client, "/apps/faults/", last).await;
    let applied: BTreeSet<i64> = seen.iter().copied().collect();
    let first = *seen.first().unwrap();
    let skipped: Vec<i64> = all
        .iter()
        .copied()
        .filter(|r| *r >= first && !applied.contains(r))
        .collect();
    assert!(skipped.is_empty(), "revisions never applied: {skipped:?}");
    assert!(
        seen.len() >= 500,
        "{} snapshots for 500 updates",
        seen.len()
    );
    collector.abort();
    // load() is a few ns and never waits on the reload task or etcd. On this shared 2-core
    // machine the reader thread itself gets descheduled now and then, so the bound is
    // generous: a load() that waited on etcd (timeouts of seconds) or on each reload (hundreds
    // of times here) would fail it. Figures go to the benchmark table.
    eprintln!("load(): {reads} reads during the faults, {over_1ms} over 1 ms, worst {worst:?}");
    assert!(worst < Duration::from_millis(500), "load() took {worst:?}");
}

/// A hung etcd (SIGSTOP for 15 s): the status turns reconnecting within 15 s, and after SIGCONT
/// updates flow again. Uses the default probe and keepalive settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_is_detected_and_updates_resume_after_sigcont() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put_retrying(&mut client, COUNTER, "1").await;
    let coord = coordinator(vec![etcd.endpoint()]).await;
    let cfg: ConfigHandle<FaultConfig> = coord.config_with(ConfigOptions::new()).await.unwrap();
    assert_eq!(cfg.status().state, WatchState::Live);
    // Let the watch settle, then hang the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.pause();
    let paused = Instant::now();
    let seen = std::cell::RefCell::new(cfg.status());
    let detected = eventually!(Duration::from_secs(15), {
        seen.replace(cfg.status());
        seen.borrow().state == WatchState::Reconnecting
    });
    let status = seen.into_inner();
    let after = paused.elapsed();
    let remaining = Duration::from_secs(15).saturating_sub(after);
    tokio::time::sleep(remaining).await;
    etcd.resume();
    assert!(
        detected,
        "still {:?} after 15 s of SIGSTOP",
        cfg.status().state
    );
    eprintln!("hung server detected after {after:?}: {status:?}");
    assert!(status.last_error.is_some());
    assert_eq!(cfg.load().counter, 1, "last good snapshot kept serving");

    let rev = put_retrying(&mut client, COUNTER, "2").await;
    assert!(
        eventually!(Duration::from_secs(30), cfg.load().counter == 2),
        "update after SIGCONT not applied"
    );
    assert_eq!(cfg.load().revision(), rev);
    assert!(eventually!(
        Duration::from_secs(5),
        cfg.status().state == WatchState::Live
    ));
}

/// A compaction past the watch's resume revision while it is cut off: on reconnect it
/// re-reads the prefix and applies the current state as one snapshot.
#[tokio::test]
async fn compaction_while_disconnected_resyncs_to_the_current_state() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put_retrying(&mut client, COUNTER, "1").await;
    put_retrying(&mut client, "/apps/faults/name", "before").await;
    let proxy = Proxy::to(&etcd).await;
    let coord = coordinator(vec![proxy.endpoint()]).await;
    let cfg: ConfigHandle<FaultConfig> = coord
        .config_with(ConfigOptions::new().with_max_backoff(Duration::from_millis(200)))
        .await
        .unwrap();
    let mut sub = cfg.subscribe();

    proxy.cut();
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.status().state == WatchState::Reconnecting
    ));
    for i in 2..=5 {
        put_retrying(&mut client, COUNTER, &i.to_string()).await;
    }
    client.delete("/apps/faults/name", None).await.unwrap();
    let last = put_retrying(&mut client, "/apps/faults/token", "t0ken").await;
    client.compact(last, None).await.unwrap();
    proxy.restore();

    let snap = loop {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(Some(ConfigEvent::Applied(s))) => break s,
            Ok(Some(_)) => continue,
            other => panic!("no resync: {other:?}"),
        }
    };
    // Read at etcd's current revision: at or after the last change (history records may follow).
    assert!(snap.revision() >= last, "{} < {last}", snap.revision());
    assert_eq!(
        (snap.counter, snap.name.as_str(), snap.token.as_str()),
        (5, "", "t0ken")
    );
    match snap.cause() {
        ReloadCause::Resync {
            revision,
            keys,
            reason,
        } => {
            assert!(
                matches!(reason, ResyncReason::Compacted { .. }),
                "{reason:?}"
            );
            assert_eq!(*revision, snap.revision());
            let keys: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from([COUNTER, "/apps/faults/name", "/apps/faults/token"])
            );
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    assert!(eventually!(
        Duration::from_secs(5),
        cfg.status().state == WatchState::Live
    ));
    // And it keeps watching from the new revision.
    put_retrying(&mut client, COUNTER, "6").await;
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.load().counter == 6
    ));
}

/// A 3-member cluster: killing the leader mid-stream does not stop reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_keeps_reloading_after_the_leader_dies() {
    let mut cluster = Cluster::start(3).await;
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    put_retrying(&mut client, COUNTER, "0").await;
    let coord = coordinator(cluster.endpoints()).await;
    let cfg: ConfigHandle<FaultConfig> = coord
        .config_with(ConfigOptions::new().with_max_backoff(Duration::from_millis(500)))
        .await
        .unwrap();
    for i in 1..=20u64 {
        put_retrying(&mut client, COUNTER, &i.to_string()).await;
    }
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.load().counter == 20
    ));

    let leader = cluster.leader().await;
    cluster.members[leader].kill();
    let survivors: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.is_running())
        .map(|m| m.endpoint())
        .collect();
    let mut client = etcd_client::Client::connect(survivors, None).await.unwrap();
    let mut last = 0;
    for i in 21..=60u64 {
        last = put_retrying(&mut client, COUNTER, &i.to_string()).await;
    }
    assert!(
        eventually!(Duration::from_secs(30), cfg.load().counter == 60),
        "reloads stopped after the leader died: serving {} (status {:?})",
        cfg.load().counter,
        cfg.status()
    );
    assert_eq!(cfg.load().revision(), last);
}

/// Cold start: etcd unreachable, the last-known-good cache serves (stale); when etcd becomes
/// reachable the live values replace the cached ones. With `require_etcd` the bind fails.
#[tokio::test]
async fn cold_start_serves_the_cache_then_switches_to_live() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put_retrying(&mut client, COUNTER, "41").await;
    put_retrying(&mut client, "/apps/faults/token", "secret-token").await;
    let cached_rev = put_retrying(&mut client, "/apps/faults/name", "cached").await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("faults.lkg.json");
    let proxy = Proxy::to(&etcd).await;
    {
        let coord = coordinator(vec![proxy.endpoint()]).await;
        let cfg: ConfigHandle<FaultConfig> = coord
            .config_with(ConfigOptions::new().with_cache_file(&cache))
            .await
            .unwrap();
        assert_eq!(cfg.load().counter, 41);
        assert!(
            eventually!(
                Duration::from_secs(5),
                std::fs::read_to_string(&cache).is_ok_and(|t| t.contains("\"cached\""))
            ),
            "cache not written"
        );
    }
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(
        !text.contains("secret-token"),
        "secret written to the cache: {text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // etcd moves on while this instance is cut off.
    proxy.cut();
    let live_rev = put_retrying(&mut client, COUNTER, "42").await;

    let coord = coordinator(vec![proxy.endpoint()]).await;
    let err = coord
        .config_with::<FaultConfig>(
            ConfigOptions::new()
                .with_cache_file(&cache)
                .with_etcd_required(),
        )
        .await
        .expect_err("require_etcd with etcd unreachable");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Connection | ErrorKind::Unavailable | ErrorKind::Timeout
        ),
        "{err:?}"
    );

    let cfg: ConfigHandle<FaultConfig> = coord
        .config_with(
            ConfigOptions::new()
                .with_cache_file(&cache)
                .with_max_backoff(Duration::from_millis(200)),
        )
        .await
        .expect("cold start from the cache");
    let status = cfg.status();
    assert_eq!(status.state, WatchState::Stale);
    assert!(status.last_error.is_some());
    let snap = cfg.load_full();
    assert_eq!((snap.counter, snap.name.as_str()), (41, "cached"));
    assert_eq!(snap.token, "", "secrets are not cached");
    assert_eq!(snap.revision(), cached_rev);
    assert_eq!(snap.source("counter").layer, Layer::Etcd);

    proxy.restore();
    assert!(
        eventually!(Duration::from_secs(20), cfg.load().counter == 42),
        "live values did not replace the cached ones"
    );
    let snap = cfg.load_full();
    // The resync reads the prefix at etcd's current revision, which other writes (such as the
    // history records) may have moved past the last change to the prefix.
    assert!(
        snap.revision() >= live_rev,
        "{} < {live_rev}",
        snap.revision()
    );
    assert_eq!(snap.source("counter").revision, Some(live_rev));
    assert_eq!(snap.token, "secret-token");
    assert!(matches!(snap.cause(), ReloadCause::Resync { .. }));
    assert!(eventually!(
        Duration::from_secs(5),
        cfg.status().state == WatchState::Live
    ));
}

/// A corrupt cache file and a cache written for another prefix are ignored with a warning;
/// bind still succeeds from the other layers. Without a cache and without etcd, a config the
/// other layers cannot complete fails the bind with an error that says etcd was unreachable.
#[tokio::test]
async fn corrupt_or_foreign_cache_is_ignored() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put_retrying(&mut client, COUNTER, "7").await;
    let proxy = Proxy::to(&etcd).await;
    proxy.cut();
    let coord = coordinator(vec![proxy.endpoint()]).await;
    let dir = tempfile::tempdir().unwrap();

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(
        &corrupt,
        b"{\"format\": \"coordination-lkg/1\", \"keys\": [tru",
    )
    .unwrap();
    let foreign = dir.path().join("foreign.json");
    std::fs::write(
        &foreign,
        r#"{"format":"coordination-lkg/1","prefix":"/apps/other/","revision":9,"written_at_ms":0,
            "keys":[{"key":"/apps/other/counter","value":"999","mod_revision":9}]}"#,
    )
    .unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, [0xff, 0x00, 0x13, 0x37]).unwrap();

    for cache in [&corrupt, &foreign, &garbage] {
        let cfg: ConfigHandle<FaultConfig> = coord
            .config_with(
                ConfigOptions::new()
                    .with_cache_file(cache)
                    .with_env_prefix("FAULTS_")
                    .with_env_vars([("FAULTS_COUNTER", "3")]),
            )
            .await
            .unwrap_or_else(|e| panic!("bind with {cache:?}: {e:#}"));
        assert_eq!(cfg.status().state, WatchState::Stale);
        assert_eq!(cfg.load().counter, 3, "from the environment, cache ignored");
    }

    let err = coord
        .config_with::<FaultConfig>(ConfigOptions::new().with_cache_file(&corrupt))
        .await
        .expect_err("nothing supplies `counter`");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Connection | ErrorKind::Unavailable | ErrorKind::Timeout
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("counter"), "{err}");

    // A handle bound stale switches to live once etcd is reachable.
    let cfg: ConfigHandle<FaultConfig> = coord
        .config_with(
            ConfigOptions::new()
                .with_cache_file(&foreign)
                .with_env_prefix("FAULTS_")
                .with_env_vars([("FAULTS_NAME", "from-env")])
                .with_env_vars([("FAULTS_COUNTER", "3")])
                .with_max_backoff(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    proxy.restore();
    assert!(eventually!(
        Duration::from_secs(20),
        cfg.load().counter == 3
    ));
    assert!(eventually!(
        Duration::from_secs(20),
        cfg.status().state == WatchState::Live
    ));
    assert_eq!(
        cfg.load().source("counter").layer,
        Layer::Env,
        "env still beats etcd once live"
    );
}

/// 30 writes of 200 KB while the handle is cut off: the catch-up (6 MB) is larger than the
/// client decodes in one message (4 MiB here). The handle re-reads the prefix in pages and
/// converges within 5 s of reconnecting, opening at most 10 watches in all, and its status says
/// why (it used to re-open about 8 times a second, forever, serving the old value).
#[tokio::test]
async fn a_catch_up_larger_than_one_message_converges() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    put_retrying(&mut client, COUNTER, "1").await;
    let proxy = Proxy::to(&etcd).await;
    let coord = Coordinator::connect_lazy(
        CoordinatorOptions::new([proxy.endpoint()]).with_max_decode_bytes(4 * 1024 * 1024),
    )
    .await
    .unwrap();
    let cfg: ConfigHandle<FaultConfig> = coord
        .config_with(
            ConfigOptions::new()
                .without_history()
                .with_max_backoff(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let mut sub = cfg.subscribe();

    proxy.cut();
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.status().state == WatchState::Reconnecting
    ));
    let mut last = String::new();
    for i in 0..30 {
        last = format!("{i:02}{}", "x".repeat(200_000));
        put_retrying(&mut client, "/apps/faults/name", &last).await;
    }
    put_retrying(&mut client, COUNTER, "2").await;
    // Drain what the cut produced before counting.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {}
    proxy.restore();
    let restored = Instant::now();

    let mut status_events = 0;
    let converged = loop {
        let left = Duration::from_secs(5).saturating_sub(restored.elapsed());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(ConfigEvent::Applied(s))) if s.counter == 2 => break s,
            Ok(Some(ConfigEvent::Status(_))) => status_events += 1,
            Ok(Some(_)) => {}
            other => panic!("not converged within 5 s of reconnecting: {other:?}"),
        }
    };
    assert!(restored.elapsed() < Duration::from_secs(5));
    assert_eq!(converged.name, last);
    assert!(
        matches!(
            converged.cause(),
            ReloadCause::Resync {
                reason: ResyncReason::TooLarge,
                ..
            }
        ),
        "{:?}",
        converged.cause()
    );
    // Quiet afterwards: live, and no re-open loop (each re-open shows as status changes).
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
        if matches!(event, ConfigEvent::Status(_)) {
            status_events += 1;
        }
    }
    assert!(
        status_events <= 20,
        "{status_events} status changes: re-opening in a loop"
    );
    let status = cfg.status();
    assert_eq!(status.state, WatchState::Live);
    assert!(
        status.watch_opens <= 10,
        "{} watches opened",
        status.watch_opens
    );
    assert!(
        matches!(status.last_resync, Some((ResyncReason::TooLarge, _))),
        "{:?}",
        status.last_resync
    );
    put_retrying(&mut client, COUNTER, "3").await;
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.load().counter == 3
    ));
}
