//! The JSON shapes of docs/api.md, shared by `--json` output and the HTTP server.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::limits::SessionLimits;
use crate::sessions::Created;
use crate::ssh;
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
    /// The resource limits the container runs under; null for sessions made before sandman
    /// recorded them.
    pub limits: Option<LimitsView>,
    /// Bytes the workspace takes on disk, measured when asked for one session (`GET
    /// /sessions/{id}`, `session show`); absent in lists and where it could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_usage_bytes: Option<u64>,
    /// The workspace's project quota (`workspace_quota`) in bytes, shown with the usage, where
    /// one is set on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_quota_bytes: Option<u64>,
    pub metadata: Metadata,
    /// The session's own idle timeout, asked for at create; null: the host's
    /// idle_timeout_minutes.
    pub idle_timeout_minutes: Option<u32>,
    /// When a reap pass last saw activity (an SSH connection, CPU use, a GPU process); the
    /// session's creation until then. UTC, RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub last_activity_at: String,
    /// What moved `last_activity_at`: ssh, cpu, gpu, or creation.
    #[schema(schema_with = activity_signals)]
    pub last_activity_signal: String,
    /// Seconds since `last_activity_at`, as of this answer.
    pub idle_seconds: i64,
    /// Established SSH connections at the last reap pass; null before the first one (or where
    /// they cannot be read).
    pub ssh_connections: Option<u32>,
    /// Compute processes on the session's GPU device at the last reap pass; null without a GPU,
    /// before the first pass, or where the backend cannot tell.
    pub gpu_processes: Option<u32>,
}

fn activity_signals() -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["ssh", "cpu", "gpu", "creation"])).build()
}

/// A session's resource limits.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionLimits)]
pub struct LimitsView {
    /// Memory limit in bytes; swap is not allowed beyond it.
    pub memory_bytes: u64,
    pub cpus: f64,
    /// Size of /dev/shm in bytes (counted in the memory limit).
    pub shm_size_bytes: u64,
    /// Most processes and threads at once.
    pub pids: i64,
    /// The container log is rotated at this size ...
    pub log_size_bytes: u64,
    /// ... keeping this many files.
    pub log_files: u32,
    /// Size limit of the container's writable layer (files written outside the home) in bytes;
    /// absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writable_layer_bytes: Option<u64>,
}

impl From<&SessionLimits> for LimitsView {
    fn from(l: &SessionLimits) -> Self {
        LimitsView {
            memory_bytes: l.memory,
            cpus: l.cpus,
            shm_size_bytes: l.shm_size,
            pids: l.pids,
            log_size_bytes: l.log_size,
            log_files: l.log_files,
            writable_layer_bytes: l.writable_layer,
        }
    }
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
            limits: r.limits.as_ref().map(LimitsView::from),
            workspace_usage_bytes: None,
            workspace_quota_bytes: None,
            metadata: Metadata {
                image: r.image.clone(),
                workspace: r.workspace.clone(),
                ssh_port: r.ssh_port.to_string(),
            },
            idle_timeout_minutes: r.activity.idle_timeout_minutes,
            last_activity_at: timestamp(r.activity.since(r.created_at)),
            last_activity_signal: r.activity.last_activity_signal.clone().unwrap_or_else(|| "creation".into()),
            idle_seconds: (Utc::now().timestamp() - r.activity.since(r.created_at)).max(0),
            ssh_connections: r.activity.ssh_connections,
            gpu_processes: r.activity.gpu_processes,
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
    /// Ready to paste, with the key saved as `<user>.key`. `IdentitiesOnly=yes` keeps an agent
    /// holding many keys from using up the allowed attempts before this key is offered.
    #[schema(example = "ssh -i alice.key -o IdentitiesOnly=yes -p 10000 alice@gpu1.example.org")]
    pub ssh_command: String,
    /// An OpenSSH client `Host sandman-<user>` block (HostName, Port, User, IdentityFile when the
    /// key is known, `IdentitiesOnly yes`, `HostKeyAlias sandman-<user>`), ready to append to
    /// `~/.ssh/config`; then `ssh sandman-<user>` logs in. With `ssh_config_known_hosts` in
    /// known_hosts, the host key is checked under the alias, so the entry stays valid when the
    /// session's port changes. `sandman session ssh-config` prints the same.
    #[schema(example = "Host sandman-alice\n    HostName gpu1.example.org\n    Port 10000\n    User alice\n    \
IdentityFile alice.key\n    IdentitiesOnly yes\n    HostKeyAlias sandman-alice\n")]
    pub ssh_config: String,
    /// The known_hosts line for `ssh_config`'s HostKeyAlias: `sandman-<user> <host key>`.
    #[schema(example = "sandman-alice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...")]
    pub ssh_config_known_hosts: String,
}

impl CreatedView {
    /// `key_path` is where the user keeps the private key, for the ready-to-paste command;
    /// `identity_file` the same for the ssh config, when it is known.
    pub fn new(c: &Created, key_path: &str, identity_file: Option<&str>) -> Self {
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
            ssh_command: format!(
                "ssh -i {key_path} -o IdentitiesOnly=yes -p {} {}@{}",
                s.ssh_port, c.ssh_user, c.ssh_host
            ),
            ssh_config: ssh::ssh_config(&c.ssh_user, &c.ssh_host, s.ssh_port, identity_file),
            ssh_config_known_hosts: ssh::alias_known_hosts_line(&c.ssh_user, &c.host_public_key),
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

/// One of a user's public keys (`GET /users/{user}/keys`, `sandman user key ls --json`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UserKey)]
pub struct UserKeyView {
    pub user_id: String,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it; names the key in `DELETE`. Percent-encode its
    /// `/` and `+` in a path.
    #[schema(example = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s")]
    pub fingerprint: String,
    /// The key as one OpenSSH line.
    pub public_key: String,
    /// UTC, RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub added_at: String,
}

impl UserKeyView {
    pub fn new(user: &str, k: &crate::store::UserKey) -> Self {
        UserKeyView {
            user_id: user.to_string(),
            fingerprint: k.fingerprint.clone(),
            public_key: k.key_line.clone(),
            added_at: timestamp(k.added_at),
        }
    }
}
