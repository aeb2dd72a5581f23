//! The real GPUs, through NVML (`nvml/api.rs` lists the calls; `nvml/real.rs` makes them).
//! Read-only unless `mig_mode = dynamic`, and then it only destroys GPU instances it recorded as
//! its own (the store's `gpu_created` table, in the same transaction as the session) and that
//! are still the instance it made: same boot, same id, profile and placement. It never toggles
//! MIG mode.
//!
//! The layout is read the way NVIDIA's mig-parted reads it: every GPU instance of every profile,
//! then the compute instances inside each, then the MIG device handles (which exist only for
//! compute instances) for their UUIDs. A device that cannot be read is skipped with a warning;
//! a caller without root sees the MIG devices without their placements.

pub mod api;
#[cfg(test)]
mod fake;
mod geometry;
mod real;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use api::{COMPUTE_INSTANCE_PROFILE_ENUMS, CiInfo, Code, GiInfo, MigDevice, NvmlApi, Placement};

use super::allocate::{self, GpuState, InstanceState, Occupied};
use super::catalog::{Model, Profile};
use super::{GpuAccess, GpuBackend, GpuDevice, GpuRequest, MigInstance, ProfileInfo};
use crate::config::GpuDeviceAccess;
use crate::error::{Error, Result};
use crate::store::{CreatedInstance as Created, GpuLedger, GpuPick, Store};

pub struct NvmlBackend {
    api: Box<dyn NvmlApi>,
    dynamic: bool,
    default_profile: String,
    access: GpuDeviceAccess,
    /// The session database, which records the instances sandman created so that it never
    /// destroys anyone else's. Its own connection, for reads outside the caller's transactions.
    db: Mutex<Store>,
}

/// Everything one scan found.
struct Scan {
    devices: Vec<GpuDevice>,
    states: Vec<GpuState>,
    /// NVML's index of each GPU in `states`.
    indexes: Vec<u32>,
    models: Vec<&'static Model>,
    warnings: Vec<String>,
}

/// A GPU instance and its compute instances, as NVML lists them.
struct LiveGi {
    info: GiInfo,
    profile: &'static Profile,
    cis: Vec<(CiInfo, Option<MigDevice>)>,
}

/// What became of an instance sandman recorded, when asked to destroy it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Destroyed,
    /// Not there any more (a reboot, an admin, MIG mode off): nothing to do.
    Gone,
    /// Something else sits there now: the entry is dropped, the instance left alone.
    NotOurs(String),
    /// A process (or DCGM) holds it: kept for a later pass.
    InUse(String),
    Failed(String),
}

fn unavailable(what: &str, code: Code) -> Error {
    Error::Unavailable(format!("NVML could not {what}: {code}"))
}

impl NvmlBackend {
    /// Loads libnvidia-ml. Fails (Unavailable) where no NVIDIA driver is installed.
    pub fn open(db: &Path, default_profile: &str, dynamic: bool, access: GpuDeviceAccess) -> Result<NvmlBackend> {
        let library = real::Library::init().map_err(|e| {
            Error::Unavailable(format!(
                "cannot load NVML from libnvidia-ml.so.1 ({e}): install the NVIDIA driver, or set gpu_backend = \"none\" for CPU-only sessions"
            ))
        })?;
        Self::with_api(Box::new(library), db, default_profile, dynamic, access)
    }

    fn with_api(
        api: Box<dyn NvmlApi>,
        db: &Path,
        default_profile: &str,
        dynamic: bool,
        access: GpuDeviceAccess,
    ) -> Result<NvmlBackend> {
        Ok(NvmlBackend {
            api,
            dynamic,
            default_profile: default_profile.to_string(),
            access,
            db: Mutex::new(Store::open(db)?),
        })
    }

    /// Everything NVML reports. `created` are the MIG UUIDs sandman created in this boot. Fails
    /// only where NVML cannot count the GPUs; each GPU that cannot be read is a warning.
    fn scan(&self, created: &HashSet<String>) -> Result<Scan> {
        let count = self.api.device_count().map_err(|c| unavailable("count the GPUs", c))?;
        let mut scan = Scan {
            devices: Vec::new(),
            states: Vec::new(),
            indexes: Vec::new(),
            models: Vec::new(),
            warnings: Vec::new(),
        };
        for index in 0..count {
            if let Err(why) = self.scan_gpu(index, created, &mut scan) {
                scan.warnings.push(format!("GPU {index} skipped: {why}"));
            }
        }
        Ok(scan)
    }

    fn scan_gpu(&self, index: u32, created: &HashSet<String>, scan: &mut Scan) -> std::result::Result<(), String> {
        let api = &*self.api;
        let uuid = api.uuid(index).map_err(|c| format!("cannot read its UUID: {c}"))?;
        let name = api.name(index).map_err(|c| format!("{uuid}: cannot read its name: {c}"))?;
        let memory = match api.memory(index) {
            Ok(m) => m,
            Err(code) => {
                scan.warnings.push(format!("{name} {uuid}: memory unknown ({code})"));
                api::Memory { total: 0, free: 0, used: 0 }
            }
        };
        let mig_enabled = match api.mig_enabled(index) {
            Ok(on) => on,
            Err(Code::NOT_SUPPORTED) => false,
            Err(code) => {
                scan.warnings.push(format!("{name} {uuid}: MIG mode unknown ({code}); taken as off"));
                false
            }
        };
        let mut instances = Vec::new();
        let mut state = GpuState {
            uuid: uuid.clone(),
            name: name.clone(),
            model: None,
            mig_enabled,
            instances: Vec::new(),
            occupied_only: Vec::new(),
        };
        // Read with MIG mode off too, so `gpu profiles` shows what the GPU could be split into.
        let geometry = geometry::read(api, index, &name);
        state.model = geometry.model;
        scan.models.extend(geometry.model);
        if mig_enabled {
            scan.warnings.extend(geometry.warnings);
            let handles = self.mig_devices(index, &name, &uuid, &mut scan.warnings);
            let gis = match state.model {
                Some(model) => self.gpu_instances(index, model, &handles),
                None => Err(Code::NOT_SUPPORTED),
            };
            match gis {
                Ok(gis) => {
                    for gi in gis {
                        describe(&gi, &uuid, created, &mut instances, &mut state);
                    }
                }
                Err(code) => {
                    // Without root NVML lists no GPU instances: the MIG devices still show, with
                    // their profile from their name and no placement.
                    scan.warnings.push(format!(
                        "{name} {uuid}: GPU instances unreadable ({code}); MIG devices listed without placements{}",
                        if code == Code::NO_PERMISSION { " (run as root for the full picture)" } else { "" }
                    ));
                    for d in handles.into_values() {
                        let profile = d
                            .name
                            .as_deref()
                            .and_then(geometry::profile_of_device_name)
                            .unwrap_or("unknown")
                            .to_string();
                        let p = state.model.and_then(|m| m.profile(&profile));
                        instances.push(MigInstance {
                            uuid: d.uuid.clone(),
                            profile: profile.clone(),
                            memory: d.memory_total.unwrap_or(0),
                            compute_slices: p.map(|p| p.compute_slices).unwrap_or(0),
                            memory_slices: p.map(|p| p.memory_slices).unwrap_or(0),
                            parent_gpu: uuid.clone(),
                            gpu_instance_id: d.gpu_instance_id,
                            compute_instance_id: d.compute_instance_id,
                            placement_start: 0,
                            created_by_sandman: created.contains(&d.uuid),
                            allocated: false,
                        });
                        state.instances.push(InstanceState { uuid: d.uuid, profile, start: 0 });
                    }
                }
            }
        }
        let telemetry = api.telemetry(index);
        scan.devices.push(GpuDevice {
            uuid,
            name,
            memory_total: memory.total,
            memory_free: memory.free,
            memory_used: memory.used,
            utilization: telemetry.utilization,
            temperature: telemetry.temperature,
            power_usage: telemetry.power_usage,
            power_limit: telemetry.power_limit,
            mig_enabled,
            mig_instances: instances,
        });
        scan.states.push(state);
        scan.indexes.push(index);
        Ok(())
    }

    /// The MIG device handles of GPU `index`, by (GPU instance, compute instance).
    fn mig_devices(
        &self,
        index: u32,
        name: &str,
        uuid: &str,
        warnings: &mut Vec<String>,
    ) -> HashMap<(u32, u32), MigDevice> {
        let mut out = HashMap::new();
        let slots = match self.api.mig_device_slots(index) {
            Ok(n) => n,
            Err(code) => {
                warnings.push(format!("{name} {uuid}: cannot count MIG devices ({code})"));
                return out;
            }
        };
        for slot in 0..slots {
            match self.api.mig_device(index, slot) {
                Ok(d) => {
                    out.insert((d.gpu_instance_id, d.compute_instance_id), d);
                }
                // Empty slots answer NOT_FOUND.
                Err(Code::NOT_FOUND) => {}
                Err(code) => warnings.push(format!("{name} {uuid}: MIG device {slot} unreadable ({code})")),
            }
        }
        out
    }

    /// Every GPU instance of GPU `index`, walked per profile with buffers of the profile's own
    /// instance count, each with its compute instances and their MIG devices.
    fn gpu_instances(
        &self,
        index: u32,
        model: &'static Model,
        handles: &HashMap<(u32, u32), MigDevice>,
    ) -> std::result::Result<Vec<LiveGi>, Code> {
        let mut out = Vec::new();
        for profile in model.profiles {
            let gis = self.api.gpu_instances(index, profile.profile_info_id, profile.max_instances)?;
            for info in gis {
                let cis = self
                    .compute_instances(index, info.id)?
                    .into_iter()
                    .map(|ci| (ci, handles.get(&(info.id, ci.id)).cloned()))
                    .collect();
                out.push(LiveGi { info, profile, cis });
            }
        }
        out.sort_by_key(|gi| (gi.info.placement.start, gi.info.id));
        Ok(out)
    }

    /// The compute instances of GPU instance `gi`, every compute-instance profile asked.
    fn compute_instances(&self, index: u32, gi: u32) -> std::result::Result<Vec<CiInfo>, Code> {
        let mut out = Vec::new();
        for profile_enum in 0..COMPUTE_INSTANCE_PROFILE_ENUMS {
            let Ok(profile) = self.api.ci_profile(index, gi, profile_enum) else { continue };
            out.extend(self.api.compute_instances(index, gi, profile.id, profile.instance_count)?);
        }
        out.sort_by_key(|ci| ci.id);
        Ok(out)
    }

    /// NVML's index of the GPU with `uuid`, if present.
    fn index_of(&self, uuid: &str) -> Option<u32> {
        let count = self.api.device_count().ok()?;
        (0..count).find(|i| self.api.uuid(*i).is_ok_and(|u| u == uuid))
    }

    /// Creates a GPU instance of `profile` at `start` on GPU `index` with one compute instance
    /// over all of it, recording it in `ledger` as soon as the GPU instance exists. `None` where
    /// the driver finds the placement taken (NVML error 23), for the caller to try the next.
    fn create(
        &self,
        ledger: &GpuLedger,
        index: u32,
        gpu_uuid: &str,
        profile: &'static Profile,
        start: u32,
    ) -> Result<Option<String>> {
        let placement = Placement { start, size: profile.memory_slices };
        let what = format!("create a {} instance at slice {start} on {gpu_uuid}", profile.name);
        let gi = match self.api.create_gpu_instance(index, profile.profile_info_id, placement) {
            Ok(id) => id,
            Err(Code::INSUFFICIENT_RESOURCES) => {
                tracing::info!(gpu = gpu_uuid, profile = profile.name, start, "placement taken; trying the next");
                return Ok(None);
            }
            Err(code) => return Err(unavailable(&what, code)),
        };
        let mut entry = Created {
            gpu_uuid: gpu_uuid.to_string(),
            gpu_instance_id: gi,
            mig_uuid: None,
            boot_id: Some(self.api.boot_id()),
            profile_id: Some(profile.profile_info_id),
            profile: Some(profile.name.to_string()),
            placement: Some((start, profile.memory_slices)),
        };
        ledger.record_created(&entry)?;
        match self.add_compute_instance(index, gi, profile) {
            Ok(mig_uuid) => {
                entry.mig_uuid = Some(mig_uuid.clone());
                ledger.record_created(&entry)?;
                tracing::info!(gpu = gpu_uuid, gpu_instance = gi, mig = %mig_uuid, profile = profile.name, start, "MIG instance created");
                Ok(Some(mig_uuid))
            }
            Err(e) => {
                match self.destroy(&entry) {
                    Outcome::Destroyed | Outcome::Gone => ledger.forget_created(&entry)?,
                    other => tracing::error!(
                        gpu = gpu_uuid, gpu_instance = gi, outcome = ?other,
                        "a half-made GPU instance could not be removed; remove it with nvidia-smi mig -dci/-dgi"
                    ),
                }
                Err(e)
            }
        }
    }

    /// A compute instance over all of GPU instance `gi`: its profile is the one with as many
    /// slices as the GPU instance, resolved at run time. Returns the new MIG device's UUID.
    fn add_compute_instance(&self, index: u32, gi: u32, profile: &Profile) -> Result<String> {
        let ci_profile = (0..COMPUTE_INSTANCE_PROFILE_ENUMS)
            .filter_map(|e| self.api.ci_profile(index, gi, e).ok())
            .find(|p| p.slice_count == profile.compute_slices && p.instance_count == 1)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "the driver offers no compute instance of {} slices in a {} GPU instance",
                    profile.compute_slices, profile.name
                ))
            })?;
        let ci = self
            .api
            .create_compute_instance(index, gi, ci_profile.id)
            .map_err(|c| unavailable(&format!("create the compute instance of GPU instance {gi}"), c))?;
        // The new MIG device: found by its ids among the handles, not by a full rescan.
        let slots = self.api.mig_device_slots(index).map_err(|c| unavailable("count MIG devices", c))?;
        (0..slots)
            .filter_map(|slot| self.api.mig_device(index, slot).ok())
            .find(|d| (d.gpu_instance_id, d.compute_instance_id) == (gi, ci))
            .map(|d| d.uuid)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "created GPU instance {gi} / compute instance {ci} but no MIG device shows it"
                ))
            })
    }

    /// Destroys the instance `c` records, if it is still the one sandman made: its compute
    /// instances, then the GPU instance.
    fn destroy(&self, c: &Created) -> Outcome {
        let boot = self.api.boot_id();
        if c.boot_id.as_deref() != Some(boot.as_str()) {
            return Outcome::NotOurs(match &c.boot_id {
                Some(_) => "made before the last reboot, which removed it; any instance there now is another's".into(),
                None => "recorded without a boot id (an older sandman): it cannot be told from another's".into(),
            });
        }
        let Some(index) = self.index_of(&c.gpu_uuid) else { return Outcome::Gone };
        let live = match self.api.gpu_instance(index, c.gpu_instance_id) {
            Ok(info) => info,
            Err(Code::NOT_FOUND | Code::INVALID_ARGUMENT | Code::NOT_SUPPORTED) => return Outcome::Gone,
            Err(code) => return Outcome::Failed(format!("cannot read GPU instance {}: {code}", c.gpu_instance_id)),
        };
        let live_placement = Some((live.placement.start, live.placement.size));
        if Some(live.profile_id) != c.profile_id || live_placement != c.placement {
            return Outcome::NotOurs(format!(
                "GPU instance {} is now profile {} at {:?}, not the one recorded",
                c.gpu_instance_id, live.profile_id, live_placement
            ));
        }
        let cis = match self.compute_instances(index, c.gpu_instance_id) {
            Ok(cis) => cis,
            Err(code) => return Outcome::Failed(format!("cannot list its compute instances: {code}")),
        };
        for ci in cis {
            match self.api.destroy_compute_instance(index, c.gpu_instance_id, ci.id) {
                Ok(()) | Err(Code::NOT_FOUND) => {}
                Err(Code::IN_USE) => return Outcome::InUse(format!("compute instance {} is in use", ci.id)),
                Err(code) => return Outcome::Failed(format!("cannot destroy compute instance {}: {code}", ci.id)),
            }
        }
        match self.api.destroy_gpu_instance(index, c.gpu_instance_id) {
            Ok(()) => Outcome::Destroyed,
            Err(Code::NOT_FOUND | Code::NOT_SUPPORTED) => Outcome::Gone,
            Err(Code::IN_USE) => Outcome::InUse(format!("GPU instance {} is in use", c.gpu_instance_id)),
            Err(code) => Outcome::Failed(format!("cannot destroy GPU instance {}: {code}", c.gpu_instance_id)),
        }
    }

    /// Destroys what `c` records and settles its entry; true where an instance was destroyed.
    /// Only the database can fail this: an instance that cannot be destroyed now is kept (and
    /// logged) for the next pass.
    fn settle(&self, c: &Created, ledger: &GpuLedger) -> Result<bool> {
        let outcome = self.destroy(c);
        let mig = c.mig_uuid.as_deref().unwrap_or("-");
        match &outcome {
            Outcome::Destroyed => {
                tracing::info!(gpu = %c.gpu_uuid, gpu_instance = c.gpu_instance_id, mig, "MIG instance destroyed")
            }
            Outcome::Gone => {}
            Outcome::NotOurs(why) => {
                tracing::warn!(gpu = %c.gpu_uuid, gpu_instance = c.gpu_instance_id, mig, "record dropped, instance left alone: {why}")
            }
            Outcome::InUse(why) | Outcome::Failed(why) => {
                tracing::warn!(gpu = %c.gpu_uuid, gpu_instance = c.gpu_instance_id, mig, "MIG instance kept for the next reap: {why}");
                return Ok(false);
            }
        }
        ledger.forget_created(c)?;
        Ok(outcome == Outcome::Destroyed)
    }

    /// The MIG UUIDs sandman created in this boot.
    fn created_uuids(&self, entries: Vec<Created>) -> HashSet<String> {
        let boot = self.api.boot_id();
        entries.into_iter().filter(|c| c.boot_id.as_deref() == Some(boot.as_str())).filter_map(|c| c.mig_uuid).collect()
    }

    /// What NVML reports now, with the instances sandman created as its own database records
    /// them (read outside any transaction of the caller's). Warnings are logged.
    fn scan_now(&self) -> Result<Scan> {
        let entries = self.db.lock().unwrap_or_else(|p| p.into_inner()).read_gpu_ledger(|l| l.created())?;
        let scan = self.scan(&self.created_uuids(entries))?;
        for w in &scan.warnings {
            tracing::warn!("{w}");
        }
        Ok(scan)
    }
}

/// Adds GPU instance `gi` to the scan's results: one MIG device when a single compute instance
/// spans it, each compute instance as its own device (`1c.3g.20gb`) when it is split, none when
/// it has no compute instance. Placement always counts it.
fn describe(gi: &LiveGi, gpu_uuid: &str, created: &HashSet<String>, out: &mut Vec<MigInstance>, state: &mut GpuState) {
    let name = gi.profile.name.to_string();
    let start = gi.info.placement.start;
    let gi_slices = gi.profile.compute_slices;
    let whole = matches!(gi.cis.as_slice(), [(ci, _)] if ci.size == gi_slices);
    if !whole {
        state.occupied_only.push(Occupied { profile: name.clone(), start });
    }
    for (ci, device) in &gi.cis {
        let Some(device) = device else { continue };
        let profile = if whole { name.clone() } else { format!("{}c.{name}", ci.size) };
        out.push(MigInstance {
            uuid: device.uuid.clone(),
            profile: profile.clone(),
            memory: device.memory_total.unwrap_or(gi.profile.memory_mib * 1024 * 1024),
            compute_slices: ci.size,
            memory_slices: gi.info.placement.size,
            parent_gpu: gpu_uuid.to_string(),
            gpu_instance_id: gi.info.id,
            compute_instance_id: ci.id,
            placement_start: start,
            created_by_sandman: created.contains(&device.uuid),
            allocated: false,
        });
        state.instances.push(InstanceState { uuid: device.uuid.clone(), profile, start });
    }
}

impl GpuBackend for NvmlBackend {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn devices(&self) -> Result<Vec<GpuDevice>> {
        Ok(self.scan_now()?.devices)
    }

    fn profiles(&self) -> Result<Vec<ProfileInfo>> {
        Ok(super::catalog_profiles(self.scan_now()?.models.into_iter()))
    }

    fn diagnostics(&self) -> Result<Vec<String>> {
        let entries = self.db.lock().unwrap_or_else(|p| p.into_inner()).read_gpu_ledger(|l| l.created())?;
        Ok(self.scan(&self.created_uuids(entries))?.warnings)
    }

    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>, ledger: &GpuLedger) -> Result<Option<GpuPick>> {
        let scan = self.scan(&self.created_uuids(ledger.created()?))?;
        allocate::plan(&scan.states, request, taken, &self.default_profile, self.dynamic)?.into_pick(
            |gpu, profile, start| self.create(ledger, scan.indexes[gpu], &scan.states[gpu].uuid, profile, start),
        )
    }

    fn release(&self, uuid: &str, ledger: &GpuLedger) -> Result<()> {
        for c in ledger.created()?.into_iter().filter(|c| c.mig_uuid.as_deref() == Some(uuid)) {
            self.settle(&c, ledger)?;
        }
        Ok(())
    }

    fn reconcile(&self, owned: &HashSet<String>, ledger: &GpuLedger) -> Result<Vec<String>> {
        let mut destroyed = Vec::new();
        for c in ledger.created()? {
            if c.mig_uuid.as_ref().is_some_and(|u| owned.contains(u)) {
                continue;
            }
            if self.settle(&c, ledger)? {
                destroyed.extend(c.mig_uuid);
            }
        }
        Ok(destroyed)
    }

    /// The device's compute processes: a whole GPU's own, or those on the MIG device handle with
    /// this UUID (found by walking each GPU's MIG device slots). Per-slice utilisation is not
    /// available on MIG devices (`nvmlDeviceGetUtilizationRates` answers for the whole GPU, or
    /// not at all), so processes are the signal.
    fn compute_processes(&self, uuid: &str) -> Result<Option<u32>> {
        let count = self.api.device_count().map_err(|c| unavailable("count GPUs", c))?;
        for gpu in 0..count {
            if self.api.uuid(gpu).is_ok_and(|u| u == uuid) {
                return Ok(self.api.compute_processes(gpu, None).ok());
            }
            let Ok(slots) = self.api.mig_device_slots(gpu) else { continue };
            for slot in 0..slots {
                if self.api.mig_device(gpu, slot).is_ok_and(|d| d.uuid == uuid) {
                    return Ok(self.api.compute_processes(gpu, Some(slot)).ok());
                }
            }
        }
        Ok(None)
    }

    fn access(&self, uuid: &str) -> GpuAccess {
        match self.access {
            GpuDeviceAccess::Nvidia => GpuAccess::NvidiaDevice(uuid.to_string()),
            GpuDeviceAccess::Cdi => GpuAccess::Cdi(format!("nvidia.com/gpu={uuid}")),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The backend's own code over `fake::FakeNvml`, one test per way a real host breaks it.

    use super::fake::FakeNvml;
    use super::*;

    const A100: &str = "NVIDIA A100-SXM4-40GB";

    struct Host {
        fake: FakeNvml,
        backend: NvmlBackend,
        store: Store,
        _dir: tempfile::TempDir,
    }

    fn host(fake: &FakeNvml, dynamic: bool) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let backend =
            NvmlBackend::with_api(Box::new(fake.clone()), &db, "3g.20gb", dynamic, GpuDeviceAccess::Nvidia).unwrap();
        Host { fake: fake.clone(), backend, store: Store::open(&db).unwrap(), _dir: dir }
    }

    fn a100_host(dynamic: bool) -> Host {
        let fake = FakeNvml::new();
        fake.add_gpu(A100, A100, true);
        host(&fake, dynamic)
    }

    impl Host {
        fn pick(&mut self, request: &str) -> Result<String> {
            let backend = &self.backend;
            let request = GpuRequest::Profile(request.into());
            self.store.with_gpu_ledger(|l| Ok(backend.pick(&request, &HashSet::new(), l)?.expect("a GPU").uuid))
        }

        fn release(&mut self, uuid: &str) -> Result<()> {
            let backend = &self.backend;
            self.store.with_gpu_ledger(|l| backend.release(uuid, l))
        }

        fn reap(&mut self) -> Vec<String> {
            let backend = &self.backend;
            self.store.with_gpu_ledger(|l| backend.reconcile(&HashSet::new(), l)).unwrap()
        }

        fn ledger(&mut self) -> Vec<Created> {
            self.store.read_gpu_ledger(|l| l.created()).unwrap()
        }

        /// Picks `request` and returns the MIG device listed for it.
        fn pick_listed(&mut self, request: &str) -> MigInstance {
            let uuid = self.pick(request).unwrap();
            self.instances().into_iter().find(|m| m.uuid == uuid).expect("listed")
        }

        fn instances(&self) -> Vec<MigInstance> {
            self.backend.devices().unwrap().into_iter().flat_map(|d| d.mig_instances).collect()
        }
    }

    #[test]
    fn compute_processes_are_counted_per_mig_device_and_per_gpu() {
        let mut h = a100_host(true);
        let a = h.pick("3g").unwrap();
        let b = h.pick("1g").unwrap();
        assert_eq!(h.backend.compute_processes(&a).unwrap(), Some(0));
        h.fake.hold(&a);
        assert_eq!(h.backend.compute_processes(&a).unwrap(), Some(1));
        assert_eq!(h.backend.compute_processes(&b).unwrap(), Some(0), "another slice of the same GPU is idle");
        let gpu = h.fake.gpu_uuid(0);
        assert_eq!(h.backend.compute_processes(&gpu).unwrap(), Some(1), "the whole GPU counts its slices' processes");
        h.fake.let_go(&a);
        assert_eq!(h.backend.compute_processes(&a).unwrap(), Some(0));
        assert_eq!(h.backend.compute_processes("MIG-unknown").unwrap(), None);
    }

    #[test]
    fn a_taken_placement_moves_on_to_the_next_then_reports_exhaustion() {
        let mut h = a100_host(true);
        // Another process takes the upper half (sandman's first choice for a 3g) meanwhile.
        h.fake.race_next_create(0, "3g.20gb", 4);
        let mine = h.pick_listed("3g");
        assert_eq!(h.fake.refused(), 1, "the first placement was refused with error 23");
        assert_eq!((mine.profile.as_str(), mine.placement_start, mine.created_by_sandman), ("3g.20gb", 0, true));

        // Every placement taken by the time sandman asks: a conflict (409 / exit 3), not 503.
        let mut h = a100_host(true);
        h.fake.race_next_create(0, "7g.40gb", 0);
        let e = h.pick("3g").unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "{e:?}");
        assert_eq!(h.fake.refused(), 2);
        assert!(h.ledger().is_empty(), "nothing half-recorded");
    }

    #[test]
    fn a_gpu_instance_without_compute_instance_still_occupies_its_slices() {
        let mut h = a100_host(true);
        // An admin made a GPU instance without `-C`: it has no MIG device handle.
        h.fake.admin_create(0, "3g.20gb", 4, false);
        assert!(h.instances().is_empty(), "no MIG device to hand out");
        h.pick("3g").unwrap();
        assert_eq!(h.fake.refused(), 0, "the occupied placement was never tried");
        let mut layout: Vec<(String, u32)> = h.fake.layout(0).into_iter().map(|(_, p, s)| (p, s)).collect();
        layout.sort();
        assert_eq!(layout, [("3g.20gb".to_string(), 0), ("3g.20gb".to_string(), 4)]);
    }

    #[test]
    fn a_split_gpu_instance_is_reported_as_its_compute_instances() {
        let h = a100_host(false);
        let gi = h.fake.admin_create(0, "3g.20gb", 4, false);
        let uuids = h.fake.admin_split(0, gi, 1, 3);
        let listed = h.instances();
        assert_eq!(listed.len(), 3);
        for m in &listed {
            assert!(uuids.contains(&m.uuid));
            assert_eq!((m.profile.as_str(), m.compute_slices, m.gpu_instance_id), ("1c.3g.20gb", 1, gi));
        }
        // None of them is a 3g.20gb slice.
        let mut h = h;
        assert!(matches!(h.pick("3g.20gb"), Err(Error::Exhausted(_))));
    }

    #[test]
    fn non_root_and_broken_devices_degrade_to_what_can_be_read() {
        let fake = FakeNvml::new();
        fake.add_gpu(A100, A100, true);
        fake.add_gpu(A100, A100, false);
        fake.add_gpu("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", false);
        let h = host(&fake, false);
        let uuid_of = |gi| fake.admin_create(0, "2g.10gb", gi, true);
        uuid_of(2);
        fake.lose(1);
        fake.set_root(false);
        let devices = h.backend.devices().unwrap();
        assert_eq!(devices.len(), 2, "the lost GPU is skipped, the others listed");
        assert_eq!(devices[0].mig_instances.len(), 1);
        assert_eq!(devices[0].mig_instances[0].profile, "2g.10gb", "from the MIG device's name");
        assert_eq!(devices[0].memory_total, 0, "needs root on a MIG GPU");
        assert!(devices[1].memory_total > 0, "readable without MIG");
        let warnings = h.backend.diagnostics().unwrap();
        assert!(warnings.iter().any(|w| w.starts_with("GPU 1 skipped") && w.contains("GPU is lost")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("run as root")), "{warnings:?}");
    }

    #[test]
    fn the_ledger_records_identity_and_never_destroys_an_instance_from_another_boot() {
        let mut h = a100_host(true);
        let uuid = h.pick("3g").unwrap();
        let entry = h.ledger().pop().unwrap();
        assert_eq!(entry.mig_uuid.as_deref(), Some(uuid.as_str()));
        assert_eq!(entry.boot_id, Some(h.fake.boot_id()));
        assert_eq!(
            (entry.profile.as_deref(), entry.profile_id, entry.placement),
            (Some("3g.20gb"), Some(9), Some((4, 4)))
        );

        // A reboot removes it; a MIG manager re-applies a layout that reuses the same id and place.
        h.fake.reboot();
        let gi = h.fake.admin_create(0, "3g.20gb", 4, true);
        assert_eq!(gi, entry.gpu_instance_id, "ids come from small pools and are reused");
        assert!(h.reap().is_empty());
        assert_eq!(h.fake.layout(0).len(), 1, "the other instance is left alone");
        assert!(h.ledger().is_empty(), "the stale entry is dropped");
    }

    #[test]
    fn a_different_instance_under_a_recorded_id_is_left_alone() {
        let mut h = a100_host(true);
        let uuid = h.pick("3g").unwrap();
        let gi = h.ledger()[0].gpu_instance_id;
        // Removed behind sandman's back and the id reused by another profile in the same boot.
        let busy = h.fake.clone();
        h.fake.set_root(true);
        busy.destroy_compute_instance(0, gi, 0).unwrap();
        busy.destroy_gpu_instance(0, gi).unwrap();
        assert_eq!(h.fake.admin_create(0, "4g.20gb", 0, true), gi);
        h.release(&uuid).unwrap();
        assert_eq!(h.fake.layout(0), vec![(gi, "4g.20gb".to_string(), 0)]);
        assert!(h.ledger().is_empty());
    }

    #[test]
    fn mig_mode_off_counts_as_gone_and_in_use_waits_for_a_later_pass() {
        let mut h = a100_host(true);
        let uuid = h.pick("3g").unwrap();
        h.fake.set_mig(0, false);
        h.release(&uuid).unwrap();
        assert!(h.ledger().is_empty(), "NOT_SUPPORTED: nothing left to destroy");

        let mut h = a100_host(true);
        let uuid = h.pick("2g").unwrap();
        h.fake.hold(&uuid);
        h.release(&uuid).expect("the session's deletion is not blocked");
        assert_eq!(h.ledger().len(), 1, "kept for the next pass");
        assert!(h.reap().is_empty(), "still in use");
        h.fake.let_go(&uuid);
        assert_eq!(h.reap(), vec![uuid]);
        assert!(h.ledger().is_empty() && h.fake.layout(0).is_empty());
    }

    #[test]
    fn after_a_reboot_that_turned_mig_off_reaping_forgets_without_calls_failing() {
        let mut h = a100_host(true);
        h.fake.mig_lost_at_reboot();
        h.pick("1g").unwrap();
        h.fake.reboot();
        assert!(h.reap().is_empty());
        assert!(h.ledger().is_empty());
    }

    #[test]
    fn unknown_models_use_the_geometry_the_driver_reports() {
        let fake = FakeNvml::new();
        // Not in the catalog: the H200 NVL has the H200's profiles (mig-notes §7).
        fake.add_gpu("NVIDIA H200 NVL", "NVIDIA H200", true);
        let mut h = host(&fake, true);
        let mine = h.pick_listed("3g");
        assert_eq!((mine.profile.as_str(), mine.memory_slices), ("3g.71gb", 4));
        // The default "3g.20gb" means 3g here.
        let backend = &h.backend;
        let picked = h
            .store
            .with_gpu_ledger(|l| backend.pick(&GpuRequest::Default, &HashSet::from([mine.uuid.clone()]), l))
            .unwrap()
            .unwrap();
        assert_eq!(picked.profile.as_deref(), Some("3g.71gb"));
        let names: Vec<String> = h.backend.profiles().unwrap().into_iter().map(|p| p.name).collect();
        assert!(names.contains(&"7g.141gb".to_string()), "{names:?}");
    }

    #[test]
    fn geometry_that_differs_from_the_catalog_is_used_and_warned_about() {
        let fake = FakeNvml::new();
        // A driver that reports H100 NVL geometry under the H100 80GB name.
        fake.add_gpu("NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL", true);
        let mut h = host(&fake, true);
        let mine = h.pick_listed("3g");
        assert_eq!(mine.profile, "3g.47gb", "the driver's profile, never the catalog's size");
        let warnings = h.backend.diagnostics().unwrap();
        assert!(warnings.iter().any(|w| w.contains("3g.47gb") && w.contains("catalog lacks")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("3g.40gb") && w.contains("does not offer")), "{warnings:?}");
    }

    #[test]
    fn creating_without_root_is_unavailable_and_records_nothing() {
        let mut h = a100_host(true);
        h.fake.set_root(false);
        let e = h.pick("1g").unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("no permission"), "{e}");
        assert!(h.ledger().is_empty());
    }

    #[test]
    fn a_failed_compute_instance_leaves_no_gpu_instance_behind() {
        let mut h = a100_host(true);
        h.fake.fail_next_compute_instance(Code(999));
        let e = h.pick("2g").unwrap_err();
        assert!(e.to_string().contains("create the compute instance"), "{e}");
        assert!(h.fake.layout(0).is_empty(), "the GPU instance was destroyed again");
        assert!(h.ledger().is_empty());
        // And the next create works.
        h.pick("2g").unwrap();
        assert_eq!(h.ledger().len(), 1);
    }

    #[test]
    fn profiles_of_gpus_with_mig_off_are_listed_from_the_driver() {
        let fake = FakeNvml::new();
        fake.add_gpu("NVIDIA H20", "NVIDIA H100 80GB HBM3", false);
        let h = host(&fake, false);
        let profiles = h.backend.profiles().unwrap();
        let three_g = profiles.iter().find(|p| p.name == "3g.40gb").expect("3g.40gb");
        assert_eq!((three_g.profile_id, three_g.max_instances), (9, 2));
        assert_eq!(three_g.placements, vec![[0, 4], [4, 4]]);
        assert!(h.backend.diagnostics().unwrap().is_empty(), "MIG off: nothing to warn about");
    }

    #[test]
    fn mig_device_names_give_their_profile() {
        assert_eq!(geometry::profile_of_device_name("NVIDIA A100-SXM4-40GB MIG 3g.20gb"), Some("3g.20gb"));
        assert_eq!(geometry::profile_of_device_name("NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb"), Some("1c.3g.40gb"));
        assert_eq!(geometry::profile_of_device_name("NVIDIA A100-SXM4-40GB"), None);
    }
}
