//! The Docker engine through bollard.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig, NetworkCreateRequest, PortBinding,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};

use super::{
    ContainerActivity, ContainerSpec, Engine, ExecOutput, FileSpec, LABEL_INSTANCE, LABEL_SESSION, ManagedContainer,
    TarStream,
};
use crate::error::{Error, IoContext, Result};
use crate::gpu::GpuAccess;
use crate::progress::Progress;

/// The bridge driver's option for inter-container traffic.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The bridge driver's option naming the host's bridge device.
pub(super) const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// A bridge network's device: the name its option sets, else `br-` and the id's first 12 characters.
fn bridge_device(option: Option<&String>, id: &str) -> String {
    match option.filter(|o| !o.is_empty()) {
        Some(name) => name.clone(),
        None => format!("br-{}", &id[..id.len().min(12)]),
    }
}

pub struct Docker {
    pub(super) client: bollard::Docker,
}

impl Docker {
    /// Connects (honouring `DOCKER_HOST`) and agrees an API version with the engine.
    pub(super) async fn connect() -> Result<Docker> {
        let client =
            bollard::Docker::connect_with_defaults().map_err(unreachable)?.with_timeout(Duration::from_secs(120));
        let client = client.negotiate_version().await.map_err(unreachable)?;
        Ok(Docker { client })
    }
}

#[async_trait::async_trait]
impl Engine for Docker {
    async fn version(&self) -> Result<String> {
        let v = self.client.version().await.map_err(unreachable)?;
        Ok(format!("{} (API {})", v.version.unwrap_or_default(), v.api_version.unwrap_or_default()))
    }

    async fn storage(&self) -> Result<(String, Option<String>)> {
        let info = self.client.info().await.map_err(|e| map_err(e, "read engine info"))?;
        let backing = info
            .driver_status
            .unwrap_or_default()
            .into_iter()
            .find(|pair| pair.first().is_some_and(|k| k == "Backing Filesystem"))
            .and_then(|pair| pair.into_iter().nth(1));
        Ok((info.driver.unwrap_or_default(), backing))
    }

    /// Container runtimes the engine knows (`runc`, and `nvidia` where the NVIDIA toolkit is set up).
    async fn runtimes(&self) -> Result<Vec<String>> {
        let info = self.client.info().await.map_err(|e| map_err(e, "read engine info"))?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// The image's content id (`sha256:…`), or `None` if it is not on this host.
    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.client.inspect_image(image).await {
            Ok(i) => Ok(Some(i.id.unwrap_or_else(|| image.to_string()))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_err(e, &format!("inspect image {image}"))),
        }
    }

    /// Creates the session bridge network unless it exists. Containers on it cannot reach
    /// one another (inter-container communication off); they reach the outside as usual.
    /// Callers serialise this with a file lock: old engines allow duplicate network names.
    async fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: Progress<'_>,
    ) -> Result<()> {
        let args: HashMap<&str, &str> = build_args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .build();
        let mut stream = self.client.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| map_err(e, &format!("build image {tag}")))?;
            if let Some(line) = info.stream.as_deref().map(str::trim).filter(|l| l.starts_with("Step ")) {
                progress(line);
            }
        }
        Ok(())
    }

    async fn import_image(&self, rootfs: TarStream, tag: &str) -> Result<()> {
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(rootfs));
        let (repo, version) = tag.split_once(':').unwrap_or((tag, "latest"));
        let options = CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(version).build();
        let mut stream = self.client.create_image(Some(options), Some(body), None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| map_err(e, &format!("import image {tag}")))?;
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str) -> Result<()> {
        if self.network_exists(name).await? {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(ICC_OPTION.into(), "false".into())])),
            labels: Some(HashMap::from([("sandman.managed".into(), "true".into())])),
            ..Default::default()
        };
        match self.client.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(map_err(e, &format!("create network {name}"))),
        }
    }

    async fn network_icc(&self, name: &str) -> Result<Option<bool>> {
        if !self.network_exists(name).await? {
            return Ok(None);
        }
        let options = bollard::query_parameters::InspectNetworkOptions::default();
        let network = self
            .client
            .inspect_network(name, Some(options))
            .await
            .map_err(|e| map_err(e, &format!("inspect network {name}")))?;
        // A bridge allows inter-container traffic unless the option says false.
        let icc = network.options.unwrap_or_default().get(ICC_OPTION).is_none_or(|v| v != "false");
        Ok(Some(icc))
    }

    async fn network_bridge(&self, name: &str) -> Result<Option<String>> {
        let options = bollard::query_parameters::InspectNetworkOptions::default();
        let network = match self.client.inspect_network(name, Some(options)).await {
            Ok(n) => n,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(map_err(e, &format!("inspect network {name}"))),
        };
        // Inspect also matches by id or id prefix: the name must be the one asked for.
        if network.name.as_deref() != Some(name) {
            return Ok(None);
        }
        let driver = network.driver.unwrap_or_default();
        if driver != "bridge" {
            return Err(Error::Unavailable(format!(
                "network {name} uses the {driver} driver; sandman's sessions need a bridge network (remove it, and \
                 sandman creates one)"
            )));
        }
        Ok(Some(bridge_device(
            network.options.unwrap_or_default().get(BRIDGE_NAME_OPTION),
            &network.id.unwrap_or_default(),
        )))
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        let filters = HashMap::from([("name", vec![name])]);
        let list = self
            .client
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| map_err(e, "list networks"))?;
        // The engine's name filter matches substrings; compare exactly.
        Ok(list.iter().any(|n| n.name.as_deref() == Some(name)))
    }

    /// Creates (does not start) a hardened container for one session. A missing network is
    /// `NotFound`, so that callers create it only when needed.
    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let port_key = format!("{}/tcp", spec.container_port);
        let mut env = vec![format!("USER={}", spec.user), format!("HOME=/home/{}", spec.user)];
        let mut device_requests = None;
        match &spec.gpu {
            Some(GpuAccess::NvidiaDevice(uuid)) => {
                device_requests = Some(vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    device_ids: Some(vec![uuid.clone()]),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]);
            }
            Some(GpuAccess::Cdi(name)) => {
                device_requests = Some(vec![DeviceRequest {
                    driver: Some("cdi".into()),
                    device_ids: Some(vec![name.clone()]),
                    ..Default::default()
                }]);
                // Where the NVIDIA runtime is the engine's default, an image's own
                // NVIDIA_VISIBLE_DEVICES (CUDA images say `all`) would add every GPU beside the CDI one.
                env.push("NVIDIA_VISIBLE_DEVICES=void".into());
            }
            Some(GpuAccess::EnvOnly(uuid)) => env.push(format!("NVIDIA_VISIBLE_DEVICES={uuid}")),
            None => env.push("NVIDIA_VISIBLE_DEVICES=void".into()),
        }
        let host_config = HostConfig {
            // The home is also at /workspace, the original API's path, which scripts use.
            binds: Some(vec![
                format!("{}:/home/{}:rw", spec.workspace.display(), spec.user),
                format!("{}:/workspace:rw", spec.workspace.display()),
                format!("{}:/{}:ro", spec.user_keys_dir.display(), crate::ssh::USER_KEYS_DIR),
            ]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            pids_limit: Some(spec.limits.pids),
            // Memory and swap equal: no swap beyond the memory limit.
            memory: Some(spec.limits.memory as i64),
            memory_swap: Some(spec.limits.memory as i64),
            nano_cpus: Some(spec.limits.nano_cpus()),
            shm_size: Some(spec.limits.shm_size as i64),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), spec.limits.log_size.to_string()),
                    ("max-file".to_string(), spec.limits.log_files.to_string()),
                ])),
            }),
            // Where the storage driver allows it (checked before the create); bytes.
            storage_opt: spec.limits.writable_layer.map(|size| HashMap::from([("size".to_string(), size.to_string())])),
            init: Some(true),
            network_mode: Some(spec.network.clone()),
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(spec.publish_address.to_string()),
                    host_port: Some(spec.host_port.to_string()),
                }]),
            )])),
            device_requests,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(format!("{}:{}", spec.uid, spec.uid)),
            hostname: Some(format!("sandman-{}", spec.user)),
            cmd: Some(spec.command.clone()),
            entrypoint: Some(vec![]),
            env: Some(env),
            working_dir: Some(format!("/home/{}", spec.user)),
            labels: Some(spec.labels.clone()),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let created = self.client.create_container(Some(options), body).await.map_err(|e| match status(&e) {
            Some(404) if e.to_string().contains("network") => {
                Error::NotFound(format!("network {} not found", spec.network))
            }
            Some(404) => Error::Unavailable(format!(
                "image {} is not on this host: build it with `sandman image build` (add --offline without a registry)",
                spec.image
            )),
            _ => map_err(e, &format!("create container {}", spec.name)),
        })?;
        Ok(created.id)
    }

    /// Reads one file out of a (created or running) container.
    async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        let options = DownloadFromContainerOptionsBuilder::new().path(path).build();
        let bytes: Vec<u8> = self
            .client
            .download_from_container(id, Some(options))
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .map_err(|e| map_err(e, &format!("read {path} from container {id}")))?;
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entry = archive
            .entries()
            .and_then(|mut es| es.next().transpose())
            .context("container archive is unreadable")?
            .ok_or_else(|| anyhow!("{path} is missing from container {id}"))?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut out)
            .io_context(|| format!("read {path} from container {id}'s archive"))?;
        Ok(out)
    }

    /// Places files into a container (as a tar archive at `/`), with owner and mode.
    async fn write_files(&self, id: &str, files: &[FileSpec]) -> Result<()> {
        let archive = files_archive(files).io_context(|| format!("assemble the files for container {id}"))?;
        let options = UploadToContainerOptionsBuilder::new().path("/").build();
        self.client
            .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| map_err(e, &format!("copy files into container {id}")))
    }

    /// Starts a created container. A missing network is `NotFound` (engines check it here or at
    /// create, depending on their version).
    async fn start(&self, id: &str) -> Result<()> {
        self.client.start_container(id, None).await.map_err(|e| {
            let text = e.to_string();
            // An engine in swarm mode answers a missing network with 500 "Could not attach to
            // network X: ... NotFound".
            if (status(&e) == Some(404) && text.contains("network"))
                || (text.contains("Could not attach to network") && text.contains("NotFound"))
            {
                Error::NotFound(text)
            } else if text.contains("port is already allocated") || text.contains("address already in use") {
                Error::Exhausted(format!("the chosen host port is taken by another program: {text}"))
            } else {
                map_err(e, &format!("start container {id}"))
            }
        })
    }

    /// The container's address on `network`, if it has one.
    async fn ip_address(&self, id: &str, network: &str) -> Result<Option<String>> {
        let info = self
            .client
            .inspect_container(id, None)
            .await
            .map_err(|e| map_err(e, &format!("inspect container {id}")))?;
        Ok(info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty()))
    }

    /// Removes a container by id or name, running or not. Gone already is fine.
    /// A conflict (409: another removal in progress, or the container busy starting) is retried
    /// until the container is gone, so that success always means it no longer exists.
    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        let mut last = None;
        for _ in 0..50 {
            match self.client.remove_container(id, Some(options.clone())).await {
                Ok(()) => return Ok(()),
                Err(e) if status(&e) == Some(404) => return Ok(()),
                Err(e) if status(&e) == Some(409) => last = Some(e),
                Err(e) => return Err(map_err(e, &format!("remove container {id}"))),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(map_err(last.expect("the loop ran"), &format!("remove container {id}")))
    }

    /// Every container labelled for this sandman instance, running or not.
    async fn list_managed(&self, instance: &str) -> Result<Vec<ManagedContainer>> {
        let label = format!("{LABEL_INSTANCE}={instance}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.client.list_containers(Some(options)).await.map_err(|e| map_err(e, "list containers"))?;
        Ok(list
            .into_iter()
            .map(|c| ManagedContainer {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                session_id: c.labels.and_then(|mut l| l.remove(LABEL_SESSION)),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect())
    }

    /// Read from the container's memory cgroup on this host: `oom_kill` of `memory.oom_control`
    /// (cgroup v1) or `memory.events` (v2), under the cgroupfs or the systemd driver's parent.
    async fn oom_kills(&self, id: &str) -> Option<u64> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let candidates = [
            format!("/sys/fs/cgroup/memory/docker/{id}/memory.oom_control"),
            format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope/memory.oom_control"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.events"),
            format!("/sys/fs/cgroup/docker/{id}/memory.events"),
        ];
        let text = candidates.iter().find_map(|p| std::fs::read_to_string(p).ok())?;
        text.lines().find_map(|l| l.strip_prefix("oom_kill "))?.trim().parse().ok()
    }

    /// The init process's network namespace (`/proc/<pid>/net/tcp` and `tcp6`) and cgroup
    /// (`cpuacct.usage` on cgroup v1, `cpu.stat`'s `usage_usec` on v2), read on this host.
    async fn activity(&self, id: &str, ssh_port: u16) -> ContainerActivity {
        let pid = match self.client.inspect_container(id, None).await {
            Ok(info) => info.state.and_then(|s| s.pid).filter(|p| *p > 0),
            Err(e) => {
                tracing::debug!(container = id, error = %e, "cannot inspect the container for its activity");
                None
            }
        };
        let Some(pid) = pid else {
            return ContainerActivity::default();
        };
        tokio::task::spawn_blocking(move || ContainerActivity {
            ssh_connections: established_on(pid, ssh_port),
            cpu_usage_usec: cgroup_cpu_usec(pid),
        })
        .await
        .unwrap_or_default()
    }

    async fn exec_as(&self, id: &str, uid: u32, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let run = async {
            let exec = self
                .client
                .create_exec(
                    id,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        user: Some(format!("{uid}:{uid}")),
                        privileged: Some(false),
                        cmd: Some(command.to_vec()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| map_err(e, &format!("run a command in container {id}")))?;
            let mut output = String::new();
            match self.client.start_exec(&exec.id, None).await.map_err(|e| map_err(e, "start a command"))? {
                StartExecResults::Attached { output: mut stream, .. } => {
                    while let Some(Ok(chunk)) = stream.next().await {
                        output.push_str(&chunk.to_string());
                    }
                }
                StartExecResults::Detached => {}
            }
            let inspected =
                self.client.inspect_exec(&exec.id).await.map_err(|e| map_err(e, "read a command's exit status"))?;
            Ok(ExecOutput { exit_code: inspected.exit_code.unwrap_or(-1), output })
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            Error::Unavailable(format!("a command in container {id} did not finish within {}s", timeout.as_secs()))
        })?
    }

    async fn instances_on_network(&self, network: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("label", vec![LABEL_INSTANCE]), ("network", vec![network])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.client.list_containers(Some(options)).await.map_err(|e| map_err(e, "list containers"))?;
        let mut ids: Vec<String> = list.into_iter().filter_map(|c| c.labels?.remove(LABEL_INSTANCE)).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The last lines of a container's log, for error messages.
    async fn log_tail(&self, id: &str, lines: usize) -> String {
        use bollard::query_parameters::LogsOptionsBuilder;
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&lines.to_string()).build();
        let chunks: Vec<String> =
            self.client.logs(id, Some(options)).map_ok(|l| l.to_string()).try_collect().await.unwrap_or_default();
        chunks.concat().trim().to_string()
    }
}

/// Established TCP connections (state 01) whose local port is `port`, in the network namespace
/// of process `pid`; `None` when neither table can be read.
fn established_on(pid: i64, port: u16) -> Option<u32> {
    let mut found = None;
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            *found.get_or_insert(0) += count_established(&text, port);
        }
    }
    found
}

/// Counts the rows of a `/proc/net/tcp`-style table that are established on local port `port`.
pub(crate) fn count_established(table: &str, port: u16) -> u32 {
    let wanted = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            state == "01" && local.rsplit_once(':').is_some_and(|(_, p)| p.eq_ignore_ascii_case(&wanted))
        })
        .count() as u32
}

/// The cumulative CPU time of process `pid`'s cgroup, in microseconds: cgroup v1's
/// `cpuacct.usage` (nanoseconds) where the process has a cpuacct cgroup, else v2's `cpu.stat`.
fn cgroup_cpu_usec(pid: i64) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let safe = |path: &str| !path.split('/').any(|c| c == "..");
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "cpuacct") && safe(path) {
            for dir in ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"] {
                if let Ok(text) = std::fs::read_to_string(format!("/sys/fs/cgroup/{dir}{path}/cpuacct.usage")) {
                    return text.trim().parse::<u64>().ok().map(|ns| ns / 1000);
                }
            }
        }
    }
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).filter(|p| safe(p))?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].iter().find_map(|root| {
        let text = std::fs::read_to_string(format!("{root}{path}/cpu.stat")).ok()?;
        text.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()
    })
}

pub(super) fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Errors the engine answered are failures of the operation, named with their fix where one is
/// known; anything else means we could not talk to it at all. Both are `Unavailable`: the engine,
/// not sandman, failed.
pub(super) fn map_err(e: BollardError, what: &str) -> Error {
    let message = match e {
        BollardError::DockerResponseServerError { status_code, message } => format!("{message} (HTTP {status_code})"),
        BollardError::DockerStreamError { error } => error,
        other => return unreachable(other),
    };
    Error::Unavailable(explain(&format!("docker could not {what}: {message}")))
}

/// Adds the fix for the engine failures whose cause is known.
fn explain(failure: &str) -> String {
    let lower = failure.to_lowercase();
    if lower.contains("could not select device driver") {
        format!(
            "{failure}; the NVIDIA container toolkit is missing or not configured: install nvidia-container-toolkit \
             and run `nvidia-ctk runtime configure --runtime=docker`, then restart Docker \
             (or set gpu_device_access = \"cdi\" with CDI specs)"
        )
    } else if lower.contains("no space left on device") {
        format!("{failure}; the disk holding Docker's data (usually /var/lib/docker) is full: free space there")
    } else {
        failure.to_string()
    }
}

pub(super) fn unreachable(e: BollardError) -> Error {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    Error::Unavailable(format!(
        "cannot reach the Docker engine at {host} ({e}); start it (systemctl start docker) or set DOCKER_HOST"
    ))
}

/// The tar archive `write_files` uploads: each file with its root-owned parent directories.
pub(super) fn files_archive(files: &[FileSpec]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let now = chrono::Utc::now().timestamp() as u64;
    let mut dirs_done = std::collections::HashSet::new();
    for f in files {
        // Parent directories first, root-owned and world-readable.
        let mut parent = std::path::Path::new(&f.path).parent();
        let mut parents = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            parents.push(p.to_path_buf());
            parent = p.parent();
        }
        for dir in parents.into_iter().rev() {
            if dirs_done.insert(dir.clone()) && dir.as_os_str() != "etc" {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(now);
                h.set_size(0);
                builder.append_data(&mut h, &dir, std::io::empty())?;
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_uid(u64::from(f.uid));
        h.set_gid(u64::from(f.uid));
        h.set_mtime(now);
        h.set_size(f.contents.len() as u64);
        builder.append_data(&mut h, &f.path, f.contents.as_slice())?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_device_is_the_option_or_the_id_prefix() {
        assert_eq!(bridge_device(None, "0123456789abcdef0123"), "br-0123456789ab");
        assert_eq!(bridge_device(Some(&"docker0".to_string()), "0123456789abcdef"), "docker0");
        assert_eq!(bridge_device(Some(&String::new()), "0123456789abcdef"), "br-0123456789ab");
    }

    #[test]
    fn established_connections_are_counted_on_the_port_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000 20000 0 1 1 0000000000000000 100 0 0 10 0
   1: 0200120A:08AE 0100120A:D2F4 01 00000000:00000000 02:0009F6E1 00000000 20000 0 2 2 0000000000000000 20 4 30 10 -1
   2: 0200120A:08AE 0100120A:D2F6 01 00000000:00000000 02:0009F6E1 00000000 20000 0 3 2 0000000000000000 20 4 30 10 -1
   3: 0200120A:08AE 0100120A:D2F8 06 00000000:00000000 03:00000DA4 00000000     0 0 0 3 0000000000000000
   4: 0200120A:D2F4 0100120A:08AE 01 00000000:00000000 02:0009F6E1 00000000 20000 0 4 2 0000000000000000 20 4 30 10 -1
";
        assert_eq!(count_established(table, 2222), 2, "listening, TIME_WAIT and outgoing rows are not sessions");
        assert_eq!(count_established(table, 22), 0);
        let v6 = "  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000200120A:08AE 0000000000000000FFFF00000100120A:D2F4 01 0";
        assert_eq!(count_established(v6, 2222), 1);
    }

    #[test]
    fn engine_failures_are_unavailable_with_their_fix() {
        let server =
            |message: &str| BollardError::DockerResponseServerError { status_code: 500, message: message.to_string() };
        let e = map_err(server("could not select device driver \"nvidia\" with capabilities: [[gpu]]"), "start x");
        assert!(matches!(&e, Error::Unavailable(m) if m.contains("nvidia-container-toolkit")), "{e}");
        let e = map_err(server("write /var/lib/docker/x: no space left on device"), "create x");
        assert!(matches!(&e, Error::Unavailable(m) if m.contains("disk") && m.contains("full")), "{e}");
        let e = map_err(server("something else"), "remove container x");
        assert!(
            matches!(&e, Error::Unavailable(m) if m == "docker could not remove container x: something else (HTTP 500)")
        );
        let e = map_err(BollardError::RequestTimeoutError, "list containers");
        assert!(matches!(&e, Error::Unavailable(m) if m.contains("systemctl start docker")), "{e}");
    }
}
