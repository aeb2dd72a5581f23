//! Bad input and broken surroundings: a clear error naming the value, the documented exit code,
//! and nothing left behind.

use std::process::Output;

use crate::harness::{Env, stderr};

/// Asserts the exit code and the exact error line, then that nothing was made.
fn refused(env: &Env, out: &Output, code: i32, error: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.lines().any(|l| l == format!("error: {error}")), "want `error: {error}`, got:\n{err}");
    assert!(env.sessions().is_empty(), "no session row");
    assert!(env.containers().is_empty(), "no container");
}

#[test]
fn bad_user_names_and_ttls_get_exact_errors() {
    let env = Env::new("bad-input");
    let forty = "a".repeat(40);
    let cases: &[(&[&str], &str)] = &[
        (&["--user", "../x"], r#"invalid user: "../x" must start with a lowercase letter a-z or '_'"#),
        (&["--user", "Root"], r#"invalid user: "Root" must start with a lowercase letter a-z or '_'"#),
        (&["--user", "root"], r#"invalid user: "root" is a reserved system account name"#),
        (&["--user", &forty], &format!("invalid user: {forty:?} is 40 characters long; the limit is 32")),
        (&["--user", ""], "invalid user: the user name is empty"),
        (
            &["--user", "jos\u{e9}"],
            "invalid user: \"jos\u{e9}\" contains '\u{e9}'; only a-z, 0-9, '_' and '-' are allowed",
        ),
        (&["--user", "al ice"], r#"invalid user: "al ice" contains ' '; only a-z, 0-9, '_' and '-' are allowed"#),
        (&["--user", "x;id"], r#"invalid user: "x;id" contains ';'; only a-z, 0-9, '_' and '-' are allowed"#),
        (&["--user", "carl", "--ttl", "0"], "invalid ttl_minutes: 0 is out of range; use 1 to 10080 minutes"),
        (&["--user", "carl", "--ttl", "-1"], "invalid ttl_minutes: -1 is out of range; use 1 to 10080 minutes"),
        (&["--user", "carl", "--ttl", "10081"], "invalid ttl_minutes: 10081 is out of range; use 1 to 10080 minutes"),
        (
            &["--user", "carl", "--ttl", "99999999999999999999999"],
            "invalid ttl_minutes: 99999999999999999999999 is out of range; use 1 to 10080 minutes",
        ),
        (&["--user", "carl", "--ttl", "soon"], r#"invalid ttl_minutes: "soon" is not a whole number of minutes"#),
        (
            &["--user", "carl", "--image", "bad image"],
            r#"invalid image: "bad image" is not a valid image reference (lower-case name[:tag][@digest], as Docker spells them)"#,
        ),
    ];
    for (args, error) in cases {
        let mut full = vec!["session", "create"];
        full.extend_from_slice(args);
        refused(&env, &env.run(&full), 2, error);
    }
    let root = env.workspace_root();
    let made: Vec<_> =
        std::fs::read_dir(&root).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(made.is_empty(), "no workspace made for refused input: {made:?}");
}

#[test]
fn docker_unreachable_is_named_with_the_fix() {
    let mut env = Env::new("no-docker");
    env.extra_env.push(("DOCKER_HOST".into(), "unix:///nonexistent/docker.sock".into()));
    let out = env.run(&["session", "create", "--user", "dora"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"), "{err}");
    assert!(err.contains("systemctl start docker"), "{err}");
    env.extra_env.clear();
    assert!(env.sessions().is_empty());
}

#[test]
fn missing_images_are_named() {
    let mut env = Env::new("no-image");
    let out = env.run(&["session", "create", "--user", "ivy", "--image", "sandman-absent:1"]);
    refused(&env, &out, 2, r#"invalid image: "sandman-absent:1" is not on this host; build or load it first"#);
    env.extra_env.push(("SANDMAN_IMAGE".into(), "sandman-absent:2".into()));
    let out = env.run(&["session", "create", "--user", "ivy"]);
    refused(
        &env,
        &out,
        5,
        r#"workspace image "sandman-absent:2" is not on this host: run `sandman image build` (add --offline without a registry)"#,
    );
}

#[test]
fn exhausted_port_range_and_duplicate_user_are_conflicts() {
    let env = Env::new("ports-exhausted");
    let port = env.ports.0.to_string();
    let one_port = ["--ssh-port-start", &port, "--ssh-port-end", &port];
    let first = env.cmd().args(one_port).args(["session", "create", "--user", "una", "--json"]).output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let again = env.cmd().args(one_port).args(["session", "create", "--user", "una"]).output().unwrap();
    assert_eq!(again.status.code(), Some(3));
    assert!(stderr(&again).contains("error: session for user una already exists"), "{}", stderr(&again));
    let out = env.cmd().args(one_port).args(["session", "create", "--user", "vic"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "error: no free SSH port in {port}-{port}: widen ssh_port_start/ssh_port_end or remove sessions"
        )),
        "{}",
        stderr(&out)
    );
    let users: Vec<String> = env.sessions().iter().map(|s| s["user_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(users, ["una"], "only the first session exists");
    assert_eq!(env.containers().len(), 1);
    assert!(!env.workspace_root().join("vic").exists());
}

#[test]
fn unusable_workspace_root_leaves_nothing() {
    let env = Env::new("bad-root");
    let blocker = env.path("a-file");
    std::fs::write(&blocker, "").unwrap();
    let root = blocker.join("workspaces");
    let out = env.run(&["--workspace-root", root.to_str().unwrap(), "session", "create", "--user", "wes"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("error: workspace root {} is not usable", root.display())),
        "{}",
        stderr(&out)
    );
    assert!(env.sessions().is_empty());
    assert!(env.containers().is_empty());
}

#[test]
fn unknown_ids_and_missing_config_are_reported() {
    let env = Env::new("unknown-id");
    let out = env.run(&["session", "rm", "no-such-id", "--yes"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("error: session no-such-id not found"));
    let out = env.run(&["session", "show", "nope"]);
    assert_eq!(out.status.code(), Some(4));
    let missing = env.path("missing.toml");
    let out = env.run(&["--config", missing.to_str().unwrap(), "session", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("cannot read config file {}", missing.display())), "{}", stderr(&out));
    // rm without --yes and without a terminal refuses rather than hanging or deleting.
    let s = env.create("rae", &[]);
    let out = env.run(&["session", "rm", s.id()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("add --yes"));
    assert_eq!(env.sessions().len(), 1);
}

#[test]
fn doctor_passes_here_and_names_the_fix_when_something_is_wrong() {
    let mut env = Env::new("doctor");
    let out = env.run(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<_> = checks.iter().filter(|c| c["ok"] == false).collect();
    assert!(out.status.success() && failed.is_empty(), "doctor failed here: {failed:?}");
    for name in ["docker", "image", "network", "workspace root", "database", "ports"] {
        assert!(checks.iter().any(|c| c["check"] == name), "no {name} check");
    }

    env.extra_env.push(("SANDMAN_IMAGE".into(), "sandman-absent:3".into()));
    env.extra_env.push(("DOCKER_HOST".into(), "unix:///nonexistent/docker.sock".into()));
    let out = env.run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(5));
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let docker = checks.iter().find(|c| c["check"] == "docker").unwrap();
    assert_eq!(docker["ok"], false);
    assert!(docker["fix"].as_str().unwrap().contains("systemctl start docker"));
    env.extra_env.remove(1);
    let out = env.run(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let image = checks.iter().find(|c| c["check"] == "image").unwrap();
    assert_eq!(image["ok"], false);
    assert!(image["fix"].as_str().unwrap().contains("sandman image build"));
}

/// A small tmpfs mounted on a directory for the length of a test (root only), unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", stderr(&out));
        SmallDisk(dir.to_path_buf())
    }

    /// Writes a file until the file system is full; returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return path;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_database_gets_503_and_reads_keep_working() {
    use serde_json::json;

    use crate::http::Serve;
    let env = Env::new("errors-full-disk");
    let disk = SmallDisk::mount(env.db().parent().unwrap(), "4m");
    let s = env.create("fulldisk", &[]);
    let id = s.id().to_string();
    let serve = Serve::start(&env);
    disk.fill();

    // The CLI reads, without a server's connection open or with it.
    let listed = env.sessions();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let shown = env.ok(&["session", "show", &id, "--json"]);
    assert!(shown.contains(&id), "{shown}");
    // Other checks may fail on a test host (ports, network): only the database's matters here.
    let doctor = env.run(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let database = checks.as_array().unwrap().iter().find(|c| c["check"] == "database").unwrap();
    assert_eq!(database["ok"], true, "{database}");

    // Writes: 503 with the path and the fix, exit 5 in the CLI.
    let r = serve.call("PATCH", &format!("/sessions/{id}"), Some(&json!({"ttl_minutes": 30})));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(r.error().contains(&env.db().display().to_string()) && r.error().contains("full"), "{}", r.error());
    let out = env.run(&["session", "extend", &id, "--ttl", "30"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("file system is full"), "{}", stderr(&out));
    assert_eq!(serve.get("/sessions").status, 200);

    // A removal whose container went but whose row could not be deleted...
    let r = serve.call("DELETE", &format!("/sessions/{id}"), None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(env.containers().is_empty(), "the container went first");
    assert_eq!(env.sessions().len(), 1, "the row stayed");
    serve.stop();

    // ... is finished, and reported, by the next reap once there is space.
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&env.ok(&["reap", "--json"])).unwrap();
    assert_eq!(report["vanished"], json!([id]), "{report}");
    assert!(env.sessions().is_empty());
    drop(disk);
}

#[test]
fn an_unwritable_shared_memory_file_is_a_clean_error_not_a_signal() {
    use std::os::unix::fs::PermissionsExt;

    use crate::http::Serve;
    let env = Env::new("errors-shm");
    let serve = Serve::start(&env);
    assert_eq!(serve.get("/sessions").status, 200);
    let shm = std::path::PathBuf::from(format!("{}-shm", env.db().display()));
    for (how, fix) in [("chmod", "cannot be read and written by its owner"), ("chown", "belongs to uid 65534")] {
        match how {
            "chmod" => std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o000)).unwrap(),
            _ => std::os::unix::fs::chown(&shm, Some(65534), None).unwrap(),
        }
        let out = env.run(&["session", "list"]);
        assert_eq!(out.status.code(), Some(5), "{how}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&shm.display().to_string()) && err.contains(fix) && err.contains("rm "), "{how}: {err}");
        // The server's connections, open before, go on answering.
        assert_eq!(serve.get("/sessions").status, 200, "{how}");
        assert_eq!(serve.get("/metrics").status, 200, "{how}");
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&shm, Some(0), None).unwrap();
    }
    assert!(env.sessions().is_empty());
    serve.stop();
}
