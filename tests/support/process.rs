//! Child processes for tests: [`Proc`] (a program or a re-run of this test binary as a worker,
//! its stdout read line by line), killed when dropped and by the kernel if the spawning thread
//! exits first.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits, so no etcd
/// outlives a test that aborted without unwinding.
#[allow(unsafe_code)]
pub(crate) fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own process state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

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
