//! `coordctl config …`: the current value, history, diff, validated put and apply, rollback,
//! the published schema and a live watch.

use std::io::Read;

use serde_json::{json, Value};

use crate::output::{cell, leaves, table};
use crate::{
    author, fail, open, parse_version, print_json, report_write, with_glass, Cli, ConfigCommand,
    Failure,
};

pub(crate) async fn run(cli: &Cli, command: &ConfigCommand) -> Result<(), Failure> {
    match command {
        ConfigCommand::Get {
            prefix,
            version,
            keys,
        } => {
            let history = open(cli, prefix, true).await?;
            if *keys {
                // Values holding a secret come masked (a document: its secret fields).
                let (revision, kvs) = history.kvs(*version).await?;
                let shown: Vec<(String, String)> = kvs
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                if cli.json {
                    let map: serde_json::Map<String, Value> = shown
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    print_json(&json!({"revision": revision, "keys": map}));
                } else {
                    outln!("# {} at revision {revision}", history.prefix());
                    let rows: Vec<Vec<String>> =
                        shown.into_iter().map(|(k, v)| vec![k, v]).collect();
                    out!("{}", table(&["KEY", "VALUE"], &rows));
                }
            } else {
                let (revision, doc) = history.document(*version).await?;
                if cli.json {
                    print_json(&json!({"revision": revision, "config": doc}));
                } else {
                    outln!("# {} at revision {revision}", history.prefix());
                    let rows: Vec<Vec<String>> = leaves(&doc)
                        .into_iter()
                        .map(|(p, v)| vec![p, cell(Some(&v))])
                        .collect();
                    out!("{}", table(&["FIELD", "VALUE"], &rows));
                }
            }
        }
        ConfigCommand::Put {
            prefix,
            field,
            value,
            comment,
            no_validate,
            allow_unknown,
            glass,
            force,
        } => {
            let mut history = with_glass(open(cli, prefix, !no_validate).await?, glass)?;
            if *allow_unknown {
                history = history.with_unknown_fields_allowed();
            }
            if *force {
                history = history.with_gate_forced();
            }
            let result = history
                .put(field, value, &author(cli), comment.as_deref().unwrap_or(""))
                .await?;
            report_write(cli, "published", result);
        }
        ConfigCommand::Apply {
            prefix,
            file,
            comment,
            no_validate,
            glass,
            force,
        } => {
            let Some(file) = file else {
                if prefix.starts_with('/') {
                    return Err(fail(
                        2,
                        format!("give the file to apply to `{prefix}` with --file FILE (-f), or a proposal ID instead of the prefix"),
                    ));
                }
                return crate::change::apply(cli, prefix, glass).await;
            };
            let text = read_file(file)?;
            let mut history = with_glass(open(cli, prefix, !no_validate).await?, glass)?;
            if *force {
                history = history.with_gate_forced();
            }
            let doc = history
                .parse_document(&text)
                .map_err(|e| fail(3, format!("{}: {}", file.display(), e.message())))?;
            let result = history
                .apply(&doc, &author(cli), comment.as_deref().unwrap_or(""))
                .await?;
            report_write(cli, "published", result);
        }
        ConfigCommand::History { prefix } => {
            let history = open(cli, prefix, true).await?;
            let mut versions = history.versions().await?;
            versions.reverse();
            if cli.json {
                print_json(&versions);
            } else {
                let rows: Vec<Vec<String>> = versions
                    .iter()
                    .map(|v| {
                        let mut note = v.comment.clone().unwrap_or_default();
                        if let Some(change) = &v.change {
                            note = format!("{} {note}", crate::change::note(change));
                        }
                        if let Some(from) = v.restored_from {
                            note = format!("(restores {from}) {note}");
                        }
                        if let Some((n, of)) = v.batch {
                            note = format!("[batch {n}/{of}] {note}");
                        }
                        vec![
                            v.revision.to_string(),
                            v.time_rfc3339(),
                            v.kind.to_string(),
                            v.author.clone().unwrap_or_else(|| "-".into()),
                            v.keys.to_string(),
                            note.trim().to_string(),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    table(
                        &["VERSION", "TIME", "SOURCE", "AUTHOR", "KEYS", "COMMENT"],
                        &rows
                    )
                );
            }
        }
        ConfigCommand::Diff { prefix, from, to } => {
            let (a, b) = (parse_version(from)?, parse_version(to)?);
            let history = open(cli, prefix, true).await?;
            let changes = history.diff(a, b).await?;
            if cli.json {
                print_json(&changes);
            } else if changes.is_empty() {
                outln!("no changes");
            } else {
                let rows: Vec<Vec<String>> = changes
                    .iter()
                    .map(|c| {
                        let (old, new) = (cell(c.old.as_ref()), cell(c.new.as_ref()));
                        if c.unknown {
                            // Not readable from the history: it may not have changed at all.
                            vec![c.path.clone(), format!("{old}?"), format!("{new}?")]
                        } else {
                            vec![c.path.clone(), old, new]
                        }
                    })
                    .collect();
                out!("{}", table(&["FIELD", "OLD", "NEW"], &rows));
                if changes.iter().any(|c| c.unknown) {
                    outln!(
                        "?: a secret the history does not hold readably (recorded without a history key, or with a key not given here): whether it changed is unknown"
                    );
                }
            }
        }
        ConfigCommand::Rollback {
            prefix,
            version,
            comment,
            glass,
            force,
        } => {
            let mut history = with_glass(open(cli, prefix, true).await?, glass)?;
            if *force {
                history = history.with_gate_forced();
            }
            let result = history
                .rollback_to(*version, &author(cli), comment.as_deref().unwrap_or(""))
                .await?;
            report_write(cli, &format!("restored {version} as"), result);
        }
        ConfigCommand::Schema { prefix } => {
            let history = open(cli, prefix, true).await?;
            match history.schema() {
                Some(schema) => print_json(schema),
                None => {
                    return Err(fail(
                        5,
                        format!(
                            "no JSON Schema is published at `{}`: bind the service once",
                            history.schema_key()
                        ),
                    ))
                }
            }
        }
        command @ (ConfigCommand::Propose { .. }
        | ConfigCommand::Proposals { .. }
        | ConfigCommand::Proposal { .. }
        | ConfigCommand::Approve { .. }
        | ConfigCommand::Reject { .. }
        | ConfigCommand::Policy { .. }
        | ConfigCommand::Promote { .. }
        | ConfigCommand::Template { .. }
        | ConfigCommand::Docs { .. }) => return crate::change::run(cli, command).await,
        ConfigCommand::Watch { prefix, count } => {
            let history = open(cli, prefix, true).await?;
            let mut changes = history.changes().await?;
            eprintln!(
                "watching {} from revision {}",
                history.prefix(),
                changes.revision() + 1
            );
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let Some(change) = changes.next().await else {
                    break;
                };
                seen += 1;
                if cli.json {
                    outln!("{}", serde_json::to_string(&change).unwrap_or_default());
                } else if change.changes.is_empty() {
                    outln!(
                        "revision {}: keys changed, no field changed ({})",
                        change.revision,
                        change.keys.join(", ")
                    );
                } else {
                    for c in &change.changes {
                        outln!("revision {}: {c}", change.revision);
                    }
                }
            }
        }
        ConfigCommand::Instances {
            prefix,
            stale_after,
        } => crate::fleet::instances(cli, prefix, *stale_after).await?,
        ConfigCommand::Wait {
            prefix,
            revision,
            timeout,
        } => crate::fleet::wait(cli, prefix, *revision, *timeout).await?,
        ConfigCommand::Rollout { command } => crate::fleet::rollout(cli, command).await?,
    }
    Ok(())
}

/// A YAML or JSON file's bytes (`-`: standard input), refused over the value size limit.
pub(crate) fn read_file(file: &std::path::Path) -> Result<Vec<u8>, Failure> {
    let limit = coordination::config::DEFAULT_MAX_VALUE_BYTES as u64;
    let mut text = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().take(limit + 1).read_to_end(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit + 1).read_to_end(&mut text))
    };
    read.map_err(|e| fail(1, format!("reading {}: {e}", file.display())))?;
    if text.len() as u64 > limit {
        return Err(fail(
            3,
            format!("{} is over the limit of {limit} bytes", file.display()),
        ));
    }
    Ok(text)
}
