//! `coordctl config propose|proposals|proposal|approve|reject|apply ID|policy|promote|template|docs`:
//! change control over `coordination::change`.

use coordination::change::{
    field_docs, reference_markdown, template, ChangeControl, ChangeRecord, Policy, Proposal,
};
use coordination::history::FieldChange;
use serde_json::json;

use crate::config::read_file;
use crate::output::{cell, table};
use crate::{
    connect, fail, open, open_with, print_json, report_write, with_glass, BreakGlass, Cli,
    ConfigCommand, Failure, ProposalCommand,
};

/// Change control on `prefix`, acting as the etcd user (auth on) or --author / $USER.
async fn control(
    cli: &Cli,
    prefix: &str,
    glass: Option<&BreakGlass>,
) -> Result<ChangeControl, Failure> {
    let coord = connect(cli).await?;
    control_on(cli, &coord, prefix, glass).await
}

async fn control_on(
    cli: &Cli,
    coord: &coordination::Coordinator,
    prefix: &str,
    glass: Option<&BreakGlass>,
) -> Result<ChangeControl, Failure> {
    let mut history = open_with(cli, coord, prefix, true).await?;
    if let Some(glass) = glass {
        history = with_glass(history, glass)?;
    }
    let control = ChangeControl::with_history(coord, prefix, history);
    Ok(match &cli.author {
        Some(name) => control.with_actor(name)?,
        None => control,
    })
}

/// Change control on the prefix of proposal `id`.
async fn control_for(
    cli: &Cli,
    id: &str,
    glass: Option<&BreakGlass>,
) -> Result<ChangeControl, Failure> {
    let coord = connect(cli).await?;
    let proposal = ChangeControl::find_proposal(&coord, id).await?;
    control_on(cli, &coord, &proposal.prefix, glass).await
}

/// The history table's note for a version's change-control facts.
pub(crate) fn note(change: &ChangeRecord) -> String {
    let mut parts = Vec::new();
    if let Some(id) = &change.proposal {
        let by = if change.approvers.is_empty() {
            "no approvals".to_string()
        } else {
            format!("approved by {}", change.approvers.join(", "))
        };
        parts.push(format!("[proposal {id}, {by}]"));
    }
    if let Some(from) = &change.promoted_from {
        parts.push(format!("[promoted from {}@{}]", from.prefix, from.revision));
    }
    if let Some(reason) = &change.break_glass {
        parts.push(format!("[break-glass: {reason}]"));
    }
    parts.join(" ")
}

fn diff_table(changes: &[FieldChange]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_string();
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| vec![c.path.clone(), cell(c.old.as_ref()), cell(c.new.as_ref())])
        .collect();
    table(&["FIELD", "OLD", "NEW"], &rows)
}

fn show(cli: &Cli, p: &Proposal) {
    if cli.json {
        print_json(p);
        return;
    }
    outln!("proposal {} for {} ({})", p.id, p.prefix, p.state);
    outln!("  author:   {}", p.author);
    outln!("  comment:  {}", p.comment);
    outln!("  base:     revision {}", p.base_revision);
    outln!("  time:     {}", p.time);
    let approvals: Vec<&str> = p.approvals.iter().map(|a| a.by.as_str()).collect();
    outln!(
        "  approved: {}",
        if approvals.is_empty() {
            "(none)".to_string()
        } else {
            approvals.join(", ")
        }
    );
    if let Some(from) = &p.promoted_from {
        outln!(
            "  promoted: from {} at revision {}",
            from.prefix,
            from.revision
        );
    }
    if let Some(r) = &p.rejection {
        outln!("  rejected: by {}: {}", r.by, r.reason);
    }
    if let Some(a) = &p.applied {
        outln!(
            "  applied:  by {} as version {}",
            a.by,
            a.revision
                .map_or("- (unchanged)".to_string(), |r| r.to_string())
        );
    }
    out!("{}", diff_table(&p.diff));
}

/// `config apply ID`.
pub(crate) async fn apply(cli: &Cli, id: &str, glass: &BreakGlass) -> Result<(), Failure> {
    let control = control_for(cli, id, Some(glass)).await?;
    let version = control.apply(id).await?;
    report_write(cli, &format!("applied {id} as"), version);
    Ok(())
}

pub(crate) async fn run(cli: &Cli, command: &ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Propose {
            prefix,
            file,
            set,
            comment,
        } => {
            let control = control(cli, prefix, None).await?;
            let comment = comment.as_deref().unwrap_or("");
            let proposal = match (file, set.is_empty()) {
                (Some(file), true) => {
                    let text = read_file(file)?;
                    let doc = control
                        .history()
                        .parse_document(&text)
                        .map_err(|e| fail(3, format!("{}: {}", file.display(), e.message())))?;
                    control.propose_document(&doc, comment).await?
                }
                (None, false) => {
                    let mut fields = Vec::new();
                    for pair in set {
                        let Some((path, value)) = pair.split_once('=') else {
                            return Err(fail(2, format!("--set `{pair}`: give path=value")));
                        };
                        fields.push((path.trim().to_string(), value.to_string()));
                    }
                    control.propose_fields(&fields, comment).await?
                }
                _ => {
                    return Err(fail(
                        2,
                        "give the new config with -f FILE or fields with --set path=value",
                    ))
                }
            };
            if cli.json {
                print_json(&proposal);
            } else {
                outln!(
                    "proposed {} on {} (base revision {}, by {})",
                    proposal.id,
                    proposal.prefix,
                    proposal.base_revision,
                    proposal.author
                );
                out!("{}", diff_table(&proposal.diff));
            }
        }
        ConfigCommand::Proposals {
            prefix,
            prune_decided_older_than,
        } => {
            let control = control(cli, prefix, None).await?;
            if let Some(age) = prune_decided_older_than {
                let pruned = control.prune_proposals(*age).await?;
                eprintln!(
                    "pruned {} decided proposal(s){}{}",
                    pruned.len(),
                    if pruned.is_empty() { "" } else { ": " },
                    pruned.join(", ")
                );
            }
            let list = control.proposals().await?;
            if cli.json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.state.to_string(),
                            p.author.clone(),
                            p.approvals
                                .iter()
                                .map(|a| a.by.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                            p.base_revision.to_string(),
                            p.diff.len().to_string(),
                            p.comment.clone(),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "STATE",
                            "AUTHOR",
                            "APPROVED BY",
                            "BASE",
                            "FIELDS",
                            "COMMENT"
                        ],
                        &rows
                    )
                );
            }
        }
        ConfigCommand::Proposal { command } => match command {
            ProposalCommand::Show { id } => {
                let coord = connect(cli).await?;
                let p = ChangeControl::find_proposal(&coord, id).await?;
                show(cli, &p);
            }
            ProposalCommand::Approve { id } => approve(cli, id).await?,
            ProposalCommand::Reject { id, reason } => reject(cli, id, reason).await?,
            ProposalCommand::Apply { id } => apply(cli, id, &BreakGlass::default()).await?,
            ProposalCommand::Rebase { id } => {
                let control = control_for(cli, id, None).await?;
                let p = control.rebase(id).await?;
                if !cli.json {
                    outln!(
                        "rebased {} on revision {} (approvals dropped)",
                        p.id,
                        p.base_revision
                    );
                }
                show(cli, &p);
            }
        },
        ConfigCommand::Approve { id } => approve(cli, id).await?,
        ConfigCommand::Reject { id, reason } => reject(cli, id, reason).await?,
        ConfigCommand::Policy {
            prefix,
            set,
            file,
            clear,
        } => {
            let control = control(cli, prefix, None).await?;
            if *set {
                let file = file
                    .as_ref()
                    .ok_or_else(|| fail(2, "--set needs -f FILE"))?;
                let text = String::from_utf8(read_file(file)?)
                    .map_err(|_| fail(3, format!("{} is not UTF-8", file.display())))?;
                let policy = Policy::parse(&text)?;
                control.set_policy(Some(&policy)).await?;
                eprintln!("policy of {} set", control.prefix());
            } else if *clear {
                control.set_policy(None).await?;
                eprintln!("policy of {} removed", control.prefix());
                return Ok(());
            }
            let policy = control.policy().await?;
            if cli.json {
                print_json(&json!({"key": control.history().policy_key(), "policy": policy}));
            } else {
                match policy {
                    Some(p) => {
                        outln!("# {}", control.history().policy_key());
                        out!("{}", serde_yaml::to_string(&p).unwrap_or_default());
                    }
                    None => outln!(
                        "no policy at {}: changes may be published directly, at any time",
                        control.history().policy_key()
                    ),
                }
            }
        }
        ConfigCommand::Promote {
            from,
            to,
            only,
            comment,
        } => {
            let coord = connect(cli).await?;
            let control = control_on(cli, &coord, to, None).await?;
            let source = open_with(cli, &coord, from, true).await?;
            let promoted = control
                .promote(&source, only, comment.as_deref().unwrap_or(""))
                .await?;
            if cli.json {
                print_json(&promoted);
            } else {
                outln!(
                    "promote {}@{} -> {}",
                    promoted.from.prefix,
                    promoted.from.revision,
                    to
                );
                out!("{}", diff_table(&promoted.diff));
                match (&promoted.proposal, &promoted.version) {
                    (_, Some(v)) => outln!("published version {} ({} keys)", v.revision, v.keys),
                    (Some(p), None) if p.applied.is_some() => {
                        outln!("applied {}: unchanged", p.id)
                    }
                    (Some(p), None) => outln!(
                        "proposed {} on {}: approve it (`coordctl config approve {}`), then `coordctl config apply {}`",
                        p.id, to, p.id, p.id
                    ),
                    (None, None) => outln!("nothing to promote"),
                }
            }
        }
        ConfigCommand::Template { prefix } => {
            let history = open(cli, prefix, true).await?;
            let (_, doc) = history.document(None).await?;
            out!("{}", template(&history, Some(&doc))?);
        }
        ConfigCommand::Docs { prefix, format } => {
            let history = open(cli, prefix, true).await?;
            match format.as_str() {
                "markdown" | "md" => out!("{}", reference_markdown(&history)?),
                "json" => print_json(&field_docs(&history)?),
                other => {
                    return Err(fail(2, format!("--format `{other}`: markdown or json")));
                }
            }
        }
        _ => unreachable!("config::run sends only change-control commands here"),
    }
    Ok(())
}

async fn approve(cli: &Cli, id: &str) -> Result<(), Failure> {
    let control = control_for(cli, id, None).await?;
    let p = control.approve(id).await?;
    if !cli.json {
        outln!("approved {} as {}", p.id, control.actor());
    }
    show(cli, &p);
    Ok(())
}

async fn reject(cli: &Cli, id: &str, reason: &str) -> Result<(), Failure> {
    let control = control_for(cli, id, None).await?;
    let p = control.reject(id, reason).await?;
    if !cli.json {
        outln!("rejected {} as {}", p.id, control.actor());
    }
    show(cli, &p);
    Ok(())
}
