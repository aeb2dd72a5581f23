//! `sandman node register`: this swarm node's GPUs, as node labels the manager places by.

use super::print_json;
use crate::cli::NodeCommand;
use crate::error::Result;
use crate::sessions::Sessions;

pub async fn run(sessions: &Sessions, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Register { json } => {
            let mut uuids = Vec::new();
            for d in sessions.gpu().devices()? {
                uuids.push(d.uuid.clone());
                uuids.extend(d.mig_instances.iter().map(|m| m.uuid.clone()));
            }
            let engine = sessions.engine().await?;
            let registered = engine.register_node(&uuids, &sessions.settings.network).await;
            // This node's firewall rules for the session bridge, before its first session
            // (also on a worker, whose labels a manager writes).
            if let Some(bridge) = sessions.firewall_apply(false).await? {
                eprintln!("firewall rules for bridge {bridge} are in place on this node");
            }
            let node = registered?;
            if json {
                return print_json(&node);
            }
            println!(
                "node {} ({}, {}): {} GPU device(s) recorded",
                node.id,
                node.hostname,
                node.address,
                node.gpus.len()
            );
            for g in &node.gpus {
                println!("  {g}");
            }
            Ok(())
        }
    }
}
