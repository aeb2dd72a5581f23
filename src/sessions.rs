//! The session service: the one place where store, GPU backend and container engine meet.
//! The CLI and the HTTP server both call it; nothing here knows about terminals or HTTP.
//! Its rules (what a create makes and unmakes, what removing all means, what a reaper removes)
//! are defined here once.

mod keys;
mod reap;
#[cfg(test)]
mod tests;

pub use keys::user_keys_dir;
pub use reap::{Action, FailedSession, OomKills, ReapFailure, ReapReport, classify};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{self, ContainerSpec, Engine, FileSpec};
use crate::error::{Error, Result};
use crate::gpu::{GpuBackend, GpuDevice, GpuRequest, MigInstance};
use crate::limits::{Host, LimitRequest, SessionLimits};
use crate::locks::{self, FileLock};
use crate::progress::Progress;
use crate::store::{Identity, Reservation, SessionRow, State, Store, Version};
use crate::{firewall, ssh, validate, workspace};

/// How long measuring one workspace may take (`session show`, `/metrics`).
pub const WORKSPACE_WALK_BUDGET: Duration = Duration::from_secs(2);
/// How long one `usage` pass may spend measuring all workspaces together.
const USAGE_PASS_BUDGET: Duration = Duration::from_secs(10);

/// What one running session uses (see `Sessions::usage`); `None`: could not be measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUsage {
    pub id: String,
    pub user: String,
    pub workspace_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// A workspace's bytes on disk, if the walk finished within `budget`.
fn measure_workspace(path: &str, budget: Duration) -> Option<u64> {
    match crate::disk::usage(std::path::Path::new(path), budget) {
        Ok(u) if u.complete => Some(u.bytes),
        Ok(u) => {
            tracing::debug!(workspace = path, bytes = u.bytes, "workspace walk stopped before the end");
            None
        }
        Err(e) => {
            tracing::debug!(workspace = path, error = %e, "workspace not measured");
            None
        }
    }
}

pub struct CreateRequest {
    pub user: String,
    pub ttl_minutes: Option<i64>,
    pub image: Option<String>,
    pub gpu: GpuRequest,
    /// The user's own public key, added to the user's keys; then no key pair is generated and
    /// none is returned.
    pub public_key: Option<String>,
    /// Memory, CPUs and /dev/shm asked for; unset ones take the configured defaults.
    pub limits: LimitRequest,
    /// Give a new user an existing workspace directory that another uid owns.
    pub adopt_workspace: bool,
    /// This session's idle timeout, shorter than the host's (`idle_timeout_minutes`); `None`:
    /// the host's.
    pub idle_timeout_minutes: Option<i64>,
}

/// The answer to a create: the session plus what is shown once and never stored.
pub struct Created {
    pub session: SessionRow,
    pub ssh_user: String,
    pub ssh_host: String,
    pub private_key: Option<String>,
    pub known_hosts: String,
    /// The session's host key as a public key line (for `ssh::alias_known_hosts_line`).
    pub host_public_key: String,
}

/// What removing several sessions did. One rule for every front end: a session already gone
/// when its turn comes (another client or a reaper removed it) is what was asked, not a failure;
/// a failure does not stop the removal of the others.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<SessionRow>,
    /// Listed, but gone by the time its turn came.
    pub already_gone: Vec<String>,
    /// Sessions whose removal failed, with why; they are still there.
    pub failed: Vec<(String, Error)>,
}

pub struct Sessions {
    pub settings: Settings,
    /// The write connection; transactions that may wait for another process's lock run here.
    store: Mutex<Store>,
    /// Lists and lookups, on a connection of their own: under WAL they never wait behind a
    /// write, whether this process's or another's.
    reader: Mutex<Store>,
    instance: String,
    engine: OnceCell<Arc<dyn Engine>>,
    gpu: Arc<dyn GpuBackend>,
    /// This machine's memory and CPUs, the base of the default limits.
    host: Host,
    /// Set once the session network was found safe (or absent) by this process.
    network_checked: OnceCell<()>,
    /// The host's iptables (in memory for the core's tests): the egress policy of sessions.
    firewall: Arc<dyn firewall::Runner>,
}

impl Sessions {
    pub fn open(settings: Settings, gpu: Arc<dyn GpuBackend>) -> Result<Sessions> {
        let store = Store::open(&settings.db)?;
        let instance = store.instance_id()?;
        let reader = Mutex::new(Store::open_reader(&settings.db)?);
        Ok(Sessions {
            settings,
            store: Mutex::new(store),
            reader,
            instance,
            engine: OnceCell::new(),
            gpu,
            host: Host::detect(),
            network_checked: OnceCell::new(),
            firewall: Arc::new(firewall::Iptables),
        })
    }

    /// A service on a given engine (the fake one, in tests) instead of the one `settings` name,
    /// with its firewall rules kept in memory (`firewall::Memory`) rather than in the host's.
    pub fn with_engine(settings: Settings, gpu: Arc<dyn GpuBackend>, engine: Arc<dyn Engine>) -> Result<Sessions> {
        let mut sessions = Sessions::open(settings, gpu)?;
        sessions.engine.set(engine).map_err(|_| Error::Internal(anyhow::anyhow!("engine set twice")))?;
        sessions.firewall = Arc::new(firewall::Memory::new());
        Ok(sessions)
    }

    /// The same service with another firewall runner (tests).
    pub fn with_firewall(mut self, runner: Arc<dyn firewall::Runner>) -> Sessions {
        self.firewall = runner;
        self
    }

    /// The state of the session network's firewall rules against the settings.
    pub async fn firewall_status(&self) -> Result<firewall::Status> {
        let policy = firewall::Policy::from_settings(&self.settings)?;
        let bridge = self.engine().await?.network_bridge(&self.settings.network).await?;
        let (runner, network) = (self.firewall.clone(), self.settings.network.clone());
        blocking(move || firewall::status(runner.as_ref(), &policy, &network, bridge.as_deref())).await
    }

    /// Installs (or updates, or with the policy off removes) the session network's firewall
    /// rules. With `create_network`, a missing network is created first when rules are wanted;
    /// otherwise a missing network has nothing to apply to. Cheap when the rules are right: one
    /// `iptables -S`. Returns the bridge, if the network exists.
    pub async fn firewall_apply(&self, create_network: bool) -> Result<Option<String>> {
        let s = &self.settings;
        let policy = firewall::Policy::from_settings(s)?;
        let engine = self.engine().await?;
        let found = match engine.network_bridge(&s.network).await {
            // With the policy off a network sandman cannot firewall is no reason to refuse.
            Err(e) if !policy.enabled() => {
                tracing::debug!(network = %s.network, error = %e, "no bridge to check for leftover firewall rules");
                return Ok(None);
            }
            found => found?,
        };
        let bridge = match found {
            Some(b) => b,
            None if create_network && policy.enabled() => {
                self.make_network(engine).await?;
                engine.network_bridge(&s.network).await?.ok_or_else(|| {
                    Error::Unavailable(format!("network {} vanished right after it was created", s.network))
                })?
            }
            None => return Ok(None),
        };
        let started = std::time::Instant::now();
        let (runner, network, lock) =
            (self.firewall.clone(), s.network.clone(), locks::dir(&s.state_dir()).join("firewall.lock"));
        let for_apply = bridge.clone();
        let applied = blocking(move || {
            let status = firewall::status(runner.as_ref(), &policy, &network, Some(&for_apply))?;
            if status.up_to_date {
                return Ok(firewall::Applied::Unchanged);
            }
            // Two creates must not both add the jumps: the check is repeated under the lock.
            let _lock = FileLock::acquire(&lock)?;
            firewall::apply(runner.as_ref(), &policy, &network, &for_apply)
        })
        .await;
        tracing::debug!(bridge, elapsed_ms = started.elapsed().as_millis() as u64, result = ?applied, "firewall checked");
        match applied {
            Ok(_) => Ok(Some(bridge)),
            Err(e) if self.firewall_wanted()? => Err(firewall::install_failure(&s.network, &bridge, &e)),
            Err(e) => {
                // Nothing to enforce (a host without iptables may mean it): leftover rules, if
                // any, stay, which harms no session.
                tracing::debug!(network = %s.network, error = %e, "cannot check the firewall rules (the policy is off)");
                Ok(Some(bridge))
            }
        }
    }

    /// Removes every firewall rule sandman made for the session network (also when the network
    /// is gone); whether there were any.
    pub async fn firewall_remove(&self) -> Result<bool> {
        let bridge = self.engine().await?.network_bridge(&self.settings.network).await.ok().flatten();
        let (runner, network) = (self.firewall.clone(), self.settings.network.clone());
        blocking(move || firewall::remove(runner.as_ref(), &network, bridge.as_deref())).await
    }

    fn firewall_wanted(&self) -> Result<bool> {
        Ok(firewall::Policy::from_settings(&self.settings)?.enabled())
    }

    /// Creates the session network, serialised with other processes by a file lock.
    async fn make_network(&self, engine: &dyn Engine) -> Result<()> {
        let s = &self.settings;
        let _net = FileLock::acquire(&locks::dir(&s.state_dir()).join("network.lock"))?;
        engine.ensure_network(&s.network).await
    }

    /// The container engine, connected on first use (listing sessions needs no engine).
    pub async fn engine(&self) -> Result<&dyn Engine> {
        Ok(self.engine.get_or_try_init(|| engine::connect(&self.settings)).await?.as_ref())
    }

    pub fn gpu(&self) -> &dyn GpuBackend {
        self.gpu.as_ref()
    }

    /// Every GPU and MIG device, with `allocated` set for those a session holds.
    pub fn gpus(&self) -> Result<Vec<GpuDevice>> {
        let taken: HashSet<String> = self.list()?.into_iter().filter_map(|r| r.gpu_uuid).collect();
        let mut devices = self.gpu.devices()?;
        for d in &mut devices {
            for m in &mut d.mig_instances {
                m.allocated = taken.contains(&m.uuid);
            }
        }
        Ok(devices)
    }

    /// Simulated GPUs only: sets the compute processes device `uuid` runs (`gpu sim-busy`).
    pub fn set_sim_gpu_processes(&self, uuid: &str, processes: u32) -> Result<()> {
        let backend = self.gpu.name();
        if backend != "sim" {
            return Err(Error::invalid(
                "gpu backend",
                format!(
                    "sim-busy only acts on simulated GPUs; this host's gpu backend is {backend} (use --gpu-backend sim)"
                ),
            ));
        }
        let known =
            self.gpu.devices()?.into_iter().any(|d| d.uuid == uuid || d.mig_instances.iter().any(|m| m.uuid == uuid));
        if !known {
            return Err(Error::NotFound(format!("no simulated GPU or MIG device {uuid}; `sandman gpu ls` lists them")));
        }
        self.store().set_sim_processes(uuid, processes)
    }

    /// MIG devices no session holds.
    pub fn available(&self) -> Result<Vec<MigInstance>> {
        Ok(self.gpus()?.into_iter().flat_map(|d| d.mig_instances).filter(|m| !m.allocated).collect())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Store> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Result<Vec<SessionRow>> {
        self.reader().sessions()
    }

    /// Changes whenever `list` may answer differently (any process's writes).
    pub fn list_version(&self) -> Result<Version> {
        self.reader().version()
    }

    pub fn get(&self, id: &str) -> Result<SessionRow> {
        self.reader().session(id)?.ok_or_else(|| Error::NotFound(format!("session {id} not found")))
    }

    /// The user's session.
    pub fn get_by_user(&self, user: &str) -> Result<SessionRow> {
        validate::user_name(user)?;
        let found = self.list()?.into_iter().find(|r| r.user == user);
        found.ok_or_else(|| Error::NotFound(format!("user {user} has no session")))
    }

    /// The public line of the user's host key, which every session of theirs presents.
    pub fn host_public_key(&self, user: &str) -> Result<String> {
        let row = self.store().user(user)?.ok_or_else(|| Error::NotFound(format!("user {user} is not known")))?;
        Ok(ssh::host_public_key(&row.host_key)?.0)
    }

    /// Bytes a session's workspace takes on disk, measured now within `WORKSPACE_WALK_BUDGET`;
    /// `None` if the walk could not finish.
    pub fn workspace_usage(&self, row: &SessionRow) -> Option<u64> {
        measure_workspace(&row.workspace, WORKSPACE_WALK_BUDGET)
    }

    /// The project quota of a session's workspace (limit and use), where it has one.
    pub fn workspace_quota(&self, row: &SessionRow) -> Option<crate::quota::WorkspaceQuota> {
        crate::quota::of(&self.settings.workspace_root, std::path::Path::new(&row.workspace))
    }

    /// What each running session uses now: its workspace's bytes and the OOM kills in its
    /// container. The walks run off the async threads; each is bounded in time.
    pub async fn usage(&self) -> Result<Vec<SessionUsage>> {
        let rows: Vec<SessionRow> = self.list()?.into_iter().filter(|r| r.state == State::Running).collect();
        let workspaces: Vec<String> = rows.iter().map(|r| r.workspace.clone()).collect();
        // A pass measures for at most USAGE_PASS_BUDGET in all; workspaces past it are left out.
        let deadline = std::time::Instant::now() + USAGE_PASS_BUDGET;
        let sizes = tokio::task::spawn_blocking(move || {
            workspaces
                .iter()
                .map(|w| {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() { None } else { measure_workspace(w, left.min(WORKSPACE_WALK_BUDGET)) }
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![None; rows.len()]);
        let engine = self.engine().await?;
        let mut usage = Vec::with_capacity(rows.len());
        for (row, workspace_bytes) in rows.into_iter().zip(sizes) {
            let oom_kills = match &row.container_id {
                Some(id) => engine.oom_kills(id).await,
                None => None,
            };
            usage.push(SessionUsage { id: row.id, user: row.user, workspace_bytes, oom_kills });
        }
        Ok(usage)
    }

    /// Creates a session. Cancelling `cancel` stops the create at its next step; it then removes
    /// what it made, as after any failure, and answers `Interrupted`. (Dropping the future instead
    /// could leave an engine request in flight that completes after the cleanup.)
    pub async fn create(
        &self,
        req: CreateRequest,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<Created> {
        let s = &self.settings;
        validate::user_name(&req.user)?;
        let ttl =
            validate::ttl_minutes(req.ttl_minutes.unwrap_or(i64::from(s.default_ttl_minutes)), s.max_ttl_minutes)?;
        let image = req.image.clone().unwrap_or_else(|| s.image.clone());
        validate::image_reference(&image)?;
        let own_key = req.public_key.as_deref().map(keys::user_key).transpose()?;
        let idle_timeout = req.idle_timeout_minutes.map(|m| idle_timeout_minutes(m, s)).transpose()?;
        if let Some(quota) = s.workspace_quota
            && !crate::disk::project_quotas(&s.workspace_root).0
        {
            return Err(Error::Unavailable(workspace_quota_refusal(quota.0, &s.workspace_root)));
        }
        // Without overrides per profile the limits do not depend on the GPU pick: check them
        // before anything is reserved.
        if s.limits.profile.is_empty() {
            self.session_limits(&req.limits, None)?;
        }

        self.check_identity().await?;
        let engine = self.engine().await?;
        if let Some(layer) = s.limits.writable_layer_wanted(&req.limits) {
            let (driver, backing) = engine.storage().await?;
            if let Some(why) = writable_layer_refusal(layer, s.engine, &driver, backing.as_deref()) {
                // Asked for in the request: a request this host cannot honour (400, exit 2). Set
                // by the admin: the host is misconfigured (503, exit 5).
                return Err(if req.limits.writable_layer.is_some() {
                    Error::invalid("writable_layer", why)
                } else {
                    Error::Unavailable(why)
                });
            }
        }
        let Some(image_id) = engine.image_id(&image).await? else {
            return Err(if req.image.is_some() {
                Error::invalid("image", format!("{image:?} is not on this host; build or load it first"))
            } else {
                Error::Unavailable(format!(
                    "workspace image {image:?} is not on this host: run `sandman image build` (add --offline without a registry)"
                ))
            });
        };

        let id = uuid::Uuid::new_v4().to_string();
        // Held until the row is final, so a reaper can tell a live create from a dead one; removed
        // whatever the outcome.
        let lock = FileLock::acquire(&locks::session_lock_path(&s.state_dir(), &id))?;
        let created = async {
            // A generated key is the session's alone (in its own key file, gone with it); a key
            // the user gave joins the user's keys, which every session of theirs reads.
            let (private_key, session_key) = match own_key {
                Some(_) => (None, None),
                None => {
                    let (private, public) = ssh::generate_key_pair(&format!("{}@sandman", req.user))?;
                    (Some(private), Some(public))
                }
            };

            interrupted(cancel)?;
            progress("reserving port and resources");
            let workspace_path = s.workspace_root.join(&req.user);
            let publish = s.publish_address;
            let (row, user) = self.store().reserve(
                &Reservation {
                    id: &id,
                    user: &req.user,
                    image: &image,
                    ttl_minutes: ttl,
                    now: chrono::Utc::now().timestamp(),
                    workspace: &workspace_path.to_string_lossy(),
                    port_range: (s.ssh_port_start, s.ssh_port_end),
                    uid_start: s.uid_start,
                },
                |uid| {
                    workspace::check_new_owner(&s.workspace_root, &req.user, uid, req.adopt_workspace)?;
                    ssh::generate_key_pair(&format!("sandman-host-{}", req.user)).map(|(private, _)| private)
                },
                |k| ssh::host_public_key(k).map(|(_, fp)| fp),
                |port| TcpListener::bind(SocketAddr::new(publish, port)).is_ok(),
                |taken, ledger| self.gpu.pick(&req.gpu, taken, ledger),
            )?;

            let mut key_added = false;
            // The limits depend on the MIG profile picked; a refusal is cleaned up like any failure.
            let mut row = row;
            let provisioned = async {
                let limits = self.record_limits(&mut row, &req.limits)?;
                if let Some(minutes) = idle_timeout {
                    self.store().set_idle_timeout(&row.id, minutes)?;
                    row.activity.idle_timeout_minutes = Some(minutes);
                }
                if let Some(key) = &own_key {
                    key_added = self.store().add_user_key(&req.user, key)?;
                }
                // Also when nothing changed: the session mounts the directory, which must exist.
                self.write_user_keys(&req.user)?;
                self.provision(&row, &image_id, user.uid, &user.host_key, session_key.as_deref(), limits, progress, cancel)
                    .await
            }
            .await;
            // A failure to record the session is cleaned up like any other failure.
            let result = provisioned.and_then(|(container, ip)| {
                match self.store().mark_running(&row.id, &container, ip.as_deref()) {
                    Ok(true) => Ok((container, ip)),
                    Ok(false) => Err(Error::Conflict(format!("session {} was removed while it was being created", row.id))),
                    Err(e) => Err(e),
                }
            });
            let (container, ip) = match result {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(session = %row.id, user = %row.user, error = %e, "create failed; cleaning up");
                    if let Err(cleanup) = self.teardown(&row).await {
                        tracing::error!(session = %row.id, error = %cleanup, "cleanup after failed create failed; `sandman reap` will retry");
                    }
                    if let Some(key) = own_key.as_ref().filter(|_| key_added)
                        && let Err(cleanup) = self.remove_user_key(&row.user, &key.fingerprint)
                    {
                        tracing::error!(user = %row.user, error = %cleanup, "cannot take back the key of a failed create");
                    }
                    return Err(e);
                }
            };

            let (host_public, _) = ssh::host_public_key(&user.host_key)?;
            let mut session = row;
            session.state = State::Running;
            session.container_id = Some(container);
            session.container_ip = ip;
            tracing::info!(session = %session.id, user = %session.user, port = session.ssh_port, "session created");
            Ok::<_, Error>(Created {
                known_hosts: ssh::known_hosts_line(&self.ssh_host_for(&session.id), session.ssh_port, &host_public),
                host_public_key: host_public,
                ssh_user: session.user.clone(),
                ssh_host: self.ssh_host_for(&session.id),
                private_key,
                session,
            })
        }
        .await;
        lock.release_and_remove();
        created
    }

    /// The limits of a session on `profile` for what was asked (see `Limits::resolve`).
    fn session_limits(&self, asked: &LimitRequest, profile: Option<&str>) -> Result<SessionLimits> {
        self.settings.limits.resolve(asked, profile, self.settings.pids_limit, self.host)
    }

    /// Resolves the reserved session's limits for its MIG profile and stores them on its row.
    fn record_limits(&self, row: &mut SessionRow, asked: &LimitRequest) -> Result<SessionLimits> {
        let limits = self.session_limits(asked, row.mig_profile.as_deref())?;
        self.store().set_limits(&row.id, &limits)?;
        row.limits = Some(limits);
        Ok(limits)
    }

    /// Everything after the reservation: workspace, network, container, files, start, sshd.
    #[allow(clippy::too_many_arguments)]
    async fn provision(
        &self,
        row: &SessionRow,
        image_id: &str,
        uid: u32,
        host_key: &str,
        session_key: Option<&str>,
        limits: SessionLimits,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<(String, Option<String>)> {
        let s = &self.settings;
        let engine = self.engine().await?;
        progress("preparing workspace");
        let workspace = workspace::ensure(&s.workspace_root, &row.user, uid)?;
        if let Some(quota) = s.workspace_quota {
            // The project id is the user's uid: stable forever, one per workspace.
            crate::quota::apply(&s.workspace_root, &workspace, uid, quota.0).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot set the project quota of workspace {} (project {uid}, limit {}): {e}; check that {} is \
                     on ext4 or xfs mounted with prjquota and that sandman runs as root, or remove workspace_quota",
                    workspace.display(),
                    validate::format_size(quota.0),
                    s.workspace_root.display()
                ))
            })?;
        }
        interrupted(cancel)?;

        progress("starting container");
        let mut spec = ContainerSpec {
            name: container_name(row),
            image: row.image.clone(),
            user: row.user.clone(),
            uid,
            labels: HashMap::from([
                (engine::LABEL_INSTANCE.to_string(), self.instance.clone()),
                (engine::LABEL_SESSION.to_string(), row.id.clone()),
                (engine::LABEL_USER.to_string(), row.user.clone()),
            ]),
            network: s.network.clone(),
            publish_address: s.publish_address,
            host_port: row.ssh_port,
            container_port: ssh::CONTAINER_SSH_PORT,
            workspace,
            user_keys_dir: user_keys_dir(&s.state_dir(), &row.user),
            limits,
            command: ssh::container_command(),
            gpu: row.gpu_uuid.as_deref().map(|u| self.gpu.access(u)),
            files: Vec::new(),
            home_node: None,
            workspace_nfs: None,
            routing_mesh: false,
        };
        // Engines whose containers may run on another node take the files at create, the user's
        // keys among them (a copy: key changes reach the next session), and place the session
        // on the node that holds the user's home.
        let files_at_create = engine.files_at_create();
        if files_at_create {
            let cached = self.store().image_accounts(image_id)?;
            let (passwd, group) = match cached {
                Some(files) => files,
                None => {
                    let passwd = engine.read_image_file(&row.image, "/etc/passwd").await?;
                    let group = engine.read_image_file(&row.image, "/etc/group").await?;
                    self.store().save_image_accounts(image_id, &passwd, &group)?;
                    (passwd, group)
                }
            };
            let user_keys: String =
                self.store().user_keys(&row.user)?.iter().map(|k| format!("{}\n", k.key_line)).collect();
            spec.files = session_files(row, uid, host_key, session_key, &passwd, &group, Some(user_keys));
            spec.workspace_nfs = s.workspace_nfs.clone();
            spec.routing_mesh = s.swarm_routing_mesh;
            if s.workspace_nfs.is_none() {
                spec.home_node = self.store().user_node(&row.user)?;
            }
        }
        // Its id reaches the row with the running state; until then teardown finds it by name.
        // The network is made on first use only (here when firewall rules need its bridge).
        let ensure_network = async || -> Result<()> { self.make_network(engine).await };
        self.network_checked.get_or_try_init(|| async { check_network(engine, s).await }).await?;
        // The egress policy is in place before the container exists.
        self.firewall_apply(true).await?;
        let container = match engine.create(&spec).await {
            Err(Error::NotFound(_)) => {
                ensure_network().await?;
                engine.create(&spec).await?
            }
            created => created?,
        };
        // Started first: the command waits for sandman's files, and copying into a running
        // container is cheaper than into a created one (its filesystem is already mounted).
        match engine.start(&container).await {
            Err(Error::NotFound(_)) => {
                ensure_network().await?;
                engine.start(&container).await?
            }
            started => started?,
        }

        if !files_at_create {
            // The image's own accounts plus the user. Reading files out of a container costs a
            // round trip each, so they are read once per image id and kept in the store.
            let cached = self.store().image_accounts(image_id)?;
            let (passwd, group) = match cached {
                Some(files) => files,
                None => {
                    let passwd = engine.read_file(&container, "/etc/passwd").await?;
                    let group = engine.read_file(&container, "/etc/group").await?;
                    self.store().save_image_accounts(image_id, &passwd, &group)?;
                    (passwd, group)
                }
            };
            engine
                .write_files(&container, &session_files(row, uid, host_key, session_key, &passwd, &group, None))
                .await?;
        }
        interrupted(cancel)?;

        // Where the session runs, on engines with nodes: recorded, so that the user's next
        // sessions find their home there, and users are told that node's address.
        let mut address = self.ssh_address(row.ssh_port);
        if let Some(placed) = engine.placement(&container).await? {
            if s.workspace_nfs.is_none() && spec.home_node.is_none() {
                self.store().set_user_node(&row.user, &placed.node_id)?;
            }
            self.store().set_session_node(&row.id, &placed.node_id, &placed.address)?;
            if let Ok(ip) = placed.address.parse::<IpAddr>() {
                address = SocketAddr::new(ip, row.ssh_port);
            }
        }

        progress("waiting for sshd");
        let timeout = Duration::from_secs(s.ssh_ready_timeout_secs);
        let (ip, ready) = tokio::select! {
            both = async {
                tokio::join!(
                    engine.ip_address(&container, &s.network),
                    ssh::wait_for_banner(address, timeout)
                )
            } => both,
            () = cancel.cancelled() => return Err(Error::Interrupted),
        };
        if let Err(e) = ready {
            let log = engine.log_tail(&container, 5).await;
            return Err(if log.is_empty() { e } else { Error::Unavailable(format!("{e}; container log: {log}")) });
        }
        Ok((container, ip?))
    }

    /// Refuses to act on containers when this database is a copy of another (its containers are
    /// the original's), or is new while containers of another instance use its network (the
    /// database they belong to was lost). A new database with no such neighbours is confirmed.
    async fn check_identity(&self) -> Result<()> {
        let identity = self.store().identity().clone();
        let db = self.settings.db.display();
        match identity {
            Identity::Confirmed => Ok(()),
            Identity::Moved { recorded, actual } => Err(Error::Unavailable(format!(
                "database {db} is not the file it was created as (file {recorded}, now {actual}): it is a copy or \
                 was moved, and acting on it could remove the original's containers; use the original, or, if \
                 this file is the host's database from now on (restored or moved on purpose, the original no longer \
                 used), run `sandman doctor --adopt-database`"
            ))),
            Identity::New => {
                let network = &self.settings.network;
                let others: Vec<String> = (self.engine().await?.instances_on_network(network).await?)
                    .into_iter()
                    .filter(|i| *i != self.instance)
                    .collect();
                if others.is_empty() {
                    return self.store().adopt(&self.settings.db);
                }
                Err(Error::Unavailable(format!(
                    "database {db} is new (it was missing or empty), but containers of another sandman instance \
                     ({}) use network {network}: their database was lost or is elsewhere; restore it (or point --db \
                     at it), or remove those containers (docker rm -f $(docker ps -aq --filter \
                     label=sandman.instance={})) and run `sandman doctor --adopt-database` to start afresh",
                    others.join(", "),
                    others[0]
                )))
            }
        }
    }

    /// What users connect to for a session: the node it runs on where the engine has nodes,
    /// else `ssh_host`.
    pub fn ssh_host_for(&self, id: &str) -> String {
        self.session_node_address(id).unwrap_or_else(|| self.settings.ssh_host.clone())
    }

    /// The address of the node a session runs on, where one was recorded.
    fn session_node_address(&self, id: &str) -> Option<String> {
        self.reader().session_node(id).ok().flatten().map(|(_, address)| address).filter(|a| !a.is_empty())
    }

    /// Where a session's sshd answers: on its node, or on this host's published port.
    fn session_address(&self, row: &SessionRow) -> SocketAddr {
        match self.session_node_address(&row.id).and_then(|a| a.parse::<IpAddr>().ok()) {
            Some(ip) => SocketAddr::new(ip, row.ssh_port),
            None => self.ssh_address(row.ssh_port),
        }
    }

    /// Where this host answers on a session's published port.
    fn ssh_address(&self, port: u16) -> SocketAddr {
        let publish = self.settings.publish_address;
        SocketAddr::new(if publish.is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { publish }, port)
    }

    /// Removes a session: container first (so its port stays reserved until it is free), then the
    /// GPU slice and the row. The workspace is never touched.
    pub async fn remove(&self, id: &str) -> Result<SessionRow> {
        let row = self.get(id)?;
        self.check_identity().await?;
        let mut creator_lock = None;
        if row.state == State::Creating {
            match FileLock::try_acquire(&locks::session_lock_path(&self.settings.state_dir(), id))? {
                Some(lock) => creator_lock = Some(lock),
                None => {
                    return Err(Error::Conflict(format!("session {id} is still being created; try again in a moment")));
                }
            }
        }
        self.teardown(&row).await?;
        if let Some(lock) = creator_lock {
            lock.release_and_remove();
        }
        tracing::info!(session = %row.id, user = %row.user, "session removed");
        Ok(row)
    }

    /// Removes the sessions `ids`, under the one policy of `Removal`.
    pub async fn remove_sessions(&self, ids: &[String]) -> Removal {
        let mut removal = Removal::default();
        for id in ids {
            match self.remove(id).await {
                Ok(row) => removal.removed.push(row),
                Err(Error::NotFound(_)) if self.is_gone(id) => removal.already_gone.push(id.clone()),
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "session removal failed");
                    removal.failed.push((id.clone(), e));
                }
            }
        }
        removal
    }

    fn is_gone(&self, id: &str) -> bool {
        let row = self.reader().session(id);
        matches!(row, Ok(None))
    }

    /// Removes every session there is now (see `Removal`).
    pub async fn remove_all(&self) -> Result<Removal> {
        let ids: Vec<String> = self.list()?.into_iter().map(|r| r.id).collect();
        Ok(self.remove_sessions(&ids).await)
    }

    /// Container, GPU slice, row: the container first, so its port and slice stay reserved until
    /// it is gone.
    async fn teardown(&self, row: &SessionRow) -> Result<()> {
        self.engine().await?.remove(&container_ref(row)).await?;
        if let Some(uuid) = &row.gpu_uuid {
            self.store().with_gpu_ledger(|ledger| self.gpu.release(uuid, ledger))?;
        }
        self.store().delete_session(&row.id)?;
        self.store().delete_session_node(&row.id)?;
        Ok(())
    }

    /// Sets a session to expire `ttl_minutes` from now (bounded by `max_ttl_minutes`).
    pub fn extend(&self, id: &str, ttl_minutes: i64) -> Result<SessionRow> {
        let ttl = validate::ttl_minutes(ttl_minutes, self.settings.max_ttl_minutes)?;
        let expires = chrono::Utc::now().timestamp() + i64::from(ttl) * 60;
        // A session's `ttl_minutes` is the TTL last asked for, counted from that request.
        if !self.store().set_ttl(id, ttl, expires)? {
            return Err(Error::NotFound(format!("session {id} not found")));
        }
        self.get(id)
    }
}

/// A session's own idle timeout, within the host's bounds: at most the host's
/// `idle_timeout_minutes` (a user may ask to be reaped sooner, not later), or, where the host
/// reaps no idle sessions, at most `max_ttl_minutes`.
pub fn idle_timeout_minutes(minutes: i64, s: &Settings) -> Result<u32> {
    let max = max_idle_timeout(s);
    let why = if s.idle_timeout_minutes > 0 {
        "the host's idle_timeout_minutes"
    } else {
        "max_ttl_minutes; this host reaps no idle sessions unless asked"
    };
    if minutes < 1 || minutes > i64::from(max) {
        return Err(Error::invalid(
            "idle_timeout_minutes",
            format!("{minutes} is out of range; use 1 to {max} minutes (the maximum is {why})"),
        ));
    }
    Ok(minutes as u32)
}

/// The longest idle timeout a create may ask for (see `idle_timeout_minutes`).
pub fn max_idle_timeout(s: &Settings) -> u32 {
    if s.idle_timeout_minutes > 0 { s.idle_timeout_minutes } else { s.max_ttl_minutes }
}

/// Why `workspace_quota` cannot be honoured here (the file system of `workspace_root` has no
/// project quotas); a create is refused rather than run with a limit that is not there.
pub fn workspace_quota_refusal(quota: u64, root: &std::path::Path) -> String {
    let (_, mount) = crate::disk::project_quotas(root);
    format!(
        "workspace_quota = \"{}\" cannot be enforced: {} is on {mount}, without project quotas \
         (ext4 or xfs mounted with prjquota); remove workspace_quota or move workspace_root",
        validate::format_size(quota),
        root.display()
    )
}

/// Why a writable-layer limit of `size` cannot be honoured on this engine (`None`: it can): a
/// swarm service has no storage options, and only some storage drivers enforce one (see
/// `disk::layer_limit_possible`). A create is refused rather than run without the limit.
pub fn writable_layer_refusal(
    size: u64,
    engine: crate::config::EngineKind,
    driver: &str,
    backing: Option<&str>,
) -> Option<String> {
    let size = validate::format_size(size);
    if engine == crate::config::EngineKind::Swarm {
        return Some(format!(
            "writable_layer = \"{size}\" cannot be enforced: swarm services cannot set storage options; \
             unset writable_layer (and --writable-layer), or run sessions with engine = \"docker\""
        ));
    }
    (!crate::disk::layer_limit_possible(driver, backing)).then(|| {
        format!(
            "writable_layer = \"{size}\" cannot be enforced: the engine's storage driver is {}, which cannot limit \
             a container's writable layer (that needs overlay2 on xfs mounted with pquota, or btrfs, zfs, \
             devicemapper); unset writable_layer (and --writable-layer), or move Docker's data root to xfs \
             mounted with pquota",
            crate::disk::storage_words(driver, backing)
        )
    })
}

/// Refuses a session network on which containers may reach one another, unless `allow_icc`.
/// A missing network is fine: sandman creates it with inter-container traffic off.
pub async fn check_network(engine: &dyn Engine, s: &Settings) -> Result<()> {
    match engine.network_icc(&s.network).await? {
        Some(true) if !s.allow_icc => Err(Error::Unavailable(network_icc_problem(&s.network))),
        _ => Ok(()),
    }
}

/// What is wrong with a network that lets containers reach one another, and the fixes.
pub fn network_icc_problem(network: &str) -> String {
    format!(
        "network {network} lets containers reach one another (it lacks com.docker.network.bridge.enable_icc=false), \
         so sessions could reach each other's services: remove it (docker network rm {network}) and sandman \
         creates it safely, or create it with -o com.docker.network.bridge.enable_icc=false, or set \
         allow_icc = true to accept it"
    )
}

/// Runs blocking work (iptables) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(anyhow::anyhow!("firewall task failed: {e}")))?
}

/// `Interrupted` once the create was cancelled.
fn interrupted(cancel: &CancellationToken) -> Result<()> {
    if cancel.is_cancelled() { Err(Error::Interrupted) } else { Ok(()) }
}

pub fn container_name(row: &SessionRow) -> String {
    format!("sandman-{}-{}", row.user, &row.id[..8])
}

/// The session's container: its id once recorded, until then its name.
fn container_ref(row: &SessionRow) -> String {
    row.container_id.clone().unwrap_or_else(|| container_name(row))
}

/// The files a session's sshd needs: passwd and group (the image's plus the user), sshd's
/// configuration, the session's key, the host key (owned by the user, who runs sshd; 0600) and,
/// where the engine takes files at create, a copy of the user's keys; last, the file the
/// container's command waits for.
fn session_files(
    row: &SessionRow,
    uid: u32,
    host_key: &str,
    session_key: Option<&str>,
    passwd: &[u8],
    group: &[u8],
    user_keys: Option<String>,
) -> Vec<FileSpec> {
    let passwd = with_entry(passwd, &row.user, &ssh::passwd_entry(&row.user, uid));
    let group = with_entry(group, &row.user, &ssh::group_entry(&row.user, uid));
    let dir = ssh::CONFIG_DIR;
    let file = |path: String, contents: Vec<u8>| FileSpec { path, contents, uid: 0, mode: 0o644, secret: false };
    let mut files = vec![
        file("etc/passwd".into(), passwd),
        file("etc/group".into(), group),
        file(format!("{dir}/sshd_config"), ssh::sshd_config(&row.user, row.gpu_uuid.as_deref()).into_bytes()),
        file(format!("{dir}/authorized_keys"), session_key.map(|k| format!("{k}\n")).unwrap_or_default().into_bytes()),
        FileSpec {
            path: format!("{dir}/ssh_host_ed25519_key"),
            contents: host_key.as_bytes().to_vec(),
            uid,
            mode: 0o600,
            secret: true,
        },
    ];
    if let Some(keys) = user_keys {
        files.push(file(format!("{}/authorized_keys", ssh::USER_KEYS_DIR), keys.into_bytes()));
    }
    // Last in the archive: sshd starts once this exists.
    files.push(file(ssh::READY_FILE.into(), Vec::new()));
    files
}

/// `file` (a passwd or group file) with any line for `name` replaced by `entry`.
fn with_entry(file: &[u8], name: &str, entry: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(file);
    let prefix = format!("{name}:");
    let mut out: String = text.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
    out.push_str(entry);
    out.into_bytes()
}
