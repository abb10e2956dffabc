//! The live stream: prefix followers on the crate's own keys, each config prefix with a
//! published schema and the configured locks and elections; etcd reachability; and `/events`,
//! the server-sent event stream pages follow.
//!
//! Events: `seen` (data: the newest revision reported so far) first on every connection,
//! `change` (data: the etcd revision) whenever a followed range changes, and `etcd`
//! (data: `ok`, or the error while the console cannot reach etcd), sent first on every
//! connection and then whenever reachability changes.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use super::app::Shared;
use super::pages::prefixes::published;
use super::ConsoleOptions;
use crate::coordinator::Coordinator;
use crate::etcd::follow::{FollowOptions, Followed, PrefixFollower};
use crate::etcd::Etcd;

/// How often reachability is probed besides what the followers notice (a hung etcd).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the stream carries.
#[derive(Clone, Debug)]
pub(crate) enum LiveEvent {
    /// A followed range changed at this revision.
    Changed(i64),
    /// etcd became reachable (`None`) or was lost (the error).
    Etcd(Option<String>),
}

#[derive(Debug)]
struct Hub {
    tx: broadcast::Sender<LiveEvent>,
    lost: Mutex<Option<String>>,
    /// The newest revision a follower reported (0 before any).
    seen: AtomicI64,
}

impl Hub {
    fn changed(&self, revision: i64) {
        self.seen.fetch_max(revision, Ordering::Relaxed);
        let _ = self.tx.send(LiveEvent::Changed(revision));
    }

    fn reachable(&self) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.take().is_some() {
            tracing::info!("console: etcd reachable again");
            let _ = self.tx.send(LiveEvent::Etcd(None));
        }
    }

    fn lost(&self, error: String) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.is_none() {
            tracing::warn!(error = %error, "console: lost etcd");
            *lost = Some(error.clone());
            let _ = self.tx.send(LiveEvent::Etcd(Some(error)));
        }
    }
}

/// The followers' task and what it reports. Dropping the last clone stops the followers.
#[derive(Debug)]
pub(crate) struct Live {
    hub: Arc<Hub>,
    task: tokio::task::AbortHandle,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Live {
    pub(crate) fn start(coord: &Coordinator, options: &ConsoleOptions) -> Live {
        let (tx, _) = broadcast::channel(256);
        let hub = Arc::new(Hub {
            tx,
            lost: Mutex::new(None),
            seen: AtomicI64::new(0),
        });
        let mut names = options.locks.clone();
        names.extend(options.elections.iter().cloned());
        let task = tokio::spawn(supervise(coord.clone(), names, hub.clone())).abort_handle();
        Live { hub, task }
    }

    /// The error while the console cannot reach etcd.
    pub(crate) fn lost(&self) -> Option<String> {
        self.hub
            .lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The newest revision the followers reported: a page carries the value at its render, and
    /// the event stream sends the value at its opening, so a change in between still refreshes.
    pub(crate) fn seen(&self) -> i64 {
        self.hub.seen.load(Ordering::Relaxed)
    }

    fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.hub.tx.subscribe()
    }
}

/// Starts the followers, and one for each config prefix whose schema appears later.
async fn supervise(coord: Coordinator, names: Vec<String>, hub: Arc<Hub>) {
    let mut set = JoinSet::new();
    let reserved = format!("{}/__coordination/", coord.namespace());
    let schema_root = format!("{reserved}schema/");
    let (rescan, mut rescans) = mpsc::channel(1);
    set.spawn(follow(
        coord.etcd().clone(),
        reserved,
        hub.clone(),
        Some((schema_root, rescan)),
    ));
    for name in names {
        match crate::lock::prefix_for(&coord, "lock", &name) {
            Ok(prefix) => {
                set.spawn(follow(coord.etcd().clone(), prefix, hub.clone(), None));
            }
            Err(e) => tracing::warn!(error = %e, "console: not following lock `{name}`"),
        }
    }
    set.spawn(probe(coord.clone(), hub.clone()));
    let mut known = HashSet::new();
    loop {
        match published(&coord).await {
            Ok(list) => {
                for p in list {
                    let full = format!("{}{}/", coord.namespace(), p.prefix);
                    if known.insert(full.clone()) {
                        set.spawn(follow(coord.etcd().clone(), full, hub.clone(), None));
                    }
                }
            }
            Err(e) => hub.lost(e.to_string()),
        }
        if rescans.recv().await.is_none() {
            break;
        }
    }
    // The set's drop aborts every follower.
}

/// Follows one prefix, reporting its changes and etcd's reachability. With `schema`, a change
/// under that root asks the supervisor to look for new config prefixes.
async fn follow(
    etcd: Etcd,
    prefix: String,
    hub: Arc<Hub>,
    schema: Option<(String, mpsc::Sender<()>)>,
) {
    let mut follower =
        PrefixFollower::prefix(etcd, &prefix, FollowOptions::default()).for_subsystem("console");
    let mut first = true;
    loop {
        match follower.next().await {
            Followed::Resynced { revision, .. } => {
                hub.reachable();
                if !std::mem::take(&mut first) {
                    hub.changed(revision);
                    if let Some((_, rescan)) = &schema {
                        let _ = rescan.try_send(());
                    }
                }
            }
            Followed::Batch { revision, changes } => {
                hub.reachable();
                hub.changed(revision);
                if let Some((root, rescan)) = &schema {
                    if changes.iter().any(|c| c.key().starts_with(root.as_bytes())) {
                        let _ = rescan.try_send(());
                    }
                }
            }
            Followed::Live => hub.reachable(),
            Followed::Interrupted { error, .. } => hub.lost(error.to_string()),
        }
    }
}

/// Asks etcd for its status every second: a hung etcd shows in the banner within seconds.
async fn probe(coord: Coordinator, hub: Arc<Hub>) {
    let mut client = coord.client();
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        match tokio::time::timeout(PROBE_TIMEOUT, client.status()).await {
            Ok(Ok(_)) => hub.reachable(),
            Ok(Err(e)) => hub.lost(format!("etcd status: {e}")),
            Err(_) => hub.lost(format!(
                "etcd did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        }
    }
}

fn etcd_event(lost: Option<String>) -> Event {
    Event::default()
        .event("etcd")
        .data(lost.unwrap_or_else(|| "ok".into()).replace('\n', " "))
}

/// `GET /events`: the server-sent event stream.
pub(crate) async fn events(
    State(state): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let seen = Event::default()
        .event("seen")
        .data(state.live.seen().to_string());
    let first = tokio_stream::iter([Ok(etcd_event(state.live.lost())), Ok(seen)]);
    let rest = BroadcastStream::new(state.live.subscribe()).map(|item| {
        Ok(match item {
            Ok(LiveEvent::Changed(revision)) => {
                Event::default().event("change").data(revision.to_string())
            }
            Ok(LiveEvent::Etcd(lost)) => etcd_event(lost),
            // Missed events: one change stands for them.
            Err(_) => Event::default().event("change").data("lagged"),
        })
    });
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::default())
}
