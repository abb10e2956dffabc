//! The real `coordctl` binary against a test etcd.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Output, Stdio};

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

/// Spawns `cmd` (a `coordctl config watch …` from [`command`], its stdout set by the caller) with
/// stderr piped, and waits for its first stderr line, `watching PREFIX from revision N`: from then
/// on the watch is in place and every later write reaches it. Returns the child and the rest of
/// its stderr.
pub fn start_watch(cmd: &mut Command) -> (Child, BufReader<ChildStderr>) {
    let mut watch = cmd.stderr(Stdio::piped()).spawn().expect("spawn coordctl");
    let mut stderr = BufReader::new(watch.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read coordctl's stderr");
    assert!(line.starts_with("watching"), "{line}");
    (watch, stderr)
}
