//! Binds a typed config to `/apps/chat/config` and prints every applied snapshot and every
//! rejected change until Ctrl-C. `scripts/demo.sh` runs it against a throwaway etcd and changes
//! the config with `etcdctl` while it runs.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run --example quickstart
//! ```

use coordination::config::ReloadCause;
use coordination::{ConfigEvent, CoordConfig, Coordinator, CoordinatorOptions, Snapshot};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The service's configuration: etcd keys under `/apps/chat/config` (`port`, `database/host`,
/// …), the file `examples/config/chat.yaml`, and `CHAT_*` variables (`CHAT_DATABASE__POOL=5`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(
    prefix = "/apps/chat/config",
    file = "examples/config/chat.yaml",
    env_prefix = "CHAT_"
)]
struct ChatConfig {
    /// TCP port the service listens on.
    #[schemars(range(min = 1))]
    port: u16,
    /// Feature switches.
    #[serde(default)]
    features: Features,
    /// The database connection.
    database: Database,
}

/// Feature switches.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
struct Features {
    /// The greeting shown to new users (empty: none).
    #[serde(default)]
    greeting: String,
}

/// The database connection.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Database {
    /// Database host name.
    host: String,
    /// Connections in the pool.
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 100))]
    pool: u32,
}

fn default_pool() -> u32 {
    4
}

fn show(snap: &Snapshot<ChatConfig>) -> String {
    format!(
        "port={} database.host={} database.pool={}",
        snap.port, snap.database.host, snap.database.pool
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
    let coord = Coordinator::connect(CoordinatorOptions::new(endpoints.split(','))).await?;
    let cfg = ChatConfig::bind(&coord).await?;

    let snap = cfg.load_full();
    println!(
        "[quickstart] bound {} at revision {}",
        cfg.prefix(),
        snap.revision()
    );
    println!("[quickstart]   {}", show(&snap));
    for (path, source) in snap.sources().iter() {
        println!("[quickstart]   {path:<18} from {source}");
    }
    let mut events = cfg.subscribe();
    println!("[quickstart] watching for changes (Ctrl-C to stop)");

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => match event {
                Some(ConfigEvent::Applied(snap)) => {
                    let keys = match snap.cause() {
                        ReloadCause::Etcd { keys, .. } => format!("{} key(s): {}", keys.len(), keys.join(", ")),
                        other => format!("{other:?}"),
                    };
                    println!(
                        "[quickstart] APPLIED  revision {} ({keys})\n[quickstart]          {}",
                        snap.revision(),
                        show(&snap),
                    );
                }
                Some(ConfigEvent::Rejected(rejection)) => {
                    println!("[quickstart] REJECTED {}", rejection.error);
                    println!(
                        "[quickstart]          still serving revision {}: {}",
                        cfg.load().revision(),
                        show(&cfg.load())
                    );
                }
                Some(other) => println!("[quickstart] {other:?}"),
                None => break,
            },
        }
    }
    println!(
        "[quickstart] stopped; last snapshot: revision {} {}",
        cfg.load().revision(),
        show(&cfg.load())
    );
    Ok(())
}
