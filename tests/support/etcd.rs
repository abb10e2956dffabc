//! [`Etcd`]: one etcd process (a single-member cluster or one member of a
//! [`Cluster`](super::cluster::Cluster)) on free loopback ports with a temp data dir: start,
//! kill, restart, pause, snapshot restore. Killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coordination::{Coordinator, CoordinatorOptions};

use super::process::kill_with_parent;

/// One etcd process: a single-member cluster, or one member of a [`cluster::Cluster`].
pub struct Etcd {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`; `None` for a single member.
    initial_cluster: Option<String>,
    data: tempfile::TempDir,
    child: Option<Child>,
}

/// Whether the etcd (or proxy) at `endpoint` answers a read within a second.
pub async fn serves(endpoint: String) -> bool {
    async {
        let mut c = etcd_client::Client::connect([endpoint], None).await.ok()?;
        tokio::time::timeout(Duration::from_secs(1), c.get("ready", None))
            .await
            .ok()?
            .ok()
    }
    .await
    .is_some()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it serves reads. A free port can be taken by another
    /// process between the probe and etcd's bind (tests run in parallel): then it starts
    /// again on other ports, up to 5 times.
    pub async fn start() -> Etcd {
        for _ in 0..5 {
            let mut etcd = Etcd {
                name: "t".into(),
                client_port: free_port(),
                peer_port: free_port(),
                initial_cluster: None,
                data: tempfile::tempdir().expect("temp dir"),
                child: None,
            };
            etcd.spawn_process();
            if !etcd.exited_on_a_taken_port().await {
                etcd.wait_ready().await;
                return etcd;
            }
        }
        panic!("etcd found its ports taken 5 times");
    }

    /// Waits up to 2 s for etcd to exit because a port was taken; false once it serves, or
    /// if it is still starting (then [`wait_ready`](Self::wait_ready) waits for it).
    async fn exited_on_a_taken_port(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return log.contains("address already in use");
            }
            if self.serves().await {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A cluster member, not started yet (see [`cluster::Cluster`]).
    pub(crate) fn member(
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
    ) -> Etcd {
        Etcd {
            name: name.into(),
            client_port,
            peer_port,
            initial_cluster: Some(initial_cluster.into()),
            data: tempfile::tempdir().expect("temp dir"),
            child: None,
        }
    }

    async fn spawn(&mut self) {
        self.spawn_process();
        self.wait_ready().await;
    }

    /// Starts the process without waiting for it to serve.
    pub(crate) fn spawn_process(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut cmd = etcd_command(
            &self.name,
            &self.data.path().join("data"),
            &client,
            &peer,
            &initial_cluster,
        );
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start etcd (is etcd-server installed?)"));
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    /// Whether etcd answers a read now.
    async fn serves(&self) -> bool {
        serves(self.endpoint()).await
    }

    pub(crate) async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.serves().await {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("etcd did not become ready in 30 s; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A coordinator connected to this etcd.
    pub async fn coordinator(&self) -> Coordinator {
        Coordinator::connect(CoordinatorOptions::new([self.endpoint()]))
            .await
            .expect("connect to test etcd")
    }

    /// A raw etcd-client client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connect raw client")
    }

    /// Whether the process was started and not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data dir after [`kill`](Self::kill).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Stops a single-member etcd, replaces its data by `etcdctl snapshot restore FILE` (same
    /// name, ports and cluster flags), and starts it again: the cluster goes back in time.
    pub async fn restore_snapshot(&mut self, file: &std::path::Path) {
        assert!(self.initial_cluster.is_none(), "single member only");
        self.kill();
        let data = self.data.path().join("data");
        std::fs::remove_dir_all(&data).expect("remove data dir");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore", &file.display().to_string()])
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", &self.name])
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .output()
            .expect("run etcdctl snapshot restore");
        assert!(
            out.status.success(),
            "snapshot restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.spawn().await;
    }

    /// SIGSTOP (the process hangs, its sockets stay open).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd running").id();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused process must be resumed to die promptly on some kernels.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// Every key under `prefix` as `(key, value, lease)`, in key order (a raw etcd-client read).
pub async fn read_prefix_raw(etcd: &Etcd, prefix: &str) -> Vec<(String, String, i64)> {
    let mut client = etcd.client().await;
    let resp = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("read prefix");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.lease(),
            )
        })
        .collect()
}

/// `etcd` with the flags every test member shares: its name, data dir, client and peer URLs
/// (listen and advertise), the initial cluster, and warn-level logs.
pub(crate) fn etcd_command(
    name: &str,
    data_dir: &std::path::Path,
    client_url: &str,
    peer_url: &str,
    initial_cluster: &str,
) -> Command {
    let mut cmd = Command::new("etcd");
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-client-urls")
        .arg(client_url)
        .arg("--advertise-client-urls")
        .arg(client_url)
        .arg("--listen-peer-urls")
        .arg(peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(peer_url)
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--logger=zap")
        .arg("--log-level=warn");
    cmd
}
