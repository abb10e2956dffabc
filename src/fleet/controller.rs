//! Staged rollouts: [`Fleet::start_rollout`] stores a validated candidate as a staged release
//! next to the config, and [`Fleet::drive_rollout`] is the controller that walks it through its
//! steps under the crate's own lock, with its state in etcd so that another process can carry
//! on ([`Fleet::drive_rollout`] again, `coordctl config rollout resume`). Operators hold,
//! hurry or stop it with [`Fleet::pause_rollout`], [`Fleet::promote_rollout`] and
//! [`Fleet::abort_rollout`] from any process.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, TxnOp};
use serde_json::Value;

use super::cohort::{select, Selector};
use super::instances::{Fleet, Instances};
use super::receipt::{now_ms, Health, InstanceStatus, Receipt};
use super::state::{Phase, RolloutState, RolloutStatus, Step};
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::read_prefix;
use crate::history::{ConfigHistory, Meta, VersionKind};
use crate::lock::LockGuard;

/// The author of the controller's own transitions.
const CONTROLLER: &str = "controller";

/// Default for [`RolloutPlan::with_bake`]: 30 s.
pub const DEFAULT_BAKE: Duration = Duration::from_secs(30);

/// Default for [`RolloutPlan::with_apply_timeout`]: 30 s.
pub const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The most keys a staged release may have (one etcd transaction writes it with the state).
pub const MAX_STAGED_KEYS: usize = 120;

/// What to roll out and how: the whole candidate document (as
/// [`ConfigHistory::apply`] takes it), the steps, the bake time, the selector.
///
/// Defaults: steps `1, 10%, 50%, 100%`; bake 30 s; every instance may be in a cohort; a step
/// that has not been applied by its whole cohort within 30 s reverts.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a plan does nothing until it is started"]
pub struct RolloutPlan {
    document: Value,
    steps: Vec<Step>,
    bake: Duration,
    apply_timeout: Duration,
    selector: Selector,
    author: String,
    comment: String,
    force: bool,
}

impl RolloutPlan {
    /// A plan for `document` with the defaults.
    pub fn new(document: Value) -> Self {
        RolloutPlan {
            document,
            steps: vec![
                Step::Count(1),
                Step::Percent(10),
                Step::Percent(50),
                Step::Percent(100),
            ],
            bake: DEFAULT_BAKE,
            apply_timeout: DEFAULT_APPLY_TIMEOUT,
            selector: Selector::default(),
            author: String::new(),
            comment: String::new(),
            force: false,
        }
    }

    /// The steps (see [`Step::parse_list`]); a final `100%` is added if missing.
    pub fn with_steps(mut self, mut steps: Vec<Step>) -> Self {
        steps.retain(|s| !s.is_final());
        steps.push(Step::Percent(100));
        self.steps = steps;
        self
    }

    /// How long each step must stay healthy before the next (default 30 s).
    pub fn with_bake(mut self, bake: Duration) -> Self {
        self.bake = bake;
        self
    }

    /// How long a step may wait for its cohort to apply the staged values (default 30 s).
    pub fn with_apply_timeout(mut self, timeout: Duration) -> Self {
        self.apply_timeout = timeout;
        self
    }

    /// Only instances whose labels match are put in a cohort (the last step still publishes
    /// to every instance).
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = selector;
        self
    }

    /// Who starts it and why (recorded with every transition and the published version).
    pub fn with_author(mut self, author: impl Into<String>, comment: impl Into<String>) -> Self {
        self.author = author.into();
        self.comment = comment.into();
        self
    }

    /// Starts even when the fleet gate refuses the candidate; the refusal is recorded in the
    /// state and with the published version.
    pub fn with_gate_forced(mut self) -> Self {
        self.force = true;
        self
    }
}

/// How a controller runs ([`Fleet::drive_rollout`]).
///
/// Defaults: controller lock lease 10 s; wait up to 10 min for the lock; look at the fleet
/// every 100 ms.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "options do nothing until they are passed on"]
pub struct DriveOptions {
    lock_ttl: Duration,
    lock_timeout: Duration,
    tick: Duration,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            lock_ttl: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(600),
            tick: Duration::from_millis(100),
        }
    }
}

impl DriveOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The controller lock's lease TTL (default 10 s): after a controller dies, another takes
    /// over within about this long.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long to wait for the controller lock (default 10 min).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How often the controller reads the receipts and the state (default 100 ms).
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(10));
        self
    }
}

/// What the controller concludes from the cohort's receipts.
enum Verdict {
    /// Revert, for this reason.
    Fail(String),
    /// Healthy; whether every cohort instance applied the step.
    Healthy { applied: usize },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Fleet {
    /// The current (or last) rollout of the prefix, and the `mod_revision` of its state key.
    ///
    /// # Errors
    /// etcd errors; [`ErrorKind::Validation`] if the state key holds something else.
    async fn read_state(&self) -> Result<Option<(RolloutState, i64)>> {
        let key = self.keys.state();
        let resp = self
            .coord
            .client()
            .get(key.as_str(), None)
            .await
            .map_err(|e| Error::etcd(format_args!("reading the rollout state `{key}`"), e))?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let state = serde_json::from_slice(kv.value()).map_err(|e| {
            Error::new(
                ErrorKind::Validation,
                format!("the rollout state at `{key}` is not a rollout: {e}"),
            )
            .with_key(key.as_str())
        })?;
        Ok(Some((state, kv.mod_revision())))
    }

    /// The current (or last finished) rollout of the prefix; `None` if there never was one.
    ///
    /// # Errors
    /// etcd errors; [`ErrorKind::Validation`] if the state key holds something else.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn rollout(&self) -> Result<Option<RolloutState>> {
        Ok(self.read_state().await?.map(|(s, _)| s))
    }

    /// Starts a staged rollout of `plan`'s document: checks it against the published schema
    /// (required fields included) and the fleet gate, picks the first step's cohort from the
    /// live receipts, and writes the staged release and the state in one transaction. Cohort
    /// instances start serving the staged values at once; run a controller
    /// ([`drive_rollout`](Self::drive_rollout)) to take it further.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] if the schema or the gate refuses the document;
    /// [`ErrorKind::Conflict`] if a rollout is already running or paused (or the state changed
    /// meanwhile); [`ErrorKind::InvalidArgument`] if no live instance matches the selector or
    /// the release has more than [`MAX_STAGED_KEYS`] keys; [`ErrorKind::NotFound`] if no schema
    /// is published; etcd errors.
    ///
    /// # Cancel safety
    /// One transaction: dropped after it was sent, the rollout may or may not have started
    /// ([`rollout`](Self::rollout) says).
    pub async fn start_rollout(
        &self,
        history: &ConfigHistory,
        plan: RolloutPlan,
    ) -> Result<RolloutState> {
        let forcing;
        let checker = if plan.force {
            forcing = history.clone().with_gate_forced();
            &forcing
        } else {
            history
        };
        let (target, forced) = checker
            .checked(&plan.document, false, || checker.target_of(&plan.document))
            .await?;
        if target.len() > MAX_STAGED_KEYS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the release has {} keys; a rollout stages at most {MAX_STAGED_KEYS}",
                    target.len()
                ),
            ));
        }
        let previous = self.read_state().await?;
        if let Some((state, _)) = &previous {
            if state.status.is_active() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "rollout {} of `{}` is {} at step {}: abort it or let it finish first",
                        state.id,
                        self.prefix(),
                        state.status,
                        state.step
                    ),
                ));
            }
        }
        let instances = self.instances().await?;
        let receipts: Vec<Receipt> = instances.list.iter().map(|i| i.receipt.clone()).collect();
        let first = plan.steps.first().copied().unwrap_or(Step::Percent(100));
        let cohort = if first.is_final() {
            Vec::new()
        } else {
            select(&receipts, &plan.selector, first, &[])
        };
        if cohort.is_empty() && !first.is_final() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "no live instance of `{}` matches the selector `{}`",
                    self.prefix(),
                    plan.selector
                ),
            ));
        }
        let author = if plan.author.is_empty() {
            "unknown".to_string()
        } else {
            plan.author.clone()
        };
        let now = now_ms();
        let mut state = RolloutState {
            id: format!("r{now}"),
            prefix: self.prefix().to_string(),
            steps: plan.steps.clone(),
            bake_ms: ms(plan.bake),
            apply_timeout_ms: ms(plan.apply_timeout),
            selector: plan.selector.clone(),
            step: 0,
            phase: Phase::Applying { since_unix_ms: now },
            status: RolloutStatus::Running,
            cohort,
            base_revision: self.newest_revision().await?,
            promote: false,
            forced,
            author: author.clone(),
            comment: plan.comment.clone(),
            published: None,
            reason: None,
            transitions: Vec::new(),
        };
        let steps: Vec<String> = state.steps.iter().map(ToString::to_string).collect();
        state.note(
            &author,
            format!(
                "start: steps {}, bake {} ms, selector `{}`{}; step 0 ({}): {}",
                steps.join(","),
                state.bake_ms,
                if state.selector.0.is_empty() {
                    "(every instance)".to_string()
                } else {
                    state.selector.to_string()
                },
                if state.forced.is_some() {
                    ", gate forced"
                } else {
                    ""
                },
                first,
                state.cohort.join(", ")
            ),
        );

        // One transaction: the old staged keys out, the new ones in, the last rollout to the
        // log, the new state; guarded by the state key as read.
        let old_staged = self
            .coord
            .client()
            .get(
                self.keys.staged(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| Error::etcd(format_args!("reading `{}`", self.keys.staged()), e))?;
        let staged: Vec<(String, Vec<u8>)> = target
            .iter()
            .map(|(k, v)| (self.keys.staged_key(&String::from_utf8_lossy(k)), v.clone()))
            .collect();
        let mut ops = Vec::new();
        for kv in old_staged.kvs() {
            if !staged.iter().any(|(k, _)| k.as_bytes() == kv.key()) {
                ops.push(TxnOp::delete(kv.key().to_vec(), None));
            }
        }
        for (k, v) in &staged {
            ops.push(TxnOp::put(k.as_str(), v.clone(), None));
        }
        let guard = match &previous {
            Some((old, rev)) => {
                ops.push(TxnOp::put(
                    self.keys.log(&old.id),
                    serde_json::to_vec(old).unwrap_or_default(),
                    None,
                ));
                Compare::mod_revision(self.keys.state(), CompareOp::Equal, *rev)
            }
            None => Compare::create_revision(self.keys.state(), CompareOp::Equal, 0),
        };
        ops.push(TxnOp::put(
            self.keys.state(),
            serde_json::to_vec(&state).unwrap_or_default(),
            None,
        ));
        let resp = self
            .coord
            .client()
            .txn(etcd_client::Txn::new().when([guard]).and_then(ops))
            .await
            .map_err(|e| {
                Error::etcd(format_args!("starting a rollout of `{}`", self.prefix()), e)
            })?;
        if !resp.succeeded() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the rollout state of `{}` changed meanwhile", self.prefix()),
            ));
        }
        tracing::info!(prefix = %self.prefix(), rollout = %state.id, cohort = ?state.cohort, "rollout started");
        Ok(state)
    }

    /// Writes `state` over the version at `rev` (fenced by `guard` when given); `Ok(false)` if
    /// the state changed meanwhile. With `drop_staged`, the staged keys go in the same
    /// transaction.
    async fn write_state(
        &self,
        state: &RolloutState,
        rev: i64,
        guard: Option<&LockGuard>,
        drop_staged: bool,
    ) -> Result<bool> {
        let key = self.keys.state();
        let mut ops = vec![TxnOp::put(
            key.as_str(),
            serde_json::to_vec(state).unwrap_or_default(),
            None,
        )];
        if drop_staged {
            ops.push(TxnOp::delete(
                self.keys.staged(),
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        let when = Compare::mod_revision(key.as_str(), CompareOp::Equal, rev);
        match guard {
            Some(guard) => Ok(self
                .coord
                .kv_txn_fenced(guard)
                .when([when])
                .and_then(ops)
                .commit()
                .await?
                .succeeded()),
            None => Ok(self
                .coord
                .client()
                .txn(etcd_client::Txn::new().when([when]).and_then(ops))
                .await
                .map_err(|e| Error::etcd(format_args!("writing the rollout state `{key}`"), e))?
                .succeeded()),
        }
    }

    /// Changes the active rollout with `change` (retrying on concurrent writes) and writes it.
    async fn change_rollout(
        &self,
        what: &str,
        mut change: impl FnMut(&mut RolloutState) -> Result<bool>,
    ) -> Result<RolloutState> {
        loop {
            let Some((mut state, rev)) = self.read_state().await? else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no rollout of `{}` to {what}", self.prefix()),
                ));
            };
            if !state.status.is_active() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "rollout {} of `{}` is already {}: nothing to {what}",
                        state.id,
                        self.prefix(),
                        state.status
                    ),
                ));
            }
            let drop_staged = change(&mut state)?;
            if self.write_state(&state, rev, None, drop_staged).await? {
                return Ok(state);
            }
        }
    }

    /// Holds the active rollout at its step: cohort instances keep the staged values, nothing
    /// advances until [`resume_rollout`](Self::resume_rollout).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] without a rollout; [`ErrorKind::Conflict`] if it is over; etcd
    /// errors.
    ///
    /// # Cancel safety
    /// One guarded write (retried on a concurrent change); dropped after it was sent, it may or
    /// may not have happened.
    pub async fn pause_rollout(&self, author: &str) -> Result<RolloutState> {
        self.change_rollout("pause", |s| {
            s.status = RolloutStatus::Paused;
            s.note(author, "pause");
            Ok(false)
        })
        .await
    }

    /// Lets a paused rollout run again (a bake in progress starts over). Run a controller
    /// ([`drive_rollout`](Self::drive_rollout)) if none is running.
    ///
    /// # Errors
    /// As [`pause_rollout`](Self::pause_rollout).
    ///
    /// # Cancel safety
    /// As [`pause_rollout`](Self::pause_rollout).
    pub async fn resume_rollout(&self, author: &str) -> Result<RolloutState> {
        self.change_rollout("resume", |s| {
            if s.status == RolloutStatus::Paused {
                s.status = RolloutStatus::Running;
                if let Phase::Baking { .. } = s.phase {
                    s.phase = Phase::Baking {
                        until_unix_ms: now_ms() + s.bake_ms,
                    };
                }
                s.note(author, "resume");
            }
            Ok(false)
        })
        .await
    }

    /// Skips the remaining steps: the controller publishes the release at its next look.
    ///
    /// # Errors
    /// As [`pause_rollout`](Self::pause_rollout).
    ///
    /// # Cancel safety
    /// As [`pause_rollout`](Self::pause_rollout).
    pub async fn promote_rollout(&self, author: &str) -> Result<RolloutState> {
        self.change_rollout("promote", |s| {
            s.promote = true;
            if s.status == RolloutStatus::Paused {
                s.status = RolloutStatus::Running;
            }
            s.note(author, "promote: publish now");
            Ok(false)
        })
        .await
    }

    /// Reverts the active rollout: cohort instances drop the staged values and serve the
    /// fleet's version again; `reason` is recorded.
    ///
    /// # Errors
    /// As [`pause_rollout`](Self::pause_rollout).
    ///
    /// # Cancel safety
    /// As [`pause_rollout`](Self::pause_rollout).
    pub async fn abort_rollout(&self, author: &str, reason: &str) -> Result<RolloutState> {
        self.change_rollout("abort", |s| {
            s.status = RolloutStatus::Aborted;
            s.reason = Some(reason.to_string());
            s.note(author, format!("abort: {reason}"));
            Ok(true)
        })
        .await
    }

    /// The controller: takes the prefix's controller lock (one controller at a time), then
    /// drives the active rollout to its end from the step recorded in etcd, and returns the
    /// final state. `on_change` sees every state it writes.
    ///
    /// A step advances when every instance of its cohort has applied the staged values and the
    /// bake time has passed with the step healthy: no rejection, every cohort instance live
    /// and reporting itself healthy. Any failure (a rejection of the staged values, an
    /// instance reporting unhealthy, going stale or disappearing, the cohort not applying
    /// within the apply timeout) aborts the rollout, recording the reason: cohort instances
    /// then drop the staged values. The last step publishes the release as a normal guarded
    /// version (source `rollout`, author and comment of the start) and removes the overlay;
    /// if the prefix was changed by someone else since the start, it aborts instead.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] without a rollout; [`ErrorKind::Timeout`] if the lock is not
    /// had within the lock timeout; [`ErrorKind::Conflict`] if the lock is lost (another
    /// controller may carry on); etcd errors (the rollout stays where it is, for another
    /// controller to resume).
    ///
    /// # Cancel safety
    /// Dropping the future stops the controller between writes; the rollout stays in etcd at
    /// its step (the staged values keep serving on the cohort) and the lock is released. Any
    /// controller can resume it.
    pub async fn drive_rollout(
        &self,
        history: &ConfigHistory,
        options: DriveOptions,
        mut on_change: impl FnMut(&RolloutState),
    ) -> Result<RolloutState> {
        let Some((state, _)) = self.read_state().await? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no rollout of `{}`", self.prefix()),
            ));
        };
        if !state.status.is_active() {
            return Ok(state);
        }
        let guard = self
            .coord
            .lock(&self.keys.lock_name(self.coord.namespace()))
            .with_lease_ttl(options.lock_ttl)
            .with_timeout(options.lock_timeout)
            .await?;
        tracing::info!(prefix = %self.prefix(), rollout = %state.id, token = guard.fencing_token(), "rollout controller holds the lock");
        let result = self
            .drive_locked(history, &options, &guard, &mut on_change)
            .await;
        let _ = guard.unlock().await;
        result
    }

    async fn drive_locked(
        &self,
        history: &ConfigHistory,
        options: &DriveOptions,
        guard: &LockGuard,
        on_change: &mut impl FnMut(&RolloutState),
    ) -> Result<RolloutState> {
        let mut taken_over = false;
        loop {
            if let Some(reason) = guard.lost_reason() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the rollout controller lost its lock ({reason:?})"),
                ));
            }
            let Some((mut state, rev)) = self.read_state().await? else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("the rollout of `{}` disappeared", self.prefix()),
                ));
            };
            if !state.status.is_active() {
                return Ok(state);
            }
            if !taken_over {
                taken_over = true;
                state.note(
                    CONTROLLER,
                    format!(
                        "controller (fencing token {}) drives from step {}",
                        guard.fencing_token(),
                        state.step
                    ),
                );
                if self.write_state(&state, rev, Some(guard), false).await? {
                    on_change(&state);
                }
                continue;
            }
            if state.status == RolloutStatus::Paused {
                tokio::time::sleep(options.tick).await;
                continue;
            }
            if state.promote {
                self.publish(history, state, rev, guard, on_change).await?;
                continue;
            }
            let instances = self.instances().await?;
            let now = now_ms();
            let verdict = check(&state, &instances);
            let mut drop_staged = false;
            let changed = match (verdict, state.phase) {
                (Verdict::Fail(reason), _) => {
                    fail(&mut state, reason);
                    drop_staged = true;
                    true
                }
                (Verdict::Healthy { applied }, Phase::Applying { since_unix_ms }) => {
                    if applied == state.cohort.len() {
                        state.phase = Phase::Baking {
                            until_unix_ms: now + state.bake_ms,
                        };
                        let what = format!(
                            "step {} ({}) applied by all {} cohort instances; baking {} ms",
                            state.step,
                            state.current_step(),
                            applied,
                            state.bake_ms
                        );
                        state.note(CONTROLLER, what);
                        true
                    } else if now.saturating_sub(since_unix_ms) > state.apply_timeout_ms {
                        let reason = format!(
                            "step {}: only {applied} of {} cohort instances applied the staged values within {} ms",
                            state.step,
                            state.cohort.len(),
                            state.apply_timeout_ms
                        );
                        fail(&mut state, reason);
                        drop_staged = true;
                        true
                    } else {
                        false
                    }
                }
                (Verdict::Healthy { .. }, Phase::Baking { until_unix_ms }) => {
                    if now < until_unix_ms {
                        false
                    } else if state
                        .steps
                        .get(state.step as usize + 1)
                        .is_none_or(|s| s.is_final())
                    {
                        state.note(CONTROLLER, format!("step {} baked; publishing", state.step));
                        self.publish(history, state, rev, guard, on_change).await?;
                        continue;
                    } else {
                        let receipts: Vec<Receipt> =
                            instances.list.iter().map(|i| i.receipt.clone()).collect();
                        state.step += 1;
                        let step = state.current_step();
                        state.cohort = select(&receipts, &state.selector, step, &state.cohort);
                        state.phase = Phase::Applying { since_unix_ms: now };
                        let what =
                            format!("step {} ({step}): {}", state.step, state.cohort.join(", "));
                        state.note(CONTROLLER, what);
                        true
                    }
                }
            };
            if changed {
                if self
                    .write_state(&state, rev, Some(guard), drop_staged)
                    .await?
                {
                    if state.status == RolloutStatus::Aborted {
                        tracing::warn!(prefix = %self.prefix(), rollout = %state.id, reason = ?state.reason, "rollout reverted");
                    }
                    on_change(&state);
                }
                continue;
            }
            tokio::time::sleep(options.tick).await;
        }
    }

    /// The last step: publishes the staged release and completes the rollout (or aborts it if
    /// the prefix changed since the start).
    async fn publish(
        &self,
        history: &ConfigHistory,
        mut state: RolloutState,
        rev: i64,
        guard: &LockGuard,
        on_change: &mut impl FnMut(&RolloutState),
    ) -> Result<()> {
        let (_, kvs) = read_prefix(self.coord.etcd(), &self.keys.staged(), 1000).await?;
        let target = kvs
            .iter()
            .map(|kv| {
                (
                    self.keys
                        .unstaged_key(&String::from_utf8_lossy(kv.key()))
                        .into_bytes(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        let meta = Meta::new(
            VersionKind::Rollout,
            &state.author,
            &format!("rollout {}: {}", state.id, state.comment),
        );
        match history
            .publish_release(
                &target,
                Some(state.base_revision),
                meta,
                state.forced.clone(),
            )
            .await
        {
            Ok(version) => {
                state.status = RolloutStatus::Completed;
                state.published = version.as_ref().map(|v| v.revision);
                let what = match &version {
                    Some(v) => format!("completed: published as version {}", v.revision),
                    None => "completed: the prefix already held the release".to_string(),
                };
                state.note(CONTROLLER, what);
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {
                fail(&mut state, e.message().to_string());
            }
            Err(e) => return Err(e),
        }
        if self.write_state(&state, rev, Some(guard), true).await? {
            tracing::info!(prefix = %self.prefix(), rollout = %state.id, status = %state.status, "rollout finished");
            on_change(&state);
        }
        Ok(())
    }
}

/// Marks `state` aborted for `reason`.
fn fail(state: &mut RolloutState, reason: String) {
    state.status = RolloutStatus::Aborted;
    state.note(CONTROLLER, format!("abort: {reason}"));
    state.reason = Some(reason);
}

/// The cohort's health at the current step.
fn check(state: &RolloutState, instances: &Instances) -> Verdict {
    let mut applied = 0;
    for id in &state.cohort {
        let Some(instance) = instances.get(id) else {
            return Verdict::Fail(format!(
                "cohort instance {id} left (its receipt expired: crashed or partitioned)"
            ));
        };
        let r = &instance.receipt;
        if let Some(rejection) = r
            .rejection
            .as_ref()
            .filter(|x| x.rollout.as_deref() == Some(&state.id))
        {
            return Verdict::Fail(format!(
                "cohort instance {id} rejected the staged values at {rejection}"
            ));
        }
        if r.status != InstanceStatus::Live {
            return Verdict::Fail(format!("cohort instance {id} is {}", r.status.as_str()));
        }
        if let Health::Unhealthy(reason) = &r.health {
            return Verdict::Fail(format!(
                "cohort instance {id} reports itself unhealthy: {reason}"
            ));
        }
        if r.serves_rollout(&state.id, state.step) {
            applied += 1;
        }
    }
    Verdict::Healthy { applied }
}
