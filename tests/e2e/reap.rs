//! The reaper: expiry, vanished containers, orphans, and running beside creates and other reaps.

use std::process::Command;

use crate::harness::{Env, stderr};

#[test]
fn reap_removes_expired_vanished_and_orphaned_and_nothing_else() {
    let env = Env::new("reap");
    let expired = env.create("eve", &[]);
    let vanished = env.create("vera", &[]);
    let alive = env.create("al", &[]);
    env.sql(&format!("UPDATE sessions SET expires_at = strftime('%s','now') - 1 WHERE id = '{}'", expired.id()));
    let gone =
        Command::new("docker").args(["rm", "-f", vanished.json["container_id"].as_str().unwrap()]).output().unwrap();
    assert!(gone.status.success());
    let instance = env.instance_id().unwrap();
    let orphan = Command::new("docker")
        .args(["create", "--label", &format!("sandman.instance={instance}"), "--label", "sandman.session=no-such-row"])
        .args(["gpu-workspace", "true"])
        .output()
        .unwrap();
    assert!(orphan.status.success(), "{}", stderr(&orphan));
    let orphan_id = String::from_utf8_lossy(&orphan.stdout).trim().to_string();

    let dry: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--dry-run", "--json"])).unwrap();
    assert_eq!(dry["expired"][0], expired.id());
    assert_eq!(env.sessions().len(), 3, "a dry run removes nothing");

    let report: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--json"])).unwrap();
    assert_eq!(report["expired"], serde_json::json!([expired.id()]));
    assert_eq!(report["vanished"], serde_json::json!([vanished.id()]));
    assert_eq!(report["orphans"], serde_json::json!([orphan_id]));
    let left: Vec<String> = env.sessions().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, [alive.id()]);
    assert_eq!(env.containers().len(), 1);
    assert!(env.ssh(&alive, "true").status.success(), "the live session still works");
    assert!(env.workspace_root().join("eve").is_dir(), "expired user's workspace kept");

    let report: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--json"])).unwrap();
    assert_eq!(report["expired"].as_array().unwrap().len() + report["orphans"].as_array().unwrap().len(), 0);
}

#[test]
fn reaps_beside_creates_remove_nothing_alive() {
    let env = Env::new("reap-vs-create");
    let reapers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = env.cmd();
            c.args(["reap", "--quiet"]);
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let out = c.output().unwrap();
                    assert!(out.status.success(), "reap failed: {}", stderr(&out));
                }
            })
        })
        .collect();
    let sessions: Vec<_> = (0..4).map(|i| env.create(&format!("rc{i}"), &[])).collect();
    for r in reapers {
        r.join().unwrap();
    }
    assert_eq!(env.sessions().len(), 4);
    for s in &sessions {
        assert!(env.ssh(s, "true").status.success(), "session {} survived the reapers", s.id());
    }
}
