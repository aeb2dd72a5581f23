//! A create killed with SIGKILL halfway leaves a row and a container; one reap removes both,
//! keeps the workspace, and the user can start again.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Env, stderr};

/// An image whose "sshd" never answers: a create using it waits until it times out.
pub fn hanging_image() -> String {
    let tag = "sandman-test-hanging-sshd:1".to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM gpu-workspace\nRUN printf '#!/bin/sh\\nexec sleep 600\\n' > /usr/sbin/sshd && chmod 755 /usr/sbin/sshd\n",
    )
    .unwrap();
    let out = Command::new("docker").args(["build", "-q", "-t", &tag]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "cannot build the test image: {}", stderr(&out));
    tag
}

#[test]
fn kill_during_create_then_reap_cleans_everything_and_keeps_home() {
    let env = Env::new("crash");
    let image = hanging_image();
    // A normal session first, so the workspace holds a file to protect.
    let s = env.create("kim", &[]);
    assert!(env.ssh(&s, "echo precious > ~/data/keep.txt").status.success());
    env.ok(&["session", "rm", s.id(), "--yes"]);

    let mut child = env.cmd().args(["session", "create", "--user", "kim", "--image", &image]).spawn().unwrap();
    let start = Instant::now();
    while env.containers().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the create never made its container");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();

    let rows = env.sessions();
    assert_eq!(rows.len(), 1, "the dead create left its row");
    assert_eq!(rows[0]["state"], "creating");
    let port = rows[0]["ssh_port"].as_u64().unwrap();

    let report: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--json"])).unwrap();
    assert_eq!(report["abandoned"].as_array().unwrap().len(), 1, "{report}");
    assert!(env.sessions().is_empty(), "row gone");
    assert!(env.containers().is_empty(), "container gone");
    assert!(std::net::TcpListener::bind(("0.0.0.0", port as u16)).is_ok(), "port {port} free again");
    let home = env.workspace_root().join("kim");
    assert_eq!(std::fs::read_to_string(home.join("data/keep.txt")).unwrap(), "precious\n");

    let again = env.create("kim", &[]);
    let out = env.ssh(&again, "cat ~/data/keep.txt");
    assert_eq!(crate::harness::stdout(&out), "precious\n");
}

#[test]
fn sshd_that_never_answers_times_out_cleanly() {
    let mut env = Env::new("ssh-timeout");
    let image = hanging_image();
    env.extra_env.push(("SANDMAN_SSH_READY_TIMEOUT_SECS".into(), "2".into()));
    let out = env.run(&["session", "create", "--user", "tom", "--image", &image]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("sshd did not answer on 127.0.0.1:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("within 2s"), "{}", stderr(&out));
    assert!(env.sessions().is_empty());
    assert!(env.containers().is_empty());
}

#[test]
fn ctrl_c_during_create_removes_what_it_made() {
    let env = Env::new("ctrl-c");
    let image = hanging_image();
    let child = env
        .cmd()
        .args(["session", "create", "--user", "ivan", "--image", &image])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while env.containers().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the create never made its container");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert!(env.sessions().is_empty(), "no row");
    let left = env.containers();
    let ps = Command::new("docker").args(["ps", "-a"]).output().unwrap();
    assert!(left.is_empty(), "no container: {left:?} {} {}", stderr(&out), String::from_utf8_lossy(&ps.stdout));
}
