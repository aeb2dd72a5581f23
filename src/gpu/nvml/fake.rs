//! A fake NVML for unit tests, following what `nvml.h` and the MIG user guide document
//! (`tests/data/mig-notes.md`), with each model's geometry (profiles, ids, placements) read from
//! `tests/data/mig-geometry.toml`:
//!
//! - GPU instance ids come from small pools per placement size (7g: 0; 4-slice: 1-2; 2-slice:
//!   3-6; 1-slice: 7-14 on an 8-slice GPU), lowest free first, so ids are reused;
//! - a create that overlaps an instance, or exceeds the profile's instance count, answers
//!   INSUFFICIENT_RESOURCES (23); a placement not of the profile, INVALID_ARGUMENT;
//! - a GPU instance without compute instances has no MIG device handle;
//! - privileged calls answer NO_PERMISSION to non-root, instance calls NOT_SUPPORTED with MIG off;
//! - destroy answers IN_USE while a process runs on the instance (or, for a GPU instance, while
//!   it still has compute instances);
//! - `reboot` drops every instance, changes the boot id, and (Hopper) turns MIG mode off.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::api::{
    COMPUTE_INSTANCE_PROFILE_ENUMS, CiInfo, CiProfile, Code, GiInfo, GiProfile, Memory, MigDevice, Nv, NvmlApi,
    Placement, Telemetry,
};

const MIB: u64 = 1024 * 1024;

/// One GPU-instance profile of the reference geometry.
#[derive(Debug, Clone)]
pub struct FakeProfile {
    pub name: String,
    pub profile_enum: u32,
    pub id: u32,
    pub slices: u32,
    pub memory_slices: u32,
    pub memory_mib: u64,
    pub max_instances: u32,
    pub placements: Vec<Placement>,
}

#[derive(Debug, Clone)]
struct Ci {
    id: u32,
    /// Compute-instance profile enum (= its id, as nvidia-smi shows it).
    profile: u32,
    slices: u32,
    start: u32,
}

#[derive(Debug, Clone)]
struct Gi {
    id: u32,
    profile: FakeProfile,
    placement: Placement,
    cis: Vec<Ci>,
}

#[derive(Debug, Clone)]
struct Gpu {
    uuid: String,
    name: String,
    total_mib: u64,
    memory_slices: u32,
    compute_slices: u32,
    mig: bool,
    /// Lost: every call on it answers GPU_IS_LOST.
    lost: bool,
    profiles: Vec<FakeProfile>,
    gis: Vec<Gi>,
}

struct State {
    boot: u32,
    root: bool,
    /// MIG mode survives a reboot (Ampere) or not (Hopper and later).
    mig_persists: bool,
    gpus: Vec<Gpu>,
    /// (GPU, GPU instance, compute instance) a process runs on.
    busy: HashSet<(u32, u32, u32)>,
    /// Another process's create that lands just before the next create call: (GPU, profile, start).
    race: Option<(u32, String, u32)>,
    /// Creates refused with INSUFFICIENT_RESOURCES.
    refused: u32,
    /// The answer of the next compute-instance create, instead of doing it.
    next_ci_failure: Option<Code>,
}

/// Clones share one state, so a test keeps a handle on what the backend sees.
#[derive(Clone)]
pub struct FakeNvml {
    state: Arc<Mutex<State>>,
}

/// The profiles of `model` in the reference geometry.
pub fn reference_profiles(model: &str) -> (u64, u32, u32, Vec<FakeProfile>) {
    let reference = crate::gpu::catalog::tests::reference();
    let gpu = reference["gpus"].get(model).unwrap_or_else(|| panic!("{model} not in tests/data/mig-geometry.toml"));
    let int = |v: &toml::Value, k: &str| v[k].as_integer().unwrap_or_else(|| panic!("{k} in {model}")) as u64;
    let profiles = gpu["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| FakeProfile {
            name: p["name"].as_str().unwrap().to_string(),
            profile_enum: int(p, "nvml_profile_id") as u32,
            id: int(p, "profile_info_id") as u32,
            slices: int(p, "compute_slices") as u32,
            memory_slices: int(p, "memory_slices") as u32,
            memory_mib: int(p, "memory_mib"),
            max_instances: int(p, "max_instances") as u32,
            placements: p["placements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| Placement {
                    start: pair[0].as_integer().unwrap() as u32,
                    size: pair[1].as_integer().unwrap() as u32,
                })
                .collect(),
        })
        .collect();
    (
        int(gpu, "total_memory_mib"),
        int(gpu, "memory_slice_total") as u32,
        int(gpu, "compute_slice_total") as u32,
        profiles,
    )
}

/// Compute slices of `NVML_COMPUTE_INSTANCE_PROFILE_*` (REV1 is not offered).
fn ci_slices(profile_enum: u32) -> Option<u32> {
    match profile_enum {
        0 => Some(1),
        1 => Some(2),
        2 => Some(3),
        3 => Some(4),
        4 => Some(7),
        5 => Some(8),
        6 => Some(6),
        _ => None,
    }
}

/// A stable MIG UUID for (GPU, GI, CI): the driver derives them, so they come back after a reboot.
fn mig_uuid(gpu: &str, gi: u32, ci: u32) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{gpu}/{gi}/{ci}").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("MIG-{:08x}-{:04x}-5{:03x}-{:04x}-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, gi, ci)
}

impl FakeNvml {
    /// A root caller, no GPUs yet.
    pub fn new() -> FakeNvml {
        FakeNvml {
            state: Arc::new(Mutex::new(State {
                boot: 1,
                root: true,
                mig_persists: true,
                gpus: Vec::new(),
                busy: HashSet::new(),
                race: None,
                refused: 0,
                next_ci_failure: None,
            })),
        }
    }

    /// Adds a GPU named `name` with the geometry of `geometry_of` in the reference file, in MIG mode
    /// or not; returns its index.
    pub fn add_gpu(&self, name: &str, geometry_of: &str, mig: bool) -> u32 {
        let (total_mib, memory_slices, compute_slices, profiles) = reference_profiles(geometry_of);
        let mut s = self.lock();
        let index = s.gpus.len() as u32;
        s.gpus.push(Gpu {
            uuid: format!("GPU-{index:08x}-fake-4000-8000-{:012x}", index + 1),
            name: name.to_string(),
            total_mib,
            memory_slices,
            compute_slices,
            mig,
            lost: false,
            profiles,
            gis: Vec::new(),
        });
        index
    }

    pub fn gpu_uuid(&self, gpu: u32) -> String {
        self.lock().gpus[gpu as usize].uuid.clone()
    }

    pub fn set_root(&self, root: bool) {
        self.lock().root = root;
    }

    pub fn set_mig(&self, gpu: u32, on: bool) {
        self.lock().gpus[gpu as usize].mig = on;
    }

    pub fn lose(&self, gpu: u32) {
        self.lock().gpus[gpu as usize].lost = true;
    }

    /// MIG mode is lost at reboot (Hopper and later).
    pub fn mig_lost_at_reboot(&self) {
        self.lock().mig_persists = false;
    }

    /// A reboot: every instance gone, a new boot id, MIG mode kept only where it persists.
    pub fn reboot(&self) {
        let mut s = self.lock();
        s.boot += 1;
        s.busy.clear();
        let persists = s.mig_persists;
        for g in &mut s.gpus {
            g.gis.clear();
            g.mig &= persists;
        }
    }

    /// A process starts on MIG device `uuid`.
    pub fn hold(&self, uuid: &str) {
        let mut s = self.lock();
        let key = s.find_mig(uuid).unwrap_or_else(|| panic!("no MIG device {uuid}"));
        s.busy.insert(key);
    }

    pub fn let_go(&self, uuid: &str) {
        let mut s = self.lock();
        let key = s.find_mig(uuid).unwrap();
        s.busy.remove(&key);
    }

    /// What an admin's `nvidia-smi mig -cgi <profile>` (with `-C` when `with_ci`) makes: a GPU
    /// instance at `start`; returns its id.
    pub fn admin_create(&self, gpu: u32, profile: &str, start: u32, with_ci: bool) -> u32 {
        let (id, size, slices) = {
            let s = self.lock();
            let p = s.gpus[gpu as usize].profiles.iter().find(|p| p.name == profile).expect("profile").clone();
            (p.id, p.memory_slices, p.slices)
        };
        let gi = self.create_gpu_instance(gpu, id, Placement { start, size }).expect("admin create");
        if with_ci {
            let ci_enum = (0..COMPUTE_INSTANCE_PROFILE_ENUMS).find(|e| ci_slices(*e) == Some(slices)).unwrap();
            self.create_compute_instance(gpu, gi, ci_enum).expect("admin create ci");
        }
        gi
    }

    /// Splits GPU instance `gi` into compute instances of `slices` each, as
    /// `nvidia-smi mig -cci` would; returns their MIG UUIDs.
    pub fn admin_split(&self, gpu: u32, gi: u32, slices: u32, count: u32) -> Vec<String> {
        let ci_enum = (0..COMPUTE_INSTANCE_PROFILE_ENUMS).find(|e| ci_slices(*e) == Some(slices)).unwrap();
        let uuid = self.gpu_uuid(gpu);
        (0..count).map(|_| mig_uuid(&uuid, gi, self.create_compute_instance(gpu, gi, ci_enum).unwrap())).collect()
    }

    /// Before the next create, another process makes a `profile` instance at `start`.
    pub fn race_next_create(&self, gpu: u32, profile: &str, start: u32) {
        self.lock().race = Some((gpu, profile.to_string(), start));
    }

    /// The next compute-instance create fails with `code`.
    pub fn fail_next_compute_instance(&self, code: Code) {
        self.lock().next_ci_failure = Some(code);
    }

    /// How many creates were refused as taken.
    pub fn refused(&self) -> u32 {
        self.lock().refused
    }

    /// (profile name, placement start) of every GPU instance of `gpu`, by id.
    pub fn layout(&self, gpu: u32) -> Vec<(u32, String, u32)> {
        let s = self.lock();
        let mut out: Vec<_> =
            s.gpus[gpu as usize].gis.iter().map(|g| (g.id, g.profile.name.clone(), g.placement.start)).collect();
        out.sort();
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn gpu(&self, gpu: u32) -> Nv<&Gpu> {
        let g = self.gpus.get(gpu as usize).ok_or(Code::INVALID_ARGUMENT)?;
        if g.lost { Err(Code::GPU_IS_LOST) } else { Ok(g) }
    }

    fn gpu_mut(&mut self, gpu: u32) -> Nv<&mut Gpu> {
        self.gpu(gpu)?;
        Ok(&mut self.gpus[gpu as usize])
    }

    fn privileged(&self) -> Nv<()> {
        if self.root { Ok(()) } else { Err(Code::NO_PERMISSION) }
    }

    /// A GPU in MIG mode, for instance calls.
    fn mig_gpu(&self, gpu: u32) -> Nv<&Gpu> {
        let g = self.gpu(gpu)?;
        if g.mig { Ok(g) } else { Err(Code::NOT_SUPPORTED) }
    }

    fn gi(&self, gpu: u32, gi: u32) -> Nv<&Gi> {
        self.privileged()?;
        self.mig_gpu(gpu)?.gis.iter().find(|g| g.id == gi).ok_or(Code::NOT_FOUND)
    }

    fn find_mig(&self, uuid: &str) -> Option<(u32, u32, u32)> {
        self.gpus.iter().enumerate().find_map(|(i, g)| {
            g.gis.iter().find_map(|gi| {
                gi.cis.iter().find(|ci| mig_uuid(&g.uuid, gi.id, ci.id) == uuid).map(|ci| (i as u32, gi.id, ci.id))
            })
        })
    }

    /// MIG devices of a GPU in the driver's order: by GPU instance, then compute instance.
    fn mig_devices(&self, gpu: u32) -> Nv<Vec<(&Gi, &Ci)>> {
        let g = self.mig_gpu(gpu)?;
        let mut all: Vec<(&Gi, &Ci)> = g.gis.iter().flat_map(|gi| gi.cis.iter().map(move |ci| (gi, ci))).collect();
        all.sort_by_key(|(gi, ci)| (gi.id, ci.id));
        Ok(all)
    }
}

impl NvmlApi for FakeNvml {
    fn boot_id(&self) -> String {
        format!("00000000-0000-4000-8000-{:012x}", self.lock().boot)
    }

    fn device_count(&self) -> Nv<u32> {
        Ok(self.lock().gpus.len() as u32)
    }

    fn uuid(&self, gpu: u32) -> Nv<String> {
        Ok(self.lock().gpu(gpu)?.uuid.clone())
    }

    fn name(&self, gpu: u32) -> Nv<String> {
        Ok(self.lock().gpu(gpu)?.name.clone())
    }

    fn memory(&self, gpu: u32) -> Nv<Memory> {
        let s = self.lock();
        let g = s.gpu(gpu)?;
        if g.mig {
            s.privileged()?;
        }
        Ok(Memory { total: g.total_mib * MIB, free: g.total_mib * MIB, used: 0 })
    }

    fn telemetry(&self, _gpu: u32) -> Telemetry {
        Telemetry { utilization: Some(0), temperature: Some(30), power_usage: Some(60.0), power_limit: Some(400.0) }
    }

    fn mig_enabled(&self, gpu: u32) -> Nv<bool> {
        Ok(self.lock().gpu(gpu)?.mig)
    }

    fn gi_profile(&self, gpu: u32, profile_enum: u32) -> Nv<GiProfile> {
        let s = self.lock();
        let p = s.gpu(gpu)?.profiles.iter().find(|p| p.profile_enum == profile_enum).ok_or(Code::NOT_SUPPORTED)?;
        Ok(GiProfile {
            profile_enum,
            id: p.id,
            slice_count: p.slices,
            instance_count: p.max_instances,
            memory_mib: p.memory_mib,
            name: format!("MIG {}", p.name),
        })
    }

    fn gi_placements(&self, gpu: u32, profile_id: u32) -> Nv<Vec<Placement>> {
        let s = self.lock();
        s.privileged()?;
        let p = s.gpu(gpu)?.profiles.iter().find(|p| p.id == profile_id).ok_or(Code::INVALID_ARGUMENT)?;
        Ok(p.placements.clone())
    }

    fn gpu_instances(&self, gpu: u32, profile_id: u32, capacity: u32) -> Nv<Vec<GiInfo>> {
        let s = self.lock();
        s.privileged()?;
        let g = s.mig_gpu(gpu)?;
        let list: Vec<GiInfo> = g
            .gis
            .iter()
            .filter(|gi| gi.profile.id == profile_id)
            .map(|gi| GiInfo { id: gi.id, profile_id, placement: gi.placement })
            .collect();
        if list.len() > capacity as usize {
            return Err(Code::INSUFFICIENT_SIZE);
        }
        Ok(list)
    }

    fn gpu_instance(&self, gpu: u32, gi: u32) -> Nv<GiInfo> {
        let s = self.lock();
        let g = s.gi(gpu, gi)?;
        Ok(GiInfo { id: g.id, profile_id: g.profile.id, placement: g.placement })
    }

    fn ci_profile(&self, gpu: u32, gi: u32, profile_enum: u32) -> Nv<CiProfile> {
        let s = self.lock();
        let g = s.gi(gpu, gi)?;
        let slices = ci_slices(profile_enum).filter(|n| *n <= g.profile.slices).ok_or(Code::NOT_SUPPORTED)?;
        Ok(CiProfile { profile_enum, id: profile_enum, slice_count: slices, instance_count: g.profile.slices / slices })
    }

    fn compute_instances(&self, gpu: u32, gi: u32, profile_id: u32, capacity: u32) -> Nv<Vec<CiInfo>> {
        let s = self.lock();
        let g = s.gi(gpu, gi)?;
        let list: Vec<CiInfo> = g
            .cis
            .iter()
            .filter(|ci| ci.profile == profile_id)
            .map(|ci| CiInfo { id: ci.id, profile_id, start: ci.start, size: ci.slices })
            .collect();
        if list.len() > capacity as usize {
            return Err(Code::INSUFFICIENT_SIZE);
        }
        Ok(list)
    }

    fn mig_device_slots(&self, gpu: u32) -> Nv<u32> {
        Ok(self.lock().gpu(gpu)?.compute_slices)
    }

    fn mig_device(&self, gpu: u32, slot: u32) -> Nv<MigDevice> {
        let s = self.lock();
        let g = s.gpu(gpu)?;
        let devices = s.mig_devices(gpu).map_err(|_| Code::NOT_FOUND)?;
        let (gi, ci) = devices.get(slot as usize).ok_or(Code::NOT_FOUND)?;
        let whole = ci.slices == gi.profile.slices;
        let profile = if whole { gi.profile.name.clone() } else { format!("{}c.{}", ci.slices, gi.profile.name) };
        Ok(MigDevice {
            uuid: mig_uuid(&g.uuid, gi.id, ci.id),
            gpu_instance_id: gi.id,
            compute_instance_id: ci.id,
            name: Some(format!("{} MIG {profile}", g.name)),
            memory_total: Some(gi.profile.memory_mib * MIB),
        })
    }

    fn create_gpu_instance(&self, gpu: u32, profile_id: u32, placement: Placement) -> Nv<u32> {
        let race = self.lock().race.take();
        if let Some((gpu, profile, start)) = race {
            self.admin_create(gpu, &profile, start, true);
        }
        let result = self.place_gpu_instance(gpu, profile_id, placement);
        if result == Err(Code::INSUFFICIENT_RESOURCES) {
            self.lock().refused += 1;
        }
        result
    }

    fn create_compute_instance(&self, gpu: u32, gi: u32, ci_profile_id: u32) -> Nv<u32> {
        let mut s = self.lock();
        s.gi(gpu, gi)?;
        if let Some(code) = s.next_ci_failure.take() {
            return Err(code);
        }
        let g = s.gpu_mut(gpu)?;
        let gi = g.gis.iter_mut().find(|g| g.id == gi).ok_or(Code::NOT_FOUND)?;
        let slices = ci_slices(ci_profile_id).filter(|n| *n <= gi.profile.slices).ok_or(Code::INVALID_ARGUMENT)?;
        let used = gi.cis.iter().fold(0u32, |m, ci| m | (((1 << ci.slices) - 1) << ci.start));
        let start = (0..=gi.profile.slices - slices)
            .step_by(slices as usize)
            .find(|start| used & (((1 << slices) - 1) << start) == 0)
            .ok_or(Code::INSUFFICIENT_RESOURCES)?;
        let id = (0..).find(|id| gi.cis.iter().all(|ci| ci.id != *id)).unwrap();
        gi.cis.push(Ci { id, profile: ci_profile_id, slices, start });
        Ok(id)
    }
    fn destroy_compute_instance(&self, gpu: u32, gi: u32, ci: u32) -> Nv<()> {
        let mut s = self.lock();
        s.gi(gpu, gi)?;
        if s.busy.contains(&(gpu, gi, ci)) {
            return Err(Code::IN_USE);
        }
        let g = s.gpu_mut(gpu)?;
        let gi = g.gis.iter_mut().find(|g| g.id == gi).ok_or(Code::NOT_FOUND)?;
        let before = gi.cis.len();
        gi.cis.retain(|c| c.id != ci);
        if gi.cis.len() == before { Err(Code::NOT_FOUND) } else { Ok(()) }
    }

    /// A device `hold` marked busy runs one process; a whole GPU counts its MIG devices' ones.
    fn compute_processes(&self, gpu: u32, slot: Option<u32>) -> Nv<u32> {
        let s = self.lock();
        s.gpu(gpu)?;
        match slot {
            None => Ok(s.busy.iter().filter(|(g, _, _)| *g == gpu).count() as u32),
            Some(slot) => {
                let devices = s.mig_devices(gpu).map_err(|_| Code::NOT_FOUND)?;
                let (gi, ci) = devices.get(slot as usize).ok_or(Code::NOT_FOUND)?;
                Ok(u32::from(s.busy.contains(&(gpu, gi.id, ci.id))))
            }
        }
    }

    fn destroy_gpu_instance(&self, gpu: u32, gi: u32) -> Nv<()> {
        let mut s = self.lock();
        if !s.gi(gpu, gi)?.cis.is_empty() {
            return Err(Code::IN_USE);
        }
        s.gpu_mut(gpu)?.gis.retain(|g| g.id != gi);
        Ok(())
    }
}

impl FakeNvml {
    fn place_gpu_instance(&self, gpu: u32, profile_id: u32, placement: Placement) -> Nv<u32> {
        let mut s = self.lock();
        s.privileged()?;
        s.mig_gpu(gpu)?;
        let g = s.gpu_mut(gpu)?;
        let profile = g.profiles.iter().find(|p| p.id == profile_id).ok_or(Code::INVALID_ARGUMENT)?.clone();
        if !profile.placements.contains(&placement) {
            return Err(Code::INVALID_ARGUMENT);
        }
        let mask = |p: Placement| ((1u32 << p.size) - 1) << p.start;
        let occupied = g.gis.iter().fold(0, |m, gi| m | mask(gi.placement));
        let count = g.gis.iter().filter(|gi| gi.profile.id == profile_id).count() as u32;
        if occupied & mask(placement) != 0 || count >= profile.max_instances {
            return Err(Code::INSUFFICIENT_RESOURCES);
        }
        // The id pool of this placement size: k - 1 ..= 2k - 2 for k = grid / size.
        let k = g.memory_slices / placement.size;
        let id =
            (k - 1..=2 * k - 2).find(|id| g.gis.iter().all(|gi| gi.id != *id)).ok_or(Code::INSUFFICIENT_RESOURCES)?;
        g.gis.push(Gi { id, profile, placement, cis: Vec::new() });
        Ok(id)
    }
}
