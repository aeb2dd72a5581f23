//! GPU backends. A backend lists devices and picks a free slice for a session; exclusivity
//! across processes comes from the store, which calls `pick` inside its reservation
//! transaction with the UUIDs already taken. What a backend keeps (the instances it created,
//! the simulated GPUs) lives in the store's GPU tables, written through the `GpuLedger` of the
//! transaction it is called in.

pub mod allocate;
pub mod catalog;
pub mod nvml;
pub mod placement;
pub mod sim;

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{GpuBackendKind, GpuDeviceAccess, MigMode, Settings};
use crate::error::{Error, Result};
use crate::store::{GpuLedger, GpuPick};

/// What a create asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuRequest {
    /// Nothing named: the backend's default (a CPU-only session where there are no GPUs).
    Default,
    /// A MIG profile such as `3g.20gb`, or `3g` for that compute size on any model.
    Profile(String),
    /// One exact device: a MIG instance or a whole GPU.
    Uuid(String),
}

/// How a container is given its GPU device; the engine turns it into its own request.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuAccess {
    /// `--gpus device=UUID`: a device request to the NVIDIA runtime.
    NvidiaDevice(String),
    /// A CDI device name such as `nvidia.com/gpu=MIG-…`.
    Cdi(String),
    /// No runtime support (simulated GPUs): only `NVIDIA_VISIBLE_DEVICES` is set.
    EnvOnly(String),
}

impl GpuRequest {
    /// The request a client's `mig_profile` / `mig_instance_uuid` (CLI: `--profile` / `--gpu`)
    /// make. An empty string counts as absent: the original API sends `""` to mean the default.
    pub fn from_fields(profile: Option<&str>, uuid: Option<&str>) -> Result<GpuRequest> {
        let given = |field: Option<&str>| field.filter(|v| !v.is_empty()).map(str::to_string);
        match (given(profile), given(uuid)) {
            (Some(_), Some(_)) => Err(Error::invalid("mig_profile", "give mig_profile or mig_instance_uuid, not both")),
            (Some(profile), None) => Ok(GpuRequest::Profile(profile)),
            (None, Some(uuid)) => Ok(GpuRequest::Uuid(uuid)),
            (None, None) => Ok(GpuRequest::Default),
        }
    }
}

/// One physical GPU, in the shape of the API's `GET /gpus` entries.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Gpu)]
pub struct GpuDevice {
    pub uuid: String,
    pub name: String,
    pub memory_total: u64,
    pub memory_free: u64,
    pub memory_used: u64,
    pub utilization: Option<u32>,
    pub temperature: Option<u32>,
    pub power_usage: Option<f64>,
    pub power_limit: Option<f64>,
    pub mig_enabled: bool,
    pub mig_instances: Vec<MigInstance>,
}

/// One MIG device (a GPU instance with its compute instance).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MigInstance {
    pub uuid: String,
    pub profile: String,
    /// Bytes.
    pub memory: u64,
    pub compute_slices: u32,
    pub memory_slices: u32,
    pub parent_gpu: String,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    /// First memory slice of the instance's placement.
    pub placement_start: u32,
    /// Made by sandman (dynamic mode); only those are ever destroyed by it.
    pub created_by_sandman: bool,
    /// Held by a session. Backends report false; the session service fills it in.
    pub allocated: bool,
}

/// A MIG profile as `GET /gpus/profiles` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = Profile)]
pub struct ProfileInfo {
    pub name: String,
    pub compute_slices: u32,
    pub memory_slices: u32,
    /// Bytes.
    pub memory_size: u64,
    pub description: String,
    /// nvidia-smi's "Profile ID" (`nvmlGpuInstanceProfileInfo_t.id`).
    pub profile_id: u32,
    /// How many instances of it one GPU holds at most.
    pub max_instances: u32,
    /// `[start, size]` on the memory-slice grid, as `nvidia-smi mig -lgipp` lists them.
    pub placements: Vec<[u32; 2]>,
}

pub trait GpuBackend: Send + Sync {
    /// The name shown in logs and `doctor`: none, sim or nvml.
    fn name(&self) -> &'static str;

    /// Every GPU with its MIG devices.
    fn devices(&self) -> Result<Vec<GpuDevice>>;

    /// The MIG profiles of the GPU models present.
    fn profiles(&self) -> Result<Vec<ProfileInfo>>;

    /// What `doctor` should warn about: devices that could not be read, geometry that differs
    /// from sandman's catalog.
    fn diagnostics(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Picks (in dynamic MIG mode: creates) a slice not in `taken`; `None` for a CPU-only session.
    /// Runs inside the store's reservation transaction; `ledger` is its GPU tables.
    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>, ledger: &GpuLedger) -> Result<Option<GpuPick>>;

    /// A session holding `uuid` has ended; dynamic mode destroys an instance it created.
    fn release(&self, uuid: &str, ledger: &GpuLedger) -> Result<()>;

    /// Destroys instances sandman created that no session in `owned` holds; returns their UUIDs.
    /// One that cannot be destroyed now is kept (and logged) for the next pass.
    fn reconcile(&self, owned: &HashSet<String>, ledger: &GpuLedger) -> Result<Vec<String>>;

    /// How a container is given `uuid`.
    fn access(&self, uuid: &str) -> GpuAccess;

    /// How many compute processes (CUDA contexts) run on device `uuid` (a MIG device or a whole
    /// GPU) now; `None` where this backend cannot tell.
    fn compute_processes(&self, _uuid: &str) -> Result<Option<u32>> {
        Ok(None)
    }
}

/// The backend the settings ask for. `auto` means NVML where the driver library loads and
/// CPU-only sessions elsewhere (with a warning); the simulator is only used when named.
pub fn open(settings: &Settings) -> Result<Arc<dyn GpuBackend>> {
    let dynamic = settings.mig_mode == MigMode::Dynamic;
    let real_gpus = matches!(settings.gpu_backend, GpuBackendKind::Nvml | GpuBackendKind::Auto);
    if real_gpus && dynamic && settings.gpu_device_access == GpuDeviceAccess::Cdi {
        // A CDI spec is a file generated once (`nvidia-ctk cdi generate`): instances made later
        // have no name in it, and container creation fails on them.
        return Err(Error::invalid(
            "gpu_device_access",
            "\"cdi\" cannot be used with mig_mode = \"dynamic\": the CDI spec lists only the MIG devices that \
             existed when it was generated, so instances sandman creates later have no CDI name; use \
             gpu_device_access = \"nvidia\", or mig_mode = \"static\" and regenerate the spec \
             (nvidia-ctk cdi generate) after changing the layout",
        ));
    }
    let nvml = || nvml::NvmlBackend::open(&settings.db, &settings.default_profile, dynamic, settings.gpu_device_access);
    Ok(match settings.gpu_backend {
        GpuBackendKind::None => Arc::new(NoGpu),
        GpuBackendKind::Nvml => Arc::new(nvml()?),
        GpuBackendKind::Auto => match nvml() {
            Ok(b) => Arc::new(b),
            Err(e) => {
                // A host with the NVIDIA kernel driver but no loadable library is broken: say so
                // on every command. A host without the driver is CPU-only by design: say it
                // once in `doctor`, and only with -v here.
                if nvidia_driver_loaded() {
                    tracing::warn!("no GPUs: {e}; sessions get no GPU (set gpu_backend = \"none\" to silence this)");
                } else {
                    tracing::info!("no NVIDIA driver: sessions are CPU-only ({e})");
                }
                Arc::new(NoGpu)
            }
        },
        GpuBackendKind::Sim => {
            let file = settings
                .gpu_sim_file
                .as_deref()
                .ok_or_else(|| Error::invalid("gpu_sim_file", "the sim backend needs --gpu-sim-file"))?;
            Arc::new(sim::SimBackend::open(file, &settings.db, &settings.default_profile, dynamic)?)
        }
    })
}

/// Whether the NVIDIA kernel driver is loaded (it creates `/proc/driver/nvidia` and
/// `/dev/nvidiactl`), whatever the state of its user-space library.
fn nvidia_driver_loaded() -> bool {
    std::path::Path::new("/proc/driver/nvidia").exists() || std::path::Path::new("/dev/nvidiactl").exists()
}

/// The API's profile list for the models present, from sandman's catalog.
pub fn catalog_profiles<'a>(models: impl Iterator<Item = &'a catalog::Model>) -> Vec<ProfileInfo> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for model in models {
        for p in model.profiles {
            if seen.insert(p.name) {
                out.push(ProfileInfo {
                    name: p.name.to_string(),
                    compute_slices: p.compute_slices,
                    memory_slices: p.memory_slices,
                    memory_size: p.memory_mib * 1024 * 1024,
                    description: p.description(model),
                    profile_id: p.profile_info_id,
                    max_instances: p.max_instances,
                    placements: p.placements.iter().map(|pl| [pl.start, pl.size]).collect(),
                });
            }
        }
    }
    out
}

/// CPU-only hosts: every session gets no GPU; naming one is an error.
pub struct NoGpu;

impl GpuBackend for NoGpu {
    fn name(&self) -> &'static str {
        "none"
    }

    fn devices(&self) -> Result<Vec<GpuDevice>> {
        Ok(Vec::new())
    }

    fn profiles(&self) -> Result<Vec<ProfileInfo>> {
        Ok(Vec::new())
    }

    fn pick(&self, request: &GpuRequest, _taken: &HashSet<String>, _ledger: &GpuLedger) -> Result<Option<GpuPick>> {
        match request {
            GpuRequest::Default => Ok(None),
            GpuRequest::Profile(p) => Err(Error::invalid(
                "mig_profile",
                format!("{p:?} asks for a GPU, but this host has no GPU backend (gpu backend: none)"),
            )),
            GpuRequest::Uuid(u) => Err(Error::invalid(
                "mig_instance_uuid",
                format!("{u:?} asks for a GPU, but this host has no GPU backend (gpu backend: none)"),
            )),
        }
    }

    fn release(&self, _uuid: &str, _ledger: &GpuLedger) -> Result<()> {
        Ok(())
    }

    fn reconcile(&self, _owned: &HashSet<String>, _ledger: &GpuLedger) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn access(&self, uuid: &str) -> GpuAccess {
        GpuAccess::EnvOnly(uuid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gpu_gives_cpu_sessions_and_refuses_gpu_requests() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        let taken = HashSet::new();
        store
            .with_gpu_ledger(|ledger| {
                assert_eq!(NoGpu.pick(&GpuRequest::Default, &taken, ledger).unwrap(), None);
                let e = NoGpu.pick(&GpuRequest::Profile("3g".into()), &taken, ledger).unwrap_err();
                assert!(e.to_string().contains("\"3g\""), "{e}");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn requests_from_fields_treat_empty_as_absent() {
        let from = GpuRequest::from_fields;
        assert_eq!(from(None, None).unwrap(), GpuRequest::Default);
        assert_eq!(from(Some(""), Some("")).unwrap(), GpuRequest::Default, "the original API's defaults");
        assert_eq!(from(Some("3g"), None).unwrap(), GpuRequest::Profile("3g".into()));
        assert_eq!(from(Some("3g"), Some("")).unwrap(), GpuRequest::Profile("3g".into()));
        assert_eq!(from(Some(""), Some("MIG-1")).unwrap(), GpuRequest::Uuid("MIG-1".into()));
        let e = from(Some("3g"), Some("MIG-1")).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { field: "mig_profile", .. }), "{e}");
        assert!(e.to_string().contains("not both"), "{e}");
    }
}
