//! One service instance for the history demo: binds `/apps/demo/config`, and prints every
//! snapshot it applies and every change it rejects until Ctrl-C. Its history (every version,
//! who made it and why) is recorded in etcd as it goes; `scripts/demo-history.sh` runs three of
//! these and drives them with `coordctl`.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 INSTANCE=a cargo run --example history
//! ```

use coordination::{ConfigEvent, CoordConfig, Coordinator, CoordinatorOptions, Snapshot};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The demo service's configuration. `database.password` is secret: `coordctl` and the
/// history show it as `***`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/demo/config", secrets = "database.password")]
struct DemoConfig {
    #[schemars(range(min = 1))]
    port: u16,
    #[serde(default)]
    greeting: String,
    database: Database,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Database {
    host: String,
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 100))]
    pool: u32,
    #[serde(default)]
    password: String,
}

fn default_pool() -> u32 {
    4
}

fn show(snap: &Snapshot<DemoConfig>) -> String {
    format!(
        "revision {}: port={} greeting={:?} database.host={} database.pool={}",
        snap.revision(),
        snap.port,
        snap.greeting,
        snap.database.host,
        snap.database.pool
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,coordination=off".into()),
        )
        .init();
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let name = std::env::var("INSTANCE").unwrap_or_else(|_| "1".into());
    let coord = Coordinator::connect(CoordinatorOptions::new(endpoints.split(','))).await?;
    let cfg = DemoConfig::bind(&coord).await?;
    println!("[instance {name}] bound, {}", show(&cfg.load()));
    let mut events = cfg.subscribe();
    println!("[instance {name}] watching for changes");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => match event {
                Some(ConfigEvent::Applied(snap)) => println!("[instance {name}] applied {}", show(&snap)),
                Some(ConfigEvent::Rejected(r)) => println!("[instance {name}] rejected: {}", r.error),
                Some(_) => {}
                None => break,
            },
        }
    }
    Ok(())
}
