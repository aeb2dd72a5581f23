//! The session network: one on which containers can reach each other is refused.

use std::process::Command;

use crate::harness::{Env, stderr};

/// A network an admin made with Docker's defaults (inter-container traffic on) is refused.
#[test]
fn a_network_with_inter_container_traffic_is_refused() {
    let env = Env::new("icc-network");
    let made = Command::new("docker").args(["network", "create", &env.network]).output().unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let out = env.run(&["session", "create", "--user", "icy"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("network {} lets containers reach one another", env.network)));
    let doctor = env.run(&["doctor", "--json"]);
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("lets containers reach one another"));
    assert!(env.containers().is_empty());
}
