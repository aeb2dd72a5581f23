//! A session works like a machine: log in, run, copy, forward; it is hardened; the home persists.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, ssh_base, ssh_command, stderr, stdout};

#[test]
fn log_in_copy_forward_and_keep_home_across_sessions() {
    let env = Env::new("login");
    let s = env.create("alice", &["--ttl", "30"]);
    assert_eq!(s.json["ssh_user"], "alice");
    assert_eq!(s.json["ssh_host"], "127.0.0.1");
    assert!(s.json["ssh_private_key"].is_null(), "the key went to --key-file, not stdout");
    assert!(s.json["gpu_uuid"].is_null());
    let port = s.port();
    assert!((env.ports.0..=env.ports.1).contains(&port));
    assert!(s.json["ssh_command"].as_str().unwrap().ends_with(&format!("-p {port} alice@127.0.0.1")));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&s.key).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600);

    // A command, its exit status, and the hardening seen from inside.
    let out = env.ssh(&s, "id -u; id -un; echo $HOME; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; test -e /var/run/docker.sock && echo SOCKET || echo nosocket");
    assert!(out.status.success(), "ssh failed: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let uid: u32 = lines[0].parse().unwrap();
    assert!(uid >= 20000, "runs as a non-root uid, got {uid}");
    assert_eq!(&lines[1..3], ["alice", "/home/alice"]);
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("CapPrm:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("nosocket"), "{text}");
    assert_eq!(env.ssh(&s, "exit 7").status.code(), Some(7));

    // Write in home over ssh; copy both ways with scp and sftp.
    assert!(env.ssh(&s, "echo from-ssh > ~/projects/note.txt").status.success());
    let local = env.path("upload.txt");
    std::fs::write(&local, "from-scp\n").unwrap();
    let kh = env.known_hosts(&s);
    let scp =
        |from: &str, to: &str| ssh_base("scp", &s.key, &kh).args(["-P", &port.to_string(), from, to]).output().unwrap();
    let remote = |p: &str| format!("alice@127.0.0.1:{p}");
    let up = scp(local.to_str().unwrap(), &remote("data/upload.txt"));
    assert!(up.status.success(), "scp up: {}", stderr(&up));
    let back = env.path("back.txt");
    let down = scp(&remote("projects/note.txt"), back.to_str().unwrap());
    assert!(down.status.success(), "scp down: {}", stderr(&down));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from-ssh\n");
    let batch = env.path("sftp-batch");
    let sftp_local = env.path("sftp-got.txt");
    std::fs::write(
        &batch,
        format!("put {} data/sftp.txt\nget data/upload.txt {}\n", local.display(), sftp_local.display()),
    )
    .unwrap();
    let sftp = ssh_base("sftp", &s.key, &kh)
        .args(["-P", &port.to_string(), "-b"])
        .arg(&batch)
        .arg("alice@127.0.0.1")
        .output()
        .unwrap();
    assert!(sftp.status.success(), "sftp: {}", stderr(&sftp));
    assert_eq!(std::fs::read_to_string(&sftp_local).unwrap(), "from-scp\n");
    let home = env.workspace_root().join("alice");
    assert_eq!(std::fs::read_to_string(home.join("data/sftp.txt")).unwrap(), "from-scp\n");

    // Local forwarding: a port here reaches the session's own sshd.
    let fwd_port = port + 1000;
    let mut tunnel = ssh_command(&s, &kh)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", &format!("127.0.0.1:{fwd_port}:127.0.0.1:2222")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let banner = wait_for_banner(fwd_port, Duration::from_secs(10));
    tunnel.kill().unwrap();
    let _ = tunnel.wait();
    assert!(banner.starts_with("SSH-2.0-"), "banner through the tunnel: {banner:?}");

    // rm keeps the workspace; a new session for alice sees the file and the same host key.
    let fingerprint = s.json["host_key_fingerprint"].as_str().unwrap().to_string();
    let rm = env.ok(&["session", "rm", s.id(), "--yes"]);
    assert!(rm.contains("workspace") && rm.contains("kept"), "{rm}");
    assert!(env.containers().is_empty(), "container removed");
    assert!(env.sessions().is_empty());
    assert!(home.join("projects/note.txt").exists());

    let again = env.create("alice", &[]);
    assert_eq!(again.json["host_key_fingerprint"], fingerprint.as_str());
    // The first session's known_hosts line still verifies the new session's host key.
    let kh_line = s.json["known_hosts"].as_str().unwrap().replace(&format!(":{port} "), &format!(":{} ", again.port()));
    let kh_again = env.path("known_hosts-again");
    std::fs::write(&kh_again, format!("{kh_line}\n")).unwrap();
    let out = ssh_command(&again, &kh_again).arg("cat ~/projects/note.txt; id -u").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("from-ssh\n{uid}\n"), "same file, same uid");
}

#[test]
fn sessions_cannot_reach_each_other() {
    let env = Env::new("isolation");
    let a = env.create("ann", &[]);
    let b = env.create("ben", &[]);
    let list = env.sessions();
    let ip =
        |user: &str| list.iter().find(|s| s["user_id"] == user).unwrap()["container_ip"].as_str().unwrap().to_string();
    let (ip_a, ip_b) = (ip("ann"), ip("ben"));
    assert_ne!(ip_a, ip_b);
    // Each reaches its own sshd by address, but not the other's.
    let probe = |target: &str| {
        format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{target}/2222 && head -c 4 <&3' && echo OPEN || echo CLOSED")
    };
    let own = stdout(&env.ssh(&a, &probe(&ip_a)));
    assert!(own.contains("SSH-") && own.contains("OPEN"), "own sshd: {own}");
    let other = stdout(&env.ssh(&a, &probe(&ip_b)));
    assert!(other.trim_end().ends_with("CLOSED"), "ann reached ben: {other}");
    let other = stdout(&env.ssh(&b, &probe(&ip_a)));
    assert!(other.trim_end().ends_with("CLOSED"), "ben reached ann: {other}");
}

fn wait_for_banner(port: u16, timeout: Duration) -> String {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 8];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(b"SSH-2.0-test\r\n");
                return String::from_utf8_lossy(&buf).to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    String::new()
}

#[test]
fn a_given_public_key_is_used_and_no_private_key_is_returned() {
    let env = Env::new("pubkey");
    let key = env.path("own");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(keygen.status.success());
    let out =
        env.ok(&["session", "create", "--user", "pat", "--public-key", &format!("{}.pub", key.display()), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(json["ssh_private_key"].is_null());
    let s = crate::harness::Session { json, key };
    let out = env.ssh(&s, "whoami");
    assert_eq!(stdout(&out), "pat\n", "{}", stderr(&out));
}
