//! Test harness: real etcd processes on free loopback ports with temp data dirs, plus helpers
//! to run the `etcdctl` binary against them. Every process is killed when its handle drops (and,
//! as a backstop, when the thread that started it exits).
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod proxy;
#[cfg(feature = "tls")]
pub mod tls;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use coordination::{Coordinator, CoordinatorOptions};

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

pub(crate) fn free_port() -> u16 {
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
            initial_cluster: None,
            data: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        etcd.spawn().await;
        etcd
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
            .arg(
                self.initial_cluster
                    .clone()
                    .unwrap_or_else(|| format!("{}={peer}", self.name)),
            )
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start etcd (is etcd-server installed?)"));
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    pub(crate) async fn wait_ready(&self) {
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

    /// `etcdctl snapshot save FILE`: the member's state as of now.
    pub fn snapshot_save(&self, file: &std::path::Path) {
        let out = self.etcdctl(&["snapshot", "save", &file.display().to_string()]);
        assert!(
            out.status.success(),
            "snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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

// ---- registry helpers ----

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

/// Re-executes the current test binary to run only the test `test_name` (exact match) with
/// `env` set: a separate OS process for tests that SIGKILL a participant. Its stdin is a pipe
/// (the child can exit when it closes), stdout is discarded, stderr is inherited, and the kernel
/// kills it if the spawning thread exits first.
pub fn spawn_test_process(test_name: &str, env: &[(&str, &str)]) -> Child {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    kill_with_parent(&mut cmd);
    cmd.spawn().expect("re-execute the test binary")
}

/// Waits up to `limit` for an async `cond` to hold, polling every 20 ms; returns whether it did.
pub async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Helpers for the multi-process lock and election tests ----

/// A child process whose stdout is read line by line in the background; SIGKILLed (after a
/// SIGCONT) when dropped, and by the kernel if the spawning thread exits.
pub struct Proc {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    label: String,
}

impl Proc {
    /// Spawns `cmd` with piped stdin and stdout (stderr inherited).
    pub fn spawn(mut cmd: Command, label: &str) -> Proc {
        use std::io::BufRead;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        kill_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
            label: label.to_string(),
        }
    }

    /// Re-runs this test binary as a worker: `--exact <test> --nocapture`, with `env` set.
    pub fn worker(test: &str, env: &[(&str, String)], label: &str) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("current test binary"));
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn(cmd, label)
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting up to `limit`; `None` on timeout or end of output.
    pub async fn try_line(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.try_recv() {
                Ok(line) => return Some(line),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The text after `@@ ` in the next stdout line that has it, skipping the test harness's
    /// own output (which may precede it on the same line); panics after `limit`.
    pub async fn tagged(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_line(left).await {
                Some(line) => {
                    if let Some(at) = line.find("@@ ") {
                        return line[at + 3..].to_string();
                    }
                }
                None => panic!("{}: no `@@` line within {limit:?}", self.label),
            }
        }
    }

    /// The next `@@` line if one arrives within `limit`.
    pub async fn try_tagged(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.try_line(left).await?;
            if let Some(at) = line.find("@@ ") {
                return Some(line[at + 3..].to_string());
            }
        }
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().unwrap();
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, `"INT"`, `"KILL"`, …).
    pub fn signal(&self, sig: &str) {
        signal_pid(self.child.id(), sig);
    }

    /// Waits up to `limit` for the process to exit; panics if it does not.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_pid(self.child.id(), "CONT");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `kill -SIG pid`.
pub fn signal_pid(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Etcd {
    /// An `etcdctl --endpoints <this> <args>` command (API v3), not yet started.
    pub fn etcdctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(args);
        cmd
    }
}

/// Logs to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=coordination=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
