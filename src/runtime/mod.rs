//! The container runtime: everything sandman asks of Docker. Only `sessions` and `image` call it.

mod docker;

pub use docker::Docker;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

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
    pub workspace: PathBuf,
    pub pids_limit: i64,
    pub command: Vec<String>,
    /// How the container gets its GPU, if any.
    pub gpu: Option<GpuAccess>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GpuAccess {
    /// `--gpus device=UUID`: a device request to the NVIDIA runtime.
    NvidiaDevice(String),
    /// A CDI device name such as `nvidia.com/gpu=MIG-…`.
    Cdi(String),
    /// No runtime support (simulated GPUs): only `NVIDIA_VISIBLE_DEVICES` is set.
    EnvOnly(String),
}

/// A file placed into a created container before it starts.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Path inside the container, without the leading '/'.
    pub path: String,
    pub contents: Vec<u8>,
    pub uid: u32,
    pub mode: u32,
}

/// A sandman container as listed by Docker.
#[derive(Debug, Clone)]
pub struct ManagedContainer {
    pub id: String,
    pub name: String,
    pub session_id: Option<String>,
}
