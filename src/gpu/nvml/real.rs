//! `NvmlApi` over libnvidia-ml: nvml-wrapper for devices, raw nvml-wrapper-sys calls for GPU and
//! compute instances (the safe API has none), their return codes passed on as they are.

use std::ffi::CStr;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings as sys;

use super::api::{CiInfo, CiProfile, Code, GiInfo, GiProfile, Memory, MigDevice, Nv, NvmlApi, Placement, Telemetry};

pub struct Library {
    nvml: Nvml,
}

impl Library {
    pub fn init() -> Result<Library, NvmlError> {
        Ok(Library { nvml: Nvml::init()? })
    }

    fn device(&self, gpu: u32) -> Nv<nvml_wrapper::Device<'_>> {
        self.nvml.device_by_index(gpu).map_err(code)
    }

    /// The handle of GPU instance `gi` of GPU `gpu`.
    fn gi_handle(&self, gpu: u32, gi: u32) -> Nv<sys::nvmlGpuInstance_t> {
        let dev = self.device(gpu)?;
        let get = sym(&self.nvml.lib().nvmlDeviceGetGpuInstanceById)?;
        let mut handle: sys::nvmlGpuInstance_t = std::ptr::null_mut();
        check(unsafe { get(dev.handle(), gi, &mut handle) })?;
        Ok(handle)
    }

    /// `nvmlGpuInstanceGetInfo` of a GPU instance handle.
    fn gi_info(&self, gi: sys::nvmlGpuInstance_t) -> Nv<GiInfo> {
        let get_info = sym(&self.nvml.lib().nvmlGpuInstanceGetInfo)?;
        let mut info: sys::nvmlGpuInstanceInfo_t = unsafe { std::mem::zeroed() };
        check(unsafe { get_info(gi, &mut info) })?;
        Ok(GiInfo {
            id: info.id,
            profile_id: info.profileId,
            placement: Placement { start: info.placement.start, size: info.placement.size },
        })
    }

    fn ci_handles(
        &self,
        gi: sys::nvmlGpuInstance_t,
        profile_id: u32,
        capacity: u32,
    ) -> Nv<Vec<sys::nvmlComputeInstance_t>> {
        let list = sym(&self.nvml.lib().nvmlGpuInstanceGetComputeInstances)?;
        let mut handles: Vec<sys::nvmlComputeInstance_t> = vec![std::ptr::null_mut(); capacity as usize];
        let mut count = capacity;
        check(unsafe { list(gi, profile_id, handles.as_mut_ptr(), &mut count) })?;
        // NVML never reports more than it wrote; a short list is cut, never indexed past.
        handles.truncate(count.min(capacity) as usize);
        Ok(handles)
    }
}

/// NVML's own code for an nvml-wrapper error.
fn code(e: NvmlError) -> Code {
    Code(match e {
        NvmlError::Uninitialized => 1,
        NvmlError::InvalidArg => 2,
        NvmlError::NotSupported => 3,
        NvmlError::NoPermission => 4,
        NvmlError::NotFound => 6,
        NvmlError::InsufficientSize(_) => 7,
        NvmlError::DriverNotLoaded => 9,
        NvmlError::FunctionNotFound | NvmlError::FailedToLoadSymbol(_) => 13,
        NvmlError::GpuLost => 15,
        NvmlError::ResetRequired => 16,
        NvmlError::InUse => 19,
        NvmlError::UnexpectedVariant(n) => n,
        _ => Code::UNKNOWN.0,
    })
}

fn check(ret: sys::nvmlReturn_t) -> Nv<()> {
    if ret == sys::nvmlReturn_enum_NVML_SUCCESS { Ok(()) } else { Err(Code(ret)) }
}

/// A raw symbol, or FUNCTION_NOT_FOUND on drivers that lack it.
fn sym<T: Copy, E>(s: &Result<T, E>) -> Nv<T> {
    s.as_ref().copied().map_err(|_| Code::FUNCTION_NOT_FOUND)
}

impl NvmlApi for Library {
    fn boot_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
    }

    fn device_count(&self) -> Nv<u32> {
        self.nvml.device_count().map_err(code)
    }

    fn uuid(&self, gpu: u32) -> Nv<String> {
        self.device(gpu)?.uuid().map_err(code)
    }

    fn name(&self, gpu: u32) -> Nv<String> {
        self.device(gpu)?.name().map_err(code)
    }

    fn memory(&self, gpu: u32) -> Nv<Memory> {
        let m = self.device(gpu)?.memory_info().map_err(code)?;
        Ok(Memory { total: m.total, free: m.free, used: m.used })
    }

    fn telemetry(&self, gpu: u32) -> Telemetry {
        let Ok(dev) = self.device(gpu) else { return Telemetry::default() };
        Telemetry {
            utilization: dev.utilization_rates().ok().map(|u| u.gpu),
            temperature: dev.temperature(TemperatureSensor::Gpu).ok(),
            power_usage: dev.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            power_limit: dev.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0),
        }
    }

    fn mig_enabled(&self, gpu: u32) -> Nv<bool> {
        Ok(self.device(gpu)?.mig_mode().map_err(code)?.current == sys::NVML_DEVICE_MIG_ENABLE)
    }

    fn gi_profile(&self, gpu: u32, profile_enum: u32) -> Nv<GiProfile> {
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        if let Ok(query) = sym(&lib.nvmlDeviceGetGpuInstanceProfileInfoV) {
            let mut info: sys::nvmlGpuInstanceProfileInfo_v2_t = unsafe { std::mem::zeroed() };
            // NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2)
            info.version = std::mem::size_of::<sys::nvmlGpuInstanceProfileInfo_v2_t>() as u32 | (2 << 24);
            check(unsafe { query(dev.handle(), profile_enum, &mut info) })?;
            let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }.to_string_lossy().into_owned();
            return Ok(GiProfile {
                profile_enum,
                id: info.id,
                slice_count: info.sliceCount,
                instance_count: info.instanceCount,
                memory_mib: info.memorySizeMB,
                name,
            });
        }
        let query = sym(&lib.nvmlDeviceGetGpuInstanceProfileInfo)?;
        let mut info: sys::nvmlGpuInstanceProfileInfo_t = unsafe { std::mem::zeroed() };
        check(unsafe { query(dev.handle(), profile_enum, &mut info) })?;
        Ok(GiProfile {
            profile_enum,
            id: info.id,
            slice_count: info.sliceCount,
            instance_count: info.instanceCount,
            memory_mib: info.memorySizeMB,
            name: String::new(),
        })
    }

    fn gi_placements(&self, gpu: u32, profile_id: u32) -> Nv<Vec<Placement>> {
        let dev = self.device(gpu)?;
        let query = sym(&self.nvml.lib().nvmlDeviceGetGpuInstancePossiblePlacements_v2)?;
        // A null buffer asks for the count.
        let mut count = 0u32;
        check(unsafe { query(dev.handle(), profile_id, std::ptr::null_mut(), &mut count) })?;
        let mut raw = vec![sys::nvmlGpuInstancePlacement_t { start: 0, size: 0 }; count as usize];
        check(unsafe { query(dev.handle(), profile_id, raw.as_mut_ptr(), &mut count) })?;
        raw.truncate(count as usize);
        Ok(raw.into_iter().map(|p| Placement { start: p.start, size: p.size }).collect())
    }

    fn gpu_instances(&self, gpu: u32, profile_id: u32, capacity: u32) -> Nv<Vec<GiInfo>> {
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        let list = sym(&lib.nvmlDeviceGetGpuInstances)?;
        let mut handles: Vec<sys::nvmlGpuInstance_t> = vec![std::ptr::null_mut(); capacity as usize];
        let mut count = capacity;
        check(unsafe { list(dev.handle(), profile_id, handles.as_mut_ptr(), &mut count) })?;
        handles.truncate(count.min(capacity) as usize);
        handles.into_iter().map(|gi| self.gi_info(gi)).collect()
    }

    fn gpu_instance(&self, gpu: u32, gi: u32) -> Nv<GiInfo> {
        self.gi_info(self.gi_handle(gpu, gi)?)
    }

    fn ci_profile(&self, gpu: u32, gi: u32, profile_enum: u32) -> Nv<CiProfile> {
        let handle = self.gi_handle(gpu, gi)?;
        let query = sym(&self.nvml.lib().nvmlGpuInstanceGetComputeInstanceProfileInfo)?;
        let mut info: sys::nvmlComputeInstanceProfileInfo_t = unsafe { std::mem::zeroed() };
        check(unsafe { query(handle, profile_enum, sys::NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, &mut info) })?;
        Ok(CiProfile { profile_enum, id: info.id, slice_count: info.sliceCount, instance_count: info.instanceCount })
    }

    fn compute_instances(&self, gpu: u32, gi: u32, profile_id: u32, capacity: u32) -> Nv<Vec<CiInfo>> {
        let handle = self.gi_handle(gpu, gi)?;
        let get_info = sym(&self.nvml.lib().nvmlComputeInstanceGetInfo_v2)?;
        self.ci_handles(handle, profile_id, capacity)?
            .into_iter()
            .map(|ci| {
                let mut info: sys::nvmlComputeInstanceInfo_t = unsafe { std::mem::zeroed() };
                check(unsafe { get_info(ci, &mut info) })?;
                Ok(CiInfo {
                    id: info.id,
                    profile_id: info.profileId,
                    start: info.placement.start,
                    size: info.placement.size,
                })
            })
            .collect()
    }

    fn mig_device_slots(&self, gpu: u32) -> Nv<u32> {
        self.device(gpu)?.mig_device_count().map_err(code)
    }

    fn mig_device(&self, gpu: u32, slot: u32) -> Nv<MigDevice> {
        let dev = self.device(gpu)?;
        let mig = dev.mig_device_by_index(slot).map_err(code)?;
        let lib = self.nvml.lib();
        let (mut gi, mut ci) = (0u32, 0u32);
        check(unsafe { sym(&lib.nvmlDeviceGetGpuInstanceId)?(mig.handle(), &mut gi) })?;
        check(unsafe { sym(&lib.nvmlDeviceGetComputeInstanceId)?(mig.handle(), &mut ci) })?;
        Ok(MigDevice {
            uuid: mig.uuid().map_err(code)?,
            gpu_instance_id: gi,
            compute_instance_id: ci,
            name: mig.name().ok(),
            memory_total: mig.memory_info().ok().map(|m| m.total),
        })
    }

    fn create_gpu_instance(&self, gpu: u32, profile_id: u32, placement: Placement) -> Nv<u32> {
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        let create = sym(&lib.nvmlDeviceCreateGpuInstanceWithPlacement)?;
        let raw = sys::nvmlGpuInstancePlacement_t { start: placement.start, size: placement.size };
        let mut gi: sys::nvmlGpuInstance_t = std::ptr::null_mut();
        check(unsafe { create(dev.handle(), profile_id, &raw, &mut gi) })?;
        Ok(self.gi_info(gi)?.id)
    }

    fn create_compute_instance(&self, gpu: u32, gi: u32, ci_profile_id: u32) -> Nv<u32> {
        let handle = self.gi_handle(gpu, gi)?;
        let lib = self.nvml.lib();
        let create = sym(&lib.nvmlGpuInstanceCreateComputeInstance)?;
        let get_info = sym(&lib.nvmlComputeInstanceGetInfo_v2)?;
        let mut ci: sys::nvmlComputeInstance_t = std::ptr::null_mut();
        check(unsafe { create(handle, ci_profile_id, &mut ci) })?;
        let mut info: sys::nvmlComputeInstanceInfo_t = unsafe { std::mem::zeroed() };
        check(unsafe { get_info(ci, &mut info) })?;
        Ok(info.id)
    }

    fn destroy_compute_instance(&self, gpu: u32, gi: u32, ci: u32) -> Nv<()> {
        let handle = self.gi_handle(gpu, gi)?;
        let lib = self.nvml.lib();
        let by_id = sym(&lib.nvmlGpuInstanceGetComputeInstanceById)?;
        let destroy = sym(&lib.nvmlComputeInstanceDestroy)?;
        let mut ci_handle: sys::nvmlComputeInstance_t = std::ptr::null_mut();
        check(unsafe { by_id(handle, ci, &mut ci_handle) })?;
        check(unsafe { destroy(ci_handle) })
    }

    fn destroy_gpu_instance(&self, gpu: u32, gi: u32) -> Nv<()> {
        let handle = self.gi_handle(gpu, gi)?;
        let destroy = sym(&self.nvml.lib().nvmlGpuInstanceDestroy)?;
        check(unsafe { destroy(handle) })
    }

    fn compute_processes(&self, gpu: u32, slot: Option<u32>) -> Nv<u32> {
        let dev = self.device(gpu)?;
        match slot {
            None => dev.running_compute_processes_count().map_err(code),
            Some(slot) => dev.mig_device_by_index(slot).map_err(code)?.running_compute_processes_count().map_err(code),
        }
    }
}
