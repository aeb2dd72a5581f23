//! How admins install sandman: the Debian package of scripts/package-deb.sh, installed with dpkg
//! into a fresh container of the offline Debian base, and the serve image of packaging/docker,
//! built offline and run with its compose file against the real engine, reached with real ssh.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::session_from;
use crate::harness::{BIN, Env, rand_suffix, require_docker, stderr, stdout};
use crate::http::{healthy, request};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// Runs and insists on success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}{}", out.status, stdout(&out), stderr(&out));
    stdout(&out)
}

/// The base `sandman image build --offline` makes: Debian of this host's release.
fn offline_base() -> String {
    let release = read("/etc/os-release");
    let codename = release.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).expect("VERSION_CODENAME");
    let base = format!("sandman-base:{}", codename.trim_matches('"'));
    let found = Command::new("docker").args(["image", "inspect", &base]).output().unwrap();
    assert!(found.status.success(), "{base} is missing: build it with `sandman image build --offline`");
    base
}

/// A throwaway container of the offline base, with no network, removed on drop.
struct Scratch {
    name: String,
}

impl Scratch {
    fn start(image: &str) -> Scratch {
        let name = format!("sandman-deb-test-{}", rand_suffix());
        ok(Command::new("docker").args([
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            image,
            "sleep",
            "infinity",
        ]));
        Scratch { name }
    }

    fn sh(&self, script: &str) -> Output {
        Command::new("docker").args(["exec", &self.name, "sh", "-c", script]).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a shell script inside and insists on success; returns stdout.
    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "`{script}` failed ({}):\n{}{}", out.status, stdout(&out), stderr(&out));
        stdout(&out)
    }

    fn copy_in(&self, from: &Path, to: &str) {
        ok(Command::new("docker").arg("cp").arg(from).arg(format!("{}:{to}", self.name)));
    }

    /// `mode uid:gid type` of each path, or `missing`, in one call.
    fn stats(&self, paths: &[String]) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "exec",
                &self.name,
                "sh",
                "-c",
                "for p; do stat -c '%a %u:%g %F' \"$p\" 2>/dev/null || echo missing; done",
            ])
            .arg("sh")
            .args(paths)
            .output()
            .unwrap();
        stdout(&out).lines().map(str::to_string).collect()
    }

    fn stat(&self, path: &str) -> String {
        self.stats(&[path.to_string()]).remove(0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}

/// Every key of the README's settings block, in order.
fn readme_settings_keys() -> Vec<String> {
    let readme = read(repo("README.md"));
    let block = readme
        .split("### Settings")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has a toml block under ### Settings");
    let keys: Vec<String> = block
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(keys.len() > 20, "too few keys in README's settings block: {keys:?}");
    keys
}

#[test]
fn deb_installs_with_its_files_and_removes_without_touching_workspaces_or_the_database() {
    require_docker();
    let base = offline_base();
    let dir = tempfile::Builder::new().prefix("sandman-deb-").tempdir().unwrap();

    // gzip: the test binary is a debug build, and xz on it takes half a minute.
    let built = ok(Command::new(repo("scripts/package-deb.sh"))
        .arg("--binary")
        .arg(BIN)
        .arg("--out")
        .arg(dir.path())
        .args(["--compress", "gzip"]));
    let deb = PathBuf::from(built.lines().last().unwrap());
    let arch = ok(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
    assert_eq!(deb, dir.path().join(format!("sandman_{VERSION}-1_{arch}.deb")));
    let field = |name: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).trim().to_string();
    let depends = field("Depends");
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");
    assert!(depends.ends_with(", docker.io | docker-ce, openssh-client"), "{depends}");
    assert_eq!(field("Recommends"), "debootstrap, iptables");

    let c = Scratch::start(&base);
    c.copy_in(&deb, "/tmp/sandman.deb");
    // The base has openssh-client (openssh-server needs it) but no engine, which cannot be
    // installed offline in here. A plain dpkg -i must refuse on exactly that dependency; then an
    // empty stand-in named docker.io satisfies it. That keeps dpkg's dependency check in force
    // (--force-depends would let a wrong Depends pass), and the container has no socket anyway,
    // which is what doctor must report.
    c.sh_ok("dpkg -s openssh-client >/dev/null");
    let refused = c.sh("dpkg -i /tmp/sandman.deb 2>&1");
    let text = stdout(&refused);
    assert!(!refused.status.success(), "installed without an engine:\n{text}");
    assert!(text.contains("sandman depends on docker.io | docker-ce; however:"), "{text}");
    assert!(!text.contains("openssh-client"), "{text}");
    c.sh_ok(
        "mkdir -p /tmp/stub/DEBIAN && printf 'Package: docker.io\\nVersion: 0-stub\\nArchitecture: all\\n\
         Maintainer: tests <tests@localhost>\\nDescription: stand-in for the engine\\n' >/tmp/stub/DEBIAN/control \
         && dpkg-deb --root-owner-group -b /tmp/stub /tmp/stub.deb >/dev/null && dpkg -i /tmp/stub.deb",
    );
    c.sh_ok("dpkg -i /tmp/sandman.deb");
    assert_eq!(c.sh_ok("dpkg-query -W -f='${Status}' sandman"), "install ok installed");

    // Every file, with its mode and content.
    let file = "644 0:0 regular file";
    assert_eq!(c.stat("/usr/bin/sandman"), "755 0:0 regular file");
    let mut pages: Vec<String> =
        std::fs::read_dir(repo("man")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert!(pages.len() > 10, "{pages:?}");
    pages.sort();
    let installed: Vec<String> = pages.iter().map(|p| format!("/usr/share/man/man1/{p}.gz")).collect();
    assert_eq!(c.stats(&installed), vec![file; pages.len()], "{installed:?}");
    assert_eq!(
        c.sh_ok("cd /usr/share/man/man1 && ls sandman*"),
        format!("{}\n", installed.iter().map(|p| &p[20..]).collect::<Vec<_>>().join("\n"))
    );
    let zcat = c.sh_ok(&format!("zcat {}", installed.join(" ")));
    assert_eq!(zcat, pages.iter().map(|p| read(repo("man").join(p))).collect::<String>(), "man pages differ");
    for (ours, installed) in [
        ("completions/sandman.bash", "/usr/share/bash-completion/completions/sandman"),
        ("completions/_sandman", "/usr/share/zsh/vendor-completions/_sandman"),
        ("completions/sandman.fish", "/usr/share/fish/vendor_completions.d/sandman.fish"),
        ("packaging/config.toml", "/etc/sandman/config.toml"),
    ] {
        assert_eq!(c.stat(installed), file, "{installed}");
        assert_eq!(c.sh_ok(&format!("cat {installed}")), read(repo(ours)), "{installed}");
    }
    for unit in ["sandman.service", "sandman-reap.service", "sandman-reap.timer"] {
        let installed = format!("/lib/systemd/system/{unit}");
        assert_eq!(c.stat(&installed), file, "{installed}");
        let ours = read(repo("packaging/systemd").join(unit)).replace("/usr/local/bin/sandman", "/usr/bin/sandman");
        assert_eq!(c.sh_ok(&format!("cat {installed}")), ours, "{installed}");
    }
    assert!(c.sh_ok("cat /lib/systemd/system/sandman.service").contains("\nExecStart=/usr/bin/sandman serve\n"));
    // Installed, not enabled: no link anywhere points at a sandman unit.
    assert_eq!(c.sh_ok("find /etc /lib /usr/lib -lname '*sandman*'"), "");
    assert_eq!(
        c.sh_ok("dpkg-query -W -f='${Conffiles}' sandman").split_whitespace().next(),
        Some("/etc/sandman/config.toml")
    );
    assert_eq!(c.stat("/var/lib/sandman"), "700 0:0 directory");
    assert_eq!(c.stat("/srv/workspaces"), "755 0:0 directory");

    // The config example: every key of the README, commented; uncommented, sandman accepts it.
    let example = read(repo("packaging/config.toml"));
    assert!(example.lines().all(|l| l.is_empty() || l.starts_with('#')), "an active line in the example");
    for key in readme_settings_keys() {
        assert!(example.lines().any(|l| l.starts_with(&format!("# {key} = "))), "{key} is not in the example");
    }
    c.sh_ok("sed -E 's/^# ([a-z_]+ = )/\\1/' /etc/sandman/config.toml >/tmp/every-key.toml");

    // The binary runs; doctor reports the missing socket in JSON with exit 5 ("Docker or the
    // image unavailable"), with the example config and with every key of it set.
    assert_eq!(c.sh_ok("sandman --version"), format!("sandman {VERSION}\n"));
    let help = c.sh_ok("sandman --help");
    assert!(help.contains("Usage: sandman") && help.contains("session"), "{help}");
    for config in ["/etc/sandman/config.toml", "/tmp/every-key.toml"] {
        let out = c.sh(&format!("sandman --config {config} doctor --json"));
        assert_eq!(out.status.code(), Some(5), "doctor with {config}:\n{}{}", stdout(&out), stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        let checks: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("doctor --json prints JSON");
        let check =
            |name: &str| checks.iter().find(|c| c["check"] == name).unwrap_or_else(|| panic!("no {name} check"));
        assert_eq!(check("docker")["ok"], false);
        assert!(check("docker")["detail"].as_str().unwrap().contains("/var/run/docker.sock"), "{checks:?}");
        assert_eq!(
            (check("database")["ok"].clone(), check("workspace root")["ok"].clone()),
            (json!(true), json!(true))
        );
    }
    // doctor made the database; give a user a workspace and the admin a token file and an edit.
    assert_eq!(c.stat("/var/lib/sandman/sandman.db"), "600 0:0 regular file");
    c.sh_ok(
        "install -d -m 0700 -o 20000 -g 20000 /srv/workspaces/alice && echo mine >/srv/workspaces/alice/notes \
         && echo 'test-token' >/etc/sandman/api-tokens && chmod 0600 /etc/sandman/api-tokens \
         && echo 'default_ttl_minutes = 30' >>/etc/sandman/config.toml",
    );
    let kept = || {
        assert_eq!(c.stat("/var/lib/sandman"), "700 0:0 directory");
        assert_eq!(c.stat("/var/lib/sandman/sandman.db"), "600 0:0 regular file");
        assert_eq!(c.stat("/srv/workspaces/alice"), "700 20000:20000 directory");
        assert_eq!(c.sh_ok("cat /srv/workspaces/alice/notes /etc/sandman/api-tokens"), "mine\ntest-token\n");
    };

    // Upgrade (the same package again): the admin's config edit stays, without a question.
    c.sh_ok("dpkg -i /tmp/sandman.deb </dev/null");
    assert!(c.sh_ok("cat /etc/sandman/config.toml").ends_with("default_ttl_minutes = 30\n"));
    kept();

    c.sh_ok("dpkg -r sandman");
    assert_eq!(c.sh_ok("dpkg-query -W -f='${Status}' sandman"), "deinstall ok config-files");
    for gone in ["/usr/bin/sandman", "/lib/systemd/system/sandman.service", "/usr/share/man/man1/sandman.1.gz"] {
        assert_eq!(c.stat(gone), "missing", "{gone}");
    }
    assert!(c.sh_ok("cat /etc/sandman/config.toml").ends_with("default_ttl_minutes = 30\n"));
    kept();

    c.sh_ok("dpkg -P sandman");
    assert_eq!(c.stat("/etc/sandman/config.toml"), "missing");
    assert!(c.sh("dpkg-query -W sandman").status.code() != Some(0), "sandman is still known to dpkg");
    kept();
}

/// The compose project and the image of one test, taken down and removed on drop.
struct Compose {
    project: String,
    image: String,
    env: Vec<(&'static str, String)>,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &self.project, "-f", &format!("{REPO}/packaging/docker/docker-compose.yml")])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn logs(&self) -> String {
        let out = self.cmd(&["logs", "--no-color"]).output().unwrap();
        format!("{}{}", stdout(&out), stderr(&out))
    }

    fn containers(&self) -> String {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        ok(Command::new("docker").args(["ps", "-aq", "--filter", &filter]))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.cmd(&["down", "--timeout", "30"]).output();
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

#[test]
fn serve_image_builds_offline_and_its_compose_file_serves_a_session_reached_by_ssh() {
    // The block's last port is the API's; the others are for sessions.
    let env = Env::new("package-serve-compose");
    let (ssh_start, api_port) = (env.ports.0, env.ports.1);
    let base = offline_base();
    let suffix = rand_suffix();
    let image = format!("sandman-serve-test:{suffix}");
    let built = ok(Command::new(repo("packaging/docker/build-image.sh"))
        .arg("--binary")
        .arg(BIN)
        .args(["--tag", &image, "--base", &base]));
    assert_eq!(built.trim(), image);

    let etc = env.path("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(env.workspace_root()).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "network = \"{}\"\nssh_host = \"127.0.0.1\"\nssh_port_start = {ssh_start}\nssh_port_end = {}\n\
             api_port = {api_port}\napi_bind = \"127.0.0.1\"\ngpu_backend = \"none\"\n",
            env.network,
            api_port - 1
        ),
    )
    .unwrap();
    let state = env.db().parent().unwrap().to_path_buf();
    let compose = Compose {
        project: format!("sandman-e2e-{suffix}"),
        image: image.clone(),
        env: vec![
            ("SANDMAN_IMAGE", image),
            // No NVIDIA runtime on the test hosts; the file's default is nvidia.
            ("SANDMAN_CONTAINER_RUNTIME", "runc".into()),
            ("SANDMAN_STATE_DIR", state.display().to_string()),
            ("SANDMAN_WORKSPACES", env.workspace_root().display().to_string()),
            ("SANDMAN_CONFIG_DIR", etc.display().to_string()),
        ],
    };
    ok(&mut compose.cmd(&["up", "-d"]));
    let start = Instant::now();
    while !healthy(api_port) {
        assert!(start.elapsed() < Duration::from_secs(30), "serve did not answer on {api_port}:\n{}", compose.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // On first start serve made the token file in the configuration volume, for root only.
    let tokens = etc.join("api-tokens");
    assert_eq!(std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777, 0o600);
    let token = read(&tokens).lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap().trim().to_string();
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];

    let r = request(api_port, "POST", "/sessions", &headers, Some(br#"{"user_id":"composer"}"#));
    assert_eq!(r.status, 201, "{}\n{}", r.text(), compose.logs());
    // The state directory has the host's path inside too: the user's key directory, which the
    // session mounts, is where the engine looks for it.
    assert!(state.join("keys/composer/authorized_keys").is_file(), "the key directory is not at the host's path");
    let created = r.json();
    let session = session_from(&env, &created);
    assert!((ssh_start..api_port).contains(&session.port()), "{created}");
    let out = env.ssh(&session, "whoami; pwd");
    assert_eq!(stdout(&out), "composer\n/home/composer\n", "{}", stderr(&out));
    // The workspace is where the engine found it: the host path serve named.
    let home = std::fs::metadata(env.workspace_root().join("composer")).unwrap();
    assert_eq!((home.mode() & 0o777, home.uid() != 0), (0o700, true));

    let r = request(api_port, "DELETE", &format!("/sessions/{}", session.id()), &headers, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.containers(), Vec::<String>::new(), "the session's container is still there");

    ok(&mut compose.cmd(&["down", "--timeout", "30"]));
    assert_eq!(compose.containers(), "", "compose down left containers");
    assert!(!healthy(api_port), "serve still answers after compose down");
}
