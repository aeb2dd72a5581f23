//! The JSON shapes of docs/api.md, shared by `--json` output and the HTTP server.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::sessions::Created;
use crate::store::SessionRow;

pub fn timestamp(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The API's session object. `metadata.ssh_password` is deliberately absent: logins are key-only.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub container_id: Option<String>,
    pub container_ip: Option<String>,
    pub ssh_port: u16,
    pub gpu_uuid: Option<String>,
    pub mig_profile: Option<String>,
    pub ttl_minutes: u32,
    pub created_at: String,
    pub expires_at: String,
    pub state: &'static str,
    pub host_key_fingerprint: String,
    pub metadata: Metadata,
}

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub image: String,
    pub workspace: String,
    pub ssh_port: String,
}

impl From<&SessionRow> for SessionView {
    fn from(r: &SessionRow) -> Self {
        SessionView {
            id: r.id.clone(),
            user_id: r.user.clone(),
            container_id: r.container_id.clone(),
            container_ip: r.container_ip.clone(),
            ssh_port: r.ssh_port,
            gpu_uuid: r.gpu_uuid.clone(),
            mig_profile: r.mig_profile.clone(),
            ttl_minutes: r.ttl_minutes,
            created_at: timestamp(r.created_at),
            expires_at: timestamp(r.expires_at),
            state: r.state.as_str(),
            host_key_fingerprint: r.host_key_fingerprint.clone(),
            metadata: Metadata {
                image: r.image.clone(),
                workspace: r.workspace.clone(),
                ssh_port: r.ssh_port.to_string(),
            },
        }
    }
}

/// The API's create answer, plus what a user needs to log in.
#[derive(Debug, Serialize)]
pub struct CreatedView {
    pub session_id: String,
    pub container_id: Option<String>,
    pub ssh_user: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    /// Shown once; `null` when the client supplied its own public key.
    pub ssh_private_key: Option<String>,
    pub gpu_uuid: Option<String>,
    pub mig_profile: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub host_key_fingerprint: String,
    pub known_hosts: String,
    pub ssh_command: String,
}

impl CreatedView {
    /// `key_path` is where the user keeps the private key, for the ready-to-paste command.
    pub fn new(c: &Created, key_path: &str) -> Self {
        let s = &c.session;
        CreatedView {
            session_id: s.id.clone(),
            container_id: s.container_id.clone(),
            ssh_user: c.ssh_user.clone(),
            ssh_host: c.ssh_host.clone(),
            ssh_port: s.ssh_port,
            ssh_private_key: c.private_key.clone(),
            gpu_uuid: s.gpu_uuid.clone(),
            mig_profile: s.mig_profile.clone(),
            created_at: timestamp(s.created_at),
            expires_at: timestamp(s.expires_at),
            host_key_fingerprint: s.host_key_fingerprint.clone(),
            known_hosts: c.known_hosts.clone(),
            ssh_command: format!("ssh -i {key_path} -p {} {}@{}", s.ssh_port, c.ssh_user, c.ssh_host),
        }
    }
}

/// `GET /gpus`.
#[derive(Debug, Serialize)]
pub struct GpusView {
    pub gpus: Vec<crate::gpu::GpuDevice>,
    pub count: usize,
}

/// `GET /gpus/profiles`.
#[derive(Debug, Serialize)]
pub struct ProfilesView {
    pub profiles: Vec<crate::gpu::ProfileInfo>,
}

/// `GET /gpus/available`.
#[derive(Debug, Serialize)]
pub struct AvailableView {
    pub available_instances: Vec<crate::gpu::MigInstance>,
    pub count: usize,
}

impl GpusView {
    pub fn new(gpus: Vec<crate::gpu::GpuDevice>) -> Self {
        GpusView { count: gpus.len(), gpus }
    }
}

impl AvailableView {
    pub fn new(available_instances: Vec<crate::gpu::MigInstance>) -> Self {
        AvailableView { count: available_instances.len(), available_instances }
    }
}
