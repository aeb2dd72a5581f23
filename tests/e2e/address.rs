//! A stable address and the user's own keys: a user's port is kept, the ssh config block and its
//! known_hosts line keep working when the port changes, keys added or revoked take effect in the
//! running session, and the home is also at /workspace.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::harness::{Env, Session, ssh_base, stderr, stdout};
use crate::http::Serve;

/// `ssh -F config alias`, with the host key checked against `known_hosts` only.
fn ssh_by_alias(config: &Path, known_hosts: &Path, alias: &str, remote: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([alias, remote])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `session ssh-config --user USER --identity-file KEY`, written to a file: (config, known_hosts line).
fn ssh_config(env: &Env, user: &str, key: &Path, name: &str) -> (PathBuf, String) {
    let key = key.to_str().unwrap();
    let text = env.ok(&["session", "ssh-config", "--user", user, "--identity-file", key]);
    let json: Value =
        serde_json::from_str(&env.ok(&["session", "ssh-config", "--user", user, "--identity-file", key, "--json"]))
            .unwrap();
    assert!(text.starts_with(json["ssh_config"].as_str().unwrap()), "{text}");
    let line = json["ssh_config_known_hosts"].as_str().unwrap().to_string();
    assert!(text.contains(&format!("# {line}\n")), "the plain output names the known_hosts line: {text}");
    let path = env.path(name);
    std::fs::write(&path, &text).unwrap();
    (path, line)
}

#[test]
fn a_user_keeps_their_port_and_the_ssh_config_survives_a_port_change() {
    let env = Env::new("stable-address");
    let alice = env.create("alice", &[]);
    let p = alice.port();
    let command = alice.json["ssh_command"].as_str().unwrap();
    assert!(command.contains(" -o IdentitiesOnly=yes "), "{command}");
    let block = alice.json["ssh_config"].as_str().unwrap();
    assert!(block.starts_with("Host sandman-alice\n") && block.contains(&format!("\n    Port {p}\n")), "{block}");
    for line in ["IdentitiesOnly yes", "HostKeyAlias sandman-alice", "User alice", "HostName 127.0.0.1"] {
        assert!(block.contains(&format!("\n    {line}\n")), "{line} in {block}");
    }

    // The block as printed, with only the alias line in known_hosts.
    let (config, line) = ssh_config(&env, "alice", &alice.key, "config-1");
    assert!(line.starts_with("sandman-alice ssh-ed25519 "), "{line}");
    assert_eq!(alice.json["ssh_config_known_hosts"], line.as_str());
    let known_hosts = env.path("known_hosts-alias");
    std::fs::write(&known_hosts, format!("{line}\n")).unwrap();
    let out = ssh_by_alias(&config, &known_hosts, "sandman-alice", "whoami; echo hi > ~/x; cat /workspace/x");
    assert_eq!(stdout(&out), "alice\nhi\n", "{}", stderr(&out));
    // /workspace is the home itself, writable both ways.
    let out = ssh_by_alias(
        &config,
        &known_hosts,
        "sandman-alice",
        "echo there > /workspace/y; cat ~/y; stat -c %u /workspace ~",
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text} {}", stderr(&out));
    assert_eq!(lines[0], "there");
    assert_eq!(lines[1], lines[2], "same owner: {text}");

    // rm alice; bob (new) does not get alice's port; alice gets it back.
    env.ok(&["session", "rm", alice.id(), "--yes"]);
    let bob = env.create("bob", &[]);
    assert_ne!(bob.port(), p, "a new user skips a remembered port");
    let alice = env.create("alice", &[]);
    assert_eq!(alice.port(), p, "alice's previous port");

    // Her port taken by something else: another port, and the same known_hosts line still works.
    env.ok(&["session", "rm", alice.id(), "--yes"]);
    let _occupied = TcpListener::bind(("0.0.0.0", p)).unwrap();
    let alice = env.create("alice", &[]);
    assert_ne!(alice.port(), p);
    let (config, line_again) = ssh_config(&env, "alice", &alice.key, "config-2");
    assert_eq!(line_again, line, "the alias line does not depend on the port");
    let out = ssh_by_alias(&config, &known_hosts, "sandman-alice", "cat ~/x");
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
}

fn keygen(env: &Env, name: &str) -> PathBuf {
    let key = env.path(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    key
}

fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")).output().unwrap();
    stdout(&out).split_whitespace().nth(1).unwrap().to_string()
}

fn pub_path(key: &Path) -> String {
    format!("{}.pub", key.display())
}

/// A login to `s` with `key` instead of the session's own.
fn login_with(env: &Env, s: &Session, key: &Path) -> Output {
    ssh_base("ssh", key, &env.known_hosts(s))
        .args(["-p", &s.port().to_string(), &format!("{}@127.0.0.1", s.user()), "whoami"])
        .output()
        .unwrap()
}

#[test]
fn keys_added_and_revoked_take_effect_in_the_running_session_only_for_their_user() {
    let env = Env::new("user-keys");
    let first = keygen(&env, "first");
    // A key for a user with no session yet; the session accepts it and its own generated key.
    assert!(env.ok(&["user", "key", "add", "carl", &pub_path(&first)]).contains(&fingerprint(&first)));
    let carl = env.create("carl", &[]);
    let dana = env.create("dana", &[]);
    assert_eq!(stdout(&login_with(&env, &carl, &first)), "carl\n");
    assert_eq!(stdout(&env.ssh(&carl, "whoami")), "carl\n", "the session's generated key");

    // Added while the session runs: the very next login works.
    let second = keygen(&env, "second");
    env.ok(&["user", "key", "add", "carl", &pub_path(&second)]);
    let out = login_with(&env, &carl, &second);
    assert_eq!(stdout(&out), "carl\n", "{}", stderr(&out));
    let dup = env.run(&["user", "key", "add", "carl", &pub_path(&second)]);
    assert_eq!(dup.status.code(), Some(3), "a duplicate is a conflict: {}", stderr(&dup));
    let listed: Vec<Value> = serde_json::from_str(&env.ok(&["user", "key", "ls", "carl", "--json"])).unwrap();
    let fps: Vec<&str> = listed.iter().map(|k| k["fingerprint"].as_str().unwrap()).collect();
    assert_eq!(fps, [fingerprint(&first), fingerprint(&second)]);

    // Revoked: the next login fails; the other key, the session key and dana are untouched.
    env.ok(&["user", "key", "rm", "carl", &fingerprint(&first)]);
    assert!(!login_with(&env, &carl, &first).status.success(), "a revoked key still logs in");
    assert_eq!(stdout(&login_with(&env, &carl, &second)), "carl\n");
    assert_eq!(stdout(&env.ssh(&carl, "whoami")), "carl\n");
    assert_eq!(stdout(&env.ssh(&dana, "whoami")), "dana\n");
    assert!(!login_with(&env, &dana, &second).status.success(), "carl's key is not dana's");
    let gone = env.run(&["user", "key", "rm", "carl", &fingerprint(&first)]);
    assert_eq!(gone.status.code(), Some(4), "{}", stderr(&gone));

    // ~/.ssh/authorized_keys in the home is not read (ssh-copy-id's file).
    let planted = keygen(&env, "planted");
    let line = std::fs::read_to_string(pub_path(&planted)).unwrap();
    let out = env.ssh(&carl, &format!("mkdir -p -m 700 ~/.ssh && echo '{}' >> ~/.ssh/authorized_keys", line.trim()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!login_with(&env, &carl, &planted).status.success(), "the home's authorized_keys let a key in");

    // The API: list, add (409 again), remove (404 again), with the fingerprint's '/' escaped.
    let serve = Serve::start(&env);
    let listed = serve.get("/users/carl/keys");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()[0]["fingerprint"], fingerprint(&second).as_str());
    let third = keygen(&env, "third");
    let body = json!({ "public_key": std::fs::read_to_string(pub_path(&third)).unwrap() });
    let added = serve.call("POST", "/users/carl/keys", Some(&body));
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.json()["fingerprint"], fingerprint(&third).as_str());
    assert_eq!(stdout(&login_with(&env, &carl, &third)), "carl\n");
    assert_eq!(serve.call("POST", "/users/carl/keys", Some(&body)).status, 409);
    let bad = serve.call("POST", "/users/carl/keys", Some(&json!({ "public_key": "ssh-ed25519 nope" })));
    assert_eq!((bad.status, bad.code()), (400, "invalid_input".to_string()), "{}", bad.text());
    let path = format!("/users/carl/keys/{}", fingerprint(&third).replace('/', "%2F").replace('+', "%2B"));
    assert_eq!(serve.call("DELETE", &path, None).status, 200);
    assert!(!login_with(&env, &carl, &third).status.success(), "revoked through the API");
    assert_eq!(serve.call("DELETE", &path, None).status, 404);
    serve.stop();
}
