//! An in-memory engine for tests: images, networks, containers with their state, published ports
//! and the files written into them, plus failure injection per operation. A started container
//! publishes its port for real on the host, answering with an SSH banner like sshd would (unless
//! told not to), so a create against it runs every step it runs against Docker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::{
    ContainerActivity, ContainerSpec, Engine, ExecOutput, FileSpec, LABEL_INSTANCE, LABEL_SESSION, ManagedContainer,
    Placement, TarStream,
};
use crate::error::{Error, Result};
use crate::limits::SessionLimits;
use crate::progress::Progress;

/// The engine operations, to name the one a failure is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Version,
    Runtimes,
    ImageId,
    BuildImage,
    ImportImage,
    NetworkExists,
    EnsureNetwork,
    Create,
    Start,
    ReadFile,
    WriteFiles,
    IpAddress,
    Remove,
    ListManaged,
}

/// What a test can see of one container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    /// Paused (`docker pause`): still running, but nothing in it answers.
    pub paused: bool,
    /// The host address its port is published on, once started.
    pub published: Option<SocketAddr>,
    /// Files written into it, by path (without the leading '/').
    pub files: BTreeMap<String, Vec<u8>>,
    /// The resource limits it was created with.
    pub limits: Option<SessionLimits>,
    spec: Option<ContainerSpec>,
}

type MakeError = Box<dyn FnOnce() -> Error + Send>;

struct Failure {
    op: Op,
    /// A container id or name, image or network the failure is limited to; `None`: any.
    target: Option<String>,
    error: MakeError,
}

#[derive(Default)]
struct State {
    images: HashMap<String, String>,
    networks: HashSet<String>,
    /// Networks made by an admin with inter-container traffic on.
    icc_networks: HashSet<String>,
    containers: BTreeMap<String, FakeContainer>,
    listeners: HashMap<String, JoinHandle<()>>,
    failures: Vec<Failure>,
    next_id: u64,
    sshd_silent: bool,
    oom_kills: HashMap<String, u64>,
    activity: HashMap<String, ContainerActivity>,
    execs: Vec<Exec>,
    /// Set: an engine with nodes (like a swarm), which takes files at create and places every
    /// session on this node.
    node: Option<Placement>,
    /// Set: the storage driver and backing file system `storage` answers (else overlay2 on extfs).
    storage: Option<(String, Option<String>)>,
}

/// A command run in a container through `exec_as`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub container: String,
    pub uid: u32,
    pub command: Vec<String>,
}

#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<State>,
}

/// What every fake image holds in `/etc/passwd` and `/etc/group`.
pub const IMAGE_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n";
pub const IMAGE_GROUP: &[u8] = b"root:x:0:\n";

impl FakeEngine {
    /// An engine that holds `images` and nothing else.
    pub fn with_images(images: &[&str]) -> FakeEngine {
        let engine = FakeEngine::default();
        for image in images {
            engine.add_image(image);
        }
        engine
    }

    pub fn add_image(&self, tag: &str) {
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("sha256:{:064x}", state.next_id);
        state.images.insert(tag.to_string(), id);
    }

    /// The next call of `op` fails with `error()`; `error` may also act, to stage a race.
    pub fn fail_next(&self, op: Op, error: impl FnOnce() -> Error + Send + 'static) {
        self.lock().failures.push(Failure { op, target: None, error: Box::new(error) });
    }

    /// The next call of `op` on `target` (a container id or name, an image, a network) fails.
    pub fn fail_next_on(&self, op: Op, target: &str, error: impl FnOnce() -> Error + Send + 'static) {
        self.lock().failures.push(Failure { op, target: Some(target.to_string()), error: Box::new(error) });
    }

    /// Containers started from now on publish their port but nothing answers on it, like a
    /// container whose sshd does not start.
    pub fn silence_sshd(&self) {
        self.lock().sshd_silent = true;
    }

    /// Stops a container, as `docker kill` does: it stays listed, exited, and its port is closed.
    pub fn kill(&self, id_or_name: &str) {
        self.stop_sshd(id_or_name);
        let mut state = self.lock();
        if let Some(id) = find(&state, id_or_name) {
            state.containers.get_mut(&id).expect("found").running = false;
        }
    }

    /// Pauses a container, as `docker pause` does.
    pub fn pause(&self, id_or_name: &str) {
        let mut state = self.lock();
        if let Some(id) = find(&state, id_or_name) {
            state.containers.get_mut(&id).expect("found").paused = true;
        }
    }

    /// Ends the sshd of a running container (the user killed it, or it cannot restart): its
    /// port no longer answers.
    pub fn stop_sshd(&self, id_or_name: &str) {
        let mut state = self.lock();
        if let Some(id) = find(&state, id_or_name)
            && let Some(task) = state.listeners.remove(&id)
        {
            task.abort();
        }
    }

    /// A network an admin made with the bridge's default options (inter-container traffic on).
    pub fn add_icc_network(&self, name: &str) {
        let mut state = self.lock();
        state.networks.insert(name.to_string());
        state.icc_networks.insert(name.to_string());
    }

    /// Removes a network, as an admin's `docker network rm` would (after disconnecting).
    pub fn remove_network(&self, name: &str) {
        self.lock().networks.remove(name);
    }

    pub fn containers(&self) -> Vec<FakeContainer> {
        self.lock().containers.values().cloned().collect()
    }

    pub fn container(&self, id_or_name: &str) -> Option<FakeContainer> {
        let state = self.lock();
        find(&state, id_or_name).and_then(|id| state.containers.get(&id).cloned())
    }

    /// Sets the OOM kills the kernel would report for a container.
    /// Acts as an engine with nodes: files at create, every session on `node`.
    pub fn set_node(&self, node: Placement) {
        self.lock().node = Some(node);
    }

    /// The spec a container was created with.
    pub fn spec(&self, id_or_name: &str) -> Option<ContainerSpec> {
        let state = self.lock();
        find(&state, id_or_name).and_then(|id| state.containers[&id].spec.clone())
    }

    /// Sets the storage driver and backing file system the engine reports.
    pub fn set_storage(&self, driver: &str, backing: Option<&str>) {
        self.lock().storage = Some((driver.to_string(), backing.map(str::to_string)));
    }

    pub fn set_oom_kills(&self, id: &str, kills: u64) {
        self.lock().oom_kills.insert(id.to_string(), kills);
    }

    /// Sets what the host would see of a container's activity (by container id).
    pub fn set_activity(&self, id: &str, activity: ContainerActivity) {
        self.lock().activity.insert(id.to_string(), activity);
    }

    /// The commands run through `exec_as`, oldest first.
    pub fn execs(&self) -> Vec<Exec> {
        self.lock().execs.clone()
    }

    pub fn networks(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().networks.iter().cloned().collect();
        names.sort();
        names
    }

    /// Puts a container in place as if some earlier process had made it (an orphan, say).
    pub fn add_container(&self, name: &str, labels: HashMap<String, String>) -> String {
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        let container = FakeContainer {
            id: id.clone(),
            name: name.to_string(),
            image: String::new(),
            labels,
            running: true,
            paused: false,
            published: None,
            files: BTreeMap::new(),
            limits: None,
            spec: None,
        };
        state.containers.insert(id.clone(), container);
        id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The injected failure for this call, if any (each fires once).
    fn injected(&self, op: Op, targets: &[&str]) -> Result<()> {
        let failure = {
            let mut state = self.lock();
            let hit = state
                .failures
                .iter()
                .position(|f| f.op == op && f.target.as_deref().is_none_or(|t| targets.contains(&t)));
            hit.map(|i| state.failures.remove(i))
        };
        // Made outside the lock: making the error may act on the world (another client's move).
        match failure {
            Some(f) => Err((f.error)()),
            None => Ok(()),
        }
    }

    fn existing(&self, id_or_name: &str) -> Result<String> {
        find(&self.lock(), id_or_name).ok_or_else(|| Error::NotFound(format!("no such container: {id_or_name}")))
    }
}

fn find(state: &State, id_or_name: &str) -> Option<String> {
    if state.containers.contains_key(id_or_name) {
        return Some(id_or_name.to_string());
    }
    state.containers.values().find(|c| c.name == id_or_name).map(|c| c.id.clone())
}

/// Answers every connection with an SSH banner, as sshd does.
async fn answer_ssh(listener: tokio::net::TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = stream.write_all(b"SSH-2.0-fake\r\n").await;
            let mut sink = [0u8; 64];
            let _ = stream.read(&mut sink).await;
        });
    }
}

#[async_trait::async_trait]
impl Engine for FakeEngine {
    async fn version(&self) -> Result<String> {
        self.injected(Op::Version, &[])?;
        Ok("fake".into())
    }

    async fn runtimes(&self) -> Result<Vec<String>> {
        self.injected(Op::Runtimes, &[])?;
        Ok(vec!["runc".into()])
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        self.injected(Op::ImageId, &[image])?;
        Ok(self.lock().images.get(image).cloned())
    }

    async fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
        _build_args: &HashMap<String, String>,
        progress: Progress<'_>,
    ) -> Result<()> {
        self.injected(Op::BuildImage, &[tag])?;
        let mut archive = tar::Archive::new(context.as_slice());
        let has_dockerfile = archive
            .entries()
            .map_err(|e| Error::invalid("build context", e.to_string()))?
            .flatten()
            .any(|e| e.path().is_ok_and(|p| p.as_os_str() == "Dockerfile"));
        if !has_dockerfile {
            return Err(Error::invalid("build context", "holds no Dockerfile"));
        }
        progress("Step 1/1 : FROM fake");
        self.add_image(tag);
        Ok(())
    }

    async fn import_image(&self, mut rootfs: TarStream, tag: &str) -> Result<()> {
        self.injected(Op::ImportImage, &[tag])?;
        let mut sink = Vec::new();
        rootfs.read_to_end(&mut sink).await.map_err(|e| Error::invalid("image archive", e.to_string()))?;
        self.add_image(tag);
        Ok(())
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        self.injected(Op::NetworkExists, &[name])?;
        Ok(self.lock().networks.contains(name))
    }

    async fn network_icc(&self, name: &str) -> Result<Option<bool>> {
        self.injected(Op::NetworkExists, &[name])?;
        let state = self.lock();
        Ok(state.networks.contains(name).then(|| state.icc_networks.contains(name)))
    }

    /// `br-` and 12 hex digits of a hash of the name, like Docker's `br-<id>`.
    async fn network_bridge(&self, name: &str) -> Result<Option<String>> {
        self.injected(Op::NetworkExists, &[name])?;
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        Ok(self.lock().networks.contains(name).then(|| format!("br-{:012x}", hash & 0xffff_ffff_ffff)))
    }

    async fn ensure_network(&self, name: &str) -> Result<()> {
        self.injected(Op::EnsureNetwork, &[name])?;
        self.lock().networks.insert(name.to_string());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        self.injected(Op::Create, &[&spec.name, &spec.image])?;
        let mut state = self.lock();
        if !state.images.contains_key(&spec.image) {
            return Err(Error::Unavailable(format!("image {} is not on this host", spec.image)));
        }
        if !state.networks.contains(&spec.network) {
            return Err(Error::NotFound(format!("network {} not found", spec.network)));
        }
        if find(&state, &spec.name).is_some() {
            return Err(Error::Conflict(format!("container name {} is already in use", spec.name)));
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        let mut files = BTreeMap::from([
            ("etc/passwd".to_string(), IMAGE_PASSWD.to_vec()),
            ("etc/group".to_string(), IMAGE_GROUP.to_vec()),
        ]);
        if state.node.is_some() {
            files.extend(spec.files.iter().map(|f| (f.path.clone(), f.contents.clone())));
        }
        let container = FakeContainer {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            running: false,
            paused: false,
            published: None,
            files,
            limits: Some(spec.limits),
            spec: Some(spec.clone()),
        };
        state.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.injected(Op::Start, &[id])?;
        let id = self.existing(id)?;
        let mut state = self.lock();
        let silent = state.sshd_silent;
        let container = state.containers.get_mut(&id).expect("found above");
        let Some(spec) = container.spec.clone() else {
            container.running = true;
            return Ok(());
        };
        if container.running {
            return Ok(());
        }
        let addr = SocketAddr::new(spec.publish_address, spec.host_port);
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Exhausted(format!("the chosen host port is taken by another program: {e}")))?;
        container.running = true;
        container.published = Some(addr);
        if !silent {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
                .map_err(|e| Error::Internal(e.into()))?;
            let task = tokio::spawn(answer_ssh(listener));
            state.listeners.insert(id, task);
        }
        // A silent container's listener is dropped here: its port is published but nothing
        // answers, as when the container's sshd does not start.
        Ok(())
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        self.injected(Op::ReadFile, &[id])?;
        let id = self.existing(id)?;
        let state = self.lock();
        let key = path.trim_start_matches('/');
        state.containers[&id]
            .files
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{path} is missing from container {id}")))
    }

    async fn write_files(&self, id: &str, files: &[FileSpec]) -> Result<()> {
        self.injected(Op::WriteFiles, &[id])?;
        let id = self.existing(id)?;
        let mut state = self.lock();
        let container = state.containers.get_mut(&id).expect("found above");
        for f in files {
            container.files.insert(f.path.clone(), f.contents.clone());
        }
        Ok(())
    }

    async fn ip_address(&self, id: &str, network: &str) -> Result<Option<String>> {
        self.injected(Op::IpAddress, &[id])?;
        let id = self.existing(id)?;
        let state = self.lock();
        let c = &state.containers[&id];
        let on_network = c.spec.as_ref().is_some_and(|s| s.network == network);
        Ok((c.running && on_network).then(|| format!("172.30.0.{}", 2 + state.next_id % 250)))
    }

    async fn log_tail(&self, _id: &str, _lines: usize) -> String {
        String::new()
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let name = self.container(id).map(|c| c.name);
        let mut targets = vec![id];
        targets.extend(name.as_deref());
        self.injected(Op::Remove, &targets)?;
        let mut state = self.lock();
        if let Some(id) = find(&state, id) {
            state.containers.remove(&id);
            if let Some(task) = state.listeners.remove(&id) {
                task.abort();
            }
        }
        Ok(())
    }

    fn files_at_create(&self) -> bool {
        self.lock().node.is_some()
    }

    async fn read_image_file(&self, image: &str, path: &str) -> Result<Vec<u8>> {
        self.injected(Op::ReadFile, &[image])?;
        match path {
            "/etc/passwd" => Ok(IMAGE_PASSWD.to_vec()),
            "/etc/group" => Ok(IMAGE_GROUP.to_vec()),
            _ => Err(Error::NotFound(format!("{path} is missing from image {image}"))),
        }
    }

    async fn placement(&self, id: &str) -> Result<Option<Placement>> {
        self.existing(id)?;
        Ok(self.lock().node.clone())
    }

    async fn instances_on_network(&self, network: &str) -> Result<Vec<String>> {
        self.injected(Op::ListManaged, &[network])?;
        let mut ids: Vec<String> = self
            .lock()
            .containers
            .values()
            .filter(|c| c.spec.as_ref().is_some_and(|s| s.network == network))
            .filter_map(|c| c.labels.get(LABEL_INSTANCE).cloned())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
        self.injected(Op::ListManaged, &[])?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| c.labels.get(LABEL_INSTANCE).is_some_and(|i| i == instance))
            .map(|c| ManagedContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                session_id: c.labels.get(LABEL_SESSION).cloned(),
                state: match (c.running, c.paused) {
                    (true, false) => super::RUNNING.to_string(),
                    (true, true) => "paused".to_string(),
                    (false, _) => "exited".to_string(),
                },
            })
            .collect())
    }

    async fn activity(&self, id: &str, _ssh_port: u16) -> ContainerActivity {
        self.lock().activity.get(id).copied().unwrap_or_default()
    }

    async fn exec_as(
        &self,
        id: &str,
        uid: u32,
        command: &[String],
        _timeout: std::time::Duration,
    ) -> Result<ExecOutput> {
        let container = self.existing(id)?;
        let mut state = self.lock();
        if !state.containers[&container].running {
            return Err(Error::Conflict(format!("container {id} is not running")));
        }
        state.execs.push(Exec { container, uid, command: command.to_vec() });
        Ok(ExecOutput { exit_code: 0, output: String::new() })
    }

    async fn storage(&self) -> Result<(String, Option<String>)> {
        Ok(self.lock().storage.clone().unwrap_or_else(|| ("overlay2".into(), Some("extfs".into()))))
    }

    async fn oom_kills(&self, id: &str) -> Option<u64> {
        let state = self.lock();
        find(&state, id)?;
        Some(state.oom_kills.get(id).copied().unwrap_or(0))
    }
}
