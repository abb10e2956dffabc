//! The reload task's main loop: keeps an etcd watch open whatever happens to etcd, and follows
//! the file watch.
//!
//! - A failed stream (etcd killed or restarted, connection reset, watch cancelled) is re-opened
//!   with exponential backoff and jitter, from the last processed revision + 1, so every change
//!   made meanwhile is applied once, in revision order.
//! - A resume revision that etcd has compacted is answered by re-reading the prefix at the
//!   current revision and applying it as one snapshot ([`Change::Resync`](super::Change)).
//! - A hung server or silent partition is detected by the HTTP/2 keepalive under the client
//!   and by watch progress requests: after `probe_after` without a message the task asks etcd
//!   for a progress notification, and treats no answer within `probe_timeout` as a failure.
//! - A catch-up larger than the client decodes in one message (many large writes while cut
//!   off) is answered like a compaction: the prefix is read again in pages at the current
//!   revision and applied as one snapshot, then watched from there.
//! - The backoff is reset by progress (events or a progress answer), not by a stream that opens
//!   and fails at once, so a failure that repeats on every re-open backs off to `max_backoff`.
//! - After a cold start (bound without etcd) the prefix is read in full first.

use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse, WatchStream};
use tokio::time::{sleep_until, timeout, Instant};

use super::coord_config::CoordConfig;
use super::layers::FileWatch;
use super::reload::{Flow, Reloader};
use super::status::WatchState;
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Result};
use crate::kv::is_too_large;

/// An open watch and what the supervisor knows of its liveness.
struct Watching {
    stream: WatchStream,
    last_heard: Instant,
    probe_sent: Option<Instant>,
}

impl Watching {
    fn new(stream: WatchStream) -> Self {
        Watching {
            stream,
            last_heard: Instant::now(),
            probe_sent: None,
        }
    }

    /// When the next probe is due, or when the outstanding one times out.
    fn deadline(&self, probe_after: Duration, probe_timeout: Duration) -> Instant {
        match self.probe_sent {
            Some(sent) => sent + probe_timeout,
            None => self.last_heard + probe_after,
        }
    }
}

impl<T: CoordConfig> Reloader<T> {
    /// Runs until the handle is dropped (the task is aborted then).
    pub(crate) async fn run(mut self, file_watch: Option<FileWatch>) {
        let timing = self.timing;
        let mut backoff = Backoff::new(timing.backoff_base, timing.backoff_max);
        let mut watching: Option<Watching> = None;
        let mut retry_at: Option<Instant> = Some(Instant::now());
        let mut file_due: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let probe_at = watching
                .as_ref()
                .map(|w| w.deadline(timing.probe_after, timing.probe_timeout));
            tokio::select! {
                message = next_message(watching.as_mut()) => {
                    let outcome = match message {
                        Ok(Some(response)) => {
                            if let Some(w) = watching.as_mut() {
                                w.last_heard = Instant::now();
                                w.probe_sent = None;
                            }
                            if response.created() {
                                self.set_status(WatchState::Live, None);
                            } else {
                                // Progress: events applied or etcd confirmed we are current. A
                                // stream that opens and then fails at once (a catch-up it cannot
                                // deliver) does not reset the backoff.
                                backoff.reset();
                            }
                            self.on_response(response).await
                        }
                        Ok(None) => Err(Error::new(ErrorKind::Unavailable, "etcd closed the watch stream")),
                        Err(e) if is_too_large(&e) => {
                            // The catch-up since the resume revision is larger than the client
                            // decodes in one message: read the prefix in pages instead, at the
                            // current revision, and watch on from there.
                            tracing::warn!(
                                prefix = %self.state.prefix,
                                resume_revision = self.state.revision + 1,
                                error = %e,
                                "watch catch-up larger than one message; re-reading the prefix in pages"
                            );
                            match self.resync().await {
                                Ok(()) => {
                                    backoff.reset();
                                    Ok(Flow::Reopen)
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(Error::etcd("config watch stream", e)),
                    };
                    match outcome {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Reopen) => {
                            watching = None;
                            retry_at = Some(Instant::now());
                        }
                        Err(error) => {
                            watching = None;
                            retry_at = Some(self.failed(error, &mut backoff));
                        }
                    }
                }
                () = sleep_until(probe_at.unwrap_or(now)), if probe_at.is_some() => {
                    let Some(w) = watching.as_mut() else { continue };
                    let outcome = if w.probe_sent.is_some() {
                        Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "etcd did not answer a watch progress request within {} ms (hung server or partition)",
                                timing.probe_timeout.as_millis()
                            ),
                        ))
                    } else {
                        match w.stream.request_progress().await {
                            Ok(()) => {
                                w.probe_sent = Some(Instant::now());
                                Ok(())
                            }
                            Err(e) => Err(Error::etcd("requesting watch progress", e)),
                        }
                    };
                    if let Err(error) = outcome {
                        watching = None;
                        retry_at = Some(self.failed(error, &mut backoff));
                    }
                }
                () = sleep_until(retry_at.unwrap_or(now)), if watching.is_none() => {
                    match self.connect(timing.probe_timeout).await {
                        Ok(stream) => {
                            watching = Some(Watching::new(stream));
                            retry_at = None;
                        }
                        Err(error) => retry_at = Some(self.failed(error, &mut backoff)),
                    }
                }
                () = file_changed(file_watch.as_ref()) => {
                    file_due = Some(Instant::now() + timing.debounce);
                }
                () = sleep_until(file_due.unwrap_or(now)), if file_due.is_some() => {
                    file_due = None;
                    self.reload_file();
                }
            }
        }
    }

    /// Reads the prefix if the etcd layer is not synced yet, then opens the watch from the last
    /// processed revision + 1. Each step is bounded by `limit`.
    async fn connect(&mut self, limit: Duration) -> Result<WatchStream> {
        if !self.state.synced {
            timeout(limit, self.resync())
                .await
                .map_err(|_| timed_out("reading the prefix", limit))??;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.state.revision + 1);
        let prefix = self.state.prefix.clone();
        timeout(
            limit,
            self.state.client.watch(prefix.as_bytes(), Some(options)),
        )
        .await
        .map_err(|_| timed_out("opening the watch", limit))?
        .map_err(|e| Error::etcd(format_args!("watching prefix `{prefix}`"), e))
    }

    /// Records a failure and returns when to try again.
    fn failed(&self, error: Error, backoff: &mut Backoff) -> Instant {
        let delay = backoff.next_delay();
        let stale = self.status().load().state == WatchState::Stale;
        tracing::debug!(prefix = %self.state.prefix, error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "config watch failed");
        let state = if stale {
            WatchState::Stale
        } else {
            WatchState::Reconnecting
        };
        self.set_status(state, Some(error));
        Instant::now() + delay
    }
}

fn timed_out(doing: &str, limit: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{doing} took longer than {} ms", limit.as_millis()),
    )
}

async fn next_message(
    watching: Option<&mut Watching>,
) -> std::result::Result<Option<WatchResponse>, etcd_client::Error> {
    match watching {
        Some(w) => w.stream.message().await,
        None => std::future::pending().await,
    }
}

async fn file_changed(watch: Option<&FileWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
