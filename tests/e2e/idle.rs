//! Idle detection on the real engine: SSH connections, CPU use and (simulated) GPU processes keep
//! a session; without them it is reaped with reason idle; activity bumps the expiry up to the
//! maximum; a logged-in user sees the warning. Reap passes are driven with `sandman reap`; time
//! passes by moving the session's timestamps back (as a long wait would), except where a real
//! wait is what is tested.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, Env, Session, ssh_command, ssh_command_line, stderr, stdout};

/// An environment whose config file also holds `settings` (TOML lines).
fn idle_env(name: &str, settings: &str) -> Env {
    let env = Env::new(name);
    let mut file = std::fs::OpenOptions::new().append(true).open(env.path("config.toml")).unwrap();
    writeln!(file, "{settings}").unwrap();
    env
}

fn reap(env: &Env, flags: &[&str]) -> Value {
    let mut args = vec!["reap", "--json"];
    args.extend_from_slice(flags);
    serde_json::from_str(&env.ok(&args)).unwrap()
}

fn ids(report: &Value, list: &str) -> Vec<String> {
    report[list].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn view(env: &Env, s: &Session) -> Value {
    serde_json::from_str(&env.ok(&["session", "show", s.id(), "--json"])).unwrap()
}

/// Moves the session's creation, last activity and expiry `seconds` into the past, as if that
/// long had passed without a pass seeing anything.
fn age(env: &Env, s: &Session, seconds: i64) {
    env.sql(&format!(
        "UPDATE sessions SET created_at = created_at - {seconds}, last_activity_at = last_activity_at - {seconds}, \
         expires_at = expires_at - {seconds} WHERE id = '{}'",
        s.id()
    ));
}

/// The container's log (`docker logs`): where sshd and sandman's warnings write.
fn container_log(s: &Session) -> String {
    let out = Command::new("docker").args(["logs", s.json["container_id"].as_str().unwrap()]).output().unwrap();
    format!("{}{}", stdout(&out), stderr(&out))
}

fn column(env: &Env, s: &Session, column: &str) -> i64 {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.query_row(&format!("SELECT {column} FROM sessions WHERE id = ?1"), [s.id()], |r| r.get(0)).unwrap()
}

/// `ssh -N`: a connection that runs nothing, as a port forward or an idle terminal does.
fn hold_connection(env: &Env, s: &Session) -> Child {
    let mut c = ssh_command(s, &env.known_hosts(s));
    c.arg("-N").stdout(Stdio::null()).stderr(Stdio::null());
    let child = c.spawn().unwrap();
    // Established once the session's table lists it.
    let start = Instant::now();
    while !established(s) {
        assert!(start.elapsed() < Duration::from_secs(20), "ssh -N never connected");
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

/// Whether the container's network namespace holds an established connection on sshd's port
/// (2222 is 08AE), read the way an operator would check it.
fn established(s: &Session) -> bool {
    let out = Command::new("docker")
        .args(["exec", s.json["container_id"].as_str().unwrap(), "cat", "/proc/net/tcp", "/proc/net/tcp6"])
        .output()
        .unwrap();
    stdout(&out).lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(":08AE") && f[3] == "01"
    })
}

#[test]
fn an_open_ssh_connection_keeps_a_session_and_once_closed_it_is_reaped_as_idle() {
    let env = idle_env(
        "idle-ssh",
        "idle_timeout_minutes = 1\nactivity_bump_minutes = 0\ncpu_active_percent = 0\nprotect_busy_gpu = true",
    );
    let s = env.create("ida", &[]);
    let fresh = view(&env, &s);
    assert_eq!(fresh["last_activity_signal"], "creation");
    assert_eq!(fresh["last_activity_at"], fresh["created_at"]);
    assert!(fresh["ssh_connections"].is_null(), "nothing measured before the first pass: {fresh}");

    let mut ssh = hold_connection(&env, &s);
    // Past the timeout, across passes: the open connection keeps it.
    for pass in 0..2 {
        age(&env, &s, 120);
        let report = reap(&env, &[]);
        assert!(ids(&report, "idle").is_empty(), "pass {pass} reaped a connected session: {report}");
        let v = view(&env, &s);
        assert_eq!((v["ssh_connections"].clone(), v["last_activity_signal"].clone()), (1.into(), "ssh".into()), "{v}");
        assert!(v["idle_seconds"].as_i64().unwrap() < 10, "{v}");
    }
    let listed = env.sessions();
    assert_eq!(listed[0]["ssh_connections"], 1, "list shows it too: {listed:?}");

    ssh.kill().unwrap();
    ssh.wait().unwrap();
    let start = Instant::now();
    while established(&s) {
        assert!(start.elapsed() < Duration::from_secs(20), "the connection never closed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Closed, but active within the timeout: kept.
    let report = reap(&env, &[]);
    assert!(ids(&report, "idle").is_empty(), "{report}");
    assert_eq!(view(&env, &s)["ssh_connections"], 0);
    // That pass warned: the idle reap is less than a minute away. Not before: while connected
    // the deadline moved with every pass.
    let log = container_log(&s);
    assert_eq!(log.matches("because it has been idle").count(), 1, "one warning, after the connection closed:\n{log}");
    assert!(log.contains("(in 1 minute)") && log.contains("reason: idle"), "{log}");
    // The timeout passes for real; the next pass reaps it, saying why.
    let last = column(&env, &s, "last_activity_at");
    let wait = (last + 61 - chrono::Utc::now().timestamp()).max(0) as u64;
    std::thread::sleep(Duration::from_secs(wait));
    let report = reap(&env, &[]);
    assert_eq!(ids(&report, "idle"), [s.id()], "{report}");
    assert!(ids(&report, "expired").is_empty());
    assert!(env.sessions().is_empty());
    assert!(env.containers().is_empty(), "its container is removed");
    let out = env.run(&["reap"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn cpu_use_counts_as_activity_only_when_configured() {
    let env = idle_env("idle-cpu", "idle_timeout_minutes = 1\nactivity_bump_minutes = 0\ncpu_active_percent = 20");
    let s = env.create("cpuy", &[]);
    let started = env.ssh(&s, "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 & echo started");
    assert!(stdout(&started).contains("started"), "{}", stderr(&started));
    // The first pass records the container's CPU time; the next one compares.
    reap(&env, &[]);
    std::thread::sleep(Duration::from_secs(3));
    age(&env, &s, 600);
    let report = reap(&env, &[]);
    assert!(ids(&report, "idle").is_empty(), "a busy loop is activity at 20%: {report}");
    let v = view(&env, &s);
    assert_eq!(v["last_activity_signal"], "cpu", "{v}");
    assert_eq!(v["ssh_connections"], 0, "{v}");

    // The same load with CPU not counted (the flag beats the file): idle.
    std::thread::sleep(Duration::from_secs(2));
    age(&env, &s, 600);
    let report = reap(&env, &["--cpu-active-percent", "0"]);
    assert_eq!(ids(&report, "idle"), [s.id()], "{report}");
}

#[test]
fn a_simulated_gpu_process_prevents_an_idle_reap() {
    let env = idle_env("idle-gpu", "idle_timeout_minutes = 1\nactivity_bump_minutes = 0\ncpu_active_percent = 0");
    let sim = env.path("gpus.toml");
    std::fs::write(&sim, "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\nmig = true\ninstances = [\"3g.20gb\"]\n")
        .unwrap();
    let mut env = env;
    env.extra_env.push(("SANDMAN_GPU_BACKEND".into(), "sim".into()));
    env.extra_env.push(("SANDMAN_GPU_SIM_FILE".into(), sim.display().to_string()));
    let s = env.create("gina", &[]);
    let device = s.json["gpu_uuid"].as_str().unwrap().to_string();

    let out = env.run(&["gpu", "sim-busy", "--device", "MIG-no-such", "--processes", "1"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    env.ok(&["gpu", "sim-busy", "--device", &device, "--processes", "1"]);
    age(&env, &s, 600);
    let report = reap(&env, &[]);
    assert!(ids(&report, "idle").is_empty(), "a GPU process protects it: {report}");
    let v = view(&env, &s);
    assert_eq!((v["gpu_processes"].clone(), v["last_activity_signal"].clone()), (1.into(), "gpu".into()), "{v}");

    // Unprotected (the flag), a process holding the GPU keeps nobody's session.
    age(&env, &s, 600);
    let report = reap(&env, &["--protect-busy-gpu", "false", "--dry-run"]);
    assert_eq!(ids(&report, "idle"), [s.id()], "{report}");

    env.ok(&["gpu", "sim-busy", "--device", &device, "--processes", "0"]);
    let report = reap(&env, &[]);
    assert_eq!(ids(&report, "idle"), [s.id()], "{report}");
    assert!(env.sessions().is_empty());
}

#[test]
fn activity_bumps_the_expiry_up_to_the_maximum() {
    let env = idle_env(
        "idle-bump",
        "idle_timeout_minutes = 0\nactivity_bump_minutes = 30\ncpu_active_percent = 0\nmax_ttl_minutes = 40\ndefault_ttl_minutes = 5",
    );
    let s = env.create("bumpy", &["--ttl", "5"]);
    let created = column(&env, &s, "created_at");
    assert_eq!(column(&env, &s, "expires_at"), created + 300);
    // Without activity nothing moves.
    reap(&env, &[]);
    assert_eq!(column(&env, &s, "expires_at"), created + 300);

    let mut ssh = hold_connection(&env, &s);
    reap(&env, &[]);
    let now = chrono::Utc::now().timestamp();
    let bumped = column(&env, &s, "expires_at");
    assert!((now + 1795..=now + 1800).contains(&bumped), "moved to now + 30 min: {bumped} vs {now}");
    // 20 minutes later (its maximum, created_at + 40 min, is 20 minutes away): it stops there.
    age(&env, &s, 1200);
    reap(&env, &[]);
    let created = column(&env, &s, "created_at");
    assert_eq!(column(&env, &s, "expires_at"), created + 40 * 60, "never past the maximum");
    ssh.kill().unwrap();
    ssh.wait().unwrap();
}

#[test]
fn a_logged_in_user_sees_the_expiry_warning_and_the_notice_file() {
    let env = idle_env("idle-warn", "idle_timeout_minutes = 0\nactivity_bump_minutes = 0");
    let s = env.create("wanda", &["--ttl", "5"]);
    let kh = env.known_hosts(&s);
    let socket = env.path("tmux.sock");
    let tmux = |args: &[&str]| harness::tmux(&socket, args);
    let login = format!("{} -tt -p {} wanda@127.0.0.1", ssh_command_line(&s.key, &kh), s.port());
    let made = tmux(&["new-session", "-d", "-s", "login", "-x", "200", "-y", "50", &login]);
    assert!(made.status.success(), "{}", stderr(&made));
    let screen = || stdout(&tmux(&["capture-pane", "-p", "-J", "-t", "login"]));
    let wait_for = |what: &str| {
        let start = Instant::now();
        loop {
            let text = screen();
            if text.contains(what) {
                return text;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = tmux(&["kill-server"]);
                panic!("the terminal never showed {what:?}; it shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("wanda@sandman:~$");

    // Expiry 5 minutes away: the first pass gives the 10-minute warning, once.
    let report = reap(&env, &[]);
    assert_eq!(report["expired"], serde_json::json!([]), "{report}");
    let text = wait_for("sandman: this session expires at");
    assert!(text.contains("reason: expiry") && text.contains("in 5 minutes"), "{text}");
    let expires = column(&env, &s, "expires_at");
    let at = chrono::DateTime::from_timestamp(expires, 0).unwrap().format("%H:%M UTC").to_string();
    assert!(text.contains(&at), "the time {at} is in the warning: {text}");
    reap(&env, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(screen().matches("sandman: this session expires at").count(), 1, "given once:\n{}", screen());

    // One minute left: the last warning.
    env.sql(&format!("UPDATE sessions SET expires_at = strftime('%s','now') + 50 WHERE id = '{}'", s.id()));
    reap(&env, &[]);
    wait_for("(in 1 minute)");
    let _ = tmux(&["kill-server"]);

    // Written as the user, beside the user's files: the notice file and the session's log.
    let notice = env.ssh(&s, "cat ~/.sandman/expires_at; stat -c %u ~/.sandman/expires_at; id -u");
    let lines: Vec<String> = stdout(&notice).lines().map(str::to_string).collect();
    let deadline = column(&env, &s, "expires_at");
    assert_eq!(lines.first().map(String::as_str), Some(format!("{deadline} expiry").as_str()), "{lines:?}");
    assert_eq!(lines[1], lines[2], "owned by the user: {lines:?}");
    let log = container_log(&s);
    assert_eq!(log.matches("sandman: this session expires at").count(), 2, "both warnings in the log:\n{log}");
}

#[test]
fn a_sessions_own_idle_timeout_is_bounded_checked_and_shown_by_cli_and_api() {
    let env = idle_env("idle-api", "idle_timeout_minutes = 30\ngpu_backend = \"none\"");
    let out = env.run(&["gpu", "sim-busy", "--device", "MIG-x", "--processes", "1"]);
    assert_eq!(out.status.code(), Some(2), "only simulated GPUs: {}", stderr(&out));
    assert!(stderr(&out).contains("gpu backend is none"), "{}", stderr(&out));
    // The CLI: above the host's timeout is invalid input (exit 2), naming the maximum; nothing made.
    let out = env.run(&["session", "create", "--user", "ivy", "--idle-timeout", "31"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("idle_timeout_minutes") && stderr(&out).contains("1 to 30"), "{}", stderr(&out));
    assert!(env.sessions().is_empty() && env.containers().is_empty());
    let s = env.create("ivy", &["--idle-timeout", "10"]);
    let shown = env.ok(&["session", "show", s.id()]);
    assert!(shown.contains("10 minutes (the session's own)"), "{shown}");
    let listed = env.ok(&["session", "list"]);
    assert!(listed.contains("IDLE") && listed.contains("creation"), "{listed}");

    // The API: the same rule (400), the field on the session, and per-session series in /metrics.
    let serve = crate::http::Serve::start(&env);
    let refused =
        serve.call("POST", "/sessions", Some(&serde_json::json!({"user_id": "ivo", "idle_timeout_minutes": 45})));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("1 to 30"), "{}", refused.text());
    let made = serve.call("POST", "/sessions", Some(&serde_json::json!({"user_id": "ivo", "idle_timeout_minutes": 5})));
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["session_id"].as_str().unwrap().to_string();
    let got = serve.get(&format!("/sessions/{id}")).json();
    assert_eq!(got["idle_timeout_minutes"], 5, "{got}");
    assert_eq!(got["last_activity_signal"], "creation", "{got}");
    assert!(got["idle_seconds"].as_i64().is_some(), "{got}");
    env.ok(&["reap"]);
    let metrics = serve.get("/metrics").text();
    for series in ["sandman_session_idle_seconds", "sandman_session_expires_in_seconds", "sandman_session_cpu_seconds"]
    {
        assert!(metrics.contains(&format!("{series}{{session=\"{id}\",user=\"ivo\"}}")), "{series}:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!("sandman_session_ssh_connections{{session=\"{id}\",user=\"ivo\"}} 0")),
        "{metrics}"
    );
    serve.stop();
}
