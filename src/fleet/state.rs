//! [`RolloutState`]: a staged rollout as kept in etcd at `/__coordination/rollouts/<prefix>/state`,
//! and its parts ([`Step`], [`Phase`], [`RolloutStatus`], [`Transition`]).
//!
//! The state machine (see the README's "Fleet operations"):
//!
//! ```text
//!   start ──► Running/Applying(step) ──all cohort applied──► Running/Baking(step) ──bake over──┐
//!                 │  ▲                                            │                          │
//!                 │  └──────────── next step (cohort grows) ◄─────┘ (not the last step)      │
//!                 │                                                                          ▼
//!   rejection, unhealthy, instance lost, apply timeout, abort ──► Aborted     last step: publish ──► Completed
//!   pause ──► Paused (overlay stays) ── resume ──► Running        promote ──► publish ──► Completed
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cohort::Selector;
use crate::error::{Error, ErrorKind, Result};

/// One step of a rollout: how many of the matching instances serve the staged values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// This many instances (`1`, `5`).
    Count(u32),
    /// This percentage of the matching instances, rounded up (`10%`); `100%` is the last step,
    /// which publishes the release.
    Percent(u8),
}

impl Step {
    /// Parses `1,10%,50%,100%`. A `100%` step is the last; if the list does not end with one,
    /// it is added. At least one step; percentages 1 to 100; counts at least 1.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the bad step.
    pub fn parse_list(text: &str) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("rollout step `{part}`: {why} (give steps like `1,10%,50%,100%`)"),
                )
            };
            let step = if let Some(p) = part.strip_suffix('%') {
                let p: u8 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
                if p == 0 || p > 100 {
                    return Err(bad("percentages run from 1% to 100%"));
                }
                Step::Percent(p)
            } else {
                let n: u32 = part.parse().map_err(|_| bad("not a count or percentage"))?;
                if n == 0 {
                    return Err(bad("a count of instances is at least 1"));
                }
                Step::Count(n)
            };
            if steps.last() == Some(&Step::Percent(100)) {
                return Err(bad("`100%` must be the last step"));
            }
            steps.push(step);
        }
        if steps.last() != Some(&Step::Percent(100)) {
            steps.push(Step::Percent(100));
        }
        Ok(steps)
    }

    /// Whether this is the publishing step (`100%`).
    pub fn is_final(self) -> bool {
        self == Step::Percent(100)
    }

    /// How many of `matching` instances this step takes (at least 1 when there is one).
    pub fn size(self, matching: usize) -> usize {
        match self {
            Step::Count(n) => (n as usize).min(matching),
            Step::Percent(p) => (matching * p as usize).div_ceil(100).min(matching),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Count(n) => write!(f, "{n}"),
            Step::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Whether a rollout runs, waits, or is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RolloutStatus {
    /// A controller drives it (or will, once one runs: `coordctl config rollout resume`).
    Running,
    /// Held at its step: cohort instances keep the staged values, nothing advances.
    Paused,
    /// The release was published as a normal version (source `rollout`); the overlay is gone.
    Completed,
    /// Reverted: cohort instances dropped the staged values; [`RolloutState::reason`] says why.
    Aborted,
}

impl RolloutStatus {
    /// Whether cohort instances serve the staged values in this status.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutStatus::Running | RolloutStatus::Paused)
    }

    /// `running`, `paused`, `completed`, `aborted`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Running => "running",
            RolloutStatus::Paused => "paused",
            RolloutStatus::Completed => "completed",
            RolloutStatus::Aborted => "aborted",
        }
    }
}

impl fmt::Display for RolloutStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a running step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for every cohort instance to apply the staged values (since this Unix ms).
    Applying {
        /// When the step began, Unix ms.
        since_unix_ms: u64,
    },
    /// Every cohort instance applied them; the step bakes until this Unix ms.
    Baking {
        /// When the bake ends, Unix ms.
        until_unix_ms: u64,
    },
}

/// One recorded transition of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transition {
    /// When, Unix ms (the writer's clock).
    pub unix_ms: u64,
    /// Who: the author of the command, or `controller` for automatic steps.
    pub author: String,
    /// What happened, e.g. `start`, `step 1 (40%): 2 instances`, `baked`, `abort: …`.
    pub what: String,
}

/// A rollout: the JSON at `/__coordination/rollouts/<prefix>/state`. Read it with
/// [`Fleet::rollout`](super::Fleet::rollout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutState {
    /// The rollout id (`r<unix ms>`), unique per prefix.
    pub id: String,
    /// The full bound prefix.
    pub prefix: String,
    /// The steps; the last is `100%`.
    pub steps: Vec<Step>,
    /// Bake time per step, ms.
    pub bake_ms: u64,
    /// How long a step may wait for its cohort to apply the staged values, ms.
    pub apply_timeout_ms: u64,
    /// Which instances may be in a cohort (the last step publishes to all).
    pub selector: Selector,
    /// The current step (index into `steps`).
    pub step: u32,
    /// Where the current step is.
    pub phase: Phase,
    /// Running, paused, completed or aborted.
    pub status: RolloutStatus,
    /// The instance ids that serve the staged values now.
    pub cohort: Vec<String>,
    /// The newest `mod_revision` under the prefix when the rollout started: the release is
    /// published only if the prefix has not changed since.
    pub base_revision: i64,
    /// Skip the remaining steps and publish (set by `promote`).
    #[serde(default)]
    pub promote: bool,
    /// The publish gate's findings that `--force` overrode, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
    /// Who started it.
    pub author: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// The revision of the published version, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<i64>,
    /// Why it was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every transition, oldest first.
    #[serde(default)]
    pub transitions: Vec<Transition>,
}

impl RolloutState {
    /// The bake time per step.
    pub fn bake(&self) -> Duration {
        Duration::from_millis(self.bake_ms)
    }

    /// The current step.
    pub fn current_step(&self) -> Step {
        self.steps
            .get(self.step as usize)
            .copied()
            .unwrap_or(Step::Percent(100))
    }

    /// Appends a transition.
    pub(crate) fn note(&mut self, author: &str, what: impl Into<String>) {
        self.transitions.push(Transition {
            unix_ms: super::receipt::now_ms(),
            author: author.to_string(),
            what: what.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_end_with_the_publishing_step() {
        assert_eq!(
            Step::parse_list("1,10%,50%,100%").unwrap(),
            vec![
                Step::Count(1),
                Step::Percent(10),
                Step::Percent(50),
                Step::Percent(100)
            ]
        );
        assert_eq!(
            Step::parse_list("2").unwrap(),
            vec![Step::Count(2), Step::Percent(100)]
        );
        assert!(Step::parse_list("100%,1").is_err());
        assert!(Step::parse_list("0").is_err());
        assert!(Step::parse_list("101%").is_err());
        assert!(Step::parse_list("x%").unwrap_err().message().contains("x%"));
        assert_eq!(Step::Percent(40).size(5), 2);
        assert_eq!(Step::Percent(10).size(5), 1);
        assert_eq!(Step::Count(3).size(2), 2);
        assert_eq!(Step::Percent(10).size(0), 0);
    }
}
