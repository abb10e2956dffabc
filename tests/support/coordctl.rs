//! The real `coordctl` binary against a test etcd.

use std::process::{Command, Output, Stdio};

use super::Etcd;

/// `coordctl --endpoints <etcd> ARGS…`, author `ops`, no standard input, and no
/// `ETCD_ENDPOINTS` from the environment the tests run in.
pub fn command(etcd: &Etcd, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
    cmd.arg("--endpoints")
        .arg(etcd.endpoint())
        .args(args)
        .env_remove("ETCD_ENDPOINTS")
        .env("COORDCTL_AUTHOR", "ops")
        .stdin(Stdio::null());
    cmd
}

/// Runs [`command`] to its end.
pub fn run(etcd: &Etcd, args: &[&str]) -> Output {
    command(etcd, args).output().expect("run coordctl")
}

/// An outcome for assertion messages: exit code, stdout and stderr.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
