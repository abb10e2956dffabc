//! One service instance for the rollout demo: binds `/apps/shop/config` with a receipt (id
//! from `INSTANCE`, labels from `COORD_LABELS`), and prints every snapshot it applies and
//! every change it rejects until Ctrl-C. Its `validate()` refuses a pool over 500.
//! `scripts/demo.sh rollout` runs five of these and drives a staged rollout with `coordctl`.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 INSTANCE=a COORD_LABELS=zone=eu-1a,tier=canary \
//!     cargo run --example fleet
//! ```

use std::time::Duration;

use coordination::fleet::ReceiptOptions;
use coordination::{ConfigEvent, ConfigOptions, CoordConfig, Coordinator, CoordinatorOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The shop's configuration.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/shop/config", validate = "ShopConfig::check")]
struct ShopConfig {
    greeting: String,
    pool: Pool,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Pool {
    #[schemars(range(min = 1))]
    max: u32,
}

impl ShopConfig {
    fn check(&self) -> Result<(), String> {
        if self.pool.max > 500 {
            return Err(format!(
                "pool.max {} would exhaust the database (at most 500)",
                self.pool.max
            ));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> coordination::Result<()> {
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let id = std::env::var("INSTANCE").unwrap_or_else(|_| "shop-1".into());
    let coord = Coordinator::connect(CoordinatorOptions::new(endpoints.split(','))).await?;
    let options = ConfigOptions::new().with_receipts(
        ReceiptOptions::new()
            .with_instance_id(&id)
            .with_lease_ttl(Duration::from_secs(3)),
    );
    let cfg = ShopConfig::bind_with(&coord, options).await?;
    let snap = cfg.load();
    println!(
        "[{id}] watching: greeting={} pool.max={} (revision {})",
        snap.greeting,
        snap.pool.max,
        snap.revision()
    );
    drop(snap);
    let mut events = cfg.subscribe();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(ConfigEvent::Applied(s)) => println!(
                    "[{id}] applied: greeting={} pool.max={} (revision {}, {:?})",
                    s.greeting,
                    s.pool.max,
                    s.revision(),
                    s.cause()
                ),
                Some(ConfigEvent::Rejected(r)) => println!("[{id}] rejected: {}", r.error),
                Some(_) => {}
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
