//! Docker Swarm through bollard's service API: each session is one service with one replica,
//! created on a manager. What differs from one host:
//!
//! - Files go in at create, as Swarm configs (passwd, group, sshd's config, the keys) and a
//!   secret (the host key), named after the service and labelled with it, removed with it. A
//!   container on another node cannot be copied into, and a service update would replace the
//!   task (restarting the session), so nothing is changed on a running session.
//! - The network is a swarm-scoped bridge whose options (inter-container traffic off) come from a
//!   config-only network of the same settings on each node (`<network>-local`, which
//!   `sandman node register` makes): every node gets a local bridge on which sessions cannot reach
//!   one another, and the port is published in host mode on the node that runs the task. No
//!   overlay network: its traffic between containers cannot be turned off.
//! - Services cannot ask for no-new-privileges on API 1.41; the image carries no setuid or
//!   setgid files instead (`doctor` says so).
//! - The restart policy is `none`: a failed task stays failed, and the reaper sees it.
//! - The service's id as far as the core is concerned is its name (unique in a swarm), so that a
//!   removal after a crash finds its configs by the same name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use bollard::models::{
    ConfigReference, ConfigSpec, EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit, Mount,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkAttachmentConfig,
    NetworkCreateRequest, NodeSpec, SecretSpec, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListConfigsOptionsBuilder, ListNodesOptionsBuilder, ListSecretsOptionsBuilder,
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, RemoveContainerOptionsBuilder, UpdateNodeOptionsBuilder,
};

use super::docker::{BRIDGE_NAME_OPTION, Docker, map_err, status};
use super::{
    ClusterInfo, ContainerActivity, ContainerSpec, Engine, ExecOutput, FileSpec, LABEL_INSTANCE, LABEL_SESSION,
    ManagedContainer, NodeInfo, Placement, RUNNING, TarStream,
};
use crate::error::{Error, Result};
use crate::gpu::GpuAccess;
use crate::progress::Progress;

/// Labels a session's configs and secrets with its service's name.
pub const LABEL_SERVICE: &str = "sandman.service";
/// The node label `sandman node register` writes: the node's GPU and MIG device UUIDs, comma-separated.
pub const LABEL_GPUS: &str = "sandman.gpus";
/// The bridge driver's option for inter-container traffic.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";
/// How long `start` waits for the session's task to run.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `start` lets the scheduler look for a node before it takes "no suitable node" as final.
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(3);
/// How long a removal waits for the task to stop on its node.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Swarm {
    docker: Docker,
}

impl Swarm {
    pub(super) async fn connect() -> Result<Swarm> {
        Ok(Swarm { docker: Docker::connect().await? })
    }

    fn client(&self) -> &bollard::Docker {
        &self.docker.client
    }

    /// This engine's node id, refusing an engine outside a swarm or one that is not a manager.
    async fn manager_node(&self) -> Result<String> {
        let info = self.cluster_state().await?;
        if info.state != "active" {
            return Err(Error::Unavailable(format!(
                "engine = \"swarm\", but this Docker engine is not in a swarm (state {:?}): run `docker swarm init` \
                 here, or point DOCKER_HOST at a manager",
                info.state
            )));
        }
        if !info.manager {
            return Err(Error::Unavailable(
                "engine = \"swarm\", but this Docker engine is a swarm worker: run sandman on a manager (or point \
                 DOCKER_HOST at one)"
                    .into(),
            ));
        }
        Ok(info.node_id)
    }

    async fn cluster_state(&self) -> Result<ClusterInfo> {
        let info = self.client().info().await.map_err(|e| map_err(e, "read engine info"))?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(ClusterInfo {
            state: swarm.local_node_state.map(|s| s.to_string()).unwrap_or_default(),
            node_id: swarm.node_id.unwrap_or_default(),
            manager: swarm.control_available.unwrap_or(false),
            nodes: Vec::new(),
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let nodes = self
            .client()
            .list_nodes(Some(ListNodesOptionsBuilder::new().build()))
            .await
            .map_err(|e| map_err(e, "list swarm nodes"))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let labels = n.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
                NodeInfo {
                    id: n.id.unwrap_or_default(),
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    address: n.status.as_ref().and_then(|s| s.addr.clone()).unwrap_or_default(),
                    state: n.status.and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_default(),
                    manager: n.manager_status.is_some(),
                    gpus: gpu_list(labels.get(LABEL_GPUS).map(String::as_str).unwrap_or("")),
                }
            })
            .collect())
    }

    /// The service's tasks, newest first.
    async fn tasks(&self, service: &str) -> Result<Vec<Task>> {
        let filters = HashMap::from([("service", vec![service])]);
        let mut tasks = self
            .client()
            .list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, &format!("list the tasks of service {service}")))?;
        newest_first(&mut tasks);
        Ok(tasks)
    }

    /// Constraints that put the session where its home and its GPU are (`manager`: this
    /// manager's node id).
    async fn constraints(&self, spec: &ContainerSpec, manager: &str) -> Result<Vec<String>> {
        let gpu_uuid = spec.gpu.as_ref().map(|g| match g {
            GpuAccess::NvidiaDevice(u) | GpuAccess::EnvOnly(u) => u.clone(),
            GpuAccess::Cdi(name) => name.rsplit('=').next().unwrap_or(name).to_string(),
        });
        let gpu_node = match &gpu_uuid {
            Some(uuid) => {
                let nodes = self.nodes().await?;
                let node = nodes.iter().find(|n| n.gpus.contains(uuid)).ok_or_else(|| {
                    Error::Unavailable(format!(
                        "GPU device {uuid} is on no registered swarm node: run `sandman --engine swarm node register` \
                         on the node that has it"
                    ))
                })?;
                Some(node.id.clone())
            }
            None => None,
        };
        // Without NFS the home is a directory on one node's disk: the node recorded, or this
        // manager's, where the home was just made.
        let home_node = match (&spec.workspace_nfs, &spec.home_node) {
            (Some(_), _) => None,
            (None, Some(node)) => Some(node.clone()),
            (None, None) => Some(manager.to_string()),
        };
        placement_constraints(&spec.user, home_node.as_deref(), gpu_node.as_deref())
    }

    /// Creates the configs and secrets of a session, all at once; on a failure removes the ones
    /// made.
    async fn create_files(&self, spec: &ContainerSpec, labels: &HashMap<String, String>) -> Result<Vec<FileRef>> {
        let creates = spec.files.iter().enumerate().map(|(i, file)| async move {
            let name = format!("{}.{i}", spec.name);
            // Swarm refuses empty configs and secrets; an empty line means the same to sshd.
            let contents = if file.contents.is_empty() { b"\n".to_vec() } else { file.contents.clone() };
            let data = Some(Base64::encode_string(&contents));
            let made = if file.secret {
                let secret =
                    SecretSpec { name: Some(name.clone()), labels: Some(labels.clone()), data, ..Default::default() };
                self.client().create_secret(secret).await.map(|r| r.id)
            } else {
                let config =
                    ConfigSpec { name: Some(name.clone()), labels: Some(labels.clone()), data, ..Default::default() };
                self.client().create_config(config).await.map(|r| r.id)
            };
            match made {
                Ok(id) => Ok(FileRef { id, name, file: file.clone() }),
                Err(e) => Err(map_err(e, &format!("create swarm config {name}"))),
            }
        });
        let results = futures_util::future::join_all(creates).await;
        if results.iter().any(|r| r.is_err()) {
            let _ = self.remove_files(&spec.name).await;
        }
        results.into_iter().collect()
    }

    /// Removes the configs and secrets labelled with `service`.
    async fn remove_files(&self, service: &str) -> Result<()> {
        let label = format!("{LABEL_SERVICE}={service}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let configs = self
            .client()
            .list_configs(Some(ListConfigsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, "list swarm configs"))?;
        for c in configs.into_iter().filter_map(|c| c.id) {
            match self.client().delete_config(&c).await {
                Ok(()) => {}
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => return Err(map_err(e, &format!("remove swarm config {c} of {service}"))),
            }
        }
        let secrets = self
            .client()
            .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, "list swarm secrets"))?;
        for s in secrets.into_iter().filter_map(|s| s.id) {
            match self.client().delete_secret(&s).await {
                Ok(()) => {}
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => return Err(map_err(e, &format!("remove swarm secret {s} of {service}"))),
            }
        }
        Ok(())
    }

    /// Waits, for at most `STOP_TIMEOUT`, until no task of a (removed) service is still running
    /// on any node.
    async fn wait_stopped(&self, service_id: &str) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            let Ok(tasks) = self.client().list_tasks(Some(ListTasksOptionsBuilder::new().build())).await else {
                return;
            };
            let live = tasks
                .iter()
                .filter(|t| t.service_id.as_deref() == Some(service_id))
                .any(|t| !t.status.as_ref().and_then(|s| s.state).is_some_and(ended));
            if !live {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(service = service_id, "a removed service's task has not stopped yet");
    }

    /// The id of the task's container, if it has one on this node.
    async fn local_container(&self, service: &str) -> Result<Option<String>> {
        let tasks = self.tasks(service).await?;
        Ok(tasks.into_iter().find_map(|t| t.status?.container_status?.container_id).filter(|c| !c.is_empty()))
    }
}

/// A config or secret made for one file.
struct FileRef {
    id: String,
    name: String,
    file: FileSpec,
}

/// The comma-separated UUIDs of the `sandman.gpus` label.
fn gpu_list(label: &str) -> Vec<String> {
    label.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The placement constraints of a session: the node with the home, and the GPU's node, which
/// must be the same one.
fn placement_constraints(user: &str, home_node: Option<&str>, gpu_node: Option<&str>) -> Result<Vec<String>> {
    match (home_node, gpu_node) {
        (Some(home), Some(gpu)) if home != gpu => Err(Error::Conflict(format!(
            "user {user}'s home is on swarm node {home} and the GPU is on node {gpu}: without workspace_nfs a \
             user's sessions run on the node holding the home; ask for a GPU on that node, or set workspace_nfs"
        ))),
        (Some(node), _) | (None, Some(node)) => Ok(vec![format!("node.id=={node}")]),
        (None, None) => Ok(Vec::new()),
    }
}

/// Newest task first (a service with restart policy none has one, but a node failure can make more).
fn newest_first(tasks: &mut [Task]) {
    tasks.sort_by_key(|t| std::cmp::Reverse(t.version.as_ref().and_then(|v| v.index).unwrap_or(0)));
}

/// The state a session's service is in, in the engine's words: `running` only when its newest
/// task runs; a task that ended says how (`failed`, `rejected`, `shutdown`, `complete`, ...);
/// no task at all is `created`.
pub fn service_state(tasks: &[Task]) -> String {
    match tasks.first().and_then(|t| t.status.as_ref()).and_then(|s| s.state) {
        Some(TaskState::RUNNING) => RUNNING.to_string(),
        Some(state) => state.to_string(),
        None => "created".to_string(),
    }
}

/// Whether a task in this state will never run.
fn ended(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::REMOVE
            | TaskState::ORPHANED
    )
}

/// The service for one session: one replica that is never restarted, the user's uid, no
/// capabilities, an init process, the session's limits, the port published in host mode, the
/// files as configs and secrets, the home bound from the node or mounted over NFS.
fn service_spec(spec: &ContainerSpec, files: &[FileRef], constraints: Vec<String>) -> ServiceSpec {
    let mut env = vec!["LANG=C.UTF-8".to_string()];
    match &spec.gpu {
        Some(GpuAccess::NvidiaDevice(uuid)) | Some(GpuAccess::EnvOnly(uuid)) => {
            env.push(format!("NVIDIA_VISIBLE_DEVICES={uuid}"))
        }
        // The NVIDIA runtime (the node's default runtime) reads CDI names from the same variable.
        Some(GpuAccess::Cdi(name)) => env.push(format!("NVIDIA_VISIBLE_DEVICES={name}")),
        None => env.push("NVIDIA_VISIBLE_DEVICES=void".into()),
    }
    let home = format!("/home/{}", spec.user);
    let home_mount = |target: &str| match &spec.workspace_nfs {
        Some(nfs) => {
            let (server, export) = nfs.split_once(':').unwrap_or((nfs, "/"));
            Mount {
                target: Some(target.to_string()),
                source: Some(format!("sandman-home-{}", spec.user)),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    driver_config: Some(MountVolumeOptionsDriverConfig {
                        name: Some("local".into()),
                        options: Some(HashMap::from([
                            ("type".to_string(), "nfs".to_string()),
                            ("o".to_string(), format!("addr={server},rw,nfsvers=4")),
                            ("device".to_string(), format!(":{}/{}", export.trim_end_matches('/'), spec.user)),
                        ])),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        None => Mount {
            target: Some(target.to_string()),
            source: Some(spec.workspace.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            ..Default::default()
        },
    };
    let mut configs = Vec::new();
    let mut secrets = Vec::new();
    for f in files {
        let target = format!("/{}", f.file.path.trim_start_matches('/'));
        let uid = f.file.uid.to_string();
        if f.file.secret {
            secrets.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(target),
                    uid: Some(uid.clone()),
                    gid: Some(uid),
                    mode: Some(f.file.mode),
                }),
                secret_id: Some(f.id.clone()),
                secret_name: Some(f.name.clone()),
            });
        } else {
            configs.push(TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(target),
                    uid: Some(uid.clone()),
                    gid: Some(uid),
                    mode: Some(f.file.mode),
                }),
                config_id: Some(f.id.clone()),
                config_name: Some(f.name.clone()),
                ..Default::default()
            });
        }
    }
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(spec.labels.clone()),
        command: Some(spec.command.clone()),
        hostname: Some(format!("sandman-{}", spec.user)),
        env: Some(env),
        dir: Some(home.clone()),
        user: Some(format!("{}:{}", spec.uid, spec.uid)),
        // /dev/shm as a tmpfs of the session's size (a service has no ShmSize).
        mounts: Some(vec![
            home_mount(&home),
            home_mount("/workspace"),
            Mount {
                target: Some("/dev/shm".into()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(spec.limits.shm_size as i64),
                    mode: Some(0o1777),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        configs: Some(configs),
        secrets: Some(secrets),
        init: Some(true),
        capability_drop: Some(vec!["ALL".into()]),
        // A removal ends the session at once, as on one host (where the container is killed).
        stop_grace_period: Some(1_000_000_000),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: Some(spec.limits.nano_cpus()),
                memory_bytes: Some(spec.limits.memory as i64),
                pids: Some(spec.limits.pids),
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            max_attempts: Some(0),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement { constraints: Some(constraints), ..Default::default() }),
        networks: Some(vec![NetworkAttachmentConfig { target: Some(spec.network.clone()), ..Default::default() }]),
        log_driver: Some(TaskSpecLogDriver {
            name: Some("json-file".into()),
            options: Some(HashMap::from([
                ("max-size".to_string(), spec.limits.log_size.to_string()),
                ("max-file".to_string(), spec.limits.log_files.to_string()),
            ])),
        }),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(spec.labels.clone()),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(i64::from(spec.container_port)),
                published_port: Some(i64::from(spec.host_port)),
                // Host mode: on the session's node only (where sandman sends the user). The
                // routing mesh publishes it on every node, where the hosts support it.
                publish_mode: Some(if spec.routing_mesh {
                    EndpointPortConfigPublishModeEnum::INGRESS
                } else {
                    EndpointPortConfigPublishModeEnum::HOST
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The config-only network on each node that gives the swarm network its options.
pub fn local_network(network: &str) -> String {
    format!("{network}-local")
}

#[async_trait::async_trait]
impl Engine for Swarm {
    async fn version(&self) -> Result<String> {
        self.docker.version().await
    }

    async fn runtimes(&self) -> Result<Vec<String>> {
        self.docker.runtimes().await
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        self.docker.image_id(image).await
    }

    async fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: Progress<'_>,
    ) -> Result<()> {
        self.docker.build_image(context, tag, build_args, progress).await
    }

    async fn import_image(&self, rootfs: TarStream, tag: &str) -> Result<()> {
        self.docker.import_image(rootfs, tag).await
    }

    async fn storage(&self) -> Result<(String, Option<String>)> {
        self.docker.storage().await
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        self.docker.network_exists(name).await
    }

    /// A local network of that name cannot carry services: refused with the fix.
    async fn network_icc(&self, name: &str) -> Result<Option<bool>> {
        match self.client().inspect_network(name, None).await {
            Ok(n) if n.scope.as_deref() != Some("swarm") => Err(Error::Unavailable(format!(
                "network {name} is a local network (scope {}), which swarm services cannot join: set network to \
                 another name in swarm mode, and sandman creates it",
                n.scope.unwrap_or_default()
            ))),
            // The options are the configuration network's, on this node (made when missing).
            Ok(n) => {
                let options = match n.config_from.and_then(|c| c.network) {
                    Some(local) => match self.client().inspect_network(&local, None).await {
                        Ok(l) => l.options,
                        Err(e) if status(&e) == Some(404) => return Ok(None),
                        Err(e) => return Err(map_err(e, &format!("inspect network {local}"))),
                    },
                    None => n.options,
                };
                Ok(Some(options.unwrap_or_default().get(ICC_OPTION).map(String::as_str) != Some("false")))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_err(e, &format!("inspect network {name}"))),
        }
    }

    /// The config-only network here (each other node gets its own from `node register`), then
    /// the swarm-scoped bridge that takes its options from it.
    async fn ensure_network(&self, name: &str) -> Result<()> {
        self.manager_node().await?;
        let local = local_network(name);
        ensure_local_network(self.client(), &local, &bridge_name(name)).await?;
        if self.docker.network_exists(name).await? {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            scope: Some("swarm".into()),
            // Labels and options would be refused beside a configuration network.
            config_from: Some(ConfigReference { network: Some(local) }),
            ..Default::default()
        };
        match self.client().create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(map_err(e, &format!("create network {name}"))),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        // Independent questions to the engine, asked at once.
        let local = local_network(&spec.network);
        let (manager, network, local_network, image) = tokio::try_join!(
            self.manager_node(),
            self.docker.network_exists(&spec.network),
            self.docker.network_exists(&local),
            self.docker.image_id(&spec.image),
        )?;
        if !network || !local_network {
            return Err(Error::NotFound(format!("network {} not found", spec.network)));
        }
        // Named by its id: every node runs the manager's exact image, and none tries a registry
        // first (offline nodes would wait for that to time out).
        let Some(image_id) = image else {
            return Err(Error::Unavailable(format!("image {} is not on this host", spec.image)));
        };
        let constraints = self.constraints(spec, &manager).await?;
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_SERVICE.into(), spec.name.clone());
        let files = self.create_files(spec, &labels).await?;
        let service = service_spec(&ContainerSpec { image: image_id, ..spec.clone() }, &files, constraints);
        if let Err(e) = self.client().create_service(service, None).await {
            let _ = self.remove_files(&spec.name).await;
            return Err(map_err(e, &format!("create service {}", spec.name)));
        }
        Ok(spec.name.clone())
    }

    /// Waits until the service's task runs; a task that fails or is rejected (a taken port, a
    /// missing bind source, no node that fits) is the error, with the engine's reason.
    async fn start(&self, id: &str) -> Result<()> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        loop {
            let tasks = self.tasks(id).await?;
            if let Some(status) = tasks.first().and_then(|t| t.status.as_ref()) {
                match status.state {
                    Some(TaskState::RUNNING) => return Ok(()),
                    // No node fits (its GPU's node is down, the constraint names a node that
                    // left): the scheduler says so at once and would only keep trying.
                    Some(TaskState::PENDING)
                        if status.err.as_deref().is_some_and(|e| e.contains("no suitable node"))
                            && started.elapsed() > UNSCHEDULABLE_GRACE =>
                    {
                        return Err(Error::Unavailable(format!(
                            "no swarm node can run the session: {}",
                            status.err.clone().unwrap_or_default()
                        )));
                    }
                    Some(state) if ended(state) => {
                        let why = status.err.clone().or(status.message.clone()).unwrap_or_default();
                        return Err(
                            if why.contains("address already in use") || why.contains("port is already allocated") {
                                Error::Exhausted(format!("the chosen host port is taken by another program: {why}"))
                            } else {
                                Error::Unavailable(format!("the session's swarm task is {state}: {why}"))
                            },
                        );
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                let why = tasks
                    .first()
                    .and_then(|t| t.status.as_ref())
                    .and_then(|s| s.err.clone().or(s.message.clone()))
                    .unwrap_or_else(|| "no task scheduled".into());
                return Err(Error::Unavailable(format!(
                    "service {id} did not start within {}s: {why}",
                    START_TIMEOUT.as_secs()
                )));
            }
            // A task usually runs within a second: look often until then (each look is one
            // small request), then calmly.
            let pause = if started.elapsed() < Duration::from_secs(1) { 15 } else { 100 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// From the task's container, where it runs on this node.
    async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        match self.local_container(id).await? {
            Some(container) => self.docker.read_file(&container, path).await,
            None => Err(Error::NotFound(format!("service {id} has no container on this node"))),
        }
    }

    async fn write_files(&self, id: &str, _files: &[FileSpec]) -> Result<()> {
        Err(Error::Internal(anyhow::anyhow!("swarm service {id} takes its files at create")))
    }

    async fn ip_address(&self, _id: &str, _network: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// The task's error, then its container's log where the container is on this node.
    async fn log_tail(&self, id: &str, lines: usize) -> String {
        let tasks = self.tasks(id).await.unwrap_or_default();
        let err = tasks.first().and_then(|t| t.status.as_ref()).and_then(|s| s.err.clone()).unwrap_or_default();
        let log = match tasks.iter().find_map(|t| t.status.as_ref()?.container_status.as_ref()?.container_id.clone()) {
            Some(c) => self.docker.log_tail(&c, lines).await,
            None => String::new(),
        };
        [err, log].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ")
    }

    /// The service, then its configs and secrets. Waits (a while) until its task has stopped on
    /// whichever node ran it (its container here is removed at once), so that its port is free
    /// when this returns. Outside a swarm nothing of a session can exist: done.
    async fn remove(&self, id: &str) -> Result<()> {
        let service_id = match self.client().inspect_service(id, None).await {
            Ok(service) => service.id,
            Err(e) if status(&e) == Some(404) => None,
            Err(e) if status(&e) == Some(503) && self.cluster_state().await?.state != "active" => return Ok(()),
            Err(e) => return Err(map_err(e, &format!("inspect service {id}"))),
        };
        let container = match &service_id {
            Some(_) => self.local_container(id).await.ok().flatten(),
            None => None,
        };
        match self.client().delete_service(id).await {
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(map_err(e, &format!("remove service {id}"))),
        }
        if let Some(c) = container {
            let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            for _ in 0..100 {
                match self.client().remove_container(&c, Some(options.clone())).await {
                    Ok(()) => break,
                    Err(e) if status(&e) == Some(404) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        if let Some(service_id) = service_id {
            self.wait_stopped(&service_id).await;
        }
        // Secrets stay in use until the swarm has let go of the task: retry a little.
        let mut last = Ok(());
        for _ in 0..50 {
            last = self.remove_files(id).await;
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last
    }

    /// Services labelled for the instance, with their task's state; configs and secrets whose
    /// service is gone are listed as a service in state `removed`, so the reaper clears them.
    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
        let label = format!("{LABEL_INSTANCE}={instance}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let services = self
            .client()
            .list_services(Some(ListServicesOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, "list services"))?;
        let mut tasks = self
            .client()
            .list_tasks(Some(ListTasksOptionsBuilder::new().build()))
            .await
            .map_err(|e| map_err(e, "list tasks"))?;
        newest_first(&mut tasks);
        let mut out = Vec::new();
        for s in services {
            let id = s.id.clone().unwrap_or_default();
            let spec = s.spec.unwrap_or_default();
            let own: Vec<Task> = tasks.iter().filter(|t| t.service_id.as_deref() == Some(&id)).cloned().collect();
            let name = spec.name.unwrap_or_default();
            out.push(ManagedContainer {
                id: name.clone(),
                name,
                session_id: spec.labels.unwrap_or_default().remove(LABEL_SESSION),
                state: service_state(&own),
            });
        }
        let configs = self
            .client()
            .list_configs(Some(ListConfigsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, "list swarm configs"))?;
        let secrets = self
            .client()
            .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, "list swarm secrets"))?;
        let left: Vec<HashMap<String, String>> = configs
            .into_iter()
            .filter_map(|c| c.spec?.labels)
            .chain(secrets.into_iter().filter_map(|s| s.spec?.labels))
            .collect();
        for mut labels in left {
            let Some(service) = labels.remove(LABEL_SERVICE) else { continue };
            if out.iter().any(|c| c.name == service) {
                continue;
            }
            out.push(ManagedContainer {
                id: service.clone(),
                name: service,
                session_id: labels.remove(LABEL_SESSION),
                state: "removed".into(),
            });
        }
        Ok(out)
    }

    /// The session network's bridge on this node, named by its configuration network (the same
    /// on every node), so that a node's firewall rules are in place before its first session.
    async fn network_bridge(&self, name: &str) -> Result<Option<String>> {
        let local = local_network(name);
        match self.client().inspect_network(&local, None).await {
            Ok(n) => {
                if let Some(bridge) = n.options.unwrap_or_default().get(BRIDGE_NAME_OPTION).filter(|b| !b.is_empty()) {
                    return Ok(Some(bridge.clone()));
                }
            }
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(map_err(e, &format!("inspect network {local}"))),
        }
        // A network made before its bridge was named: Docker's own name for it.
        self.docker.network_bridge(name).await
    }

    /// Through the task's container where it runs on this node; elsewhere nothing is read.
    async fn activity(&self, id: &str, ssh_port: u16) -> ContainerActivity {
        match self.local_container(id).await {
            Ok(Some(container)) => self.docker.activity(&container, ssh_port).await,
            _ => ContainerActivity::default(),
        }
    }

    /// Through the task's container, which the engine can reach only on this node.
    async fn exec_as(&self, id: &str, uid: u32, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        match self.local_container(id).await? {
            Some(container) => self.docker.exec_as(&container, uid, command, timeout).await,
            None => Err(Error::Unavailable(format!(
                "service {id} has no container on this node; commands reach sessions on this node only"
            ))),
        }
    }

    /// Through the task's container where it runs on this node.
    async fn oom_kills(&self, id: &str) -> Option<u64> {
        let container = self.local_container(id).await.ok()??;
        self.docker.oom_kills(&container).await
    }

    async fn instances_on_network(&self, network: &str) -> Result<Vec<String>> {
        let net_id = match self.client().inspect_network(network, None).await {
            Ok(n) => n.id.unwrap_or_default(),
            Err(e) if status(&e) == Some(404) => return Ok(Vec::new()),
            Err(e) => return Err(map_err(e, &format!("inspect network {network}"))),
        };
        let filters = HashMap::from([("label", vec![LABEL_INSTANCE])]);
        let services = match self
            .client()
            .list_services(Some(ListServicesOptionsBuilder::new().filters(&filters).build()))
            .await
        {
            Ok(s) => s,
            // Not a manager: `create` says so with the fix.
            Err(e) if status(&e) == Some(503) => return Ok(Vec::new()),
            Err(e) => return Err(map_err(e, "list services")),
        };
        let mut ids: Vec<String> = services
            .into_iter()
            .filter_map(|s| s.spec)
            .filter(|spec| {
                let nets = spec.task_template.as_ref().and_then(|t| t.networks.clone()).unwrap_or_default();
                nets.iter().any(|n| n.target.as_deref() == Some(&net_id) || n.target.as_deref() == Some(network))
            })
            .filter_map(|spec| spec.labels?.remove(LABEL_INSTANCE))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn files_at_create(&self) -> bool {
        true
    }

    /// From a container created (never started) from the image on this node, then removed.
    async fn read_image_file(&self, image: &str, path: &str) -> Result<Vec<u8>> {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["/bin/true".into()]),
            cmd: Some(vec![]),
            labels: Some(HashMap::from([("sandman.probe".to_string(), "image-accounts".to_string())])),
            ..Default::default()
        };
        let created = self
            .client()
            .create_container(Some(CreateContainerOptionsBuilder::new().build()), body)
            .await
            .map_err(|e| map_err(e, &format!("create a container from {image} to read {path}")))?;
        let read = self.docker.read_file(&created.id, path).await;
        let _ = self.docker.remove(&created.id).await;
        read
    }

    async fn placement(&self, id: &str) -> Result<Option<Placement>> {
        let tasks = self.tasks(id).await?;
        let Some(node_id) = tasks.iter().find_map(|t| t.node_id.clone()).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let node =
            self.client().inspect_node(&node_id).await.map_err(|e| map_err(e, &format!("inspect node {node_id}")))?;
        let address = node.status.and_then(|s| s.addr).unwrap_or_default();
        Ok(Some(Placement { node_id, address }))
    }

    async fn cluster(&self) -> Result<Option<ClusterInfo>> {
        let mut info = self.cluster_state().await?;
        if info.manager {
            info.nodes = self.nodes().await?;
        }
        Ok(Some(info))
    }

    /// Labels this node with its GPUs (through the engine, which must be a manager) and makes
    /// its config-only network. On a worker, the error gives the command to run on a manager.
    async fn register_node(&self, gpus: &[String], network: &str) -> Result<NodeInfo> {
        let info = self.cluster_state().await?;
        if info.state != "active" {
            return Err(Error::Unavailable(format!(
                "this Docker engine is not in a swarm (state {:?}): join it first (docker swarm join)",
                info.state
            )));
        }
        ensure_local_network(self.client(), &local_network(network), &bridge_name(network)).await?;
        let value = gpus.join(",");
        if !info.manager {
            return Err(Error::Unavailable(format!(
                "this node ({}) is a swarm worker, which cannot write node labels; its session network is ready. \
                 On a manager run: docker node update --label-add {LABEL_GPUS}={value} {}",
                info.node_id, info.node_id
            )));
        }
        let node = self
            .client()
            .inspect_node(&info.node_id)
            .await
            .map_err(|e| map_err(e, &format!("inspect node {}", info.node_id)))?;
        let version = node.version.and_then(|v| v.index).unwrap_or(0) as i64;
        let mut spec: NodeSpec = node.spec.unwrap_or_default();
        let mut labels = spec.labels.unwrap_or_default();
        labels.insert(LABEL_GPUS.into(), value);
        spec.labels = Some(labels);
        self.client()
            .update_node(&info.node_id, spec, UpdateNodeOptionsBuilder::new().version(version).build())
            .await
            .map_err(|e| map_err(e, &format!("label node {}", info.node_id)))?;
        let nodes = self.nodes().await?;
        nodes
            .into_iter()
            .find(|n| n.id == info.node_id)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("node {} vanished after its update", info.node_id)))
    }
}

/// The session bridge's device name on every node (at most 15 characters, as Linux allows),
/// derived from the network's name so that each node computes the same one.
pub fn bridge_name(network: &str) -> String {
    // FNV-1a: short and stable.
    let hash = network.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("sm-{hash:08x}")
}

/// The config-only network carrying the session bridge's options on this node: no traffic
/// between containers, and the bridge's name.
async fn ensure_local_network(client: &bollard::Docker, local: &str, bridge: &str) -> Result<()> {
    match client.inspect_network(local, None).await {
        Ok(_) => return Ok(()),
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => return Err(map_err(e, &format!("inspect network {local}"))),
    }
    let request = NetworkCreateRequest {
        name: local.to_string(),
        config_only: Some(true),
        options: Some(HashMap::from([
            (ICC_OPTION.to_string(), "false".to_string()),
            (BRIDGE_NAME_OPTION.to_string(), bridge.to_string()),
        ])),
        labels: Some(HashMap::from([("sandman".to_string(), "sessions".to_string())])),
        ..Default::default()
    };
    match client.create_network(request).await {
        Ok(_) => Ok(()),
        Err(e) if status(&e) == Some(409) => Ok(()),
        Err(e) => Err(map_err(e, &format!("create network {local}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::SessionLimits;
    use bollard::models::TaskStatus;

    fn task(index: u64, state: TaskState) -> Task {
        Task {
            version: Some(bollard::models::ObjectVersion { index: Some(index) }),
            status: Some(TaskStatus { state: Some(state), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_running_newest_task_is_running() {
        assert_eq!(service_state(&[]), "created");
        let mut tasks = vec![task(1, TaskState::RUNNING), task(5, TaskState::FAILED)];
        newest_first(&mut tasks);
        assert_eq!(service_state(&tasks), "failed");
        assert_eq!(service_state(&[task(3, TaskState::RUNNING)]), RUNNING);
        assert_eq!(service_state(&[task(3, TaskState::REJECTED)]), "rejected");
        assert_eq!(service_state(&[task(3, TaskState::SHUTDOWN)]), "shutdown");
        assert_eq!(service_state(&[task(3, TaskState::STARTING)]), "starting");
    }

    #[test]
    fn home_and_gpu_nodes_must_agree() {
        assert_eq!(placement_constraints("a", Some("n1"), None).unwrap(), vec!["node.id==n1"]);
        assert_eq!(placement_constraints("a", None, Some("n2")).unwrap(), vec!["node.id==n2"]);
        assert_eq!(placement_constraints("a", Some("n2"), Some("n2")).unwrap(), vec!["node.id==n2"]);
        assert!(placement_constraints("a", None, None).unwrap().is_empty());
        let e = placement_constraints("alice", Some("n1"), Some("n2")).unwrap_err();
        assert!(matches!(&e, Error::Conflict(m) if m.contains("workspace_nfs") && m.contains("n1")), "{e}");
    }

    #[test]
    fn every_node_names_the_session_bridge_alike_within_linux_limits() {
        let a = bridge_name("sandman");
        assert_eq!(a, bridge_name("sandman"));
        assert_ne!(a, bridge_name("sandman-test-x"));
        assert!(a.len() <= 15 && a.starts_with("sm-"), "{a}");
    }

    #[test]
    fn gpu_labels_are_comma_lists() {
        assert_eq!(gpu_list(" GPU-1, MIG-2 ,,"), vec!["GPU-1", "MIG-2"]);
        assert!(gpu_list("").is_empty());
    }

    fn spec(nfs: Option<&str>) -> ContainerSpec {
        ContainerSpec {
            name: "sandman-alice-12345678".into(),
            image: "gpu-workspace".into(),
            user: "alice".into(),
            uid: 20001,
            labels: HashMap::from([(LABEL_SESSION.to_string(), "s1".to_string())]),
            network: "worknet".into(),
            publish_address: "0.0.0.0".parse().unwrap(),
            host_port: 10005,
            container_port: 2222,
            workspace: "/srv/workspaces/alice".into(),
            user_keys_dir: "/var/lib/sandman/keys/alice".into(),
            limits: SessionLimits {
                memory: 1 << 30,
                cpus: 2.0,
                pids: 256,
                shm_size: 1 << 28,
                log_size: 10 << 20,
                log_files: 3,
                writable_layer: None,
            },
            command: vec!["/bin/sh".into()],
            gpu: Some(GpuAccess::EnvOnly("MIG-abc".into())),
            files: Vec::new(),
            home_node: None,
            workspace_nfs: nfs.map(str::to_string),
            routing_mesh: false,
        }
    }

    #[test]
    fn the_service_is_hardened_limited_and_never_restarted() {
        let files = vec![
            FileRef {
                id: "c1".into(),
                name: "sandman-alice-12345678.0".into(),
                file: FileSpec { path: "etc/passwd".into(), contents: vec![], uid: 0, mode: 0o644, secret: false },
            },
            FileRef {
                id: "s1".into(),
                name: "sandman-alice-12345678.1".into(),
                file: FileSpec {
                    path: "etc/sandman/ssh_host_ed25519_key".into(),
                    contents: vec![],
                    uid: 20001,
                    mode: 0o600,
                    secret: true,
                },
            },
        ];
        let s = service_spec(&spec(None), &files, vec!["node.id==n1".into()]);
        let task = s.task_template.unwrap();
        let c = task.container_spec.unwrap();
        assert_eq!(c.user.as_deref(), Some("20001:20001"));
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(c.init, Some(true));
        assert!(c.env.unwrap().contains(&"NVIDIA_VISIBLE_DEVICES=MIG-abc".to_string()));
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!(
            (limits.memory_bytes, limits.pids, limits.nano_cpus),
            (Some(1 << 30), Some(256), Some(2_000_000_000))
        );
        assert_eq!(task.restart_policy.unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::NONE));
        assert_eq!(task.placement.unwrap().constraints, Some(vec!["node.id==n1".to_string()]));
        let config = &c.configs.unwrap()[0];
        assert_eq!(config.file.as_ref().unwrap().name.as_deref(), Some("/etc/passwd"));
        let secret = &c.secrets.unwrap()[0];
        let f = secret.file.as_ref().unwrap();
        assert_eq!(
            (f.name.as_deref(), f.uid.as_deref(), f.mode),
            (Some("/etc/sandman/ssh_host_ed25519_key"), Some("20001"), Some(0o600))
        );
        let port = &s.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.publish_mode, Some(EndpointPortConfigPublishModeEnum::HOST));
        assert_eq!((port.published_port, port.target_port), (Some(10005), Some(2222)));
        let mesh = service_spec(&ContainerSpec { routing_mesh: true, ..spec(None) }, &files, vec![]);
        let port = &mesh.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.publish_mode, Some(EndpointPortConfigPublishModeEnum::INGRESS), "swarm_routing_mesh");
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/workspaces/alice"));
        assert_eq!(s.labels.unwrap().get(LABEL_SESSION).map(String::as_str), Some("s1"));
    }

    #[test]
    fn nfs_homes_are_volumes_with_the_users_export() {
        let s = service_spec(&spec(Some("nfs.example:/export/homes/")), &[], vec![]);
        let mounts = s.task_template.unwrap().container_spec.unwrap().mounts.unwrap();
        let m = &mounts[0];
        assert_eq!(m.typ, Some(MountType::VOLUME));
        assert_eq!(m.target.as_deref(), Some("/home/alice"));
        let options = m.volume_options.as_ref().unwrap().driver_config.as_ref().unwrap().options.as_ref().unwrap();
        assert_eq!(options["type"], "nfs");
        assert_eq!(options["o"], "addr=nfs.example,rw,nfsvers=4");
        assert_eq!(options["device"], ":/export/homes/alice");
        assert_eq!(mounts[1].target.as_deref(), Some("/workspace"));
    }
}
