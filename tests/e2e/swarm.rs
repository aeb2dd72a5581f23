//! Sessions on a real single-node Docker Swarm (`engine = "swarm"`): the engine is put in a swarm
//! on loopback when it is in none (and taken out again afterwards only then). Swarm tests hold a
//! file lock, so that two test processes never init or leave the swarm under one another; the
//! nextest group `swarm` runs them one at a time within a process too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, rand_suffix, ssh_base, stderr, stdout};

const LOCK: &str = "/tmp/sandman-swarm-test.lock";

/// The swarm for one test: holds the lock; leaves the swarm on drop if it made it.
struct Swarm {
    _lock: File,
    created: bool,
    node: String,
    /// `swarm init` made the engine's `docker_gwbridge` network, which leaving keeps: removed too.
    gwbridge_made: bool,
}

/// Whether the engine has the network `swarm init` adds for its services' outside traffic.
fn has_gwbridge() -> bool {
    docker_try(&["network", "inspect", "docker_gwbridge"]).is_some()
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

/// Holds the lock that serialises swarm tests across processes.
fn lock() -> File {
    let lock = File::options().create(true).truncate(false).write(true).open(LOCK).unwrap();
    // SAFETY: flock on a descriptor this function owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "cannot lock {LOCK}");
    lock
}

impl Swarm {
    fn join() -> Swarm {
        let lock = lock();
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let created = state == "inactive";
        let gwbridge_made = created && !has_gwbridge();
        if created {
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377"]);
        }
        let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
        Swarm { _lock: lock, created, node, gwbridge_made }
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
            if self.gwbridge_made {
                let _ = Command::new("docker").args(["network", "rm", "docker_gwbridge"]).output();
            }
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
        // Outside a swarm there are none (the engine refuses to list them).
        let filter = format!("label=sandman.instance={instance}");
        let out = docker_try(&["service", "ls", "-q", "--filter", &filter]).unwrap_or_default();
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
    let image = docker(&["service", "inspect", &service, "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}"]);
    assert_eq!(image, docker(&["image", "inspect", "gpu-workspace", "--format", "{{.Id}}"]), "named by its id");

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

    // The egress policy holds on the node: the session bridge has the name every node gives it,
    // its rules are in place, and a listener on the host's address on that bridge is refused.
    let fw: Value = serde_json::from_str(&env.ok(&["firewall", "show", "--json"])).unwrap();
    let bridge = fw["bridge"].as_str().unwrap().to_string();
    assert!(bridge.starts_with("sm-") && fw["up_to_date"] == true, "{fw}");
    let addr = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &bridge]).output().unwrap();
    let gateway = stdout(&addr).split_whitespace().nth(3).and_then(|a| a.split('/').next()).unwrap().to_string();
    let listener = std::net::TcpListener::bind((gateway.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe =
        format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{gateway}/{port}' 2>/dev/null && echo reached || echo refused");
    let out = env.ssh(&s, &probe);
    assert_eq!(stdout(&out).trim(), "refused", "the host answered a session on {gateway}:{port}: {}", stderr(&out));
    drop(listener);
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

    // Sessions on the swarm's bridge cannot reach one another.
    let other = env.create("swan-other", &[]);
    let ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &task_container(&service_name(&again)),
    ]);
    // The address is right and sshd listens there: the host reaches it.
    let direct = std::net::TcpStream::connect_timeout(&format!("{ip}:2222").parse().unwrap(), Duration::from_secs(3));
    assert!(direct.is_ok(), "{ip}:2222 from the host: {direct:?}");
    let probe = format!("timeout 3 bash -c 'echo > /dev/tcp/{ip}/2222' 2>/dev/null && echo reached || echo blocked");
    let out = env.ssh(&other, &probe);
    assert_eq!(stdout(&out).trim(), "blocked", "{}", stderr(&out));
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

    // A home on a node that left the swarm: no node fits, said at once, nothing left.
    env.sql("INSERT INTO user_nodes (user_name, node_id) VALUES ('ghost', 'left-the-swarm')");
    let started = Instant::now();
    let out = env.run(&["session", "create", "--user", "ghost", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("no swarm node can run the session"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert!(env.sessions().iter().all(|r| r["user_id"] != "ghost"), "the failed create left its row");
    assert!(senv.services().is_empty());

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

/// A second swarm node on this machine: a Docker engine of its own (data, exec root, socket and
/// managed containerd under a temporary directory) in a network namespace joined to the host by
/// a veth pair. It shares the host's file systems (so a home directory exists on both nodes)
/// but has its own network stack, iptables and published ports. `ip netns exec` cannot be
/// used: it remounts /sys, hiding the cgroup mounts dockerd needs; nsenter enters the network
/// namespace only.
struct SecondNode {
    dir: tempfile::TempDir,
    netns: String,
    veth: String,
    host_ip: String,
    ip: String,
    /// The dockerd (nsenter executes it in place, so this is the daemon itself).
    daemon: Option<std::process::Child>,
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", stderr(&out));
}

impl SecondNode {
    fn start() -> SecondNode {
        let tag = rand_suffix();
        let net = u8::from_str_radix(&tag[..2], 16).unwrap();
        let mut node = SecondNode {
            dir: tempfile::Builder::new().prefix("sandman-node2-").tempdir().unwrap(),
            netns: format!("sm2-{tag}"),
            veth: format!("sm2h{tag}"),
            host_ip: format!("10.213.{net}.1"),
            ip: format!("10.213.{net}.2"),
            daemon: None,
        };
        let (ns, veth, peer) = (&node.netns, &node.veth, format!("sm2c{tag}"));
        sh(&format!(
            "ip netns add {ns} && ip link add {veth} type veth peer name {peer} && ip link set {peer} netns {ns} && \
             ip addr add {}/24 dev {veth} && ip link set {veth} up && \
             ip -n {ns} addr add {}/24 dev {peer} && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up && \
             ip -n {ns} route add default via {}",
            node.host_ip, node.ip, node.host_ip
        ));
        let d = node.dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        // The same storage driver as this engine's, which works on this machine.
        let driver = docker(&["info", "--format", "{{.Driver}}"]);
        let log = File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--cgroup-parent")
            .arg(format!("/sandman-node2-{tag}"))
            .arg("--storage-driver")
            .arg(&driver)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.docker_try(&["info", "--format", "{{.ID}}"]).is_none() {
            let log = std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "the second dockerd did not start: {log}");
            std::thread::sleep(Duration::from_millis(300));
        }
        // The workspace image, as every node needs it.
        sh(&format!("docker save gpu-workspace | docker -H {} load -q", node.host()));
        node
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn docker_try(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("docker").arg("-H").arg(self.host()).args(args).output().unwrap();
        out.status.success().then(|| stdout(&out).trim().to_string())
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        let _ = self.docker_try(&["swarm", "leave", "--force"]);
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: signals the dockerd this test started, by its id.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
    }
}

#[test]
fn two_nodes_place_sessions_by_home_and_gpu() {
    let lock = lock();
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(state, "inactive", "this test makes a swarm of its own on a veth address; the engine is in one already");
    // Outside a swarm, a create in swarm mode is refused with the fix, and leaves nothing.
    let outside = SwarmEnv::new("swarm-outside");
    let out = outside.env.run(&["session", "create", "--user", "ursula", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("not in a swarm") && stderr(&out).contains("docker swarm init"), "{}", stderr(&out));
    assert!(outside.env.sessions().is_empty(), "the failed create left its row");
    drop(outside);

    let node2 = SecondNode::start();
    let gwbridge_made = !has_gwbridge();
    docker(&["swarm", "init", "--advertise-addr", &node2.host_ip, "--listen-addr", &format!("{}:2377", node2.host_ip)]);
    let manager = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
    let swarm = Swarm { _lock: lock, created: true, node: manager.clone(), gwbridge_made };
    let token = docker(&["swarm", "join-token", "-q", "worker"]);
    let joined = node2.docker_try(&[
        "swarm",
        "join",
        "--token",
        &token,
        "--advertise-addr",
        &node2.ip,
        "--listen-addr",
        &format!("{}:2377", node2.ip),
        &format!("{}:2377", node2.host_ip),
    ]);
    assert!(joined.is_some(), "the second node could not join");
    let worker = node2.docker_try(&["info", "--format", "{{.Swarm.NodeID}}"]).unwrap();

    let mut senv = SwarmEnv::new("swarm-two-nodes");
    let file = senv.env.path("gpus.toml");
    std::fs::write(&file, SIM).unwrap();
    senv.env.extra_env.push(("SANDMAN_GPU_BACKEND".into(), "sim".into()));
    senv.env.extra_env.push(("SANDMAN_GPU_SIM_FILE".into(), file.display().to_string()));
    let env = &senv.env;
    let gpus: Value = serde_json::from_str(&env.ok(&["gpu", "ls", "--json"])).unwrap();
    let migs: Vec<String> = gpus["gpus"][0]["mig_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["uuid"].as_str().unwrap().to_string())
        .collect();
    let (here, there) = (&migs[0], &migs[1]);

    // The manager labels itself; a worker cannot, and says what to run on a manager.
    env.ok(&["node", "register"]);
    let out = env.cmd().env("DOCKER_HOST", node2.host()).args(["node", "register"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("docker node update --label-add sandman.gpus="), "{}", stderr(&out));
    assert!(stderr(&out).contains(&worker), "{}", stderr(&out));
    // Each node holds one of the two MIG devices.
    docker(&["node", "update", "--label-add", &format!("sandman.gpus={here}"), &manager]);
    docker(&["node", "update", "--label-add", &format!("sandman.gpus={there}"), &worker]);

    // A user whose home the second node holds (the nodes share this machine's disk).
    env.sql(&format!("INSERT INTO user_nodes (user_name, node_id) VALUES ('nora', '{worker}')"));
    let nora = env.create("nora", &["--gpu", there]);
    assert_eq!(nora.json["ssh_host"], node2.ip.as_str(), "{}", nora.json);
    let service = service_name(&nora);
    let on_node2 =
        node2.docker_try(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={service}")]);
    assert!(on_node2.is_some_and(|c| !c.is_empty()), "the task runs on the second node");
    let known_hosts = env.known_hosts(&nora);
    let out = ssh_base("ssh", &nora.key, &known_hosts)
        .args(["-p", &nora.port().to_string(), &format!("nora@{}", node2.ip)])
        .arg("echo $NVIDIA_VISIBLE_DEVICES; grep CapEff /proc/self/status")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{there}\nCapEff:\t0000000000000000\n"));

    // A new user's home is on the manager: the manager's GPU is fine, the other node's is refused.
    let olga = env.create("olga", &["--gpu", here]);
    assert_eq!(olga.json["ssh_host"], node2.host_ip.as_str(), "{}", olga.json);
    env.ok(&["session", "rm", "--yes", nora.id()]);
    let out = env.run(&["session", "create", "--user", "pia", "--gpu", there, "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("workspace_nfs"), "{}", stderr(&out));
    assert_eq!(env.sessions().len(), 1, "only olga's session");
    assert_eq!(senv.services().len(), 1);
    env.ok(&["session", "rm", "--all", "--yes"]);
    assert!(senv.services().is_empty());
    drop(senv);
    drop(node2);
    drop(swarm);
}

#[test]
fn a_users_own_keys_reach_each_new_session_as_a_copy() {
    let _swarm = Swarm::join();
    let senv = SwarmEnv::new("swarm-own-keys");
    let env = &senv.env;
    let keygen = |name: &str| {
        let key = env.path(name);
        let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
        assert!(out.status.success());
        key
    };
    let (first, second) = (keygen("first"), keygen("second"));
    let pub_of = |k: &std::path::PathBuf| format!("{}.pub", k.display());
    let out = env.ok(&["session", "create", "--user", "pat", "--public-key", &pub_of(&first), "--json"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert!(json["ssh_private_key"].is_null());
    let s = crate::harness::Session { json: json.clone(), key: first.clone() };
    assert_eq!(stdout(&env.ssh(&s, "whoami")), "pat\n", "the user's key, from a config, passes sshd's checks");

    // A key added while the session runs applies from the next session.
    env.ok(&["user", "key", "add", "pat", &pub_of(&second)]);
    let with_second = crate::harness::Session { json, key: second.clone() };
    assert!(!env.ssh(&with_second, "true").status.success(), "the running session keeps its copy");
    env.ok(&["session", "rm", "--yes", s.id()]);
    let again = env.create("pat", &[]);
    let with_second = crate::harness::Session { json: again.json.clone(), key: second };
    assert_eq!(stdout(&env.ssh(&with_second, "whoami")), "pat\n");
}

/// No NFS server runs here (this host's kernel has no NFS client either): the test checks that
/// a home on NFS becomes the node's volume with the export's options, and that a mount that
/// fails makes the create fail with the engine's reason and leave nothing but that volume.
#[test]
fn nfs_homes_are_volumes_of_the_export_and_a_failed_mount_is_the_creates_error() {
    let _swarm = Swarm::join();
    let mut senv = SwarmEnv::new("swarm-nfs");
    senv.env.extra_env.push(("SANDMAN_WORKSPACE_NFS".into(), "127.0.0.1:/export/homes".into()));
    let env = &senv.env;
    let volume = "sandman-home-nfsuser";
    let _ = docker_try(&["volume", "rm", volume]);
    let out = env.run(&["session", "create", "--user", "nfsuser", "--json"]);
    let options = docker_try(&["volume", "inspect", volume, "--format", "{{json .Options}}"]);
    let _ = docker_try(&["volume", "rm", volume]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("mount"), "{}", stderr(&out));
    let options: Value = serde_json::from_str(&options.expect("the node made the home's volume")).unwrap();
    assert_eq!(options["type"], "nfs");
    assert_eq!(options["device"], ":/export/homes/nfsuser");
    assert!(options["o"].as_str().unwrap().starts_with("addr=127.0.0.1,"), "{options}");
    assert!(env.sessions().is_empty(), "the failed create left its row");
    assert!(senv.services().is_empty());
}
