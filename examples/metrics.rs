//! Serves the crate's metrics for Prometheus while a config bound to `/apps/chat/config`
//! follows etcd, until Ctrl-C. The crate records through the `metrics` facade; this program
//! picks the exporter (`metrics-exporter-prometheus`) and installs it **before** connecting,
//! so every handle the coordinator makes records into it.
//!
//! ```text
//! ETCD_ENDPOINTS=http://127.0.0.1:2379 METRICS_ADDR=127.0.0.1:9464 cargo run --example metrics
//! curl -s http://127.0.0.1:9464/metrics | grep ^coordination_
//! ```
//!
//! `scripts/demo.sh metrics` runs it against a throwaway etcd, makes a valid and an invalid
//! change, and shows the scrape. The metric names and the alerting rules over them are in
//! `docs/observability.md` and `docs/alerts.yml`.

use std::net::SocketAddr;

use coordination::{ConfigEvent, CoordConfig, Coordinator, CoordinatorOptions};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The part of the quickstart's config this example reads: `/apps/chat/config/port`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/chat/config")]
struct ChatPort {
    #[schemars(range(min = 1))]
    port: u16,
}

/// Histogram buckets for the `_seconds` histograms: a reload takes microseconds to
/// milliseconds, recording a version a few milliseconds.
const BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,coordination=warn".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9464".into())
        .parse()?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install()?;
    println!("[metrics] serving http://{addr}/metrics");

    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let coord = Coordinator::connect(CoordinatorOptions::new(endpoints.split(','))).await?;
    let cfg = ChatPort::bind(&coord).await?;
    println!(
        "[metrics] bound {} at revision {}: port {}",
        cfg.prefix(),
        cfg.load().revision(),
        cfg.load().port
    );
    let mut events = cfg.subscribe();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => match event {
                Some(ConfigEvent::Applied(snap)) => {
                    println!("[metrics] applied revision {}: port {}", snap.revision(), snap.port);
                }
                Some(ConfigEvent::Rejected(rejection)) => {
                    println!("[metrics] rejected: {}", rejection.error);
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    println!("[metrics] stopped");
    Ok(())
}
