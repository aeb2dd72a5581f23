//! The real GPUs, through NVML (nvml-wrapper; raw nvml-wrapper-sys calls where the safe API
//! has no GPU/compute-instance functions). Read-only unless `mig_mode = dynamic`, and then it
//! only creates and destroys instances it recorded as its own (in the store's `gpu_created`
//! table, in the same transaction as the session). It never toggles MIG mode.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use anyhow::anyhow;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings as sys;

use super::allocate::{self, GpuState, InstanceState};
use super::catalog::{self, Profile};
use super::{GpuBackend, GpuDevice, GpuRequest, MigInstance, ProfileInfo};
use crate::config::GpuDeviceAccess;
use crate::error::{Error, Result};
use crate::runtime::GpuAccess;
use crate::store::{CreatedInstance as Created, GpuLedger, GpuPick, Store};

pub struct NvmlBackend {
    nvml: Nvml,
    dynamic: bool,
    default_profile: String,
    access: GpuDeviceAccess,
    /// The session database, which records the instances sandman created so that it never
    /// destroys anyone else's. Its own connection, for reads outside the caller's transactions.
    db: Mutex<Store>,
}

fn unavailable(what: &str, e: NvmlError) -> Error {
    Error::Unavailable(format!("NVML could not {what}: {e}"))
}

/// A raw NVML symbol, or a clear error on drivers that lack it.
macro_rules! sym {
    ($lib:expr, $name:ident) => {
        $lib.$name
            .as_ref()
            .map_err(|e| Error::Unavailable(format!("this NVIDIA driver has no {}: {e}", stringify!($name))))?
    };
}

impl NvmlBackend {
    /// Loads libnvidia-ml. Fails (Unavailable) where no NVIDIA driver is installed.
    pub fn open(db: &Path, default_profile: &str, dynamic: bool, access: GpuDeviceAccess) -> Result<NvmlBackend> {
        let nvml = Nvml::init().map_err(|e| {
            Error::Unavailable(format!(
                "cannot load NVML from libnvidia-ml.so.1 ({e}): install the NVIDIA driver, or set gpu_backend = \"none\" for CPU-only sessions"
            ))
        })?;
        Ok(NvmlBackend {
            nvml,
            dynamic,
            default_profile: default_profile.to_string(),
            access,
            db: Mutex::new(Store::open(db)?),
        })
    }

    /// Everything NVML reports, in both shapes: for the API and for allocation. `created` are
    /// the MIG UUIDs sandman created.
    fn scan(&self, created: &HashSet<String>) -> Result<(Vec<GpuDevice>, Vec<GpuState>)> {
        let count = self.nvml.device_count().map_err(|e| unavailable("count devices", e))?;
        let (mut devices, mut states) = (Vec::new(), Vec::new());
        for index in 0..count {
            let dev = self.nvml.device_by_index(index).map_err(|e| unavailable("open a device", e))?;
            let uuid = dev.uuid().map_err(|e| unavailable("read a GPU UUID", e))?;
            let name = dev.name().map_err(|e| unavailable("read a GPU name", e))?;
            let memory = dev.memory_info().map_err(|e| unavailable("read GPU memory", e))?;
            let mig_enabled = dev.mig_mode().map(|m| m.current == sys::NVML_DEVICE_MIG_ENABLE).unwrap_or(false);
            let model = catalog::model(&name);
            let mut instances = Vec::new();
            let mut states_here = Vec::new();
            if mig_enabled {
                let max = dev.mig_device_count().map_err(|e| unavailable("count MIG devices", e))?;
                for slot in 0..max {
                    // Empty slots answer NotFound.
                    let Ok(mig) = dev.mig_device_by_index(slot) else { continue };
                    let mig_uuid = mig.uuid().map_err(|e| unavailable("read a MIG UUID", e))?;
                    let (gi_id, ci_id) = self.instance_ids(&mig)?;
                    let (profile_id, start, size) = self.gpu_instance_info(&dev, gi_id)?;
                    let profile = model.and_then(|m| m.profiles.iter().find(|p| p.profile_info_id == profile_id));
                    let profile_name = match profile {
                        Some(p) => p.name.to_string(),
                        None => self.profile_name(&dev, profile_id).unwrap_or_else(|| format!("profile-{profile_id}")),
                    };
                    let mig_memory = mig.memory_info().map(|m| m.total).unwrap_or(0);
                    instances.push(MigInstance {
                        uuid: mig_uuid.clone(),
                        profile: profile_name.clone(),
                        memory: mig_memory,
                        compute_slices: profile.map(|p| p.compute_slices).unwrap_or(0),
                        memory_slices: profile.map(|p| p.memory_slices).unwrap_or(size),
                        parent_gpu: uuid.clone(),
                        gpu_instance_id: gi_id,
                        compute_instance_id: ci_id,
                        placement_start: start,
                        created_by_sandman: created.contains(&mig_uuid),
                        allocated: false,
                    });
                    states_here.push(InstanceState { uuid: mig_uuid, profile: profile_name, start });
                }
            }
            devices.push(GpuDevice {
                uuid: uuid.clone(),
                name: name.clone(),
                memory_total: memory.total,
                memory_free: memory.free,
                memory_used: memory.used,
                utilization: dev.utilization_rates().ok().map(|u| u.gpu),
                temperature: dev.temperature(TemperatureSensor::Gpu).ok(),
                power_usage: dev.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                power_limit: dev.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0),
                mig_enabled,
                mig_instances: instances,
            });
            states.push(GpuState { uuid, name, model, mig_enabled, instances: states_here });
        }
        Ok((devices, states))
    }

    fn instance_ids(&self, mig: &nvml_wrapper::Device) -> Result<(u32, u32)> {
        let lib = self.nvml.lib();
        let (mut gi, mut ci) = (0u32, 0u32);
        unsafe {
            let handle = mig.handle();
            nvml_try(sym!(lib, nvmlDeviceGetGpuInstanceId)(handle, &mut gi))
                .map_err(|e| unavailable("read a GPU instance id", e))?;
            nvml_try(sym!(lib, nvmlDeviceGetComputeInstanceId)(handle, &mut ci))
                .map_err(|e| unavailable("read a compute instance id", e))?;
        }
        Ok((gi, ci))
    }

    /// (profile info id, placement start, placement size) of GPU instance `gi_id`.
    fn gpu_instance_info(&self, dev: &nvml_wrapper::Device, gi_id: u32) -> Result<(u32, u32, u32)> {
        let lib = self.nvml.lib();
        unsafe {
            let mut gi: sys::nvmlGpuInstance_t = std::ptr::null_mut();
            nvml_try(sym!(lib, nvmlDeviceGetGpuInstanceById)(dev.handle(), gi_id, &mut gi))
                .map_err(|e| unavailable(&format!("open GPU instance {gi_id}"), e))?;
            let mut info: sys::nvmlGpuInstanceInfo_t = std::mem::zeroed();
            nvml_try(sym!(lib, nvmlGpuInstanceGetInfo)(gi, &mut info))
                .map_err(|e| unavailable("read a GPU instance", e))?;
            Ok((info.profileId, info.placement.start, info.placement.size))
        }
    }

    /// The driver's own name for a profile id, for models sandman's catalog lacks.
    fn profile_name(&self, dev: &nvml_wrapper::Device, profile_id: u32) -> Option<String> {
        let lib = self.nvml.lib();
        let query = lib.nvmlDeviceGetGpuInstanceProfileInfoV.as_ref().ok()?;
        for profile_enum in 0..sys::NVML_GPU_INSTANCE_PROFILE_COUNT {
            unsafe {
                let mut info: sys::nvmlGpuInstanceProfileInfo_v2_t = std::mem::zeroed();
                // NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2)
                info.version = std::mem::size_of::<sys::nvmlGpuInstanceProfileInfo_v2_t>() as u32 | (2 << 24);
                if query(dev.handle(), profile_enum, &mut info) == sys::nvmlReturn_enum_NVML_SUCCESS
                    && info.id == profile_id
                {
                    let raw = std::ffi::CStr::from_ptr(info.name.as_ptr()).to_string_lossy();
                    return Some(raw.trim_start_matches("MIG ").to_string());
                }
            }
        }
        None
    }

    /// Creates a GPU instance of `profile` at `start` with one full-size compute instance, records
    /// it in `ledger`, and returns the new MIG device's UUID.
    fn create(&self, ledger: &GpuLedger, gpu_uuid: &str, profile: &'static Profile, start: u32) -> Result<String> {
        let dev = self.nvml.device_by_uuid(gpu_uuid).map_err(|e| unavailable(&format!("open GPU {gpu_uuid}"), e))?;
        let lib = self.nvml.lib();
        let gi_id = unsafe {
            let placement = sys::nvmlGpuInstancePlacement_t { start, size: profile.memory_slices };
            let mut gi: sys::nvmlGpuInstance_t = std::ptr::null_mut();
            nvml_try(sym!(lib, nvmlDeviceCreateGpuInstanceWithPlacement)(
                dev.handle(),
                profile.profile_info_id,
                &placement,
                &mut gi,
            ))
            .map_err(|e| {
                unavailable(&format!("create a {} instance at slice {start} on {gpu_uuid}", profile.name), e)
            })?;
            let mut info: sys::nvmlGpuInstanceInfo_t = std::mem::zeroed();
            nvml_try(sym!(lib, nvmlGpuInstanceGetInfo)(gi, &mut info))
                .map_err(|e| unavailable("read the new GPU instance", e))?;
            if let Err(e) = self.create_compute_instance(gi, profile) {
                let _ = sym!(lib, nvmlGpuInstanceDestroy)(gi);
                return Err(e);
            }
            info.id
        };
        // The new MIG device appears under the parent; find it by its GPU instance id.
        let (devices, _) = self.scan(&created_uuids(ledger)?)?;
        let mig_uuid = devices
            .iter()
            .filter(|d| d.uuid == gpu_uuid)
            .flat_map(|d| &d.mig_instances)
            .find(|m| m.gpu_instance_id == gi_id)
            .map(|m| m.uuid.clone())
            .ok_or_else(|| {
                Error::Internal(anyhow!("created GPU instance {gi_id} on {gpu_uuid} but no MIG device shows it"))
            })?;
        ledger.record_created(&Created {
            gpu_uuid: gpu_uuid.to_string(),
            gpu_instance_id: gi_id,
            mig_uuid: mig_uuid.clone(),
        })?;
        tracing::info!(gpu = gpu_uuid, gpu_instance = gi_id, mig = %mig_uuid, profile = profile.name, "MIG instance created");
        Ok(mig_uuid)
    }

    unsafe fn create_compute_instance(&self, gi: sys::nvmlGpuInstance_t, profile: &Profile) -> Result<()> {
        let lib = self.nvml.lib();
        let ci_enum = compute_profile_enum(profile.compute_slices)?;
        unsafe {
            let mut info: sys::nvmlComputeInstanceProfileInfo_t = std::mem::zeroed();
            nvml_try(sym!(lib, nvmlGpuInstanceGetComputeInstanceProfileInfo)(
                gi,
                ci_enum,
                sys::NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                &mut info,
            ))
            .map_err(|e| unavailable("look up the compute instance profile", e))?;
            let mut ci: sys::nvmlComputeInstance_t = std::ptr::null_mut();
            nvml_try(sym!(lib, nvmlGpuInstanceCreateComputeInstance)(gi, info.id, &mut ci))
                .map_err(|e| unavailable("create the compute instance", e))?;
        }
        Ok(())
    }

    /// Destroys one instance sandman created: its compute instances, then the GPU instance.
    fn destroy(&self, c: &Created) -> Result<()> {
        let dev = match self.nvml.device_by_uuid(c.gpu_uuid.as_str()) {
            Ok(d) => d,
            Err(NvmlError::NotFound) => return Ok(()),
            Err(e) => return Err(unavailable(&format!("open GPU {}", c.gpu_uuid), e)),
        };
        let lib = self.nvml.lib();
        unsafe {
            let mut gi: sys::nvmlGpuInstance_t = std::ptr::null_mut();
            match nvml_try(sym!(lib, nvmlDeviceGetGpuInstanceById)(dev.handle(), c.gpu_instance_id, &mut gi)) {
                Ok(()) => {}
                // Gone already (a reboot or an admin removed it).
                Err(NvmlError::NotFound) | Err(NvmlError::InvalidArg) => return Ok(()),
                Err(e) => return Err(unavailable("open the GPU instance", e)),
            }
            for ci_enum in 0..sys::NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
                let mut info: sys::nvmlComputeInstanceProfileInfo_t = std::mem::zeroed();
                if sym!(lib, nvmlGpuInstanceGetComputeInstanceProfileInfo)(
                    gi,
                    ci_enum,
                    sys::NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                    &mut info,
                ) != sys::nvmlReturn_enum_NVML_SUCCESS
                {
                    continue;
                }
                let mut cis: [sys::nvmlComputeInstance_t; 8] = [std::ptr::null_mut(); 8];
                let mut n = cis.len() as u32;
                if sym!(lib, nvmlGpuInstanceGetComputeInstances)(gi, info.id, cis.as_mut_ptr(), &mut n)
                    == sys::nvmlReturn_enum_NVML_SUCCESS
                {
                    for ci in &cis[..n as usize] {
                        nvml_try(sym!(lib, nvmlComputeInstanceDestroy)(*ci))
                            .map_err(|e| unavailable("destroy a compute instance", e))?;
                    }
                }
            }
            nvml_try(sym!(lib, nvmlGpuInstanceDestroy)(gi)).map_err(|e| {
                unavailable(&format!("destroy GPU instance {} on {}", c.gpu_instance_id, c.gpu_uuid), e)
            })?;
        }
        tracing::info!(gpu = %c.gpu_uuid, gpu_instance = c.gpu_instance_id, mig = %c.mig_uuid, "MIG instance destroyed");
        Ok(())
    }

    /// What NVML reports now, with the instances sandman created as its own database records
    /// them (read outside any transaction of the caller's).
    fn scan_now(&self) -> Result<(Vec<GpuDevice>, Vec<GpuState>)> {
        let created = self.db.lock().unwrap_or_else(|p| p.into_inner()).read_gpu_ledger(created_uuids)?;
        self.scan(&created)
    }
}

fn created_uuids(ledger: &GpuLedger) -> Result<HashSet<String>> {
    Ok(ledger.created()?.into_iter().map(|c| c.mig_uuid).collect())
}

/// `NVML_COMPUTE_INSTANCE_PROFILE_*` for a full-size compute instance of `slices`.
fn compute_profile_enum(slices: u32) -> Result<u32> {
    Ok(match slices {
        1 => sys::NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
        2 => sys::NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
        3 => sys::NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
        4 => sys::NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
        6 => sys::NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE,
        7 => sys::NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
        8 => sys::NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE,
        n => return Err(Error::Internal(anyhow!("no compute instance profile has {n} slices"))),
    })
}

impl GpuBackend for NvmlBackend {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn devices(&self) -> Result<Vec<GpuDevice>> {
        Ok(self.scan_now()?.0)
    }

    fn profiles(&self) -> Result<Vec<ProfileInfo>> {
        let (_, states) = self.scan_now()?;
        Ok(super::catalog_profiles(states.iter().filter_map(|s| s.model)))
    }

    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>, ledger: &GpuLedger) -> Result<Option<GpuPick>> {
        let (_, states) = self.scan(&created_uuids(ledger)?)?;
        allocate::plan(&states, request, taken, &self.default_profile, self.dynamic)?
            .into_pick(|gpu, profile, start| self.create(ledger, &states[gpu].uuid, profile, start))
    }

    fn release(&self, uuid: &str, ledger: &GpuLedger) -> Result<()> {
        for c in ledger.created()?.into_iter().filter(|c| c.mig_uuid == uuid) {
            self.destroy(&c)?;
            ledger.forget_created(&c.mig_uuid)?;
        }
        Ok(())
    }

    fn reconcile(&self, owned: &HashSet<String>, ledger: &GpuLedger) -> Result<Vec<String>> {
        let mut destroyed = Vec::new();
        for c in ledger.created()?.into_iter().filter(|c| !owned.contains(&c.mig_uuid)) {
            // One failure must not undo (by rolling back) the record of instances already gone.
            match self.destroy(&c) {
                Ok(()) => {
                    ledger.forget_created(&c.mig_uuid)?;
                    destroyed.push(c.mig_uuid);
                }
                Err(e) => {
                    tracing::warn!(mig = %c.mig_uuid, gpu = %c.gpu_uuid, error = %e, "cannot destroy a MIG instance sandman created; the next reap retries")
                }
            }
        }
        Ok(destroyed)
    }

    fn access(&self, uuid: &str) -> GpuAccess {
        match self.access {
            GpuDeviceAccess::Nvidia => GpuAccess::NvidiaDevice(uuid.to_string()),
            GpuDeviceAccess::Cdi => GpuAccess::Cdi(format!("nvidia.com/gpu={uuid}")),
        }
    }
}
