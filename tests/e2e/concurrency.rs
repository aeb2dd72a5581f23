//! Many sandman processes at once never hand out a port or a user's session twice.

use std::collections::HashSet;
use std::process::Child;

use crate::harness::{Env, stderr};

fn spawn_create(env: &Env, user: &str) -> Child {
    env.cmd()
        .args(["session", "create", "--user", user, "--json", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ten_users_at_once_get_ten_distinct_ports() {
    let env = Env::new("ten-at-once");
    let children: Vec<Child> = (0..10).map(|i| spawn_create(&env, &format!("par{i}"))).collect();
    let mut ports = HashSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a create failed: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ports.insert(json["ssh_port"].as_u64().unwrap());
    }
    assert_eq!(ports.len(), 10, "distinct ports: {ports:?}");
    assert_eq!(env.sessions().len(), 10);
    assert_eq!(env.containers().len(), 10);
    let uids: HashSet<String> = (0..10)
        .map(|i| {
            let meta = std::fs::metadata(env.workspace_root().join(format!("par{i}"))).unwrap();
            std::os::unix::fs::MetadataExt::uid(&meta).to_string()
        })
        .collect();
    assert_eq!(uids.len(), 10, "distinct uids");
}

#[test]
fn five_creates_for_one_user_make_exactly_one_session() {
    let env = Env::new("five-one-user");
    let children: Vec<Child> = (0..5).map(|_| spawn_create(&env, "solo")).collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let winners = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "exactly one create wins");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(3), "{}", stderr(o));
        assert!(stderr(o).contains("session for user solo already exists"), "{}", stderr(o));
    }
    assert_eq!(env.sessions().len(), 1);
    assert_eq!(env.containers().len(), 1);
}
