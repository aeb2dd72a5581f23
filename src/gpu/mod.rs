//! GPU backends. A backend lists devices and picks a free slice for a session; exclusivity
//! across processes comes from the store, which calls `pick` inside its reservation
//! transaction with the UUIDs already taken.

pub mod allocate;
pub mod catalog;
pub mod nvml;
pub mod placement;
pub mod sim;

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{GpuBackendKind, MigMode, Settings};
use crate::error::{Error, Result};
use crate::store::GpuPick;

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
}

pub trait GpuBackend: Send + Sync {
    /// The name shown in logs and `doctor`: none, sim or nvml.
    fn name(&self) -> &'static str;

    /// Every GPU with its MIG devices.
    fn devices(&self) -> Result<Vec<GpuDevice>>;

    /// The MIG profiles of the GPU models present.
    fn profiles(&self) -> Result<Vec<ProfileInfo>>;

    /// Picks (in dynamic MIG mode: creates) a slice not in `taken`; `None` for a CPU-only session.
    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>) -> Result<Option<GpuPick>>;

    /// A session holding `uuid` has ended; dynamic mode destroys an instance it created.
    fn release(&self, uuid: &str) -> Result<()>;

    /// Destroys instances sandman created that no session in `owned` holds; returns their UUIDs.
    fn reconcile(&self, owned: &HashSet<String>) -> Result<Vec<String>>;

    /// How a container is given `uuid`.
    fn access(&self, uuid: &str) -> GpuAccess;
}

/// The backend the settings ask for. `auto` means NVML where the driver library loads and
/// CPU-only sessions elsewhere (with a warning); the simulator is only used when named.
pub fn open(settings: &Settings) -> Result<Arc<dyn GpuBackend>> {
    let dynamic = settings.mig_mode == MigMode::Dynamic;
    let state_dir = settings.state_dir();
    let nvml = || nvml::NvmlBackend::open(&state_dir, &settings.default_profile, dynamic, settings.gpu_device_access);
    Ok(match settings.gpu_backend {
        GpuBackendKind::None => Arc::new(NoGpu),
        GpuBackendKind::Nvml => Arc::new(nvml()?),
        GpuBackendKind::Auto => match nvml() {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::warn!("no GPUs: {e}; sessions get no GPU (set gpu_backend = \"none\" to silence this)");
                Arc::new(NoGpu)
            }
        },
        GpuBackendKind::Sim => {
            let file = settings
                .gpu_sim_file
                .as_deref()
                .ok_or_else(|| Error::invalid("gpu_sim_file", "the sim backend needs --gpu-sim-file"))?;
            Arc::new(sim::SimBackend::open(file, &state_dir, &settings.default_profile, dynamic)?)
        }
    })
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

    fn pick(&self, request: &GpuRequest, _taken: &HashSet<String>) -> Result<Option<GpuPick>> {
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

    fn release(&self, _uuid: &str) -> Result<()> {
        Ok(())
    }

    fn reconcile(&self, _owned: &HashSet<String>) -> Result<Vec<String>> {
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
        let taken = HashSet::new();
        assert_eq!(NoGpu.pick(&GpuRequest::Default, &taken).unwrap(), None);
        let e = NoGpu.pick(&GpuRequest::Profile("3g".into()), &taken).unwrap_err();
        assert!(e.to_string().contains("\"3g\""), "{e}");
    }
}
