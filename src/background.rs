//! One process-wide thread for work that follows a bind but that the bind does not wait for:
//! working out the bound snapshot's provenance, taking the bound key set into the history view
//! of a handle whose bind does not wait for its history task.
//!
//! A thread made for each such job, or a runtime worker woken for it, tends to run on the CPU
//! of the task that just finished its part and to take that CPU from it: a bind's last steps
//! then wait out the scheduler's slice (a few ms) before they return. This thread is started
//! once, before any bind, and on Linux it runs under `SCHED_BATCH`: it keeps its fair share of
//! CPU (and the process's nice value) but never preempts a task when it wakes up, so handing it
//! a job costs the sender a channel send and nothing more.
//!
//! Jobs run one at a time, in the order they were sent. A job that panics is caught; the thread
//! goes on with the next. If the thread cannot be started, jobs run on the caller's thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The sending side of the thread's queue (`None`: the thread could not be started).
static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

fn queue() -> Option<&'static mpsc::Sender<Job>> {
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("coordination-background".into())
                .spawn(move || {
                    batch_policy();
                    for job in rx {
                        if catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a background job panicked; the next one runs");
                        }
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Starts the thread now (if it is not running), so that its start is not part of the first
/// bind's time.
pub(crate) fn start() {
    let _ = queue();
}

/// Runs `job` on the background thread, after the jobs sent before it; on the caller's thread
/// if the background thread cannot be started or has gone.
pub(crate) fn spawn(job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let job = match queue() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    job();
}

/// Runs `job` on the background thread and returns its result; `None` if it panicked.
///
/// Cancel safety: dropping the future does not stop the job; its result is dropped on the
/// background thread.
pub(crate) async fn run<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(move || {
        let _ = tx.send(job());
    });
    rx.await.ok()
}

/// Puts the calling thread under `SCHED_BATCH` (Linux), keeping its nice value. A failure
/// leaves it under the default policy: the jobs still run, only less politely.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads `param` (a valid, initialised `sched_param` that
    // outlives the call) and changes only the calling thread's policy (pid 0). SCHED_BATCH at
    // static priority 0 needs no privilege.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "background thread keeps the default scheduling policy");
    }
}

#[cfg(not(target_os = "linux"))]
fn batch_policy() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_caller_in_order_and_a_panic_does_not_stop_the_thread() {
        let caller = std::thread::current().id();
        let first = run(move || std::thread::current().id()).await.unwrap();
        assert_ne!(first, caller, "the job ran on the caller's thread");

        assert!(run(|| -> u32 { panic!("a job that fails") })
            .await
            .is_none());

        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            spawn(move || tx.send(i).unwrap());
        }
        drop(tx);
        let order: Vec<i32> = rx.iter().collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        assert_eq!(run(move || std::thread::current().id()).await, Some(first));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_under_sched_batch() {
        #[allow(unsafe_code)]
        // SAFETY: `sched_getscheduler(0)` only reads the calling thread's policy.
        let policy = run(|| unsafe { libc::sched_getscheduler(0) }).await;
        assert_eq!(policy, Some(libc::SCHED_BATCH));
    }
}
