//! Service registry, end to end: two instances of `chat` register (one in this process, one in a
//! child process), a client's live view picks between them, one is drained, the other's process
//! is SIGKILLed, and the view follows each change. Finishes by itself in about 10 s.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run --example registry
//! ```
//!
//! Keys go under the namespace `/coordination-demo`, so a shared etcd is not disturbed.

use std::collections::BTreeMap;
use std::error::Error;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coordination::registry::{
    Balancer, Health, InstanceSpec, LiveInstances, LiveSet, RegistryEvent,
};
use coordination::{Coordinator, CoordinatorOptions};
use serde_json::json;

const NAMESPACE: &str = "/coordination-demo";
const TTL: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let coord = Coordinator::connect(
        CoordinatorOptions::new(endpoints.split(',')).with_namespace(NAMESPACE),
    )
    .await?;
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, id] = args.as_slice() {
        if flag == "--instance" {
            return run_instance(coord, id).await;
        }
    }
    run_demo(coord).await
}

/// The child process: registers one instance and waits to be killed (or for the parent to go
/// away, which closes stdin).
async fn run_instance(coord: Coordinator, id: &str) -> Result<(), Box<dyn Error>> {
    let reg = coord
        .registry()
        .register(
            InstanceSpec::new("chat", id, "10.0.0.8:50051")
                .with_weight(300)
                .with_zone("eu-1b")
                .with_version("1.4.2"),
        )
        .with_lease_ttl(TTL)
        .await?;
    println!(
        "[{id} pid {}] registered on lease {:x} (TTL {} s)",
        std::process::id(),
        reg.lease_id(),
        reg.status().granted_ttl.as_secs()
    );
    tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 16];
        while std::io::stdin()
            .read(&mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    Ok(())
}

/// Lets the watch printer and the child catch up, so the output reads in order.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn show(view: &LiveInstances) -> String {
    let parts: Vec<String> = view
        .instances()
        .iter()
        .map(|i| {
            format!(
                "{}({}, w{}{})",
                i.id(),
                i.health,
                i.weight(),
                if i.is_serving() { "" } else { ", no traffic" }
            )
        })
        .collect();
    if parts.is_empty() {
        "(empty)".into()
    } else {
        parts.join(" ")
    }
}

fn picks(set: &LiveSet, n: usize) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut sequence = Vec::new();
    for _ in 0..n {
        let id = set
            .pick(&Balancer::WeightedRoundRobin)
            .map_or_else(|| "-".to_string(), |i| i.id().to_string());
        sequence.push(id.trim_start_matches("chat-").to_string());
        *counts.entry(id).or_default() += 1;
    }
    format!("{} -> {counts:?}", sequence.join(""))
}

async fn resolver_view(coord: &Coordinator, prefix: &str) -> Result<Vec<String>, Box<dyn Error>> {
    let resp = coord
        .client()
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect())
}

async fn run_demo(coord: Coordinator) -> Result<(), Box<dyn Error>> {
    let registry = coord.registry();
    let started = Instant::now();
    let ms = move || started.elapsed().as_millis();

    // Every change, as the watch reports it.
    let mut watch = registry.watch("chat");
    tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            let what = match &event {
                RegistryEvent::Added { instance, .. } => {
                    format!(
                        "+ {} at {} ({})",
                        instance.id(),
                        instance.addr(),
                        instance.health
                    )
                }
                RegistryEvent::Updated {
                    previous, instance, ..
                } => format!(
                    "~ {} {} -> {}",
                    instance.id(),
                    previous.health,
                    instance.health
                ),
                RegistryEvent::Removed { instance, .. } => format!("- {}", instance.id()),
            };
            println!(
                "[{:>5} ms] [watch] {what} (revision {})",
                ms(),
                event.revision()
            );
        }
    });

    println!(
        "[{:>5} ms] registering chat-1 here and chat-2 in a child process",
        ms()
    );
    let chat1 = registry
        .register(
            InstanceSpec::new("chat", "chat-1", "10.0.0.7:50051")
                .with_weight(100)
                .with_zone("eu-1a")
                .with_version("1.4.2")
                .with_metadata(json!({"proto": "v2"})),
        )
        .with_lease_ttl(TTL)
        .await?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--instance", "chat-2"])
        .stdin(Stdio::piped())
        .spawn()?;

    let set = registry.live("chat").await?;
    let view = set.wait_for(|s| s.serving().len() == 2).await?;
    pause().await;
    println!("[{:>5} ms] [live] {}", ms(), show(&view));
    println!(
        "[{:>5} ms] a Go gRPC client dialing {} sees {:?}",
        ms(),
        registry.resolver_target("chat"),
        resolver_view(&coord, &registry.resolver_prefix("chat")).await?
    );
    println!(
        "[{:>5} ms] 20 weighted picks (weights 100:300): {}",
        ms(),
        picks(&set, 20)
    );

    pause().await;
    println!("[{:>5} ms] draining chat-1", ms());
    chat1.set_health(Health::Draining).await?;
    let view = set
        .wait_for(|s| {
            s.get("chat-1")
                .is_some_and(|i| i.health == Health::Draining)
        })
        .await?;
    println!("[{:>5} ms] [live] {}", ms(), show(&view));
    println!(
        "[{:>5} ms] resolver-visible now: {:?}",
        ms(),
        resolver_view(&coord, &registry.resolver_prefix("chat")).await?
    );
    println!("[{:>5} ms] 20 picks: {}", ms(), picks(&set, 20));

    pause().await;
    println!(
        "[{:>5} ms] SIGKILL chat-2's process (pid {}); its lease expires within the {} s TTL",
        ms(),
        child.id(),
        TTL.as_secs()
    );
    child.kill()?;
    let killed = Instant::now();
    child.wait()?;
    let view = set.wait_for(|s| !s.contains("chat-2")).await?;
    println!(
        "[{:>5} ms] [live] {}  ({} ms after the kill)",
        ms(),
        show(&view),
        killed.elapsed().as_millis()
    );
    println!(
        "[{:>5} ms] 5 picks with nothing serving: {}",
        ms(),
        picks(&set, 5)
    );

    pause().await;
    println!("[{:>5} ms] chat-1 back to healthy", ms());
    chat1.set_health(Health::Healthy).await?;
    let view = set.wait_for(|s| s.serving().len() == 1).await?;
    println!("[{:>5} ms] [live] {}", ms(), show(&view));
    println!("[{:>5} ms] 5 picks: {}", ms(), picks(&set, 5));

    pause().await;
    println!("[{:>5} ms] deregistering chat-1", ms());
    chat1.deregister().await?;
    let view = set.wait_for(LiveInstances::is_empty).await?;
    println!("[{:>5} ms] [live] {}", ms(), show(&view));
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("[{:>5} ms] done", ms());
    Ok(())
}
