//! The queue protocol shared by locks and elections: Go's `concurrency.Mutex` and
//! `concurrency.Election` key layout and order, so that `etcdctl lock` / `etcdctl elect` and
//! the server's Lock/Election RPCs interoperate.
//!
//! The queue of `NAME` is made of its *members*, the direct children `NAME/{lease:x}` (one
//! segment of lowercase hex after `NAME/`, see [`is_member`]). Keys of nested names such as
//! `NAME/rebalance/{lease:x}` belong to the lock `NAME/rebalance` and are never owner, waiter
//! or predecessor here. (Go's `concurrency.Mutex` takes every key under `NAME/`; see the
//! module docs of [`crate::lock`].)
//!
//! 1. One transaction: if `PREFIX{lease:x}` does not exist, create it on the session lease
//!    (else read it: the session already queues there), and read the key with the lowest
//!    create_revision in the members' key range. If that key is a member, it is the owner;
//!    if it is a nested name's, the members are read in full to decide.
//! 2. If our key is not the owner, watch the member with the next-lower create_revision for
//!    its delete, then look again (so a waiter wakes only when its predecessor goes: FIFO, no
//!    thundering herd).
//! 3. When no lower member is left, check that our key still exists with the same
//!    create_revision (it may have been force-released or its lease may have expired).

use std::sync::OnceLock;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};
use tokio::time::Instant;

use super::monitor::{lock_follow_options, KeyMonitor};
use super::session::{KeyRef, LostReason, Session};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::etcd::follow::key_gone;
use crate::etcd::Backoff;
use crate::etcd::{read_range, Etcd};

/// `NAME` → the key prefix `NAME/`, under the namespace as `{namespace}/NAME/` (one `/`
/// between them; a trailing `/` in `NAME` is ignored). Without a namespace the keys are exactly
/// those of `etcdctl lock NAME`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for an empty name.
pub(crate) fn prefix_for(coord: &Coordinator, what: &str, name: &str) -> Result<String> {
    let trimmed = name.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("empty {what} name"),
        ));
    }
    if coord.namespace().is_empty() || trimmed.starts_with('/') {
        Ok(format!("{}/", coord.key(trimmed)))
    } else {
        Ok(format!("{}/{trimmed}/", coord.namespace()))
    }
}

/// The session's key under `prefix`: `PREFIX{lease:x}` (lowercase hex, as Go writes it).
pub(crate) fn member_key(prefix: &str, lease: i64) -> String {
    format!("{prefix}{lease:x}")
}

/// Whether `key` is a member of the queue under `prefix`: a direct child `PREFIX{lease:x}`,
/// one segment of 1 to 16 lowercase hex digits after the prefix. Keys of nested names
/// (`PREFIXrebalance/{lease:x}` for the lock `NAME/rebalance`) are not members: they belong
/// to another lock.
pub(crate) fn is_member(prefix: &str, key: &[u8]) -> bool {
    key.strip_prefix(prefix.as_bytes()).is_some_and(|rest| {
        (1..=16).contains(&rest.len())
            && rest
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    })
}

/// The key range `[PREFIX0, PREFIXg)`: every member key, and only the nested names that start
/// with a hex digit besides.
fn member_range(prefix: &str) -> (String, String) {
    (format!("{prefix}0"), format!("{prefix}g"))
}

/// Get options for the key with the lowest create_revision in the member range of `prefix`
/// (the range starts at [`member_range`]'s first key). The key found may be a nested name's
/// (check it with [`is_member`]); if it is a member, it is the owner.
fn first_in_range(prefix: &str) -> GetOptions {
    GetOptions::new()
        .with_range(member_range(prefix).1)
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// The members of the queue under `prefix` (see [`is_member`]) as of one revision, in queue
/// order (ascending create_revision). Returns that revision and the members.
///
/// # Errors
/// The etcd error kinds if a page cannot be read.
pub(crate) async fn read_members(etcd: &Etcd, prefix: &str) -> Result<(i64, Vec<KeyValue>)> {
    let (start, end) = member_range(prefix);
    let (revision, mut kvs) =
        read_range(etcd, start.into_bytes(), end.into_bytes(), 1000, None).await?;
    kvs.retain(|kv| is_member(prefix, kv.key()));
    kvs.sort_by_key(KeyValue::create_revision);
    Ok((revision, kvs))
}

/// What step 1 found.
pub(crate) struct Enqueued {
    /// Our key's create_revision.
    pub(crate) rev: i64,
    /// Whether our key is the owner already.
    pub(crate) owner: bool,
    /// The value of our key if it existed before (the session already queued or held there).
    pub(crate) existing_value: Option<Vec<u8>>,
}

/// Step 1: creates (or finds) our key and reads the owner, in one transaction.
pub(crate) async fn enqueue(
    client: &mut Client,
    session: &Session,
    prefix: &str,
    key: &str,
    value: &[u8],
) -> Result<Enqueued> {
    let put = PutOptions::new().with_lease(session.lease_id());
    let first = member_range(prefix).0;
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, value, Some(put)),
            TxnOp::get(first.as_str(), Some(first_in_range(prefix))),
        ])
        .or_else([
            TxnOp::get(key, None),
            TxnOp::get(first.as_str(), Some(first_in_range(prefix))),
        ]);
    let resp = client.txn(txn).await.map_err(|e| {
        session.inner().lease.note_error(&e);
        Error::etcd(format_args!("queueing `{key}`"), e).needs(
            Permission::ReadWrite,
            &format!("the prefix `{prefix}`"),
            key,
        )
    })?;
    let header_rev = resp.header().map_or(0, |h| h.revision());
    let mut ops = resp.op_responses().into_iter();
    let (first, owner) = (ops.next(), ops.next());
    let mut rev = header_rev;
    let mut existing_value = None;
    if !resp.succeeded() {
        let Some(TxnOpResponse::Get(get)) = first else {
            return Err(Error::new(ErrorKind::Etcd, "unexpected txn response"));
        };
        let Some(kv) = get.kvs().first() else {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("`{key}` was deleted while queueing"),
            ));
        };
        rev = kv.create_revision();
        existing_value = Some(kv.value().to_vec());
    }
    let lowest = match owner {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
        _ => return Err(Error::new(ErrorKind::Etcd, "unexpected txn response")),
    };
    let owner = match lowest {
        Some(kv) if is_member(prefix, kv.key()) => kv.create_revision() == rev,
        // A nested name's key came first: only the members decide.
        _ => {
            let (_, members) = read_members(session.coordinator().etcd(), prefix).await?;
            if !members
                .iter()
                .any(|kv| kv.key() == key.as_bytes() && kv.create_revision() == rev)
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("`{key}` was deleted while queueing"),
                )
                .with_key(key));
            }
            members
                .first()
                .is_some_and(|kv| kv.create_revision() == rev)
        }
    };
    Ok(Enqueued {
        rev,
        owner,
        existing_value,
    })
}

/// Steps 2 and 3: waits until every key created before ours is gone, then checks that ours is
/// still there. Watch and read errors are retried with backoff while the session lives.
///
/// # Errors
/// [`ErrorKind::Timeout`] when `deadline` passes; the session's lost error
/// ([`LostReason::into_error`]) if it is lost; [`ErrorKind::NotFound`] if our key was deleted;
/// [`ErrorKind::Auth`] / [`ErrorKind::InvalidArgument`] at once.
pub(crate) async fn wait_turn(
    session: &Session,
    prefix: &str,
    key: &str,
    rev: i64,
    deadline: Option<Instant>,
) -> Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let attempt = wait_deletes(session.coordinator().etcd(), prefix, key, rev);
        let result = tokio::select! {
            r = attempt => r,
            reason = session.lost() => {
                return Err(reason.into_error(&format!("waiting for `{prefix}`")))
            }
            () = sleep_until_opt(deadline) => return Err(timeout_error(prefix)),
        };
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("`{key}` was deleted while waiting (force-released or lease expired)"),
                )
                .with_key(key))
            }
            Err(e) if matches!(e.kind(), ErrorKind::Auth | ErrorKind::InvalidArgument) => {
                return Err(e)
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::debug!(key, error = %e, ?delay, "waiting for lock interrupted; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    reason = session.lost() => {
                        return Err(reason.into_error(&format!("waiting for `{prefix}`")))
                    }
                    () = sleep_until_opt(deadline) => return Err(timeout_error(prefix)),
                }
            }
        }
    }
}

pub(crate) fn timeout_error(prefix: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("timed out waiting for `{prefix}`"),
    )
}

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits until no member of the queue under `prefix` (see [`is_member`]) was created before
/// ours (Go's `waitDeletes`, without the keys of nested names), checking in the same read that
/// our `key` still exists with create_revision `rev`. `Ok(true)` when our turn has come,
/// `Ok(false)` when our key is gone.
async fn wait_deletes(etcd: &Etcd, prefix: &str, key: &str, rev: i64) -> Result<bool> {
    loop {
        let (at, members) = read_members(etcd, prefix).await?;
        if !members
            .iter()
            .any(|kv| kv.key() == key.as_bytes() && kv.create_revision() == rev)
        {
            return Ok(false);
        }
        let Some(before) = members.iter().rev().find(|kv| kv.create_revision() < rev) else {
            return Ok(true);
        };
        wait_delete(etcd, before.key(), before.create_revision(), at).await?;
    }
}

/// Waits for a delete of `key` (created at `create_revision`) after revision `at`.
async fn wait_delete(etcd: &Etcd, key: &[u8], create_revision: i64, at: i64) -> Result<()> {
    let key = String::from_utf8_lossy(key);
    key_gone(
        etcd.clone(),
        &key,
        create_revision,
        Some(at),
        lock_follow_options(),
    )
    .await
}

/// One use of a key by a session: a guard, a leadership, or an acquisition in progress.
/// Releasing it deletes the key when it was the session's last use of it (or revokes the
/// lease when the session was opened for this use alone). Dropping it releases in the
/// background.
pub(crate) struct Held {
    pub(crate) session: Session,
    /// The session was opened for this use alone: release revokes it.
    pub(crate) owned: bool,
    key_ref: KeyRef,
    pub(crate) key: String,
    /// The key's create_revision (0 until known).
    pub(crate) token: i64,
    monitor: OnceLock<Option<KeyMonitor>>,
    released: bool,
    /// Records how long the key was held, at release (guards of named locks).
    hold: Option<(metrics::Histogram, std::time::Instant)>,
}

impl Held {
    /// Counts one more use of `key` by `session`, waiting (until `deadline`) for a release of
    /// the same key by the same session to finish. Returns the use and the held count guard;
    /// the caller creates or reads the key, then drops the guard.
    pub(crate) async fn register(
        session: &Session,
        owned: bool,
        key: String,
        deadline: Option<Instant>,
        prefix: &str,
    ) -> Result<(Held, tokio::sync::OwnedMutexGuard<u32>)> {
        let key_ref = session.key_ref(&key);
        let mut users = tokio::select! {
            users = key_ref.clone().lock_owned() => users,
            () = sleep_until_opt(deadline) => {
                session.forget_key(&key, &key_ref);
                return Err(timeout_error(prefix));
            }
        };
        *users += 1;
        let held = Held {
            session: session.clone(),
            owned,
            key_ref,
            key,
            token: 0,
            monitor: OnceLock::new(),
            released: false,
            hold: None,
        };
        Ok((held, users))
    }

    /// Starts watching the key for its delete (once `token` is known, when the guard or
    /// leadership is made), so that [`lost_reason`](Self::lost_reason) reports a delete that
    /// happened before anyone asked. Calling it again does nothing.
    pub(crate) fn watch_key(&self) {
        self.monitor();
    }

    fn monitor(&self) -> Option<&KeyMonitor> {
        self.monitor
            .get_or_init(|| {
                KeyMonitor::start(
                    self.session.coordinator().etcd().clone(),
                    self.key.clone(),
                    self.token,
                )
            })
            .as_ref()
    }

    /// Why the key can no longer be relied on, if it cannot.
    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        if let Some(reason) = self.session.lost_reason() {
            return Some(reason);
        }
        self.monitor()
            .filter(|m| m.deleted())
            .map(|_| LostReason::KeyDeleted)
    }

    /// Resolves when the session is lost or the key is deleted.
    pub(crate) async fn lost(&self) -> LostReason {
        match self.monitor() {
            Some(monitor) => tokio::select! {
                reason = self.session.lost() => reason,
                () = monitor.wait() => LostReason::KeyDeleted,
            },
            None => self.session.lost().await,
        }
    }

    /// Releases now (see the type docs). The release runs in a task of its own, so dropping
    /// this future does not leave the key (or the user count) half released.
    ///
    /// # Errors
    /// The etcd error kinds if the delete or revoke fails; it is then retried in the
    /// background until it succeeds or the lease is gone. [`ErrorKind::Closed`] if the
    /// runtime shut down before the release finished.
    /// Starts timing the hold on `histogram` (recorded at release or drop).
    pub(crate) fn time_hold(&mut self, histogram: metrics::Histogram) {
        self.hold = Some((histogram, std::time::Instant::now()));
    }

    fn record_hold(&mut self) {
        if let Some((histogram, since)) = self.hold.take() {
            histogram.record(since.elapsed().as_secs_f64());
        }
    }

    pub(crate) async fn release(mut self) -> Result<()> {
        self.record_hold();
        self.released = true;
        self.monitor.take();
        let task = release(
            self.session.clone(),
            self.owned,
            self.key_ref.clone(),
            std::mem::take(&mut self.key),
        );
        tokio::spawn(task).await.unwrap_or_else(|error| {
            Err(Error::new(
                ErrorKind::Closed,
                format!("releasing a lock or leader key: the release task ended: {error}"),
            ))
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.record_hold();
        self.monitor.take();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return; // The key goes with the lease: revoked when the session drops, or expired.
        };
        let (session, owned, key_ref, key) = (
            self.session.clone(),
            self.owned,
            self.key_ref.clone(),
            std::mem::take(&mut self.key),
        );
        handle.spawn(async move {
            if let Err(e) = release(session, owned, key_ref, key.clone()).await {
                tracing::debug!(key, error = %e, "background release failed; retrying");
            }
        });
    }
}

async fn release(session: Session, owned: bool, key_ref: KeyRef, key: String) -> Result<()> {
    if owned {
        let result = session.inner().revoke().await;
        if result.is_err() {
            spawn_retry(session, key_ref, None, key);
        }
        return result;
    }
    let mut users = key_ref.clone().lock_owned().await;
    *users = users.saturating_sub(1);
    if *users > 0 || session.inner().is_closed() {
        drop(users);
        session.forget_key(&key, &key_ref);
        return Ok(());
    }
    let mut client = session.inner().client.clone();
    match client.delete(key.as_str(), None).await {
        Ok(_) => {
            drop(users);
            session.forget_key(&key, &key_ref);
            Ok(())
        }
        Err(e) => {
            let err = Error::etcd(
                format_args!("deleting `{key}` (retrying in the background)"),
                e,
            );
            spawn_retry(session, key_ref, Some(users), key);
            Err(err)
        }
    }
}

/// Keeps deleting `key` (or revoking the session when `users` is `None`) until it works or the
/// lease is gone. Holding `users` keeps the session from re-creating the key meanwhile.
fn spawn_retry(
    session: Session,
    key_ref: KeyRef,
    users: Option<tokio::sync::OwnedMutexGuard<u32>>,
    key: String,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        // A revoke is retried until the (no longer kept) lease would have expired anyway; a
        // delete until it works or the session is lost, since the session keeps the key alive.
        let give_up = std::time::Instant::now() + session.granted_ttl() * 2;
        let mut client = session.inner().client.clone();
        while users.is_some() || std::time::Instant::now() < give_up {
            tokio::time::sleep(backoff.next_delay()).await;
            let done = match users {
                Some(_) if session.is_lost() => true,
                Some(_) => client.delete(key.as_str(), None).await.is_ok(),
                None => session.inner().lease.revoke().await.is_ok(),
            };
            if done {
                break;
            }
        }
        drop(users);
        session.forget_key(&key, &key_ref);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_direct_children_with_a_lowercase_hex_lease() {
        assert!(is_member("jobs/", b"jobs/694d9a3b5c2e1f07"));
        assert!(is_member("jobs/", b"jobs/0"));
        assert!(is_member("/ns/jobs/", b"/ns/jobs/7fffffffffffffff"));
        for key in [
            &b"jobs/rebalance/694d9a3b5c2e1f07"[..],
            b"jobs/backfill/694d9a3b5c2e1f07",
            b"jobs/abc/1",
            b"jobs/",
            b"jobs/694D9A3B",
            b"jobs/1234567890abcdef0",
            b"jobs/12 ",
            b"jobsx/12",
            b"other/12",
        ] {
            assert!(!is_member("jobs/", key), "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn the_member_range_holds_every_member_key() {
        let (start, end) = member_range("jobs/");
        for key in ["jobs/0", "jobs/9", "jobs/a", "jobs/ffffffffffffffff"] {
            assert!(start.as_str() <= key && key < end.as_str(), "{key}");
        }
        for key in ["jobs/rebalance/1", "jobs/", "jobs/-", "jobs/z"] {
            assert!(!(start.as_str() <= key && key < end.as_str()), "{key}");
        }
    }
}
