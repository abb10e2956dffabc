//! `coordctl lock …`: list a lock's holder and waiters, force-release its holder.

use serde_json::{json, Value};

use crate::output::table;
use crate::{connect, print_json, Cli, Failure, LockCommand};

pub(crate) async fn run(cli: &Cli, command: &LockCommand) -> Result<(), Failure> {
    let coord = connect(cli).await?;
    let entry_json = |e: &coordination::lock::LockEntry, role: &str| {
        json!({
            "role": role,
            "key": e.key,
            "lease": format!("{:x}", e.lease),
            "create_revision": e.create_revision,
            "ttl_secs": e.remaining_ttl.map(|t| t.as_secs()),
        })
    };
    match command {
        LockCommand::Ls { name } => {
            let status = coord.lock_status(name).await?;
            let entries: Vec<(&str, &coordination::lock::LockEntry)> = status
                .holder
                .iter()
                .map(|h| ("holder", h))
                .chain(status.waiters.iter().map(|w| ("waiter", w)))
                .collect();
            if cli.json {
                let list: Vec<Value> = entries.iter().map(|(r, e)| entry_json(e, r)).collect();
                print_json(&json!({
                    "prefix": status.prefix,
                    "revision": status.revision,
                    "entries": list,
                }));
            } else if entries.is_empty() {
                outln!("{} is free (revision {})", status.prefix, status.revision);
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|(role, e)| {
                        vec![
                            role.to_string(),
                            e.key.clone(),
                            format!("{:x}", e.lease),
                            e.create_revision.to_string(),
                            e.remaining_ttl
                                .map_or("-".into(), |t| format!("{} s", t.as_secs())),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    table(&["ROLE", "KEY", "LEASE", "CREATE_REVISION", "TTL"], &rows)
                );
            }
        }
        LockCommand::Release { name } => match coord.force_unlock(name).await? {
            Some(holder) if cli.json => print_json(&entry_json(&holder, "released")),
            Some(holder) => outln!(
                "released {} (lease {:x}, fencing token {})",
                holder.key,
                holder.lease,
                holder.create_revision
            ),
            None if cli.json => print_json(&Value::Null),
            None => outln!("the lock is free: nothing to release"),
        },
    }
    Ok(())
}
