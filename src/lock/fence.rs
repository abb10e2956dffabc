//! Fencing: etcd transactions that commit only while a lock (or leadership) still holds.

use std::fmt;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::election::Leadership;
use super::mutex::LockGuard;
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};

/// A lock key and its fencing token (the key's create_revision).
///
/// The pair names one tenure of one holder: the key exists with that create_revision exactly
/// as long as that holder holds the lock. Later holders have higher tokens.
///
/// Inside etcd, compare with [`compare`](Self::compare) (or use
/// [`Coordinator::kv_txn_fenced`]). For a resource outside etcd, send the
/// [`token`](Self::token) with each write and have the resource keep the highest token it has
/// seen, rejecting lower ones (see the [lock safety guide](crate::docs::lock_safety)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    key: String,
    token: i64,
}

impl Fence {
    /// A fence from a lock key (namespace included) and its create_revision.
    pub fn new(key: impl Into<String>, token: i64) -> Self {
        Fence {
            key: key.into(),
            token,
        }
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token (the lock key's create_revision).
    pub fn token(&self) -> i64 {
        self.token
    }

    /// `create_revision(key) == token`: true exactly while this tenure holds. Put it in a
    /// [`Txn::when`] of your own.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.token)
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`@{}", self.key, self.token)
    }
}

impl From<&LockGuard> for Fence {
    fn from(guard: &LockGuard) -> Self {
        guard.fence()
    }
}

impl From<&Leadership> for Fence {
    fn from(leadership: &Leadership) -> Self {
        leadership.fence()
    }
}

impl Coordinator {
    /// A transaction that commits only while `fence` holds (`create_revision(lock key) ==
    /// token`). Add your own compares and operations, then [`commit`](FencedTxn::commit).
    ///
    /// ```no_run
    /// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
    /// use etcd_client::TxnOp;
    /// let guard = coord.lock("jobs/rebalance").await?;
    /// coord
    ///     .kv_txn_fenced(&guard)
    ///     .and_then([TxnOp::put("/jobs/rebalance/state", "done", None)])
    ///     .commit()
    ///     .await?; // ErrorKind::Conflict if the lock was lost meanwhile
    /// # Ok(()) }
    /// ```
    pub fn kv_txn_fenced(&self, fence: impl Into<Fence>) -> FencedTxn {
        FencedTxn {
            client: self.client(),
            fence: fence.into(),
            compares: Vec::new(),
            success: Vec::new(),
            failure: Vec::new(),
        }
    }
}

/// A transaction guarded by a [`Fence`]: made by [`Coordinator::kv_txn_fenced`].
///
/// Without compares of your own it is one etcd txn, `if fence then ops`. With compares or
/// `or_else` operations the fence guards a nested txn: `if fence then (if compares then ops
/// else failure_ops)`, so the failure branch still only runs while the lock holds.
#[must_use = "a FencedTxn does nothing until committed"]
pub struct FencedTxn {
    client: Client,
    fence: Fence,
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl fmt::Debug for FencedTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedTxn")
            .field("fence", &self.fence)
            .field("compares", &self.compares.len())
            .field("success", &self.success.len())
            .field("failure", &self.failure.len())
            .finish()
    }
}

impl FencedTxn {
    /// Adds compares (all must hold for the success operations to run).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds operations run when the fence and the compares hold.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations run when the fence holds but a compare does not.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Sends the transaction.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] if the fence no longer holds (the lock was released, lost or
    /// force-released, and nothing was written); the etcd error kinds if the request fails
    /// (e.g. [`ErrorKind::InvalidArgument`] for more than 128 operations).
    ///
    /// # Cancel safety
    /// One transaction: if the future is dropped after it was sent, it may or may not have
    /// committed (as with any etcd write whose answer is lost); it never commits without the
    /// fence holding.
    pub async fn commit(mut self) -> Result<FencedTxnResponse> {
        let fence = self.fence.clone();
        let nested = !self.compares.is_empty() || !self.failure.is_empty();
        let then = if nested {
            let inner = Txn::new()
                .when(std::mem::take(&mut self.compares))
                .and_then(std::mem::take(&mut self.success))
                .or_else(std::mem::take(&mut self.failure));
            vec![TxnOp::txn(inner)]
        } else {
            std::mem::take(&mut self.success)
        };
        let txn = Txn::new()
            .when([fence.compare()])
            .and_then(then)
            .or_else([TxnOp::get(fence.key.as_str(), None)]);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(|e| Error::etcd(format_args!("fenced txn on {fence}"), e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            let now = match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
                    Some(kv) => format!("create_revision is now {}", kv.create_revision()),
                    None => "the key is gone".to_string(),
                },
                _ => "the key changed".to_string(),
            };
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "lock no longer held: fencing token {} of `{}` is stale ({now})",
                    fence.token, fence.key
                ),
            )
            .with_key(fence.key)
            .with_revision(revision));
        }
        let inner = if nested {
            match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Txn(inner)) => inner,
                _ => {
                    return Err(Error::new(
                        ErrorKind::Etcd,
                        "unexpected fenced txn response",
                    ))
                }
            }
        } else {
            resp
        };
        Ok(FencedTxnResponse { revision, inner })
    }
}

/// The result of a [`FencedTxn`] whose fence held.
#[derive(Clone, Debug)]
pub struct FencedTxnResponse {
    revision: i64,
    inner: TxnResponse,
}

impl FencedTxnResponse {
    /// Whether your compares held (so the `and_then` operations ran); always `true` without
    /// compares.
    pub fn succeeded(&self) -> bool {
        self.inner.succeeded()
    }

    /// The etcd revision after the transaction.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The responses of the operations that ran, in order.
    pub fn op_responses(&self) -> Vec<TxnOpResponse> {
        self.inner.op_responses()
    }
}
