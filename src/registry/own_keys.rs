//! [`OwnKeys`]: the two keys of one registration (status record and resolver entry), written
//! together in guarded transactions, and [`KeyWatch`], the watch of both.

use etcd_client::{Client, Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::instance::{naming_json, record_json, serving, Health, InstanceSpec};
use crate::etcd::follow::{Change, FollowOptions, Followed, PrefixFollower};
use crate::etcd::Etcd;

/// The status key and the resolver key of one instance.
#[derive(Clone, Debug)]
pub(super) struct OwnKeys {
    /// `<ns><status prefix>/<service>/<id>`: the full record, while registered.
    pub(super) status: String,
    /// `<ns><resolver prefix>/<service>/<id>`: the gRPC naming entry, while serving.
    pub(super) resolver: String,
    /// `<ns><status prefix>-drain/<service>/<id>`: an operator's drain request (only read).
    pub(super) drain: String,
}

/// When a guarded write goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guard {
    /// The status key is attached to this lease (the registration still owns the id).
    OnLease(i64),
    /// The status key does not exist (a re-registration, or writing deleted keys back).
    Absent,
}

/// The outcome of a guarded write.
#[derive(Debug)]
pub(super) enum Written {
    /// Written at this revision.
    Yes(i64),
    /// The guard failed; the status key as it is (if it exists).
    Taken(Option<KeyValue>),
}

impl OwnKeys {
    /// The transaction's writes for `spec` with `health` on `lease`: the status record put, and
    /// the resolver entry put (serving) or deleted (not serving).
    fn ops(&self, spec: &InstanceSpec, health: Health, lease: i64) -> Vec<TxnOp> {
        let on_lease = || Some(PutOptions::new().with_lease(lease));
        let mut ops = vec![TxnOp::put(
            self.status.as_bytes(),
            record_json(spec, health),
            on_lease(),
        )];
        if serving(health, spec.weight) {
            ops.push(TxnOp::put(
                self.resolver.as_bytes(),
                naming_json(spec),
                on_lease(),
            ));
        } else {
            ops.push(TxnOp::delete(self.resolver.as_bytes(), None));
        }
        ops
    }

    /// Writes both keys whatever is there, in one transaction that also reads the status key
    /// before. Returns the revision and the status key as it was (another registration with
    /// the same id, if any).
    pub(super) async fn replace(
        &self,
        client: &mut Client,
        spec: &InstanceSpec,
        health: Health,
        lease: i64,
    ) -> Result<(i64, Option<KeyValue>), etcd_client::Error> {
        let txn = Txn::new().and_then(
            std::iter::once(TxnOp::get(self.status.as_bytes(), None))
                .chain(self.ops(spec, health, lease))
                .collect::<Vec<_>>(),
        );
        let resp = client.txn(txn).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let previous = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        Ok((revision, previous))
    }

    /// Writes both keys if `guard` holds; otherwise reads the status key.
    pub(super) async fn write_if(
        &self,
        client: &mut Client,
        guard: Guard,
        spec: &InstanceSpec,
        health: Health,
        lease: i64,
    ) -> Result<Written, etcd_client::Error> {
        let compare = match guard {
            Guard::OnLease(owner) => {
                Compare::lease(self.status.as_bytes(), CompareOp::Equal, owner)
            }
            Guard::Absent => Compare::version(self.status.as_bytes(), CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then(self.ops(spec, health, lease))
            .or_else([TxnOp::get(self.status.as_bytes(), None)]);
        let resp = client.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Written::Yes(resp.header().map_or(0, |h| h.revision())));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        Ok(Written::Taken(current))
    }

    /// Starts watching both keys after `revision`, the revision of a write that left the status
    /// key in place and the resolver key present iff `resolver_present`.
    pub(super) fn follow(&self, etcd: &Etcd, revision: i64, resolver_present: bool) -> KeyWatch {
        let options = FollowOptions::default();
        let follow = |key: &str, present: bool| {
            PrefixFollower::key(etcd.clone(), key, options).resume_after(
                revision,
                usize::from(present),
                if present { revision } else { 0 },
            )
        };
        KeyWatch {
            status: follow(&self.status, true),
            resolver: follow(&self.resolver, resolver_present),
            // Read first: a request may already be there (written before this watch opened).
            drain: PrefixFollower::key(etcd.clone(), &self.drain, options),
        }
    }
}

/// Which of the two keys a [`Seen`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Which {
    /// The status key.
    Status,
    /// The resolver key.
    Resolver,
    /// The drain-request key.
    Drain,
}

/// The state of one of the keys as of a revision.
#[derive(Debug)]
pub(super) struct Seen {
    /// Which key.
    pub(super) which: Which,
    /// The revision the state is as of.
    pub(super) revision: i64,
    /// The key-value then, `None` if the key did not exist.
    pub(super) kv: Option<KeyValue>,
}

/// The two keys of a registration and its drain-request key, each followed by the crate's
/// prefix follower (which heals the watch through restarts, partitions and compaction).
#[derive(Debug)]
pub(super) struct KeyWatch {
    status: PrefixFollower,
    resolver: PrefixFollower,
    drain: PrefixFollower,
}

impl KeyWatch {
    /// The next state seen of any of the keys. Failures are healed by the followers and only
    /// logged. Cancel-safe.
    pub(super) async fn next(&mut self) -> Seen {
        loop {
            let (which, followed) = tokio::select! {
                followed = self.status.next() => (Which::Status, followed),
                followed = self.resolver.next() => (Which::Resolver, followed),
                followed = self.drain.next() => (Which::Drain, followed),
            };
            let (revision, kv) = match followed {
                Followed::Resynced { revision, kvs, .. } => (revision, kvs.into_iter().next()),
                Followed::Batch { revision, changes } => match changes.into_iter().last() {
                    Some(Change::Put(kv)) => (revision, Some(kv)),
                    Some(Change::Delete(_)) => (revision, None),
                    None => continue,
                },
                Followed::Live => continue,
                Followed::Interrupted { error, retry_in } => {
                    tracing::debug!(?which, error = %format!("{error:#}"), retry_in_ms = retry_in.as_millis() as u64, "registration key watch interrupted; re-opening");
                    continue;
                }
            };
            return Seen {
                which,
                revision,
                kv,
            };
        }
    }
}
