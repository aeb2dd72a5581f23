//! GPU slices with the simulated backend on the real Docker engine: a session sees exactly its
//! MIG device, slices are exclusive across processes, and they come back on rm, reap and crash.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::{Env, stderr, stdout};

const A100_STATIC: &str = r#"
[[gpu]]
model = "NVIDIA A100-SXM4-40GB"
mig = true
instances = ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]
"#;

/// An environment whose sandman uses the simulator described by `sim`.
fn sim_env(name: &str, sim: &str, mode: &str) -> Env {
    let mut env = Env::new(name);
    let file = env.path("gpus.toml");
    std::fs::write(&file, sim).unwrap();
    env.extra_env.push(("SANDMAN_GPU_BACKEND".into(), "sim".into()));
    env.extra_env.push(("SANDMAN_GPU_SIM_FILE".into(), file.display().to_string()));
    env.extra_env.push(("SANDMAN_MIG_MODE".into(), mode.into()));
    env
}

fn json(env: &Env, args: &[&str]) -> Value {
    serde_json::from_str(&env.ok(args)).unwrap()
}

fn container_env(id: &str) -> Vec<String> {
    let out = Command::new("docker").args(["inspect", "--format", "{{json .Config.Env}}", id]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_session_gets_exactly_its_slice_and_gives_it_back() {
    let env = sim_env("gpu-slice", A100_STATIC, "static");
    let gpus = json(&env, &["gpu", "ls", "--json"]);
    assert_eq!(gpus["count"], 1);
    let three_g: Vec<String> = gpus["gpus"][0]["mig_instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["profile"] == "3g.20gb")
        .map(|m| m["uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(three_g.len(), 1);
    assert!(three_g[0].starts_with("MIG-"));

    let s = env.create("gina", &["--profile", "3g"]);
    assert_eq!(s.json["gpu_uuid"], three_g[0].as_str());
    assert_eq!(s.json["mig_profile"], "3g.20gb");
    let cenv = container_env(s.json["container_id"].as_str().unwrap());
    assert!(cenv.contains(&format!("NVIDIA_VISIBLE_DEVICES={}", three_g[0])), "{cenv:?}");
    let inside = env.ssh(&s, "echo $NVIDIA_VISIBLE_DEVICES");
    assert_eq!(stdout(&inside).trim(), three_g[0], "{}", stderr(&inside));

    // A second 3g does not fit: a clear error, and nothing made.
    let out = env.run(&["session", "create", "--user", "hal", "--profile", "3g"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no free 3g MIG device") && err.contains("2g.10gb MIG-"), "{err}");
    assert_eq!(env.sessions().len(), 1);
    assert_eq!(env.containers().len(), 1);
    assert!(!env.workspace_root().join("hal").exists());

    let available = json(&env, &["gpu", "available", "--json"]);
    assert_eq!(available["count"], 3);
    assert!(available["available_instances"].as_array().unwrap().iter().all(|m| m["uuid"] != three_g[0].as_str()));

    env.ok(&["session", "rm", s.id(), "--yes"]);
    let available = json(&env, &["gpu", "available", "--json"]);
    assert_eq!(available["count"], 4, "the slice is free again");
    let again = env.create("hal", &["--gpu", &three_g[0]]);
    assert_eq!(again.json["gpu_uuid"], three_g[0].as_str());
}

#[test]
fn ten_processes_never_share_a_slice() {
    let env = sim_env("gpu-ten", A100_STATIC, "static");
    let children: Vec<_> = (0..10)
        .map(|i| {
            env.cmd()
                .args(["session", "create", "--user", &format!("g{i}"), "--profile", "1g", "--json", "--quiet"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut uuids = HashSet::new();
    let mut refused = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(uuids.insert(v["gpu_uuid"].as_str().unwrap().to_string()), "a slice handed out twice");
        } else {
            assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
            refused += 1;
        }
    }
    assert_eq!((uuids.len(), refused), (2, 8), "two 1g.5gb instances exist");
    assert_eq!(env.containers().len(), 2);
}

#[test]
fn dynamic_mode_creates_on_demand_and_destroys_on_rm_and_reap() {
    let sim = "[[gpu]]\nmodel = \"NVIDIA H100 80GB HBM3\"\nmig = true\ninstances = []\n";
    let env = sim_env("gpu-dynamic", sim, "dynamic");
    assert_eq!(json(&env, &["gpu", "available", "--json"])["count"], 0);
    let s = env.create("dyn", &["--profile", "3g"]);
    assert_eq!(s.json["mig_profile"], "3g.40gb", "the H100's 3g");
    let gpus = json(&env, &["gpu", "ls", "--json"]);
    let made = &gpus["gpus"][0]["mig_instances"][0];
    assert_eq!(made["uuid"], s.json["gpu_uuid"]);
    assert_eq!(made["created_by_sandman"], true);
    assert_eq!(made["allocated"], true);
    env.ok(&["session", "rm", s.id(), "--yes"]);
    let gpus = json(&env, &["gpu", "ls", "--json"]);
    assert_eq!(gpus["gpus"][0]["mig_instances"].as_array().unwrap().len(), 0, "destroyed on rm");

    // Expired: the reaper ends the session and the instance goes with it.
    let s = env.create("dyn", &["--profile", "7g"]);
    env.sql(&format!("UPDATE sessions SET expires_at = 0 WHERE id = '{}'", s.id()));
    let report = json(&env, &["reap", "--json"]);
    assert_eq!(report["expired"][0], s.id());
    let gpus = json(&env, &["gpu", "ls", "--json"]);
    assert_eq!(gpus["gpus"][0]["mig_instances"].as_array().unwrap().len(), 0, "destroyed by the reaper");
}

#[test]
fn a_create_killed_halfway_gives_its_slice_back_after_reap() {
    let sim = "[[gpu]]\nmodel = \"NVIDIA H200\"\nmig = true\ninstances = []\n";
    let env = sim_env("gpu-crash", sim, "dynamic");
    let image = crate::crash::hanging_image();
    let mut child =
        env.cmd().args(["session", "create", "--user", "kit", "--profile", "7g", "--image", &image]).spawn().unwrap();
    let start = std::time::Instant::now();
    while env.containers().is_empty() {
        assert!(start.elapsed().as_secs() < 30, "the create never made its container");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let gpus = json(&env, &["gpu", "ls", "--json"]);
    assert_eq!(gpus["gpus"][0]["mig_instances"][0]["profile"], "7g.141gb", "the instance was made");

    let report = json(&env, &["reap", "--json"]);
    assert_eq!(report["abandoned"].as_array().unwrap().len(), 1, "{report}");
    let gpus = json(&env, &["gpu", "ls", "--json"]);
    assert!(gpus["gpus"][0]["mig_instances"].as_array().unwrap().is_empty(), "destroyed: {gpus}");
    assert!(env.containers().is_empty() && env.sessions().is_empty());
    let s = env.create("kit", &["--profile", "7g"]);
    assert_eq!(s.json["mig_profile"], "7g.141gb", "the whole GPU is free again");
}

#[test]
fn without_a_driver_nvml_is_unavailable_and_auto_means_cpu_only() {
    // This machine has no NVIDIA driver: the real backend must say so, never pretend.
    let env = Env::new("gpu-nodriver");
    let out = env.run(&["--gpu-backend", "nvml", "gpu", "ls"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot load NVML from libnvidia-ml.so.1"), "{}", stderr(&out));
    let out = env.run(&["--gpu-backend", "auto", "gpu", "ls", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("sessions get no GPU"), "auto warns: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"gpus": [], "count": 0}));
    let out = env.run(&["--gpu-backend", "auto", "session", "create", "--user", "nora", "--profile", "3g"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid mig_profile: \"3g\" asks for a GPU"), "{}", stderr(&out));
}
