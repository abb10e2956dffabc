//! The `etcdctl` binary against an [`Etcd`]: what an operator would type.

use std::process::{Command, Output, Stdio};

use super::etcd::Etcd;

impl Etcd {
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

    /// `etcdctl snapshot save FILE`: the member's state as of now.
    pub fn snapshot_save(&self, file: &std::path::Path) {
        let out = self.etcdctl(&["snapshot", "save", &file.display().to_string()]);
        assert!(
            out.status.success(),
            "snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

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

pub(crate) fn header_revision(json: &[u8]) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(json).expect("etcdctl -w json output");
    v["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {v}"))
}
