//! `coordctl registry …`: ask a registered instance to drain.

use serde_json::json;

use crate::{author, connect, print_json, Cli, Failure, RegistryCommand};

pub(crate) async fn run(cli: &Cli, command: &RegistryCommand) -> Result<(), Failure> {
    let coord = connect(cli).await?;
    match command {
        RegistryCommand::Drain { service, instance } => {
            let by = author(cli);
            let request = coord
                .registry()
                .request_drain(service, instance, &by)
                .await?;
            if cli.json {
                print_json(&json!({
                    "service": request.service,
                    "id": request.id,
                    "key": request.key,
                    "lease": format!("{:x}", request.lease_id),
                    "revision": request.revision,
                    "requested_by": by,
                }));
            } else {
                outln!(
                    "asked {}/{} to drain (lease {:x}, revision {}); it reports draining once its registration has written it",
                    request.service, request.id, request.lease_id, request.revision
                );
            }
        }
    }
    Ok(())
}
