//! `sandman doctor`: every check names what it found and, when it fails, the fix.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use super::print_json;
use crate::config::{GpuBackendKind, GpuDeviceAccess, MigMode, Settings};
use crate::engine::{self, Engine};
use crate::error::{Error, Result};
use crate::store::{Identity, Store};

#[derive(Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// Swarm mode: the engine is an active manager, its nodes (with the GPUs they registered), and
/// the hardening a service cannot have.
async fn swarm_checks(engine: &dyn Engine, checks: &mut Vec<Check>) {
    match engine.cluster().await {
        Ok(Some(c)) if c.state == "active" && c.manager => {
            let nodes: Vec<String> = c
                .nodes
                .iter()
                .map(|n| {
                    let role = if n.manager { "manager" } else { "worker" };
                    format!(
                        "{} {} ({role}, {}, {}, {} GPU devices)",
                        n.id,
                        n.hostname,
                        n.address,
                        n.state,
                        n.gpus.len()
                    )
                })
                .collect();
            checks.push(pass("swarm", format!("node {} is an active manager; nodes: {}", c.node_id, nodes.join("; "))));
        }
        Ok(Some(c)) if c.state == "active" => checks.push(fail(
            "swarm",
            format!("node {} is a worker", c.node_id),
            "run sandman on a manager, or point DOCKER_HOST at one",
        )),
        Ok(c) => checks.push(fail(
            "swarm",
            format!("this engine is not in a swarm (state {:?})", c.map(|c| c.state).unwrap_or_default()),
            "docker swarm init --advertise-addr <this host's address>, or set engine = \"docker\"",
        )),
        Err(e) => checks.push(fail("swarm", e.to_string(), "check the Docker engine")),
    }
    checks.push(pass(
        "no-new-privileges",
        "not set on swarm services (the engine's API cannot ask for it); the workspace image has no setuid or \
         setgid files, so nothing in a session can gain privileges",
    ));
}

fn pass(check: &'static str, detail: impl Into<String>) -> Check {
    Check { check, ok: true, detail: detail.into(), fix: None }
}

fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { check, ok: false, detail: detail.into(), fix: Some(fix.into()) }
}

pub async fn run(settings: &Settings, json: bool, adopt_database: bool) -> Result<()> {
    if adopt_database {
        Store::open(&settings.db)?.adopt(&settings.db)?;
        eprintln!("{} is now this host's database", settings.db.display());
    }
    let mut checks = Vec::new();
    checks.push(if unsafe { libc::geteuid() } == 0 {
        pass("privileges", "running as root")
    } else {
        fail("privileges", "not root: workspaces cannot be given to session uids", "run sandman as root (sudo)")
    });

    let docker = engine::connect(settings).await;
    match &docker {
        Err(e) => {
            checks.push(fail("docker", e.to_string(), "start the engine (systemctl start docker) or set DOCKER_HOST"))
        }
        Ok(docker) => {
            checks.push(pass("docker", format!("engine {}", docker.version().await.unwrap_or_default())));
            checks.push(match docker.image_exists(&settings.image).await {
                Ok(true) => pass("image", format!("{} is present", settings.image)),
                Ok(false) => fail(
                    "image",
                    format!("{} is not on this host", settings.image),
                    "sandman image build (add --offline on hosts without a registry)",
                ),
                Err(e) => fail("image", e.to_string(), "check the Docker engine"),
            });
            checks.push(match docker.storage().await {
                Ok((driver, backing)) => writable_layer(settings, &driver, backing.as_deref()),
                Err(e) => fail("writable layer", e.to_string(), "check the Docker engine"),
            });
            checks.push(match docker.network_icc(&settings.network).await {
                Ok(Some(true)) if !settings.allow_icc => fail(
                    "network",
                    crate::sessions::network_icc_problem(&settings.network),
                    format!(
                        "docker network rm {} (sandman then creates it with inter-container traffic off)",
                        settings.network
                    ),
                ),
                Ok(Some(true)) => {
                    pass("network", format!("{} exists; inter-container traffic on (allow_icc)", settings.network))
                }
                Ok(Some(false)) => pass("network", format!("{} exists; inter-container traffic off", settings.network)),
                Ok(None) => pass("network", format!("{} will be created by the first session", settings.network)),
                Err(e) => fail("network", e.to_string(), "check the Docker engine"),
            });
            checks.push(firewall(settings, docker.as_ref()).await);
            if settings.engine == crate::config::EngineKind::Swarm {
                swarm_checks(docker.as_ref(), &mut checks).await;
            }
        }
    }

    gpu_checks(settings, docker.as_deref().ok(), &mut checks).await;
    checks.push(writable_dir(
        "workspace root",
        &settings.workspace_root,
        "create it (mkdir -p) as root or set workspace_root",
    ));
    checks.push(workspace_quota(settings));
    checks.push(limits(settings));
    checks.push(match Store::open(&settings.db).map(|s| s.identity().clone()) {
        Ok(Identity::Moved { recorded, actual }) => fail(
            "database",
            format!(
                "{} is a copy or was moved (file {recorded}, now {actual}); sandman refuses to act on it",
                settings.db.display()
            ),
            "use the original; or, if this file is the host's database from now on, sandman doctor --adopt-database",
        ),
        Ok(_) => pass("database", format!("{} opens", settings.db.display())),
        Err(e) => fail("database", e.to_string(), "make its directory writable or set --db"),
    });

    let (start, end) = (settings.ssh_port_start, settings.ssh_port_end);
    let free =
        (start..=end).filter(|p| TcpListener::bind(SocketAddr::new(settings.publish_address, *p)).is_ok()).count();
    let total = usize::from(end - start) + 1;
    checks.push(if free > 0 {
        pass("ports", format!("{free} of {total} ports in {start}-{end} free on {}", settings.publish_address))
    } else {
        fail(
            "ports",
            format!("none of the {total} ports in {start}-{end} is free"),
            "widen ssh_port_start/ssh_port_end or remove sessions",
        )
    });

    let all_ok = checks.iter().all(|c| c.ok);
    if json {
        print_json(&checks)?;
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY).set_header(["", "CHECK", "DETAIL", "FIX"]);
        for c in &checks {
            table.add_row([if c.ok { "ok" } else { "FAIL" }, c.check, &c.detail, c.fix.as_deref().unwrap_or("")]);
        }
        println!("{table}");
    }
    if all_ok {
        Ok(())
    } else {
        Err(Error::Unavailable(format!("{} check(s) failed", checks.iter().filter(|c| !c.ok).count())))
    }
}

/// The egress policy: sandman's rules on the session bridge match the settings.
async fn firewall(settings: &Settings, docker: &dyn Engine) -> Check {
    const CHECK: &str = "firewall";
    const FIX: &str = "sandman firewall apply (as root, with iptables installed); or set block_host = false and \
                       blocked_cidrs = [] to run sessions without these rules";
    let policy = match crate::firewall::Policy::from_settings(settings) {
        Ok(p) => p,
        Err(e) => return fail(CHECK, e.to_string(), "fix blocked_cidrs / allowed_host_ports in the config"),
    };
    let bridge = match docker.network_bridge(&settings.network).await {
        Ok(b) => b,
        Err(e) => return fail(CHECK, e.to_string(), "check the Docker engine"),
    };
    let network = settings.network.clone();
    let (for_status, b) = (policy.clone(), bridge.clone());
    let status = tokio::task::spawn_blocking(move || {
        crate::firewall::status(&crate::firewall::Iptables, &for_status, &network, b.as_deref())
    })
    .await
    .unwrap_or_else(|e| Err(Error::Internal(anyhow::anyhow!("{e}"))));
    let what = format!(
        "block_host = {}, blocked_cidrs = [{}], allowed_host_ports = {:?}",
        policy.block_host,
        policy.blocked_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        policy.allowed_host_ports
    );
    match (status, bridge) {
        (Err(e), _) if policy.enabled() => fail(CHECK, format!("cannot read the rules ({e}); {what}"), FIX),
        (Err(e), _) => pass(CHECK, format!("off ({what}); iptables unreadable: {e}")),
        (Ok(_), None) if policy.enabled() => {
            pass(CHECK, format!("{what}: installed when the first session creates network {}", settings.network))
        }
        (Ok(_), None) => pass(CHECK, format!("off ({what})")),
        (Ok(s), Some(b)) if s.up_to_date && policy.enabled() => {
            pass(CHECK, format!("rules on bridge {b} match the settings ({what})"))
        }
        (Ok(s), Some(_)) if s.up_to_date => pass(CHECK, format!("off ({what}); sandman has no rules installed")),
        (Ok(s), Some(b)) => fail(
            CHECK,
            format!(
                "sandman's rules on bridge {b} differ from the settings ({what}): {} rule(s) now, {} wanted",
                s.current.len(),
                s.desired.len()
            ),
            FIX,
        ),
    }
}

/// `writable_layer`: whether it is set (in `[limits]` or a profile) and whether the engine's
/// storage can enforce it (`--storage-opt size=`; see `disk::layer_limit_possible`).
fn writable_layer(settings: &Settings, driver: &str, backing: Option<&str>) -> Check {
    let storage = crate::disk::storage_words(driver, backing);
    let possible = crate::disk::layer_limit_possible(driver, backing);
    let wanted = settings.limits.writable_layer_wanted(&crate::limits::LimitRequest::default());
    match wanted {
        None if possible && settings.engine == crate::config::EngineKind::Docker => pass(
            "writable layer",
            format!(
                "writable_layer not set; storage driver {storage} can limit a container's writable layer{}",
                if driver == "overlay2" { " if the engine's data root is mounted with pquota" } else { "" }
            ),
        ),
        None => pass(
            "writable layer",
            format!(
                "writable_layer not set; storage driver {storage}{}: files written outside the home count against the engine's disk",
                if settings.engine == crate::config::EngineKind::Swarm {
                    " (swarm services cannot limit a writable layer)"
                } else {
                    " cannot limit a container's writable layer (needs overlay2 on xfs with pquota, btrfs, zfs or devicemapper)"
                }
            ),
        ),
        Some(size) => match crate::sessions::writable_layer_refusal(size, settings.engine, driver, backing) {
            None => pass(
                "writable layer",
                format!(
                    "writable_layer {} per session, enforced by storage driver {storage}{}",
                    crate::validate::format_size(size),
                    if driver == "overlay2" {
                        " (the engine refuses a create if its data root lacks pquota)"
                    } else {
                        ""
                    }
                ),
            ),
            Some(why) => fail(
                "writable layer",
                why,
                "unset writable_layer, or move Docker's data root to xfs mounted with pquota: session create is refused until then",
            ),
        },
    }
}

/// `workspace_quota`: whether the workspace root's file system has project quotas.
fn workspace_quota(settings: &Settings) -> Check {
    let (supported, mount) = crate::disk::project_quotas(&settings.workspace_root);
    match settings.workspace_quota {
        None if supported => pass("workspace quota", format!("not set; {mount} supports project quotas")),
        None => pass(
            "workspace quota",
            format!(
                "not set; {mount} has no project quotas, so workspaces cannot be limited (usage is shown by session show and /metrics)"
            ),
        ),
        Some(q) if supported => pass(
            "workspace quota",
            format!(
                "{} per workspace, enforced with project quotas on {mount} (project id = the user's uid)",
                crate::validate::format_size(q.0)
            ),
        ),
        Some(q) => fail(
            "workspace quota",
            crate::sessions::workspace_quota_refusal(q.0, &settings.workspace_root),
            "remove workspace_quota, or put workspace_root on ext4/xfs mounted with prjquota: session create is refused until then",
        ),
    }
}

/// What a session gets when its create asks for nothing (no MIG profile's overrides).
fn limits(settings: &Settings) -> Check {
    let size = crate::validate::format_size;
    match settings.limits.resolve(
        &crate::limits::LimitRequest::default(),
        None,
        settings.pids_limit,
        crate::limits::Host::detect(),
    ) {
        Ok(l) => pass(
            "limits",
            format!(
                "a session gets memory {} (no swap), {} CPUs, /dev/shm {}, {} pids, log {} x {} by default",
                size(l.memory),
                l.cpus,
                size(l.shm_size),
                l.pids,
                size(l.log_size),
                l.log_files
            ),
        ),
        Err(e) => fail("limits", e.to_string(), "fix [limits] in the config"),
    }
}

/// The GPU backend, the driver, MIG mode, and how containers will get their devices.
async fn gpu_checks(settings: &Settings, docker: Option<&dyn Engine>, checks: &mut Vec<Check>) {
    let backend = match crate::gpu::open(settings) {
        Ok(b) => b,
        Err(e) => {
            checks.push(fail(
                "gpu backend",
                e.to_string(),
                "install the NVIDIA driver, fix gpu_sim_file, or set gpu_backend = \"none\"",
            ));
            return;
        }
    };
    let name = backend.name();
    if name == "none" {
        let why = if settings.gpu_backend == GpuBackendKind::Auto {
            "no NVIDIA driver library found"
        } else {
            "gpu_backend = none"
        };
        checks.push(pass("gpu backend", format!("none ({why}): sessions are CPU-only")));
        return;
    }
    checks.push(pass("gpu backend", format!("{name}, mig_mode {:?}", settings.mig_mode).to_lowercase()));
    let mut mig_uuids = Vec::new();
    match backend.devices() {
        Err(e) => checks.push(fail("gpus", e.to_string(), "check the NVIDIA driver (nvidia-smi)")),
        Ok(gpus) if gpus.is_empty() => checks.push(fail("gpus", "the driver reports no GPU", "check nvidia-smi")),
        Ok(gpus) => {
            for g in &gpus {
                let detail = format!(
                    "{} {}: MIG {}, {} MIG device(s)",
                    g.name,
                    g.uuid,
                    if g.mig_enabled { "on" } else { "off" },
                    g.mig_instances.len()
                );
                mig_uuids.extend(g.mig_instances.iter().map(|m| m.uuid.clone()));
                checks.push(if g.mig_enabled && g.mig_instances.is_empty() && settings.mig_mode == MigMode::Static {
                    fail("mig", detail, "create instances (nvidia-smi mig -cgi ... -C) or set mig_mode = \"dynamic\"")
                } else {
                    pass("mig", detail)
                });
            }
        }
    }
    // Unreadable devices and geometry that differs from sandman's catalog: warnings, not failures.
    for warning in backend.diagnostics().unwrap_or_default() {
        checks.push(pass("gpu warning", warning));
    }
    if name == "sim" {
        checks.push(pass("container gpu access", "simulated: containers get NVIDIA_VISIBLE_DEVICES only"));
        return;
    }
    checks.push(match settings.gpu_device_access {
        GpuDeviceAccess::Nvidia => nvidia_driver_check(docker).await,
        GpuDeviceAccess::Cdi => cdi_check(docker, &mig_uuids).await,
    });
}

/// `--gpus`: Docker registers its `nvidia` device driver only when it finds the toolkit's hook
/// (`nvidia-container-runtime-hook`) on its PATH at start; the `nvidia` runtime is not needed.
async fn nvidia_driver_check(docker: Option<&dyn Engine>) -> Check {
    const CHECK: &str = "container gpu access";
    const HOOK: &str = "nvidia-container-runtime-hook";
    let Some(docker) = docker else { return fail(CHECK, "Docker is unreachable", "start the engine") };
    let runtimes = docker.runtimes().await.map(|r| r.join(", ")).unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path).map(|dir| dir.join(HOOK)).find(|p| p.is_file()) {
        Some(hook) => pass(
            CHECK,
            format!("{} present: Docker gives --gpus devices through it (runtimes: {runtimes})", hook.display()),
        ),
        None => fail(
            CHECK,
            format!("{HOOK} is not on PATH, so Docker has no nvidia device driver (runtimes: {runtimes})"),
            "install nvidia-container-toolkit, run nvidia-ctk runtime configure --runtime=docker, restart Docker",
        ),
    }
}

/// CDI: the engine must support it (Docker 25 and later, with the `cdi` feature enabled before
/// 28.2) and every MIG device must have its name in the generated spec.
async fn cdi_check(docker: Option<&dyn Engine>, mig_uuids: &[String]) -> Check {
    const CHECK: &str = "container gpu access";
    let version = match docker {
        Some(d) => d.version().await.unwrap_or_default(),
        None => return fail(CHECK, "Docker is unreachable", "start the engine"),
    };
    let major: u32 = version.split('.').next().and_then(|m| m.trim().parse().ok()).unwrap_or(0);
    if major < 25 {
        return fail(
            CHECK,
            format!("gpu_device_access = \"cdi\" needs Docker 25 or later; the engine is {version}"),
            "upgrade Docker, or set gpu_device_access = \"nvidia\"",
        );
    }
    let listed = match std::process::Command::new("nvidia-ctk").args(["cdi", "list"]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            return fail(
                CHECK,
                format!("nvidia-ctk cdi list failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml",
            );
        }
        Err(e) => {
            return fail(
                CHECK,
                format!("cannot run nvidia-ctk: {e}"),
                "install nvidia-container-toolkit 1.15 or later",
            );
        }
    };
    let missing = cdi_missing(&listed, mig_uuids);
    if missing.is_empty() {
        pass(CHECK, format!("Docker {version}; every MIG device has a CDI name ({} checked)", mig_uuids.len()))
    } else {
        fail(
            CHECK,
            format!("not in the CDI spec: {}", missing.join(", ")),
            "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml (toolkit 1.15 or later names MIG devices by UUID)",
        )
    }
}

/// The MIG UUIDs without a `nvidia.com/gpu=<uuid>` line in `nvidia-ctk cdi list` output.
fn cdi_missing(listed: &str, mig_uuids: &[String]) -> Vec<String> {
    let names: std::collections::HashSet<&str> = listed.lines().map(str::trim).collect();
    mig_uuids.iter().filter(|u| !names.contains(format!("nvidia.com/gpu={u}").as_str())).cloned().collect()
}

fn writable_dir(check: &'static str, dir: &Path, fix: &str) -> Check {
    if !dir.exists() {
        // The first create makes it, if the nearest existing parent lets us.
        return match dir.ancestors().find(|a| a.exists()) {
            Some(parent) if parent.is_dir() && writable_dir(check, parent, fix).ok => {
                pass(check, format!("{} will be created by the first session", dir.display()))
            }
            _ => fail(check, format!("{} does not exist and cannot be created", dir.display()), fix),
        };
    }
    if !dir.is_dir() {
        return fail(check, format!("{} is not a directory", dir.display()), fix);
    }
    let probe = dir.join(format!(".sandman-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            pass(check, format!("{} is writable", dir.display()))
        }
        Err(e) => fail(check, format!("{} is not writable: {e}", dir.display()), fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdi_names_are_matched_by_mig_uuid() {
        let listed = "INFO[0000] Found 4 CDI devices\nnvidia.com/gpu=0\nnvidia.com/gpu=0:0\n\
                      nvidia.com/gpu=MIG-aaaa\nnvidia.com/gpu=all\n";
        let uuids = ["MIG-aaaa".to_string(), "MIG-bbbb".to_string()];
        assert_eq!(cdi_missing(listed, &uuids), vec!["MIG-bbbb".to_string()]);
        assert!(cdi_missing(listed, &uuids[..1]).is_empty());
    }
}
