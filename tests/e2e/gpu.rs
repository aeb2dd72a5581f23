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
fn a_default_profile_no_gpu_here_has_is_the_hosts_fault_and_names_the_setting() {
    // The A30 has no 3g; the built-in default_profile is 3g.20gb.
    let sim = "[[gpu]]\nmodel = \"NVIDIA A30\"\nmig = true\ninstances = [\"2g.12gb\", \"2g.12gb\"]\n";
    let env = sim_env("gpu-default", sim, "static");
    // "" is the original API's way of asking for the default.
    for extra in [&[][..], &["--profile", ""][..]] {
        let out = env.run(&[&["session", "create", "--user", "dora"][..], extra].concat());
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("default_profile = \"3g.20gb\"") && err.contains("NVIDIA A30"), "{err}");
        assert!(!err.contains("mig_profile"), "the client sent no profile: {err}");
    }
    let out = env.run(&["session", "create", "--user", "dora", "--profile", "3g"]);
    assert_eq!(out.status.code(), Some(2), "the client's own profile is the client's mistake: {}", stderr(&out));
    assert!(stderr(&out).contains("invalid mig_profile"), "{}", stderr(&out));
    assert!(env.sessions().is_empty() && env.containers().is_empty());
    let s = env.create("dora", &["--profile", "2g"]);
    assert_eq!(s.json["mig_profile"], "2g.12gb");
}

/// The GPUs NVML reports on this host, asked of the driver library directly rather than through
/// sandman: `None` where `libnvidia-ml.so.1` does not load or NVML does not initialize.
fn nvml_device_count() -> Option<u32> {
    type Init = unsafe extern "C" fn() -> i32;
    type Count = unsafe extern "C" fn(*mut u32) -> i32;
    // SAFETY: the symbols are NVML's, called with the signatures of nvml.h; 0 is NVML_SUCCESS.
    unsafe {
        let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return None;
        }
        let init = libc::dlsym(lib, c"nvmlInit_v2".as_ptr());
        let count = libc::dlsym(lib, c"nvmlDeviceGetCount_v2".as_ptr());
        let shutdown = libc::dlsym(lib, c"nvmlShutdown".as_ptr());
        if init.is_null() || count.is_null() || shutdown.is_null() {
            return None;
        }
        let init = std::mem::transmute::<*mut libc::c_void, Init>(init);
        let count = std::mem::transmute::<*mut libc::c_void, Count>(count);
        let shutdown = std::mem::transmute::<*mut libc::c_void, Init>(shutdown);
        if init() != 0 {
            return None;
        }
        let mut n = 0;
        let ok = count(&mut n) == 0;
        shutdown();
        ok.then_some(n)
    }
}

fn gpu_uuids(list: &Value) -> Vec<&str> {
    list["gpus"].as_array().unwrap().iter().map(|g| g["uuid"].as_str().unwrap()).collect()
}

#[test]
fn nvml_and_auto_follow_what_the_driver_library_says() {
    let env = Env::new("gpu-nvml");
    let nvml = env.run(&["--gpu-backend", "nvml", "gpu", "ls", "--json"]);
    let auto = env.run(&["--gpu-backend", "auto", "gpu", "ls", "--json"]);
    assert!(auto.status.success(), "{}", stderr(&auto));
    let auto_list: Value = serde_json::from_slice(&auto.stdout).unwrap();
    match nvml_device_count() {
        Some(count) => {
            // A GPU host: both backends are the real GPUs.
            assert!(nvml.status.success(), "{}", stderr(&nvml));
            let nvml_list: Value = serde_json::from_slice(&nvml.stdout).unwrap();
            assert_eq!(nvml_list["count"], count, "{nvml_list}");
            assert!(gpu_uuids(&nvml_list).iter().all(|u| u.starts_with("GPU-")), "{nvml_list}");
            assert_eq!(gpu_uuids(&auto_list), gpu_uuids(&nvml_list), "auto means NVML here");
            assert!(!stderr(&auto).contains("sessions get no GPU"), "{}", stderr(&auto));
        }
        None => {
            // No usable driver: the real backend must say so, never pretend.
            assert_eq!(nvml.status.code(), Some(5), "{}", stderr(&nvml));
            assert!(stderr(&nvml).contains("cannot load NVML from libnvidia-ml.so.1"), "{}", stderr(&nvml));
            if std::path::Path::new("/proc/driver/nvidia").exists() {
                assert!(
                    stderr(&auto).contains("sessions get no GPU"),
                    "a broken driver is warned about: {}",
                    stderr(&auto)
                );
            } else {
                // No driver at all: a CPU-only host, said with -v only (and by doctor).
                assert!(!stderr(&auto).contains("sessions get no GPU"), "{}", stderr(&auto));
                let verbose = env.run(&["-v", "--gpu-backend", "auto", "gpu", "ls", "--json"]);
                assert!(stderr(&verbose).contains("no NVIDIA driver: sessions are CPU-only"), "{}", stderr(&verbose));
            }
            assert_eq!(auto_list, serde_json::json!({"gpus": [], "count": 0}));
            let out = env.run(&["--gpu-backend", "auto", "session", "create", "--user", "nora", "--profile", "3g"]);
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(stderr(&out).contains("invalid mig_profile: \"3g\" asks for a GPU"), "{}", stderr(&out));
        }
    }
}

fn assert_lines(out: &str, expected: &[&str]) {
    for line in expected {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
}

/// `scripts/device-check.sh` run over captured `nvidia-smi` output (tests/data/device-check, in
/// the formats NVIDIA documents) with stub `nvidia-smi`, `sandman`, `docker` and `id` first in
/// PATH: it must pass when the views agree and name each difference when they do not.
#[test]
fn device_check_compares_sandman_with_nvidia_smi() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("tests/data/device-check");
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("bin");
    let overrides = dir.path().join("overrides");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::create_dir_all(&overrides).unwrap();
    // Each stub prints a sample, or its replacement from the overrides directory.
    // While an instance is made (the file `made`), `made-<file>` replaces `<file>`.
    let pick = r#"out() {
  f=$1; [ -e "$DC_OVERRIDES/made" ] && [ -e "$DC_OVERRIDES/made-$f" ] && f=made-$f
  if [ -e "$DC_OVERRIDES/$f" ]; then cat "$DC_OVERRIDES/$f"; else cat "$DC_DATA/$f"; fi; }"#;
    let stub = |name: &str, body: &str| {
        let path = stubs.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{pick}\n{body}\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    };
    stub(
        "nvidia-smi",
        r#"case "$*" in
  "mig -lgip") out lgip.txt ;; "mig -lgipp") out lgipp.txt ;;
  "mig -lgi") out lgi.txt ;; "mig -lci") out lci.txt ;; "-L") out L.txt ;;
  --query-gpu*) echo "NVIDIA A100-SXM4-40GB, 550.54.15, Enabled" ;;
  *) echo "unexpected nvidia-smi $*" >&2; exit 9 ;;
esac"#,
    );
    stub(
        "sandman",
        r#"case "$*" in
  *"gpu ls --json"*) out sandman-gpus.json ;;
  *"gpu profiles --json"*) out sandman-profiles.json ;;
  *"session create"*"--gpu MIG-b05c0034-4d0e-5d3c-a25c-e6795d1779df"*)
    echo '{"id": "s-1", "container_id": "c-1", "gpu_uuid": "MIG-b05c0034-4d0e-5d3c-a25c-e6795d1779df"}' ;;
  *"session rm s-1 --yes"*) ;;
  *"session create"*"--profile 7g.40gb"*)
    [ -e "$DC_OVERRIDES/made" ] && { echo "no free 7g.40gb MIG device" >&2; exit 3; }
    touch "$DC_OVERRIDES/made"
    echo '{"id": "s-7", "container_id": "c-7", "gpu_uuid": "MIG-77777777-0000-5000-0000-000000000000"}' ;;
  *"session rm s-7 --yes"*) rm "$DC_OVERRIDES/made" ;;
  *--version*) echo "sandman 0.0.0-stub" ;;
  *) echo "unexpected sandman $*" >&2; exit 9 ;;
esac"#,
    );
    stub(
        "docker",
        r#"[ "$*" = "exec c-1 nvidia-smi -L" ] && out container-L.txt || { echo "unexpected docker $*" >&2; exit 9; }"#,
    );
    stub("id", r#"echo "${DC_UID:-0}""#);
    let run_with = |uid: &str, args: &[&str]| {
        let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap());
        let out = Command::new("bash")
            .arg(root.join("scripts/device-check.sh"))
            .args(["--sandman", "sandman"])
            .args(args)
            .env("PATH", path)
            .env("DC_DATA", &data)
            .env("DC_OVERRIDES", &overrides)
            .env("DC_UID", uid)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out))
    };
    let run = |uid: &str| run_with(uid, &[]);

    let (code, out, err) = run("0");
    assert_eq!(code, Some(0), "{out}\n{err}");
    let expected = [
        "ok    profiles (name, id, instances): 7 line(s) match",
        "ok    placements (profile id, start:size): 25 line(s) match",
        "ok    compute instances (gpu, gi, ci, name): 2 line(s) match",
        "ok    GPU instances with a compute instance (gpu, gi, name, start:size): 2 line(s) match",
        "0 9 1g.5gb 2:1",
        "ok    session container sees exactly MIG-b05c0034-4d0e-5d3c-a25c-e6795d1779df",
        "all checks passed",
    ];
    assert_lines(&out, &expected);

    // sandman places 3g.20gb wrongly, misses a compute instance, and the container sees two devices.
    let read =
        |file: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(data.join(file)).unwrap()).unwrap() };
    let mut profiles = read("sandman-profiles.json");
    let three_g = profiles["profiles"].as_array_mut().unwrap().iter_mut().find(|p| p["name"] == "3g.20gb").unwrap();
    three_g["placements"][1] = serde_json::json!([2, 4]);
    std::fs::write(overrides.join("sandman-profiles.json"), profiles.to_string()).unwrap();
    let mut gpus = read("sandman-gpus.json");
    gpus["gpus"][0]["mig_instances"].as_array_mut().unwrap().pop();
    std::fs::write(overrides.join("sandman-gpus.json"), gpus.to_string()).unwrap();
    std::fs::copy(data.join("L.txt"), overrides.join("container-L.txt")).unwrap();
    let (code, out, err) = run("0");
    assert_eq!(code, Some(1), "{out}\n{err}");
    let expected = [
        "FAIL  placements (profile id, start:size) differs",
        "< 9 4:4",
        "> 9 2:4",
        "FAIL  compute instances (gpu, gi, ci, name) differs",
        "< 0 2 0 3g.20gb",
        "FAIL  session container given MIG-b05c0034-4d0e-5d3c-a25c-e6795d1779df sees",
        "ok    profiles (name, id, instances)",
        "FAIL  GPU instances with a compute instance (gpu, gi, name, start:size) differs",
        "< 0 2 3g.20gb 4:4",
        "4 check(s) failed",
    ];
    assert_lines(&out, &expected);

    let (code, _, err) = run("1000");
    assert_eq!(code, Some(2));
    assert!(err.contains("run as root"), "{err}");

    // --create-destroy on an idle GPU offering only 7g.40gb: created where sandman says, full
    // after one, gone after the session's removal.
    for file in std::fs::read_dir(&overrides).unwrap() {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    let lgip = std::fs::read_to_string(data.join("lgip.txt")).unwrap();
    let header: Vec<&str> = lgip.lines().take(5).collect();
    let seven_g: Vec<&str> = lgip.lines().skip_while(|l| !l.contains("MIG 7g.40gb")).collect();
    std::fs::write(overrides.join("lgip.txt"), [header, seven_g].concat().join("\n")).unwrap();
    std::fs::write(overrides.join("lgipp.txt"), "GPU  0 Profile ID  0 Placement : {0}:8\n").unwrap();
    std::fs::write(overrides.join("lgi.txt"), "No GPU instances found: Not Found\n").unwrap();
    std::fs::write(overrides.join("lci.txt"), "No compute instances found: Not Found\n").unwrap();
    let lgi = std::fs::read_to_string(data.join("lgi.txt")).unwrap();
    let made_lgi = lgi.lines().take(6).chain(["|   0  MIG 7g.40gb          0        0          0:8     |"]);
    std::fs::write(overrides.join("made-lgi.txt"), made_lgi.collect::<Vec<_>>().join("\n")).unwrap();
    let mut profiles = read("sandman-profiles.json");
    profiles["profiles"].as_array_mut().unwrap().retain(|p| p["name"] == "7g.40gb");
    std::fs::write(overrides.join("sandman-profiles.json"), profiles.to_string()).unwrap();
    let mut gpus = read("sandman-gpus.json");
    gpus["gpus"][0]["mig_instances"] = serde_json::json!([]);
    std::fs::write(overrides.join("sandman-gpus.json"), gpus.to_string()).unwrap();
    gpus["gpus"][0]["mig_instances"] = serde_json::json!([{
        "uuid": "MIG-77777777-0000-5000-0000-000000000000", "profile": "7g.40gb", "memory": 42144366592u64,
        "compute_slices": 7, "memory_slices": 8, "parent_gpu": gpus["gpus"][0]["uuid"], "gpu_instance_id": 0,
        "compute_instance_id": 0, "placement_start": 0, "created_by_sandman": true, "allocated": true
    }]);
    std::fs::write(overrides.join("made-sandman-gpus.json"), gpus.to_string()).unwrap();
    let (code, out, err) = run_with("0", &["--no-session", "--create-destroy"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let expected = [
        "ok    profiles (name, id, instances): 1 line(s) match",
        "ok    created 7g.40gb at 0:8 (GPU instance 0)",
        "ok    7g.40gb: full after 1, as expected",
        "ok    7g.40gb: every instance destroyed",
        "all checks passed",
    ];
    assert_lines(&out, &expected);
    assert!(!overrides.join("made").exists(), "the session was removed");
}
