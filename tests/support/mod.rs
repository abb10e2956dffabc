//! Test harness: real etcd processes on free loopback ports with temp data dirs, plus helpers
//! to run the `etcdctl` binary against them. Every process is killed when its handle drops (and,
//! as a backstop, when the thread that started it exits).
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use coordination::{Coordinator, CoordinatorOptions};

/// One single-member etcd cluster.
pub struct Etcd {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it serves reads.
    pub async fn start() -> Etcd {
        let mut etcd = Etcd {
            name: "t".into(),
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        etcd.spawn().await;
        etcd
    }

    async fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start etcd (is etcd-server installed?)"));
        self.wait_ready().await;
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = async {
                let mut c = etcd_client::Client::connect([self.endpoint()], None)
                    .await
                    .ok()?;
                tokio::time::timeout(Duration::from_secs(1), c.get("ready", None))
                    .await
                    .ok()?
                    .ok()
            }
            .await;
            if ok.is_some() {
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

    /// Runs `etcdctl --endpoints <this> <args>` (API v3) and returns its output; panics with
    /// stderr if it fails.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let out = self.etcdctl_raw(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs etcdctl without checking its exit status.
    pub fn etcdctl_raw(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl (is etcd-client installed?)")
    }

    /// `etcdctl put KEY VALUE`, returning the revision of the write.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let out = self.etcdctl(&["put", "-w", "json", "--", key, value]);
        header_revision(&out.stdout)
    }

    /// `etcdctl del KEY`, returning the revision of the delete.
    pub fn del(&self, key: &str) -> i64 {
        let out = self.etcdctl(&["del", "-w", "json", "--", key]);
        header_revision(&out.stdout)
    }

    /// `etcdctl txn` with the given request lines (success branch only), returning the revision.
    pub fn txn(&self, ops: &[&str]) -> i64 {
        use std::io::Write;
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(["txn", "-w", "json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run etcdctl txn");
        {
            let stdin = child.stdin.as_mut().unwrap();
            // Empty compares, then the success ops, then empty failure ops.
            writeln!(stdin).unwrap();
            for op in ops {
                writeln!(stdin, "{op}").unwrap();
            }
            writeln!(stdin).unwrap();
            writeln!(stdin).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "etcdctl txn failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        header_revision(&out.stdout)
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
        if self.child.is_some() {
            // A paused process must be resumed to die promptly on some kernels.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.as_ref().unwrap().id().to_string())
                .status();
        }
        self.kill();
    }
}

fn header_revision(json: &[u8]) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(json).expect("etcdctl -w json output");
    v["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {v}"))
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits, so no etcd
/// outlives a test that aborted without unwinding.
#[allow(unsafe_code)]
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own process state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Waits up to `limit` for `cond` to hold, polling every 5 ms.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}
