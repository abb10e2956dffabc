//! [`PrefixFollower`]: one key range followed through whatever etcd does, as a sequence of
//! [`Followed`] items.
//!
//! The contract, which every user (config reload, registry watch and live view, the history
//! change feed, lock monitors, election observers) relies on:
//!
//! - **Read, then watch.** The range is read at one revision R (in pages, see
//!   [`read_range`](super::read_range)) and delivered as [`Followed::Resynced`]; the watch
//!   then starts at R + 1, so nothing between the read and the watch is missed. A follower
//!   made with [`PrefixFollower::resume_after`] skips the read: its owner already knows the
//!   range as of R.
//! - **One revision, one batch.** Events are grouped by revision (one transaction's events
//!   share one) and delivered as [`Followed::Batch`] in revision order, each revision once,
//!   even across re-opens.
//! - **Failures re-open.** A failed stream (etcd killed or restarted, connection reset, a
//!   watch cancelled because the member lost its leader) is re-opened from the last delivered
//!   revision + 1 after a backoff with jitter. The backoff is reset by progress (events, a
//!   progress answer, a successful read), never by a stream that opens and fails at once, so a
//!   failure that repeats on every re-open backs off to the maximum instead of hammering etcd.
//!   Each failure is delivered as [`Followed::Interrupted`].
//! - **Hangs are probed.** After `probe_after` without a message the follower asks etcd for a
//!   progress notification; no answer within `probe_timeout` counts as a failure (a hung
//!   server, a silent partition).
//! - **Resyncs replace the state.** A resume revision etcd has compacted, a catch-up larger
//!   than the client decodes in one message, and a cluster that went back in time (restored
//!   from a snapshot: its revision or raft term went backwards, or its cluster id changed, as
//!   a linearizable read confirms) all lead to a fresh paged read of the range at the current
//!   revision, delivered as [`Followed::Resynced`] with the [`Resync`] reason; the owner
//!   replaces what it knew by it.
//! - **Live means caught up.** [`Followed::Live`] comes once per (re-)open, when the watch is
//!   open *and* every change etcd had when it was opened has been delivered: the follower
//!   compares the keys it knows (count, newest `mod_revision`) with a keys-only read at the
//!   watch's creation revision. A backlog after a partition therefore never counts as live.
//!
//! [`PrefixFollower::next`] is cancel-safe: every step either completes or leaves the follower
//! as it was (a read or an open cut short is simply done again).

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{
    GetOptions, KeyValue, SortOrder, SortTarget, WatchOptions, WatchResponse, WatchStream,
};
use metrics::{Counter, Gauge, Label};
use tokio::time::{sleep_until, timeout, Instant};

use super::{is_too_large, prefix_end, read_range, Backoff, Etcd};
use crate::error::{Error, ErrorKind, Permission};
use crate::telemetry::{self as t, ByReason};

/// etcd's `mvccpb.Event.EventType` of a put.
const PUT: i32 = 0;
/// etcd's `mvccpb.Event.EventType` of a delete.
const DELETE: i32 = 1;

/// How a [`PrefixFollower`] paces itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FollowOptions {
    /// Keys per page of a read (pages also halve when over the decode limit).
    pub(crate) page_size: i64,
    /// Silence after which a progress request is sent.
    pub(crate) probe_after: Duration,
    /// How long an answer to it (or a read, or an open) may take.
    pub(crate) probe_timeout: Duration,
    /// The first re-open delay (doubling, with jitter).
    pub(crate) backoff_base: Duration,
    /// The largest re-open delay.
    pub(crate) backoff_max: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            page_size: 1000,
            probe_after: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// One change in a [`Followed::Batch`].
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// The key was created or overwritten: its new key-value.
    Put(KeyValue),
    /// The key was deleted: its key, and the revision of the delete as `mod_revision`.
    Delete(KeyValue),
}

impl Change {
    /// The key-value of the change.
    pub(crate) fn kv(&self) -> &KeyValue {
        match self {
            Change::Put(kv) | Change::Delete(kv) => kv,
        }
    }

    /// The key changed.
    pub(crate) fn key(&self) -> &[u8] {
        self.kv().key()
    }
}

/// Why a prefix was read again instead of followed by events: in
/// [`Change::Resync`](crate::config::ReloadCause::Resync), [`ConfigStatus::last_resync`](crate::config::ConfigStatus::last_resync)
/// and [`PrefixChange::resync`](crate::history::PrefixChange::resync).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResyncReason {
    /// The first read of the prefix; for a bound config handle, the first contact with etcd
    /// after binding without it (cold start).
    Initial,
    /// The watch could not resume: etcd compacted its revision away.
    Compacted {
        /// The oldest revision etcd still keeps.
        compact_revision: i64,
    },
    /// The changes made while the watch was cut off did not fit in one message (see
    /// [`CoordinatorOptions::with_max_decode_bytes`](crate::CoordinatorOptions::with_max_decode_bytes)).
    TooLarge,
    /// etcd went back in time: its revision fell below one already seen (or its raft term
    /// went back, or its cluster id changed), as after a restore from a snapshot. The prefix
    /// is followed from the restored cluster's own revision on, so revisions restart lower.
    Restored {
        /// The newest revision seen before the restore.
        previous_revision: i64,
    },
}

impl std::fmt::Display for ResyncReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResyncReason::Initial => f.write_str("first read"),
            ResyncReason::Compacted { compact_revision } => {
                write!(f, "resume revision compacted (etcd keeps {compact_revision} on)")
            }
            ResyncReason::TooLarge => f.write_str("catch-up larger than one message"),
            ResyncReason::Restored { previous_revision } => write!(
                f,
                "etcd went back in time from revision {previous_revision} (restored from a snapshot?)"
            ),
        }
    }
}

/// What a [`PrefixFollower`] yields.
#[derive(Debug)]
pub(crate) enum Followed {
    /// The whole range as of `revision`, replacing everything known before.
    Resynced {
        /// The revision the range was read at.
        revision: i64,
        /// Every key in the range, in key order.
        kvs: Vec<KeyValue>,
        /// Why it was read.
        reason: ResyncReason,
    },
    /// Every change of one revision, in etcd's order.
    Batch {
        /// The revision of the changes.
        revision: i64,
        /// The puts and deletes.
        changes: Vec<Change>,
    },
    /// The watch is open and everything etcd had when it opened has been delivered.
    Live,
    /// The read or watch failed; the follower tries again after `retry_in`.
    Interrupted {
        /// What failed.
        error: Error,
        /// The backoff delay before the next attempt.
        retry_in: Duration,
    },
}

/// An open watch and what is known of its liveness.
struct Watching {
    stream: WatchStream,
    last_heard: Instant,
    probe_sent: Option<Instant>,
}

/// What the follower must do before reading the stream again.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// Read the range's count and newest `mod_revision` at the watch's creation revision (0:
    /// at the current revision).
    CatchUp { created: i64 },
    /// A response header went backwards: confirm with a linearizable read.
    Backwards { now: i64, term: u64, cluster: u64 },
}

/// What the catch-up read found at the watch's creation revision.
#[derive(Clone, Copy, Debug)]
struct CatchUp {
    created: i64,
    count: i64,
    newest: i64,
}

/// One key range followed by a read and a self-healing watch. See the module docs.
pub(crate) struct PrefixFollower {
    etcd: Etcd,
    start: Vec<u8>,
    end: Vec<u8>,
    /// The range as shown in logs and errors.
    label: String,
    options: FollowOptions,
    /// The last delivered revision (0 before the first read).
    revision: i64,
    /// How many keys the range holds after what was delivered.
    count: i64,
    /// The newest `mod_revision` among those keys (a lower bound after deletes).
    newest: i64,
    /// The highest raft term and the cluster id seen in a response header.
    term: u64,
    cluster: Option<u64>,
    read: Option<ResyncReason>,
    watching: Option<Watching>,
    check: Option<Check>,
    catch_up: Option<CatchUp>,
    live: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
    pending: VecDeque<Followed>,
    /// How many watches were opened (the first included).
    opens: u64,
    /// Authenticate again before the next open: etcd refused the stream's auth token.
    reauthenticate: bool,
    /// A denial already led to authenticating again, with no progress since.
    reauthenticated: bool,
    /// The `subsystem` label of this follower's metrics.
    subsystem: &'static str,
    /// The metrics, made at the first step (after [`for_subsystem`](Self::for_subsystem)).
    metrics: Option<FollowerMetrics>,
    /// Set to the Unix time whenever etcd confirms the follower is current: when it turns
    /// live, and at every message of the watch while live (events, progress answers).
    confirmed: Option<Gauge>,
}

/// A follower's counters, labelled with its subsystem.
struct FollowerMetrics {
    opens: Counter,
    reopens: ByReason,
    resyncs: ByReason,
}

impl FollowerMetrics {
    fn new(subsystem: &'static str) -> Self {
        let labels = vec![Label::from_static_parts("subsystem", subsystem)];
        FollowerMetrics {
            opens: metrics::counter!(t::ETCD_WATCH_OPENS, labels.clone()),
            reopens: ByReason::new(t::ETCD_WATCH_REOPENS, labels.clone()),
            resyncs: ByReason::new(t::ETCD_WATCH_RESYNCS, labels),
        }
    }
}

impl std::fmt::Debug for PrefixFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixFollower")
            .field("range", &self.label)
            .field("revision", &self.revision)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl PrefixFollower {
    /// Follows every key under `prefix`, starting with a read.
    pub(crate) fn prefix(etcd: Etcd, prefix: &str, options: FollowOptions) -> Self {
        let end = prefix_end(prefix.as_bytes());
        Self::range(etcd, prefix.as_bytes().to_vec(), end, options)
    }

    /// Follows the one key `key`, starting with a read.
    pub(crate) fn key(etcd: Etcd, key: &str, options: FollowOptions) -> Self {
        let mut end = key.as_bytes().to_vec();
        end.push(0);
        Self::range(etcd, key.as_bytes().to_vec(), end, options)
    }

    /// Follows `[start, end)`, starting with a read.
    pub(crate) fn range(etcd: Etcd, start: Vec<u8>, end: Vec<u8>, options: FollowOptions) -> Self {
        let label = String::from_utf8_lossy(&start).into_owned();
        PrefixFollower {
            etcd,
            start,
            end,
            label,
            backoff: Backoff::new(options.backoff_base, options.backoff_max),
            options,
            revision: 0,
            count: 0,
            newest: 0,
            term: 0,
            cluster: None,
            read: Some(ResyncReason::Initial),
            watching: None,
            check: None,
            catch_up: None,
            live: false,
            retry_at: None,
            pending: VecDeque::new(),
            opens: 0,
            reauthenticate: false,
            reauthenticated: false,
            subsystem: "other",
            metrics: None,
            confirmed: None,
        }
    }

    /// Labels this follower's metrics with `subsystem` (`config`, `history`, `lock`, …;
    /// `other` if never called). Call before the first [`next`](Self::next).
    pub(crate) fn for_subsystem(mut self, subsystem: &'static str) -> Self {
        self.subsystem = subsystem;
        self
    }

    /// Sets `gauge` to the Unix time whenever etcd confirms the follower is current: when it
    /// turns live, and at every message of the watch while live (events, progress answers,
    /// which come at least every `probe_after` of silence).
    pub(crate) fn confirming(mut self, gauge: Gauge) -> Self {
        self.confirmed = Some(gauge);
        self
    }

    fn metrics(&mut self) -> &mut FollowerMetrics {
        let subsystem = self.subsystem;
        self.metrics
            .get_or_insert_with(|| FollowerMetrics::new(subsystem))
    }

    fn confirm(&self) {
        if let Some(gauge) = &self.confirmed {
            gauge.set(t::unix_now());
        }
    }

    /// Skips the first read: the owner knows the range as of `revision`, where it held `count`
    /// keys, the newest changed at `newest`. The watch starts at `revision + 1`.
    pub(crate) fn resume_after(mut self, revision: i64, count: usize, newest: i64) -> Self {
        self.read = None;
        self.revision = revision;
        self.count = i64::try_from(count).unwrap_or(i64::MAX);
        self.newest = newest;
        self
    }

    /// How many watches this follower has opened, the first included: a measure of how often
    /// it had to re-open.
    pub(crate) fn opens(&self) -> u64 {
        self.opens
    }

    /// The next item. Never fails: failures are [`Followed::Interrupted`] items, and the
    /// follower carries on. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Followed {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            self.step().await;
        }
    }

    /// One await's worth of work; results go to `pending`.
    async fn step(&mut self) {
        if let Some(check) = self.check {
            return self.run_check(check).await;
        }
        if self.watching.is_none() {
            if let Some(at) = self.retry_at {
                sleep_until(at).await;
                self.retry_at = None;
            }
            if let Some(reason) = self.read {
                return self.resync(reason).await;
            }
            return self.open().await;
        }
        let options = self.options;
        let Some(w) = self.watching.as_mut() else {
            return;
        };
        let deadline = match w.probe_sent {
            Some(sent) => sent + options.probe_timeout,
            None => w.last_heard + options.probe_after,
        };
        tokio::select! {
            message = w.stream.message() => self.on_message(message),
            () = sleep_until(deadline) => self.probe().await,
        }
    }

    /// Reads the whole range at the current revision.
    async fn resync(&mut self, reason: ResyncReason) {
        let limit = self.options.probe_timeout.max(Duration::from_secs(1)) * 2;
        let read = read_range(
            &self.etcd,
            self.start.clone(),
            self.end.clone(),
            self.options.page_size,
            None,
        );
        let (revision, kvs) = match timeout(limit, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return self.fail(error),
            Err(_) => return self.fail(timed_out(&format!("reading `{}`", self.label), limit)),
        };
        if reason != ResyncReason::Initial {
            tracing::warn!(range = %self.label, revision, %reason, "re-read the watched range");
            self.metrics()
                .resyncs
                .increment(t::RESYNC_REASONS[t::resync_index(reason)]);
        }
        self.read = None;
        self.revision = revision;
        self.count = i64::try_from(kvs.len()).unwrap_or(i64::MAX);
        self.newest = kvs.iter().map(KeyValue::mod_revision).max().unwrap_or(0);
        self.backoff.reset();
        self.pending.push_back(Followed::Resynced {
            revision,
            kvs,
            reason,
        });
    }

    /// Opens the watch at the last delivered revision + 1.
    async fn open(&mut self) {
        let limit = self.options.probe_timeout;
        if self.reauthenticate {
            // A watch is refused inside an open stream, where etcd-client's automatic token
            // refresh does not look: authenticate again here (a no-op without a user).
            match timeout(limit, self.etcd.client().refresh_token()).await {
                Ok(Ok(())) => {
                    self.reauthenticate = false;
                    self.reauthenticated = true;
                }
                Ok(Err(e)) => {
                    return self.fail(Error::etcd(
                        format_args!("authenticating again to watch `{}`", self.label),
                        e,
                    ))
                }
                Err(_) => {
                    return self.fail(timed_out(
                        &format!("authenticating again to watch `{}`", self.label),
                        limit,
                    ))
                }
            }
        }
        let options = WatchOptions::new()
            .with_range(self.end.clone())
            .with_start_revision(self.revision + 1);
        let mut client = self.etcd.watch_client();
        match timeout(limit, client.watch(self.start.clone(), Some(options))).await {
            Ok(Ok(stream)) => {
                self.opens += 1;
                self.metrics().opens.increment(1);
                self.watching = Some(Watching {
                    stream,
                    last_heard: Instant::now(),
                    probe_sent: None,
                });
            }
            Ok(Err(e)) => self.fail(Error::etcd(format_args!("watching `{}`", self.label), e)),
            Err(_) => self.fail(timed_out(
                &format!("opening the watch of `{}`", self.label),
                limit,
            )),
        }
    }

    /// After `probe_after` of silence, asks for progress; after `probe_timeout` without an
    /// answer, gives the stream up.
    async fn probe(&mut self) {
        let timeout = self.options.probe_timeout;
        let Some(w) = self.watching.as_mut() else {
            return;
        };
        if w.probe_sent.is_some() {
            return self.fail(Error::new(
                ErrorKind::Timeout,
                format!(
                    "etcd did not answer a watch progress request within {} ms (hung server or partition)",
                    timeout.as_millis()
                ),
            ));
        }
        match w.stream.request_progress().await {
            Ok(()) => w.probe_sent = Some(Instant::now()),
            Err(e) => self.fail(Error::etcd("requesting watch progress", e)),
        }
    }

    fn on_message(
        &mut self,
        message: std::result::Result<Option<WatchResponse>, etcd_client::Error>,
    ) {
        let mut response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                return self.fail(Error::new(
                    ErrorKind::Unavailable,
                    format!("etcd closed the watch of `{}`", self.label),
                ))
            }
            Err(e) if is_too_large(&e) => {
                tracing::warn!(
                    range = %self.label,
                    resume_revision = self.revision + 1,
                    error = %e,
                    "watch catch-up larger than one message; re-reading the range in pages"
                );
                return self.reread(ResyncReason::TooLarge);
            }
            Err(e) => return self.fail(Error::etcd(format_args!("watch of `{}`", self.label), e)),
        };
        if let Some(w) = self.watching.as_mut() {
            w.last_heard = Instant::now();
            w.probe_sent = None;
        }
        let header = response
            .header()
            .map(|h| (h.revision(), h.raft_term(), h.cluster_id()));
        // etcd's grpc-proxy answers a watch it joins to one already open with a `created` it
        // makes up, whose header holds only a revision (the watch's start): a raft term or
        // cluster id of 0 is unknown, not a change.
        let emulated = header.is_some_and(|(_, term, cluster)| term == 0 && cluster == 0);
        if let Some((now, term, cluster)) = header {
            let backwards = (now > 0 && now < self.revision)
                || (term > 0 && term < self.term)
                || (cluster != 0 && self.cluster.is_some_and(|c| c != cluster));
            if backwards {
                self.watching = None;
                self.check = Some(Check::Backwards { now, term, cluster });
                return;
            }
            self.term = self.term.max(term);
            if cluster != 0 {
                self.cluster = Some(cluster);
            }
        }
        if response.canceled() {
            if response.compact_revision() > 0 {
                let compact_revision = response.compact_revision();
                tracing::warn!(
                    range = %self.label,
                    resume_revision = self.revision + 1,
                    compact_revision,
                    "watch resume revision was compacted; re-reading the range"
                );
                return self.reread(ResyncReason::Compacted { compact_revision });
            }
            let reason = response.cancel_reason();
            let token = reason.contains("invalid auth token");
            let denied = reason.contains("permission denied");
            if token || (denied && !self.reauthenticated) {
                // An expired token (`--auth-token-ttl` of disuse), or one etcd forgot in a
                // restart; etcd 3.4 may report either as a denial. Authenticate again before
                // the next open.
                self.reauthenticate = true;
                self.fail(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "etcd refused the watch of `{}` ({reason}); authenticating again",
                        self.label
                    ),
                ));
                return;
            }
            if denied {
                let what = super::range::range_label(&self.start, &self.end);
                return self.fail(
                    Error::new(
                        ErrorKind::Auth,
                        format!("etcd refused the watch of `{}`: {reason}", self.label),
                    )
                    .needs(Permission::Read, &what, &self.label),
                );
            }
            return self.fail(Error::new(
                ErrorKind::Unavailable,
                format!("etcd cancelled the watch of `{}`: {reason}", self.label),
            ));
        }
        if response.created() {
            self.reauthenticated = false;
            let created = header.map_or(0, |(now, _, _)| now);
            if emulated {
                // Its revision is not the server's: compare with the range as it is now.
                self.check = Some(Check::CatchUp { created: 0 });
            } else if created <= self.revision {
                self.set_live();
            } else {
                self.check = Some(Check::CatchUp { created });
            }
            return;
        }
        // Events, or a progress answer: either way etcd is serving us.
        self.backoff.reset();
        if self.live {
            self.confirm();
        }
        let events = std::mem::take(&mut response.0.events);
        let mut batch: Vec<Change> = Vec::new();
        let mut batch_revision = 0;
        for event in events {
            let Some(kv) = event.kv else {
                continue;
            };
            let revision = kv.mod_revision;
            if revision <= self.revision {
                continue; // Delivered before a re-open.
            }
            if revision != batch_revision && !batch.is_empty() {
                self.deliver(batch_revision, std::mem::take(&mut batch));
            }
            batch_revision = revision;
            let created = kv.version == 1;
            let kv = KeyValue(kv);
            match event.r#type {
                PUT => {
                    if created {
                        self.count += 1;
                    }
                    batch.push(Change::Put(kv));
                }
                DELETE => {
                    self.count -= 1;
                    batch.push(Change::Delete(kv));
                }
                other => {
                    tracing::warn!(range = %self.label, event_type = other, "ignoring unknown watch event type");
                }
            }
        }
        if !batch.is_empty() {
            self.deliver(batch_revision, batch);
        }
        self.check_caught_up();
    }

    fn deliver(&mut self, revision: i64, changes: Vec<Change>) {
        self.revision = revision;
        if changes.iter().any(|c| matches!(c, Change::Put(_))) {
            self.newest = revision;
        }
        self.pending
            .push_back(Followed::Batch { revision, changes });
    }

    fn check_caught_up(&mut self) {
        let Some(c) = self.catch_up else {
            return;
        };
        if self.revision >= c.created || (self.revision >= c.newest && self.count == c.count) {
            self.catch_up = None;
            self.set_live();
        }
    }

    fn set_live(&mut self) {
        if !self.live {
            self.live = true;
            self.confirm();
            self.pending.push_back(Followed::Live);
        }
    }

    async fn run_check(&mut self, check: Check) {
        let limit = self.options.probe_timeout;
        match check {
            Check::CatchUp { created } => {
                let options = GetOptions::new()
                    .with_range(self.end.clone())
                    .with_revision(created)
                    .with_keys_only()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(1);
                let mut kv = self.etcd.kv();
                let read = timeout(limit, kv.get(self.start.clone(), Some(options))).await;
                self.check = None;
                match read {
                    Ok(Ok(resp)) => {
                        // 0: read at the current revision (after a proxy's made-up `created`).
                        let created = match created {
                            0 => resp.header().map_or(0, |h| h.revision()),
                            created => created,
                        };
                        self.catch_up = Some(CatchUp {
                            created,
                            count: resp.count(),
                            newest: resp.kvs().first().map_or(0, KeyValue::mod_revision),
                        });
                        self.check_caught_up();
                    }
                    Ok(Err(e)) => self.fail(Error::etcd(
                        format_args!("reading the size of `{}`", self.label),
                        e,
                    )),
                    Err(_) => self.fail(timed_out(
                        &format!("reading the size of `{}`", self.label),
                        limit,
                    )),
                }
            }
            Check::Backwards { now, term, cluster } => {
                // A member that lags behind the one we read from also reports an older
                // revision; a linearizable read tells a lagging member from a restored cluster.
                let options = GetOptions::new().with_count_only().with_limit(1);
                let mut kv = self.etcd.kv();
                let read = timeout(limit, kv.get(self.start.clone(), Some(options))).await;
                let header = match read {
                    Ok(Ok(resp)) => resp
                        .header()
                        .map(|h| (h.revision(), h.raft_term(), h.cluster_id())),
                    Ok(Err(e)) => {
                        return self.fail(Error::etcd(
                            format_args!("confirming the revision of `{}`", self.label),
                            e,
                        ))
                    }
                    Err(_) => {
                        return self.fail(timed_out(
                            &format!("confirming the revision of `{}`", self.label),
                            limit,
                        ))
                    }
                };
                self.check = None;
                let (current, current_term, current_cluster) =
                    header.unwrap_or((now, term, cluster));
                let restored = current < self.revision
                    || current_term < self.term
                    || self.cluster.is_some_and(|c| c != current_cluster);
                if restored {
                    tracing::warn!(
                        range = %self.label,
                        seen_revision = self.revision,
                        revision = current,
                        seen_raft_term = self.term,
                        raft_term = current_term,
                        "etcd went back in time (restored from a snapshot?); re-reading the range"
                    );
                    self.term = current_term;
                    self.cluster = Some(current_cluster);
                    let seen = self.revision;
                    // The restored cluster's revisions restart below ours: start from its own.
                    self.revision = 0;
                    self.live = false;
                    self.catch_up = None;
                    self.read = Some(ResyncReason::Restored {
                        previous_revision: seen,
                    });
                    self.retry_at = None;
                } else {
                    // Give the member time to catch up; the delay is not reset until progress.
                    let delay = self.backoff.next_delay();
                    tracing::debug!(range = %self.label, revision = now, retry_in_ms = delay.as_millis() as u64, "a lagging member answered; re-opening the watch");
                    self.live = false;
                    self.catch_up = None;
                    self.retry_at = Some(Instant::now() + delay);
                }
            }
        }
    }

    /// Drops the watch and reads the range again at once.
    fn reread(&mut self, reason: ResyncReason) {
        self.watching = None;
        self.live = false;
        self.catch_up = None;
        self.read = Some(reason);
        self.retry_at = None;
    }

    /// Records a failure: drops the watch and schedules the next attempt.
    fn fail(&mut self, error: Error) {
        let delay = self.backoff.next_delay();
        tracing::debug!(range = %self.label, error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "watch interrupted");
        self.metrics()
            .reopens
            .increment(t::kind_label(error.kind()));
        self.watching = None;
        self.check = None;
        self.catch_up = None;
        self.live = false;
        self.retry_at = Some(Instant::now() + delay);
        self.pending.push_back(Followed::Interrupted {
            error,
            retry_in: delay,
        });
    }
}

fn timed_out(doing: &str, limit: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{doing} took longer than {} ms", limit.as_millis()),
    )
}

/// Resolves when `key`, created at `create_revision`, no longer exists (deleted, or deleted
/// and created again). With `after`, the caller read the key at that revision and the watch
/// starts at `after + 1`; without, the key is read first (a key already gone resolves at once).
///
/// Failures are healed by the follower (paced by `options`); cancel-safe. Its metrics carry
/// `subsystem="lock"`: lock waiters and monitors are its users.
///
/// # Errors
/// Only errors no retry fixes: [`ErrorKind::Auth`] and [`ErrorKind::InvalidArgument`].
pub(crate) async fn key_gone(
    etcd: Etcd,
    key: &str,
    create_revision: i64,
    after: Option<i64>,
    options: FollowOptions,
) -> crate::error::Result<()> {
    let mut follower = PrefixFollower::key(etcd, key, options).for_subsystem("lock");
    if let Some(after) = after {
        follower = follower.resume_after(after, 1, create_revision);
    }
    loop {
        match follower.next().await {
            Followed::Resynced { kvs, .. } => {
                if !kvs.iter().any(|kv| kv.create_revision() == create_revision) {
                    return Ok(());
                }
            }
            Followed::Batch { changes, .. } => {
                let gone = changes.iter().any(|change| match change {
                    Change::Delete(_) => true,
                    Change::Put(kv) => kv.create_revision() != create_revision,
                });
                if gone {
                    return Ok(());
                }
            }
            Followed::Live => {}
            Followed::Interrupted { error, .. } => {
                if matches!(error.kind(), ErrorKind::Auth | ErrorKind::InvalidArgument) {
                    return Err(error);
                }
                tracing::debug!(key, error = %format!("{error:#}"), "key watch interrupted; re-opening");
            }
        }
    }
}
