//! Leader election against a real etcd: one leader at a time among OS processes, handover
//! within the TTL when the leader crashes, proclaim/resign/observe, and interop with
//! `etcdctl elect`. Multi-process tests re-run this binary as workers (the `worker` test, which
//! does nothing unless `COORD_ELECT_ROLE` is set).

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coordination::lock::{LostReason, SessionOptions};
use coordination::{Coordinator, CoordinatorOptions, ErrorKind};
use etcd_client::TxnOp;
use support::{Etcd, Proc};

const ROLE: &str = "COORD_ELECT_ROLE";
const ENDPOINT: &str = "COORD_ELECT_ENDPOINT";
const ID: &str = "COORD_ELECT_ID";
const TTL: Duration = Duration::from_secs(3);
const LOG: &str = "/elect/log";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Worker entry point: a no-op in a normal test run; in a child process it campaigns, and
/// while leader appends fenced entries to `LOG` until told to resign (or killed).
#[tokio::test]
async fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "candidate");
    let endpoint = std::env::var(ENDPOINT).unwrap();
    let id = std::env::var(ID).unwrap();
    let coord = Coordinator::connect(CoordinatorOptions::new([endpoint]))
        .await
        .unwrap();
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let leadership = coord
        .election("service")
        .with_lease_ttl(TTL)
        .campaign(id.clone())
        .await
        .unwrap();
    println!("@@ leader {id} {} {}", leadership.fencing_token(), now_ms());
    let mut writes = 0;
    loop {
        tokio::select! {
            command = commands.recv() => {
                assert_eq!(command.as_deref(), Some("resign"));
                break;
            }
            reason = leadership.lost() => panic!("worker {id} lost leadership: {reason}"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                coord
                    .kv_txn_fenced(&leadership)
                    .and_then([TxnOp::put(LOG, format!("{id} {}", leadership.fencing_token()), None)])
                    .commit()
                    .await
                    .expect("the leader's fenced write commits");
                writes += 1;
            }
        }
    }
    println!("@@ resigning {id} {writes} {}", now_ms());
    leadership.resign().await.unwrap();
}

struct Leader {
    worker: usize,
    token: i64,
    at_ms: u128,
}

/// Waits for the next `leader` line from any of `workers`.
async fn next_leader(workers: &mut [Option<Proc>], limit: Duration) -> Leader {
    let deadline = Instant::now() + limit;
    loop {
        for (i, worker) in workers.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            if let Some(line) = worker.try_tagged(Duration::from_millis(5)).await {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(f[0], "leader", "unexpected line from worker {i}: {line}");
                assert_eq!(f[1], i.to_string());
                return Leader {
                    worker: i,
                    token: f[2].parse().unwrap(),
                    at_ms: f[3].parse().unwrap(),
                };
            }
        }
        assert!(Instant::now() < deadline, "no new leader within {limit:?}");
    }
}

#[tokio::test]
async fn one_leader_among_three_processes_and_crash_hands_over_within_ttl() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let mut observer = coord.election("service").observe().unwrap();
    let mut workers: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            Some(Proc::worker(
                "worker",
                &[
                    (ROLE, "candidate".into()),
                    (ENDPOINT, etcd.endpoint()),
                    (ID, i.to_string()),
                ],
                &format!("candidate {i}"),
            ))
        })
        .collect();

    // Exactly one leader; the others stay candidates.
    let first = next_leader(&mut workers, Duration::from_secs(20)).await;
    for (i, worker) in workers.iter_mut().enumerate() {
        if i != first.worker {
            let line = worker
                .as_mut()
                .unwrap()
                .try_tagged(Duration::from_millis(300))
                .await;
            assert_eq!(
                line, None,
                "worker {i} must not lead while {} does",
                first.worker
            );
        }
    }
    let seen = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value_str(), Some(first.worker.to_string().as_str()));
    assert_eq!(seen.create_revision, first.token);
    let status = coord.lock_status("service").await.unwrap();
    assert_eq!(status.waiters.len(), 2, "two candidates queued");

    // Crash the leader: the next candidate leads within the TTL.
    let crashed_at = now_ms();
    let killed = Instant::now();
    workers[first.worker].take().unwrap().signal("KILL");
    let second = next_leader(&mut workers, TTL + Duration::from_secs(5)).await;
    let handover = killed.elapsed();
    assert!(
        handover <= TTL + Duration::from_secs(1),
        "handover took {handover:?}, TTL {TTL:?}"
    );
    assert!(
        second.at_ms >= crashed_at,
        "no overlap with the crashed leader"
    );
    assert!(second.token > first.token);
    let seen = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value_str(), Some(second.worker.to_string().as_str()));

    // A resignation hands over at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resigning = workers[second.worker].as_mut().unwrap();
    resigning.send("resign");
    let line = resigning.tagged(Duration::from_secs(5)).await;
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[0], "resigning");
    assert!(
        f[2].parse::<u32>().unwrap() > 0,
        "the leader's fenced writes committed"
    );
    let resigned_at: u128 = f[3].parse().unwrap();
    let resigned = Instant::now();
    let third = next_leader(&mut workers, Duration::from_secs(5)).await;
    assert!(resigned.elapsed() < Duration::from_secs(1));
    assert!(
        third.at_ms >= resigned_at,
        "no overlap with the resigned leader"
    );
    assert!(third.token > second.token);
    assert!(workers[second.worker]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(5))
        .await
        .success());

    let last = workers[third.worker].as_mut().unwrap();
    last.send("resign");
    assert_eq!(
        last.tagged(Duration::from_secs(5)).await.split(' ').next(),
        Some("resigning")
    );
    assert!(last.wait_exit(Duration::from_secs(5)).await.success());
    assert_eq!(coord.election("service").leader().await.unwrap(), None);
}

#[tokio::test]
async fn campaign_proclaim_resign_observe_in_process() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let election = coord.election("svc/leader");
    assert_eq!(election.leader().await.unwrap(), None);
    let mut observer = election.observe().unwrap();

    let session = coord
        .session(SessionOptions::new().with_lease_ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let first = session.election("svc/leader").campaign("a").await.unwrap();
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(leader.key, first.key());
    assert_eq!(leader.value_str(), Some("a"));
    assert_eq!(leader.lease, session.lease_id());
    assert_eq!(observer.next().await.unwrap().value_str(), Some("a"));

    first.proclaim("a2").await.unwrap();
    let seen = observer.next().await.unwrap();
    assert_eq!(
        (seen.value_str(), seen.create_revision),
        (Some("a2"), first.fencing_token())
    );

    // A second candidate waits; a timed-out campaign leaves no key behind.
    let err = coord
        .election("svc/leader")
        .campaign("b")
        .with_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(coord
        .lock_status("svc/leader")
        .await
        .unwrap()
        .waiters
        .is_empty());
    let second = {
        let coord = coord.clone();
        tokio::spawn(async move { coord.election("svc/leader").campaign("b").await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());

    first.resign().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(observer.next().await.unwrap().value_str(), Some("b"));
    assert!(first_token_lower(&second, &leader));

    // A proclaim by a former leader is refused; force-release makes the leader's lost() fire.
    coord.force_unlock("svc/leader").await.unwrap().unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), second.lost())
            .await
            .unwrap(),
        LostReason::KeyDeleted
    );
    assert_eq!(
        second.proclaim("b2").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    drop(second);
    assert_eq!(election.leader().await.unwrap(), None);
}

fn first_token_lower(
    second: &coordination::lock::Leadership,
    first: &coordination::lock::LeaderInfo,
) -> bool {
    second.fencing_token() > first.create_revision
}

#[tokio::test]
async fn interoperates_with_etcdctl_elect() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let election = coord.election("interop");

    // etcdctl leads; we wait behind it.
    let mut etcdctl = Proc::spawn(
        etcd.etcdctl_command(&["elect", "interop", "from-etcdctl"]),
        "etcdctl elect",
    );
    let key = etcdctl.try_line(Duration::from_secs(10)).await.unwrap();
    assert!(key.starts_with("interop/"));
    assert_eq!(
        etcdctl.try_line(Duration::from_secs(5)).await.as_deref(),
        Some("from-etcdctl")
    );
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(
        (leader.key.as_str(), leader.value_str()),
        (key.as_str(), Some("from-etcdctl"))
    );
    let ours = {
        let election = election.clone();
        tokio::spawn(async move { election.campaign("from-rust").await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ours.is_finished(), "we wait while etcdctl leads");
    etcdctl.signal("INT"); // etcdctl resigns on SIGINT
    let ours = tokio::time::timeout(Duration::from_secs(5), ours)
        .await
        .expect("elected once etcdctl resigns")
        .unwrap();
    assert!(ours.fencing_token() > leader.create_revision);
    etcdctl.wait_exit(Duration::from_secs(5)).await;

    // etcdctl observes us, and waits behind us.
    let mut listener = Proc::spawn(
        etcd.etcdctl_command(&["elect", "-l", "interop"]),
        "etcdctl elect -l",
    );
    assert_eq!(
        listener.try_line(Duration::from_secs(10)).await.as_deref(),
        Some(ours.key())
    );
    assert_eq!(
        listener.try_line(Duration::from_secs(5)).await.as_deref(),
        Some("from-rust")
    );
    ours.proclaim("proclaimed").await.unwrap();
    assert_eq!(
        listener.try_line(Duration::from_secs(5)).await.as_deref(),
        Some(ours.key())
    );
    assert_eq!(
        listener.try_line(Duration::from_secs(5)).await.as_deref(),
        Some("proclaimed")
    );
    let mut candidate = Proc::spawn(
        etcd.etcdctl_command(&["elect", "interop", "etcdctl-again"]),
        "etcdctl elect (2)",
    );
    assert_eq!(
        candidate.try_line(Duration::from_millis(800)).await,
        None,
        "etcdctl waits while we lead"
    );
    ours.resign().await.unwrap();
    let key = candidate.try_line(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        candidate.try_line(Duration::from_secs(5)).await.as_deref(),
        Some("etcdctl-again")
    );
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(
        (leader.key.as_str(), leader.value_str()),
        (key.as_str(), Some("etcdctl-again"))
    );
    candidate.signal("INT");
    listener.signal("INT");
    candidate.wait_exit(Duration::from_secs(5)).await;
    listener.wait_exit(Duration::from_secs(5)).await;
}

/// With the `stream` feature an observer is a `Stream` of leaders with the same items as its
/// `next()`: the leader, then each value it proclaims.
#[cfg(feature = "stream")]
#[tokio::test]
async fn an_observer_is_a_stream_of_leaders() {
    use futures_util::StreamExt;

    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let election = coord.election("streamed");
    let mut values = election
        .observe()
        .unwrap()
        .map(|leader| leader.value_str().map(str::to_string));
    let leadership = election.campaign("a").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), values.next()).await;
    assert_eq!(first.unwrap(), Some(Some("a".to_string())));
    leadership.proclaim("a2").await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), values.next()).await;
    assert_eq!(second.unwrap(), Some(Some("a2".to_string())));
    leadership.resign().await.unwrap();
}
