//! Test harness, one concept per file:
//!
//! - [`etcd`]: etcd processes on free loopback ports with temp data dirs;
//! - [`etcdctl`]: the `etcdctl` binary against them;
//! - [`coordctl`]: the crate's own `coordctl` binary against them (feature `cli`);
//! - [`cluster`]: three-member clusters;
//! - [`proxy`]: a loopback TCP proxy that cuts or black-holes the connection (partitions);
//! - [`grpc_proxy`]: `etcd grpc-proxy` in front of an etcd (coalesced watches);
//! - [`process`]: child processes (programs and re-runs of the test binary as workers);
//! - [`poll`]: `eventually!`, the one way to wait for a condition.
//!
//! Every process is killed when its handle drops (and, as a backstop, when the thread that
//! started it exits).
#![allow(dead_code, unreachable_pub, unused_imports, unused_macros)]

#[macro_use]
pub mod poll;
pub mod cluster;
#[cfg(feature = "cli")]
pub mod coordctl;
pub mod etcd;
pub mod etcdctl;
pub mod grpc_proxy;
pub mod process;
pub mod proxy;
#[cfg(feature = "tls")]
pub mod tls;

pub use etcd::{free_port, read_prefix_raw, Etcd};
pub use process::{signal_pid, Proc};

/// Logs to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=coordination=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A multi-threaded runtime of two workers, for tests that drive the crate from a synchronous
/// body (property tests).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A property-test runner of `PROPTEST_CASES` cases (`cases` unless set), shrinking at most
/// `max_shrink_iters` times and writing no failure files.
pub fn prop_runner(cases: u32, max_shrink_iters: u32) -> proptest::test_runner::TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        max_shrink_iters,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

/// Each leaf path of `snapshot` with its layer, etcd key and revision: what provenance
/// comparisons compare.
pub fn provenance<T>(
    snapshot: &coordination::Snapshot<T>,
) -> Vec<(
    String,
    coordination::provenance::Layer,
    Option<String>,
    Option<i64>,
)> {
    snapshot
        .sources()
        .iter()
        .map(|(path, source)| {
            (
                path.to_string(),
                source.layer,
                source.origin.key().map(|k| k.into_owned()),
                source.revision,
            )
        })
        .collect()
}
