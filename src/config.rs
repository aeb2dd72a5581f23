//! Settings: built-in defaults < config file < `SANDMAN_*` environment < command-line flags.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::limits::{self, ByteSize, Host, Limits};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sandman/config.toml";

/// List settings whose entries are numbers (from a comma-separated variable).
const INTEGER_LIST_KEYS: &[&str] = &["allowed_host_ports"];

/// Settings that default to nothing.
const OPTIONAL_KEYS: &[&str] = &["gpu_sim_file", "workspace_quota", "workspace_nfs"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// SQLite database; its directory also holds sandman's lock files.
    pub db: PathBuf,
    /// Per-user persistent homes live in `<workspace_root>/<user>`.
    pub workspace_root: PathBuf,
    pub ssh_port_start: u16,
    pub ssh_port_end: u16,
    /// Host name given to users in `ssh_host` and the ssh command (default: this machine's name).
    pub ssh_host: String,
    /// Host address the session ports are published on.
    pub publish_address: IpAddr,
    /// Docker bridge network for sessions; created with inter-container traffic disabled.
    pub network: String,
    /// Accept an existing `network` on which containers may reach one another.
    pub allow_icc: bool,
    /// Workspace image used when a create names none.
    pub image: String,
    pub default_ttl_minutes: u32,
    pub max_ttl_minutes: u32,
    /// First uid (and gid) handed to a new user; each user keeps theirs forever.
    pub uid_start: u32,
    pub pids_limit: i64,
    /// How long a create waits for the session's sshd to answer.
    pub ssh_ready_timeout_secs: u64,
    /// GPU backend: auto (NVML if the driver library loads, else none), nvml, sim or none.
    pub gpu_backend: GpuBackendKind,
    /// The simulated GPUs, for `gpu_backend = "sim"`.
    pub gpu_sim_file: Option<PathBuf>,
    /// MIG profile a create gets when it names none: an exact name, or a size such as `3g`.
    pub default_profile: String,
    /// static: only hand out existing MIG instances; dynamic: create them on demand too.
    pub mig_mode: MigMode,
    /// How a container is given its GPU: the NVIDIA runtime's device request, or a CDI name.
    pub gpu_device_access: GpuDeviceAccess,
    /// `sandman serve`: TCP port of the HTTP API.
    pub api_port: u16,
    /// `sandman serve`: address the API listens on.
    pub api_bind: IpAddr,
    /// `sandman serve`: bearer tokens, one per line; created with one random token if absent.
    pub api_token_file: PathBuf,
    /// `sandman serve`: threads answering requests.
    pub api_workers: usize,
    /// `sandman serve`: largest request body accepted (413 above).
    pub api_max_body_bytes: usize,
    /// `sandman serve`: the deadline for a request's head and for its body, the idle limit of a
    /// connection between requests, and the write timeout of an answer.
    pub api_body_timeout_secs: u64,
    /// `sandman serve`: creates in progress at once (each may wait on its container's sshd for
    /// `ssh_ready_timeout_secs`); beyond it 503 with `Retry-After`. Removals have a bound of the
    /// same size of their own, so that stuck creates never stop a removal.
    pub api_max_concurrent_creates: usize,
    /// `sandman serve`: origins allowed by CORS; `*` reflects any origin.
    pub cors_origins: Vec<String>,
    /// `sandman serve`: seconds between reaper passes.
    pub reap_interval_secs: u64,
    /// A running session with no activity (SSH connection, CPU use, GPU process) for this many
    /// minutes is reaped; 0: never for idleness. A create may ask for less.
    pub idle_timeout_minutes: u32,
    /// Activity moves a session's expiry to at least this many minutes from now, never past
    /// `created_at + max_ttl_minutes`; 0: activity never moves it.
    pub activity_bump_minutes: u32,
    /// The share of one CPU, in percent, a session's container must use between two reap passes
    /// for it to count as activity; 0: CPU use never counts.
    pub cpu_active_percent: u32,
    /// GPU compute processes on a session's device count as activity, so such a session is never
    /// reaped for idleness (its expiry still ends it). false: a process holding the GPU (a
    /// forgotten notebook kernel) keeps nobody's session alive.
    pub protect_busy_gpu: bool,
    /// Largest size of one workspace, enforced with a project quota where the file system of
    /// `workspace_root` supports them (ext4 or xfs mounted with prjquota); refused elsewhere.
    pub workspace_quota: Option<ByteSize>,
    /// Per-session memory, CPUs and /dev/shm: defaults and maxima, per MIG profile too.
    pub limits: Limits,
    /// Sessions may not open connections to the host's own addresses (firewall rules on the
    /// session bridge; see `firewall`).
    pub block_host: bool,
    /// IPv4 networks sessions may not reach (169.254.0.0/16: cloud metadata and link-local).
    pub blocked_cidrs: Vec<String>,
    /// TCP and UDP ports on the host that sessions may reach despite `block_host`.
    pub allowed_host_ports: Vec<u32>,
    /// The container engine sessions run on: one Docker host, or a Docker Swarm (from a manager).
    pub engine: EngineKind,
    /// Swarm: `server:/export` holding every user's home as `<export>/<user>`, mounted over NFS on
    /// whichever node runs the session. Unset, a user's sessions stay on the node with the home.
    pub workspace_nfs: Option<String>,
    /// Swarm: publish each session's port through the routing mesh (on every node) rather than
    /// in host mode on its node only.
    pub swarm_routing_mesh: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Docker,
    Swarm,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GpuBackendKind {
    Auto,
    Nvml,
    Sim,
    None,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MigMode {
    Static,
    Dynamic,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GpuDeviceAccess {
    Nvidia,
    Cdi,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            db: PathBuf::from("/var/lib/sandman/sandman.db"),
            workspace_root: PathBuf::from("/srv/workspaces"),
            ssh_port_start: 10000,
            ssh_port_end: 20000,
            ssh_host: default_host_name(),
            publish_address: IpAddr::from([0, 0, 0, 0]),
            network: "worknet".into(),
            allow_icc: false,
            image: "gpu-workspace".into(),
            default_ttl_minutes: 60,
            max_ttl_minutes: 7 * 24 * 60,
            uid_start: 20000,
            pids_limit: 1024,
            ssh_ready_timeout_secs: 60,
            gpu_backend: GpuBackendKind::Auto,
            gpu_sim_file: None,
            default_profile: "3g.20gb".into(),
            mig_mode: MigMode::Static,
            gpu_device_access: GpuDeviceAccess::Nvidia,
            api_port: 8080,
            api_bind: IpAddr::from([0, 0, 0, 0]),
            api_token_file: PathBuf::from("/etc/sandman/api-tokens"),
            api_workers: 8,
            api_max_body_bytes: 64 * 1024,
            api_body_timeout_secs: 10,
            api_max_concurrent_creates: 4,
            cors_origins: vec!["*".into()],
            reap_interval_secs: 60,
            idle_timeout_minutes: 120,
            activity_bump_minutes: 60,
            cpu_active_percent: 10,
            protect_busy_gpu: true,
            workspace_quota: None,
            limits: Limits::default(),
            block_host: true,
            blocked_cidrs: vec!["169.254.0.0/16".into()],
            allowed_host_ports: Vec::new(),
            engine: EngineKind::Docker,
            workspace_nfs: None,
            swarm_routing_mesh: false,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub db: Option<PathBuf>,
    pub workspace_root: Option<PathBuf>,
    pub ssh_port_start: Option<u16>,
    pub ssh_port_end: Option<u16>,
    pub gpu_backend: Option<GpuBackendKind>,
    pub gpu_sim_file: Option<PathBuf>,
    pub api_port: Option<u16>,
    pub api_bind: Option<IpAddr>,
    pub api_token_file: Option<PathBuf>,
    pub idle_timeout_minutes: Option<u32>,
    pub activity_bump_minutes: Option<u32>,
    pub cpu_active_percent: Option<u32>,
    pub protect_busy_gpu: Option<bool>,
    pub engine: Option<EngineKind>,
}

impl Settings {
    /// Loads every layer. An explicitly named config file must exist; the default one may not.
    pub fn load(config: Option<&Path>, flags: &Overrides) -> anyhow::Result<Settings> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let (path, required) = match config {
            Some(p) => (p.to_path_buf(), true),
            None => match env.iter().find(|(k, _)| k == "SANDMAN_CONFIG") {
                Some((_, v)) => (PathBuf::from(v), true),
                None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
            },
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read config file {}", path.display()));
            }
        };
        let mut s = Self::from_layers(file.as_deref(), &env)
            .with_context(|| format!("in config file {} or SANDMAN_* environment", path.display()))?;
        s.apply(flags);
        s.check()?;
        Ok(s)
    }

    /// Defaults, then the file's text, then `SANDMAN_<KEY>` variables (typed like the key).
    fn from_layers(file: Option<&str>, env: &[(String, String)]) -> anyhow::Result<Settings> {
        let mut table = toml::Table::try_from(Settings::default())?;
        if let Some(text) = file {
            let from_file: toml::Table = toml::from_str(text)?;
            for (k, v) in from_file {
                if !table.contains_key(&k) && !OPTIONAL_KEYS.contains(&k.as_str()) {
                    bail!("unknown setting `{k}`");
                }
                table.insert(k, v);
            }
        }
        // Keys without a default (None) are absent from the table; they can still come from the environment.
        for key in OPTIONAL_KEYS {
            if let Some((_, raw)) = env.iter().find(|(k, _)| *k == format!("SANDMAN_{}", key.to_uppercase())) {
                table.entry(key.to_string()).or_insert_with(|| toml::Value::String(raw.clone()));
            }
        }
        for (key, value) in table.iter_mut() {
            let var = format!("SANDMAN_{}", key.to_uppercase());
            if let Some((_, raw)) = env.iter().find(|(k, _)| *k == var) {
                *value = match value {
                    toml::Value::Integer(_) => toml::Value::Integer(
                        raw.parse().with_context(|| format!("{var}={raw:?} is not a whole number"))?,
                    ),
                    toml::Value::Boolean(_) => toml::Value::Boolean(
                        raw.parse().with_context(|| format!("{var}={raw:?} is not true or false"))?,
                    ),
                    // Lists are comma-separated: SANDMAN_CORS_ORIGINS=https://a.example,https://b.example
                    toml::Value::Array(_) => toml::Value::Array(
                        raw.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| match INTEGER_LIST_KEYS.contains(&key.as_str()) {
                                true => s
                                    .parse()
                                    .map(toml::Value::Integer)
                                    .with_context(|| format!("{var}={raw:?}: {s:?} is not a whole number")),
                                false => Ok(toml::Value::String(s.to_string())),
                            })
                            .collect::<anyhow::Result<_>>()?,
                    ),
                    _ => toml::Value::String(raw.clone()),
                };
            }
        }
        // `[limits]`'s scalar keys: SANDMAN_LIMITS_MEMORY=16g, SANDMAN_LIMITS_CPUS=4, ...
        if let Some(toml::Value::Table(limits)) = table.get_mut("limits") {
            for key in limits::SCALAR_KEYS {
                let var = format!("SANDMAN_LIMITS_{}", key.to_uppercase());
                let Some((_, raw)) = env.iter().find(|(k, _)| *k == var) else { continue };
                let value = match *key {
                    "cpus" | "max_cpus" => toml::Value::Float(
                        raw.trim().parse().with_context(|| format!("{var}={raw:?} is not a number of CPUs"))?,
                    ),
                    "log_files" => toml::Value::Integer(
                        raw.trim().parse().with_context(|| format!("{var}={raw:?} is not a whole number"))?,
                    ),
                    _ => toml::Value::String(raw.clone()),
                };
                limits.insert(key.to_string(), value);
            }
        }
        Ok(table.try_into()?)
    }

    fn apply(&mut self, flags: &Overrides) {
        if let Some(v) = &flags.db {
            self.db = v.clone();
        }
        if let Some(v) = &flags.workspace_root {
            self.workspace_root = v.clone();
        }
        if let Some(v) = flags.ssh_port_start {
            self.ssh_port_start = v;
        }
        if let Some(v) = flags.ssh_port_end {
            self.ssh_port_end = v;
        }
        if let Some(v) = flags.gpu_backend {
            self.gpu_backend = v;
        }
        if let Some(v) = &flags.gpu_sim_file {
            self.gpu_sim_file = Some(v.clone());
        }
        if let Some(v) = flags.api_port {
            self.api_port = v;
        }
        if let Some(v) = flags.api_bind {
            self.api_bind = v;
        }
        if let Some(v) = &flags.api_token_file {
            self.api_token_file = v.clone();
        }
        if let Some(v) = flags.idle_timeout_minutes {
            self.idle_timeout_minutes = v;
        }
        if let Some(v) = flags.activity_bump_minutes {
            self.activity_bump_minutes = v;
        }
        if let Some(v) = flags.cpu_active_percent {
            self.cpu_active_percent = v;
        }
        if let Some(v) = flags.protect_busy_gpu {
            self.protect_busy_gpu = v;
        }
        if let Some(v) = flags.engine {
            self.engine = v;
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.ssh_port_start == 0 || self.ssh_port_start > self.ssh_port_end {
            bail!(
                "SSH port range {}-{} is empty or starts at 0: set ssh_port_start <= ssh_port_end",
                self.ssh_port_start,
                self.ssh_port_end
            );
        }
        if self.default_ttl_minutes == 0 || self.default_ttl_minutes > self.max_ttl_minutes {
            bail!(
                "default_ttl_minutes {} must be between 1 and max_ttl_minutes {}",
                self.default_ttl_minutes,
                self.max_ttl_minutes
            );
        }
        if let Some(nfs) = &self.workspace_nfs {
            check_nfs(nfs)?;
        }
        if self.uid_start < 1000 {
            bail!("uid_start {} would overlap system accounts: use 1000 or more", self.uid_start);
        }
        if self.gpu_backend == GpuBackendKind::Sim && self.gpu_sim_file.is_none() {
            bail!("gpu_backend sim needs a description of the simulated GPUs: set gpu_sim_file or --gpu-sim-file");
        }
        if self.api_workers == 0
            || self.reap_interval_secs == 0
            || self.api_body_timeout_secs == 0
            || self.api_max_concurrent_creates == 0
        {
            bail!(
                "api_workers, reap_interval_secs, api_body_timeout_secs and api_max_concurrent_creates must be at \
                 least 1 (got {}, {}, {}, {})",
                self.api_workers,
                self.reap_interval_secs,
                self.api_body_timeout_secs,
                self.api_max_concurrent_creates
            );
        }
        if self.api_max_body_bytes < 1024 {
            bail!("api_max_body_bytes {} is too small for a create request: use 1024 or more", self.api_max_body_bytes);
        }
        if self.idle_timeout_minutes > self.max_ttl_minutes || self.activity_bump_minutes > self.max_ttl_minutes {
            bail!(
                "idle_timeout_minutes {} and activity_bump_minutes {} must not exceed max_ttl_minutes {}",
                self.idle_timeout_minutes,
                self.activity_bump_minutes,
                self.max_ttl_minutes
            );
        }
        self.limits.check(Host::detect())?;
        for cidr in &self.blocked_cidrs {
            crate::firewall::parse_cidr(cidr).map_err(anyhow::Error::msg)?;
        }
        if let Some(p) = self.allowed_host_ports.iter().find(|p| !(1..=65535).contains(*p)) {
            bail!("allowed_host_ports entry {p} is not a port (1-65535)");
        }
        if !self.workspace_root.is_absolute() {
            bail!("workspace_root {} must be an absolute path", self.workspace_root.display());
        }
        Ok(())
    }

    /// Directory for lock files, beside the database.
    pub fn state_dir(&self) -> PathBuf {
        match self.db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// `workspace_nfs`: `server:/export`, an absolute export path without spaces or commas (they
/// would break the mount options).
fn check_nfs(nfs: &str) -> anyhow::Result<()> {
    let (server, export) = nfs.split_once(':').unwrap_or(("", ""));
    let clean = |t: &str| !t.is_empty() && !t.contains([',', ' ', '=', '\n', '\t']);
    if !clean(server) || !export.starts_with('/') || !clean(export) {
        bail!("workspace_nfs {nfs:?} is not server:/export (an NFS server and an absolute export path)");
    }
    Ok(())
}

fn default_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let file = "network = \"filenet\"\nssh_port_start = 11000\nimage = \"fromfile\"\n";
        let s = Settings::from_layers(Some(file), &env(&[("SANDMAN_SSH_PORT_START", "12000")])).unwrap();
        assert_eq!(s.network, "filenet");
        assert_eq!(s.image, "fromfile");
        assert_eq!(s.ssh_port_start, 12000, "environment beats file");
        let mut s = s;
        s.apply(&Overrides { ssh_port_start: Some(13000), ..Default::default() });
        assert_eq!(s.ssh_port_start, 13000, "flag beats environment");
        assert_eq!(s.ssh_port_end, 20000, "untouched keys keep defaults");
    }

    #[test]
    fn unknown_keys_and_bad_env_values_are_named() {
        let e = Settings::from_layers(Some("netwrk = \"x\""), &[]).unwrap_err();
        assert!(e.to_string().contains("netwrk"), "{e}");
        let e = Settings::from_layers(None, &env(&[("SANDMAN_PIDS_LIMIT", "lots")])).unwrap_err();
        assert!(format!("{e:#}").contains("SANDMAN_PIDS_LIMIT=\"lots\""), "{e:#}");
    }

    #[test]
    fn gpu_settings_parse_and_the_sim_needs_a_file() {
        let s = Settings::from_layers(
            Some("gpu_backend = \"sim\"\nmig_mode = \"dynamic\""),
            &env(&[("SANDMAN_GPU_SIM_FILE", "/x.toml")]),
        )
        .unwrap();
        assert_eq!((s.gpu_backend, s.mig_mode), (GpuBackendKind::Sim, MigMode::Dynamic));
        assert_eq!(s.gpu_sim_file.as_deref(), Some(Path::new("/x.toml")));
        assert!(s.check().is_ok());
        let e = Settings::from_layers(Some("gpu_backend = \"cuda\""), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("cuda"), "{e:#}");
        let s = Settings::from_layers(Some("gpu_backend = \"sim\""), &[]).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("gpu_sim_file"));
    }

    #[test]
    fn list_settings_come_from_comma_separated_variables() {
        let s = Settings::from_layers(
            Some("cors_origins = [\"https://file.example\"]"),
            &env(&[("SANDMAN_CORS_ORIGINS", "https://a.example, https://b.example,")]),
        )
        .unwrap();
        assert_eq!(s.cors_origins, ["https://a.example", "https://b.example"]);
        let s = Settings::from_layers(Some("cors_origins = [\"https://file.example\"]"), &[]).unwrap();
        assert_eq!(s.cors_origins, ["https://file.example"]);
    }

    #[test]
    fn create_slots_come_from_the_environment_and_zero_is_refused() {
        let s = Settings::from_layers(None, &env(&[("SANDMAN_API_MAX_CONCURRENT_CREATES", "2")])).unwrap();
        assert_eq!((Settings::default().api_max_concurrent_creates, s.api_max_concurrent_creates), (4, 2));
        let s = Settings::from_layers(Some("api_max_concurrent_creates = 0"), &[]).unwrap();
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("api_max_concurrent_creates must be at least 1") && e.contains("0)"), "{e}");
    }

    #[test]
    fn limits_come_from_the_file_and_the_environment() {
        let file = "[limits]\nmemory = \"8g\"\ncpus = 2\n[limits.profile.\"7g.80gb\"]\nmemory = \"32g\"\n";
        let s = Settings::from_layers(
            Some(file),
            &env(&[
                ("SANDMAN_LIMITS_CPUS", "1.5"),
                ("SANDMAN_LIMITS_MAX_SHM_SIZE", "4g"),
                ("SANDMAN_LIMITS_LOG_FILES", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(s.limits.memory, Some(ByteSize(8 << 30)));
        assert_eq!(s.limits.cpus, Some(1.5), "environment beats file");
        assert_eq!(s.limits.max_shm_size, Some(ByteSize(4 << 30)));
        assert_eq!((s.limits.log_files, s.limits.log_size), (Some(5), None), "unset keys keep defaults");
        assert_eq!(s.limits.profile["7g.80gb"].memory, Some(ByteSize(32 << 30)));
        let e = Settings::from_layers(None, &env(&[("SANDMAN_LIMITS_MEMORY", "lots")])).unwrap_err();
        assert!(format!("{e:#}").contains("\"lots\""), "{e:#}");
        let e = Settings::from_layers(None, &env(&[("SANDMAN_LIMITS_CPUS", "two")])).unwrap_err();
        assert!(format!("{e:#}").contains("SANDMAN_LIMITS_CPUS=\"two\""), "{e:#}");
        let s = Settings::from_layers(Some("workspace_quota = \"50g\""), &[]).unwrap();
        assert_eq!(s.workspace_quota, Some(ByteSize(50 << 30)));
    }

    #[test]
    fn the_egress_settings_come_from_the_file_and_the_environment_and_are_checked() {
        let s = Settings::default();
        assert!(s.block_host && s.blocked_cidrs == ["169.254.0.0/16"] && s.allowed_host_ports.is_empty());
        let s = Settings::from_layers(
            Some("blocked_cidrs = [\"10.0.0.0/8\"]\nallowed_host_ports = [53]"),
            &env(&[("SANDMAN_BLOCK_HOST", "false"), ("SANDMAN_ALLOWED_HOST_PORTS", "8443, 9000")]),
        )
        .unwrap();
        assert!(!s.block_host);
        assert_eq!(
            (s.blocked_cidrs.as_slice(), s.allowed_host_ports.as_slice()),
            (["10.0.0.0/8".to_string()].as_slice(), [8443, 9000].as_slice())
        );
        assert!(s.check().is_ok());
        let s = Settings::from_layers(None, &env(&[("SANDMAN_BLOCKED_CIDRS", "")])).unwrap();
        assert!(s.blocked_cidrs.is_empty(), "an empty variable is an empty list");
        let e = Settings::from_layers(None, &env(&[("SANDMAN_ALLOWED_HOST_PORTS", "http")])).unwrap_err();
        assert!(format!("{e:#}").contains("\"http\" is not a whole number"), "{e:#}");
        let s = Settings::from_layers(Some("allowed_host_ports = [0]"), &[]).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("allowed_host_ports entry 0 is not a port"));
        let s = Settings::from_layers(Some("allowed_host_ports = [70000]"), &[]).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("entry 70000"));
        let s = Settings::from_layers(Some("blocked_cidrs = [\"169.254.169.254/16\"]"), &[]).unwrap();
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("\"169.254.169.254/16\"") && e.contains("169.254.0.0/16"), "{e}");
    }

    #[test]
    fn idle_settings_come_from_every_layer() {
        let d = Settings::default();
        assert_eq!(
            (d.idle_timeout_minutes, d.activity_bump_minutes, d.cpu_active_percent, d.protect_busy_gpu),
            (120, 60, 10, true)
        );
        let s = Settings::from_layers(
            Some("idle_timeout_minutes = 30\nprotect_busy_gpu = false\n"),
            &env(&[("SANDMAN_IDLE_TIMEOUT_MINUTES", "45"), ("SANDMAN_CPU_ACTIVE_PERCENT", "25")]),
        )
        .unwrap();
        assert_eq!((s.idle_timeout_minutes, s.cpu_active_percent, s.protect_busy_gpu), (45, 25, false));
        let mut s = s;
        s.apply(&Overrides { idle_timeout_minutes: Some(0), activity_bump_minutes: Some(5), ..Default::default() });
        assert_eq!((s.idle_timeout_minutes, s.activity_bump_minutes), (0, 5));
        assert!(s.check().is_ok());
        s.idle_timeout_minutes = s.max_ttl_minutes + 1;
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("idle_timeout_minutes 10081") && e.contains("max_ttl_minutes 10080"), "{e}");
        let e = Settings::from_layers(None, &env(&[("SANDMAN_PROTECT_BUSY_GPU", "maybe")])).unwrap_err();
        assert!(format!("{e:#}").contains("SANDMAN_PROTECT_BUSY_GPU=\"maybe\""), "{e:#}");
    }

    #[test]
    fn the_engine_and_nfs_homes_come_from_every_layer_and_are_checked() {
        assert_eq!(Settings::default().engine, EngineKind::Docker);
        let s = Settings::from_layers(None, &env(&[("SANDMAN_ENGINE", "swarm")])).unwrap();
        assert_eq!(s.engine, EngineKind::Swarm);
        let mut s = Settings::from_layers(Some("engine = \"swarm\""), &[]).unwrap();
        s.apply(&Overrides { engine: Some(EngineKind::Docker), ..Default::default() });
        assert_eq!(s.engine, EngineKind::Docker, "flag beats file");
        let e = Settings::from_layers(Some("engine = \"k8s\""), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("k8s"), "{e:#}");
        let s = Settings::from_layers(None, &env(&[("SANDMAN_WORKSPACE_NFS", "nfs1:/export/homes")])).unwrap();
        assert_eq!(s.workspace_nfs.as_deref(), Some("nfs1:/export/homes"));
        assert!(s.check().is_ok());
        for bad in ["nfs1", "nfs1:export", ":/export", "nfs1:/a,b", "nfs1:/a b"] {
            let s = Settings::from_layers(Some(&format!("workspace_nfs = {bad:?}")), &[]).unwrap();
            let e = s.check().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn bad_port_range_is_refused() {
        let mut s = Settings::default();
        s.apply(&Overrides { ssh_port_start: Some(20001), ..Default::default() });
        let e = s.check().unwrap_err();
        assert!(e.to_string().contains("20001-20000"), "{e}");
    }
}
