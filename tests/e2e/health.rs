//! Health: a session whose container was killed or paused, or whose sshd its user killed or
//! stopped, is marked failed and cleaned by one reap pass; the user's next create works.

use std::process::Command;

use crate::harness::{Env, Session, stderr};

/// A shell line, run as the user, that sends `signal` to the session's listening sshd.
fn signal_own_sshd(signal: &str) -> String {
    format!(
        "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" in \
         'sshd: '*'[listener]'*) kill -{signal} ${{p#/proc/}};; esac; done"
    )
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
}

fn container(s: &Session) -> String {
    s.json["container_id"].as_str().unwrap().to_string()
}

#[test]
fn broken_sessions_fail_are_cleaned_in_one_pass_and_their_users_get_new_ones() {
    let env = Env::new("health");
    let healthy = env.create("hale", &[]);
    let killed = env.create("kilo", &[]);
    let paused = env.create("paula", &[]);
    let sshd_killed = env.create("sid", &[]);
    let sshd_stopped = env.create("stoppy", &[]);

    docker(&["kill", &container(&killed)]);
    docker(&["pause", &container(&paused)]);
    // The user's own sshd runs as the user, who may end it (the container's command ends with
    // it), or stop it (the container runs on, but nothing answers). Done as the user through the
    // engine: an ssh session would wait on the stopped listener.
    // (The exec ends with the container, so its status says nothing.)
    let _ = Command::new("docker")
        .args(["exec", "-u", "sid", &container(&sshd_killed), "sh", "-c", &signal_own_sshd("TERM")])
        .output();
    docker(&["exec", "-u", "stoppy", &container(&sshd_stopped), "sh", "-c", &signal_own_sshd("STOP")]);

    let report: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--json"])).unwrap();
    let mut failed: Vec<(String, String)> = report["failed_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap().to_string(), f["reason"].as_str().unwrap().to_string()))
        .collect();
    failed.sort();
    let exited = "its container is exited";
    let silent = "its sshd did not answer";
    let mut expected = [
        (killed.id(), &[exited][..]),
        (paused.id(), &["its container is paused"]),
        // Caught while the container is still on its way out, or after it exited.
        (sshd_killed.id(), &[exited, silent]),
        (sshd_stopped.id(), &[silent]),
    ];
    expected.sort();
    assert_eq!(failed.len(), 4, "{report}");
    for ((id, reason), (want_id, want_reasons)) in failed.iter().zip(expected) {
        assert_eq!(id, want_id, "{report}");
        assert!(want_reasons.iter().any(|w| reason.starts_with(w)), "{id}: {reason}");
    }
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");

    // list and show say failed, and why; only the healthy session's container is left.
    for s in env.sessions() {
        let want = if s["id"] == healthy.id() { "running" } else { "failed" };
        assert_eq!(s["state"], want, "{s}");
        assert_eq!(s["failure"].is_string(), want == "failed", "{s}");
    }
    let shown = env.ok(&["session", "show", killed.id()]);
    assert!(shown.contains("failed") && shown.contains("its container is exited"), "{shown}");
    assert_eq!(env.containers().len(), 1);
    assert!(env.ssh(&healthy, "true").status.success(), "the healthy session still works");

    let again: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--json"])).unwrap();
    assert_eq!(again["failed_sessions"], serde_json::json!([]), "{again}");

    for user in ["kilo", "paula", "sid", "stoppy"] {
        let fresh = env.create(user, &[]);
        assert!(env.ssh(&fresh, "true").status.success(), "{user}'s new session works");
    }
    assert_eq!(env.sessions().iter().filter(|s| s["state"] == "running").count(), 5);
}
