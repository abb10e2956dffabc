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
