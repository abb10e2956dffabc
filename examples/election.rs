//! Leader election, end to end: two nodes campaign, an observer follows the leader, the leader
//! proclaims a new value and resigns, and the other node takes over with a higher fencing token.
//! Finishes by itself in about 1 s.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run --example election
//! ```
//!
//! Keys go under the namespace `/coordination-demo`. While it runs,
//! `etcdctl elect -l /coordination-demo/service/leader` shows the same leaders.

use std::error::Error;
use std::time::Duration;

use coordination::{Coordinator, CoordinatorOptions};

const NAMESPACE: &str = "/coordination-demo";
const ELECTION: &str = "service/leader";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let connect = || {
        Coordinator::connect(
            CoordinatorOptions::new(endpoints.split(',')).with_namespace(NAMESPACE),
        )
    };
    let (node_a, node_b, watcher) = (connect().await?, connect().await?, connect().await?);

    let mut observer = watcher.election(ELECTION).observe()?;
    let observed = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(leader) = observer.next().await {
            println!(
                "observer: leader {} = {:?} (token {})",
                leader.key,
                leader.value_str().unwrap_or("?"),
                leader.create_revision
            );
            seen.push(leader);
            if seen.len() == 3 {
                break;
            }
        }
        seen
    });

    let a = node_a
        .election(ELECTION)
        .with_lease_ttl(Duration::from_secs(5))
        .campaign("node-a")
        .await?;
    println!("node-a: elected, token {}", a.fencing_token());
    let b_campaign = tokio::spawn(async move {
        node_b
            .election(ELECTION)
            .with_lease_ttl(Duration::from_secs(5))
            .campaign("node-b")
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "node-b: campaigning, elected yet: {}",
        b_campaign.is_finished()
    );

    a.proclaim("node-a (draining)").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("node-a: resigning");
    a.resign().await?;

    let b = b_campaign.await??;
    println!(
        "node-b: elected, token {} (higher than node-a's)",
        b.fencing_token()
    );
    let seen = observed.await?;
    println!("observer saw {} changes", seen.len());
    b.resign().await?;
    Ok(())
}
