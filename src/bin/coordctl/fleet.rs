//! `coordctl config instances|wait|rollout …`: the fleet's receipts, convergence, and staged
//! rollouts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use coordination::fleet::{
    DriveOptions, Fleet, Instances, Phase, RolloutPlan, RolloutState, RolloutStatus, Selector, Step,
};
use serde_json::json;

use crate::config::read_file;
use crate::output::table;
use crate::{author, connect, fail, open, print_json, Cli, Failure};

/// `coordctl config rollout …`.
#[derive(Subcommand, Debug)]
pub(crate) enum RolloutCommand {
    /// Stage a release and walk it through the steps (the controller runs in this process
    /// until the rollout completes or reverts, unless --detach).
    Start {
        /// The config prefix.
        prefix: String,
        /// The release: a whole config as YAML or JSON (`-` for standard input).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The steps: counts of instances and percentages, the last `100%` (publish).
        #[arg(long, default_value = "1,10%,50%,100%")]
        steps: String,
        /// How long each step must stay healthy before the next.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        bake: Duration,
        /// How long a step may wait for its cohort to apply the staged values.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        apply_timeout: Duration,
        /// Only instances with these labels are put in a cohort (`zone=eu-1a,tier=canary`).
        #[arg(long)]
        selector: Option<String>,
        /// Why (recorded with every transition and the published version).
        #[arg(short = 'm', long)]
        comment: Option<String>,
        /// Start even if a schema running in the fleet would reject the release (recorded).
        #[arg(long)]
        force: bool,
        /// Only stage it; run `rollout resume` to drive it.
        #[arg(long)]
        detach: bool,
        /// The controller lock's lease TTL.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        lock_ttl: Duration,
    },
    /// Show the current (or last) rollout and its transitions.
    Status {
        /// The config prefix.
        prefix: String,
    },
    /// Hold the rollout at its step (cohort instances keep the staged values).
    Pause {
        /// The config prefix.
        prefix: String,
    },
    /// Unpause, and drive the rollout from its recorded step (waits for the controller lock,
    /// so a controller that died is taken over once its lease expires).
    Resume {
        /// The config prefix.
        prefix: String,
        /// The controller lock's lease TTL.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        lock_ttl: Duration,
        /// Only unpause; do not drive.
        #[arg(long)]
        detach: bool,
    },
    /// Skip the remaining steps: publish the release now.
    Promote {
        /// The config prefix.
        prefix: String,
        /// The controller lock's lease TTL, if this process has to drive it.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        lock_ttl: Duration,
    },
    /// Revert: cohort instances drop the staged values.
    Abort {
        /// The config prefix.
        prefix: String,
        /// Why (recorded).
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
}

/// A duration as the flags take it: jiff's friendly format (`30s`, `500ms`, `2m`, `1h 30m`,
/// `7d`, `2 weeks`; a day is 24 hours) or a bare number of seconds (`3`, `1.5`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{text}` is not a duration"));
    }
    let unknown =
        |e: jiff::Error| format!("`{text}` is not a duration like 30s, 500ms, 2m or 7d: {e}");
    let span: jiff::Span = text.parse().map_err(unknown)?;
    let exact = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(unknown)?;
    Duration::try_from(exact).map_err(|_| format!("`{text}` is a negative duration"))
}

async fn fleet_of(cli: &Cli, prefix: &str) -> Result<Fleet, Failure> {
    let coord = connect(cli).await?;
    Ok(Fleet::open(&coord, prefix)?)
}

fn ago(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let secs = now.saturating_sub(ms) / 1000;
    format!("{secs}s ago")
}

/// The convergence table.
fn print_instances(prefix: &str, view: &Instances) {
    let total = view.list.len();
    outln!(
        "# {prefix}: prefix at revision {}, {total} live instance{}",
        view.prefix_revision,
        if total == 1 { "" } else { "s" }
    );
    let rows: Vec<Vec<String>> = view
        .by_revision()
        .iter()
        .rev()
        .map(|(rev, n)| vec![rev.to_string(), format!("{n}/{total}")])
        .collect();
    out!("{}", table(&["REVISION", "INSTANCES"], &rows));
    outln!();
    let rows: Vec<Vec<String>> = view
        .list
        .iter()
        .map(|i| {
            let r = &i.receipt;
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let rollout = r.rollout.as_ref().map_or("-".to_string(), |x| {
                format!(
                    "{} step {}{}",
                    x.id,
                    x.step,
                    if x.applied { "" } else { " (not applied)" }
                )
            });
            let mut note = Vec::new();
            if let Some(s) = &i.stale {
                note.push(format!("STALE: {s}"));
            }
            if let coordination::fleet::Health::Unhealthy(why) = &r.health {
                note.push(format!("unhealthy: {why}"));
            }
            if r.rejection.is_some() {
                note.push("rejected (below)".to_string());
            }
            vec![
                r.instance.clone(),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                r.app.as_ref().map_or("-".into(), ToString::to_string),
                r.schema_hash.clone(),
                r.revision.to_string(),
                ago(r.serving_since_unix_ms),
                r.status.as_str().to_string(),
                rollout,
                note.join("; "),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "INSTANCE", "LABELS", "APP", "SCHEMA", "REVISION", "SINCE", "STATUS", "ROLLOUT",
                "NOTE"
            ],
            &rows
        )
    );
    // One line per distinct rejection: "2 of 5 instances rejected revision 812: …".
    let mut grouped: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, rejection) in view.rejections() {
        grouped.entry(rejection.to_string()).or_default().push(id);
    }
    if !grouped.is_empty() {
        outln!();
    }
    for (what, ids) in grouped {
        outln!(
            "{} of {total} instances rejected {what} [{}]",
            ids.len(),
            ids.join(", ")
        );
    }
}

pub(crate) async fn instances(
    cli: &Cli,
    prefix: &str,
    stale_after: Duration,
) -> Result<(), Failure> {
    let fleet = fleet_of(cli, prefix).await?.with_stale_after(stale_after);
    let view = fleet.instances().await?;
    if cli.json {
        print_json(&view);
    } else {
        print_instances(fleet.prefix(), &view);
    }
    Ok(())
}

pub(crate) async fn wait(
    cli: &Cli,
    prefix: &str,
    revision: i64,
    timeout: Duration,
) -> Result<(), Failure> {
    let fleet = fleet_of(cli, prefix).await?;
    let report = fleet.wait(revision, timeout).await?;
    if cli.json {
        print_json(&report);
    } else if report.converged {
        outln!(
            "all {} live instances serve revision {revision} or later ({} ms)",
            report.instances.list.len(),
            report.waited_ms
        );
    } else {
        outln!(
            "not converged on revision {revision} after {} ms: {} of {} live instances behind",
            report.waited_ms,
            report.laggards.len(),
            report.instances.list.len()
        );
        for i in &report.laggards {
            let r = &i.receipt;
            let why = match report.rejections.iter().find(|(id, _)| *id == r.instance) {
                Some((_, rejection)) => format!("rejected {rejection}"),
                None => format!("{}, processed {}", r.status.as_str(), r.processed),
            };
            outln!("  {} serves revision {}: {why}", r.instance, r.revision);
        }
    }
    if report.converged {
        Ok(())
    } else {
        Err(fail(
            7,
            format!(
                "{} instance(s) do not serve revision {revision}{}",
                report.laggards.len(),
                if report.instances.list.is_empty() {
                    " (no live instance)"
                } else {
                    ""
                }
            ),
        ))
    }
}

fn print_state(cli: &Cli, state: &RolloutState) {
    if cli.json {
        print_json(state);
        return;
    }
    let steps: Vec<String> = state.steps.iter().map(ToString::to_string).collect();
    let phase = match (state.status.is_active(), state.phase) {
        (true, Phase::Applying { since_unix_ms }) => {
            format!("; applying since {}", ago(since_unix_ms))
        }
        (true, Phase::Baking { until_unix_ms }) => format!("; baking until {until_unix_ms}"),
        _ => String::new(),
    };
    outln!(
        "rollout {} of {}: {} at step {} ({}) of {}{phase}",
        state.id,
        state.prefix,
        state.status,
        state.step,
        state.current_step(),
        steps.join(","),
    );
    if !state.selector.0.is_empty() {
        outln!("selector: {}", state.selector);
    }
    outln!("cohort: {}", state.cohort.join(", "));
    if let Some(reason) = &state.reason {
        outln!("reason: {reason}");
    }
    if let Some(v) = state.published {
        outln!("published as version {v}");
    }
    if let Some(forced) = &state.forced {
        outln!("gate forced over: {forced}");
    }
    let rows: Vec<Vec<String>> = state
        .transitions
        .iter()
        .map(|t| vec![t.unix_ms.to_string(), t.author.clone(), t.what.clone()])
        .collect();
    out!("{}", table(&["UNIX_MS", "BY", "TRANSITION"], &rows));
}

/// Drives the rollout, printing each transition; exit 7 if it was reverted.
async fn drive(
    cli: &Cli,
    fleet: &Fleet,
    prefix: &str,
    lock_ttl: Duration,
    mut printed: usize,
) -> Result<(), Failure> {
    let history = open(cli, prefix, true).await?;
    let json = cli.json;
    let state = fleet
        .drive_rollout(
            &history,
            DriveOptions::new().with_lock_ttl(lock_ttl),
            |s: &RolloutState| {
                if !json {
                    for t in s.transitions.iter().skip(printed) {
                        outln!("{} {}: {}", t.unix_ms, t.author, t.what);
                    }
                }
                printed = s.transitions.len();
            },
        )
        .await?;
    finish(cli, &state)
}

fn finish(cli: &Cli, state: &RolloutState) -> Result<(), Failure> {
    if cli.json {
        print_json(state);
    }
    match state.status {
        RolloutStatus::Aborted => Err(fail(
            7,
            format!(
                "rollout {} reverted: {}",
                state.id,
                state.reason.as_deref().unwrap_or("aborted")
            ),
        )),
        _ => {
            if !cli.json {
                outln!("rollout {} {}", state.id, state.status);
            }
            Ok(())
        }
    }
}

pub(crate) async fn rollout(cli: &Cli, command: &RolloutCommand) -> Result<(), Failure> {
    match command {
        RolloutCommand::Start {
            prefix,
            file,
            steps,
            bake,
            apply_timeout,
            selector,
            comment,
            force,
            detach,
            lock_ttl,
        } => {
            let steps = Step::parse_list(steps)?;
            let selector = match selector {
                Some(s) => Selector::parse(s)?,
                None => Selector::default(),
            };
            let text = read_file(file)?;
            let history = open(cli, prefix, true).await?;
            let doc = history
                .parse_document(&text)
                .map_err(|e| fail(3, format!("{}: {}", file.display(), e.message())))?;
            let mut plan = RolloutPlan::new(doc)
                .with_steps(steps)
                .with_bake(*bake)
                .with_apply_timeout(*apply_timeout)
                .with_selector(selector)
                .with_author(author(cli), comment.clone().unwrap_or_default());
            if *force {
                plan = plan.with_gate_forced();
            }
            let fleet = fleet_of(cli, prefix).await?;
            let state = fleet.start_rollout(&history, plan).await?;
            if *detach {
                print_state(cli, &state);
                return Ok(());
            }
            if !cli.json {
                for t in &state.transitions {
                    outln!("{} {}: {}", t.unix_ms, t.author, t.what);
                }
            }
            drive(cli, &fleet, prefix, *lock_ttl, state.transitions.len()).await
        }
        RolloutCommand::Status { prefix } => {
            let fleet = fleet_of(cli, prefix).await?;
            match fleet.rollout().await? {
                Some(state) => print_state(cli, &state),
                None if cli.json => print_json(&json!(null)),
                None => outln!("no rollout of {}", fleet.prefix()),
            }
            Ok(())
        }
        RolloutCommand::Pause { prefix } => {
            let fleet = fleet_of(cli, prefix).await?;
            let state = fleet.pause_rollout(&author(cli)).await?;
            print_state(cli, &state);
            Ok(())
        }
        RolloutCommand::Resume {
            prefix,
            lock_ttl,
            detach,
        } => {
            let fleet = fleet_of(cli, prefix).await?;
            let state = fleet.resume_rollout(&author(cli)).await?;
            if *detach {
                print_state(cli, &state);
                return Ok(());
            }
            drive(cli, &fleet, prefix, *lock_ttl, state.transitions.len()).await
        }
        RolloutCommand::Promote { prefix, lock_ttl } => {
            let fleet = fleet_of(cli, prefix).await?;
            let state = fleet.promote_rollout(&author(cli)).await?;
            drive(cli, &fleet, prefix, *lock_ttl, state.transitions.len()).await
        }
        RolloutCommand::Abort { prefix, reason } => {
            let fleet = fleet_of(cli, prefix).await?;
            let state = fleet.abort_rollout(&author(cli), reason).await?;
            print_state(cli, &state);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("1h 30m").unwrap(),
            Duration::from_secs(5_400)
        );
        assert_eq!(
            parse_duration("2 weeks").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        // A month or a year has no fixed length.
        assert!(parse_duration("1 month").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("NaN").is_err());
    }
}
