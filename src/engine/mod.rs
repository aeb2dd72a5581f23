//! The container engine: everything sandman asks of one. The core (`sessions`), `image` and
//! `doctor` reach it only through the `Engine` trait; `docker` implements it with bollard on one
//! host, `swarm` with bollard's service API on a Docker Swarm, `fake` in memory for tests.

mod docker;
pub mod fake;
mod swarm;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncRead;

use crate::config::{EngineKind, Settings};
use crate::error::Result;
use crate::gpu::GpuAccess;
use crate::limits::SessionLimits;
use crate::progress::Progress;

/// Labels that tie a container to sandman, to one database (`instance`) and to one session.
pub const LABEL_INSTANCE: &str = "sandman.instance";
pub const LABEL_SESSION: &str = "sandman.session";
pub const LABEL_USER: &str = "sandman.user";

/// Everything needed to create one session container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub user: String,
    pub uid: u32,
    pub labels: HashMap<String, String>,
    pub network: String,
    pub publish_address: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// The user's home on the host, mounted at `/home/<user>` and at `/workspace`.
    pub workspace: PathBuf,
    /// The host directory holding the user's own keys, mounted read-only at `ssh::USER_KEYS_DIR`.
    pub user_keys_dir: PathBuf,
    /// Memory (swap included), CPUs, pids, /dev/shm and log size.
    pub limits: SessionLimits,
    pub command: Vec<String>,
    /// How the container gets its GPU, if any.
    pub gpu: Option<GpuAccess>,
    /// The session's files, for engines that take them at create (`Engine::files_at_create`);
    /// empty for the others, which get them through `write_files` once the container runs.
    pub files: Vec<FileSpec>,
    /// Swarm: the node holding the user's home, which the session must run on (`None`: not
    /// recorded yet, or homes are on NFS).
    pub home_node: Option<String>,
    /// Swarm: `server:/export` of the homes (`Settings::workspace_nfs`).
    pub workspace_nfs: Option<String>,
    /// Swarm: publish the port through the routing mesh (`Settings::swarm_routing_mesh`).
    pub routing_mesh: bool,
}

/// A file placed into a created container before it starts.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Path inside the container, without the leading '/'.
    pub path: String,
    pub contents: Vec<u8>,
    pub uid: u32,
    pub mode: u32,
    /// Secret material (the host key): engines that keep files apart store it as a secret.
    pub secret: bool,
}

/// Where a session runs, on engines with more than one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node_id: String,
    /// The node's address, which users connect to.
    pub address: String,
}

/// One node of a cluster, for `doctor` and `node register`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub address: String,
    /// `ready`, `down`, ...
    pub state: String,
    pub manager: bool,
    /// The GPU and MIG device UUIDs `sandman node register` recorded.
    pub gpus: Vec<String>,
}

/// The cluster the engine belongs to, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterInfo {
    /// `active`, `inactive`, `pending`, `error`, `locked`.
    pub state: String,
    pub node_id: String,
    /// This node can manage the cluster (create services).
    pub manager: bool,
    /// Empty unless `manager`.
    pub nodes: Vec<NodeInfo>,
}

/// A sandman container as listed by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedContainer {
    pub id: String,
    pub name: String,
    pub session_id: Option<String>,
    /// The engine's word for its state; only `running` is healthy (`RUNNING`).
    pub state: String,
}

/// What the host sees of a running container's activity, read without entering it; each part
/// `None` where it cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerActivity {
    /// Established TCP connections on the container's sshd port, from its network namespace.
    pub ssh_connections: Option<u32>,
    /// Cumulative CPU time of the container's cgroup, in microseconds.
    pub cpu_usage_usec: Option<u64>,
}

/// What a command run in a container answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// Standard output and error together.
    pub output: String,
}

/// The state of a container whose processes run (not paused, not exited).
pub const RUNNING: &str = "running";

/// A file system tree as a tar stream, for `import_image`.
pub type TarStream = Box<dyn AsyncRead + Send + Unpin>;

#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// The engine's version, for `doctor`.
    async fn version(&self) -> Result<String>;

    /// Container runtimes the engine knows (`runc`, and `nvidia` where the NVIDIA toolkit is set up).
    async fn runtimes(&self) -> Result<Vec<String>>;

    /// The image's content id (`sha256:…`), or `None` if it is not on this host.
    async fn image_id(&self, image: &str) -> Result<Option<String>>;

    async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(self.image_id(image).await?.is_some())
    }

    /// Builds `tag` from a build context (a tar holding `Dockerfile`), reporting its steps.
    async fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: Progress<'_>,
    ) -> Result<()>;

    /// Imports a root file system (a tar stream) as the image `tag`.
    async fn import_image(&self, rootfs: TarStream, tag: &str) -> Result<()>;

    async fn network_exists(&self, name: &str) -> Result<bool>;

    /// Whether containers on network `name` may reach one another (inter-container traffic on);
    /// `None` when the network does not exist.
    async fn network_icc(&self, name: &str) -> Result<Option<bool>>;

    /// The host's bridge device of network `name` (`br-<first 12 of its id>`, or the name its
    /// `com.docker.network.bridge.name` option sets), where the firewall rules of its sessions
    /// are scoped; `None` when the network does not exist. A network of another driver than
    /// `bridge` is `Unavailable`.
    async fn network_bridge(&self, name: &str) -> Result<Option<String>>;

    /// Creates the session bridge network unless it exists. Containers on it cannot reach
    /// one another; they reach the outside as usual. Callers serialise this with a file lock:
    /// old engines allow duplicate network names.
    async fn ensure_network(&self, name: &str) -> Result<()>;

    /// Creates (does not start) a hardened container for one session; returns its id. A missing
    /// network is `NotFound`, so that callers create it only when needed.
    async fn create(&self, spec: &ContainerSpec) -> Result<String>;

    /// Starts a created container. A missing network is `NotFound` (engines check it here or at
    /// create, depending on their version).
    async fn start(&self, id: &str) -> Result<()>;

    /// Reads one file out of a (created or running) container.
    async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>>;

    /// Places files into a container, with owner and mode; parent directories are root-owned.
    async fn write_files(&self, id: &str, files: &[FileSpec]) -> Result<()>;

    /// The container's address on `network`, if it has one.
    async fn ip_address(&self, id: &str, network: &str) -> Result<Option<String>>;

    /// The last lines of a container's log, for error messages (empty when unreadable).
    async fn log_tail(&self, id: &str, lines: usize) -> String;

    /// Removes a container by id or name, running or not. Success means it no longer exists
    /// (gone already is fine).
    async fn remove(&self, id: &str) -> Result<()>;

    /// Every container labelled for this sandman instance, running or not.
    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>>;

    /// The storage driver and, where the engine says, the file system under it (`xfs`,
    /// `extfs`): together they decide whether a container's writable layer can be limited.
    async fn storage(&self) -> Result<(String, Option<String>)> {
        Ok((String::new(), None))
    }

    /// How many processes the kernel's OOM killer has killed in the container's memory cgroup
    /// since it started; `None` where that cannot be read.
    async fn oom_kills(&self, _id: &str) -> Option<u64> {
        None
    }

    /// The container's SSH connections on `ssh_port` (its sshd's port inside) and CPU time,
    /// read from the host (`/proc/<pid>/net/tcp*` of its init process, its cgroup).
    async fn activity(&self, _id: &str, _ssh_port: u16) -> ContainerActivity {
        ContainerActivity::default()
    }

    /// Runs `command` in a running container as `uid` (group `uid`), never as root, waiting at
    /// most `timeout`. An engine that cannot answers `Unavailable` (its users get no warnings).
    async fn exec_as(
        &self,
        id: &str,
        _uid: u32,
        _command: &[String],
        _timeout: std::time::Duration,
    ) -> Result<ExecOutput> {
        Err(crate::error::Error::Unavailable(format!("this engine cannot run commands in container {id}")))
    }

    /// The sandman instances (the `LABEL_INSTANCE` values) with containers on `network`.
    async fn instances_on_network(&self, network: &str) -> Result<Vec<String>>;

    /// Whether the session's files go in at create (`ContainerSpec::files`, for engines that
    /// cannot copy into a container on another node) rather than through `write_files`.
    fn files_at_create(&self) -> bool {
        false
    }

    /// Reads one file out of an image, where files go in at create.
    async fn read_image_file(&self, image: &str, _path: &str) -> Result<Vec<u8>> {
        Err(crate::error::Error::Internal(anyhow::anyhow!("this engine reads {image}'s files from its containers")))
    }

    /// The node a session runs on, on engines with nodes.
    async fn placement(&self, _id: &str) -> Result<Option<Placement>> {
        Ok(None)
    }

    /// The cluster this engine belongs to; `None` on a single host.
    async fn cluster(&self) -> Result<Option<ClusterInfo>> {
        Ok(None)
    }

    /// Records this node's GPU and MIG device UUIDs for placement and prepares its part of the
    /// session network; returns the node.
    async fn register_node(&self, _gpus: &[String], _network: &str) -> Result<NodeInfo> {
        Err(crate::error::Error::invalid(
            "engine",
            "nodes are registered in a swarm only: set engine = \"swarm\" (or --engine swarm)",
        ))
    }
}

/// The engine sandman runs sessions on: the Docker engine (honouring `DOCKER_HOST`), alone or as
/// a swarm manager.
pub async fn connect(settings: &Settings) -> Result<Arc<dyn Engine>> {
    Ok(match settings.engine {
        EngineKind::Docker => Arc::new(docker::Docker::connect().await?),
        EngineKind::Swarm => Arc::new(swarm::Swarm::connect().await?),
    })
}
