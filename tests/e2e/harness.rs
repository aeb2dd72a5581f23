//! A private sandman for one test: its own database, workspace root, Docker network and port
//! range, so tests run in parallel. Everything it made is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_sandman");

/// Fails the test loudly when there is no Docker engine or no workspace image: these tests
/// never pass by skipping.
pub fn require_docker() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let out = Command::new("docker").args(["image", "inspect", "gpu-workspace"]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "the gpu-workspace image is missing or Docker is unreachable: {}\nbuild it with `sandman image build --offline`",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run the docker client: {e}"),
        }
    });
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub network: String,
    pub ports: (u16, u16),
    pub extra_env: Vec<(String, String)>,
}

/// A session as `session create --json` reports it.
pub struct Session {
    pub json: Value,
    pub key: PathBuf,
}

impl Session {
    pub fn id(&self) -> &str {
        self.json["session_id"].as_str().unwrap()
    }
    pub fn port(&self) -> u16 {
        self.json["ssh_port"].as_u64().unwrap() as u16
    }
    pub fn user(&self) -> &str {
        self.json["ssh_user"].as_str().unwrap()
    }
}

impl Env {
    /// `name` picks the port block, so each test must pass its own.
    pub fn new(name: &str) -> Env {
        require_docker();
        let hash = name.bytes().fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let start = 21000 + (hash % 700) as u16 * 50;
        let dir = tempfile::Builder::new().prefix("sandman-e2e-").tempdir().unwrap();
        let network = format!("sandman-test-{}", &dir.path().file_name().unwrap().to_string_lossy()[12..]);
        // Settings reach sandman through all three layers: this file, SANDMAN_* variables, flags.
        std::fs::write(dir.path().join("config.toml"), format!("network = \"{network}\"\nssh_host = \"127.0.0.1\"\n"))
            .unwrap();
        Env { network, dir, ports: (start, start + 49), extra_env: Vec::new() }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state").join("sandman.db")
    }

    pub fn workspace_root(&self) -> PathBuf {
        self.dir.path().join("workspaces")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The real binary with this environment's settings.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--db")
            .arg(self.db())
            .arg("--workspace-root")
            .arg(self.workspace_root())
            .arg("--ssh-port-start")
            .arg(self.ports.0.to_string())
            .arg("--ssh-port-end")
            .arg(self.ports.1.to_string())
            .env("SANDMAN_CONFIG", self.dir.path().join("config.toml"))
            .env_remove("SANDMAN_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "sandman {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn create(&self, user: &str, extra: &[&str]) -> Session {
        let key = self.path(&format!("{user}-{}.key", rand_suffix()));
        let key_s = key.to_str().unwrap().to_string();
        let mut args = vec!["session", "create", "--user", user, "--json", "--key-file", &key_s];
        args.extend_from_slice(extra);
        let json: Value = serde_json::from_str(&self.ok(&args)).unwrap();
        Session { json, key }
    }

    pub fn sessions(&self) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(&self.ok(&["session", "list", "--json"])).unwrap()
    }

    /// Every container labelled with this environment's sandman instance, running or not.
    pub fn containers(&self) -> Vec<String> {
        let Some(instance) = self.instance_id() else {
            return Vec::new();
        };
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=sandman.instance={instance}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    pub fn instance_id(&self) -> Option<String> {
        let conn = rusqlite::Connection::open(self.db()).ok()?;
        conn.query_row("SELECT value FROM meta WHERE key = 'instance_id'", [], |r| r.get(0)).ok()
    }

    /// Runs a sandman SQL statement directly, for time travel (expiry) in tests.
    pub fn sql(&self, statement: &str) {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.execute_batch(statement).unwrap();
    }

    /// ssh into a session with the real OpenSSH client; the host key must match `known_hosts`.
    pub fn ssh(&self, s: &Session, remote: &str) -> Output {
        ssh_command(s, &self.known_hosts(s)).arg(remote).output().unwrap()
    }

    /// A known_hosts file holding what create reported.
    pub fn known_hosts(&self, s: &Session) -> PathBuf {
        let path = self.path(&format!("known_hosts-{}", s.id()));
        std::fs::write(&path, format!("{}\n", s.json["known_hosts"].as_str().unwrap())).unwrap();
        path
    }
}

/// The OpenSSH client options every test uses: keys only, the host key must be the reported one.
fn client_options(known_hosts: &Path) -> Vec<String> {
    ["BatchMode=yes", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "ConnectTimeout=10", "LogLevel=ERROR"]
        .into_iter()
        .map(str::to_string)
        .chain([format!("UserKnownHostsFile={}", known_hosts.display())])
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
}

pub fn ssh_base(program: &str, key: &Path, known_hosts: &Path) -> Command {
    let mut c = Command::new(program);
    c.arg("-i").arg(key).args(client_options(known_hosts)).stdin(Stdio::null());
    c
}

/// Runs tmux against its own server socket, with a UTF-8 terminal on this side as a
/// researcher's, never inside the caller's own tmux.
pub fn tmux(socket: &Path, args: &[&str]) -> Output {
    Command::new("tmux")
        .arg("-u")
        .arg("-S")
        .arg(socket)
        .args(args)
        .env("LANG", "C.UTF-8")
        .env_remove("TMUX")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The same client as one command line, for tools that take an ssh command as text
/// (`rsync -e`, `GIT_SSH_COMMAND`, a terminal in tmux). Test paths hold no spaces.
pub fn ssh_command_line(key: &Path, known_hosts: &Path) -> String {
    format!("ssh -i {} {}", key.display(), client_options(known_hosts).join(" "))
}

pub fn ssh_command(s: &Session, known_hosts: &Path) -> Command {
    let mut c = ssh_base("ssh", &s.key, known_hosts);
    c.arg("-p").arg(s.port().to_string()).arg(format!("{}@127.0.0.1", s.user()));
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn rand_suffix() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    let mut b = [0u8; 4];
    getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(buf).unwrap();
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cmd().args(["session", "rm", "--all", "--yes", "--quiet"]).output();
        for id in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        // The firewall rules a create installed on this network's bridge.
        let _ = self.cmd().args(["firewall", "remove", "--quiet"]).output();
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}
