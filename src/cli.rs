//! Every command-line type, in one place; completions and man pages are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{EngineKind, GpuBackendKind};

const ABOUT: &str = "GPU workspace gateway: private, hardened SSH containers with a GPU slice, one command away";

const EXAMPLES: &str = "\
Examples:
  sandman image build --offline                 # build the workspace image without a registry
  sandman session create --user alice           # start a session, print the ssh command and key
  sandman session list                          # who has a session, on which port, until when
  sandman session rm 3f2a9c1e-...               # end one session (asks first)
  sandman reap                                  # remove expired sessions; run from cron every minute
  sandman serve --port 8080                     # the HTTP API, with its own reaper every minute
  sandman doctor                                # check Docker, the image, directories, ports

Settings: built-in defaults < /etc/sandman/config.toml (or --config) < SANDMAN_<KEY> environment
variables (SANDMAN_DB, SANDMAN_NETWORK, SANDMAN_SSH_HOST, ...) < flags. SANDMAN_LOG sets log filters.

Exit codes: 0 ok, 1 internal error, 2 invalid input, 3 conflict or resources exhausted,
4 not found, 5 a needed service (Docker, the image) is unavailable.";

#[derive(Debug, Parser)]
#[command(name = "sandman", version, about = ABOUT, after_help = EXAMPLES, propagate_version = true, args_override_self = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]
    #[arg(long, global = true, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Directory holding each user's persistent home [default: /srv/workspaces]
    #[arg(long, global = true, value_name = "DIR")]
    pub workspace_root: Option<PathBuf>,
    /// First host port for session SSH [default: 10000]
    #[arg(long, global = true, value_name = "PORT")]
    pub ssh_port_start: Option<u16>,
    /// Last host port for session SSH [default: 20000]
    #[arg(long, global = true, value_name = "PORT")]
    pub ssh_port_end: Option<u16>,
    /// GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none
    #[arg(long, global = true, value_name = "BACKEND")]
    pub gpu_backend: Option<GpuBackendArg>,
    /// TOML file describing simulated GPUs (with --gpu-backend sim)
    #[arg(long, global = true, value_name = "FILE")]
    pub gpu_sim_file: Option<PathBuf>,
    /// Minutes without activity after which a session is reaped; 0: never [default: 120]
    #[arg(long, global = true, value_name = "MINUTES")]
    pub idle_timeout_minutes: Option<u32>,
    /// Activity moves a session's expiry to at least this many minutes from now; 0: off [default: 60]
    #[arg(long, global = true, value_name = "MINUTES")]
    pub activity_bump_minutes: Option<u32>,
    /// CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]
    #[arg(long, global = true, value_name = "PERCENT")]
    pub cpu_active_percent: Option<u32>,
    /// Whether GPU compute processes count as activity, so a busy session is never reaped for
    /// idleness [default: true]
    #[arg(long, global = true, value_name = "BOOL")]
    pub protect_busy_gpu: Option<bool>,
    /// Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]
    #[arg(long, global = true, value_name = "ENGINE")]
    pub engine: Option<EngineArg>,
    /// More log output (-v info, -vv debug); SANDMAN_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, extend and remove sessions
    #[command(subcommand)]
    Session(SessionCommand),
    /// Manage users' own SSH public keys, which every session of theirs accepts
    #[command(subcommand)]
    User(UserCommand),
    /// List GPUs, MIG profiles and free MIG devices
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// Remove expired sessions and whatever a crash left behind
    #[command(after_help = "Examples:
  sandman reap                    # one pass; safe to run from cron every minute
  sandman reap --dry-run --json   # what a pass would remove, for scripts

crontab line:
  * * * * * root /usr/local/bin/sandman reap --quiet")]
    Reap {
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API (sessions, GPUs, metrics) and reap expired sessions every minute
    #[command(after_help = "Examples:
  sandman serve                                        # port 8080 on every interface
  sandman serve --port 9000 --bind 127.0.0.1
  sandman serve --token-file /etc/sandman/api-tokens
  curl -H \"Authorization: Bearer $TOKEN\" http://localhost:8080/sessions | jq '.[] | select(.user_id==\"alice\")'

Every endpoint but /healthz and /openapi.json needs `Authorization: Bearer <token>`. Tokens are read
from the token file, one per line ('#' starts a comment). If the file does not exist it is created
(mode 0600) with one random token, which is printed once on stderr. SIGTERM or Ctrl-C stops the
server after the requests in flight are answered.")]
    Serve(ServeArgs),
    /// Build the workspace image
    #[command(subcommand)]
    Image(ImageCommand),
    /// Check that this host can run sessions, with the fix for each problem
    #[command(after_help = "Examples:
  sandman doctor
  sandman doctor --json | jq '.[] | select(.ok == false)'")]
    Doctor {
        /// Print the checks as JSON
        #[arg(long)]
        json: bool,
        /// Make the database file (--db) this host's database: one copied, moved or restored
        /// from a backup, or a new one beside another instance's containers. Only when the
        /// original is no longer used
        #[arg(long)]
        adopt_database: bool,
    },
    /// Show, apply or remove the firewall rules that keep sessions away from the host
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Swarm nodes: record this node's GPUs for the manager's placement
    #[command(subcommand)]
    Node(NodeCommand),
    /// Print a shell completion script
    #[command(after_help = "Examples:
  sandman completions bash > /etc/bash_completion.d/sandman
  sandman completions zsh > \"${fpath[1]}/_sandman\"")]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Write the man pages (sandman.1 and one per subcommand)
    #[command(after_help = "Examples:
  sandman man --dir /usr/local/share/man/man1")]
    Man {
        /// Directory to write into
        #[arg(long, value_name = "DIR", default_value = "man")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session for a user and print how to log in
    #[command(after_help = "Examples:
  sandman session create --user alice
  sandman session create --user alice --ttl 240 --key-file alice.key
  sandman session create --user bob --public-key ~bob/.ssh/id_ed25519.pub --json
  sandman session create --user carol --profile 1g           # the smallest slice on any model
  sandman session create --user dave --gpu MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f
  sandman session create --user erin --memory 16g --cpus 4 --shm-size 8g

The private key is shown once and never stored; it works for this session only. With
--public-key no key pair is made, and the key joins the user's keys (`sandman user key`), which
later sessions accept too. The output ends with an ssh config Host block (`ssh sandman-<user>`).")]
    Create(Box<CreateArgs>),
    /// List sessions
    #[command(after_help = "Examples:
  sandman session list
  sandman session list --json | jq '.[] | select(.user_id==\"alice\")'")]
    List {
        /// Print the API's session objects as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one session
    #[command(after_help = "Examples:
  sandman session show 3f2a9c1e-0d7b-4f7e-9a51-2c8d5b6e1f00 --json")]
    Show {
        /// Session id
        id: String,
        /// Print the API's session object as JSON
        #[arg(long)]
        json: bool,
    },
    /// Set a session to expire TTL minutes from now
    #[command(after_help = "Examples:
  sandman session extend 3f2a9c1e-0d7b-4f7e-9a51-2c8d5b6e1f00 --ttl 120")]
    Extend {
        /// Session id
        id: String,
        /// Minutes from now
        #[arg(long, value_name = "MINUTES", allow_hyphen_values = true)]
        ttl: String,
        #[arg(long)]
        json: bool,
    },
    /// Print an OpenSSH client Host block for a session, and its known_hosts line
    #[command(after_help = "Examples:
  sandman session ssh-config --user alice --identity-file ~/.ssh/alice.key >> ~/.ssh/config
  sandman session ssh-config 3f2a9c1e-0d7b-4f7e-9a51-2c8d5b6e1f00 --json | jq -r .ssh_config_known_hosts >> ~/.ssh/known_hosts
  ssh sandman-alice

The block names the host sandman-<user> and checks its host key under that alias
(HostKeyAlias), so the known_hosts line stays valid when the session's port changes. Without
--identity-file the block has no IdentityFile line and ssh offers its default keys.")]
    SshConfig {
        /// Session id
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        /// The session of this user
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The private key to log in with, for the IdentityFile line
        #[arg(long, value_name = "PATH")]
        identity_file: Option<PathBuf>,
        /// Print {ssh_config, ssh_config_known_hosts} as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove sessions; their workspaces are kept
    #[command(after_help = "Examples:
  sandman session rm 3f2a9c1e-0d7b-4f7e-9a51-2c8d5b6e1f00
  sandman session rm --all --yes")]
    Rm {
        /// Session ids
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Remove every session
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation
        #[arg(short, long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Login name: lowercase letters, digits, '_' and '-', at most 32, not a system account
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Minutes until the session is reaped [default: 60]
    #[arg(long, value_name = "MINUTES", allow_hyphen_values = true)]
    pub ttl: Option<String>,
    /// MIG profile, exact (3g.20gb) or a size on whatever model is present (3g) [default: 3g.20gb]
    #[arg(long, value_name = "PROFILE", conflicts_with = "gpu")]
    pub profile: Option<String>,
    /// One exact device: a MIG instance UUID (MIG-…) or a whole GPU without MIG (GPU-…)
    #[arg(long, value_name = "UUID")]
    pub gpu: Option<String>,
    /// Workspace image [default: gpu-workspace]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Use this OpenSSH public key instead of generating a key pair; it joins the user's keys
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Write the generated private key to FILE (mode 0600) instead of printing it
    #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
    pub key_file: Option<PathBuf>,
    /// Memory limit, swap included (512m, 16g, 1.5g) [default: [limits] memory, else a quarter of the host's RAM]
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPUs (fractions allowed: 1.5) [default: [limits] cpus, else half the host's CPUs]
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Size of /dev/shm, counted in the memory limit [default: [limits] shm_size, else half the memory, at most 8g]
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Size limit of the container's writable layer (needs a storage driver that enforces it)
    /// [default: [limits] writable_layer, else none]
    #[arg(long, value_name = "SIZE")]
    pub writable_layer: Option<String>,
    /// Give a new user the existing directory <workspace_root>/<user> even though another uid owns it
    #[arg(long)]
    pub adopt_workspace: bool,
    /// Reap the session after this many minutes without activity (at most the host's
    /// idle_timeout_minutes)
    #[arg(long, value_name = "MINUTES", allow_hyphen_values = true)]
    pub idle_timeout: Option<i64>,
    /// Print the API's create answer as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// A user's SSH public keys
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Let a key log in as the user, in the running session (at once) and every later one
    #[command(after_help = "Examples:
  sandman user key add alice ~alice/.ssh/id_ed25519.pub
  ssh-keygen -y -f laptop.key | sandman user key add alice -

Sessions read only these keys and the key a create generated: ~/.ssh/authorized_keys in the
home is ignored, so ssh-copy-id has no effect.")]
    Add {
        /// Login name
        user: String,
        /// File holding one OpenSSH public key line; - for stdin
        file: PathBuf,
    },
    /// Revoke a key: new logins with it fail at once, in the running session too
    #[command(after_help = "Examples:
  sandman user key rm alice SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s")]
    Rm {
        /// Login name
        user: String,
        /// The key's SHA256:… fingerprint, as `user key ls` (or `ssh-keygen -lf`) prints it
        fingerprint: String,
    },
    /// List a user's keys
    #[command(after_help = "Examples:
  sandman user key ls alice
  sandman user key ls alice --json | jq -r '.[].fingerprint'")]
    Ls {
        /// Login name
        user: String,
        /// Print the API's key objects as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP port to listen on [default: 8080]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Address to listen on [default: 0.0.0.0]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<std::net::IpAddr>,
    /// File of accepted bearer tokens [default: /etc/sandman/api-tokens]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the workspace image from images/Dockerfile.gpu-workspace
    #[command(after_help = "Examples:
  sandman image build                                   # FROM a CUDA base (needs a registry)
  sandman image build --base-image nvidia/cuda:12.6.3-base-ubuntu24.04
  sandman image build --offline                         # debootstrap a Debian base from this host's apt mirror
  sandman image build --offline --packages \"r-base-core octave\" --ca-cert /etc/ssl/site-ca.pem
  sandman image build --offline --flavor minimal --tag gpu-workspace-minimal
  sandman image build --offline --print-digest          # what the image's sandman.image.digest label should be

The full flavor installs python3 with pip and venv, git, curl, wget, rsync, tmux, screen, vim,
nano, htop, build-essential, locales, jq and more (images/toolset.txt). Setuid and setgid bits
are removed from every file in the image.")]
    Build {
        /// Make the base with debootstrap from this host's apt sources, then build on it
        #[arg(long)]
        offline: bool,
        /// Base image (ignored with --offline)
        #[arg(long, value_name = "IMAGE")]
        base_image: Option<String>,
        /// Name of the image to build
        #[arg(long, value_name = "IMAGE", default_value = "gpu-workspace")]
        tag: String,
        /// Rebuild the offline base even if it exists
        #[arg(long)]
        rebuild_base: bool,
        /// full: sshd and the research toolset; minimal: sshd only
        #[arg(long, value_enum, default_value_t = ImageFlavor::Full)]
        flavor: ImageFlavor,
        /// More Debian packages, separated by spaces or commas (repeatable)
        #[arg(long, value_name = "NAMES")]
        packages: Vec<String>,
        /// A site CA certificate (PEM) to add to the image's trust store (repeatable)
        #[arg(long, value_name = "FILE")]
        ca_cert: Vec<PathBuf>,
        /// Print the digest of these build inputs (the image's sandman.image.digest label) and build nothing
        #[arg(long)]
        print_digest: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImageFlavor {
    /// sshd and the research toolset
    Full,
    /// sshd only
    Minimal,
}

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Every GPU with its MIG devices and which session holds them
    #[command(after_help = "Examples:
  sandman gpu ls
  sandman gpu ls --json | jq '.gpus[].mig_instances[] | select(.allocated == false)'
  sandman --gpu-backend sim --gpu-sim-file lab.toml gpu ls")]
    Ls {
        /// Print the API's `GET /gpus` answer
        #[arg(long)]
        json: bool,
    },
    /// MIG profiles of the GPU models present
    #[command(after_help = "Examples:
  sandman gpu profiles
  sandman gpu profiles --json | jq -r '.profiles[].name'")]
    Profiles {
        /// Print the API's `GET /gpus/profiles` answer
        #[arg(long)]
        json: bool,
    },
    /// MIG devices no session holds
    #[command(after_help = "Examples:
  sandman gpu available
  sandman gpu available --json | jq '.count'")]
    Available {
        /// Print the API's `GET /gpus/available` answer
        #[arg(long)]
        json: bool,
    },
    /// Simulated GPUs only (a testing aid): set how many compute processes a device runs, as
    /// NVML would report them; idle detection counts them like real ones
    #[command(after_help = "Examples:
  sandman --gpu-backend sim --gpu-sim-file lab.toml gpu sim-busy --device MIG-... --processes 1
  sandman --gpu-backend sim --gpu-sim-file lab.toml gpu sim-busy --device MIG-... --processes 0

The count is kept in the session database beside the simulated GPUs, so every sandman process
using that database (reap, serve) sees it.")]
    SimBusy {
        /// A MIG device or GPU UUID of the simulated backend
        #[arg(long, value_name = "UUID")]
        device: String,
        /// Compute processes running on it (0: idle)
        #[arg(long, value_name = "N")]
        processes: u32,
    },
}

/// `--gpu-backend`: the command line's spelling of `config::GpuBackendKind`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GpuBackendArg {
    Auto,
    Nvml,
    Sim,
    None,
}

impl From<GpuBackendArg> for GpuBackendKind {
    fn from(arg: GpuBackendArg) -> Self {
        match arg {
            GpuBackendArg::Auto => GpuBackendKind::Auto,
            GpuBackendArg::Nvml => GpuBackendKind::Nvml,
            GpuBackendArg::Sim => GpuBackendKind::Sim,
            GpuBackendArg::None => GpuBackendKind::None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// sandman's rules for the session network, as they are and as the settings want them
    #[command(after_help = "Examples:
  sandman firewall show
  sandman firewall show --json | jq .up_to_date

Exits 5 when the rules differ from what block_host, blocked_cidrs and allowed_host_ports ask.")]
    Show {
        /// Print the state as JSON
        #[arg(long)]
        json: bool,
    },
    /// Install or update the rules now (session create does it too); with the policy off, remove them
    #[command(after_help = "Examples:
  sandman firewall apply      # after editing block_host, blocked_cidrs or allowed_host_ports
  sandman firewall apply --json")]
    Apply {
        /// Print the resulting state as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove every rule sandman made for the session network (also once the network is gone)
    #[command(after_help = "Examples:
  sandman firewall remove     # before uninstalling; the next session create installs them again")]
    Remove {
        /// Print what was done as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Record this swarm node's GPUs and MIG devices (from the GPU backend) as node labels, and
    /// create its session network's local part; run on every node, again after GPU changes
    #[command(after_help = "Examples:
  sandman --engine swarm node register
  sandman --engine swarm --gpu-backend sim --gpu-sim-file gpus.toml node register --json

The node's Docker engine must be part of the swarm; a worker's labels are written through a
manager, so on a worker set DOCKER_HOST to a manager for this command (the GPUs are still read
here).")]
    Register {
        /// Print what was recorded as JSON
        #[arg(long)]
        json: bool,
    },
}

/// `--engine`: the command line's spelling of `config::EngineKind`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    Docker,
    Swarm,
}

impl From<EngineArg> for EngineKind {
    fn from(arg: EngineArg) -> Self {
        match arg {
            EngineArg::Docker => EngineKind::Docker,
            EngineArg::Swarm => EngineKind::Swarm,
        }
    }
}
