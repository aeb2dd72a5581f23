//! `sandman firewall show|apply|remove`: the egress policy's rules on the session bridge.

use serde_json::json;

use super::print_json;
use crate::cli::FirewallCommand;
use crate::error::{Error, Result};
use crate::firewall::Status;
use crate::sessions::Sessions;

pub async fn run(sessions: &Sessions, cmd: FirewallCommand) -> Result<()> {
    match cmd {
        FirewallCommand::Show { json } => {
            let status = sessions.firewall_status().await?;
            print_status(&status, json)?;
            if status.up_to_date {
                Ok(())
            } else {
                Err(Error::Unavailable(format!(
                    "the firewall rules of network {} differ from the settings: run `sandman firewall apply`",
                    status.network
                )))
            }
        }
        FirewallCommand::Apply { json } => {
            let bridge = sessions.firewall_apply(true).await?;
            let status = sessions.firewall_status().await?;
            if !json {
                match &bridge {
                    Some(b) => eprintln!("firewall rules of network {} (bridge {b}) are in place", status.network),
                    None => {
                        eprintln!("nothing to apply: the policy is off and network {} does not exist", status.network)
                    }
                }
            }
            print_status(&status, json)
        }
        FirewallCommand::Remove { json } => {
            let removed = sessions.firewall_remove().await?;
            let network = &sessions.settings.network;
            if json {
                print_json(&json!({ "network": network, "removed": removed }))
            } else {
                if removed {
                    println!("removed sandman's firewall rules of network {network}");
                } else {
                    println!("sandman has no firewall rules for network {network}");
                }
                Ok(())
            }
        }
    }
}

fn print_status(status: &Status, json: bool) -> Result<()> {
    if json {
        return print_json(status);
    }
    let p = &status.policy;
    let cidrs: Vec<String> = p.blocked_cidrs.iter().map(ToString::to_string).collect();
    println!("network      {} (bridge {})", status.network, status.bridge.as_deref().unwrap_or("none yet"));
    println!(
        "policy       block_host = {}, blocked_cidrs = [{}], allowed_host_ports = {:?}",
        p.block_host,
        cidrs.join(", "),
        p.allowed_host_ports
    );
    println!("up to date   {}", if status.up_to_date { "yes" } else { "no: run `sandman firewall apply`" });
    println!("rules now:");
    for line in &status.current {
        println!("  {line}");
    }
    if !status.up_to_date {
        println!("rules wanted:");
        for line in &status.desired {
            println!("  {line}");
        }
    }
    Ok(())
}
