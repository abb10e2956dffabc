//! A 3-member (or n-member) etcd cluster on loopback, for failover tests.

use std::time::{Duration, Instant};

use super::{free_port, Etcd};

/// n etcd processes forming one cluster.
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Etcd>,
}

impl Cluster {
    /// Starts `n` members and waits until every one serves reads.
    pub async fn start(n: usize) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Etcd::member(&format!("m{i}"), *client, *peer, &initial))
            .collect();
        for m in &mut members {
            m.spawn_process();
        }
        for m in &members {
            m.wait_ready().await;
        }
        Cluster { members }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// The index of the current leader, asking the members that are up (waits up to 10 s).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for m in self.members.iter().filter(|m| m.is_running()) {
                let Ok(mut c) = etcd_client::Client::connect([m.endpoint()], None).await else {
                    continue;
                };
                let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), c.status()).await
                else {
                    continue;
                };
                if status.leader() != 0
                    && status.leader() == status.header().map_or(0, |h| h.member_id())
                {
                    return self
                        .members
                        .iter()
                        .position(|x| x.endpoint() == m.endpoint())
                        .unwrap();
                }
            }
            assert!(Instant::now() < deadline, "no leader within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
