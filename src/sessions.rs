//! The session service: the one place where store, GPU backend and container runtime meet.
//! The CLI and the HTTP server both call it; nothing here knows about terminals or HTTP.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::gpu::{GpuBackend, GpuDevice, GpuRequest, MigInstance};
use crate::locks::{FileLock, session_lock_path};
use crate::runtime::{self, ContainerSpec, Docker, FileSpec};
use crate::store::{Reservation, SessionRow, State, Store, Version};
use crate::{ssh, validate, workspace};

pub struct CreateRequest {
    pub user: String,
    pub ttl_minutes: Option<i64>,
    pub image: Option<String>,
    pub gpu: GpuRequest,
    /// The user's own public key; then no key pair is generated and none is returned.
    pub public_key: Option<String>,
}

/// The answer to a create: the session plus what is shown once and never stored.
pub struct Created {
    pub session: SessionRow,
    pub ssh_user: String,
    pub ssh_host: String,
    pub private_key: Option<String>,
    pub known_hosts: String,
}

/// What one reaper pass did (or, dry, would do), by session id.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReapReport {
    pub dry_run: bool,
    /// Another reaper held the reap lock; this pass did nothing.
    pub busy: bool,
    pub expired: Vec<String>,
    /// Rows left in `creating` by a process that died.
    pub abandoned: Vec<String>,
    /// Rows whose container disappeared.
    pub vanished: Vec<String>,
    /// sandman containers with no row (container ids).
    pub orphans: Vec<String>,
    /// MIG instances sandman created that no session holds (destroyed).
    pub gpu_instances: Vec<String>,
}

impl ReapReport {
    pub fn total(&self) -> usize {
        self.expired.len() + self.abandoned.len() + self.vanished.len() + self.orphans.len() + self.gpu_instances.len()
    }
}

pub struct Sessions {
    pub settings: Settings,
    store: Mutex<Store>,
    instance: String,
    docker: OnceCell<Docker>,
    gpu: Arc<dyn GpuBackend>,
}

/// Asks a create in progress to stop at its next step and remove what it made, as it would
/// after any failure. Dropping the create instead could leave a Docker request in flight that
/// completes after the cleanup.
#[derive(Default)]
pub struct Cancel(std::sync::atomic::AtomicBool);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) { Err(Error::Interrupted) } else { Ok(()) }
    }

    async fn cancelled(&self) {
        while self.check().is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Progress for a person; the CLI prints it, the server logs it.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

impl Sessions {
    pub fn open(settings: Settings, gpu: Arc<dyn GpuBackend>) -> Result<Sessions> {
        let store = Store::open(&settings.db)?;
        let instance = store.instance_id()?;
        Ok(Sessions { settings, store: Mutex::new(store), instance, docker: OnceCell::new(), gpu })
    }

    /// The Docker engine, connected on first use (listing sessions needs no engine).
    pub async fn docker(&self) -> Result<&Docker> {
        self.docker.get_or_try_init(Docker::connect).await
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

    /// MIG devices no session holds.
    pub fn available(&self) -> Result<Vec<MigInstance>> {
        Ok(self.gpus()?.into_iter().flat_map(|d| d.mig_instances).filter(|m| !m.allocated).collect())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Result<Vec<SessionRow>> {
        self.store().sessions()
    }

    /// Changes whenever `list` may answer differently (any process's writes).
    pub fn list_version(&self) -> Result<Version> {
        self.store().version()
    }

    pub fn get(&self, id: &str) -> Result<SessionRow> {
        self.store().session(id)?.ok_or_else(|| Error::NotFound(format!("session {id} not found")))
    }

    pub async fn create(&self, req: CreateRequest, progress: Progress<'_>, cancel: &Cancel) -> Result<Created> {
        let s = &self.settings;
        validate::user_name(&req.user)?;
        let ttl =
            validate::ttl_minutes(req.ttl_minutes.unwrap_or(i64::from(s.default_ttl_minutes)), s.max_ttl_minutes)?;
        let image = req.image.clone().unwrap_or_else(|| s.image.clone());
        validate::image_reference(&image)?;
        let authorized_key = req.public_key.as_deref().map(ssh::parse_public_key).transpose()?;

        let docker = self.docker().await?;
        let Some(image_id) = docker.image_id(&image).await? else {
            return Err(if req.image.is_some() {
                Error::invalid("image", format!("{image:?} is not on this host; build or load it first"))
            } else {
                Error::Unavailable(format!(
                    "workspace image {image:?} is not on this host: run `sandman image build` (add --offline without a registry)"
                ))
            });
        };

        let id = uuid::Uuid::new_v4().to_string();
        // Held until the row is final, so a reaper can tell a live create from a dead one.
        let lock = FileLock::acquire(&session_lock_path(&s.state_dir(), &id))?;
        let (private_key, authorized_key) = match authorized_key {
            Some(k) => (None, k),
            None => {
                let (private, public) = ssh::generate_key_pair(&format!("{}@sandman", req.user))?;
                (Some(private), public)
            }
        };

        cancel.check()?;
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
            || ssh::generate_key_pair(&format!("sandman-host-{}", req.user)).map(|(private, _)| private),
            |k| ssh::host_public_key(k).map(|(_, fp)| fp),
            |port| TcpListener::bind(SocketAddr::new(publish, port)).is_ok(),
            |taken, ledger| self.gpu.pick(&req.gpu, taken, ledger),
        )?;

        let provisioned =
            self.provision(docker, &row, &image_id, user.uid, &user.host_key, &authorized_key, progress, cancel).await;
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
                lock.release_and_remove();
                return Err(e);
            }
        };
        lock.release_and_remove();

        let (host_public, _) = ssh::host_public_key(&user.host_key)?;
        let mut session = row;
        session.state = State::Running;
        session.container_id = Some(container);
        session.container_ip = ip;
        tracing::info!(session = %session.id, user = %session.user, port = session.ssh_port, "session created");
        Ok(Created {
            known_hosts: ssh::known_hosts_line(&s.ssh_host, session.ssh_port, &host_public),
            ssh_user: session.user.clone(),
            ssh_host: s.ssh_host.clone(),
            private_key,
            session,
        })
    }

    /// Everything after the reservation: workspace, network, container, files, start, sshd.
    async fn provision(
        &self,
        docker: &Docker,
        row: &SessionRow,
        image_id: &str,
        uid: u32,
        host_key: &str,
        authorized_key: &str,
        progress: Progress<'_>,
        cancel: &Cancel,
    ) -> Result<(String, Option<String>)> {
        let s = &self.settings;
        progress("preparing workspace");
        let workspace = workspace::ensure(&s.workspace_root, &row.user, uid)?;
        cancel.check()?;

        progress("starting container");
        let spec = ContainerSpec {
            name: container_name(row),
            image: row.image.clone(),
            user: row.user.clone(),
            uid,
            labels: HashMap::from([
                (runtime::LABEL_INSTANCE.to_string(), self.instance.clone()),
                (runtime::LABEL_SESSION.to_string(), row.id.clone()),
                (runtime::LABEL_USER.to_string(), row.user.clone()),
            ]),
            network: s.network.clone(),
            publish_address: s.publish_address,
            host_port: row.ssh_port,
            container_port: ssh::CONTAINER_SSH_PORT,
            workspace,
            pids_limit: s.pids_limit,
            command: ssh::container_command(),
            gpu: row.gpu_uuid.as_deref().map(|u| self.gpu.access(u)),
        };
        // Its id reaches the row with the running state; until then teardown finds it by name.
        // The network is made on first use only, which keeps a request off the common path.
        let ensure_network = async || -> Result<()> {
            let _net = FileLock::acquire(&s.state_dir().join("locks").join("network.lock"))?;
            docker.ensure_network(&s.network).await
        };
        let container = match docker.create(&spec).await {
            Err(Error::NotFound(_)) => {
                ensure_network().await?;
                docker.create(&spec).await?
            }
            created => created?,
        };
        // Started first: the command waits for sandman's files, and copying into a running
        // container is cheaper than into a created one (its filesystem is already mounted).
        match docker.start(&container).await {
            Err(Error::NotFound(_)) => {
                ensure_network().await?;
                docker.start(&container).await?
            }
            started => started?,
        }

        // The image's own accounts plus the user. Reading files out of a container costs a round
        // trip each, so they are read once per image id and kept in the store.
        let cached = self.store().image_accounts(image_id)?;
        let (passwd, group) = match cached {
            Some(files) => files,
            None => {
                let passwd = docker.read_file(&container, "/etc/passwd").await?;
                let group = docker.read_file(&container, "/etc/group").await?;
                self.store().save_image_accounts(image_id, &passwd, &group)?;
                (passwd, group)
            }
        };
        let passwd = with_entry(&passwd, &row.user, &ssh::passwd_entry(&row.user, uid));
        let group = with_entry(&group, &row.user, &ssh::group_entry(&row.user, uid));
        let dir = ssh::CONFIG_DIR;
        docker
            .write_files(
                &container,
                &[
                    FileSpec { path: "etc/passwd".into(), contents: passwd, uid: 0, mode: 0o644 },
                    FileSpec { path: "etc/group".into(), contents: group, uid: 0, mode: 0o644 },
                    FileSpec {
                        path: format!("{dir}/sshd_config"),
                        contents: ssh::sshd_config(&row.user, row.gpu_uuid.as_deref()).into_bytes(),
                        uid: 0,
                        mode: 0o644,
                    },
                    FileSpec {
                        path: format!("{dir}/authorized_keys"),
                        contents: format!("{authorized_key}\n").into_bytes(),
                        uid: 0,
                        mode: 0o644,
                    },
                    // sshd runs as the user, so the user must own the host key (mode 0600).
                    FileSpec {
                        path: format!("{dir}/ssh_host_ed25519_key"),
                        contents: host_key.as_bytes().to_vec(),
                        uid,
                        mode: 0o600,
                    },
                    // Last in the archive: sshd starts once this exists.
                    FileSpec { path: ssh::READY_FILE.into(), contents: Vec::new(), uid: 0, mode: 0o644 },
                ],
            )
            .await?;
        cancel.check()?;

        progress("waiting for sshd");
        let probe_ip =
            if s.publish_address.is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { s.publish_address };
        let timeout = Duration::from_secs(s.ssh_ready_timeout_secs);
        let (ip, ready) = tokio::select! {
            both = async {
                tokio::join!(
                    docker.ip_address(&container, &s.network),
                    ssh::wait_for_banner(SocketAddr::new(probe_ip, row.ssh_port), timeout)
                )
            } => both,
            _ = cancel.cancelled() => return Err(Error::Interrupted),
        };
        if let Err(e) = ready {
            let log = docker.log_tail(&container, 5).await;
            return Err(if log.is_empty() { e } else { Error::Unavailable(format!("{e}; container log: {log}")) });
        }
        Ok((container, ip?))
    }

    /// Removes a session: container first (so its port stays reserved until it is free), then the
    /// GPU slice and the row. The workspace is never touched.
    pub async fn remove(&self, id: &str) -> Result<SessionRow> {
        let row = self.get(id)?;
        let mut creator_lock = None;
        if row.state == State::Creating {
            match FileLock::try_acquire(&session_lock_path(&self.settings.state_dir(), id))? {
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

    async fn teardown(&self, row: &SessionRow) -> Result<()> {
        let docker = self.docker().await?;
        docker.remove(row.container_id.as_deref().unwrap_or(&container_name(row))).await?;
        if let Some(uuid) = &row.gpu_uuid {
            self.store().with_gpu_ledger(|ledger| self.gpu.release(uuid, ledger))?;
        }
        self.store().delete_session(&row.id)?;
        Ok(())
    }

    /// Sets a session to expire `ttl_minutes` from now (bounded by `max_ttl_minutes`).
    pub fn extend(&self, id: &str, ttl_minutes: i64) -> Result<SessionRow> {
        let ttl = validate::ttl_minutes(ttl_minutes, self.settings.max_ttl_minutes)?;
        let row = self.get(id)?;
        let expires = chrono::Utc::now().timestamp() + i64::from(ttl) * 60;
        let total = u32::try_from((expires - row.created_at + 59) / 60).unwrap_or(u32::MAX);
        if !self.store().set_ttl(id, total, expires)? {
            return Err(Error::NotFound(format!("session {id} not found")));
        }
        self.get(id)
    }

    /// One reaper pass: expired sessions, creates whose process died, rows whose container
    /// vanished, and labelled containers with no row. Safe beside other reapers and creates.
    pub async fn reap(&self, dry_run: bool) -> Result<ReapReport> {
        let mut report = ReapReport { dry_run, ..Default::default() };
        let Some(reap_lock) = FileLock::try_acquire(&self.settings.state_dir().join("locks").join("reap.lock"))? else {
            report.busy = true;
            return Ok(report);
        };
        let docker = self.docker().await?;
        // Containers first, rows second: a row is always written before its container, so any
        // container listed here whose row is missing really has none.
        let containers = docker.list_managed(&self.instance).await?;
        let rows = self.list()?;
        let with_container: HashSet<&str> = containers.iter().filter_map(|c| c.session_id.as_deref()).collect();
        let now = chrono::Utc::now().timestamp();

        for row in &rows {
            match row.state {
                State::Running if row.expires_at <= now => {
                    if !dry_run {
                        self.teardown(row).await?;
                        tracing::info!(session = %row.id, user = %row.user, "expired session reaped");
                    }
                    report.expired.push(row.id.clone());
                }
                State::Running if !with_container.contains(row.id.as_str()) => {
                    if !dry_run {
                        self.teardown(row).await?;
                        tracing::info!(session = %row.id, user = %row.user, "session whose container vanished reaped");
                    }
                    report.vanished.push(row.id.clone());
                }
                State::Creating => {
                    let lock_path = session_lock_path(&self.settings.state_dir(), &row.id);
                    let Some(lock) = FileLock::try_acquire(&lock_path)? else {
                        continue;
                    };
                    // The creator may have finished between our read and the lock: look again.
                    if self.store().session(&row.id)?.is_some_and(|r| r.state == State::Creating) {
                        if !dry_run {
                            self.teardown(row).await?;
                            tracing::info!(session = %row.id, user = %row.user, "abandoned create reaped");
                        }
                        report.abandoned.push(row.id.clone());
                    }
                    if dry_run { drop(lock) } else { lock.release_and_remove() }
                }
                State::Running => {}
            }
        }

        let known: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for c in &containers {
            if c.session_id.as_deref().is_none_or(|id| !known.contains(id)) {
                if !dry_run {
                    docker.remove(&c.id).await?;
                    tracing::info!(container = %c.name, "orphaned container removed");
                }
                report.orphans.push(c.id.clone());
            }
        }
        // Instances sandman created for sessions that no longer exist (a crash between creating
        // the instance and writing the row, or a failed release).
        // Done inside the store's reservation lock, so an instance a create has just made for a
        // row it has not yet committed is never taken for unowned.
        if !dry_run {
            report.gpu_instances =
                self.store().with_gpu_ledger(|ledger| self.gpu.reconcile(&ledger.held()?, ledger))?;
        }
        drop(reap_lock);
        Ok(report)
    }
}

pub fn container_name(row: &SessionRow) -> String {
    format!("sandman-{}-{}", row.user, &row.id[..8])
}

/// `file` (a passwd or group file) with any line for `name` replaced by `entry`.
fn with_entry(file: &[u8], name: &str, entry: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(file);
    let prefix = format!("{name}:");
    let mut out: String = text.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
    out.push_str(entry);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_entry_replaces_a_clash() {
        let file = b"root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nalicex:x:1:1::/:/bin/sh";
        let out = String::from_utf8(with_entry(file, "alice", "alice:x:20000:20000::/home/alice:/bin/bash\n")).unwrap();
        assert_eq!(
            out,
            "root:x:0:0::/root:/bin/bash\nalicex:x:1:1::/:/bin/sh\nalice:x:20000:20000::/home/alice:/bin/bash\n"
        );
    }
}
