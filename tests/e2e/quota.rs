//! `workspace_quota` enforced with a project quota: a small ext4 image with project quotas,
//! mounted with prjquota as the workspace root; a session writing past its quota gets EDQUOT.
//!
//! Needs root, a free loop device and a kernel with quota support (CONFIG_QUOTA and
//! CONFIG_QFMT_V2 for ext4's quota feature). Kernels built without it (some VM kernels: ext4
//! then refuses to mount the image, "The kernel was not built with CONFIG_QUOTA and
//! CONFIG_QFMT_V2") cannot run it, hence `ignore`: run it with `cargo nextest run --test e2e
//! --run-ignored only quota::`. It fails, never skips, when it runs where it cannot work.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Env, stderr, stdout};

/// Unmounts the image (after removing the sessions that use it) and deletes it, passed or not.
struct Mounted {
    remove_sessions: Command,
    point: PathBuf,
    image: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.remove_sessions.output();
        let _ = Command::new("umount").arg(&self.point).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
#[ignore = "needs root, a loop device and a kernel with CONFIG_QUOTA/CONFIG_QFMT_V2"]
fn a_session_writing_past_its_workspace_quota_gets_edquot() {
    let mut env = Env::new("quota-ext4");
    let image = env.path("workspaces.img");
    let point = env.workspace_root();
    std::fs::create_dir_all(&point).unwrap();
    let run = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{c:?}: {}{}", stdout(&out), stderr(&out));
    };
    run(Command::new("truncate").arg("-s").arg("96M").arg(&image));
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-O", "quota,project", "-I", "256"]).arg(&image));
    let mut remove_sessions = env.cmd();
    remove_sessions.args(["session", "rm", "--all", "--yes", "--quiet"]);
    let mounted = Command::new("mount").args(["-o", "loop,prjquota"]).arg(&image).arg(&point).output().unwrap();
    assert!(
        mounted.status.success(),
        "cannot mount an ext4 image with project quotas (see dmesg: a kernel without CONFIG_QUOTA cannot): {}",
        stderr(&mounted)
    );
    let _mounted = Mounted { remove_sessions, point: point.clone(), image };
    env.extra_env.push(("SANDMAN_WORKSPACE_QUOTA".into(), "8m".into()));

    let doctor = env.run(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = checks.iter().find(|c| c["check"] == "workspace quota").unwrap();
    assert_eq!(check["ok"], true, "{check}");

    let s = env.create("quinn", &[]);
    let out = env.ssh(&s, "dd if=/dev/zero of=$HOME/big bs=1M count=16 2>&1; echo rc=$?");
    let text = stdout(&out);
    assert!(text.contains("Disk quota exceeded") && !text.contains("rc=0"), "{text}{}", stderr(&out));
    // The same under /workspace (the same directory), and the session goes on.
    let out = env.ssh(&s, "rm -f ~/big && echo small > /workspace/small && cat ~/small");
    assert_eq!(stdout(&out).trim(), "small", "{}", stderr(&out));

    let shown: serde_json::Value = serde_json::from_str(&env.ok(&["session", "show", s.id(), "--json"])).unwrap();
    assert_eq!(shown["workspace_quota_bytes"], 8 << 20, "{shown}");
}
