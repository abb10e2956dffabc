//! Distributed lock, end to end: two holders (each with its own etcd connection, as two
//! processes would have) take turns on one lock. Each tenure gets a higher fencing token and
//! increments a counter with a fenced transaction; a write with an expired tenure's fence is
//! rejected; the lock's queue is listed and the lock force-released as an operator would.
//! Finishes by itself in about 2 s.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run --example lock
//! ```
//!
//! Keys go under the namespace `/coordination-demo`, so a shared etcd is not disturbed. While it
//! runs, `etcdctl lock /coordination-demo/jobs/rebalance` queues behind the two holders.

use std::error::Error;
use std::time::Duration;

use coordination::lock::{Fence, LockGuard};
use coordination::{Coordinator, CoordinatorOptions, ErrorKind};
use etcd_client::TxnOp;

const NAMESPACE: &str = "/coordination-demo";
const LOCK: &str = "jobs/rebalance";
const COUNTER: &str = "/coordination-demo/jobs/rebalance-counter";
const TURNS: usize = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let connect = || {
        Coordinator::connect(
            CoordinatorOptions::new(endpoints.split(',')).with_namespace(NAMESPACE),
        )
    };
    let (alice, bob) = (connect().await?, connect().await?);
    alice.client().delete(COUNTER, None).await?;

    // Alice takes the lock first; Bob queues behind her, then they alternate (FIFO).
    let first = alice
        .lock(LOCK)
        .with_lease_ttl(Duration::from_secs(10))
        .await?;
    let bob_task = tokio::spawn(holder("bob", bob.clone(), None));
    while alice.lock_status(LOCK).await?.waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = alice.lock_status(LOCK).await?;
    println!(
        "queue of `{}` at revision {}:",
        status.prefix, status.revision
    );
    for (role, entry) in status
        .holder
        .iter()
        .map(|e| ("holder", e))
        .chain(status.waiters.iter().map(|e| ("waiter", e)))
    {
        println!(
            "  {role}: {} lease {:x} create_revision {} remaining_ttl {:?}",
            entry.key, entry.lease, entry.create_revision, entry.remaining_ttl
        );
    }
    let alice_task = tokio::spawn(holder("alice", alice.clone(), Some(first)));
    let mut fences = alice_task.await??;
    fences.extend(bob_task.await??);
    fences.sort_by_key(Fence::token);

    println!(
        "tokens in order: {:?}",
        fences.iter().map(Fence::token).collect::<Vec<_>>()
    );
    let counter = alice.client().get(COUNTER, None).await?;
    let value = counter
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or("?").to_string());
    println!(
        "counter = {} (after {} fenced increments)",
        value.unwrap_or_default(),
        2 * TURNS
    );

    // A tenure that is over cannot write any more: its key is gone (or re-created with a new
    // create_revision), so the fence compare fails.
    let stale = fences[0].clone();
    match alice
        .kv_txn_fenced(stale.clone())
        .and_then([TxnOp::put(COUNTER, "stale write", None)])
        .commit()
        .await
    {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            println!("write with old fence {stale}: rejected ({e})")
        }
        other => println!("write with old fence {stale}: unexpected {other:?}"),
    }

    // An operator force-releases a stuck holder; the holder's lost() fires.
    let stuck = bob.lock(LOCK).await?;
    let released = alice.force_unlock(LOCK).await?;
    println!("force-released {:?}", released.map(|e| e.key));
    println!("bob's guard: lost ({})", stuck.lost().await);
    stuck.unlock().await?;
    Ok(())
}

/// Takes the lock `TURNS` times (starting with `first` if given), each time doing a fenced
/// increment while watching for the loss of the lock. Returns the fences of its tenures.
async fn holder(
    who: &'static str,
    coord: Coordinator,
    mut first: Option<LockGuard>,
) -> coordination::Result<Vec<Fence>> {
    let mut fences = Vec::new();
    for turn in 1..=TURNS {
        let guard = match first.take() {
            Some(guard) => guard,
            None => {
                coord
                    .lock(LOCK)
                    .with_lease_ttl(Duration::from_secs(10))
                    .await?
            }
        };
        println!(
            "{who}: turn {turn}, fencing token {}",
            guard.fencing_token()
        );
        tokio::select! {
            reason = guard.lost() => println!("{who}: lost the lock ({reason}); stopping this turn"),
            done = increment(&coord, &guard) => done?,
        }
        fences.push(guard.fence());
        guard.unlock().await?;
        // Give the other holder, queued behind us, its turn before queueing again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(fences)
}

/// The critical section: read, think, write — the write commits only while we hold the lock.
async fn increment(coord: &Coordinator, guard: &LockGuard) -> coordination::Result<()> {
    let mut client = coord.client();
    let current = client
        .get(COUNTER, None)
        .await
        .map_err(|e| coordination::Error::new(ErrorKind::Etcd, e.to_string()))?;
    let value: u64 = current
        .kvs()
        .first()
        .and_then(|kv| kv.value_str().ok()?.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    coord
        .kv_txn_fenced(guard)
        .and_then([TxnOp::put(COUNTER, (value + 1).to_string(), None)])
        .commit()
        .await?;
    Ok(())
}
