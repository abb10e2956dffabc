//! Lock administration: who holds a lock, who waits, and forced release.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp};

use super::queue::{prefix_for, read_members};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::lease::remaining_ttl;

/// One key in a lock's queue: the holder or a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockEntry {
    /// The etcd key, namespace included (`[{namespace}/]NAME/{lease:x}`).
    pub key: String,
    /// The lease the key lives on (0 for a key without lease).
    pub lease: i64,
    /// The key's create_revision: its place in the queue, and the holder's fencing token.
    pub create_revision: i64,
    /// The lease's remaining TTL when read (whole seconds, rounded down); `None` without a
    /// lease, when the lease is already gone, or when not read
    /// ([`Coordinator::force_unlock`] does not read it).
    pub remaining_ttl: Option<Duration>,
    /// The key's value: empty for locks, the proclaimed value for elections.
    pub value: Vec<u8>,
}

/// A lock's queue as of one etcd revision. Works for elections too (the holder is the leader).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The key prefix, namespace included, ending with `/`.
    pub prefix: String,
    /// The holder: the direct child `{prefix}{lease:x}` with the lowest create_revision.
    /// `None` when the lock is free. Keys of nested names are not part of the queue.
    pub holder: Option<LockEntry>,
    /// The waiters in the order they will get the lock.
    pub waiters: Vec<LockEntry>,
    /// The etcd revision the queue was read at.
    pub revision: i64,
}

impl Coordinator {
    /// Reads the holder and waiters of lock `name` (the holder first, then the waiters in
    /// order), with each lease's remaining TTL. `coordctl lock ls NAME` prints this. Only the
    /// direct children `NAME/{lease:x}` are listed: the keys of a nested lock such as
    /// `NAME/rebalance` are its own, not waiters of `NAME`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an empty name; the etcd error kinds if the prefix
    /// cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: reads only.
    pub async fn lock_status(&self, name: &str) -> Result<LockStatus> {
        let prefix = prefix_for(self, "lock", name)?;
        let client = self.client();
        let (revision, kvs) = read_members(self.etcd(), &prefix).await?;
        let mut entries = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let remaining_ttl = if kv.lease() == 0 {
                None
            } else {
                remaining_ttl(&client, kv.lease()).await?
            };
            entries.push(entry(kv, remaining_ttl));
        }
        let mut entries = entries.into_iter();
        Ok(LockStatus {
            prefix,
            holder: entries.next(),
            waiters: entries.collect(),
            revision,
        })
    }

    /// Deletes the holder's key of lock `name` (only if it is still the same key and
    /// create_revision, so a new holder is never hit). The holder is the direct child
    /// `NAME/{lease:x}` with the lowest create_revision; a nested lock such as `NAME/rebalance`
    /// is never touched. The holder's
    /// [`lost`](crate::lock::LockGuard::lost) fires, its fenced writes fail, and the next waiter gets
    /// the lock. The holder's lease is left alone. Returns the released entry, `None` if the
    /// lock was free. `coordctl lock release NAME` runs this.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if the holder changed between the read and the delete (retry);
    /// [`ErrorKind::InvalidArgument`] for an empty name; the etcd error kinds.
    ///
    /// # Cancel safety
    /// The delete is one guarded transaction: if the future is dropped after it was sent, the
    /// holder may or may not have been released (read [`lock_status`](Self::lock_status) to
    /// know); it never releases a later holder.
    pub async fn force_unlock(&self, name: &str) -> Result<Option<LockEntry>> {
        let prefix = prefix_for(self, "lock", name)?;
        let mut client = self.client();
        let (_, members) = read_members(self.etcd(), &prefix).await?;
        let Some(kv) = members.first() else {
            return Ok(None);
        };
        let holder = entry(kv, None);
        let txn = Txn::new()
            .when([Compare::create_revision(
                kv.key(),
                CompareOp::Equal,
                kv.create_revision(),
            )])
            .and_then([TxnOp::delete(kv.key(), None)]);
        let resp = client
            .txn(txn)
            .await
            .map_err(|e| Error::etcd(format_args!("deleting `{}`", holder.key), e))?;
        if !resp.succeeded() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the holder of `{prefix}` changed while releasing it; retry"),
            )
            .with_key(holder.key));
        }
        tracing::info!(key = %holder.key, token = holder.create_revision, "lock force-released");
        Ok(Some(holder))
    }
}

fn entry(kv: &KeyValue, remaining_ttl: Option<Duration>) -> LockEntry {
    LockEntry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        lease: kv.lease(),
        create_revision: kv.create_revision(),
        remaining_ttl,
        value: kv.value().to_vec(),
    }
}
