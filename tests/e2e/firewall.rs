//! The egress policy: from inside a real session, the host's address on the session bridge (its
//! gateway) is unreachable, except on an allowed port and when the policy is off; sandman's rules
//! are removed completely afterwards. Traffic goes only to the gateway of the test's own bridge.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Env, Session, stderr, stdout};

/// The test's own network, made beforehand (as sandman would: no inter-container traffic), so
/// that listeners can wait on its gateway before the session exists. Returns the gateway and the
/// bridge device.
fn own_network(env: &Env) -> (Ipv4Addr, String) {
    let made = Command::new("docker")
        .args(["network", "create", "-o", "com.docker.network.bridge.enable_icc=false", &env.network])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let out = Command::new("docker")
        .args(["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}} {{.Id}}", &env.network])
        .output()
        .unwrap();
    let text = stdout(&out);
    let (gateway, id) = text.trim().split_once(' ').unwrap();
    (gateway.parse().unwrap(), format!("br-{}", &id[..12]))
}

/// Removes sandman's rules of the test's network when the test ends, passed or not (the
/// environment's own drop runs later and removes the network).
struct RulesGuard(Command);

impl RulesGuard {
    fn new(env: &Env) -> RulesGuard {
        let mut remove = env.cmd();
        remove.args(["firewall", "remove"]);
        RulesGuard(remove)
    }
}

impl Drop for RulesGuard {
    fn drop(&mut self) {
        let _ = self.0.output();
    }
}

/// sandman's rules and chains (`iptables -S`) for `bridge` (Docker's own rules for it aside).
fn rules_of(bridge: &str) -> Vec<String> {
    let out = Command::new("iptables").args(["-w", "5", "-S"]).output().unwrap();
    assert!(out.status.success(), "iptables -S: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| l.contains(bridge) && (l.contains("SANDMAN-") || l.contains("sandman:")))
        .map(str::to_string)
        .collect()
}

/// A listener on the gateway address, on a free port.
fn listen(gateway: Ipv4Addr) -> TcpListener {
    let l = TcpListener::bind(SocketAddr::from((gateway, 0))).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// Whether `listener` accepted a connection within `wait`.
fn accepted(listener: &TcpListener, wait: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < wait {
        if listener.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Opens a TCP connection from inside the session: "open", or "closed" with the shell's reason.
fn connect_from(env: &Env, s: &Session, gateway: Ipv4Addr, port: u16) -> String {
    let probe = format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{gateway}/{port}' 2>&1 && echo open || echo closed");
    let out = env.ssh(s, &probe);
    assert!(out.status.success(), "ssh (login itself must work): {}", stderr(&out));
    stdout(&out)
}

#[test]
fn a_session_reaches_the_host_only_on_an_allowed_port() {
    let mut env = Env::new("firewall-host");
    let (gateway, bridge) = own_network(&env);
    let _guard = RulesGuard::new(&env);
    let blocked = listen(gateway);
    let allowed = listen(gateway);
    let allowed_port = allowed.local_addr().unwrap().port();
    let blocked_port = blocked.local_addr().unwrap().port();
    env.extra_env.push(("SANDMAN_ALLOWED_HOST_PORTS".into(), allowed_port.to_string()));
    let env = &env;

    // The login works: replies from the session's sshd pass the rules (established traffic).
    let s = env.create("wally", &[]);
    let rules = rules_of(&bridge);
    assert!(rules.iter().any(|r| r.starts_with("-A INPUT") && r.contains("sandman:")), "{rules:#?}");
    assert!(rules.iter().any(|r| r.contains(&format!("--dport {allowed_port} -j RETURN"))), "{rules:#?}");

    let started = Instant::now();
    let answer = connect_from(env, &s, gateway, blocked_port);
    assert!(answer.contains("closed") && answer.contains("refused"), "blocked port: {answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "a rejection fails fast, not by timeout");
    assert!(!accepted(&blocked, Duration::from_millis(500)), "the blocked listener saw a connection");

    let answer = connect_from(env, &s, gateway, allowed_port);
    assert_eq!(answer.trim(), "open", "allowed port");
    assert!(accepted(&allowed, Duration::from_secs(5)), "the allowed listener saw no connection");

    // Another session's published port, through the host, is refused too (docker-proxy listens
    // on the host's addresses).
    let other = env.create("olga", &[]);
    let answer = connect_from(env, &s, gateway, other.port());
    assert!(answer.contains("closed") && answer.contains("refused"), "another session's port: {answer}");
    env.ok(&["session", "rm", other.id(), "--yes"]);

    let show = env.run(&["firewall", "show", "--json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let status: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!((status["up_to_date"].as_bool(), status["bridge"].as_str()), (Some(true), Some(bridge.as_str())));
    let doctor = env.run(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = checks.iter().find(|c| c["check"] == "firewall").expect("doctor has a firewall check");
    assert_eq!(check["ok"], true, "{check}");

    // Rules deleted behind sandman's back: doctor and show say so, apply repairs them.
    let input_jump = rules.iter().find(|r| r.starts_with("-A INPUT")).unwrap();
    let mut delete: Vec<String> = vec!["-w".into(), "5".into(), "-D".into()];
    delete.extend(input_jump.replace('"', "").split(' ').skip(1).map(str::to_string));
    let out = Command::new("iptables").args(&delete).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let show = env.run(&["firewall", "show"]);
    assert_eq!(show.status.code(), Some(5), "{}", stdout(&show));
    let doctor = env.run(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = checks.iter().find(|c| c["check"] == "firewall").unwrap();
    assert_eq!(check["ok"], false, "{check}");
    assert!(check["fix"].as_str().unwrap().contains("sandman firewall apply"), "{check}");
    let open_now = connect_from(env, &s, gateway, blocked_port);
    assert_eq!(open_now.trim(), "open", "without the jump the host answers: the check above is real");
    assert!(accepted(&blocked, Duration::from_secs(5)));
    env.ok(&["firewall", "apply"]);
    assert!(env.run(&["firewall", "show"]).status.success());
    assert!(connect_from(env, &s, gateway, blocked_port).contains("closed"), "repaired");
    // A reaper pass repairs them too.
    let out = Command::new("iptables").args(&delete).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.run(&["firewall", "show"]).status.code(), Some(5));
    env.ok(&["reap"]);
    assert!(env.run(&["firewall", "show"]).status.success(), "the reaper pass did not repair the rules");

    // Removal leaves nothing of sandman's for this bridge.
    env.ok(&["session", "rm", s.id(), "--yes"]);
    env.ok(&["firewall", "remove"]);
    assert_eq!(rules_of(&bridge), Vec::<String>::new());
}

#[test]
fn blocked_networks_apply_without_block_host_and_changed_settings_replace_the_rules() {
    let mut env = Env::new("firewall-cidrs");
    let (gateway, bridge) = own_network(&env);
    let _guard = RulesGuard::new(&env);
    let listener = listen(gateway);
    let port = listener.local_addr().unwrap().port();
    env.extra_env.push(("SANDMAN_BLOCK_HOST".into(), "false".into()));
    env.extra_env.push(("SANDMAN_BLOCKED_CIDRS".into(), format!("{gateway}/32")));

    let s = env.create("cedric", &[]);
    let answer = connect_from(&env, &s, gateway, port);
    assert!(answer.contains("closed") && answer.contains("refused"), "blocked network: {answer}");
    assert!(!accepted(&listener, Duration::from_millis(500)));

    // blocked_cidrs = [] and block_host = false: no rules are wanted; apply removes them.
    env.extra_env.retain(|(k, _)| k != "SANDMAN_BLOCKED_CIDRS");
    env.extra_env.push(("SANDMAN_BLOCKED_CIDRS".into(), String::new()));
    env.ok(&["firewall", "apply"]);
    assert_eq!(rules_of(&bridge), Vec::<String>::new(), "the policy is off: no rules");
    let answer = connect_from(&env, &s, gateway, port);
    assert_eq!(answer.trim(), "open", "policy off: {answer}");
    assert!(accepted(&listener, Duration::from_secs(5)));
}

#[test]
fn a_create_without_iptables_is_refused_with_the_fix_and_leaves_nothing() {
    let env = Env::new("firewall-missing");
    // iptables lives in /usr/sbin; without it on PATH the create cannot install the rules.
    let out = env.cmd().env("PATH", "/usr/bin:/bin").args(["session", "create", "--user", "nora"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("iptables is not installed") && err.contains("set block_host = false"), "{err}");
    assert!(env.containers().is_empty(), "a container is left");
    assert_eq!(env.sessions().len(), 0, "a session row is left");
}
