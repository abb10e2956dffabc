//! [`GrpcProxy`]: `etcd grpc-proxy start` in front of an [`Etcd`], on a free loopback port
//! (it coalesces identical watches of its clients into one watch on etcd). Killed when dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use super::etcd::{free_port, serves, Etcd};
use super::process::Proc;

/// A running `etcd grpc-proxy`.
pub struct GrpcProxy {
    _proc: Proc,
    _dir: tempfile::TempDir,
    port: u16,
}

impl GrpcProxy {
    /// Starts the proxy in front of `etcd` and waits until a read through it succeeds.
    pub async fn start(etcd: &Etcd) -> GrpcProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let target = etcd.endpoint().trim_start_matches("http://").to_string();
        let mut cmd = Command::new("etcd");
        cmd.current_dir(dir.path()).args([
            "grpc-proxy",
            "start",
            &format!("--endpoints={target}"),
            &format!("--listen-addr=127.0.0.1:{port}"),
        ]);
        let proxy = GrpcProxy {
            _proc: Proc::spawn(cmd, "etcd grpc-proxy"),
            _dir: dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if serves(proxy.endpoint()).await {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "etcd grpc-proxy did not serve in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A coordinator connected through the proxy.
    pub async fn coordinator(&self) -> coordination::Coordinator {
        coordination::Coordinator::connect(coordination::CoordinatorOptions::new([self.endpoint()]))
            .await
            .expect("connect through grpc-proxy")
    }
}
