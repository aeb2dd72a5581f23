//! The NVML calls sandman makes, and nothing else: the seam between the backend's logic and the
//! driver. `real::Library` answers them from libnvidia-ml; `fake::FakeNvml` (tests) follows the
//! behaviour `nvml.h` and the MIG user guide document, so the backend's handling of every answer
//! can be tested without a GPU.
//!
//! GPUs are addressed by index, GPU instances by (GPU, GPU instance id), compute instances by
//! (GPU, GPU instance id, compute instance id), as NVML itself names them. Errors are NVML's
//! own return codes: nvml-wrapper cannot map some (23, INSUFFICIENT_RESOURCES, in 0.13).

use std::fmt;

/// An NVML return code other than success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u32);

impl Code {
    pub const INVALID_ARGUMENT: Code = Code(2);
    pub const NOT_SUPPORTED: Code = Code(3);
    pub const NO_PERMISSION: Code = Code(4);
    pub const NOT_FOUND: Code = Code(6);
    pub const INSUFFICIENT_SIZE: Code = Code(7);
    pub const GPU_IS_LOST: Code = Code(15);
    pub const IN_USE: Code = Code(19);
    pub const INSUFFICIENT_RESOURCES: Code = Code(23);
    pub const FUNCTION_NOT_FOUND: Code = Code(13);
    pub const UNKNOWN: Code = Code(999);

    fn name(self) -> &'static str {
        match self.0 {
            1 => "NVML is not initialized",
            2 => "invalid argument",
            3 => "not supported",
            4 => "no permission (needs root)",
            6 => "not found",
            7 => "buffer too small",
            9 => "driver not loaded",
            13 => "function not found in this driver",
            15 => "GPU is lost",
            16 => "GPU reset required",
            19 => "in use",
            23 => "insufficient resources",
            29 => "invalid state",
            _ => "error",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (NVML error {})", self.name(), self.0)
    }
}

pub type Nv<T> = std::result::Result<T, Code>;

/// `NVML_GPU_INSTANCE_PROFILE_COUNT` of current `nvml.h` (newer than the bindings' constant):
/// every enum below it is asked for; those a GPU lacks answer NOT_SUPPORTED or INVALID_ARGUMENT.
pub const GPU_INSTANCE_PROFILE_ENUMS: u32 = 0x12;
/// `NVML_COMPUTE_INSTANCE_PROFILE_COUNT` of current `nvml.h` (7_SLICE_NVL is 8).
pub const COMPUTE_INSTANCE_PROFILE_ENUMS: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// Readings shown by `gpu ls`; each one missing where the driver does not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Telemetry {
    pub utilization: Option<u32>,
    pub temperature: Option<u32>,
    /// Watts.
    pub power_usage: Option<f64>,
    pub power_limit: Option<f64>,
}

/// `nvmlGpuInstanceProfileInfo_v2_t`, the parts sandman uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiProfile {
    /// The enum it was asked for with (`NVML_GPU_INSTANCE_PROFILE_*`).
    pub profile_enum: u32,
    /// `info.id`: what placement, create and list calls take.
    pub id: u32,
    pub slice_count: u32,
    pub instance_count: u32,
    pub memory_mib: u64,
    /// `MIG 3g.20gb` on current drivers; empty where the driver has no v2 call.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Placement {
    pub start: u32,
    pub size: u32,
}

/// `nvmlGpuInstanceInfo_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiInfo {
    pub id: u32,
    pub profile_id: u32,
    pub placement: Placement,
}

/// `nvmlComputeInstanceProfileInfo_t`, the parts sandman uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiProfile {
    pub profile_enum: u32,
    pub id: u32,
    pub slice_count: u32,
    pub instance_count: u32,
}

/// `nvmlComputeInstanceInfo_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiInfo {
    pub id: u32,
    pub profile_id: u32,
    pub start: u32,
    pub size: u32,
}

/// A MIG device handle (`nvmlDeviceGetMigDeviceHandleByIndex`): one per compute instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigDevice {
    pub uuid: String,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    /// `NVIDIA A100-SXM4-40GB MIG 3g.20gb` on current drivers.
    pub name: Option<String>,
    pub memory_total: Option<u64>,
}

/// The NVML calls sandman makes. Calls marked privileged answer NO_PERMISSION to non-root
/// callers (nvml.h: "Requires privileged user"); calls on GPU instances answer NOT_SUPPORTED
/// while MIG mode is off.
pub trait NvmlApi: Send + Sync {
    /// `/proc/sys/kernel/random/boot_id`: GPU and compute instances never outlive a boot.
    fn boot_id(&self) -> String;
    fn device_count(&self) -> Nv<u32>;
    fn uuid(&self, gpu: u32) -> Nv<String>;
    fn name(&self, gpu: u32) -> Nv<String>;
    /// Privileged on a GPU in MIG mode.
    fn memory(&self, gpu: u32) -> Nv<Memory>;
    fn telemetry(&self, gpu: u32) -> Telemetry;
    /// Current MIG mode.
    fn mig_enabled(&self, gpu: u32) -> Nv<bool>;
    /// `nvmlDeviceGetGpuInstanceProfileInfoV` for one `NVML_GPU_INSTANCE_PROFILE_*` enum.
    fn gi_profile(&self, gpu: u32, profile_enum: u32) -> Nv<GiProfile>;
    /// `nvmlDeviceGetGpuInstancePossiblePlacements_v2` (privileged), sized by its own count.
    fn gi_placements(&self, gpu: u32, profile_id: u32) -> Nv<Vec<Placement>>;
    /// `nvmlDeviceGetGpuInstances` (privileged) into a buffer of `capacity` (the profile's
    /// instance count); INSUFFICIENT_SIZE where more exist.
    fn gpu_instances(&self, gpu: u32, profile_id: u32, capacity: u32) -> Nv<Vec<GiInfo>>;
    /// `nvmlDeviceGetGpuInstanceById` + `nvmlGpuInstanceGetInfo` (privileged).
    fn gpu_instance(&self, gpu: u32, gi: u32) -> Nv<GiInfo>;
    /// `nvmlGpuInstanceGetComputeInstanceProfileInfo`, shared engines.
    fn ci_profile(&self, gpu: u32, gi: u32, profile_enum: u32) -> Nv<CiProfile>;
    /// `nvmlGpuInstanceGetComputeInstances` into a buffer of `capacity`; INSUFFICIENT_SIZE where
    /// more exist.
    fn compute_instances(&self, gpu: u32, gi: u32, profile_id: u32, capacity: u32) -> Nv<Vec<CiInfo>>;
    /// `nvmlDeviceGetMaxMigDeviceCount`.
    fn mig_device_slots(&self, gpu: u32) -> Nv<u32>;
    /// `nvmlDeviceGetMigDeviceHandleByIndex`; NOT_FOUND for an empty slot. A GPU instance
    /// without a compute instance has no MIG device.
    fn mig_device(&self, gpu: u32, slot: u32) -> Nv<MigDevice>;
    /// `nvmlDeviceCreateGpuInstanceWithPlacement` (privileged); INSUFFICIENT_RESOURCES where the
    /// placement overlaps an instance or the profile's instances are used up. The new id.
    fn create_gpu_instance(&self, gpu: u32, profile_id: u32, placement: Placement) -> Nv<u32>;
    /// `nvmlGpuInstanceCreateComputeInstance` (privileged). The new id.
    fn create_compute_instance(&self, gpu: u32, gi: u32, ci_profile_id: u32) -> Nv<u32>;
    /// `nvmlComputeInstanceDestroy` (privileged); IN_USE while a process runs on it.
    fn destroy_compute_instance(&self, gpu: u32, gi: u32, ci: u32) -> Nv<()>;
    /// `nvmlGpuInstanceDestroy` (privileged); IN_USE while it has compute instances or processes.
    fn destroy_gpu_instance(&self, gpu: u32, gi: u32) -> Nv<()>;
    /// `nvmlDeviceGetComputeRunningProcesses_v3`'s count, on GPU `gpu` itself (`slot` `None`) or
    /// on its MIG device handle in `slot`: the processes with a compute context on it.
    fn compute_processes(&self, gpu: u32, slot: Option<u32>) -> Nv<u32>;
}
