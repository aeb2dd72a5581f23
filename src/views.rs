//! The JSON shapes of docs/api.md, shared by `--json` output and the HTTP server.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::sessions::Created;
use crate::store::{SessionRow, State};

pub fn timestamp(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The API's session object. `metadata.ssh_password` is deliberately absent: logins are key-only.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    pub id: String,
    pub user_id: String,
    pub container_id: Option<String>,
    pub container_ip: Option<String>,
    pub ssh_port: u16,
    pub gpu_uuid: Option<String>,
    pub mig_profile: Option<String>,
    /// The TTL last asked for, at create or by the latest extend: the session expires this
    /// many minutes after that request.
    pub ttl_minutes: u32,
    /// UTC, RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// UTC, RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(schema_with = session_states)]
    pub state: &'static str,
    /// Why the session failed (state `failed`): its container stopped or is paused, or its sshd
    /// did not answer. Its container is removed; a new create for the user replaces it.
    pub failure: Option<String>,
    pub host_key_fingerprint: String,
    pub metadata: Metadata,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionMetadata)]
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
            failure: r.failure.clone(),
            host_key_fingerprint: r.host_key_fingerprint.clone(),
            metadata: Metadata {
                image: r.image.clone(),
                workspace: r.workspace.clone(),
                ssh_port: r.ssh_port.to_string(),
            },
        }
    }
}

fn session_states() -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(State::ALL.map(State::as_str))).build()
}

/// The API's create answer, plus what a user needs to log in.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreatedSession)]
pub struct CreatedView {
    pub session_id: String,
    pub container_id: Option<String>,
    pub ssh_user: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    /// OpenSSH private key, shown only in this answer; `null` when the client supplied its own
    /// public key.
    pub ssh_private_key: Option<String>,
    pub gpu_uuid: Option<String>,
    pub mig_profile: Option<String>,
    /// UTC, RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// UTC, RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub host_key_fingerprint: String,
    /// A known_hosts line for the session's host key.
    pub known_hosts: String,
    /// Ready to paste, with the key saved as `<user>.key`.
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GpuList)]
pub struct GpusView {
    pub gpus: Vec<crate::gpu::GpuDevice>,
    pub count: usize,
}

/// `GET /gpus/profiles`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProfileList)]
pub struct ProfilesView {
    pub profiles: Vec<crate::gpu::ProfileInfo>,
}

/// `GET /gpus/available`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AvailableList)]
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

/// An answer that is only a sentence (`DELETE /sessions/{id}`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageView {
    pub message: String,
}

/// `DELETE /sessions`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RemovedAll)]
pub struct RemovedAllView {
    pub message: String,
    /// Ids of the sessions removed.
    pub removed: Vec<String>,
}
