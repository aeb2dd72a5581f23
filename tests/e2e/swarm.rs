//! Sessions on a real single-node Docker Swarm (`engine = "swarm"`): the engine is put in a swarm
//! on loopback when it is in none (and taken out again afterwards only then). Swarm tests hold a
//! file lock, so that two test processes never init or leave the swarm under one another; the
//! nextest group `swarm` runs them one at a time within a process too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, stderr, stdout};

const LOCK: &str = "/tmp/sandman-swarm-test.lock";

/// The swarm for one test: holds the lock; leaves the swarm on drop if it made it.
struct Swarm {
    _lock: File,
    created: bool,
    node: String,
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn docker_try(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    out.status.success().then(|| stdout(&out).trim().to_string())
}

impl Swarm {
    fn join() -> Swarm {
        let lock = File::options().create(true).truncate(false).write(true).open(LOCK).unwrap();
        // SAFETY: flock on a descriptor this function owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "cannot lock {LOCK}");
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let created = state == "inactive";
        if created {
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377"]);
        }
        let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
        Swarm { _lock: lock, created, node }
    }

    /// The node's address, which sessions report as their host.
    fn address(&self) -> String {
        docker(&["node", "inspect", &self.node, "--format", "{{.Status.Addr}}"])
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("docker").args(["swarm", "leave", "--force"]).output();
        } else {
            let _ = Command::new("docker").args(["node", "update", "--label-rm", "sandman.gpus", &self.node]).output();
        }
    }
}

/// An environment whose sandman runs sessions on the swarm. Dropped before the `Swarm`.
struct SwarmEnv {
    env: Env,
}

impl SwarmEnv {
    fn new(name: &str) -> SwarmEnv {
        let mut env = Env::new(name);
        env.extra_env.push(("SANDMAN_ENGINE".into(), "swarm".into()));
        SwarmEnv { env }
    }

    /// The swarm services of this environment's instance.
    fn services(&self) -> Vec<String> {
        let Some(instance) = self.env.instance_id() else { return Vec::new() };
        let out = docker(&["service", "ls", "-q", "--filter", &format!("label=sandman.instance={instance}")]);
        out.lines().map(str::to_string).collect()
    }

    /// Configs and secrets labelled with a service name.
    fn files_of(service: &str) -> Vec<String> {
        let filter = format!("label=sandman.service={service}");
        let mut all: Vec<String> =
            docker(&["config", "ls", "-q", "--filter", &filter]).lines().map(str::to_string).collect();
        all.extend(docker(&["secret", "ls", "-q", "--filter", &filter]).lines().map(str::to_string));
        all
    }
}

impl Drop for SwarmEnv {
    fn drop(&mut self) {
        let _ = self.env.cmd().args(["session", "rm", "--all", "--yes", "--quiet"]).output();
        for s in self.services() {
            let _ = Command::new("docker").args(["service", "rm", &s]).output();
        }
        // The swarm network, once its tasks' containers are gone, then its configuration network.
        let local = format!("{}-local", self.env.network);
        let deadline = Instant::now() + Duration::from_secs(20);
        for net in [&self.env.network, &local] {
            while docker_try(&["network", "inspect", net]).is_some() && docker_try(&["network", "rm", net]).is_none() {
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// The id of the container running the service's task.
fn task_container(service: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let id = docker(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={service}")]);
        if !id.is_empty() {
            return id.lines().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no container for service {service}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn service_name(s: &crate::harness::Session) -> String {
    s.json["container_id"].as_str().unwrap().to_string()
}

fn key_of(known_hosts: &str) -> String {
    known_hosts.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
}

#[test]
fn a_swarm_session_is_hardened_limited_and_removed_whole() {
    let swarm = Swarm::join();
    let senv = SwarmEnv::new("swarm-login");
    let env = &senv.env;
    let s = env.create("swan", &["--memory", "512m", "--cpus", "1"]);
    let service = service_name(&s);
    assert_eq!(senv.services().len(), 1, "one service for the session");
    assert_eq!(s.json["ssh_host"], swarm.address().as_str(), "users are sent to the node running the task");
    let restart =
        docker(&["service", "inspect", &service, "--format", "{{.Spec.TaskTemplate.RestartPolicy.Condition}}"]);
    assert_eq!(restart, "none");

    let out = env.ssh(
        &s,
        "id -u; id -un; grep -E '^CapEff' /proc/self/status; \
         cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; \
         stat -c '%U %a' /etc/sandman/ssh_host_ed25519_key; touch ~/made-in-swarm && echo home-ok",
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "swan", "{text}");
    assert!(lines[0].parse::<u32>().unwrap() >= 20000, "{text}");
    assert_eq!(lines[2], "CapEff:\t0000000000000000", "{text}");
    assert_eq!(lines[3], (512u64 << 20).to_string(), "memory limit in force: {text}");
    assert_eq!(lines[4], "1024", "pids limit in force: {text}");
    assert_eq!(lines[5], "swan 600", "host key owned by the user, 0600: {text}");
    assert_eq!(lines[6], "home-ok", "{text}");
    assert!(env.workspace_root().join("swan").join("made-in-swarm").exists(), "the home is the node's directory");

    let first_key = key_of(s.json["known_hosts"].as_str().unwrap());
    assert!(!SwarmEnv::files_of(&service).is_empty(), "configs and secrets carry the files");
    env.ok(&["session", "rm", "--yes", s.id()]);
    assert!(senv.services().is_empty(), "service removed");
    assert!(SwarmEnv::files_of(&service).is_empty(), "configs and secrets removed");
    assert!(docker_try(&["service", "inspect", &service]).is_none());

    // The next session of the same user presents the same host key, on the same node.
    let again = env.create("swan", &[]);
    assert_eq!(key_of(again.json["known_hosts"].as_str().unwrap()), first_key);
    let out = env.ssh(&again, "ls ~/made-in-swarm");
    assert!(out.status.success(), "{}", stderr(&out));
    let constraints =
        docker(&["service", "inspect", &service_name(&again), "--format", "{{json .Spec.TaskTemplate.Placement}}"]);
    assert!(constraints.contains(&format!("node.id=={}", swarm.node)), "pinned to the home's node: {constraints}");
}

#[test]
fn reap_fails_and_cleans_a_session_whose_task_died() {
    let _swarm = Swarm::join();
    let senv = SwarmEnv::new("swarm-reap");
    let env = &senv.env;
    let s = env.create("rhea", &[]);
    let service = service_name(&s);
    docker(&["kill", &task_container(&service)]);
    // The task is failed, and with restart policy none stays so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = docker(&["service", "ps", &service, "--format", "{{.CurrentState}}"]);
        if state.starts_with("Failed") || state.starts_with("Complete") || state.starts_with("Shutdown") {
            assert_eq!(state.lines().count(), 1, "never restarted: {state}");
            break;
        }
        assert!(Instant::now() < deadline, "task still {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let report: Value = serde_json::from_str(&stdout(&env.run(&["reap", "--json"]))).unwrap();
    let failed = report["failed_sessions"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["id"], s.id());
    assert!(failed[0]["reason"].as_str().unwrap().contains("failed"), "{report}");
    assert!(senv.services().is_empty(), "service removed");
    assert!(SwarmEnv::files_of(&service).is_empty(), "configs and secrets removed");
    let rows = env.sessions();
    assert!(rows.iter().all(|r| r["state"] != "running"), "{rows:?}");

    // A service with no row (its database lost it) is an orphan, removed by label.
    let t = env.create("rhea2", &[]);
    let orphan = service_name(&t);
    env.sql(&format!("DELETE FROM sessions WHERE id = '{}'", t.id()));
    let report: Value = serde_json::from_str(&stdout(&env.run(&["reap", "--json"]))).unwrap();
    assert_eq!(report["orphans"], serde_json::json!([orphan]), "{report}");
    assert!(docker_try(&["service", "inspect", &orphan]).is_none());
    assert!(SwarmEnv::files_of(&orphan).is_empty());
}

const SIM: &str = r#"
[[gpu]]
model = "NVIDIA A100-SXM4-40GB"
mig = true
instances = ["3g.20gb", "1g.5gb"]
"#;

#[test]
fn a_registered_nodes_gpu_is_given_to_a_session_there() {
    let swarm = Swarm::join();
    let mut senv = SwarmEnv::new("swarm-gpu");
    let file = senv.env.path("gpus.toml");
    std::fs::write(&file, SIM).unwrap();
    senv.env.extra_env.push(("SANDMAN_GPU_BACKEND".into(), "sim".into()));
    senv.env.extra_env.push(("SANDMAN_GPU_SIM_FILE".into(), file.display().to_string()));
    let env = &senv.env;

    // Unregistered, the device is on no node: refused, nothing left.
    docker_try(&["node", "update", "--label-rm", "sandman.gpus", &swarm.node]);
    let out = env.run(&["session", "create", "--user", "gus", "--profile", "1g", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("node register"), "{}", stderr(&out));
    assert!(env.sessions().is_empty());
    assert!(senv.services().is_empty());

    let node: Value = serde_json::from_str(&env.ok(&["node", "register", "--json"])).unwrap();
    assert_eq!(node["id"], swarm.node.as_str());
    assert_eq!(node["gpus"].as_array().unwrap().len(), 3, "the GPU and its two MIG devices: {node}");
    let label = docker(&["node", "inspect", &swarm.node, "--format", "{{index .Spec.Labels \"sandman.gpus\"}}"]);
    assert!(label.contains("MIG-"), "{label}");

    let s = env.create("gus", &["--profile", "1g"]);
    let uuid = s.json["gpu_uuid"].as_str().unwrap().to_string();
    assert!(label.contains(&uuid), "the device given is one the node registered");
    let service = service_name(&s);
    let cenv = docker(&["inspect", "--format", "{{json .Config.Env}}", &task_container(&service)]);
    assert!(cenv.contains(&format!("NVIDIA_VISIBLE_DEVICES={uuid}")), "{cenv}");
    let placement = docker(&["service", "inspect", &service, "--format", "{{json .Spec.TaskTemplate.Placement}}"]);
    assert!(placement.contains(&format!("node.id=={}", swarm.node)), "{placement}");
    let out = env.ssh(&s, "echo $NVIDIA_VISIBLE_DEVICES");
    assert_eq!(stdout(&out).trim(), uuid, "{}", stderr(&out));

    let doctor: Value = serde_json::from_str(&stdout(&env.run(&["doctor", "--json"]))).unwrap();
    let check = |name: &str| doctor.as_array().unwrap().iter().find(|c| c["check"] == name).cloned().unwrap();
    assert_eq!(check("swarm")["ok"], true, "{doctor}");
    assert!(check("swarm")["detail"].as_str().unwrap().contains("3 GPU devices"), "{doctor}");
    assert!(check("no-new-privileges")["detail"].as_str().unwrap().contains("setuid"), "{doctor}");
}
